package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

func TestFleetFenceUnderWay(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	tests := []struct {
		name     string
		arrivals []int // ms after t0
		at       int
		want     bool
	}{
		{"no requests", nil, 0, false},
		{"one fence", []int{0}, 1, false},
		{"two fewer than the threshold, at once", []int{0, 0}, 1, false},
		{"the threshold within the window", []int{0, 100, 200}, 300, true},
		{"still under way just inside the window of the oldest", []int{0, 100, 200}, 999, true},
		{"still under way a little less than a window after the last", []int{0, 100, 200}, 1199, true},
		{"over a window after the last request", []int{0, 100, 200}, 1200, false},
		{"spread out: never three in a second", []int{0, 600, 1200, 1800, 2400}, 2500, false},
		{"a stream keeps it under way", []int{0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200}, 1900, true},
		{"slower requests keep a started one under way", []int{0, 100, 200, 900, 1700, 2500}, 3400, true},
		{"a request after it ended does not start it again", []int{0, 100, 200, 1300}, 1301, false},
		{"the ring keeps only the last three", []int{0, 1, 2, 3000, 3001}, 3002, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &FleetFence{Threshold: 3, Window: time.Second}
			for _, a := range tt.arrivals {
				f.Observe(ms(a))
			}
			if got := f.UnderWay(ms(tt.at)); got != tt.want {
				t.Errorf("UnderWay = %v, want %v", got, tt.want)
			}
		})
	}
	var none *FleetFence
	none.Observe(t0)
	if none.UnderWay(t0) {
		t.Error("a nil FleetFence is under way")
	}
}

// TestDelayFence: only a fence whose window is closed, recently, while a
// fleet fence is arriving, waits; everything else goes ahead at once.
func TestDelayFence(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	fenced := func(name string) *v1alpha1.HealthEnvironment {
		env := sampleEnv(name)
		env.Spec.Isolation = v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "test"}
		return env
	}
	primaryOf := func(e *v1alpha1.HealthEnvironment) *corev1.Namespace {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: build.SiteNamespace(e, v1alpha1.SitePrimary)}}
		e.UID = types.UID("uid-" + e.Name)
		_ = controllerutil.SetControllerReference(e, ns, NewScheme())
		return ns
	}
	// deny is a closed window: the record on the namespace, the deny
	// policy, created at created, and the quota.
	deny := func(env *v1alpha1.HealthEnvironment, created time.Time) []client.Object {
		ns := primaryOf(env)
		rec := fence.Record{ID: fence.NewID(created), Source: fence.SourceSpec}
		ns.Labels, ns.Annotations = rec.Labels(), rec.Annotations()
		pol := fence.DenyPolicy(env, true)
		pol.CreationTimestamp = metav1.NewTime(created)
		return []client.Object{ns, pol, fence.Quota(env)}
	}
	arriving := func() *FleetFence {
		f := &FleetFence{Threshold: 3, Window: time.Second, MaxHold: 10 * time.Second}
		for range 3 {
			f.Observe(now.Add(-100 * time.Millisecond))
		}
		return f
	}
	deleting := fenced("deleting")
	deleting.DeletionTimestamp = &metav1.Time{Time: now}
	deleting.Finalizers = []string{fenceFinalizer}
	writing := &v1alpha1.FenceRequest{Status: v1alpha1.FenceRequestStatus{Conditions: []metav1.Condition{{
		Type: v1alpha1.ConditionDenyPoliciesInPlace, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonWritingDenyPolicies}}}}
	written := writing.DeepCopy()
	written.Status.Conditions[0].Status, written.Status.Conditions[0].Reason = metav1.ConditionTrue, v1alpha1.ReasonDenyPoliciesWritten
	quiet := func() *FleetFence { return &FleetFence{Threshold: 3, Window: time.Second, MaxHold: 10 * time.Second} }
	tests := []struct {
		name   string
		env    *v1alpha1.HealthEnvironment
		objs   func(*v1alpha1.HealthEnvironment) []client.Object
		fleet  *FleetFence
		hold   bool
		heldBy *v1alpha1.FenceRequest
	}{
		// A FenceRequest's fence waits while its request writes deny
		// policies, and only then: not for the fleet fence its own hand-over
		// (the responders' spec writes) makes.
		{"request writing its deny policies, no fleet fence", fenced("request-writing"),
			func(e *v1alpha1.HealthEnvironment) []client.Object {
				return deny(e, now.Add(-time.Second))
			}, quiet(), true, writing},
		{"request done with its deny policies, during a fleet fence", fenced("request-written"),
			func(e *v1alpha1.HealthEnvironment) []client.Object {
				return deny(e, now.Add(-time.Second))
			}, arriving(), false, written},
		{"handed over from a request, during the fleet fence the hand-over makes", fenced("handed-over"),
			func(e *v1alpha1.HealthEnvironment) []client.Object {
				objs := deny(e, now.Add(-time.Second))
				ns := objs[0].(*corev1.Namespace)
				rec := fence.Record{ID: fence.NewID(now.Add(-time.Second)), Source: fence.RequestSource("fleet")}.Over(fence.SourceSpec, now)
				ns.Labels, ns.Annotations = rec.Labels(), rec.Annotations()
				return objs
			}, arriving(), false, nil},
		{"a request's, its hand-over written before the reconciler recorded it", fenced("handing-over"),
			func(e *v1alpha1.HealthEnvironment) []client.Object {
				objs := deny(e, now.Add(-time.Second))
				ns := objs[0].(*corev1.Namespace)
				rec := fence.Record{ID: fence.NewID(now.Add(-time.Second)), Source: fence.RequestSource("fleet")}
				ns.Labels, ns.Annotations = rec.Labels(), rec.Annotations()
				return objs
			}, arriving(), false, nil},
		{"request writing for longer than MaxHold", fenced("request-slow"),
			func(e *v1alpha1.HealthEnvironment) []client.Object {
				return deny(e, now.Add(-12*time.Second))
			}, quiet(), false, writing},
		{"deny policy in place while a fleet fence arrives", fenced("held"),
			func(e *v1alpha1.HealthEnvironment) []client.Object {
				return deny(e, now.Add(-2*time.Second))
			}, arriving(), true, nil},
		{"no deny policy yet: the reconcile leaves it to the gate, then writes it, and waits", fenced("no-deny"),
			func(e *v1alpha1.HealthEnvironment) []client.Object { return []client.Object{primaryOf(e)} }, arriving(), true, nil},
		{"no deny policy and no namespace of careplane's: the fence goes ahead", fenced("no-ns"),
			func(*v1alpha1.HealthEnvironment) []client.Object { return nil }, arriving(), false, nil},
		{"a namespace of that name, not careplane's: the fence goes ahead", fenced("foreign-ns"),
			func(e *v1alpha1.HealthEnvironment) []client.Object {
				ns := primaryOf(e)
				ns.OwnerReferences = nil
				return []client.Object{ns}
			}, arriving(), false, nil},
		{"held long enough", fenced("old-deny"),
			func(e *v1alpha1.HealthEnvironment) []client.Object {
				return deny(e, now.Add(-12*time.Second))
			}, arriving(), false, nil},
		{"no fleet fence", fenced("single"),
			func(e *v1alpha1.HealthEnvironment) []client.Object { return deny(e, now) }, quiet(), false, nil},
		{"no FleetFence configured", fenced("unset"),
			func(e *v1alpha1.HealthEnvironment) []client.Object { return deny(e, now) }, nil, false, nil},
		{"not fenced (a restore)", sampleEnv("restore"),
			func(e *v1alpha1.HealthEnvironment) []client.Object { return deny(e, now) }, arriving(), false, nil},
		{"being deleted", deleting,
			func(e *v1alpha1.HealthEnvironment) []client.Object { return deny(e, now) }, arriving(), false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(tt.objs(tt.env)...).Build()
			r := &HealthEnvironmentReconciler{Client: c, APIReader: c, Recorder: events.NewFakeRecorder(10), Clock: clock.RealClock{}, FleetFence: tt.fleet}
			after := r.delayFence(context.Background(), tt.env, tt.heldBy, now)
			if (after > 0) != tt.hold {
				t.Errorf("held for %s, want hold %v", after, tt.hold)
			}
			denyKey := client.ObjectKey{Namespace: build.SiteNamespace(tt.env, v1alpha1.SitePrimary), Name: build.FencePolicyName}
			if !tt.hold || c.Get(context.Background(), denyKey, &networkingv1.NetworkPolicy{}) == nil {
				return
			}
			// Held without a deny policy: the gate is writing it, for
			// gateGrace at most; then the reconcile writes it.
			if after > gateGrace {
				t.Errorf("held without a deny policy for %s, longer than the gate's grace %s", after, gateGrace)
			}
			if again := r.delayFence(context.Background(), tt.env, tt.heldBy, now.Add(gateGrace/2)); again <= 0 || again > gateGrace {
				t.Errorf("within the gate's grace: held for %s, want at most %s", again, gateGrace)
			}
			if err := c.Get(context.Background(), denyKey, &networkingv1.NetworkPolicy{}); err == nil {
				t.Errorf("the reconcile wrote the deny policy within the gate's grace")
			}
			if again := r.delayFence(context.Background(), tt.env, tt.heldBy, now.Add(gateGrace)); again <= 0 {
				t.Errorf("after the gate's grace: not held")
			}
			if err := c.Get(context.Background(), denyKey, &networkingv1.NetworkPolicy{}); err != nil {
				t.Errorf("held without a deny policy after the gate's grace: %v", err)
			}
		})
	}
}

// TestFleetFenceHoldsTheStepsAfterTheDenyPolicy: while fence requests keep
// arriving, a fence gets its deny policy at once (the gate) and nothing else
// changes in its namespace; the rest follows when they stop, or MaxHold
// after the deny policy at the latest.
func TestFleetFenceHoldsTheStepsAfterTheDenyPolicy(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("fleet-hold")
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Patch(context.Background(), env, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
		_ = k8sClient.Delete(context.Background(), env)
	})
	markDeploymentsReadyWhenPresent(t, ctx, "fleet-hold", "fleet-hold-primary", 41)
	waitCondition(t, "fleet-hold", v1alpha1.ConditionReady, "True", "")
	ns := "fleet-hold-primary"
	var pols networkingv1.NetworkPolicyList
	if err := k8sClient.List(ctx, &pols, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	allows := len(pols.Items)
	if allows == 0 {
		t.Fatal("the primary has no allow policies to remove")
	}

	// A fleet fence arriving, as a stream of other environments' fence
	// requests would make it, for longer than the hold may last.
	stop := make(chan struct{})
	streaming := make(chan struct{})
	go func() {
		defer close(streaming)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				suiteFleetFence.Observe(now)
			}
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-streaming
	}()
	time.Sleep(time.Second) // the stream is under way
	fenced := time.Now()
	patchIsolation(t, ctx, "fleet-hold", `{"mode":"Fenced","reason":"fleet"}`)

	// The deny policy, at once.
	eventually(t, 5*time.Second, "the deny policy", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.FencePolicyName}, &networkingv1.NetworkPolicy{})
		return err == nil, fmt.Sprint(err), client.IgnoreNotFound(err)
	})
	denyAfter := time.Since(fenced)
	// Held: for a second and a half after the deny policy, no allow policy
	// is removed and the fence is not reported complete.
	for until := time.Now().Add(1500 * time.Millisecond); time.Now().Before(until); time.Sleep(100 * time.Millisecond) {
		if err := k8sClient.List(ctx, &pols, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		if len(pols.Items) != allows+1 {
			t.Fatalf("%s after the fence request, during a fleet fence, the namespace has %d policies, want the %d allows and the deny policy: the fence's later steps were not held",
				time.Since(fenced).Round(time.Millisecond), len(pols.Items), allows)
		}
	}
	// MaxHold (3 s here) bounds the hold even while the stream goes on.
	done := waitCondition(t, "fleet-hold", v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	completeAfter := time.Since(fenced)
	close(stop)
	if completeAfter > 3*time.Second+2*time.Second+5*time.Second {
		t.Errorf("the fence completed %s after its request: the hold outlasted MaxHold", completeAfter)
	}
	if err := k8sClient.List(ctx, &pols, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(pols.Items) != 1 {
		t.Errorf("after the hold the namespace has %d policies, want only the deny policy", len(pols.Items))
	}
	t.Logf("deny policy %s after the request; Fenced=True %s after, during a fleet fence with MaxHold 3s (generation %d)",
		denyAfter.Round(time.Millisecond), completeAfter.Round(time.Millisecond), done.Generation)
}
