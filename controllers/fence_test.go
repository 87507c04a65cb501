package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/netpol"
)

// createFenceable creates env and, at the end of the test, deletes it with
// its finalizers stripped (a fenced environment's would hold it).
func createFenceable(t *testing.T, ctx context.Context, env *v1alpha1.HealthEnvironment) {
	t.Helper()
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	name := env.Name
	t.Cleanup(func() {
		e := &v1alpha1.HealthEnvironment{}
		e.Name = name
		_ = k8sClient.Patch(context.Background(), e, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
		_ = k8sClient.Delete(context.Background(), e)
	})
}

// createReady creates env as createFenceable does, plays the controller
// manager for its Deployments (pod IPs from ipBase) and waits for it to be
// Ready. It returns the primary namespace.
func createReady(t *testing.T, ctx context.Context, env *v1alpha1.HealthEnvironment, ipBase int) string {
	t.Helper()
	createFenceable(t, ctx, env)
	ns := env.Name + build.PrimarySuffix
	markDeploymentsReadyWhenPresent(t, ctx, env.Name, ns, ipBase)
	waitCondition(t, env.Name, v1alpha1.ConditionReady, "True", "")
	return ns
}

// setDeploymentsReady plays the controller manager for the Deployments of
// ns only (no pods): each reports all replicas ready at its generation.
func setDeploymentsReady(t *testing.T, ctx context.Context, ns string) {
	t.Helper()
	var deps appsv1.DeploymentList
	if err := k8sClient.List(ctx, &deps, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Items {
		n := *d.Spec.Replicas
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
		if err := k8sClient.Status().Update(ctx, &d); err != nil {
			t.Fatal(err)
		}
	}
}

// annotateIsolationBy sets who changes the isolation next, as the plugin does.
func annotateIsolationBy(t *testing.T, ctx context.Context, name, user string) {
	t.Helper()
	env := &v1alpha1.HealthEnvironment{}
	env.Name = name
	patch := `{"metadata":{"annotations":{"` + v1alpha1.AnnotationIsolationBy + `":"` + user + `"}}}`
	if err := k8sClient.Patch(ctx, env, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

func patchIsolation(t *testing.T, ctx context.Context, name, isolation string) {
	t.Helper()
	env := &v1alpha1.HealthEnvironment{}
	env.Name = name
	if err := k8sClient.Patch(ctx, env, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"isolation":`+isolation+`}}`))); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreKeepsTheFenceUntilRebuiltPodsAreReady: the restore rebuilds the
// primary behind the fence, and lifts it only once every rebuilt Deployment
// reports Ready at its new template.
func TestRestoreKeepsTheFenceUntilRebuiltPodsAreReady(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("restore-order")
	ns := createReady(t, ctx, env, 4)

	// Who: the annotation the isolation guard checks against the
	// requester (not installed here: the operator's side is tested).
	annotateIsolationBy(t, ctx, "restore-order", "alice@responders")
	patchIsolation(t, ctx, "restore-order", `{"mode":"Fenced","reason":"test","ticket":"INC-9"}`)
	waitCondition(t, "restore-order", v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	fenced := getEnv(t, ctx, "restore-order")
	if fenced.Status.Isolation == nil || fenced.Status.Isolation.Ticket != "INC-9" || fenced.Status.Isolation.FencedAt == nil ||
		fenced.Status.Isolation.FencedBy != "alice@responders" {
		t.Fatalf("status.isolation = %+v, want ticket INC-9, fencedAt and fencedBy alice@responders", fenced.Status.Isolation)
	}
	if len(fenced.Finalizers) != 1 || fenced.Finalizers[0] != fenceFinalizer {
		t.Errorf("finalizers of a fenced environment = %v, want [%s]", fenced.Finalizers, fenceFinalizer)
	}
	fenceQuota := client.ObjectKey{Namespace: ns, Name: build.FenceQuotaName}
	q := &corev1.ResourceQuota{}
	if err := k8sClient.Get(ctx, fenceQuota, q); err != nil {
		t.Fatalf("the fence's quota: %v", err)
	}
	if pods, ok := q.Spec.Hard[corev1.ResourcePods]; !ok || !pods.IsZero() {
		t.Errorf("the fence's quota is %v, want pods: 0", q.Spec.Hard)
	}

	// Every finalizer state the restore writes, as a watch of the
	// environment delivers them.
	held := watchFinalizers(t, ctx, "restore-order", fenced.ResourceVersion)

	annotateIsolationBy(t, ctx, "restore-order", "bob@responders")
	patchIsolation(t, ctx, "restore-order", `{"mode":"None"}`)
	waitCondition(t, "restore-order", v1alpha1.ConditionRestoring, "True", v1alpha1.ReasonRebuilding)
	// Nobody marks the rebuilt Deployments ready: the fence must stay.
	time.Sleep(2 * time.Second)
	fencePolicy := client.ObjectKey{Namespace: ns, Name: build.FencePolicyName}
	if err := k8sClient.Get(ctx, fencePolicy, &networkingv1.NetworkPolicy{}); err != nil {
		t.Fatalf("the fence policy went before the rebuilt pods were ready: %v", err)
	}
	if s, r := condition(getEnv(t, ctx, "restore-order"), v1alpha1.ConditionFenced); s != "True" || r != v1alpha1.ReasonRestoring {
		t.Errorf("Fenced = %s/%s during the rebuild, want True/%s", s, r, v1alpha1.ReasonRestoring)
	}
	// The rebuilt pods must be admitted while the deny policy stays.
	if err := k8sClient.Get(ctx, fenceQuota, &corev1.ResourceQuota{}); !apierrors.IsNotFound(err) {
		t.Errorf("the fence's quota during the rebuild: %v, want it gone", err)
	}
	var deps appsv1.DeploymentList
	if err := k8sClient.List(ctx, &deps, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Items {
		if *d.Spec.Replicas == 0 || d.Spec.Template.Annotations[build.AnnotationCredentialsRevision] == "initial" {
			t.Errorf("deployment %s not rebuilt: replicas %d, credentials revision %q", d.Name, *d.Spec.Replicas,
				d.Spec.Template.Annotations[build.AnnotationCredentialsRevision])
		}
	}

	setDeploymentsReady(t, ctx, ns)
	waitCondition(t, "restore-order", v1alpha1.ConditionFenced, "False", v1alpha1.ReasonNotFenced)
	eventually(t, 10*time.Second, "fence policy removed", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, fencePolicy, &networkingv1.NetworkPolicy{})
		return apierrors.IsNotFound(err), "", nil
	})
	restored := getEnv(t, ctx, "restore-order")
	if n := len(restored.Status.Incidents); n != 1 || restored.Status.Incidents[0].Ticket != "INC-9" ||
		restored.Status.Incidents[0].FencedBy != "alice@responders" || restored.Status.Incidents[0].RestoredBy != "bob@responders" {
		t.Errorf("incidents = %+v, want INC-9 fenced by alice@responders and restored by bob@responders", restored.Status.Incidents)
	}
	// The fence's finalizer goes; the data finalizer stays while the
	// namespace names the evidence pods the fence kept: deleting the
	// environment keeps them (retainData).
	nsObj := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	if nsObj.Labels[build.LabelHoldsEvidence] != "true" {
		t.Fatalf("namespace %s after the restore: labels %v, want it to name the evidence pods", ns, nsObj.Labels)
	}
	if !slices.Equal(restored.Finalizers, []string{dataFinalizer}) {
		t.Errorf("finalizers after restore = %v, want [%s] (evidence pods remain)", restored.Finalizers, dataFinalizer)
	}
	// One write swaps them: the environment is never held by neither,
	// and the restore does not write it twice for its finalizers.
	if got, want := held(), [][]string{{fenceFinalizer}, {dataFinalizer}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("finalizers through the restore = %v, want %v", got, want)
	}
	if restored.Status.Isolation != nil {
		t.Errorf("status.isolation after restore = %+v, want none", restored.Status.Isolation)
	}
}

// watchFinalizers watches environment name from resourceVersion rv on and
// returns a function that stops and returns the finalizer lists the watch
// delivered, each change once, in order.
func watchFinalizers(t *testing.T, ctx context.Context, name, rv string) func() [][]string {
	t.Helper()
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, &v1alpha1.HealthEnvironmentList{}, client.MatchingFields{"metadata.name": name}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv}})
	if err != nil {
		t.Fatal(err)
	}
	var seen [][]string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			env, ok := ev.Object.(*v1alpha1.HealthEnvironment)
			if !ok {
				continue
			}
			if f := slices.Clone(env.Finalizers); len(seen) == 0 || !slices.Equal(seen[len(seen)-1], f) {
				seen = append(seen, f)
			}
		}
	}()
	return func() [][]string {
		w.Stop()
		<-done
		return seen
	}
}

// recordedNamespace is env's primary namespace, made by careplane for env,
// carrying fence record rec.
func recordedNamespace(env *v1alpha1.HealthEnvironment, rec fence.Record) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: env.Name + build.PrimarySuffix, Labels: rec.Labels(), Annotations: rec.Annotations(),
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(env, v1alpha1.GroupVersion.WithKind("HealthEnvironment"))},
	}}
}

// TestARestoreWaitingTrustsTheCacheUntilItLifts: a restore this process has
// cleaned for reads its record from the cache while it waits for its pods,
// but lifts the fence only if the API server still holds that record and no
// FenceRequest holds the environment: a cache behind the restore's own end
// (the record cleared) ran the lift again and recorded the incident twice.
func TestARestoreWaitingTrustsTheCacheUntilItLifts(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("lift-check")
	env.UID = "uid-lift-check"
	rec := fence.Record{ID: "2030-01-01T00:00:00Z", Source: fence.SourceSpec, RestoreID: "2030-01-02T00:00:00Z"}
	request := &v1alpha1.FenceRequest{ObjectMeta: metav1.ObjectMeta{Name: "fleet"},
		Status: v1alpha1.FenceRequestStatus{Holding: []string{env.Name}}}
	for _, tc := range []struct {
		name string
		live []client.Object
		lift bool
	}{
		{"the record still in place", []client.Object{recordedNamespace(env, rec)}, true},
		{"the restore already ended", []client.Object{recordedNamespace(env, fence.Record{})}, false},
		{"another restore since", []client.Object{recordedNamespace(env, fence.Record{ID: rec.ID, Source: rec.Source, RestoreID: "2030-01-03T00:00:00Z"})}, false},
		{"a FenceRequest holds it", []client.Object{recordedNamespace(env, rec), request}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(recordedNamespace(env, rec)).Build()
			live := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(tc.live...).Build()
			r := &HealthEnvironmentReconciler{Client: cache, APIReader: live}
			r.cleaned.remember(env, rec.RestoreID)
			s := newScope(env, time.Now())
			got, err := r.readRecord(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			if got != rec || !s.liftUnchecked {
				t.Fatalf("readRecord = %+v (lift unchecked %v); want the cached record, trusted", got, s.liftUnchecked)
			}
			s.record = got
			lift, err := r.liftChecked(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			if lift != tc.lift {
				t.Errorf("lift = %v, want %v", lift, tc.lift)
			}
			if !lift && s.requeueAfter == 0 {
				t.Error("not lifting, and no look again asked for")
			}
		})
	}
	// Not cleaned by this process (a new leader): the API server is asked.
	cache := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(recordedNamespace(env, rec)).Build()
	live := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(recordedNamespace(env, fence.Record{})).Build()
	r := &HealthEnvironmentReconciler{Client: cache, APIReader: live}
	s := newScope(env, time.Now())
	if got, err := r.readRecord(ctx, s); err != nil || got.Present() || s.liftUnchecked {
		t.Errorf("a new process: readRecord = %+v, %v (lift unchecked %v); want the API server's answer, none", got, err, s.liftUnchecked)
	}
}

// TestReadRecordDoesNotTrustAStaleCache: a fence record the cache still
// holds after the restore cleared it (the informer has not seen the change)
// must not start the restore again; a cache that lost sight of a record in
// place is not believed either; while the environment is fenced, a record
// in the cache is trusted. A record on a namespace careplane made for
// another environment of the same name (deleted and re-created) is none of
// this one's.
func TestReadRecordDoesNotTrustAStaleCache(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("stale-fence")
	env.UID = "uid-stale-fence"
	rec := fence.Record{ID: "2030-01-01T00:00:00Z", Source: fence.SourceSpec, RestoreID: "2030-01-02T00:00:00Z"}
	withRecord := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(recordedNamespace(env, rec)).Build()
	without := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(recordedNamespace(env, fence.Record{})).Build()
	older := env.DeepCopy()
	older.UID = "uid-of-an-earlier-stale-fence"
	othersRecord := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(recordedNamespace(older, rec)).Build()

	for _, tc := range []struct {
		name         string
		mode         v1alpha1.IsolationMode
		statusFenced bool // status.isolation still describes a fence
		cache, live  client.Client
		want         fence.Record
	}{
		{"restore finished, cache stale", v1alpha1.IsolationNone, true, withRecord, without, fence.Record{}},
		{"restore under way", v1alpha1.IsolationNone, true, withRecord, withRecord, rec},
		{"fenced: the cache is trusted", v1alpha1.IsolationFenced, true, withRecord, without, rec},
		{"never fenced", v1alpha1.IsolationNone, false, without, withRecord, fence.Record{}},
		{"restore under way, cache lagging", v1alpha1.IsolationNone, true, without, withRecord, rec},
		{"fenced, cache lagging", v1alpha1.IsolationFenced, true, without, withRecord, rec},
		{"restore finished, status written", v1alpha1.IsolationNone, true, without, without, fence.Record{}},
		{"re-created environment, the earlier one's fence", v1alpha1.IsolationNone, true, othersRecord, othersRecord, fence.Record{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := env.DeepCopy()
			e.Spec.Isolation.Mode = tc.mode
			if tc.statusFenced {
				e.Status.Isolation = &v1alpha1.IsolationStatus{Ticket: "INC-1"}
			}
			r := &HealthEnvironmentReconciler{Client: tc.cache, APIReader: tc.live}
			got, err := r.readRecord(ctx, newScope(e, time.Now()))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("readRecord = %+v; want %+v", got, tc.want)
			}
		})
	}
}

// TestUnreadableFenceWritesNoStatus: a reconcile that cannot tell whether a
// fence is in place (the API server just back from an outage answers the
// live read with an error) writes no status. It once wrote NotFenced and
// dropped status.isolation, and the restore that finished afterwards
// recorded an incident without the ticket it closed.
func TestUnreadableFenceWritesNoStatus(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("unreadable-fence")
	env.Spec.Isolation.Mode = v1alpha1.IsolationNone // a restore under way
	fencedAt := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	env.Status.Isolation = &v1alpha1.IsolationStatus{Ticket: "INC-1", Reason: "breach", FencedAt: &fencedAt}
	env.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionFenced, Status: metav1.ConditionTrue,
		Reason: v1alpha1.ReasonFenceComplete, Message: "fenced", LastTransitionTime: fencedAt}}
	env.UID = "uid-unreadable-fence"
	ns := recordedNamespace(env, fence.Record{ID: "2030-01-01T00:00:00Z", Source: fence.SourceSpec, RestoreID: "2030-01-02T00:00:00Z"})
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(env, ns).WithStatusSubresource(env).Build()
	unavailable := apierrors.NewServiceUnavailable("the server is starting")
	live := fake.NewClientBuilder().WithScheme(NewScheme()).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return unavailable
		},
	}).Build()
	r := &HealthEnvironmentReconciler{Client: c, APIReader: live, Recorder: events.NewFakeRecorder(100), Clock: clock.RealClock{}}

	before := &v1alpha1.HealthEnvironment{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(env), before); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(env)}); !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("Reconcile = %v, want the live read's error", err)
	}
	after := &v1alpha1.HealthEnvironment{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(env), after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion {
		t.Errorf("the environment was written (resourceVersion %s → %s): status.isolation %+v, Fenced %+v",
			before.ResourceVersion, after.ResourceVersion, after.Status.Isolation,
			meta.FindStatusCondition(after.Status.Conditions, v1alpha1.ConditionFenced))
	}
}

// TestFenceCompleteIsWrittenByTheReconcileThatCompletesIt: the early
// FenceIncomplete write must not leave the final status write with nothing
// to send (it once shared the conditions slice with the object the merge
// patch is computed from, and Fenced=True waited for another reconcile).
func TestFenceCompleteIsWrittenByTheReconcileThatCompletesIt(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("one-pass")
	env.Generation = 2
	env.Spec.Isolation = v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "test"}
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(env).WithStatusSubresource(env).Build()
	r := &HealthEnvironmentReconciler{Client: c, Recorder: events.NewFakeRecorder(100), Clock: clock.RealClock{}}

	if err := c.Get(ctx, client.ObjectKeyFromObject(env), env); err != nil {
		t.Fatal(err)
	}
	s := newScope(env, time.Now())
	before := env.Status.DeepCopy()
	if err := r.markFenceStarted(ctx, s); err != nil {
		t.Fatal(err)
	}
	setCondition(&s.status.Conditions, env.Generation, v1alpha1.ConditionFenced, metav1.ConditionTrue, v1alpha1.ReasonFenceComplete, "done")
	if err := r.writeStatus(ctx, env, before, s); err != nil {
		t.Fatal(err)
	}
	got := &v1alpha1.HealthEnvironment{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(env), got); err != nil {
		t.Fatal(err)
	}
	if st, reason := condition(got, v1alpha1.ConditionFenced); st != "True" || reason != v1alpha1.ReasonFenceComplete {
		t.Errorf("stored Fenced = %s/%s, want True/%s", st, reason, v1alpha1.ReasonFenceComplete)
	}
}

// TestFencedNeedsVerifiedIsolation: Fenced=True reports evidence, not
// intention: every step done is not enough while the namespace's policies,
// evaluated, let a flow through or could not be evaluated.
func TestFencedNeedsVerifiedIsolation(t *testing.T) {
	leak := netpol.Result{Isolated: false, Flows: []netpol.Flow{{Direction: "Egress", Pod: "call-handling-1"}}}
	for _, tc := range []struct {
		name       string
		verified   *netpol.Result
		wantStatus metav1.ConditionStatus
		wantReason string
	}{
		{"verified isolated", &netpol.Result{Isolated: true}, metav1.ConditionTrue, v1alpha1.ReasonFenceComplete},
		{"a flow allowed", &leak, metav1.ConditionFalse, v1alpha1.ReasonFenceIncomplete},
		{"not evaluated", nil, metav1.ConditionFalse, v1alpha1.ReasonFenceIncomplete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := sampleEnv("verified")
			env.Spec.Isolation = v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "test"}
			s := newScope(env, time.Now())
			s.course = fence.CourseFence
			s.record = fence.Record{ID: fence.NewID(time.Now()), Source: fence.SourceSpec}
			s.fenceComplete, s.verified = true, tc.verified
			s.finish(nil)
			c := meta.FindStatusCondition(s.status.Conditions, v1alpha1.ConditionFenced)
			if c == nil || c.Status != tc.wantStatus || c.Reason != tc.wantReason {
				t.Fatalf("Fenced = %+v, want %s/%s", c, tc.wantStatus, tc.wantReason)
			}
		})
	}
}

// TestAFenceIsNotHeldUpByAnotherNamespace (hole 10): a problem with the
// standby's namespace (its name taken by a namespace careplane did not
// make) stops provisioning, but not the fence of the primary: the window
// is closed and the record written although the reconcile reports the
// conflict.
func TestAFenceIsNotHeldUpByAnotherNamespace(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("stuck-standby")
	ns := createReady(t, ctx, env, 60)

	foreign := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "stuck-standby-standby"}}
	if err := k8sClient.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	updateEnv(t, ctx, "stuck-standby", func(e *v1alpha1.HealthEnvironment) { e.Spec.Failover.Standby = v1alpha1.StandbyWarm })
	waitCondition(t, "stuck-standby", v1alpha1.ConditionReady, "False", v1alpha1.ReasonNamespaceConflict)

	patchIsolation(t, ctx, "stuck-standby", `{"mode":"Fenced","reason":"test"}`)
	eventually(t, 15*time.Second, "the primary fenced despite the standby's conflict", func(ctx context.Context) (bool, string, error) {
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			return false, "", err
		}
		if !fence.RecordOf(nsObj).Present() {
			return false, fmt.Sprintf("no fence record on %s: %v %v", ns, nsObj.Labels, nsObj.Annotations), nil
		}
		pol := &networkingv1.NetworkPolicy{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.FencePolicyName}, pol); err != nil {
			return false, err.Error(), nil
		}
		var sas corev1.ServiceAccountList
		if err := k8sClient.List(ctx, &sas, client.InNamespace(ns)); err != nil {
			return false, "", err
		}
		for _, sa := range sas.Items {
			if sa.Annotations[build.AnnotationCredentialsRevision] != fence.RecordOf(nsObj).ID {
				return false, "service account " + sa.Name + " not yet revoked", nil
			}
		}
		return true, "", nil
	})
}

// TestADeletedEnvironmentsStandbyWaitIsLookedAtAgain: while a fence's
// rotation of the standby waits for its pods to roll (a pod of an older
// template of careplane's Deployment still runs), the reconcile asks to run
// again within a second: the wait ends when fence.StandbyWaitLimit has
// passed, which no event announces. So does the reconcile of the same
// environment once a responder deletes it, since deletion never weakens a
// fence; otherwise the standby's credentials would wait for the next resync
// (hours, outside these tests).
func TestADeletedEnvironmentsStandbyWaitIsLookedAtAgain(t *testing.T) {
	ctx := context.Background()
	const name = "wait-deleted"
	standby := name + build.StandbySuffix
	env := sampleEnv(name)
	env.Spec.Failover = v1alpha1.Failover{Standby: v1alpha1.StandbyWarm, Trigger: v1alpha1.TriggerAutomatic}
	createReady(t, ctx, env, 13)
	dep := &appsv1.Deployment{}
	eventually(t, 20*time.Second, "the standby's Deployment", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: standby, Name: "call-handling"}, dep)
		return err == nil, fmt.Sprint(err), nil
	})
	old := dep.Spec.Template.DeepCopy()
	old.Spec.Containers[0].Image = "registry.example/111/call-handling@sha256:" + strings.Repeat("0", 64)
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "call-handling-older", Labels: old.Labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(dep, appsv1.SchemeGroupVersion.WithKind("Deployment"))}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To(int32(1)), Selector: dep.Spec.Selector, Template: *old},
	}
	if err := k8sClient.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "call-handling-older-1", Labels: old.Labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}},
		Spec: *old.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = "node-a"
	if err := k8sClient.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}

	patchIsolation(t, ctx, name, `{"mode":"Fenced","reason":"test"}`)
	req := ctrl.Request{NamespacedName: types.NamespacedName{Name: name}}
	waits := func(ctx context.Context) (bool, string, error) {
		res, err := suiteReconciler.Reconcile(ctx, req)
		if err != nil {
			return false, err.Error(), nil
		}
		return res.RequeueAfter > 0 && res.RequeueAfter <= time.Second, fmt.Sprintf("a reconcile asks to run again after %s", res.RequeueAfter), nil
	}
	eventually(t, 20*time.Second, "the standby's rotation waits for the pod of the older template", waits)

	responderDelete := getEnv(t, ctx, name)
	if err := k8sClient.Delete(ctx, responderDelete); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the deletion in the operator's cache", func(ctx context.Context) (bool, string, error) {
		e := &v1alpha1.HealthEnvironment{}
		if err := mgrCache.Get(ctx, client.ObjectKey{Name: name}, e); err != nil {
			return false, "", err
		}
		return !e.DeletionTimestamp.IsZero(), "not yet", nil
	})
	if ok, msg, _ := waits(ctx); !ok {
		t.Errorf("being deleted, while the standby's rotation waits: %s, want within a second", msg)
	}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{}); err != nil {
		t.Errorf("the pod of the older template: %v; the wait the test relies on is over", err)
	}
}

// TestPreservePodOnWhatThePlanSaw: a pod is preserved on the
// resourceVersion the plan observed it at, without reading it again; one
// changed since (its labels too) is read again and preserved as it is now;
// one replaced under the same name is left alone.
func TestPreservePodOnWhatThePlanSaw(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("keep-pods")
	const ns = "keep-pods-test"
	if err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	})
	owner := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "rs-1"}
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels:          map[string]string{v1alpha1.LabelEnvironment: env.Name, v1alpha1.LabelService: "referral"},
			OwnerReferences: []metav1.OwnerReference{owner}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.com/c:1"}}}}
	}
	for _, name := range []string{"as-seen", "changed", "replaced"} {
		if err := k8sClient.Create(ctx, pod(name)); err != nil {
			t.Fatal(err)
		}
	}
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	var gets atomic.Int32
	live := interceptor.NewClient(wc, interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		gets.Add(1)
		return c.Get(ctx, key, obj, opts...)
	}})
	r := &HealthEnvironmentReconciler{Client: k8sClient, APIReader: live}
	s := newScope(env, time.Now())
	s.iso = v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Ticket: "INC-9"}
	observed := func(name string) fence.Action {
		p := &corev1.Pod{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
			t.Fatal(err)
		}
		return fence.Action{Step: 4, Verb: fence.VerbPreserve, Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID, Version: p.ResourceVersion, Labels: p.Labels}
	}
	asSeen, changed, replaced := observed("as-seen"), observed("changed"), observed("replaced")
	// Changed since: its service label too.
	p := &corev1.Pod{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "changed"}, p); err != nil {
		t.Fatal(err)
	}
	p.Labels[v1alpha1.LabelService] = "call-handling"
	if err := k8sClient.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	// Replaced: another UID under the same name.
	if err := k8sClient.Delete(ctx, pod("replaced"), client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the pod gone", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "replaced"}, &corev1.Pod{})
		return apierrors.IsNotFound(err), "", client.IgnoreNotFound(err)
	})
	if err := k8sClient.Create(ctx, pod("replaced")); err != nil {
		t.Fatal(err)
	}

	if err := r.preservePod(ctx, s, asSeen); err != nil {
		t.Fatal(err)
	}
	if n := gets.Load(); n != 0 {
		t.Errorf("a pod as the plan saw it was read %d times, want 0", n)
	}
	if err := r.preservePod(ctx, s, changed); err != nil {
		t.Fatal(err)
	}
	if err := r.preservePod(ctx, s, replaced); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"as-seen": "referral", "changed": "call-handling", "replaced": ""} {
		got := &corev1.Pod{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, got); err != nil {
			t.Fatal(err)
		}
		preserved := got.Labels[v1alpha1.LabelEvidence] == "INC-9" && len(got.OwnerReferences) == 0 && got.Labels[v1alpha1.LabelService] == ""
		switch {
		case want == "" && got.Labels[v1alpha1.LabelEvidence] != "":
			t.Errorf("%s: the pod made anew was preserved: %v", name, got.Labels)
		case want != "" && (!preserved || got.Labels[build.LabelEvidenceService] != want):
			t.Errorf("%s: labels %v, owners %v; want it preserved as evidence of %s", name, got.Labels, got.OwnerReferences, want)
		}
	}
}

// TestAFenceScalesDownOnTheRunningTemplate: the fence scales careplane's
// Deployments to zero and changes nothing else of them. A new pod template
// (the fence's credentials revision on it) had the controller manager roll
// every fenced Deployment onto a new, empty ReplicaSet: writes for nothing,
// in the middle of a fleet fence, since no pod of either runs until the
// restore rebuilds the Deployment anyway.
func TestAFenceScalesDownOnTheRunningTemplate(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("same-template")
	ns := createReady(t, ctx, env, 9)
	var before appsv1.DeploymentList
	if err := k8sClient.List(ctx, &before, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(before.Items) != len(env.Spec.Services) {
		t.Fatalf("%d Deployments before the fence, want %d", len(before.Items), len(env.Spec.Services))
	}

	// Through the scale subresource, replicas alone: nothing else of the
	// Deployments is written.
	deployments := "/apis/apps/v1/namespaces/" + ns + "/deployments/"
	scaled, stopScaled := requests.Tap(func(method, path string) bool {
		return method == http.MethodPatch && strings.HasPrefix(path, deployments) && strings.HasSuffix(path, "/scale")
	})
	defer stopScaled()
	written, stopWritten := requests.Tap(func(method, path string) bool {
		return method != http.MethodGet && strings.HasPrefix(path, deployments) && !strings.HasSuffix(path, "/scale")
	})
	defer stopWritten()
	patchIsolation(t, ctx, env.Name, `{"mode":"Fenced","reason":"test","workloads":"Stop"}`)
	waitCondition(t, env.Name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	if scaled() < int64(len(before.Items)) || written() != 0 {
		t.Errorf("the fence sent %d patches of deployments/scale and %d other writes of the Deployments; want one at least per Deployment (%d), and none",
			scaled(), written(), len(before.Items))
	}
	for _, b := range before.Items {
		d := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(&b), d); err != nil {
			t.Fatal(err)
		}
		if n := *d.Spec.Replicas; n != 0 {
			t.Errorf("deployment %s: %d replicas under the fence, want 0", d.Name, n)
		}
		if !equality.Semantic.DeepEqual(d.Spec.Template, b.Spec.Template) {
			t.Errorf("deployment %s: the fence changed its pod template (credentials revision %q, was %q)", d.Name,
				d.Spec.Template.Annotations[build.AnnotationCredentialsRevision], b.Spec.Template.Annotations[build.AnnotationCredentialsRevision])
		}
	}
}

// TestAFenceVerifiesWhatItLastSaw: the verdict on a fenced namespace is
// taken on the fence's last look at it (after its last change), not on a
// look of its own: every pass of the fence lists the namespace's policies and
// pods as often as its ServiceAccounts, which only the fence's looks list.
func TestAFenceVerifiesWhatItLastSaw(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("looks-once")
	ns := createReady(t, ctx, env, 10)

	listed := func(resource string) (func() int64, func()) {
		return requests.Tap(func(method, path string) bool {
			return method == http.MethodGet && strings.HasSuffix(path, "/namespaces/"+ns+"/"+resource)
		})
	}
	accounts, stopAccounts := listed("serviceaccounts")
	policies, stopPolicies := listed("networkpolicies")
	pods, stopPods := listed("pods")
	defer stopAccounts()
	defer stopPolicies()
	defer stopPods()
	patchIsolation(t, ctx, env.Name, `{"mode":"Fenced","reason":"test"}`)
	waitCondition(t, env.Name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	if c := findCondition(getEnv(t, ctx, env.Name).Status.Conditions, v1alpha1.ConditionIsolationVerified); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("IsolationVerified = %+v, want True", c)
	}
	// And the passes of the fenced environment after it (resyncs).
	time.Sleep(resyncPeriod + time.Second)
	if accounts() < 3 {
		t.Fatalf("the fence looked %d times; the test would prove nothing", accounts())
	}
	if policies() != accounts() || pods() != accounts() {
		t.Errorf("%d looks at the fenced namespace listed its policies %d times and its pods %d times, want %d each",
			accounts(), policies(), pods(), accounts())
	}
}

// TestAFenceStartOnAStaleReadDropsNothing: the status write that records a
// fence's start answers with the server's newest status, but the pass's
// last status write is computed against the status the pass read. When the
// pass read it from a cache behind another write (a pass that failed after
// its status write, the fence gate having won the race for the record),
// that last write must conflict, not land as a merge patch against the
// stale base and silently drop what the stale base and the pass agree on.
func TestAFenceStartOnAStaleReadDropsNothing(t *testing.T) {
	ctx := context.Background()
	const name = "stale-start"
	createReady(t, ctx, sampleEnv(name), 22)
	stale := getEnv(t, ctx, name)
	stale.Status.Isolation = &v1alpha1.IsolationStatus{RemovedPolicies: []string{"allow-dns", "default-deny"}}
	// Not what the server holds: the server's status lists no removed
	// policy, as the failed pass wrote it.
	server := stale.DeepCopy()
	server.Status.Isolation = &v1alpha1.IsolationStatus{Ticket: "INC-NEW"}
	if err := k8sClient.Status().Update(ctx, server); err != nil {
		t.Fatal(err)
	}

	r := &HealthEnvironmentReconciler{Client: k8sClient, Recorder: events.NewFakeRecorder(100), Clock: clock.RealClock{}}
	s := newScope(stale.DeepCopy(), time.Now())
	before := s.status.DeepCopy()
	if err := r.markFenceStarted(ctx, s); err != nil {
		t.Fatal(err)
	}
	// This pass removed the same two policies, for the new fence.
	s.status.Isolation = &v1alpha1.IsolationStatus{Ticket: "INC-NEW", RemovedPolicies: []string{"allow-dns", "default-deny"}}
	err := r.writeStatus(ctx, s.env, before, s)
	got := getEnv(t, ctx, name).Status.Isolation
	if err == nil && (got == nil || len(got.RemovedPolicies) != 2) {
		t.Fatalf("the pass's status write landed on a stale base and dropped the removed policies: status.isolation = %+v", got)
	}
	if err != nil && !apierrors.IsConflict(errors.Unwrap(err)) {
		t.Fatalf("the pass's status write: %v, want a conflict", err)
	}

	// On a read that is the server's, the pass locks on the new version:
	// its last write lands (a fence is not made to retry every pass).
	// Once careplane's next pass has put the status back as it has it (no
	// fence, nothing for it to write while this part runs).
	waitCondition(t, name, v1alpha1.ConditionFenced, "False", v1alpha1.ReasonNotFenced)
	eventually(t, 10*time.Second, "status.isolation cleared by careplane", func(ctx context.Context) (bool, string, error) {
		iso := getEnv(t, ctx, name).Status.Isolation
		return iso == nil, fmt.Sprintf("%+v", iso), nil
	})
	fresh := getEnv(t, ctx, name)
	s = newScope(fresh.DeepCopy(), time.Now())
	before = s.status.DeepCopy()
	if err := r.markFenceStarted(ctx, s); err != nil {
		t.Fatal(err)
	}
	if now := getEnv(t, ctx, name); s.env.ResourceVersion != now.ResourceVersion || now.ResourceVersion == fresh.ResourceVersion {
		t.Fatalf("resourceVersion after the fence start on a fresh read = %s, want the server's %s", s.env.ResourceVersion, now.ResourceVersion)
	}
	s.status.Isolation = &v1alpha1.IsolationStatus{Ticket: "INC-NEW", RemovedPolicies: []string{"allow-dns"}}
	if err := r.writeStatus(ctx, s.env, before, s); err != nil {
		t.Fatalf("the pass's status write on a fresh read: %v", err)
	}
	if got := getEnv(t, ctx, name).Status.Isolation; got == nil || !slices.Equal(got.RemovedPolicies, []string{"allow-dns"}) {
		t.Fatalf("status.isolation = %+v, want the pass's", got)
	}
}

// TestWhatAFencePassDidOutlivesItsConflictedStatusWrite: the status write
// that records what a fence pass did (the policies it removed, the
// credentials it revoked) meets a newer resourceVersion, as it does when
// another writer touched the environment during the pass. The next pass
// finds nothing left to do; status.isolation must still say all the first
// did, as it does for the same fence whose write landed (the control).
func TestWhatAFencePassDidOutlivesItsConflictedStatusWrite(t *testing.T) {
	ctx := context.Background()
	fenceOf := func(name string, ipBase int, conflict bool) *v1alpha1.IsolationStatus {
		t.Helper()
		ns := createReady(t, ctx, sampleEnv(name), ipBase)
		// The tenant's own policy, planted before the fence: it goes.
		tenant := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-allow-all"},
			Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{}}}}
		if err := k8sClient.Create(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		failed := func() int64 { return 0 }
		if conflict {
			// The first status write that carries the removed policies
			// conflicts; every other write goes through.
			var once atomic.Bool
			var stop func()
			failed, stop = requests.FailBody(func(method, path string) bool {
				return method == http.MethodPatch && path == "/apis/careplane.io/v1alpha1/healthenvironments/"+name+"/status"
			}, func(body []byte) bool {
				return strings.Contains(string(body), `"removedPolicies"`) && once.CompareAndSwap(false, true)
			}, http.StatusConflict)
			defer stop()
		}
		annotateIsolationBy(t, ctx, name, "alice@responders")
		patchIsolation(t, ctx, name, `{"mode":"Fenced","reason":"test","ticket":"INC-ACCOUNT"}`)
		env := waitCondition(t, name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
		if conflict && failed() != 1 {
			t.Fatalf("%d status writes with the removed policies conflicted, want the first alone", failed())
		}
		if env.Status.Isolation == nil {
			t.Fatalf("%s: Fenced with no status.isolation", name)
		}
		return env.Status.Isolation
	}
	want := fenceOf("account-landed", 26, false)
	if !slices.Contains(want.RemovedPolicies, "tenant-allow-all (not careplane's)") || want.CredentialsRevoked == 0 {
		t.Fatalf("the control's status.isolation = %+v, want the tenant's policy removed and credentials revoked", want)
	}
	got := fenceOf("account-conflict", 27, true)
	if got.CredentialsRevoked != want.CredentialsRevoked || !slices.Equal(got.RemovedPolicies, want.RemovedPolicies) {
		t.Errorf("after a conflicted status write, status.isolation says %d credentials revoked and policies %v removed; "+
			"the same fence whose write landed says %d and %v", got.CredentialsRevoked, got.RemovedPolicies, want.CredentialsRevoked, want.RemovedPolicies)
	}
	// Recorded once: the passes of the resyncs that follow add nothing.
	time.Sleep(2*resyncPeriod + time.Second)
	later := getEnv(t, ctx, "account-conflict").Status.Isolation
	if later == nil || later.CredentialsRevoked != got.CredentialsRevoked || !slices.Equal(later.RemovedPolicies, got.RemovedPolicies) {
		t.Errorf("two resyncs later, status.isolation = %+v; want it as recorded (%d revoked, %v removed)", later, got.CredentialsRevoked, got.RemovedPolicies)
	}
}

// TestDeletedBetweenTheLiftAndTheFinalizerSwapKeepsTheEvidence: a restore
// lifts the freeze and only then, in the pass's last write, swaps the fence
// finalizer for the data finalizer. An environment deleted in between (by a
// GitOps prune, say, while that write keeps failing) is held by the fence
// finalizer alone, and careplane still keeps the evidence pods it named:
// their namespace is retained, out of the garbage collector's reach.
func TestDeletedBetweenTheLiftAndTheFinalizerSwapKeepsTheEvidence(t *testing.T) {
	ctx := context.Background()
	const name = "swap-window"
	// Fenced with workloads Preserve (the default): its pods are evidence.
	ns := createReady(t, ctx, sampleEnv(name), 24)
	annotateIsolationBy(t, ctx, name, "alice@responders")
	patchIsolation(t, ctx, name, `{"mode":"Fenced","reason":"test","ticket":"INC-SWAP"}`)
	waitCondition(t, name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	annotateIsolationBy(t, ctx, name, "bob@responders")
	patchIsolation(t, ctx, name, `{"mode":"None"}`)
	waitCondition(t, name, v1alpha1.ConditionRestoring, "True", v1alpha1.ReasonRebuilding)
	// Every write of the environment's finalizers fails from now on.
	failed, stop := requests.Fail(func(method, path string) bool {
		return method == http.MethodPatch && path == "/apis/careplane.io/v1alpha1/healthenvironments/"+name
	}, http.StatusServiceUnavailable)
	defer stop()
	setDeploymentsReady(t, ctx, ns)
	nsKey := client.ObjectKey{Name: ns}
	waitLiftedWhileFailing(t, ns, failed, "finalizer writes")
	held := getEnv(t, ctx, name)
	if !slices.Equal(held.Finalizers, []string{fenceFinalizer}) {
		t.Fatalf("finalizers between the lift and the swap = %v, want [%s] alone", held.Finalizers, fenceFinalizer)
	}
	nsObj := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, nsKey, nsObj); err != nil {
		t.Fatal(err)
	}
	if nsObj.Labels[build.LabelHoldsEvidence] != "true" {
		t.Fatalf("namespace %s after the lift: labels %v, want it to name the evidence pods", ns, nsObj.Labels)
	}

	if err := k8sClient.Delete(ctx, held); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the evidence's namespace retained", func(ctx context.Context) (bool, string, error) {
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, nsKey, nsObj); err != nil {
			return false, "", err
		}
		return nsObj.Labels[v1alpha1.LabelRetained] == "true" && len(nsObj.OwnerReferences) == 0,
			fmt.Sprintf("labels %v, owners %v", nsObj.Labels, nsObj.OwnerReferences), nil
	})
	stop()
	eventually(t, 30*time.Second, "the environment let go", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &v1alpha1.HealthEnvironment{})
		return apierrors.IsNotFound(err), fmt.Sprint(err), client.IgnoreNotFound(err)
	})
}

// TestAStandbyThatCannotBeListedIsStillFrozen: nothing wrong with the
// standby holds up the primary's fence or the move of traffic, so a failed
// read of the standby is the standby's error, not the fence's. Its
// Namespace read, the look says what that shows, and no more: the plan
// freezes it (the site traffic moves to is then closed to the tenant's
// writes) and plans nothing else from a partial look.
func TestAStandbyThatCannotBeListedIsStillFrozen(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("unlisted-standby")
	env.UID = "uid-unlisted-standby"
	env.Spec.Isolation = v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "test"}
	env.Spec.Failover = v1alpha1.Failover{Standby: v1alpha1.StandbyWarm, Trigger: v1alpha1.TriggerAutomatic}
	standby := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: env.Name + build.StandbySuffix,
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(env, v1alpha1.GroupVersion.WithKind("HealthEnvironment"))}}}
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(env).Build()
	unavailable := apierrors.NewServiceUnavailable("the server is busy")
	live := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(standby).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if l, ok := list.(*metav1.PartialObjectMetadataList); ok && l.Kind == "ServiceAccountList" {
				return unavailable
			}
			return c.List(ctx, list, opts...)
		},
	}).Build()
	r := &HealthEnvironmentReconciler{Client: c, APIReader: live, Recorder: events.NewFakeRecorder(100), Clock: clock.RealClock{}}
	s := newScope(env, time.Now())
	s.record = fence.Record{ID: "2030-01-01T00:00:00Z", Source: fence.SourceSpec}

	sb, err := r.observeStandby(ctx, s)
	if !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("observeStandby = %v, want the list's error", err)
	}
	if sb == nil || !sb.Unread || sb.FrozenFor != "" {
		t.Fatalf("the standby as looked at: %+v, want unread and not frozen", sb)
	}
	plan := fence.PlanFence(fence.Observed{Env: env, Isolation: env.Spec.Isolation, Record: s.record, Standby: sb})
	var got []string
	for _, a := range plan.Actions {
		if s.ofStandby(a) {
			got = append(got, string(a.Verb)+" "+a.Kind+" "+a.Name)
		}
	}
	if want := []string{"freeze Namespace " + standby.Name}; !slices.Equal(got, want) {
		t.Errorf("the standby's actions = %q, want %q", got, want)
	}
}
