package fence

import (
	"time"

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
	// HeldSince is when that request matched the environment.
	HeldSince time.Time
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
// source is the spec, with the spec saying None, lifts a fence.
func Decide(in Input) Decision {
	switch {
	case in.SpecMode == v1alpha1.IsolationFenced:
		return Decision{Course: CourseFence, Source: SourceSpec}
	case in.HeldBy != "" && heldAfter(in):
		return Decision{Course: CourseFence, Source: RequestSource(in.HeldBy)}
	case in.Record.Present() && in.Record.Source != SourceSpec:
		return Decision{Course: CourseFence, Source: in.Record.Source}
	case in.Record.Present():
		return Decision{Course: CourseRestore}
	}
	return Decision{Course: CourseNone}
}

// heldAfter says the request holding the environment asks for a fence: there
// is no fence on record, the record is the request's own, or the request
// matched after the fence on record began (a new fleet fence during a
// restore). A request that matched before, when the record's source is the
// spec, is one the responder already handed over and then restored from.
func heldAfter(in Input) bool {
	if !in.Record.Present() || in.Record.Source == RequestSource(in.HeldBy) {
		return true
	}
	began, ok := in.Record.Began()
	if !ok {
		return true // fail closed: an unreadable record cannot end a hold
	}
	return in.HeldSince.After(began)
}
