package controllers

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// TestFenceGateNeverWritesIntoAForeignNamespace: an environment asks for a
// fence but its primary namespace's name is taken by someone else's
// namespace. Neither the gate nor the reconciler writes a policy there.
func TestFenceGateNeverWritesIntoAForeignNamespace(t *testing.T) {
	ctx := context.Background()
	foreign := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gate-foreign-primary"}}
	if err := k8sClient.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	env := sampleEnv("gate-foreign")
	env.Spec.Isolation = v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "test"}
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Patch(context.Background(), env, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`)))
		_ = k8sClient.Delete(context.Background(), env)
	})
	waitCondition(t, "gate-foreign", v1alpha1.ConditionReady, "False", v1alpha1.ReasonNamespaceConflict)

	gate := &FenceGate{Client: k8sClient, Live: k8sClient, Clock: clock.RealClock{}}
	if _, err := gate.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: "gate-foreign"}}); err != nil {
		t.Fatalf("gate: %v", err)
	}
	var pols networkingv1.NetworkPolicyList
	if err := k8sClient.List(ctx, &pols, client.InNamespace("gate-foreign-primary")); err != nil {
		t.Fatal(err)
	}
	if len(pols.Items) != 0 {
		t.Errorf("a policy was written into a namespace careplane does not own: %s", pols.Items[0].Name)
	}
}

// TestFenceGateLeavesAFenceUnderWayAlone: once the deny policy exists, the
// gate changes nothing, so the fence ID that keys the reconciler's steps
// never moves under it.
func TestFenceGateLeavesAFenceUnderWayAlone(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("gate-keep")
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Patch(context.Background(), env, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`)))
		_ = k8sClient.Delete(context.Background(), env)
	})
	markDeploymentsReadyWhenPresent(t, ctx, "gate-keep", "gate-keep-primary", 40)
	waitCondition(t, "gate-keep", v1alpha1.ConditionReady, "True", "")
	patchIsolation(t, ctx, "gate-keep", `{"mode":"Fenced","reason":"test"}`)
	waitCondition(t, "gate-keep", v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)

	key := client.ObjectKey{Namespace: "gate-keep-primary", Name: build.FencePolicyName}
	before := &networkingv1.NetworkPolicy{}
	if err := k8sClient.Get(ctx, key, before); err != nil {
		t.Fatal(err)
	}
	recordOf := func() fence.Record {
		ns := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: "gate-keep-primary"}, ns); err != nil {
			t.Fatal(err)
		}
		return fence.RecordOf(ns)
	}
	recBefore := recordOf()
	// A clock far from the fence's: a rewrite would show a new fence ID.
	gate := &FenceGate{Client: k8sClient, Live: k8sClient, Clock: clocktesting.NewFakePassiveClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))}
	if _, err := gate.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: "gate-keep"}}); err != nil {
		t.Fatalf("gate: %v", err)
	}
	after := &networkingv1.NetworkPolicy{}
	if err := k8sClient.Get(ctx, key, after); err != nil {
		t.Fatal(err)
	}
	if recAfter := recordOf(); after.ResourceVersion != before.ResourceVersion || recAfter != recBefore {
		t.Errorf("the gate rewrote a fence under way: record %+v -> %+v, policy resourceVersion %s -> %s",
			recBefore, recAfter, before.ResourceVersion, after.ResourceVersion)
	}

	// With the deny policy gone (by hand, say), the gate alone puts one
	// back, under a fence ID of its clock. The environment is asked for
	// directly: the manager's own gate and reconciler race it, so the test
	// accepts either writer but requires a policy to exist when the gate
	// returns.
	if err := k8sClient.Delete(ctx, after); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if _, err := gate.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: "gate-keep"}}); err != nil {
		t.Fatalf("gate: %v", err)
	}
	if err := k8sClient.Get(ctx, key, &networkingv1.NetworkPolicy{}); err != nil {
		t.Fatalf("no deny policy after the gate ran: %v", err)
	}
}
