package fence

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

func TestEffective(t *testing.T) {
	began := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	bySpec := Record{ID: NewID(began), Source: SourceSpec}
	byReq := Record{ID: NewID(began), Source: RequestSource("fleet")}
	handedOver := byReq.Over(SourceSpec, began.Add(time.Hour))
	forensics := &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"kubernetes.io/metadata.name": "forensics"}}
	none := v1alpha1.Isolation{Mode: v1alpha1.IsolationNone, Workloads: v1alpha1.WorkloadsPreserve, ForensicsFrom: forensics,
		RestoreRevision: "env-5c7f9d"}
	fenced := v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "own breach", Ticket: "INC-1", Workloads: v1alpha1.WorkloadsPreserve,
		ForensicsFrom: forensics}
	fleet := &v1alpha1.FenceRequest{ObjectMeta: metav1.ObjectMeta{Name: "fleet"},
		Spec: v1alpha1.FenceRequestSpec{Reason: "supplier breach", Ticket: "INC-2042", Workloads: v1alpha1.WorkloadsStop}}
	noWorkloads := &v1alpha1.FenceRequest{ObjectMeta: metav1.ObjectMeta{Name: "fleet"}, Spec: v1alpha1.FenceRequestSpec{Reason: "r"}}
	recorded := &v1alpha1.IsolationStatus{Reason: "supplier breach", Ticket: "INC-2042"}

	// asRequest is none with the fleet request's mode, reason, ticket and
	// workloads: the spec's forensicsFrom and restore fields stay.
	asRequest := none
	asRequest.Mode, asRequest.Reason, asRequest.Ticket, asRequest.Workloads = v1alpha1.IsolationFenced, "supplier breach", "INC-2042", v1alpha1.WorkloadsStop
	asRecorded := none
	asRecorded.Mode, asRecorded.Reason, asRecorded.Ticket = v1alpha1.IsolationFenced, "supplier breach", "INC-2042"
	asNoStatus := none
	asNoStatus.Mode = v1alpha1.IsolationFenced
	defaulted := none
	defaulted.Mode, defaulted.Reason, defaulted.Workloads = v1alpha1.IsolationFenced, "r", v1alpha1.WorkloadsPreserve

	for _, tc := range []struct {
		name   string
		spec   v1alpha1.Isolation
		heldBy *v1alpha1.FenceRequest
		rec    Record
		st     *v1alpha1.IsolationStatus
		want   v1alpha1.Isolation
	}{
		{"no fence: the spec", none, nil, Record{}, nil, none},
		{"spec fenced: the spec", fenced, nil, bySpec, nil, fenced},
		{"spec fenced while a request still holds it (the hand-over): the spec", fenced, fleet, byReq, recorded, fenced},
		{"held, no record yet: the request's", none, fleet, Record{}, nil, asRequest},
		{"held, the request's record: the request's", none, fleet, byReq, recorded, asRequest},
		{"held over the spec's record (a restore cancelled): the request's", none, fleet, bySpec, nil, asRequest},
		{"handed over, spec None, the request not let go yet: the request's", none, fleet, handedOver, recorded, asRequest},
		{"a request without workloads: Preserve", none, noWorkloads, Record{}, nil, defaulted},
		{"the request gone, its record stays: the status's reason and ticket", none, nil, byReq, recorded, asRecorded},
		{"the request gone, no status yet: Fenced with the spec's reason and ticket", none, nil, byReq, nil, asNoStatus},
		{"spec None over the spec's record: a restore, the spec", none, nil, bySpec, recorded, none},
		{"handed over, the request let go, spec None: a restore, the spec", none, nil, handedOver, recorded, none},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := *tc.spec.DeepCopy()
			got := Effective(spec, tc.heldBy, tc.rec, tc.st)
			if !equality.Semantic.DeepEqual(got, tc.want) {
				t.Errorf("Effective = %+v, want %+v", got, tc.want)
			}
			if !equality.Semantic.DeepEqual(spec, tc.spec) {
				t.Errorf("Effective changed the spec it was given: %+v, was %+v", spec, tc.spec)
			}
		})
	}
}

// TestEffectiveFollowsDecide: over every combination of inputs, the
// isolation in force says Fenced exactly when Decide fences, is the spec
// whenever the spec says Fenced or no fence holds, keeps the spec's
// forensicsFrom and restore fields always, and shares no memory with the
// spec it was given.
func TestEffectiveFollowsDecide(t *testing.T) {
	began := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	records := []Record{{}, {ID: NewID(began), Source: SourceSpec}, {ID: NewID(began), Source: RequestSource("a")},
		{ID: NewID(began), Source: RequestSource("b")},
		{ID: NewID(began), Source: SourceSpec, HandedOverFrom: RequestSource("a")}}
	forensics := &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"kubernetes.io/metadata.name": "forensics"}}
	for _, mode := range []v1alpha1.IsolationMode{"", v1alpha1.IsolationNone, v1alpha1.IsolationFenced} {
		for _, held := range []string{"", "a", "b"} {
			for _, rec := range records {
				for _, st := range []*v1alpha1.IsolationStatus{nil, {Reason: "recorded", Ticket: "INC-9"}} {
					spec := v1alpha1.Isolation{Mode: mode, Reason: "spec", Ticket: "INC-S", Workloads: v1alpha1.WorkloadsPreserve,
						ForensicsFrom: forensics.DeepCopy(), RestoreRevision: "rev", RestoreFrom: &v1alpha1.RestoreFrom{RecoveryPoint: "p"}}
					var heldBy *v1alpha1.FenceRequest
					if held != "" {
						heldBy = &v1alpha1.FenceRequest{ObjectMeta: metav1.ObjectMeta{Name: held},
							Spec: v1alpha1.FenceRequestSpec{Reason: "request", Ticket: "INC-R", Workloads: v1alpha1.WorkloadsStop}}
					}
					d := Decide(Input{SpecMode: mode, HeldBy: held, Record: rec})
					got := Effective(spec, heldBy, rec, st)
					where := func() string { return string(mode) + "/" + held + "/" + rec.Source + "/" + rec.HandedOverFrom }
					if (got.Mode == v1alpha1.IsolationFenced) != (d.Course == CourseFence) {
						t.Errorf("%s: Effective mode %q, Decide %s", where(), got.Mode, d.Course)
					}
					if (mode == v1alpha1.IsolationFenced || d.Course != CourseFence) && !equality.Semantic.DeepEqual(got, spec) {
						t.Errorf("%s: Effective = %+v, want the spec %+v", where(), got, spec)
					}
					if !equality.Semantic.DeepEqual(got.ForensicsFrom, spec.ForensicsFrom) || got.RestoreRevision != spec.RestoreRevision ||
						!equality.Semantic.DeepEqual(got.RestoreFrom, spec.RestoreFrom) {
						t.Errorf("%s: Effective changed the spec's forensicsFrom or restore fields: %+v", where(), got)
					}
					if got.ForensicsFrom == spec.ForensicsFrom || got.RestoreFrom == spec.RestoreFrom {
						t.Errorf("%s: Effective shares the spec's selectors: a change to one would change the other", where())
					}
				}
			}
		}
	}
}
