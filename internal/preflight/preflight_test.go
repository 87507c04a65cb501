package preflight

import (
	"bytes"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

var opts = Options{Namespace: "careplane-system", Name: "careplane"}

func TestExpectedKinds(t *testing.T) {
	got := strings.Join(ExpectedKinds(), ",")
	if got != "FenceRequest,HealthEnvironment" {
		t.Fatalf("ExpectedKinds() = %s; want FenceRequest,HealthEnvironment", got)
	}
}

func TestJudgeCRDs(t *testing.T) {
	if r := JudgeCRDs([]string{"FenceRequest", "HealthEnvironment"}, []string{"HealthEnvironment", "FenceRequest"}); r.Status != Pass {
		t.Errorf("both served: %+v", r)
	}
	r := JudgeCRDs([]string{"FenceRequest", "HealthEnvironment"}, []string{"HealthEnvironment"})
	if r.Status != Fail || !strings.Contains(r.Message, "not served at careplane.io/v1alpha1: FenceRequest") {
		t.Errorf("FenceRequest not served: %+v", r)
	}
}

// allGuardrails is what a healthy install holds.
func allGuardrails(o Options) map[string]seenGuardrail {
	seen := map[string]seenGuardrail{}
	for _, g := range guardrailObjects {
		s := seenGuardrail{}
		if g.binding() {
			s.PolicyName = o.Name + "-" + g.Policy
			s.Actions = []string{"Deny"}
			if g.Params {
				s.ParamName, s.ParamNamespace = paramsName(o), o.Namespace
			}
		}
		seen[g.Kind+"/"+o.Name+"-"+g.Suffix] = s
	}
	return seen
}

func TestJudgeGuardrails(t *testing.T) {
	o := Options{Namespace: "careplane-helm", Name: "careplane-helm"}
	if r := JudgeGuardrails(o, allGuardrails(o)); r.Status != Pass {
		t.Fatalf("healthy: %+v", r)
	}
	for _, c := range []struct {
		name   string
		change func(map[string]seenGuardrail)
		want   string
	}{
		{"binding deleted", func(s map[string]seenGuardrail) {
			s["ValidatingAdmissionPolicyBinding/careplane-helm-isolation-guard"] = seenGuardrail{Missing: true}
		}, "ValidatingAdmissionPolicyBinding careplane-helm-isolation-guard is missing"},
		{"mutating policies not served", func(s map[string]seenGuardrail) {
			s["MutatingAdmissionPolicy/careplane-helm-isolation-author"] = seenGuardrail{Unserved: true}
		}, "the API server does not serve MutatingAdmissionPolicy"},
		{"binding to audit only", func(s map[string]seenGuardrail) {
			b := s["ValidatingAdmissionPolicyBinding/careplane-helm-status-guard"]
			b.Actions = []string{"Audit"}
			s["ValidatingAdmissionPolicyBinding/careplane-helm-status-guard"] = b
		}, "careplane-helm-status-guard does not deny"},
		{"a policy that does not type-check is a warning", func(s map[string]seenGuardrail) {
			s["ValidatingAdmissionPolicy/careplane-helm-isolation-guard"] = seenGuardrail{TypeWarnings: []string{"spec.validations[0].expression: undefined field 'isolation'"}}
		}, "WARN ValidatingAdmissionPolicy careplane-helm-isolation-guard does not type-check: spec.validations[0].expression: undefined field 'isolation'"},
		{"parameters elsewhere", func(s map[string]seenGuardrail) {
			b := s["ValidatingAdmissionPolicyBinding/careplane-helm-isolation-guard"]
			b.ParamName = "mine"
			s["ValidatingAdmissionPolicyBinding/careplane-helm-isolation-guard"] = b
		}, "reads parameters from ConfigMap careplane-helm/mine, not careplane-helm/careplane-helm-guardrails"},
	} {
		t.Run(c.name, func(t *testing.T) {
			seen := allGuardrails(o)
			c.change(seen)
			r := JudgeGuardrails(o, seen)
			want, status := c.want, Fail
			if w, ok := strings.CutPrefix(want, "WARN "); ok {
				want, status = w, Warn
			}
			if r.Status != status || !strings.Contains(r.Message, want) {
				t.Fatalf("got %+v; want %s with %q", r, status, want)
			}
		})
	}
}

func TestJudgeParameters(t *testing.T) {
	cm := func(data map[string]string) *corev1.ConfigMap { return &corev1.ConfigMap{Data: data} }
	for _, c := range []struct {
		name string
		cm   *corev1.ConfigMap
		want Status
		msg  string
	}{
		{"missing", nil, Fail, "ConfigMap careplane-system/careplane-guardrails is missing"},
		{"shipped", cm(map[string]string{"responderGroups": "careplane:incident-responders", "controlPlaneUsers": ""}), Pass, "responder groups careplane:incident-responders"},
		{"spaces around commas", cm(map[string]string{"responderGroups": " a , b,", "controlPlaneUsers": ""}), Pass, "responder groups a, b"},
		{"no group", cm(map[string]string{"responderGroups": " , ", "controlPlaneUsers": ""}), Fail, "names no group"},
		{"key misspelt", cm(map[string]string{"responderGroup": "a"}), Fail, `unknown key "responderGroup"`},
		{"space inside a name", cm(map[string]string{"responderGroups": "a b", "controlPlaneUsers": ""}), Warn, `entry "a b" contains whitespace`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := JudgeParameters(opts, c.cm)
			if r.Status != c.want || !strings.Contains(r.Message, c.msg) {
				t.Fatalf("got %+v; want %s with %q", r, c.want, c.msg)
			}
		})
	}
}

func TestJudgeLease(t *testing.T) {
	now := time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC)
	lease := func(holder string, renewedAgo time.Duration) *coordinationv1.Lease {
		return &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder), LeaseDurationSeconds: ptr.To[int32](15),
			RenewTime: &metav1.MicroTime{Time: now.Add(-renewedAgo)}}}
	}
	for _, c := range []struct {
		name  string
		lease *coordinationv1.Lease
		want  Status
		msg   string
	}{
		{"absent", nil, Fail, "Lease careplane-system/careplane.careplane.io does not exist"},
		{"released", lease("", time.Second), Fail, "held by nobody"},
		{"renewed", lease("pod-a_1", 3*time.Second), Pass, "held by pod-a_1, renewed 3s ago"},
		{"expired", lease("pod-a_1", time.Minute), Fail, "last renewed 1m0s ago, beyond its 15s duration"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := JudgeLease(opts, c.lease, now)
			if r.Status != c.want || !strings.Contains(r.Message, c.msg) {
				t.Fatalf("got %+v; want %s with %q", r, c.want, c.msg)
			}
		})
	}
}

func TestManagerAccess(t *testing.T) {
	acc := ManagerAccess(opts)
	has := func(a Access) bool {
		for _, b := range acc {
			if a == b {
				return true
			}
		}
		return false
	}
	for _, a := range []Access{
		{Resource: "namespaces", Verb: "create"},
		{Group: "careplane.io", Resource: "healthenvironments/status", Verb: "patch"},
		{Namespace: "careplane-system", Group: "coordination.k8s.io", Resource: "leases", Verb: "update"},
	} {
		if !has(a) {
			t.Errorf("ManagerAccess lacks %s", a)
		}
	}
	r := JudgeRBAC("system:serviceaccount:careplane-system:careplane-manager", len(acc), []Access{{Resource: "namespaces", Verb: "create"}})
	if r.Status != Fail || !strings.Contains(r.Message, "may not: create namespaces") {
		t.Errorf("denied: %+v", r)
	}
}

func TestJudgeNetworkPolicy(t *testing.T) {
	for _, c := range []struct {
		name string
		ds   []string
		want Status
		msg  string
	}{
		{"kwok: none", []string{"kube-system/kube-proxy"}, Warn, "unknown"},
		{"calico", []string{"kube-system/kube-proxy", "calico-system/calico-node"}, Pass, "enforced by Calico (calico-system/calico-node)"},
		{"cilium", []string{"kube-system/cilium"}, Pass, "Cilium"},
		{"flannel alone", []string{"kube-flannel/kube-flannel-ds"}, Warn, "not enforced: Flannel"},
		{"flannel with calico", []string{"kube-flannel/kube-flannel-ds", "kube-system/calico-node"}, Pass, "Calico"},
		{"a look-alike name", []string{"default/my-cilium-exporter"}, Warn, "unknown"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := JudgeNetworkPolicy(c.ds)
			if r.Status != c.want || !strings.Contains(r.Message, c.msg) {
				t.Fatalf("got %+v; want %s with %q", r, c.want, c.msg)
			}
		})
	}
}

func TestReport(t *testing.T) {
	r := Report{Namespace: "ns", Name: "careplane", Results: []Result{
		{Check: "crds", Status: Pass, Message: "ok"},
		{Check: "leader", Status: Fail, Message: "no leader", Remediation: "start it"},
	}}
	if !r.Failed() || r.OnlyForbidden() {
		t.Errorf("Failed() = %v, OnlyForbidden() = %v; want true, false", r.Failed(), r.OnlyForbidden())
	}
	var b bytes.Buffer
	if err := WriteText(&b, r, nil); err != nil {
		t.Fatal(err)
	}
	want := `careplane preflight of ns/careplane
PASS  crds    ok
FAIL  leader  no leader
              -> start it
2 checks: 1 passed, 0 warnings, 1 failed
`
	if b.String() != want {
		t.Errorf("WriteText:\n%s\nwant:\n%s", b.String(), want)
	}
	r.Results[1].Forbidden = true
	if !r.OnlyForbidden() {
		t.Error("OnlyForbidden() = false with the one failure forbidden")
	}
}
