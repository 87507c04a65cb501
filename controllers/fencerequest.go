package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	crevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// FenceRequestReconciler carries out FenceRequests: the fleet fence as one
// object. It matches the selector once and records the environments (the
// commit point: from then on every one of them is fenced, by the request
// until its own spec says Fenced), then writes every deny-all policy at
// once, as the fence gate does for one environment. The rest of each fence
// is the HealthEnvironment reconciler's, which reads a held environment's
// isolation from the request (fenceRequestHolding).
//
// Why an object: fencing N environments through their specs is N writes of
// a HealthEnvironment, each ~10 ms of API server CPU (server-side apply, the
// CRD's schema and CEL rules, the isolation guard) before its deny policy
// can be written; at N=500 on two cores the last deny policy came 13.8 s
// after the first request. Here the deny policies come first and alone.
type FenceRequestReconciler struct {
	// Client reads from the manager's cache; the windows are closed
	// through it (the fence gate's client: its own rate limit).
	Client client.Client
	// Live reads from the API server (the fence gate's live reader).
	Live client.Reader
	// Clock is the time source of match times and fence IDs; the
	// reconciler's.
	Clock clock.PassiveClock
	// Parallel is how many deny policies are written at once.
	Parallel int
}

// DefaultFenceRequestParallel is how many deny policies a FenceRequest
// writes at once: the API floor's fleet baseline writes 64 at a time.
const DefaultFenceRequestParallel = 64

// fenceRequestFinalizer holds a FenceRequest's deletion while it holds any
// environment's fence: deleting a request must never lift a fence.
const fenceRequestFinalizer = "careplane.io/fence-request"

// +kubebuilder:rbac:groups=careplane.io,resources=fencerequests,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=careplane.io,resources=fencerequests/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=careplane.io,resources=fencerequests/finalizers,verbs=update

// Reconcile matches a new request, writes the deny policies of the
// environments it holds, and reports which of them it still holds.
func (r *FenceRequestReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	fr := &v1alpha1.FenceRequest{}
	if err := r.Client.Get(ctx, req.NamespacedName, fr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if fr.Status.MatchedAt == nil {
		if !fr.DeletionTimestamp.IsZero() {
			// Deleted before it matched anything: it holds nothing.
			return ctrl.Result{}, r.removeFinalizer(ctx, fr)
		}
		if err := r.match(ctx, fr); err != nil {
			return ctrl.Result{}, err
		}
	}

	before := fr.Status.DeepCopy()
	st := &fr.Status
	got, err := r.closeWindows(ctx, fr)
	st.DenyPolicies = got.closed
	holding := r.stillHeld(ctx, fr, got.handedOver)
	st.Holding, st.HoldingCount = holding, int32(len(holding))
	st.ObservedGeneration = fr.Generation
	setRequestConditions(fr, got)
	if !equality.Semantic.DeepEqual(before, st) {
		if uerr := r.Client.Status().Update(ctx, fr); uerr != nil {
			return ctrl.Result{}, errors.Join(err, fmt.Errorf("updating the status of FenceRequest %s: %w", fr.Name, uerr))
		}
	}
	if got.closed > before.DenyPolicies {
		log.FromContext(ctx).Info("Deny policies in place", "inPlace", got.closed, "environments", st.Matched)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(holding) == 0 {
		return ctrl.Result{}, r.removeFinalizer(ctx, fr)
	}
	if got.closed+got.gone < st.Matched {
		// An environment not yet built has no namespace to write into:
		// its own reconcile fences it as it builds it. Look again soon.
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	return ctrl.Result{}, nil
}

// match records the environments the selector matches, after the finalizer
// that keeps the request while it holds them. Nothing is fenced before the
// record is written: a deny policy with no spec and no request behind it
// would read as a fence to lift.
func (r *FenceRequestReconciler) match(ctx context.Context, fr *v1alpha1.FenceRequest) error {
	if !controllerutil.ContainsFinalizer(fr, fenceRequestFinalizer) {
		patch := client.MergeFromWithOptions(fr.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(fr, fenceRequestFinalizer)
		if err := r.Client.Patch(ctx, fr, patch, client.FieldOwner(fieldOwner)); err != nil {
			return fmt.Errorf("adding the finalizer to FenceRequest %s: %w", fr.Name, err)
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(fr.Spec.Selector.ToMeta())
	if err != nil {
		// The schema validates the selector; this is a bug or a skew.
		return reconcile.TerminalError(fmt.Errorf("selector of FenceRequest %s: %w", fr.Name, err))
	}
	var list v1alpha1.HealthEnvironmentList
	if err := r.Client.List(ctx, &list, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return fmt.Errorf("listing the HealthEnvironments of FenceRequest %s: %w", fr.Name, err)
	}
	st := &fr.Status
	st.MatchedAt = &metav1.Time{Time: r.Clock.Now()}
	st.Environments, st.Holding = nil, nil
	for i := range list.Items {
		env := &list.Items[i]
		st.Environments = append(st.Environments, env.Name)
		if env.Spec.Isolation.Mode != v1alpha1.IsolationFenced {
			st.Holding = append(st.Holding, env.Name)
		}
	}
	slices.Sort(st.Environments)
	slices.Sort(st.Holding)
	st.Matched, st.HoldingCount = int32(len(st.Environments)), int32(len(st.Holding))
	st.ObservedGeneration = fr.Generation
	setRequestConditions(fr, windows{})
	// An update, not a patch: with the resourceVersion, two workers (or an
	// old leader) cannot both match.
	if err := r.Client.Status().Update(ctx, fr); err != nil {
		return fmt.Errorf("recording the environments of FenceRequest %s: %w", fr.Name, err)
	}
	log.FromContext(ctx).Info("Fence request matched", "environments", st.Matched, "holding", st.HoldingCount,
		"reason", fr.Spec.Reason, "ticket", fr.Spec.Ticket)
	return nil
}

// windows is what closeWindows found: matched environments whose window is
// closed, deleted since, and not yet built (no namespace of careplane's to
// write into: each is fenced as it is built).
type windows struct {
	closed, gone, unbuilt int32
	// handedOver are the held environments whose record says the request
	// handed their fence over to the spec.
	handedOver []string
}

// closeWindows closes the window of every environment the request holds,
// Parallel at a time, in two sweeps: first every deny policy (the traffic
// cut, fleet-wide before anything else), then every record and quota. It
// writes as the fence gate does (fenceWriter), only into a namespace
// careplane made. An environment whose own spec holds its fence is the
// gate's, and is counted once its window is closed.
func (r *FenceRequestReconciler) closeWindows(ctx context.Context, fr *v1alpha1.FenceRequest) (windows, error) {
	var (
		got  windows
		mu   sync.Mutex
		errs []error
	)
	w := fenceWriter{c: r.Client, live: r.Live}
	type held struct {
		env *v1alpha1.HealthEnvironment
		ns  *corev1.Namespace
		rec fence.Record
	}
	var todo []held
	for _, name := range fr.Status.Environments {
		env := &v1alpha1.HealthEnvironment{}
		if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			if apierrors.IsNotFound(err) {
				got.gone++ // deleted since: it needs no deny policy
				continue
			}
			errs = append(errs, err)
			continue
		}
		if !fr.Holds(name) {
			// Its own spec's fence: the gate closes its window.
			ok, err := w.windowClosed(ctx, env)
			got.closed += count(ok)
			errs = append(errs, err)
			continue
		}
		ns, err := w.primary(ctx, env)
		switch {
		case err != nil:
			errs = append(errs, err)
			continue
		case ns == nil:
			got.unbuilt++
			continue
		}
		rec := fence.RecordOf(ns)
		if rec.HandedOverBy(fr.Name) {
			// Handed over, and the reconciler has recorded it: the
			// request lets go (stillHeld), and only then may a
			// responder's None lift the fence (fence.Decide).
			got.handedOver = append(got.handedOver, name)
			ok, err := w.windowClosed(ctx, env)
			got.closed += count(ok)
			errs = append(errs, err)
			continue
		}
		// Otherwise the request writes its own record: over none, over
		// its own, or over the spec's (a restore under way is cancelled).
		// The window's objects read nothing of the request's isolation
		// (the deny policy's exception is the spec's forensicsFrom).
		todo = append(todo, held{env: env, ns: ns, rec: rec.Over(fence.RequestSource(fr.Name), r.Clock.Now())})
	}
	failed := make([]bool, len(todo))
	sweep := func(write func(h held) error) {
		parallel(len(todo), max(r.Parallel, 1), func(i int) {
			if failed[i] {
				return
			}
			if err := write(todo[i]); err != nil {
				mu.Lock()
				defer mu.Unlock()
				failed[i] = true
				errs = append(errs, err)
			}
		})
	}
	sweep(func(h held) error { return w.cut(ctx, h.env) })
	sweep(func(h held) error { _, err := w.freeze(ctx, h.env, h.ns, h.rec); return err })
	for _, f := range failed {
		got.closed += count(!f)
	}
	return got, errors.Join(errs...)
}

func count(ok bool) int32 {
	if ok {
		return 1
	}
	return 0
}

// stillHeld is the part of status.holding whose environments exist, do not
// yet say Fenced in their own spec, and whose fence was not handed over to
// the spec. The hand-over on record is what counts: a responder may restore
// an environment before this request ever reads its spec saying Fenced.
func (r *FenceRequestReconciler) stillHeld(ctx context.Context, fr *v1alpha1.FenceRequest, handedOver []string) []string {
	var held []string
	for _, name := range fr.Status.Holding {
		if slices.Contains(handedOver, name) {
			continue
		}
		env := &v1alpha1.HealthEnvironment{}
		err := r.Client.Get(ctx, client.ObjectKey{Name: name}, env)
		if apierrors.IsNotFound(err) || (err == nil && env.Spec.Isolation.Mode == v1alpha1.IsolationFenced) {
			continue
		}
		held = append(held, name) // and on a read error: fail closed
	}
	return held
}

// setRequestConditions sets the conditions status says, with got what the
// last closeWindows found.
func setRequestConditions(fr *v1alpha1.FenceRequest, got windows) {
	st, gen := &fr.Status, fr.Generation
	if st.Matched == 0 {
		setCondition(&st.Conditions, gen, v1alpha1.ConditionMatched, metav1.ConditionFalse, v1alpha1.ReasonNoEnvironments,
			"The selector matched no HealthEnvironment: nothing was fenced")
		setCondition(&st.Conditions, gen, v1alpha1.ConditionDenyPoliciesInPlace, metav1.ConditionTrue, v1alpha1.ReasonNoEnvironments,
			"There is no environment to fence")
		setCondition(&st.Conditions, gen, v1alpha1.ConditionComplete, metav1.ConditionTrue, v1alpha1.ReasonNoEnvironments,
			"There is no environment to fence")
		return
	}
	setCondition(&st.Conditions, gen, v1alpha1.ConditionMatched, metav1.ConditionTrue, v1alpha1.ReasonSelectorMatched,
		fmt.Sprintf("The selector matched %d environments at %s; they are this request's whatever their labels become",
			st.Matched, st.MatchedAt.UTC().Format(time.RFC3339)))
	switch {
	case st.DenyPolicies+got.gone >= st.Matched:
		setCondition(&st.Conditions, gen, v1alpha1.ConditionDenyPoliciesInPlace, metav1.ConditionTrue, v1alpha1.ReasonDenyPoliciesWritten,
			fmt.Sprintf("Every one of the %d environments has its deny-all policy%s", st.Matched, deletedSince(got.gone)))
	case st.MatchedAt != nil && got.unbuilt > 0 && st.DenyPolicies+got.gone+got.unbuilt >= st.Matched:
		setCondition(&st.Conditions, gen, v1alpha1.ConditionDenyPoliciesInPlace, metav1.ConditionFalse, v1alpha1.ReasonAwaitingEnvironments,
			fmt.Sprintf("%d of %d environments have their deny-all policy; the other %d are not built yet, and each is fenced as it is built",
				st.DenyPolicies, st.Matched, got.unbuilt))
	default:
		setCondition(&st.Conditions, gen, v1alpha1.ConditionDenyPoliciesInPlace, metav1.ConditionFalse, v1alpha1.ReasonWritingDenyPolicies,
			fmt.Sprintf("%d of %d environments have their deny-all policy", st.DenyPolicies, st.Matched))
	}
	if st.HoldingCount == 0 {
		setCondition(&st.Conditions, gen, v1alpha1.ConditionComplete, metav1.ConditionTrue, v1alpha1.ReasonHandedOver,
			"Every environment's own spec.isolation holds its fence (or the environment is gone); the request holds none")
	} else {
		setCondition(&st.Conditions, gen, v1alpha1.ConditionComplete, metav1.ConditionFalse, v1alpha1.ReasonHolding,
			fmt.Sprintf("%d environments are fenced by this request until their spec.isolation says Fenced "+
				"(kubectl careplane fence --selector writes it); the request cannot be deleted until then", st.HoldingCount))
	}
}

func deletedSince(gone int32) string {
	if gone == 0 {
		return ""
	}
	return fmt.Sprintf(" but the %d deleted since", gone)
}

func (r *FenceRequestReconciler) removeFinalizer(ctx context.Context, fr *v1alpha1.FenceRequest) error {
	if !controllerutil.ContainsFinalizer(fr, fenceRequestFinalizer) {
		return nil
	}
	patch := client.MergeFromWithOptions(fr.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(fr, fenceRequestFinalizer)
	if err := r.Client.Patch(ctx, fr, patch, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing the finalizer of FenceRequest %s: %w", fr.Name, err)
	}
	return nil
}

// fenceRequestHolding returns the request that holds the fence of the
// environment named name, the oldest if several do, or nil. It runs on every
// reconcile of an environment whose spec does not say Fenced, and requests
// stay after they complete, each with its list of environments: the cache's
// objects are read in place, not copied, and never changed.
func fenceRequestHolding(ctx context.Context, c client.Reader, name string) (*v1alpha1.FenceRequest, error) {
	var list v1alpha1.FenceRequestList
	if err := c.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing FenceRequests: %w", err)
	}
	return v1alpha1.HoldingRequest(list.Items, name), nil
}

// requestsHolding maps an environment to the requests that hold it.
func (r *FenceRequestReconciler) requestsHolding(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.FenceRequestList
	if err := r.Client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "Listing FenceRequests", "environment", klog.KObj(o))
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if list.Items[i].Holds(o.GetName()) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKey{Name: list.Items[i].Name}})
		}
	}
	return reqs
}

// requestsHoldingNamespace maps a primary Namespace to the requests that
// hold its environment.
func (r *FenceRequestReconciler) requestsHoldingNamespace(ctx context.Context, o client.Object) []reconcile.Request {
	env := o.GetLabels()[v1alpha1.LabelEnvironment]
	if env == "" || o.GetName() != env+build.PrimarySuffix {
		return nil
	}
	return r.requestsHolding(ctx, &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: env}})
}

// SetupWithManager registers the reconciler: the requests, the environments
// they hold whose spec now says Fenced, and the primary Namespaces whose
// record now says a fence was handed over.
func (r *FenceRequestReconciler) SetupWithManager(mgr ctrl.Manager) error {
	recordHandedOver := predicate.Funcs{
		CreateFunc: func(crevent.CreateEvent) bool { return false },
		UpdateFunc: func(e crevent.UpdateEvent) bool {
			after := fence.RecordOf(e.ObjectNew)
			return after.HandedOverFrom != "" && after != fence.RecordOf(e.ObjectOld)
		},
		DeleteFunc:  func(crevent.DeleteEvent) bool { return false },
		GenericFunc: func(crevent.GenericEvent) bool { return false },
	}
	handedOver := predicate.Funcs{
		CreateFunc: func(crevent.CreateEvent) bool { return false },
		UpdateFunc: func(e crevent.UpdateEvent) bool {
			env, ok := e.ObjectNew.(*v1alpha1.HealthEnvironment)
			return ok && env.Spec.Isolation.Mode == v1alpha1.IsolationFenced
		},
		GenericFunc: func(crevent.GenericEvent) bool { return false },
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.FenceRequest{}).
		Watches(&v1alpha1.HealthEnvironment{}, handler.EnqueueRequestsFromMapFunc(r.requestsHolding),
			builder.WithPredicates(handedOver, predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.requestsHoldingNamespace),
			builder.WithPredicates(recordHandedOver)).
		Named("fencerequest").
		Complete(r)
}

// environmentsHeld enqueues the environments a FenceRequest holds, and on an
// update those it held before: one it let go of may now lift its fence.
var environmentsHeld = handler.TypedFuncs[client.Object, reconcile.Request]{
	CreateFunc: func(_ context.Context, e crevent.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		enqueueHeld(q, e.Object)
	},
	UpdateFunc: func(_ context.Context, e crevent.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		enqueueHeld(q, e.ObjectOld, e.ObjectNew)
	},
	DeleteFunc: func(_ context.Context, e crevent.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		enqueueHeld(q, e.Object)
	},
	GenericFunc: func(_ context.Context, e crevent.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		enqueueHeld(q, e.Object)
	},
}

func enqueueHeld(q workqueue.TypedRateLimitingInterface[reconcile.Request], objs ...client.Object) {
	for _, o := range objs {
		if fr, ok := o.(*v1alpha1.FenceRequest); ok {
			for _, name := range fr.Status.Holding {
				q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: name}})
			}
		}
	}
}
