package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/netpol"
)

// The fence scales careplane's Deployments down through their scale
// subresource (stopDeployment); careplane-manager-bounds allows it to zero
// replicas alone.
// +kubebuilder:rbac:groups=apps,resources=deployments/scale,verbs=patch

// writer is the reconciler's way to the fence's first step.
func (r *HealthEnvironmentReconciler) writer() fenceWriter {
	return fenceWriter{c: r.Client, live: r.APIReader}
}

// readRecord reads the fence on record on the primary Namespace (package
// fence: the record is the fence; nothing else is).
//
// The cache is asked first, and the API server again whenever the cache's
// answer would lift or drop a fence: a record in the cache while the spec
// does not say Fenced (the restore that cleared it may not have reached the
// cache: acting on the stale copy ran a finished restore again), and no
// record while the status still describes a fence (a lagging cache must
// never have the primary provisioned, allows and all, under a fence). A
// namespace careplane did not make for this very environment (a
// re-created environment of the same name) carries no record of its: the
// reconcile reports the conflict and lifts nothing. A restore waiting for
// its pods is the exception: see restoreWaiting.
func (r *HealthEnvironmentReconciler) readRecord(ctx context.Context, s *scope) (fence.Record, error) {
	key := client.ObjectKey{Name: s.names.Primary}
	ns := &corev1.Namespace{}
	err := r.Client.Get(ctx, key, ns)
	if err != nil && !apierrors.IsNotFound(err) {
		return fence.Record{}, fmt.Errorf("reading namespace %s: %w", key.Name, err)
	}
	rec := fence.Record{}
	if err == nil {
		rec = fence.RecordOf(ns)
	}
	if r.restoreWaiting(s.env, rec) {
		// A restore this process has begun, waiting for its pods: the
		// cache is trusted until the restore would lift the fence, which
		// asks the API server first (liftChecked).
		s.liftUnchecked = true
	} else if (rec.Present() && s.env.Spec.Isolation.Mode != v1alpha1.IsolationFenced) || (!rec.Present() && s.env.Status.Isolation != nil) {
		ns = &corev1.Namespace{}
		err = r.APIReader.Get(ctx, key, ns)
		if apierrors.IsNotFound(err) {
			return fence.Record{}, nil
		}
		if err != nil {
			return fence.Record{}, fmt.Errorf("reading namespace %s: %w", key.Name, err)
		}
		rec = fence.RecordOf(ns)
	}
	if metav1.IsControlledBy(ns, s.env) {
		s.dataGen = ns.Annotations[v1alpha1.AnnotationDataGeneration]
		s.credentials = build.PrimaryCredentials(ns)
		s.holdsEvidence = ns.Labels[build.LabelHoldsEvidence] == "true"
	}
	if rec.Present() && !metav1.IsControlledBy(ns, s.env) {
		return fence.Record{}, nil
	}
	return rec, nil
}

// reconcileFence fences the primary site as fence.PlanFence lists it: (1)
// the window closed (record, deny policy, quota); then (2) every other
// policy and every Service but careplane's untouched ones removed, (3) every credential revoked and (4) the workloads
// preserved as evidence or stopped; (5) the front stops routing to the
// primary (reconcileFront). Every step is idempotent and keyed by the fence
// ID, so an interrupted fence resumes where it stopped; Fenced=True is
// reported only after a pass completes and the isolation is verified.
//
// Steps (2) to (4) go out together: the deny policy already isolates the
// namespace and the freeze keeps everyone else out, so their order cannot
// open it. Within (4) the pods are detached before the Deployments scale
// down, so that the scale-down leaves them running.
//
// addFinalizer says to hold the environment's deletion with the fence
// finalizer; that write goes out with the first step.
func (r *HealthEnvironmentReconciler) reconcileFence(ctx context.Context, s *scope, source string, addFinalizer bool) error {
	rec := s.record.Over(source, s.now)
	ns := s.names.Primary

	// (1) Close the window. The finalizer goes out at the same time, on a
	// copy (the answer is decoded into the object the builders read).
	var finalizers []string
	var version string
	finalizerErr := make(chan error, 1)
	go func() {
		if !addFinalizer {
			finalizerErr <- nil
			return
		}
		env := s.env.DeepCopy()
		err := r.ensureFinalizer(ctx, env)
		finalizers, version = env.Finalizers, env.ResourceVersion
		finalizerErr <- err
	}()
	rec, closed, err := r.writer().closeWindow(ctx, s.env, rec)
	if err == nil && !closed {
		err = fmt.Errorf("the primary namespace %s is not careplane's for this environment, or is going", ns)
	}
	if ferr := <-finalizerErr; ferr != nil || err != nil {
		return errors.Join(ferr, err)
	}
	s.record, s.windowClosed = rec, true
	if addFinalizer {
		// The status write carries the version of careplane's own last
		// write, if that left the status as read (writeFinalizer).
		s.env.Finalizers, s.env.ResourceVersion = finalizers, version
	}

	// The namespace and its claims, at once.
	var obs, claims fence.Observed
	var eerr error
	err = all(
		func() (err error) { obs, err = r.observeFenceAndStandby(ctx, s); return err },
		func() error { eerr = r.observeEvidence(ctx, s, &claims); return nil },
	)
	if err != nil {
		return err
	}
	// The evidence snapshots, once the window is closed and before the
	// steps below may change the data. They never hold the network fence:
	// what stands in their way is the EvidenceSnapshots condition's.
	if eerr != nil {
		log.FromContext(ctx).Error(eerr, "Could not read the fenced namespace's claims for the evidence snapshots")
		s.evidence = &metav1.Condition{Type: v1alpha1.ConditionEvidenceSnapshots, Status: metav1.ConditionFalse, ObservedGeneration: s.env.Generation,
			Reason: v1alpha1.ReasonSnapshotFailed, Message: "Could not read the claims to snapshot as evidence (retried; the network fence stands regardless): " + eerr.Error()}
	} else {
		obs.Claims, obs.ClaimDrivers, obs.SnapshotClass, obs.Snapshots = claims.Claims, claims.ClaimDrivers, claims.SnapshotClass, claims.Snapshots
	}
	plan := fence.PlanFence(obs)
	r.takeEvidence(ctx, s, plan)
	var adminErr error
	d := &done{}
	err = all(
		func() error { return r.markFenceStarted(ctx, s) },
		// admin-tier: the cluster-scoped deny, when the network-policy-api
		// CRDs are served (adminpolicy.go). A failure to write it holds up
		// none of the other steps: Reconcile returns it after the front is
		// switched, so Fenced stays False and the fence is retried.
		func() error { adminErr = r.applyAdminFence(ctx, s); return nil },
		func() error { return r.carryOutSteps(ctx, s, plan, d) },
	)
	// A tenant's write sent as the freeze came in may have been admitted
	// after this pass looked (admission sees the label a moment after it
	// is written), and not every kind it could write wakes this reconcile:
	// look again until a pass finds nothing left to do.
	for pass := 1; err == nil && len(s.changesLeft(plan)) > 0; pass++ {
		if pass == maxFencePasses {
			left := s.changesLeft(plan)
			if !slices.ContainsFunc(left, func(a fence.Action) bool { return !s.ofStandby(a) }) {
				// The standby alone keeps changing: reported once the
				// front is switched, and retried.
				s.standbyErr = fmt.Errorf("the standby namespace %s still changed after %d passes: %d writes left", s.names.Standby, pass, len(left))
				break
			}
			err = fmt.Errorf("the fenced namespace %s still changed after %d passes: %d writes left", ns, pass, len(left))
			break
		}
		if obs, err = r.observeFenceAndStandby(ctx, s); err != nil {
			break
		}
		plan = fence.PlanFence(obs)
		err = r.carryOutSteps(ctx, s, plan, d)
	}
	s.adminFenceErr = adminErr
	d.report(ctx, r, s, ns)
	if err != nil {
		return err
	}
	switch {
	case s.standbyErr != nil:
		// Not rotated, or not cleaned: nothing of the standby is taken
		// for this fence's.
	case slices.ContainsFunc(plan.Actions, func(a fence.Action) bool { return a.Verb == fence.VerbWait }):
		// The standby's credentials wait for its pods to run careplane's
		// templates: not fenced yet, and looked at again soon.
		s.standbyWaiting = true
		s.requeue(time.Second)
	case obs.Standby != nil && fence.StandbyServes(s.env):
		// Every credential of the standby is this fence's now: its
		// reconcile keeps them so and rolls the pods onto them.
		s.standbyRotation = rec.ID
	}
	for _, svc := range s.env.Spec.Services {
		// Nothing of the fenced site serves: none of its replicas counts.
		s.observeDeployment(v1alpha1.SitePrimary, svc, nil)
	}
	return nil
}

// changesLeft are plan's changes still to make: all of them, but the
// standby's once its part has failed in this reconcile (it is retried by
// the next, and holds up nothing else).
func (s *scope) changesLeft(plan fence.Plan) []fence.Action {
	changes := plan.Changes()
	if s.standbyErr == nil {
		return changes
	}
	return slices.DeleteFunc(changes, s.ofStandby)
}

// ofStandby says a is of the standby's part of the fence.
func (s *scope) ofStandby(a fence.Action) bool {
	return a.Namespace == s.names.Standby || (a.Kind == "Namespace" && a.Name == s.names.Standby)
}

// maxFencePasses bounds the passes of one reconcile over a fenced namespace
// that keeps changing; the fence is then retried. A fence that moves
// traffic to the standby takes four: the freeze, the standby's clean-up,
// its rotation, and the look that finds nothing left.
const maxFencePasses = 5

// carryOutSteps carries out steps 2 to 4 of plan: every write of a step at
// once, the steps side by side (the deny policy already isolates the
// namespace and the freeze keeps others out, so their order cannot open
// it), but within step 4 the evidence before the scale-down.
func (r *HealthEnvironmentReconciler) carryOutSteps(ctx context.Context, s *scope, plan fence.Plan, d *done) error {
	// The standby's part of step 3 on its own: its freeze before any of
	// its credentials is replaced (a token minted for a new ServiceAccount
	// in between would outlive the rotation), and nothing wrong with the
	// standby holds up the primary's steps.
	primary, standby := partition(plan.Step(3), func(a fence.Action) bool { return a.Namespace == s.names.Primary })
	// first, then: each in parallel, the second only once the first is done.
	inTurn := func(first, then []fence.Action) error {
		if err := r.carryOut(ctx, s, first, d, s.record.ID); err != nil {
			return err
		}
		return r.carryOut(ctx, s, then, d, s.record.ID)
	}
	return all(
		func() error { return r.carryOut(ctx, s, plan.Step(2), d, s.record.ID) },
		func() error { return r.carryOut(ctx, s, primary, d, s.record.ID) },
		func() error {
			// The freeze alone: the rest is made from the next look,
			// taken once the freeze is in place, so that nothing the
			// tenant adds meanwhile is missed. Then the clean-up, then the
			// rotations: nothing the tenant planted there runs on the new
			// credentials. A failure here holds up none of the primary's
			// steps, nor the move of traffic: it is reported once the
			// front is switched (standbyErr), and retried.
			err := func() error {
				if freeze, _ := partition(standby, func(a fence.Action) bool { return a.Verb == fence.VerbFreeze }); len(freeze) > 0 {
					return r.carryOut(ctx, s, freeze, d, s.record.ID)
				}
				clean, rotate := partition(standby, cleansStandby)
				if err := r.carryOut(ctx, s, clean, d, s.record.ID); err != nil {
					return err
				}
				if err := r.recordStandbyWritten(ctx, s, d, s.record.ID); err != nil {
					return err
				}
				return r.carryOut(ctx, s, rotate, d, s.record.ID)
			}()
			if err != nil {
				s.standbyErr = fmt.Errorf("the standby's part of the fence: %w", err)
			}
			return nil
		},
		func() error {
			scale, preserve := partition(plan.Step(4), func(a fence.Action) bool { return a.Verb == fence.VerbScale })
			return inTurn(preserve, scale)
		},
	)
}

// partition splits actions into those that match and the others, in order.
func partition(actions []fence.Action, match func(fence.Action) bool) (yes, no []fence.Action) {
	for _, a := range actions {
		if match(a) {
			yes = append(yes, a)
		} else {
			no = append(no, a)
		}
	}
	return yes, no
}

// observeFence gathers what fence.PlanFence reads: every NetworkPolicy,
// ServiceAccount, Secret, Pod and Service of the primary namespace, whoever
// made it, from the API server (the cache holds careplane's objects only),
// the ServiceAccounts and Secrets as metadata; careplane's Deployments from the
// cache. The policies and pods are read whole and kept in s.seen: the last
// look of a fence, taken after its last change, is also what its
// verification evaluates (verifyIsolation).
func (r *HealthEnvironmentReconciler) observeFence(ctx context.Context, s *scope) (fence.Observed, error) {
	ns := s.names.Primary
	obs := fence.Observed{Env: s.env, Isolation: s.iso, Record: s.record, AdminPolicyKind: "", DataGeneration: s.dataGen}
	// The four lists at once: a fence looks at least twice per pass, and
	// each look is on its critical path.
	var pols networkingv1.NetworkPolicyList
	var pods corev1.PodList
	var services corev1.ServiceList
	accounts, secrets := &metav1.PartialObjectMetadataList{}, &metav1.PartialObjectMetadataList{}
	// Metadata only: a Secret's data is never read.
	accounts.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccountList"))
	secrets.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	lists := []kindList{{"NetworkPolicies", &pols}, {"ServiceAccounts", accounts}, {"Secrets", secrets}, {"Pods", &pods}, {"Services", &services}}
	if err := inParallel(lists, func(l kindList) error {
		if err := r.APIReader.List(ctx, l.list, client.InNamespace(ns)); err != nil {
			return fmt.Errorf("listing %s in %s: %w", l.kind, ns, err)
		}
		return nil
	}); err != nil {
		return obs, err
	}
	seen := &seenNamespace{policies: pols.Items, pods: pods.Items}
	for i := range pols.Items {
		obs.Policies = append(obs.Policies, pols.Items[i].ObjectMeta)
	}
	for i := range accounts.Items {
		obs.ServiceAccounts = append(obs.ServiceAccounts, accounts.Items[i].ObjectMeta)
	}
	for i := range secrets.Items {
		obs.Secrets = append(obs.Secrets, secrets.Items[i].ObjectMeta)
	}
	for i := range pods.Items {
		obs.Pods = append(obs.Pods, pods.Items[i].ObjectMeta)
	}
	for i := range services.Items {
		svc := &services.Items[i]
		obs.Services = append(obs.Services, fence.ServiceObject{Object: svc.ObjectMeta, Selector: svc.Spec.Selector,
			ForeignSpec: fence.SpecWrittenByOthers(svc.ManagedFields, fieldOwner)})
	}
	s.seen = seen
	var deps appsv1.DeploymentList
	if err := r.Client.List(ctx, &deps, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEnvironment: s.env.Name}, readOnly); err != nil {
		return obs, fmt.Errorf("listing deployments in %s: %w", ns, err)
	}
	for i := range deps.Items {
		obs.Deployments = append(obs.Deployments, deps.Items[i].ObjectMeta)
	}
	var sts appsv1.StatefulSetList
	if err := r.Client.List(ctx, &sts, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEnvironment: s.env.Name}, readOnly); err != nil {
		return obs, fmt.Errorf("listing statefulsets in %s: %w", ns, err)
	}
	for i := range sts.Items {
		obs.StatefulSets = append(obs.StatefulSets, sts.Items[i].ObjectMeta)
	}
	return obs, nil
}

// kindList is a list to fill, and what it lists, for errors.
type kindList struct {
	kind string
	list client.ObjectList
}

// observeFenceAndStandby is observeFence and, when the fence moves traffic
// to the standby (fence.StandbyServes), what the plan reads of the standby
// namespace: every ServiceAccount and Secret there, whoever made it, and
// whether the namespace is frozen for this fence, from the API server, and
// the credentials revision of the standby's workloads. A
// standby namespace that is not careplane's for this environment (or not
// there yet) is left out: what careplane creates there later is new.
func (r *HealthEnvironmentReconciler) observeFenceAndStandby(ctx context.Context, s *scope) (fence.Observed, error) {
	obs, err := r.observeFence(ctx, s)
	if err != nil || !fence.StandbyServes(s.env) || s.standbyErr != nil {
		return obs, err
	}
	// Nothing wrong with the standby holds up the primary's fence, nor the
	// move of traffic: a standby not read whole is planned for its freeze
	// alone (when its Namespace was read) in this reconcile, reported once
	// the front is switched, and retried.
	if obs.Standby, err = r.observeStandby(ctx, s); err != nil {
		s.standbyErr = fmt.Errorf("the standby's part of the fence: %w", err)
	}
	return obs, nil
}

// observeStandby is the standby's part of observeFenceAndStandby: nil for a
// standby namespace careplane does not own for env (or not there). Failing
// once its Namespace is read, it returns what that says, Unread, with the
// error.
func (r *HealthEnvironmentReconciler) observeStandby(ctx context.Context, s *scope) (sb *fence.StandbyObserved, err error) {
	ns := s.names.Standby
	// From the API server: whether it is frozen for this fence decides a
	// write, and the pass after the freeze must see it.
	nsObj := &corev1.Namespace{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: ns}, nsObj); apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading namespace %s: %w", ns, err)
	}
	if !metav1.IsControlledBy(nsObj, s.env) || !nsObj.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	defer func() {
		if err != nil {
			sb = &fence.StandbyObserved{FrozenFor: fence.StandbyFrozenFor(nsObj), Unread: true}
		}
	}()
	services, _, err := r.standbyTemplates(ctx, s)
	if err != nil {
		return nil, err
	}
	sb = &fence.StandbyObserved{Services: services, Workloads: map[string]string{}, FrozenFor: fence.StandbyFrozenFor(nsObj),
		Written: fence.StandbyWrittenOf(nsObj)}
	s.standbyWritten = sb.Written
	for _, l := range []struct {
		kind string
		into *[]fence.Object
	}{{"ServiceAccountList", &sb.ServiceAccounts}, {"SecretList", &sb.Secrets}} {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind(l.kind))
		if err := r.APIReader.List(ctx, list, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("listing %s in %s: %w", strings.TrimSuffix(l.kind, "List"), ns, err)
		}
		for i := range list.Items {
			*l.into = append(*l.into, list.Items[i].ObjectMeta)
		}
	}
	for _, svc := range services {
		w, err := r.readWorkload(ctx, ns, svc)
		if err != nil {
			return nil, err
		}
		if w != nil {
			sb.Workloads[svc.Name] = w.credentialsRevision
		}
	}
	if began, ok := s.record.Began(); ok && s.now.Sub(began) > fence.StandbyWaitLimit {
		sb.WaitedOut = true
	}
	if sb.FrozenFor == s.record.ID {
		// Frozen for this fence: what the tenant may have planted there
		// before, for the clean-up.
		if sb.Objects, err = r.readStandby(ctx, s, ns); err != nil {
			return nil, err
		}
	}
	s.standbyServices = services
	return sb, nil
}

// done is what carrying out a fence's steps did, for the status.
type done struct {
	mu      sync.Mutex
	removed []string // NetworkPolicies deleted, with a note when not careplane's
	routes  []string // Services deleted, or let go of their finalizers
	revoked int32    // ServiceAccounts and Secrets revoked
	standby []string // what the standby's clean-up removed or wrote whole
	// written is what it wrote whole, by fence.WrittenKey, until recorded
	// on the standby Namespace (recordStandbyWritten).
	written map[string]string
	// scaled is the Deployments scaled to zero (stopDeployment).
	scaled map[client.ObjectKey]bool
}

func (d *done) add(f func(d *done)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d)
}

// report records what d holds in s, and logs and records an event for the
// policies removed.
func (d *done) report(ctx context.Context, r *HealthEnvironmentReconciler, s *scope, ns string) {
	s.credentialsRevoked += d.revoked
	if len(d.standby) > 0 {
		sort.Strings(d.standby)
		log.FromContext(ctx).Info("Cleaned the standby namespace that serves", "namespace", s.names.Standby, "objects", d.standby)
		r.Recorder.Eventf(s.env, nil, corev1.EventTypeWarning, "StandbyCleaned", "Fence",
			"Cleaned standby namespace %s, which serves while the primary is fenced: %s", s.names.Standby, strings.Join(d.standby, ", "))
	}
	if len(d.routes) > 0 {
		sort.Strings(d.routes)
		log.FromContext(ctx).Info("Removed Services from the fenced namespace", "namespace", ns, "services", d.routes)
		r.Recorder.Eventf(s.env, nil, corev1.EventTypeWarning, "ServicesRemoved", "Fence",
			"Removed the Services of fenced namespace %s (the restore writes careplane's anew): %s", ns, strings.Join(d.routes, ", "))
	}
	if len(d.removed) == 0 {
		return
	}
	sort.Strings(d.removed)
	s.removedPolicies = append(s.removedPolicies, d.removed...)
	log.FromContext(ctx).Info("Removed network policies from the fenced namespace", "namespace", ns, "policies", d.removed)
	r.Recorder.Eventf(s.env, nil, corev1.EventTypeWarning, "PoliciesRemoved", "Fence",
		"Removed network policies from fenced namespace %s: %s", ns, strings.Join(d.removed, ", "))
}

// carryOut makes the writes of actions, in parallel. The verbs of step 1
// and 5 are made elsewhere (closeWindow, applyAdminFence, reconcileFront),
// and keep writes nothing.
// rev is the credentials revision the ServiceAccounts it recreates belong
// to: the fence's ID, or the restore's.
func (r *HealthEnvironmentReconciler) carryOut(ctx context.Context, s *scope, actions []fence.Action, d *done, rev string) error {
	if len(actions) == 0 {
		return nil
	}
	return inParallel(actions, func(a fence.Action) error { return r.carryOutOne(ctx, s, a, d, rev) })
}

func (r *HealthEnvironmentReconciler) carryOutOne(ctx context.Context, s *scope, a fence.Action, d *done, rev string) error {
	meta := metav1.ObjectMeta{Namespace: a.Namespace, Name: a.Name}
	switch {
	case a.Namespace == s.names.Standby && cleansStandby(a):
		return r.cleanStandbyOne(ctx, s, a, d)
	case a.Verb == fence.VerbDelete && a.Kind == "NetworkPolicy":
		if err := r.deleteObserved(ctx, &networkingv1.NetworkPolicy{ObjectMeta: meta}, a.UID); err != nil {
			return err
		}
		d.add(func(d *done) { d.removed = append(d.removed, reported(a)) })
	case a.Verb == fence.VerbDelete && a.Kind == "Service":
		if err := r.deleteObserved(ctx, &corev1.Service{ObjectMeta: meta}, a.UID); err != nil {
			return err
		}
		r.Applier.Forget(corev1ac.Service(a.Name, a.Namespace))
		// One held by a finalizer still routes: in the same pass, let go.
		if err := r.releaseService(ctx, meta, a.UID); err != nil {
			return err
		}
		d.add(func(d *done) { d.routes = append(d.routes, reported(a)) })
	case a.Verb == fence.VerbRelease && a.Kind == "Service":
		if err := r.releaseService(ctx, meta, a.UID); err != nil {
			return err
		}
		d.add(func(d *done) { d.routes = append(d.routes, a.Name+" (finalizers taken off)") })
	case a.Verb == fence.VerbDelete && a.Kind == "ServiceAccount":
		if err := r.deleteObserved(ctx, &corev1.ServiceAccount{ObjectMeta: meta}, a.UID); err != nil {
			return err
		}
		d.add(func(d *done) { d.revoked++ })
	case a.Verb == fence.VerbDelete && a.Kind == "Secret":
		if err := r.deleteObserved(ctx, &corev1.Secret{ObjectMeta: meta}, a.UID); err != nil {
			return err
		}
		d.add(func(d *done) { d.revoked++ })
	case a.Verb == fence.VerbRotate && a.Kind == "Secret":
		for _, svc := range s.standbyServices {
			for _, g := range svc.GeneratedSecrets {
				if build.GeneratedSecretName(svc.Name, g) == a.Name {
					if err := r.rotateSecret(ctx, s, a.Namespace, svc, g, rev); err != nil {
						return err
					}
					if a.UID != "" { // one that did not exist revoked nothing
						d.add(func(d *done) { d.revoked++ })
					}
					return nil
				}
			}
		}
	case a.Verb == fence.VerbFreeze && a.Kind == "Namespace":
		return r.writeStandbyFreeze(ctx, a.Name, rev)
	case a.Verb == fence.VerbDelete && a.Kind == "Pod":
		return r.deleteObserved(ctx, &corev1.Pod{ObjectMeta: meta}, a.UID)
	case a.Verb == fence.VerbRecreate && a.Kind == "ServiceAccount":
		if a.UID != "" {
			if err := r.deleteObserved(ctx, &corev1.ServiceAccount{ObjectMeta: meta}, a.UID); err != nil {
				return err
			}
			d.add(func(d *done) { d.revoked++ })
		}
		return r.createServiceAccount(ctx, s, a.Namespace, a.Name, rev)
	case a.Verb == fence.VerbPreserve && a.Kind == "Pod":
		return r.preservePod(ctx, s, a)
	case a.Verb == fence.VerbScale && a.Kind == "Deployment":
		for _, svc := range s.env.Spec.Services {
			if svc.Name == a.Name {
				return r.stopDeployment(ctx, s, a.Namespace, svc, d)
			}
		}
	case a.Verb == fence.VerbScale && a.Kind == "StatefulSet":
		for _, svc := range s.env.Spec.Services {
			if build.StatefulSetName(svc.Name, s.dataGen) == a.Name {
				return r.stopStatefulSet(ctx, s, a.Namespace, svc)
			}
		}
	}
	return nil
}

// stopDeployment scales svc's Deployment in the fenced namespace ns to
// zero through its scale subresource: replicas alone, so that nothing
// rolls (a new template would have the controller manager roll the
// Deployment onto a new, empty ReplicaSet, for nothing: no pod runs until
// the restore rebuilds it, whole, on the restore's revision). It costs the
// API server a third of a whole apply (docs/request-costs.md), and is sent
// once per reconcile: the later passes' looks may come before the cache
// has it. A Deployment not there yet is created at zero, on the fence's
// revision.
func (r *HealthEnvironmentReconciler) stopDeployment(ctx context.Context, s *scope, ns string, svc v1alpha1.Service, d *done) error {
	key := client.ObjectKey{Namespace: ns, Name: svc.Name}
	cur := &appsv1.Deployment{}
	err := r.Client.Get(ctx, key, cur, readOnly)
	switch {
	case apierrors.IsNotFound(err):
		dep := build.Deployment(s.env, v1alpha1.SitePrimary, ns, svc, s.record.ID)
		dep.Spec.WithReplicas(0)
		return r.apply(ctx, dep, &appsv1.Deployment{})
	case err != nil:
		return fmt.Errorf("reading deployment %s: %w", key, err)
	case cur.Spec.Replicas != nil && *cur.Spec.Replicas == 0:
		return nil
	}
	first := false
	d.add(func(d *done) {
		if d.scaled == nil {
			d.scaled = map[client.ObjectKey]bool{}
		}
		first, d.scaled[key] = !d.scaled[key], true
	})
	if !first {
		return nil
	}
	opts := &client.SubResourcePatchOptions{SubResourceBody: &autoscalingv1.Scale{}, PatchOptions: client.PatchOptions{FieldManager: fieldOwner}}
	if err := r.Client.SubResource("scale").Patch(ctx, cur.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":0}}`)), opts); err != nil {
		d.add(func(d *done) { delete(d.scaled, key) })
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("deployment %s is gone again: will stop it on the next pass: %w", key, err)
		}
		return fmt.Errorf("scaling deployment %s to 0: %w", key, err)
	}
	return nil
}

// reported is how an event names the object action a deleted: its name,
// and whether it was not careplane's.
func reported(a fence.Action) string {
	if strings.HasPrefix(a.Note, "not careplane's") {
		return a.Name + " (not careplane's)"
	}
	return a.Name
}

// releaseService takes the finalizers off Service meta, of UID uid, when it
// is being deleted and held by some (release).
func (r *HealthEnvironmentReconciler) releaseService(ctx context.Context, meta metav1.ObjectMeta, uid types.UID) error {
	o := &metav1.PartialObjectMetadata{TypeMeta: servicesMetadata.TypeMeta, ObjectMeta: meta}
	return r.release(ctx, o, uid)
}

// deleteObserved deletes o on the precondition of the UID it was observed
// with (none when uid is empty); gone already is done, and so is replaced
// since (the precondition fails): the object observed is gone, and the
// next look sees the new one (another reconciler's during a leader's
// hand-over, or the control plane's new default ServiceAccount).
func (r *HealthEnvironmentReconciler) deleteObserved(ctx context.Context, o client.Object, uid types.UID, more ...client.DeleteOption) error {
	opts := append([]client.DeleteOption{client.PropagationPolicy(metav1.DeletePropagationBackground)}, more...)
	if uid != "" {
		opts = append(opts, client.Preconditions{UID: &uid})
	}
	err := r.Client.Delete(ctx, o, opts...)
	if err == nil || apierrors.IsNotFound(err) || (uid != "" && apierrors.IsConflict(err)) {
		return nil
	}
	return fmt.Errorf("deleting %T %s: %w", o, klog.KObj(o), err)
}

// createServiceAccount writes a ServiceAccount of credentials revision rev:
// a service's, or the namespace's default one (without careplane's labels,
// which would have it pruned, and with no token automounted).
func (r *HealthEnvironmentReconciler) createServiceAccount(ctx context.Context, s *scope, ns, name, rev string) error {
	ann := map[string]string{build.AnnotationCredentialsRevision: rev}
	want := corev1ac.ServiceAccount(name, ns).WithAutomountServiceAccountToken(false).WithAnnotations(ann)
	for _, svc := range s.env.Spec.Services {
		if svc.Name == name {
			want = build.ServiceAccount(s.env, ns, svc).WithAnnotations(ann)
		}
	}
	r.Applier.Forget(want)
	_, err := r.Applier.Apply(ctx, want, "")
	return err
}

// preservePod detaches a pod from its owners and labels it as evidence, so
// that it keeps running, isolated, whatever its owners do. a is the plan's
// action, with the pod as observed: the patch is made on its
// resourceVersion, and only a pod changed since is read again.
func (r *HealthEnvironmentReconciler) preservePod(ctx context.Context, s *scope, a fence.Action) error {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: a.Namespace, Name: a.Name}}
	if a.Version != "" {
		err := r.patchEvidence(ctx, s, pod, a.Labels, a.Version)
		if !apierrors.IsConflict(err) {
			return err
		}
	}
	live := &corev1.Pod{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(pod), live); err != nil {
		return client.IgnoreNotFound(err)
	}
	if a.UID != "" && live.UID != a.UID {
		return nil // replaced since: not the pod the plan saw
	}
	return r.patchEvidence(ctx, s, pod, live.Labels, "")
}

// patchEvidence detaches pod, whose labels are labels, and labels it as
// evidence; on the precondition of resourceVersion version, unless empty.
func (r *HealthEnvironmentReconciler) patchEvidence(ctx context.Context, s *scope, pod *corev1.Pod, labels map[string]string, version string) error {
	// The environment's label too, on a pod careplane did not start: the
	// evidence policy that keeps it isolated after the restore is written
	// for the evidence careplane finds with it.
	patch, err := evidencePatch(labels, fence.EvidenceTicket(s.iso), s.env.Name, version)
	if err != nil {
		return err
	}
	err = r.Client.Patch(ctx, pod, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner))
	switch {
	case err == nil, apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		return err
	}
	return fmt.Errorf("preserving pod %s as evidence: %w", klog.KObj(pod), err)
}

// evidencePatch is the merge patch that keeps a pod, whose labels are
// labels, as evidence of ticket (fence.EvidenceMetadata), detached from its
// owners; on the precondition of resourceVersion version, unless empty.
func evidencePatch(labels map[string]string, ticket, env, version string) ([]byte, error) {
	set, ann, err := fence.EvidenceMetadata(labels, ticket, env)
	if err != nil {
		return nil, err
	}
	md := map[string]any{"ownerReferences": nil, "labels": set}
	if ann != nil {
		md["annotations"] = ann
	}
	if version != "" {
		md["resourceVersion"] = version
	}
	return json.Marshal(map[string]any{"metadata": md})
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
		"The namespace is frozen and the deny-all policy is in place; removing other policies, revoking credentials and stopping workloads")
	read := s.env.Status.DeepCopy()
	if err := r.Client.Status().Patch(ctx, env, patch); err != nil {
		return fmt.Errorf("recording the fence start of %s: %w", klog.KObj(s.env), err)
	}
	// The answer is the server's whole status. The pass's last status
	// write is a merge patch against the status it read, locked to
	// s.env's resourceVersion: it takes the new version only while the
	// server's status is the one read, but for the condition set here
	// (as writeFinalizer does). Otherwise, a read from a cache behind
	// another write, it conflicts and the next pass writes on fresh
	// state, instead of dropping what the stale base and the pass agree
	// on (TestAFenceStartOnAStaleReadDropsNothing).
	read.Conditions = env.Status.Conditions
	if equality.Semantic.DeepEqual(*read, env.Status) {
		s.env.ResourceVersion = env.ResourceVersion
	}
	s.env.Status.Conditions = env.Status.Conditions
	// A copy: sharing the slice would make the final status write
	// compare the conditions with themselves and send nothing.
	s.status.Conditions = append([]metav1.Condition(nil), env.Status.Conditions...)
	return nil
}

// verification is the verdict on a fenced namespace and the evidence pods
// found in it.
type verification struct {
	result   netpol.Result
	evidence int32
	err      error
}

// seenNamespace is a fenced namespace's policies and pods, whole, as one
// look at the API server saw them.
type seenNamespace struct {
	policies []networkingv1.NetworkPolicy
	pods     []corev1.Pod
}

// verifyIsolation evaluates every NetworkPolicy of the fenced namespace
// against every pod in it, careplane's or not, as the fence's last look saw
// them (s.seen): read from the API server, not the cache, after the fence's
// last change (reconcileFence looks again after every pass that changed
// something). It changes nothing in s: it runs while the front switches.
func (r *HealthEnvironmentReconciler) verifyIsolation(ctx context.Context, s *scope, ns string) verification {
	if s.seen == nil {
		return verification{err: fmt.Errorf("the fenced namespace %s was not looked at", ns)}
	}
	nsObj := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		return verification{err: fmt.Errorf("reading namespace %s: %w", ns, err)}
	}
	var v verification
	for i := range s.seen.pods {
		if s.seen.pods[i].Labels[v1alpha1.LabelEvidence] != "" {
			v.evidence++
		}
	}
	v.result, v.err = netpol.VerifyFence(netpol.NamespaceInput(nsObj, s.seen.policies, s.seen.pods, s.iso.ForensicsNamespaces()))
	return v
}
