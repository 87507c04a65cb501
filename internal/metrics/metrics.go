// Package metrics names the Prometheus metrics the careplane manager exports
// that its alert rules and its Grafana dashboard may use, with their labels:
// one list, which the controllers export, the e2e suite checks against a
// running manager's /metrics, and the tests of the rules
// (charts/careplane/files/prometheus-rules.yaml) and the dashboard
// (charts/careplane/files/dashboard.json) check every expression against.
package metrics

// The per-environment state (controllers/metrics_collector.go) and the
// guardrails' check.
const (
	EnvironmentCondition         = "careplane_environment_condition"
	EnvironmentActiveSite        = "careplane_environment_active_site"
	EnvironmentFenceRequested    = "careplane_environment_fence_requested"
	EnvironmentFenced            = "careplane_environment_fenced"
	EnvironmentIsolationVerified = "careplane_environment_isolation_verified"
	EnvironmentFencedTimestamp   = "careplane_environment_fenced_timestamp_seconds"
	GuardrailParametersPresent   = "careplane_guardrail_parameters_present"
	GuardrailCheckTimestamp      = "careplane_guardrail_check_timestamp_seconds"
)

// Counters and histograms incremented where their event happens
// (controllers/metrics.go, controllers/metrics_collector.go).
const (
	FenceIncompleteReconciles = "careplane_fence_incomplete_reconciles_total"
	RestoresBlocked           = "careplane_restores_blocked_total"
	GuardrailCheckErrors      = "careplane_guardrail_check_errors_total"
	FenceDuration             = "careplane_fence_duration_seconds"
	FenceStepsHeld            = "careplane_fence_steps_held_total"
	Failovers                 = "careplane_failovers_total"
	FailoverDuration          = "careplane_failover_duration_seconds"
)

// LeaderElectionStatus is controller-runtime's leader election gauge, and
// LeaseName the name label careplane's Lease gives it.
const (
	LeaderElectionStatus = "leader_election_master_status"
	LeaseName            = "careplane.careplane.io"
)

// Family is a metric family: its labels (without those Prometheus adds when
// it scrapes: job, instance, ...) and whether it is a histogram, whose
// _bucket (with le), _sum and _count series follow from its name.
type Family struct {
	Labels    []string
	Histogram bool
}

// Exported lists every family the rules and the dashboard may use.
var Exported = map[string]Family{
	EnvironmentCondition:         {Labels: []string{"environment", "type", "status", "reason"}},
	EnvironmentActiveSite:        {Labels: []string{"environment", "site"}},
	EnvironmentFenceRequested:    {Labels: []string{"environment"}},
	EnvironmentFenced:            {Labels: []string{"environment"}},
	EnvironmentIsolationVerified: {Labels: []string{"environment"}},
	EnvironmentFencedTimestamp:   {Labels: []string{"environment"}},
	GuardrailParametersPresent:   {Labels: []string{"binding", "configmap_namespace", "configmap"}},
	GuardrailCheckTimestamp:      {},
	FenceIncompleteReconciles:    {},
	RestoresBlocked:              {},
	GuardrailCheckErrors:         {},
	FenceDuration:                {Histogram: true},
	FenceStepsHeld:               {},
	Failovers:                    {Labels: []string{"reason"}},
	FailoverDuration:             {Histogram: true},
	// controller-runtime's.
	LeaderElectionStatus:                        {Labels: []string{"name"}},
	"controller_runtime_reconcile_total":        {Labels: []string{"controller", "result"}},
	"controller_runtime_reconcile_errors_total": {Labels: []string{"controller"}},
	"controller_runtime_reconcile_time_seconds": {Labels: []string{"controller"}, Histogram: true},
	"controller_runtime_active_workers":         {Labels: []string{"controller"}},
	"workqueue_depth":                           {Labels: []string{"controller", "name", "priority"}},
	"workqueue_queue_duration_seconds":          {Labels: []string{"controller", "name"}, Histogram: true},
	"workqueue_retries_total":                   {Labels: []string{"controller", "name"}},
}

// Lookup returns the family a series name belongs to (a histogram's
// _bucket, _sum and _count belong to it), and the labels its series carry.
func Lookup(series string) (family string, labels []string, ok bool) {
	if f, found := Exported[series]; found {
		return series, f.Labels, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, cut := cutSuffix(series, suffix)
		if f, found := Exported[base]; cut && found && f.Histogram {
			labels = append([]string(nil), f.Labels...)
			if suffix == "_bucket" {
				labels = append(labels, "le")
			}
			return base, labels, true
		}
	}
	return "", nil, false
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)], true
	}
	return s, false
}
