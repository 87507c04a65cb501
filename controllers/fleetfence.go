package controllers

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// FleetFence tells when a fleet fence is under way: many environments asking
// for a fence within moments of each other, as when a supplier's whole
// estate is fenced by label selector (the 2022 scenario).
//
// While one is, the reconciler holds the later steps of every fence whose
// deny policy is already in place (removing policies, revoking credentials,
// preserving evidence, switching the front: some twenty writes each), so
// that the API server spends itself on the fleet's fence requests and deny
// policies first. Fail closed across the fleet first: each environment is
// already cut off by its deny policy, and the held steps follow as soon as
// the requests stop arriving, at most MaxHold after its deny policy.
//
// A single fence, or a few, never counts as a fleet: Threshold requests must
// arrive within Window. Once they have, the fleet fence lasts until a Window
// passes without a request.
type FleetFence struct {
	// Threshold fence requests arriving within Window make a fleet fence.
	Threshold int
	Window    time.Duration
	// MaxHold bounds how long after its deny policy was created a fence's
	// later steps may be held, however long the requests keep coming.
	MaxHold time.Duration
	// Clock is the time source of arrivals; nil is the real clock.
	Clock clock.PassiveClock

	mu sync.Mutex
	// last holds the arrival times of the last Threshold requests, a ring
	// whose oldest entry is at next once it is full.
	last []time.Time
	next int
	// until is when the fleet fence under way ends unless another request
	// arrives: a Window after the last one.
	until time.Time
	// awaiting holds when a held fence was first found without its deny
	// policy, which it leaves to the gate for gateGrace (awaitGate). One
	// entry per environment at most, removed once the policy is found.
	awaiting map[types.UID]time.Time
}

// gateGrace is how long a held fence leaves the writing of its deny policy
// to the gate, which writes it the moment the request arrives. Both writing
// it at that moment doubled the creates of a fleet fence, half of them
// refused as AlreadyExists (measured: 979 creates for 500 policies).
const gateGrace = 500 * time.Millisecond

// awaitGate says whether the held fence of environment uid, found without
// its deny policy at now, still leaves it to the gate: for gateGrace after
// it was first found so.
func (f *FleetFence) awaitGate(uid types.UID, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	first, ok := f.awaiting[uid]
	if !ok || now.Sub(first) > 10*gateGrace { // none, or left from an earlier fleet fence
		if f.awaiting == nil {
			f.awaiting = map[types.UID]time.Time{}
		}
		f.awaiting[uid] = now
		return true
	}
	return now.Sub(first) < gateGrace
}

// forgetAwaiting forgets that environment uid waited for its deny policy.
func (f *FleetFence) forgetAwaiting(uid types.UID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.awaiting, uid)
}

// NewFleetFence returns a FleetFence with careplane's defaults: 10 fence
// requests within a second make a fleet fence, and no fence's later steps
// wait more than 30 s after its deny policy.
func NewFleetFence() *FleetFence {
	return &FleetFence{Threshold: 10, Window: time.Second, MaxHold: 30 * time.Second}
}

func (f *FleetFence) now() time.Time {
	if f == nil || f.Clock == nil {
		return time.Now()
	}
	return f.Clock.Now()
}

// Observe records a fence request arriving at now.
func (f *FleetFence) Observe(now time.Time) {
	if f == nil || f.Threshold < 1 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.last) < f.Threshold {
		f.last = append(f.last, now)
	} else {
		f.last[f.next] = now
		f.next = (f.next + 1) % f.Threshold
	}
	oldest := f.last[f.next%len(f.last)]
	if (len(f.last) == f.Threshold && now.Sub(oldest) < f.Window) || now.Before(f.until) {
		f.until = now.Add(f.Window)
	}
}

// UnderWay says whether a fleet fence is arriving at now: Threshold fence
// requests arrived within a Window, and since then no Window has passed
// without one. Once started it lasts while the requests keep coming, at any
// rate: the responders' requests slow down as the API server fills up, and
// a fleet fence whose arrivals dipped below Threshold a second let the
// fences held so far go ahead in the middle of it (some 50 of 500, one run).
func (f *FleetFence) UnderWay(now time.Time) bool {
	if f == nil || f.Threshold < 1 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return now.Before(f.until)
}

// observing is a predicate that records every update it passes as a fence
// request; it comes after the predicates that tell a fence request. Creates
// are not requests: at a restart the cache's first list shows every fenced
// environment again, which is no fleet fence arriving.
func (f *FleetFence) observing() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(crevent.UpdateEvent) bool { f.Observe(f.now()); return true },
	}
}

// delayFence says whether env's fence waits for the fleet fence under way to
// finish arriving, and for how long to wait before asking again. While one
// is, a fence's reconcile does what the gate does, close the window and only
// that, and then waits, up to MaxHold after the deny policy was created. The
// window it leaves to the gate for gateGrace first (the gate and the
// reconcile see the request at the same moment), and closes it itself if
// the gate has not by then. A fence whose window cannot be closed here (its
// namespace is not yet careplane's) goes ahead: the reconcile reports why.
//
// A fence a FenceRequest asks for (heldBy) waits only while its request
// closes the windows, whatever else arrives: its spec does not say Fenced
// yet, so the isolation guard does not keep it from being deleted, and only
// the fence's finalizer, written with its first steps, does. Nor does it
// wait once handed over to its spec: the hand-over's spec writes make a
// fleet fence of their own.
func (r *HealthEnvironmentReconciler) delayFence(ctx context.Context, env *v1alpha1.HealthEnvironment, heldBy *v1alpha1.FenceRequest, now time.Time) time.Duration {
	ff := r.FleetFence
	if ff == nil || !env.DeletionTimestamp.IsZero() {
		return 0
	}
	source := fence.SourceSpec
	switch {
	case heldBy != nil:
		if heldBy.DenyPoliciesSettled() {
			return 0
		}
		source = fence.RequestSource(heldBy.Name)
	case env.Spec.Isolation.Mode != v1alpha1.IsolationFenced || !ff.UnderWay(now):
		return 0
	default:
		if rec := cachedRecord(ctx, r.Client, env); rec.Request() != "" || rec.HandedOverFrom != "" {
			// A request closed this window in its fleet-wide sweeps: the
			// deny policies went first already, and the spec writes that
			// hand its fences over (a fleet of them, arriving as one) are
			// no fence arriving.
			return 0
		}
	}
	w := r.writer()
	closed, err := w.windowClosed(ctx, env)
	switch {
	case err != nil:
		return 0
	case !closed:
		if ours, _ := primaryIsOurs(ctx, r.Client, env); ours && r.leavesWindow(env, heldBy, now) {
			// The gate or the request is closing it: ask again shortly,
			// and close it here if it is still open after that.
			fenceStepsDelayed.Inc()
			return gateGrace / 2
		}
		ff.forgetAwaiting(env.UID)
		_, ok, err := w.closeWindow(ctx, env, cachedRecord(ctx, r.Client, env).Over(source, now))
		if err != nil {
			log.FromContext(ctx).Error(err, "Could not close the window during a fleet fence; fencing in full")
		}
		if !ok {
			// Fail closed: the fence goes ahead, window first, and
			// reports what stops it.
			return 0
		}
	default:
		ff.forgetAwaiting(env.UID)
		pol := &networkingv1.NetworkPolicy{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: build.SiteNamespace(env, v1alpha1.SitePrimary), Name: build.FencePolicyName}, pol); err != nil ||
			now.Sub(pol.CreationTimestamp.Time) >= ff.MaxHold+time.Second {
			// The creation time has whole seconds: a second's grace.
			return 0
		}
	}
	fenceStepsDelayed.Inc()
	return ff.Window / 2
}

// leavesWindow says whether a delayed fence still leaves the closing of its
// window to the writer that has it in hand: the gate, for gateGrace after
// the fence was first found with it open; the request that holds it, until
// MaxHold after the request matched. A request closes its windows in two
// fleet-wide sweeps (every deny policy, then every record and quota), and a
// reconcile closing one of them meanwhile only makes the two race on the
// namespace's record.
func (r *HealthEnvironmentReconciler) leavesWindow(env *v1alpha1.HealthEnvironment, heldBy *v1alpha1.FenceRequest, now time.Time) bool {
	ff := r.FleetFence
	if heldBy == nil {
		return ff.awaitGate(env.UID, now)
	}
	at := heldBy.Status.MatchedAt
	return at != nil && now.Sub(at.Time) < ff.MaxHold
}

// cachedRecord is the fence on record on env's primary namespace, as the
// cache holds it; none when it cannot be read.
func cachedRecord(ctx context.Context, c client.Reader, env *v1alpha1.HealthEnvironment) fence.Record {
	ns := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: build.SiteNamespace(env, v1alpha1.SitePrimary)}, ns); err != nil {
		return fence.Record{}
	}
	return fence.RecordOf(ns)
}
