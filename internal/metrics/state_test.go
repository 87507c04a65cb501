package metrics

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// collect is a collector of fixed series.
type collect []prometheus.Metric

func (c collect) Describe(ch chan<- *prometheus.Desc) { DescribeState(ch) }
func (c collect) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c {
		ch <- m
	}
}

func cond(t, status, reason string) metav1.Condition {
	return metav1.Condition{Type: t, Status: metav1.ConditionStatus(status), Reason: reason}
}

var fencedAt = metav1.NewTime(time.Unix(1_790_000_000, 0))

func environments() ([]v1alpha1.HealthEnvironment, []v1alpha1.FenceRequest) {
	healthy := v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "yorkshire"}}
	healthy.Status.ActiveSite = v1alpha1.SitePrimary
	healthy.Status.Conditions = []metav1.Condition{cond("Ready", "True", "Available"), cond("Fenced", "False", "NotFenced"),
		cond("IsolationVerified", "Unknown", "NotEvaluated")}

	fenced := v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "wales-111"}}
	fenced.Spec.Isolation.Mode = v1alpha1.IsolationFenced
	fenced.Status.ActiveSite = v1alpha1.SiteStandby
	fenced.Status.Conditions = []metav1.Condition{cond("Fenced", "True", "FenceComplete"),
		cond("IsolationVerified", "True", "NoAllowedFlows"), cond("ServingFromStandby", "True", "PrimaryFenced")}
	fenced.Status.Isolation = &v1alpha1.IsolationStatus{FencedAt: &fencedAt}

	// Held by a FenceRequest before its spec says Fenced; the fence not
	// done yet; no site recorded yet.
	held := v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "north-east-111"}}
	held.Status.Conditions = []metav1.Condition{cond("Fenced", "False", "FenceIncomplete")}
	req := v1alpha1.FenceRequest{ObjectMeta: metav1.ObjectMeta{Name: "supplier-breach"}}
	req.Status.Holding = []string{"north-east-111"}
	return []v1alpha1.HealthEnvironment{healthy, fenced, held}, []v1alpha1.FenceRequest{req}
}

// TestEnvironmentSeries checks the series of a healthy, a fenced and a
// held environment, as Prometheus would scrape them.
func TestEnvironmentSeries(t *testing.T) {
	envs, requests := environments()
	want := `
# HELP careplane_environment_active_site 1 for the site (Primary or Standby) the environment's front Services send traffic to, 0 for the other.
# TYPE careplane_environment_active_site gauge
careplane_environment_active_site{environment="north-east-111",site="Primary"} 0
careplane_environment_active_site{environment="north-east-111",site="Standby"} 0
careplane_environment_active_site{environment="wales-111",site="Primary"} 0
careplane_environment_active_site{environment="wales-111",site="Standby"} 1
careplane_environment_active_site{environment="yorkshire",site="Primary"} 1
careplane_environment_active_site{environment="yorkshire",site="Standby"} 0
# HELP careplane_environment_condition The current status and reason of each condition of an environment (1); one series per environment and condition type.
# TYPE careplane_environment_condition gauge
careplane_environment_condition{environment="north-east-111",reason="FenceIncomplete",status="False",type="Fenced"} 1
careplane_environment_condition{environment="wales-111",reason="FenceComplete",status="True",type="Fenced"} 1
careplane_environment_condition{environment="wales-111",reason="NoAllowedFlows",status="True",type="IsolationVerified"} 1
careplane_environment_condition{environment="wales-111",reason="PrimaryFenced",status="True",type="ServingFromStandby"} 1
careplane_environment_condition{environment="yorkshire",reason="Available",status="True",type="Ready"} 1
careplane_environment_condition{environment="yorkshire",reason="NotEvaluated",status="Unknown",type="IsolationVerified"} 1
careplane_environment_condition{environment="yorkshire",reason="NotFenced",status="False",type="Fenced"} 1
# HELP careplane_environment_fence_requested 1 while the environment should be fenced: its spec.isolation.mode is Fenced, or a FenceRequest holds it.
# TYPE careplane_environment_fence_requested gauge
careplane_environment_fence_requested{environment="north-east-111"} 1
careplane_environment_fence_requested{environment="wales-111"} 1
careplane_environment_fence_requested{environment="yorkshire"} 0
# HELP careplane_environment_fenced 1 while the environment's Fenced condition is True: every step of the fence done and isolation verified.
# TYPE careplane_environment_fenced gauge
careplane_environment_fenced{environment="north-east-111"} 0
careplane_environment_fenced{environment="wales-111"} 1
careplane_environment_fenced{environment="yorkshire"} 0
# HELP careplane_environment_fenced_timestamp_seconds When the environment's current fence began (status.isolation.fencedAt), in seconds since the epoch; absent when it has none.
# TYPE careplane_environment_fenced_timestamp_seconds gauge
careplane_environment_fenced_timestamp_seconds{environment="wales-111"} 1.79e+09
# HELP careplane_environment_isolation_verified 1 while the environment's IsolationVerified condition is True: no NetworkPolicy lets traffic into or out of a fenced pod.
# TYPE careplane_environment_isolation_verified gauge
careplane_environment_isolation_verified{environment="north-east-111"} 0
careplane_environment_isolation_verified{environment="wales-111"} 1
careplane_environment_isolation_verified{environment="yorkshire"} 0
# HELP careplane_guardrail_check_timestamp_seconds When the guardrail bindings and their parameters were last read successfully, in seconds since the epoch.
# TYPE careplane_guardrail_check_timestamp_seconds gauge
careplane_guardrail_check_timestamp_seconds 1.79e+09
# HELP careplane_guardrail_parameters_present 1 when the parameter ConfigMap a careplane guardrail binding names exists, 0 when it is missing (the policy then denies every request it guards).
# TYPE careplane_guardrail_parameters_present gauge
careplane_guardrail_parameters_present{binding="careplane-isolation-guard",configmap="careplane-guardrails",configmap_namespace="careplane-system"} 0
`
	series := append(EnvironmentSeries(envs, requests), GuardrailSeries(fencedAt.Time,
		[]GuardrailBinding{{Name: "careplane-isolation-guard", Namespace: "careplane-system", ConfigMap: "careplane-guardrails"}})...)
	if err := testutil.CollectAndCompare(collect(series), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// Every series is of a family the rules and the dashboard may use,
	// with its labels.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(collect(series))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		fam, ok := Exported[f.GetName()]
		if !ok {
			t.Errorf("%s is not listed in Exported", f.GetName())
			continue
		}
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(fam.Labels) {
				t.Errorf("%s has labels %v, Exported lists %v", f.GetName(), m.GetLabel(), fam.Labels)
			}
		}
	}
}

// TestScrapeSizePerEnvironment reports what the state series cost a scrape
// per environment, in series and bytes of the text format.
func TestScrapeSizePerEnvironment(t *testing.T) {
	_, requests := environments()
	var envs []v1alpha1.HealthEnvironment
	for i := range 100 {
		e := v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("customer-%03d-111", i)}}
		e.Status.ActiveSite = v1alpha1.SitePrimary
		for _, ct := range v1alpha1.ConditionTypes {
			e.Status.Conditions = append(e.Status.Conditions, cond(ct, "False", "ServingFromPrimary"))
		}
		e.Status.Isolation = &v1alpha1.IsolationStatus{FencedAt: &fencedAt}
		envs = append(envs, e)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collect(EnvironmentSeries(envs, requests)))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n := 0
	for _, f := range families {
		n += len(f.GetMetric())
		if _, err := expfmt.MetricFamilyToText(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	// Six conditions, two sites, requested, fenced, verified, fence start.
	if want := 100 * 12; n != want {
		t.Errorf("%d series for 100 environments, want %d", n, want)
	}
	t.Logf("100 environments: %d series, %d bytes of text format (%d bytes per environment)", n, buf.Len(), buf.Len()/100)
}
