package fence

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// RecordIncident appends inc, the incident of the fence being lifted, to
// incidents (newest last, the last max kept), unless an earlier attempt at
// the same lift recorded it: that attempt wrote the incident and then could
// not remove the fence record. An incident is known by its fence's start,
// to the second a status keeps. It says whether it appended.
func RecordIncident(incidents []v1alpha1.Incident, inc v1alpha1.Incident, max int) ([]v1alpha1.Incident, bool) {
	if inc.FencedAt != nil && slices.ContainsFunc(incidents, func(i v1alpha1.Incident) bool { return sameFence(i.FencedAt, inc.FencedAt) }) {
		return incidents, false
	}
	out := append(slices.Clone(incidents), inc)
	if n := len(out); n > max {
		out = out[n-max:]
	}
	return out, true
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
