package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	crevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// FenceGate is the fence's fast path: the first, fail-closed step of a fence
// (the deny-all policy in the primary namespace) taken on its own queue, by
// its own workers, with its own client-side rate limit.
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
// The gate never changes a policy that exists (it creates, it does not
// apply): the fence ID of a fence under way is the reconciler's to keep.
// It writes only into a namespace careplane owns for that environment.
type FenceGate struct {
	// Client reads from the manager's cache and writes with the gate's own
	// rate limit.
	Client client.Client
	// Now is the time source of fence IDs.
	Now func() time.Time
	// Workers is how many environments the gate handles at once.
	Workers int
	// FleetFence, when set, is told of every fence request the gate sees.
	FleetFence *FleetFence
}

// Reconcile writes the deny policy of a fenced environment when it is
// missing, and nothing else.
func (g *FenceGate) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	env := &v1alpha1.HealthEnvironment{}
	if err := g.Client.Get(ctx, req.NamespacedName, env); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if env.Spec.Isolation.Mode != v1alpha1.IsolationFenced {
		return ctrl.Result{}, nil
	}
	if _, err := writeDenyPolicy(ctx, g.Client, env, g.Now()); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// writeDenyPolicy creates the deny policy of env's fence when the cache has
// none, and reports whether the policy exists now. It never changes a policy
// that exists: the fence ID of a fence under way is the reconciler's to
// keep. It writes only into a primary namespace careplane made for env, never
// one that merely has the name (the reconciler reports that conflict), and
// reports false for such a namespace or a missing one.
func writeDenyPolicy(ctx context.Context, c client.Client, env *v1alpha1.HealthEnvironment, now time.Time) (bool, error) {
	ns := build.SiteNamespace(env, v1alpha1.SitePrimary)
	pol := &networkingv1.NetworkPolicy{}
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.FencePolicyName}, pol)
	if err == nil {
		return true, nil // fenced, or being fenced
	}
	if !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("reading the fence policy of %s: %w", klog.KObj(env), err)
	}
	if ours, err := primaryIsOurs(ctx, c, env); !ours {
		return false, err
	}

	ann := map[string]string{build.AnnotationFenceID: now.UTC().Format(time.RFC3339Nano)}
	err = createPolicy(ctx, c, build.FencePolicy(env, ns, true, ann))
	if err != nil && apierrors.IsInvalid(err) && env.Spec.Isolation.ForensicsFrom != nil {
		// Fail closed: without the forensics exception rather than not at all.
		log.FromContext(ctx).Error(err, "Fence policy with the forensics exception was rejected; fencing without it")
		err = createPolicy(ctx, c, build.FencePolicy(env, ns, false, ann))
	}
	switch {
	case apierrors.IsAlreadyExists(err):
		return true, nil // written by the gate or the reconciler meanwhile
	case err != nil:
		return false, fmt.Errorf("writing the fence policy of %s: %w", klog.KObj(env), err)
	}
	log.FromContext(ctx).Info("Deny policy written", "namespace", ns)
	return true, nil
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

// createPolicy creates the policy the apply configuration describes.
func createPolicy(ctx context.Context, c client.Client, desired any) error {
	pol, err := policyOf(desired)
	if err != nil {
		return err
	}
	return c.Create(ctx, pol, client.FieldOwner(fieldOwner))
}

// policyOf is the NetworkPolicy an apply configuration describes.
func policyOf(desired any) (*networkingv1.NetworkPolicy, error) {
	raw, err := json.Marshal(desired)
	if err != nil {
		return nil, err
	}
	pol := &networkingv1.NetworkPolicy{}
	if err := json.Unmarshal(raw, pol); err != nil {
		return nil, err
	}
	return pol, nil
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

// SetupWithManager registers the gate: environments that ask for a fence,
// and deleted fence policies (a deny policy removed by hand comes back at
// once, not after the reconciler's queue).
func (g *FenceGate) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.HealthEnvironment{}, builder.WithPredicates(fencedSpec, predicate.GenerationChangedPredicate{}, g.FleetFence.observing())).
		Watches(&networkingv1.NetworkPolicy{}, handler.EnqueueRequestsFromMapFunc(environmentOfLabels),
			builder.WithPredicates(isFencePolicy, predicate.Funcs{
				CreateFunc: func(crevent.CreateEvent) bool { return false },
				UpdateFunc: func(crevent.UpdateEvent) bool { return false },
			})).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(g.Workers, 1)}).
		Named("fencegate").
		Complete(g)
}
