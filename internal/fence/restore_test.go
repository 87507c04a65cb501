package fence

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

func TestStalePods(t *testing.T) {
	now := metav1.Now()
	pod := func(name string, labels, annotations map[string]string) Object {
		return Object{Name: name, UID: types.UID("uid-" + name), Labels: labels, Annotations: annotations}
	}
	going := pod("going", nil, nil)
	going.DeletionTimestamp = &now
	pods := []Object{
		pod("fenced-template", map[string]string{v1alpha1.LabelService: "referral"}, map[string]string{build.AnnotationCredentialsRevision: "R0"}),
		pod("evidence", map[string]string{v1alpha1.LabelEvidence: "INC-1"}, map[string]string{build.AnnotationCredentialsRevision: "R0"}),
		pod("rebuilt", map[string]string{v1alpha1.LabelService: "referral"}, map[string]string{build.AnnotationCredentialsRevision: "R1"}),
		pod("no-revision", nil, nil),
		going,
	}
	got := StalePods("ns", pods, "R1")
	var names []string
	for _, a := range got {
		if a.Verb != VerbDelete || a.Kind != "Pod" || a.Namespace != "ns" || string(a.UID) != "uid-"+a.Name {
			t.Errorf("action %+v: want a delete of the pod on its UID", a)
		}
		names = append(names, a.Name)
	}
	if want := []string{"fenced-template", "no-revision"}; !slices.Equal(names, want) {
		t.Errorf("stale pods %v, want %v", names, want)
	}
	// With no restore revision (never the case in a restore) nothing is
	// taken for the rebuild.
	if got := StalePods("ns", []Object{pod("bare", nil, map[string]string{build.AnnotationCredentialsRevision: ""})}, ""); len(got) != 1 {
		t.Errorf("a pod with an empty revision and no restore revision: %d deletes, want 1", len(got))
	}
}
