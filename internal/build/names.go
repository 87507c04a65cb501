package build

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// Site label values: the value of v1alpha1.LabelSite on careplane's objects.
const (
	// SiteLabelFront labels objects of the front namespace (the stable,
	// selector-less Services clients call, and the known-good revisions).
	SiteLabelFront = "front"
	// SiteLabelPrimary labels objects of the primary site.
	SiteLabelPrimary = "primary"
	// SiteLabelStandby labels objects of the standby site.
	SiteLabelStandby = "standby"
)

// Namespace name suffixes of the site namespaces.
const (
	// PrimarySuffix is appended to the environment name to name the primary
	// namespace.
	PrimarySuffix = "-primary"
	// StandbySuffix is appended to the environment name to name the standby
	// namespace.
	StandbySuffix = "-standby"
)

// Names of the fixed objects careplane writes into every site namespace.
const (
	// ResourceQuotaName names the ResourceQuota built from spec.quota.
	ResourceQuotaName = "careplane-quota"
	// LimitRangeName names the LimitRange supplying default requests.
	LimitRangeName = "careplane-defaults"
	// DefaultDenyPolicyName names the NetworkPolicy denying all ingress and
	// egress of every pod in a site namespace.
	DefaultDenyPolicyName = "default-deny"
	// AllowDNSPolicyName names the NetworkPolicy letting every pod of a site
	// namespace query the cluster DNS.
	AllowDNSPolicyName = "allow-dns"
	// ServicePolicyPrefix prefixes the per-service NetworkPolicy names; see
	// ServicePolicyName.
	ServicePolicyPrefix = "svc-"
	// FrontEndpointSliceSuffix is appended to a service name to name its
	// EndpointSlice in the front namespace.
	FrontEndpointSliceSuffix = "-careplane"
	// PortName names the one port of every service: the container port, the
	// Service port and the EndpointSlice port.
	PortName = "http"
)

// Names are the namespaces of one environment.
type Names struct {
	// Front holds the stable Services clients call: <env>.
	Front string
	// Primary holds the primary site: <env>-primary.
	Primary string
	// Standby holds the standby site: <env>-standby, or "" when
	// spec.failover.standby is None.
	Standby string
}

// ForSite returns the namespace of site, or "" for an unknown site or for
// the standby of an environment without one.
func (n Names) ForSite(site v1alpha1.Site) string {
	switch site {
	case v1alpha1.SitePrimary:
		return n.Primary
	case v1alpha1.SiteStandby:
		return n.Standby
	default:
		return ""
	}
}

// NamespaceNames returns the namespaces of env. Standby is empty when env
// runs no standby site.
func NamespaceNames(env *v1alpha1.HealthEnvironment) Names {
	n := Names{
		Front:   FrontNamespace(env),
		Primary: SiteNamespace(env, v1alpha1.SitePrimary),
	}
	if HasStandby(env) {
		n.Standby = SiteNamespace(env, v1alpha1.SiteStandby)
	}
	return n
}

// HasStandby reports whether env runs a standby site (spec.failover.standby
// is Warm or Cold). An unset mode counts as None, its default.
func HasStandby(env *v1alpha1.HealthEnvironment) bool {
	m := env.Spec.Failover.Standby
	return m != "" && m != v1alpha1.StandbyNone
}

// FrontNamespace returns the front namespace of env: its name.
func FrontNamespace(env *v1alpha1.HealthEnvironment) string {
	return env.Name
}

// SiteNamespace returns the namespace site would use in env, whether or not
// env runs that site: <env>-primary or <env>-standby.
func SiteNamespace(env *v1alpha1.HealthEnvironment, site v1alpha1.Site) string {
	if site == v1alpha1.SiteStandby {
		return env.Name + StandbySuffix
	}
	return env.Name + PrimarySuffix
}

// SiteLabel returns the careplane.io/site label value of site: "primary" or
// "standby" (the lower-cased site name for any future site).
func SiteLabel(site v1alpha1.Site) string {
	switch site {
	case v1alpha1.SitePrimary:
		return SiteLabelPrimary
	case v1alpha1.SiteStandby:
		return SiteLabelStandby
	default:
		return strings.ToLower(string(site))
	}
}

// siteLabelOfNamespace returns the site label value of one of env's
// namespaces, or "" when namespace is not one of them.
func siteLabelOfNamespace(env *v1alpha1.HealthEnvironment, namespace string) string {
	switch namespace {
	case FrontNamespace(env):
		return SiteLabelFront
	case SiteNamespace(env, v1alpha1.SitePrimary):
		return SiteLabelPrimary
	case SiteNamespace(env, v1alpha1.SiteStandby):
		return SiteLabelStandby
	default:
		return ""
	}
}

// ServicePolicyName returns the name of the NetworkPolicy of service svc:
// svc-<svc>.
func ServicePolicyName(svc string) string {
	return ServicePolicyPrefix + svc
}

// GeneratedSecretName returns the name of generated secret name of service
// svc: <svc>.<name>. Both parts are DNS labels, which have no dots, so the
// names of different services' secrets can never collide (with a '-',
// service "call" with secret "handling-key" and service "call-handling" with
// secret "key" would share one Secret).
func GeneratedSecretName(svc, name string) string {
	return svc + "." + name
}

// GeneratedSecretObjectName returns the name of the Secret that holds
// generated secret name of service svc on site at credentials revision rev.
//
// In the primary, each revision's credentials are Secrets of their own,
// <svc>.<name>.<hash of rev> (<svc>.<name> before any rotation): a pod names
// its Secrets when it is created and the kubelet serves it whatever Secret
// has that name, so a pod made before a restore (an evidence pod, a pod of
// the fenced template, one forged with a controller reference) is never
// served the credentials the restore rotated. The standby's are rotated in
// place, under <svc>.<name>: it serves through a fence, and the one pod of a
// one-replica StatefulSet there is not rolled (it cannot surge) but has the
// kubelet update its files.
func GeneratedSecretObjectName(site v1alpha1.Site, svc, name, rev string) string {
	base := GeneratedSecretName(svc, name)
	if site != v1alpha1.SitePrimary || !Rotated(rev) {
		return base
	}
	sum := sha256.Sum256([]byte(rev))
	return base + "." + hex.EncodeToString(sum[:])[:revisionHashLen]
}

// InitialCredentials is the credentials revision of a workload whose
// credentials no fence or restore has rotated.
const InitialCredentials = "initial"

// PrimaryCredentials is the credentials revision the primary site runs, as
// its Namespace ns records it (AnnotationCredentialsRevision, written by the
// restore that lifted the last fence), or InitialCredentials: every
// workload there runs it, and every generated Secret there is named by it.
// The Namespace's, where the tenant does not write, not each workload's own,
// which a replaced or re-annotated workload would lose.
func PrimaryCredentials(ns metav1.Object) string {
	if ns != nil {
		if rev := ns.GetAnnotations()[AnnotationCredentialsRevision]; rev != "" {
			return rev
		}
	}
	return InitialCredentials
}

// Rotated says credentials revision rev is one a fence or restore rotated
// the credentials to.
func Rotated(rev string) bool { return rev != "" && rev != InitialCredentials }

// revisionHashLen is how many hex digits of a revision's hash a generated
// Secret's name carries: 40 bits, for names that only one environment's
// revisions share.
const revisionHashLen = 10

// IsGeneratedSecretObject says a Secret named object holds generated secret
// name of service svc at some credentials revision (GeneratedSecretObjectName):
// <svc>.<name>, or that and a dot and the hash's hex digits. The parts of a
// name are DNS labels, which have no dots; another suffix is someone else's
// Secret (<svc>.<name>.bak).
func IsGeneratedSecretObject(object, svc, name string) bool {
	rest, ok := strings.CutPrefix(object, GeneratedSecretName(svc, name))
	if !ok || rest == "" {
		return ok
	}
	hash, ok := strings.CutPrefix(rest, ".")
	return ok && len(hash) == revisionHashLen && strings.Trim(hash, "0123456789abcdef") == ""
}

// FrontEndpointSliceName returns the name of the EndpointSlice careplane
// writes for service svc in the front namespace: <svc>-careplane.
func FrontEndpointSliceName(svc string) string {
	return svc + FrontEndpointSliceSuffix
}
