package build

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// Names and annotations of the fence.
const (
	// FencePolicyName names the deny-all NetworkPolicy a fence writes into
	// the primary namespace. Its name marks nothing: the fence is recorded
	// on the namespace (package fence), and a policy of this name is
	// written whole by every fence.
	FencePolicyName = "careplane-fence"
	// FenceQuotaName names the ResourceQuota a fence writes into the
	// primary namespace with its deny policy: it admits no new pod.
	FenceQuotaName = "careplane-fence"
	// EvidencePolicyName names the NetworkPolicy that keeps evidence pods
	// isolated once the fence is lifted, until they are purged.
	EvidencePolicyName = "careplane-evidence"
	// LabelEvidenceService on an evidence pod names the service it ran.
	LabelEvidenceService = "careplane.io/evidence-service"
	// LabelHoldsEvidence ("true") on a site namespace says evidence pods
	// run in it, and AnnotationEvidencePods names them, comma-separated:
	// an eviction, exec, attach, port-forward or proxy request carries no
	// pod labels, so the guardrail that keeps them to responders reads the
	// names here, on an object the tenant cannot write.
	LabelHoldsEvidence     = "careplane.io/holds-evidence"
	AnnotationEvidencePods = "careplane.io/evidence-pods"
	// AnnotationEvidenceIPs on the same namespace lists the evidence pods'
	// addresses, comma-separated: an Endpoints object or EndpointSlice
	// names a pod by its address alone.
	AnnotationEvidenceIPs = "careplane.io/evidence-ips"
	// AnnotationEvidenceLabels on an evidence pod holds, as JSON, the
	// labels the fence took off it: an evidence pod keeps only
	// careplane.io/evidence, careplane.io/environment and
	// careplane.io/evidence-service, so that no selector of anyone else's
	// (a Service's, a workload controller's) matches it by a label it ran
	// with.
	AnnotationEvidenceLabels = "careplane.io/evidence-labels"
)

// FencePolicy returns the fence's deny-all NetworkPolicy: it selects every
// pod of the namespace, for ingress and egress, and allows nothing but
// ingress from the namespaces spec.isolation.forensicsFrom names, by their
// kubernetes.io/metadata.name (none when unset, when it is not in a form the
// CRD accepts, or when withForensics is false), never from namespace itself.
func FencePolicy(env *v1alpha1.HealthEnvironment, namespace string, withForensics bool) *networkingv1ac.NetworkPolicyApplyConfiguration {
	return isolationPolicy(env, namespace, FencePolicyName, metav1ac.LabelSelector(), withForensics)
}

// FenceQuota returns the ResourceQuota of a fenced namespace: no new pod is
// admitted (pods: 0), whoever asks. The pods already running are not
// affected (a quota is checked at create), so the evidence stays; what it
// stops is the ReplicaSets starting replacements for the pods the fence
// detaches as evidence, which the scale-down would only delete again, and
// anything else starting a pod behind the fence. A namespace's quotas add
// up: spec.quota's own ResourceQuota is left as it is, and a restore
// deletes this one before the rebuilt pods are started. It has no owner:
// garbage collection of a deleted environment must not take it.
func FenceQuota(env *v1alpha1.HealthEnvironment, namespace string) *corev1ac.ResourceQuotaApplyConfiguration {
	return corev1ac.ResourceQuota(FenceQuotaName, namespace).
		WithLabels(Labels(env, siteLabelOfNamespace(env, namespace))).
		WithSpec(corev1ac.ResourceQuotaSpec().WithHard(corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")}))
}

// EvidencePolicy returns the NetworkPolicy that keeps evidence pods (pods
// labelled careplane.io/evidence) isolated after a restore: no egress, and
// ingress only from the forensics namespaces other than namespace.
func EvidencePolicy(env *v1alpha1.HealthEnvironment, namespace string) *networkingv1ac.NetworkPolicyApplyConfiguration {
	sel := metav1ac.LabelSelector().WithMatchExpressions(metav1ac.LabelSelectorRequirement().
		WithKey(v1alpha1.LabelEvidence).WithOperator(metav1.LabelSelectorOpExists))
	return isolationPolicy(env, namespace, EvidencePolicyName, sel, true)
}

func isolationPolicy(env *v1alpha1.HealthEnvironment, namespace, name string, pods *metav1ac.LabelSelectorApplyConfiguration, withForensics bool) *networkingv1ac.NetworkPolicyApplyConfiguration {
	spec := networkingv1ac.NetworkPolicySpec().
		WithPodSelector(pods).
		WithPolicyTypes(networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress)
	if names := forensicsNamespaces(env, namespace); withForensics && len(names) > 0 {
		// By name, the label only the API server sets: never a selector
		// from the spec, which could match namespaces a tenant labels.
		spec.WithIngress(networkingv1ac.NetworkPolicyIngressRule().
			WithFrom(networkingv1ac.NetworkPolicyPeer().WithNamespaceSelector(metav1ac.LabelSelector().
				WithMatchExpressions(metav1ac.LabelSelectorRequirement().
					WithKey(corev1.LabelMetadataName).WithOperator(metav1.LabelSelectorOpIn).WithValues(names...)))))
	}
	// No owner: garbage collection of a deleted environment must not lift
	// the isolation of its fence or its evidence.
	return networkingv1ac.NetworkPolicy(name, namespace).
		WithLabels(Labels(env, siteLabelOfNamespace(env, namespace))).
		WithSpec(spec)
}

// forensicsNamespaces are the namespaces spec.isolation.forensicsFrom names,
// without namespace itself: the exception is for investigators, not for the
// isolated pods to reach each other.
func forensicsNamespaces(env *v1alpha1.HealthEnvironment, namespace string) []string {
	return slices.DeleteFunc(env.Spec.Isolation.ForensicsNamespaces(), func(n string) bool { return n == namespace })
}

// notEvidence selects every pod that is not evidence.
func notEvidence() *metav1ac.LabelSelectorApplyConfiguration {
	return metav1ac.LabelSelector().WithMatchExpressions(metav1ac.LabelSelectorRequirement().
		WithKey(v1alpha1.LabelEvidence).WithOperator(metav1.LabelSelectorOpDoesNotExist))
}
