package guardrails_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/predicates/rules"
	"k8s.io/apiserver/pkg/authentication/user"
)

// TestNoPolicyFailsToEvaluate sends every policy every request it matches
// from a grid: each kind careplane, the control plane, a responder or a
// tenant writes (and the subresources a fence meets: status, binding,
// eviction, exec, proxy, scale, token, finalize), each operation, with and
// without careplane's labels before and after, named and as an item of a
// DeleteCollection, in a plain, a fenced-with-evidence and a front
// namespace, as each identity that acts there. Every policy fails closed,
// so an expression that fails to evaluate refuses the request: whatever it
// should decide, it must decide it. (An empty EndpointSlice once did not.)
func TestNoPolicyFailsToEvaluate(t *testing.T) {
	all, err := policies()
	if err != nil {
		t.Fatal(err)
	}
	requests := gridRequests()
	evaluated := map[string]int{}
	failures := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(all)) {
		p := all[name]
		for _, r := range requests {
			if !matches(p.policy, r.attributes()) {
				continue
			}
			evaluated[name]++
			for _, f := range p.decide(r.request).failed {
				failures[name+": "+f] = r.what
			}
		}
	}
	for _, f := range slices.Sorted(maps.Keys(failures)) {
		t.Errorf("%s\n    e.g. %s", f, failures[f])
	}
	// A grid that reaches no policy proves nothing.
	for _, name := range slices.Sorted(maps.Keys(all)) {
		if evaluated[name] == 0 {
			t.Errorf("policy %s matched no request of the grid", name)
		}
	}
}

// gridRequest is one request of the grid, and what it is, for a failure.
type gridRequest struct {
	request
	what string
}

// gridRequests is the grid: every kind of gridKinds, each of its
// operations, with and without careplane's labels before and after, in
// each namespace (cluster-scoped kinds in none), as each identity, and a
// delete also as an item of a DeleteCollection (no name).
func gridRequests() []gridRequest {
	marked := map[string]string{"careplane.io/evidence": "INC-1", "careplane.io/retained": "true", "careplane.io/holds-evidence": "true",
		"careplane.io/data-of": "acme", "careplane.io/fenced": "true", "app.kubernetes.io/managed-by": "careplane",
		"careplane.io/environment": "acme", "careplane.io/site": "front", "careplane.io/recovery-point": "point-1"}
	labelSets := []map[string]string{nil, marked}
	deleting := metav1.Now()
	namespaces := []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "n"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "n", DeletionTimestamp: &deleting,
			Labels: map[string]string{"careplane.io/holds-evidence": "true", "careplane.io/fenced": "true", "careplane.io/retained": "true",
				"app.kubernetes.io/managed-by": "careplane", "careplane.io/environment": "acme", "careplane.io/site": "standby"},
			Annotations: map[string]string{"careplane.io/evidence-pods": "o", "careplane.io/evidence-ips": "10.0.0.5",
				"careplane.io/restore-id": "r", "careplane.io/standby-fence-id": "f"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"app.kubernetes.io/managed-by": "careplane", "careplane.io/site": "front"}}},
	}
	users := []user.DefaultInfo{
		{Name: "system:serviceaccount:kube-system:namespace-controller"},
		{Name: "system:serviceaccount:kube-system:generic-garbage-collector"},
		{Name: "system:serviceaccount:kube-system:endpointslice-controller"},
		{Name: "system:serviceaccount:kube-system:replicaset-controller"},
		{Name: "system:kube-controller-manager"},
		{Name: "system:kube-scheduler"},
		{Name: "system:node:node-1", Groups: []string{"system:nodes"}},
		{Name: manager},
		{Name: "responder", Groups: []string{"careplane:incident-responders"}},
		{Name: "system:serviceaccount:n:tenant-pipeline", Groups: []string{"system:serviceaccounts", "system:authenticated"}},
	}
	var out []gridRequest
	for _, k := range gridKinds() {
		for _, op := range k.ops {
			for _, newLabels := range labelSets {
				for _, oldLabels := range labelSets {
					if op == admission.Create && oldLabels != nil {
						continue
					}
					for ni, nsObj := range namespaces {
						if k.cluster && ni > 0 {
							continue
						}
						r := request{op: op, kind: k.kind, resource: k.resource, subresource: k.subresource, namespace: "n", namespaceObject: nsObj}
						if k.cluster {
							r.namespace, r.namespaceObject = "", nil
							if k.kind.Kind == "Namespace" {
								r.namespace = "n"
							}
						}
						if op != admission.Delete {
							r.object = k.object(newLabels)
						}
						if op == admission.Update || op == admission.Delete {
							r.old = k.object(oldLabels)
						}
						for _, u := range users {
							r.user, r.groups = u.Name, u.Groups
							for _, name := range []string{"o", ""} {
								if name == "" && op != admission.Delete {
									continue
								}
								r.name = name
								out = append(out, gridRequest{request: r, what: fmt.Sprintf("%s %s/%s by %s, namespace %d, named %v, labels before %v after %v",
									op, k.resource.Resource, k.subresource, u.Name, ni, name != "", oldLabels != nil, newLabels != nil)})
							}
						}
					}
				}
			}
		}
	}
	return out
}

// matches is the policy's matchConstraints by resource rule (its selectors
// aside: the grid's labels cover both sides of them).
func matches(p *admissionregistrationv1.ValidatingAdmissionPolicy, a admission.Attributes) bool {
	mc := p.Spec.MatchConstraints
	for _, r := range mc.ExcludeResourceRules {
		if (&rules.Matcher{Rule: r.RuleWithOperations, Attr: a}).Matches() {
			return false
		}
	}
	for _, r := range mc.ResourceRules {
		if (&rules.Matcher{Rule: r.RuleWithOperations, Attr: a}).Matches() {
			return true
		}
	}
	return false
}

// gridKind is one kind of request of the grid, and how to make its object.
type gridKind struct {
	kind        schema.GroupVersionKind
	resource    schema.GroupVersionResource
	subresource string
	cluster     bool
	ops         []admission.Operation
	object      func(labels map[string]string) runtime.Object
}

func gridKinds() []gridKind {
	c, u, d, x := admission.Create, admission.Update, admission.Delete, admission.Connect
	om := func(l map[string]string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: "o", Namespace: "n", Labels: l, Finalizers: []string{"f"}}
	}
	core := func(k, r string) (schema.GroupVersionKind, schema.GroupVersionResource) {
		return schema.GroupVersionKind{Version: "v1", Kind: k}, schema.GroupVersionResource{Version: "v1", Resource: r}
	}
	of := func(group, version, k, r string) (schema.GroupVersionKind, schema.GroupVersionResource) {
		return schema.GroupVersionKind{Group: group, Version: version, Kind: k}, schema.GroupVersionResource{Group: group, Version: version, Resource: r}
	}
	custom := func(apiVersion, k string, spec map[string]any) func(map[string]string) runtime.Object {
		return func(l map[string]string) runtime.Object {
			md := map[string]any{"name": "o"}
			if l != nil {
				ll := map[string]any{}
				for k, v := range l {
					ll[k] = v
				}
				md["labels"] = ll
			}
			return &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": k, "metadata": md, "spec": spec}}
		}
	}
	pod := func(l map[string]string) runtime.Object {
		return &corev1.Pod{ObjectMeta: om(l), Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	}
	port := int32(80)
	k := func(kind schema.GroupVersionKind, res schema.GroupVersionResource, sub string, cluster bool, ops []admission.Operation,
		object func(map[string]string) runtime.Object) gridKind {
		return gridKind{kind: kind, resource: res, subresource: sub, cluster: cluster, ops: ops, object: object}
	}
	podKind, pods := core("Pod", "pods")
	svcKind, svcs := core("Service", "services")
	epKind, eps := core("Endpoints", "endpoints")
	pvcKind, pvcs := core("PersistentVolumeClaim", "persistentvolumeclaims")
	secretKind, secrets := core("Secret", "secrets")
	quotaKind, quotas := core("ResourceQuota", "resourcequotas")
	nsKind, nss := core("Namespace", "namespaces")
	pvKind, pvs := core("PersistentVolume", "persistentvolumes")
	bindingKind, _ := core("Binding", "bindings")
	execKind, _ := core("PodExecOptions", "")
	proxyKind, _ := core("ServiceProxyOptions", "")
	sliceKind, sliceRes := of("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices")
	npKind, nps := of("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies")
	depKind, deps := of("apps", "v1", "Deployment", "deployments")
	scaleKind, _ := of("autoscaling", "v1", "Scale", "")
	evictionKind, _ := of("policy", "v1", "Eviction", "")
	tokenKind, _ := of("authentication.k8s.io", "v1", "TokenRequest", "")
	leaseKind, leases := of("coordination.k8s.io", "v1", "Lease", "leases")
	snapKind, snaps := of("snapshot.storage.k8s.io", "v1", "VolumeSnapshot", "volumesnapshots")
	contentKind, contents := of("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent", "volumesnapshotcontents")
	heKind, hes := of("careplane.io", "v1alpha1", "HealthEnvironment", "healthenvironments")
	frKind, frs := of("careplane.io", "v1alpha1", "FenceRequest", "fencerequests")
	cnpKind, cnps := of("policy.networking.k8s.io", "v1alpha2", "ClusterNetworkPolicy", "clusternetworkpolicies")
	_, serviceAccounts := core("ServiceAccount", "serviceaccounts")
	cud := []admission.Operation{c, u, d}
	return []gridKind{
		k(podKind, pods, "", false, cud, pod),
		k(podKind, pods, "status", false, []admission.Operation{u}, pod),
		k(podKind, pods, "ephemeralcontainers", false, []admission.Operation{u}, pod),
		k(bindingKind, pods, "binding", false, []admission.Operation{c}, func(map[string]string) runtime.Object { return &corev1.Binding{ObjectMeta: om(nil)} }),
		k(evictionKind, pods, "eviction", false, []admission.Operation{c}, func(map[string]string) runtime.Object { return &policyv1.Eviction{ObjectMeta: om(nil)} }),
		k(execKind, pods, "exec", false, []admission.Operation{x}, func(map[string]string) runtime.Object { return &corev1.PodExecOptions{} }),
		k(proxyKind, svcs, "proxy", false, []admission.Operation{x}, func(map[string]string) runtime.Object { return &corev1.ServiceProxyOptions{} }),
		k(svcKind, svcs, "", false, cud, func(l map[string]string) runtime.Object {
			return &corev1.Service{ObjectMeta: om(l), Spec: corev1.ServiceSpec{Selector: map[string]string{"careplane.io/evidence": "x"}}}
		}),
		k(svcKind, svcs, "status", false, []admission.Operation{u}, func(l map[string]string) runtime.Object { return &corev1.Service{ObjectMeta: om(l)} }),
		k(epKind, eps, "", false, cud, func(l map[string]string) runtime.Object {
			return &corev1.Endpoints{ObjectMeta: om(l), Subsets: []corev1.EndpointSubset{{Ports: []corev1.EndpointPort{{Port: 80}}}}} //nolint:staticcheck // what the endpoints controller writes
		}),
		k(sliceKind, sliceRes, "", false, cud, func(l map[string]string) runtime.Object {
			return &discoveryv1.EndpointSlice{ObjectMeta: om(l), AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Port: &port}}}
		}),
		k(npKind, nps, "", false, cud, func(l map[string]string) runtime.Object { return &networkingv1.NetworkPolicy{ObjectMeta: om(l)} }),
		k(pvcKind, pvcs, "", false, cud, func(l map[string]string) runtime.Object { return &corev1.PersistentVolumeClaim{ObjectMeta: om(l)} }),
		k(pvcKind, pvcs, "status", false, []admission.Operation{u}, func(l map[string]string) runtime.Object { return &corev1.PersistentVolumeClaim{ObjectMeta: om(l)} }),
		k(secretKind, secrets, "", false, cud, func(l map[string]string) runtime.Object { return &corev1.Secret{ObjectMeta: om(l)} }),
		k(quotaKind, quotas, "status", false, []admission.Operation{u}, func(l map[string]string) runtime.Object { return &corev1.ResourceQuota{ObjectMeta: om(l)} }),
		k(depKind, deps, "", false, cud, func(l map[string]string) runtime.Object { return &appsv1.Deployment{ObjectMeta: om(l)} }),
		k(scaleKind, deps, "scale", false, []admission.Operation{u}, func(l map[string]string) runtime.Object { return &autoscalingv1.Scale{ObjectMeta: om(l)} }),
		k(tokenKind, serviceAccounts, "token", false, []admission.Operation{c}, func(map[string]string) runtime.Object {
			return &authenticationv1.TokenRequest{ObjectMeta: om(nil)}
		}),
		k(leaseKind, leases, "", false, cud, func(l map[string]string) runtime.Object { return &coordinationv1.Lease{ObjectMeta: om(l)} }),
		k(snapKind, snaps, "", false, cud, custom("snapshot.storage.k8s.io/v1", "VolumeSnapshot", map[string]any{"source": map[string]any{"persistentVolumeClaimName": "d"}})),
		k(nsKind, nss, "", true, cud, func(l map[string]string) runtime.Object {
			return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: l}}
		}),
		k(nsKind, nss, "status", true, []admission.Operation{u}, func(l map[string]string) runtime.Object {
			return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: l}}
		}),
		k(nsKind, nss, "finalize", true, []admission.Operation{u}, func(l map[string]string) runtime.Object {
			return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: l}}
		}),
		k(pvKind, pvs, "", true, cud, func(l map[string]string) runtime.Object {
			return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "o", Labels: l}, Spec: corev1.PersistentVolumeSpec{PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain}}
		}),
		k(contentKind, contents, "", true, cud, custom("snapshot.storage.k8s.io/v1", "VolumeSnapshotContent", map[string]any{"deletionPolicy": "Retain", "driver": "d",
			"source": map[string]any{"volumeHandle": "h"}, "volumeSnapshotRef": map[string]any{"name": "s", "namespace": "n"}})),
		k(heKind, hes, "", true, cud, custom("careplane.io/v1alpha1", "HealthEnvironment", map[string]any{"isolation": map[string]any{"mode": "None"}})),
		k(heKind, hes, "status", true, []admission.Operation{u}, custom("careplane.io/v1alpha1", "HealthEnvironment", map[string]any{"isolation": map[string]any{"mode": "None"}})),
		k(frKind, frs, "", true, cud, custom("careplane.io/v1alpha1", "FenceRequest", map[string]any{})),
		k(cnpKind, cnps, "", true, cud, custom("policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy", map[string]any{"subject": map[string]any{"namespaces": map[string]any{}}})),
	}
}
