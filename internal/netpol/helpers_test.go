package netpol

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

const testNS = "wales-111-primary"

var (
	testNSLabels = map[string]string{"careplane.io/environment": "wales-111", nameLabel: testNS}
	// forensicsNames is what spec.isolation.forensicsFrom names, and
	// forensicsSel how a policy admits exactly that namespace.
	forensicsNames = []string{"forensics"}
	forensicsSel   = &metav1.LabelSelector{MatchLabels: map[string]string{nameLabel: "forensics"}}
	webPod         = Pod{
		Name:   "web-0",
		Labels: map[string]string{"app": "web"},
		Ports:  []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}},
	}
	allTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

func sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func expr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

// np builds a NetworkPolicy in testNS; mutate fills in the spec.
func np(name string, mutate func(*networkingv1.NetworkPolicySpec)) networkingv1.NetworkPolicy {
	p := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS}}
	mutate(&p.Spec)
	return p
}

// fence is a fence policy: every pod, both directions, ingress only from the
// forensics namespaces. Unlike build.FencePolicy, it does not exclude the
// fenced namespace from them, so tests can show the verifier catching that.
func fence(forensics *metav1.LabelSelector) networkingv1.NetworkPolicy {
	return np("careplane-fence", func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = allTypes
		if forensics != nil {
			s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: forensics}}}}
		}
	})
}

// allowIn is an ingress-only policy selecting every pod with one rule.
func allowIn(name string, from []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicy {
	return np(name, func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: from, Ports: ports}}
	})
}

// allowOut is an egress-only policy selecting every pod with one rule.
func allowOut(name string, to []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicy {
	return np(name, func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: to, Ports: ports}}
	})
}

func peers(ps ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer { return ps }

func podPeer(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: s}
}

func nsPeer(s *metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: s}
}

func ipPeer(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func tcp(p int) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Port: ptr.To(intstr.FromInt32(int32(p)))}
}

func named(proto corev1.Protocol, name string) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: ptr.To(proto), Port: ptr.To(intstr.FromString(name))}
}

func portRange(from, to int32) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Port: ptr.To(intstr.FromInt32(from)), EndPort: ptr.To(to)}
}
