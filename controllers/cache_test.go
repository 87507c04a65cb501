package controllers

import (
	"context"
	"reflect"
	"testing"
	"time"
	"unsafe"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlevent "sigs.k8s.io/controller-runtime/pkg/event"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// TestCacheTrims: the cache keeps what the reconciler reads and drops the
// rest (credentials above all).
func TestCacheTrims(t *testing.T) {
	mf := []metav1.ManagedFieldsEntry{{Manager: "x"}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Labels: map[string]string{"a": "b"}, ManagedFields: mf},
		Data: map[string][]byte{"password": []byte("hunter2")}, StringData: map[string]string{"k": "v"}}
	if _, err := trimSecret(secret); err != nil {
		t.Fatal(err)
	}
	if secret.Data != nil || secret.StringData != nil || secret.ManagedFields != nil || secret.Labels["a"] != "b" {
		t.Errorf("trimmed secret = %+v", secret)
	}

	port := []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"c": "d"}, ManagedFields: mf},
		Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: "sa",
			InitContainers: []corev1.Container{{Name: "sidecar", Image: "i", Ports: port, Env: []corev1.EnvVar{{Name: "E"}}}},
			Containers:     []corev1.Container{{Name: "app", Image: "i", Ports: port, Args: []string{"--x"}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, Reason: "r", Message: "m", LastTransitionTime: metav1.Now()},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app"}}},
	}
	if _, err := trimPod(pod); err != nil {
		t.Fatal(err)
	}
	if pod.Spec.NodeName != "n1" || pod.Spec.ServiceAccountName != "" || len(pod.Spec.Containers) != 1 ||
		pod.Spec.Containers[0].Name != "app" || pod.Spec.Containers[0].Image != "" || pod.Spec.Containers[0].Ports[0].Name != "http" ||
		pod.Spec.InitContainers[0].Ports[0].Name != "http" || pod.Spec.InitContainers[0].Env != nil {
		t.Errorf("trimmed pod spec = %+v", pod.Spec)
	}
	if pod.Status.PodIP != "10.0.0.1" || pod.Status.PodIPs != nil || pod.Status.ContainerStatuses != nil || pod.Labels["a"] != "b" || pod.Annotations != nil || pod.ManagedFields != nil {
		t.Errorf("trimmed pod = %+v", pod)
	}
	if want := []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}; len(pod.Status.Conditions) != 1 ||
		pod.Status.Conditions[0] != want[0] || !podReady(pod) {
		t.Errorf("trimmed pod conditions = %+v, want only Ready's type and status", pod.Status.Conditions)
	}

	stuck := appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Message: "deadline exceeded"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "d", Generation: 3, ManagedFields: mf,
		Annotations: map[string]string{"deployment.kubernetes.io/revision": "1"}}, Spec: appsv1.DeploymentSpec{
		Replicas: new(int32(2)),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"rev": "1"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, Conditions: []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Message: "has minimum availability"}, stuck}}}
	if _, err := trimDeployment(dep); err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Template.Spec.Containers != nil || dep.Spec.Selector != nil || dep.Spec.Template.Labels != nil ||
		*dep.Spec.Replicas != 2 || dep.Spec.Template.Annotations["rev"] != "1" || dep.Annotations != nil || dep.ManagedFields != nil {
		t.Errorf("trimmed deployment spec = %+v", dep.Spec)
	}
	if !deploymentWorkload(dep).current() || dep.Status.ReadyReplicas != 2 || len(dep.Status.Conditions) != 1 || dep.Status.Conditions[0] != stuck {
		t.Errorf("trimmed deployment status = %+v, want the counts and only the stuck condition", dep.Status)
	}

	// A StatefulSet keeps what a Deployment does, and its claim templates'
	// names and sizes, which tell when a volume grew.
	ss := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "store", Generation: 2, ManagedFields: mf, Annotations: map[string]string{"x": "y"}},
		Spec: appsv1.StatefulSetSpec{Replicas: new(int32(1)), ServiceName: "store",
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"rev": "1"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "records", Labels: map[string]string{"a": "b"}},
				Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}}},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 2, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, CurrentRevision: "store-1"}}
	if _, err := trimStatefulSet(ss); err != nil {
		t.Fatal(err)
	}
	if ss.Spec.Template.Spec.Containers != nil || ss.Spec.ServiceName != "" || ss.Annotations != nil || ss.ManagedFields != nil ||
		ss.Spec.Template.Annotations["rev"] != "1" || len(ss.Spec.VolumeClaimTemplates) != 1 || ss.Spec.VolumeClaimTemplates[0].Labels != nil ||
		!sameClaimTemplates(ss, v1alpha1.Service{Volumes: []v1alpha1.Volume{{Name: "records", Size: "1024Mi"}}}) ||
		sameClaimTemplates(ss, v1alpha1.Service{Volumes: []v1alpha1.Volume{{Name: "records", Size: "2Gi"}}}) {
		t.Errorf("trimmed statefulset spec = %+v", ss.Spec)
	}
	if w := statefulSetWorkload(ss); !w.current() || w.ready != 1 || w.credentialsRevision != "" || ss.Status.CurrentRevision != "" {
		t.Errorf("trimmed statefulset status = %+v", ss.Status)
	}

	// The fence's own policy keeps its spec, to be compared with the
	// desired one.
	fencePolicy := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: build.FencePolicyName, ManagedFields: mf},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}}}
	if _, err := trimNetworkPolicy(fencePolicy); err != nil {
		t.Fatal(err)
	}
	if len(fencePolicy.Spec.PolicyTypes) != 2 || fencePolicy.ManagedFields != nil {
		t.Errorf("trimmed fence policy = %+v, want its spec kept", fencePolicy)
	}

	// Of these careplane reads the metadata alone.
	meta := func() metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: "o", Namespace: "n", UID: "u", ResourceVersion: "7", Labels: map[string]string{"a": "b"},
			Annotations: map[string]string{"c": "d"}, ManagedFields: mf}
	}
	q := resource.MustParse("1")
	for _, c := range []struct {
		obj       client.Object
		transform func(any) (any, error)
	}{
		{&corev1.Namespace{ObjectMeta: meta(), Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}},
			Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}, trimNamespace},
		{&corev1.ServiceAccount{ObjectMeta: meta(), Secrets: []corev1.ObjectReference{{Name: "t"}}}, trimServiceAccount},
		{&corev1.Service{ObjectMeta: meta(), Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}, ClusterIP: "10.0.0.1"}}, trimService},
		{&corev1.ResourceQuota{ObjectMeta: meta(), Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{"pods": q}},
			Status: corev1.ResourceQuotaStatus{Used: corev1.ResourceList{"pods": q}}}, trimResourceQuota},
		{&corev1.LimitRange{ObjectMeta: meta(), Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{Type: "Container"}}}}, trimLimitRange},
		{&policyv1.PodDisruptionBudget{ObjectMeta: meta(), Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: new(intstr.FromInt32(1))},
			Status: policyv1.PodDisruptionBudgetStatus{CurrentHealthy: 1}}, trimPodDisruptionBudget},
		{&discoveryv1.EndpointSlice{ObjectMeta: meta(), AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}}}, Ports: []discoveryv1.EndpointPort{{Name: new("http")}}}, trimEndpointSlice},
		{&networkingv1.NetworkPolicy{ObjectMeta: meta(), Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}, trimNetworkPolicy},
	} {
		if _, err := c.transform(c.obj); err != nil {
			t.Fatal(err)
		}
		want := meta()
		want.ManagedFields = nil
		switch c.obj.(type) {
		case *corev1.ServiceAccount, *appsv1.Deployment, *appsv1.StatefulSet, *policyv1.PodDisruptionBudget:
			// Read: a revoked ServiceAccount is deleted on the
			// precondition of its UID; the others' applies are skipped on
			// ssa.Version, which names them by it.
		default:
			want.UID = ""
		}
		var got metav1.ObjectMeta
		switch o := c.obj.(type) {
		case *corev1.Namespace:
			got = o.ObjectMeta
			o.ObjectMeta = metav1.ObjectMeta{}
			assertZero(t, o)
		case *corev1.ServiceAccount:
			got = o.ObjectMeta
			o.ObjectMeta = metav1.ObjectMeta{}
			assertZero(t, o)
		case *corev1.Service:
			got = o.ObjectMeta
			o.ObjectMeta = metav1.ObjectMeta{}
			assertZero(t, o)
		case *corev1.ResourceQuota:
			got = o.ObjectMeta
			o.ObjectMeta = metav1.ObjectMeta{}
			assertZero(t, o)
		case *corev1.LimitRange:
			got = o.ObjectMeta
			o.ObjectMeta = metav1.ObjectMeta{}
			assertZero(t, o)
		case *policyv1.PodDisruptionBudget:
			got = o.ObjectMeta
			o.ObjectMeta = metav1.ObjectMeta{}
			assertZero(t, o)
		case *discoveryv1.EndpointSlice:
			got = o.ObjectMeta
			if o.AddressType != discoveryv1.AddressTypeIPv4 {
				t.Errorf("trimmed EndpointSlice lost its address type")
			}
			o.ObjectMeta, o.AddressType = metav1.ObjectMeta{}, ""
			assertZero(t, o)
		case *networkingv1.NetworkPolicy:
			got = o.ObjectMeta
			o.ObjectMeta = metav1.ObjectMeta{}
			assertZero(t, o)
		}
		if got.Name != want.Name || got.Namespace != want.Namespace || got.UID != want.UID || got.ResourceVersion != want.ResourceVersion ||
			got.Labels["a"] != "b" || got.Annotations["c"] != "d" || got.ManagedFields != nil {
			t.Errorf("trimmed %T metadata = %+v, want %+v", c.obj, got, want)
		}
	}
}

// assertZero fails unless o, once its kept fields are cleared, is empty.
func assertZero[T any](t *testing.T, o *T) {
	t.Helper()
	var zero T
	if !reflect.DeepEqual(*o, zero) {
		t.Errorf("trimmed %T kept %+v", o, *o)
	}
}

// TestCacheSharesMetadataStrings: objects of one environment share one
// copy of their label keys and values, of equal label sets, of their owner
// references and of their pods' container ports, and
// kubectl's last-applied copy of an object is not kept.
func TestCacheSharesMetadataStrings(t *testing.T) {
	decoded := func(name string) *corev1.ServiceAccount {
		// Fresh copies of every string, as decoding leaves them.
		c := func(s string) string { return string([]byte(s)) }
		return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
			Name: c(name), Namespace: c("wales-111-primary"),
			Labels:      map[string]string{c(v1alpha1.LabelEnvironment): c("wales-111")},
			Annotations: map[string]string{c(corev1.LastAppliedConfigAnnotation): `{"kind":"ServiceAccount"}`, c("k"): "v"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: c("careplane.io/v1alpha1"), Kind: c("HealthEnvironment"),
				Name: c("wales-111"), UID: "0b2c5f3e-7f43-4d43-9d8e-1f6c1f7c2a10"}},
		}}
	}
	a, b := decoded("call-handling"), decoded("referral")
	for _, o := range []*corev1.ServiceAccount{a, b} {
		if _, err := trimServiceAccount(o); err != nil {
			t.Fatal(err)
		}
		if _, ok := o.Annotations[corev1.LastAppliedConfigAnnotation]; ok || o.Annotations["k"] != "v" {
			t.Errorf("annotations = %v, want k=v alone", o.Annotations)
		}
	}
	same := func(what, x, y string) {
		if x != y || unsafe.StringData(x) != unsafe.StringData(y) {
			t.Errorf("%s: %q and %q are separate copies", what, x, y)
		}
	}
	same("namespace", a.Namespace, b.Namespace)
	same("label value", a.Labels[v1alpha1.LabelEnvironment], b.Labels[v1alpha1.LabelEnvironment])
	same("owner name", a.OwnerReferences[0].Name, b.OwnerReferences[0].Name)
	same("owner kind", a.OwnerReferences[0].Kind, b.OwnerReferences[0].Kind)
	same("owner UID", string(a.OwnerReferences[0].UID), string(b.OwnerReferences[0].UID))
	for k := range a.Labels {
		for l := range b.Labels {
			same("label key", k, l)
		}
	}
	if reflect.ValueOf(a.Labels).UnsafePointer() != reflect.ValueOf(b.Labels).UnsafePointer() {
		t.Error("equal labels are separate maps")
	}
	if &a.OwnerReferences[0] != &b.OwnerReferences[0] {
		t.Error("equal owner references are separate slices")
	}
	pod := func() *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "i",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}
	}
	p, q, r := pod(), pod(), pod()
	r.Spec.Containers[0].Ports[0].ContainerPort = 8443
	for _, o := range []*corev1.Pod{p, q, r} {
		if _, err := trimPod(o); err != nil {
			t.Fatal(err)
		}
	}
	if &p.Spec.Containers[0] != &q.Spec.Containers[0] {
		t.Error("equal container ports are separate slices")
	}
	if &p.Spec.Containers[0] == &r.Spec.Containers[0] || r.Spec.Containers[0].Ports[0].ContainerPort != 8443 {
		t.Errorf("different container ports are shared: %+v", r.Spec.Containers)
	}

	// Different labels stay apart.
	c := decoded("booking")
	c.Labels[v1alpha1.LabelService] = "booking"
	if _, err := trimServiceAccount(c); err != nil {
		t.Fatal(err)
	}
	if reflect.ValueOf(c.Labels).UnsafePointer() == reflect.ValueOf(a.Labels).UnsafePointer() ||
		c.Labels[v1alpha1.LabelService] != "booking" || len(c.Labels) != 2 || len(a.Labels) != 1 {
		t.Errorf("labels %v and %v are shared", a.Labels, c.Labels)
	}
}

// TestResyncedPassesResyncsOnly: the periodic resync of an environment (the
// same version twice) reconciles it; a status update does not.
func TestResyncedPassesResyncsOnly(t *testing.T) {
	env := func(rv string) *v1alpha1.HealthEnvironment {
		return &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "e", Generation: 1, ResourceVersion: rv}}
	}
	if !resynced.Update(ctrlevent.UpdateEvent{ObjectOld: env("5"), ObjectNew: env("5")}) {
		t.Error("a resync is dropped")
	}
	if resynced.Update(ctrlevent.UpdateEvent{ObjectOld: env("5"), ObjectNew: env("6")}) {
		t.Error("an update of the same generation passes")
	}
	if resynced.Create(ctrlevent.CreateEvent{Object: env("5")}) || resynced.Delete(ctrlevent.DeleteEvent{Object: env("5")}) {
		t.Error("resynced passes creates or deletes (GenerationChangedPredicate's to pass)")
	}
}

// TestCacheHoldsTrimmedChildren: with the real manager, the cache holds
// careplane's children trimmed while the API server holds them whole, and
// the environment still provisions (the other integration tests reconcile
// from this cache throughout).
func TestCacheHoldsTrimmedChildren(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("trim")
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), env) })
	waitCondition(t, "trim", v1alpha1.ConditionReady, "False", v1alpha1.ReasonProvisioning)

	ns := "trim-primary"
	for _, c := range []struct {
		obj     client.Object
		name    string
		trimmed func(live, cached client.Object) bool
	}{
		// Services are cached as metadata alone (a typed read here would
		// start a typed informer, which careplane never does).
		{servicesMetadata.DeepCopy(), "call-handling", func(live, cached client.Object) bool {
			return cached.GetUID() == "" && live.GetUID() != ""
		}},
		{&networkingv1.NetworkPolicy{}, build.DefaultDenyPolicyName, func(live, cached client.Object) bool {
			return len(live.(*networkingv1.NetworkPolicy).Spec.PolicyTypes) > 0 && cached.(*networkingv1.NetworkPolicy).Spec.PolicyTypes == nil
		}},
		{&appsv1.Deployment{}, "call-handling", func(live, cached client.Object) bool {
			l, c := live.(*appsv1.Deployment), cached.(*appsv1.Deployment)
			return len(l.Spec.Template.Spec.Containers) == 1 && c.Spec.Template.Spec.Containers == nil && *c.Spec.Replicas == 2
		}},
		{&corev1.LimitRange{}, build.LimitRangeName, func(live, cached client.Object) bool {
			return len(live.(*corev1.LimitRange).Spec.Limits) > 0 && cached.(*corev1.LimitRange).Spec.Limits == nil
		}},
	} {
		key := client.ObjectKey{Namespace: ns, Name: c.name}
		eventually(t, 30*time.Second, "cached "+key.String(), func(ctx context.Context) (bool, string, error) {
			live := c.obj.DeepCopyObject().(client.Object)
			cached := c.obj.DeepCopyObject().(client.Object)
			if err := k8sClient.Get(ctx, key, live); err != nil {
				return false, err.Error(), nil
			}
			if err := mgrCache.Get(ctx, key, cached); err != nil {
				return false, err.Error(), nil
			}
			if cached.GetResourceVersion() != live.GetResourceVersion() || cached.GetLabels()[v1alpha1.LabelEnvironment] != "trim" {
				return false, "cache behind", nil
			}
			if !c.trimmed(live, cached) {
				t.Fatalf("cached %T %s = %+v, want it trimmed", cached, key, cached)
			}
			return true, "", nil
		})
	}
}
