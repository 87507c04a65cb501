package build

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// The cluster DNS every pod may query.
const (
	// DNSNamespace is the namespace of the cluster DNS.
	DNSNamespace = "kube-system"
	// DNSPodLabel and DNSPodLabelValue select the cluster DNS pods.
	DNSPodLabel = "k8s-app"
	// DNSPodLabelValue is the value of DNSPodLabel on the cluster DNS pods.
	DNSPodLabelValue = "kube-dns"
	// DNSPort is the port of the cluster DNS, over UDP and TCP.
	DNSPort int32 = 53
)

// ServicesForSite returns the services of env's spec that run on site: all
// of them on the primary, only the critical ones on the standby. The result
// is sorted by name. It does not check that env runs a standby.
func ServicesForSite(env *v1alpha1.HealthEnvironment, site v1alpha1.Site) []v1alpha1.Service {
	return SiteServices(env.Spec.Services, site)
}

// SiteServices returns those of services that run on site (all on the
// primary, the critical ones on the standby), sorted by name. Use it with
// service templates from a revision, which is what a standby or a restore
// runs.
func SiteServices(services []v1alpha1.Service, site v1alpha1.Site) []v1alpha1.Service {
	out := make([]v1alpha1.Service, 0, len(services))
	for _, s := range services {
		if site == v1alpha1.SiteStandby && !s.Critical {
			continue
		}
		out = append(out, s)
	}
	slices.SortStableFunc(out, func(a, b v1alpha1.Service) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// NetworkPolicies returns the NetworkPolicies of site namespace namespace for
// the services of env's spec that run on site. See NetworkPoliciesFor.
func NetworkPolicies(env *v1alpha1.HealthEnvironment, site v1alpha1.Site, namespace string) []*networkingv1ac.NetworkPolicyApplyConfiguration {
	return NetworkPoliciesFor(env, site, namespace, env.Spec.Services)
}

// NetworkPoliciesFor returns the NetworkPolicies of site namespace namespace
// when it runs those of services that belong on site (see SiteServices);
// pass the templates the site actually runs, e.g. from a known-good
// revision. Integrations come from env's spec.
//
// The result is, in this order:
//
//   - DefaultDenyPolicyName: every pod, ingress and egress, no rules;
//   - AllowDNSPolicyName: every pod but evidence pods may reach the cluster
//     DNS on UDP and TCP 53;
//   - ServicePolicyName(s) for each service s, by name: ingress on s's port
//     from the pods of the services on this site that talk to s and from
//     s's allowFrom peers; egress to the pods of each talksTo target on this
//     site on that target's port, and to each integration that lists s on
//     its CIDRs and ports.
//
// An ingress or egress with nothing allowed is left without rules (its
// policy type still denies). Every list is sorted, so the output is stable.
func NetworkPoliciesFor(env *v1alpha1.HealthEnvironment, site v1alpha1.Site, namespace string, services []v1alpha1.Service) []*networkingv1ac.NetworkPolicyApplyConfiguration {
	siteLabel := SiteLabel(site)
	running := SiteServices(services, site)
	byName := make(map[string]v1alpha1.Service, len(running))
	for _, s := range running {
		byName[s.Name] = s
	}

	policies := []*networkingv1ac.NetworkPolicyApplyConfiguration{
		networkingv1ac.NetworkPolicy(DefaultDenyPolicyName, namespace).
			WithLabels(Labels(env, siteLabel)).
			WithOwnerReferences(OwnerReference(env)).
			WithSpec(networkingv1ac.NetworkPolicySpec().
				WithPodSelector(metav1ac.LabelSelector()).
				WithPolicyTypes(networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress)),
		networkingv1ac.NetworkPolicy(AllowDNSPolicyName, namespace).
			WithLabels(Labels(env, siteLabel)).
			WithOwnerReferences(OwnerReference(env)).
			WithSpec(networkingv1ac.NetworkPolicySpec().
				// Evidence pods of an earlier fence stay isolated after a
				// restore: no allow may select them.
				WithPodSelector(notEvidence()).
				WithPolicyTypes(networkingv1.PolicyTypeEgress).
				WithEgress(networkingv1ac.NetworkPolicyEgressRule().
					WithTo(networkingv1ac.NetworkPolicyPeer().
						WithNamespaceSelector(metav1ac.LabelSelector().
							WithMatchLabels(map[string]string{corev1.LabelMetadataName: DNSNamespace})).
						WithPodSelector(metav1ac.LabelSelector().
							WithMatchLabels(map[string]string{DNSPodLabel: DNSPodLabelValue}))).
					WithPorts(
						policyPort(corev1.ProtocolUDP, DNSPort),
						policyPort(corev1.ProtocolTCP, DNSPort),
					))),
	}

	for _, svc := range running {
		spec := networkingv1ac.NetworkPolicySpec().
			WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(env, svc.Name))).
			WithPolicyTypes(networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress)

		if from := ingressPeers(svc, running); len(from) > 0 {
			spec.WithIngress(networkingv1ac.NetworkPolicyIngressRule().
				WithFrom(from...).
				WithPorts(policyPorts(svc)...))
		}

		for _, t := range sortedUnique(svc.TalksTo) {
			target, ok := byName[t]
			if !ok {
				continue // not running on this site
			}
			spec.WithEgress(networkingv1ac.NetworkPolicyEgressRule().
				WithTo(servicePeer(t)).
				WithPorts(policyPorts(target)...))
		}
		for _, in := range integrationsOf(env.Spec.Integrations, svc.Name) {
			rule := networkingv1ac.NetworkPolicyEgressRule()
			for _, c := range sortedUnique(in.CIDRs) {
				rule.WithTo(networkingv1ac.NetworkPolicyPeer().
					WithIPBlock(networkingv1ac.IPBlock().WithCIDR(c)))
			}
			ports := slices.Clone(in.Ports)
			slices.Sort(ports)
			for _, p := range slices.Compact(ports) {
				rule.WithPorts(policyPort(tcp, p))
			}
			spec.WithEgress(rule)
		}

		policies = append(policies, networkingv1ac.NetworkPolicy(ServicePolicyName(svc.Name), namespace).
			WithLabels(ServiceLabels(env, siteLabel, svc.Name)).
			WithOwnerReferences(OwnerReference(env)).
			WithSpec(spec))
	}
	return policies
}

// ingressPeers returns who may connect to svc: the pods of the services in
// running that talk to svc (one peer in svc's own namespace), then svc's
// allowFrom peers in spec order. A peer without a namespaceSelector is
// skipped: without one it would mean "this namespace" and silently widen
// the east-west allow-list; the schema requires the field anyway.
func ingressPeers(svc v1alpha1.Service, running []v1alpha1.Service) []*networkingv1ac.NetworkPolicyPeerApplyConfiguration {
	var callers []string
	for _, c := range running { // sorted by name
		if slices.Contains(c.TalksTo, svc.Name) {
			callers = append(callers, c.Name)
		}
	}
	var peers []*networkingv1ac.NetworkPolicyPeerApplyConfiguration
	if len(callers) > 0 {
		peers = append(peers, networkingv1ac.NetworkPolicyPeer().
			WithPodSelector(metav1ac.LabelSelector().WithMatchExpressions(
				metav1ac.LabelSelectorRequirement().
					WithKey(v1alpha1.LabelService).
					WithOperator(metav1.LabelSelectorOpIn).
					WithValues(callers...))))
	}
	for _, p := range svc.AllowFrom {
		if p.NamespaceSelector == nil {
			continue
		}
		peer := networkingv1ac.NetworkPolicyPeer().
			WithNamespaceSelector(labelSelectorApply(p.NamespaceSelector.ToMeta()))
		if p.PodSelector != nil {
			peer.WithPodSelector(labelSelectorApply(p.PodSelector.ToMeta()))
		}
		peers = append(peers, peer)
	}
	return peers
}

// servicePeer selects the pods of service svc in the policy's namespace.
func servicePeer(svc string) *networkingv1ac.NetworkPolicyPeerApplyConfiguration {
	return networkingv1ac.NetworkPolicyPeer().
		WithPodSelector(metav1ac.LabelSelector().
			WithMatchLabels(map[string]string{v1alpha1.LabelService: svc}))
}

// integrationsOf returns the integrations listing svc, sorted by name.
func integrationsOf(integrations []v1alpha1.Integration, svc string) []v1alpha1.Integration {
	var out []v1alpha1.Integration
	for _, in := range integrations {
		if slices.Contains(in.Services, svc) {
			out = append(out, in)
		}
	}
	slices.SortStableFunc(out, func(a, b v1alpha1.Integration) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// policyPort is a numbered port of protocol proto.
// policyPorts are the ports of svc, each with its protocol, in spec order.
func policyPorts(svc v1alpha1.Service) []*networkingv1ac.NetworkPolicyPortApplyConfiguration {
	var out []*networkingv1ac.NetworkPolicyPortApplyConfiguration
	for _, p := range svc.ServicePorts() {
		out = append(out, policyPort(p.Protocol, p.Port))
	}
	return out
}

func policyPort(proto corev1.Protocol, port int32) *networkingv1ac.NetworkPolicyPortApplyConfiguration {
	return networkingv1ac.NetworkPolicyPort().WithProtocol(proto).WithPort(intstr.FromInt32(port))
}
