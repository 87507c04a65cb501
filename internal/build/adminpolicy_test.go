package build

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/careplane/careplane/api/v1alpha1"
)

// adminCRDs are the network-policy-api CRDs the e2e tests install, by kind.
var adminCRDs = map[string]string{
	"ClusterNetworkPolicy": "policy.networking.k8s.io_clusternetworkpolicies.yaml",
	"AdminNetworkPolicy":   "policy.networking.k8s.io_adminnetworkpolicies.yaml",
}

func TestAdminFencePolicy(t *testing.T) {
	forensics := func(s *v1alpha1.LabelSelector) *v1alpha1.HealthEnvironment {
		env := env111()
		env.Spec.Isolation.ForensicsFrom = s
		return env
	}
	byName := &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{corev1.LabelMetadataName: "forensics"}}
	byExpr := &v1alpha1.LabelSelector{MatchExpressions: []v1alpha1.LabelSelectorRequirement{
		{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: []v1alpha1.LabelValue{"soc", "dfir"}},
	}}
	// A selector stored before the API's rule (a forgeable label): the
	// admin tier passes nothing down, as the namespaced fence admits
	// nothing.
	forgeable := &v1alpha1.LabelSelector{MatchExpressions: []v1alpha1.LabelSelectorRequirement{
		{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []v1alpha1.LabelValue{"dfir", "soc"}},
	}}
	denyPods := `{"action":"Deny","from":[{"namespaces":{}}],"name":"careplane-deny-all"}`
	subject := `"subject":{"namespaces":{"matchLabels":{"kubernetes.io/metadata.name":"wales-111-primary"}}}`
	tests := []struct {
		name         string
		kind         AdminFenceKind
		env          *v1alpha1.HealthEnvironment
		denyNetworks bool
		wantSpec     string
	}{{
		name: "ClusterNetworkPolicy in tier Admin, forensics passed to the NetworkPolicy tier",
		kind: AdminFenceKinds[0], env: forensics(byName), denyNetworks: true,
		wantSpec: `{"egress":[{"action":"Deny","name":"careplane-deny-all","to":[{"namespaces":{}},{"networks":["0.0.0.0/0","::/0"]}]}],` +
			`"ingress":[{"action":"Pass","from":[{"namespaces":{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"In","values":["forensics"]}]}}],"name":"careplane-forensics"},` + denyPods + `],` +
			`"priority":0,` + subject + `,"tier":"Admin"}`,
	}, {
		name: "AdminNetworkPolicy without forensics denies every ingress",
		kind: AdminFenceKinds[1], env: forensics(nil), denyNetworks: true,
		wantSpec: `{"egress":[{"action":"Deny","name":"careplane-deny-all","to":[{"namespaces":{}},{"networks":["0.0.0.0/0","::/0"]}]}],` +
			`"ingress":[` + denyPods + `],"priority":0,` + subject + `}`,
	}, {
		name: "AdminNetworkPolicy without networks, forensics by expression, by name, sorted",
		kind: AdminFenceKinds[1], env: forensics(byExpr), denyNetworks: false,
		wantSpec: `{"egress":[{"action":"Deny","name":"careplane-deny-all","to":[{"namespaces":{}}]}],` +
			`"ingress":[{"action":"Pass","from":[{"namespaces":{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"In","values":["dfir","soc"]}]}}],"name":"careplane-forensics"},` + denyPods + `],` +
			`"priority":0,` + subject + `}`,
	}, {
		name: "a forgeable selector stored before the rule passes nothing down",
		kind: AdminFenceKinds[1], env: forensics(forgeable), denyNetworks: false,
		wantSpec: `{"egress":[{"action":"Deny","name":"careplane-deny-all","to":[{"namespaces":{}}]}],` +
			`"ingress":[` + denyPods + `],"priority":0,` + subject + `}`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.kind.Build(tt.env, "wales-111-primary", tt.denyNetworks)
			if got := u.GroupVersionKind(); got != tt.kind.GVK {
				t.Errorf("kind = %v, want %v", got, tt.kind.GVK)
			}
			if u.GetName() != "careplane-fence-wales-111" || u.GetNamespace() != "" {
				t.Errorf("name = %q/%q, want the cluster-scoped careplane-fence-wales-111", u.GetNamespace(), u.GetName())
			}
			// No owner: deleting the environment must not lift its fence.
			if refs := u.GetOwnerReferences(); len(refs) != 0 {
				t.Errorf("ownerReferences = %s, want none", mustJSON(refs))
			}
			if !equalJSON(u.GetLabels(), stdLabels(SiteLabelPrimary, "")) {
				t.Errorf("labels = %v, want %v", u.GetLabels(), stdLabels(SiteLabelPrimary, ""))
			}
			if got := mustJSON(u.Object["spec"]); got != tt.wantSpec {
				t.Errorf("spec =\n%s\nwant\n%s", got, tt.wantSpec)
			}
			// Every field is one the CRD declares, with an allowed value:
			// server-side apply rejects an undeclared field outright.
			for _, err := range checkAgainstCRD(t, tt.kind.GVK, u.Object) {
				t.Error(err)
			}
		})
	}
}

func TestAdminFenceKindsPreferClusterNetworkPolicy(t *testing.T) {
	var got []schema.GroupVersionKind
	for _, k := range AdminFenceKinds {
		got = append(got, k.GVK)
	}
	want := []schema.GroupVersionKind{
		{Group: "policy.networking.k8s.io", Version: "v1alpha2", Kind: "ClusterNetworkPolicy"},
		{Group: "policy.networking.k8s.io", Version: "v1alpha1", Kind: "AdminNetworkPolicy"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("AdminFenceKinds = %v, want %v", got, want)
	}
}

// checkAgainstCRD checks obj against the OpenAPI schema of the vendored CRD
// of gvk: every field declared, enums respected, required fields present,
// minProperties/maxProperties (the APIs' one-of peers) and numeric bounds
// held. It is no substitute for the API server (the e2e tests apply these
// objects), but it catches a misspelt field without one.
func checkAgainstCRD(t *testing.T, gvk schema.GroupVersionKind, obj map[string]any) []error {
	t.Helper()
	crd, err := adminCRD(gvk.Kind)
	if err != nil {
		t.Fatal(err)
	}
	if crd.Spec.Scope != "Cluster" {
		t.Errorf("%s is %s-scoped, want Cluster", gvk.Kind, crd.Spec.Scope)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name == gvk.Version && v.Served {
			spec := map[string]any{"spec": obj["spec"]}
			props := v.Schema.OpenAPIV3Schema["properties"].(map[string]any)
			return checkSchema("", spec, map[string]any{"type": "object", "properties": map[string]any{"spec": props["spec"]}})
		}
	}
	t.Fatalf("%s does not serve %s", adminCRDs[gvk.Kind], gvk.Version)
	return nil
}

type crdDocument struct {
	Spec struct {
		Scope    string `json:"scope"`
		Versions []struct {
			Name   string `json:"name"`
			Served bool   `json:"served"`
			Schema struct {
				OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

var (
	adminCRDsMu   sync.Mutex
	adminCRDsRead = map[string]*crdDocument{}
)

// adminCRD reads and parses the vendored CRD of kind once (the fuzz test
// checks thousands of policies against it).
func adminCRD(kind string) (*crdDocument, error) {
	adminCRDsMu.Lock()
	defer adminCRDsMu.Unlock()
	if crd, ok := adminCRDsRead[kind]; ok {
		return crd, nil
	}
	raw, err := os.ReadFile(filepath.Join("..", "..", "test", "e2e", "testdata", "network-policy-api", adminCRDs[kind]))
	if err != nil {
		return nil, err
	}
	crd := &crdDocument{}
	if err := yaml.Unmarshal(raw, crd); err != nil {
		return nil, err
	}
	adminCRDsRead[kind] = crd
	return crd, nil
}

func checkSchema(path string, v any, s map[string]any) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, v) {
		fail("%v is not one of %v", v, enum)
	}
	switch v := v.(type) {
	case map[string]any:
		if s["type"] != "object" {
			fail("an object where the schema has %v", s["type"])
			return errs
		}
		props, _ := s["properties"].(map[string]any)
		additional, _ := s["additionalProperties"].(map[string]any)
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch ps, ok := props[k].(map[string]any); {
			case ok:
				errs = append(errs, checkSchema(path+"."+k, v[k], ps)...)
			case additional != nil:
				errs = append(errs, checkSchema(path+"."+k, v[k], additional)...)
			default:
				fail("field %q not declared in the schema", k)
			}
		}
		for _, r := range asSlice(s["required"]) {
			if _, ok := v[r.(string)]; !ok {
				fail("required field %q missing", r)
			}
		}
		if n, ok := s["minProperties"].(float64); ok && float64(len(v)) < n {
			fail("%d properties, minProperties %v", len(v), n)
		}
		if n, ok := s["maxProperties"].(float64); ok && float64(len(v)) > n {
			fail("%d properties, maxProperties %v", len(v), n)
		}
	case []any:
		if s["type"] != "array" {
			fail("an array where the schema has %v", s["type"])
			return errs
		}
		if n, ok := s["minItems"].(float64); ok && float64(len(v)) < n {
			fail("%d items, minItems %v", len(v), n)
		}
		items, _ := s["items"].(map[string]any)
		for i, e := range v {
			errs = append(errs, checkSchema(fmt.Sprintf("%s[%d]", path, i), e, items)...)
		}
	case string:
		if s["type"] != "string" {
			fail("a string where the schema has %v", s["type"])
		}
		if n, ok := s["maxLength"].(float64); ok && float64(len(v)) > n {
			fail("%q is longer than %v", v, n)
		}
	case int64:
		if s["type"] != "integer" {
			fail("an integer where the schema has %v", s["type"])
		}
		if n, ok := s["minimum"].(float64); ok && float64(v) < n {
			fail("%d < minimum %v", v, n)
		}
		if n, ok := s["maximum"].(float64); ok && float64(v) > n {
			fail("%d > maximum %v", v, n)
		}
	default:
		fail("unexpected value %T %v", v, v)
	}
	return errs
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// The schema check itself: it must catch what the API server would reject.
func TestCheckSchemaCatchesMistakes(t *testing.T) {
	env := env111()
	tests := []struct {
		name   string
		mutate func(spec map[string]any)
		want   string
	}{
		{"misspelt field", func(s map[string]any) { s["subjects"] = s["subject"]; delete(s, "subject") }, `field "subjects" not declared`},
		{"unknown action", func(s map[string]any) { s["ingress"].([]any)[0].(map[string]any)["action"] = "Allow" }, "not one of"},
		{"priority out of range", func(s map[string]any) { s["priority"] = int64(1001) }, "maximum"},
		{"two peers in one", func(s map[string]any) {
			s["egress"].([]any)[0].(map[string]any)["to"].([]any)[0].(map[string]any)["networks"] = []any{"0.0.0.0/0"}
		}, "maxProperties"},
		{"no tier", func(s map[string]any) { delete(s, "tier") }, `required field "tier"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := ClusterNetworkPolicy(env, "wales-111-primary", true)
			tt.mutate(u.Object["spec"].(map[string]any))
			errs := checkAgainstCRD(t, ClusterNetworkPolicyGVK, u.Object)
			if !strings.Contains(fmt.Sprint(errs), tt.want) {
				t.Errorf("errors %v, want one containing %q", errs, tt.want)
			}
		})
	}
}
