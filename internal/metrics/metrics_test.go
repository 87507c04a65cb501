package metrics

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var chartFiles = filepath.Join("..", "..", "charts", "careplane", "files")

// TestDashboardUsesExportedMetrics checks that every PromQL expression of the
// Grafana dashboard, its panels' and its variables', names only metrics the
// manager exports, with only their labels.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartFiles, "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard.json does not parse: %v", err)
	}
	var exprs []string
	collectExprs(dash, "", &exprs)
	if len(exprs) < 20 {
		t.Fatalf("found %d expressions in the dashboard; expected every panel's", len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, p := range checkExpr(e, used) {
			t.Error(p)
		}
	}
	// The dashboard shows what the issue asks for: fleet state, fences and
	// their duration, failovers, restore progress, reconcile errors.
	for _, m := range []string{EnvironmentCondition, EnvironmentFenced, FenceDuration, Failovers,
		RestoresBlocked, "controller_runtime_reconcile_errors_total"} {
		if !used[m] {
			t.Errorf("the dashboard shows no %s", m)
		}
	}
}

// collectExprs gathers the "expr" of every target and the "query" and
// "definition" of every templating variable.
func collectExprs(v any, key string, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			collectExprs(x, k, out)
		}
	case []any:
		for _, x := range v {
			collectExprs(x, key, out)
		}
	case string:
		if key == "expr" || key == "definition" || (key == "query" && strings.Contains(v, "(")) {
			*out = append(*out, v)
		}
	}
}

// rulesFile is the Prometheus rule file the chart's PrometheusRule carries.
type rulesFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// TestAlertRules checks the alert rules the chart ships: every expression
// names only exported metrics and labels, every alert has a severity, a
// summary and a runbook_url whose anchor is a heading of docs/runbook.md.
func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartFiles, "prometheus-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf rulesFile
	if err := yaml.UnmarshalStrict(b, &rf); err != nil {
		t.Fatalf("prometheus-rules.yaml: %v", err)
	}
	runbook, err := os.ReadFile(filepath.Join("..", "..", "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := markdownAnchors(string(runbook))
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			for _, p := range checkExpr(r.Expr, map[string]bool{}) {
				t.Errorf("alert %s: %s", r.Alert, p)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: no summary or description", r.Alert)
			}
			const base = "https://github.com/careplane/careplane/blob/main/docs/runbook.md#"
			u := r.Annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(u, base)
			if !ok {
				t.Errorf("alert %s: runbook_url %q does not start with %s", r.Alert, u, base)
			} else if !anchors[anchor] {
				t.Errorf("alert %s: runbook_url anchor #%s is no heading of docs/runbook.md", r.Alert, anchor)
			}
		}
	}
	want := []string{"CareplaneFenceIncomplete", "CareplaneIsolationNotVerified", "CareplaneServingFromStandby",
		"CareplaneRestoreBlocked", "CareplaneNoLeader", "CareplaneGuardrailParametersMissing"}
	for _, a := range want {
		if !slices.Contains(alerts, a) {
			t.Errorf("no alert %s in prometheus-rules.yaml (have %v)", a, alerts)
		}
	}
}

// markdownAnchors returns the anchors GitHub gives the headings of a page:
// lower case, spaces to hyphens, punctuation but hyphens and underscores
// dropped.
func markdownAnchors(md string) map[string]bool {
	out := map[string]bool{}
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		out[strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")] = true
	}
	return out
}

var (
	promqlStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promqlRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGrouping  = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	promqlSelectors = regexp.MustCompile(`([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}`)
	promqlMatcher   = regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)`)
	promqlIdent     = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	// Words of PromQL that are not metric names, when not followed by "(".
	promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"inf": true, "nan": true, "e": true}
)

// checkExpr returns what is wrong with a PromQL expression: a metric that the
// manager does not export, or a label matcher on a label its series do not
// carry. It records the families it names in used. It is a scanner, not a
// parser: good enough for the expressions careplane ships, and it fails
// loudly (an unknown name) rather than silently on anything it misreads.
func checkExpr(expr string, used map[string]bool) []string {
	var problems []string
	s := strings.ReplaceAll(expr, "$__rate_interval", "")
	// Label matchers, with or without a metric name before the braces.
	s = promqlSelectors.ReplaceAllStringFunc(s, func(sel string) string {
		m := promqlSelectors.FindStringSubmatch(sel)
		name, matchers := m[1], promqlStrings.ReplaceAllString(m[2], `""`)
		if name == "" {
			problems = append(problems, fmt.Sprintf("%q: a selector without a metric name", expr))
			return " "
		}
		_, labels, ok := Lookup(name)
		for _, part := range strings.Split(matchers, ",") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			lm := promqlMatcher.FindStringSubmatch(part)
			if lm == nil {
				problems = append(problems, fmt.Sprintf("%q: cannot read the matcher %q", expr, part))
				continue
			}
			if ok && lm[1] != "__name__" && !slices.Contains(labels, lm[1]) {
				problems = append(problems, fmt.Sprintf("%q: %s has no label %q (it has %v)", expr, name, lm[1], labels))
			}
		}
		return " " + name + " "
	})
	s = promqlStrings.ReplaceAllString(s, " ")
	s = promqlRanges.ReplaceAllString(s, " ")
	s = promqlGrouping.ReplaceAllString(s, " ")
	// Grafana's label_values(metric, label): the label is not a metric.
	if m := regexp.MustCompile(`label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*([A-Za-z_]+)\s*\)`).FindStringSubmatch(s); m != nil {
		if _, labels, ok := Lookup(m[1]); ok && !slices.Contains(labels, m[2]) {
			problems = append(problems, fmt.Sprintf("%q: %s has no label %q", expr, m[1], m[2]))
		}
		s = strings.Replace(s, m[0], " "+m[1]+" ", 1)
	}
	for _, loc := range promqlIdent.FindAllStringIndex(s, -1) {
		word := s[loc[0]:loc[1]]
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || promqlKeywords[strings.ToLower(word)] {
			continue // a function or an aggregation, or a keyword
		}
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // part of a number (1e3) or a duration
		}
		family, _, ok := Lookup(word)
		if !ok {
			problems = append(problems, fmt.Sprintf("%q: %s is not a metric the manager exports (internal/metrics.Exported)", expr, word))
			continue
		}
		used[family] = true
	}
	return problems
}

// TestCheckExpr shows the checker catches what it is for.
func TestCheckExpr(t *testing.T) {
	for _, tc := range []struct {
		expr string
		ok   bool
	}{
		{`max by (environment) (careplane_environment_fenced) == 1`, true},
		{`histogram_quantile(0.95, sum by (le) (rate(careplane_fence_duration_seconds_bucket[$__rate_interval])))`, true},
		{`careplane_environment_condition{type="Fenced",reason=~"Fence.*"} == 1`, true},
		{`label_values(careplane_environment_fence_requested, environment)`, true},
		{`careplane_environments_fenced`, false},
		{`careplane_environment_condition{namespace="x"}`, false},
		{`label_values(careplane_environment_fenced, env)`, false},
		{`careplane_failovers_total_bucket`, false},
		{`{environment="x"}`, false},
	} {
		if got := len(checkExpr(tc.expr, map[string]bool{})) == 0; got != tc.ok {
			t.Errorf("checkExpr(%q) ok = %v, want %v: %v", tc.expr, got, tc.ok, checkExpr(tc.expr, map[string]bool{}))
		}
	}
}
