// Package netpol decides whether the NetworkPolicies of a fenced namespace let
// any traffic into or out of a fenced pod, and lists the flows they allow.
//
// It backs the IsolationVerified condition of a fenced HealthEnvironment and
// the `kubectl careplane verify` table. It is pure: the caller gathers the
// namespace, its pods, every NetworkPolicy in it (whoever created them) and
// the namespaces spec.isolation.forensicsFrom names, and calls [VerifyFence].
//
// # Semantics
//
// The rules are those of networking.k8s.io/v1 as SIG Network specifies them:
//
//   - A pod that no policy selects for a direction is unrestricted in that
//     direction. A namespace holding only a deny-all-ingress policy therefore
//     leaks on egress.
//   - policyTypes defaults like the API server does: Ingress always, plus Egress
//     when the policy has egress rules.
//   - Allows add up: traffic is allowed when any rule of any policy that selects
//     the pod allows it. There is no deny.
//   - A rule with no peers allows every peer, and a rule with no ports allows
//     every port. `ingress: [{}]` therefore allows everything. A peer `{}` with
//     no field set is rejected by API validation, and VerifyFence rejects it too.
//   - A peer with only podSelector means pods in the policy's own namespace. A
//     peer with namespaceSelector `{}` means every namespace, but not IPs
//     outside the cluster. A namespaceSelector and podSelector in the same peer
//     must both match, while separate peers are alternatives.
//   - ipBlock matches CIDR minus the excepts, as a set. The API rejects an
//     except that is not a strict subset of the CIDR. If such a policy reaches
//     us anyway, it matches nothing. The same is true of excepts whose union
//     covers the CIDR.
//   - Ports: protocol defaults to TCP. A port with endPort is an inclusive range.
//     A named port in an ingress rule matches only when the fenced pod declares
//     a container port with that name and protocol, which is why [Pod] carries
//     its ports.
//   - Label selectors follow k8s.io/apimachinery. NotIn and DoesNotExist match
//     objects that lack the key. matchLabels {k: ""} requires k to be present.
//
// Ingress is permitted from pods in the forensics namespaces, which the
// caller names (spec.isolation.forensicsFrom names them by
// kubernetes.io/metadata.name), and only from those pods. It is never
// permitted from the fenced namespace itself, even if it is named, and never
// from an IP block. No names permit nothing. The verifier takes names, not a
// selector, because every other label of a namespace can be set by whoever
// writes the namespace, a tenant included: a policy that admits namespaces by
// such a label (or by namespaceSelector {}) admits namespaces nobody named,
// and breaches. Every other allowed flow breaches the fence.
//
// Each direction is judged on the fenced pod's side only. A flow counts as
// allowed when this namespace's policies allow it for the fenced pod, whatever
// the peer's own policies say. For a peer in the same namespace this
// over-approximates, which is safe for a verifier.
//
// # Why the probe set finds every breach
//
// The engine only answers questions about concrete traffic. VerifyFence
// derives a finite set of probes from the policies and asks the engine about
// them. Read "allowed" as "allowed and not permitted". The argument that
// checking these probes is exhaustive runs as follows:
//
//  1. With no policy selecting the pod for a direction, every flow is allowed.
//     An external address is never permitted, so this is a breach.
//     The flow is reported with peer "any" and no policies.
//  2. Otherwise, by union semantics, traffic is allowed when some fragment
//     allows it. A fragment is (policy, rule, one peer of the rule or "any",
//     one port of the rule or "any"). Whether a fragment matches a peer and
//     whether it matches a port are independent: the name of a port is
//     resolved against the fenced pod on ingress and against the unknown peer
//     pod on egress, never against the peer clause. The forensics exemption
//     depends only on the peer. So a fragment breaches exactly when some
//     non-permitted peer matches it and some port matches it. Both questions
//     are decided separately over finite candidate sets, and each fragment that
//     breaches becomes one reported [Flow].
//  3. Ports. For each port clause we build a port that matches it, if one
//     exists: the number itself, the first port of a range, "any" for a
//     protocol-only clause, or a number no policy mentions for rules without
//     ports. A named clause gets, on ingress, each container port of the pod
//     with that name and protocol (none, so no breach, when the pod does not
//     declare it). On egress it gets the name itself, because the peer pod may
//     declare any name.
//  4. IP blocks. Let C be the CIDR and E1..En the excepts. If C minus the
//     union of the Ei is non-empty, take its lowest address. That address is
//     either the first address of C or the address just after the last address
//     of some Ei. We probe exactly those addresses, and also one address inside
//     each except and two addresses (IPv4 and IPv6) that are likely outside
//     every block.
//  5. Selectors. Every selector is a conjunction of per-key requirements (In,
//     NotIn, Exists, DoesNotExist). Such a requirement can only tell apart
//     "key absent", each value that some selector mentions for that key, and
//     any other value. So a conjunction is satisfiable exactly when, for each
//     key, one of {absent, each mentioned value, one fresh value} satisfies the
//     requirements on that key. The solver picks, key by key, the first option
//     that works. A pod peer (namespaceSelector S, podSelector P) breaches
//     ingress in one of two ways. Either the peer is in the fenced namespace
//     (S nil, or S matches its labels) and P is satisfiable. Or some other
//     namespace satisfies S and not F, and P is satisfiable, where F is
//     "kubernetes.io/metadata.name In (the forensics namespaces)". "Not F" is
//     its negation, NotIn those names, so we solve S with it: a namespace
//     with the labels S asks for and a name nobody listed, which is how a
//     selector on a forgeable label such as team=forensics is caught.
//     The namespace name is the value of its kubernetes.io/metadata.name label,
//     which is therefore always present, a DNS label (so mentioned values
//     that are not, such as "", are no options for it) and never equal to
//     the fenced name.
//     With no forensics namespaces, or on egress, S alone is solved.
//
// The tests check this argument by brute force. Over random policy sets they
// compare VerifyFence with an exhaustive search of a larger probe universe
// (every label combination over the generator's alphabet, every address in
// the generated CIDR space, every port). They also compare the engine with
// github.com/mattfenwick/cyclonus/pkg/matcher.
//
// # Engine
//
// The rules above are evaluated by a small engine in this package. It is
// tested against cyclonus, SIG Network's NetworkPolicy matcher, and is not
// linked to it, for two reasons found while wiring cyclonus in. First,
// cyclonus's pkg/kube ships Ginkgo code in non-test files (*_tests.go).
// Importing pkg/matcher therefore registers about 50 -ginkgo.* flags on
// flag.CommandLine and replaces its Usage in the manager and plugin binaries.
// Second, its label matching differs from Kubernetes in two cases: NotIn
// does not match objects lacking the key, and matchLabels {k: ""} matches
// objects lacking k. The first of these would miss a leftover policy whose
// podSelector is `app NotIn (db)` when the fenced pods carry no app label.
// The differential test uses cyclonus with apimachinery's label matching
// substituted. A separate test pins both deviations, so a cyclonus release
// that fixes them will be noticed.
//
// # Limits
//
// This is verification of policy, not of packets. It does not see:
//
//   - AdminNetworkPolicy, ClusterNetworkPolicy, BaselineAdminNetworkPolicy,
//     or CNI-specific policy (Calico, Cilium). An admin-tier Allow overrides
//     namespace policies, so the caller must check those separately.
//   - Established connections that a CNI keeps alive across a policy change.
//   - Traffic that NetworkPolicy does not govern: host-network pods, and the
//     kubelet's probes from the node.
//   - CNIs that implement the spec partially, for example ignoring endPort.
//
// It also approximates in two places, both towards reporting more:
//
//   - An egress named port is assumed to resolve on any peer, including an
//     ipBlock address that may be a pod's.
//   - An ipBlock peer is never treated as permitted, even if the forensics
//     pods' IPs fall inside it.
//
// With no fenced pods, the result is vacuously isolated.
package netpol
