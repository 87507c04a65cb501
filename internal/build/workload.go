package build

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"

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

// Deployment returns the Deployment of a service without volumes, svc on
// site, in namespace, running PodTemplate's pods.
//
// With more than one replica the rollout surges one pod and never drops
// below the wanted count; with one replica or none the API defaults (which
// round to the same for one replica) apply. The caller overrides replicas
// (for example to zero for a fence or a Cold standby) with
// Spec.WithReplicas on the result.
func Deployment(env *v1alpha1.HealthEnvironment, site v1alpha1.Site, namespace string, svc v1alpha1.Service, credentialsRevision string) *appsv1ac.DeploymentApplyConfiguration {
	spec := appsv1ac.DeploymentSpec().
		WithReplicas(svc.ReplicaCount()).
		WithSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(env, svc.Name))).
		WithRevisionHistoryLimit(RevisionHistoryLimit).
		WithTemplate(PodTemplate(env, site, svc, credentialsRevision))
	if svc.ReplicaCount() > 1 {
		spec.WithStrategy(appsv1ac.DeploymentStrategy().
			WithType(appsv1.RollingUpdateDeploymentStrategyType).
			WithRollingUpdate(appsv1ac.RollingUpdateDeployment().
				WithMaxUnavailable(intstr.FromInt32(0)).
				WithMaxSurge(intstr.FromInt32(1))))
	}

	return appsv1ac.Deployment(svc.Name, namespace).
		WithLabels(ServiceLabels(env, SiteLabel(site), svc.Name)).
		WithOwnerReferences(OwnerReference(env)).
		WithSpec(spec)
}

// StatefulSet returns the StatefulSet of a service with volumes, svc on
// site, in namespace: PodTemplate's pods, each with one
// PersistentVolumeClaim per volume, <volume>-<service>-<ordinal>, labelled
// like the service's other objects so that careplane (recovery points, the
// fence) finds them.
//
// The claims are retained when the StatefulSet is deleted or scaled down
// (persistentVolumeClaimRetentionPolicy Retain): careplane never deletes
// data, and a fence scales the StatefulSet to zero. Pods start and stop in
// parallel, as a Deployment's do; the service's own replication, if any, is
// its business. The claim templates of a StatefulSet cannot change: the
// caller replaces the StatefulSet (orphaning its pods and claims) when they
// must.
func StatefulSet(env *v1alpha1.HealthEnvironment, site v1alpha1.Site, namespace string, svc v1alpha1.Service, credentialsRevision string) *appsv1ac.StatefulSetApplyConfiguration {
	return StatefulSetOfGeneration(env, site, namespace, svc, credentialsRevision, "")
}

// StatefulSetOfGeneration is StatefulSet in data generation gen: named
// StatefulSetName(svc.Name, gen), so that its pods are <name>-<ordinal> and
// its claims <volume>-<name>-<ordinal>. Its selector and headless Service
// name stay the service's: Services select its pods by label, and evidence
// pods no longer carry the service label.
func StatefulSetOfGeneration(env *v1alpha1.HealthEnvironment, site v1alpha1.Site, namespace string, svc v1alpha1.Service, credentialsRevision, gen string) *appsv1ac.StatefulSetApplyConfiguration {
	spec := appsv1ac.StatefulSetSpec().
		WithReplicas(svc.ReplicaCount()).
		WithSelector(metav1ac.LabelSelector().WithMatchLabels(SelectorLabels(env, svc.Name))).
		WithServiceName(svc.Name).
		WithPodManagementPolicy(appsv1.ParallelPodManagement).
		WithRevisionHistoryLimit(RevisionHistoryLimit).
		WithUpdateStrategy(appsv1ac.StatefulSetUpdateStrategy().WithType(appsv1.RollingUpdateStatefulSetStrategyType)).
		WithPersistentVolumeClaimRetentionPolicy(appsv1ac.StatefulSetPersistentVolumeClaimRetentionPolicy().
			WithWhenDeleted(appsv1.RetainPersistentVolumeClaimRetentionPolicyType).
			WithWhenScaled(appsv1.RetainPersistentVolumeClaimRetentionPolicyType)).
		WithTemplate(PodTemplate(env, site, svc, credentialsRevision))
	for _, v := range svc.Volumes {
		spec.WithVolumeClaimTemplates(ClaimTemplate(env, site, svc, v))
	}
	return appsv1ac.StatefulSet(StatefulSetName(svc.Name, gen), namespace).
		WithLabels(ServiceLabels(env, SiteLabel(site), svc.Name)).
		WithOwnerReferences(OwnerReference(env)).
		WithSpec(spec)
}

// ClaimTemplate returns the claim template of volume v of svc: its size,
// access mode and class (the cluster's default when unset), labelled as
// svc's.
func ClaimTemplate(env *v1alpha1.HealthEnvironment, site v1alpha1.Site, svc v1alpha1.Service, v v1alpha1.Volume) *corev1ac.PersistentVolumeClaimApplyConfiguration {
	mode := v.AccessMode
	if mode == "" {
		mode = corev1.ReadWriteOnce
	}
	spec := corev1ac.PersistentVolumeClaimSpec().
		WithAccessModes(mode).
		WithVolumeMode(corev1.PersistentVolumeFilesystem).
		WithResources(corev1ac.VolumeResourceRequirements().
			WithRequests(corev1.ResourceList{corev1.ResourceStorage: v.Size.Quantity()}))
	if v.StorageClassName != nil {
		spec.WithStorageClassName(*v.StorageClassName)
	}
	return corev1ac.PersistentVolumeClaim(v.Name, "").
		WithLabels(ServiceLabels(env, SiteLabel(site), svc.Name)).
		WithSpec(spec)
}

// RestoredClaim returns claim name of volume v of svc in namespace, restored
// from VolumeSnapshot snapshot of recovery point point: the claim template's
// spec with the snapshot as its dataSource (the CSI driver fills the new
// volume from it), annotated with where its data came from. The restored
// StatefulSet adopts it, as it is named as its claim template names claims.
func RestoredClaim(env *v1alpha1.HealthEnvironment, namespace string, svc v1alpha1.Service, v v1alpha1.Volume, name, point, snapshot string) *corev1ac.PersistentVolumeClaimApplyConfiguration {
	c := ClaimTemplate(env, v1alpha1.SitePrimary, svc, v)
	c.WithName(name).WithNamespace(namespace).
		WithAnnotations(map[string]string{v1alpha1.AnnotationRestoredFrom: point + "/" + snapshot})
	c.Spec.WithDataSource(corev1ac.TypedLocalObjectReference().
		WithAPIGroup("snapshot.storage.k8s.io").WithKind("VolumeSnapshot").WithName(snapshot))
	return c
}

// ClaimName is the name of the claim of volume of replica ordinal of
// StatefulSet sts, as the StatefulSet controller names it.
func ClaimName(volume, sts string, ordinal int32) string {
	return fmt.Sprintf("%s-%s-%d", volume, sts, ordinal)
}

// DataGeneration names the data generation of the primary site's
// StatefulSets that a restore from a recovery point begun at started
// rebuilds: "r" and the start's Unix time in base 36, short enough that a
// service name of 40 characters, the generation and an ordinal still make a
// pod name and a controller-revision-hash label value.
func DataGeneration(started time.Time) string {
	return "r" + strconv.FormatInt(started.Unix(), 36)
}

// StatefulSetName names service svc's StatefulSet in data generation gen:
// the service's name before any restore from a recovery point (gen ""),
// <service>-<gen> after one. A new name per restore keeps the rebuilt pods
// and claims clear of the names the evidence pods and the compromised
// claims keep (docs/fence-and-restore.md, "Data").
func StatefulSetName(svc, gen string) string {
	if gen == "" {
		return svc
	}
	return svc + "-" + gen
}

// PodTemplate returns the pod template of svc on site.
//
// Its pods run as ServiceAccount svc.Name without a token, without service
// links, under a security context Pod Security "restricted" admits (non-root
// UID/GID RunAsUser/RunAsGroup, RuntimeDefault seccomp, no privilege
// escalation, all capabilities dropped, read-only root filesystem, with a
// writable emptyDir at /tmp). Each generated secret G of svc is mounted
// read-only at SecretsPath/G; each secret S that svc reads from service O
// (secretsFrom) at SecretsPath/O.S, and as an environment variable when
// asked; each names its Secret at credentialsRevision
// (GeneratedSecretObjectName): every service of a site runs one revision.
// Each volume is mounted at its mount path. The template is annotated with
// credentialsRevision (when not empty), so rotating credentials rolls the
// pods. On the standby site the pods get
// spec.failover.placement's node selector and tolerations.
func PodTemplate(env *v1alpha1.HealthEnvironment, site v1alpha1.Site, svc v1alpha1.Service, credentialsRevision string) *corev1ac.PodTemplateSpecApplyConfiguration {
	container := corev1ac.Container().
		WithName(svc.Name).
		WithImage(svc.Image).
		WithSecurityContext(corev1ac.SecurityContext().
			WithAllowPrivilegeEscalation(false).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
			WithReadOnlyRootFilesystem(true).
			WithRunAsNonRoot(true)).
		WithVolumeMounts(corev1ac.VolumeMount().WithName(TmpVolumeName).WithMountPath(TmpPath))
	for _, p := range svc.ServicePorts() {
		container.WithPorts(corev1ac.ContainerPort().
			WithName(p.Name).
			WithContainerPort(p.Port).
			WithProtocol(p.Protocol))
	}
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
		mountSecret(pod, container, SecretVolumePrefix+g, GeneratedSecretObjectName(site, svc.Name, g, credentialsRevision), SecretsPath+"/"+g)
	}
	for i, f := range sortedSecretsFrom(svc.SecretsFrom) {
		// Numbered: <service>-<secret> could be longer than a volume
		// name may be, or equal one of the service's own.
		object := GeneratedSecretObjectName(site, f.Service, f.Secret, credentialsRevision)
		mountSecret(pod, container, fmt.Sprintf("%sfrom-%d", SecretVolumePrefix, i), object, SecretsPath+"/"+GeneratedSecretName(f.Service, f.Secret))
		if f.EnvVar != "" {
			container.WithEnv(corev1ac.EnvVar().WithName(f.EnvVar).
				WithValueFrom(corev1ac.EnvVarSource().
					WithSecretKeyRef(corev1ac.SecretKeySelector().WithName(object).WithKey(GeneratedSecretKey))))
		}
	}
	for _, v := range svc.Volumes {
		// The claim template's volume: the StatefulSet adds it per pod.
		container.WithVolumeMounts(corev1ac.VolumeMount().WithName(v.Name).WithMountPath(v.MountPath))
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
		WithLabels(ServiceLabels(env, SiteLabel(site), svc.Name)).
		WithSpec(pod)
	if credentialsRevision != "" {
		template.WithAnnotations(map[string]string{AnnotationCredentialsRevision: credentialsRevision})
	}
	return template
}

// mountSecret adds Secret secret as volume vol of pod, mounted read-only at
// path in container.
func mountSecret(pod *corev1ac.PodSpecApplyConfiguration, container *corev1ac.ContainerApplyConfiguration, vol, secret, path string) {
	pod.WithVolumes(corev1ac.Volume().
		WithName(vol).
		WithSecret(corev1ac.SecretVolumeSource().
			WithSecretName(secret).
			WithDefaultMode(SecretFileMode)))
	container.WithVolumeMounts(corev1ac.VolumeMount().
		WithName(vol).
		WithMountPath(path).
		WithReadOnly(true))
}

// sortedSecretsFrom returns secretsFrom sorted by service and secret,
// without repeats (the first of a repeated pair wins), so that reordering
// the list changes nothing.
func sortedSecretsFrom(in []v1alpha1.SecretFrom) []v1alpha1.SecretFrom {
	out := slices.Clone(in)
	slices.SortStableFunc(out, func(a, b v1alpha1.SecretFrom) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Secret, b.Secret))
	})
	return slices.CompactFunc(out, func(a, b v1alpha1.SecretFrom) bool { return a.Service == b.Service && a.Secret == b.Secret })
}

// Service returns the ClusterIP Service of svc in site namespace namespace:
// each of svc's ports to the pods' port of the same name, selecting the
// pods of the service's Deployment or StatefulSet.
func Service(env *v1alpha1.HealthEnvironment, namespace string, svc v1alpha1.Service) *corev1ac.ServiceApplyConfiguration {
	spec := corev1ac.ServiceSpec().
		WithType(corev1.ServiceTypeClusterIP).
		WithSelector(SelectorLabels(env, svc.Name))
	for _, p := range svc.ServicePorts() {
		spec.WithPorts(corev1ac.ServicePort().
			WithName(p.Name).
			WithProtocol(p.Protocol).
			WithPort(p.Port).
			WithTargetPort(intstr.FromString(p.Name)))
	}
	return corev1ac.Service(svc.Name, namespace).
		WithLabels(ServiceLabels(env, siteLabelOfNamespace(env, namespace), svc.Name)).
		WithOwnerReferences(OwnerReference(env)).
		WithSpec(spec)
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

// GeneratedSecret returns the Opaque Secret holding generated secret name of
// svc in namespace at credentials revision rev (GeneratedSecretObjectName;
// annotated with rev when it is Rotated), with value under the key "value",
// labelled careplane.io/generated=true. value is the caller's random
// credential: it is never logged nor put in an error, and callers must not
// log the result either.
func GeneratedSecret(env *v1alpha1.HealthEnvironment, namespace string, svc v1alpha1.Service, name, rev string, value []byte) *corev1ac.SecretApplyConfiguration {
	site := siteLabelOfNamespace(env, namespace)
	labels := ServiceLabels(env, site, svc.Name)
	labels[LabelGenerated] = "true"
	object := GeneratedSecretName(svc.Name, name)
	if site == SiteLabelPrimary {
		object = GeneratedSecretObjectName(v1alpha1.SitePrimary, svc.Name, name, rev)
	}
	sec := corev1ac.Secret(object, namespace).
		WithLabels(labels).
		WithOwnerReferences(OwnerReference(env)).
		WithType(corev1.SecretTypeOpaque).
		WithData(map[string][]byte{GeneratedSecretKey: slices.Clone(value)})
	if Rotated(rev) {
		sec.WithAnnotations(map[string]string{AnnotationCredentialsRevision: rev})
	}
	return sec
}

// sortedUnique returns a sorted copy of s without duplicates.
func sortedUnique(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
