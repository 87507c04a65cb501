package netpol

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	netutils "k8s.io/utils/net"

	"github.com/careplane/careplane/internal/fuzzing"
)

// The differential tests draw labels and addresses from a small alphabet so
// that brute force stays exhaustive. These targets take keys, values and
// CIDRs from the fuzzer as strings instead, and check the two places where
// the verifier reasons about all of them at once: the label solver and the
// lowest address of an ipBlock.

// FuzzSelectorSolver builds a selector from fuzzed keys and values, and
// a witness label set. For every selector the API server accepts it checks
// that the engine's requirements match exactly what apimachinery matches,
// that negating a requirement matches exactly the other label sets, and
// that the solver is sound (its labels match) and complete (it finds labels
// whenever the witness shows some exist), for pods and for namespaces other
// than a given one.
func FuzzSelectorSolver(f *testing.F) {
	f.Add("app", "team", "web", "", "red", []byte{})
	f.Add("app", "app", "web", "db", "web", []byte{3, 200, 40, 90, 130, 7, 255, 0, 60})
	f.Add(nameLabel, "team", "tenant", "forensics", "tenant", []byte{4, 0, 60, 1, 130, 2, 200, 3, 255, 200, 128})
	f.Add("example.com/tier", "k", "a.b-c_d", "z", "careplane-probe", []byte{255, 255, 255, 255, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, k1, k2, v1, v2, v3 string, shape []byte) {
		r := fuzzing.Rand(shape)
		keys, values := []string{k1, k2, nameLabel}, []string{v1, v2, v3}
		ls := &metav1.LabelSelector{}
		for range r.IntN(5) {
			k := keys[r.IntN(len(keys))]
			vals := []string{values[r.IntN(len(values))]}
			if r.IntN(3) == 0 {
				vals = append(vals, values[r.IntN(len(values))])
			}
			op := []metav1.LabelSelectorOperator{"", metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn,
				metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist}[r.IntN(5)]
			switch op {
			case "":
				if ls.MatchLabels == nil {
					ls.MatchLabels = map[string]string{}
				}
				ls.MatchLabels[k] = vals[0]
			case metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist:
				ls.MatchExpressions = append(ls.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: op})
			default:
				ls.MatchExpressions = append(ls.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: op, Values: vals})
			}
		}
		witness := map[string]string{}
		for _, k := range keys {
			if i := r.IntN(len(values) + 1); i < len(values) {
				witness[k] = values[i]
			}
		}
		other := ""
		if r.IntN(2) == 0 {
			other = values[r.IntN(len(values))]
		}
		if len(metav1validation.ValidateLabelSelector(ls, metav1validation.LabelSelectorValidationOptions{}, nil)) > 0 ||
			len(metav1validation.ValidateLabels(witness, field.NewPath("witness"))) > 0 ||
			(other != "" && len(validation.IsDNS1123Label(other)) > 0) {
			return // not something the API server holds
		}

		s, err := compileSelector(ls)
		if err != nil {
			t.Fatalf("selector %v the API server accepts does not compile: %v", ls, err)
		}
		all := true
		for _, req := range s.reqs {
			v, present := witness[req.key]
			m := req.matches(v, present)
			all = all && m
			if req.negate().matches(v, present) == m {
				t.Fatalf("requirement %+v and its negation agree on %v", req, witness)
			}
		}
		if all != s.matches(witness) {
			t.Fatalf("selector %s: requirements say %v, apimachinery says %v on %v", s.text, all, !all, witness)
		}

		d := domain{}
		d.addSelector(s)
		got, ok := d.solve(s.reqs, other)
		if ok {
			if !s.matches(got) {
				t.Fatalf("solver's labels %v do not match %s", got, s.text)
			}
			if other != "" && (!isNamespaceName(got[nameLabel]) || got[nameLabel] == other) {
				t.Fatalf("solver's namespace labels %v name no namespace other than %q", got, other)
			}
			if errs := metav1validation.ValidateLabels(got, field.NewPath("solved")); len(errs) > 0 {
				t.Fatalf("solver's labels %v are not labels: %v", got, errs)
			}
		}
		witnessFits := s.matches(witness) && (other == "" || (isNamespaceName(witness[nameLabel]) && witness[nameLabel] != other))
		if witnessFits && !ok {
			t.Fatalf("solver finds no labels for %s (other than namespace %q), but %v match", s.text, other, witness)
		}
	})
}

func isNamespaceName(s string) bool { return len(validation.IsDNS1123Label(s)) == 0 }

// FuzzIPBlock verifies an egress allow to a fuzzed ipBlock behind a deny-all
// policy. VerifyFence must not panic on any input. For a block the API
// server accepts (including what it accepted before strict CIDR validation,
// which a cluster keeps across upgrades) it must not fail; the block must
// contain an address exactly when the API server's own parsing (net.IPNet,
// as in its "except must be a strict subset" check) says so; and the flow
// must be reported exactly when the block holds an address, which is
// checked exhaustively for blocks of up to 1024 addresses and otherwise
// with the fuzzed address as a witness.
func FuzzIPBlock(f *testing.F) {
	f.Add("10.0.0.0/8", "10.1.0.0/16", "", "10.1.2.3")
	f.Add("10.0.0.0/30", "10.0.0.0/31", "10.0.0.2/31", "10.0.0.3")
	f.Add("2001:db8::/120", "2001:db8::/121", "2001:db8::80/122", "2001:db8::c1")
	f.Add("0.0.0.0/0", "128.0.0.0/1", "", "255.255.255.255")
	// Forms only servers without strict CIDR validation accept: leading
	// zeros, host bits, IPv4-mapped IPv6.
	f.Add("010.000.0.0/8", "10.0.0.1/32", "", "10.0.0.1")
	f.Add("10.0.0.0/8", "10.1.0.1/16", "::ffff:10.2.0.0/112", "10.2.0.1")
	f.Add("::ffff:10.0.0.0/104", "", "", "10.1.2.3")
	f.Fuzz(func(t *testing.T, cidr, except1, except2, addr string) {
		var excepts []string
		for _, e := range []string{except1, except2} {
			if e != "" {
				excepts = append(excepts, e)
			}
		}
		in := FenceInput{Namespace: testNS, NamespaceLabels: testNSLabels, Pods: []Pod{webPod},
			Policies: []networkingv1.NetworkPolicy{fence(nil), allowOut("to-block", peers(ipPeer(cidr, excepts...)))}}
		res, err := VerifyFence(in)
		if len(fuzzing.ValidateNetworkPolicy(&in.Policies[1], false)) > 0 {
			return // rejected by the API server, as VerifyFence may reject it
		}
		if err != nil {
			t.Fatalf("ipBlock %s except %v: the API server accepts it, VerifyFence fails: %v", cidr, excepts, err)
		}
		b, err := compileIPBlock(in.Policies[1].Spec.Egress[0].To[0].IPBlock)
		if err != nil {
			t.Fatal(err)
		}
		if !b.cidr.IsValid() {
			t.Fatalf("ipBlock %s compiles to an invalid prefix", cidr)
		}
		contains := apiServerContains(cidr, excepts)

		if a, err := netip.ParseAddr(addr); err == nil && a.Zone() == "" && !a.Is4In6() {
			if got, want := b.contains(a), contains(a); got != want {
				t.Fatalf("ipBlock %s except %v: contains(%s) = %v, the API server's parsing says %v", cidr, excepts, a, got, want)
			}
			if b.contains(a) && !slices.ContainsFunc(ipCandidates(b), b.contains) {
				t.Fatalf("ipBlock %s except %v holds %s, but none of the candidates %v", cidr, excepts, a, ipCandidates(b))
			}
			if b.contains(a) && res.Isolated {
				t.Fatalf("ipBlock %s except %v holds %s, but VerifyFence reports no flow", cidr, excepts, a)
			}
		}
		if p := b.cidr; p.Addr().BitLen()-p.Bits() <= 10 {
			holds := false
			for a := p.Addr(); p.Contains(a) && !holds; a = a.Next() {
				holds = contains(a)
			}
			if holds == res.Isolated {
				t.Fatalf("ipBlock %s except %v holds an address: %v; VerifyFence says isolated: %v\n%s", cidr, excepts, holds, res.Isolated, Format(res))
			}
		}
	})
}

// apiServerContains returns whether an address is in cidr minus excepts, as
// the API server's net.IPNet reading of them has it.
func apiServerContains(cidr string, excepts []string) func(netip.Addr) bool {
	_, block, _ := netutils.ParseCIDRSloppy(cidr)
	var out []*net.IPNet
	for _, e := range excepts {
		_, n, _ := netutils.ParseCIDRSloppy(e)
		out = append(out, n)
	}
	return func(a netip.Addr) bool {
		ip := net.IP(a.AsSlice())
		if !block.Contains(ip) {
			return false
		}
		for _, n := range out {
			if n.Contains(ip) {
				return false
			}
		}
		return true
	}
}
