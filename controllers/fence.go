package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/netpol"
)

// fence is what the fence policy in the primary namespace says: whether the
// site is fenced, since when, and which restore (if any) is under way.
type fence struct {
	present   bool
	id        string // the fence ID: when the fence began, RFC 3339
	restoreID string // when the restore began, RFC 3339; "" before
	// created is when the API server created the deny policy (to the
	// second): pods created later were born under the fence.
	created time.Time
}

// readFence reads the fence policy of the primary namespace from the cache.
//
// While the spec asks for no fence, a fence policy in the cache means a
// restore, and is read again from the API server: the reconcile that lifted
// the fence may have deleted it before the cache saw the deletion. An
// informer reconnecting after an API server outage lags by up to a minute,
// and acting on its stale copy ran the finished restore again on every
// reconcile, putting the fenced label back on the namespace and appending
// an empty incident each time, until the real one fell off the list.
//
// The other way round fails closed too: while the status still describes a
// fence (status.isolation), a cache that has no fence policy is asked again
// of the API server, so that a lagging cache never has the primary
// provisioned, allows and all, under a fence that is still in place.
func (r *HealthEnvironmentReconciler) readFence(ctx context.Context, s *scope) (fence, error) {
	pol := &networkingv1.NetworkPolicy{}
	key := client.ObjectKey{Namespace: s.names.Primary, Name: build.FencePolicyName}
	err := r.Client.Get(ctx, key, pol)
	switch {
	case err == nil && s.env.Spec.Isolation.Mode != v1alpha1.IsolationFenced:
		err = r.APIReader.Get(ctx, key, pol)
	case apierrors.IsNotFound(err) && s.env.Status.Isolation != nil:
		err = r.APIReader.Get(ctx, key, pol)
	}
	if apierrors.IsNotFound(err) {
		return fence{}, nil
	}
	if err != nil {
		return fence{}, fmt.Errorf("reading the fence policy of %s: %w", klog.KObj(s.env), err)
	}
	return fence{present: true, id: pol.Annotations[build.AnnotationFenceID], restoreID: pol.Annotations[build.AnnotationRestoreID],
		created: pol.CreationTimestamp.Time}, nil
}

// applyFencePolicy writes the deny-all fence policy and records when the API
// server created it. Failing closed: if the forensics exception cannot be
// written, the fence goes up without it.
func (r *HealthEnvironmentReconciler) applyFencePolicy(ctx context.Context, s *scope, f *fence) error {
	ann := map[string]string{build.AnnotationFenceID: f.id}
	if f.restoreID != "" {
		ann[build.AnnotationRestoreID] = f.restoreID
	}
	pol := build.FencePolicy(s.env, s.names.Primary, true, ann)
	cur := &networkingv1.NetworkPolicy{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.names.Primary, Name: build.FencePolicyName}, cur); err == nil && fencePolicyIsAsDesired(cur, pol) {
		// The gate wrote exactly this policy: nothing to send.
		if f.created.IsZero() {
			f.created = cur.CreationTimestamp.Time
		}
		return nil
	}
	err := r.apply(ctx, pol, &networkingv1.NetworkPolicy{})
	if err != nil && apierrors.IsInvalid(err) && s.env.Spec.Isolation.ForensicsFrom != nil {
		log.FromContext(ctx).Error(err, "Fence policy with the forensics exception was rejected; fencing without it")
		r.Recorder.Eventf(s.env, nil, corev1.EventTypeWarning, "ForensicsExceptionRejected", "Fence",
			"The forensics exception was rejected (%v); the fence denies all traffic instead", err)
		pol = build.FencePolicy(s.env, s.names.Primary, false, ann)
		err = r.apply(ctx, pol, &networkingv1.NetworkPolicy{})
	}
	if err == nil && pol.CreationTimestamp != nil && !pol.CreationTimestamp.IsZero() {
		// The apply was sent: the answer holds the server's timestamp.
		f.created = pol.CreationTimestamp.Time
	}
	if f.created.IsZero() {
		f.created = s.now
	}
	return err
}

// fencePolicyIsAsDesired says whether cur is the desired fence policy
// already: the same spec and owners, the desired labels, and exactly the
// desired careplane annotations (an annotation of a cancelled restore must
// go).
func fencePolicyIsAsDesired(cur *networkingv1.NetworkPolicy, desired any) bool {
	want, err := policyOf(desired)
	if err != nil {
		return false
	}
	if cur.DeletionTimestamp != nil || !equality.Semantic.DeepEqual(cur.Spec, want.Spec) ||
		!equality.Semantic.DeepEqual(cur.OwnerReferences, want.OwnerReferences) {
		return false
	}
	for k, v := range want.Labels {
		if got, ok := cur.Labels[k]; !ok || got != v {
			return false
		}
	}
	for k, v := range cur.Annotations {
		if strings.HasPrefix(k, v1alpha1.GroupVersion.Group+"/") && want.Annotations[k] != v {
			return false
		}
	}
	for k, v := range want.Annotations {
		if cur.Annotations[k] != v {
			return false
		}
	}
	return true
}

// reconcileFence fences the primary site, in fail-closed order: (1) the
// deny-all policy; then, once it is in place, (2) every other policy of the
// namespace removed, (3) credentials revoked and (4) workloads preserved as
// evidence or stopped; (5) the front stops routing to the primary
// (reconcileFront). Every step is idempotent and keyed by the fence ID, so an
// interrupted fence resumes where it stopped; Fenced=True is reported only
// after a pass completes.
//
// Steps (2) to (4) go out together. The deny policy already isolates the
// namespace, and allows add up, so the order among them cannot open it; what
// they cost is round trips, and a fence is the one thing careplane must do
// in as few of them as it can (each is 50-150 ms on a loaded control
// plane). Within (4) the pods are detached before their Deployments scale
// down, so that the scale-down leaves them running.
//
// addFinalizer says to hold the environment's deletion with the fence
// finalizer; that write goes out with the deny policy.
func (r *HealthEnvironmentReconciler) reconcileFence(ctx context.Context, s *scope, addFinalizer bool) error {
	f, err := r.readFence(ctx, s)
	if err != nil {
		return err
	}
	if !f.present || f.id == "" {
		f = fence{present: true, id: s.now.UTC().Format(time.RFC3339Nano)}
	}
	// A fence requested again during a restore cancels the restore.
	f.restoreID = ""
	ns := s.names.Primary

	// (1) Deny everything first. Whatever else happens, a fenced
	// environment is not garbage collected with its evidence: the
	// finalizer goes out at the same time, on a copy (the answer is
	// decoded into the object the builders read).
	var finalizers []string
	finalizerErr, quotaErr := make(chan error, 1), make(chan error, 1)
	// (4a) No new pod in the fenced namespace, before (4) detaches the
	// evidence pods: their ReplicaSets would start replacements that the
	// scale-down then deletes, about ten writes each across the control
	// plane. Its failure holds up none of the other steps: it is returned
	// after them.
	go func() { quotaErr <- r.apply(ctx, build.FenceQuota(s.env, ns), &corev1.ResourceQuota{}) }()
	go func() {
		if !addFinalizer {
			finalizerErr <- nil
			return
		}
		env := s.env.DeepCopy()
		err := r.ensureFinalizer(ctx, env)
		finalizers = env.Finalizers
		finalizerErr <- err
	}()
	err = r.applyFencePolicy(ctx, s, &f)
	s.fence = f
	ferr, qerr := <-finalizerErr, <-quotaErr
	if qerr != nil {
		qerr = fmt.Errorf("writing the fence quota: %w", qerr)
	}
	if ferr != nil {
		return errors.Join(ferr, err, qerr)
	}
	if addFinalizer {
		s.env.Finalizers = finalizers
	}
	if err != nil {
		return fmt.Errorf("writing the fence policy: %w", err)
	}

	// (2), (3) and (4), and the writes that only report the fence: each
	// goroutine keeps what it found to itself, merged below.
	var (
		removed            []string
		revoked, secretsGo int32
		adminErr           error
	)
	err = all(
		func() error { return r.applyNamespace(ctx, s, ns, v1alpha1.SitePrimary, true) },
		func() error { return r.markFenceStarted(ctx, s) },
		// (1b) admin-tier: the cluster-scoped deny, when the
		// network-policy-api CRDs are served (adminpolicy.go). A failure
		// to write it holds up none of the other steps: Reconcile returns
		// it after the front is switched, so Fenced stays False and the
		// fence is retried.
		func() error { adminErr = r.applyAdminFence(ctx, s); return nil },
		// (2) Allows add up: any other policy could breach the fence.
		func() (err error) { removed, err = r.removeOtherPolicies(ctx, s, ns); return err },
		// (3) Credentials: new ServiceAccounts (tokens bound to the old
		// UIDs die, including those of preserved pods), generated Secrets
		// deleted.
		func() (err error) {
			revoked, err = r.rotateServiceAccounts(ctx, s, ns, s.env.Spec.Services, f.id)
			return err
		},
		func() (err error) { secretsGo, err = r.deleteGeneratedSecrets(ctx, s, ns); return err },
		// (4) Workloads: evidence first, then the scale-down.
		func() error { return r.stopWorkloads(ctx, s, ns, f.id) },
	)
	s.adminFenceErr = adminErr
	s.removedPolicies = append(s.removedPolicies, removed...)
	s.credentialsRevoked += revoked + secretsGo
	if err := errors.Join(err, qerr); err != nil {
		return err
	}
	for _, svc := range s.env.Spec.Services {
		// Nothing of the fenced site serves: none of its replicas counts.
		s.observeDeployment(v1alpha1.SitePrimary, svc, nil)
	}
	return nil
}

// deleteGeneratedSecrets deletes the fenced site's generated Secrets and
// reports how many it deleted.
func (r *HealthEnvironmentReconciler) deleteGeneratedSecrets(ctx context.Context, s *scope, ns string) (int32, error) {
	var secrets []*corev1.Secret
	for _, svc := range s.env.Spec.Services {
		for _, g := range svc.GeneratedSecrets {
			secret := &corev1.Secret{}
			err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.GeneratedSecretName(svc.Name, g)}, secret)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("reading secret %s/%s: %w", ns, build.GeneratedSecretName(svc.Name, g), err)
			}
			secrets = append(secrets, secret)
		}
	}
	if len(secrets) == 0 {
		return 0, nil
	}
	return int32(len(secrets)), inParallel(secrets, func(secret *corev1.Secret) error { return r.deleteIfExists(ctx, secret) })
}

// stopWorkloads preserves the fenced site's pods as evidence (unless the
// fence stops them) and scales its Deployments to zero, in that order.
func (r *HealthEnvironmentReconciler) stopWorkloads(ctx context.Context, s *scope, ns, fenceID string) error {
	if s.env.Spec.Isolation.Workloads != v1alpha1.WorkloadsStop {
		if err := r.preserveEvidence(ctx, s, ns); err != nil {
			return err
		}
	}
	return inParallel(s.env.Spec.Services, func(svc v1alpha1.Service) error {
		dep := build.Deployment(s.env, v1alpha1.SitePrimary, ns, svc, fenceID)
		dep.Spec.WithReplicas(0)
		return r.apply(ctx, dep, &appsv1.Deployment{})
	})
}

// markFenceStarted records Fenced=False/FenceIncomplete as soon as the deny
// policy is in place, so that the status never shows an older state while
// the fence is under way. It writes only when the status says otherwise.
func (r *HealthEnvironmentReconciler) markFenceStarted(ctx context.Context, s *scope) error {
	if c := findCondition(s.env.Status.Conditions, v1alpha1.ConditionFenced); c != nil &&
		(c.Reason == v1alpha1.ReasonFenceIncomplete || c.Reason == v1alpha1.ReasonFenceComplete) {
		return nil
	}
	// On a copy: the answer is decoded into the object, which the fence's
	// other steps read at the same time.
	env := s.env.DeepCopy()
	patch := client.MergeFrom(env.DeepCopy())
	setCondition(&env.Status.Conditions, env.Generation, v1alpha1.ConditionFenced, metav1.ConditionFalse, v1alpha1.ReasonFenceIncomplete,
		"The deny-all policy is in place; removing other policies, revoking credentials and stopping workloads")
	if err := r.Client.Status().Patch(ctx, env, patch); err != nil {
		return fmt.Errorf("recording the fence start of %s: %w", klog.KObj(s.env), err)
	}
	s.env.Status.Conditions = env.Status.Conditions
	// A copy: sharing the slice would make the final status write
	// compare the conditions with themselves and send nothing.
	s.status.Conditions = slices.Clone(env.Status.Conditions)
	return nil
}

// removeOtherPolicies deletes every NetworkPolicy of the fenced namespace but
// the fence's own, whoever created it, and returns their names.
func (r *HealthEnvironmentReconciler) removeOtherPolicies(ctx context.Context, s *scope, ns string) ([]string, error) {
	var pols networkingv1.NetworkPolicyList
	if err := r.Client.List(ctx, &pols, client.InNamespace(ns)); err != nil {
		return nil, fmt.Errorf("listing network policies in %s: %w", ns, err)
	}
	var others []*networkingv1.NetworkPolicy
	var removed []string
	for i := range pols.Items {
		p := &pols.Items[i]
		if p.Name == build.FencePolicyName || p.DeletionTimestamp != nil {
			continue
		}
		others = append(others, p)
		name := p.Name
		if p.Labels[v1alpha1.LabelEnvironment] != s.env.Name {
			name += " (not careplane's)"
		}
		removed = append(removed, name)
	}
	if len(others) == 0 {
		return nil, nil
	}
	if err := inParallel(others, func(p *networkingv1.NetworkPolicy) error { return r.deleteIfExists(ctx, p) }); err != nil {
		return nil, err
	}
	sort.Strings(removed)
	log.FromContext(ctx).Info("Removed network policies from the fenced namespace", "namespace", ns, "policies", removed)
	r.Recorder.Eventf(s.env, nil, corev1.EventTypeWarning, "PoliciesRemoved", "Fence",
		"Removed network policies from fenced namespace %s: %s", ns, strings.Join(removed, ", "))
	return removed, nil
}

// rotateServiceAccounts deletes and recreates each service's ServiceAccount
// unless it already belongs to credentials revision rev, and returns how
// many it revoked.
func (r *HealthEnvironmentReconciler) rotateServiceAccounts(ctx context.Context, s *scope, ns string, services []v1alpha1.Service, rev string) (int32, error) {
	var revoked atomic.Int32
	err := inParallel(services, func(svc v1alpha1.Service) error {
		sa := &corev1.ServiceAccount{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: svc.Name}, sa)
		switch {
		case err == nil && sa.Annotations[build.AnnotationCredentialsRevision] == rev:
			return nil
		case err == nil:
			if err := r.Client.Delete(ctx, sa, client.Preconditions{UID: &sa.UID}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("revoking service account %s/%s: %w", ns, sa.Name, err)
			}
			revoked.Add(1)
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("reading service account %s/%s: %w", ns, svc.Name, err)
		}
		want := build.ServiceAccount(s.env, ns, svc).WithAnnotations(map[string]string{build.AnnotationCredentialsRevision: rev})
		r.Applier.Forget(want)
		_, err = r.Applier.Apply(ctx, want, "")
		return err
	})
	return revoked.Load(), err
}

// preserveEvidence detaches the running pods of the fenced site from their
// ReplicaSets and labels them as evidence, so scaling the Deployments to
// zero leaves them running, isolated, for investigation.
func (r *HealthEnvironmentReconciler) preserveEvidence(ctx context.Context, s *scope, ns string) error {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEnvironment: s.env.Name}); err != nil {
		return fmt.Errorf("listing pods in %s: %w", ns, err)
	}
	ticket := s.env.Spec.Isolation.Ticket
	if ticket == "" {
		ticket = "fenced"
	}
	var candidates []*corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Labels[v1alpha1.LabelService] == "" || p.DeletionTimestamp != nil || p.Labels[v1alpha1.LabelEvidence] != "" {
			continue
		}
		// Between detaching the pods and scaling to zero, a ReplicaSet may
		// start replacements. They never ran unfenced and are deleted by
		// the scale-down: they are not evidence. A pod created in a later
		// second than the deny policy (both by the API server's clock) is
		// such a replacement; so is any pod once this fence has scaled its
		// Deployment down (its template carries the fence ID; read live, as
		// the cache may not have seen the scale-down yet).
		if p.CreationTimestamp.After(s.fence.created.Truncate(time.Second)) {
			continue
		}
		candidates = append(candidates, p)
	}
	if len(candidates) == 0 {
		return nil
	}
	var deps appsv1.DeploymentList
	if err := r.APIReader.List(ctx, &deps, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEnvironment: s.env.Name}); err != nil {
		return fmt.Errorf("listing deployments in %s: %w", ns, err)
	}
	fencedDeployment := map[string]bool{}
	for _, d := range deps.Items {
		fencedDeployment[d.Name] = d.Spec.Template.Annotations[build.AnnotationCredentialsRevision] == s.fence.id
	}
	return inParallel(candidates, func(p *corev1.Pod) error {
		svc := p.Labels[v1alpha1.LabelService]
		if fencedDeployment[svc] {
			return nil
		}
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"ownerReferences": nil,
			"labels": map[string]any{
				v1alpha1.LabelService:      nil,
				v1alpha1.LabelEvidence:     ticket,
				build.LabelEvidenceService: svc,
			},
		}})
		if err != nil {
			return err
		}
		if err := r.Client.Patch(ctx, p, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("preserving pod %s as evidence: %w", klog.KObj(p), err)
		}
		return nil
	})
}

// verification is the verdict on a fenced namespace and the evidence pods
// found in it.
type verification struct {
	result   netpol.Result
	evidence int32
	err      error
}

// verifyIsolation evaluates every NetworkPolicy of the fenced namespace, read
// live from the API server rather than the cache, against its pods. It
// changes nothing in s: it runs while the front switches.
func (r *HealthEnvironmentReconciler) verifyIsolation(ctx context.Context, s *scope, ns string) verification {
	nsObj := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		return verification{err: fmt.Errorf("reading namespace %s: %w", ns, err)}
	}
	var pols networkingv1.NetworkPolicyList
	if err := r.APIReader.List(ctx, &pols, client.InNamespace(ns)); err != nil {
		return verification{err: fmt.Errorf("listing network policies in %s: %w", ns, err)}
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEnvironment: s.env.Name}); err != nil {
		return verification{err: fmt.Errorf("listing pods in %s: %w", ns, err)}
	}
	var v verification
	for i := range pods.Items {
		if pods.Items[i].Labels[v1alpha1.LabelEvidence] != "" {
			v.evidence++
		}
	}
	v.result, v.err = netpol.VerifyFence(netpol.NamespaceInput(nsObj, pols.Items, pods.Items, s.env.Spec.Isolation.ForensicsFrom.ToMeta()))
	return v
}

// restoreServices are the service templates a restore rebuilds from: the
// known-good revision spec.isolation.restoreRevision names, or the spec.
func (r *HealthEnvironmentReconciler) restoreServices(ctx context.Context, s *scope) ([]v1alpha1.Service, string, error) {
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

// reconcileRestore rebuilds a fenced primary site after the mode went back
// to None. The fence stays until the rebuilt pods are Ready: new
// ServiceAccounts, rotated generated Secrets and new pods from the spec or
// the named revision. Then traffic returns, the allow policies come back,
// evidence pods stay isolated by their own policy, and the fence goes. It
// reports whether the restore completed.
func (r *HealthEnvironmentReconciler) reconcileRestore(ctx context.Context, s *scope, f fence) (bool, error) {
	services, from, err := r.restoreServices(ctx, s)
	if err != nil {
		return false, err
	}
	if f.restoreID == "" {
		f.restoreID = s.now.UTC().Format(time.RFC3339Nano)
	}
	s.restoring = true
	s.restoredFrom = from
	ns := s.names.Primary
	err = r.applyFencePolicy(ctx, s, &f)
	s.fence = f
	if err != nil {
		return false, fmt.Errorf("keeping the fence policy: %w", err)
	}
	if err := r.applyNamespace(ctx, s, ns, v1alpha1.SitePrimary, true); err != nil {
		return false, err
	}
	removed, err := r.removeOtherPolicies(ctx, s, ns)
	s.removedPolicies = append(s.removedPolicies, removed...)
	if err != nil {
		return false, err
	}
	revoked, err := r.rotateServiceAccounts(ctx, s, ns, services, f.restoreID)
	s.credentialsRevoked += revoked
	if err != nil {
		return false, err
	}
	// The rebuilt pods must be admitted: the fence's quota goes (the deny
	// policy stays until they are Ready).
	if err := r.deleteCached(ctx, client.ObjectKey{Namespace: ns, Name: build.FenceQuotaName}, &corev1.ResourceQuota{}); err != nil {
		return false, err
	}
	for _, svc := range services {
		for _, g := range svc.GeneratedSecrets {
			if err := r.rotateSecret(ctx, s, ns, svc, g, f.restoreID); err != nil {
				return false, err
			}
		}
		if err := r.apply(ctx, build.Deployment(s.env, v1alpha1.SitePrimary, ns, svc, f.restoreID), &appsv1.Deployment{}); err != nil {
			return false, err
		}
		if err := r.apply(ctx, build.Service(s.env, ns, svc), &corev1.Service{}); err != nil {
			return false, err
		}
		dep := &appsv1.Deployment{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: svc.Name}, dep); err != nil && !apierrors.IsNotFound(err) {
			return false, err
		}
		if dep.Name == "" || dep.Spec.Template.Annotations[build.AnnotationCredentialsRevision] != f.restoreID {
			s.observeDeployment(v1alpha1.SitePrimary, svc, nil)
		} else {
			s.observeDeployment(v1alpha1.SitePrimary, svc, dep)
		}
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
	// admin-tier: before the fence policy, whose absence ends the restore:
	// a failure here leaves the fence in place and the restore retried.
	if err := r.deleteAdminFence(ctx, s); err != nil {
		return false, err
	}
	if err := r.deleteCached(ctx, client.ObjectKey{Namespace: ns, Name: build.FencePolicyName}, &networkingv1.NetworkPolicy{}); err != nil {
		return false, err
	}
	if err := r.applyNamespace(ctx, s, ns, v1alpha1.SitePrimary, false); err != nil {
		return false, err
	}
	return true, nil
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
	_, err = r.Applier.Apply(ctx, want, "")
	return err
}

// applyNamespace writes a site namespace, labelled fenced or not.
func (r *HealthEnvironmentReconciler) applyNamespace(ctx context.Context, s *scope, name string, site v1alpha1.Site, fenced bool) error {
	ns := build.Namespace(s.env, name, build.SiteLabel(site))
	if fenced {
		ns.WithLabels(map[string]string{v1alpha1.LabelFenced: "true"})
	}
	return r.apply(ctx, ns, &corev1.Namespace{})
}
