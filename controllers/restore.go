package controllers

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// +kubebuilder:rbac:groups=batch,resources=cronjobs;jobs,verbs=list;delete
// +kubebuilder:rbac:groups=apps,resources=statefulsets;daemonsets;replicasets,verbs=list;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=list;delete

// primaryServices are the service templates the primary runs: those of the
// known-good revision spec.isolation.restoreRevision names, for as long as it
// is set (a restore from a revision stays on it), or the spec's.
func (r *HealthEnvironmentReconciler) primaryServices(ctx context.Context, s *scope) ([]v1alpha1.Service, string, error) {
	name := s.env.Spec.Isolation.RestoreRevision
	if name == "" {
		return s.env.Spec.Services, "spec", nil
	}
	rev := &appsv1.ControllerRevision{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.names.Front, Name: name}, rev)
	if apierrors.IsNotFound(err) || (err == nil && rev.Labels[v1alpha1.LabelEnvironment] != s.env.Name) {
		return nil, name, &revisionNotFoundError{name: name}
	}
	if err != nil {
		return nil, name, fmt.Errorf("reading revision %s: %w", name, err)
	}
	services, err := build.ServicesFromRevision(rev.Data.Raw)
	if err != nil {
		return nil, name, fmt.Errorf("decoding revision %s: %w", name, err)
	}
	return services, name, nil
}

// volumesNotRestorableError reports a restore of services with volumes,
// which careplane cannot do yet: rebuilding them on the volumes the fence
// kept would bring back the data as the compromise left it, and their
// evidence pods hold the names the rebuilt StatefulSet's pods need. The
// fence stays (RestoreBlocked) until data restore from a recovery point
// exists; docs/fence-and-restore.md says what to do meanwhile.
type volumesNotRestorableError struct{ services []string }

func (e *volumesNotRestorableError) Error() string {
	return fmt.Sprintf("services %v have volumes, and restoring volumes from a recovery point is not built yet: "+
		"rebuilding them on the fenced volumes would bring back the compromised data; the fence stays", e.services)
}

// volumesNotRestorable says why the restore of services cannot proceed, or
// nil.
func volumesNotRestorable(services []v1alpha1.Service) error {
	var stateful []string
	for _, svc := range services {
		if svc.Stateful() {
			stateful = append(stateful, svc.Name)
		}
	}
	if len(stateful) == 0 {
		return nil
	}
	return &volumesNotRestorableError{services: stateful}
}

// revisionNotFoundError reports a restoreRevision that names no known-good
// revision of this environment.
type revisionNotFoundError struct{ name string }

func (e *revisionNotFoundError) Error() string {
	return fmt.Sprintf("isolation.restoreRevision %q is not a known-good revision of this environment (see `kubectl get controllerrevisions -n <front namespace>`)", e.name)
}

// reconcileRestore rebuilds a fenced primary site after a responder set the
// spec's mode back to None (fence.Decide: the only way a fence lifts). The
// fence stays until the rebuilt pods are Ready, and the rebuild is clean:
// every other policy and every ServiceAccount not careplane's removed, the
// tenant's workload controllers and RBAC removed, careplane's ServiceAccounts
// recreated, generated Secrets rotated, and Deployments recreated whole
// (nothing another writer added to them comes back) from the spec or the
// named revision. Then traffic returns, the allows come back, evidence pods
// stay isolated by their own policy, and the fence goes, its record last. It
// reports whether the restore completed.
func (r *HealthEnvironmentReconciler) reconcileRestore(ctx context.Context, s *scope) (bool, error) {
	services := s.primary
	ns := s.names.Primary
	rec := s.record
	if rec.RestoreID == "" {
		rec.RestoreID = fence.NewID(s.now)
	}
	s.restoring = true
	w := r.writer()
	nsObj := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		return false, fmt.Errorf("reading namespace %s: %w", ns, err)
	}
	if err := w.writeRecord(ctx, nsObj, rec); err != nil {
		return false, err
	}
	s.record = rec
	if err := w.writeDenyPolicy(ctx, s.env); err != nil {
		return false, fmt.Errorf("keeping the fence policy: %w", err)
	}

	obs, err := r.observeFence(ctx, s)
	if err != nil {
		return false, err
	}
	obs.CredentialsRevision = rec.RestoreID
	plan := fence.PlanFence(obs)
	var accounts []fence.Action
	for _, a := range plan.Step(3) {
		if a.Kind == "ServiceAccount" {
			accounts = append(accounts, a)
		}
	}
	d := &done{}
	err = all(
		func() error { return r.carryOut(ctx, s, plan.Step(2), d, rec.RestoreID) },
		func() error { return r.carryOut(ctx, s, accounts, d, rec.RestoreID) },
		func() error { return r.removeTenantWorkloads(ctx, s, ns) },
	)
	d.report(ctx, r, s, ns)
	if err != nil {
		return false, err
	}
	// The rebuilt pods must be admitted: the fence's quota goes (the deny
	// policy stays until they are Ready).
	if err := r.deleteObserved(ctx, &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: build.FenceQuotaName}}, ""); err != nil {
		return false, err
	}
	for _, svc := range services {
		for _, g := range svc.GeneratedSecrets {
			if err := r.rotateSecret(ctx, s, ns, svc, g, rec.RestoreID); err != nil {
				return false, err
			}
		}
		dep, err := r.rebuildDeployment(ctx, s, ns, svc, rec.RestoreID)
		if err != nil {
			return false, err
		}
		if err := r.apply(ctx, build.Service(s.env, ns, svc), &corev1.Service{}); err != nil {
			return false, err
		}
		s.observeDeployment(v1alpha1.SitePrimary, svc, dep)
	}
	if !s.allReadyOf(services) {
		return false, nil
	}

	// The rebuilt site is Ready: bring back its allows (evidence pods stay
	// isolated by their own policy), then lift the fence.
	if err := r.apply(ctx, build.EvidencePolicy(s.env, ns), &networkingv1.NetworkPolicy{}); err != nil {
		return false, err
	}
	for _, p := range build.NetworkPoliciesFor(s.env, v1alpha1.SitePrimary, ns, services) {
		if err := r.apply(ctx, p, &networkingv1.NetworkPolicy{}); err != nil {
			return false, err
		}
	}
	// admin-tier and the deny policy before the record: while the record
	// stays, a crash here only runs the restore's last steps again.
	if err := r.deleteAdminFence(ctx, s); err != nil {
		return false, err
	}
	if err := r.deleteObserved(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: build.FencePolicyName}}, ""); err != nil {
		return false, err
	}
	if err := w.writeRecord(ctx, nsObj, fence.Record{}); err != nil {
		return false, err
	}
	return true, nil
}

// rebuildDeployment recreates a service's Deployment for credentials
// revision rev, once: deleted and created anew, so that no field another
// writer added (an injected sidecar) survives the restore. It returns the
// Deployment as the cache holds it once it runs revision rev, or nil.
func (r *HealthEnvironmentReconciler) rebuildDeployment(ctx context.Context, s *scope, ns string, svc v1alpha1.Service, rev string) (*appsv1.Deployment, error) {
	want := build.Deployment(s.env, v1alpha1.SitePrimary, ns, svc, rev)
	live := &appsv1.Deployment{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: svc.Name}, live)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("reading deployment %s/%s: %w", ns, svc.Name, err)
	case live.Spec.Template.Annotations[build.AnnotationCredentialsRevision] != rev:
		if err := r.deleteObserved(ctx, live, live.UID); err != nil && !apierrors.IsConflict(err) {
			return nil, err
		}
		r.Applier.Forget(want)
		if _, err := r.Applier.Apply(ctx, want, ""); err != nil {
			return nil, err
		}
		return nil, nil
	}
	if err := r.apply(ctx, want, &appsv1.Deployment{}); err != nil {
		return nil, err
	}
	dep := &appsv1.Deployment{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: svc.Name}, dep); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if dep.Spec.Template.Annotations[build.AnnotationCredentialsRevision] != rev {
		return nil, nil
	}
	return dep, nil
}

// tenantKinds are the kinds a restore removes from the primary namespace
// unless careplane made them: whatever could start a pod or grant a right
// once the fence quota goes.
var tenantKinds = []schema.GroupVersionKind{
	batchv1.SchemeGroupVersion.WithKind("CronJobList"),
	batchv1.SchemeGroupVersion.WithKind("JobList"),
	appsv1.SchemeGroupVersion.WithKind("StatefulSetList"),
	appsv1.SchemeGroupVersion.WithKind("DaemonSetList"),
	appsv1.SchemeGroupVersion.WithKind("ReplicaSetList"),
	rbacv1.SchemeGroupVersion.WithKind("RoleList"),
	rbacv1.SchemeGroupVersion.WithKind("RoleBindingList"),
}

// removeTenantWorkloads deletes, from the primary namespace, every object of
// tenantKinds but the ReplicaSets of careplane's Deployments (which go with
// their Deployment when it is rebuilt). careplane makes none of the others.
func (r *HealthEnvironmentReconciler) removeTenantWorkloads(ctx context.Context, s *scope, ns string) error {
	ours := map[string]bool{}
	for _, svc := range s.primary {
		ours[svc.Name] = true
	}
	var errs []error
	var removed []string
	for _, gvk := range tenantKinds {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(gvk)
		if err := r.APIReader.List(ctx, list, client.InNamespace(ns)); err != nil {
			errs = append(errs, fmt.Errorf("listing %s in %s: %w", gvk.Kind, ns, err))
			continue
		}
		for i := range list.Items {
			o := &list.Items[i]
			if o.DeletionTimestamp != nil {
				continue
			}
			if c := metav1.GetControllerOf(o); gvk.Kind == "ReplicaSetList" && c != nil && c.Kind == "Deployment" && ours[c.Name] {
				continue
			}
			o.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind[:len(gvk.Kind)-len("List")]))
			if err := r.deleteObserved(ctx, o, o.UID); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, o.Kind+" "+o.Name)
		}
	}
	if len(removed) > 0 {
		log.FromContext(ctx).Info("Removed what the tenant left in the fenced namespace", "namespace", ns, "objects", removed)
		r.Recorder.Eventf(s.env, nil, corev1.EventTypeWarning, "TenantObjectsRemoved", "Restore",
			"Removed from fenced namespace %s before the rebuild: %v", ns, removed)
	}
	return errors.Join(errs...)
}

// rotateSecret replaces a generated Secret with a new random value unless it
// already belongs to credentials revision rev.
func (r *HealthEnvironmentReconciler) rotateSecret(ctx context.Context, s *scope, ns string, svc v1alpha1.Service, name, rev string) error {
	key := client.ObjectKey{Namespace: ns, Name: build.GeneratedSecretName(svc.Name, name)}
	cur := &corev1.Secret{}
	err := r.Client.Get(ctx, key, cur)
	if err == nil && cur.Annotations[build.AnnotationCredentialsRevision] == rev {
		return nil
	}
	if err == nil {
		if err := r.deleteIfExists(ctx, cur); err != nil {
			return err
		}
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading secret %s: %w", key, err)
	}
	value, err := r.Secrets()
	if err != nil {
		return fmt.Errorf("generating secret %s: %w", key, err)
	}
	want := build.GeneratedSecret(s.env, ns, svc, name, value).WithAnnotations(map[string]string{build.AnnotationCredentialsRevision: rev})
	r.Applier.Forget(want)
	if _, err := r.Applier.Apply(ctx, want, ""); err != nil {
		return fmt.Errorf("writing secret %s: %w", klog.KRef(key.Namespace, key.Name), err)
	}
	return nil
}
