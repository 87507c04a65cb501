package plugin

import (
	"strings"
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

// TestKeptTargets: the volumes and contents careplane keeps (Retain) of a
// deleted environment are all set to Delete, first; of a live one, only
// those of the evidence the purge deletes (a recovery point's content and
// the volume in use stay kept); one already set to Delete is not chosen.
func TestKeptTargets(t *testing.T) {
	kept := func(resource, name, policy, bound string) KeptObject {
		return KeptObject{Resource: resource, Policy: policy, Namespace: "a-primary", Bound: bound,
			Object: metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha1.LabelDataOf: "a"}}}}
	}
	objects := []KeptObject{
		kept("volumesnapshotcontent", "snapcontent-point", "Retain", "p1-records"),
		kept("volumesnapshotcontent", "snapcontent-evidence", "Retain", "evidence-x-records"),
		kept("persistentvolume", "pvc-in-use", "Retain", "records-document-store-0"),
		kept("persistentvolume", "pvc-evidence", "Retain", "kept-0"),
		kept("persistentvolume", "pvc-purged", "Delete", "gone-0"),
	}
	evidence := []PurgeTarget{
		{Resource: "volumesnapshot", Object: metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "evidence-x-records"}}, Why: "evidence INC-9"},
		{Resource: "persistentvolumeclaim", Object: metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "kept-0"}}, Why: "evidence INC-9"},
	}
	for _, tt := range []struct {
		name     string
		retained bool
		want     []string
	}{
		{"live environment: the evidence's", false, []string{"persistentvolume/pvc-evidence evidence INC-9", "volumesnapshotcontent/snapcontent-evidence evidence INC-9"}},
		{"deleted environment: all", true, []string{"persistentvolume/pvc-evidence evidence INC-9", "persistentvolume/pvc-in-use retained",
			"volumesnapshotcontent/snapcontent-evidence evidence INC-9", "volumesnapshotcontent/snapcontent-point retained (orphan)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range KeptTargets(tt.retained, objects, evidence) {
				s := p.Resource + "/" + p.Object.Name + " " + p.Why
				if p.Orphan {
					s += " (orphan)"
				}
				got = append(got, s)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("targets\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
