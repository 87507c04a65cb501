package controllers

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// TestClosingAWindowSendsThreeWrites: a window closed in a namespace
// without fence objects is three writes and no read of the API server (a
// live read before each create doubled a fleet fence's requests); one that
// is closed already sends nothing.
func TestClosingAWindowSendsThreeWrites(t *testing.T) {
	ctx := context.Background()
	_, objs := requestFixture(t, []string{"three"}, []string{"three"})
	var liveReads, writes atomic.Int32
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(objs[1:]...).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
				writes.Add(1)
				return c.Create(ctx, o, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
				writes.Add(1)
				return c.Update(ctx, o, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
				writes.Add(1)
				return c.Patch(ctx, o, p, opts...)
			},
		}).Build()
	live := interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
			liveReads.Add(1)
			return c.Get(ctx, key, o, opts...)
		},
	})
	w := fenceWriter{c: c, live: live}
	he := objs[1].(*v1alpha1.HealthEnvironment)
	rec := fence.Record{ID: "f-1", Source: fence.SourceSpec}
	for round, want := range []int32{3, 0} {
		writes.Store(0)
		liveReads.Store(0)
		_, closed, err := w.closeWindow(ctx, he, rec)
		if err != nil || !closed {
			t.Fatalf("round %d: closeWindow = %t, %v", round, closed, err)
		}
		if writes.Load() != want || liveReads.Load() != 0 {
			t.Errorf("round %d: %d writes and %d live reads, want %d and 0", round, writes.Load(), liveReads.Load(), want)
		}
	}
	pol := &networkingv1.NetworkPolicy{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(fence.DenyPolicy(he, true)), pol); err != nil || !fence.IsDenyPolicy(pol, fence.DenyPolicy(he, true)) {
		t.Errorf("deny policy = %+v, %v", pol.Spec, err)
	}
}

// TestAWindowWithoutItsQuotaIsOpen: the window is closed only with all three
// of its writes in place. A fence quota deleted (or loosened) by hand lets
// replacement pods start in the fenced namespace, so the gate and the
// FenceRequest must see the window open and close it again.
func TestAWindowWithoutItsQuotaIsOpen(t *testing.T) {
	ctx := context.Background()
	_, objs := requestFixture(t, []string{"quota"}, []string{"quota"})
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(objs[1:]...).Build()
	w := fenceWriter{c: c, live: c}
	he := objs[1].(*v1alpha1.HealthEnvironment)
	if _, closed, err := w.closeWindow(ctx, he, fence.Record{ID: "f-1", Source: fence.SourceSpec}); err != nil || !closed {
		t.Fatalf("closeWindow = %t, %v", closed, err)
	}
	isClosed := func(what string, want bool) {
		t.Helper()
		if closed, err := w.windowClosed(ctx, he); err != nil || closed != want {
			t.Errorf("%s: windowClosed = %t, %v; want %t", what, closed, err, want)
		}
	}
	isClosed("all three in place", true)

	q := &corev1.ResourceQuota{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(fence.Quota(he)), q); err != nil {
		t.Fatal(err)
	}
	q.Spec.Hard[corev1.ResourcePods] = resource.MustParse("10")
	if err := c.Update(ctx, q); err != nil {
		t.Fatal(err)
	}
	isClosed("quota loosened", false)
	if err := c.Delete(ctx, q); err != nil {
		t.Fatal(err)
	}
	isClosed("quota deleted", false)
}

// TestNsMarksPatchTouchesOnlyItsMarks: a patch of annotations alone says
// nothing of labels. "labels": null would remove every label of the
// namespace, careplane's own included (careplane-manager-bounds refused
// the first record of what was written whole in the standby for it).
func TestNsMarksPatchTouchesOnlyItsMarks(t *testing.T) {
	for _, tc := range []struct {
		marks nsMarks
		want  string
	}{
		{nsMarks{annotations: map[string]any{"a": "1"}}, `{"metadata":{"annotations":{"a":"1"}}}`},
		{nsMarks{labels: map[string]any{"l": nil}}, `{"metadata":{"labels":{"l":null}}}`},
		{nsMarks{labels: map[string]any{"l": "x"}, annotations: map[string]any{"a": nil}}, `{"metadata":{"annotations":{"a":null},"labels":{"l":"x"}}}`},
	} {
		got, err := tc.marks.patch("")
		if err != nil || string(got) != tc.want {
			t.Errorf("patch of %+v = %s, %v; want %s", tc.marks, got, err, tc.want)
		}
	}
}

// TestALostRaceForTheRecordIsNoFailure: the fence gate, a FenceRequest and
// the reconciler each start a fence from their own read of the primary
// Namespace, and the one whose read is behind another's write of the record
// loses the race for it. In a fleet fence that is a third of the
// reconciler's first passes. The loser must carry on under the record in
// force, not fail its pass (a Reconciler error, the status written from the
// failure, a pass to do again), and must not write its own fence ID over
// the winner's.
func TestALostRaceForTheRecordIsNoFailure(t *testing.T) {
	ctx := context.Background()
	const name = "record-race"
	createReady(t, ctx, sampleEnv(name), 28)
	annotateIsolationBy(t, ctx, name, "alice@responders")
	patchIsolation(t, ctx, name, `{"mode":"Fenced","reason":"test","ticket":"INC-RACE"}`)
	env := waitCondition(t, name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	key := client.ObjectKey{Name: name + build.PrimarySuffix}
	won := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, key, won); err != nil {
		t.Fatal(err)
	}
	winner := fence.RecordOf(won)
	if !winner.Present() {
		t.Fatalf("namespace %s of a fenced environment carries no record: %v", key.Name, won.Annotations)
	}

	// The loser's read: the namespace before the winner's write, as a cache
	// behind it holds it.
	behind := won.DeepCopy()
	for k := range winner.Labels() {
		delete(behind.Labels, k)
	}
	for k := range winner.Annotations() {
		delete(behind.Annotations, k)
	}
	behind.ResourceVersion = "1" // not the server's: the write's precondition fails
	stale := namespaceBehind{Client: k8sClient, ns: behind}
	w := fenceWriter{c: stale, live: k8sClient}
	lost := fence.Record{}.Over(fence.SourceSpec, time.Now())
	got, closed, err := w.closeWindow(ctx, env, lost)
	if err != nil || !closed || got != winner {
		t.Errorf("closeWindow after losing the race = %+v, closed %t, %v; want the winner's record %+v, closed, no error", got, closed, err, winner)
	}
	after := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, key, after); err != nil {
		t.Fatal(err)
	}
	if rec := fence.RecordOf(after); rec != winner || after.ResourceVersion != won.ResourceVersion {
		t.Errorf("the namespace after the lost race carries %+v (version %s), want the winner's %+v untouched (version %s)",
			rec, after.ResourceVersion, winner, won.ResourceVersion)
	}

	// A record the loser's source would change (another source's, here: a
	// FenceRequest's fence over the spec's) is not taken: the conflict
	// stands, for the next pass to decide on fresh state.
	other := fence.Record{}.Over(fence.RequestSource("other"), time.Now())
	if got, _, err := w.closeWindow(ctx, env, other); !apierrors.IsConflict(err) {
		t.Errorf("closeWindow of another source = %+v, %v; want the conflict", got, err)
	}
}

// namespaceBehind is a client whose reads of one Namespace answer an old
// copy of it, as a cache behind the API server would.
type namespaceBehind struct {
	client.Client
	ns *corev1.Namespace
}

func (c namespaceBehind) Get(ctx context.Context, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
	if ns, ok := o.(*corev1.Namespace); ok && key.Name == c.ns.Name {
		c.ns.DeepCopyInto(ns)
		return nil
	}
	return c.Client.Get(ctx, key, o, opts...)
}

// TestARecordIsTakenOnlyWhenNothingWouldChangeIt: the loser of the race for
// a fence's record carries on under the winner's only when its own write
// would leave that record as it is. A restore under way (a fence's write
// cancels it), another source's fence, no fence, a namespace not
// careplane's for the environment or going: the conflict stands.
func TestARecordIsTakenOnlyWhenNothingWouldChangeIt(t *testing.T) {
	env := sampleEnv("in-force")
	env.UID = "uid-in-force"
	ns := func(rec fence.Record, mutate func(*corev1.Namespace)) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "in-force-primary", Labels: rec.Labels(), Annotations: rec.Annotations(),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "careplane.io/v1alpha1", Kind: "HealthEnvironment", Name: env.Name, UID: env.UID, Controller: ptr.To(true)}}}}
		if mutate != nil {
			mutate(n)
		}
		return n
	}
	spec := fence.Record{ID: "2026-12-07T10:00:00Z", Source: fence.SourceSpec}
	handedOver := fence.Record{ID: spec.ID, Source: fence.SourceSpec, HandedOverFrom: fence.RequestSource("fleet")}
	restoring := spec
	restoring.RestoreID = "2026-12-07T11:00:00Z"
	byRequest := fence.Record{ID: spec.ID, Source: fence.RequestSource("fleet")}
	for _, tc := range []struct {
		name   string
		live   *corev1.Namespace
		source string
		want   bool
	}{
		{"the spec's fence, for the spec", ns(spec, nil), fence.SourceSpec, true},
		{"handed over to the spec, for the spec", ns(handedOver, nil), fence.SourceSpec, true},
		{"a request's fence, for that request", ns(byRequest, nil), fence.RequestSource("fleet"), true},
		{"a restore under way", ns(restoring, nil), fence.SourceSpec, false},
		{"a request's fence, for the spec (a hand-over to write)", ns(byRequest, nil), fence.SourceSpec, false},
		{"the spec's fence, for a request", ns(spec, nil), fence.RequestSource("fleet"), false},
		{"no fence", ns(fence.Record{}, nil), fence.SourceSpec, false},
		{"not careplane's for the environment", ns(spec, func(n *corev1.Namespace) { n.OwnerReferences[0].UID = "uid-other" }), fence.SourceSpec, false},
		{"going", ns(spec, func(n *corev1.Namespace) { n.DeletionTimestamp = ptr.To(metav1.Now()) }), fence.SourceSpec, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := recordInForce(env, tc.live, tc.source)
			if ok != tc.want || (ok && got != fence.RecordOf(tc.live)) {
				t.Errorf("recordInForce = %+v, %t; want %t", got, ok, tc.want)
			}
		})
	}
}
