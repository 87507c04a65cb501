// Package fuzzing holds what careplane's fuzz tests share: a random source
// the fuzzer steers, and the API server's validation of the objects they
// build, so that "the API server would accept this" can be asserted, or
// assumed, without an API server. Only tests import it.
package fuzzing

import (
	"bytes"
	"math/rand/v2"

	networkingv1 "k8s.io/api/networking/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	netutils "k8s.io/utils/net"
)

// Rand returns a *rand.Rand whose choices are read from data, one byte per
// call to the source. Generators written against *rand.Rand (Intn, Float64,
// ...) then become decoders of fuzz input: the fuzzer's mutation of one byte
// changes one choice, which coverage guidance can follow, where a mutated
// seed would change every choice at once. Past the end of data a fixed PCG
// continues, so every input, the empty one included, decodes to a complete
// value, and rejection sampling inside rand.Rand always terminates.
func Rand(data []byte) *rand.Rand {
	return rand.New(&byteSource{data: data, rest: rand.NewPCG(0x6361726570, 0x6c616e65)})
}

// Seeds are inputs that take a decoder written against Rand to its
// extremes, for f.Add: the empty input (decoded by the PCG alone), every
// choice the first option, every choice the last, and two mixes.
func Seeds() [][]byte {
	mix := make([]byte, 1024)
	for i := range mix {
		mix[i] = byte(i * 37)
	}
	return [][]byte{
		{},
		bytes.Repeat([]byte{0x00}, 1024),
		bytes.Repeat([]byte{0xff}, 1024),
		bytes.Repeat([]byte{0x80, 0x40, 0xc0}, 342),
		mix,
	}
}

type byteSource struct {
	data []byte
	rest rand.Source
}

// Uint64 spreads one byte over all eight, so that both the high bits (which
// rand.Rand.IntN uses for most bounds) and the low bits (which it uses for
// powers of two, and Float64 uses) follow the byte: 0x00 is the first
// option, 0xff the last. Bit 31 is set so that 0x00 is not 0, which
// IntN's rejection sampling would refuse for every bound that is not a
// power of two, reading the next byte instead; it changes no choice
// among fewer than 2^31 options.
func (s *byteSource) Uint64() uint64 {
	if len(s.data) == 0 {
		return s.rest.Uint64()
	}
	b := s.data[0]
	s.data = s.data[1:]
	return uint64(b)*0x0101010101010101 | 1<<31
}

// ValidateNetworkPolicy returns the errors the API server's validation of a
// new NetworkPolicy finds in np: ValidateNetworkPolicy of
// k8s.io/kubernetes/pkg/apis/networking/validation (v1.37), which this
// module does not import, rebuilt from the apimachinery functions it calls.
// strictCIDRs is the StrictIPCIDRValidation feature gate (on by default since
// 1.36): without it, as on older servers whose objects a cluster keeps across
// upgrades, CIDRs with leading zeros, IPv4-mapped IPv6 addresses and host
// bits are accepted.
func ValidateNetworkPolicy(np *networkingv1.NetworkPolicy, strictCIDRs bool) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(&np.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	spec := field.NewPath("spec")
	errs = append(errs, metav1validation.ValidateLabelSelector(&np.Spec.PodSelector, metav1validation.LabelSelectorValidationOptions{}, spec.Child("podSelector"))...)
	for i, r := range np.Spec.Ingress {
		path := spec.Child("ingress").Index(i)
		errs = append(errs, validatePorts(r.Ports, path.Child("ports"))...)
		errs = append(errs, validatePeers(r.From, strictCIDRs, path.Child("from"))...)
	}
	for i, r := range np.Spec.Egress {
		path := spec.Child("egress").Index(i)
		errs = append(errs, validatePorts(r.Ports, path.Child("ports"))...)
		errs = append(errs, validatePeers(r.To, strictCIDRs, path.Child("to"))...)
	}
	types := spec.Child("policyTypes")
	if len(np.Spec.PolicyTypes) > 2 {
		return append(errs, field.Invalid(types, np.Spec.PolicyTypes, "may not specify more than two policyTypes"))
	}
	for i, t := range np.Spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			errs = append(errs, field.NotSupported(types.Index(i), t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}))
		}
	}
	return errs
}

func validatePorts(ports []networkingv1.NetworkPolicyPort, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, p := range ports {
		path := path.Index(i)
		if p.Protocol != nil {
			switch *p.Protocol {
			case "TCP", "UDP", "SCTP":
			default:
				errs = append(errs, field.NotSupported(path.Child("protocol"), *p.Protocol, []string{"TCP", "UDP", "SCTP"}))
			}
		}
		switch {
		case p.Port == nil && p.EndPort != nil:
			errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, "may not be specified when `port` is not specified"))
		case p.Port == nil:
		case p.Port.Type == intstr.Int:
			for _, msg := range validation.IsValidPortNum(int(p.Port.IntVal)) {
				errs = append(errs, field.Invalid(path.Child("port"), p.Port.IntVal, msg))
			}
			if p.EndPort != nil {
				if *p.EndPort < p.Port.IntVal {
					errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, "must be greater than or equal to `port`"))
				}
				for _, msg := range validation.IsValidPortNum(int(*p.EndPort)) {
					errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, msg))
				}
			}
		default:
			if p.EndPort != nil {
				errs = append(errs, field.Invalid(path.Child("endPort"), *p.EndPort, "may not be specified when `port` is non-numeric"))
			}
			for _, msg := range validation.IsValidPortName(p.Port.StrVal) {
				errs = append(errs, field.Invalid(path.Child("port"), p.Port.StrVal, msg))
			}
		}
	}
	return errs
}

func validatePeers(peers []networkingv1.NetworkPolicyPeer, strictCIDRs bool, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, p := range peers {
		path := path.Index(i)
		n := 0
		if p.PodSelector != nil {
			n++
			errs = append(errs, metav1validation.ValidateLabelSelector(p.PodSelector, metav1validation.LabelSelectorValidationOptions{}, path.Child("podSelector"))...)
		}
		if p.NamespaceSelector != nil {
			n++
			errs = append(errs, metav1validation.ValidateLabelSelector(p.NamespaceSelector, metav1validation.LabelSelectorValidationOptions{}, path.Child("namespaceSelector"))...)
		}
		if p.IPBlock != nil {
			n++
			errs = append(errs, validateIPBlock(p.IPBlock, strictCIDRs, path.Child("ipBlock"))...)
		}
		switch {
		case n == 0:
			errs = append(errs, field.Required(path, "must specify a peer"))
		case n > 1 && p.IPBlock != nil:
			errs = append(errs, field.Forbidden(path, "may not specify both ipBlock and another peer"))
		}
	}
	return errs
}

func validateIPBlock(b *networkingv1.IPBlock, strictCIDRs bool, path *field.Path) field.ErrorList {
	if b.CIDR == "" {
		return field.ErrorList{field.Required(path.Child("cidr"), "")}
	}
	errs := validation.IsValidCIDRForLegacyField(path.Child("cidr"), b.CIDR, strictCIDRs, nil)
	_, cidr, err := netutils.ParseCIDRSloppy(b.CIDR)
	if err != nil {
		return errs
	}
	for i, e := range b.Except {
		path := path.Child("except").Index(i)
		errs = append(errs, validation.IsValidCIDRForLegacyField(path, e, strictCIDRs, nil)...)
		_, except, err := netutils.ParseCIDRSloppy(e)
		if err != nil {
			continue
		}
		cidrBits, _ := cidr.Mask.Size()
		exceptBits, _ := except.Mask.Size()
		if !cidr.Contains(except.IP) || cidrBits >= exceptBits {
			errs = append(errs, field.Invalid(path, e, "must be a strict subset of `cidr`"))
		}
	}
	return errs
}
