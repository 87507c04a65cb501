package netpol

import (
	"fmt"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

// BenchmarkVerifyFence measures a fenced site whose provisioning policies were
// left behind: default deny, DNS, talksTo, allowFrom and integrations for 10
// services of 3 pods each, plus the fence.
func BenchmarkVerifyFence(b *testing.B) {
	in := FenceInput{Namespace: testNS, NamespaceLabels: testNSLabels, ForensicsNamespaces: forensicsNames}
	in.Policies = append(in.Policies, fence(forensicsSel), np("default-deny", func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = allTypes
	}), allowOut("dns", peers(networkingv1.NetworkPolicyPeer{
		NamespaceSelector: sel(nameLabel, "kube-system"), PodSelector: sel("k8s-app", "kube-dns")}),
		named("UDP", "dns"), tcp(53)))
	for i := range 10 {
		svc := fmt.Sprintf("svc-%d", i)
		in.Policies = append(in.Policies, np(svc+"-talks-to", func(s *networkingv1.NetworkPolicySpec) {
			s.PodSelector = *sel("app", svc)
			s.PolicyTypes = allTypes
			s.Ingress = []networkingv1.NetworkPolicyIngressRule{
				{From: peers(podPeer(sel("app", fmt.Sprintf("svc-%d", (i+1)%10)))), Ports: []networkingv1.NetworkPolicyPort{tcp(8080)}},
				{From: peers(nsPeer(sel(nameLabel, "gateway"))), Ports: []networkingv1.NetworkPolicyPort{tcp(8080)}},
			}
			s.Egress = []networkingv1.NetworkPolicyEgressRule{
				{To: peers(podPeer(sel("app", fmt.Sprintf("svc-%d", (i+2)%10)))), Ports: []networkingv1.NetworkPolicyPort{tcp(8080)}},
				{To: peers(ipPeer("10.20.0.0/16")), Ports: []networkingv1.NetworkPolicyPort{tcp(443)}},
			}
		}))
		for j := range 3 {
			in.Pods = append(in.Pods, Pod{Name: fmt.Sprintf("%s-%d", svc, j), Labels: map[string]string{"app": svc}, Ports: webPod.Ports})
		}
	}
	b.ResetTimer()
	for b.Loop() {
		res, err := VerifyFence(in)
		if err != nil || res.Isolated {
			b.Fatalf("want a breach, got %v, %v", res.Isolated, err)
		}
	}
}
