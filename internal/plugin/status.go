package plugin

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// none is shown for an empty cell.
const none = "<none>"

// StatusRow is one environment as `status` shows it.
type StatusRow struct {
	Name, Tenant, Mode, Active, Services, Ready, KnownGood, LastIncident string
}

// StatusRowOf summarises env for the status table. heldBy, if not nil, is
// the FenceRequest that fences env while its own spec does not say Fenced:
// env is shown fenced, as careplane treats it, rather than as its spec reads.
func StatusRowOf(env *v1alpha1.HealthEnvironment, heldBy *v1alpha1.FenceRequest) StatusRow {
	r := StatusRow{
		Name:      env.Name,
		Tenant:    orNone(env.Spec.Tenant.DisplayName),
		Mode:      string(env.Spec.Isolation.Mode),
		Active:    orNone(string(env.Status.ActiveSite)),
		Services:  orNone(env.Status.ReadyServices),
		Ready:     "Unknown",
		KnownGood: orNone(env.Status.KnownGoodRevision),
	}
	if r.Mode == "" {
		r.Mode = string(v1alpha1.IsolationNone)
	}
	if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		r.Ready = string(c.Status)
	}
	r.LastIncident = lastIncident(env)
	if heldBy != nil && env.Spec.Isolation.Mode != v1alpha1.IsolationFenced {
		r.Mode = string(v1alpha1.IsolationFenced)
		ticket := heldBy.Spec.Ticket
		if ticket == "" {
			ticket = "(no ticket)"
		}
		r.LastIncident = ticket + " open"
		if st := env.Status.Isolation; st != nil && st.FencedAt != nil {
			r.LastIncident += " since " + timestamp(st.FencedAt)
		}
		r.LastIncident += " by FenceRequest " + heldBy.Name
	}
	return r
}

// lastIncident describes the open fence, or else the newest incident.
func lastIncident(env *v1alpha1.HealthEnvironment) string {
	if env.Spec.Isolation.Mode == v1alpha1.IsolationFenced {
		ticket := env.Spec.Isolation.Ticket
		if ticket == "" {
			ticket = "(no ticket)"
		}
		s := ticket + " open"
		if st := env.Status.Isolation; st != nil && st.FencedAt != nil {
			s += " since " + timestamp(st.FencedAt)
		}
		return s
	}
	if n := len(env.Status.Incidents); n > 0 {
		inc := env.Status.Incidents[n-1]
		ticket := inc.Ticket
		if ticket == "" {
			ticket = "(no ticket)"
		}
		if inc.RestoredAt != nil {
			return ticket + " restored " + timestamp(inc.RestoredAt)
		}
		return ticket + " fenced " + timestamp(inc.FencedAt)
	}
	return none
}

func timestamp(t *metav1.Time) string {
	if t == nil {
		return "?"
	}
	return t.UTC().Format(time.RFC3339)
}

func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

// WriteStatus writes envs, sorted by name, as a table with the columns NAME
// TENANT MODE ACTIVE SERVICES READY KNOWN-GOOD LAST-INCIDENT, and then the
// FenceRequests that still hold any of them: a fleet fence whose
// environments' specs do not all say Fenced yet (the plugin was stopped
// half-way, or is still writing them).
func WriteStatus(w io.Writer, envs []v1alpha1.HealthEnvironment, requests []v1alpha1.FenceRequest) error {
	return writeStatus(w, envs, requests, palette{})
}

func writeStatus(w io.Writer, envs []v1alpha1.HealthEnvironment, requests []v1alpha1.FenceRequest, p palette) error {
	if len(envs) == 0 {
		_, err := fmt.Fprintln(w, "No HealthEnvironments found.")
		return err
	}
	sorted := slices.Clone(envs)
	slices.SortFunc(sorted, func(a, b v1alpha1.HealthEnvironment) int { return cmp.Compare(a.Name, b.Name) })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// Headers of painted columns are painted too, to keep them aligned.
	fmt.Fprintf(tw, "NAME\tTENANT\t%s\tACTIVE\tSERVICES\t%s\tKNOWN-GOOD\tLAST-INCIDENT\n", p.paint(plain, "MODE"), p.paint(plain, "READY"))
	holding := map[string]bool{} // requests holding any environment shown
	for i := range sorted {
		for _, fr := range requests {
			holding[fr.Name] = holding[fr.Name] || fr.Holds(sorted[i].Name)
		}
		heldBy := v1alpha1.HoldingRequest(requests, sorted[i].Name)
		r := StatusRowOf(&sorted[i], heldBy)
		mode := plain
		if ExpectFenced(&sorted[i], heldBy) {
			mode = pick(IsolationProblem(&sorted[i], heldBy) == "", green, red)
		}
		ready := conditionColour(v1alpha1.ConditionReady, metav1.ConditionStatus(r.Ready), false)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Tenant, p.paint(mode, r.Mode), r.Active, r.Services,
			p.paint(ready, r.Ready), r.KnownGood, r.LastIncident)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, fr := range sortedRequests(requests) {
		if !holding[fr.Name] {
			continue
		}
		ticket := ""
		if fr.Spec.Ticket != "" {
			ticket = " (" + fr.Spec.Ticket + ")"
		}
		if _, err := fmt.Fprintf(w, "\nFenceRequest %s%s still holds the fence of %d of its %d environments: "+
			"their own spec.isolation does not say Fenced yet (kubectl careplane fence --selector writes it)\n",
			fr.Name, ticket, fr.Status.HoldingCount, fr.Status.Matched); err != nil {
			return err
		}
	}
	return nil
}

// sortedRequests is requests, oldest first.
func sortedRequests(requests []v1alpha1.FenceRequest) []v1alpha1.FenceRequest {
	sorted := slices.Clone(requests)
	slices.SortFunc(sorted, func(a, b v1alpha1.FenceRequest) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name))
	})
	return sorted
}

// SortRevisions sorts revisions newest first: by revision number, then by
// creation time, then by name.
func SortRevisions(revs []appsv1.ControllerRevision) {
	slices.SortFunc(revs, func(a, b appsv1.ControllerRevision) int {
		return cmp.Or(
			cmp.Compare(b.Revision, a.Revision),
			b.CreationTimestamp.Compare(a.CreationTimestamp.Time),
			cmp.Compare(a.Name, b.Name),
		)
	})
}

// WriteRevisions writes the known-good revisions of an environment newest
// first, with the columns KNOWN-GOOD NAME REVISION CREATED, marking the one
// status.knownGoodRevision names with "*".
func WriteRevisions(w io.Writer, revs []appsv1.ControllerRevision, knownGood string) error {
	if len(revs) == 0 {
		_, err := fmt.Fprintln(w, "No revisions recorded yet: an environment records one when it is first Ready.")
		return err
	}
	sorted := slices.Clone(revs)
	SortRevisions(sorted)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// The mark comes first, as kubectl config get-contexts puts CURRENT,
	// so that no line ends in padding.
	fmt.Fprintln(tw, "KNOWN-GOOD\tNAME\tREVISION\tCREATED")
	for _, r := range sorted {
		mark := ""
		if r.Name == knownGood {
			mark = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", mark, r.Name, strconv.FormatInt(r.Revision, 10), r.CreationTimestamp.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// FenceDone reports whether env has reported the fence of generation gen
// complete (Fenced=True), and a one-line progress message.
func FenceDone(env *v1alpha1.HealthEnvironment, gen int64) (bool, string) {
	c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced)
	if c == nil {
		return false, "waiting for the operator to report the Fenced condition"
	}
	msg := fmt.Sprintf("Fenced=%s (%s): %s", c.Status, c.Reason, c.Message)
	return c.Status == metav1.ConditionTrue && c.ObservedGeneration >= gen, msg
}

// RestoreDone reports whether env has reported the restore of generation gen
// complete (Ready=True and Fenced=False, status observed at gen or later),
// and a one-line progress message.
func RestoreDone(env *v1alpha1.HealthEnvironment, gen int64) (bool, string) {
	ready := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionReady)
	fenced := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced)
	if ready == nil || fenced == nil {
		return false, "waiting for the operator to report the Ready and Fenced conditions"
	}
	msg := fmt.Sprintf("Ready=%s (%s), Fenced=%s (%s)", ready.Status, ready.Reason, fenced.Status, fenced.Reason)
	if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionRestoring); c != nil && (c.Status == metav1.ConditionTrue || c.Reason == v1alpha1.ReasonRestoreBlocked) {
		msg += fmt.Sprintf(", Restoring=%s (%s): %s", c.Status, c.Reason, c.Message)
	}
	done := ready.Status == metav1.ConditionTrue && fenced.Status == metav1.ConditionFalse &&
		env.Status.ObservedGeneration >= gen && ready.ObservedGeneration >= gen
	return done, msg
}

// RestoreBlocked returns the Restoring condition's message when the operator
// reports the restore cannot proceed (for example an unknown revision).
func RestoreBlocked(env *v1alpha1.HealthEnvironment, gen int64) (string, bool) {
	c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionRestoring)
	if c == nil || c.Reason != v1alpha1.ReasonRestoreBlocked || c.ObservedGeneration < gen {
		return "", false
	}
	return c.Message, true
}
