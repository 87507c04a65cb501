package controllers

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/netpol"
)

// TestTransitionsFoldWhatAnotherEventTells: a status change sends one event
// per thing that happened, not one per condition that moved with it.
func TestTransitionsFoldWhatAnotherEventTells(t *testing.T) {
	type cond = metav1.Condition
	c := func(t string, s metav1.ConditionStatus, reason string) cond {
		return cond{Type: t, Status: s, Reason: reason, Message: reason}
	}
	st := func(incidents []v1alpha1.Incident, conds ...cond) *v1alpha1.HealthEnvironmentStatus {
		return &v1alpha1.HealthEnvironmentStatus{Conditions: conds, Incidents: incidents}
	}
	at := &metav1.Time{Time: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	later := &metav1.Time{Time: at.Add(time.Hour)}
	older := []v1alpha1.Incident{{Ticket: "INC-1", FencedAt: at}}
	withNew := append(older, v1alpha1.Incident{Ticket: "INC-2", FencedAt: later})
	// fencedAt is the fence the status describes.
	fencedAt := func(s *v1alpha1.HealthEnvironmentStatus, at *metav1.Time) *v1alpha1.HealthEnvironmentStatus {
		s.Isolation = &v1alpha1.IsolationStatus{FencedAt: at}
		return s
	}
	const (
		fenced, verified, restoring, ready = v1alpha1.ConditionFenced, v1alpha1.ConditionIsolationVerified, v1alpha1.ConditionRestoring, v1alpha1.ConditionReady
		yes, no, unknown                   = metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown
	)
	rebuilding := []cond{c(fenced, yes, v1alpha1.ReasonRestoring), c(verified, unknown, v1alpha1.ReasonNotEvaluated),
		c(restoring, yes, v1alpha1.ReasonRebuilding), c(ready, no, v1alpha1.ReasonServicesUnavailable)}
	lifted := []cond{c(fenced, no, v1alpha1.ReasonNotFenced), c(verified, unknown, v1alpha1.ReasonNotEvaluated),
		c(restoring, no, v1alpha1.ReasonNotRestoring), c(ready, yes, v1alpha1.ReasonAvailable)}
	for _, tc := range []struct {
		name          string
		before, after *v1alpha1.HealthEnvironmentStatus
		want          []string
	}{
		{"a restore's lift: the Restored event tells the fence lifted and the restore over",
			fencedAt(st(older, rebuilding...), later), st(withNew, lifted...), []string{v1alpha1.ReasonAvailable}},
		{"the pass after a lift whose status write was lost",
			fencedAt(st(withNew, rebuilding...), later), st(withNew, lifted...), []string{v1alpha1.ReasonAvailable}},
		{"the same moves with no incident of that fence are told",
			fencedAt(st(older, rebuilding...), later), st(older, lifted...),
			[]string{v1alpha1.ReasonAvailable, v1alpha1.ReasonNotFenced, v1alpha1.ReasonNotRestoring}},
		{"a fence resumed over its aborted lift withdraws the lift's incident",
			fencedAt(st(withNew, rebuilding...), later),
			fencedAt(st(older, c(fenced, yes, v1alpha1.ReasonFenceComplete), c(verified, unknown, v1alpha1.ReasonNotEvaluated),
				c(restoring, no, v1alpha1.ReasonNotRestoring), c(ready, no, v1alpha1.ReasonServicesUnavailable)), later),
			[]string{v1alpha1.ReasonFenceComplete, v1alpha1.ReasonNotRestoring, "LiftAborted"}},
		{"the oldest incident rotated out is not withdrawn",
			fencedAt(st(withNew, lifted...), later), fencedAt(st(withNew[1:], lifted...), later), nil},
		{"a restore begins: the fence's Warning is never folded into Rebuilding",
			st(nil, c(fenced, yes, v1alpha1.ReasonFenceComplete), c(restoring, no, v1alpha1.ReasonNotRestoring)),
			st(nil, c(fenced, yes, v1alpha1.ReasonRestoring), c(restoring, yes, v1alpha1.ReasonRebuilding)),
			[]string{v1alpha1.ReasonRestoring, v1alpha1.ReasonRebuilding}},
		{"the fence completes: FenceComplete tells the isolation verified",
			st(nil, c(fenced, yes, v1alpha1.ReasonFenced), c(verified, unknown, v1alpha1.ReasonNotEvaluated)),
			st(nil, c(fenced, yes, v1alpha1.ReasonFenceComplete), c(verified, yes, v1alpha1.ReasonNoAllowedFlows)),
			[]string{v1alpha1.ReasonFenceComplete}},
		{"verified again under a complete fence",
			st(nil, c(fenced, yes, v1alpha1.ReasonFenceComplete), c(verified, no, v1alpha1.ReasonFlowAllowed)),
			st(nil, c(fenced, yes, v1alpha1.ReasonFenceComplete), c(verified, yes, v1alpha1.ReasonNoAllowedFlows)),
			[]string{v1alpha1.ReasonNoAllowedFlows}},
		{"a flow found as the fence completes is never folded",
			st(nil, c(fenced, yes, v1alpha1.ReasonFenced), c(verified, unknown, v1alpha1.ReasonNotEvaluated)),
			st(nil, c(fenced, yes, v1alpha1.ReasonFenceIncomplete), c(verified, no, v1alpha1.ReasonFlowAllowed)),
			[]string{v1alpha1.ReasonFenceIncomplete, v1alpha1.ReasonFlowAllowed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, e := range transitions(tc.before, tc.after) {
				got = append(got, e.reason)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("events %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAResumedFenceDropsItsIncidentOnlyOnceOnRecord: a fence's pass drops
// the incident of the fence on record (a lift it resumed over) only once
// its own write of the record went through. A record read from a cache
// behind the lift's removal of it is the lifted fence's: its write
// conflicts, and the restore's incident stays.
func TestAResumedFenceDropsItsIncidentOnlyOnceOnRecord(t *testing.T) {
	began := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	rec := fence.Record{ID: fence.NewID(began), Source: fence.SourceSpec, RestoreID: fence.NewID(began.Add(time.Hour))}
	for _, tc := range []struct {
		name         string
		windowClosed bool
		want         int
	}{
		{"the window's write conflicted: the record read may be stale", false, 1},
		{"the record written this pass", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "resumed"}}
			env.Status.Incidents = []v1alpha1.Incident{{Ticket: "INC-1", FencedAt: &metav1.Time{Time: began}, RestoreID: rec.RestoreID}}
			s := newScope(env, began.Add(2*time.Hour))
			s.record, s.course, s.windowClosed = rec, fence.CourseFence, tc.windowClosed
			s.finishIsolation()
			if n := len(s.status.Incidents); n != tc.want {
				t.Errorf("%d incidents, want %d: %+v", n, tc.want, s.status.Incidents)
			}
		})
	}
}

// TestANewFenceOnRecordStartsItsOwnIsolation: the pass that begins a new
// fence found no record when it gathered (a lift before it, whose status
// write was lost, left the lifted fence's status.isolation) and writes the
// record itself: the status it writes is the new fence's alone.
func TestANewFenceOnRecordStartsItsOwnIsolation(t *testing.T) {
	lifted := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	began := lifted.Add(time.Hour)
	env := &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "refenced"}}
	env.Status.Isolation = &v1alpha1.IsolationStatus{FencedAt: &metav1.Time{Time: lifted}, FencedBy: "alice@responders",
		Ticket: "INC-ONE", CredentialsRevoked: 6, RemovedPolicies: []string{"allow-dns"}}
	s := newScope(env, began)
	// As Reconcile leaves it with no record gathered, and reconcileFence
	// once it has written the new one.
	s.isoStatus = fence.IsolationOf(s.record, env.Status.Isolation)
	s.record, s.course, s.windowClosed = fence.Record{ID: fence.NewID(began), Source: fence.SourceSpec}, fence.CourseFence, true
	s.fencedBy, s.credentialsRevoked = "carol@responders", 4
	s.fenceComplete, s.verified = true, &netpol.Result{Isolated: true}
	s.finish(nil)
	iso := s.status.Isolation
	if iso == nil || iso.FencedAt == nil || !iso.FencedAt.Equal(&metav1.Time{Time: began}) || iso.FencedBy != "carol@responders" ||
		iso.CredentialsRevoked != 4 || len(iso.RemovedPolicies) != 0 {
		t.Errorf("status.isolation = %+v, want the new fence's alone: fenced at %s by carol@responders, 4 credentials revoked, no policies yet", iso, began)
	}
	// The conditions say so too.
	if c := findCondition(s.status.Conditions, v1alpha1.ConditionFenced); c == nil ||
		!strings.Contains(c.Message, "4 credentials revoked") || !strings.Contains(c.Message, "asked for by carol@responders") {
		t.Errorf("Fenced = %+v, want it to tell the new fence alone", c)
	}
}

// TestUnrecordedIsCarriedToItsFenceOnly: what a pass did and its status
// write did not record is added once, to the next pass of the same fence of
// the same environment; a pass with no fence on record (it stopped early,
// or read a cache behind the record) leaves it for the next; another fence
// or a re-created environment drops it.
func TestUnrecordedIsCarriedToItsFenceOnly(t *testing.T) {
	env := sampleEnv("carried")
	env.UID = "uid-1"
	fenceA := fence.Record{ID: "2026-12-07T10:00:00Z", Source: fence.SourceSpec}
	pass := func(uid types.UID, rec fence.Record) *scope {
		e := env.DeepCopy()
		e.UID = uid
		s := newScope(e, time.Now())
		s.record = rec
		return s
	}
	var m unrecordedMemory
	first := pass("uid-1", fenceA)
	first.removedPolicies, first.credentialsRevoked = []string{"allow-all (not careplane's)"}, 3
	m.keep(first)

	early := pass("uid-1", fence.Record{})
	m.take(early)
	if early.credentialsRevoked != 0 || len(early.removedPolicies) != 0 {
		t.Fatalf("a pass with no fence on record took %d, %v", early.credentialsRevoked, early.removedPolicies)
	}
	next := pass("uid-1", fenceA)
	next.credentialsRevoked = 1
	m.take(next)
	if next.credentialsRevoked != 4 || !slices.Equal(next.removedPolicies, []string{"allow-all (not careplane's)"}) {
		t.Errorf("the next pass of the fence has %d revoked and %v removed, want 4 and the first pass's policy", next.credentialsRevoked, next.removedPolicies)
	}
	again := pass("uid-1", fenceA)
	m.take(again)
	if again.credentialsRevoked != 0 || len(again.removedPolicies) != 0 {
		t.Errorf("a later pass took it again: %d, %v", again.credentialsRevoked, again.removedPolicies)
	}

	for _, other := range []*scope{pass("uid-1", fence.Record{ID: "2026-12-07T12:00:00Z", Source: fence.SourceSpec}), pass("uid-2", fenceA)} {
		m.keep(first)
		m.take(other)
		later := pass("uid-1", fenceA)
		m.take(later)
		if other.credentialsRevoked != 0 || later.credentialsRevoked != 0 {
			t.Errorf("of fence %s of %s: taken %d, and after it %d; want it dropped", other.record.ID, other.env.UID, other.credentialsRevoked, later.credentialsRevoked)
		}
	}
}
