package build

import (
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// Paths and names inside every careplane pod.
const (
	// TmpVolumeName names the writable emptyDir volume mounted at TmpPath;
	// the root filesystem is read-only.
	TmpVolumeName = "tmp"
	// TmpPath is where the writable emptyDir is mounted.
	TmpPath = "/tmp"
	// SecretsPath is the directory under which each generated secret G is
	// mounted, at SecretsPath/G, with its value in the file "value".
	SecretsPath = "/var/run/careplane/secrets"
	// SecretVolumePrefix prefixes the volume name of each generated secret.
	SecretVolumePrefix = "secret-"
	// GeneratedSecretKey is the one data key of a generated Secret.
	GeneratedSecretKey = "value"
	// SecretFileMode is the mode of mounted secret files (0400). With the
	// pod's fsGroup the kubelet adds group read, so RunAsGroup can read them.
	SecretFileMode int32 = 0o400
	// RevisionHistoryLimit is how many old ReplicaSets a Deployment keeps.
	RevisionHistoryLimit int32 = 3
)

// ServiceAccount returns the ServiceAccount of svc in namespace, named after
// the service. Its token is never automounted: tenant workloads get no
// Kubernetes API rights.
func ServiceAccount(env *v1alpha1.HealthEnvironment, namespace string, svc v1alpha1.Service) *corev1ac.ServiceAccountApplyConfiguration {
	return corev1ac.ServiceAccount(svc.Name, namespace).
		WithLabels(ServiceLabels(env, siteLabelOfNamespace(env, namespace), svc.Name)).
		WithOwnerReferences(OwnerReference(env)).
		WithAutomountServiceAccountToken(false)
}

// Deployment returns the Deployment of svc on site, in namespace.
//
// Its pods run as ServiceAccount svc.Name without a token, without service
// links, under a security context Pod Security "restricted" admits (non-root
// UID/GID RunAsUser/RunAsGroup, RuntimeDefault seccomp, no privilege
// escalation, all capabilities dropped, read-only root filesystem, with a
// writable emptyDir at /tmp). Each generated secret G of svc is mounted
// read-only at SecretsPath/G. The pod template is annotated with
// credentialsRevision (when not empty), so rotating credentials rolls the
// pods. On the standby site the pods get spec.failover.placement's node
// selector and tolerations.
//
// With more than one replica the rollout surges one pod and never drops
// below the wanted count; with one replica or none the API defaults (which
// round to the same for one replica) apply. The caller overrides replicas
// (for example to zero for a fence or a Cold standby) with
// Spec.WithReplicas on the result.
func Deployment(env *v1alpha1.HealthEnvironment, site v1alpha1.Site, namespace string, svc v1alpha1.Service, credentialsRevision string) *appsv1ac.DeploymentApplyConfiguration {
	siteLabel := SiteLabel(site)

	container := corev1ac.Container().
		WithName(svc.Name).
		WithImage(svc.Image).
		WithPorts(corev1ac.ContainerPort().
			WithName(PortName).
			WithContainerPort(svc.Port).
			WithProtocol(tcp)).
		WithSecurityContext(corev1ac.SecurityContext().
			WithAllowPrivilegeEscalation(false).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
			WithReadOnlyRootFilesystem(true).
			WithRunAsNonRoot(true)).
		WithVolumeMounts(corev1ac.VolumeMount().WithName(TmpVolumeName).WithMountPath(TmpPath))
	for _, e := range svc.Env {
		container.WithEnv(corev1ac.EnvVar().WithName(e.Name).WithValue(e.Value))
	}
	if r := resourcesApply(svc.Resources); r != nil {
		container.WithResources(r)
	}
	if p := probeApply(svc.ReadinessProbe); p != nil {
		container.WithReadinessProbe(p)
	}
	if p := probeApply(svc.LivenessProbe); p != nil {
		container.WithLivenessProbe(p)
	}

	pod := corev1ac.PodSpec().
		WithServiceAccountName(svc.Name).
		WithAutomountServiceAccountToken(false).
		WithEnableServiceLinks(false).
		WithSecurityContext(corev1ac.PodSecurityContext().
			WithRunAsNonRoot(true).
			WithRunAsUser(RunAsUser).
			WithRunAsGroup(RunAsGroup).
			WithFSGroup(RunAsGroup).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault))).
		WithVolumes(corev1ac.Volume().
			WithName(TmpVolumeName).
			WithEmptyDir(corev1ac.EmptyDirVolumeSource()))

	// Sorted so that reordering generatedSecrets (a set) changes nothing.
	for _, g := range sortedUnique(svc.GeneratedSecrets) {
		vol := SecretVolumePrefix + g
		pod.WithVolumes(corev1ac.Volume().
			WithName(vol).
			WithSecret(corev1ac.SecretVolumeSource().
				WithSecretName(GeneratedSecretName(svc.Name, g)).
				WithDefaultMode(SecretFileMode)))
		container.WithVolumeMounts(corev1ac.VolumeMount().
			WithName(vol).
			WithMountPath(SecretsPath + "/" + g).
			WithReadOnly(true))
	}
	pod.WithContainers(container)

	if site == v1alpha1.SiteStandby {
		pl := env.Spec.Failover.Placement
		if len(pl.NodeSelector) > 0 {
			pod.WithNodeSelector(pl.NodeSelector)
		}
		for _, t := range pl.Tolerations {
			pod.WithTolerations(tolerationApply(t))
		}
	}

	template := corev1ac.PodTemplateSpec().
		WithLabels(ServiceLabels(env, siteLabel, svc.Name)).
		WithSpec(pod)
	if credentialsRevision != "" {
		template.WithAnnotations(map[string]string{AnnotationCredentialsRevision: credentialsRevision})
	}

	spec := appsv1ac.DeploymentSpec().
		WithReplicas(svc.ReplicaCount()).
		WithSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(env, svc.Name))).
		WithRevisionHistoryLimit(RevisionHistoryLimit).
		WithTemplate(template)
	if svc.ReplicaCount() > 1 {
		spec.WithStrategy(appsv1ac.DeploymentStrategy().
			WithType(appsv1.RollingUpdateDeploymentStrategyType).
			WithRollingUpdate(appsv1ac.RollingUpdateDeployment().
				WithMaxUnavailable(intstr.FromInt32(0)).
				WithMaxSurge(intstr.FromInt32(1))))
	}

	return appsv1ac.Deployment(svc.Name, namespace).
		WithLabels(ServiceLabels(env, siteLabel, svc.Name)).
		WithOwnerReferences(OwnerReference(env)).
		WithSpec(spec)
}

// Service returns the ClusterIP Service of svc in site namespace namespace:
// port "http" svc.Port to the pods' "http" port, selecting the pods of the
// Deployment.
func Service(env *v1alpha1.HealthEnvironment, namespace string, svc v1alpha1.Service) *corev1ac.ServiceApplyConfiguration {
	return corev1ac.Service(svc.Name, namespace).
		WithLabels(ServiceLabels(env, siteLabelOfNamespace(env, namespace), svc.Name)).
		WithOwnerReferences(OwnerReference(env)).
		WithSpec(corev1ac.ServiceSpec().
			WithType(corev1.ServiceTypeClusterIP).
			WithSelector(SelectorLabels(env, svc.Name)).
			WithPorts(corev1ac.ServicePort().
				WithName(PortName).
				WithProtocol(tcp).
				WithPort(svc.Port).
				WithTargetPort(intstr.FromString(PortName))))
}

// PodDisruptionBudget returns the PodDisruptionBudget of svc in namespace,
// allowing one pod at a time to be evicted, or nil when svc has at most one
// replica (a budget there would block node drains). The caller deletes an
// existing budget when this returns nil.
func PodDisruptionBudget(env *v1alpha1.HealthEnvironment, namespace string, svc v1alpha1.Service) *policyv1ac.PodDisruptionBudgetApplyConfiguration {
	if svc.ReplicaCount() <= 1 {
		return nil
	}
	return policyv1ac.PodDisruptionBudget(svc.Name, namespace).
		WithLabels(ServiceLabels(env, siteLabelOfNamespace(env, namespace), svc.Name)).
		WithOwnerReferences(OwnerReference(env)).
		WithSpec(policyv1ac.PodDisruptionBudgetSpec().
			WithMaxUnavailable(intstr.FromInt32(1)).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(env, svc.Name))))
}

// GeneratedSecret returns the Opaque Secret <svc>-<name> in namespace holding
// value under the key "value", labelled careplane.io/generated=true. value
// is the caller's random credential: it is never logged nor put in an
// error, and callers must not log the result either.
func GeneratedSecret(env *v1alpha1.HealthEnvironment, namespace string, svc v1alpha1.Service, name string, value []byte) *corev1ac.SecretApplyConfiguration {
	labels := ServiceLabels(env, siteLabelOfNamespace(env, namespace), svc.Name)
	labels[LabelGenerated] = "true"
	return corev1ac.Secret(GeneratedSecretName(svc.Name, name), namespace).
		WithLabels(labels).
		WithOwnerReferences(OwnerReference(env)).
		WithType(corev1.SecretTypeOpaque).
		WithData(map[string][]byte{GeneratedSecretKey: slices.Clone(value)})
}

// sortedUnique returns a sorted copy of s without duplicates.
func sortedUnique(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
