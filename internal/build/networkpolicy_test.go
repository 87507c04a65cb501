package build

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mattfenwick/cyclonus/pkg/matcher"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

func TestServicesForSite(t *testing.T) {
	env := env111()
	tests := []struct {
		site v1alpha1.Site
		want []string
	}{
		{v1alpha1.SitePrimary, []string{"booking", "call-handling", "care-records", "prescriptions", "referral"}},
		{v1alpha1.SiteStandby, []string{"call-handling", "prescriptions", "referral"}},
	}
	for _, tt := range tests {
		var got []string
		for _, s := range ServicesForSite(env, tt.site) {
			got = append(got, s.Name)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("ServicesForSite(%s) = %v, want %v", tt.site, got, tt.want)
		}
	}
	if env.Spec.Services[0].Name != "call-handling" {
		t.Errorf("ServicesForSite reordered the spec's services")
	}
}

// policySummary is what a reviewer reads off a NetworkPolicy.
type policySummary struct {
	podSelector string
	types       []networkingv1.PolicyType
	ingress     []string
	egress      []string
}

func summarise(p *networkingv1.NetworkPolicy) policySummary {
	s := policySummary{podSelector: selectorString(&p.Spec.PodSelector), types: p.Spec.PolicyTypes}
	for _, r := range p.Spec.Ingress {
		s.ingress = append(s.ingress, ruleString(r.From, r.Ports))
	}
	for _, r := range p.Spec.Egress {
		s.egress = append(s.egress, ruleString(r.To, r.Ports))
	}
	return s
}

func selectorString(sel *metav1.LabelSelector) string {
	if len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0 {
		return "{}"
	}
	return "{" + metav1.FormatLabelSelector(sel) + "}"
}

func ruleString(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) string {
	var ps []string
	for _, p := range peers {
		var parts []string
		if p.IPBlock != nil {
			parts = append(parts, "cidr "+p.IPBlock.CIDR)
		}
		if p.NamespaceSelector != nil {
			parts = append(parts, "ns"+selectorString(p.NamespaceSelector))
		}
		if p.PodSelector != nil {
			parts = append(parts, "pods"+selectorString(p.PodSelector))
		}
		ps = append(ps, strings.Join(parts, "+"))
	}
	var pp []string
	for _, p := range ports {
		pp = append(pp, fmt.Sprintf("%s/%s", *p.Protocol, p.Port.String()))
	}
	return strings.Join(ps, ", ") + " on " + strings.Join(pp, ", ")
}

func TestNetworkPolicies(t *testing.T) {
	both := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	deny := policySummary{podSelector: "{}", types: both}
	dns := policySummary{podSelector: "{!careplane.io/evidence}", types: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		egress: []string{"ns{kubernetes.io/metadata.name=kube-system}+pods{k8s-app=kube-dns} on UDP/53, TCP/53"}}
	sel := func(svc string) string {
		return "{careplane.io/environment=wales-111,careplane.io/service=" + svc + "}"
	}
	gpConnect := "cidr 172.16.0.0/12, cidr 192.168.10.0/24 on TCP/443, TCP/8443"
	ambulance := "cidr 10.20.0.0/16 on TCP/443"

	tests := []struct {
		site      v1alpha1.Site
		namespace string
		want      map[string]policySummary
		wantOrder []string
	}{
		{
			site:      v1alpha1.SitePrimary,
			namespace: "wales-111-primary",
			wantOrder: []string{"default-deny", "allow-dns", "svc-booking", "svc-call-handling", "svc-care-records", "svc-prescriptions", "svc-referral"},
			want: map[string]policySummary{
				"default-deny": deny,
				"allow-dns":    dns,
				"svc-booking": {podSelector: sel("booking"), types: both,
					ingress: []string{"ns{kubernetes.io/metadata.name=gateway}+pods{app=web} on TCP/8082"},
					egress:  []string{"pods{careplane.io/service=referral} on TCP/8081", gpConnect},
				},
				"svc-call-handling": {podSelector: sel("call-handling"), types: both,
					ingress: []string{"ns{kubernetes.io/metadata.name=gateway} on TCP/8080"},
					egress: []string{
						"pods{careplane.io/service=care-records} on TCP/8443",
						"pods{careplane.io/service=referral} on TCP/8081",
					},
				},
				"svc-care-records": {podSelector: sel("care-records"), types: both,
					ingress: []string{"pods{careplane.io/service in (call-handling,prescriptions,referral)} on TCP/8443"},
				},
				"svc-prescriptions": {podSelector: sel("prescriptions"), types: both,
					egress: []string{"pods{careplane.io/service=care-records} on TCP/8443"},
				},
				"svc-referral": {podSelector: sel("referral"), types: both,
					ingress: []string{"pods{careplane.io/service in (booking,call-handling)} on TCP/8081"},
					egress:  []string{"pods{careplane.io/service=care-records} on TCP/8443", ambulance, gpConnect},
				},
			},
		},
		{
			// Only critical services run on the standby: nobody there may
			// reach care-records or booking, which do not run there.
			site:      v1alpha1.SiteStandby,
			namespace: "wales-111-standby",
			wantOrder: []string{"default-deny", "allow-dns", "svc-call-handling", "svc-prescriptions", "svc-referral"},
			want: map[string]policySummary{
				"default-deny": deny,
				"allow-dns":    dns,
				"svc-call-handling": {podSelector: sel("call-handling"), types: both,
					ingress: []string{"ns{kubernetes.io/metadata.name=gateway} on TCP/8080"},
					egress:  []string{"pods{careplane.io/service=referral} on TCP/8081"},
				},
				"svc-prescriptions": {podSelector: sel("prescriptions"), types: both},
				"svc-referral": {podSelector: sel("referral"), types: both,
					ingress: []string{"pods{careplane.io/service in (call-handling)} on TCP/8081"},
					egress:  []string{ambulance, gpConnect},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(string(tt.site), func(t *testing.T) {
			env := env111()
			var order []string
			for _, ac := range NetworkPolicies(env, tt.site, tt.namespace) {
				p := toTyped[networkingv1.NetworkPolicy](t, ac)
				order = append(order, p.Name)
				svc := strings.TrimPrefix(p.Name, "svc-")
				if svc == p.Name {
					svc = ""
				}
				checkMeta(t, p.TypeMeta, p.ObjectMeta, "networking.k8s.io/v1", "NetworkPolicy", p.Name, tt.namespace, stdLabels(SiteLabel(tt.site), svc))
				want, ok := tt.want[p.Name]
				if !ok {
					t.Errorf("unexpected policy %s", p.Name)
					continue
				}
				if got := summarise(p); !reflect.DeepEqual(got, want) {
					t.Errorf("%s:\n got %+v\nwant %+v", p.Name, got, want)
				}
			}
			if !slices.Equal(order, tt.wantOrder) {
				t.Errorf("policies = %v, want %v", order, tt.wantOrder)
			}
		})
	}
}

// TestNetworkPoliciesEmptyRulesStillDeny checks that a service nobody may
// reach keeps the Ingress policy type with no rules (deny), rather than
// getting an empty rule (which would allow everything).
func TestNetworkPoliciesEmptyRulesStillDeny(t *testing.T) {
	env := env111()
	for _, ac := range NetworkPolicies(env, v1alpha1.SiteStandby, "wales-111-standby") {
		if *ac.Name != "svc-prescriptions" {
			continue
		}
		raw := mustJSON(ac)
		if strings.Contains(raw, `"ingress"`) || strings.Contains(raw, `"egress"`) {
			t.Errorf("svc-prescriptions has rules: %s", raw)
		}
		if !strings.Contains(raw, `"policyTypes":["Ingress","Egress"]`) {
			t.Errorf("svc-prescriptions lost its policy types: %s", raw)
		}
		return
	}
	t.Fatal("no svc-prescriptions policy")
}

func TestNetworkPoliciesAreDeterministic(t *testing.T) {
	want := mustJSON(NetworkPolicies(env111(), v1alpha1.SitePrimary, "wales-111-primary"))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		env := env111()
		s := env.Spec
		rng.Shuffle(len(s.Services), func(i, j int) { s.Services[i], s.Services[j] = s.Services[j], s.Services[i] })
		rng.Shuffle(len(s.Integrations), func(i, j int) { s.Integrations[i], s.Integrations[j] = s.Integrations[j], s.Integrations[i] })
		for _, svc := range s.Services {
			rng.Shuffle(len(svc.TalksTo), func(i, j int) { svc.TalksTo[i], svc.TalksTo[j] = svc.TalksTo[j], svc.TalksTo[i] })
		}
		for _, in := range s.Integrations {
			rng.Shuffle(len(in.CIDRs), func(i, j int) { in.CIDRs[i], in.CIDRs[j] = in.CIDRs[j], in.CIDRs[i] })
			rng.Shuffle(len(in.Ports), func(i, j int) { in.Ports[i], in.Ports[j] = in.Ports[j], in.Ports[i] })
		}
		if got := mustJSON(NetworkPolicies(env, v1alpha1.SitePrimary, "wales-111-primary")); got != want {
			t.Fatalf("shuffle %d changed the policies:\n got %s\nwant %s", i, got, want)
		}
	}
}

// TestNetworkPoliciesFromRevision checks that the standby's policies follow
// the templates it runs, not the current spec.
func TestNetworkPoliciesFromRevision(t *testing.T) {
	env := env111()
	old := env111().Spec.Services
	for i := range old {
		if old[i].Name == "call-handling" {
			old[i].TalksTo = nil // the known-good revision predates call-handling -> referral
		}
	}
	for _, ac := range NetworkPoliciesFor(env, v1alpha1.SiteStandby, "wales-111-standby", old) {
		p := toTyped[networkingv1.NetworkPolicy](t, ac)
		if p.Name == "svc-call-handling" && len(p.Spec.Egress) != 0 {
			t.Errorf("svc-call-handling egress = %v, want none as in the revision", summarise(p).egress)
		}
		if p.Name == "svc-referral" && len(p.Spec.Ingress) != 0 {
			t.Errorf("svc-referral ingress = %v, want none as in the revision", summarise(p).ingress)
		}
	}
}

// TestNetworkPoliciesReachability evaluates the policies with cyclonus's
// matcher, the NetworkPolicy engine SIG Network uses, for the flows an
// operator of the 111 environment cares about.
func TestNetworkPoliciesReachability(t *testing.T) {
	env := env111()
	policies := func(site v1alpha1.Site) *matcher.Policy {
		var nps []*networkingv1.NetworkPolicy
		for _, ac := range NetworkPolicies(env, site, SiteNamespace(env, site)) {
			nps = append(nps, toTyped[networkingv1.NetworkPolicy](t, ac))
		}
		return matcher.BuildNetworkPolicies(true, nps)
	}
	pod := func(namespace string, labels map[string]string) *matcher.TrafficPeer {
		return &matcher.TrafficPeer{IP: "10.244.0.1", Internal: &matcher.InternalPeer{
			Namespace: namespace, PodLabels: labels,
			NamespaceLabels: map[string]string{corev1.LabelMetadataName: namespace},
		}}
	}
	svcPod := func(site v1alpha1.Site, svc string) *matcher.TrafficPeer {
		return pod(SiteNamespace(env, site), ServiceLabels(env, SiteLabel(site), svc))
	}
	external := func(ip string) *matcher.TrafficPeer { return &matcher.TrafficPeer{IP: ip} }
	primary, standby := v1alpha1.SitePrimary, v1alpha1.SiteStandby
	dns := pod("kube-system", map[string]string{"k8s-app": "kube-dns"})

	tests := []struct {
		name     string
		site     v1alpha1.Site
		from, to *matcher.TrafficPeer
		port     int
		proto    corev1.Protocol
		allowed  bool
	}{
		{"gateway to call-handling", primary, pod("gateway", map[string]string{"app": "edge"}), svcPod(primary, "call-handling"), 8080, corev1.ProtocolTCP, true},
		{"gateway to call-handling on another port", primary, pod("gateway", nil), svcPod(primary, "call-handling"), 9090, corev1.ProtocolTCP, false},
		{"gateway web to booking", primary, pod("gateway", map[string]string{"app": "web"}), svcPod(primary, "booking"), 8082, corev1.ProtocolTCP, true},
		{"gateway non-web to booking", primary, pod("gateway", map[string]string{"app": "edge"}), svcPod(primary, "booking"), 8082, corev1.ProtocolTCP, false},
		{"other tenant to call-handling", primary, pod("england-111-primary", nil), svcPod(primary, "call-handling"), 8080, corev1.ProtocolTCP, false},
		{"internet to call-handling", primary, external("203.0.113.9"), svcPod(primary, "call-handling"), 8080, corev1.ProtocolTCP, false},
		{"booking to referral", primary, svcPod(primary, "booking"), svcPod(primary, "referral"), 8081, corev1.ProtocolTCP, true},
		{"booking to referral over UDP", primary, svcPod(primary, "booking"), svcPod(primary, "referral"), 8081, corev1.ProtocolUDP, false},
		{"booking to care-records", primary, svcPod(primary, "booking"), svcPod(primary, "care-records"), 8443, corev1.ProtocolTCP, false},
		{"call-handling to care-records", primary, svcPod(primary, "call-handling"), svcPod(primary, "care-records"), 8443, corev1.ProtocolTCP, true},
		{"care-records to call-handling", primary, svcPod(primary, "care-records"), svcPod(primary, "call-handling"), 8080, corev1.ProtocolTCP, false},
		{"referral to ambulance dispatch", primary, svcPod(primary, "referral"), external("10.20.3.4"), 443, corev1.ProtocolTCP, true},
		{"referral to ambulance dispatch on 80", primary, svcPod(primary, "referral"), external("10.20.3.4"), 80, corev1.ProtocolTCP, false},
		{"call-handling to ambulance dispatch", primary, svcPod(primary, "call-handling"), external("10.20.3.4"), 443, corev1.ProtocolTCP, false},
		{"booking to GP Connect", primary, svcPod(primary, "booking"), external("172.16.5.5"), 8443, corev1.ProtocolTCP, true},
		{"booking to the internet", primary, svcPod(primary, "booking"), external("8.8.8.8"), 443, corev1.ProtocolTCP, false},
		{"care-records to DNS over UDP", primary, svcPod(primary, "care-records"), dns, 53, corev1.ProtocolUDP, true},
		{"care-records to DNS over TCP", primary, svcPod(primary, "care-records"), dns, 53, corev1.ProtocolTCP, true},
		{"care-records to kube-system on 443", primary, svcPod(primary, "care-records"), pod("kube-system", map[string]string{"component": "kube-apiserver"}), 443, corev1.ProtocolTCP, false},
		{"standby call-handling to standby referral", standby, svcPod(standby, "call-handling"), svcPod(standby, "referral"), 8081, corev1.ProtocolTCP, true},
		{"standby referral to care-records", standby, svcPod(standby, "referral"), svcPod(standby, "care-records"), 8443, corev1.ProtocolTCP, false},
		{"standby referral to ambulance dispatch", standby, svcPod(standby, "referral"), external("10.20.0.1"), 443, corev1.ProtocolTCP, true},
	}
	built := map[v1alpha1.Site]*matcher.Policy{primary: policies(primary), standby: policies(standby)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := built[tt.site].IsTrafficAllowed(&matcher.Traffic{
				Source: tt.from, Destination: tt.to, ResolvedPort: tt.port, ResolvedPortName: "", Protocol: tt.proto,
			})
			if res.IsAllowed() != tt.allowed {
				t.Errorf("allowed = %v, want %v\n%s", res.IsAllowed(), tt.allowed, res.Table())
			}
		})
	}
}
