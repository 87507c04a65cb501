//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The local cluster's storage (hack/cluster.sh, hack/storage/classes.yaml):
// the test CSI driver behind a default StorageClass and VolumeSnapshotClass.
const (
	storageClass  = "careplane-csi"
	snapshotClass = "careplane-csi"
	csiDriver     = "csi.careplane.io"
	// dataDirAttribute is where the driver keeps a volume's bytes, in its
	// PersistentVolume's spec.csi.volumeAttributes.
	dataDirAttribute = "csi.careplane.io/data-dir"
)

var volumeSnapshotGVK = schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshot"}

// TestRecordsComeBackFromVolumeSnapshot drives the cluster's real storage
// control plane as careplane's recovery points and evidence will: a claim of
// the default class is provisioned for the pod that uses it (kube-scheduler's
// volume binding, csi-provisioner, the PV controller), records written into
// the volume are snapshotted (snapshot-controller, csi-snapshotter), then
// "encrypted"; a claim restored from the snapshot holds the records as they
// were, and grows (csi-resizer) but does not shrink; the compromised volume,
// retained, outlives its claim with its data, while a volume with the
// Delete policy goes with its claim.
func TestRecordsComeBackFromVolumeSnapshot(t *testing.T) {
	ctx := context.Background()
	requireStorage(t, ctx)
	ns := uniqueName("storage")
	if err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	})
	// A pod needs the namespace's default ServiceAccount, which the control
	// plane creates a moment after the namespace.
	eventually(t, 30*time.Second, "the default ServiceAccount of "+ns, func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, fmt.Sprint(err), nil
	})

	// A claim that names no class gets the default one, and waits for the
	// first pod that uses it.
	records := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "records"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
		},
	}
	if err := k8sClient.Create(ctx, records); err != nil {
		t.Fatal(err)
	}
	if got := ptr.Deref(records.Spec.StorageClassName, ""); got != storageClass {
		t.Fatalf("claim without a class got storageClassName %q, want the default %q", got, storageClass)
	}
	if records.Spec.VolumeName != "" {
		t.Fatalf("claim bound to %s before any pod used it (the class waits for the first consumer)", records.Spec.VolumeName)
	}

	writer := podWithClaim(ns, "document-store", "records")
	if err := k8sClient.Create(ctx, writer); err != nil {
		t.Fatal(err)
	}
	pv := waitClaimBound(t, ns, "records")
	node := waitPodRunning(t, ns, writer.Name)
	if err := k8sClient.Get(ctx, clientKey(records), records); err != nil {
		t.Fatal(err)
	}
	if got := records.Annotations["volume.kubernetes.io/selected-node"]; got != node {
		t.Errorf("claim's selected-node = %q, want the node the scheduler bound the pod to, %q", got, node)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != csiDriver {
		t.Fatalf("PV %s is not a volume of %s: %+v", pv.Name, csiDriver, pv.Spec.PersistentVolumeSource)
	}
	if got := pv.Spec.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("64Mi")) < 0 {
		t.Errorf("PV %s capacity %s, want at least the 64Mi claimed", pv.Name, got.String())
	}
	dir := dataDir(t, pv)

	original := map[string]string{
		"patients/9434765919.json": `{"nhsNumber":"9434765919","allergies":["penicillin"]}`,
		"patients/9434765870.json": `{"nhsNumber":"9434765870","medication":["warfarin 3mg"]}`,
		"referrals.log":            "2026-12-02T09:14Z 111 -> ambulance dispatch, category 2\n",
	}
	writeFiles(t, dir, original)

	snap := newVolumeSnapshot(ns, "before-incident", "records")
	if err := k8sClient.Create(ctx, snap); err != nil {
		t.Fatal(err)
	}
	waitSnapshotReady(t, ns, snap.GetName())

	// The attacker encrypts every record and leaves a note.
	encrypted := map[string]string{"README-RESTORE-FILES.txt": "pay 5 BTC"}
	for name := range original {
		encrypted[name] = "\x8f\x1b encrypted \x03"
	}
	writeFiles(t, dir, encrypted)

	restored := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "records-restored"},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To(storageClass),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
			DataSource:       &corev1.TypedLocalObjectReference{APIGroup: ptr.To(volumeSnapshotGVK.Group), Kind: volumeSnapshotGVK.Kind, Name: snap.GetName()},
		},
	}
	if err := k8sClient.Create(ctx, restored); err != nil {
		t.Fatal(err)
	}
	reader := podWithClaim(ns, "document-store-restored", restored.Name)
	if err := k8sClient.Create(ctx, reader); err != nil {
		t.Fatal(err)
	}
	restoredPV := waitClaimBound(t, ns, restored.Name)
	waitPodRunning(t, ns, reader.Name)
	restoredDir := dataDir(t, restoredPV)
	if restoredDir == dir {
		t.Fatalf("the restored claim's volume is the compromised one (%s)", dir)
	}
	if got := readFiles(t, restoredDir); !maps.Equal(got, original) {
		t.Errorf("restored volume holds %q, want the records as snapshotted, %q", got, original)
	}
	if got := readFiles(t, dir); !maps.Equal(got, encrypted) {
		t.Errorf("the compromised volume holds %q, want it untouched by the restore, %q", got, encrypted)
	}

	// The class allows expansion: csi-resizer grows the volume, and the
	// API server refuses to shrink it.
	if err := k8sClient.Patch(ctx, restored, client.RawPatch(client.Merge.Type(),
		[]byte(`{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}`))); err != nil {
		t.Fatalf("growing claim %s: %v", restored.Name, err)
	}
	eventually(t, time.Minute, "claim "+restored.Name+" grown to 128Mi", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, clientKey(restored), restored); err != nil {
			return false, "", err
		}
		got := restored.Status.Capacity[corev1.ResourceStorage]
		return got.Cmp(resource.MustParse("128Mi")) == 0, fmt.Sprintf("capacity %s, conditions %+v", got.String(), restored.Status.Conditions), nil
	})
	err := k8sClient.Patch(ctx, restored, client.RawPatch(client.Merge.Type(),
		[]byte(`{"spec":{"resources":{"requests":{"storage":"32Mi"}}}}`)))
	if !apierrors.IsInvalid(err) {
		t.Errorf("shrinking claim %s to 32Mi: %v, want it refused as invalid", restored.Name, err)
	}

	// Evidence: the compromised volume is retained, so deleting its claim
	// keeps the volume and its bytes. The restored one keeps the class's
	// Delete policy and goes with its claim.
	if err := k8sClient.Patch(ctx, pv, client.RawPatch(client.Merge.Type(),
		[]byte(`{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}`))); err != nil {
		t.Fatal(err)
	}
	// Afterwards, the Delete policy lets csi-provisioner delete the
	// released volume, bytes and all.
	t.Cleanup(func() {
		_ = k8sClient.Patch(context.Background(), pv, client.RawPatch(client.Merge.Type(),
			[]byte(`{"spec":{"persistentVolumeReclaimPolicy":"Delete"}}`)))
	})
	for _, o := range []client.Object{writer, reader, records, restored} {
		if err := k8sClient.Delete(ctx, o, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, time.Minute, "the volume restored with the Delete policy deleted with its claim", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, clientKey(restoredPV), &corev1.PersistentVolume{})
		if !apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("PV %s: %v", restoredPV.Name, err), nil
		}
		if _, err := os.Stat(restoredDir); !os.IsNotExist(err) {
			return false, fmt.Sprintf("%s still there: %v", restoredDir, err), nil
		}
		return true, "", nil
	})
	eventually(t, time.Minute, "the retained volume released by its deleted claim", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, clientKey(records), &corev1.PersistentVolumeClaim{}); !apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("claim %s: %v", records.Name, err), nil
		}
		if err := k8sClient.Get(ctx, clientKey(pv), pv); err != nil {
			return false, "", err
		}
		return pv.Status.Phase == corev1.VolumeReleased, fmt.Sprintf("PV %s is %s", pv.Name, pv.Status.Phase), nil
	})
	if got := readFiles(t, dir); !maps.Equal(got, encrypted) {
		t.Errorf("the retained volume holds %q after its claim was deleted, want the evidence, %q", got, encrypted)
	}
}

// requireStorage fails the test when the cluster has no storage control
// plane, unless it was started without one on purpose (CLUSTER_STORAGE=0).
func requireStorage(t *testing.T, ctx context.Context) {
	t.Helper()
	var sc storagev1.StorageClass
	err := k8sClient.Get(ctx, client.ObjectKey{Name: storageClass}, &sc)
	if apierrors.IsNotFound(err) && os.Getenv("CLUSTER_STORAGE") == "0" {
		t.Skipf("no StorageClass %s: the cluster runs without its storage control plane (CLUSTER_STORAGE=0)", storageClass)
	}
	if err != nil {
		t.Fatalf("StorageClass %s (hack/cluster.sh installs it with the storage control plane): %v", storageClass, err)
	}
	if sc.Provisioner != csiDriver || sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" ||
		!ptr.Deref(sc.AllowVolumeExpansion, false) {
		t.Fatalf("StorageClass %s: provisioner %q, default %q, allowVolumeExpansion %v; want the default class of %s, expandable",
			sc.Name, sc.Provisioner, sc.Annotations["storageclass.kubernetes.io/is-default-class"], sc.AllowVolumeExpansion, csiDriver)
	}
}

// podWithClaim is a pod that mounts claim at /data; on kwok's nodes it runs
// no process, but it is scheduled, bound and reported running as any pod.
func podWithClaim(ns, name, claim string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "app", Image: "registry.example/care-records/document-store:1",
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
			}}},
		},
	}
}

// waitClaimBound waits for a claim to be bound and returns its volume.
func waitClaimBound(t *testing.T, ns, name string) *corev1.PersistentVolume {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{}
	eventually(t, time.Minute, "claim "+ns+"/"+name+" bound", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, pvc); err != nil {
			return false, "", err
		}
		return pvc.Status.Phase == corev1.ClaimBound, fmt.Sprintf("phase %q", pvc.Status.Phase), nil
	})
	pv := &corev1.PersistentVolume{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: pvc.Spec.VolumeName}, pv); err != nil {
		t.Fatal(err)
	}
	if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != ns || ref.Name != name || ref.UID != pvc.UID {
		t.Fatalf("PV %s claimRef %+v, want claim %s/%s (%s)", pv.Name, pv.Spec.ClaimRef, ns, name, pvc.UID)
	}
	return pv
}

// waitPodRunning waits for a pod to run and returns its node.
func waitPodRunning(t *testing.T, ns, name string) string {
	t.Helper()
	pod := &corev1.Pod{}
	eventually(t, time.Minute, "pod "+ns+"/"+name+" running", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, pod); err != nil {
			return false, "", err
		}
		return pod.Spec.NodeName != "" && pod.Status.Phase == corev1.PodRunning,
			fmt.Sprintf("node %q, phase %q, conditions %+v", pod.Spec.NodeName, pod.Status.Phase, pod.Status.Conditions), nil
	})
	return pod.Spec.NodeName
}

func newVolumeSnapshot(ns, name, claim string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"namespace": ns, "name": name},
		"spec": map[string]any{
			"volumeSnapshotClassName": snapshotClass,
			"source":                  map[string]any{"persistentVolumeClaimName": claim},
		},
	}}
	u.SetGroupVersionKind(volumeSnapshotGVK)
	return u
}

// waitSnapshotReady waits for a VolumeSnapshot's readyToUse, and fails at
// once on an error the snapshot controllers report.
func waitSnapshotReady(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, time.Minute, "VolumeSnapshot "+ns+"/"+name+" ready to use", func(ctx context.Context) (bool, string, error) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(volumeSnapshotGVK)
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
			return false, "", err
		}
		if msg, _, _ := unstructured.NestedString(u.Object, "status", "error", "message"); msg != "" {
			return false, "", fmt.Errorf("snapshot error: %s", msg)
		}
		ready, _, _ := unstructured.NestedBool(u.Object, "status", "readyToUse")
		status, _, _ := unstructured.NestedMap(u.Object, "status")
		return ready, fmt.Sprintf("status %v", status), nil
	})
}

// dataDir is the directory that holds a volume's bytes on this machine.
func dataDir(t *testing.T, pv *corev1.PersistentVolume) string {
	t.Helper()
	dir := pv.Spec.CSI.VolumeAttributes[dataDirAttribute]
	if dir == "" {
		t.Fatalf("PV %s has no %s in spec.csi.volumeAttributes: %v", pv.Name, dataDirAttribute, pv.Spec.CSI.VolumeAttributes)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("PV %s's %s %q is not a directory on this machine: %v", pv.Name, dataDirAttribute, dir, err)
	}
	return dir
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(files[name]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readFiles reads every file under dir, by its slash-separated path.
func readFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
