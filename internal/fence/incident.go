package fence

import (
	"slices"

	"github.com/careplane/careplane/api/v1alpha1"
)

// RecordIncident appends inc, the incident of the fence being lifted, to
// incidents (newest last, the last max kept), unless an earlier attempt at
// the same lift recorded it: that attempt wrote the incident and then could
// not remove the fence record. An incident is known by its fence's start,
// to the second a status keeps. It says whether it appended.
func RecordIncident(incidents []v1alpha1.Incident, inc v1alpha1.Incident, max int) ([]v1alpha1.Incident, bool) {
	if inc.FencedAt != nil && slices.ContainsFunc(incidents, func(i v1alpha1.Incident) bool {
		return i.FencedAt != nil && i.FencedAt.Unix() == inc.FencedAt.Unix()
	}) {
		return incidents, false
	}
	out := append(slices.Clone(incidents), inc)
	if n := len(out); n > max {
		out = out[n-max:]
	}
	return out, true
}
