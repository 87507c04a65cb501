package failover

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/careplane/careplane/api/v1alpha1"
)

const (
	none        = v1alpha1.StandbyNone
	warm        = v1alpha1.StandbyWarm
	cold        = v1alpha1.StandbyCold
	automatic   = v1alpha1.TriggerAutomatic
	manual      = v1alpha1.TriggerManual
	sitePrimary = v1alpha1.SitePrimary
	siteStandby = v1alpha1.SiteStandby
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// ago is t0 minus d.
func ago(d time.Duration) time.Time { return t0.Add(-d) }

// healthy is a Warm, Automatic environment whose primary has served, Ready,
// for an hour and whose standby is Ready.
func healthy() Input {
	return Input{
		Standby: warm, Trigger: automatic, RequestedSite: sitePrimary, UnavailableAfter: time.Minute, Now: t0,
		PrimaryReady: true, PrimaryReadySince: ago(time.Hour), StandbyReady: true,
		Current: sitePrimary, SwitchedAt: ago(time.Hour),
	}
}

// onStandby is healthy() after a failover 10 minutes ago, the primary now
// down for 9 minutes.
func onStandby() Input {
	in := healthy()
	in.Current, in.SwitchedAt = siteStandby, ago(10*time.Minute)
	in.PrimaryReady, in.PrimaryReadySince = false, time.Time{}
	in.CriticalDownSince = ago(9 * time.Minute)
	return in
}

// primaryBack marks the primary Ready since d ago.
func primaryBack(in Input, d time.Duration) Input {
	in.PrimaryReady, in.PrimaryReadySince, in.CriticalDownSince = true, ago(d), time.Time{}
	return in
}

// primaryDown marks a critical service of the primary down since d ago.
func primaryDown(in Input, d time.Duration) Input {
	in.PrimaryReady, in.PrimaryReadySince, in.CriticalDownSince = false, time.Time{}, ago(d)
	return in
}

func with(in Input, f func(*Input)) Input { f(&in); return in }

func TestDecide(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want Decision // Message is checked by msg
		msg  []string // fragments Message must contain
	}{
		// Standby None.
		{
			name: "none: a healthy primary serves and no standby runs",
			in:   with(healthy(), func(in *Input) { in.Standby = none }),
			want: Decision{Site: sitePrimary, Serving: true, Reason: ReasonServingFromPrimary},
			msg:  []string{"failover.standby is None"},
		},
		{
			name: "none: zero values are the API defaults (None, Automatic, Primary, 60s)",
			in:   Input{Now: t0, PrimaryReady: true, PrimaryReadySince: ago(time.Hour), Current: sitePrimary},
			want: Decision{Site: sitePrimary, Serving: true, Reason: ReasonServingFromPrimary},
		},
		{
			name: "none: a fenced primary means no site serves",
			in:   with(healthy(), func(in *Input) { in.Standby, in.PrimaryFenced = none, true }),
			want: Decision{Reason: ReasonPrimaryFenced},
			msg:  []string{"No site serves traffic", "fenced", "restored"},
		},
		{
			name: "none: a primary down past unavailableAfter keeps serving, reason NoStandby",
			in:   with(primaryDown(healthy(), 90*time.Second), func(in *Input) { in.Standby = none }),
			want: Decision{Site: sitePrimary, Serving: true, Reason: ReasonNoStandby},
			msg:  []string{"90s", "no standby to fail over to"},
		},
		{
			name: "none: activeSite Standby cannot move traffic",
			in:   with(healthy(), func(in *Input) { in.Standby, in.RequestedSite = none, siteStandby }),
			want: Decision{Site: sitePrimary, Serving: true, Reason: ReasonNoStandby},
			msg:  []string{"activeSite is Standby"},
		},
		{
			name: "none: a primary down for less than unavailableAfter requeues for the threshold",
			in:   with(primaryDown(healthy(), 20*time.Second), func(in *Input) { in.Standby = none }),
			want: Decision{Site: sitePrimary, Serving: true, Reason: ReasonServingFromPrimary, RequeueAfter: 40*time.Second + RequeueMargin},
		},
		{
			name: "none: traffic on a removed standby moves back to the primary",
			in:   with(onStandby(), func(in *Input) { in.Standby = none }),
			want: Decision{Site: sitePrimary, Serving: true, Reason: ReasonNoStandby, Failback: true},
		},
		{
			name: "none: traffic on a removed standby with a fenced primary stops",
			in:   with(onStandby(), func(in *Input) { in.Standby, in.PrimaryFenced = none, true }),
			want: Decision{Reason: ReasonPrimaryFenced},
		},

		// Warm and Cold: when the standby runs.
		{
			name: "warm: the standby runs while the primary serves",
			in:   healthy(),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonServingFromPrimary},
			msg:  []string{"Serving from the primary"},
		},
		{
			name: "cold: the standby does not run while the primary serves",
			in:   with(healthy(), func(in *Input) { in.Standby, in.StandbyReady = cold, false }),
			want: Decision{Site: sitePrimary, Serving: true, Reason: ReasonServingFromPrimary},
		},
		{
			name: "cold: a primary down for less than unavailableAfter does not start the standby yet",
			in:   with(primaryDown(healthy(), 30*time.Second), func(in *Input) { in.Standby, in.StandbyReady = cold, false }),
			want: Decision{Site: sitePrimary, Serving: true, Reason: ReasonServingFromPrimary, RequeueAfter: 30*time.Second + RequeueMargin},
			msg:  []string{"30s", "fails over to the standby if that lasts 60s"},
		},
		{
			name: "cold: a fence starts the standby and no site serves until it is Ready",
			in:   with(healthy(), func(in *Input) { in.Standby, in.StandbyReady, in.PrimaryFenced = cold, false, true }),
			want: Decision{RunStandby: true, Reason: ReasonWaitingForStandby},
			msg:  []string{"No site serves traffic", "fenced", "standby is not Ready"},
		},
		{
			name: "cold: an outage of exactly unavailableAfter starts the standby, the primary serves meanwhile",
			in:   with(primaryDown(healthy(), time.Minute), func(in *Input) { in.Standby, in.StandbyReady = cold, false }),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonWaitingForStandby},
			msg:  []string{"Serving from the primary while the standby is not Ready", "no ready replica for 60s"},
		},
		{
			name: "cold: the standby keeps running while it serves",
			in:   with(onStandby(), func(in *Input) { in.Standby = cold; in.CriticalDownSince = ago(10 * time.Second) }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonWaitingForPrimary},
		},
		{
			name: "cold: the standby stops on the failback decision",
			in:   with(primaryBack(onStandby(), 5*time.Minute), func(in *Input) { in.Standby = cold }),
			want: Decision{Site: sitePrimary, Serving: true, Reason: ReasonFailedBack, Failback: true},
		},

		// Automatic: what wants the standby.
		{
			name: "automatic: a fence fails over at once",
			in:   with(healthy(), func(in *Input) { in.PrimaryFenced = true }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonPrimaryFenced, Failover: true},
			msg:  []string{"Serving from the standby since the primary was fenced; failback needs the primary restored and Ready for 60s"},
		},
		{
			name: "automatic: a fence with a Ready primary and a forced switch still says PrimaryFenced",
			in:   with(healthy(), func(in *Input) { in.PrimaryFenced, in.RequestedSite = true, siteStandby }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonPrimaryFenced, Failover: true},
		},
		{
			name: "automatic: down just under unavailableAfter stays and requeues for the rest",
			in:   primaryDown(healthy(), time.Minute-100*time.Millisecond),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonServingFromPrimary, RequeueAfter: 100*time.Millisecond + RequeueMargin},
		},
		{
			name: "automatic: down for exactly unavailableAfter fails over",
			in:   primaryDown(healthy(), time.Minute),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonPrimaryUnavailable, Failover: true},
			msg:  []string{"Serving from the standby since a critical service of the primary has had no ready replica for 60s", "failback needs the primary Ready for 60s"},
		},
		{
			name: "automatic: activeSite Standby forces the standby",
			in:   with(healthy(), func(in *Input) { in.RequestedSite = siteStandby }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonManualSwitch, Failover: true},
			msg:  []string{"activeSite is Standby", "set failover.activeSite to Primary to fail back once the primary is Ready for 60s"},
		},
		{
			name: "automatic: an unready primary with every service partly up does not fail over",
			in:   with(healthy(), func(in *Input) { in.PrimaryReady, in.PrimaryReadySince = false, time.Time{} }),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonServingFromPrimary},
		},
		{
			name: "automatic: a CriticalDownSince after Now counts as just down",
			in:   with(primaryDown(healthy(), 0), func(in *Input) { in.CriticalDownSince = t0.Add(time.Second) }),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonServingFromPrimary, RequeueAfter: time.Minute + RequeueMargin},
		},
		{
			name: "automatic: unavailableAfter 0 is the 60s default",
			in:   with(primaryDown(healthy(), 59*time.Second), func(in *Input) { in.UnavailableAfter = 0 }),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonServingFromPrimary, RequeueAfter: time.Second + RequeueMargin},
		},
		{
			name: "automatic: from no site to a standby that became Ready counts as a failover",
			in: with(healthy(), func(in *Input) {
				in.Standby, in.PrimaryFenced, in.Current, in.SwitchedAt = cold, true, "", ago(time.Minute)
			}),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonPrimaryFenced, Failover: true},
		},
		{
			name: "automatic: already on the standby is not another failover",
			in:   with(onStandby(), func(in *Input) { in.PrimaryFenced = true }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonPrimaryFenced},
		},
		{
			name: "automatic: an unknown Current counts as no site",
			in:   with(primaryDown(healthy(), 2*time.Minute), func(in *Input) { in.Current = "Elsewhere" }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonPrimaryUnavailable, Failover: true},
		},

		// Manual.
		{
			name: "manual: a long outage does not move traffic",
			in:   with(primaryDown(healthy(), 10*time.Minute), func(in *Input) { in.Trigger = manual }),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonServingFromPrimary},
		},
		{
			name: "manual: a fence with activeSite Primary stops all traffic",
			in:   with(healthy(), func(in *Input) { in.Trigger, in.PrimaryFenced = manual, true }),
			want: Decision{RunStandby: true, Reason: ReasonPrimaryFenced},
			msg:  []string{"No site serves traffic", "set failover.activeSite to Standby"},
		},
		{
			name: "manual cold: a fence with activeSite Primary does not start the standby",
			in:   with(healthy(), func(in *Input) { in.Standby, in.StandbyReady, in.Trigger, in.PrimaryFenced = cold, false, manual, true }),
			want: Decision{Reason: ReasonPrimaryFenced},
		},
		{
			name: "manual: activeSite Standby fails over to a Ready standby",
			in:   with(healthy(), func(in *Input) { in.Trigger, in.RequestedSite = manual, siteStandby }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonManualSwitch, Failover: true},
			msg:  []string{"set failover.activeSite to Primary to fail back once the primary is Ready"},
		},
		{
			name: "manual cold: activeSite Standby starts the standby, the primary serves until it is Ready",
			in: with(healthy(), func(in *Input) {
				in.Standby, in.StandbyReady, in.Trigger, in.RequestedSite = cold, false, manual, siteStandby
			}),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonWaitingForStandby},
			msg:  []string{"failover.activeSite is Standby"},
		},
		{
			name: "manual cold: activeSite Standby with a fenced primary serves nothing until the standby is Ready",
			in: with(healthy(), func(in *Input) {
				in.Standby, in.StandbyReady, in.Trigger, in.RequestedSite, in.PrimaryFenced = cold, false, manual, siteStandby, true
			}),
			want: Decision{RunStandby: true, Reason: ReasonWaitingForStandby},
		},
		{
			name: "manual: activeSite Primary fails back at once to a Ready primary, no hold",
			in: with(primaryBack(onStandby(), time.Second), func(in *Input) {
				in.Trigger, in.SwitchedAt = manual, ago(time.Second)
			}),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonFailedBack, Failback: true},
			msg:  []string{"Failed back to the primary"},
		},
		{
			name: "manual: never fails back to a fenced primary",
			in:   with(primaryBack(onStandby(), time.Hour), func(in *Input) { in.Trigger, in.PrimaryFenced = manual, true }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonWaitingForPrimary},
			msg:  []string{"the primary is fenced"},
		},
		{
			name: "manual: never fails back to an unready primary",
			in:   with(onStandby(), func(in *Input) { in.Trigger = manual }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonWaitingForPrimary},
			msg:  []string{"the primary is not Ready"},
		},
		{
			name: "manual: a degraded standby a human asked for keeps serving",
			in: with(primaryBack(onStandby(), time.Hour), func(in *Input) {
				in.Trigger, in.RequestedSite, in.StandbyReady = manual, siteStandby, false
			}),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonManualSwitch},
			msg:  []string{"the standby is not Ready"},
		},

		// Automatic failback and the anti-flap hold.
		{
			name: "hold: primary Ready 59s, switched long ago: stay and requeue for 1s",
			in:   primaryBack(onStandby(), 59*time.Second),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonWaitingForPrimary, RequeueAfter: time.Second + RequeueMargin},
			msg:  []string{"Ready for 59s", "in 1s"},
		},
		{
			name: "hold: primary Ready long, switched 10s ago: stay and requeue for 50s",
			in:   with(primaryBack(onStandby(), time.Hour), func(in *Input) { in.SwitchedAt = ago(10 * time.Second) }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonWaitingForPrimary, RequeueAfter: 50*time.Second + RequeueMargin},
		},
		{
			name: "hold: primary Ready 60s, switched 60s ago: fail back",
			in:   with(primaryBack(onStandby(), time.Minute), func(in *Input) { in.SwitchedAt = ago(time.Minute) }),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonFailedBack, Failback: true},
			msg:  []string{"Ready for 60s", "60s ago"},
		},
		{
			name: "hold: a zero SwitchedAt counts as long ago",
			in:   with(primaryBack(onStandby(), time.Minute), func(in *Input) { in.SwitchedAt = time.Time{} }),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonFailedBack, Failback: true},
		},
		{
			name: "hold: a Ready primary without PrimaryReadySince is Ready for no time yet",
			in:   with(primaryBack(onStandby(), 0), func(in *Input) { in.PrimaryReadySince = time.Time{} }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonWaitingForPrimary, RequeueAfter: time.Minute + RequeueMargin},
		},
		{
			name: "hold: never below 30s (unavailableAfter 5s, Ready 29s)",
			in:   with(primaryBack(onStandby(), 29*time.Second), func(in *Input) { in.UnavailableAfter = 5 * time.Second }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonWaitingForPrimary, RequeueAfter: time.Second + RequeueMargin},
		},
		{
			name: "hold: unavailableAfter 5s fails back after 30s",
			in:   with(primaryBack(onStandby(), 30*time.Second), func(in *Input) { in.UnavailableAfter = 5 * time.Second }),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonFailedBack, Failback: true},
		},
		{
			name: "hold: follows a long unavailableAfter (5m)",
			in:   with(primaryBack(onStandby(), 4*time.Minute), func(in *Input) { in.UnavailableAfter = 5 * time.Minute }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonWaitingForPrimary, RequeueAfter: time.Minute + RequeueMargin},
			msg:  []string{"Ready for 4m", "Ready for 5m"},
		},
		{
			name: "hold: applies after a forced switch is cleared in Automatic mode",
			in:   primaryBack(onStandby(), 10*time.Second),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonWaitingForPrimary, RequeueAfter: 50*time.Second + RequeueMargin},
		},
		{
			name: "automatic: an unready primary gets no traffic back and no requeue",
			in:   with(onStandby(), func(in *Input) { in.CriticalDownSince = time.Time{} }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonWaitingForPrimary},
			msg:  []string{"the primary is not Ready", "Ready for 60s"},
		},
		{
			name: "automatic: a primary that fails again within the hold stays off traffic",
			in:   primaryDown(onStandby(), 5*time.Second),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonWaitingForPrimary},
		},
		{
			name: "automatic: a fenced primary that is Ready gets no traffic back",
			in:   with(primaryBack(onStandby(), time.Hour), func(in *Input) { in.PrimaryFenced = true }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonPrimaryFenced},
		},

		// A degraded standby.
		{
			name: "standby unready, primary Ready and unfenced: fail back at once despite the hold",
			in:   with(primaryBack(onStandby(), 5*time.Second), func(in *Input) { in.StandbyReady = false }),
			want: Decision{Site: sitePrimary, Serving: true, RunStandby: true, Reason: ReasonStandbyUnavailable, Failback: true},
			msg:  []string{"without waiting out the 60s hold", "the standby is not Ready"},
		},
		{
			name: "standby unready, primary unready: stay on the standby",
			in:   with(onStandby(), func(in *Input) { in.StandbyReady = false }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonPrimaryUnavailable},
			msg:  []string{"the standby is not Ready"},
		},
		{
			name: "standby unready, primary fenced: stay on the standby",
			in:   with(primaryBack(onStandby(), time.Hour), func(in *Input) { in.StandbyReady, in.PrimaryFenced = false, true }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonPrimaryFenced},
			msg:  []string{"the standby is not Ready"},
		},
		{
			name: "standby unready under a forced switch: the human's choice stands",
			in:   with(primaryBack(onStandby(), time.Hour), func(in *Input) { in.StandbyReady, in.RequestedSite = false, siteStandby }),
			want: Decision{Site: siteStandby, Serving: true, RunStandby: true, Reason: ReasonManualSwitch},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.in)
			msg := got.Message
			got.Message = ""
			if got != tt.want {
				t.Errorf("Decide() =\n  %+v\nwant\n  %+v\n(message %q)", got, tt.want, msg)
			}
			for _, frag := range tt.msg {
				if !strings.Contains(msg, frag) {
					t.Errorf("message %q does not contain %q", msg, frag)
				}
			}
		})
	}
}

// TestDecideInvariants checks, over every combination of inputs, what must
// hold whatever the rules say in detail.
func TestDecideInvariants(t *testing.T) {
	durations := []time.Duration{-1, 0, 10 * time.Second, 59 * time.Second, time.Minute, 10 * time.Minute} // -1: zero time
	at := func(d time.Duration) time.Time {
		if d < 0 {
			return time.Time{}
		}
		return ago(d)
	}
	n := 0
	for _, mode := range []v1alpha1.StandbyMode{none, warm, cold} {
		for _, trigger := range []v1alpha1.FailoverTrigger{automatic, manual} {
			for _, requested := range []v1alpha1.Site{sitePrimary, siteStandby} {
				for _, current := range []v1alpha1.Site{"", sitePrimary, siteStandby} {
					for bits := range 8 {
						fenced, primaryReady, standbyReady := bits&1 != 0, bits&2 != 0, bits&4 != 0
						for _, down := range durations {
							for _, readySince := range durations {
								for _, switched := range durations {
									in := Input{
										Standby: mode, Trigger: trigger, RequestedSite: requested, UnavailableAfter: time.Minute, Now: t0,
										PrimaryFenced: fenced, PrimaryReady: primaryReady, CriticalDownSince: at(down),
										PrimaryReadySince: at(readySince), StandbyReady: standbyReady,
										Current: current, SwitchedAt: at(switched),
									}
									n++
									checkInvariants(t, in, Decide(in))
								}
							}
						}
					}
				}
			}
		}
	}
	t.Logf("checked %d inputs", n)
}

func checkInvariants(t *testing.T, in Input, d Decision) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("%s\ninput %+v\ndecision %+v", fmt.Sprintf(format, args...), in, d)
	}
	if !isUpperCamel(d.Reason) {
		fail("reason %q is not UpperCamelCase", d.Reason)
	}
	if d.Message == "" || strings.HasSuffix(d.Message, ".") || !unicode.IsUpper([]rune(d.Message)[0]) {
		fail("message %q must be a capitalised sentence without a trailing period", d.Message)
	}
	if d.Serving != (d.Site == sitePrimary || d.Site == siteStandby) {
		fail("Site must be Primary or Standby exactly when Serving")
	}
	if d.Serving && d.Site == sitePrimary && in.PrimaryFenced {
		fail("traffic goes to a fenced primary")
	}
	if d.ServingFromStandby() && in.Current != siteStandby && !in.StandbyReady {
		fail("traffic moves to a standby that is not Ready")
	}
	if d.ServingFromStandby() && !d.RunStandby {
		fail("the standby serves but does not run")
	}
	if in.Standby == none && (d.RunStandby || d.ServingFromStandby()) {
		fail("standby None must never run or serve the standby")
	}
	if in.Standby == warm && !d.RunStandby {
		fail("a Warm standby must always run")
	}
	if d.Failover != (d.ServingFromStandby() && in.Current != siteStandby) {
		fail("Failover must mark exactly a move onto the standby")
	}
	if d.Failback != (d.Serving && d.Site == sitePrimary && in.Current == siteStandby) {
		fail("Failback must mark exactly a move from the standby to the primary")
	}
	if d.Failback && (in.PrimaryFenced || !in.PrimaryReady) && in.Standby != none {
		fail("failed back to a fenced or unready primary")
	}
	if in.Trigger == manual && in.Standby != none && d.Serving && in.Current != "" && d.Site != in.Current && d.Site != in.RequestedSite {
		fail("in Manual mode only activeSite moves traffic")
	}
	if in.Trigger == manual && d.RequeueAfter != 0 {
		fail("Manual mode has no time-based threshold")
	}
	if d.RequeueAfter < 0 || d.RequeueAfter > Hold(in.UnavailableAfter)+RequeueMargin {
		fail("RequeueAfter %s out of range", d.RequeueAfter)
	}
	// Deciding again at the requeue time must not ask for the same wait: the
	// threshold has been crossed by then.
	if d.RequeueAfter > 0 {
		later := in
		later.Now = in.Now.Add(d.RequeueAfter)
		if again := Decide(later); again.RequeueAfter > 0 && again.Reason == d.Reason && again.Site == d.Site &&
			!in.PrimaryReadySince.IsZero() {
			fail("requeue after %s leads to another wait of %s", d.RequeueAfter, again.RequeueAfter)
		}
	}
}

func isUpperCamel(s string) bool {
	if s == "" || !unicode.IsUpper(rune(s[0])) {
		return false
	}
	for _, r := range s {
		if !unicode.IsLetter(r) {
			return false
		}
	}
	return true
}

// primaryTimeline is a primary whose critical services are all Ready or one
// of them has no ready replica, changing at the given offsets from t0.
type primaryTimeline struct {
	// changes are offsets from t0 at which the primary flips, starting Ready
	// (since long before t0).
	changes []time.Duration
}

// at returns the primary's readiness fields at offset off.
func (p primaryTimeline) at(off time.Duration) (ready bool, readySince, downSince time.Time) {
	ready, readySince = true, t0.Add(-time.Hour)
	for _, c := range p.changes {
		if c > off {
			break
		}
		ready = !ready
		if ready {
			readySince, downSince = t0.Add(c), time.Time{}
		} else {
			readySince, downSince = time.Time{}, t0.Add(c)
		}
	}
	return ready, readySince, downSince
}

// site models the reconciler's bookkeeping of where traffic goes.
type site struct {
	current    v1alpha1.Site
	switchedAt time.Time
	moves      []string
}

func (s *site) apply(t *testing.T, now time.Time, d Decision) {
	t.Helper()
	next := v1alpha1.Site("")
	if d.Serving {
		next = d.Site
	}
	if d.Failover || d.Failback {
		kind := "failover"
		if d.Failback {
			kind = "failback"
		}
		s.moves = append(s.moves, fmt.Sprintf("%s at %s (%s)", kind, now.Sub(t0), d.Reason))
	}
	if next != s.current {
		if !d.Failover && !d.Failback {
			t.Errorf("at %s traffic moved %q → %q without a flag: %+v", now.Sub(t0), s.current, next, d)
		}
		s.current, s.switchedAt = next, now
	}
}

// flapping is the primary of the simulation: down 70s, up 10s, down 70s,
// then up.
var flapping = primaryTimeline{changes: []time.Duration{0, 70 * time.Second, 80 * time.Second, 150 * time.Second}}

func simInput(p primaryTimeline, s *site, now time.Time) Input {
	ready, readySince, downSince := p.at(now.Sub(t0))
	return Input{
		Standby: warm, Trigger: automatic, RequestedSite: sitePrimary, UnavailableAfter: time.Minute, Now: now,
		PrimaryReady: ready, PrimaryReadySince: readySince, CriticalDownSince: downSince, StandbyReady: true,
		Current: s.current, SwitchedAt: s.switchedAt,
	}
}

// TestSimulationFlappingPrimary steps time one second at a time through a
// primary that is down 70s, up 10s, down 70s, then up 120s (and on), with
// unavailableAfter 60s: traffic moves to the standby once, when the first
// outage reaches 60s, and back once, when the primary has been Ready for 60s
// after the second outage (t=150s+60s). The 10s recovery gets no traffic.
func TestSimulationFlappingPrimary(t *testing.T) {
	s := &site{current: sitePrimary, switchedAt: t0.Add(-time.Hour)}
	for off := -10 * time.Second; off <= 400*time.Second; off += time.Second {
		now := t0.Add(off)
		d := Decide(simInput(flapping, s, now))
		s.apply(t, now, d)
		wantSite := sitePrimary
		if off >= 60*time.Second && off < 210*time.Second {
			wantSite = siteStandby
		}
		if s.current != wantSite {
			t.Fatalf("at %s traffic goes to %q, want %q: %+v", off, s.current, wantSite, d)
		}
	}
	want := []string{"failover at 1m0s (PrimaryUnavailable)", "failback at 3m30s (FailedBack)"}
	if !slices.Equal(s.moves, want) {
		t.Errorf("moves = %q, want %q", s.moves, want)
	}
}

// TestSimulationWakesOnlyOnEventsAndRequeues runs the same primary, but the
// reconciler wakes only when readiness changes (its watches) and when a
// decision's RequeueAfter expires, as in the operator. RequeueAfter alone
// must bring the failover and the failback, each just after its threshold.
func TestSimulationWakesOnlyOnEventsAndRequeues(t *testing.T) {
	s := &site{current: sitePrimary, switchedAt: t0.Add(-time.Hour)}
	wakes := slices.Clone(flapping.changes)
	end := 400 * time.Second
	decisions := 0
	for len(wakes) > 0 {
		slices.Sort(wakes)
		off := wakes[0]
		wakes = wakes[1:]
		if off > end {
			break
		}
		now := t0.Add(off)
		d := Decide(simInput(flapping, s, now))
		decisions++
		s.apply(t, now, d)
		if d.RequeueAfter > 0 {
			wakes = append(wakes, off+d.RequeueAfter)
		}
	}
	want := []string{"failover at 1m0.1s (PrimaryUnavailable)", "failback at 3m30.1s (FailedBack)"}
	if !slices.Equal(s.moves, want) {
		t.Errorf("moves = %q, want %q", s.moves, want)
	}
	if s.current != sitePrimary {
		t.Errorf("traffic ends on %q, want Primary", s.current)
	}
	if decisions > 10 {
		t.Errorf("%d decisions for 4 readiness changes: requeues should be few", decisions)
	}
}

func TestHold(t *testing.T) {
	for _, tt := range []struct{ unavailableAfter, want time.Duration }{
		{0, time.Minute},
		{5 * time.Second, 30 * time.Second},
		{30 * time.Second, 30 * time.Second},
		{90 * time.Second, 90 * time.Second},
	} {
		if got := Hold(tt.unavailableAfter); got != tt.want {
			t.Errorf("Hold(%s) = %s, want %s", tt.unavailableAfter, got, tt.want)
		}
	}
}
