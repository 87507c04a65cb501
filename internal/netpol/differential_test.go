package netpol

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/mattfenwick/cyclonus/pkg/kube"
	"github.com/mattfenwick/cyclonus/pkg/matcher"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The random policies use a small alphabet so that the universe below can
// hold every distinguishable peer and port: every label combination (absent,
// each value used, and one value never used), every address of the CIDR
// space used, every port number used and one more, every protocol and name.

const diffNS = "tenant"

var (
	nsAlphabet  = map[string][]string{"team": {"red", ""}, "env": {"prod"}, nameLabel: {diffNS, "forensics"}}
	podAlphabet = map[string][]string{"app": {"web", ""}, "role": {"admin"}}
	portNames   = []string{"http", "dns"}
	v4Space     = netip.MustParsePrefix("10.0.0.0/28")
	v6Space     = netip.MustParsePrefix("2001:db8::/124")
	// internalIP is what cyclonus sees as a pod peer's address; no generated
	// block contains it (there is no ::/0), matching this package's model
	// that ipBlock peers are addresses, not pods.
	internalIP = "fe80::1"
)

type gen struct{ r *rand.Rand }

func (g gen) pick(n int) int { return g.r.IntN(n) }

func (g gen) chance(p float64) bool { return g.r.Float64() < p }

func (g gen) selector(alphabet map[string][]string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{}
	keys := slices.Sorted(maps.Keys(alphabet))
	for range g.pick(3) {
		k := keys[g.pick(len(keys))]
		vals := alphabet[k]
		v := vals[g.pick(len(vals))]
		switch g.pick(5) {
		case 0:
			if s.MatchLabels == nil {
				s.MatchLabels = map[string]string{}
			}
			s.MatchLabels[k] = v
		case 1:
			s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpIn, Values: g.values(vals)})
		case 2:
			s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpNotIn, Values: g.values(vals)})
		case 3:
			s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpExists})
		case 4:
			s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpDoesNotExist})
		}
	}
	return s
}

func (g gen) values(vals []string) []string {
	out := []string{vals[g.pick(len(vals))]}
	if len(vals) > 1 && g.chance(0.3) {
		out = slices.Compact(slices.Sorted(slices.Values(vals)))
	}
	return out
}

func (g gen) labels(alphabet map[string][]string) map[string]string {
	l := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(alphabet)) {
		if k == nameLabel {
			continue
		}
		if n := g.pick(len(alphabet[k]) + 2); n < len(alphabet[k]) {
			l[k] = alphabet[k][n]
		} else if n == len(alphabet[k]) {
			l[k] = "zz"
		}
	}
	return l
}

func (g gen) prefix(space netip.Prefix) netip.Prefix {
	bits := space.Bits() + g.pick(space.Addr().BitLen()-space.Bits()+1)
	b := space.Addr().AsSlice()
	for i := space.Bits(); i < bits; i++ {
		if g.chance(0.5) {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(a, bits)
}

func (g gen) ipBlock() *networkingv1.IPBlock {
	space := v4Space
	if g.chance(0.4) {
		space = v6Space
	}
	cidr := g.prefix(space)
	if space == v4Space && g.chance(0.15) {
		cidr = netip.MustParsePrefix("0.0.0.0/0")
	}
	b := &networkingv1.IPBlock{CIDR: cidr.String()}
	for range g.pick(3) {
		inner := space
		if cidr.Bits() > space.Bits() {
			inner = cidr
		}
		b.Except = append(b.Except, g.prefix(inner).String())
	}
	return b
}

func (g gen) peer() networkingv1.NetworkPolicyPeer {
	switch g.pick(4) {
	case 0:
		return networkingv1.NetworkPolicyPeer{IPBlock: g.ipBlock()}
	case 1:
		return networkingv1.NetworkPolicyPeer{PodSelector: g.selector(podAlphabet)}
	case 2:
		return networkingv1.NetworkPolicyPeer{NamespaceSelector: g.selector(nsAlphabet)}
	default:
		return networkingv1.NetworkPolicyPeer{NamespaceSelector: g.selector(nsAlphabet), PodSelector: g.selector(podAlphabet)}
	}
}

func (g gen) port() networkingv1.NetworkPolicyPort {
	var p networkingv1.NetworkPolicyPort
	if g.chance(0.6) {
		p.Protocol = ptr.To(protocols[g.pick(len(protocols))])
	}
	switch g.pick(4) {
	case 0:
	case 1:
		p.Port = ptr.To(intstr.FromInt32(int32(1 + g.pick(5))))
	case 2:
		p.Port = ptr.To(intstr.FromString(portNames[g.pick(len(portNames))]))
	case 3:
		from := int32(1 + g.pick(5))
		p.Port = ptr.To(intstr.FromInt32(from))
		p.EndPort = ptr.To(from + int32(g.pick(int(6-from))))
	}
	return p
}

func (g gen) rule() ([]networkingv1.NetworkPolicyPeer, []networkingv1.NetworkPolicyPort) {
	var peers []networkingv1.NetworkPolicyPeer
	var ports []networkingv1.NetworkPolicyPort
	if g.chance(0.85) {
		for range 1 + g.pick(2) {
			peers = append(peers, g.peer())
		}
	}
	if g.chance(0.6) {
		for range 1 + g.pick(2) {
			ports = append(ports, g.port())
		}
	}
	return peers, ports
}

func (g gen) policy(name string) networkingv1.NetworkPolicy {
	p := networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: diffNS}}
	if g.chance(0.5) {
		p.Spec.PodSelector = *g.selector(podAlphabet)
	}
	p.Spec.PolicyTypes = [][]networkingv1.PolicyType{nil, {ingress}, {egress}, {ingress, egress}}[g.pick(4)]
	for range g.pick(3) {
		from, ports := g.rule()
		p.Spec.Ingress = append(p.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: from, Ports: ports})
	}
	for range g.pick(3) {
		to, ports := g.rule()
		p.Spec.Egress = append(p.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: to, Ports: ports})
	}
	return p
}

func (g gen) input() FenceInput {
	in := FenceInput{Namespace: diffNS, NamespaceLabels: g.labels(nsAlphabet)}
	in.NamespaceLabels[nameLabel] = diffNS
	// Forensics namespaces among the alphabet's names (the fenced one
	// included, which is never permitted), so that the universe's "other"
	// stays a namespace nobody named.
	in.ForensicsNamespaces = [][]string{nil, {"forensics"}, {diffNS}, {"forensics", diffNS}, {"forensics", "forensics"}}[g.pick(5)]
	for i := range 1 + g.pick(2) {
		pod := Pod{Name: fmt.Sprintf("pod-%d", i), Labels: g.labels(podAlphabet)}
		for range g.pick(3) {
			name := append([]string{""}, portNames...)[g.pick(len(portNames)+1)]
			pod.Ports = append(pod.Ports, corev1.ContainerPort{Name: name, ContainerPort: int32(1 + g.pick(5)),
				Protocol: []corev1.Protocol{"", corev1.ProtocolUDP}[g.pick(2)]})
		}
		in.Pods = append(in.Pods, pod)
	}
	if g.chance(0.6) {
		// The fence's forensics peer by name, as careplane writes it, or by
		// any selector, as a fence written from an unchecked forensicsFrom
		// or forged by the tenant would.
		var from *metav1.LabelSelector
		switch {
		case g.chance(0.5) && len(in.ForensicsNamespaces) > 0:
			from = expr(nameLabel, metav1.LabelSelectorOpIn, in.ForensicsNamespaces...)
		case g.chance(0.5):
			from = g.selector(nsAlphabet)
		}
		in.Policies = append(in.Policies, fence(from))
		in.Policies[0].Namespace = diffNS
	}
	for i := range 1 + g.pick(3) {
		in.Policies = append(in.Policies, g.policy(fmt.Sprintf("np-%d", i)))
	}
	return in
}

// labelCombos returns every label set over the alphabet's keys, each key
// absent, set to a value used, or set to "zz", which nothing uses.
func labelCombos(alphabet map[string][]string) []map[string]string {
	out := []map[string]string{{}}
	for _, k := range slices.Sorted(maps.Keys(alphabet)) {
		if k == nameLabel {
			continue
		}
		var next []map[string]string
		for _, l := range out {
			next = append(next, l)
			for _, v := range append(slices.Clone(alphabet[k]), "zz") {
				m := maps.Clone(l)
				m[k] = v
				next = append(next, m)
			}
		}
		out = next
	}
	return out
}

func allAddrs(p netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for a := p.Addr(); p.Contains(a); a = a.Next() {
		out = append(out, a)
	}
	return out
}

// universe returns every distinguishable peer for the alphabet, the fenced
// namespace being only as labelled.
func universe(in FenceInput) []peer {
	var out []peer
	nsLabelSets := []map[string]string{maps.Clone(in.NamespaceLabels)}
	for _, name := range []string{"forensics", "other"} {
		for _, l := range labelCombos(nsAlphabet) {
			l[nameLabel] = name
			nsLabelSets = append(nsLabelSets, l)
		}
	}
	for _, nl := range nsLabelSets {
		for _, pl := range labelCombos(podAlphabet) {
			out = append(out, peer{internal: true, namespace: nl[nameLabel], nsLabels: nl, podLabels: pl})
		}
	}
	for _, a := range append(append(allAddrs(v4Space), allAddrs(v6Space)...), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db9::1")) {
		out = append(out, peer{addr: a})
	}
	return out
}

// universePorts returns every port number used and one more, on every
// protocol; on ingress under each name the pod declares for it, on egress
// under every name.
func universePorts(dir networkingv1.PolicyType, pod Pod) []port {
	var out []port
	for _, proto := range protocols {
		for n := int32(1); n <= 6; n++ {
			if dir == ingress {
				// A pod may declare a number twice under different names
				// (the API server only warns); each name resolves to it.
				out = append(out, port{proto, n, ""})
				for _, cp := range pod.Ports {
					if cp.ContainerPort == n && containerProtocol(cp) == proto && cp.Name != "" {
						out = append(out, port{proto, n, cp.Name})
					}
				}
				continue
			}
			for _, name := range append([]string{"", "zz"}, portNames...) {
				out = append(out, port{proto, n, name})
			}
		}
	}
	return out
}

// bruteForce decides the fence over the whole universe, straight from the
// definition: a flow is a breach when the policies allow it (allowed) and it
// is not ingress from forensics. Flows are attributed to fragments the same
// way, each searched over every peer and port together.
func bruteForce(t *testing.T, in FenceInput) Result {
	t.Helper()
	v, err := newVerifier(in)
	if err != nil {
		t.Fatal(err)
	}
	peers := universe(in)
	found := map[flowKey]map[string]bool{}
	for _, dir := range directions {
		for _, pod := range in.Pods {
			ports := universePorts(dir, pod)
			breach := false
		search:
			for _, p := range peers {
				if v.permitted(dir, p) {
					continue
				}
				for _, pt := range ports {
					if allowed(v.policies, dir, pod.Labels, p, pt) {
						breach = true
						break search
					}
				}
			}
			selected := false
			for _, pol := range v.policies {
				if !pol.selects(dir, pod.Labels) {
					continue
				}
				selected = true
				for _, f := range pol.fragments(dir) {
					if fragmentWitness(v, dir, f, peers, ports) {
						k := flowKey{dir, pod.Name, f.peerText(), f.portText()}
						if found[k] == nil {
							found[k] = map[string]bool{}
						}
						found[k][pol.name] = true
					}
				}
			}
			if !selected {
				found[flowKey{dir, pod.Name, "any", "any"}] = map[string]bool{}
			}
			hasFlow := false
			for k := range found {
				hasFlow = hasFlow || (k.dir == dir && k.pod == pod.Name)
			}
			if breach != hasFlow {
				t.Fatalf("%s %s: policy-level breach=%v but fragments disagree", dir, pod.Name, breach)
			}
		}
	}
	return resultOf(found)
}

func fragmentWitness(v *verifier, dir networkingv1.PolicyType, f fragment, peers []peer, ports []port) bool {
	for _, p := range peers {
		if v.permitted(dir, p) || (f.peer != nil && !f.peer.matches(p, v.namespace)) {
			continue
		}
		for _, pt := range ports {
			if f.port == nil || f.port.matches(pt) {
				return true
			}
		}
	}
	return false
}

// cases is how many random inputs each differential test draws.
func cases() int {
	if testing.Short() {
		return 100
	}
	return 600
}

// TestProbesFindWhatBruteForceFinds shows that the probes derived from the
// policies miss no breach, and no flow, that an exhaustive search finds.
func TestProbesFindWhatBruteForceFinds(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(1, 2))}
	isolated := 0
	for i := range cases() {
		in := g.input()
		got, err := VerifyFence(in)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		want := bruteForce(t, in)
		if got.Isolated != want.Isolated || !reflect.DeepEqual(got.Flows, want.Flows) {
			t.Fatalf("case %d: VerifyFence disagrees with brute force\ninput: %s\ngot:\n%s\nbrute force:\n%s", i, describe(in), Format(got), Format(want))
		}
		if got.Isolated {
			isolated++
		}
	}
	// Guard the generator: both verdicts must be well represented.
	if n := cases(); isolated < n/20 || isolated > n-n/20 {
		t.Errorf("generator produced %d isolated cases out of %d; tune it", isolated, n)
	}
	t.Logf("%d isolated cases out of %d", isolated, cases())
}

func describe(in FenceInput) string {
	return fmt.Sprintf("namespace labels %v, forensics namespaces %q, pods %+v, policies %+v", in.NamespaceLabels, in.ForensicsNamespaces, in.Pods, in.Policies)
}

// TestEngineAgreesWithCyclonus compares this package's engine with
// cyclonus's pkg/matcher, SIG Network's NetworkPolicy matcher, on every
// probe VerifyFence derives and a sample of the universe. Label selectors in
// cyclonus are swapped for apimachinery's (see TestCyclonusSelectorDeviations).
func TestEngineAgreesWithCyclonus(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(3, 4))}
	compared := 0
	for i := range cases() {
		in := g.input()
		v, err := newVerifier(in)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		oracle := newCyclonusOracle(in)
		all := universe(in)
		for _, dir := range directions {
			peers := v.peerProbes(dir)
			for range 60 {
				peers = append(peers, all[g.pick(len(all))])
			}
			for _, pod := range in.Pods {
				ports := v.portProbes(dir, pod)
				some := universePorts(dir, pod)
				for range 10 {
					ports = append(ports, some[g.pick(len(some))])
				}
				for _, p := range peers {
					for _, pt := range ports {
						ours := allowed(v.policies, dir, pod.Labels, p, pt)
						theirs := oracle.allowed(dir, in, pod, p, pt)
						if ours != theirs {
							t.Fatalf("case %d: %s %s peer %v port %v: engine says %v, cyclonus says %v\ninput: %s",
								i, dir, pod.Name, p, pt, ours, theirs, describe(in))
						}
						compared++
					}
				}
			}
		}
	}
	t.Logf("%d flows compared", compared)
}

type cyclonusOracle struct{ policy *matcher.Policy }

func newCyclonusOracle(in FenceInput) cyclonusOracle {
	var nps []*networkingv1.NetworkPolicy
	for i := range in.Policies {
		np := in.Policies[i].DeepCopy()
		// cyclonus expects what the API server stores: defaulted policyTypes.
		if len(np.Spec.PolicyTypes) == 0 {
			np.Spec.PolicyTypes = []networkingv1.PolicyType{ingress}
			if len(np.Spec.Egress) != 0 {
				np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, egress)
			}
		}
		nps = append(nps, np)
	}
	pol := matcher.BuildNetworkPolicies(false, nps)
	for _, targets := range []map[string]*matcher.Target{pol.Ingress, pol.Egress} {
		for _, target := range targets {
			for _, pm := range target.Peers {
				ppm, ok := pm.(*matcher.PodPeerMatcher)
				if !ok {
					continue
				}
				if s, ok := ppm.Pod.(*matcher.LabelSelectorPodMatcher); ok {
					ppm.Pod = podSelectorMatcher{mustSelector(s.Selector)}
				}
				if s, ok := ppm.Namespace.(*matcher.LabelSelectorNamespaceMatcher); ok {
					ppm.Namespace = nsSelectorMatcher{mustSelector(s.Selector)}
				}
			}
		}
	}
	return cyclonusOracle{pol}
}

// allowed mirrors matcher.Policy.IsIngressOrEgressAllowed, with the pod
// selection done by apimachinery.
func (o cyclonusOracle) allowed(dir networkingv1.PolicyType, in FenceInput, pod Pod, p peer, pt port) bool {
	other := &matcher.TrafficPeer{IP: internalIP}
	if p.internal {
		other.Internal = &matcher.InternalPeer{PodLabels: p.podLabels, NamespaceLabels: p.nsLabels, Namespace: p.namespace}
	} else {
		other.IP = p.addr.String()
	}
	targets := o.policy.Ingress
	if dir == egress {
		targets = o.policy.Egress
	}
	selected := false
	for _, target := range targets {
		if target.Namespace != in.Namespace || !mustSelector(target.PodSelector).Matches(labels.Set(pod.Labels)) {
			continue
		}
		selected = true
		if target.Allows(other, int(pt.num), pt.name, pt.proto) {
			return true
		}
	}
	return !selected
}

// podSelectorMatcher is a matcher.PodMatcher with apimachinery semantics.
type podSelectorMatcher struct{ sel labels.Selector }

func (m podSelectorMatcher) Allows(podLabels map[string]string) bool {
	return m.sel.Matches(labels.Set(podLabels))
}

func (m podSelectorMatcher) PrimaryKey() string { return "pods:" + m.sel.String() }

// nsSelectorMatcher is a matcher.NamespaceMatcher with apimachinery semantics.
type nsSelectorMatcher struct{ sel labels.Selector }

func (m nsSelectorMatcher) Allows(_ string, namespaceLabels map[string]string) bool {
	return m.sel.Matches(labels.Set(namespaceLabels))
}

func (m nsSelectorMatcher) PrimaryKey() string { return "namespaces:" + m.sel.String() }

func mustSelector(ls metav1.LabelSelector) labels.Selector {
	s, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil {
		panic(err)
	}
	return s
}

// TestCyclonusSelectorDeviations pins the two places where cyclonus v0.5.6's
// label matching differs from Kubernetes, which is why this package does not
// use it as its engine. If a cyclonus upgrade makes this fail, the
// substitution in newCyclonusOracle can go.
func TestCyclonusSelectorDeviations(t *testing.T) {
	tests := []struct {
		name     string
		selector metav1.LabelSelector
		labels   map[string]string
		want     bool // Kubernetes
	}{
		{"NotIn matches objects lacking the key", *expr("app", metav1.LabelSelectorOpNotIn, "db"), map[string]string{}, true},
		{"matchLabels with an empty value needs the key", *sel("tier", ""), map[string]string{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mustSelector(tt.selector).Matches(labels.Set(tt.labels)); got != tt.want {
				t.Fatalf("apimachinery says %v, want %v", got, tt.want)
			}
			if got := kube.IsLabelsMatchLabelSelector(tt.labels, tt.selector); got == tt.want {
				t.Errorf("cyclonus now agrees with Kubernetes (%v); the selector substitution in newCyclonusOracle may be dropped", got)
			}
		})
	}
}
