package fence

import (
	"github.com/careplane/careplane/api/v1alpha1"
)

// Effective is the isolation a reconcile carries out and reports: the
// environment's own spec.isolation, unless a fence is in force that the spec
// does not ask for (Decide's CourseFence with the spec not saying Fenced).
// Then it is the spec's isolation with mode Fenced and the fence's reason,
// ticket and workloads: those of heldBy, the FenceRequest holding the
// environment (its spec.isolation is written only at the hand-over); or,
// with the request gone and its fence still on record, the reason and
// ticket the status recorded (st; the spec's when there is none) and the
// spec's workloads. The spec's other fields (forensicsFrom, the restore's)
// stay the spec's: a request says nothing of them.
//
// The spec is never changed: careplane writes no spec, and an object whose
// spec was rewritten in memory is one serialisation away from sending it.
// Readers that need the fence in force read this value; readers of the
// user's intent read the spec.
func Effective(spec v1alpha1.Isolation, heldBy *v1alpha1.FenceRequest, rec Record, st *v1alpha1.IsolationStatus) v1alpha1.Isolation {
	iso := *spec.DeepCopy()
	if spec.Mode == v1alpha1.IsolationFenced {
		return iso
	}
	in := Input{SpecMode: spec.Mode, Record: rec}
	if heldBy != nil {
		in.HeldBy = heldBy.Name
	}
	if Decide(in).Course != CourseFence {
		return iso
	}
	if heldBy != nil {
		want := heldBy.Isolation()
		iso.Mode, iso.Reason, iso.Ticket, iso.Workloads = want.Mode, want.Reason, want.Ticket, want.Workloads
		return iso
	}
	iso.Mode = v1alpha1.IsolationFenced
	if st != nil {
		iso.Reason, iso.Ticket = st.Reason, st.Ticket
	}
	return iso
}
