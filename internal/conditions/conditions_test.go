package conditions

import (
	"errors"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/netpol"
)

type want struct{ status, reason string }

func TestSet(t *testing.T) {
	readyPrimary := []v1alpha1.ServiceStatus{{Name: "a", Site: v1alpha1.SitePrimary, Replicas: 2, ReadyReplicas: 2}}
	halfReady := []v1alpha1.ServiceStatus{{Name: "a", Site: v1alpha1.SitePrimary, Replicas: 2, ReadyReplicas: 1}}
	isolated, leak := &netpol.Result{Isolated: true}, &netpol.Result{Flows: []netpol.Flow{{Direction: "Egress", Pod: "a-1"}}}
	for _, tc := range []struct {
		name string
		in   Input
		want map[string]want
	}{
		{"ready, never fenced", Input{Services: readyPrimary, ActiveSite: v1alpha1.SitePrimary, Serving: true}, map[string]want{
			v1alpha1.ConditionReady: {"True", v1alpha1.ReasonAvailable}, v1alpha1.ConditionDegraded: {"False", v1alpha1.ReasonAsExpected},
			v1alpha1.ConditionFenced: {"False", v1alpha1.ReasonNotFenced}, v1alpha1.ConditionIsolationVerified: {"Unknown", v1alpha1.ReasonNotEvaluated},
			v1alpha1.ConditionRestoring: {"False", v1alpha1.ReasonNotRestoring}, v1alpha1.ConditionServingFromStandby: {"False", v1alpha1.ReasonServingFromPrimary},
		}},
		{"rolling out", Input{Services: halfReady, ActiveSite: v1alpha1.SitePrimary, Serving: true}, map[string]want{
			v1alpha1.ConditionReady: {"False", v1alpha1.ReasonProvisioning}, v1alpha1.ConditionDegraded: {"False", v1alpha1.ReasonAsExpected},
		}},
		{"a write failed", Input{Services: readyPrimary, ActiveSite: v1alpha1.SitePrimary, Serving: true, Err: errors.New("boom")}, map[string]want{
			v1alpha1.ConditionReady: {"False", v1alpha1.ReasonApplyFailed}, v1alpha1.ConditionDegraded: {"True", v1alpha1.ReasonApplyFailed},
		}},
		{"conflict", Input{Conflict: "x-primary"}, map[string]want{
			v1alpha1.ConditionReady: {"False", v1alpha1.ReasonNamespaceConflict}, v1alpha1.ConditionDegraded: {"True", v1alpha1.ReasonNamespaceConflict},
		}},
		{"stalled", Input{Services: halfReady, ActiveSite: v1alpha1.SitePrimary, Serving: true, Stalled: []string{"ns/a: quota"}}, map[string]want{
			v1alpha1.ConditionReady: {"False", v1alpha1.ReasonServicesUnavailable}, v1alpha1.ConditionDegraded: {"True", v1alpha1.ReasonServicesUnavailable},
		}},
		{"fenced and verified", Input{Fence: Fence{Fencing: true, Recorded: true, Complete: true, Verified: isolated}}, map[string]want{
			v1alpha1.ConditionFenced: {"True", v1alpha1.ReasonFenceComplete}, v1alpha1.ConditionIsolationVerified: {"True", v1alpha1.ReasonNoAllowedFlows},
			v1alpha1.ConditionReady: {"False", v1alpha1.ReasonFenced}, v1alpha1.ConditionDegraded: {"False", v1alpha1.ReasonAsExpected},
		}},
		{"every step done, a flow allowed: not fenced", Input{Fence: Fence{Fencing: true, Recorded: true, Complete: true, Verified: leak}}, map[string]want{
			v1alpha1.ConditionFenced: {"False", v1alpha1.ReasonFenceIncomplete}, v1alpha1.ConditionIsolationVerified: {"False", v1alpha1.ReasonFlowAllowed},
		}},
		{"every step done, not evaluated: not fenced", Input{Fence: Fence{Fencing: true, Recorded: true, Complete: true}}, map[string]want{
			v1alpha1.ConditionFenced: {"False", v1alpha1.ReasonFenceIncomplete},
		}},
		{"verified but a step failed: not fenced", Input{Err: errors.New("x"), Fence: Fence{Fencing: true, Recorded: true, Complete: true, Verified: isolated}}, map[string]want{
			v1alpha1.ConditionFenced: {"False", v1alpha1.ReasonFenceIncomplete},
		}},
		{"fence asked, window not yet closed", Input{Fence: Fence{Fencing: true}}, map[string]want{
			v1alpha1.ConditionFenced: {"False", v1alpha1.ReasonFenceIncomplete},
		}},
		{"restoring", Input{Fence: Fence{Recorded: true, Restoring: true, From: "spec"}}, map[string]want{
			v1alpha1.ConditionFenced: {"True", v1alpha1.ReasonRestoring}, v1alpha1.ConditionRestoring: {"True", v1alpha1.ReasonRebuilding},
			v1alpha1.ConditionReady: {"False", v1alpha1.ReasonFenced},
		}},
		{"restore blocked", Input{Fence: Fence{Recorded: true, RestoreErr: errors.New("no such revision")}}, map[string]want{
			v1alpha1.ConditionFenced: {"True", v1alpha1.ReasonRestoring}, v1alpha1.ConditionRestoring: {"False", v1alpha1.ReasonRestoreBlocked},
		}},
		{"restored", Input{Services: readyPrimary, ActiveSite: v1alpha1.SitePrimary, Serving: true, Fence: Fence{Recorded: true, Restoring: true, Restored: true}}, map[string]want{
			v1alpha1.ConditionFenced: {"False", v1alpha1.ReasonNotFenced}, v1alpha1.ConditionRestoring: {"False", v1alpha1.ReasonNotRestoring},
			v1alpha1.ConditionReady: {"True", v1alpha1.ReasonAvailable}, v1alpha1.ConditionIsolationVerified: {"Unknown", v1alpha1.ReasonNotEvaluated},
		}},
		{"deleted while fenced", Input{DeletionBlocked: true, Fence: Fence{Fencing: true, Recorded: true, Complete: true, Verified: isolated}}, map[string]want{
			v1alpha1.ConditionReady: {"False", v1alpha1.ReasonFenced}, v1alpha1.ConditionFenced: {"True", v1alpha1.ReasonFenceComplete},
		}},
		{"serving from the standby", Input{Services: []v1alpha1.ServiceStatus{{Name: "a", Site: v1alpha1.SiteStandby, Replicas: 1, ReadyReplicas: 1}},
			ActiveSite: v1alpha1.SiteStandby, Serving: true, Traffic: &Traffic{FromStandby: true, Reason: "PrimaryFenced", Message: "fenced"},
			Fence: Fence{Fencing: true, Recorded: true, Complete: true, Verified: isolated}}, map[string]want{
			v1alpha1.ConditionServingFromStandby: {"True", "PrimaryFenced"}, v1alpha1.ConditionDegraded: {"True", v1alpha1.ReasonServingFromStandby},
			v1alpha1.ConditionReady: {"True", v1alpha1.ReasonAvailable},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conds []metav1.Condition
			Set(&conds, tc.in)
			for typ, w := range tc.want {
				c := meta.FindStatusCondition(conds, typ)
				if c == nil || string(c.Status) != w.status || c.Reason != w.reason {
					t.Errorf("%s = %+v, want %s/%s", typ, c, w.status, w.reason)
				}
			}
		})
	}
}

// TestTheLiftSetsTheSteadyState: the pass after the one that lifted a fence
// changes no condition, so it writes no status and emits no event.
func TestTheLiftSetsTheSteadyState(t *testing.T) {
	fenced := Input{Fence: Fence{Fencing: true, Recorded: true, Complete: true, Verified: &netpol.Result{Isolated: true}}}
	restoring := Input{Fence: Fence{Recorded: true, Restoring: true, From: "spec"}}
	lifted := Input{Services: []v1alpha1.ServiceStatus{{Name: "a", Site: v1alpha1.SitePrimary, Replicas: 1, ReadyReplicas: 1}},
		ActiveSite: v1alpha1.SitePrimary, Serving: true}
	liftPass := lifted
	liftPass.Fence = Fence{Recorded: true, Restoring: true, Restored: true}

	var conds []metav1.Condition
	for _, in := range []Input{fenced, restoring, liftPass} {
		Set(&conds, in)
	}
	after := append([]metav1.Condition(nil), conds...)
	Set(&conds, lifted)
	for _, c := range after {
		got := meta.FindStatusCondition(conds, c.Type)
		if got.Status != c.Status || got.Reason != c.Reason || got.Message != c.Message {
			t.Errorf("%s changed one pass after the lift: %s/%s %q, then %s/%s %q", c.Type, c.Status, c.Reason, c.Message, got.Status, got.Reason, got.Message)
		}
	}
	if c := meta.FindStatusCondition(conds, v1alpha1.ConditionFenced); c.Message != "The fence was lifted after the primary site was rebuilt" {
		t.Errorf("Fenced message after the lift = %q, want how the fence ended", c.Message)
	}

	// The lift's status write lost, the pass after it (no fence on record,
	// the fence's incident on record) writes what the lift's would have.
	afterLost := lifted
	afterLost.Fence = Fence{Restored: true}
	var lost []metav1.Condition
	for _, in := range []Input{fenced, restoring, afterLost} {
		Set(&lost, in)
	}
	for _, c := range after {
		got := meta.FindStatusCondition(lost, c.Type)
		if got == nil || got.Status != c.Status || got.Reason != c.Reason || got.Message != c.Message {
			t.Errorf("%s after a lost lift write: %+v, want %s/%s %q as the lift writes", c.Type, got, c.Status, c.Reason, c.Message)
		}
	}

	// A new environment, never fenced, says why it is not.
	var fresh []metav1.Condition
	Set(&fresh, lifted)
	if c := meta.FindStatusCondition(fresh, v1alpha1.ConditionFenced); c.Message != "isolation.mode is None" {
		t.Errorf("Fenced message of a new environment = %q", c.Message)
	}
}

// TestNoFencedWithoutEvidence: over every combination of what a reconcile
// did, Fenced=True/FenceComplete needs the fence carried out, every step
// done, no error and the isolation verified; and a lost verdict never
// replaces the last one.
func TestNoFencedWithoutEvidence(t *testing.T) {
	bools := []bool{false, true}
	verdicts := []*netpol.Result{nil, {Isolated: true}, {Flows: []netpol.Flow{{Pod: "p"}}}}
	for _, fencing := range bools {
		for _, recorded := range bools {
			for _, complete := range bools {
				for _, failed := range bools {
					for _, v := range verdicts {
						in := Input{Fence: Fence{Fencing: fencing, Recorded: recorded, Complete: complete, Verified: v}}
						if failed {
							in.Err = errors.New("x")
						}
						prev := metav1.Condition{Type: v1alpha1.ConditionIsolationVerified, Status: "True", Reason: "Earlier"}
						conds := []metav1.Condition{prev}
						Set(&conds, in)
						c := meta.FindStatusCondition(conds, v1alpha1.ConditionFenced)
						evidence := fencing && complete && !failed && v != nil && v.Isolated
						if c.Reason == v1alpha1.ReasonFenceComplete && !evidence {
							t.Errorf("%+v: Fenced=True/FenceComplete without the evidence", in.Fence)
						}
						if iv := meta.FindStatusCondition(conds, v1alpha1.ConditionIsolationVerified); v == nil && (fencing || recorded) && iv.Reason != "Earlier" {
							t.Errorf("%+v: the last verdict was replaced by %+v while none was taken", in.Fence, iv)
						}
					}
				}
			}
		}
	}
}
