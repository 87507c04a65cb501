package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// careRecordsEnv is a care-records environment: a document store keeping
// records on a volume, and a records API reading the store's password,
// answering on HTTP and receiving syslog over UDP.
func careRecordsEnv(name string) *v1alpha1.HealthEnvironment {
	digest := "@sha256:" + strings.Repeat("cd", 32)
	return &v1alpha1.HealthEnvironment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.HealthEnvironmentSpec{
			Tenant: v1alpha1.Tenant{DisplayName: "Yorkshire Shared Care Record"},
			Services: []v1alpha1.Service{
				{
					Name: "document-store", Image: "registry.example/records/store" + digest,
					Replicas: ptr.To(int32(2)), Port: 5432, GeneratedSecrets: []string{"db-password"},
					Volumes: []v1alpha1.Volume{{Name: "records", MountPath: "/var/lib/records", Size: "1Gi"}},
				},
				{
					Name: "records-api", Image: "registry.example/records/api" + digest, Replicas: ptr.To(int32(1)),
					Ports:       []v1alpha1.ServicePort{{Name: "http", Port: 8080}, {Name: "syslog", Port: 514, Protocol: corev1.ProtocolUDP}},
					TalksTo:     []string{"document-store"},
					SecretsFrom: []v1alpha1.SecretFrom{{Service: "document-store", Secret: "db-password", EnvVar: "STORE_PASSWORD"}},
				},
			},
		},
	}
}

// TestServiceWithVolumesRunsAsStatefulSet: the document store runs as a
// StatefulSet with one claim per replica, labelled as the environment's,
// retained; the records API as a Deployment reading the store's password,
// with both its ports in its Service. Growing the volume grows the claims
// and replaces the StatefulSet (whose claim templates cannot change) without
// deleting a claim; a fence scales the StatefulSet to zero and keeps them.
func TestServiceWithVolumesRunsAsStatefulSet(t *testing.T) {
	ctx := context.Background()
	const name = "records"
	env := careRecordsEnv(name)
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), env) })
	ns := name + "-primary"

	ss := &appsv1.StatefulSet{}
	eventually(t, 20*time.Second, "the document store's StatefulSet", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "document-store"}, ss)
		return err == nil, "", client.IgnoreNotFound(err)
	})
	if n := ptr.Deref(ss.Spec.Replicas, 0); n != 2 || len(ss.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("StatefulSet replicas %d, %d claim templates; want 2 and 1", n, len(ss.Spec.VolumeClaimTemplates))
	}
	vct := ss.Spec.VolumeClaimTemplates[0]
	if vct.Name != "records" || !vct.Spec.Resources.Requests.Storage().Equal(resource.MustParse("1Gi")) ||
		vct.Labels[v1alpha1.LabelEnvironment] != name || vct.Labels[v1alpha1.LabelService] != "document-store" {
		t.Errorf("claim template = %+v", vct)
	}
	if p := ss.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("claim retention = %+v, want Retain", p)
	}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "document-store"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("a Deployment of the document store exists too (err %v)", err)
	}

	dep := &appsv1.Deployment{}
	eventually(t, 20*time.Second, "the records API's Deployment", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "records-api"}, dep)
		return err == nil, "", client.IgnoreNotFound(err)
	})
	c := dep.Spec.Template.Spec.Containers[0]
	if i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "STORE_PASSWORD" }); i < 0 ||
		c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.SecretKeyRef.Name != "document-store.db-password" {
		t.Errorf("records-api env = %+v, want STORE_PASSWORD from document-store.db-password", c.Env)
	}
	// Written beside the Deployment, not before it.
	svc := &corev1.Service{}
	eventually(t, 20*time.Second, "the records API's Service", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "records-api"}, svc)
		return err == nil, "", client.IgnoreNotFound(err)
	})
	var ports []string
	for _, p := range svc.Spec.Ports {
		ports = append(ports, p.Name+":"+string(p.Protocol))
	}
	if !slices.Equal(ports, []string{"http:TCP", "syslog:UDP"}) {
		t.Errorf("records-api Service ports = %v", ports)
	}

	// The claims as the StatefulSet controller (not running in envtest)
	// would make them from the claim template, of a class that allows
	// expansion (the API server's resize admission checks it), bound.
	class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "records-expandable"}, Provisioner: "csi.careplane.io",
		AllowVolumeExpansion: ptr.To(true)}
	if err := k8sClient.Create(ctx, class); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), class) })
	for _, claim := range []string{"records-document-store-0", "records-document-store-1"} {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: claim, Labels: vct.Labels},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: vct.Spec.AccessModes, Resources: vct.Spec.Resources, StorageClassName: ptr.To(class.Name)}}
		if err := k8sClient.Create(ctx, pvc); err != nil {
			t.Fatal(err)
		}
		pvc.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound, Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}
		if err := k8sClient.Status().Update(ctx, pvc); err != nil {
			t.Fatal(err)
		}
	}
	oldUID := ss.UID
	updateEnv(t, ctx, name, func(e *v1alpha1.HealthEnvironment) { e.Spec.Services[0].Volumes[0].Size = "2Gi" })
	eventually(t, 20*time.Second, "the claims grow to 2Gi and the StatefulSet is replaced", func(ctx context.Context) (bool, string, error) {
		for _, claim := range []string{"records-document-store-0", "records-document-store-1"} {
			pvc := &corev1.PersistentVolumeClaim{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: claim}, pvc); err != nil {
				return false, "", err
			}
			if !pvc.Spec.Resources.Requests.Storage().Equal(resource.MustParse("2Gi")) {
				return false, claim + " asks for " + pvc.Spec.Resources.Requests.Storage().String(), nil
			}
		}
		cur := &appsv1.StatefulSet{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "document-store"}, cur); err != nil {
			return false, "", client.IgnoreNotFound(err)
		}
		if cur.DeletionTimestamp != nil {
			// Play garbage collection (not running in envtest): the
			// orphaning delete leaves the pods and claims, then the
			// StatefulSet goes.
			if !slices.Equal(cur.Finalizers, []string{metav1.FinalizerOrphanDependents}) {
				return false, fmt.Sprintf("deleted with finalizers %v, want only orphan", cur.Finalizers), nil
			}
			cur.Finalizers = nil
			return false, "StatefulSet being replaced", client.IgnoreNotFound(k8sClient.Update(ctx, cur))
		}
		if cur.UID == oldUID || !cur.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().Equal(resource.MustParse("2Gi")) {
			return false, "StatefulSet not replaced yet", nil
		}
		return true, "", nil
	})
	waitCondition(t, name, v1alpha1.ConditionDegraded, "False", "")

	// The fence scales the StatefulSet to zero, on the template it has; the
	// claims stay.
	running := &appsv1.StatefulSet{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "document-store"}, running); err != nil {
		t.Fatal(err)
	}
	updateEnv(t, ctx, name, func(e *v1alpha1.HealthEnvironment) {
		e.Spec.Isolation = v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "ransomware", Workloads: v1alpha1.WorkloadsStop}
	})
	eventually(t, 20*time.Second, "the fence scales the document store to 0", func(ctx context.Context) (bool, string, error) {
		cur := &appsv1.StatefulSet{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "document-store"}, cur); err != nil {
			return false, "", err
		}
		if ptr.Deref(cur.Spec.Replicas, -1) != 0 {
			return false, fmt.Sprintf("replicas %d", ptr.Deref(cur.Spec.Replicas, -1)), nil
		}
		if !equality.Semantic.DeepEqual(cur.Spec.Template, running.Spec.Template) {
			return false, "", fmt.Errorf("the fence changed the pod template: credentials revision %q, was %q",
				cur.Spec.Template.Annotations[build.AnnotationCredentialsRevision], running.Spec.Template.Annotations[build.AnnotationCredentialsRevision])
		}
		return true, "", nil
	})
	var pvcs corev1.PersistentVolumeClaimList
	if err := k8sClient.List(ctx, &pvcs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(pvcs.Items) != 2 {
		t.Errorf("%d claims after the fence, want both kept", len(pvcs.Items))
	}

	// Restoring a service with volumes is not built yet: the fence stays,
	// and the status says why.
	updateEnv(t, ctx, name, func(e *v1alpha1.HealthEnvironment) {
		e.Spec.Isolation.Mode = v1alpha1.IsolationNone
		e.Spec.Isolation.Reason = ""
	})
	got := waitCondition(t, name, v1alpha1.ConditionRestoring, "False", v1alpha1.ReasonRestoreBlocked)
	if c := findCondition(got.Status.Conditions, v1alpha1.ConditionRestoring); !strings.Contains(c.Message, "the fence stays") {
		t.Errorf("Restoring message = %q", c.Message)
	}
	nsObj := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	if nsObj.Labels[v1alpha1.LabelFenced] != "true" {
		t.Errorf("the fence was lifted: namespace labels %v", nsObj.Labels)
	}
}
