package build

import (
	corev1 "k8s.io/api/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// Labels and annotations careplane sets that v1alpha1 does not define.
const (
	// LabelAppName is the well-known app.kubernetes.io/name label; careplane
	// sets it to the service name on per-service objects.
	LabelAppName = "app.kubernetes.io/name"
	// LabelGenerated marks the Secrets careplane generated (value "true"),
	// so credential revocation can find exactly those.
	LabelGenerated = "careplane.io/generated"
	// LabelActiveSite on a front EndpointSlice names the site ("primary" or
	// "standby") its endpoints point at.
	LabelActiveSite = "careplane.io/active-site"
	// AnnotationCredentialsRevision on a pod template records the revision of
	// the service's credentials; changing it rolls the pods.
	AnnotationCredentialsRevision = "careplane.io/credentials-revision"
	// EndpointSliceManagedBy is the endpointslice.kubernetes.io/managed-by
	// value of careplane's EndpointSlices, which keeps the EndpointSlice
	// controllers' hands off them.
	EndpointSliceManagedBy = "careplane.io"
)

// Pod Security admission labels and the level careplane enforces.
const (
	// LabelPodSecurityEnforce is the Pod Security admission enforce label.
	LabelPodSecurityEnforce = "pod-security.kubernetes.io/enforce"
	// LabelPodSecurityEnforceVersion pins the enforced policy version.
	LabelPodSecurityEnforceVersion = "pod-security.kubernetes.io/enforce-version"
	// LabelPodSecurityWarn is the Pod Security admission warn label.
	LabelPodSecurityWarn = "pod-security.kubernetes.io/warn"
	// LabelPodSecurityAudit is the Pod Security admission audit label.
	LabelPodSecurityAudit = "pod-security.kubernetes.io/audit"
	// PodSecurityRestricted is the Pod Security level of every careplane
	// namespace.
	PodSecurityRestricted = "restricted"
	// PodSecurityLatest is the Pod Security policy version careplane enforces.
	PodSecurityLatest = "latest"
)

// The identity the pods of every service run as. 65532 is the conventional
// "nonroot" user of distroless images.
const (
	// RunAsUser is the UID of every careplane container.
	RunAsUser int64 = 65532
	// RunAsGroup is the primary GID of every careplane container, and the
	// fsGroup that makes mounted secrets readable to it.
	RunAsGroup int64 = 65532
)

// Labels returns the labels every careplane object of env carries:
// app.kubernetes.io/managed-by, careplane.io/environment and, when site is
// not empty, careplane.io/site.
func Labels(env *v1alpha1.HealthEnvironment, site string) map[string]string {
	l := map[string]string{
		v1alpha1.LabelManagedBy:   v1alpha1.ManagedByValue,
		v1alpha1.LabelEnvironment: env.Name,
	}
	if site != "" {
		l[v1alpha1.LabelSite] = site
	}
	return l
}

// ServiceLabels returns Labels plus careplane.io/service and
// app.kubernetes.io/name set to svc: the labels of per-service objects and
// of their pods.
func ServiceLabels(env *v1alpha1.HealthEnvironment, site, svc string) map[string]string {
	l := Labels(env, site)
	l[v1alpha1.LabelService] = svc
	l[LabelAppName] = svc
	return l
}

// SelectorLabels returns the labels that select the pods of service svc
// within one site namespace: careplane.io/environment and
// careplane.io/service. A Deployment's selector is immutable, so it stays
// this minimal.
func SelectorLabels(env *v1alpha1.HealthEnvironment, svc string) map[string]string {
	return map[string]string{
		v1alpha1.LabelEnvironment: env.Name,
		v1alpha1.LabelService:     svc,
	}
}

// OwnerReference returns the controller owner reference to env that every
// child carries. env is cluster-scoped, so it may own children in any
// namespace as well as cluster-scoped ones.
func OwnerReference(env *v1alpha1.HealthEnvironment) *metav1ac.OwnerReferenceApplyConfiguration {
	return metav1ac.OwnerReference().
		WithAPIVersion(v1alpha1.GroupVersion.String()).
		WithKind("HealthEnvironment").
		WithName(env.Name).
		WithUID(env.UID).
		WithController(true).
		WithBlockOwnerDeletion(true)
}

// restrictedNamespaceLabels returns the Pod Security labels of every
// careplane namespace.
func restrictedNamespaceLabels() map[string]string {
	return map[string]string{
		LabelPodSecurityEnforce:        PodSecurityRestricted,
		LabelPodSecurityEnforceVersion: PodSecurityLatest,
		LabelPodSecurityWarn:           PodSecurityRestricted,
		LabelPodSecurityAudit:          PodSecurityRestricted,
	}
}

// tcp is the protocol of every port careplane opens.
const tcp = corev1.ProtocolTCP
