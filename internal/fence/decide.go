package fence

import (
	"github.com/careplane/careplane/api/v1alpha1"
)

// Course is what a reconcile does with an environment's fence.
type Course string

const (
	// CourseNone: no fence, none asked for.
	CourseNone Course = "None"
	// CourseFence: fence, or keep fencing.
	CourseFence Course = "Fence"
	// CourseRestore: rebuild the primary behind the fence, then lift it.
	CourseRestore Course = "Restore"
)

// Input is what Decide reads: the environment's own spec, the FenceRequest
// that holds it (if any), and the record on its primary Namespace.
type Input struct {
	// SpecMode is the environment's spec.isolation.mode.
	SpecMode v1alpha1.IsolationMode
	// HeldBy names the FenceRequest whose status holds the environment,
	// or "".
	HeldBy string
	// Record is the fence on record.
	Record Record
}

// Decision is what to do, and the source to record for a fence.
type Decision struct {
	Course Course
	// Source is the record's source for CourseFence.
	Source string
}

// Decide applies the package's rules (see doc.go). Only a record whose
// source is the spec, with the spec saying None and no request holding the
// environment, lifts a fence.
func Decide(in Input) Decision {
	switch {
	case in.SpecMode == v1alpha1.IsolationFenced:
		return Decision{Course: CourseFence, Source: SourceSpec}
	case in.HeldBy != "" && in.Record.HandedOverBy(in.HeldBy):
		// Handed over, and the request has not let go yet: lifting now
		// would leave a request that holds an unfenced environment, and
		// it would fence it again.
		return Decision{Course: CourseFence, Source: SourceSpec}
	case in.HeldBy != "" && in.Record.Present() && in.Record.Source != SourceSpec:
		// Another request's fence stays that request's.
		return Decision{Course: CourseFence, Source: in.Record.Source}
	case in.HeldBy != "":
		// No fence yet, or the spec's fence (a restore under way is
		// cancelled): the request's.
		return Decision{Course: CourseFence, Source: RequestSource(in.HeldBy)}
	case in.Record.Present() && in.Record.Source != SourceSpec:
		return Decision{Course: CourseFence, Source: in.Record.Source}
	case in.Record.Present():
		return Decision{Course: CourseRestore}
	}
	return Decision{Course: CourseNone}
}
