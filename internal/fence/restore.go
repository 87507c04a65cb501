package fence

import (
	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// StalePods are the pods of a fenced namespace that a restore's clean-up
// deletes before the fence quota goes: every pod not already going that is
// neither evidence (label careplane.io/evidence; it stays, isolated by its
// own policy) nor of the restore's credentials revision rev (its rebuild,
// when the clean-up runs again). With workloads: Stop the fence leaves
// careplane's pods to the scale-down, which reaches them only when the
// Deployment controller does, possibly after the restore began: the fenced
// template must not serve once the fence lifts.
func StalePods(ns string, pods []Object, rev string) []Action {
	var out []Action
	for _, pod := range sorted(pods) {
		if pod.DeletionTimestamp != nil || pod.Labels[v1alpha1.LabelEvidence] != "" ||
			(rev != "" && pod.Annotations[build.AnnotationCredentialsRevision] == rev) {
			continue
		}
		out = append(out, Action{Step: 4, Verb: VerbDelete, Kind: "Pod", Namespace: ns, Name: pod.Name, UID: pod.UID,
			Note: "neither evidence nor of the restore's rebuild " + rev})
	}
	return out
}
