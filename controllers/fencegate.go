package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	crevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// FenceGate is the fence's fast path: the first, fail-closed step of a fence
// (closing the window: the record that freezes the primary namespace, the
// deny-all policy and the fence quota, fenceWriter.closeWindow) taken on its
// own queue, by its own workers, with its own client-side rate limit.
//
// The HealthEnvironment reconciler fences too, and does all of it; but one
// fence there is a sequence of some twenty writes, queued with every other
// environment's work. When a whole fleet is fenced at once, or a fence
// arrives during a resync of hundreds of healthy environments, the deny
// policy of the last environment would wait for every fence (or resync)
// ahead of it. The gate's queue holds only environments whose spec says
// Fenced and whose deny policy is missing, and each item is one write, so
// every deny policy of the fleet exists before any fence's slower steps
// finish: fail closed across the fleet first.
//
// The gate keeps the fence ID of a fence on record, and writes only into a
// namespace careplane made for that environment.
type FenceGate struct {
	// Client reads from the manager's cache and writes with the gate's own
	// rate limit.
	Client client.Client
	// Live reads from the API server, with the same rate limit.
	Live client.Reader
	// Clock is the time source of fence IDs; the reconciler's.
	Clock clock.PassiveClock
	// Workers is how many environments the gate handles at once.
	Workers int
	// FleetFence, when set, is told of every fence request the gate sees.
	FleetFence *FleetFence
}

// Reconcile closes the window of a fenced environment, and does nothing
// else.
func (g *FenceGate) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	env := &v1alpha1.HealthEnvironment{}
	if err := g.Client.Get(ctx, req.NamespacedName, env); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if env.Spec.Isolation.Mode != v1alpha1.IsolationFenced {
		return ctrl.Result{}, nil
	}
	w := fenceWriter{c: g.Client, live: g.Live}
	if closed, err := w.windowClosed(ctx, env); err == nil && closed {
		// Closed already (a FenceRequest closed it, or this is a second
		// look): the record's hand-over to the spec is the reconciler's,
		// and two writers of it only race.
		return ctrl.Result{}, nil
	}
	if _, _, err := w.closeWindow(ctx, env, cachedRecord(ctx, g.Client, env).Over(fence.SourceSpec, g.Clock.Now())); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// primaryIsOurs says whether env's primary namespace exists, made by
// careplane for env, and is not being deleted: the only namespace a deny
// policy is written into outside a full reconcile.
func primaryIsOurs(ctx context.Context, c client.Client, env *v1alpha1.HealthEnvironment) (bool, error) {
	nsObj := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: build.SiteNamespace(env, v1alpha1.SitePrimary)}, nsObj); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return metav1.IsControlledBy(nsObj, env) && nsObj.DeletionTimestamp.IsZero(), nil
}

// fencedSpec passes environments whose spec asks for a fence.
var fencedSpec = predicate.NewPredicateFuncs(func(o client.Object) bool {
	env, ok := o.(*v1alpha1.HealthEnvironment)
	return ok && env.Spec.Isolation.Mode == v1alpha1.IsolationFenced
})

// isFencePolicy passes careplane's fence policies.
var isFencePolicy = predicate.NewPredicateFuncs(func(o client.Object) bool {
	return o.GetName() == build.FencePolicyName && o.GetLabels()[v1alpha1.LabelEnvironment] != ""
})

// isFenceQuota passes careplane's fence quotas.
var isFenceQuota = predicate.NewPredicateFuncs(func(o client.Object) bool {
	return o.GetName() == build.FenceQuotaName && o.GetLabels()[v1alpha1.LabelEnvironment] != ""
})

// SetupWithManager registers the gate: environments that ask for a fence,
// deleted fence policies (a deny policy removed by hand comes back at once,
// not after the reconciler's queue), and changed or deleted fence quotas
// (they have no owner, so nothing else is told of them).
func (g *FenceGate) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.HealthEnvironment{}, builder.WithPredicates(fencedSpec, predicate.GenerationChangedPredicate{}, g.FleetFence.observing())).
		Watches(&networkingv1.NetworkPolicy{}, handler.EnqueueRequestsFromMapFunc(environmentOfLabels),
			builder.WithPredicates(isFencePolicy, predicate.Funcs{
				CreateFunc: func(crevent.CreateEvent) bool { return false },
				UpdateFunc: func(crevent.UpdateEvent) bool { return false },
			})).
		Watches(&corev1.ResourceQuota{}, handler.EnqueueRequestsFromMapFunc(environmentOfLabels),
			builder.WithPredicates(isFenceQuota, predicate.Funcs{
				CreateFunc: func(crevent.CreateEvent) bool { return false },
			})).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(g.Workers, 1)}).
		Named("fencegate").
		Complete(g)
}
