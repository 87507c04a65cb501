package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

func getRequest(t *testing.T, ctx context.Context, name string) (*v1alpha1.FenceRequest, error) {
	t.Helper()
	fr := &v1alpha1.FenceRequest{}
	err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, fr)
	return fr, err
}

func requestCondition(fr *v1alpha1.FenceRequest, typ string) string {
	if c := meta.FindStatusCondition(fr.Status.Conditions, typ); c != nil {
		return string(c.Status) + "/" + c.Reason
	}
	return ""
}

func hasDenyPolicy(t *testing.T, ctx context.Context, env string) bool {
	t.Helper()
	err := k8sClient.Get(ctx, client.ObjectKey{Namespace: env + build.PrimarySuffix, Name: build.FencePolicyName}, &networkingv1.NetworkPolicy{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// TestFenceRequest: a FenceRequest fences what its selector matched, and
// only that, before any spec says Fenced; it holds those fences through a
// relabelling and its own deletion, and lets go of each environment only
// once the environment's spec says Fenced.
func TestFenceRequest(t *testing.T) {
	ctx := context.Background()
	names := []string{"freq-a", "freq-b", "freq-c"}
	for i, name := range names {
		env := sampleEnv(name)
		if name != "freq-c" {
			env.Labels = map[string]string{"supplier": "freq"}
		}
		if err := k8sClient.Create(ctx, env); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = k8sClient.Patch(context.Background(), env, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
			_ = k8sClient.Delete(context.Background(), env)
		})
		markDeploymentsReadyWhenPresent(t, ctx, name, name+build.PrimarySuffix, 50+i)
		waitCondition(t, name, v1alpha1.ConditionReady, "True", "")
	}

	fr := &v1alpha1.FenceRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "freq-breach"},
		Spec: v1alpha1.FenceRequestSpec{
			Selector: v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"supplier": "freq"}},
			Reason:   "supplier breach", Ticket: "INC-2042",
		},
	}
	if err := k8sClient.Create(ctx, fr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Patch(context.Background(), fr, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
		_ = k8sClient.Delete(context.Background(), fr)
	})

	// Matched once, deny policies for the two it matched, none for the other.
	eventually(t, 10*time.Second, "the request's deny policies", func(ctx context.Context) (bool, string, error) {
		got, err := getRequest(t, ctx, fr.Name)
		if err != nil {
			return false, "", err
		}
		st := got.Status
		return requestCondition(got, v1alpha1.ConditionDenyPoliciesInPlace) == "True/"+v1alpha1.ReasonDenyPoliciesWritten,
			fmt.Sprintf("%+v", st), nil
	})
	got, _ := getRequest(t, ctx, fr.Name)
	if want := []string{"freq-a", "freq-b"}; !slices.Equal(got.Status.Environments, want) || !slices.Equal(got.Status.Holding, want) ||
		got.Status.Matched != 2 || got.Status.HoldingCount != 2 || got.Status.DenyPolicies != 2 {
		t.Fatalf("request status = %+v, want environments and holding %v", got.Status, want)
	}
	if !slices.Contains(got.Finalizers, fenceRequestFinalizer) {
		t.Fatalf("request finalizers = %v, want %s", got.Finalizers, fenceRequestFinalizer)
	}
	for _, name := range []string{"freq-a", "freq-b"} {
		if !hasDenyPolicy(t, ctx, name) {
			t.Errorf("%s has no deny policy", name)
		}
	}
	if hasDenyPolicy(t, ctx, "freq-c") {
		t.Error("freq-c, which the selector does not match, has a deny policy")
	}

	// Relabelled after the match: still the request's.
	if err := k8sClient.Patch(ctx, &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "freq-b"}},
		client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"supplier":null}}}`))); err != nil {
		t.Fatal(err)
	}

	// Fenced in full, from the request: the spec still says None.
	for _, name := range []string{"freq-a", "freq-b"} {
		env := waitCondition(t, name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
		if env.Spec.Isolation.Mode != v1alpha1.IsolationNone {
			t.Errorf("%s spec.isolation.mode = %q: careplane wrote the spec", name, env.Spec.Isolation.Mode)
		}
		iso := env.Status.Isolation
		if iso == nil || iso.Request != fr.Name || iso.Reason != "supplier breach" || iso.Ticket != "INC-2042" {
			t.Errorf("%s status.isolation = %+v, want the request's name, reason and ticket", name, iso)
		}
		if !slices.Contains(env.Finalizers, fenceFinalizer) {
			t.Errorf("%s finalizers = %v, want the fence finalizer", name, env.Finalizers)
		}
	}
	if _, reason := condition(getEnv(t, ctx, "freq-c"), v1alpha1.ConditionFenced); reason != v1alpha1.ReasonNotFenced {
		t.Errorf("freq-c Fenced reason = %s, want NotFenced", reason)
	}

	// Deleted while it holds both: it stays, and so do the fences.
	if err := k8sClient.Delete(ctx, fr); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	got, err := getRequest(t, ctx, fr.Name)
	if err != nil {
		t.Fatalf("the request holding two fences is gone after its deletion: %v", err)
	}
	if got.DeletionTimestamp.IsZero() {
		t.Fatal("the request was not marked for deletion")
	}
	for _, name := range []string{"freq-a", "freq-b"} {
		env := getEnv(t, ctx, name)
		if s, reason := condition(env, v1alpha1.ConditionFenced); s != "True" || !hasDenyPolicy(t, ctx, name) {
			t.Errorf("%s after its request's deletion: Fenced=%s/%s, deny policy %t: the deletion lifted the fence",
				name, s, reason, hasDenyPolicy(t, ctx, name))
		}
		if s, _ := condition(env, v1alpha1.ConditionRestoring); s == "True" {
			t.Errorf("%s is being restored after its request's deletion", name)
		}
	}

	// Handed over one at a time: the request lets go of each as its spec
	// says Fenced, and goes once it holds none.
	patchIsolation(t, ctx, "freq-a", `{"mode":"Fenced","reason":"supplier breach","ticket":"INC-2042"}`)
	eventually(t, 10*time.Second, "freq-a handed over", func(ctx context.Context) (bool, string, error) {
		got, err := getRequest(t, ctx, fr.Name)
		if err != nil {
			return false, "", err
		}
		return slices.Equal(got.Status.Holding, []string{"freq-b"}), fmt.Sprintf("holding %v", got.Status.Holding), nil
	})
	patchIsolation(t, ctx, "freq-b", `{"mode":"Fenced","reason":"supplier breach","ticket":"INC-2042"}`)
	eventually(t, 10*time.Second, "the request gone", func(ctx context.Context) (bool, string, error) {
		_, err := getRequest(t, ctx, fr.Name)
		return apierrors.IsNotFound(err), fmt.Sprint(err), client.IgnoreNotFound(err)
	})
	for _, name := range []string{"freq-a", "freq-b"} {
		env := waitCondition(t, name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
		if iso := env.Status.Isolation; iso == nil || iso.Ticket != "INC-2042" {
			t.Errorf("%s status.isolation after the hand-over = %+v", name, iso)
		}
	}
}

// TestFenceRequestMatchingNothing: a request whose selector matches no
// environment says so, fences nothing, and keeps no finalizer.
func TestFenceRequestMatchingNothing(t *testing.T) {
	ctx := context.Background()
	fr := &v1alpha1.FenceRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "freq-nothing"},
		Spec: v1alpha1.FenceRequestSpec{
			Selector: v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"supplier": "nobody"}},
			Reason:   "test",
		},
	}
	if err := k8sClient.Create(ctx, fr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), fr) })
	eventually(t, 10*time.Second, "Matched=False/NoEnvironments, no finalizer", func(ctx context.Context) (bool, string, error) {
		got, err := getRequest(t, ctx, fr.Name)
		if err != nil {
			return false, "", err
		}
		return requestCondition(got, v1alpha1.ConditionMatched) == "False/"+v1alpha1.ReasonNoEnvironments &&
				requestCondition(got, v1alpha1.ConditionComplete) == "True/"+v1alpha1.ReasonNoEnvironments && len(got.Finalizers) == 0,
			fmt.Sprintf("conditions %v, finalizers %v", got.Status.Conditions, got.Finalizers), nil
	})
}

// TestFenceRequestValidation: the API server refuses a request that would
// fence everything, says nothing of why, or changes after the fact.
func TestFenceRequestValidation(t *testing.T) {
	ctx := context.Background()
	valid := func(name string) *v1alpha1.FenceRequest {
		return &v1alpha1.FenceRequest{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.FenceRequestSpec{
				Selector: v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"supplier": "nobody"}},
				Reason:   "test",
			},
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*v1alpha1.FenceRequest)
		want   string
	}{
		{"empty selector", func(fr *v1alpha1.FenceRequest) { fr.Spec.Selector = v1alpha1.LabelSelector{} }, "an empty selector would fence every environment"},
		{"blank reason", func(fr *v1alpha1.FenceRequest) { fr.Spec.Reason = "  " }, "reason is required"},
		{"bad ticket", func(fr *v1alpha1.FenceRequest) { fr.Spec.Ticket = "INC 1" }, "ticket must be letters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr := valid("freq-invalid")
			tc.mutate(fr)
			err := k8sClient.Create(ctx, fr)
			if err == nil {
				_ = k8sClient.Delete(ctx, fr)
				t.Fatal("created")
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create = %v, want Invalid saying %q", err, tc.want)
			}
		})
	}
	t.Run("spec change", func(t *testing.T) {
		fr := valid("freq-immutable")
		if err := k8sClient.Create(ctx, fr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), fr) })
		err := k8sClient.Patch(ctx, fr, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"reason":"other"}}`)))
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "cannot change") {
			t.Fatalf("spec change = %v, want Invalid saying the spec cannot change", err)
		}
	})
}

// TestNoFenceIsLiftedBeforeTheLiveRequests: a fence on record whose source
// is the spec, on an environment whose spec says None, is a fence to lift,
// unless a FenceRequest that matched after the fence began holds it, and the
// cache may not have the request's record yet (it comes by another watch):
// the API server is asked first. A fence on record from a request is never
// lifted, whatever became of the request.
func TestNoFenceIsLiftedBeforeTheLiveRequests(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("live-request")
	env.UID = "uid-live-request"
	env.Spec.Isolation.Mode = v1alpha1.IsolationNone
	began := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	bySpec := recordedNamespace(env, fence.Record{ID: fence.NewID(began), Source: fence.SourceSpec})
	byRequest := recordedNamespace(env, fence.Record{ID: fence.NewID(began), Source: fence.RequestSource("breach")})
	matchedAt := metav1.NewTime(began.Add(time.Minute))
	holding := &v1alpha1.FenceRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "breach"},
		Spec:       v1alpha1.FenceRequestSpec{Reason: "supplier breach", Ticket: "INC-7"},
		Status:     v1alpha1.FenceRequestStatus{MatchedAt: &matchedAt, Environments: []string{"live-request"}, Holding: []string{"live-request"}},
	}
	handedOver := holding.DeepCopy()
	handedOver.Status.Holding = nil
	objs := func(o ...client.Object) client.Client {
		return fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(o...).Build()
	}
	listFails := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(bySpec.DeepCopy()).WithInterceptorFuncs(interceptor.Funcs{
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return apierrors.NewServiceUnavailable("the server is starting")
		},
	}).Build()

	for _, tc := range []struct {
		name        string
		cache, live client.Client
		want        fence.Decision
		wantRequest string
		wantErr     bool
	}{
		{"request's record not yet in the cache", objs(bySpec.DeepCopy()), objs(bySpec.DeepCopy(), holding.DeepCopy()),
			fence.Decision{Course: fence.CourseFence, Source: fence.RequestSource("breach")}, "breach", false},
		{"no request: a restore", objs(bySpec.DeepCopy()), objs(bySpec.DeepCopy()), fence.Decision{Course: fence.CourseRestore}, "", false},
		{"handed over: a restore", objs(bySpec.DeepCopy(), handedOver.DeepCopy()), objs(bySpec.DeepCopy(), handedOver.DeepCopy()),
			fence.Decision{Course: fence.CourseRestore}, "", false},
		{"requests unreadable: nothing lifted", objs(bySpec.DeepCopy()), listFails, fence.Decision{}, "", true},
		{"the request's fence, request deleted: still fenced", objs(byRequest.DeepCopy()), objs(byRequest.DeepCopy()),
			fence.Decision{Course: fence.CourseFence, Source: fence.RequestSource("breach")}, "", false},
		{"the request's fence, its status rewritten to hold nothing: still fenced", objs(byRequest.DeepCopy(), handedOver.DeepCopy()),
			objs(byRequest.DeepCopy(), handedOver.DeepCopy()), fence.Decision{Course: fence.CourseFence, Source: fence.RequestSource("breach")}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := env.DeepCopy()
			e.Status.Isolation = &v1alpha1.IsolationStatus{Ticket: "INC-7"}
			r := &HealthEnvironmentReconciler{Client: tc.cache, APIReader: tc.live}
			d, fr, err := r.gatherFence(ctx, newScope(e, time.Now()), nil)
			if (err != nil) != tc.wantErr {
				t.Fatalf("gatherFence error = %v, want error %t", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			got := ""
			if fr != nil {
				got = fr.Name
			}
			if d != tc.want || got != tc.wantRequest {
				t.Fatalf("gatherFence = %+v, request %q; want %+v, %q", d, got, tc.want, tc.wantRequest)
			}
		})
	}
}

// TestFenceRequestCountsDeletedEnvironmentsAsDone: a matched environment
// deleted before its deny policy needs none. Counted as missing, it kept
// DenyPoliciesInPlace False for good, and with it the held steps of every
// other environment of the request (up to MaxHold) and a re-read each second.
func TestFenceRequestCountsDeletedEnvironmentsAsDone(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("kept")
	env.UID = "uid-kept"
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: build.SiteNamespace(env, v1alpha1.SitePrimary)}}
	if err := controllerutil.SetControllerReference(env, ns, NewScheme()); err != nil {
		t.Fatal(err)
	}
	matchedAt := metav1.Now()
	fr := &v1alpha1.FenceRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "breach", Finalizers: []string{fenceRequestFinalizer}},
		Spec:       v1alpha1.FenceRequestSpec{Reason: "supplier breach"},
		Status: v1alpha1.FenceRequestStatus{MatchedAt: &matchedAt, Matched: 2, Environments: []string{"deleted", "kept"},
			Holding: []string{"deleted", "kept"}, HoldingCount: 2},
	}
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(env, ns, fr).WithStatusSubresource(fr).Build()
	r := &FenceRequestReconciler{Client: c, Live: c, Clock: clock.RealClock{}, Parallel: 4}
	res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(fr)})
	if err != nil {
		t.Fatal(err)
	}
	if !hasPolicy(ctx, c, ns.Name) {
		t.Fatal("the deny policy of the environment that exists was not written")
	}
	got := &v1alpha1.FenceRequest{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(fr), got); err != nil {
		t.Fatal(err)
	}
	if !got.DenyPoliciesInPlace() || got.Status.DenyPolicies != 1 || !slices.Equal(got.Status.Holding, []string{"kept"}) {
		t.Errorf("status = denyPolicies %d, holding %v, %s: want 1, [kept], DenyPoliciesInPlace True",
			got.Status.DenyPolicies, got.Status.Holding, requestCondition(got, v1alpha1.ConditionDenyPoliciesInPlace))
	}
	if res.RequeueAfter != 0 {
		t.Errorf("requeued after %s: nothing is left to write", res.RequeueAfter)
	}
}

func hasPolicy(ctx context.Context, c client.Client, ns string) bool {
	return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.FencePolicyName}, &networkingv1.NetworkPolicy{}) == nil
}

// requestFixture is a matched FenceRequest holding the environments named,
// of which those in built have a primary namespace careplane made.
func requestFixture(t *testing.T, names, built []string) (*v1alpha1.FenceRequest, []client.Object) {
	t.Helper()
	matchedAt := metav1.Now()
	fr := &v1alpha1.FenceRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "breach", Finalizers: []string{fenceRequestFinalizer}},
		Spec:       v1alpha1.FenceRequestSpec{Reason: "supplier breach"},
		Status: v1alpha1.FenceRequestStatus{MatchedAt: &matchedAt, Matched: int32(len(names)), Environments: names,
			Holding: names, HoldingCount: int32(len(names))},
	}
	objs := []client.Object{fr}
	for _, name := range names {
		env := sampleEnv(name)
		env.UID = types.UID("uid-" + name)
		objs = append(objs, env)
		if !slices.Contains(built, name) {
			continue
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: build.SiteNamespace(env, v1alpha1.SitePrimary)}}
		if err := controllerutil.SetControllerReference(env, ns, NewScheme()); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, ns)
	}
	return fr, objs
}

// TestFenceRequestSaysWhichEnvironmentsAreNotBuilt: once every window that
// can be closed is, the request says the rest await their build, which is
// what the plugin's wait ends on (not a count that stopped growing).
func TestFenceRequestSaysWhichEnvironmentsAreNotBuilt(t *testing.T) {
	ctx := context.Background()
	fr, objs := requestFixture(t, []string{"built", "unbuilt"}, []string{"built"})
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(objs...).WithStatusSubresource(fr).Build()
	r := &FenceRequestReconciler{Client: c, Live: c, Clock: clock.RealClock{}, Parallel: 4}
	res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(fr)})
	if err != nil {
		t.Fatal(err)
	}
	got := &v1alpha1.FenceRequest{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(fr), got); err != nil {
		t.Fatal(err)
	}
	if cond := requestCondition(got, v1alpha1.ConditionDenyPoliciesInPlace); cond != "False/"+v1alpha1.ReasonAwaitingEnvironments ||
		!got.DenyPoliciesSettled() || got.DenyPoliciesInPlace() || got.Status.DenyPolicies != 1 {
		t.Errorf("status = denyPolicies %d, DenyPoliciesInPlace %s: want 1, False/%s (settled)",
			got.Status.DenyPolicies, cond, v1alpha1.ReasonAwaitingEnvironments)
	}
	if res.RequeueAfter == 0 {
		t.Error("not requeued: the environment not yet built is looked at again")
	}
}

// TestFleetRequestCutsEveryEnvironmentBeforeFreezingAny: a fleet fence
// sends every deny policy before any record or quota, so that the last
// environment's traffic is cut after one write each, not three.
func TestFleetRequestCutsEveryEnvironmentBeforeFreezingAny(t *testing.T) {
	ctx := context.Background()
	var names []string
	for i := range 12 {
		names = append(names, fmt.Sprintf("fleet-%02d", i))
	}
	fr, objs := requestFixture(t, names, names)
	var (
		mu     sync.Mutex
		writes []string
	)
	note := func(kind string) {
		mu.Lock()
		defer mu.Unlock()
		writes = append(writes, kind)
	}
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(objs...).WithStatusSubresource(fr).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
				note(fmt.Sprintf("%T", o))
				return c.Create(ctx, o, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
				note(fmt.Sprintf("%T", o))
				return c.Patch(ctx, o, p, opts...)
			},
		}).Build()
	r := &FenceRequestReconciler{Client: c, Live: c, Clock: clock.RealClock{}, Parallel: 4}
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(fr)}); err != nil {
		t.Fatal(err)
	}
	lastCut, firstFreeze := -1, len(writes)
	var policies int
	for i, w := range writes {
		switch w {
		case "*v1.NetworkPolicy":
			lastCut = i
			policies++
		case "*v1.Namespace", "*v1.ResourceQuota":
			firstFreeze = min(firstFreeze, i)
		}
	}
	if policies != len(names) || lastCut > firstFreeze {
		t.Errorf("writes in order: %v; want all %d deny policies before the first record or quota", writes, len(names))
	}
}

// TestFleetRestoreIsNotUndoneByTheRequest: the responder restores an
// environment a FenceRequest fenced, right after the hand-over and before
// the request has looked again (at a fleet of 500 the one request worker is
// that far behind). The restore must stay done: the request lets go of an
// environment whose fence it handed over, and the environment waits for
// that before it lifts the fence, so the request never fences it again.
func TestFleetRestoreIsNotUndoneByTheRequest(t *testing.T) {
	ctx := context.Background()
	fr, objs := requestFixture(t, []string{"a"}, []string{"a"})
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(objs...).WithStatusSubresource(fr).Build()
	r := &FenceRequestReconciler{Client: c, Live: c, Clock: clock.RealClock{}, Parallel: 4}
	w := fenceWriter{c: c, live: c}
	reconcileRequest := func() {
		t.Helper()
		if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(fr)}); err != nil {
			t.Fatal(err)
		}
	}
	nsKey := client.ObjectKey{Name: "a" + build.PrimarySuffix}
	record := func() (*corev1.Namespace, fence.Record) {
		t.Helper()
		ns := &corev1.Namespace{}
		if err := c.Get(ctx, nsKey, ns); err != nil {
			t.Fatal(err)
		}
		return ns, fence.RecordOf(ns)
	}
	// What the environment's reconcile decides now, with what it reads.
	decide := func() fence.Decision {
		t.Helper()
		var list v1alpha1.FenceRequestList
		if err := c.List(ctx, &list); err != nil {
			t.Fatal(err)
		}
		env := &v1alpha1.HealthEnvironment{}
		if err := c.Get(ctx, client.ObjectKey{Name: "a"}, env); err != nil {
			t.Fatal(err)
		}
		_, rec := record()
		return decideFence(env.Spec.Isolation.Mode, v1alpha1.HoldingRequest(list.Items, "a"), rec)
	}
	setMode := func(mode v1alpha1.IsolationMode) {
		t.Helper()
		env := &v1alpha1.HealthEnvironment{}
		if err := c.Get(ctx, client.ObjectKey{Name: "a"}, env); err != nil {
			t.Fatal(err)
		}
		env.Spec.Isolation.Mode = mode
		if err := c.Update(ctx, env); err != nil {
			t.Fatal(err)
		}
	}

	reconcileRequest() // the request's fence
	if _, rec := record(); rec.Source != fence.RequestSource(fr.Name) {
		t.Fatalf("record after the request's fence = %+v, want source %s", rec, fence.RequestSource(fr.Name))
	}
	// The hand-over: the plugin writes Fenced, the environment's reconcile
	// records the spec as the source. The request has not looked since.
	setMode(v1alpha1.IsolationFenced)
	if d := decide(); d.Course != fence.CourseFence || d.Source != fence.SourceSpec {
		t.Fatalf("decision with the spec saying Fenced = %+v, want Fence from the spec", d)
	}
	ns, rec := record()
	if err := w.writeRecord(ctx, ns, rec.Over(fence.SourceSpec, time.Now()), nsMarks{}); err != nil {
		t.Fatal(err)
	}
	// The responder restores at once.
	setMode(v1alpha1.IsolationNone)

	// Whatever order the two reconcilers run in from here, the restore
	// must end with no fence, and the request holding nothing.
	for round := range 3 {
		if d := decide(); d.Course == fence.CourseRestore {
			ns, _ := record()
			if err := w.writeRecord(ctx, ns, fence.Record{}, nsMarks{}); err != nil { // the restore done
				t.Fatal(err)
			}
		}
		reconcileRequest()
		t.Logf("round %d: record %+v", round, func() fence.Record { _, r := record(); return r }())
	}
	got := &v1alpha1.FenceRequest{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(fr), got); err != nil {
		t.Fatal(err)
	}
	if _, rec := record(); rec.Present() || got.Status.HoldingCount != 0 {
		t.Errorf("after the restore: record %+v, request holding %v; want no fence and nothing held", rec, got.Status.Holding)
	}
}

// TestARequestsHoldIsAFenceToRecoveryPoints: between a FenceRequest's deny
// policy sweep and its record sweep, the namespace carries no record and the
// spec still says None; a recovery point taken then must not be clean.
func TestARequestsHoldIsAFenceToRecoveryPoints(t *testing.T) {
	ctx := context.Background()
	fr, objs := requestFixture(t, []string{"held", "free"}, []string{"held", "free"})
	fr.Status.Holding, fr.Status.HoldingCount = []string{"held"}, 1
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(objs...).WithStatusSubresource(fr).Build()
	r := &RecoveryReconciler{Client: c, APIReader: c, Clock: clock.RealClock{}}
	for name, want := range map[string]bool{"held": true, "free": false} {
		env := &v1alpha1.HealthEnvironment{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			t.Fatal(err)
		}
		fenced, at, err := r.fenceOf(ctx, env, name+build.PrimarySuffix)
		if err != nil || fenced != want || (want && at == nil) {
			t.Errorf("%s: fenceOf = %t, %v, %v; want %t", name, fenced, at, err, want)
		}
	}
}
