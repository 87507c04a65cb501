package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// TestKeepsThePrimarysVolumesFromTheStart: the volume bound to a claim of
// the primary namespace is made Retain as soon as it is bound (not only
// when the environment is deleted: a foreground delete has the garbage
// collector delete the namespace first), labelled as the environment's data
// with the policy it had recorded; dataDeletionPolicy Delete gives it that
// policy back, but not to the volume of a claim kept as evidence.
func TestKeepsThePrimarysVolumesFromTheStart(t *testing.T) {
	ctx := context.Background()
	name := "keep-volumes"
	ns := name + "-primary"
	env := careRecordsEnv(name)
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-" + name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: "records-document-store-0"},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: "csi.careplane.io", VolumeHandle: "vol-" + name}},
		}}
	// A volume of another namespace, bound to a claim of the same name: not
	// the environment's.
	other := pv.DeepCopy()
	other.Name, other.Spec.ClaimRef = "pv-elsewhere", &corev1.ObjectReference{Namespace: "elsewhere", Name: "records-document-store-0"}
	// The volume of a claim a restore kept as evidence.
	evidence := pv.DeepCopy()
	evidence.Name, evidence.Spec.ClaimRef = "pv-"+name+"-evidence", &corev1.ObjectReference{Namespace: ns, Name: "records-document-store-0-evidence"}
	evidence.Spec.CSI.VolumeHandle = "vol-" + name + "-evidence"
	for _, o := range []client.Object{pv, other, evidence} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "records-document-store-0",
		Labels: map[string]string{v1alpha1.LabelEnvironment: name}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeName: pv.Name,
			StorageClassName: ptr.To(""),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	eventually(t, 20*time.Second, "creating the claim", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Create(ctx, pvc)
		return err == nil, fmt.Sprint(err), nil // the namespace may not exist yet
	})
	evidenceClaim := pvc.DeepCopy()
	evidenceClaim.ResourceVersion, evidenceClaim.Name, evidenceClaim.Spec.VolumeName = "", evidence.Spec.ClaimRef.Name, evidence.Name
	evidenceClaim.Labels = map[string]string{v1alpha1.LabelEnvironment: name, v1alpha1.LabelEvidence: "INC-KEEP"}
	if err := k8sClient.Create(ctx, evidenceClaim); err != nil {
		t.Fatal(err)
	}

	policyOf := func(ctx context.Context, name string) (*corev1.PersistentVolume, error) {
		live := &corev1.PersistentVolume{}
		return live, k8sClient.Get(ctx, client.ObjectKey{Name: name}, live)
	}
	kept := func(pvName string) func(ctx context.Context) (bool, string, error) {
		return func(ctx context.Context) (bool, string, error) {
			live, err := policyOf(ctx, pvName)
			if err != nil {
				return false, "", err
			}
			return live.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimRetain &&
					live.Labels[v1alpha1.LabelDataOf] == name && live.Annotations[v1alpha1.AnnotationPolicyBefore] == "Delete",
				fmt.Sprintf("policy %s labels %v annotations %v", live.Spec.PersistentVolumeReclaimPolicy, live.Labels, live.Annotations), nil
		}
	}
	eventually(t, 20*time.Second, "the volume kept", kept(pv.Name))
	eventually(t, 20*time.Second, "the evidence claim's volume kept", kept(evidence.Name))
	if live, err := policyOf(ctx, other.Name); err != nil || live.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || len(live.Labels) != 0 {
		t.Errorf("the volume of another namespace: %v %+v, want it untouched", err, live)
	}

	if err := k8sClient.Patch(ctx, &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: name}},
		client.RawPatch(types.MergePatchType, []byte(`{"spec":{"dataDeletionPolicy":"Delete"}}`))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the volume given back its policy (dataDeletionPolicy Delete)", func(ctx context.Context) (bool, string, error) {
		live, err := policyOf(ctx, pv.Name)
		if err != nil {
			return false, "", err
		}
		return live.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete && live.Labels[v1alpha1.LabelDataOf] == "" &&
				live.Annotations[v1alpha1.AnnotationPolicyBefore] == "",
			fmt.Sprintf("policy %s labels %v annotations %v", live.Spec.PersistentVolumeReclaimPolicy, live.Labels, live.Annotations), nil
	})
	// Evidence is kept whatever dataDeletionPolicy says: the same pass
	// that gave the other volume its policy back left this one Retain.
	if ok, got, err := kept(evidence.Name)(ctx); err != nil || !ok {
		t.Errorf("the evidence claim's volume under dataDeletionPolicy Delete: %s (%v), want it kept", got, err)
	}
}

// TestARetiredPointsContentIsNotKeptAgain: a recovery point retired by
// spec.recovery.keep gives its snapshot's content its policy back, so that
// the bytes go with the snapshot; the same reconcile then keeps the data
// of every snapshot still listed, the retiring one included (the cache is
// behind the delete, and the API server lists it too while the snapshot
// controller deletes its content). Kept again, the content outlived its
// snapshot, Retain: every retired point's bytes stayed.
func TestARetiredPointsContentIsNotKeptAgain(t *testing.T) {
	ctx := context.Background()
	name := "retired-point"
	ns := name + "-primary"
	if err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// The snapshot controller's finalizer: the deleted snapshot stays
	// listed until its content is dealt with.
	const protection = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"
	vs := &snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p-1-records-document-store-0", Finalizers: []string{protection}},
		Spec: snapshotv1.VolumeSnapshotSpec{Source: snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To("records-document-store-0")},
			VolumeSnapshotClassName: ptr.To("sd-snapshots")}}
	if err := k8sClient.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	content := &snapshotv1.VolumeSnapshotContent{ObjectMeta: metav1.ObjectMeta{Name: "snapcontent-" + name},
		Spec: snapshotv1.VolumeSnapshotContentSpec{DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete, Driver: "csi.careplane.io",
			Source:                  snapshotv1.VolumeSnapshotContentSource{VolumeHandle: ptr.To("vol-" + name)},
			VolumeSnapshotClassName: ptr.To("sd-snapshots"),
			VolumeSnapshotRef:       corev1.ObjectReference{Namespace: ns, Name: vs.Name, UID: vs.UID}}}
	if err := k8sClient.Create(ctx, content); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Delete(context.Background(), content)
		_ = k8sClient.Patch(context.Background(), vs, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
	})
	vs.Status = &snapshotv1.VolumeSnapshotStatus{BoundVolumeSnapshotContentName: ptr.To(content.Name), ReadyToUse: ptr.To(true)}
	if err := k8sClient.Status().Update(ctx, vs); err != nil {
		t.Fatal(err)
	}
	policy := func() snapshotv1.DeletionPolicy {
		t.Helper()
		live := &snapshotv1.VolumeSnapshotContent{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(content), live); err != nil {
			t.Fatal(err)
		}
		return live.Spec.DeletionPolicy
	}

	r := &RecoveryReconciler{Client: k8sClient, APIReader: k8sClient}
	if err := r.keeper.syncData(ctx, k8sClient, k8sClient, name, ns, true); err != nil {
		t.Fatal(err)
	}
	if p := policy(); p != snapshotv1.VolumeSnapshotContentRetain {
		t.Fatalf("the point's content is %s, want Retain while the point is kept: the test proves nothing", p)
	}
	if err := r.retire(ctx, ns, v1alpha1.RecoveryPoint{Name: "p-1", Snapshots: []v1alpha1.PointSnapshot{{Name: vs.Name, UID: string(vs.UID)}}}); err != nil {
		t.Fatal(err)
	}
	if p := policy(); p != snapshotv1.VolumeSnapshotContentDelete {
		t.Fatalf("the retired point's content is %s, want its policy back (Delete)", p)
	}
	// The same reconcile keeps the data after retiring, and the deleted
	// snapshot is still listed.
	if err := r.keeper.syncData(ctx, k8sClient, k8sClient, name, ns, true); err != nil {
		t.Fatal(err)
	}
	if p := policy(); p != snapshotv1.VolumeSnapshotContentDelete {
		t.Errorf("the retired point's content was kept again (%s): its bytes outlive its snapshot", p)
	}
}
