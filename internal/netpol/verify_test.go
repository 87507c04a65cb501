package netpol

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestVerifyFence(t *testing.T) {
	const (
		in  = networkingv1.PolicyTypeIngress
		out = networkingv1.PolicyTypeEgress
	)
	sameNS := "any pod in namespace " + testNS
	investigator := sel("role", "investigator")

	tests := []struct {
		name        string
		policies    []networkingv1.NetworkPolicy
		pods        []Pod    // default: webPod
		forensics   []string // default: forensicsNames, unless noForensics
		noForensics bool
		want        []Flow // nil: isolated
	}{
		{
			name:     "careplane fence alone is isolated",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel)},
		},
		{
			name: "no policy at all allows everything both ways",
			want: []Flow{
				{Direction: in, Pod: "web-0", Peer: "any", Port: "any"},
				{Direction: out, Pod: "web-0", Peer: "any", Port: "any"},
			},
		},
		{
			name: "deny-all ingress alone leaks egress",
			policies: []networkingv1.NetworkPolicy{np("deny-ingress", func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{in}
			})},
			want: []Flow{{Direction: out, Pod: "web-0", Peer: "any", Port: "any"}},
		},
		{
			name: "a leftover allow breaches the fence and is named",
			policies: []networkingv1.NetworkPolicy{
				fence(forensicsSel),
				allowIn("leftover-frontend", peers(podPeer(sel("app", "frontend"))), tcp(8080)),
			},
			want: []Flow{{Direction: in, Pod: "web-0", Peer: "pods {app=frontend} in namespace " + testNS, Port: "TCP/8080", Policies: []string{"leftover-frontend"}}},
		},
		{
			name:     "ingress rule {} allows everything",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowIn("allow-all", nil)},
			want:     []Flow{{Direction: in, Pod: "web-0", Peer: "any", Port: "any", Policies: []string{"allow-all"}}},
		},
		{
			name:     "peer with podSelector {} means every pod of the policy's namespace only",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowIn("same-ns", peers(podPeer(sel())))},
			want:     []Flow{{Direction: in, Pod: "web-0", Peer: sameNS, Port: "any", Policies: []string{"same-ns"}}},
		},
		{
			name:     "peer with namespaceSelector {} means every namespace",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowOut("all-ns", peers(nsPeer(sel())))},
			want:     []Flow{{Direction: out, Pod: "web-0", Peer: "any pod in any namespace", Port: "any", Policies: []string{"all-ns"}}},
		},
		{
			name:     "namespaceSelector {} on ingress breaches through non-forensics namespaces",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowIn("all-ns", peers(nsPeer(sel())))},
			want:     []Flow{{Direction: in, Pod: "web-0", Peer: "any pod in any namespace", Port: "any", Policies: []string{"all-ns"}}},
		},
		{
			name: "namespace and pod selector in one peer are ANDed: forensics investigators only",
			policies: []networkingv1.NetworkPolicy{
				fence(forensicsSel),
				allowIn("investigators", peers(networkingv1.NetworkPolicyPeer{NamespaceSelector: forensicsSel, PodSelector: investigator}), tcp(22)),
			},
		},
		{
			name: "namespace and pod selector as separate peers are ORed: investigators of the fenced namespace too",
			policies: []networkingv1.NetworkPolicy{
				fence(forensicsSel),
				allowIn("investigators", peers(nsPeer(forensicsSel), podPeer(investigator)), tcp(22)),
			},
			want: []Flow{{Direction: in, Pod: "web-0", Peer: "pods {role=investigator} in namespace " + testNS, Port: "TCP/22", Policies: []string{"investigators"}}},
		},
		{
			name: "forensics namespace by an In expression is permitted",
			policies: []networkingv1.NetworkPolicy{
				fence(forensicsSel),
				allowIn("forensics-ssh", peers(nsPeer(expr(nameLabel, metav1.LabelSelectorOpIn, "forensics"))), tcp(22)),
			},
		},
		{
			name: "NotIn matches namespaces lacking the key: unnamed ones breach",
			policies: []networkingv1.NetworkPolicy{
				allowIn("not-red", peers(nsPeer(expr("team", metav1.LabelSelectorOpNotIn, "red")))),
				allowOut("none", nil, tcp(1)),
			},
			want: []Flow{
				{Direction: in, Pod: "web-0", Peer: "any pod in namespaces {team notin (red)}", Port: "any", Policies: []string{"not-red"}},
				{Direction: out, Pod: "web-0", Peer: "any", Port: "TCP/1", Policies: []string{"none"}},
			},
		},
		{
			name: "DoesNotExist narrowed to the forensics namespace is permitted",
			policies: []networkingv1.NetworkPolicy{
				fence(forensicsSel),
				allowIn("forensics-unquarantined", peers(nsPeer(&metav1.LabelSelector{
					MatchLabels:      map[string]string{nameLabel: "forensics"},
					MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "quarantine", Operator: metav1.LabelSelectorOpDoesNotExist}},
				}))),
			},
		},
		{
			name: "DoesNotExist alone reaches other namespaces",
			policies: []networkingv1.NetworkPolicy{
				fence(forensicsSel),
				allowIn("unquarantined", peers(nsPeer(expr("quarantine", metav1.LabelSelectorOpDoesNotExist)))),
			},
			want: []Flow{{Direction: in, Pod: "web-0", Peer: "any pod in namespaces {!quarantine}", Port: "any", Policies: []string{"unquarantined"}}},
		},
		{
			// NotIn also matches the fenced namespace, which has no team
			// label: the fence's own forensics rule then lets it in.
			name: "a fence admitting namespaces outside some values breaches, through the fenced namespace too",
			policies: []networkingv1.NetworkPolicy{
				fence(expr("team", metav1.LabelSelectorOpNotIn, "red", "blue")),
				allowIn("teams", peers(nsPeer(expr("team", metav1.LabelSelectorOpExists)))),
			},
			want: []Flow{
				{Direction: in, Pod: "web-0", Peer: "any pod in namespaces {team notin (blue,red)}", Port: "any", Policies: []string{"careplane-fence"}},
				{Direction: in, Pod: "web-0", Peer: "any pod in namespaces {team}", Port: "any", Policies: []string{"teams"}},
			},
		},
		{
			name: "podSelector NotIn selects pods lacking the key",
			policies: []networkingv1.NetworkPolicy{
				fence(forensicsSel),
				np("not-db", func(s *networkingv1.NetworkPolicySpec) {
					s.PodSelector = *expr("tier", metav1.LabelSelectorOpNotIn, "db")
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
				}),
			},
			want: []Flow{{Direction: in, Pod: "web-0", Peer: "any", Port: "any", Policies: []string{"not-db"}}},
		},
		{
			name: "podSelector matchLabels with an empty value needs the key",
			policies: []networkingv1.NetworkPolicy{
				fence(forensicsSel),
				np("tier-empty", func(s *networkingv1.NetworkPolicySpec) {
					s.PodSelector = *sel("tier", "")
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
				}),
			},
		},
		{
			name:     "ipBlock 0.0.0.0/0 on egress",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowOut("internet", peers(ipPeer("0.0.0.0/0")))},
			want:     []Flow{{Direction: out, Pod: "web-0", Peer: "0.0.0.0/0", Port: "any", Policies: []string{"internet"}}},
		},
		{
			name:     "ipBlock whose except leaves half of it",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowOut("half", peers(ipPeer("10.0.0.0/8", "10.0.0.0/9")), tcp(443))},
			want:     []Flow{{Direction: out, Pod: "web-0", Peer: "10.0.0.0/8 except 10.0.0.0/9", Port: "TCP/443", Policies: []string{"half"}}},
		},
		{
			name: "a namespace name no namespace can have matches nothing",
			policies: []networkingv1.NetworkPolicy{
				fence(forensicsSel),
				allowIn("no-such-namespace", peers(nsPeer(expr(nameLabel, metav1.LabelSelectorOpIn, "", "Forensics")))),
			},
		},
		{
			// Accepted by API servers without strict CIDR validation, and
			// kept across upgrades; the mapped IPv4 CIDR is meant.
			name:     "ipBlock with IPv4-mapped IPv6 CIDRs",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowOut("legacy", peers(ipPeer("::ffff:10.0.0.0/104", "::ffff:10.1.0.0/112")))},
			want:     []Flow{{Direction: out, Pod: "web-0", Peer: "10.0.0.0/8 except 10.1.0.0/16", Port: "any", Policies: []string{"legacy"}}},
		},
		{
			name:     "ipBlock whose excepts together cover it allows nothing",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowOut("nothing", peers(ipPeer("10.0.0.0/8", "10.128.0.0/9", "10.0.0.0/9")))},
		},
		{
			// The API server rejects this ("must be a strict subset of cidr");
			// should one exist anyway, set semantics give the empty set.
			name:     "ipBlock with an except equal to the CIDR allows nothing",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowIn("nothing", peers(ipPeer("192.168.0.0/16", "192.168.0.0/16")))},
		},
		{
			name:     "ipBlock except on IPv6, host bits masked",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowIn("v6", peers(ipPeer("2001:db8::1/64", "2001:db8::/65")))},
			want:     []Flow{{Direction: in, Pod: "web-0", Peer: "2001:db8::/64 except 2001:db8::/65", Port: "any", Policies: []string{"v6"}}},
		},
		{
			name:     "ingress to a named port the pod declares",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowIn("http", nil, named(corev1.ProtocolTCP, "http"))},
			want:     []Flow{{Direction: in, Pod: "web-0", Peer: "any", Port: "TCP/http", Policies: []string{"http"}}},
		},
		{
			name:     "ingress to a named port the pod does not declare allows nothing",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowIn("metrics", nil, named(corev1.ProtocolTCP, "metrics"))},
		},
		{
			name:     "ingress to a named port the pod declares on another protocol allows nothing",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowIn("http-udp", nil, named(corev1.ProtocolUDP, "http"))},
		},
		{
			name:     "egress to a named port: any peer pod may declare it",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowOut("dns", peers(nsPeer(sel())), named(corev1.ProtocolUDP, "domain"))},
			want:     []Flow{{Direction: out, Pod: "web-0", Peer: "any pod in any namespace", Port: "UDP/domain", Policies: []string{"dns"}}},
		},
		{
			name:     "port range with endPort",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowIn("range", nil, portRange(8000, 8100))},
			want:     []Flow{{Direction: in, Pod: "web-0", Peer: "any", Port: "TCP/8000-8100", Policies: []string{"range"}}},
		},
		{
			name: "protocol without a port means every port of it",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel),
				allowOut("udp", nil, networkingv1.NetworkPolicyPort{Protocol: ptr.To(corev1.ProtocolUDP)})},
			want: []Flow{{Direction: out, Pod: "web-0", Peer: "any", Port: "UDP/any", Policies: []string{"udp"}}},
		},
		{
			name: "policyTypes unset with egress rules: Ingress and Egress",
			policies: []networkingv1.NetworkPolicy{np("egress-rules", func(s *networkingv1.NetworkPolicySpec) {
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: peers(ipPeer("10.0.0.0/8"))}}
			})},
			want: []Flow{{Direction: out, Pod: "web-0", Peer: "10.0.0.0/8", Port: "any", Policies: []string{"egress-rules"}}},
		},
		{
			name: "policyTypes unset without egress rules: Ingress only, egress leaks",
			policies: []networkingv1.NetworkPolicy{np("ingress-only", func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: peers(nsPeer(forensicsSel))}}
			})},
			want: []Flow{{Direction: out, Pod: "web-0", Peer: "any", Port: "any"}},
		},
		{
			name: "policyTypes unset with an empty egress list: Ingress only",
			policies: []networkingv1.NetworkPolicy{np("empty-egress", func(s *networkingv1.NetworkPolicySpec) {
				s.Egress = []networkingv1.NetworkPolicyEgressRule{}
			})},
			want: []Flow{{Direction: out, Pod: "web-0", Peer: "any", Port: "any"}},
		},
		{
			name: "policyTypes [Egress] ignores ingress rules",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), np("egress-typed", func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{out}
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
			})},
		},
		{
			name: "a policy not selecting the fenced pod does not matter",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), np("other-app", func(s *networkingv1.NetworkPolicySpec) {
				s.PodSelector = *sel("app", "other")
				s.PolicyTypes = allTypes
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{}}
			})},
		},
		{
			name: "a policy in another namespace does not matter",
			policies: func() []networkingv1.NetworkPolicy {
				p := allowIn("elsewhere", nil)
				p.Namespace = "other"
				return []networkingv1.NetworkPolicy{fence(forensicsSel), p}
			}(),
		},
		{
			name:        "no forensics selector: the fence's own forensics allow breaches",
			policies:    []networkingv1.NetworkPolicy{fence(forensicsSel)},
			noForensics: true,
			want: []Flow{{Direction: in, Pod: "web-0", Peer: "any pod in namespaces {kubernetes.io/metadata.name=forensics}", Port: "any",
				Policies: []string{"careplane-fence"}}},
		},
		{
			name:        "no forensics selector and a deny-all fence is isolated",
			policies:    []networkingv1.NetworkPolicy{fence(nil)},
			noForensics: true,
		},
		{
			name:      "naming the fenced namespace does not permit it",
			policies:  []networkingv1.NetworkPolicy{fence(sel(nameLabel, testNS))},
			forensics: []string{testNS},
			want: []Flow{{Direction: in, Pod: "web-0", Peer: "any pod in namespaces {kubernetes.io/metadata.name=wales-111-primary}", Port: "any",
				Policies: []string{"careplane-fence"}}},
		},
		{
			name:      "two named forensics namespaces are both permitted",
			policies:  []networkingv1.NetworkPolicy{fence(expr(nameLabel, metav1.LabelSelectorOpIn, "forensics", "soc"))},
			forensics: []string{"soc", "forensics"},
		},

		// A fence whose forensics rule admits namespaces nobody named, as
		// one written from forensicsFrom {} or from a forgeable label
		// would: every such rule breaches, and is named.
		{
			name:     "a fence admitting every namespace ({}) breaches",
			policies: []networkingv1.NetworkPolicy{fence(sel())},
			want:     []Flow{{Direction: in, Pod: "web-0", Peer: "any pod in any namespace", Port: "any", Policies: []string{"careplane-fence"}}},
		},
		{
			name:     "a fence admitting every other namespace breaches",
			policies: []networkingv1.NetworkPolicy{fence(expr(nameLabel, metav1.LabelSelectorOpNotIn, testNS))},
			want: []Flow{{Direction: in, Pod: "web-0", Peer: "any pod in namespaces {kubernetes.io/metadata.name notin (wales-111-primary)}", Port: "any",
				Policies: []string{"careplane-fence"}}},
		},
		{
			name:     "a fence admitting by a label a tenant can set breaches, even named forensics",
			policies: []networkingv1.NetworkPolicy{fence(sel("team", "forensics"))},
			want: []Flow{{Direction: in, Pod: "web-0", Peer: "any pod in namespaces {team=forensics}", Port: "any",
				Policies: []string{"careplane-fence"}}},
		},
		{
			name:     "a fence admitting by careplane's environment label breaches, through the fenced namespace too",
			policies: []networkingv1.NetworkPolicy{fence(sel("careplane.io/environment", "wales-111"))},
			want: []Flow{{Direction: in, Pod: "web-0", Peer: "any pod in namespaces {careplane.io/environment=wales-111}", Port: "any",
				Policies: []string{"careplane-fence"}}},
		},
		{
			name:     "a fence admitting every namespace with a name (Exists) breaches",
			policies: []networkingv1.NetworkPolicy{fence(expr(nameLabel, metav1.LabelSelectorOpExists))},
			want: []Flow{{Direction: in, Pod: "web-0", Peer: "any pod in namespaces {kubernetes.io/metadata.name}", Port: "any",
				Policies: []string{"careplane-fence"}}},
		},
		{
			name:     "a fence admitting one name more than forensicsFrom breaches",
			policies: []networkingv1.NetworkPolicy{fence(expr(nameLabel, metav1.LabelSelectorOpIn, "forensics", "soc"))},
			want: []Flow{{Direction: in, Pod: "web-0", Peer: "any pod in namespaces {kubernetes.io/metadata.name in (forensics,soc)}", Port: "any",
				Policies: []string{"careplane-fence"}}},
		},
		{
			name:     "ingress from an address block breaches beside the named forensics namespace",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowIn("investigators-vpn", peers(ipPeer("10.8.0.0/16")), tcp(22))},
			want:     []Flow{{Direction: in, Pod: "web-0", Peer: "10.8.0.0/16", Port: "TCP/22", Policies: []string{"investigators-vpn"}}},
		},
		{
			name:     "a forensics namespace narrowed by another label is permitted",
			policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowIn("dfir", peers(nsPeer(sel(nameLabel, "forensics", "team", "dfir"))), tcp(22))},
		},
		{
			name: "policies allowing the same flow are merged and sorted, pods and directions sorted",
			policies: []networkingv1.NetworkPolicy{
				fence(forensicsSel),
				allowIn("z-old", nil, tcp(80)),
				allowIn("a-old", nil, tcp(80)),
				np("web-egress", func(s *networkingv1.NetworkPolicySpec) {
					s.PodSelector = *sel("app", "web")
					s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: peers(nsPeer(sel("team", "red")), ipPeer("10.0.0.0/8")), Ports: []networkingv1.NetworkPolicyPort{tcp(443), tcp(80)}}}
				}),
			},
			pods: []Pod{webPod, {Name: "db-0", Labels: map[string]string{"app": "db"}}},
			want: []Flow{
				{Direction: in, Pod: "db-0", Peer: "any", Port: "TCP/80", Policies: []string{"a-old", "z-old"}},
				{Direction: in, Pod: "web-0", Peer: "any", Port: "TCP/80", Policies: []string{"a-old", "z-old"}},
				{Direction: out, Pod: "web-0", Peer: "10.0.0.0/8", Port: "TCP/443", Policies: []string{"web-egress"}},
				{Direction: out, Pod: "web-0", Peer: "10.0.0.0/8", Port: "TCP/80", Policies: []string{"web-egress"}},
				{Direction: out, Pod: "web-0", Peer: "any pod in namespaces {team=red}", Port: "TCP/443", Policies: []string{"web-egress"}},
				{Direction: out, Pod: "web-0", Peer: "any pod in namespaces {team=red}", Port: "TCP/80", Policies: []string{"web-egress"}},
			},
		},
		{
			name:     "no fenced pods is vacuously isolated",
			pods:     []Pod{},
			policies: []networkingv1.NetworkPolicy{allowIn("allow-all", nil)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pods := tt.pods
			if pods == nil {
				pods = []Pod{webPod}
			}
			forensics := tt.forensics
			if forensics == nil && !tt.noForensics {
				forensics = forensicsNames
			}
			got, err := VerifyFence(FenceInput{Namespace: testNS, NamespaceLabels: testNSLabels, Pods: pods, Policies: tt.policies, ForensicsNamespaces: forensics})
			if err != nil {
				t.Fatalf("VerifyFence: %v", err)
			}
			if got.Isolated != (len(tt.want) == 0) {
				t.Errorf("Isolated = %v, want %v", got.Isolated, len(tt.want) == 0)
			}
			if !reflect.DeepEqual(got.Flows, tt.want) {
				t.Errorf("Flows:\n%s\nwant:\n%s", Format(got), Format(Result{Flows: tt.want}))
			}
		})
	}
}

func TestVerifyFenceRejectsWhatTheAPIServerRejects(t *testing.T) {
	tests := []struct {
		name    string
		policy  networkingv1.NetworkPolicy
		input   func(*FenceInput)
		wantErr string
	}{
		{
			name:    "peer {} with no field set",
			policy:  allowIn("empty-peer", peers(networkingv1.NetworkPolicyPeer{})),
			wantErr: "NetworkPolicy wales-111-primary/empty-peer: spec.ingress[0].from[0]: must specify a peer",
		},
		{
			name:    "ipBlock with a selector",
			policy:  allowOut("mixed", peers(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}, PodSelector: sel()})),
			wantErr: "spec.egress[0].to[0]: may not specify both ipBlock and another peer",
		},
		{
			name:    "unparsable CIDR",
			policy:  allowOut("bad-cidr", peers(ipPeer("10.0.0.0/33"))),
			wantErr: "spec.egress[0].to[0]: ipBlock.cidr:",
		},
		{
			name: "endPort with a named port",
			policy: allowIn("bad-range", nil, networkingv1.NetworkPolicyPort{
				Port: ptr.To(intstr.FromString("http")), EndPort: ptr.To(int32(9000))}),
			wantErr: "spec.ingress[0].ports[0]: endPort: requires a numeric port",
		},
		{
			name:    "endPort below port",
			policy:  allowIn("bad-range", nil, portRange(9000, 8000)),
			wantErr: "endPort: 8000 must be between port 9000 and 65535",
		},
		{
			name:    "unsupported protocol",
			policy:  allowIn("icmp", nil, networkingv1.NetworkPolicyPort{Protocol: ptr.To(corev1.Protocol("ICMP"))}),
			wantErr: `protocol: unsupported value "ICMP"`,
		},
		{
			name:    "invalid selector operator",
			policy:  allowIn("bad-op", peers(podPeer(expr("app", "Like", "web")))),
			wantErr: "spec.ingress[0].from[0]: podSelector:",
		},
		{
			name:    "a forensics name that is no label value",
			policy:  fence(forensicsSel),
			input:   func(in *FenceInput) { in.ForensicsNamespaces = []string{"forensics", "not a name!"} },
			wantErr: "forensics namespaces:",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := FenceInput{Namespace: testNS, NamespaceLabels: testNSLabels, Pods: []Pod{webPod},
				Policies: []networkingv1.NetworkPolicy{fence(forensicsSel), tt.policy}, ForensicsNamespaces: forensicsNames}
			if tt.input != nil {
				tt.input(&in)
			}
			_, err := VerifyFence(in)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestResultSummaryAndPolicies(t *testing.T) {
	tests := []struct {
		name         string
		result       Result
		wantSummary  string
		wantPolicies []string
	}{
		{
			name:        "isolated",
			result:      Result{Isolated: true},
			wantSummary: "No NetworkPolicy allows a flow into or out of a fenced pod",
		},
		{
			name: "first flow is named, with the total",
			result: Result{Flows: []Flow{
				{Direction: networkingv1.PolicyTypeIngress, Pod: "web-0", Peer: "any pod in any namespace", Port: "TCP/80", Policies: []string{"b", "a"}},
				{Direction: networkingv1.PolicyTypeEgress, Pod: "web-0", Peer: "any", Port: "any"},
				{Direction: networkingv1.PolicyTypeEgress, Pod: "web-1", Peer: "any", Port: "any", Policies: []string{"a"}},
			}},
			wantSummary:  "NetworkPolicy b, a allows Ingress into pod web-0 from any pod in any namespace on port TCP/80 (3 breaching flows in total)",
			wantPolicies: []string{"a", "b"},
		},
		{
			name:        "unselected pod",
			result:      Result{Flows: []Flow{{Direction: networkingv1.PolicyTypeEgress, Pod: "web-0", Peer: "any", Port: "any"}}},
			wantSummary: "No NetworkPolicy selects pod web-0 for Egress, so all Egress is allowed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.result.Summary(); got != tt.wantSummary {
				t.Errorf("Summary() = %q, want %q", got, tt.wantSummary)
			}
			if got := tt.result.Policies(); !reflect.DeepEqual(got, tt.wantPolicies) {
				t.Errorf("Policies() = %q, want %q", got, tt.wantPolicies)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	res, err := VerifyFence(FenceInput{
		Namespace: testNS, NamespaceLabels: testNSLabels, Pods: []Pod{webPod}, ForensicsNamespaces: forensicsNames,
		Policies: []networkingv1.NetworkPolicy{
			np("deny-ingress", func(s *networkingv1.NetworkPolicySpec) {}),
			allowIn("legacy-lb", peers(ipPeer("10.0.0.0/8", "10.1.0.0/16")), tcp(8080)),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"DIRECTION  POD    PEER                           PORT      POLICIES\n" +
		"Ingress    web-0  10.0.0.0/8 except 10.1.0.0/16  TCP/8080  legacy-lb\n" +
		"Egress     web-0  any                            any       <none: pod not selected>\n"
	if got := Format(res); got != want {
		t.Errorf("Format:\n%s\nwant:\n%s", got, want)
	}
	if got, want := Format(Result{Isolated: true}), "No NetworkPolicy allows a flow into or out of a fenced pod.\n"; got != want {
		t.Errorf("Format(isolated) = %q, want %q", got, want)
	}
}

func TestPodFromObject(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "proxy", Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 15000}}}},
			Containers:     []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
		},
	}
	got := PodFromObject(pod)
	want := Pod{Name: "web-0", Labels: map[string]string{"app": "web"},
		Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 15000}, {Name: "http", ContainerPort: 8080}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PodFromObject = %+v, want %+v", got, want)
	}
	// A sidecar's named port counts for ingress rules.
	res, err := VerifyFence(FenceInput{Namespace: testNS, Pods: []Pod{got}, ForensicsNamespaces: forensicsNames,
		Policies: []networkingv1.NetworkPolicy{fence(forensicsSel), allowIn("admin", nil, named(corev1.ProtocolTCP, "admin"))}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Isolated {
		t.Errorf("ingress to the sidecar's named port should breach")
	}
}

// What a responder reads in IsolationVerified when the fence's own forensics
// rule admits namespaces by a label a tenant can set: the verdict is not
// isolated, and the summary names the policy and the flow.
func TestForgeableForensicsPeerSummary(t *testing.T) {
	res, err := VerifyFence(FenceInput{Namespace: testNS, NamespaceLabels: testNSLabels, Pods: []Pod{webPod},
		Policies: []networkingv1.NetworkPolicy{fence(sel("team", "forensics"))}, ForensicsNamespaces: forensicsNames})
	if err != nil {
		t.Fatal(err)
	}
	want := "NetworkPolicy careplane-fence allows Ingress into pod web-0 from any pod in namespaces {team=forensics} on port any"
	if res.Isolated || res.Summary() != want {
		t.Errorf("Isolated = %t, Summary() = %q; want not isolated and %q", res.Isolated, res.Summary(), want)
	}
}
