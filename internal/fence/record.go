package fence

import (
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// The record's annotations on the primary Namespace (see the package doc).
const (
	// AnnotationID records when the fence began (RFC 3339).
	AnnotationID = "careplane.io/fence-id"
	// AnnotationSource records what asked for the fence: SourceSpec or
	// SourceRequestPrefix + the FenceRequest's name.
	AnnotationSource = "careplane.io/fence-source"
	// AnnotationRestoreID records when the restore under way began.
	AnnotationRestoreID = "careplane.io/restore-id"
	// AnnotationHandedOverFrom records, on a fence whose source is the spec,
	// the FenceRequest source it was handed over from: the request lets go
	// of the environment when it reads it.
	AnnotationHandedOverFrom = "careplane.io/fence-handed-over-from"

	// SourceSpec is the source of a fence the environment's own
	// spec.isolation asked for.
	SourceSpec = "spec"
	// SourceRequestPrefix starts the source of a fence a FenceRequest
	// asked for.
	SourceRequestPrefix = "FenceRequest/"
)

// Record is a fence as the primary Namespace records it. The zero Record is
// "not fenced".
type Record struct {
	// ID is when the fence began, RFC 3339 with nanoseconds.
	ID string
	// Source is SourceSpec or SourceRequestPrefix + a FenceRequest's name.
	Source string
	// RestoreID is when the restore under way began; empty before.
	RestoreID string
	// HandedOverFrom is the FenceRequest source a fence whose source is
	// the spec was handed over from; empty for a fence the spec began.
	HandedOverFrom string
}

// Present says the record describes a fence.
func (r Record) Present() bool { return r.ID != "" }

// Began is when the fence began, and whether the ID says so.
func (r Record) Began() (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, r.ID)
	return t, err == nil
}

// Request names the FenceRequest that asked for the fence, or "".
func (r Record) Request() string {
	name, ok := strings.CutPrefix(r.Source, SourceRequestPrefix)
	if !ok {
		return ""
	}
	return name
}

// HandedOverBy says the fence was handed over from FenceRequest name to the
// spec: that request holds it no longer.
func (r Record) HandedOverBy(name string) bool {
	return r.Present() && r.Source == SourceSpec && r.HandedOverFrom == RequestSource(name)
}

// Over is the record a fence from source writes over r: r's ID is kept
// (credentials were revoked under it), a restore under way is cancelled, and
// a hand-over from a request to the spec is recorded. now is when a fence
// that is not on record yet begins.
func (r Record) Over(source string, now time.Time) Record {
	if !r.Present() {
		return Record{ID: NewID(now), Source: source}
	}
	next := Record{ID: r.ID, Source: source}
	if source == SourceSpec {
		next.HandedOverFrom = r.HandedOverFrom
		if r.Source != SourceSpec {
			next.HandedOverFrom = r.Source
		}
	}
	return next
}

// RequestSource is the source of a fence FenceRequest name asked for.
func RequestSource(name string) string { return SourceRequestPrefix + name }

// NewID is the ID of a fence (or restore) beginning at now.
func NewID(now time.Time) string { return now.UTC().Format(time.RFC3339Nano) }

// RecordOf reads the record of a primary Namespace: none unless it carries
// the freeze label and a fence ID. A record without a source (written by a
// careplane older than the source annotation) counts as the spec's.
func RecordOf(ns metav1.Object) Record {
	if ns == nil || ns.GetLabels()[v1alpha1.LabelFenced] != "true" {
		return Record{}
	}
	a := ns.GetAnnotations()
	r := Record{ID: a[AnnotationID], Source: a[AnnotationSource], RestoreID: a[AnnotationRestoreID],
		HandedOverFrom: a[AnnotationHandedOverFrom]}
	if r.ID == "" {
		return Record{}
	}
	if r.Source == "" {
		r.Source = SourceSpec
	}
	return r
}

// Labels are the labels the record puts on the Namespace: the freeze.
func (r Record) Labels() map[string]string {
	if !r.Present() {
		return nil
	}
	return map[string]string{v1alpha1.LabelFenced: "true"}
}

// Annotations are the annotations the record puts on the Namespace.
func (r Record) Annotations() map[string]string {
	if !r.Present() {
		return nil
	}
	a := map[string]string{AnnotationID: r.ID, AnnotationSource: r.Source}
	if r.RestoreID != "" {
		a[AnnotationRestoreID] = r.RestoreID
	}
	if r.HandedOverFrom != "" {
		a[AnnotationHandedOverFrom] = r.HandedOverFrom
	}
	return a
}
