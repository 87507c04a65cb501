package build

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/careplane/careplane/api/v1alpha1"
)

// careRecords is a care-records environment (named as env111, whose
// owner reference checkMeta expects): a document store keeping the
// records on a volume, and a records API reading the store's password and
// answering on HTTP and on a UDP port.
func careRecords() *v1alpha1.HealthEnvironment {
	env := env111()
	env.Spec.Services = []v1alpha1.Service{
		{
			Name:             "document-store",
			Image:            "registry.example/records/store@sha256:" + digest('f'),
			Replicas:         ptr.To(int32(2)),
			Port:             5432,
			GeneratedSecrets: []string{"db-password"},
			Volumes: []v1alpha1.Volume{
				{Name: "records", MountPath: "/var/lib/records", Size: "10Gi", StorageClassName: ptr.To("careplane-csi"), AccessMode: corev1.ReadWriteOnce},
				{Name: "wal", MountPath: "/var/lib/wal", Size: "1Gi"},
			},
		},
		{
			Name:     "records-api",
			Image:    "registry.example/records/api@sha256:" + digest('e'),
			Replicas: ptr.To(int32(1)),
			Ports: []v1alpha1.ServicePort{
				{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP},
				{Name: "syslog", Port: 514, Protocol: corev1.ProtocolUDP},
			},
			TalksTo:     []string{"document-store"},
			SecretsFrom: []v1alpha1.SecretFrom{{Service: "document-store", Secret: "db-password", EnvVar: "STORE_PASSWORD"}},
		},
	}
	env.Spec.Integrations = nil
	env.Spec.Failover = v1alpha1.Failover{Standby: v1alpha1.StandbyNone}
	return env
}

func TestStatefulSet(t *testing.T) {
	env := careRecords()
	svc := service(t, env, "document-store")
	ss := toTyped[appsv1.StatefulSet](t, StatefulSet(env, v1alpha1.SitePrimary, "wales-111-primary", svc, "r1"))
	checkMeta(t, ss.TypeMeta, ss.ObjectMeta, "apps/v1", "StatefulSet", "document-store", "wales-111-primary",
		map[string]string{"app.kubernetes.io/managed-by": "careplane", "careplane.io/environment": "wales-111",
			"careplane.io/site": "primary", "careplane.io/service": "document-store", "app.kubernetes.io/name": "document-store"})
	if got := ptr.Deref(ss.Spec.Replicas, -1); got != 2 {
		t.Errorf("replicas = %d, want 2", got)
	}
	if ss.Spec.ServiceName != "document-store" || ss.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("serviceName %q, podManagementPolicy %q; want document-store, Parallel", ss.Spec.ServiceName, ss.Spec.PodManagementPolicy)
	}
	// careplane never deletes data: the claims outlive a scale-down (a
	// fence) and the StatefulSet.
	if p := ss.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType ||
		p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("persistentVolumeClaimRetentionPolicy = %+v, want Retain for both", p)
	}
	if got := ss.Spec.Selector.MatchLabels; len(got) != 2 || got["careplane.io/service"] != "document-store" {
		t.Errorf("selector = %v", got)
	}
	if got := ss.Spec.Template.Annotations[AnnotationCredentialsRevision]; got != "r1" {
		t.Errorf("template credentials revision = %q, want r1", got)
	}
	if len(ss.Spec.VolumeClaimTemplates) != 2 {
		t.Fatalf("%d claim templates, want 2", len(ss.Spec.VolumeClaimTemplates))
	}
	records, wal := ss.Spec.VolumeClaimTemplates[0], ss.Spec.VolumeClaimTemplates[1]
	if records.Name != "records" || ptr.Deref(records.Spec.StorageClassName, "") != "careplane-csi" ||
		!slices.Equal(records.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) ||
		!records.Spec.Resources.Requests.Storage().Equal(resource.MustParse("10Gi")) {
		t.Errorf("records claim template = %+v", records)
	}
	if records.Labels["careplane.io/environment"] != "wales-111" || records.Labels["careplane.io/service"] != "document-store" {
		t.Errorf("records claim labels = %v: the claims must carry the environment's labels", records.Labels)
	}
	if wal.Spec.StorageClassName != nil {
		t.Errorf("wal storage class = %q, want unset (the cluster's default)", *wal.Spec.StorageClassName)
	}
	if !slices.Equal(wal.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("wal access modes = %v, want the default ReadWriteOnce", wal.Spec.AccessModes)
	}
	c := ss.Spec.Template.Spec.Containers[0]
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if mounts["records"] != "/var/lib/records" || mounts["wal"] != "/var/lib/wal" || mounts["tmp"] != "/tmp" {
		t.Errorf("mounts = %v", mounts)
	}
	if got := ClaimName("records", "document-store", 1); got != "records-document-store-1" {
		t.Errorf("ClaimName = %q", got)
	}
}

func TestSecretsFrom(t *testing.T) {
	env := careRecords()
	tmpl := toTyped[corev1.PodTemplateSpec](t, PodTemplate(env, v1alpha1.SitePrimary, service(t, env, "records-api"), ""))
	c := tmpl.Spec.Containers[0]
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == "/var/run/careplane/secrets/document-store.db-password" {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil || !mount.ReadOnly {
		t.Fatalf("document-store's password is not mounted read-only at /var/run/careplane/secrets/document-store.db-password: %+v", c.VolumeMounts)
	}
	var vol *corev1.Volume
	for i := range tmpl.Spec.Volumes {
		if tmpl.Spec.Volumes[i].Name == mount.Name {
			vol = &tmpl.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.Secret == nil || vol.Secret.SecretName != "document-store.db-password" {
		t.Fatalf("volume %s = %+v, want Secret document-store.db-password", mount.Name, vol)
	}
	var ev *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "STORE_PASSWORD" {
			ev = &c.Env[i]
		}
	}
	if ev == nil || ev.ValueFrom == nil || ev.ValueFrom.SecretKeyRef == nil ||
		ev.ValueFrom.SecretKeyRef.Name != "document-store.db-password" || ev.ValueFrom.SecretKeyRef.Key != "value" || ev.Value != "" {
		t.Errorf("STORE_PASSWORD = %+v, want a reference to document-store.db-password's value", ev)
	}
}

func TestPortsTCPAndUDP(t *testing.T) {
	env := careRecords()
	api := service(t, env, "records-api")
	want := []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {Name: "syslog", ContainerPort: 514, Protocol: corev1.ProtocolUDP}}

	tmpl := toTyped[corev1.PodTemplateSpec](t, PodTemplate(env, v1alpha1.SitePrimary, api, ""))
	if got := tmpl.Spec.Containers[0].Ports; !slices.Equal(got, want) {
		t.Errorf("container ports = %+v, want %+v", got, want)
	}
	svc := toTyped[corev1.Service](t, Service(env, "wales-111-primary", api))
	front := toTyped[corev1.Service](t, FrontService(env, api))
	for _, s := range []*corev1.Service{svc, front} {
		var got []corev1.ContainerPort
		for _, p := range s.Spec.Ports {
			got = append(got, corev1.ContainerPort{Name: p.Name, ContainerPort: p.Port, Protocol: p.Protocol})
		}
		if !slices.Equal(got, want) {
			t.Errorf("Service %s/%s ports = %+v, want %+v", s.Namespace, s.Name, got, want)
		}
	}
	es := toTyped[discoveryv1.EndpointSlice](t, FrontEndpointSlice(env, api, v1alpha1.SitePrimary, []Endpoint{{IP: "10.0.0.1", Ready: true}}))
	var got []corev1.ContainerPort
	for _, p := range es.Ports {
		got = append(got, corev1.ContainerPort{Name: ptr.Deref(p.Name, ""), ContainerPort: ptr.Deref(p.Port, 0), Protocol: ptr.Deref(p.Protocol, "")})
	}
	if !slices.Equal(got, want) {
		t.Errorf("front EndpointSlice ports = %+v, want %+v", got, want)
	}

	// The API's ingress allows both ports, each with its protocol; the
	// store's egress from the API only the store's port.
	var apiPolicy, storePolicy *networkingv1.NetworkPolicy
	for _, p := range NetworkPoliciesFor(env, v1alpha1.SitePrimary, "wales-111-primary", env.Spec.Services) {
		np := toTyped[networkingv1.NetworkPolicy](t, p)
		switch np.Name {
		case ServicePolicyName("records-api"):
			apiPolicy = np
		case ServicePolicyName("document-store"):
			storePolicy = np
		}
	}
	if apiPolicy == nil || storePolicy == nil {
		t.Fatal("missing a service's policy")
	}
	portsOf := func(ps []networkingv1.NetworkPolicyPort) []string {
		var out []string
		for _, p := range ps {
			out = append(out, string(ptr.Deref(p.Protocol, ""))+"/"+p.Port.String())
		}
		return out
	}
	if len(apiPolicy.Spec.Egress) != 1 || !slices.Equal(portsOf(apiPolicy.Spec.Egress[0].Ports), []string{"TCP/5432"}) {
		t.Errorf("records-api egress = %+v, want TCP/5432 to the store", apiPolicy.Spec.Egress)
	}
	if len(storePolicy.Spec.Ingress) != 1 || !slices.Equal(portsOf(storePolicy.Spec.Ingress[0].Ports), []string{"TCP/5432"}) {
		t.Errorf("document-store ingress = %+v, want TCP/5432 from the API", storePolicy.Spec.Ingress)
	}
	env.Spec.Services[0].TalksTo = []string{"records-api"}
	for _, p := range NetworkPoliciesFor(env, v1alpha1.SitePrimary, "wales-111-primary", env.Spec.Services) {
		if np := toTyped[networkingv1.NetworkPolicy](t, p); np.Name == ServicePolicyName("records-api") {
			if len(np.Spec.Ingress) != 1 || !slices.Equal(portsOf(np.Spec.Ingress[0].Ports), []string{"TCP/8080", "UDP/514"}) {
				t.Errorf("records-api ingress = %+v, want TCP/8080 and UDP/514", np.Spec.Ingress)
			}
		}
	}
}

// TestSecretsFromAtTheRevisionItRuns: a service reads another's generated
// secret at the credentials revision it runs (every service of a site runs
// one), at a mount path that does not change with it.
func TestSecretsFromAtTheRevisionItRuns(t *testing.T) {
	env := careRecords()
	api := service(t, env, "records-api")
	for _, tt := range []struct {
		rev, want string
	}{
		{"", "document-store.db-password"},
		{InitialCredentials, "document-store.db-password"},
		{"r1", GeneratedSecretObjectName(v1alpha1.SitePrimary, "document-store", "db-password", "r1")},
	} {
		tmpl := toTyped[corev1.PodTemplateSpec](t, PodTemplate(env, v1alpha1.SitePrimary, api, tt.rev))
		var got []string
		for _, v := range tmpl.Spec.Volumes {
			if v.Secret != nil {
				got = append(got, v.Secret.SecretName)
			}
		}
		for _, e := range tmpl.Spec.Containers[0].Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				got = append(got, e.ValueFrom.SecretKeyRef.Name)
			}
		}
		if len(got) != 2 || got[0] != tt.want || got[1] != tt.want {
			t.Errorf("revision %q: the volume and variable name Secrets %v, want %s", tt.rev, got, tt.want)
		}
		var paths []string
		for _, m := range tmpl.Spec.Containers[0].VolumeMounts {
			if strings.HasPrefix(m.MountPath, SecretsPath) {
				paths = append(paths, m.MountPath)
			}
		}
		if !slices.Equal(paths, []string{SecretsPath + "/document-store.db-password"}) {
			t.Errorf("revision %q: secret mounts %v, want only %s/document-store.db-password", tt.rev, paths, SecretsPath)
		}
	}
}
