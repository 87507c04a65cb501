//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// TestGuardrailManagerBoundsStandbyData proves what careplane-manager-bounds
// lets the manager do with a standby's data, and nothing more: it deletes a
// claim only of a standby namespace, and only that standby's; it binds a
// VolumeSnapshot to a pre-provisioned content only in a standby namespace
// and only to its own copy's name; and it creates a VolumeSnapshotContent
// only as a standby's copy (careplane's labels, a snapshot handle, Retain,
// bound into <environment>-standby). Every write is a dry run as the
// manager's ServiceAccount, with its real RBAC.
func TestGuardrailManagerBoundsStandbyData(t *testing.T) {
	s := guardSetup(t)
	ctx := context.Background()
	manager := guardImpersonate(t, guardManagerSA, "system:serviceaccounts", "system:serviceaccounts:careplane-system")
	envName := "guardsd-" + s.run
	primary := guardNamespace(t, envName+"-primary", envName)
	standby := guardNamespace(t, envName+"-standby", envName)
	for ns, site := range map[string]string{primary: "primary", standby: "standby"} {
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+v1alpha1.LabelSite+`":"`+site+`"}}}`))
		if err := k8sClient.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, patch); err != nil {
			t.Fatal(err)
		}
	}
	claim := func(ns, site string) *corev1.PersistentVolumeClaim {
		pvc := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "records-document-store-0", Labels: map[string]string{
				v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelEnvironment: envName, v1alpha1.LabelSite: site}},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}}},
		}
		if err := k8sClient.Create(ctx, pvc); err != nil {
			t.Fatal(err)
		}
		return pvc
	}
	primaryClaim, standbyClaim := claim(primary, "primary"), claim(standby, "standby")

	content := func(mutate func(spec map[string]any, labels map[string]any)) *unstructured.Unstructured {
		labels := map[string]any{v1alpha1.LabelManagedBy: v1alpha1.ManagedByValue, v1alpha1.LabelEnvironment: envName,
			v1alpha1.LabelSite: "standby", v1alpha1.LabelRecoveryPoint: "p-20261203-060000"}
		spec := map[string]any{
			"deletionPolicy":          "Retain",
			"driver":                  csiDriver,
			"source":                  map[string]any{"snapshotHandle": "snap-1"},
			"volumeSnapshotClassName": snapshotClass,
			"volumeSnapshotRef":       map[string]any{"namespace": standby, "name": "p-20261203-060000-records-document-store-0"},
		}
		if mutate != nil {
			mutate(spec, labels)
		}
		ref := spec["volumeSnapshotRef"].(map[string]any)
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
			"metadata": map[string]any{"name": "careplane-" + ref["namespace"].(string) + "-" + ref["name"].(string), "labels": labels},
			"spec":     spec,
		}}
		return u
	}
	snapshotFrom := func(ns, contentName string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
			"metadata": map[string]any{"namespace": ns, "name": "p-20261203-060000-records-document-store-0",
				"labels": map[string]any{v1alpha1.LabelEnvironment: envName, v1alpha1.LabelRecoveryPoint: "p-20261203-060000"}},
			"spec": map[string]any{"source": map[string]any{"volumeSnapshotContentName": contentName}},
		}}
	}

	guardWaitDenied(t, 30*time.Second, guardPolicyBounds, func(ctx context.Context) error {
		return manager.client.Delete(ctx, primaryClaim.DeepCopy(), client.DryRunAll)
	})

	t.Run("the manager never deletes a claim of the primary", func(t *testing.T) {
		err := manager.client.Delete(ctx, primaryClaim.DeepCopy(), client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"DELETE persistentvolumeclaims", "never a claim of a primary")
	})

	t.Run("nor a content from a volume handle, which would snapshot any volume", func(t *testing.T) {
		c := content(func(spec, _ map[string]any) { spec["source"] = map[string]any{"volumeHandle": "vol-of-another-tenant"} })
		guardDenied(t, manager.client.Create(ctx, c, client.DryRunAll), guardPolicyBounds,
			guardMsgBounds+"CREATE volumesnapshotcontents", "only as the copy for a standby")
	})

	t.Run("nor a content whose deletion deletes the snapshot", func(t *testing.T) {
		c := content(func(spec, _ map[string]any) { spec["deletionPolicy"] = "Delete" })
		guardDenied(t, manager.client.Create(ctx, c, client.DryRunAll), guardPolicyBounds, "deletionPolicy Retain")
	})

	t.Run("nor a content bound into the primary, or not labelled as careplane's", func(t *testing.T) {
		c := content(func(spec, _ map[string]any) {
			spec["volumeSnapshotRef"] = map[string]any{"namespace": primary, "name": "p-20261203-060000-records-document-store-0"}
		})
		guardDenied(t, manager.client.Create(ctx, c, client.DryRunAll), guardPolicyBounds, "only as the copy for a standby")
		c = content(func(_, labels map[string]any) { delete(labels, v1alpha1.LabelManagedBy) })
		guardDenied(t, manager.client.Create(ctx, c, client.DryRunAll), guardPolicyBounds, "VolumeSnapshotContent")
	})

	t.Run("nor a snapshot from a content in the primary, or from another content", func(t *testing.T) {
		vs := snapshotFrom(primary, "careplane-"+primary+"-p-20261203-060000-records-document-store-0")
		guardDenied(t, manager.client.Create(ctx, vs, client.DryRunAll), guardPolicyBounds,
			guardMsgBounds+"CREATE volumesnapshots", "takes VolumeSnapshots of claims only")
		vs = snapshotFrom(standby, "snapcontent-of-someone-else")
		guardDenied(t, manager.client.Create(ctx, vs, client.DryRunAll), guardPolicyBounds, "takes VolumeSnapshots of claims only")
	})

	t.Run("what the standby's seeding writes passes", func(t *testing.T) {
		guardAllowed(t, manager.client.Create(ctx, content(nil), client.DryRunAll), "a standby's copy of a point's snapshot (content)")
		vs := snapshotFrom(standby, "careplane-"+standby+"-p-20261203-060000-records-document-store-0")
		guardAllowed(t, manager.client.Create(ctx, vs, client.DryRunAll), "the VolumeSnapshot bound to it in the standby")
		guardAllowed(t, manager.client.Delete(ctx, standbyClaim.DeepCopy(), client.DryRunAll), "deleting a standby claim to refresh it")
		seeded := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "records-document-store-1", Labels: standbyClaim.Labels},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: standbyClaim.Spec.AccessModes, Resources: standbyClaim.Spec.Resources,
				DataSourceRef: &corev1.TypedObjectReference{APIGroup: ptr.To("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "p"}},
		}
		guardAllowed(t, manager.client.Create(ctx, seeded, client.DryRunAll), "a standby claim from its copy")
	})
}
