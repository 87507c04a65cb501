package build

import (
	"encoding/json"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/randfill"
)

// TestConversionsKeepEveryField fills the typed structs a HealthEnvironment
// embeds with random values, every field set or at random, and checks that
// their apply configurations encode to the same JSON. It fails when a
// Kubernetes upgrade adds a field the conversions do not copy yet.
func TestConversionsKeepEveryField(t *testing.T) {
	fillers := map[string]*randfill.Filler{}
	for name, nilChance := range map[string]float64{"every field": 0, "some fields": 0.5} {
		fillers[name] = randfill.NewWithSeed(42).NilChance(nilChance).NumElements(1, 3).Funcs(
			func(v *intstr.IntOrString, c randfill.Continue) {
				if c.Bool() {
					*v = intstr.FromInt32(c.Int31n(65535) + 1)
				} else {
					*v = intstr.FromString(c.String(8))
				}
			},
			func(v *resource.Quantity, c randfill.Continue) {
				*v = *resource.NewQuantity(c.Int63n(1<<20), resource.DecimalSI)
			},
		)
	}
	for name, f := range fillers {
		t.Run(name, func(t *testing.T) {
			for i := range 200 {
				var p corev1.Probe
				f.Fill(&p)
				sameJSON(t, "probe", i, p, probeApply(&p))

				var tol corev1.Toleration
				f.Fill(&tol)
				sameJSON(t, "toleration", i, tol, tolerationApply(tol))

				var sel metav1.LabelSelector
				f.Fill(&sel)
				sameJSON(t, "label selector", i, sel, labelSelectorApply(&sel))

				var r corev1.ResourceRequirements
				f.Fill(&r)
				if ac := resourcesApply(r); ac != nil {
					sameJSON(t, "resources", i, r, ac)
				} else {
					sameJSON(t, "resources", i, r, struct{}{})
				}
			}
		})
	}
	if probeApply(nil) != nil || labelSelectorApply(nil) != nil || resourcesApply(corev1.ResourceRequirements{}) != nil {
		t.Errorf("empty input did not convert to nil")
	}
}

// sameJSON compares the JSON of a typed value and of its apply configuration,
// ignoring nulls (typed fields without omitempty encode nil as null).
func sameJSON(t *testing.T, what string, i int, typed, applyConfig any) {
	t.Helper()
	a, b := generic(t, typed), generic(t, applyConfig)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("%s %d: apply configuration differs from the typed value\ntyped: %s\napply: %s", what, i, mustJSON(a), mustJSON(b))
	}
}

func generic(t *testing.T, v any) any {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return dropNulls(out)
}

func dropNulls(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if e == nil {
				delete(x, k)
				continue
			}
			x[k] = dropNulls(e)
		}
	case []any:
		for i := range x {
			x[i] = dropNulls(x[i])
		}
	}
	return v
}
