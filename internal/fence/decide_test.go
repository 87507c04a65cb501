package fence

import (
	"testing"
	"time"

	"github.com/careplane/careplane/api/v1alpha1"
)

func TestDecide(t *testing.T) {
	began := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	spec := Record{ID: NewID(began), Source: SourceSpec}
	byReq := Record{ID: NewID(began), Source: RequestSource("fleet")}
	for _, tc := range []struct {
		name string
		in   Input
		want Decision
	}{
		{"nothing", Input{SpecMode: v1alpha1.IsolationNone}, Decision{Course: CourseNone}},
		{"spec fenced", Input{SpecMode: v1alpha1.IsolationFenced}, Decision{CourseFence, SourceSpec}},
		{"spec fenced over a request's record: the hand-over", Input{SpecMode: v1alpha1.IsolationFenced, Record: byReq}, Decision{CourseFence, SourceSpec}},
		{"held, no record yet", Input{HeldBy: "fleet", HeldSince: began}, Decision{CourseFence, RequestSource("fleet")}},
		{"request's record, request gone", Input{Record: byReq}, Decision{CourseFence, RequestSource("fleet")}},
		{"request's record, spec None", Input{SpecMode: v1alpha1.IsolationNone, Record: byReq}, Decision{CourseFence, RequestSource("fleet")}},
		{"spec's record, spec None: restore", Input{SpecMode: v1alpha1.IsolationNone, Record: spec}, Decision{Course: CourseRestore}},
		{"spec's record, a request that matched before the fence: restore", Input{Record: spec, HeldBy: "old", HeldSince: began.Add(-time.Minute)}, Decision{Course: CourseRestore}},
		{"spec's record, a request that matched after the fence began: fence again", Input{Record: spec, HeldBy: "new", HeldSince: began.Add(time.Minute)}, Decision{CourseFence, RequestSource("new")}},
		{"unreadable record ID, held: fence", Input{Record: Record{ID: "garbage", Source: SourceSpec}, HeldBy: "x"}, Decision{CourseFence, RequestSource("x")}},
		{"another request's record, this request matched before: that record holds", Input{Record: byReq, HeldBy: "other", HeldSince: began.Add(-time.Second)}, Decision{CourseFence, RequestSource("fleet")}},
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
// spec and a spec that says None; and a fence on record is never dropped to
// CourseNone.
func TestNoFenceLiftsWithoutTheSpecsRecord(t *testing.T) {
	began := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	records := []Record{{}, {ID: NewID(began), Source: SourceSpec}, {ID: NewID(began), Source: RequestSource("a")},
		{ID: NewID(began), Source: RequestSource("b")}, {ID: "not a time", Source: SourceSpec}}
	for _, mode := range []v1alpha1.IsolationMode{"", v1alpha1.IsolationNone, v1alpha1.IsolationFenced} {
		for _, held := range []string{"", "a", "b"} {
			for _, since := range []time.Time{{}, began.Add(-time.Hour), began, began.Add(time.Hour)} {
				for _, rec := range records {
					in := Input{SpecMode: mode, HeldBy: held, HeldSince: since, Record: rec}
					d := Decide(in)
					if d.Course == CourseRestore && (rec.Source != SourceSpec || mode == v1alpha1.IsolationFenced) {
						t.Errorf("Decide(%+v) restores without the spec's record and a spec saying None", in)
					}
					if rec.Present() && d.Course == CourseNone {
						t.Errorf("Decide(%+v) drops a fence on record", in)
					}
					if d.Course == CourseFence && d.Source == "" {
						t.Errorf("Decide(%+v) fences with no source to record", in)
					}
				}
			}
		}
	}
}
