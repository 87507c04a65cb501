package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/ssa"
)

// readOnly marks the reads of this file that take the cache's own objects
// instead of deep copies: they read a few fields (or delete what they read)
// and never change an object. A reconcile reads tens of objects per
// environment, and deep copies of them, every resync, were a large share of
// the operator's garbage, which its resident memory grows with.
const readOnly = client.UnsafeDisableDeepCopy

// namespaceConflictError reports a namespace careplane needs that exists
// without careplane's ownership labels.
type namespaceConflictError struct{ name string }

func (e *namespaceConflictError) Error() string {
	return fmt.Sprintf("namespace %s exists and was not created by careplane for this environment", e.name)
}

// reconcileNamespaces creates the environment's namespaces. It first checks
// all of them and stops before writing anything when one exists that
// careplane did not create for this environment: careplane never adopts a
// namespace, and leaves nothing half-done.
func (r *HealthEnvironmentReconciler) reconcileNamespaces(ctx context.Context, s *scope) error {
	wanted := s.namespaces()
	current := make([]*corev1.Namespace, len(wanted))
	for i, want := range wanted {
		name := *want.Name
		ns := &corev1.Namespace{}
		err := r.Client.Get(ctx, client.ObjectKey{Name: name}, ns, readOnly)
		if apierrors.IsNotFound(err) {
			// Not in the cache, which holds only careplane's namespaces:
			// ask the API server whether a foreign one is there.
			err = r.APIReader.Get(ctx, client.ObjectKey{Name: name}, ns)
			if err == nil {
				s.conflict = name
				return &namespaceConflictError{name: name}
			}
			if apierrors.IsNotFound(err) {
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("reading namespace %s: %w", name, err)
		}
		if ns.Labels[v1alpha1.LabelEnvironment] != s.env.Name || ns.Labels[v1alpha1.LabelManagedBy] != v1alpha1.ManagedByValue {
			s.conflict = name
			return &namespaceConflictError{name: name}
		}
		if fence.RecordOf(ns).Present() && !metav1.IsControlledBy(ns, s.env) {
			// The fence of an earlier environment of this name (deleted,
			// its finalizer stripped): adopting the namespace would let
			// this object's spec lift that fence.
			s.conflict = name
			return &namespaceConflictError{name: name}
		}
		current[i] = ns
	}

	for i, want := range wanted {
		if current[i] != nil {
			if *want.Name == s.names.Primary && s.primaryFenced() {
				// The fence and the restore label the primary namespace
				// themselves, after the deny policy is in place.
				continue
			}
			if _, err := r.Applier.Apply(ctx, want, ssa.Version(want, current[i])); err != nil {
				return err
			}
			continue
		}
		// Create rather than apply: a create fails if someone made the
		// namespace since the check, so careplane never adopts one.
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name:            *want.Name,
			Labels:          want.Labels,
			OwnerReferences: ownerReferences(s.env),
		}}
		if err := r.Client.Create(ctx, ns, client.FieldOwner(fieldOwner)); err != nil {
			if apierrors.IsAlreadyExists(err) {
				s.conflict = ns.Name
				return &namespaceConflictError{name: ns.Name}
			}
			return fmt.Errorf("creating namespace %s: %w", ns.Name, err)
		}
		log.FromContext(ctx).Info("Created namespace", "namespace", ns.Name)
		// Take ownership of the labels with server-side apply too, so a
		// later change to them is applied like every other child.
		if _, err := r.Applier.Apply(ctx, want, ""); err != nil {
			return err
		}
	}
	return nil
}

// reconcileSite writes one site namespace: quota, limits, network policies,
// and each service's ServiceAccount, Secrets, Deployment, Service and PDB;
// then deletes what the spec no longer asks for.
func (r *HealthEnvironmentReconciler) reconcileSite(ctx context.Context, s *scope, site v1alpha1.Site) error {
	ns := s.namespaceOf(site)
	env := s.env

	if err := r.apply(ctx, build.ResourceQuota(env, ns), &corev1.ResourceQuota{}); err != nil {
		return err
	}
	if err := r.apply(ctx, build.LimitRange(env, ns), &corev1.LimitRange{}); err != nil {
		return err
	}

	policies := build.NetworkPoliciesFor(env, site, ns, s.servicesFor(site))
	var evidence []corev1.Pod
	if site == v1alpha1.SitePrimary {
		// A fence's quota left behind (its restore deletes it, but the
		// fence policy may have gone some other way) would admit none of
		// the site's pods.
		if err := r.deleteCached(ctx, client.ObjectKey{Namespace: ns, Name: build.FenceQuotaName}, &corev1.ResourceQuota{}); err != nil {
			return err
		}
		var err error
		if policies, evidence, err = r.primaryPolicies(ctx, s, s.servicesFor(site)); err != nil {
			return err
		}
	}
	keepPolicies := sets.New[string]()
	for _, p := range policies {
		keepPolicies.Insert(*p.Name)
		if err := r.apply(ctx, p, &networkingv1.NetworkPolicy{}); err != nil {
			return err
		}
	}
	if site == v1alpha1.SitePrimary {
		if err := r.recordEvidencePods(ctx, s, ns, evidence); err != nil {
			return err
		}
		if err := r.restripEvidence(ctx, s, evidence); err != nil {
			return err
		}
	}

	if site == v1alpha1.SiteStandby {
		if err := r.reconcileStandbyData(ctx, s); err != nil {
			return err
		}
	}
	services := s.servicesFor(site)
	keep := sets.New[string]()
	var errs []error
	for _, svc := range services {
		keep.Insert(svc.Name)
		if err := r.reconcileService(ctx, s, site, ns, svc); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return r.prune(ctx, s, site, keep, keepPolicies)
}

// primaryPolicies are the unfenced primary site's NetworkPolicies: its
// services' allows and, while pods kept as evidence by an earlier fence
// remain, the policy that keeps them isolated until purged; and those
// evidence pods. The restore's lift writes the same set as every later
// pass, which would otherwise prune what the lift wrote.
func (r *HealthEnvironmentReconciler) primaryPolicies(ctx context.Context, s *scope, services []v1alpha1.Service) ([]*networkingv1ac.NetworkPolicyApplyConfiguration, []corev1.Pod, error) {
	ns := s.names.Primary
	policies := build.NetworkPoliciesFor(s.env, v1alpha1.SitePrimary, ns, services)
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEnvironment: s.env.Name},
		client.HasLabels{v1alpha1.LabelEvidence}, readOnly); err != nil {
		return nil, nil, fmt.Errorf("listing evidence pods in %s: %w", ns, err)
	}
	if len(pods.Items) > 0 {
		policies = append(policies, build.EvidencePolicy(s.env, ns))
	}
	return policies, pods.Items, nil
}

// reconcileService writes one service's objects in one site.
func (r *HealthEnvironmentReconciler) reconcileService(ctx context.Context, s *scope, site v1alpha1.Site, ns string, svc v1alpha1.Service) error {
	env := s.env
	sa := build.ServiceAccount(env, ns, svc)
	saRev := ""
	if site == v1alpha1.SiteStandby {
		// Recreated by the fence under this revision: kept so, or the
		// next pass would recreate it again.
		saRev = s.standbyRotation
	}
	if saRev == "" {
		// The revision a fence or restore recreated it under stays on
		// record: dropping it was a write per ServiceAccount after every
		// restore, and no later fence or restore takes an older revision
		// for its own.
		cur := &corev1.ServiceAccount{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: svc.Name}, cur, readOnly); err == nil {
			saRev = cur.Annotations[build.AnnotationCredentialsRevision]
		}
	}
	if saRev != "" {
		sa.WithAnnotations(map[string]string{build.AnnotationCredentialsRevision: saRev})
	}
	if err := r.apply(ctx, sa, &corev1.ServiceAccount{}); err != nil {
		return err
	}
	w, err := r.readWorkloadAs(ctx, ns, svc, s.statefulSetName(site, svc))
	if err != nil {
		return err
	}
	rev := credentialsRevision(w)
	if site == v1alpha1.SitePrimary {
		rev = s.primaryCredentials()
	}
	for _, name := range svc.GeneratedSecrets {
		if err := r.ensureSecret(ctx, s, site, ns, svc, name, rev); err != nil {
			return err
		}
	}
	var replicas *int32
	if site == v1alpha1.SiteStandby && svc.Stateful() && s.standbyHold {
		replicas = ptrTo(int32(0)) // its claims are being replaced
	}
	if site == v1alpha1.SiteStandby && s.standbyRotation != "" {
		// A fence rotated the standby's credentials: its pods roll onto
		// them, with a surge, once traffic is on record on the standby.
		onStandby := s.env.Status.ActiveSite == v1alpha1.SiteStandby
		rev = fence.StandbyWorkloadRevision(svc, rev, w != nil, s.standbyRotation, onStandby)
		if rev != s.standbyRotation && !onStandby && s.decision != nil && s.decision.ServingFromStandby() {
			// Traffic moved in this reconcile: the status records it at
			// its end, which wakes no reconcile.
			s.requeue(time.Second)
		}
	}
	if err := r.applyWorkload(ctx, s, site, ns, svc, rev, replicas); err != nil {
		return err
	}
	if err := r.apply(ctx, build.Service(env, ns, svc), &corev1.Service{}); err != nil {
		return err
	}
	if pdb := build.PodDisruptionBudget(env, ns, svc); pdb != nil {
		if err := r.apply(ctx, pdb, &policyv1.PodDisruptionBudget{}); err != nil {
			return err
		}
	} else if err := r.deleteCached(ctx, client.ObjectKey{Namespace: ns, Name: svc.Name}, &policyv1.PodDisruptionBudget{}); err != nil {
		return err
	}
	s.observeWorkload(site, svc, w)
	return nil
}

// ensureSecret creates generated secret name of svc on site, at credentials
// revision rev (the primary's) in the primary, with a random value
// when it does not exist. An existing value is never overwritten here:
// rotation is a restore's job. The value is never logged.
func (r *HealthEnvironmentReconciler) ensureSecret(ctx context.Context, s *scope, site v1alpha1.Site, ns string, svc v1alpha1.Service, name, rev string) error {
	if site != v1alpha1.SitePrimary {
		rev = "" // rotated in place (build.GeneratedSecretObjectName)
	}
	secretName := build.GeneratedSecretObjectName(site, svc.Name, name, rev)
	current := &corev1.Secret{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: secretName}, current, readOnly)
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading secret %s/%s: %w", ns, secretName, err)
	}
	value, err := r.Secrets()
	if err != nil {
		return fmt.Errorf("generating secret %s/%s: %w", ns, secretName, err)
	}
	if _, err := r.Applier.Apply(ctx, build.GeneratedSecret(s.env, ns, svc, name, rev, value), ""); err != nil {
		return err
	}
	log.FromContext(ctx).Info("Generated secret", "secret", klog.KRef(ns, secretName))
	return nil
}

// prune deletes careplane's objects in a site namespace that belong to
// services no longer in the spec, and network policies it no longer wants.
// Only objects labelled as this environment's are considered: nothing
// created by anyone else is touched here.
func (r *HealthEnvironmentReconciler) prune(ctx context.Context, s *scope, site v1alpha1.Site, keepServices, keepPolicies sets.Set[string]) error {
	ns := s.namespaceOf(site)
	sel := client.MatchingLabels{v1alpha1.LabelEnvironment: s.env.Name}
	inNs := client.InNamespace(ns)
	var stale []client.Object

	var deps appsv1.DeploymentList
	var statefulSets appsv1.StatefulSetList
	var sas corev1.ServiceAccountList
	var secrets corev1.SecretList
	var pdbs policyv1.PodDisruptionBudgetList
	var pols networkingv1.NetworkPolicyList
	for _, l := range []client.ObjectList{&deps, &statefulSets, &sas, &secrets, &pdbs, &pols} {
		if err := r.Client.List(ctx, l, inNs, sel, readOnly); err != nil {
			return fmt.Errorf("listing in %s: %w", ns, err)
		}
	}
	svcs, err := r.servicesIn(ctx, ns, sel)
	if err != nil {
		return err
	}
	byService := func(o client.Object) {
		if !keepServices.Has(o.GetLabels()[v1alpha1.LabelService]) {
			stale = append(stale, o)
		}
	}
	for i := range deps.Items {
		byService(&deps.Items[i])
	}
	for i := range statefulSets.Items {
		// Its claims stay (retained): careplane never deletes data.
		byService(&statefulSets.Items[i])
	}
	for _, svc := range svcs {
		byService(svc)
	}
	for i := range sas.Items {
		byService(&sas.Items[i])
	}
	for i := range pdbs.Items {
		byService(&pdbs.Items[i])
	}
	wantSecrets := sets.New[string]()
	for _, svc := range s.servicesFor(site) {
		for _, g := range svc.GeneratedSecrets {
			// Named by the primary's revision there; the standby's are
			// rotated in place, under names no revision changes.
			wantSecrets.Insert(build.GeneratedSecretObjectName(site, svc.Name, g, s.primaryCredentials()))
		}
	}
	for i := range secrets.Items {
		if !wantSecrets.Has(secrets.Items[i].Name) {
			stale = append(stale, &secrets.Items[i])
		}
	}
	for i := range pols.Items {
		if !keepPolicies.Has(pols.Items[i].Name) {
			stale = append(stale, &pols.Items[i])
		}
	}
	for _, o := range stale {
		if err := r.deleteIfExists(ctx, o); err != nil {
			return err
		}
		log.FromContext(ctx).Info("Deleted object the spec no longer asks for", "kind", fmt.Sprintf("%T", o), "object", klog.KObj(o))
	}
	return nil
}

// reconcileFront writes the front namespace's selector-less Services and
// points their EndpointSlices at the ready pods of the active site.
func (r *HealthEnvironmentReconciler) reconcileFront(ctx context.Context, s *scope) error {
	env := s.env
	front := s.names.Front
	site, serving := s.activeSite()
	siteNs := s.namespaceOf(site)
	s.status.ActiveSite = ""
	if serving {
		s.status.ActiveSite = site
	}
	// Remembered before the writes: once one slice may have moved, traffic
	// has switched, and the next decision holds it there (traffic.go).
	since := s.now
	if f := s.status.Failover; f != nil && f.SwitchedAt != nil {
		since = f.SwitchedAt.Time
	}
	r.front.remember(env, s.status.ActiveSite, since)
	var pods corev1.PodList
	if serving {
		if err := r.Client.List(ctx, &pods, client.InNamespace(siteNs), client.MatchingLabels{v1alpha1.LabelEnvironment: env.Name}, readOnly); err != nil {
			return fmt.Errorf("listing pods in %s: %w", siteNs, err)
		}
	}
	keep := sets.New[string]()
	for _, svc := range env.Spec.Services {
		keep.Insert(svc.Name)
	}
	// One service's front does not wait for another's: a fence or a
	// failover switches them all at once. Under a fence, every route but
	// careplane's goes at the same time (front.go): a slice of careplane's
	// name that is not its own stops its apply until then.
	if err := all(
		func() error {
			return inParallel(env.Spec.Services, func(svc v1alpha1.Service) error {
				if err := r.apply(ctx, build.FrontService(env, svc), &corev1.Service{}); err != nil {
					return err
				}
				return r.apply(ctx, build.FrontEndpointSlice(env, svc, site, readyEndpoints(pods.Items, svc.Name)), &discoveryv1.EndpointSlice{})
			})
		},
		func() error {
			// A fence pass's. A restore sweeps with its clean-up and
			// before its lift (reconcileRestore), not on the passes
			// woken by every rebuilt pod's progress in between.
			if !s.record.Present() || s.restoring {
				return nil
			}
			return r.sweepFront(ctx, s)
		},
	); err != nil {
		return err
	}

	sel := client.MatchingLabels{v1alpha1.LabelEnvironment: env.Name}
	var slices discoveryv1.EndpointSliceList
	if err := r.Client.List(ctx, &slices, client.InNamespace(front), sel, readOnly); err != nil {
		return fmt.Errorf("listing in %s: %w", front, err)
	}
	svcs, err := r.servicesIn(ctx, front, sel)
	if err != nil {
		return err
	}
	for _, svc := range svcs {
		if !keep.Has(svc.GetName()) {
			if err := r.deleteIfExists(ctx, svc); err != nil {
				return err
			}
		}
	}
	for i := range slices.Items {
		if !keep.Has(slices.Items[i].Labels[discoveryv1.LabelServiceName]) {
			if err := r.deleteIfExists(ctx, &slices.Items[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// readyEndpoints are the pods of a service that may receive traffic: Ready,
// with an IP, not terminating, and not preserved as evidence.
func readyEndpoints(pods []corev1.Pod, service string) []build.Endpoint {
	var out []build.Endpoint
	for i := range pods {
		p := &pods[i]
		if p.Labels[v1alpha1.LabelService] != service || p.Labels[v1alpha1.LabelEvidence] != "" {
			continue
		}
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" || !podReady(p) {
			continue
		}
		out = append(out, build.Endpoint{IP: p.Status.PodIP, PodName: p.Name, NodeName: p.Spec.NodeName, Ready: true})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP < out[j].IP })
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// apply writes desired unless the cached object shows the same desired state
// was already applied to its current version. current is an empty object of
// the desired kind, used to read the cache.
func (r *HealthEnvironmentReconciler) apply(ctx context.Context, desired ssa.Object, current client.Object) error {
	key := client.ObjectKey{Name: *desired.GetName()}
	if desired.GetNamespace() != nil {
		key.Namespace = *desired.GetNamespace()
	}
	current = cachedAs(current)
	version := ""
	if err := r.Client.Get(ctx, key, current, readOnly); err == nil {
		version = ssa.Version(desired, current)
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading %T %s: %w", current, key, err)
	}
	_, err := r.Applier.Apply(ctx, desired, version)
	return err
}

// servicesMetadata is how Services are cached: as metadata alone
// (SetupWithManager watches them with builder.OnlyMetadata). careplane
// reads nothing else of them, and a Service is half a kilobyte as a typed
// object. Every read of a Service must read this type: a typed read would
// start a second informer, holding every Service whole.
var servicesMetadata = metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}}

// cachedAs returns an empty object to read current's kind from the cache
// with: current itself, or metadata for a kind cached as metadata alone.
func cachedAs(current client.Object) client.Object {
	if _, ok := current.(*corev1.Service); ok {
		return servicesMetadata.DeepCopy()
	}
	return current
}

// servicesIn lists the metadata of the Services of namespace ns labelled
// for env.
func (r *HealthEnvironmentReconciler) servicesIn(ctx context.Context, ns string, sel client.MatchingLabels) ([]client.Object, error) {
	l := &metav1.PartialObjectMetadataList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceList"}}
	if err := r.Client.List(ctx, l, client.InNamespace(ns), sel, readOnly); err != nil {
		return nil, fmt.Errorf("listing services in %s: %w", ns, err)
	}
	out := make([]client.Object, len(l.Items))
	for i := range l.Items {
		out[i] = &l.Items[i]
	}
	return out, nil
}

// deleteCached deletes the object at key when the cache holds it, so that a
// steady state sends no request.
func (r *HealthEnvironmentReconciler) deleteCached(ctx context.Context, key client.ObjectKey, o client.Object) error {
	if err := r.Client.Get(ctx, key, o); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading %T %s: %w", o, key, err)
	}
	return r.deleteIfExists(ctx, o)
}

// deleteIfExists deletes o, treating not-found as done.
func (r *HealthEnvironmentReconciler) deleteIfExists(ctx context.Context, o client.Object) error {
	if err := r.Client.Delete(ctx, o, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting %T %s: %w", o, klog.KObj(o), err)
	}
	return nil
}

// ownerReferences make env the controller of an object, for garbage
// collection and for watches.
func ownerReferences(env *v1alpha1.HealthEnvironment) []metav1.OwnerReference {
	return []metav1.OwnerReference{*metav1.NewControllerRef(env, v1alpha1.GroupVersion.WithKind("HealthEnvironment"))}
}
