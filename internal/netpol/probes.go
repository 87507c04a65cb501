package netpol

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// This file derives the finite probe sets that the package doc argues are
// enough to find every breach.

// nameLabel is the label the API server sets on every namespace to its name.
const nameLabel = corev1.LabelMetadataName

// baselineAddrs are external addresses probed whatever the policies say
// (TEST-NET-3 and the IPv6 documentation range).
var baselineAddrs = []netip.Addr{netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8:ffff::7")}

var protocols = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}

// domain holds, per label key, every value that a selector or the fenced
// namespace mentions for it. A label selector cannot tell apart two values
// that are both outside this list, so one fresh value stands for all of them.
type domain map[string][]string

func (d domain) add(key string, values ...string) {
	for _, v := range values {
		if !slices.Contains(d[key], v) {
			d[key] = append(d[key], v)
		}
	}
	slices.Sort(d[key])
}

func (d domain) addSelector(s *selector) {
	if s == nil {
		return
	}
	for _, r := range s.reqs {
		d.add(r.key, r.values...)
	}
}

// fresh returns a value for key that nothing mentions and that is not avoid.
func (d domain) fresh(key, avoid string) string {
	for i := 0; ; i++ {
		v := "careplane-probe"
		if i > 0 {
			v += "-" + strconv.Itoa(i)
		}
		if v != avoid && !slices.Contains(d[key], v) {
			return v
		}
	}
}

// solve returns a label set satisfying every requirement in reqs, or false
// when none exists. Requirements on different keys are independent, and on
// one key only "absent", the mentioned values and "anything else" can be
// told apart, so trying those options per key decides satisfiability.
//
// With otherNamespace set, the label set is that of a namespace other than
// it: kubernetes.io/metadata.name is present, not equal to otherNamespace,
// and a namespace name (a DNS label), because it is the namespace's name. A
// selector can mention other values for it, such as "" or "Tenant", which
// no namespace carries.
func (d domain) solve(reqs []requirement, otherNamespace string) (map[string]string, bool) {
	byKey := map[string][]requirement{}
	for _, r := range reqs {
		byKey[r.key] = append(byKey[r.key], r)
	}
	if otherNamespace != "" {
		byKey[nameLabel] = append(byKey[nameLabel], requirement{key: nameLabel, op: metav1.LabelSelectorOpNotIn, values: []string{otherNamespace}},
			requirement{key: nameLabel, op: metav1.LabelSelectorOpExists})
	}
	out := map[string]string{}
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		type option struct {
			value   string
			present bool
		}
		// Absent first and fresh before mentioned values keep probes
		// minimal and readable; the order does not affect completeness.
		opts := []option{{}, {d.fresh(key, otherNamespace), true}}
		for _, v := range d[key] {
			if key == nameLabel && otherNamespace != "" && len(validation.IsDNS1123Label(v)) > 0 {
				continue
			}
			opts = append(opts, option{v, true})
		}
		found := false
		for _, o := range opts {
			ok := true
			for _, r := range byKey[key] {
				if !r.matches(o.value, o.present) {
					ok = false
					break
				}
			}
			if ok {
				if o.present {
					out[key] = o.value
				}
				found = true
				break
			}
		}
		if !found {
			return nil, false
		}
	}
	return out, true
}

// nonForensics returns extra requirements, one alternative per element, that
// make a namespace a non-permitted peer for dir. One empty alternative means
// any namespace will do; on ingress with forensics namespaces, the one
// alternative is a name outside them.
func (v *verifier) nonForensics(dir networkingv1.PolicyType) [][]requirement {
	if dir != ingress || v.forensics == nil {
		return [][]requirement{nil}
	}
	var alts [][]requirement
	for _, r := range v.forensics.reqs {
		alts = append(alts, []requirement{r.negate()})
	}
	return alts
}

func (p peer) key() string {
	if !p.internal {
		return p.addr.String()
	}
	return p.namespace + "|" + labels.Set(p.nsLabels).String() + "|" + labels.Set(p.podLabels).String()
}

// peerProbes returns the peers probed for dir: the baseline (external
// addresses, an unlabelled pod in the fenced namespace, a pod in a
// non-permitted other namespace) and, for every peer clause of every policy,
// peers built to match it while not being permitted.
func (v *verifier) peerProbes(dir networkingv1.PolicyType) []peer {
	seen := map[string]bool{}
	var out []peer
	add := func(p peer) {
		if k := p.key(); !seen[k] {
			seen[k] = true
			out = append(out, p)
		}
	}
	internal := func(nsLabels, podLabels map[string]string) peer {
		return peer{internal: true, namespace: nsLabels[nameLabel], nsLabels: nsLabels, podLabels: podLabels}
	}
	for _, a := range baselineAddrs {
		add(peer{addr: a})
	}
	add(internal(v.nsLabels, map[string]string{}))
	alts := v.nonForensics(dir)
	for _, alt := range alts {
		if l, ok := v.domain.solve(alt, v.namespace); ok {
			add(internal(l, map[string]string{}))
		}
	}
	for _, pol := range v.policies {
		for _, r := range pol.rules[dir] {
			for _, ps := range r.peers {
				if ps.ip != nil {
					for _, a := range ipCandidates(ps.ip) {
						add(peer{addr: a})
					}
					continue
				}
				podLabels := map[string]string{}
				if ps.pod != nil {
					l, ok := v.domain.solve(ps.pod.reqs, "")
					if !ok {
						continue
					}
					podLabels = l
				}
				if ps.ns == nil || ps.ns.matches(v.nsLabels) {
					add(internal(v.nsLabels, podLabels))
				}
				if ps.ns == nil {
					continue
				}
				for _, alt := range alts {
					if l, ok := v.domain.solve(append(slices.Clone(ps.ns.reqs), alt...), v.namespace); ok {
						add(internal(l, podLabels))
					}
				}
			}
		}
	}
	return out
}

// ipCandidates returns the first address of the CIDR, the first address of
// each except, and the address right after each except. If the block holds
// any address, its lowest one is among these (see the package doc).
func ipCandidates(b *ipBlock) []netip.Addr {
	out := []netip.Addr{b.cidr.Addr()}
	for _, e := range b.except {
		out = append(out, e.Addr())
		if next := lastAddr(e).Next(); next.IsValid() && b.cidr.Contains(next) {
			out = append(out, next)
		}
	}
	return out
}

// lastAddr returns the highest address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// portProbes returns the ports probed for dir at pod: a port that no policy
// mentions, for each protocol, and a port matching each port clause when one
// exists. On ingress, a port's name is what the pod declares for it, and a
// named clause is probed only through the pod's ports of that name. On
// egress, the peer pod is unknown and may declare any name.
func (v *verifier) portProbes(dir networkingv1.PolicyType, pod Pod) []port {
	resolve := func(proto corev1.Protocol, num int32) string {
		if dir != ingress {
			return ""
		}
		for _, cp := range pod.Ports {
			if cp.ContainerPort == num && containerProtocol(cp) == proto {
				return cp.Name
			}
		}
		return ""
	}
	seen := map[port]bool{}
	var out []port
	add := func(p port) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, proto := range protocols {
		add(port{proto, v.unmentioned, resolve(proto, v.unmentioned)})
	}
	for _, pol := range v.policies {
		for _, r := range pol.rules[dir] {
			for _, ps := range r.ports {
				switch {
				case ps.port == nil:
					add(port{ps.proto, v.unmentioned, resolve(ps.proto, v.unmentioned)})
				case ps.port.Type == intstr.String && dir == ingress:
					for _, cp := range pod.Ports {
						if cp.Name == ps.port.StrVal && containerProtocol(cp) == ps.proto {
							add(port{ps.proto, cp.ContainerPort, cp.Name})
						}
					}
				case ps.port.Type == intstr.String:
					add(port{ps.proto, v.unmentioned, ps.port.StrVal})
				default:
					add(port{ps.proto, ps.port.IntVal, resolve(ps.proto, ps.port.IntVal)})
				}
			}
		}
	}
	return out
}

func containerProtocol(cp corev1.ContainerPort) corev1.Protocol {
	if cp.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return cp.Protocol
}

// unmentionedPort returns the lowest port number that no policy names and no
// range covers (1 in the absurd case that all are).
func unmentionedPort(policies []*policy) int32 {
	taken := func(n int32) bool {
		for _, pol := range policies {
			for _, rules := range pol.rules {
				for _, r := range rules {
					for _, ps := range r.ports {
						if ps.port == nil || ps.port.Type != intstr.Int {
							continue
						}
						if n == ps.port.IntVal || (ps.end > 0 && ps.port.IntVal <= n && n <= ps.end) {
							return true
						}
					}
				}
			}
		}
		return false
	}
	for n := int32(1); n <= 65535; n++ {
		if !taken(n) {
			return n
		}
	}
	return 1
}

// String renders a probe peer for debugging and test failures.
func (p peer) String() string {
	if !p.internal {
		return p.addr.String()
	}
	return "pod {" + labels.Set(p.podLabels).String() + "} in namespace " + p.namespace + " {" + labels.Set(p.nsLabels).String() + "}"
}

// String renders a probe port for debugging and test failures.
func (p port) String() string {
	s := string(p.proto) + "/" + strconv.Itoa(int(p.num))
	if p.name != "" {
		s += " (" + p.name + ")"
	}
	return s
}
