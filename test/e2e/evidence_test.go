//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
)

var volumeSnapshotContentGVK = schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshotContent"}

// TestFenceTakesEvidenceOfTheOverwrittenRecords: records written into the
// document store's volume, then overwritten ("encrypted") after a recovery
// point; the fence snapshots the volume as evidence once the window is
// closed: the driver's copy of the evidence snapshot holds the encrypted
// state, the point's copy the records; the evidence is on record by UID and
// labelled with the ticket; nothing is deleted; purge is refused while
// fenced.
func TestFenceTakesEvidenceOfTheOverwrittenRecords(t *testing.T) {
	ctx := context.Background()
	requireStorage(t, ctx)
	plugin := buildPlugin(t)
	name := uniqueName("evidence")
	ns := name + "-primary"
	file := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(file, []byte(careRecordsYAML(name)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteFencedEnvironment(name) })
	kubectl(t, "apply", "-f", file)
	env := waitReadyEnv(t, name, 90*time.Second)
	pv := waitClaimBound(t, ns, "records-document-store-0")
	dir := dataDir(t, pv)

	original := map[string]string{"patients/9434765919.json": `{"nhsNumber":"9434765919","allergies":["penicillin"]}`}
	writeFiles(t, dir, original)
	written := time.Now()
	var point v1alpha1.RecoveryPoint
	eventually(t, 60*time.Second, "a clean, ready point after the records were written", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		if env.Status.Recovery == nil {
			return false, recoveryCondition(env), nil
		}
		for _, p := range env.Status.Recovery.Points {
			// takenAt has whole seconds.
			if p.Clean && p.Ready && p.TakenAt.After(written.Add(time.Second)) {
				point = p
				return true, "", nil
			}
		}
		return false, recoveryCondition(env), nil
	})
	encrypted := map[string]string{"patients/9434765919.json": "\x8f\x1b encrypted \x03", "README-RESTORE-FILES.txt": "pay 5 BTC"}
	writeFiles(t, dir, encrypted)

	fenceCommand(t, name, "INC-EVID-1")
	waitFencedTrue(t, name)
	eventually(t, 60*time.Second, "EvidenceSnapshots=True", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionEvidenceSnapshots)
		if c == nil {
			return false, "no EvidenceSnapshots condition", nil
		}
		return c.Status == metav1.ConditionTrue && c.Reason == v1alpha1.ReasonEvidenceTaken, fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message), nil
	})
	if len(env.Status.EvidenceSnapshots) != 1 {
		t.Fatalf("evidence on record %+v, want one snapshot of the one claim", env.Status.EvidenceSnapshots)
	}
	ev := env.Status.EvidenceSnapshots[0]
	vs := snapshotOf(t, ns, ev.Name)
	if string(vs.GetUID()) != ev.UID || ev.Claim != "records-document-store-0" || ev.Ticket != "INC-EVID-1" ||
		vs.GetLabels()[v1alpha1.LabelEvidence] != "INC-EVID-1" || len(vs.GetOwnerReferences()) != 0 {
		t.Errorf("evidence snapshot %s: uid %s labels %v owners %v, on record %+v", vs.GetName(), vs.GetUID(), vs.GetLabels(), vs.GetOwnerReferences(), ev)
	}
	root := filepath.Dir(filepath.Dir(filepath.Dir(dir))) // <root>/volumes/<id>/data
	if got := readFiles(t, snapshotCopy(t, root, vs)); !maps.Equal(got, encrypted) {
		t.Errorf("the evidence snapshot holds %q, want the state at the fence, %q", got, encrypted)
	}
	if got := readFiles(t, snapshotCopy(t, root, snapshotOf(t, ns, point.Snapshots[0].Name))); !maps.Equal(got, original) {
		t.Errorf("recovery point %s holds %q, want the records, %q", point.Name, got, original)
	}

	// Nothing deleted: the claim, every point's snapshot.
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "records-document-store-0"}, &corev1.PersistentVolumeClaim{}); err != nil {
		t.Errorf("the claim after the fence: %v", err)
	}
	for _, p := range env.Status.Recovery.Points {
		snapshotOf(t, ns, p.Snapshots[0].Name)
	}
	out := plugin.ok(t, "recovery-points", name)
	mustContain(t, "recovery-points", out, point.Name, ev.Name, "INC-EVID-1")
	plugin.exits(t, 1, append([]string{"purge-evidence", name, "--yes"}, responderArgs...), "is fenced")
	snapshotOf(t, ns, ev.Name)
}

// TestDeletingKeepsDataAndOnlyAResponderPurgesIt: deleting an environment
// (dataDeletionPolicy Retain, the default) lets the garbage collector take
// its workloads but not its data: the primary namespace stays, labelled
// retained, with its claim, volume and recovery points. The cluster admin
// (not a responder) is refused the purge and nothing goes; a responder
// purges every claim and snapshot.
func TestDeletingKeepsDataAndOnlyAResponderPurgesIt(t *testing.T) {
	ctx := context.Background()
	requireStorage(t, ctx)
	plugin := buildPlugin(t)
	name := uniqueName("retained")
	ns := name + "-primary"
	file := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(file, []byte(careRecordsYAML(name)), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-f", file)
	env := waitReadyEnv(t, name, 90*time.Second)
	pv := waitClaimBound(t, ns, "records-document-store-0")
	eventually(t, 60*time.Second, "a clean, ready point", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		return cleanReady(env) >= 1, recoveryCondition(env), nil
	})
	// The cluster admin's "stuck object" reflex would let the garbage
	// collector take the data: refused.
	if !slices.Contains(env.Finalizers, "careplane.io/data") {
		t.Fatalf("finalizers %v, want careplane.io/data", env.Finalizers)
	}
	err := k8sClient.Patch(ctx, env.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "may remove the careplane.io/data finalizer") {
		t.Errorf("the admin strips the data finalizer: %v, want it refused by the isolation guard", err)
	}
	var snaps []string
	for _, p := range env.Status.Recovery.Points {
		for _, s := range p.Snapshots {
			snaps = append(snaps, s.Name)
		}
	}

	kubectl(t, "delete", "henv", name, "--wait=true", "--timeout=60s")
	eventually(t, 60*time.Second, "the garbage collector took the workloads", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "document-store"}, &appsv1.StatefulSet{})
		return apierrors.IsNotFound(err), fmt.Sprint(err), client.IgnoreNotFound(err)
	})
	nsObj := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatalf("the primary namespace of the deleted environment: %v", err)
	}
	if nsObj.Labels[v1alpha1.LabelRetained] != "true" || len(nsObj.OwnerReferences) != 0 || nsObj.DeletionTimestamp != nil {
		t.Errorf("namespace %s: labels %v owners %v deleting %v; want retained", ns, nsObj.Labels, nsObj.OwnerReferences, nsObj.DeletionTimestamp)
	}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "records-document-store-0"}, &corev1.PersistentVolumeClaim{}); err != nil {
		t.Errorf("the claim of the deleted environment: %v", err)
	}
	if err := k8sClient.Get(ctx, clientKey(pv), &corev1.PersistentVolume{}); err != nil {
		t.Errorf("the volume of the deleted environment: %v", err)
	}
	for _, s := range snaps {
		snapshotOf(t, ns, s)
	}

	// The cluster admin is no responder: deleting the namespace (its
	// claims with it) is refused, and so is the purge; nothing is deleted.
	err = k8sClient.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "careplane-retained-namespace-guard") {
		t.Errorf("the admin deletes the retained namespace: %v, want it refused", err)
	}
	out := plugin.exits(t, exitForbidden, []string{"purge-evidence", name, "--yes"}, "careplane-retained-data-guard", "nothing deleted")
	if strings.Contains(out, " deleted (") {
		t.Errorf("a refused purge says it deleted something:\n%s", out)
	}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "records-document-store-0"}, &corev1.PersistentVolumeClaim{}); err != nil {
		t.Errorf("the claim after a refused purge: %v", err)
	}
	for _, s := range snaps {
		snapshotOf(t, ns, s)
	}

	// A responder: the dry run lists, the purge deletes.
	out = plugin.asResponder(t, "purge-evidence", name, "--dry-run")
	mustContain(t, "purge-evidence --dry-run", out, "persistentvolumeclaim/records-document-store-0 would be deleted (retained", "volumesnapshot/"+snaps[0])
	plugin.asResponder(t, "purge-evidence", name, "--yes")
	eventually(t, 60*time.Second, "the retained claim and snapshots purged", func(ctx context.Context) (bool, string, error) {
		var left []string
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "records-document-store-0"}, &corev1.PersistentVolumeClaim{}); !apierrors.IsNotFound(err) {
			left = append(left, fmt.Sprintf("claim: %v", err))
		}
		for _, s := range snaps {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(volumeSnapshotGVK)
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: s}, u); !apierrors.IsNotFound(err) {
				left = append(left, fmt.Sprintf("snapshot %s: %v", s, err))
			}
		}
		return len(left) == 0, strings.Join(left, "; "), nil
	})
	// Emptied, the namespace is a responder's to delete.
	if err := responderClient(t).Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Errorf("a responder deletes the emptied retained namespace: %v", err)
	}
}

// snapshotCopy is the directory where the test CSI driver keeps the bytes
// of snapshot vs: <root>/snapshots/<snapshotHandle>/data.
func snapshotCopy(t *testing.T, root string, vs *unstructured.Unstructured) string {
	t.Helper()
	waitSnapshotReady(t, vs.GetNamespace(), vs.GetName())
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(volumeSnapshotGVK)
	if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(vs), u); err != nil {
		t.Fatal(err)
	}
	content, _, _ := unstructured.NestedString(u.Object, "status", "boundVolumeSnapshotContentName")
	c := &unstructured.Unstructured{}
	c.SetGroupVersionKind(volumeSnapshotContentGVK)
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: content}, c); err != nil {
		t.Fatalf("VolumeSnapshotContent %q of %s: %v", content, vs.GetName(), err)
	}
	handle, _, _ := unstructured.NestedString(c.Object, "status", "snapshotHandle")
	dir := filepath.Join(root, "snapshots", handle, "data")
	if st, err := os.Stat(dir); handle == "" || err != nil || !st.IsDir() {
		t.Fatalf("snapshot %s (handle %q): no copy at %s: %v", vs.GetName(), handle, dir, err)
	}
	return dir
}
