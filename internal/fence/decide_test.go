package fence

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

func TestDecide(t *testing.T) {
	began := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	spec := Record{ID: NewID(began), Source: SourceSpec}
	byReq := Record{ID: NewID(began), Source: RequestSource("fleet")}
	handedOver := byReq.Over(SourceSpec, began.Add(time.Hour))
	for _, tc := range []struct {
		name string
		in   Input
		want Decision
	}{
		{"nothing", Input{SpecMode: v1alpha1.IsolationNone}, Decision{Course: CourseNone}},
		{"spec fenced", Input{SpecMode: v1alpha1.IsolationFenced}, Decision{CourseFence, SourceSpec}},
		{"spec fenced over a request's record: the hand-over", Input{SpecMode: v1alpha1.IsolationFenced, Record: byReq}, Decision{CourseFence, SourceSpec}},
		{"held, no record yet", Input{HeldBy: "fleet"}, Decision{CourseFence, RequestSource("fleet")}},
		{"request's record, request gone", Input{Record: byReq}, Decision{CourseFence, RequestSource("fleet")}},
		{"request's record, spec None", Input{SpecMode: v1alpha1.IsolationNone, Record: byReq}, Decision{CourseFence, RequestSource("fleet")}},
		{"spec's record, spec None: restore", Input{SpecMode: v1alpha1.IsolationNone, Record: spec}, Decision{Course: CourseRestore}},
		{"handed over, the request let go, spec None: restore", Input{SpecMode: v1alpha1.IsolationNone, Record: handedOver}, Decision{Course: CourseRestore}},
		{"handed over, the request still holds, spec None: wait for it to let go", Input{SpecMode: v1alpha1.IsolationNone, Record: handedOver, HeldBy: "fleet"}, Decision{CourseFence, SourceSpec}},
		{"spec's record, a request holds it (a new fleet fence during a restore): the request's", Input{Record: spec, HeldBy: "new"}, Decision{CourseFence, RequestSource("new")}},
		{"handed over from another request, a new request holds it: the new request's", Input{Record: handedOver, HeldBy: "new"}, Decision{CourseFence, RequestSource("new")}},
		{"unreadable record ID, held: fence", Input{Record: Record{ID: "garbage", Source: SourceSpec}, HeldBy: "x"}, Decision{CourseFence, RequestSource("x")}},
		{"another request's record, this request holds too: that record holds", Input{Record: byReq, HeldBy: "other"}, Decision{CourseFence, RequestSource("fleet")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Decide(tc.in); got != tc.want {
				t.Errorf("Decide(%+v) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

// TestNoFenceLiftsWithoutTheSpecsRecord: over every combination of inputs,
// a restore (the only way a fence lifts) needs a record whose source is the
// spec, a spec that says None and no request holding the environment; and a
// fence on record is never dropped to CourseNone.
func TestNoFenceLiftsWithoutTheSpecsRecord(t *testing.T) {
	began := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	records := []Record{{}, {ID: NewID(began), Source: SourceSpec}, {ID: NewID(began), Source: RequestSource("a")},
		{ID: NewID(began), Source: RequestSource("b")}, {ID: "not a time", Source: SourceSpec},
		{ID: NewID(began), Source: SourceSpec, HandedOverFrom: RequestSource("a")},
		{ID: NewID(began), Source: SourceSpec, HandedOverFrom: RequestSource("b")},
		{ID: NewID(began), Source: SourceSpec, RestoreID: NewID(began.Add(time.Hour)), HandedOverFrom: RequestSource("a")}}
	for _, mode := range []v1alpha1.IsolationMode{"", v1alpha1.IsolationNone, v1alpha1.IsolationFenced} {
		for _, held := range []string{"", "a", "b"} {
			for _, rec := range records {
				in := Input{SpecMode: mode, HeldBy: held, Record: rec}
				d := Decide(in)
				if d.Course == CourseRestore && (rec.Source != SourceSpec || mode == v1alpha1.IsolationFenced || held != "") {
					t.Errorf("Decide(%+v) restores without the spec's record, a spec saying None and no request holding it", in)
				}
				if rec.Present() && d.Course == CourseNone {
					t.Errorf("Decide(%+v) drops a fence on record", in)
				}
				if held != "" && d.Course != CourseFence {
					t.Errorf("Decide(%+v) = %+v: a held environment is not fenced", in, d)
				}
				if d.Course == CourseFence && d.Source == "" {
					t.Errorf("Decide(%+v) fences with no source to record", in)
				}
			}
		}
	}
}

// TestOverRecordsTheHandOver: a fence the spec takes over from a request
// says so, and keeps saying so while the spec holds it; a request taking it
// over again clears it; the ID survives every change.
func TestOverRecordsTheHandOver(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	byReq := Record{}.Over(RequestSource("fleet"), now)
	if byReq.ID != NewID(now) || byReq.HandedOverFrom != "" {
		t.Fatalf("a new request fence = %+v", byReq)
	}
	handed := byReq.Over(SourceSpec, now.Add(time.Hour))
	if !handed.HandedOverBy("fleet") || handed.HandedOverBy("other") || handed.ID != byReq.ID {
		t.Errorf("hand-over = %+v, want handed over by fleet with ID %s", handed, byReq.ID)
	}
	restoring := handed
	restoring.RestoreID = NewID(now.Add(2 * time.Hour))
	again := restoring.Over(SourceSpec, now.Add(3*time.Hour))
	if !again.HandedOverBy("fleet") || again.RestoreID != "" {
		t.Errorf("the spec fencing again over its own = %+v, want the hand-over kept and the restore cancelled", again)
	}
	retaken := handed.Over(RequestSource("new"), now)
	if retaken.HandedOverFrom != "" || retaken.Source != RequestSource("new") || retaken.ID != byReq.ID {
		t.Errorf("a new request taking over = %+v", retaken)
	}
	if own := (Record{}).Over(SourceSpec, now); own.HandedOverFrom != "" || own.HandedOverBy("fleet") {
		t.Errorf("a fence the spec began = %+v, want no hand-over", own)
	}
	// Round trip through the namespace's annotations.
	if got := RecordOf(&metav1.ObjectMeta{Labels: handed.Labels(), Annotations: handed.Annotations()}); got != handed {
		t.Errorf("RecordOf(annotations of %+v) = %+v", handed, got)
	}
}
