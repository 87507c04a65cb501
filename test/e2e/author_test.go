//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// TestWhoFencedAndWhoRestored (hole 9): the incident records who fenced and
// who restored as the API server authenticated them. A responder claiming
// to be someone else, a GitOps tool rewriting the claim afterwards, or a
// replace dropping it change nothing: the careplane-isolation-author policy
// writes the requester's username, and only a change of spec.isolation
// changes it. The same for a FenceRequest's creator.
func TestWhoFencedAndWhoRestored(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("author")
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	by := func() string {
		env := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			t.Fatal(err)
		}
		return env.Annotations[v1alpha1.AnnotationIsolationBy]
	}

	// The responder's fence claims to be someone else's.
	forged := fmt.Sprintf(`{"metadata":{"annotations":{%q:"mallory"}},"spec":{"isolation":{"mode":"Fenced","reason":"who test","ticket":"INC-WHO"}}}`,
		v1alpha1.AnnotationIsolationBy)
	responder(t, "patch", "henv", name, "--type=merge", "-p", forged)
	if got := by(); got != "e2e-responder" {
		t.Errorf("after a fence claiming to be mallory's, %s = %q, want e2e-responder", v1alpha1.AnnotationIsolationBy, got)
	}
	env := waitFencedTrue(t, name)
	if env.Status.Isolation == nil || env.Status.Isolation.FencedBy != "e2e-responder" {
		t.Errorf("status.isolation = %+v, want fencedBy e2e-responder", env.Status.Isolation)
	}

	// A cluster-admin GitOps tool rewrites, then drops, the claim without
	// touching spec.isolation.
	kubectl(t, "annotate", "henv", name, "--overwrite", v1alpha1.AnnotationIsolationBy+"=mallory")
	if got := by(); got != "e2e-responder" {
		t.Errorf("after an admin's rewrite, %s = %q, want e2e-responder", v1alpha1.AnnotationIsolationBy, got)
	}
	kubectl(t, "annotate", "henv", name, v1alpha1.AnnotationIsolationBy+"-")
	if got := by(); got != "e2e-responder" {
		t.Errorf("after an admin dropped it, %s = %q, want e2e-responder", v1alpha1.AnnotationIsolationBy, got)
	}

	// Another responder restores.
	restorer := []string{"--as=e2e-restorer", "--as-group=" + v1alpha1.DefaultResponderGroup, "--as-group=system:authenticated"}
	kubectl(t, append(restorer, "patch", "henv", name, "--type=merge", "-p", restorePatch)...)
	eventually(t, 2*time.Minute, name+" restored", func(ctx context.Context) (bool, string, error) {
		e := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, e); err != nil {
			return false, "", err
		}
		return len(e.Status.Incidents) == 1, fmt.Sprintf("incidents %+v", e.Status.Incidents), nil
	})
	e := &v1alpha1.HealthEnvironment{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, e); err != nil {
		t.Fatal(err)
	}
	if inc := e.Status.Incidents[0]; inc.FencedBy != "e2e-responder" || inc.RestoredBy != "e2e-restorer" {
		t.Errorf("incident %+v, want fenced by e2e-responder and restored by e2e-restorer", inc)
	}

	// A FenceRequest's creator.
	fr := &v1alpha1.FenceRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{v1alpha1.AnnotationRequestedBy: "mallory"}},
		Spec: v1alpha1.FenceRequestSpec{Reason: "who test",
			Selector: v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"e2e/no-such-label": v1alpha1.LabelValue(name)}}},
	}
	if err := responderClient(t).Create(ctx, fr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteFenceRequest(t, name) })
	got := &v1alpha1.FenceRequest{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
		t.Fatal(err)
	}
	if got.Annotations[v1alpha1.AnnotationRequestedBy] != "e2e-responder" {
		t.Errorf("FenceRequest %s annotation %s = %q, want e2e-responder", name, v1alpha1.AnnotationRequestedBy,
			got.Annotations[v1alpha1.AnnotationRequestedBy])
	}
}
