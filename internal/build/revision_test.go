package build

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/utils/ptr"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/careplane/careplane/api/v1alpha1"
)

func mustRevisionData(t *testing.T, services []v1alpha1.Service) []byte {
	t.Helper()
	data, err := RevisionData(services)
	if err != nil {
		t.Fatalf("RevisionData: %v", err)
	}
	return data
}

// TestRevisionHashUnchanged lists changes that change nothing a pod would
// see, and must therefore keep the revision (and its hash).
func TestRevisionHashUnchanged(t *testing.T) {
	base := RevisionHash(mustRevisionData(t, env111().Spec.Services))
	tests := []struct {
		name   string
		mutate func(s []v1alpha1.Service) []v1alpha1.Service
	}{
		{"nothing", func(s []v1alpha1.Service) []v1alpha1.Service { return s }},
		{"services reversed", func(s []v1alpha1.Service) []v1alpha1.Service { slices.Reverse(s); return s }},
		{"talksTo reordered", func(s []v1alpha1.Service) []v1alpha1.Service {
			slices.Reverse(s[0].TalksTo)
			return s
		}},
		{"talksTo repeated", func(s []v1alpha1.Service) []v1alpha1.Service {
			s[0].TalksTo = append(s[0].TalksTo, s[0].TalksTo[0])
			return s
		}},
		{"generatedSecrets reordered", func(s []v1alpha1.Service) []v1alpha1.Service {
			slices.Reverse(s[1].GeneratedSecrets)
			return s
		}},
		{"empty talksTo instead of none", func(s []v1alpha1.Service) []v1alpha1.Service {
			s[3].TalksTo = []string{}
			return s
		}},
		{"quantity spelled differently", func(s []v1alpha1.Service) []v1alpha1.Service {
			s[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("0.1")
			return s
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			services := tt.mutate(env111().Spec.Services)
			if got := RevisionHash(mustRevisionData(t, services)); got != base {
				t.Errorf("hash = %s, want %s", got, base)
			}
		})
	}
}

// TestRevisionHashChanged lists changes to a template; each must give a new
// revision.
func TestRevisionHashChanged(t *testing.T) {
	base := RevisionHash(mustRevisionData(t, env111().Spec.Services))
	tests := []struct {
		name   string
		mutate func(s []v1alpha1.Service) []v1alpha1.Service
	}{
		{"image", func(s []v1alpha1.Service) []v1alpha1.Service {
			s[0].Image = strings.Replace(s[0].Image, "aaaa", "aaab", 1)
			return s
		}},
		{"replicas", func(s []v1alpha1.Service) []v1alpha1.Service {
			s[0].Replicas = ptr.To(s[0].ReplicaCount() + 1)
			return s
		}},
		{"port", func(s []v1alpha1.Service) []v1alpha1.Service { s[1].Port = 9000; return s }},
		{"critical", func(s []v1alpha1.Service) []v1alpha1.Service { s[2].Critical = true; return s }},
		{"talksTo added", func(s []v1alpha1.Service) []v1alpha1.Service {
			s[3].TalksTo = []string{"referral"}
			return s
		}},
		{"allowFrom pod selector", func(s []v1alpha1.Service) []v1alpha1.Service {
			s[2].AllowFrom[0].PodSelector.MatchLabels["app"] = "mobile"
			return s
		}},
		{"generatedSecrets added", func(s []v1alpha1.Service) []v1alpha1.Service {
			s[0].GeneratedSecrets = append(s[0].GeneratedSecrets, "hl7-key")
			return s
		}},
		{"env value", func(s []v1alpha1.Service) []v1alpha1.Service { s[0].Env[1].Value = "debug"; return s }},
		{"env order", func(s []v1alpha1.Service) []v1alpha1.Service { slices.Reverse(s[0].Env); return s }},
		{"memory limit", func(s []v1alpha1.Service) []v1alpha1.Service {
			s[0].Resources.Limits[corev1.ResourceMemory] = resource.MustParse("512Mi")
			return s
		}},
		{"readiness path", func(s []v1alpha1.Service) []v1alpha1.Service {
			s[0].ReadinessProbe.HTTPGet.Path = "/ready"
			return s
		}},
		{"liveness port", func(s []v1alpha1.Service) []v1alpha1.Service {
			s[0].LivenessProbe.TCPSocket.Port = intstr.FromInt32(8081)
			return s
		}},
		{"service removed", func(s []v1alpha1.Service) []v1alpha1.Service { return s[:4] }},
		{"service renamed", func(s []v1alpha1.Service) []v1alpha1.Service { s[4].Name = "eps"; return s }},
	}
	seen := map[string]string{base: "base"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RevisionHash(mustRevisionData(t, tt.mutate(env111().Spec.Services)))
			if prev, ok := seen[got]; ok {
				t.Errorf("hash %s is the same as for %q", got, prev)
			}
			seen[got] = tt.name
		})
	}
}

func TestRevisionDataDoesNotMutateInput(t *testing.T) {
	services := env111().Spec.Services
	slices.Reverse(services)
	before := mustJSON(services)
	mustRevisionData(t, services)
	if after := mustJSON(services); after != before {
		t.Errorf("RevisionData changed its input:\n%s\n%s", before, after)
	}
}

// TestRevisionDataIsCanonical checks that re-encoding the data as the API
// server does (through generic maps) leaves the bytes, and so the hash,
// unchanged.
func TestRevisionDataIsCanonical(t *testing.T) {
	data := mustRevisionData(t, env111().Spec.Services)
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var generic map[string]any
	if err := dec.Decode(&generic); err != nil {
		t.Fatal(err)
	}
	again, err := json.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, data) {
		t.Errorf("re-encoded data differs:\n%s\n%s", data, again)
	}
	if !regexp.MustCompile(`^[0-9a-f]{10}$`).MatchString(RevisionHash(data)) {
		t.Errorf("hash %q is not 10 hex digits", RevisionHash(data))
	}
}

func TestServicesFromRevisionRoundTrip(t *testing.T) {
	data := mustRevisionData(t, env111().Spec.Services)
	services, err := ServicesFromRevision(data)
	if err != nil {
		t.Fatalf("ServicesFromRevision: %v", err)
	}
	var names []string
	for _, s := range services {
		names = append(names, s.Name)
	}
	if want := []string{"booking", "call-handling", "care-records", "prescriptions", "referral"}; !slices.Equal(names, want) {
		t.Errorf("services = %v, want %v", names, want)
	}
	// The templates come back whole: building from them gives the same data
	// and the same Deployments as building from the spec.
	if again := mustRevisionData(t, services); !bytes.Equal(again, data) {
		t.Errorf("round trip changed the data:\n%s\n%s", data, again)
	}
	env := env111()
	for _, s := range services {
		fromRevision := mustJSON(Deployment(env, v1alpha1.SiteStandby, "wales-111-standby", s, "1"))
		fromSpec := mustJSON(Deployment(env, v1alpha1.SiteStandby, "wales-111-standby", service(t, env, s.Name), "1"))
		if fromRevision != fromSpec {
			t.Errorf("%s: Deployment from the revision differs from the spec's:\n%s\n%s", s.Name, fromRevision, fromSpec)
		}
	}
}

func TestServicesFromRevisionErrors(t *testing.T) {
	tests := []struct {
		name, data, wantErr string
	}{
		{"not JSON", `{"services":`, "decoding revision data"},
		{"unknown field", `{"services":[{"name":"a","image":"i","port":1,"sidecar":true}]}`, `unknown field "sidecar"`},
		{"no services", `{"services":[]}`, "holds no services"},
		{"empty object", `{}`, "holds no services"},
		{"trailing data", `{"services":[{"name":"a","image":"i","port":1}]} {}`, "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ServicesFromRevision([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestControllerRevision(t *testing.T) {
	env := env111()
	data := mustRevisionData(t, env.Spec.Services)
	cr := toTyped[appsv1.ControllerRevision](t, ControllerRevision(env, data, 4))
	wantName := "wales-111-" + RevisionHash(data)
	checkMeta(t, cr.TypeMeta, cr.ObjectMeta, "apps/v1", "ControllerRevision", wantName, "wales-111", stdLabels("front", ""))
	if RevisionName(env, data) != wantName {
		t.Errorf("RevisionName = %s, want %s", RevisionName(env, data), wantName)
	}
	if cr.Revision != 4 {
		t.Errorf("revision = %d, want 4", cr.Revision)
	}
	if !bytes.Equal(cr.Data.Raw, data) {
		t.Errorf("data =\n%s\nwant\n%s", cr.Data.Raw, data)
	}
	if _, err := ServicesFromRevision(cr.Data.Raw); err != nil {
		t.Errorf("data read back does not decode: %v", err)
	}
}
