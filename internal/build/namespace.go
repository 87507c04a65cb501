package build

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// Default requests the LimitRange gives containers that declare none, so
// that the ResourceQuota (which bounds requests) admits them.
const (
	// DefaultCPURequest is the CPU request of a container without one.
	DefaultCPURequest = "100m"
	// DefaultMemoryRequest is the memory request of a container without one.
	DefaultMemoryRequest = "128Mi"
)

// Namespace returns the namespace name of env with site label site (one of
// SiteLabelFront, SiteLabelPrimary, SiteLabelStandby). Every careplane
// namespace enforces, warns and audits Pod Security "restricted" at the
// latest version. The managed-by label is what marks it as careplane's:
// careplane never adopts a namespace without it.
func Namespace(env *v1alpha1.HealthEnvironment, name, site string) *corev1ac.NamespaceApplyConfiguration {
	return corev1ac.Namespace(name).
		WithLabels(Labels(env, site)).
		WithLabels(restrictedNamespaceLabels()).
		WithOwnerReferences(OwnerReference(env))
}

// ResourceQuota returns the ResourceQuota of site namespace namespace, built
// from spec.quota: hard limits on requests.cpu, requests.memory and pods,
// each only when set (an unset quota field means no limit on that
// resource). With every field unset the quota has no hard limits; it is
// still returned so that applying it removes limits set before.
func ResourceQuota(env *v1alpha1.HealthEnvironment, namespace string) *corev1ac.ResourceQuotaApplyConfiguration {
	q := env.Spec.Quota
	hard := corev1.ResourceList{}
	if q.CPU != nil {
		hard[corev1.ResourceRequestsCPU] = q.CPU.DeepCopy()
	}
	if q.Memory != nil {
		hard[corev1.ResourceRequestsMemory] = q.Memory.DeepCopy()
	}
	if q.Pods != nil {
		hard[corev1.ResourcePods] = *resource.NewQuantity(int64(*q.Pods), resource.DecimalSI)
	}
	spec := corev1ac.ResourceQuotaSpec()
	if len(hard) > 0 {
		spec.WithHard(hard)
	}
	return corev1ac.ResourceQuota(ResourceQuotaName, namespace).
		WithLabels(Labels(env, siteLabelOfNamespace(env, namespace))).
		WithOwnerReferences(OwnerReference(env)).
		WithSpec(spec)
}

// LimitRange returns the LimitRange of site namespace namespace: containers
// that declare no requests get DefaultCPURequest and DefaultMemoryRequest, so
// the ResourceQuota admits them. It sets no default limits.
func LimitRange(env *v1alpha1.HealthEnvironment, namespace string) *corev1ac.LimitRangeApplyConfiguration {
	return corev1ac.LimitRange(LimitRangeName, namespace).
		WithLabels(Labels(env, siteLabelOfNamespace(env, namespace))).
		WithOwnerReferences(OwnerReference(env)).
		WithSpec(corev1ac.LimitRangeSpec().WithLimits(
			corev1ac.LimitRangeItem().
				WithType(corev1.LimitTypeContainer).
				WithDefaultRequest(corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse(DefaultCPURequest),
					corev1.ResourceMemory: resource.MustParse(DefaultMemoryRequest),
				}),
		))
}
