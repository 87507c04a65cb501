package build

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/netpol"
)

// The fence's and the evidence's policies, judged by the same evaluation
// the operator reports IsolationVerified with.
func TestFencePoliciesIsolate(t *testing.T) {
	env := env111()
	ns := "wales-111-primary"
	forensics := &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "forensics"}}
	typed := func(acs ...any) []networkingv1.NetworkPolicy {
		var out []networkingv1.NetworkPolicy
		for _, ac := range acs {
			out = append(out, *toTyped[networkingv1.NetworkPolicy](t, ac))
		}
		return out
	}
	normal := func() []any {
		var out []any
		for _, p := range NetworkPolicies(env, v1alpha1.SitePrimary, ns) {
			out = append(out, p)
		}
		return out
	}
	pod := func(name string, labels map[string]string) netpol.Pod {
		return netpol.Pod{Name: name, Labels: labels, Ports: []corev1.ContainerPort{{Name: PortName, ContainerPort: 8080}}}
	}
	running := pod("call-handling-1", ServiceLabels(env, SiteLabelPrimary, "call-handling"))
	evidence := pod("call-handling-0", with(Labels(env, SiteLabelPrimary), v1alpha1.LabelEvidence, "INC-1", LabelEvidenceService, "call-handling"))

	tests := []struct {
		name     string
		policies []networkingv1.NetworkPolicy
		pods     []netpol.Pod
		isolated bool
	}{
		{"the fence alone isolates every pod", typed(FencePolicy(env, ns, true)), []netpol.Pod{running, evidence}, true},
		{"the fence without the forensics exception isolates too", typed(FencePolicy(env, ns, false)), []netpol.Pod{running}, true},
		{"the normal policies leave running pods reachable (the check has teeth)", typed(normal()...), []netpol.Pod{running}, false},
		{"the fence plus a leftover allow breaches", typed(append(normal(), FencePolicy(env, ns, true))...), []netpol.Pod{running}, false},
		{"after a restore, evidence stays isolated among the allows", typed(append(normal(), EvidencePolicy(env, ns))...), []netpol.Pod{evidence}, true},
		{"no allow selects evidence pods, so default-deny alone keeps them isolated", typed(normal()...), []netpol.Pod{evidence}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := netpol.VerifyFence(netpol.FenceInput{
				Namespace: ns, NamespaceLabels: map[string]string{corev1.LabelMetadataName: ns},
				Pods: tt.pods, Policies: tt.policies, Forensics: forensics,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Isolated != tt.isolated {
				t.Errorf("isolated = %t, want %t\n%s", res.Isolated, tt.isolated, netpol.Format(res))
			}
		})
	}
}

func TestFencePolicyShape(t *testing.T) {
	env := env111()
	p := toTyped[networkingv1.NetworkPolicy](t, FencePolicy(env, "wales-111-primary", true))
	if p.Name != FencePolicyName || len(p.Annotations) != 0 {
		t.Errorf("name %s annotations %v", p.Name, p.Annotations)
	}
	if len(p.Spec.PodSelector.MatchLabels)+len(p.Spec.PodSelector.MatchExpressions) != 0 {
		t.Errorf("the fence must select every pod, selects %v", p.Spec.PodSelector)
	}
	if len(p.Spec.PolicyTypes) != 2 || len(p.Spec.Egress) != 0 {
		t.Errorf("policy types %v, egress %v: want Ingress and Egress, no egress rule", p.Spec.PolicyTypes, p.Spec.Egress)
	}
	// No owner: deleting the environment must not garbage-collect the fence.
	if len(p.OwnerReferences) != 0 || p.Labels[v1alpha1.LabelSite] != SiteLabelPrimary {
		t.Errorf("owner %v labels %v: want no owner", p.OwnerReferences, p.Labels)
	}
}

// A forensicsFrom that matches the fenced namespace itself ({} matches every
// namespace; the primary carries careplane.io/environment) must not let the
// fenced pods reach each other, while the forensics namespaces still may.
func TestFenceExcludesTheFencedNamespaceFromForensics(t *testing.T) {
	ns := "wales-111-primary"
	nsLabels := map[string]string{corev1.LabelMetadataName: ns, v1alpha1.LabelEnvironment: "wales-111"}
	pod := netpol.Pod{Name: "call-handling-1", Labels: ServiceLabels(env111(), SiteLabelPrimary, "call-handling")}
	for name, forensics := range map[string]*v1alpha1.LabelSelector{
		"every namespace": {},
		"the environment": {MatchLabels: map[string]v1alpha1.LabelValue{v1alpha1.LabelEnvironment: "wales-111"}},
	} {
		t.Run(name, func(t *testing.T) {
			env := env111()
			env.Spec.Isolation.ForensicsFrom = forensics
			p := toTyped[networkingv1.NetworkPolicy](t, FencePolicy(env, ns, true))
			res, err := netpol.VerifyFence(netpol.FenceInput{Namespace: ns, NamespaceLabels: nsLabels, Pods: []netpol.Pod{pod},
				Policies: []networkingv1.NetworkPolicy{*p}, Forensics: forensics.ToMeta()})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Isolated {
				t.Errorf("the fence lets the fenced namespace in:\n%s", netpol.Format(res))
			}
			from := p.Spec.Ingress[0].From[0].NamespaceSelector
			want := metav1.LabelSelectorRequirement{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: []string{ns}}
			if !equalJSON(from.MatchExpressions[len(from.MatchExpressions)-1], want) {
				t.Errorf("forensics peer %v does not exclude %s", from, ns)
			}
		})
	}
}
