package fence

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/ssa"
)

// DenyPolicy is the fence's deny-all NetworkPolicy of env's primary
// namespace, whole: written with every field, so that nothing another
// writer put in a policy of that name survives. It has no owner: garbage
// collection of a deleted environment must not take the fence with it.
func DenyPolicy(env *v1alpha1.HealthEnvironment, withForensics bool) *networkingv1.NetworkPolicy {
	pol := &networkingv1.NetworkPolicy{}
	mustConvert(build.FencePolicy(env, build.SiteNamespace(env, v1alpha1.SitePrimary), withForensics), pol)
	return pol
}

// Quota is the fence's ResourceQuota of env's primary namespace (pods: 0),
// whole and without an owner, like DenyPolicy.
func Quota(env *v1alpha1.HealthEnvironment) *corev1.ResourceQuota {
	q := &corev1.ResourceQuota{}
	mustConvert(build.FenceQuota(env, build.SiteNamespace(env, v1alpha1.SitePrimary)), q)
	return q
}

// IsDenyPolicy says cur is the fence's deny policy as desired: the same spec,
// exactly careplane's labels, no annotation and no owner. Only then is it
// left as it is; anything else is written whole again. The name proves
// nothing: a tenant can create a policy of any name before the freeze.
func IsDenyPolicy(cur, want *networkingv1.NetworkPolicy) bool {
	return cur.DeletionTimestamp == nil && equality.Semantic.DeepEqual(cur.Spec, want.Spec) &&
		equality.Semantic.DeepEqual(cur.Labels, want.Labels) && len(cur.Annotations) == 0 && len(cur.OwnerReferences) == 0
}

// IsQuota says cur is the fence's quota as desired (see IsDenyPolicy).
func IsQuota(cur, want *corev1.ResourceQuota) bool {
	return cur.DeletionTimestamp == nil && equality.Semantic.DeepEqual(cur.Spec, want.Spec) &&
		equality.Semantic.DeepEqual(cur.Labels, want.Labels) && len(cur.Annotations) == 0 && len(cur.OwnerReferences) == 0
}

// mustConvert turns an apply configuration into its typed object. The
// builders' output always converts; a failure is a bug.
func mustConvert(from, to any) {
	if err := ssa.Typed(from, to); err != nil {
		panic("fence: converting a built object: " + err.Error())
	}
}
