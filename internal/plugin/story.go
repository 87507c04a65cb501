package plugin

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/careplane/careplane/api/v1alpha1"
)

// maxEvents is how many of an environment's events status ENV shows,
// newest first.
const maxEvents = 15

// ExpectFenced says whether env should be fenced: its spec says Fenced, or
// a FenceRequest (heldBy, if not nil) holds it.
func ExpectFenced(env *v1alpha1.HealthEnvironment, heldBy *v1alpha1.FenceRequest) bool {
	return env.Spec.Isolation.Mode == v1alpha1.IsolationFenced || heldBy != nil
}

// IsolationProblem says why env, which should be fenced, is not isolated
// (its Fenced or IsolationVerified condition is not True), or "" when it
// is, or when it should not be fenced. Conditions report evidence, so this
// is what a responder's script checks after a fence.
func IsolationProblem(env *v1alpha1.HealthEnvironment, heldBy *v1alpha1.FenceRequest) string {
	if !ExpectFenced(env, heldBy) {
		return ""
	}
	var not []string
	for _, t := range []string{v1alpha1.ConditionFenced, v1alpha1.ConditionIsolationVerified} {
		c := meta.FindStatusCondition(env.Status.Conditions, t)
		switch {
		case c == nil:
			not = append(not, t+" not reported yet")
		case c.Status != metav1.ConditionTrue:
			not = append(not, fmt.Sprintf("%s=%s (%s)", t, c.Status, c.Reason))
		}
	}
	if len(not) == 0 {
		return ""
	}
	return fmt.Sprintf("HealthEnvironment %s should be fenced but %s", env.Name, strings.Join(not, ", "))
}

// Story is everything status ENV tells about one environment.
type Story struct {
	Env *v1alpha1.HealthEnvironment
	// HeldBy is the FenceRequest holding the fence while the
	// environment's own spec does not say Fenced, or nil.
	HeldBy *v1alpha1.FenceRequest
	// Events are the environment's events (events.k8s.io), in any order.
	Events []eventsv1.Event
	// EventsErr says why the events could not be read, or "".
	EventsErr string
	// Now is the time ages are measured against.
	Now time.Time
}

// WriteStory writes the whole story of one environment below its status
// row: the conditions with their messages, the fence (who holds it, what
// it did, the last verification), the active site and services, the
// incidents, and the newest events.
func WriteStory(w io.Writer, s Story) error {
	return writeStory(w, s, palette{})
}

func writeStory(w io.Writer, s Story, p palette) error {
	env := s.Env
	expect := ExpectFenced(env, s.HeldBy)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	section := func(title string) { fmt.Fprintf(tw, "\n%s:\n", title) }
	age := func(t metav1.Time) string {
		if t.IsZero() {
			return none
		}
		return duration.HumanDuration(s.Now.Sub(t.Time))
	}

	section("Conditions")
	if len(env.Status.Conditions) == 0 {
		fmt.Fprintln(tw, "  none reported yet: the operator has not seen this environment")
	} else {
		fmt.Fprintf(tw, "  TYPE\t%s\tREASON\tAGE\tMESSAGE\n", p.paint(plain, "STATUS"))
		for _, c := range sortedConditions(env.Status.Conditions) {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Type, p.paint(conditionColour(c.Type, c.Status, expect), string(c.Status)),
				c.Reason, age(c.LastTransitionTime), oneLine(c.Message))
		}
	}

	section("Fence")
	iso := env.Status.Isolation
	switch {
	case s.HeldBy != nil:
		fmt.Fprintf(tw, "  Held by:\tFenceRequest %s (ticket %s, reason %q); the environment's own spec.isolation does not say Fenced yet\n",
			s.HeldBy.Name, orNone(s.HeldBy.Spec.Ticket), s.HeldBy.Spec.Reason)
	case env.Spec.Isolation.Mode == v1alpha1.IsolationFenced:
		fmt.Fprintf(tw, "  Held by:\tspec.isolation (ticket %s, reason %q, workloads %s)\n",
			orNone(env.Spec.Isolation.Ticket), env.Spec.Isolation.Reason, orNone(string(env.Spec.Isolation.Workloads)))
	case meta.IsStatusConditionTrue(env.Status.Conditions, v1alpha1.ConditionFenced):
		fmt.Fprintln(tw, "  Held by:\tthe restore: the fence stays until the rebuilt primary is Ready")
	default:
		fmt.Fprintln(tw, "  Held by:\tnothing: not fenced")
	}
	if iso != nil && (expect || iso.FencedAt != nil) {
		if iso.Request != "" && s.HeldBy == nil {
			fmt.Fprintf(tw, "  Fenced by:\tFenceRequest %s\n", iso.Request)
		}
		fmt.Fprintf(tw, "  Fenced at:\t%s\n", timestamp(iso.FencedAt))
		fmt.Fprintf(tw, "  Credentials revoked:\t%d\n", iso.CredentialsRevoked)
		fmt.Fprintf(tw, "  Evidence pods:\t%d\n", iso.EvidencePods)
		if len(iso.RemovedPolicies) > 0 {
			fmt.Fprintf(tw, "  Removed policies:\t%s\n", strings.Join(iso.RemovedPolicies, ", "))
		}
	}
	if ev := env.Status.EvidenceSnapshots; len(ev) > 0 {
		// Kept after the restore too, until a responder purges them.
		ready := 0
		for _, e := range ev {
			if e.Ready {
				ready++
			}
		}
		fmt.Fprintf(tw, "  Evidence snapshots:\t%d (%d ready; kubectl careplane recovery-points %s)\n", len(ev), ready, env.Name)
	}
	verified := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionIsolationVerified)
	switch {
	case iso != nil && iso.VerifiedAt != nil:
		fmt.Fprintf(tw, "  Last verification:\t%s (%s ago)", timestamp(iso.VerifiedAt), age(*iso.VerifiedAt))
		if verified != nil {
			fmt.Fprintf(tw, ": IsolationVerified=%s (%s)", p.paint(conditionColour(verified.Type, verified.Status, expect), string(verified.Status)), verified.Reason)
		}
		fmt.Fprintln(tw)
	default:
		fmt.Fprintln(tw, "  Last verification:\tnever")
	}
	if problem := IsolationProblem(env, s.HeldBy); problem != "" {
		fmt.Fprintf(tw, "  %s\n", p.paint(red, "NOT ISOLATED: "+problem))
	}

	section("Sites")
	active := orNone(string(env.Status.ActiveSite))
	if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionServingFromStandby); c != nil && c.Message != "" {
		active += ": " + oneLine(c.Message)
	}
	fmt.Fprintf(tw, "  Active:\t%s\n", active)
	if ns := env.Status.Namespaces; ns != nil {
		fmt.Fprintf(tw, "  Namespaces:\tfront %s, primary %s, standby %s\n", orNone(ns.Front), orNone(ns.Primary), orNone(ns.Standby))
	}
	if len(env.Status.Services) > 0 {
		section("Services")
		fmt.Fprintln(tw, "  NAME\tSITE\tREADY\tIMAGE")
		for _, svc := range env.Status.Services {
			fmt.Fprintf(tw, "  %s\t%s\t%d/%d\t%s\n", svc.Name, svc.Site, svc.ReadyReplicas, svc.Replicas, orNone(svc.Image))
		}
	}

	section("Incidents")
	if len(env.Status.Incidents) == 0 {
		fmt.Fprintln(tw, "  none")
	} else {
		fmt.Fprintln(tw, "  TICKET\tFENCED\tRESTORED\tFROM\tREASON")
		// Newest first: the one a responder is working on.
		for i := len(env.Status.Incidents) - 1; i >= 0; i-- {
			inc := env.Status.Incidents[i]
			restored := "open"
			if inc.RestoredAt != nil {
				restored = timestamp(inc.RestoredAt)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", orNone(inc.Ticket), timestamp(inc.FencedAt), restored, orNone(inc.RestoredFrom), oneLine(inc.Reason))
		}
	}

	evs := newestEvents(s.Events, maxEvents)
	section(fmt.Sprintf("Events (newest %d of %d)", len(evs), len(s.Events)))
	switch {
	case s.EventsErr != "":
		fmt.Fprintf(tw, "  not readable: %s\n", s.EventsErr)
	case len(evs) == 0:
		fmt.Fprintln(tw, "  none (events expire after an hour by default)")
	default:
		fmt.Fprintf(tw, "  LAST SEEN\t%s\tREASON\tACTION\tCOUNT\tNOTE\n", p.paint(plain, "TYPE"))
		for _, e := range evs {
			typ := p.paint(pick(e.Type == "Warning", yellow, plain), e.Type)
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", age(metav1.NewTime(eventTime(e))), typ, e.Reason, orNone(e.Action),
				strconv.Itoa(eventCount(e)), oneLine(e.Note))
		}
	}
	return tw.Flush()
}

// sortedConditions orders conditions as v1alpha1.ConditionTypes lists them,
// unknown types last by name.
func sortedConditions(cs []metav1.Condition) []metav1.Condition {
	rank := func(t string) int {
		if i := slices.Index(v1alpha1.ConditionTypes, t); i >= 0 {
			return i
		}
		return len(v1alpha1.ConditionTypes)
	}
	sorted := slices.Clone(cs)
	slices.SortStableFunc(sorted, func(a, b metav1.Condition) int {
		return cmp.Or(cmp.Compare(rank(a.Type), rank(b.Type)), cmp.Compare(a.Type, b.Type))
	})
	return sorted
}

// eventTime is when e last happened: its series' last observation, or
// when it was first recorded.
func eventTime(e eventsv1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.DeprecatedLastTimestamp.IsZero():
		return e.DeprecatedLastTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

func eventCount(e eventsv1.Event) int {
	if e.Series != nil && e.Series.Count > 0 {
		return int(e.Series.Count)
	}
	if e.DeprecatedCount > 0 {
		return int(e.DeprecatedCount)
	}
	return 1
}

// newestEvents returns at most n of evs, newest first.
func newestEvents(evs []eventsv1.Event, n int) []eventsv1.Event {
	sorted := slices.Clone(evs)
	slices.SortStableFunc(sorted, func(a, b eventsv1.Event) int {
		return cmp.Or(eventTime(b).Compare(eventTime(a)), cmp.Compare(a.Name, b.Name))
	})
	return sorted[:min(n, len(sorted))]
}

// oneLine keeps a message on its row of the table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
