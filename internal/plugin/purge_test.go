package plugin

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// TestPurgeTargets: of a live environment, only what is labelled evidence
// (pods, the fence's snapshots, claims a restore kept), never a recovery
// point or a claim in use; of a retained namespace, every pod, snapshot and
// claim. Pods go first, claims last; objects being deleted are skipped.
func TestPurgeTargets(t *testing.T) {
	obj := func(name string, labels map[string]string) metav1.PartialObjectMetadata {
		return metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	ev := map[string]string{v1alpha1.LabelEvidence: "INC-9"}
	point := map[string]string{v1alpha1.LabelRecoveryPoint: "p1"}
	going := obj("going", ev)
	going.DeletionTimestamp = &metav1.Time{}
	objects := map[string][]metav1.PartialObjectMetadata{
		"persistentvolumeclaim": {obj("records-document-store-0", nil), obj("kept-0", ev)},
		"volumesnapshot":        {obj("p1-records", point), obj("evidence-x-records", ev), going},
		"pod":                   {obj("document-store-0", ev), obj("left-running", nil)},
	}
	for _, tt := range []struct {
		name     string
		retained bool
		want     []string
	}{
		{"live environment: evidence only", false, []string{"pod/document-store-0 evidence INC-9", "volumesnapshot/evidence-x-records evidence INC-9", "persistentvolumeclaim/kept-0 evidence INC-9"}},
		{"retained namespace: all its data", true, []string{"pod/document-store-0 evidence INC-9", "volumesnapshot/evidence-x-records evidence INC-9",
			"volumesnapshot/p1-records retained", "persistentvolumeclaim/kept-0 evidence INC-9", "persistentvolumeclaim/records-document-store-0 retained"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range PurgeTargets(tt.retained, objects) {
				got = append(got, p.Resource+"/"+p.Object.Name+" "+p.Why)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("targets %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("target %d = %q, want %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}
