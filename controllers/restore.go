package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/recovery"
	"github.com/careplane/careplane/internal/ssa"
)

// +kubebuilder:rbac:groups=batch,resources=cronjobs;jobs,verbs=list;delete
// +kubebuilder:rbac:groups=apps,resources=statefulsets;daemonsets;replicasets,verbs=list;delete
// +kubebuilder:rbac:groups="",resources=replicationcontrollers,verbs=list;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=list;delete
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=create
// +kubebuilder:rbac:groups=snapshot.storage.k8s.io,resources=volumesnapshots,verbs=list

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
	if err := w.writeRecord(ctx, nsObj, rec, nsMarks{}); err != nil {
		return false, err
	}
	s.record = rec
	if s.restorePoint != nil {
		// The data generation first: from here on careplane builds, fences
		// and snapshots the restored StatefulSets, whatever else happens.
		if err := r.writeDataGeneration(ctx, nsObj, s.restoreGen); err != nil {
			return false, err
		}
		s.dataGen = s.restoreGen
	}
	if err := w.writeDenyPolicy(ctx, s.env); err != nil {
		return false, fmt.Errorf("keeping the fence policy: %w", err)
	}

	if !r.cleaned.done(s.env, rec.RestoreID) {
		// The front is swept with the clean-up, and again just before the
		// lift, not on the passes between (the front guard refuses new
		// routes meanwhile): a failure of either is retried.
		if err := all(
			func() error { return r.cleanForRestore(ctx, s, rec.RestoreID) },
			func() error { return r.sweepFront(ctx, s) },
		); err != nil {
			return false, err
		}
		r.cleaned.remember(s.env, rec.RestoreID)
	}
	bound := true
	if s.restorePoint != nil {
		var err error
		if bound, err = r.restoreVolumes(ctx, s); err != nil {
			return false, err
		}
	}
	// Every generated Secret first, then every service's workload and
	// Service, each side by side: a rebuilt pod reads the Secrets of its own
	// service and of others (secretsFrom), which must be the new ones.
	err := inParallel(services, func(svc v1alpha1.Service) error {
		for _, g := range svc.GeneratedSecrets {
			if err := r.rotateSecret(ctx, s, ns, svc, g, rec.RestoreID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	rebuilt := make([]*workload, len(services))
	err = inParallel(indices(services), func(i int) error {
		svc := services[i]
		if svc.Stateful() {
			// A new StatefulSet of the restore's generation, on the
			// restored claims it adopts.
			if err := r.applyWorkload(ctx, s, v1alpha1.SitePrimary, ns, svc, rec.RestoreID, nil); err != nil {
				return err
			}
			wl, err := r.readWorkloadAs(ctx, ns, svc, s.statefulSetName(v1alpha1.SitePrimary, svc))
			if err != nil {
				return err
			}
			if wl != nil && wl.credentialsRevision == rec.RestoreID {
				rebuilt[i] = wl
			}
		} else {
			dep, err := r.rebuildDeployment(ctx, s, ns, svc, rec.RestoreID)
			if err != nil {
				return err
			}
			if dep != nil {
				rebuilt[i] = deploymentWorkload(dep)
			}
		}
		return r.apply(ctx, build.Service(s.env, ns, svc), &corev1.Service{})
	})
	if err != nil {
		return false, err
	}
	// In the spec's order: the status lists the services so.
	for i, svc := range services {
		s.observeWorkload(v1alpha1.SitePrimary, svc, rebuilt[i])
	}
	// The fence stays until every restored claim is bound and every
	// rebuilt pod Ready.
	if !bound || !s.allReadyOf(services) {
		return false, nil
	}
	if s.liftUnchecked {
		if ok, err := r.liftChecked(ctx, s); !ok || err != nil {
			return false, err
		}
	}

	// The rebuilt site is Ready: bring back its allows (evidence pods stay
	// isolated by their own policy) and remove any route of the front
	// written while the restore waited, then lift the fence.
	allows, evidence, err := r.primaryPolicies(ctx, s, services)
	if err != nil {
		return false, err
	}
	if err := all(
		func() error {
			return inParallel(allows, func(p *networkingv1ac.NetworkPolicyApplyConfiguration) error {
				return r.apply(ctx, p, &networkingv1.NetworkPolicy{})
			})
		},
		func() error { return r.sweepFront(ctx, s) },
	); err != nil {
		return false, err
	}
	// admin-tier, the deny policy and the incident before the record: while
	// the record stays, a crash here only runs the restore's last steps
	// again.
	if err := r.deleteAdminFence(ctx, s); err != nil {
		return false, err
	}
	if err := r.deleteObserved(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: build.FencePolicyName}}, ""); err != nil {
		return false, err
	}
	if err := r.writeIncident(ctx, s); err != nil {
		return false, err
	}
	// The evidence pods are named on the namespace in the write that lifts
	// the freeze: from then on, their evictions and execs are refused by
	// their names. The data finalizer that keeps them goes on in the write
	// that takes the fence's off (releaseFence): until then the fence's
	// holds the environment, and a deletion meanwhile keeps them too
	// (retainData). The same write records the restore's credentials
	// revision, which the primary then runs (scope.primaryCredentials):
	// what reads the record reads it too.
	marks := evidenceMarks(nsObj, evidence)
	if marks.annotations == nil {
		marks.annotations = map[string]any{}
	}
	marks.annotations[build.AnnotationCredentialsRevision] = rec.RestoreID
	if err := w.writeRecord(ctx, nsObj, fence.Record{}, marks); err != nil {
		return false, err
	}
	s.credentials = rec.RestoreID
	s.holdsEvidence = s.holdsEvidence || len(evidence) > 0
	r.cleaned.forget(s.env.Name)
	return true, nil
}

// cleanForRestore clears the fenced namespace ns for the rebuild of the
// restore rev: every other policy, every ServiceAccount not careplane's, the
// tenant's workload controllers and RBAC, careplane's Deployments of the
// fence and every pod that is neither evidence nor the rebuild's
// (fence.StalePods) removed, careplane's ServiceAccounts recreated; then
// the fence's quota goes, so that the rebuilt pods are admitted (the deny
// policy stays until they are Ready), and no controller is left to start
// any other pod.
func (r *HealthEnvironmentReconciler) cleanForRestore(ctx context.Context, s *scope, rev string) error {
	ns := s.names.Primary
	obs, err := r.observeFence(ctx, s)
	if err != nil {
		return err
	}
	obs.CredentialsRevision = rev
	plan := fence.PlanFence(obs)
	var accounts []fence.Action
	for _, a := range plan.Step(3) {
		if a.Kind == "ServiceAccount" {
			accounts = append(accounts, a)
		}
	}
	d := &done{}
	err = all(
		func() error { return r.carryOut(ctx, s, plan.Step(2), d, rev) },
		func() error { return r.carryOut(ctx, s, accounts, d, rev) },
		func() error { return r.carryOut(ctx, s, fence.StalePods(ns, obs.Pods, rev), d, rev) },
		func() error { return r.removeTenantWorkloads(ctx, s, ns, rev) },
	)
	d.report(ctx, r, s, ns)
	if err != nil {
		return err
	}
	return r.deleteObserved(ctx, &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: build.FenceQuotaName}}, "")
}

// restoreWaiting says rec, the fence on record in the cache, is a restore
// this process has begun (cleanForRestore) for env, whose spec asks for no
// fence. Its passes, woken by the rebuilt pods' progress, trust the cache:
// the record and the requests are read from the API server before the
// restore's first write and before it lifts the fence (liftChecked), and
// nothing in between lifts anything or starts the restore anew.
func (r *HealthEnvironmentReconciler) restoreWaiting(env *v1alpha1.HealthEnvironment, rec fence.Record) bool {
	return rec.Present() && rec.RestoreID != "" && env.Spec.Isolation.Mode != v1alpha1.IsolationFenced && r.cleaned.done(env, rec.RestoreID)
}

// liftChecked reads from the API server what a restore trusted the cache
// for (restoreWaiting): it may lift the fence only while the record in
// place is still the one it restores and no FenceRequest holds the
// environment. Otherwise it looks again soon, on fresh state.
func (r *HealthEnvironmentReconciler) liftChecked(ctx context.Context, s *scope) (bool, error) {
	ns := &corev1.Namespace{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: s.names.Primary}, ns); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	held, err := fenceRequestHolding(ctx, r.APIReader, s.env.Name)
	if err != nil {
		return false, err
	}
	if rec := fence.RecordOf(ns); rec != s.record || !metav1.IsControlledBy(ns, s.env) || held != nil {
		log.FromContext(ctx).V(1).Info("The cache was behind; not lifting the fence on it", "record", rec, "heldBy", held != nil)
		s.requeueAfter = time.Second
		return false, nil
	}
	return true, nil
}

// cleanedMemory is, by environment name, the restore whose clean-up
// (cleanForRestore) this process has carried out: the environment's UID and
// the restore's ID. The later passes of that restore, woken by the rebuilt
// pods' progress, skip it (eleven live lists and a delete each): the
// namespace is frozen until the restore ends, so since the clean-up only
// careplane, the controllers of its own workloads and responders have
// written there. A new leader, or a new restore, cleans again.
type cleanedMemory struct {
	mu sync.Mutex
	m  map[string]cleaned
}

type cleaned struct {
	uid     types.UID
	restore string
}

func (c *cleanedMemory) done(env *v1alpha1.HealthEnvironment, restore string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[env.Name] == cleaned{uid: env.UID, restore: restore}
}

func (c *cleanedMemory) remember(env *v1alpha1.HealthEnvironment, restore string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cleaned{}
	}
	c.m[env.Name] = cleaned{uid: env.UID, restore: restore}
}

func (c *cleanedMemory) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, name)
}

// rebuildDeployment recreates a service's Deployment for credentials
// revision rev, once: deleted (by the clean-up, removeTenantWorkloads, or
// here) and created anew, so that no field another writer added (an
// injected sidecar) survives the restore. It returns the
// Deployment as the cache holds it once it runs revision rev, or nil.
//
// Not replaced in place: an update leaves its writer owning every field it
// changed, beside careplane's apply, so a field a later spec drops would
// stay (TestARestoreRebuildsTheDeploymentWhole).
func (r *HealthEnvironmentReconciler) rebuildDeployment(ctx context.Context, s *scope, ns string, svc v1alpha1.Service, rev string) (*appsv1.Deployment, error) {
	want := build.Deployment(s.env, v1alpha1.SitePrimary, ns, svc, rev)
	key := client.ObjectKey{Namespace: ns, Name: svc.Name}
	cached := &appsv1.Deployment{}
	if err := r.Client.Get(ctx, key, cached, readOnly); err == nil && cached.Spec.Template.Annotations[build.AnnotationCredentialsRevision] == rev {
		// Rebuilt already: the cache cannot hold revision rev of it
		// otherwise (the live read is for a cache behind the rebuild).
		return r.runningRevision(ctx, want, key, rev)
	}
	live := &appsv1.Deployment{}
	err := r.APIReader.Get(ctx, key, live)
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
	return r.runningRevision(ctx, want, key, rev)
}

// runningRevision applies want, the Deployment at key rebuilt for revision
// rev, and returns it as the cache holds it once it runs rev, or nil.
func (r *HealthEnvironmentReconciler) runningRevision(ctx context.Context, want *appsv1ac.DeploymentApplyConfiguration, key client.ObjectKey, rev string) (*appsv1.Deployment, error) {
	if err := r.apply(ctx, want, &appsv1.Deployment{}); err != nil {
		return nil, err
	}
	dep := &appsv1.Deployment{}
	if err := r.Client.Get(ctx, key, dep); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if dep.Spec.Template.Annotations[build.AnnotationCredentialsRevision] != rev {
		return nil, nil
	}
	return dep, nil
}

// tenantKinds are the kinds a restore removes from the primary namespace
// unless they are the restore's own: whatever could start a pod or grant a
// right once the fence quota goes (every pod-making kind the built-in edit
// role may create).
var tenantKinds = []schema.GroupVersionKind{
	batchv1.SchemeGroupVersion.WithKind("CronJobList"),
	batchv1.SchemeGroupVersion.WithKind("JobList"),
	appsv1.SchemeGroupVersion.WithKind("DeploymentList"),
	appsv1.SchemeGroupVersion.WithKind("StatefulSetList"),
	appsv1.SchemeGroupVersion.WithKind("DaemonSetList"),
	appsv1.SchemeGroupVersion.WithKind("ReplicaSetList"),
	corev1.SchemeGroupVersion.WithKind("ReplicationControllerList"),
	rbacv1.SchemeGroupVersion.WithKind("RoleList"),
	rbacv1.SchemeGroupVersion.WithKind("RoleBindingList"),
}

// removeTenantWorkloads deletes, from the primary namespace, every object of
// tenantKinds but the restore's own: careplane's Deployments already rebuilt
// for restore rev, their ReplicaSets (by the Deployment's UID), and the
// StatefulSets the restore builds in its data generation. careplane's
// Deployments of the fence go too, with their ReplicaSets, before the fence
// quota does: a ReplicaSet the fence's scale-down had not yet reached (the
// Deployment controller lags under load) would otherwise start a pod of the
// fenced template, on the restore's new Secrets, the moment the quota goes
// (TestARestoreStartsNoPodOfTheFencedTemplate). rebuildDeployment then
// creates each Deployment anew.
func (r *HealthEnvironmentReconciler) removeTenantWorkloads(ctx context.Context, s *scope, ns, rev string) error {
	ours := map[string]bool{}
	statefulSets := map[string]bool{}
	for _, svc := range s.primary {
		ours[svc.Name] = true
		if svc.Stateful() && s.restorePoint != nil {
			statefulSets[s.statefulSetName(v1alpha1.SitePrimary, svc)] = true
		}
	}
	// careplane's Deployments by UID, as the cache holds them, and whether
	// this restore has rebuilt each already (a clean-up run again after a
	// restart of careplane): only those stay. One the cache does not show
	// yet is deleted and created once more. careplane's own, rebuilt or
	// not, are not reported as the tenant's.
	careplanes := map[types.UID]bool{}
	var deps appsv1.DeploymentList
	if err := r.Client.List(ctx, &deps, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEnvironment: s.env.Name}, readOnly); err != nil {
		return fmt.Errorf("listing deployments in %s: %w", ns, err)
	}
	for i := range deps.Items {
		d := &deps.Items[i]
		if ours[d.Name] && metav1.IsControlledBy(d, s.env) {
			careplanes[d.UID] = d.Spec.Template.Annotations[build.AnnotationCredentialsRevision] == rev
		}
	}
	// Every kind at once; what each removed is reported in tenantKinds'
	// order.
	removedOf := make([][]string, len(tenantKinds))
	err := inParallel(indices(tenantKinds), func(k int) error {
		gvk := tenantKinds[k]
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(gvk)
		if err := r.APIReader.List(ctx, list, client.InNamespace(ns)); err != nil {
			return fmt.Errorf("listing %s in %s: %w", gvk.Kind, ns, err)
		}
		var errs []error
		for i := range list.Items {
			o := &list.Items[i]
			if o.DeletionTimestamp != nil {
				continue
			}
			var owner types.UID // the Deployment controlling a ReplicaSet
			if c := metav1.GetControllerOf(o); gvk.Kind == "ReplicaSetList" && c != nil && c.Kind == "Deployment" {
				owner = c.UID
			}
			if careplanes[o.UID] || careplanes[owner] { // rebuilt for this restore
				continue
			}
			// The restore's own StatefulSets (of its data generation, which
			// no earlier one had); every other one goes, careplane's of an
			// earlier generation too (its claims stay: retained).
			if gvk.Kind == "StatefulSetList" && statefulSets[o.Name] && metav1.IsControlledBy(o, s.env) {
				continue
			}
			o.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind[:len(gvk.Kind)-len("List")]))
			if err := r.deleteObserved(ctx, o, o.UID); err != nil {
				errs = append(errs, err)
				continue
			}
			_, mine := careplanes[o.UID]
			_, ownersMine := careplanes[owner]
			if mine || ownersMine {
				continue
			}
			removedOf[k] = append(removedOf[k], o.Kind+" "+o.Name)
		}
		return errors.Join(errs...)
	})
	removed := slices.Concat(removedOf...)
	if len(removed) > 0 {
		log.FromContext(ctx).Info("Removed what the tenant left in the fenced namespace", "namespace", ns, "objects", removed)
		r.Recorder.Eventf(s.env, nil, corev1.EventTypeWarning, "TenantObjectsRemoved", "Restore",
			"Removed from fenced namespace %s before the rebuild: %v", ns, removed)
	}
	return err
}

// rotateSecret writes generated secret name of svc at credentials revision
// rev with a new random value, unless it is there already. In the primary
// that is a Secret of its own (build.GeneratedSecretObjectName), which no
// pod made before the rotation names; the older revision's, which the
// fence deleted, is not brought back. In the standby it replaces the one
// Secret of that name.
func (r *HealthEnvironmentReconciler) rotateSecret(ctx context.Context, s *scope, ns string, svc v1alpha1.Service, name, rev string) error {
	site := v1alpha1.SiteStandby
	if ns == s.names.Primary {
		site = v1alpha1.SitePrimary
	}
	key := client.ObjectKey{Namespace: ns, Name: build.GeneratedSecretObjectName(site, svc.Name, name, rev)}
	cur := &corev1.Secret{}
	err := r.Client.Get(ctx, key, cur)
	if err == nil && cur.Annotations[build.AnnotationCredentialsRevision] == rev {
		return nil
	}
	if site == v1alpha1.SitePrimary && apierrors.IsNotFound(err) {
		return r.createRotated(ctx, s, key, svc, name, rev)
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
	want := build.GeneratedSecret(s.env, ns, svc, name, rev, value)
	r.Applier.Forget(want)
	if _, err := r.Applier.Apply(ctx, want, ""); err != nil {
		return fmt.Errorf("writing secret %s: %w", klog.KRef(key.Namespace, key.Name), err)
	}
	return nil
}

// createRotated creates the primary's Secret at key, generated secret name
// of svc at revision rev (a name of that revision's own), with a new random
// value, and never replaces it: a later pass whose cache has not seen the
// create yet finds it there (AlreadyExists), so that no second value
// replaces the first under the rebuilt pods that read it.
func (r *HealthEnvironmentReconciler) createRotated(ctx context.Context, s *scope, key client.ObjectKey, svc v1alpha1.Service, name, rev string) error {
	value, err := r.Secrets()
	if err != nil {
		return fmt.Errorf("generating secret %s: %w", key, err)
	}
	sec := &corev1.Secret{}
	if err := ssa.Typed(build.GeneratedSecret(s.env, key.Namespace, svc, name, rev, value), sec); err != nil {
		return fmt.Errorf("encoding secret %s: %w", key, err)
	}
	err = r.Client.Create(ctx, sec, client.FieldOwner(fieldOwner))
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("writing secret %s: %w", key, err)
		}
		return nil
	}
	// There already: this restore's, or one only a responder could have
	// made in the frozen namespace, which the next pass replaces.
	live := &metav1.PartialObjectMetadata{}
	live.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := r.APIReader.Get(ctx, key, live); err != nil {
		return fmt.Errorf("reading secret %s: %w", key, err)
	}
	if live.Annotations[build.AnnotationCredentialsRevision] != rev {
		return fmt.Errorf("secret %s exists but is not of credentials revision %s: replaced on the next pass", key, rev)
	}
	return nil
}

// dataGeneration reads the data generation on record on env's primary
// Namespace ns (v1alpha1.AnnotationDataGeneration): "" before any restore
// from a recovery point, or when the namespace is not env's.
func dataGeneration(ctx context.Context, c client.Reader, env *v1alpha1.HealthEnvironment, ns string) (string, error) {
	nsObj := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: ns}, nsObj); apierrors.IsNotFound(err) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("reading namespace %s: %w", ns, err)
	}
	if !metav1.IsControlledBy(nsObj, env) {
		return "", nil
	}
	return nsObj.Annotations[v1alpha1.AnnotationDataGeneration], nil
}

// writeDataGeneration records gen as the data generation of the primary
// Namespace ns. The namespace is the one object of the environment a tenant
// cannot write (the fence's record lives there too), so the name of the
// StatefulSets careplane builds cannot be pointed back at the claims kept as
// evidence.
func (r *HealthEnvironmentReconciler) writeDataGeneration(ctx context.Context, ns *corev1.Namespace, gen string) error {
	if ns.Annotations[v1alpha1.AnnotationDataGeneration] == gen {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{v1alpha1.AnnotationDataGeneration: gen}}})
	if err != nil {
		return err
	}
	if err := r.Client.Patch(ctx, ns.DeepCopy(), client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner)); err != nil {
		return fmt.Errorf("recording data generation %s on namespace %s: %w", gen, ns.Name, err)
	}
	return nil
}

// chooseRecoveryPoint chooses, for a restore of services with volumes, the
// recovery point their data comes back from (recovery.Choose, the rule the
// plugin's dry run applies too) and the claims the restore creates from it
// (recovery.RestoreClaims), into s. A restore that cannot proceed returns a
// *recovery.NoPointError: the restore is blocked and the fence stays.
func (r *HealthEnvironmentReconciler) chooseRecoveryPoint(ctx context.Context, s *scope) error {
	if !slices.ContainsFunc(s.primary, func(svc v1alpha1.Service) bool { return svc.Stateful() }) {
		return nil
	}
	if s.record.RestoreID == "" {
		s.record.RestoreID = fence.NewID(s.now)
	}
	in := recovery.ChooseInput{From: s.env.Spec.Isolation.RestoreFrom}
	if began, ok := s.record.Began(); ok {
		in.FencedAt = began
	}
	if st := s.env.Status.Recovery; st != nil {
		in.Points = st.Points
	}
	snaps, err := r.snapshotStates(ctx, s.names.Primary)
	if err != nil {
		return err
	}
	in.Snapshots = snaps
	choice, err := recovery.Choose(in)
	if err != nil {
		return err
	}
	started, err := time.Parse(time.RFC3339Nano, s.record.RestoreID)
	if err != nil {
		return fmt.Errorf("restore ID %q on namespace %s: %w", s.record.RestoreID, s.names.Primary, err)
	}
	gen := build.DataGeneration(started)
	claims, err := recovery.RestoreClaims(s.primary, gen, choice.Point)
	if err != nil {
		return err
	}
	s.restorePoint, s.restoreClaims, s.restoreGen = &choice, claims, gen
	return nil
}

// snapshotStates reads every VolumeSnapshot of namespace ns from the API
// server, whoever made it: the choice counts one only by the UID on record.
func (r *HealthEnvironmentReconciler) snapshotStates(ctx context.Context, ns string) (map[string]recovery.SnapshotState, error) {
	list := &snapshotv1.VolumeSnapshotList{}
	if err := r.APIReader.List(ctx, list, client.InNamespace(ns)); meta.IsNoMatchError(err) {
		return nil, &recovery.NoPointError{Reason: "the cluster serves no snapshot.storage.k8s.io/v1 VolumeSnapshot API, so no recovery point can be restored"}
	} else if err != nil {
		return nil, fmt.Errorf("listing VolumeSnapshots in %s: %w", ns, err)
	}
	out := make(map[string]recovery.SnapshotState, len(list.Items))
	for _, vs := range list.Items {
		st := recovery.SnapshotState{UID: string(vs.UID)}
		if vs.DeletionTimestamp == nil && vs.Status != nil && vs.Status.ReadyToUse != nil {
			st.ReadyToUse = *vs.Status.ReadyToUse
		}
		out[vs.Name] = st
	}
	return out, nil
}

// restoreVolumes is the restore's data step, in the data generation already
// on record: every claim of the primary namespace but the restore's own is
// kept as evidence (labelled careplane.io/evidence=<ticket>; careplane never
// deletes a claim), and each claim s.restoreClaims lists is created from its
// snapshot, for the restored StatefulSet to adopt. It reports whether every
// restored claim is bound. A claim of that name that holds other data stops
// the restore (RestoreBlocked).
func (r *HealthEnvironmentReconciler) restoreVolumes(ctx context.Context, s *scope) (bool, error) {
	ns := s.names.Primary
	point := s.restorePoint.Point.Name
	restored := map[string]recovery.RestoredClaim{}
	for _, c := range s.restoreClaims {
		restored[c.Claim] = c
	}

	// The fence's ticket, as the evidence pods carry it.
	ticket := fence.EvidenceTicket(s.env.Spec.Isolation)
	if iso := s.isoStatus; iso != nil && iso.Ticket != "" {
		ticket = iso.Ticket
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PersistentVolumeClaimList"))
	if err := r.APIReader.List(ctx, list, client.InNamespace(ns)); err != nil {
		return false, fmt.Errorf("listing claims in %s: %w", ns, err)
	}
	var kept []string
	for i := range list.Items {
		c := &list.Items[i]
		if _, ok := restored[c.Name]; ok || c.Labels[v1alpha1.LabelEvidence] != "" {
			continue
		}
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{v1alpha1.LabelEvidence: ticket}}})
		if err != nil {
			return false, err
		}
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: c.Name}}
		if err := r.Client.Patch(ctx, pvc, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner)); client.IgnoreNotFound(err) != nil {
			return false, fmt.Errorf("keeping claim %s as evidence: %w", klog.KObj(pvc), err)
		}
		kept = append(kept, c.Name)
	}
	if len(kept) > 0 {
		log.FromContext(ctx).Info("Kept the claims of the fenced site as evidence", "namespace", ns, "claims", kept, "ticket", ticket)
		r.Recorder.Eventf(s.env, nil, corev1.EventTypeNormal, "ClaimsKeptAsEvidence", "Restore",
			"Kept claims %v of %s as evidence (label %s=%s); careplane never deletes them", kept, ns, v1alpha1.LabelEvidence, ticket)
	}

	bound := true
	var created []string
	for _, rc := range s.restoreClaims {
		svc, v, ok := serviceVolume(s.primary, rc.Service, rc.Volume)
		if !ok {
			continue
		}
		from := point + "/" + rc.Snapshot
		live := &corev1.PersistentVolumeClaim{}
		err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: rc.Claim}, live)
		switch {
		case apierrors.IsNotFound(err):
			want := build.RestoredClaim(s.env, ns, svc, v, rc.Claim, point, rc.Snapshot)
			if _, err := r.Applier.Apply(ctx, want, ""); err != nil {
				return false, fmt.Errorf("creating claim %s/%s from snapshot %s: %w", ns, rc.Claim, rc.Snapshot, err)
			}
			created = append(created, fmt.Sprintf("%s from %s", rc.Claim, rc.Snapshot))
			bound = false
			continue
		case err != nil:
			return false, fmt.Errorf("reading claim %s/%s: %w", ns, rc.Claim, err)
		}
		ds := live.Spec.DataSource
		if live.Annotations[v1alpha1.AnnotationRestoredFrom] != from || ds == nil || ds.Kind != "VolumeSnapshot" || ds.Name != rc.Snapshot {
			return false, &recovery.NoPointError{Reason: fmt.Sprintf(
				"claim %s/%s exists but does not hold the data of snapshot %s of recovery point %s (restored from %q): "+
					"the recovery point changed during the restore; set isolation.restoreFrom back, or fence and restore again",
				ns, rc.Claim, rc.Snapshot, point, live.Annotations[v1alpha1.AnnotationRestoredFrom])}
		}
		if live.Status.Phase != corev1.ClaimBound {
			bound = false
		}
	}
	if len(created) > 0 {
		c := s.restorePoint
		log.FromContext(ctx).Info("Restoring volumes from a recovery point", "point", point, "takenAt", c.Point.TakenAt.UTC().Format(time.RFC3339),
			"dataLost", c.DataLost.String(), "claims", created)
		r.Recorder.Eventf(s.env, nil, corev1.EventTypeNormal, "VolumesRestoring", "Restore",
			"Restoring volumes from recovery point %s (%s, taken %s; %s of data lost): %v", point, c.By,
			c.Point.TakenAt.UTC().Format(time.RFC3339), c.DataLost.Round(time.Second), created)
	}
	return bound, nil
}

// serviceVolume finds volume volume of service name.
func serviceVolume(services []v1alpha1.Service, name, volume string) (v1alpha1.Service, v1alpha1.Volume, bool) {
	for _, svc := range services {
		if svc.Name != name {
			continue
		}
		for _, v := range svc.Volumes {
			if v.Name == volume {
				return svc, v, true
			}
		}
	}
	return v1alpha1.Service{}, v1alpha1.Volume{}, false
}
