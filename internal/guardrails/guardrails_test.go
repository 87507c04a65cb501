package guardrails_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
)

const (
	manager          = "system:serviceaccount:careplane-system:careplane-manager"
	sliceController  = "system:serviceaccount:kube-system:endpointslice-controller"
	endpointsControl = "system:serviceaccount:kube-system:endpoint-controller"
	evidenceAccess   = "careplane-evidence-pod-access"
	managerBounds    = "careplane-manager-bounds"
	evidenceIP       = "10.0.0.5"
)

var (
	sliceKind      = schema.GroupVersionKind{Group: "discovery.k8s.io", Version: "v1", Kind: "EndpointSlice"}
	sliceResource  = schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
	endpointsKind  = schema.GroupVersionKind{Version: "v1", Kind: "Endpoints"}
	endpoints      = schema.GroupVersionResource{Version: "v1", Resource: "endpoints"}
	claimKind      = schema.GroupVersionKind{Version: "v1", Kind: "PersistentVolumeClaim"}
	claims         = schema.GroupVersionResource{Version: "v1", Resource: "persistentvolumeclaims"}
	namespaceKind  = schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}
	namespacesGVR  = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	serviceAccount = []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}
)

// primary is acme's primary namespace after a restore, with evidence pods
// in it (their addresses on it, as careplane writes them).
func primary() *corev1.Namespace {
	return &corev1.Namespace{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: "acme-primary",
			Labels: map[string]string{"app.kubernetes.io/managed-by": "careplane", "careplane.io/environment": "acme",
				"careplane.io/site": "primary", "careplane.io/holds-evidence": "true"},
			Annotations: map[string]string{"careplane.io/evidence-pods": "web-7d9-x", "careplane.io/evidence-ips": evidenceIP}},
	}
}

func slice(addresses ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		TypeMeta:    metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta:  metav1.ObjectMeta{Namespace: "acme-primary", Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, a := range addresses {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
	}
	return s
}

// TestAnEmptyEndpointSliceRoutesNowhere: the control plane empties a
// Service's slice when its last pod goes, and the API server gives
// admission its endpoints (no omitempty) as null. The evidence guard once
// failed to evaluate on that, and refused it, failing closed: the slice
// kept routing to pods its Service no longer selected.
func TestAnEmptyEndpointSliceRoutesNowhere(t *testing.T) {
	cases := []struct {
		what   string
		object *discoveryv1.EndpointSlice
		denied bool
	}{
		{"no endpoints, no ports", slice(), false},
		{"no endpoints, its ports kept", func() *discoveryv1.EndpointSlice {
			s := slice()
			port := int32(8080)
			s.Ports = []discoveryv1.EndpointPort{{Port: &port}}
			return s
		}(), false},
		{"the rebuilt pod's address", slice("10.0.0.9"), false},
		{"an evidence pod's address", slice("10.0.0.9", evidenceIP), true},
		{"an address not in canonical form", slice("010.0.0.5"), true},
	}
	for _, tc := range cases {
		t.Run(tc.what, func(t *testing.T) {
			wantDenied(t, evidenceAccess, request{op: admission.Update, kind: sliceKind, resource: sliceResource,
				namespace: "acme-primary", name: "web-abc", object: tc.object, old: slice("10.0.0.9"),
				user: sliceController, groups: serviceAccount, namespaceObject: primary()}, tc.denied)
		})
	}
}

// TestAnEmptyEndpointsObjectRoutesNowhere is the same for the Endpoints the
// endpoints controller writes.
func TestAnEmptyEndpointsObjectRoutesNowhere(t *testing.T) {
	full := &corev1.Endpoints{ //nolint:staticcheck // what the endpoints controller writes
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Endpoints"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "acme-primary", Name: "web"},
		Subsets:    []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "10.0.0.9"}}}}, //nolint:staticcheck // as above
	}
	empty := full.DeepCopy()
	empty.Subsets = nil
	notReadyOnly := full.DeepCopy()
	notReadyOnly.Subsets = []corev1.EndpointSubset{{NotReadyAddresses: []corev1.EndpointAddress{{IP: evidenceIP}}}} //nolint:staticcheck // as above
	for _, tc := range []struct {
		what   string
		object *corev1.Endpoints //nolint:staticcheck // as above
		denied bool
	}{{"no subsets", empty, false}, {"a rebuilt pod", full, false}, {"an evidence pod, not ready", notReadyOnly, true}} {
		t.Run(tc.what, func(t *testing.T) {
			wantDenied(t, evidenceAccess, request{op: admission.Update, kind: endpointsKind, resource: endpoints,
				namespace: "acme-primary", name: "web", object: tc.object, old: full,
				user: endpointsControl, groups: serviceAccount, namespaceObject: primary()}, tc.denied)
		})
	}
}

// TestTheManagerRestoresAClaimOnlyFromItsOwnNamespace: a claim the manager
// creates is a restore's, from a VolumeSnapshot of the same namespace. A
// dataSourceRef naming another namespace was admitted: the rule tested
// has(dataSourceRef.__namespace__), an escape that CRD schemas need and
// admission's objects do not have, so it was never true.
func TestTheManagerRestoresAClaimOnlyFromItsOwnNamespace(t *testing.T) {
	group := "snapshot.storage.k8s.io"
	other := "another-tenant"
	claim := func(ns *string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "acme-primary", Name: "records-restored"},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				DataSource:  &corev1.TypedLocalObjectReference{APIGroup: &group, Kind: "VolumeSnapshot", Name: "point-1"},
				DataSourceRef: &corev1.TypedObjectReference{APIGroup: &group, Kind: "VolumeSnapshot", Name: "point-1",
					Namespace: ns},
			},
		}
	}
	for _, tc := range []struct {
		what   string
		object *corev1.PersistentVolumeClaim
		denied bool
	}{{"from a snapshot of its namespace", claim(nil), false}, {"from a snapshot of another namespace", claim(&other), true}} {
		t.Run(tc.what, func(t *testing.T) {
			wantDenied(t, managerBounds, request{op: admission.Create, kind: claimKind, resource: claims,
				namespace: "acme-primary", name: "records-restored", object: tc.object,
				user: manager, groups: []string{"system:serviceaccounts", "system:serviceaccounts:careplane-system", "system:authenticated"},
				namespaceObject: primary()}, tc.denied)
		})
	}
}

// TestManagerBoundsLeavesARequestWithoutAUsernameAlone: careplane-manager-
// bounds matches every request in the cluster, and its match condition
// picks the manager's. The username is optional in a request's user info:
// read unguarded, its absence failed the condition, and failing closed the
// policy would refuse every such request, the manager's or not. (The
// policies that guard careplane's own objects may fail closed on one: an
// identity without a name is nobody they allow.)
func TestManagerBoundsLeavesARequestWithoutAUsernameAlone(t *testing.T) {
	ns := primary()
	v := evaluate(t, managerBounds, request{op: admission.Update, kind: namespaceKind, resource: namespacesGVR, name: ns.Name,
		object: ns, old: ns, groups: []string{"system:authenticated"}})
	if !v.admitted() {
		t.Errorf("a request without a username: denied %v, failed to evaluate %v", v.denied, v.failed)
	}
}

// TestADeleteCollectionIsToldByTheItemsName: kubectl delete --all (a
// DeleteCollection) is admitted item by item, with no name in the
// request. A refusal's message read the request's name, failed to
// evaluate, and the stressed engineer got the policy's expression instead
// of which object is kept and why.
func TestADeleteCollectionIsToldByTheItemsName(t *testing.T) {
	gitops := []string{"gitops-admins", "system:authenticated"}
	fenced := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "careplane.io/v1alpha1", "kind": "HealthEnvironment",
		"metadata": map[string]any{"name": "acme", "finalizers": []any{"careplane.io/fence"}},
		"spec":     map[string]any{"isolation": map[string]any{"mode": "Fenced", "ticket": "INC-1", "reason": "ransomware"}},
	}}
	evidenceClaim := &corev1.PersistentVolumeClaim{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "acme-primary", Name: "records-db-0",
			Labels: map[string]string{"careplane.io/evidence": "INC-1"}},
	}
	for _, tc := range []struct {
		policy, want string
		r            request
	}{{
		policy: "careplane-isolation-guard", want: "HealthEnvironment acme is fenced",
		r: request{op: admission.Delete, kind: schema.GroupVersionKind{Group: "careplane.io", Version: "v1alpha1", Kind: "HealthEnvironment"},
			resource: schema.GroupVersionResource{Group: "careplane.io", Version: "v1alpha1", Resource: "healthenvironments"},
			old:      fenced, user: "argocd", groups: gitops},
	}, {
		policy: "careplane-evidence-guard", want: "persistentvolumeclaims records-db-0 in namespace acme-primary",
		r: request{op: admission.Delete, kind: claimKind, resource: claims, namespace: "acme-primary",
			old: evidenceClaim, user: "argocd", groups: gitops, namespaceObject: primary()},
	}} {
		t.Run(tc.policy, func(t *testing.T) {
			v := evaluate(t, tc.policy, tc.r)
			if len(v.failed) > 0 || len(v.denied) == 0 {
				t.Fatalf("want a refusal: denied %v, failed to evaluate %v", v.denied, v.failed)
			}
			for _, m := range v.denied {
				if !strings.Contains(m, tc.want) {
					t.Errorf("the refusal does not say %q: %s", tc.want, m)
				}
			}
		})
	}
}

// TestTheCredentialsRevisionOfANamespaceWithEvidenceStays: a restored
// primary records on its Namespace the credentials revision it runs, which
// names its generated Secrets. Were it taken off, careplane would name them
// as before any restore again, the names the evidence pods of the first
// fence mount, and write new credentials there for the kubelet to serve
// them. While the namespace holds evidence only careplane and responders
// change it.
func TestTheCredentialsRevisionOfANamespaceWithEvidenceStays(t *testing.T) {
	const policy = "careplane-evidence-namespace-guard"
	restored := primary()
	restored.Annotations["careplane.io/credentials-revision"] = "2026-12-07T21:00:00.5Z"
	cases := []struct {
		what   string
		change func(*corev1.Namespace)
		user   string
		groups []string
		denied bool
	}{
		{"a GitOps tool takes it off", func(ns *corev1.Namespace) { delete(ns.Annotations, "careplane.io/credentials-revision") },
			"system:serviceaccount:argocd:argocd-application-controller", []string{"system:serviceaccounts", "system:authenticated"}, true},
		{"the cluster admin sets it back", func(ns *corev1.Namespace) { ns.Annotations["careplane.io/credentials-revision"] = "initial" },
			"kubernetes-admin", []string{"system:masters", "system:authenticated"}, true},
		{"careplane's next restore records its own", func(ns *corev1.Namespace) {
			ns.Annotations["careplane.io/credentials-revision"] = "2026-12-08T09:00:00Z"
		}, manager, serviceAccount, false},
		{"a GitOps tool labels the namespace", func(ns *corev1.Namespace) { ns.Labels["team"] = "111" },
			"system:serviceaccount:argocd:argocd-application-controller", []string{"system:serviceaccounts", "system:authenticated"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.what, func(t *testing.T) {
			changed := restored.DeepCopy()
			tc.change(changed)
			wantDenied(t, policy, request{op: admission.Update, kind: namespaceKind, resource: namespacesGVR,
				name: "acme-primary", object: changed, old: restored, user: tc.user, groups: tc.groups}, tc.denied)
		})
	}
}

// TestTheManagerOnlyLetsGoOfATenantsRoleBinding: the fence's clean-up of
// the standby deletes a tenant's RoleBinding that reads Secrets, and takes
// the finalizers off one being deleted (RBAC ignores a deletion under way,
// so it still grants until it is gone). That takes patch on RoleBindings,
// which RBAC would let the manager use to bind anyone to any role it holds
// itself; careplane-manager-bounds keeps it to the finalizers.
func TestTheManagerOnlyLetsGoOfATenantsRoleBinding(t *testing.T) {
	rbKind := schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"}
	rbs := schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}
	deleting := metav1.Now()
	held := &rbacv1.RoleBinding{
		TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "acme-primary", Name: "tenant-pipeline-edit", Finalizers: []string{"tenant.example/hold"},
			DeletionTimestamp: &deleting},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "tenant-pipeline"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "edit"},
	}
	let := held.DeepCopy()
	let.Finalizers = nil
	rebound := held.DeepCopy()
	rebound.Subjects = append(rebound.Subjects, rbacv1.Subject{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "attacker"})
	heldLonger := held.DeepCopy()
	heldLonger.Finalizers = append(heldLonger.Finalizers, "careplane.io/keep")
	relabelled := let.DeepCopy()
	relabelled.Labels = map[string]string{"team": "other"}
	owned := let.DeepCopy()
	owned.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Namespace", Name: "kube-system", UID: "u"}}
	role := &rbacv1.Role{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "acme-primary", Name: "tenant-role", Finalizers: []string{"tenant.example/hold"}},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}}}
	roleLet := role.DeepCopy()
	roleLet.Finalizers = nil
	widened := role.DeepCopy()
	widened.Rules = append(widened.Rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}})
	managerGroups := []string{"system:serviceaccounts", "system:serviceaccounts:careplane-system", "system:authenticated"}
	for _, tc := range []struct {
		what     string
		op       admission.Operation
		obj, old runtime.Object
		denied   bool
	}{
		{"its finalizers taken off", admission.Update, let, held, false},
		{"deleted", admission.Delete, nil, held, false},
		{"another subject bound", admission.Update, rebound, held, true},
		{"a finalizer added, holding it longer", admission.Update, heldLonger, held, true},
		{"relabelled", admission.Update, relabelled, held, true},
		{"given an owner", admission.Update, owned, held, true},
		{"created", admission.Create, rebound, nil, true},
		{"a Role's finalizers taken off", admission.Update, roleLet, role, false},
		{"a Role widened", admission.Update, widened, role, true},
	} {
		t.Run(tc.what, func(t *testing.T) {
			kind, resource, name := rbKind, rbs, held.Name
			if _, ok := tc.obj.(*rbacv1.Role); ok {
				kind, resource, name = rbKind.GroupVersion().WithKind("Role"), rbs.GroupVersion().WithResource("roles"), role.Name
			}
			wantDenied(t, managerBounds, request{op: tc.op, kind: kind, resource: resource, namespace: "acme-primary", name: name,
				object: tc.obj, old: tc.old, user: manager, groups: managerGroups, namespaceObject: primary()}, tc.denied)
		})
	}
}
