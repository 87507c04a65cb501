//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/metrics"
)

// rulesFile is the alert rules the chart ships.
var rulesFile = filepath.Join("..", "..", "charts", "careplane", "files", "prometheus-rules.yaml")

// sample is one scraped series: its name, labels and value.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

func (s sample) String() string {
	keys := make([]string, 0, len(s.labels))
	for k := range s.labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, s.labels[k])
	}
	return s.name + "{" + strings.Join(parts, ",") + "}"
}

// scrape reads a manager's /metrics: its samples (a histogram as its
// _bucket, _sum and _count series), and its families by name.
func scrape(ctx context.Context, o *operator) ([]sample, map[string]*dto.MetricFamily, error) {
	o.mu.Lock()
	addr := o.metricsAddr
	o.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return nil, nil, err
	}
	var out []sample
	for name, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.GetHistogram() != nil:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					bl := copyLabels(labels)
					bl["le"] = strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)
					out = append(out, sample{name + "_bucket", bl, float64(b.GetCumulativeCount())})
				}
				inf := copyLabels(labels)
				inf["le"] = "+Inf"
				out = append(out, sample{name + "_bucket", inf, float64(h.GetSampleCount())},
					sample{name + "_sum", labels, h.GetSampleSum()}, sample{name + "_count", labels, float64(h.GetSampleCount())})
			case m.GetCounter() != nil:
				out = append(out, sample{name, labels, m.GetCounter().GetValue()})
			case m.GetGauge() != nil:
				out = append(out, sample{name, labels, m.GetGauge().GetValue()})
			case m.GetUntyped() != nil:
				out = append(out, sample{name, labels, m.GetUntyped().GetValue()})
			}
		}
	}
	return out, families, nil
}

func copyLabels(l map[string]string) map[string]string {
	out := make(map[string]string, len(l)+1)
	for k, v := range l {
		out[k] = v
	}
	return out
}

// find returns the samples of a metric whose labels include want.
func find(samples []sample, name string, want map[string]string) []sample {
	var out []sample
	for _, s := range samples {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
			}
		}
		if match {
			out = append(out, s)
		}
	}
	return out
}

// alertScrapes scrapes the manager until check accepts its samples; it
// remembers every family seen, for the check that the manager exports every
// family the rules and the dashboard use.
type alertScrapes struct {
	seen map[string]*dto.MetricFamily
}

func (a *alertScrapes) until(t *testing.T, o *operator, timeout time.Duration, what string, check func([]sample) (bool, string)) []sample {
	t.Helper()
	var got []sample
	eventually(t, timeout, what, func(ctx context.Context) (bool, string, error) {
		samples, families, err := scrape(ctx, o)
		if err != nil {
			return false, err.Error(), nil
		}
		ok, why := check(samples)
		if ok {
			got = samples
			for name, f := range families {
				if _, known := metrics.Exported[name]; known {
					a.seen[name] = f
				}
			}
		}
		return ok, why, nil
	})
	return got
}

// one says whether the only sample of name with labels want has value v.
func one(samples []sample, name string, want map[string]string, v float64) (bool, string) {
	got := find(samples, name, want)
	if len(got) != 1 || got[0].value != v {
		return false, fmt.Sprintf("%s%v: %v, want one sample of value %v", name, want, got, v)
	}
	return true, ""
}

// all combines checks: all pass, or the first failure's reason.
func all(checks ...func() (bool, string)) (bool, string) {
	for _, c := range checks {
		if ok, why := c(); !ok {
			return false, why
		}
	}
	return true, ""
}

// TestAlertSeries causes each of the chart's alerts with the manager as it
// runs, and checks that the manager exports the series the alert rules read,
// with the labels and values each situation calls for; then it evaluates the
// rules (promtool) over those very samples, held for longer than each
// alert's `for`, and checks that the alert fires for that environment (and
// that the others stay silent). Finally every metric family the rules and
// the dashboard may use (internal/metrics.Exported) must have been seen,
// with exactly its listed labels.
func TestAlertSeries(t *testing.T) {
	promtool := promtoolPath(t)
	ctx := context.Background()
	scrapes := &alertScrapes{seen: map[string]*dto.MetricFamily{}}
	name := uniqueName("alerts")
	primary := name + "-primary"
	env := map[string]string{"environment": name}
	with := func(extra map[string]string) map[string]string {
		out := copyLabels(env)
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	// Run first on a fresh cluster, the test may meet the CRD not served yet.
	eventually(t, 30*time.Second, "HealthEnvironments served", func(ctx context.Context) (bool, string, error) {
		_, err := kubectlOutput("get", "henv")
		return err == nil, fmt.Sprint(err), nil
	})
	applyFailoverEnv(t, name, "{standby: Warm, trigger: Automatic, unavailableAfter: 5s, placement: {nodeSelector: {careplane.io/pool: standby}}}")
	waitReady(t, name, 2*time.Minute)
	waitStandbyRunning(t, ctx, name)

	healthy := scrapes.until(t, theOperator, 30*time.Second, "a healthy environment's series", func(s []sample) (bool, string) {
		return all(
			func() (bool, string) {
				return one(s, metrics.EnvironmentCondition, with(map[string]string{"type": "Ready", "status": "True", "reason": "Available"}), 1)
			},
			func() (bool, string) { return one(s, metrics.EnvironmentFenceRequested, env, 0) },
			func() (bool, string) { return one(s, metrics.EnvironmentFenced, env, 0) },
			func() (bool, string) {
				return one(s, metrics.EnvironmentActiveSite, with(map[string]string{"site": "Primary"}), 1)
			},
		)
	})
	if got := find(healthy, metrics.EnvironmentCondition, env); len(got) != len(v1alpha1.ConditionTypes) {
		t.Errorf("%d condition series for %s, want one per condition type (%d): %v", len(got), name, len(v1alpha1.ConditionTypes), got)
	}
	evalAlerts(t, promtool, ofEnvironment(healthy, name), environmentAlerts, nil)

	// 1. A fence held incomplete: an admission policy refuses the deletion
	// of the primary's ServiceAccounts, the fence's credential revocation.
	holdFence(t, primary)
	fenceCommand(t, name, "INC-ALERTS")
	incomplete := scrapes.until(t, theOperator, 60*time.Second, "an incomplete fence's series", func(s []sample) (bool, string) {
		return all(
			func() (bool, string) {
				return one(s, metrics.EnvironmentCondition, with(map[string]string{"type": "Fenced", "status": "False", "reason": "FenceIncomplete"}), 1)
			},
			func() (bool, string) { return one(s, metrics.EnvironmentFenceRequested, env, 1) },
			func() (bool, string) { return one(s, metrics.EnvironmentFenced, env, 0) },
			func() (bool, string) {
				if got := find(s, metrics.FenceIncompleteReconciles, nil); len(got) != 1 || got[0].value < 1 {
					return false, fmt.Sprintf("%s: %v, want at least 1", metrics.FenceIncompleteReconciles, got)
				}
				return true, ""
			},
		)
	})
	evalAlerts(t, promtool, ofEnvironment(incomplete, name), environmentAlerts, []firing{{"CareplaneFenceIncomplete", env}})
	releaseFence(t, primary)

	// 2. The fence completes and the critical service fails over to the
	// standby.
	waitFencedTrue(t, name)
	waitServingCondition(t, name, metav1.ConditionTrue, "PrimaryFenced")
	fenced := scrapes.until(t, theOperator, 30*time.Second, "a fenced environment's series, serving from the standby", func(s []sample) (bool, string) {
		return all(
			func() (bool, string) { return one(s, metrics.EnvironmentFenced, env, 1) },
			func() (bool, string) { return one(s, metrics.EnvironmentIsolationVerified, env, 1) },
			func() (bool, string) {
				return one(s, metrics.EnvironmentCondition, with(map[string]string{"type": "IsolationVerified", "status": "True", "reason": "NoAllowedFlows"}), 1)
			},
			func() (bool, string) {
				return one(s, metrics.EnvironmentActiveSite, with(map[string]string{"site": "Standby"}), 1)
			},
			func() (bool, string) {
				return one(s, metrics.EnvironmentActiveSite, with(map[string]string{"site": "Primary"}), 0)
			},
			func() (bool, string) {
				if got := find(s, metrics.EnvironmentFencedTimestamp, env); len(got) != 1 || time.Since(time.Unix(int64(got[0].value), 0)) > 10*time.Minute {
					return false, fmt.Sprintf("%s: %v, want the fence's start", metrics.EnvironmentFencedTimestamp, got)
				}
				return true, ""
			},
			func() (bool, string) {
				if got := find(s, metrics.Failovers, map[string]string{"reason": "PrimaryFenced"}); len(got) != 1 || got[0].value < 1 {
					return false, fmt.Sprintf("%s{reason=PrimaryFenced}: %v", metrics.Failovers, got)
				}
				return true, ""
			},
		)
	})
	evalAlerts(t, promtool, ofEnvironment(fenced, name), environmentAlerts, []firing{{"CareplaneServingFromStandby", env}})
	// A flow allowed into a fenced pod is what CareplaneIsolationNotVerified
	// pages for; careplane removes any such policy before it verifies, so
	// the scenario cannot be held here. The rule is evaluated over the
	// scraped series with the verdict turned, which checks that it reads
	// the series the manager exports under their labels.
	breached := turnVerdict(ofEnvironment(fenced, name))
	evalAlerts(t, promtool, breached, environmentAlerts, []firing{{"CareplaneServingFromStandby", env},
		{"CareplaneIsolationNotVerified", with(map[string]string{"reason": "FlowAllowed"})},
		{"CareplaneFenceIncomplete", env}})

	// 3. A restore from a revision that does not exist is blocked.
	responder(t, "patch", "henv", name, "--type=merge", "-p", `{"spec":{"isolation":{"mode":"None","restoreRevision":"no-such-revision"}}}`)
	blocked := scrapes.until(t, theOperator, 30*time.Second, "a blocked restore's series", func(s []sample) (bool, string) {
		return all(
			func() (bool, string) {
				return one(s, metrics.EnvironmentCondition, with(map[string]string{"type": "Restoring", "status": "False", "reason": "RestoreBlocked"}), 1)
			},
			func() (bool, string) {
				if got := find(s, metrics.RestoresBlocked, nil); len(got) != 1 || got[0].value < 1 {
					return false, fmt.Sprintf("%s: %v, want at least 1", metrics.RestoresBlocked, got)
				}
				return true, ""
			},
		)
	})
	evalAlerts(t, promtool, ofEnvironment(blocked, name), environmentAlerts, []firing{{"CareplaneServingFromStandby", env}, {"CareplaneRestoreBlocked", env}})

	// 4. The guardrails' parameters go missing, and come back.
	binding := map[string]string{"binding": "careplane-isolation-guard", "configmap_namespace": "careplane-system", "configmap": "careplane-guardrails"}
	scrapes.until(t, theOperator, 90*time.Second, "the guardrail parameters reported present", func(s []sample) (bool, string) {
		return one(s, metrics.GuardrailParametersPresent, binding, 1)
	})
	restore := func() { _, _ = kubectlOutput("apply", "-k", guardrailsKustomization) }
	t.Cleanup(restore)
	kubectl(t, "delete", "configmap", "careplane-guardrails", "-n", "careplane-system")
	missing := scrapes.until(t, theOperator, 90*time.Second, "the guardrail parameters reported missing", func(s []sample) (bool, string) {
		return one(s, metrics.GuardrailParametersPresent, binding, 0)
	})
	restore()
	var guardrails []sample
	for _, s := range missing {
		if s.name == metrics.GuardrailParametersPresent {
			guardrails = append(guardrails, s)
		}
	}
	var firingMissing []firing
	for _, s := range guardrails {
		if s.value != 0 {
			continue
		}
		firingMissing = append(firingMissing, firing{"CareplaneGuardrailParametersMissing", s.labels})
	}
	evalAlerts(t, promtool, guardrails, []string{"CareplaneGuardrailParametersMissing"}, firingMissing)
	scrapes.until(t, theOperator, 90*time.Second, "the guardrail parameters reported present again", func(s []sample) (bool, string) {
		return one(s, metrics.GuardrailParametersPresent, binding, 1)
	})

	// 5. No leader: two replicas with leader election; the leader is killed
	// and the other has not taken over yet.
	leaderScenario(t, scrapes, promtool, name)

	// Every family the rules and the dashboard may use was exported, with
	// exactly its labels.
	for name, fam := range metrics.Exported {
		f, ok := scrapes.seen[name]
		if !ok {
			t.Errorf("the manager never exported %s", name)
			continue
		}
		if fam.Histogram != (f.GetType() == dto.MetricType_HISTOGRAM) {
			t.Errorf("%s is a %s; internal/metrics says histogram=%t", name, f.GetType(), fam.Histogram)
		}
		want := slices.Sorted(slices.Values(fam.Labels))
		for _, m := range f.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetName())
			}
			sort.Strings(got)
			if !slices.Equal(got, want) {
				t.Errorf("%s has labels %v, internal/metrics lists %v", name, got, want)
				break
			}
		}
	}
}

// leaderScenario stops the suite's operator and runs two leader-elected
// replicas: the leader exports leader_election_master_status 1 and the
// environments' series, the other 0 and none of them. Killed without
// releasing the Lease, the leader leaves the other replica alone, not
// leading, for the lease duration: CareplaneNoLeader's situation.
func leaderScenario(t *testing.T, scrapes *alertScrapes, promtool, envName string) {
	ctx := context.Background()
	dir := t.TempDir()
	a := theOperator.replica(filepath.Join(dir, "replica-a.log"))
	b := theOperator.replica(filepath.Join(dir, "replica-b.log"))
	deleteLease := func() { _, _ = kubectlOutput("delete", "lease", leaseName, "-n", leaseNamespace, "--ignore-not-found") }
	theOperator.stop()
	deleteLease()
	t.Cleanup(func() {
		a.kill()
		b.stop()
		deleteLease()
		if err := theOperator.start(); err != nil {
			t.Errorf("restarting the suite's operator: %v\n%s", err, theOperator.logTail(20))
		}
	})
	// A long lease: the test reads the replica left behind before it may
	// take over.
	args := []string{"--leader-elect", "--leader-election-namespace=" + leaseNamespace,
		"--leader-election-lease-duration=60s", "--leader-election-renew-deadline=40s", "--leader-election-retry-period=2s"}
	if err := a.start(args...); err != nil {
		t.Fatalf("starting replica a: %v\n%s", err, a.logTail(20))
	}
	lead := map[string]string{"name": metrics.LeaseName}
	leader := scrapes.until(t, a, 60*time.Second, "replica a leads and exports the environments", func(s []sample) (bool, string) {
		return all(
			func() (bool, string) { return one(s, metrics.LeaderElectionStatus, lead, 1) },
			func() (bool, string) {
				return one(s, metrics.EnvironmentFenceRequested, map[string]string{"environment": envName}, 0)
			},
		)
	})
	if err := b.start(args...); err != nil {
		t.Fatalf("starting replica b: %v\n%s", err, b.logTail(20))
	}
	standby := scrapes.until(t, b, 30*time.Second, "replica b stands by", func(s []sample) (bool, string) {
		return one(s, metrics.LeaderElectionStatus, lead, 0)
	})
	for _, s := range standby {
		if strings.HasPrefix(s.name, "careplane_environment_") || strings.HasPrefix(s.name, "careplane_guardrail_parameters") {
			t.Errorf("replica b exports %s while it does not lead: only the leader may, or every alert pages twice", s)
			break
		}
	}
	// Both replicas scraped: a leads, nothing fires.
	evalAlerts(t, promtool, append(withInstance(only(leader, metrics.LeaderElectionStatus), "a"), withInstance(only(standby, metrics.LeaderElectionStatus), "b")...), leaderAlerts, nil)

	a.kill()
	alone := scrapes.until(t, b, 10*time.Second, "replica b alone, not leading yet", func(s []sample) (bool, string) {
		return one(s, metrics.LeaderElectionStatus, lead, 0)
	})
	evalAlerts(t, promtool, withInstance(only(alone, metrics.LeaderElectionStatus), "b"), leaderAlerts, []firing{{"CareplaneNoLeader", nil}})
	_ = ctx
}

func only(samples []sample, name string) []sample {
	var out []sample
	for _, s := range samples {
		if s.name == name {
			out = append(out, s)
		}
	}
	return out
}

func withInstance(samples []sample, instance string) []sample {
	out := make([]sample, len(samples))
	for i, s := range samples {
		l := copyLabels(s.labels)
		l["instance"] = instance
		out[i] = sample{s.name, l, s.value}
	}
	return out
}

// ofEnvironment keeps the per-environment series of one environment, and the
// leader's status: other tests' environments would make other alerts fire.
func ofEnvironment(samples []sample, name string) []sample {
	var out []sample
	for _, s := range samples {
		if e, ok := s.labels["environment"]; ok && e == name {
			out = append(out, s)
		}
	}
	return out
}

// turnVerdict returns samples as if the verification had found a flow: the
// IsolationVerified condition False/FlowAllowed, and so neither verified nor
// Fenced.
func turnVerdict(samples []sample) []sample {
	var out []sample
	for _, s := range samples {
		switch {
		case s.name == metrics.EnvironmentCondition && s.labels["type"] == v1alpha1.ConditionIsolationVerified:
			l := copyLabels(s.labels)
			l["status"], l["reason"] = "False", v1alpha1.ReasonFlowAllowed
			s = sample{s.name, l, 1}
		case s.name == metrics.EnvironmentIsolationVerified, s.name == metrics.EnvironmentFenced:
			s = sample{s.name, s.labels, 0}
		}
		out = append(out, s)
	}
	return out
}

// The alerts each kind of scenario evaluates.
var (
	environmentAlerts = []string{"CareplaneFenceIncomplete", "CareplaneIsolationNotVerified", "CareplaneServingFromStandby", "CareplaneRestoreBlocked"}
	leaderAlerts      = []string{"CareplaneNoLeader"}
)

// firing is an alert expected to fire, with the labels its rule gives it
// (besides severity).
type firing struct {
	alert  string
	labels map[string]string
}

// promtoolPath is bin/promtool (make promtool), or $PROMTOOL; "" when
// there is none and REQUIRE_PROMTOOL is not set.
func promtoolPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("PROMTOOL")
	if p == "" {
		p = filepath.Join("..", "..", "bin", "promtool")
	}
	if _, err := os.Stat(p); err != nil {
		// A cold build of promtool takes long (docs/development.md), so
		// make test-e2e does not build it; make test-alerts does and sets
		// REQUIRE_PROMTOOL.
		if os.Getenv("REQUIRE_PROMTOOL") != "" {
			t.Fatalf("promtool is needed to evaluate the alert rules: %v (make promtool)", err)
		}
		t.Logf("promtool is not built (make promtool): the series are checked, the rules not evaluated over them")
		return ""
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// evalAlerts evaluates the chart's alert rules with promtool over samples,
// each held at its value for three minutes (longer than any rule's `for`),
// and checks that of the alerts in consider exactly want fire. The rules are the chart's file with the
// annotations dropped: promtool compares annotations too, and what is tested
// here is whether an alert fires.
func evalAlerts(t *testing.T, promtool string, samples []sample, consider []string, want []firing) {
	t.Helper()
	if promtool == "" {
		return
	}
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string           `json:"name"`
			Rules []map[string]any `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			delete(r, "annotations")
			alerts = append(alerts, fmt.Sprint(r["alert"]))
		}
	}
	dir := t.TempDir()
	rulesOut, err := yaml.Marshal(rules)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rulesOut, 0o600); err != nil {
		t.Fatal(err)
	}
	type expAlert struct {
		ExpLabels map[string]string `json:"exp_labels"`
	}
	type alertTest struct {
		EvalTime  string     `json:"eval_time"`
		Alertname string     `json:"alertname"`
		ExpAlerts []expAlert `json:"exp_alerts"`
	}
	type series struct {
		Series string `json:"series"`
		Values string `json:"values"`
	}
	var input []series
	for _, s := range samples {
		l := copyLabels(s.labels)
		if _, ok := l["job"]; !ok {
			l["job"] = "careplane"
		}
		input = append(input, series{Series: sample{s.name, l, s.value}.String(),
			Values: strconv.FormatFloat(s.value, 'g', -1, 64) + "+0x12"})
	}
	var checks []alertTest
	for _, a := range alerts {
		if !slices.Contains(consider, a) {
			continue
		}
		at := alertTest{EvalTime: "3m", Alertname: a, ExpAlerts: []expAlert{}}
		for _, w := range want {
			if w.alert != a {
				continue
			}
			labels := copyLabels(w.labels)
			labels["severity"] = severityOf(rules.Groups, a)
			at.ExpAlerts = append(at.ExpAlerts, expAlert{ExpLabels: labels})
		}
		checks = append(checks, at)
	}
	test := map[string]any{
		"rule_files":          []string{"rules.yaml"},
		"evaluation_interval": "15s",
		"tests": []map[string]any{{
			"interval":        "15s",
			"input_series":    input,
			"alert_rule_test": checks,
		}},
	}
	out, err := yaml.Marshal(test)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "test.yaml")
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "test", "rules", "test.yaml")
	cmd.Dir = dir
	if res, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool test rules over the scraped series (want firing: %v): %v\n%s\ninput:\n%s", want, err, res, out)
	}
}

func severityOf(groups []struct {
	Name  string           `json:"name"`
	Rules []map[string]any `json:"rules"`
}, alert string) string {
	for _, g := range groups {
		for _, r := range g.Rules {
			if r["alert"] == alert {
				if l, ok := r["labels"].(map[string]any); ok {
					return fmt.Sprint(l["severity"])
				}
			}
		}
	}
	return ""
}

// holdFence installs an admission policy refusing the deletion of
// ServiceAccounts in ns: a fence's credential revocation there fails, and
// the fence stays incomplete, as it would on a cluster whose admission
// control or RBAC refuses careplane a step.
func holdFence(t *testing.T, ns string) {
	t.Helper()
	policy := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-hold-fence-" + ns},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Delete},
					Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"serviceaccounts"}},
				},
			}}},
			Validations: []admissionv1.Validation{{Expression: "false", Message: "held by the e2e test: no ServiceAccount deletion in " + ns}},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policy.Name,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			MatchResources: &admissionv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: ns}}},
		},
	}
	ctx := context.Background()
	for _, o := range []client.Object{policy, binding} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatalf("creating %s: %v", o.GetName(), err)
		}
	}
	t.Cleanup(func() { releaseFence(t, ns) })
	// The API server loads a new policy within a second or so: a dry-run
	// deletion must be refused before the fence may start.
	eventually(t, 30*time.Second, "the hold policy in force", func(ctx context.Context) (bool, string, error) {
		var sas corev1.ServiceAccountList
		if err := k8sClient.List(ctx, &sas, client.InNamespace(ns)); err != nil || len(sas.Items) == 0 {
			return false, fmt.Sprintf("service accounts in %s: %d (%v)", ns, len(sas.Items), err), nil
		}
		err := k8sClient.Delete(ctx, &sas.Items[0], client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), "held by the e2e test"), fmt.Sprint(err), nil
	})
}

// releaseFence removes holdFence's policy.
func releaseFence(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	name := "e2e-hold-fence-" + ns
	for _, o := range []client.Object{&admissionv1.ValidatingAdmissionPolicyBinding{}, &admissionv1.ValidatingAdmissionPolicy{}} {
		o.SetName(name)
		if err := k8sClient.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting %s: %v", name, err)
		}
	}
}
