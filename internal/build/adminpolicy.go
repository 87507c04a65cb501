package build

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/careplane/careplane/api/v1alpha1"
)

// The admin-tier fence policy: a cluster-scoped policy of SIG Network's
// network-policy-api (sigs.k8s.io/network-policy-api) that a fence writes
// beside its NetworkPolicy when the cluster serves one of the two APIs. Its
// rules are evaluated before any NetworkPolicy, so an allow a tenant (or
// anyone with rights in the fenced namespace) adds cannot widen the fence.
// careplane does not import the module: the objects are unstructured, and
// the field names follow the CRDs of network-policy-api v0.2.0
// (ClusterNetworkPolicy) and v0.1.7 (AdminNetworkPolicy), which
// test/e2e/testdata/network-policy-api holds.

// AdminFencePriority is the priority of every admin-tier fence policy: 0,
// the highest precedence both APIs allow (0–1000, lower wins), so that no
// other admin-tier policy can accept a fenced pod's traffic before the
// fence denies it. It is within 0–99, the range OVN-Kubernetes implements.
// The fences of different environments share it safely: their subjects are
// disjoint namespaces and they only deny (or pass). A cluster
// administrator's policy at priority 0 that matches a fenced pod ties with
// the fence, and the APIs leave ties undefined: keep 0 for careplane.
const AdminFencePriority = 0

// AdminFencePolicyPrefix prefixes the name of the admin-tier fence policy of
// an environment; see AdminFencePolicyName.
const AdminFencePolicyPrefix = "careplane-fence-"

// The rule names of the admin-tier fence policy, shown by network plugins in
// their logs and status.
const (
	AdminRuleForensics = "careplane-forensics"
	AdminRuleDenyAll   = "careplane-deny-all"
)

// The two admin-tier policy APIs, in the group policy.networking.k8s.io.
var (
	// ClusterNetworkPolicyGVK is ClusterNetworkPolicy v1alpha2, whose tier
	// Admin is evaluated before NetworkPolicies (network-policy-api v0.2.0
	// and later). It replaces AdminNetworkPolicy.
	ClusterNetworkPolicyGVK = schema.GroupVersionKind{Group: "policy.networking.k8s.io", Version: "v1alpha2", Kind: "ClusterNetworkPolicy"}
	// AdminNetworkPolicyGVK is AdminNetworkPolicy v1alpha1
	// (network-policy-api v0.1.x), evaluated before NetworkPolicies.
	AdminNetworkPolicyGVK = schema.GroupVersionKind{Group: "policy.networking.k8s.io", Version: "v1alpha1", Kind: "AdminNetworkPolicy"}
)

// AdminFenceKind is one API an admin-tier fence policy can be written with.
type AdminFenceKind struct {
	// GVK is the kind the policy is written as.
	GVK schema.GroupVersionKind
	// Build returns the fence policy of env's fenced namespace; see
	// AdminFencePolicy.
	Build func(env *v1alpha1.HealthEnvironment, namespace string, denyNetworks bool) *unstructured.Unstructured
}

// AdminFenceKinds are the admin-tier policy APIs a fence writes with, most
// preferred first: a fence writes one, the first the cluster serves.
var AdminFenceKinds = []AdminFenceKind{
	{GVK: ClusterNetworkPolicyGVK, Build: ClusterNetworkPolicy},
	{GVK: AdminNetworkPolicyGVK, Build: AdminNetworkPolicy},
}

// AdminFencePolicyName returns the name of env's admin-tier fence policy:
// careplane-fence-<env>. It is cluster-scoped, so the name carries the
// environment.
func AdminFencePolicyName(env *v1alpha1.HealthEnvironment) string {
	return AdminFencePolicyPrefix + env.Name
}

// ClusterNetworkPolicy returns the admin-tier fence policy of env's fenced
// namespace as a ClusterNetworkPolicy v1alpha2 in tier Admin; see
// AdminFencePolicy for its rules.
func ClusterNetworkPolicy(env *v1alpha1.HealthEnvironment, namespace string, denyNetworks bool) *unstructured.Unstructured {
	u := AdminFencePolicy(ClusterNetworkPolicyGVK, env, namespace, denyNetworks)
	u.Object["spec"].(map[string]any)["tier"] = "Admin"
	return u
}

// AdminNetworkPolicy returns the admin-tier fence policy of env's fenced
// namespace as an AdminNetworkPolicy v1alpha1; see AdminFencePolicy for its
// rules.
func AdminNetworkPolicy(env *v1alpha1.HealthEnvironment, namespace string, denyNetworks bool) *unstructured.Unstructured {
	return AdminFencePolicy(AdminNetworkPolicyGVK, env, namespace, denyNetworks)
}

// AdminFencePolicy returns the admin-tier fence policy of the fenced
// namespace of env, as kind gvk (the two APIs share these fields; a
// ClusterNetworkPolicy adds its tier). Its subject is every pod of the
// namespace, by its kubernetes.io/metadata.name label, at
// AdminFencePriority, and:
//
//   - ingress from the namespaces spec.isolation.forensicsFrom selects is
//     passed to the NetworkPolicy tier, where the fence's NetworkPolicy
//     decides: the admin tier never allows what the namespaced fence denies
//     (the fence drops the forensics exception if it is rejected);
//   - every other ingress from a pod is denied (neither API can name
//     sources outside the cluster in ingress rules: that traffic stays with
//     the NetworkPolicy tier, where the fence denies it);
//   - all egress is denied: to every pod and, when denyNetworks is set, to
//     every address (0.0.0.0/0 and ::/0). AdminNetworkPolicy CRDs of the
//     standard channel before v0.1.7 have no networks peer and reject it.
//
// Pass and Deny mean the same in both APIs. The policy carries careplane's
// labels and no owner reference: garbage collection of a deleted
// environment must not lift its fence. A restore deletes it.
func AdminFencePolicy(gvk schema.GroupVersionKind, env *v1alpha1.HealthEnvironment, namespace string, denyNetworks bool) *unstructured.Unstructured {
	var ingress []any
	if names := forensicsNamespaces(env, namespace); len(names) > 0 {
		// By name, as the namespaced fence admits them: one rule for both.
		values := make([]any, len(names))
		for i, n := range names {
			values[i] = n
		}
		ingress = append(ingress, map[string]any{
			"name":   AdminRuleForensics,
			"action": "Pass",
			"from": []any{map[string]any{"namespaces": map[string]any{"matchExpressions": []any{map[string]any{
				"key": corev1.LabelMetadataName, "operator": "In", "values": values}}}}},
		})
	}
	ingress = append(ingress, map[string]any{
		"name":   AdminRuleDenyAll,
		"action": "Deny",
		"from":   []any{map[string]any{"namespaces": map[string]any{}}},
	})
	to := []any{map[string]any{"namespaces": map[string]any{}}}
	if denyNetworks {
		to = append(to, map[string]any{"networks": []any{"0.0.0.0/0", "::/0"}})
	}
	egress := []any{map[string]any{
		"name":   AdminRuleDenyAll,
		"action": "Deny",
		"to":     to,
	}}

	u := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"priority": int64(AdminFencePriority),
			"subject": map[string]any{"namespaces": map[string]any{
				"matchLabels": map[string]any{corev1.LabelMetadataName: namespace},
			}},
			"ingress": ingress,
			"egress":  egress,
		},
	}}
	u.SetGroupVersionKind(gvk)
	u.SetName(AdminFencePolicyName(env))
	u.SetLabels(Labels(env, siteLabelOfNamespace(env, namespace)))
	return u
}
