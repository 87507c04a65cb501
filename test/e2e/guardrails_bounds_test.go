//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

const (
	guardPolicyBounds = "careplane-manager-bounds"
	guardMsgBounds    = "the careplane manager (" + guardManagerSA + ") may not "
)

// TestGuardrailManagerBounds proves careplane-manager-bounds: the manager's
// ClusterRole allows Secrets, Deployments, pod patches and namespace patches
// in every namespace (it creates the namespaces of every environment), and
// the policy keeps those verbs to careplane's own namespaces and shapes. The
// manager acts here with its real RBAC (impersonating its ServiceAccount), so
// every write below is one its ClusterRole allows: the denials are the
// policy's. Every write is a dry run: admission runs, nothing is stored.
//
// That the manager's real work still passes is what every other e2e test
// shows: the suite's operator runs as this ServiceAccount, with the policy
// installed.
func TestGuardrailManagerBounds(t *testing.T) {
	s := guardSetup(t)
	ctx := context.Background()
	manager := guardImpersonate(t, guardManagerSA, "system:serviceaccounts", "system:serviceaccounts:careplane-system")
	envName := "guard-" + s.run
	ns := guardNamespace(t, envName+"-primary", envName)
	guardPod(t, ns, "web")

	// A token for a kube-system ServiceAccount: the token controller fills
	// it in, and whoever reads the Secret is that ServiceAccount.
	tokenSecret := func(namespace, sa string) *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "guard-token-" + rand.String(5),
				Annotations: map[string]string{corev1.ServiceAccountNameKey: sa}},
			Type: corev1.SecretTypeServiceAccountToken,
		}
	}
	// Policies load asynchronously: wait (but not fail here) until this one
	// denies, so that each case below reports for itself.
	guardWaitDenied(t, 30*time.Second, guardPolicyBounds, func(ctx context.Context) error {
		return manager.client.Create(ctx, tokenSecret("kube-system", "clusterrole-aggregation-controller"), client.DryRunAll)
	})

	t.Run("the manager cannot mint a token for a kube-system ServiceAccount", func(t *testing.T) {
		err := manager.client.Create(ctx, tokenSecret("kube-system", "clusterrole-aggregation-controller"), client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"CREATE secrets", "in namespace kube-system",
			"it writes only in namespaces it created")
	})

	t.Run("nor a token Secret in its own namespaces", func(t *testing.T) {
		err := manager.client.Create(ctx, tokenSecret(ns, "default"), client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"CREATE secrets", "never writes a ServiceAccount token Secret")
		// Nor through the annotation on a Secret of another type.
		opaque := tokenSecret(ns, "default")
		opaque.Type = corev1.SecretTypeOpaque
		err = manager.client.Create(ctx, opaque, client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, "never writes a ServiceAccount token Secret")
	})

	t.Run("nor a Deployment in default", func(t *testing.T) {
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "guard-" + s.run},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "guard"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "guard"}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: guardImage}}},
				},
			},
		}
		err := manager.client.Create(ctx, dep, client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"CREATE deployments", "in namespace default")
	})

	t.Run("nor anything but Leases and Events in its own namespace", func(t *testing.T) {
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: guardParamsNamespace, Name: "guard-" + s.run},
			StringData: map[string]string{"k": "v"}}
		err := manager.client.Create(ctx, secret, client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"CREATE secrets", "only Leases (leader election) and Events")
	})

	t.Run("nor change a pod's spec, even in its own namespaces", func(t *testing.T) {
		// A new image is a valid pod update: the API server's own
		// validation lets it through to admission.
		patch := client.RawPatch(types.StrategicMergePatchType,
			[]byte(`{"spec":{"containers":[{"name":"app","image":"registry.example/attacker/shell:latest"}]}}`))
		err := manager.client.Patch(ctx, guardPodRef(ns, "web"), patch, client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"UPDATE pods web", "never its spec")
	})

	t.Run("nor scale a Deployment but to zero in its own namespaces", func(t *testing.T) {
		// The fence's scale-down goes through the scale subresource: to
		// zero replicas, and only in careplane's namespaces.
		deployment := func(namespace string) *appsv1.Deployment {
			pod := guardPodObject(namespace, "scaled")
			dep := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "guard-scale-" + s.run},
				Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](0),
					Selector: &metav1.LabelSelector{MatchLabels: pod.Labels},
					Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels}, Spec: pod.Spec}},
			}
			if err := k8sClient.Create(ctx, dep); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), dep) })
			return dep
		}
		scale := func(dep *appsv1.Deployment, replicas int) error {
			return manager.client.SubResource("scale").Patch(ctx, dep.DeepCopy(),
				client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas))),
				&client.SubResourcePatchOptions{SubResourceBody: &autoscalingv1.Scale{},
					PatchOptions: client.PatchOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: "careplane"}})
		}
		ours, theirs := deployment(ns), deployment("default")
		guardAllowed(t, scale(ours, 0), "scaling its own Deployment to zero")
		guardDenied(t, scale(ours, 3), guardPolicyBounds, guardMsgBounds+"UPDATE deployments/scale "+ours.Name, "but a Deployment's scale to zero replicas")
		guardDenied(t, scale(theirs, 0), guardPolicyBounds, guardMsgBounds+"UPDATE deployments/scale "+theirs.Name, "in namespace default")
	})

	t.Run("nor label kube-system", func(t *testing.T) {
		kubeSystem := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}}
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+v1alpha1.LabelManagedBy+`":"careplane","`+
			v1alpha1.LabelEnvironment+`":"`+envName+`"}}}`))
		err := manager.client.Patch(ctx, kubeSystem, patch, client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"UPDATE namespaces kube-system", "only its own namespaces")
	})

	t.Run("nor relax Pod Security on its own namespaces", func(t *testing.T) {
		patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"privileged"}}}`))
		err := manager.client.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, patch, client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"UPDATE namespaces "+ns, "Pod Security enforce restricted")
	})

	claim := func(source *corev1.TypedLocalObjectReference) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "guard-claim-" + rand.String(5)},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
				DataSource:  source,
			},
		}
	}
	t.Run("nor clone a claim (an evidence claim, say), nor create an empty one", func(t *testing.T) {
		err := manager.client.Create(ctx, claim(&corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "records-document-store-0"}), client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"CREATE persistentvolumeclaims", "only to restore a recovery point")
		err = manager.client.Create(ctx, claim(nil), client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"CREATE persistentvolumeclaims", "only to restore a recovery point")
	})

	// The volumes of the primary's claims: only their reclaim policy, only
	// of a volume bound to a claim of <environment>-primary.
	volume := func(claimNS string, kept bool) *corev1.PersistentVolume {
		pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "guard-pv-" + rand.String(5)},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
				ClaimRef:                      &corev1.ObjectReference{Namespace: claimNS, Name: "records-document-store-0"},
				PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
					Driver: "csi.careplane.io", VolumeHandle: "guard-" + rand.String(5)}},
			}}
		if kept {
			pv.Labels = map[string]string{v1alpha1.LabelDataOf: envName}
			pv.Annotations = map[string]string{v1alpha1.AnnotationPolicyBefore: "Delete"}
			pv.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimRetain
		}
		if err := k8sClient.Create(ctx, pv); err != nil {
			t.Fatal(err)
		}
		// A responder's: careplane-retained-volume-guard keeps a kept one.
		t.Cleanup(func() { _ = s.responder.client.Delete(context.Background(), pv) })
		return pv
	}
	keep := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+v1alpha1.LabelDataOf+`":"`+envName+
		`"},"annotations":{"`+v1alpha1.AnnotationPolicyBefore+`":"Delete"}},"spec":{"persistentVolumeReclaimPolicy":"Retain"}}`))
	t.Run("nor keep, rebind, let go or delete a volume not of its primary's claims", func(t *testing.T) {
		foreign := volume("kube-system", false)
		err := manager.client.Patch(ctx, foreign, keep, client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"UPDATE persistentvolumes", "changes only the reclaim policy")
		own := volume(envName+"-primary", false)
		rebind := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+v1alpha1.LabelDataOf+`":"`+envName+
			`"}},"spec":{"persistentVolumeReclaimPolicy":"Retain","claimRef":{"namespace":"`+envName+`-primary","name":"other-0","uid":null,"resourceVersion":null}}}`))
		err = manager.client.Patch(ctx, own, rebind, client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"UPDATE persistentvolumes", "never rebinds")
		// RBAC: the manager has no delete on volumes at all.
		if err := manager.client.Delete(ctx, own, client.DryRunAll); !apierrors.IsForbidden(err) {
			t.Errorf("the manager deletes a volume of its primary: %v, want it forbidden", err)
		}
		guardAllowed(t, manager.client.Patch(ctx, own, keep, client.DryRunAll), "keeping the volume of a claim of its primary (Retain)")

		// Kept: Delete only with the label off, back to the recorded policy.
		kept := volume(envName+"-primary", true)
		toDelete := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"persistentVolumeReclaimPolicy":"Delete"}}`))
		err = manager.client.Patch(ctx, kept, toDelete, client.DryRunAll)
		guardDenied(t, err, guardPolicyBounds, guardMsgBounds+"UPDATE persistentvolumes", "changes only the reclaim policy")
		release := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+v1alpha1.LabelDataOf+`":null},"annotations":{"`+
			v1alpha1.AnnotationPolicyBefore+`":null}},"spec":{"persistentVolumeReclaimPolicy":"Delete"}}`))
		guardAllowed(t, manager.client.Patch(ctx, kept, release, client.DryRunAll), "giving a kept volume back its recorded policy")
	})

	// What the manager does write, in the shapes it writes them.
	t.Run("the manager's own writes pass", func(t *testing.T) {
		restored := claim(&corev1.TypedLocalObjectReference{APIGroup: ptr.To("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "p-20261203-053000-records-document-store-0"})
		guardAllowed(t, manager.client.Create(ctx, restored, client.DryRunAll), "a restore's claim from a VolumeSnapshot")

		opaque := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-db-password"},
			StringData: map[string]string{"value": "x"}}
		guardAllowed(t, manager.client.Create(ctx, opaque, client.DryRunAll), "a generated Secret in its namespace")

		evidence := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"ownerReferences":null,"labels":{"`+
			v1alpha1.LabelEvidence+`":"INC-E2E"}}}`))
		guardAllowed(t, manager.client.Patch(ctx, guardPodRef(ns, "web"), evidence, client.DryRunAll), "keeping a pod as evidence")

		fence := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+v1alpha1.LabelFenced+`":"true"}}}`))
		guardAllowed(t, manager.client.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, fence, client.DryRunAll),
			"labelling its namespace fenced")

		lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: guardParamsNamespace, Name: "guard-" + s.run},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("e2e")}}
		guardAllowed(t, manager.client.Create(ctx, lease, client.DryRunAll), "a Lease in its own namespace")

		ev := &eventsv1.Event{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "guard-", Namespace: "default"},
			EventTime:  metav1.NowMicro(), ReportingController: "careplane.io/manager", ReportingInstance: "e2e",
			Action: "Probe", Reason: "Probe", Type: corev1.EventTypeNormal,
			Regarding: corev1.ObjectReference{Kind: "HealthEnvironment", APIVersion: v1alpha1.GroupVersion.String(), Name: envName},
		}
		guardAllowed(t, manager.client.Create(ctx, ev, client.DryRunAll), "an Event about a HealthEnvironment in default")
	})

	t.Run("other users are not bounded by it", func(t *testing.T) {
		// The policy matches the manager's username alone.
		guardAllowed(t, s.responder.client.Create(ctx, tokenSecret("kube-system", "clusterrole-aggregation-controller"), client.DryRunAll),
			"a responder (cluster-admin) creating a token Secret in kube-system")
	})
}

// guardWaitDenied retries try until policy denies it, for at most timeout,
// and only logs when it does not: the assertions that follow say what is
// wrong, one by one.
func guardWaitDenied(t *testing.T, timeout time.Duration, policy string, try func(context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := try(context.Background())
		if guardIsDenial(err, policy) {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("ValidatingAdmissionPolicy %s did not deny within %s (last: %v)", policy, timeout, err)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}
