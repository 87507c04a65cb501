package fence

import (
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

func fencedEnv() *v1alpha1.HealthEnvironment {
	return &v1alpha1.HealthEnvironment{
		ObjectMeta: metav1.ObjectMeta{Name: "wales-111", UID: "uid-wales"},
		Spec: v1alpha1.HealthEnvironmentSpec{Isolation: v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "test",
			ForensicsFrom: &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"kubernetes.io/metadata.name": "forensics"}}}},
	}
}

// TestIsDenyPolicy: only the deny policy exactly as careplane writes it is
// left alone; a policy of that name with anything else (a tenant's, or one
// a tenant added to before the freeze) is written whole again.
func TestIsDenyPolicy(t *testing.T) {
	env := fencedEnv()
	want := DenyPolicy(env, true)
	for _, tc := range []struct {
		name   string
		change func(p *networkingv1.NetworkPolicy)
		want   bool
	}{
		{"as written", func(*networkingv1.NetworkPolicy) {}, true},
		{"as written, with the server's metadata", func(p *networkingv1.NetworkPolicy) {
			p.ResourceVersion, p.UID, p.CreationTimestamp = "42", "uid", metav1.Now()
		}, true},
		{"an egress rule added", func(p *networkingv1.NetworkPolicy) { p.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{}} }, false},
		{"an ingress rule added", func(p *networkingv1.NetworkPolicy) {
			p.Spec.Ingress = append(p.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{})
		}, false},
		{"egress no longer denied", func(p *networkingv1.NetworkPolicy) { p.Spec.PolicyTypes = p.Spec.PolicyTypes[:1] }, false},
		{"selecting some pods only", func(p *networkingv1.NetworkPolicy) {
			p.Spec.PodSelector.MatchLabels = map[string]string{"app": "x"}
		}, false},
		{"without the forensics exception", func(p *networkingv1.NetworkPolicy) { p.Spec = DenyPolicy(env, false).Spec }, false},
		{"a label added", func(p *networkingv1.NetworkPolicy) { p.Labels["team"] = "x" }, false},
		{"an annotation", func(p *networkingv1.NetworkPolicy) { p.Annotations = map[string]string{"a": "b"} }, false},
		{"an owner", func(p *networkingv1.NetworkPolicy) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "x", UID: "y"}}
		}, false},
		{"being deleted", func(p *networkingv1.NetworkPolicy) { p.DeletionTimestamp = &metav1.Time{Time: time.Now()} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur := want.DeepCopy()
			tc.change(cur)
			if got := IsDenyPolicy(cur, want); got != tc.want {
				t.Errorf("IsDenyPolicy = %v, want %v", got, tc.want)
			}
		})
	}
	if len(want.OwnerReferences) != 0 || len(Quota(env).OwnerReferences) != 0 {
		t.Errorf("the fence's objects have owners (%v, %v): garbage collection of the environment would take them",
			want.OwnerReferences, Quota(env).OwnerReferences)
	}
	if want.Namespace != "wales-111-primary" || len(want.Spec.PolicyTypes) != 2 || len(want.Spec.Egress) != 0 {
		t.Errorf("deny policy %s/%s: %+v", want.Namespace, want.Name, want.Spec)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, rec := range []Record{
		{ID: "2030-01-01T00:00:00Z", Source: SourceSpec},
		{ID: "2030-01-01T00:00:00Z", Source: RequestSource("fleet"), RestoreID: "2030-01-02T00:00:00Z"},
	} {
		ns := &metav1.ObjectMeta{Labels: rec.Labels(), Annotations: rec.Annotations()}
		if got := RecordOf(ns); got != rec {
			t.Errorf("RecordOf(%+v) = %+v", rec, got)
		}
	}
	for name, ns := range map[string]*metav1.ObjectMeta{
		"no label":       {Annotations: map[string]string{AnnotationID: "x"}},
		"no ID":          {Labels: map[string]string{v1alpha1.LabelFenced: "true"}},
		"label not true": {Labels: map[string]string{v1alpha1.LabelFenced: "false"}, Annotations: map[string]string{AnnotationID: "x"}},
		"nothing at all": {},
	} {
		if got := RecordOf(ns); got.Present() {
			t.Errorf("%s: RecordOf = %+v, want none", name, got)
		}
	}
	if got := RecordOf(&metav1.ObjectMeta{Labels: map[string]string{v1alpha1.LabelFenced: "true"},
		Annotations: map[string]string{AnnotationID: "x"}}); got.Source != SourceSpec {
		t.Errorf("a record without a source: %+v, want the spec's", got)
	}
	if RequestSource("a") != "FenceRequest/a" || (Record{Source: RequestSource("a")}).Request() != "a" || (Record{Source: SourceSpec}).Request() != "" {
		t.Error("request sources do not round-trip")
	}
}
