package netpol

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// verifier is one VerifyFence call's compiled input.
type verifier struct {
	namespace   string
	nsLabels    map[string]string
	forensics   *selector // kubernetes.io/metadata.name In (the forensics namespaces); nil: nothing is permitted
	policies    []*policy
	domain      domain
	unmentioned int32
}

func newVerifier(in FenceInput) (*verifier, error) {
	if in.Namespace == "" {
		return nil, fmt.Errorf("namespace name is empty")
	}
	v := &verifier{namespace: in.Namespace, nsLabels: maps.Clone(in.NamespaceLabels), domain: domain{}}
	if v.nsLabels == nil {
		v.nsLabels = map[string]string{}
	}
	v.nsLabels[nameLabel] = in.Namespace // the API server keeps it so
	if len(in.ForensicsNamespaces) > 0 {
		// By name only: the one label of a namespace nobody but the API
		// server sets.
		forensics, err := compileSelector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: nameLabel, Operator: metav1.LabelSelectorOpIn, Values: slices.Sorted(slices.Values(in.ForensicsNamespaces)),
		}}})
		if err != nil {
			return nil, fmt.Errorf("forensics namespaces: %w", err)
		}
		v.forensics = forensics
	}
	for i := range in.Policies {
		np := &in.Policies[i]
		if np.Namespace != "" && np.Namespace != in.Namespace {
			continue
		}
		pol, err := compilePolicy(np, in.Namespace)
		if err != nil {
			return nil, err
		}
		v.policies = append(v.policies, pol)
	}
	for k, val := range v.nsLabels {
		v.domain.add(k, val)
	}
	v.domain.addSelector(v.forensics)
	for _, pol := range v.policies {
		v.domain.addSelector(pol.pods)
		for _, rules := range pol.rules {
			for _, r := range rules {
				for _, ps := range r.peers {
					v.domain.addSelector(ps.ns)
					v.domain.addSelector(ps.pod)
				}
			}
		}
	}
	v.unmentioned = unmentionedPort(v.policies)
	return v, nil
}

// permitted reports whether traffic with p is the fence's one allowed flow:
// ingress from a pod in a named forensics namespace other than the fenced one.
func (v *verifier) permitted(dir networkingv1.PolicyType, p peer) bool {
	return dir == ingress && p.internal && p.namespace != v.namespace &&
		v.forensics != nil && v.forensics.matches(p.nsLabels)
}

// breaches reports whether the fragment allows some non-permitted peer on
// some port. Peer and port are independent (see the package doc), so the two
// searches are separate.
func (v *verifier) breaches(dir networkingv1.PolicyType, f fragment, peers []peer, ports []port) bool {
	peerFound := false
	for _, p := range peers {
		if !v.permitted(dir, p) && (f.peer == nil || f.peer.matches(p, v.namespace)) {
			peerFound = true
			break
		}
	}
	if !peerFound {
		return false
	}
	for _, pt := range ports {
		if f.port == nil || f.port.matches(pt) {
			return true
		}
	}
	return false
}

// VerifyFence decides whether the NetworkPolicies of a fenced namespace allow
// any flow into or out of a fenced pod, other than ingress from the named
// forensics namespaces, and lists the allowed flows. Ingress from any other
// namespace breaches, however a policy admits it: an empty
// namespaceSelector, a selector on labels a namespace's owner can set, an
// ipBlock. It returns an error only for input the API server would reject
// (an invalid selector, CIDR, port or peer, a forensics name that is not
// a label value), which it cannot evaluate faithfully; treat that as not
// verified.
func VerifyFence(in FenceInput) (Result, error) {
	v, err := newVerifier(in)
	if err != nil {
		return Result{}, err
	}
	found := map[flowKey]map[string]bool{}
	record := func(k flowKey, policy string) {
		if found[k] == nil {
			found[k] = map[string]bool{}
		}
		if policy != "" {
			found[k][policy] = true
		}
	}
	for _, dir := range directions {
		peers := v.peerProbes(dir)
		for _, pod := range in.Pods {
			var selecting []*policy
			for _, pol := range v.policies {
				if pol.selects(dir, pod.Labels) {
					selecting = append(selecting, pol)
				}
			}
			if len(selecting) == 0 {
				record(flowKey{dir, pod.Name, "any", "any"}, "")
				continue
			}
			ports := v.portProbes(dir, pod)
			for _, pol := range selecting {
				for _, f := range pol.fragments(dir) {
					if v.breaches(dir, f, peers, ports) {
						record(flowKey{dir, pod.Name, f.peerText(), f.portText()}, pol.name)
					}
				}
			}
		}
	}
	return resultOf(found), nil
}

// flowKey identifies an allowed flow; the policies allowing it are kept
// beside it (none: no policy selects the pod for that direction).
type flowKey struct {
	dir             networkingv1.PolicyType
	pod, peer, port string
}

// resultOf turns the allowed flows found into a Result, in a stable order.
func resultOf(found map[flowKey]map[string]bool) Result {
	res := Result{Isolated: len(found) == 0}
	for k, pols := range found {
		f := Flow{Direction: k.dir, Pod: k.pod, Peer: k.peer, Port: k.port}
		if len(pols) > 0 {
			f.Policies = slices.Sorted(maps.Keys(pols))
		}
		res.Flows = append(res.Flows, f)
	}
	slices.SortFunc(res.Flows, compareFlows)
	return res
}

func compareFlows(a, b Flow) int {
	return cmp.Or(
		cmp.Compare(a.Pod, b.Pod),
		cmp.Compare(slices.Index(directions, a.Direction), slices.Index(directions, b.Direction)),
		cmp.Compare(a.Peer, b.Peer),
		cmp.Compare(a.Port, b.Port),
	)
}
