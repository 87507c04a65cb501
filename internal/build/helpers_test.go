package build

import (
	"bytes"
	"encoding/json"
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/careplane/careplane/api/v1alpha1"
)

const testUID = types.UID("6f1c1a0e-5d0b-4a51-9a59-0d6b1f7e2c11")

func digest(c byte) string {
	return string(bytes.Repeat([]byte{c}, 64))
}

// env111 is a realistic NHS 111 environment: call handling takes calls from
// the gateway, refers to ambulance dispatch (an integration) and reads care
// records; booking is reached by the web front end and books with GP
// practices; prescriptions reads care records. Call handling, referral and
// prescriptions are critical.
func env111() *v1alpha1.HealthEnvironment {
	return &v1alpha1.HealthEnvironment{
		ObjectMeta: metav1.ObjectMeta{Name: "wales-111", UID: testUID},
		Spec: v1alpha1.HealthEnvironmentSpec{
			Tenant: v1alpha1.Tenant{DisplayName: "NHS 111 Wales", ODSCode: "RT4"},
			Services: []v1alpha1.Service{
				{
					Name:             "call-handling",
					Image:            "registry.example/111/call-handling@sha256:" + digest('a'),
					Replicas:         ptr.To(int32(3)),
					Port:             8080,
					Critical:         true,
					TalksTo:          []string{"referral", "care-records"},
					AllowFrom:        []v1alpha1.TrafficPeer{{NamespaceSelector: &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{corev1.LabelMetadataName: "gateway"}}}},
					GeneratedSecrets: []string{"db-password"},
					Env:              []v1alpha1.EnvVar{{Name: "REGION", Value: "wales"}, {Name: "LOG_LEVEL", Value: "info"}},
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
						Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
					},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
						PeriodSeconds:    5,
						FailureThreshold: 2,
					},
					LivenessProbe: &corev1.Probe{
						ProbeHandler:        corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
						InitialDelaySeconds: 10,
					},
				},
				{
					Name:             "referral",
					Image:            "registry.example/111/referral@sha256:" + digest('b'),
					Replicas:         ptr.To(int32(2)),
					Port:             8081,
					Critical:         true,
					TalksTo:          []string{"care-records"},
					GeneratedSecrets: []string{"db-password", "api-key"},
				},
				{
					Name:     "booking",
					Image:    "registry.example/111/booking@sha256:" + digest('c'),
					Replicas: ptr.To(int32(1)),
					Port:     8082,
					TalksTo:  []string{"referral"},
					AllowFrom: []v1alpha1.TrafficPeer{{
						NamespaceSelector: &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{corev1.LabelMetadataName: "gateway"}},
						PodSelector:       &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"app": "web"}},
					}},
				},
				{
					Name:             "care-records",
					Image:            "registry.example/111/care-records@sha256:" + digest('d'),
					Replicas:         ptr.To(int32(2)),
					Port:             8443,
					GeneratedSecrets: []string{"db-password"},
				},
				{
					Name:     "prescriptions",
					Image:    "registry.example/111/prescriptions@sha256:" + digest('e'),
					Replicas: ptr.To(int32(0)),
					Port:     8090,
					Critical: true,
					TalksTo:  []string{"care-records"},
				},
			},
			Integrations: []v1alpha1.Integration{
				{Name: "gp-connect", CIDRs: []string{"192.168.10.0/24", "172.16.0.0/12"}, Ports: []int32{8443, 443}, Services: []string{"booking", "referral"}},
				{Name: "ambulance-cad", CIDRs: []string{"10.20.0.0/16"}, Ports: []int32{443}, Services: []string{"referral"}},
			},
			Quota: v1alpha1.Quota{CPU: ptr.To(resource.MustParse("8")), Memory: ptr.To(resource.MustParse("16Gi")), Pods: ptr.To[int32](60)},
			Failover: v1alpha1.Failover{
				Standby:    v1alpha1.StandbyWarm,
				Trigger:    v1alpha1.TriggerAutomatic,
				ActiveSite: v1alpha1.SitePrimary,
				Placement: v1alpha1.Placement{
					NodeSelector: map[string]string{"careplane.io/pool": "standby"},
					Tolerations:  []corev1.Toleration{{Key: "careplane.io/pool", Operator: corev1.TolerationOpEqual, Value: "standby", Effect: corev1.TaintEffectNoSchedule}},
				},
			},
		},
	}
}

// service returns the service named name of env.
func service(t *testing.T, env *v1alpha1.HealthEnvironment, name string) v1alpha1.Service {
	t.Helper()
	for _, s := range env.Spec.Services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no service %q", name)
	return v1alpha1.Service{}
}

// toTyped converts an apply configuration to the typed object the API server
// would receive, through JSON as client-go sends it. Unknown fields fail the
// test, so every field set is one the API knows.
func toTyped[T any](t *testing.T, applyConfig any) *T {
	t.Helper()
	raw, err := json.Marshal(applyConfig)
	if err != nil {
		t.Fatalf("encoding apply configuration: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	out := new(T)
	if err := dec.Decode(out); err != nil {
		t.Fatalf("decoding apply configuration into %T: %v\n%s", out, err, raw)
	}
	return out
}

// wantOwner is the owner reference every child of env111 must carry.
func wantOwner() []metav1.OwnerReference {
	return []metav1.OwnerReference{{
		APIVersion:         "careplane.io/v1alpha1",
		Kind:               "HealthEnvironment",
		Name:               "wales-111",
		UID:                testUID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}}
}

// checkMeta checks the type, name, namespace and owner of an object, and that
// its labels hold every entry of wantLabels (and no careplane.io/service when
// wantLabels has none).
func checkMeta(t *testing.T, tm metav1.TypeMeta, om metav1.ObjectMeta, wantAPIVersion, wantKind, wantName, wantNamespace string, wantLabels map[string]string) {
	t.Helper()
	if tm.APIVersion != wantAPIVersion || tm.Kind != wantKind {
		t.Errorf("type = %s %s, want %s %s", tm.APIVersion, tm.Kind, wantAPIVersion, wantKind)
	}
	if om.Name != wantName || om.Namespace != wantNamespace {
		t.Errorf("name = %s/%s, want %s/%s", om.Namespace, om.Name, wantNamespace, wantName)
	}
	if !equalJSON(om.OwnerReferences, wantOwner()) {
		t.Errorf("ownerReferences = %s, want %s", mustJSON(om.OwnerReferences), mustJSON(wantOwner()))
	}
	for k, v := range wantLabels {
		if got, ok := om.Labels[k]; !ok || got != v {
			t.Errorf("label %s = %q (present %v), want %q; labels %v", k, got, ok, v, om.Labels)
		}
	}
	if _, ok := wantLabels[v1alpha1.LabelService]; !ok {
		if s, ok := om.Labels[v1alpha1.LabelService]; ok {
			t.Errorf("unexpected label %s=%s", v1alpha1.LabelService, s)
		}
	}
}

// stdLabels returns the labels every object of env111 on site carries, plus
// the service labels when svc is not empty.
func stdLabels(site, svc string) map[string]string {
	l := map[string]string{
		"app.kubernetes.io/managed-by": "careplane",
		"careplane.io/environment":     "wales-111",
		"careplane.io/site":            site,
	}
	if svc != "" {
		l["careplane.io/service"] = svc
		l["app.kubernetes.io/name"] = svc
	}
	return l
}

func with(m map[string]string, kv ...string) map[string]string {
	out := maps.Clone(m)
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func equalJSON(a, b any) bool {
	return mustJSON(a) == mustJSON(b)
}
