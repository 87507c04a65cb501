// Package controllers holds careplane's reconcilers: the only code that talks
// to the API server. Desired objects and decisions come from the pure
// packages under internal/.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/ssa"
)

// conflictRetry is how often an environment blocked by a namespace careplane
// does not own is looked at again: the foreign namespace's deletion is not an
// event careplane watches (it caches only what it owns).
const conflictRetry = 30 * time.Second

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
}

// SecretGenerator returns a new random credential.
type SecretGenerator func() ([]byte, error)

// +kubebuilder:rbac:groups=careplane.io,resources=healthenvironments,verbs=get;list;watch
// +kubebuilder:rbac:groups=careplane.io,resources=healthenvironments/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=careplane.io,resources=healthenvironments/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=serviceaccounts;services;secrets;resourcequotas;limitranges,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments;controllerrevisions,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one HealthEnvironment's children to the desired state and
// reports what it found in the status.
func (r *HealthEnvironmentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, reterr error) {
	logger := log.FromContext(ctx)

	env := &v1alpha1.HealthEnvironment{}
	if err := r.Client.Get(ctx, req.NamespacedName, env); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !env.DeletionTimestamp.IsZero() {
		// Every child carries an owner reference; the garbage collector
		// removes them. Nothing to do, and nothing to write.
		return ctrl.Result{}, nil
	}

	s := newScope(env, r.Clock.Now())
	before := env.Status.DeepCopy()
	defer func() {
		if reterr == nil {
			s.status.ObservedGeneration = env.Generation
		}
		s.finish(reterr)
		if err := r.writeStatus(ctx, env, before, s); err != nil {
			reterr = kerrors.NewAggregate([]error{reterr, err})
		}
	}()

	if err := r.reconcileNamespaces(ctx, s); err != nil {
		var conflict *namespaceConflictError
		if errors.As(err, &conflict) {
			logger.Info("Namespace exists and is not careplane's; not adopting it", "namespace", conflict.name)
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		return ctrl.Result{}, err
	}

	var errs []error
	for _, site := range s.sites() {
		if err := r.reconcileSite(ctx, s, site); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.reconcileFront(ctx, s); err != nil {
		errs = append(errs, err)
	}
	if err := kerrors.NewAggregate(errs); err != nil {
		s.applyFailed = err
		return ctrl.Result{}, err
	}
	if err := r.reconcileRevisions(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// writeStatus patches the status when it changed, and records the events of
// the transitions it shows.
func (r *HealthEnvironmentReconciler) writeStatus(ctx context.Context, env *v1alpha1.HealthEnvironment, before *v1alpha1.HealthEnvironmentStatus, s *scope) error {
	if equality.Semantic.DeepEqual(before, s.status) {
		return nil
	}
	patch := client.MergeFrom(env.DeepCopy())
	env.Status = *s.status
	if err := r.Client.Status().Patch(ctx, env, patch); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("updating status of %s: %w", klog.KObj(env), err)
	}
	for _, e := range transitions(before, s.status) {
		r.Recorder.Eventf(env, nil, e.eventType, e.reason, e.action, "%s", e.note)
	}
	return nil
}

// SetupWithManager registers the reconciler and what it watches: the
// environments, every child they own, and their pods (for readiness and the
// front EndpointSlices).
func (r *HealthEnvironmentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		// Our own status writes do not change the generation; they need no
		// reconcile.
		For(&v1alpha1.HealthEnvironment{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&corev1.Namespace{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.Secret{}).
		Owns(&corev1.ResourceQuota{}).
		Owns(&corev1.LimitRange{}).
		Owns(&appsv1.Deployment{}).
		Owns(&appsv1.ControllerRevision{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&discoveryv1.EndpointSlice{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(environmentOfLabels)).
		Named("healthenvironment").
		Complete(r)
}

// environmentOfLabels maps an object labelled with an environment to it.
func environmentOfLabels(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[v1alpha1.LabelEnvironment]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: name}}}
}
