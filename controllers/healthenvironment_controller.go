// Package controllers holds careplane's reconcilers: the only code that talks
// to the API server. Desired objects and decisions come from the pure
// packages under internal/.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/recovery"
	"github.com/careplane/careplane/internal/ssa"
)

// conflictRetry is how often an environment blocked by a namespace careplane
// does not own is looked at again: the foreign namespace's deletion is not an
// event careplane watches (it caches only what it owns).
const conflictRetry = 30 * time.Second

// statusConflictRetry is how soon a reconcile whose status write met a newer
// resourceVersion runs again.
const statusConflictRetry = 500 * time.Millisecond

// HealthEnvironmentReconciler provisions and maintains HealthEnvironments.
type HealthEnvironmentReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// APIReader reads straight from the API server, for objects careplane
	// does not cache (namespaces it does not own).
	APIReader client.Reader
	// Recorder records events on HealthEnvironments.
	Recorder events.EventRecorder
	// Clock is the time source; tests inject a fake.
	Clock clock.PassiveClock
	// Applier writes children with server-side apply, skipping no-op writes.
	Applier *ssa.Applier
	// Secrets generates the values of generated Secrets.
	Secrets SecretGenerator
	// RESTMapper tells which admin-tier policy APIs the cluster serves (see
	// adminpolicy.go); nil means none.
	RESTMapper meta.RESTMapper
	// Workers is how many environments are reconciled at once.
	Workers int
	// FleetFence, when set, tells a fleet fence under way, during which a
	// fence's steps after its deny policy wait (fleetfence.go).
	FleetFence *FleetFence

	// front is where this process last pointed each front (traffic.go).
	front frontMemory
	// cleaned is the restore clean-up this process has done (restore.go).
	cleaned cleanedMemory
	// adminKinds is which admin-tier policy kinds are served, as last
	// asked (adminpolicy.go).
	adminKinds adminKindsMemory

	keeper dataKeeper
	// stripped is the evidence pods restripEvidence has looked at, by UID.
	stripped sync.Map
	// seeds is the standby claims this process seeded (standbydata.go).
	seeds seedMemory
	// unrecorded is what fence passes did that their status writes did
	// not record (status.go).
	unrecorded unrecordedMemory
}

// SecretGenerator returns a new random credential.
type SecretGenerator func() ([]byte, error)

// +kubebuilder:rbac:groups=careplane.io,resources=healthenvironments,verbs=get;list;watch;patch;update
// +kubebuilder:rbac:groups=careplane.io,resources=healthenvironments/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=careplane.io,resources=healthenvironments/finalizers,verbs=update
// +kubebuilder:rbac:groups=careplane.io,resources=fencerequests,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=serviceaccounts;services;secrets;resourcequotas;limitranges,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments;controllerrevisions,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=policy.networking.k8s.io,resources=clusternetworkpolicies;adminnetworkpolicies,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one HealthEnvironment's children to the desired state and
// reports what it found in the status.
func (r *HealthEnvironmentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, reterr error) {
	logger := log.FromContext(ctx)

	env := &v1alpha1.HealthEnvironment{}
	if err := r.Client.Get(ctx, req.NamespacedName, env); err != nil {
		if apierrors.IsNotFound(err) {
			// Gone: its namespaces go with it, and so does what the
			// applier remembers of them.
			r.Applier.ForgetNamespaces(req.Name, req.Name+build.PrimarySuffix, req.Name+build.StandbySuffix)
			r.front.forget(req.Name)
			r.cleaned.forget(req.Name)
			r.seeds.forget(req.Name)
			r.unrecorded.forget(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	// A FenceRequest may hold the fence of an environment whose spec does
	// not say Fenced yet (fencerequest.go).
	heldBy, err := r.fenceRequestOf(ctx, env, r.Client)
	if err != nil {
		return ctrl.Result{}, err
	}

	// Before anything is written (the status included): a fence held back
	// for a fleet fence costs the API server nothing.
	if after := r.delayFence(ctx, env, heldBy, r.Clock.Now()); after > 0 {
		return ctrl.Result{RequeueAfter: after}, nil
	}

	s := newScope(env, r.Clock.Now())
	// The fence on record is what the status is written from: while it
	// cannot be read, nothing is written. A status written then would say
	// NotFenced and drop status.isolation, and a restore finishing later
	// recorded its incident without the ticket it closed.
	d, heldBy, err := r.gatherFence(ctx, s, heldBy)
	if err != nil {
		return ctrl.Result{}, err
	}
	s.course = d.Course
	s.forgetLiftedIsolation()
	// A fleet fence before the hand-over is carried out as the request (or,
	// once it is gone, the last fence of record) says; the spec stays the
	// user's.
	s.iso = fence.Effective(env.Spec.Isolation, heldBy, s.record, s.isoStatus)
	if heldBy != nil {
		s.fenceRequest = heldBy.Name
		s.fencedBy = heldBy.Annotations[v1alpha1.AnnotationRequestedBy]
	} else if name := s.record.Request(); name != "" && d.Course == fence.CourseFence {
		s.fenceRequest = name
	}
	if s.fencedBy == "" && d.Course == fence.CourseFence {
		s.fencedBy = env.Annotations[v1alpha1.AnnotationIsolationBy]
	}
	before := env.Status.DeepCopy()
	defer func() {
		if reterr == nil {
			s.status.ObservedGeneration = env.Generation
		}
		r.unrecorded.take(s)
		s.finish(reterr)
		countFenceOutcome(s.status)
		err := r.writeStatus(ctx, env, before, s)
		if apierrors.IsConflict(err) {
			r.unrecorded.keep(s)
		}
		switch {
		case err == nil:
		case reterr == nil && apierrors.IsConflict(err):
			// The cache is behind a status write (this reconciler's last,
			// or the recovery controller's): look again on fresh state,
			// soon. Returned as an error, each conflict would also grow the
			// queue's per-item backoff, which an API server outage has
			// already grown towards its 16-minute cap.
			log.FromContext(ctx).V(1).Info("Status write conflicted; looking again", "after", statusConflictRetry)
			if res.RequeueAfter == 0 || res.RequeueAfter > statusConflictRetry {
				res = ctrl.Result{RequeueAfter: statusConflictRetry}
			}
		default:
			reterr = kerrors.NewAggregate([]error{reterr, err})
		}
	}()

	var revErr error
	s.primary, s.primaryFrom, revErr = r.primaryServices(ctx, s)
	var notFound *revisionNotFoundError
	if revErr != nil && !errors.As(revErr, &notFound) {
		return ctrl.Result{}, revErr
	}

	if !env.DeletionTimestamp.IsZero() {
		if err := r.reconcileDelete(ctx, s, d.Source); err != nil {
			return ctrl.Result{}, err
		}
		// A fence finished on deletion waits as any other: the standby's
		// rotation for its pods' roll, which only time ends.
		return ctrl.Result{RequeueAfter: s.requeueWithin(0)}, nil
	}
	// Deleting the environment keeps its data unless its spec says
	// otherwise: the data finalizer gives careplane the time to (retain.go).
	if err := r.ensureDataFinalizer(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	if s.record.Present() && d.Course != fence.CourseFence {
		// Whatever else happens, a fenced environment is not garbage
		// collected with its evidence (a fence adds the finalizer with
		// its first step, reconcileFence).
		if err := r.ensureFinalizer(ctx, env); err != nil {
			return ctrl.Result{}, err
		}
	}

	// A fence of a primary site that exists goes first: nothing wrong with
	// the front or the standby namespace may hold it up.
	fencedFirst := false
	if d.Course == fence.CourseFence {
		if ours, err := primaryIsOurs(ctx, r.Client, env); err != nil {
			return ctrl.Result{}, err
		} else if ours {
			if err := r.reconcileFence(ctx, s, d.Source, true); err != nil {
				return ctrl.Result{}, err
			}
			fencedFirst = true
		}
	}
	if err := r.reconcileNamespaces(ctx, s); err != nil {
		var conflict *namespaceConflictError
		if errors.As(err, &conflict) {
			logger.Info("Namespace exists and is not careplane's; not adopting it", "namespace", conflict.name)
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		return ctrl.Result{}, err
	}

	if revErr == nil && d.Course == fence.CourseRestore {
		// Services with volumes come back from a recovery point; none
		// usable blocks the restore.
		if err := r.chooseRecoveryPoint(ctx, s); err != nil {
			var noPoint *recovery.NoPointError
			if !errors.As(err, &noPoint) {
				return ctrl.Result{}, err
			}
			revErr = err
		}
	}
	var errs []error
	var verified chan verification
	switch {
	case d.Course == fence.CourseFence:
		if !fencedFirst {
			if err := r.reconcileFence(ctx, s, d.Source, true); err != nil {
				return ctrl.Result{}, err
			}
		}
		// The verdict reads only the fenced namespace, which nothing
		// below changes: it is taken while the front switches.
		verified = make(chan verification, 1)
		go func() { verified <- r.verifyIsolation(ctx, s, s.names.Primary) }()
	case d.Course == fence.CourseRestore && revErr != nil:
		// Bad input: say so and wait for the spec to change; the fence stays.
		s.restoreErr = revErr
		r.Recorder.Eventf(env, nil, corev1.EventTypeWarning, v1alpha1.ReasonRestoreBlocked, "Restore", "%s", revErr.Error())
		return ctrl.Result{}, nil
	case d.Course == fence.CourseRestore:
		done, err := r.reconcileRestore(ctx, s)
		var blocked *recovery.NoPointError
		if errors.As(err, &blocked) {
			s.restoreErr = err
			r.Recorder.Eventf(env, nil, corev1.EventTypeWarning, v1alpha1.ReasonRestoreBlocked, "Restore", "%s", err.Error())
			return ctrl.Result{}, nil
		}
		var conflict *incidentConflictError
		if errors.As(err, &conflict) {
			// The incident's write kept meeting newer state: look again
			// soon, as for a status write, without growing the queue's
			// backoff.
			logger.V(1).Info("Restore conflicted; looking again", "after", statusConflictRetry, "error", err.Error())
			return ctrl.Result{RequeueAfter: statusConflictRetry}, nil
		}
		if err != nil {
			return ctrl.Result{}, err
		}
		s.restored = done
		if done {
			if err := r.liftStandbyFreeze(ctx, s); err != nil {
				return ctrl.Result{}, err
			}
		}
	case revErr != nil:
		// Not fenced, and the revision the primary is to stay on is gone.
		return ctrl.Result{}, reconcile.TerminalError(revErr)
	default:
		if err := r.reconcileSite(ctx, s, v1alpha1.SitePrimary); err != nil {
			errs = append(errs, err)
		}
		if err := r.liftStandbyFreeze(ctx, s); err != nil {
			errs = append(errs, err)
		}
	}
	// Traffic moves before the standby changes: a failover switches only to
	// a standby already Ready, and a failback must leave a Cold standby
	// before it is scaled away.
	if err := r.decideTraffic(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.reconcileFront(ctx, s); err != nil {
		errs = append(errs, err)
	}
	for _, site := range s.sites() {
		if site == v1alpha1.SitePrimary {
			continue
		}
		if err := r.reconcileSite(ctx, s, site); err != nil {
			errs = append(errs, err)
		}
	}
	if s.adminFenceErr != nil { // the fence's admin-tier step, reported once the front is switched
		errs = append(errs, s.adminFenceErr)
	}
	if s.standbyErr != nil { // the standby's part, likewise
		errs = append(errs, s.standbyErr)
	}
	if err := kerrors.NewAggregate(errs); err != nil {
		s.applyFailed = err
		return ctrl.Result{}, err
	}

	switch {
	case d.Course == fence.CourseFence:
		s.fenceComplete = !s.standbyWaiting
		v := <-verified
		if v.err != nil {
			logger.Error(v.err, "Could not verify the fence")
		} else {
			s.verified, s.evidencePods = &v.result, v.evidence
		}
	case s.restored || s.liftedEarlier():
		if err := r.releaseFence(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
	}
	if err := r.reconcileRevisions(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	// A failover or failback threshold that only time will cross.
	return ctrl.Result{RequeueAfter: s.requeueWithin(s.decision.RequeueAfter)}, nil
}

// fenceRequestOf returns the FenceRequest holding env's fence, read through
// c, when env's spec does not say Fenced; nil without one.
func (r *HealthEnvironmentReconciler) fenceRequestOf(ctx context.Context, env *v1alpha1.HealthEnvironment, c client.Reader) (*v1alpha1.FenceRequest, error) {
	if env.Spec.Isolation.Mode == v1alpha1.IsolationFenced {
		return nil, nil
	}
	return fenceRequestHolding(ctx, c, env.Name)
}

// gatherFence reads the fence on record and decides what to do with it
// (fence.Decide), given heldBy, the request the cache says holds the
// environment. Before a fence on record is lifted or kept from a spec that
// says None, the API server is asked whether a request holds it: a request's
// record of the environments it holds and the fence it writes next arrive
// by different watches. It returns the request holding the fence, if any.
func (r *HealthEnvironmentReconciler) gatherFence(ctx context.Context, s *scope, heldBy *v1alpha1.FenceRequest) (fence.Decision, *v1alpha1.FenceRequest, error) {
	rec, err := r.readRecord(ctx, s)
	if err != nil {
		return fence.Decision{}, nil, err
	}
	s.record = rec
	specMode := s.env.Spec.Isolation.Mode
	if rec.Present() && heldBy == nil && specMode != v1alpha1.IsolationFenced && !s.liftUnchecked {
		if heldBy, err = r.fenceRequestOf(ctx, s.env, r.APIReader); err != nil {
			return fence.Decision{}, nil, err
		}
	}
	return decideFence(specMode, heldBy, rec), heldBy, nil
}

// decideFence gathers fence.Decide's input.
func decideFence(specMode v1alpha1.IsolationMode, heldBy *v1alpha1.FenceRequest, rec fence.Record) fence.Decision {
	in := fence.Input{SpecMode: specMode, Record: rec}
	if heldBy != nil {
		in.HeldBy = heldBy.Name
	}
	return fence.Decide(in)
}

// reconcileDelete lets the garbage collector remove an environment's
// children, unless the environment is fenced: then the fence and the
// evidence stay, and the finalizer holds the deletion, until a responder
// sets isolation.mode to None (the only restore a deleted environment gets).
// Either way its data and evidence stay in the primary namespace, kept out
// of the garbage collector's reach (retainData).
func (r *HealthEnvironmentReconciler) reconcileDelete(ctx context.Context, s *scope, source string) error {
	if s.course == fence.CourseFence {
		s.deletionBlocked = true
		// Finish the fence if it was interrupted: deletion never weakens it.
		if err := r.reconcileFence(ctx, s, source, false); err != nil {
			return err
		}
		if err := errors.Join(s.adminFenceErr, s.standbyErr); err != nil {
			return err
		}
		s.fenceComplete = !s.standbyWaiting
		v := r.verifyIsolation(ctx, s, s.names.Primary)
		if v.err == nil {
			s.verified, s.evidencePods = &v.result, v.evidence
		}
		return nil
	}
	if iso := s.isoStatus; s.record.Present() && iso != nil {
		// The spec no longer holds the ticket; the status still does.
		log.FromContext(ctx).Info("Releasing a fenced environment being deleted: isolation.mode is None", "ticket", iso.Ticket)
	}
	// Its data first: once the finalizers are gone, the garbage collector
	// takes the namespaces (the standby's, once unfrozen).
	if err := r.retainData(ctx, s); err != nil {
		return err
	}
	if err := r.liftStandbyFreeze(ctx, s); err != nil {
		return err
	}
	return r.removeFinalizer(ctx, s.env)
}

// writeIncident records the fence being lifted in status.incidents, with
// its Restored event, in a status write of its own before the lift removes
// the fence record: after that, nothing says what the fence was, and a
// lost status write (a conflict, a timeout, a crash) would lose the
// incident. A lift that runs again, its record's removal having failed,
// finds its incident there (fence.RecordIncident).
func (r *HealthEnvironmentReconciler) writeIncident(ctx context.Context, s *scope) error {
	env := s.env
	inc := s.incident()
	// Locked to the status this reconcile read, as writeStatus is: a cache
	// behind the last status write would drop what that write added.
	written, err := r.appendIncident(ctx, env.DeepCopy(), inc)
	if err == nil {
		if written != nil {
			// The server's status is this reconcile's, incident added.
			*env = *written
			s.status.Incidents = slices.Clone(env.Status.Incidents)
		}
		return nil
	}
	// A change of metadata by another writer (a GitOps tool's annotations)
	// conflicts too, and the fence stays until the incident is on record:
	// try again on a fresh read. The pass's own status write, on the
	// resourceVersion it read, then conflicts, and the next pass writes
	// the status from fresh state.
	for try := 0; apierrors.IsConflict(err) && try < incidentRetries; try++ {
		fresh := &v1alpha1.HealthEnvironment{}
		if err = r.APIReader.Get(ctx, client.ObjectKeyFromObject(env), fresh); err == nil {
			_, err = r.appendIncident(ctx, fresh, inc)
		}
	}
	if apierrors.IsConflict(err) {
		return &incidentConflictError{fmt.Errorf("recording the incident of %s: %w", klog.KObj(env), err)}
	}
	if err != nil {
		return fmt.Errorf("recording the incident of %s: %w", klog.KObj(env), err)
	}
	return nil
}

// incidentConflictError is an incident's write that still conflicted after
// its fresh reads (writeIncident); no other conflict of a restore is one.
type incidentConflictError struct{ error }

func (e *incidentConflictError) Unwrap() error { return e.error }

// appendIncident appends inc to env's status.incidents, unless it is there
// already, with a status write locked to env's resourceVersion, and records
// the Restored event. It returns env as written, or nil when inc was there.
func (r *HealthEnvironmentReconciler) appendIncident(ctx context.Context, env *v1alpha1.HealthEnvironment, inc v1alpha1.Incident) (*v1alpha1.HealthEnvironment, error) {
	incidents, added := fence.RecordIncident(env.Status.Incidents, inc, maxIncidents)
	if !added {
		return nil, nil
	}
	patch := client.MergeFromWithOptions(env.DeepCopy(), client.MergeFromWithOptimisticLock{})
	env.Status.Incidents = incidents
	if err := r.Client.Status().Patch(ctx, env, patch); err != nil {
		return nil, err
	}
	r.Recorder.Eventf(env, nil, corev1.EventTypeNormal, "Restored", "Restore", "%s", restoredNote(inc))
	log.FromContext(ctx).Info("Restored the environment", "ticket", inc.Ticket, "restoredFrom", inc.RestoredFrom,
		"fencedBy", inc.FencedBy, "restoredBy", inc.RestoredBy, "recoveryPoint", inc.RecoveryPoint, "dataLost", dataLostOf(inc))
	return env, nil
}

// incidentRetries bounds the fresh reads of an incident's write that
// conflicted; then the pass looks again soon (statusConflictRetry).
const incidentRetries = 5

// incident is the fence on record, from its start to its restore now.
func (s *scope) incident() v1alpha1.Incident {
	inc := v1alpha1.Incident{RestoredAt: &metav1.Time{Time: s.now}, RestoredFrom: s.primaryFrom,
		RestoredBy: s.env.Annotations[v1alpha1.AnnotationIsolationBy], RestoreID: s.record.RestoreID}
	if iso := s.isoStatus; iso != nil {
		inc.Ticket, inc.Reason, inc.FencedAt, inc.FencedBy = iso.Ticket, iso.Reason, iso.FencedAt, iso.FencedBy
	}
	// The record is the fence's own account of its start.
	if t, ok := s.record.Began(); ok {
		inc.FencedAt = &metav1.Time{Time: t}
	}
	if c := s.restorePoint; c != nil {
		inc.RecoveryPoint, inc.RecoveryPointTakenAt = c.Point.Name, c.Point.TakenAt.DeepCopy()
		inc.DataLost = &metav1.Duration{Duration: c.DataLost}
	}
	return inc
}

// restoredNote is the Restored event's note for inc.
func restoredNote(inc v1alpha1.Incident) string {
	note := fmt.Sprintf("Restored from %s with new credentials; incident %s recorded", inc.RestoredFrom, inc.Ticket)
	if inc.RestoredBy != "" {
		note += "; restore asked for by " + inc.RestoredBy
	}
	return note
}

// dataLostOf is an incident's data time lost for a log line, or "".
func dataLostOf(inc v1alpha1.Incident) string {
	if inc.DataLost == nil {
		return ""
	}
	return inc.DataLost.Duration.String()
}

// maxIncidents bounds status.incidents.
const maxIncidents = 20

// fenceFinalizer holds the deletion of a fenced environment, whose
// namespaces hold the fence and the evidence.
const fenceFinalizer = "careplane.io/fence"

func (r *HealthEnvironmentReconciler) ensureFinalizer(ctx context.Context, env *v1alpha1.HealthEnvironment) error {
	if err := r.writeFinalizer(ctx, env, fenceFinalizer, true); err != nil {
		return fmt.Errorf("adding the fence finalizer to %s: %w", klog.KObj(env), err)
	}
	return nil
}

// releaseFence takes the fence finalizer off an environment whose fence
// has lifted, and puts the data finalizer on in the same write when the
// environment still has data or evidence to keep (keepsData, as
// ensureDataFinalizer): it is never held by neither, and a restore costs one write of the
// environment, not two.
func (r *HealthEnvironmentReconciler) releaseFence(ctx context.Context, s *scope) error {
	var add []string
	if s.keepsData() {
		add = []string{dataFinalizer}
	}
	if err := r.writeFinalizers(ctx, s.env, add, []string{fenceFinalizer}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("releasing %s from the fence finalizer: %w", klog.KObj(s.env), err)
	}
	return nil
}

func (r *HealthEnvironmentReconciler) removeFinalizer(ctx context.Context, env *v1alpha1.HealthEnvironment) error {
	if err := r.writeFinalizer(ctx, env, fenceFinalizer, false); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing the fence finalizer from %s: %w", klog.KObj(env), err)
	}
	return nil
}

// writeFinalizer adds (want) or removes finalizer name on env
// (writeFinalizers).
func (r *HealthEnvironmentReconciler) writeFinalizer(ctx context.Context, env *v1alpha1.HealthEnvironment, name string, want bool) error {
	if want {
		return r.writeFinalizers(ctx, env, []string{name}, nil)
	}
	return r.writeFinalizers(ctx, env, nil, []string{name})
}

// writeFinalizers adds the finalizers add and removes the finalizers remove
// on env, in one write, when they are not so already. The answer is the
// server's whole object: env takes its finalizers, and its resourceVersion
// only while the server's status is still the one env was read with. The
// pass's status write is locked to the status it read (writeStatus): a
// newer one, another writer's or one this pass wrote on a fresh read
// (writeIncident), must make it conflict, not be overwritten.
func (r *HealthEnvironmentReconciler) writeFinalizers(ctx context.Context, env *v1alpha1.HealthEnvironment, add, remove []string) error {
	written := env.DeepCopy()
	for _, name := range add {
		controllerutil.AddFinalizer(written, name)
	}
	for _, name := range remove {
		controllerutil.RemoveFinalizer(written, name)
	}
	if slices.Equal(written.Finalizers, env.Finalizers) {
		return nil
	}
	patch := client.MergeFrom(env.DeepCopy())
	if err := r.Client.Patch(ctx, written, patch, client.FieldOwner(fieldOwner)); err != nil {
		return err
	}
	env.Finalizers = written.Finalizers
	if equality.Semantic.DeepEqual(written.Status, env.Status) {
		env.ResourceVersion = written.ResourceVersion
	}
	return nil
}

// writeStatus patches the status when it changed, and records the events of
// the transitions it shows.
func (r *HealthEnvironmentReconciler) writeStatus(ctx context.Context, env *v1alpha1.HealthEnvironment, before *v1alpha1.HealthEnvironmentStatus, s *scope) error {
	if equality.Semantic.DeepEqual(before, s.status) {
		return nil
	}
	// With the resourceVersion this reconcile read (and its own writes
	// since): a status computed from a cache behind the last status write
	// would overwrite it, a newer incident or count included, and record
	// its transitions twice. Such a write fails, and the reconcile runs
	// again on fresh state.
	patch := client.MergeFromWithOptions(env.DeepCopy(), client.MergeFromWithOptimisticLock{})
	env.Status = *s.status
	if err := r.Client.Status().Patch(ctx, env, patch); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("updating status of %s: %w", klog.KObj(env), err)
	}
	if c := findCondition(s.status.Conditions, v1alpha1.ConditionFenced); c != nil && c.Status == metav1.ConditionTrue &&
		c.Reason == v1alpha1.ReasonFenceComplete && s.status.Isolation != nil && s.status.Isolation.FencedAt != nil {
		if b := findCondition(before.Conditions, v1alpha1.ConditionFenced); b == nil || b.Reason != v1alpha1.ReasonFenceComplete {
			fenceDuration.Observe(r.Clock.Since(s.status.Isolation.FencedAt.Time).Seconds())
		}
	}
	for _, e := range transitions(before, s.status) {
		r.Recorder.Eventf(env, nil, e.eventType, e.reason, e.action, "%s", e.note)
	}
	countTransitions(before, s.status)
	return nil
}

// SetupWithManager registers the reconciler and what it watches: the
// environments, every child they own, and their pods (for readiness and the
// front EndpointSlices).
func (r *HealthEnvironmentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	// The environments' state as metrics, read from this manager's cache.
	if err := registerStateMetrics(mgr); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Our own status writes do not change the generation; they need no
		// reconcile. The periodic resync does (see resynced), and so does a
		// newer clean recovery point for a standby to be seeded from.
		For(&v1alpha1.HealthEnvironment{}, builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, resynced, newCleanPoint))).
		Owns(&corev1.Namespace{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&corev1.Service{}, builder.OnlyMetadata). // read as metadata only: see servicesMetadata
		Owns(&corev1.Secret{}).
		Owns(&corev1.ResourceQuota{}).
		Owns(&corev1.LimitRange{}).
		Owns(&appsv1.Deployment{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&appsv1.ControllerRevision{}).
		Watches(&networkingv1.NetworkPolicy{}, handler.EnqueueRequestsFromMapFunc(r.environmentOfNamespace)).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&discoveryv1.EndpointSlice{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(environmentOfLabels)).
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(environmentOfLabels)).
		Watches(&v1alpha1.FenceRequest{}, environmentsHeld).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1)}).
		Named("healthenvironment").
		Complete(r)
}

// environmentOfNamespace maps an object to the environment whose namespace
// holds it, whoever created the object.
func (r *HealthEnvironmentReconciler) environmentOfNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	if name := o.GetLabels()[v1alpha1.LabelEnvironment]; name != "" {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: name}}}
	}
	ns := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: o.GetNamespace()}, ns); err != nil {
		return nil // not one of careplane's namespaces (they are the ones cached)
	}
	return environmentOfLabels(ctx, ns)
}

// environmentOfLabels maps an object labelled with an environment to it.
func environmentOfLabels(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[v1alpha1.LabelEnvironment]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: name}}}
}
