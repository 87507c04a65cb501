package fence

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// RecordIncident appends inc, the incident of the fence being lifted, to
// incidents (newest last, the last max kept). An incident is known by its
// fence's start, to the second a status keeps, and by its restore:
//   - one of the same fence and restore is inc, recorded by an earlier
//     attempt at the same lift that then could not remove the fence record:
//     nothing is appended;
//   - one of the same fence and another restore is of a lift the fence
//     resuming aborted (Resumed drops it, unless that status write was
//     lost): inc replaces it.
//
// It says whether inc is new.
func RecordIncident(incidents []v1alpha1.Incident, inc v1alpha1.Incident, max int) ([]v1alpha1.Incident, bool) {
	out := slices.Clone(incidents)
	if inc.FencedAt != nil {
		if i := slices.IndexFunc(out, func(i v1alpha1.Incident) bool { return sameFence(i.FencedAt, inc.FencedAt) }); i >= 0 {
			// An incident recorded before restores had IDs is taken for
			// this lift's.
			if prev := out[i].RestoreID; prev == inc.RestoreID || prev == "" || inc.RestoreID == "" {
				return incidents, false
			}
			out = slices.Delete(out, i, i+1)
		}
	}
	out = append(out, inc)
	if n := len(out); n > max {
		out = out[n-max:]
	}
	return out, true
}

// Resumed is incidents once the fence on record, rec, is in force again:
// an incident of that fence is of a lift that wrote it and then could not
// remove the record before the fence resumed. It was not restored.
func Resumed(incidents []v1alpha1.Incident, rec Record) []v1alpha1.Incident {
	began, ok := rec.Began()
	if !ok {
		return incidents
	}
	at := &metav1.Time{Time: began}
	if !slices.ContainsFunc(incidents, func(i v1alpha1.Incident) bool { return sameFence(i.FencedAt, at) }) {
		return incidents
	}
	return slices.DeleteFunc(slices.Clone(incidents), func(i v1alpha1.Incident) bool { return sameFence(i.FencedAt, at) })
}

// Withdrawn is the incident before records of the fence iso describes and
// after does not: the fence resumed over a lift that had recorded it
// (Resumed). An incident rotated out is another fence's.
func Withdrawn(before, after []v1alpha1.Incident, iso *v1alpha1.IsolationStatus) *v1alpha1.Incident {
	if iso == nil || iso.FencedAt == nil || slices.ContainsFunc(after, func(i v1alpha1.Incident) bool { return sameFence(i.FencedAt, iso.FencedAt) }) {
		return nil
	}
	if i := slices.IndexFunc(before, func(i v1alpha1.Incident) bool { return sameFence(i.FencedAt, iso.FencedAt) }); i >= 0 {
		return &before[i]
	}
	return nil
}

// IsolationOf is the status.isolation st as far as it describes the fence
// on record, rec: nil when it describes another, one a restore lifted
// whose last status write was lost before this fence began. Without a
// record, st is the last fence's, which a restore finishing its lift reads.
func IsolationOf(rec Record, st *v1alpha1.IsolationStatus) *v1alpha1.IsolationStatus {
	began, ok := rec.Began()
	if !ok || st == nil || st.FencedAt == nil || sameFence(st.FencedAt, &metav1.Time{Time: began}) {
		return st
	}
	return nil
}

// Lifted says the fence iso describes is the last incident on record: a
// restore lifted it (RecordIncident's rule of which incident is which).
func Lifted(iso *v1alpha1.IsolationStatus, incidents []v1alpha1.Incident) bool {
	if iso == nil || len(incidents) == 0 {
		return false
	}
	last := incidents[len(incidents)-1]
	return sameFence(last.FencedAt, iso.FencedAt)
}

// sameFence says two starts are of one fence: a status keeps the second.
func sameFence(a, b *metav1.Time) bool {
	return a != nil && b != nil && a.Unix() == b.Unix()
}
