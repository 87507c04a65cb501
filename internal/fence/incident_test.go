package fence

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

func TestRecordIncident(t *testing.T) {
	at := func(sec int, nsec int) *metav1.Time {
		return &metav1.Time{Time: time.Date(2026, 12, 4, 10, 0, sec, nsec, time.UTC)}
	}
	inc := func(ticket string, fencedAt *metav1.Time) v1alpha1.Incident {
		return v1alpha1.Incident{Ticket: ticket, FencedAt: fencedAt}
	}
	lift := func(ticket string, fencedAt *metav1.Time, restore string) v1alpha1.Incident {
		return v1alpha1.Incident{Ticket: ticket, FencedAt: fencedAt, RestoreID: restore}
	}
	full := make([]v1alpha1.Incident, 3)
	for i := range full {
		full[i] = inc(fmt.Sprint("INC-", i), at(i, 0))
	}
	for _, tc := range []struct {
		name      string
		incidents []v1alpha1.Incident
		inc       v1alpha1.Incident
		want      []string
		added     bool
	}{
		{"the first", nil, inc("INC-A", at(10, 0)), []string{"INC-A"}, true},
		{"after another fence", []v1alpha1.Incident{inc("INC-A", at(10, 0))}, inc("INC-B", at(20, 0)), []string{"INC-A", "INC-B"}, true},
		// The record keeps nanoseconds, the status the second.
		{"the same lift again", []v1alpha1.Incident{inc("INC-A", at(10, 0))}, inc("INC-A", at(10, 123456789)), []string{"INC-A"}, false},
		{"the same fence under a ticket changed since", []v1alpha1.Incident{inc("INC-A", at(10, 0))}, inc("INC-A2", at(10, 5)), []string{"INC-A"}, false},
		{"the next second", []v1alpha1.Incident{inc("INC-A", at(10, 0))}, inc("INC-B", at(11, 0)), []string{"INC-A", "INC-B"}, true},
		{"no start known is never taken for another", []v1alpha1.Incident{inc("INC-A", nil)}, inc("INC-B", nil), []string{"INC-A", "INC-B"}, true},
		{"full: the oldest goes", full, inc("INC-3", at(30, 0)), []string{"INC-1", "INC-2", "INC-3"}, true},
		{"full, the same lift again", full, inc("INC-2", at(2, 999)), []string{"INC-0", "INC-1", "INC-2"}, false},
		{"the same lift again, by its restore", []v1alpha1.Incident{lift("INC-A", at(10, 0), "r1")}, lift("INC-A", at(10, 5), "r1"), []string{"INC-A"}, false},
		// The fence resumed over a lift that wrote its incident; the
		// status write that dropped it was lost.
		{"a lift the fence resuming aborted", []v1alpha1.Incident{lift("INC-0", at(1, 0), "r0"), lift("INC-A", at(10, 0), "r1"), lift("INC-Z", at(20, 0), "r9")},
			lift("INC-A2", at(10, 5), "r2"), []string{"INC-0", "INC-Z", "INC-A2"}, true},
		{"an incident from before restore IDs", []v1alpha1.Incident{inc("INC-A", at(10, 0))}, lift("INC-A", at(10, 5), "r2"), []string{"INC-A"}, false},
		{"a restore ID for another fence", []v1alpha1.Incident{lift("INC-A", at(10, 0), "r1")}, lift("INC-B", at(11, 0), "r1"), []string{"INC-A", "INC-B"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := fmt.Sprint(tc.incidents)
			out, added := RecordIncident(tc.incidents, tc.inc, 3)
			var got []string
			for _, i := range out {
				got = append(got, i.Ticket)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || added != tc.added {
				t.Errorf("RecordIncident = %v, %v; want %v, %v", got, added, tc.want, tc.added)
			}
			if fmt.Sprint(tc.incidents) != before {
				t.Errorf("RecordIncident changed its input: %v, was %s", tc.incidents, before)
			}
		})
	}
}

func TestLifted(t *testing.T) {
	at := func(sec, nsec int) *metav1.Time {
		return &metav1.Time{Time: time.Date(2026, 12, 4, 10, 0, sec, nsec, time.UTC)}
	}
	iso := func(fencedAt *metav1.Time) *v1alpha1.IsolationStatus {
		return &v1alpha1.IsolationStatus{FencedAt: fencedAt}
	}
	incidents := []v1alpha1.Incident{{Ticket: "INC-1", FencedAt: at(1, 0)}, {Ticket: "INC-2", FencedAt: at(2, 0)}}
	for _, tc := range []struct {
		name      string
		iso       *v1alpha1.IsolationStatus
		incidents []v1alpha1.Incident
		want      bool
	}{
		{"the last incident is the fence's", iso(at(2, 500)), incidents, true},
		{"an older incident is not the last", iso(at(1, 0)), incidents, false},
		{"a fence with no incident yet", iso(at(3, 0)), incidents, false},
		{"no fence described", nil, incidents, false},
		{"no incidents", iso(at(2, 0)), nil, false},
		{"a fence whose start is unknown", iso(nil), incidents, false},
	} {
		if got := Lifted(tc.iso, tc.incidents); got != tc.want {
			t.Errorf("%s: Lifted = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestResumed(t *testing.T) {
	at := func(sec, nsec int) time.Time { return time.Date(2026, 12, 4, 10, 0, sec, nsec, time.UTC) }
	incidents := []v1alpha1.Incident{{Ticket: "INC-1", FencedAt: &metav1.Time{Time: at(1, 0)}},
		{Ticket: "INC-2", FencedAt: &metav1.Time{Time: at(2, 0)}}}
	for _, tc := range []struct {
		name string
		rec  Record
		want []string
	}{
		{"the fence of the last incident resumed", Record{ID: NewID(at(2, 700)), Source: SourceSpec}, []string{"INC-1"}},
		{"a new fence", Record{ID: NewID(at(3, 0)), Source: SourceSpec}, []string{"INC-1", "INC-2"}},
		{"no record", Record{}, []string{"INC-1", "INC-2"}},
		{"a record whose ID is not a time", Record{ID: "x", Source: SourceSpec}, []string{"INC-1", "INC-2"}},
	} {
		before := fmt.Sprint(incidents)
		var got []string
		for _, i := range Resumed(incidents, tc.rec) {
			got = append(got, i.Ticket)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: Resumed = %v, want %v", tc.name, got, tc.want)
		}
		if fmt.Sprint(incidents) != before {
			t.Errorf("%s: Resumed changed its input", tc.name)
		}
	}
}

func TestIsolationOf(t *testing.T) {
	at := func(sec, nsec int) time.Time { return time.Date(2026, 12, 4, 10, 0, sec, nsec, time.UTC) }
	iso := &v1alpha1.IsolationStatus{Ticket: "INC-1", FencedAt: &metav1.Time{Time: at(1, 0)}}
	for _, tc := range []struct {
		name string
		rec  Record
		st   *v1alpha1.IsolationStatus
		want *v1alpha1.IsolationStatus
	}{
		{"the fence on record, to the second", Record{ID: NewID(at(1, 999)), Source: SourceSpec}, iso, iso},
		{"a lifted fence's, under a new fence", Record{ID: NewID(at(9, 0)), Source: SourceSpec}, iso, nil},
		{"no record: the last fence's", Record{}, iso, iso},
		{"none", Record{ID: NewID(at(9, 0)), Source: SourceSpec}, nil, nil},
		{"no start recorded yet", Record{ID: NewID(at(9, 0)), Source: SourceSpec}, &v1alpha1.IsolationStatus{Ticket: "INC-1"}, &v1alpha1.IsolationStatus{Ticket: "INC-1"}},
		{"a record whose ID is not a time", Record{ID: "x", Source: SourceSpec}, iso, iso},
	} {
		if got := IsolationOf(tc.rec, tc.st); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: IsolationOf = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestWithdrawn(t *testing.T) {
	at := func(sec, nsec int) *metav1.Time {
		return &metav1.Time{Time: time.Date(2026, 12, 4, 10, 0, sec, nsec, time.UTC)}
	}
	one, two := v1alpha1.Incident{Ticket: "INC-1", FencedAt: at(1, 0)}, v1alpha1.Incident{Ticket: "INC-2", FencedAt: at(2, 0)}
	iso := func(t *metav1.Time) *v1alpha1.IsolationStatus { return &v1alpha1.IsolationStatus{FencedAt: t} }
	for _, tc := range []struct {
		name          string
		before, after []v1alpha1.Incident
		iso           *v1alpha1.IsolationStatus
		want          string
	}{
		{"the fence resumed over its lift", []v1alpha1.Incident{one, two}, []v1alpha1.Incident{one}, iso(at(2, 500)), "INC-2"},
		{"the lift's incident still there", []v1alpha1.Incident{one, two}, []v1alpha1.Incident{one, two}, iso(at(2, 0)), ""},
		{"the oldest rotated out under another fence", []v1alpha1.Incident{one, two}, []v1alpha1.Incident{two}, iso(at(3, 0)), ""},
		{"the fence lifted", []v1alpha1.Incident{one}, []v1alpha1.Incident{one, two}, nil, ""},
		{"a fence whose start is unknown", []v1alpha1.Incident{one, two}, nil, iso(nil), ""},
	} {
		got := ""
		if inc := Withdrawn(tc.before, tc.after, tc.iso); inc != nil {
			got = inc.Ticket
		}
		if got != tc.want {
			t.Errorf("%s: Withdrawn = %q, want %q", tc.name, got, tc.want)
		}
	}
}
