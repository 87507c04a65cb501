package charttest

// The Helm chart's static tests (make test-chart), with nothing but Go and
// the pinned helm (HELM, or bin/helm): helm lint, golden renders, every
// value used and documented, a strict schema that rejects typos, the
// README's values table and the chart's generated files up to date, and
// the defaults a hosting provider relies on.

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

const (
	root  = "../.."
	chart = root + "/charts/careplane"
)

// helm returns the pinned helm binary; the tests fail, not skip, without
// it: make test-chart builds it.
func helm(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		bin = filepath.Join(root, "bin", "helm")
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("helm not found at %s (make helm builds it): %v", abs, err)
	}
	return abs
}

func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// renders are the golden cases: testdata/<name>.golden.yaml is the chart
// rendered with these values files.
var renders = map[string][]string{
	"default": nil,
	"custom":  {"testdata/custom.values.yaml"},
	"minimal": {"testdata/minimal.values.yaml"},
}

func render(t *testing.T, valuesFiles ...string) string {
	t.Helper()
	args := []string{"template", "careplane", chart, "--namespace", "careplane-system"}
	for _, f := range valuesFiles {
		args = append(args, "-f", filepath.Join(chart, f))
	}
	out, err := runHelm(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestLint(t *testing.T) {
	for name, files := range renders {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			args := []string{"lint", "--strict", chart}
			for _, f := range files {
				args = append(args, "-f", filepath.Join(chart, f))
			}
			if out, err := runHelm(t, args...); err != nil {
				t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// TestGolden compares the renders with testdata/*.golden.yaml; UPDATE=1
// (make chart-golden) rewrites them instead: review the diff.
func TestGolden(t *testing.T) {
	for name, files := range renders {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got := render(t, files...)
			path := filepath.Join(chart, "testdata", name+".golden.yaml")
			if os.Getenv("UPDATE") == "1" {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("updated %s", path)
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (make chart-golden writes it)", err)
			}
			if got != string(want) {
				t.Errorf("%s is out of date; if the change is intended, run make chart-golden and review the diff:\n%s",
					path, lineDiff(string(want), got))
			}
		})
	}
}

// TestGoldenCoversEveryValue keeps the golden renders meaningful: each
// documented value of values.yaml is changed from its default by one of the
// testdata values files (custom changes everything it can, minimal turns
// off what custom leaves on).
func TestGoldenCoversEveryValue(t *testing.T) {
	defaults := subtrees(t, filepath.Join(chart, "values.yaml"))
	var overrides []map[string]string
	for _, files := range renders {
		for _, f := range files {
			overrides = append(overrides, subtrees(t, filepath.Join(chart, f)))
		}
	}
	for _, v := range parseChartValues(t).Documented {
		changed := false
		for _, o := range overrides {
			if got, ok := o[v.Path]; ok && got != defaults[v.Path] {
				changed = true
			}
		}
		if !changed {
			t.Errorf("no testdata values file changes %s from its default %s", v.Path, defaults[v.Path])
		}
	}
}

// TestEveryValueUsed: each leaf of values.yaml is read by a template, by
// its path or by a parent's that the template renders whole (toYaml
// .Values.resources covers resources.requests.cpu).
func TestEveryValueUsed(t *testing.T) {
	values := parseChartValues(t)
	var templates strings.Builder
	err := filepath.WalkDir(filepath.Join(chart, "templates"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		templates.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	text := templates.String()
	for _, leaf := range values.Leaves {
		used := false
		for p := leaf; p != "" && !used; p = parent(p) {
			used = regexp.MustCompile(`\.Values\.` + regexp.QuoteMeta(p) + `([^A-Za-z0-9_.]|$)`).MatchString(text)
		}
		if !used {
			t.Errorf("value %s is not used by any template", leaf)
		}
	}
}

// TestEveryValueDocumented: every value has a "# --" comment (itself or a
// parent), and the README's values table is the one chart-docs writes.
func TestEveryValueDocumented(t *testing.T) {
	values := parseChartValues(t)
	for _, leaf := range values.Undocumented() {
		t.Errorf("value %s has no '# --' comment in values.yaml", leaf)
	}
	readme, err := os.ReadFile(filepath.Join(chart, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := WithTable(string(readme), Table(values.Documented))
	if err != nil {
		t.Fatal(err)
	}
	if want != string(readme) {
		t.Errorf("the values table of charts/careplane/README.md is out of date: run make chart-docs\n%s", lineDiff(string(readme), want))
	}
}

// TestSchemaRejectsTypos: an unknown or mistyped value fails helm with the
// schema's message, at the top level and nested.
func TestSchemaRejectsTypos(t *testing.T) {
	for _, c := range []struct{ set, want string }{
		{"replica=2", "additional properties 'replica' not allowed"},
		{"guardrails.responderGroup=x", "additional properties 'responderGroup' not allowed"},
		{"manager.concurency=4", "additional properties 'concurency' not allowed"},
		{"metrics.secured=false", "additional properties 'secured' not allowed"},
		{"leaderElection=false", "got boolean, want object"},
		{"topologySpread.whenUnsatisfiable=Maybe", "whenUnsatisfiable"},
		{"manager.syncPeriod=10hours", "syncPeriod"},
		{"networkPolicy.apiServer.cidrs={10.0.0.1}", "cidrs"},
	} {
		t.Run(c.set, func(t *testing.T) {
			t.Parallel()
			out, err := runHelm(t, "template", "careplane", chart, "--set", c.set)
			if err == nil {
				t.Fatalf("helm template accepted --set %s", c.set)
			}
			if !strings.Contains(out, "values don't meet the specifications of the schema") || !strings.Contains(out, c.want) {
				t.Fatalf("helm template refused --set %s without the schema's %q:\n%s", c.set, c.want, out)
			}
		})
	}
}

// TestSchemaMatchesValues: the schema is strict (every object with
// properties forbids others) and knows exactly the keys values.yaml has.
func TestSchemaMatchesValues(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chart, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	schemaKeys := map[string]bool{}
	var walk func(path string, s map[string]any)
	walk = func(path string, s map[string]any) {
		props, ok := s["properties"].(map[string]any)
		if !ok {
			return
		}
		if s["additionalProperties"] != false {
			t.Errorf("schema %q has properties but allows others (additionalProperties: false is missing)", path)
		}
		for k, v := range props {
			p := strings.TrimPrefix(path+"."+k, ".")
			schemaKeys[p] = true
			if m, ok := v.(map[string]any); ok {
				walk(p, m)
			}
		}
	}
	walk("", schema)
	valueKeys := map[string]bool{}
	for p := range subtrees(t, filepath.Join(chart, "values.yaml")) {
		valueKeys[p] = true
	}
	for _, p := range sortedKeys(valueKeys) {
		// Below a value the schema leaves to Kubernetes (resources,
		// securityContext, a NetworkPolicyPeer), nothing is listed.
		if !schemaKeys[p] && schemaKeys[parent(p)] && schemaHasProperties(schema, parent(p)) {
			t.Errorf("values.yaml has %s, which values.schema.json does not describe", p)
		}
		if !schemaKeys[p] && parent(p) == "" {
			t.Errorf("values.yaml has %s, which values.schema.json does not describe", p)
		}
	}
	for _, p := range sortedKeys(schemaKeys) {
		if !valueKeys[p] && !strings.HasPrefix(p, "resources.") {
			t.Errorf("values.schema.json describes %s, which values.yaml does not have", p)
		}
	}
}

// TestChartInSync: the chart's copies of config/ (CRDs, the manager's and
// the responder's rules, the guardrails) are what hack/chart-sync.sh makes.
func TestChartInSync(t *testing.T) {
	dirs := []string{"templates/crds", "templates/guardrails", "files"}
	before := hashFiles(t, dirs)
	cmd := exec.Command(filepath.Join(root, "hack", "chart-sync.sh"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/chart-sync.sh: %v\n%s", err, out)
	}
	after := hashFiles(t, dirs)
	if before != after {
		t.Fatalf("hack/chart-sync.sh changed the chart: run make manifests and commit\n%s", lineDiff(before, after))
	}
}

// TestDefaultsForProduction: what the defaults promise a hosting provider,
// read from the default render as the API objects they become.
func TestDefaultsForProduction(t *testing.T) {
	objs := splitRender(t, render(t))

	var dep appsv1.Deployment
	decode(t, objs, "Deployment", "careplane-manager", &dep)
	if r := *dep.Spec.Replicas; r < 2 {
		t.Errorf("the Deployment has %d replica(s); want at least 2 by default (HA during an incident)", r)
	}
	spec := dep.Spec.Template.Spec
	if len(spec.TopologySpreadConstraints) != 1 || spec.TopologySpreadConstraints[0].TopologyKey != "kubernetes.io/hostname" ||
		spec.TopologySpreadConstraints[0].WhenUnsatisfiable != "ScheduleAnyway" {
		t.Errorf("want one soft topology spread constraint across nodes, got %+v", spec.TopologySpreadConstraints)
	}
	args := spec.Containers[0].Args
	for _, want := range []string{"--leader-elect", "--metrics-secure", "--metrics-bind-address=:8443"} {
		if !slices.Contains(args, want) {
			t.Errorf("the manager's args lack %s: %v", want, args)
		}
	}

	var pdb policyv1.PodDisruptionBudget
	decode(t, objs, "PodDisruptionBudget", "careplane-manager", &pdb)
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("the PodDisruptionBudget allows %v unavailable; want 1", pdb.Spec.MaxUnavailable)
	}

	var np networkingv1.NetworkPolicy
	decode(t, objs, "NetworkPolicy", "careplane-manager", &np)
	if len(np.Spec.PolicyTypes) != 2 {
		t.Errorf("the NetworkPolicy restricts %v; want Ingress and Egress", np.Spec.PolicyTypes)
	}
	// What it allows: TestManagerNetworkPolicy.

	var auth, reader, responder rbacv1.ClusterRole
	decode(t, objs, "ClusterRole", "careplane-metrics-auth", &auth)
	decode(t, objs, "ClusterRole", "careplane-metrics-reader", &reader)
	decode(t, objs, "ClusterRole", "careplane-responder", &responder)
	if fmt.Sprint(reader.Rules) != fmt.Sprint([]rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}) {
		t.Errorf("careplane-metrics-reader grants %v; want get on /metrics only", reader.Rules)
	}
	for _, r := range responder.Rules {
		if slices.Contains(r.Resources, "secrets") || slices.Contains(r.Resources, "*") || slices.Contains(r.Verbs, "*") {
			t.Errorf("careplane-responder grants %v", r)
		}
	}
	if _, ok := objs["ClusterRoleBinding/careplane-responder"]; ok {
		t.Errorf("the responder ClusterRole is bound by default; binding it is the provider's choice (responder.bindGroups)")
	}
}

func decode(t *testing.T, objs map[string]string, kind, name string, into any) {
	t.Helper()
	doc, ok := objs[kind+"/"+name]
	if !ok {
		t.Fatalf("the render has no %s %s (it has %v)", kind, name, sortedKeys(objs))
	}
	if err := sigsyaml.UnmarshalStrict([]byte(doc), into); err != nil {
		t.Fatalf("%s %s: %v", kind, name, err)
	}
}

// splitRender indexes a helm template output by kind/name.
func splitRender(t *testing.T, out string) map[string]string {
	t.Helper()
	objs := map[string]string{}
	for _, doc := range strings.Split(out, "\n---\n") {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := sigsyaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		if meta.Kind != "" {
			objs[meta.Kind+"/"+meta.Metadata.Name] = doc
		}
	}
	return objs
}

func parseChartValues(t *testing.T) Values {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chart, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := ParseValues(b)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// subtrees maps each key path of a values file to its value as JSON.
func subtrees(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(prefix string, m *yaml.Node)
	walk = func(prefix string, m *yaml.Node) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			p := strings.TrimPrefix(prefix+"."+m.Content[i].Value, ".")
			s, err := compactJSON(m.Content[i+1])
			if err != nil {
				t.Fatal(err)
			}
			out[p] = s
			if v := m.Content[i+1]; v.Kind == yaml.MappingNode {
				walk(p, v)
			}
		}
	}
	walk("", doc.Content[0])
	return out
}

func schemaHasProperties(schema map[string]any, path string) bool {
	s := schema
	for _, k := range strings.Split(path, ".") {
		props, _ := s["properties"].(map[string]any)
		s, _ = props[k].(map[string]any)
	}
	_, ok := s["properties"]
	return ok
}

func hashFiles(t *testing.T, dirs []string) string {
	t.Helper()
	var lines []string
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(chart, d), func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			lines = append(lines, fmt.Sprintf("%x %s", sha256.Sum256(b), strings.TrimPrefix(path, chart+"/")))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// lineDiff lists the lines only in want (-) and only in got (+), at most
// 40 of them: enough to see what changed without a diff tool.
func lineDiff(want, got string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	w, g := count(want), count(got)
	var out []string
	for _, l := range strings.Split(want, "\n") {
		if g[l] < w[l] {
			out = append(out, "- "+l)
			w[l]--
		}
	}
	w = count(want)
	for _, l := range strings.Split(got, "\n") {
		if w[l] < g[l] {
			out = append(out, "+ "+l)
			g[l]--
		}
	}
	if len(out) > 40 {
		out = append(out[:40], fmt.Sprintf("... and %d more lines", len(out)-40))
	}
	return strings.Join(out, "\n")
}
