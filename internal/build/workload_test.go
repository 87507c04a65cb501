package build

import (
	"maps"
	"reflect"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/careplane/careplane/api/v1alpha1"
)

func TestServiceAccount(t *testing.T) {
	env := env111()
	for _, ns := range []string{"wales-111-primary", "wales-111-standby"} {
		t.Run(ns, func(t *testing.T) {
			sa := toTyped[corev1.ServiceAccount](t, ServiceAccount(env, ns, service(t, env, "referral")))
			site := map[string]string{"wales-111-primary": "primary", "wales-111-standby": "standby"}[ns]
			checkMeta(t, sa.TypeMeta, sa.ObjectMeta, "v1", "ServiceAccount", "referral", ns, stdLabels(site, "referral"))
			if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("automountServiceAccountToken = %v, want false", sa.AutomountServiceAccountToken)
			}
		})
	}
}

func TestDeployment(t *testing.T) {
	env := env111()
	tests := []struct {
		name        string
		svc         string
		site        v1alpha1.Site
		namespace   string
		credRev     string
		wantSecrets map[string]string // mount path -> secret name
		wantRolling bool
	}{
		{
			// A rotation's credentials are Secrets of their own in the
			// primary: the hash of revision "3".
			name: "call-handling on primary", svc: "call-handling", site: v1alpha1.SitePrimary, namespace: "wales-111-primary", credRev: "3",
			wantSecrets: map[string]string{"/var/run/careplane/secrets/db-password": "call-handling.db-password.4e07408562"},
			wantRolling: true,
		},
		{
			name: "call-handling on primary, never rotated", svc: "call-handling", site: v1alpha1.SitePrimary, namespace: "wales-111-primary",
			wantSecrets: map[string]string{"/var/run/careplane/secrets/db-password": "call-handling.db-password"},
			wantRolling: true,
		},
		{
			name: "referral on standby", svc: "referral", site: v1alpha1.SiteStandby, namespace: "wales-111-standby", credRev: "7",
			wantSecrets: map[string]string{
				"/var/run/careplane/secrets/api-key":     "referral.api-key",
				"/var/run/careplane/secrets/db-password": "referral.db-password",
			},
			wantRolling: true,
		},
		{
			name: "booking, one replica, no secrets", svc: "booking", site: v1alpha1.SitePrimary, namespace: "wales-111-primary",
			wantSecrets: map[string]string{},
		},
		{
			name: "prescriptions, no replicas, on standby", svc: "prescriptions", site: v1alpha1.SiteStandby, namespace: "wales-111-standby", credRev: "1",
			wantSecrets: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := service(t, env, tt.svc)
			d := toTyped[appsv1.Deployment](t, Deployment(env, tt.site, tt.namespace, svc, tt.credRev))
			site := SiteLabel(tt.site)
			checkMeta(t, d.TypeMeta, d.ObjectMeta, "apps/v1", "Deployment", tt.svc, tt.namespace, stdLabels(site, tt.svc))

			// Spec.
			if d.Spec.Replicas == nil || *d.Spec.Replicas != svc.ReplicaCount() {
				t.Errorf("replicas = %v, want %d", d.Spec.Replicas, svc.ReplicaCount())
			}
			wantSelector := map[string]string{"careplane.io/environment": "wales-111", "careplane.io/service": tt.svc}
			if d.Spec.Selector == nil || !reflect.DeepEqual(d.Spec.Selector.MatchLabels, wantSelector) || len(d.Spec.Selector.MatchExpressions) != 0 {
				t.Errorf("selector = %+v, want matchLabels %v", d.Spec.Selector, wantSelector)
			}
			if d.Spec.RevisionHistoryLimit == nil || *d.Spec.RevisionHistoryLimit != 3 {
				t.Errorf("revisionHistoryLimit = %v, want 3", d.Spec.RevisionHistoryLimit)
			}
			if tt.wantRolling {
				want := appsv1.DeploymentStrategy{
					Type:          appsv1.RollingUpdateDeploymentStrategyType,
					RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: ptrIntStr(intstr.FromInt32(0)), MaxSurge: ptrIntStr(intstr.FromInt32(1))},
				}
				if !reflect.DeepEqual(d.Spec.Strategy, want) {
					t.Errorf("strategy = %s, want %s", mustJSON(d.Spec.Strategy), mustJSON(want))
				}
			} else if !reflect.DeepEqual(d.Spec.Strategy, appsv1.DeploymentStrategy{}) {
				t.Errorf("strategy = %s, want unset (API defaults)", mustJSON(d.Spec.Strategy))
			}

			// Pod template metadata.
			tpl := d.Spec.Template
			if !reflect.DeepEqual(tpl.Labels, stdLabels(site, tt.svc)) {
				t.Errorf("template labels = %v, want %v", tpl.Labels, stdLabels(site, tt.svc))
			}
			for k, v := range wantSelector {
				if tpl.Labels[k] != v {
					t.Errorf("template labels %v do not match the selector %v", tpl.Labels, wantSelector)
				}
			}
			if tt.credRev == "" {
				if _, ok := tpl.Annotations[AnnotationCredentialsRevision]; ok {
					t.Errorf("annotations = %v, want no credentials revision", tpl.Annotations)
				}
			} else if got := tpl.Annotations["careplane.io/credentials-revision"]; got != tt.credRev {
				t.Errorf("credentials-revision annotation = %q, want %q", got, tt.credRev)
			}

			// Pod spec.
			pod := tpl.Spec
			if pod.ServiceAccountName != tt.svc {
				t.Errorf("serviceAccountName = %q, want %q", pod.ServiceAccountName, tt.svc)
			}
			if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
				t.Errorf("automountServiceAccountToken = %v, want false", pod.AutomountServiceAccountToken)
			}
			if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
				t.Errorf("enableServiceLinks = %v, want false", pod.EnableServiceLinks)
			}
			if tt.site == v1alpha1.SiteStandby {
				if !reflect.DeepEqual(pod.NodeSelector, env.Spec.Failover.Placement.NodeSelector) {
					t.Errorf("nodeSelector = %v, want the placement's %v", pod.NodeSelector, env.Spec.Failover.Placement.NodeSelector)
				}
				if !reflect.DeepEqual(pod.Tolerations, env.Spec.Failover.Placement.Tolerations) {
					t.Errorf("tolerations = %+v, want the placement's %+v", pod.Tolerations, env.Spec.Failover.Placement.Tolerations)
				}
			} else if len(pod.NodeSelector) != 0 || len(pod.Tolerations) != 0 {
				t.Errorf("primary pods got placement: nodeSelector %v tolerations %v", pod.NodeSelector, pod.Tolerations)
			}
			if len(pod.Containers) != 1 {
				t.Fatalf("containers = %d, want 1", len(pod.Containers))
			}
			c := pod.Containers[0]
			if c.Name != tt.svc || c.Image != svc.Image {
				t.Errorf("container %s image %s, want %s image %s", c.Name, c.Image, tt.svc, svc.Image)
			}
			wantPorts := []corev1.ContainerPort{{Name: "http", ContainerPort: svc.Port, Protocol: corev1.ProtocolTCP}}
			if !reflect.DeepEqual(c.Ports, wantPorts) {
				t.Errorf("ports = %+v, want %+v", c.Ports, wantPorts)
			}
			var wantEnv []corev1.EnvVar
			for _, e := range svc.Env {
				wantEnv = append(wantEnv, corev1.EnvVar{Name: e.Name, Value: e.Value})
			}
			if !reflect.DeepEqual(c.Env, wantEnv) {
				t.Errorf("env = %+v, want %+v (in spec order)", c.Env, wantEnv)
			}
			if !equalJSON(c.Resources, svc.Resources) {
				t.Errorf("resources = %s, want %s", mustJSON(c.Resources), mustJSON(svc.Resources))
			}
			if !equalJSON(c.ReadinessProbe, svc.ReadinessProbe) {
				t.Errorf("readinessProbe = %s, want %s", mustJSON(c.ReadinessProbe), mustJSON(svc.ReadinessProbe))
			}
			if !equalJSON(c.LivenessProbe, svc.LivenessProbe) {
				t.Errorf("livenessProbe = %s, want %s", mustJSON(c.LivenessProbe), mustJSON(svc.LivenessProbe))
			}

			// Volumes: /tmp plus one read-only mount per generated secret.
			volumes := map[string]corev1.Volume{}
			for _, v := range pod.Volumes {
				volumes[v.Name] = v
			}
			if len(volumes) != len(pod.Volumes) {
				t.Errorf("duplicate volume names: %+v", pod.Volumes)
			}
			gotSecrets := map[string]string{}
			sawTmp := false
			for _, m := range c.VolumeMounts {
				v, ok := volumes[m.Name]
				if !ok {
					t.Errorf("mount %s names no volume", m.Name)
					continue
				}
				switch {
				case m.MountPath == "/tmp":
					sawTmp = true
					if v.EmptyDir == nil || m.ReadOnly {
						t.Errorf("/tmp is %+v mounted read-only=%v, want a writable emptyDir", v.VolumeSource, m.ReadOnly)
					}
				case v.Secret != nil:
					gotSecrets[m.MountPath] = v.Secret.SecretName
					if !m.ReadOnly {
						t.Errorf("secret mount %s is writable", m.MountPath)
					}
					if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o400 {
						t.Errorf("secret %s defaultMode = %v, want 0400", v.Secret.SecretName, v.Secret.DefaultMode)
					}
				default:
					t.Errorf("unexpected mount %+v of %+v", m, v)
				}
			}
			if !sawTmp {
				t.Errorf("no /tmp mount in %+v", c.VolumeMounts)
			}
			if !reflect.DeepEqual(gotSecrets, tt.wantSecrets) {
				t.Errorf("secret mounts = %v, want %v", gotSecrets, tt.wantSecrets)
			}
			if len(pod.Volumes) != len(c.VolumeMounts) {
				t.Errorf("%d volumes for %d mounts", len(pod.Volumes), len(c.VolumeMounts))
			}

			checkRestricted(t, &pod)
		})
	}
}

// TestDeploymentRestrictedRegardlessOfInput checks that nothing a service
// declares can weaken the security context.
func TestDeploymentRestrictedRegardlessOfInput(t *testing.T) {
	env := env111()
	for _, svc := range env.Spec.Services {
		for _, site := range []v1alpha1.Site{v1alpha1.SitePrimary, v1alpha1.SiteStandby} {
			d := toTyped[appsv1.Deployment](t, Deployment(env, site, SiteNamespace(env, site), svc, "1"))
			checkRestricted(t, &d.Spec.Template.Spec)
		}
	}
}

// checkRestricted asserts, control by control, what the Pod Security
// "restricted" profile (latest) requires of a pod. k8s.io/pod-security-admission
// is not in this module's graph; see the package report.
func checkRestricted(t *testing.T, pod *corev1.PodSpec) {
	t.Helper()
	// Baseline: host namespaces, privileged, capabilities beyond the
	// default set, hostPath, host ports, AppArmor, SELinux, /proc mount,
	// seccomp Unconfined, sysctls.
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("host namespaces in use")
	}
	if pod.SecurityContext == nil {
		t.Fatalf("no pod securityContext")
	}
	psc := pod.SecurityContext
	if len(psc.Sysctls) != 0 || psc.SELinuxOptions != nil || psc.AppArmorProfile != nil {
		t.Errorf("pod securityContext sets sysctls, SELinux or AppArmor: %+v", psc)
	}
	// Restricted: runAsNonRoot, non-zero runAsUser, seccomp RuntimeDefault.
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("pod runAsNonRoot = %v, want true", psc.RunAsNonRoot)
	}
	if psc.RunAsUser == nil || *psc.RunAsUser != 65532 || psc.RunAsGroup == nil || *psc.RunAsGroup != 65532 || psc.FSGroup == nil || *psc.FSGroup != 65532 {
		t.Errorf("pod runAsUser/runAsGroup/fsGroup = %v/%v/%v, want 65532", psc.RunAsUser, psc.RunAsGroup, psc.FSGroup)
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccompProfile = %+v, want RuntimeDefault", psc.SeccompProfile)
	}
	// Restricted: volume types.
	for _, v := range pod.Volumes {
		if v.EmptyDir == nil && v.Secret == nil {
			t.Errorf("volume %s has a type restricted does not allow: %+v", v.Name, v.VolumeSource)
		}
	}
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				t.Errorf("container %s uses hostPort %d", c.Name, p.HostPort)
			}
		}
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s has no securityContext", c.Name)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s is privileged", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s allowPrivilegeEscalation = %v, want false", c.Name, sc.AllowPrivilegeEscalation)
		}
		if sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
			t.Errorf("container %s capabilities = %+v, want drop [ALL] and add nothing", c.Name, sc.Capabilities)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s readOnlyRootFilesystem = %v, want true", c.Name, sc.ReadOnlyRootFilesystem)
		}
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("container %s runAsNonRoot = %v, want true", c.Name, sc.RunAsNonRoot)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			t.Errorf("container %s runs as root", c.Name)
		}
		if sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault && sc.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost {
			t.Errorf("container %s seccompProfile = %+v", c.Name, sc.SeccompProfile)
		}
		if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
			t.Errorf("container %s procMount = %v", c.Name, *sc.ProcMount)
		}
	}
}

func TestDeploymentReorderedSecretsAreStable(t *testing.T) {
	env := env111()
	svc := service(t, env, "referral")
	a := mustJSON(Deployment(env, v1alpha1.SitePrimary, "wales-111-primary", svc, "1"))
	svc.GeneratedSecrets = []string{"api-key", "db-password"}
	b := mustJSON(Deployment(env, v1alpha1.SitePrimary, "wales-111-primary", svc, "1"))
	if a != b {
		t.Errorf("reordering generatedSecrets changed the Deployment:\n%s\n%s", a, b)
	}
}

func TestService(t *testing.T) {
	env := env111()
	svc := service(t, env, "care-records")
	s := toTyped[corev1.Service](t, Service(env, "wales-111-primary", svc))
	checkMeta(t, s.TypeMeta, s.ObjectMeta, "v1", "Service", "care-records", "wales-111-primary", stdLabels("primary", "care-records"))
	if s.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("type = %s, want ClusterIP", s.Spec.Type)
	}
	d := toTyped[appsv1.Deployment](t, Deployment(env, v1alpha1.SitePrimary, "wales-111-primary", svc, ""))
	if !reflect.DeepEqual(s.Spec.Selector, d.Spec.Selector.MatchLabels) {
		t.Errorf("selector = %v, want the Deployment's %v", s.Spec.Selector, d.Spec.Selector.MatchLabels)
	}
	want := []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8443, TargetPort: intstr.FromString("http")}}
	if !reflect.DeepEqual(s.Spec.Ports, want) {
		t.Errorf("ports = %+v, want %+v", s.Spec.Ports, want)
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	env := env111()
	tests := []struct {
		replicas int32
		wantNil  bool
	}{
		{0, true},
		{1, true},
		{2, false},
		{5, false},
	}
	for _, tt := range tests {
		svc := service(t, env, "referral")
		svc.Replicas = &tt.replicas
		ac := PodDisruptionBudget(env, "wales-111-standby", svc)
		if (ac == nil) != tt.wantNil {
			t.Errorf("replicas %d: PodDisruptionBudget nil = %v, want %v", tt.replicas, ac == nil, tt.wantNil)
			continue
		}
		if ac == nil {
			continue
		}
		pdb := toTyped[policyv1.PodDisruptionBudget](t, ac)
		checkMeta(t, pdb.TypeMeta, pdb.ObjectMeta, "policy/v1", "PodDisruptionBudget", "referral", "wales-111-standby", stdLabels("standby", "referral"))
		if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) || pdb.Spec.MinAvailable != nil {
			t.Errorf("replicas %d: maxUnavailable = %v minAvailable = %v, want 1 and unset", tt.replicas, pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable)
		}
		want := map[string]string{"careplane.io/environment": "wales-111", "careplane.io/service": "referral"}
		if pdb.Spec.Selector == nil || !reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, want) {
			t.Errorf("selector = %+v, want %v", pdb.Spec.Selector, want)
		}
	}
}

func TestGeneratedSecret(t *testing.T) {
	env := env111()
	value := []byte("s3cr3t-value")
	ac := GeneratedSecret(env, "wales-111-primary", service(t, env, "referral"), "db-password", "", value)
	value[0] = 'X' // the caller reusing its buffer must not change the Secret
	s := toTyped[corev1.Secret](t, ac)
	checkMeta(t, s.TypeMeta, s.ObjectMeta, "v1", "Secret", "referral.db-password", "wales-111-primary",
		with(stdLabels("primary", "referral"), "careplane.io/generated", "true"))
	if s.Type != corev1.SecretTypeOpaque {
		t.Errorf("type = %s, want Opaque", s.Type)
	}
	if len(s.Data) != 1 || string(s.Data["value"]) != "s3cr3t-value" {
		t.Errorf("data has keys %v, want exactly \"value\" holding the given value", slices.Sorted(maps.Keys(s.Data)))
	}
	if len(s.StringData) != 0 {
		t.Errorf("stringData set")
	}
	if len(s.Annotations) != 0 {
		t.Errorf("annotations %v on a Secret of no rotation", s.Annotations)
	}

	// A rotation's: in the primary a Secret of its own, in the standby
	// the same one; both say their revision.
	for ns, name := range map[string]string{
		"wales-111-primary": GeneratedSecretObjectName(v1alpha1.SitePrimary, "referral", "db-password", "r2"),
		"wales-111-standby": "referral.db-password",
	} {
		s := toTyped[corev1.Secret](t, GeneratedSecret(env, ns, service(t, env, "referral"), "db-password", "r2", value))
		if s.Name != name || s.Annotations[AnnotationCredentialsRevision] != "r2" {
			t.Errorf("%s: Secret %s annotated %v, want %s annotated with revision r2", ns, s.Name, s.Annotations, name)
		}
	}
}

func ptrIntStr(v intstr.IntOrString) *intstr.IntOrString { return &v }

// TestBuildersKnowEveryServiceField fails when v1alpha1.Service gains a
// field, so that whoever adds it also teaches the builders (and the revision
// tests) what to do with it.
func TestBuildersKnowEveryServiceField(t *testing.T) {
	known := []string{
		"Name", "Image", "Replicas", "Port", "Ports", "Critical", "TalksTo", "AllowFrom",
		"GeneratedSecrets", "SecretsFrom", "Volumes", "Env", "Resources", "ReadinessProbe", "LivenessProbe",
	}
	var got []string
	for f := range reflect.TypeFor[v1alpha1.Service]().Fields() {
		got = append(got, f.Name)
	}
	if !slices.Equal(got, known) {
		t.Errorf("v1alpha1.Service fields = %v, builders know %v", got, known)
	}
}
