package netpol

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	netutils "k8s.io/utils/net"
)

// This file is the engine: NetworkPolicy v1 semantics over concrete traffic
// (a peer and a port), plus the compiled form of policies it works on.

const (
	ingress = networkingv1.PolicyTypeIngress
	egress  = networkingv1.PolicyTypeEgress
)

// directions in report order.
var directions = []networkingv1.PolicyType{ingress, egress}

// requirement is one term of a label selector, matchLabels included as In.
type requirement struct {
	key    string
	op     metav1.LabelSelectorOperator
	values []string
}

// matches evaluates the requirement on one key's value with apimachinery's
// semantics: NotIn and DoesNotExist match when the key is absent.
func (r requirement) matches(value string, present bool) bool {
	switch r.op {
	case metav1.LabelSelectorOpIn:
		return present && slices.Contains(r.values, value)
	case metav1.LabelSelectorOpNotIn:
		return !present || !slices.Contains(r.values, value)
	case metav1.LabelSelectorOpExists:
		return present
	case metav1.LabelSelectorOpDoesNotExist:
		return !present
	}
	return false
}

// negate returns the requirement matching exactly the label sets r does not.
func (r requirement) negate() requirement {
	n := r
	switch r.op {
	case metav1.LabelSelectorOpIn:
		n.op = metav1.LabelSelectorOpNotIn
	case metav1.LabelSelectorOpNotIn:
		n.op = metav1.LabelSelectorOpIn
	case metav1.LabelSelectorOpExists:
		n.op = metav1.LabelSelectorOpDoesNotExist
	case metav1.LabelSelectorOpDoesNotExist:
		n.op = metav1.LabelSelectorOpExists
	}
	return n
}

// selector is a compiled, non-nil metav1.LabelSelector.
type selector struct {
	sel  labels.Selector
	reqs []requirement
	text string
}

// compileSelector returns nil for a nil selector.
func compileSelector(ls *metav1.LabelSelector) (*selector, error) {
	if ls == nil {
		return nil, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, err
	}
	s := &selector{sel: sel, text: sel.String()}
	for _, k := range slices.Sorted(maps.Keys(ls.MatchLabels)) {
		s.reqs = append(s.reqs, requirement{key: k, op: metav1.LabelSelectorOpIn, values: []string{ls.MatchLabels[k]}})
	}
	for _, e := range ls.MatchExpressions {
		s.reqs = append(s.reqs, requirement{key: e.Key, op: e.Operator, values: e.Values})
	}
	return s, nil
}

func (s *selector) empty() bool { return len(s.reqs) == 0 }

func (s *selector) matches(l map[string]string) bool { return s.sel.Matches(labels.Set(l)) }

// ipBlock is a compiled NetworkPolicyPeer.ipBlock: cidr minus except.
type ipBlock struct {
	cidr   netip.Prefix
	except []netip.Prefix
}

func (b *ipBlock) contains(a netip.Addr) bool {
	if !b.cidr.Contains(a) {
		return false
	}
	for _, e := range b.except {
		if e.Contains(a) {
			return false
		}
	}
	return true
}

// peerSpec is one NetworkPolicyPeer.
type peerSpec struct {
	ip   *ipBlock
	ns   *selector // nil: the policy's own namespace
	pod  *selector // nil: every pod
	text string
}

// portSpec is one NetworkPolicyPort.
type portSpec struct {
	proto corev1.Protocol
	port  *intstr.IntOrString // nil: every port of proto
	end   int32               // > 0: port is the first of the range port..end
	text  string
}

// rule is one ingress or egress rule; no peers (ports) means every peer (port).
type rule struct {
	peers []peerSpec
	ports []portSpec
}

// policy is a compiled NetworkPolicy in the fenced namespace.
type policy struct {
	name      string
	namespace string
	pods      *selector
	types     map[networkingv1.PolicyType]bool
	rules     map[networkingv1.PolicyType][]rule
}

// peer is the other end of a probe: a pod (internal) or an address.
type peer struct {
	internal  bool
	namespace string
	nsLabels  map[string]string
	podLabels map[string]string
	addr      netip.Addr // external peers only
}

// port is the destination port of a probe, with the name it resolves to at
// the destination pod ("" when the pod declares no such port).
type port struct {
	proto corev1.Protocol
	num   int32
	name  string
}

func (s *peerSpec) matches(p peer, policyNamespace string) bool {
	if s.ip != nil {
		return !p.internal && s.ip.contains(p.addr)
	}
	if !p.internal {
		return false
	}
	if s.ns == nil {
		if p.namespace != policyNamespace {
			return false
		}
	} else if !s.ns.matches(p.nsLabels) {
		return false
	}
	return s.pod == nil || s.pod.matches(p.podLabels)
}

func (s *portSpec) matches(p port) bool {
	if s.proto != p.proto {
		return false
	}
	switch {
	case s.port == nil:
		return true
	case s.port.Type == intstr.String:
		return p.name != "" && p.name == s.port.StrVal
	case s.end > 0:
		return s.port.IntVal <= p.num && p.num <= s.end
	default:
		return s.port.IntVal == p.num
	}
}

func (r *rule) allows(p peer, pt port, policyNamespace string) bool {
	peerOK := len(r.peers) == 0
	for i := range r.peers {
		if r.peers[i].matches(p, policyNamespace) {
			peerOK = true
			break
		}
	}
	if !peerOK {
		return false
	}
	if len(r.ports) == 0 {
		return true
	}
	for i := range r.ports {
		if r.ports[i].matches(pt) {
			return true
		}
	}
	return false
}

// selects reports whether the policy applies to a pod for a direction.
func (pol *policy) selects(dir networkingv1.PolicyType, podLabels map[string]string) bool {
	return pol.types[dir] && pol.pods.matches(podLabels)
}

// allows reports whether one of the policy's rules for dir allows the traffic.
func (pol *policy) allows(dir networkingv1.PolicyType, p peer, pt port) bool {
	for i := range pol.rules[dir] {
		if pol.rules[dir][i].allows(p, pt, pol.namespace) {
			return true
		}
	}
	return false
}

// allowed is the verdict for one concrete flow to (ingress) or from (egress)
// a pod: allowed when no policy selects the pod for dir, or when one of those
// that do allows it.
func allowed(policies []*policy, dir networkingv1.PolicyType, podLabels map[string]string, p peer, pt port) bool {
	selected := false
	for _, pol := range policies {
		if pol.selects(dir, podLabels) {
			if pol.allows(dir, p, pt) {
				return true
			}
			selected = true
		}
	}
	return !selected
}

// fragment is a rule narrowed to one of its peers and one of its ports; a nil
// peer (port) stands for a rule without peers (ports). A rule allows exactly
// the union of what its fragments allow.
type fragment struct {
	policy string
	peer   *peerSpec
	port   *portSpec
}

func (f fragment) peerText() string {
	if f.peer == nil {
		return "any"
	}
	return f.peer.text
}

func (f fragment) portText() string {
	if f.port == nil {
		return "any"
	}
	return f.port.text
}

func (pol *policy) fragments(dir networkingv1.PolicyType) []fragment {
	var out []fragment
	for i := range pol.rules[dir] {
		r := &pol.rules[dir][i]
		peers := []*peerSpec{nil}
		if len(r.peers) > 0 {
			peers = peers[:0]
			for j := range r.peers {
				peers = append(peers, &r.peers[j])
			}
		}
		ports := []*portSpec{nil}
		if len(r.ports) > 0 {
			ports = ports[:0]
			for j := range r.ports {
				ports = append(ports, &r.ports[j])
			}
		}
		for _, pe := range peers {
			for _, po := range ports {
				out = append(out, fragment{policy: pol.name, peer: pe, port: po})
			}
		}
	}
	return out
}

// compilePolicy validates np as the API server would (for what matters to
// its meaning), applies policyTypes defaulting and compiles it.
func compilePolicy(np *networkingv1.NetworkPolicy, namespace string) (*policy, error) {
	errf := func(path, format string, args ...any) error {
		return fmt.Errorf("NetworkPolicy %s/%s: %s: %s", namespace, np.Name, path, fmt.Sprintf(format, args...))
	}
	pods, err := compileSelector(&np.Spec.PodSelector)
	if err != nil {
		return nil, errf("spec.podSelector", "%v", err)
	}
	pol := &policy{
		name:      np.Name,
		namespace: namespace,
		pods:      pods,
		types:     map[networkingv1.PolicyType]bool{},
		rules:     map[networkingv1.PolicyType][]rule{},
	}
	types := np.Spec.PolicyTypes
	if len(types) == 0 {
		// SetDefaults_NetworkPolicy: Ingress always, Egress when there are
		// egress rules.
		types = []networkingv1.PolicyType{ingress}
		if len(np.Spec.Egress) != 0 {
			types = append(types, egress)
		}
	}
	for i, t := range types {
		if t != ingress && t != egress {
			return nil, errf(fmt.Sprintf("spec.policyTypes[%d]", i), "unsupported value %q", t)
		}
		pol.types[t] = true
	}
	for i, r := range np.Spec.Ingress {
		cr, err := compileRule(r.From, r.Ports, namespace, func(p string, f string, a ...any) error {
			return errf(fmt.Sprintf("spec.ingress[%d].%s", i, p), f, a...)
		}, "from")
		if err != nil {
			return nil, err
		}
		pol.rules[ingress] = append(pol.rules[ingress], cr)
	}
	for i, r := range np.Spec.Egress {
		cr, err := compileRule(r.To, r.Ports, namespace, func(p string, f string, a ...any) error {
			return errf(fmt.Sprintf("spec.egress[%d].%s", i, p), f, a...)
		}, "to")
		if err != nil {
			return nil, err
		}
		pol.rules[egress] = append(pol.rules[egress], cr)
	}
	return pol, nil
}

func compileRule(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, namespace string,
	errf func(path, format string, args ...any) error, peersField string) (rule, error) {
	var r rule
	for i, p := range peers {
		path := fmt.Sprintf("%s[%d]", peersField, i)
		ps, err := compilePeer(p, namespace)
		if err != nil {
			return r, errf(path, "%v", err)
		}
		r.peers = append(r.peers, ps)
	}
	for i, p := range ports {
		ps, err := compilePort(p)
		if err != nil {
			return r, errf(fmt.Sprintf("ports[%d]", i), "%v", err)
		}
		r.ports = append(r.ports, ps)
	}
	return r, nil
}

func compilePeer(p networkingv1.NetworkPolicyPeer, namespace string) (peerSpec, error) {
	if p.IPBlock != nil {
		if p.PodSelector != nil || p.NamespaceSelector != nil {
			return peerSpec{}, fmt.Errorf("may not specify both ipBlock and another peer")
		}
		b, err := compileIPBlock(p.IPBlock)
		if err != nil {
			return peerSpec{}, err
		}
		text := b.cidr.String()
		if len(b.except) > 0 {
			ex := make([]string, len(b.except))
			for i, e := range b.except {
				ex[i] = e.String()
			}
			text += " except " + strings.Join(ex, ", ")
		}
		return peerSpec{ip: b, text: text}, nil
	}
	if p.PodSelector == nil && p.NamespaceSelector == nil {
		return peerSpec{}, fmt.Errorf("must specify a peer")
	}
	ns, err := compileSelector(p.NamespaceSelector)
	if err != nil {
		return peerSpec{}, fmt.Errorf("namespaceSelector: %w", err)
	}
	pod, err := compileSelector(p.PodSelector)
	if err != nil {
		return peerSpec{}, fmt.Errorf("podSelector: %w", err)
	}
	if pod != nil && pod.empty() {
		pod = nil // podSelector {} and no podSelector both mean every pod
	}
	text := "any pod"
	if pod != nil {
		text = "pods {" + pod.text + "}"
	}
	switch {
	case ns == nil:
		text += " in namespace " + namespace
	case ns.empty():
		text += " in any namespace"
	default:
		text += " in namespaces {" + ns.text + "}"
	}
	return peerSpec{ns: ns, pod: pod, text: text}, nil
}

func compileIPBlock(b *networkingv1.IPBlock) (*ipBlock, error) {
	cidr, err := parseCIDR(b.CIDR)
	if err != nil {
		return nil, fmt.Errorf("ipBlock.cidr: %w", err)
	}
	out := &ipBlock{cidr: cidr}
	for i, e := range b.Except {
		ex, err := parseCIDR(e)
		if err != nil {
			return nil, fmt.Errorf("ipBlock.except[%d]: %w", i, err)
		}
		out.except = append(out.except, ex)
	}
	return out, nil
}

// parseCIDR parses like the API server's legacy validation does (leading
// zeros tolerated) and masks host bits, as CNIs do. An IPv4-mapped IPv6
// CIDR, which only servers without strict CIDR validation accept (and
// clusters keep across upgrades), is the IPv4 CIDR it maps:
// ::ffff:10.0.0.0/104 is 10.0.0.0/8, as net.IPNet reads it and as the API
// server's warning about such values says.
func parseCIDR(s string) (netip.Prefix, error) {
	_, ipnet, err := netutils.ParseCIDRSloppy(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	addr, ok := netip.AddrFromSlice(ipnet.IP)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR address: %s", s)
	}
	ones, _ := ipnet.Mask.Size()
	if addr.Is4In6() {
		// Masked, the address keeps its ::ffff: prefix only when ones >= 96.
		addr, ones = addr.Unmap(), ones-96
	}
	p := netip.PrefixFrom(addr, ones)
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR: %s", s)
	}
	return p.Masked(), nil
}

func compilePort(p networkingv1.NetworkPolicyPort) (portSpec, error) {
	ps := portSpec{proto: corev1.ProtocolTCP, port: p.Port}
	if p.Protocol != nil {
		ps.proto = *p.Protocol
	}
	switch ps.proto {
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		return ps, fmt.Errorf("protocol: unsupported value %q", ps.proto)
	}
	what := "any"
	if p.Port != nil {
		if p.Port.Type == intstr.String {
			if p.Port.StrVal == "" {
				return ps, fmt.Errorf("port: must not be empty")
			}
			what = p.Port.StrVal
		} else {
			if p.Port.IntVal < 1 || p.Port.IntVal > 65535 {
				return ps, fmt.Errorf("port: %d is not between 1 and 65535", p.Port.IntVal)
			}
			what = strconv.Itoa(int(p.Port.IntVal))
		}
	}
	if p.EndPort != nil {
		switch {
		case p.Port == nil || p.Port.Type == intstr.String:
			return ps, fmt.Errorf("endPort: requires a numeric port")
		case *p.EndPort < p.Port.IntVal || *p.EndPort > 65535:
			return ps, fmt.Errorf("endPort: %d must be between port %d and 65535", *p.EndPort, p.Port.IntVal)
		}
		ps.end = *p.EndPort
		what += "-" + strconv.Itoa(int(ps.end))
	}
	ps.text = string(ps.proto) + "/" + what
	return ps, nil
}
