package build

import (
	"fmt"
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
	env.Spec.Isolation.ForensicsFrom = &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{corev1.LabelMetadataName: "forensics"}}
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
				Pods: tt.pods, Policies: tt.policies, ForensicsNamespaces: env.Spec.Isolation.ForensicsNamespaces(),
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

// The forensics exception names namespaces, never a selector: whatever
// forensicsFrom says, the fence's only ingress peer is "kubernetes.io/
// metadata.name In (names)", the label only the API server sets. A
// forensicsFrom the CRD would reject today (stored before the rule, kept by
// validation ratcheting) opens nothing.
func TestFenceForensicsIngressNamesNamespaces(t *testing.T) {
	const ns = "wales-111-primary"
	byName := func(names ...string) *v1alpha1.LabelSelector {
		r := v1alpha1.LabelSelectorRequirement{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn}
		for _, n := range names {
			r.Values = append(r.Values, v1alpha1.LabelValue(n))
		}
		return &v1alpha1.LabelSelector{MatchExpressions: []v1alpha1.LabelSelectorRequirement{r}}
	}
	labels := func(kv ...string) *v1alpha1.LabelSelector {
		s := &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{}}
		for i := 0; i+1 < len(kv); i += 2 {
			s.MatchLabels[kv[i]] = v1alpha1.LabelValue(kv[i+1])
		}
		return s
	}
	expr := func(key string, op metav1.LabelSelectorOperator, values ...v1alpha1.LabelValue) *v1alpha1.LabelSelector {
		return &v1alpha1.LabelSelector{MatchExpressions: []v1alpha1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
	}
	seventeen := make([]string, 17)
	for i := range seventeen {
		seventeen[i] = fmt.Sprintf("forensics-%02d", i)
	}
	peer := func(names ...string) string {
		return mustJSON([]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: names}}},
		}}}})
	}
	const none = "null"
	nsLabels := map[string]string{corev1.LabelMetadataName: ns, v1alpha1.LabelEnvironment: "wales-111"}
	pod := netpol.Pod{Name: "call-handling-1", Labels: ServiceLabels(env111(), SiteLabelPrimary, "call-handling")}

	tests := []struct {
		name          string
		forensicsFrom *v1alpha1.LabelSelector
		withForensics bool
		wantIngress   string
	}{
		{"unset: no ingress", nil, true, none},
		{"matchLabels by name", labels(corev1.LabelMetadataName, "forensics"), true, peer("forensics")},
		{"In by name, sorted and without duplicates", byName("soc", "forensics", "soc"), true, peer("forensics", "soc")},
		{"the fenced namespace itself is never a forensics namespace", byName("forensics", ns), true, peer("forensics")},
		{"only the fenced namespace: no ingress", labels(corev1.LabelMetadataName, ns), true, none},
		{"exception dropped (withForensics false)", labels(corev1.LabelMetadataName, "forensics"), false, none},
		{"16 names", byName(seventeen[:16]...), true, peer(seventeen[:16]...)},

		// Forms the CRD rejects: each would let in namespaces nobody named.
		{"{} (every namespace)", &v1alpha1.LabelSelector{}, true, none},
		{"a label anyone can set", labels("team", "forensics"), true, none},
		{"the name label beside another label", labels(corev1.LabelMetadataName, "forensics", "team", "dfir"), true, none},
		{"In on another label", expr("team", metav1.LabelSelectorOpIn, "dfir"), true, none},
		{"NotIn the name", expr(corev1.LabelMetadataName, metav1.LabelSelectorOpNotIn, "tenant"), true, none},
		{"Exists", expr(corev1.LabelMetadataName, metav1.LabelSelectorOpExists), true, none},
		{"DoesNotExist", expr("quarantined", metav1.LabelSelectorOpDoesNotExist), true, none},
		{"17 names, over the bound", byName(seventeen...), true, none},
		{"an empty name", labels(corev1.LabelMetadataName, ""), true, none},
		{"both forms at once", &v1alpha1.LabelSelector{
			MatchLabels:      map[string]v1alpha1.LabelValue{corev1.LabelMetadataName: "forensics"},
			MatchExpressions: byName("soc").MatchExpressions,
		}, true, none},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := env111()
			env.Spec.Isolation.ForensicsFrom = tt.forensicsFrom
			fence := toTyped[networkingv1.NetworkPolicy](t, FencePolicy(env, ns, tt.withForensics))
			if got := mustJSON(fence.Spec.Ingress); got != tt.wantIngress {
				t.Errorf("fence ingress:\n got %s\nwant %s", got, tt.wantIngress)
			}
			// And as the operator verifies it: the fenced namespace carries
			// careplane's labels, which a selector could have matched.
			res, err := netpol.VerifyFence(netpol.FenceInput{Namespace: ns, NamespaceLabels: nsLabels, Pods: []netpol.Pod{pod},
				Policies: []networkingv1.NetworkPolicy{*fence}, ForensicsNamespaces: env.Spec.Isolation.ForensicsNamespaces()})
			if err != nil || !res.Isolated {
				t.Errorf("the fence does not isolate (error %v):\n%s", err, netpol.Format(res))
			}
			if !tt.withForensics {
				return
			}
			evidence := toTyped[networkingv1.NetworkPolicy](t, EvidencePolicy(env, ns))
			if got := mustJSON(evidence.Spec.Ingress); got != tt.wantIngress {
				t.Errorf("evidence ingress:\n got %s\nwant %s", got, tt.wantIngress)
			}
		})
	}
}
