//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
)

// TestForegroundDeleteKeepsTheBytes: a GitOps controller (Argo CD deletes
// in the foreground by default) deletes a care-records environment, as a
// cluster admin, with kubectl delete --cascade=foreground: the garbage
// collector deletes the dependents, the primary namespace with its claims
// and snapshots among them, while careplane's finalizer still holds the
// environment. Whatever wins that race, the volume's bytes and the recovery
// point's snapshot survive (their PersistentVolume and VolumeSnapshotContent
// are Retain), and purge-evidence lists them as retained. The cluster admin
// (no responder) can neither purge them nor set them to Delete nor delete
// them; a responder's purge removes the bytes.
func TestForegroundDeleteKeepsTheBytes(t *testing.T) {
	ctx := context.Background()
	requireStorage(t, ctx)
	plugin := buildPlugin(t)
	name := uniqueName("cascade")
	ns := name + "-primary"
	dir := startCareRecords(t, name)
	pv := waitClaimBound(t, ns, "records-document-store-0")
	root := filepath.Dir(filepath.Dir(filepath.Dir(dir))) // <root>/volumes/<id>/data
	t.Cleanup(func() {
		// What the test left: the namespace, if careplane kept it.
		_ = responderClient(t).Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	})

	records := map[string]string{
		"patients/9434765919.json": `{"nhsNumber":"9434765919","allergies":["penicillin"]}`,
		"referrals.log":            "2026-12-02T09:14Z 111 -> ambulance dispatch, category 2\n",
	}
	writeFiles(t, dir, records)
	point := pointAfter(t, name, time.Now())
	vs := snapshotOf(t, ns, point.Snapshots[0].Name)
	pointCopy := snapshotCopy(t, root, vs)
	content := contentOf(t, ns, vs.GetName())
	if got := readFiles(t, pointCopy); !maps.Equal(got, records) {
		t.Fatalf("recovery point %s holds %q, want %q", point.Name, got, records)
	}

	kubectl(t, "delete", "henv", name, "--cascade=foreground", "--wait=true", "--timeout=120s")

	// The race settled: the namespace is kept (careplane won) or gone (the
	// garbage collector won); either way the claim's volume is not deleted.
	eventually(t, 90*time.Second, "the deleted environment's volume settled", func(ctx context.Context) (bool, string, error) {
		live := &corev1.PersistentVolume{}
		if err := k8sClient.Get(ctx, clientKey(pv), live); apierrors.IsNotFound(err) {
			return false, "", fmt.Errorf("PersistentVolume %s of the deleted environment was deleted: its data is lost", pv.Name)
		} else if err != nil {
			return false, "", err
		}
		nsObj := &corev1.Namespace{}
		err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj)
		switch {
		case err == nil && nsObj.DeletionTimestamp == nil && nsObj.Labels[v1alpha1.LabelRetained] == "true":
			return true, "", nil // kept, claim and all
		case apierrors.IsNotFound(err) || err == nil && nsObj.DeletionTimestamp != nil:
			// Gone: the volume outlives its claim, released.
			return live.Status.Phase == corev1.VolumeReleased, fmt.Sprintf("namespace going or gone; PV %s is %s (%s)",
				pv.Name, live.Status.Phase, live.Spec.PersistentVolumeReclaimPolicy), nil
		default:
			return false, fmt.Sprintf("namespace %s: %v, labels %v", ns, err, nsObj.Labels), nil
		}
	})
	// And stays so (a deletion under way would show by now).
	time.Sleep(5 * time.Second)
	if err := k8sClient.Get(ctx, clientKey(pv), &corev1.PersistentVolume{}); err != nil {
		t.Fatalf("PersistentVolume %s of the deleted environment: %v", pv.Name, err)
	}
	if got := readFiles(t, dir); !maps.Equal(got, records) {
		t.Fatalf("the deleted environment's volume holds %q, want its records %q", got, records)
	}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: content}, contentObject()); err != nil {
		t.Fatalf("VolumeSnapshotContent %s of recovery point %s: %v", content, point.Name, err)
	}
	if got := readFiles(t, pointCopy); !maps.Equal(got, records) {
		t.Fatalf("recovery point %s holds %q after the delete, want %q", point.Name, got, records)
	}
	nsKept := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{}) == nil
	t.Logf("after the foreground delete: namespace kept %v; volume %s and content %s kept", nsKept, pv.Name, content)

	// Listed as retained, by the responder's dry run.
	out := plugin.asResponder(t, "purge-evidence", name, "--dry-run")
	mustContain(t, "purge-evidence --dry-run", out, "persistentvolume/"+pv.Name, "volumesnapshotcontent/"+content, "retained")

	// The cluster admin is no responder: the purge, the reclaim policy and
	// the delete are refused; nothing goes.
	plugin.exits(t, exitForbidden, []string{"purge-evidence", name, "--yes"}, "careplane-retained-volume-guard", "nothing deleted")
	err := k8sClient.Patch(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: pv.Name}},
		client.RawPatch(types.MergePatchType, []byte(`{"spec":{"persistentVolumeReclaimPolicy":"Delete"}}`)))
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "careplane-retained-volume-guard") {
		t.Errorf("the admin sets the retained volume's reclaim policy to Delete: %v, want it refused", err)
	}
	if err := k8sClient.Delete(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: pv.Name}}); !apierrors.IsForbidden(err) {
		t.Errorf("the admin deletes the retained volume: %v, want it refused", err)
	}
	c := contentObject()
	c.SetName(content)
	if err := k8sClient.Patch(ctx, c, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"deletionPolicy":"Delete"}}`))); !apierrors.IsForbidden(err) {
		t.Errorf("the admin sets the retained snapshot content's deletion policy to Delete: %v, want it refused", err)
	}
	if got := readFiles(t, dir); !maps.Equal(got, records) {
		t.Fatalf("after the refused purge the volume holds %q, want %q", got, records)
	}

	// A responder's purge removes the bytes.
	plugin.asResponder(t, "purge-evidence", name, "--yes")
	waitPurged(t, "the retained volume and snapshot purged, bytes and all", pv, content, dir, pointCopy)
}

// TestNamespaceDeletedUnderneathKeepsTheBytes: a pruning GitOps controller
// (or an admin) deletes the primary namespace of a live care-records
// environment, claims and snapshots with it: the deterministic form of the
// race a foreground delete runs. The volume (released) and the recovery
// point's content stay with their bytes; once the environment is deleted
// too, purge-evidence lists them as retained and a responder's purge
// removes the bytes.
func TestNamespaceDeletedUnderneathKeepsTheBytes(t *testing.T) {
	ctx := context.Background()
	requireStorage(t, ctx)
	plugin := buildPlugin(t)
	name := uniqueName("pruned")
	ns := name + "-primary"
	dir := startCareRecords(t, name)
	pv := waitClaimBound(t, ns, "records-document-store-0")
	root := filepath.Dir(filepath.Dir(filepath.Dir(dir)))
	t.Cleanup(func() {
		_ = responderClient(t).Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	})
	records := map[string]string{"patients/9434765870.json": `{"nhsNumber":"9434765870","medication":["warfarin 3mg"]}`}
	writeFiles(t, dir, records)
	point := pointAfter(t, name, time.Now())
	vs := snapshotOf(t, ns, point.Snapshots[0].Name)
	pointCopy := snapshotCopy(t, root, vs)
	content := contentOf(t, ns, vs.GetName())

	kubectl(t, "delete", "namespace", ns, "--wait=true", "--timeout=120s")
	eventually(t, 60*time.Second, "the volume of the deleted claim released", func(ctx context.Context) (bool, string, error) {
		live := &corev1.PersistentVolume{}
		if err := k8sClient.Get(ctx, clientKey(pv), live); apierrors.IsNotFound(err) {
			return false, "", fmt.Errorf("PersistentVolume %s was deleted with its namespace: its data is lost", pv.Name)
		} else if err != nil {
			return false, "", err
		}
		return live.Status.Phase == corev1.VolumeReleased, fmt.Sprintf("PV %s is %s (%s)", pv.Name, live.Status.Phase, live.Spec.PersistentVolumeReclaimPolicy), nil
	})
	time.Sleep(5 * time.Second)
	if err := k8sClient.Get(ctx, clientKey(pv), &corev1.PersistentVolume{}); err != nil {
		t.Fatalf("PersistentVolume %s after its namespace was deleted: %v", pv.Name, err)
	}
	if got := readFiles(t, dir); !maps.Equal(got, records) {
		t.Fatalf("the volume holds %q after its namespace was deleted, want %q", got, records)
	}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: content}, contentObject()); err != nil {
		t.Fatalf("VolumeSnapshotContent %s of recovery point %s after its namespace was deleted: %v", content, point.Name, err)
	}
	if got := readFiles(t, pointCopy); !maps.Equal(got, records) {
		t.Fatalf("recovery point %s holds %q after its namespace was deleted, want %q", point.Name, got, records)
	}

	kubectl(t, "delete", "henv", name, "--cascade=foreground", "--wait=true", "--timeout=120s")
	out := plugin.asResponder(t, "purge-evidence", name, "--dry-run")
	mustContain(t, "purge-evidence --dry-run", out, "persistentvolume/"+pv.Name, "volumesnapshotcontent/"+content, "retained")
	plugin.asResponder(t, "purge-evidence", name, "--yes")
	waitPurged(t, "the kept volume and content purged, bytes and all", pv, content, dir, pointCopy)
}

// contentOf names the VolumeSnapshotContent bound to a VolumeSnapshot.
func contentOf(t *testing.T, ns, name string) string {
	t.Helper()
	vs := snapshotOf(t, ns, name)
	content, _, _ := unstructured.NestedString(vs.Object, "status", "boundVolumeSnapshotContentName")
	if content == "" {
		t.Fatalf("VolumeSnapshot %s/%s is bound to no content", ns, name)
	}
	return content
}

func contentObject() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(volumeSnapshotContentGVK)
	return u
}

// waitPurged waits until the volume pv, the snapshot content and the
// directories holding their bytes are gone.
func waitPurged(t *testing.T, what string, pv *corev1.PersistentVolume, content string, dirs ...string) {
	t.Helper()
	eventually(t, 90*time.Second, what, func(ctx context.Context) (bool, string, error) {
		var left []string
		if err := k8sClient.Get(ctx, clientKey(pv), &corev1.PersistentVolume{}); !apierrors.IsNotFound(err) {
			left = append(left, fmt.Sprintf("PV %s: %v", pv.Name, err))
		}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: content}, contentObject()); !apierrors.IsNotFound(err) {
			left = append(left, fmt.Sprintf("content %s: %v", content, err))
		}
		for _, d := range dirs {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				left = append(left, d+" still there")
			}
		}
		return len(left) == 0, strings.Join(left, "; "), nil
	})
}
