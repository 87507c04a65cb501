package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// The per-environment state, as a collector sends it at each scrape
// (controllers/metrics_collector.go): pure functions of the objects, so
// that they are tested without a cluster.

var (
	descCondition = prometheus.NewDesc(EnvironmentCondition,
		"The current status and reason of each condition of an environment (1); one series per environment and condition type.",
		Exported[EnvironmentCondition].Labels, nil)
	descActiveSite = prometheus.NewDesc(EnvironmentActiveSite,
		"1 for the site (Primary or Standby) the environment's front Services send traffic to, 0 for the other.",
		Exported[EnvironmentActiveSite].Labels, nil)
	descFenceRequested = prometheus.NewDesc(EnvironmentFenceRequested,
		"1 while the environment should be fenced: its spec.isolation.mode is Fenced, or a FenceRequest holds it.",
		Exported[EnvironmentFenceRequested].Labels, nil)
	descFenced = prometheus.NewDesc(EnvironmentFenced,
		"1 while the environment's Fenced condition is True: every step of the fence done and isolation verified.",
		Exported[EnvironmentFenced].Labels, nil)
	descIsolationVerified = prometheus.NewDesc(EnvironmentIsolationVerified,
		"1 while the environment's IsolationVerified condition is True: no NetworkPolicy lets traffic into or out of a fenced pod.",
		Exported[EnvironmentIsolationVerified].Labels, nil)
	descFencedSince = prometheus.NewDesc(EnvironmentFencedTimestamp,
		"When the environment's current fence began (status.isolation.fencedAt), in seconds since the epoch; absent when it has none.",
		Exported[EnvironmentFencedTimestamp].Labels, nil)
	descGuardrailParams = prometheus.NewDesc(GuardrailParametersPresent,
		"1 when the parameter ConfigMap a careplane guardrail binding names exists, 0 when it is missing (the policy then denies every request it guards).",
		Exported[GuardrailParametersPresent].Labels, nil)
	descGuardrailChecked = prometheus.NewDesc(GuardrailCheckTimestamp,
		"When the guardrail bindings and their parameters were last read successfully, in seconds since the epoch.",
		Exported[GuardrailCheckTimestamp].Labels, nil)
)

// EnvironmentSeries are the series of envs, given the FenceRequests that
// may hold them.
func EnvironmentSeries(envs []v1alpha1.HealthEnvironment, requests []v1alpha1.FenceRequest) []prometheus.Metric {
	out := make([]prometheus.Metric, 0, len(envs)*12)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	for i := range envs {
		env := &envs[i]
		name := env.Name
		for _, c := range env.Status.Conditions {
			gauge(descCondition, 1, name, c.Type, string(c.Status), c.Reason)
		}
		for _, site := range []v1alpha1.Site{v1alpha1.SitePrimary, v1alpha1.SiteStandby} {
			gauge(descActiveSite, boolValue(env.Status.ActiveSite == site), name, string(site))
		}
		requested := env.Spec.Isolation.Mode == v1alpha1.IsolationFenced || v1alpha1.HoldingRequest(requests, name) != nil
		gauge(descFenceRequested, boolValue(requested), name)
		gauge(descFenced, boolValue(conditionTrue(env.Status.Conditions, v1alpha1.ConditionFenced)), name)
		gauge(descIsolationVerified, boolValue(conditionTrue(env.Status.Conditions, v1alpha1.ConditionIsolationVerified)), name)
		if iso := env.Status.Isolation; iso != nil && iso.FencedAt != nil {
			gauge(descFencedSince, float64(iso.FencedAt.Unix()), name)
		}
	}
	return out
}

// GuardrailBinding is a guardrail ValidatingAdmissionPolicyBinding and
// whether the parameter ConfigMap it names exists.
type GuardrailBinding struct {
	Name, Namespace, ConfigMap string
	Present                    bool
}

// GuardrailSeries are the series of a check of the guardrail bindings made
// at at.
func GuardrailSeries(at time.Time, bindings []GuardrailBinding) []prometheus.Metric {
	out := []prometheus.Metric{prometheus.MustNewConstMetric(descGuardrailChecked, prometheus.GaugeValue, float64(at.Unix()))}
	for _, b := range bindings {
		out = append(out, prometheus.MustNewConstMetric(descGuardrailParams, prometheus.GaugeValue, boolValue(b.Present),
			b.Name, b.Namespace, b.ConfigMap))
	}
	return out
}

// DescribeState sends the descriptors of EnvironmentSeries and
// GuardrailSeries.
func DescribeState(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCondition, descActiveSite, descFenceRequested, descFenced,
		descIsolationVerified, descFencedSince, descGuardrailParams, descGuardrailChecked} {
		ch <- d
	}
}

func conditionTrue(cs []metav1.Condition, t string) bool {
	c := meta.FindStatusCondition(cs, t)
	return c != nil && c.Status == metav1.ConditionTrue
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
