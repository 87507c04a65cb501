package failover

import (
	"fmt"
	"time"

	"github.com/careplane/careplane/api/v1alpha1"
)

// Reasons a Decision gives, for the ServingFromStandby condition and for
// events. They are UpperCamelCase.
const (
	// ReasonServingFromPrimary: traffic goes to the primary and nothing wants
	// it elsewhere.
	ReasonServingFromPrimary = v1alpha1.ReasonServingFromPrimary
	// ReasonPrimaryFenced: the standby is wanted (or no site serves) because
	// the primary is fenced.
	ReasonPrimaryFenced = "PrimaryFenced"
	// ReasonPrimaryUnavailable: the standby is wanted because a critical
	// service of the primary has had no ready replica for unavailableAfter.
	ReasonPrimaryUnavailable = "PrimaryUnavailable"
	// ReasonManualSwitch: the standby is wanted because failover.activeSite
	// is Standby.
	ReasonManualSwitch = "ManualSwitch"
	// ReasonFailedBack: this decision moves traffic from the standby back to
	// the primary.
	ReasonFailedBack = "FailedBack"
	// ReasonStandbyUnavailable: this decision moves traffic back to the
	// primary before the anti-flap hold because the standby is not Ready.
	ReasonStandbyUnavailable = "StandbyUnavailable"
	// ReasonWaitingForStandby: the standby is wanted but not Ready yet.
	ReasonWaitingForStandby = "WaitingForStandby"
	// ReasonWaitingForPrimary: traffic stays on the standby until the primary
	// may take it back.
	ReasonWaitingForPrimary = "WaitingForPrimary"
	// ReasonNoStandby: a failover is wanted but failover.standby is None, or
	// traffic left the standby because the standby was removed.
	ReasonNoStandby = "NoStandby"
)

const (
	// DefaultUnavailableAfter is failover.unavailableAfter's API default,
	// used when Input.UnavailableAfter is not positive.
	DefaultUnavailableAfter = 60 * time.Second
	// MinHold is the shortest anti-flap hold, whatever unavailableAfter says.
	MinHold = 30 * time.Second
	// RequeueMargin is added to every RequeueAfter so that the reconciler
	// wakes just after a threshold, not just before it.
	RequeueMargin = 100 * time.Millisecond
)

// Input is what the reconciler gathered.
type Input struct {
	Standby          v1alpha1.StandbyMode     // None | Warm | Cold
	Trigger          v1alpha1.FailoverTrigger // Automatic | Manual
	RequestedSite    v1alpha1.Site            // spec.failover.activeSite (Primary | Standby)
	UnavailableAfter time.Duration            // spec.failover.unavailableAfter
	Now              time.Time

	PrimaryFenced bool // the primary is fenced, or being fenced or rebuilt behind a fence
	// PrimaryReady: every critical service of the primary has all replicas ready.
	PrimaryReady bool
	// CriticalDownSince: since when at least one critical service of the primary has had NO ready replica (zero time when none is down).
	CriticalDownSince time.Time
	// PrimaryReadySince: since when PrimaryReady has been continuously true (zero time when not ready).
	PrimaryReadySince time.Time
	// StandbyReady: every critical service runs in the standby with all replicas ready.
	StandbyReady bool

	Current    v1alpha1.Site // the site traffic goes to now ("" when none serves)
	SwitchedAt time.Time     // when traffic last moved to Current (zero if never)
}

// Decision is where traffic goes and why.
type Decision struct {
	Site         v1alpha1.Site // Primary or Standby; meaningful when Serving ("" when not)
	Serving      bool          // false: no site may receive traffic
	RunStandby   bool          // the standby's workloads must run (Warm always; Cold when failing over or failed over)
	Reason       string        // UpperCamelCase condition reason, e.g. PrimaryFenced, PrimaryUnavailable, ManualSwitch, FailedBack, ServingFromPrimary, WaitingForStandby, NoStandby
	Message      string        // human sentence for the ServingFromStandby condition
	Failover     bool          // this decision moves traffic primary→standby now (for the failover counter/event)
	Failback     bool          // this decision moves traffic standby→primary now
	RequeueAfter time.Duration // >0 when a time-based threshold (unavailableAfter, anti-flap hold) will be crossed later and nothing else would wake the reconciler
}

// ServingFromStandby reports whether traffic goes to the standby: the status
// of the ServingFromStandby condition.
func (d Decision) ServingFromStandby() bool {
	return d.Serving && d.Site == v1alpha1.SiteStandby
}

// Hold is the anti-flap hold for an unavailableAfter: max(unavailableAfter,
// MinHold), with a non-positive unavailableAfter read as the default.
func Hold(unavailableAfter time.Duration) time.Duration {
	if unavailableAfter <= 0 {
		unavailableAfter = DefaultUnavailableAfter
	}
	return max(unavailableAfter, MinHold)
}

// Decide says where traffic goes. See the package documentation for the
// rules.
func Decide(in Input) Decision {
	in = normalize(in)
	w := wanted(in)

	var d Decision
	switch {
	case in.Standby == v1alpha1.StandbyNone:
		d = decideWithoutStandby(in, w)
	case w.site == v1alpha1.SiteStandby:
		d = decideForStandby(in, w)
	default:
		d = decideForPrimary(in, w)
	}
	if !d.Serving {
		d.Site = ""
	}

	switch in.Standby {
	case v1alpha1.StandbyWarm:
		d.RunStandby = true
	case v1alpha1.StandbyCold:
		d.RunStandby = w.site == v1alpha1.SiteStandby || d.ServingFromStandby()
	}

	d.Failover = d.ServingFromStandby() && in.Current != v1alpha1.SiteStandby
	d.Failback = d.Serving && d.Site == v1alpha1.SitePrimary && in.Current == v1alpha1.SiteStandby

	if w.downPending > 0 && !d.ServingFromStandby() {
		d.RequeueAfter = minPositive(d.RequeueAfter, w.downPending+RequeueMargin)
	}
	return d
}

// want is what the rules ask for, before readiness has its say.
type want struct {
	site v1alpha1.Site
	// reason says why the standby is wanted ("" when the primary is).
	reason string
	// downFor is how long a critical service of the primary has had no ready
	// replica (0 when none is down).
	downFor time.Duration
	// downPending is how long until downFor reaches UnavailableAfter, when
	// that crossing alone would make the rules want the standby (0
	// otherwise).
	downPending time.Duration
}

func normalize(in Input) Input {
	switch in.Standby {
	case v1alpha1.StandbyWarm, v1alpha1.StandbyCold:
	default:
		in.Standby = v1alpha1.StandbyNone
	}
	if in.Trigger != v1alpha1.TriggerManual {
		in.Trigger = v1alpha1.TriggerAutomatic
	}
	if in.RequestedSite != v1alpha1.SiteStandby {
		in.RequestedSite = v1alpha1.SitePrimary
	}
	if in.UnavailableAfter <= 0 {
		in.UnavailableAfter = DefaultUnavailableAfter
	}
	switch in.Current {
	case v1alpha1.SitePrimary, v1alpha1.SiteStandby:
	default:
		in.Current = ""
	}
	return in
}

func wanted(in Input) want {
	w := want{site: v1alpha1.SitePrimary}
	if !in.CriticalDownSince.IsZero() {
		w.downFor = since(in.Now, in.CriticalDownSince)
	}
	if in.Trigger == v1alpha1.TriggerManual {
		if in.RequestedSite == v1alpha1.SiteStandby {
			w.site, w.reason = v1alpha1.SiteStandby, ReasonManualSwitch
		}
		return w
	}
	switch {
	case in.PrimaryFenced:
		w.site, w.reason = v1alpha1.SiteStandby, ReasonPrimaryFenced
	case in.RequestedSite == v1alpha1.SiteStandby:
		w.site, w.reason = v1alpha1.SiteStandby, ReasonManualSwitch
	case !in.CriticalDownSince.IsZero() && w.downFor >= in.UnavailableAfter:
		w.site, w.reason = v1alpha1.SiteStandby, ReasonPrimaryUnavailable
	case !in.CriticalDownSince.IsZero():
		w.downPending = in.UnavailableAfter - w.downFor
	}
	return w
}

func decideWithoutStandby(in Input, w want) Decision {
	switch {
	case in.PrimaryFenced:
		return Decision{Reason: ReasonPrimaryFenced, Message: "No site serves traffic: the primary is fenced and failover.standby is None; " +
			"traffic returns when the primary is restored"}
	case w.reason == ReasonManualSwitch:
		return primary(ReasonNoStandby, "Serving from the primary although failover.activeSite is Standby: failover.standby is None")
	case w.reason == ReasonPrimaryUnavailable:
		return primary(ReasonNoStandby, fmt.Sprintf("Serving from the primary although a critical service has had no ready replica for %s: "+
			"failover.standby is None, so there is no standby to fail over to", dur(w.downFor)))
	case in.Current == v1alpha1.SiteStandby:
		return primary(ReasonNoStandby, "Moved traffic back to the primary: failover.standby is None, so the standby no longer runs")
	case w.downPending > 0:
		return primary(ReasonServingFromPrimary, fmt.Sprintf("Serving from the primary; a critical service has had no ready replica for %s "+
			"and failover.standby is None, so there is no standby to fail over to", dur(w.downFor)))
	}
	return primary(ReasonServingFromPrimary, "Serving from the primary; failover.standby is None")
}

// decideForStandby decides when the rules want the standby.
func decideForStandby(in Input, w want) Decision {
	if in.StandbyReady || in.Current == v1alpha1.SiteStandby {
		msg := servingFromStandbyMessage(in, w)
		if !in.StandbyReady {
			msg += "; the standby is not Ready"
		}
		return Decision{Site: v1alpha1.SiteStandby, Serving: true, Reason: w.reason, Message: msg}
	}
	const notReady = "traffic moves to the standby when every critical service there is Ready"
	if in.PrimaryFenced {
		return Decision{Reason: ReasonWaitingForStandby,
			Message: "No site serves traffic: the primary is fenced and the standby is not Ready yet; " + notReady}
	}
	return primary(ReasonWaitingForStandby, fmt.Sprintf("Serving from the primary while the standby is not Ready (%s); %s",
		standbyWantedBecause(in, w), notReady))
}

// decideForPrimary decides when the rules want the primary (and a standby
// exists).
func decideForPrimary(in Input, w want) Decision {
	manual := in.Trigger == v1alpha1.TriggerManual
	if in.Current != v1alpha1.SiteStandby {
		if in.PrimaryFenced { // Manual only: Automatic wants the standby.
			return Decision{Reason: ReasonPrimaryFenced, Message: "No site serves traffic: the primary is fenced and failover.activeSite is Primary; " +
				"set failover.activeSite to Standby to serve from the standby"}
		}
		if w.downPending > 0 {
			return primary(ReasonServingFromPrimary, fmt.Sprintf("Serving from the primary; a critical service has had no ready replica for %s "+
				"and traffic fails over to the standby if that lasts %s", dur(w.downFor), dur(in.UnavailableAfter)))
		}
		return primary(ReasonServingFromPrimary, "Serving from the primary")
	}

	// Traffic is on the standby and the rules want it back on the primary.
	hold := Hold(in.UnavailableAfter)
	stay := func(msg string) Decision {
		return Decision{Site: v1alpha1.SiteStandby, Serving: true, Reason: ReasonWaitingForPrimary, Message: msg}
	}
	switch {
	case in.PrimaryFenced && manual:
		return stay("Serving from the standby although failover.activeSite is Primary: the primary is fenced; " +
			"traffic fails back once the primary is restored and Ready")
	case !in.PrimaryReady && manual:
		return stay("Serving from the standby although failover.activeSite is Primary: the primary is not Ready; " +
			"traffic fails back as soon as it is")
	case !in.PrimaryReady:
		return stay(fmt.Sprintf("Serving from the standby: the primary is not Ready; "+
			"traffic fails back once it has been Ready for %s", dur(hold)))
	case manual:
		return primary(ReasonFailedBack, "Failed back to the primary: failover.activeSite is Primary and the primary is Ready")
	case !in.StandbyReady:
		return primary(ReasonStandbyUnavailable, fmt.Sprintf("Failed back to the primary without waiting out the %s hold: "+
			"the standby is not Ready and the primary is", dur(hold)))
	}

	readyFor := time.Duration(0)
	if !in.PrimaryReadySince.IsZero() {
		readyFor = since(in.Now, in.PrimaryReadySince)
	}
	sinceSwitch := hold // a zero SwitchedAt is long ago
	if !in.SwitchedAt.IsZero() {
		sinceSwitch = since(in.Now, in.SwitchedAt)
	}
	if readyFor >= hold && sinceSwitch >= hold {
		return primary(ReasonFailedBack, fmt.Sprintf("Failed back to the primary: it has been Ready for %s "+
			"and traffic moved to the standby %s ago", dur(readyFor), dur(sinceSwitch)))
	}
	remaining := max(hold-readyFor, hold-sinceSwitch)
	d := stay(fmt.Sprintf("Serving from the standby: the primary has been Ready for %s; traffic fails back once it has been Ready for %s "+
		"and %s have passed since the failover, in %s unless it fails again", dur(readyFor), dur(hold), dur(hold), dur(remaining)))
	d.RequeueAfter = remaining + RequeueMargin
	return d
}

func servingFromStandbyMessage(in Input, w want) string {
	var back string
	switch {
	case in.Trigger == v1alpha1.TriggerManual || w.reason == ReasonManualSwitch:
		back = "set failover.activeSite to Primary to fail back once the primary is Ready"
		if in.Trigger == v1alpha1.TriggerAutomatic {
			back += fmt.Sprintf(" for %s", dur(Hold(in.UnavailableAfter)))
		}
	case w.reason == ReasonPrimaryFenced:
		back = fmt.Sprintf("failback needs the primary restored and Ready for %s", dur(Hold(in.UnavailableAfter)))
	default:
		back = fmt.Sprintf("failback needs the primary Ready for %s", dur(Hold(in.UnavailableAfter)))
	}
	return fmt.Sprintf("Serving from the standby since %s; %s", standbyWantedBecause(in, w), back)
}

// standbyWantedBecause completes "since ..." for why the standby is wanted.
func standbyWantedBecause(in Input, w want) string {
	switch w.reason {
	case ReasonPrimaryFenced:
		return "the primary was fenced"
	case ReasonPrimaryUnavailable:
		return fmt.Sprintf("a critical service of the primary has had no ready replica for %s", dur(w.downFor))
	}
	if in.PrimaryFenced {
		return "failover.activeSite is Standby and the primary is fenced"
	}
	return "failover.activeSite is Standby"
}

func primary(reason, msg string) Decision {
	return Decision{Site: v1alpha1.SitePrimary, Serving: true, Reason: reason, Message: msg}
}

// since is now-t, and 0 for a t after now.
func since(now, t time.Time) time.Duration {
	return max(now.Sub(t), 0)
}

func minPositive(a, b time.Duration) time.Duration {
	if a <= 0 {
		return b
	}
	return min(a, b)
}

// dur formats a duration for a message: whole minutes as "2m" from two
// minutes on, otherwise seconds ("90s"), rounded to the second.
func dur(d time.Duration) string {
	d = d.Round(time.Second)
	if d >= 2*time.Minute && d%time.Minute == 0 {
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}
