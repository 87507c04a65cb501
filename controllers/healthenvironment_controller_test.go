package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/ssa"
)

func getEnv(t *testing.T, ctx context.Context, name string) *v1alpha1.HealthEnvironment {
	t.Helper()
	env := &v1alpha1.HealthEnvironment{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
		t.Fatalf("getting %s: %v", name, err)
	}
	return env
}

// updateEnv changes an environment's spec, retrying when the operator's
// status writes moved its resourceVersion in between.
func updateEnv(t *testing.T, ctx context.Context, name string, change func(*v1alpha1.HealthEnvironment)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		e := getEnv(t, ctx, name)
		change(e)
		return k8sClient.Update(ctx, e)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func waitCondition(t *testing.T, name, typ, status, reason string) *v1alpha1.HealthEnvironment {
	t.Helper()
	var env *v1alpha1.HealthEnvironment
	eventually(t, 20*time.Second, fmt.Sprintf("%s %s=%s/%s", name, typ, status, reason), func(ctx context.Context) (bool, string, error) {
		env = &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		s, r := condition(env, typ)
		return s == status && (reason == "" || r == reason), fmt.Sprintf("%s=%s/%s", typ, s, r), nil
	})
	return env
}

// markDeploymentsReady plays the controller manager: every Deployment of the
// environment in ns reports all its replicas ready at its current generation,
// and each gets Ready pods with IPs.
func markDeploymentsReady(t *testing.T, ctx context.Context, envName, ns string, ipBase int) {
	t.Helper()
	var deps appsv1.DeploymentList
	if err := k8sClient.List(ctx, &deps, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEnvironment: envName}); err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) == 0 {
		t.Fatalf("no deployments in %s", ns)
	}
	for i, d := range deps.Items {
		n := *d.Spec.Replicas
		d.Status = appsv1.DeploymentStatus{
			ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
		}
		if err := k8sClient.Status().Update(ctx, &d); err != nil {
			t.Fatalf("updating status of %s: %v", d.Name, err)
		}
		for j := int32(0); j < n; j++ {
			name := fmt.Sprintf("%s-%d", d.Name, j)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: d.Spec.Template.Labels},
				Spec:       *d.Spec.Template.Spec.DeepCopy(),
			}
			pod.Spec.NodeName = "node-a"
			if err := k8sClient.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("creating pod %s: %v", name, err)
			}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
				t.Fatal(err)
			}
			pod.Status = podReadyStatus(fmt.Sprintf("10.%d.%d.%d", ipBase, i, j+1))
			if err := k8sClient.Status().Update(ctx, pod); err != nil {
				t.Fatalf("updating pod status %s: %v", name, err)
			}
		}
	}
}

func TestProvisionWritesEveryChild(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("prov")
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), env) })

	got := waitCondition(t, "prov", v1alpha1.ConditionReady, "False", v1alpha1.ReasonProvisioning)
	for _, typ := range v1alpha1.ConditionTypes {
		if s, _ := condition(got, typ); s == "" {
			t.Errorf("condition %s not set on first sight", typ)
		}
	}
	if got.Status.ObservedGeneration != got.Generation {
		t.Errorf("observedGeneration %d, want %d", got.Status.ObservedGeneration, got.Generation)
	}
	if got.Status.Namespaces == nil || got.Status.Namespaces.Primary != "prov-primary" || got.Status.Namespaces.Front != "prov" {
		t.Errorf("status.namespaces = %+v", got.Status.Namespaces)
	}

	for _, name := range []string{"prov", "prov-primary"} {
		ns := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
			t.Fatalf("namespace %s: %v", name, err)
		}
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("namespace %s enforce label = %q", name, ns.Labels["pod-security.kubernetes.io/enforce"])
		}
		if len(ns.OwnerReferences) != 1 || ns.OwnerReferences[0].UID != got.UID {
			t.Errorf("namespace %s owner references = %+v", name, ns.OwnerReferences)
		}
	}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: "prov-standby"}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
		t.Errorf("standby namespace with standby None: %v", err)
	}

	ns := "prov-primary"
	key := func(name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }
	quota := &corev1.ResourceQuota{}
	if err := k8sClient.Get(ctx, key("careplane-quota"), quota); err != nil {
		t.Fatal(err)
	}
	if q := quota.Spec.Hard[corev1.ResourceRequestsCPU]; q.String() != "4" {
		t.Errorf("quota requests.cpu = %s, want the default 4", q.String())
	}
	if err := k8sClient.Get(ctx, key("careplane-defaults"), &corev1.LimitRange{}); err != nil {
		t.Errorf("limit range: %v", err)
	}
	for _, name := range []string{"default-deny", "allow-dns", "svc-call-handling", "svc-referral"} {
		if err := k8sClient.Get(ctx, key(name), &networkingv1.NetworkPolicy{}); err != nil {
			t.Errorf("network policy %s: %v", name, err)
		}
	}
	for _, svc := range []string{"call-handling", "referral"} {
		sa := &corev1.ServiceAccount{}
		if err := k8sClient.Get(ctx, key(svc), sa); err != nil {
			t.Fatalf("service account %s: %v", svc, err)
		}
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("service account %s automounts its token", svc)
		}
		dep := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, key(svc), dep); err != nil {
			t.Fatalf("deployment %s: %v", svc, err)
		}
		if !strings.HasPrefix(dep.Spec.Template.Spec.Containers[0].Image, "registry.example/111/"+svc+"@sha256:") {
			t.Errorf("deployment %s image %s", svc, dep.Spec.Template.Spec.Containers[0].Image)
		}
		if err := k8sClient.Get(ctx, key(svc), &corev1.Service{}); err != nil {
			t.Errorf("service %s: %v", svc, err)
		}
		front := &corev1.Service{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "prov", Name: svc}, front); err != nil {
			t.Fatalf("front service %s: %v", svc, err)
		}
		if len(front.Spec.Selector) != 0 {
			t.Errorf("front service %s has a selector %v; it must be selector-less", svc, front.Spec.Selector)
		}
	}
	if err := k8sClient.Get(ctx, key("call-handling"), &policyv1.PodDisruptionBudget{}); err != nil {
		t.Errorf("PDB for call-handling (2 replicas): %v", err)
	}
	if err := k8sClient.Get(ctx, key("referral"), &policyv1.PodDisruptionBudget{}); !apierrors.IsNotFound(err) {
		t.Errorf("PDB for referral (1 replica) should not exist: %v", err)
	}
	secret := &corev1.Secret{}
	if err := k8sClient.Get(ctx, key("call-handling.db-password"), secret); err != nil {
		t.Fatalf("generated secret: %v", err)
	}
	if n := len(secret.Data["value"]); n != 43 {
		t.Errorf("generated secret value is %d bytes, want 43 (256 random bits, base64url)", n)
	}

	// The controller manager's part: the Deployments roll out.
	markDeploymentsReady(t, ctx, "prov", ns, 1)
	got = waitCondition(t, "prov", v1alpha1.ConditionReady, "True", v1alpha1.ReasonAvailable)
	if got.Status.ReadyServices != "2/2" {
		t.Errorf("readyServices = %q", got.Status.ReadyServices)
	}
	eventually(t, 10*time.Second, "known-good revision recorded", func(ctx context.Context) (bool, string, error) {
		e := getEnv(t, ctx, "prov")
		return e.Status.KnownGoodRevision != "", "none yet", nil
	})
	rev := &appsv1.ControllerRevision{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "prov", Name: getEnv(t, ctx, "prov").Status.KnownGoodRevision}, rev); err != nil {
		t.Fatalf("known-good ControllerRevision: %v", err)
	}
	if !strings.Contains(string(rev.Data.Raw), "call-handling@sha256:") {
		t.Errorf("revision data does not hold the service templates: %s", rev.Data.Raw)
	}

	// The front EndpointSlices point at the ready primary pods.
	eventually(t, 10*time.Second, "front endpoints", func(ctx context.Context) (bool, string, error) {
		slice := &discoveryv1.EndpointSlice{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "prov", Name: "call-handling-careplane"}, slice); err != nil {
			return false, err.Error(), nil
		}
		var ips []string
		for _, e := range slice.Endpoints {
			ips = append(ips, e.Addresses...)
		}
		return len(ips) == 2 && slice.Labels[discoveryv1.LabelServiceName] == "call-handling", fmt.Sprint(ips), nil
	})
}

func TestNamespaceConflictIsNotAdopted(t *testing.T) {
	ctx := context.Background()
	foreign := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "taken-primary", Labels: map[string]string{"team": "someone-else"}}}
	if err := k8sClient.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	env := sampleEnv("taken")
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), env) })

	got := waitCondition(t, "taken", v1alpha1.ConditionReady, "False", v1alpha1.ReasonNamespaceConflict)
	if s, _ := condition(got, v1alpha1.ConditionDegraded); s != "True" {
		t.Errorf("Degraded = %s, want True", s)
	}
	ns := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: "taken-primary"}, ns); err != nil {
		t.Fatal(err)
	}
	if _, ok := ns.Labels[v1alpha1.LabelEnvironment]; ok || len(ns.OwnerReferences) != 0 {
		t.Errorf("foreign namespace was adopted: labels %v owners %v", ns.Labels, ns.OwnerReferences)
	}
	// Nothing half-done: not even the front namespace was created.
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: "taken"}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
		t.Errorf("front namespace created despite the conflict: %v", err)
	}
	eventually(t, 10*time.Second, "warning event", func(ctx context.Context) (bool, string, error) {
		var evs eventsv1.EventList
		if err := k8sClient.List(ctx, &evs); err != nil {
			return false, "", err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == "taken" && e.Type == corev1.EventTypeWarning && e.Reason == v1alpha1.ReasonNamespaceConflict {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%d events, none matching", len(evs.Items)), nil
	})
}

func TestSpecChangesRollOnlyWhatChangedAndPrune(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("edit")
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), env) })
	ns := "edit-primary"
	markDeploymentsReadyWhenPresent(t, ctx, "edit", ns, 2)
	waitCondition(t, "edit", v1alpha1.ConditionReady, "True", "")

	depGen := func(name string) int64 {
		d := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
			t.Fatal(err)
		}
		return d.Generation
	}
	secretBefore := &corev1.Secret{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "call-handling.db-password"}, secretBefore); err != nil {
		t.Fatal(err)
	}
	callGen, refGen := depGen("call-handling"), depGen("referral")

	// A new image for referral rolls referral only.
	updateEnv(t, ctx, "edit", func(e *v1alpha1.HealthEnvironment) {
		e.Spec.Services[1].Image = "registry.example/111/referral@sha256:" + strings.Repeat("cd", 32)
	})
	eventually(t, 10*time.Second, "referral rolls", func(ctx context.Context) (bool, string, error) {
		return depGen("referral") > refGen, "", nil
	})
	if g := depGen("call-handling"); g != callGen {
		t.Errorf("call-handling generation %d -> %d: an unrelated Deployment was rewritten", callGen, g)
	}
	secretAfter := &corev1.Secret{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(secretBefore), secretAfter); err != nil {
		t.Fatal(err)
	}
	if string(secretAfter.Data["value"]) != string(secretBefore.Data["value"]) {
		t.Error("a spec change rotated a generated secret")
	}

	// Removing referral deletes what it had.
	updateEnv(t, ctx, "edit", func(e *v1alpha1.HealthEnvironment) {
		e.Spec.Services = e.Spec.Services[:1]
		e.Spec.Services[0].TalksTo = nil
		e.Spec.Integrations = nil
	})
	eventually(t, 10*time.Second, "referral pruned", func(ctx context.Context) (bool, string, error) {
		for _, o := range []struct {
			obj client.Object
			key client.ObjectKey
		}{
			{&appsv1.Deployment{}, client.ObjectKey{Namespace: ns, Name: "referral"}},
			{&corev1.Service{}, client.ObjectKey{Namespace: ns, Name: "referral"}},
			{&corev1.ServiceAccount{}, client.ObjectKey{Namespace: ns, Name: "referral"}},
			{&networkingv1.NetworkPolicy{}, client.ObjectKey{Namespace: ns, Name: "svc-referral"}},
			{&corev1.Service{}, client.ObjectKey{Namespace: "edit", Name: "referral"}},
			{&discoveryv1.EndpointSlice{}, client.ObjectKey{Namespace: "edit", Name: "referral-careplane"}},
		} {
			if err := k8sClient.Get(ctx, o.key, o.obj); !apierrors.IsNotFound(err) {
				return false, fmt.Sprintf("%T %s still there (%v)", o.obj, o.key, err), nil
			}
		}
		return true, "", nil
	})
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "call-handling"}, &appsv1.Deployment{}); err != nil {
		t.Errorf("call-handling deleted along with referral: %v", err)
	}
}

// markDeploymentsReadyWhenPresent waits for the environment's Deployments to
// exist, then marks them ready.
func markDeploymentsReadyWhenPresent(t *testing.T, ctx context.Context, envName, ns string, ipBase int) {
	t.Helper()
	eventually(t, 10*time.Second, "deployments exist", func(ctx context.Context) (bool, string, error) {
		var deps appsv1.DeploymentList
		err := k8sClient.List(ctx, &deps, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEnvironment: envName})
		return err == nil && len(deps.Items) == 2, fmt.Sprintf("%d deployments", len(deps.Items)), nil
	})
	markDeploymentsReady(t, ctx, envName, ns, ipBase)
}

func TestSteadyStateSendsNoWrites(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("steady")
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), env) })
	markDeploymentsReadyWhenPresent(t, ctx, "steady", "steady-primary", 3)
	waitCondition(t, "steady", v1alpha1.ConditionReady, "True", "")
	eventually(t, 10*time.Second, "revision", func(ctx context.Context) (bool, string, error) {
		return getEnv(t, ctx, "steady").Status.KnownGoodRevision != "", "", nil
	})
	// Let the last writes of the rollout settle.
	time.Sleep(2 * time.Second)

	// The manager's resync period is short in this suite: every resync
	// reconciles every environment while nothing changes.
	before := writes.Load()
	reconcilesBefore := reconcileCount(t)
	time.Sleep(3 * resyncPeriod)
	if n := reconcileCount(t) - reconcilesBefore; n < 2 {
		t.Fatalf("only %d reconciles happened during the steady period; the test would prove nothing", n)
	}
	if n := writes.Load() - before; n != 0 {
		t.Errorf("operator sent %d writes in a steady state, want 0", n)
	}
}

// TestAStatusWriteSendsNoApply: the Deployment controller writes a
// Deployment's status on every pod it starts or stops, and each write wakes
// the reconcile. Keyed on the resourceVersion, every one of them had the
// Deployment applied again, unchanged: in a fleet restore, most of the
// apiserver's applies. A change to the spec is still put right.
func TestAStatusWriteSendsNoApply(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("status-churn")
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), env) })
	ns := "status-churn-primary"
	markDeploymentsReadyWhenPresent(t, ctx, env.Name, ns, 4)
	waitCondition(t, env.Name, v1alpha1.ConditionReady, "True", "")
	eventually(t, 10*time.Second, "revision", func(ctx context.Context) (bool, string, error) {
		return getEnv(t, ctx, env.Name).Status.KnownGoodRevision != "", "", nil
	})
	time.Sleep(2 * time.Second)

	var deps appsv1.DeploymentList
	if err := k8sClient.List(ctx, &deps, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEnvironment: env.Name}); err != nil {
		t.Fatal(err)
	}
	before, reconcilesBefore := writes.Load(), reconcileCount(t)
	for round := range 3 {
		for i := range deps.Items {
			d := &deps.Items[i]
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
				t.Fatal(err)
			}
			d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
				Reason: "NewReplicaSetAvailable", Message: fmt.Sprintf("round %d", round)}}
			if err := k8sClient.Status().Update(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second)
	}
	time.Sleep(resyncPeriod)
	if n := reconcileCount(t) - reconcilesBefore; n < 3 {
		t.Fatalf("only %d reconciles after the status writes; the test would prove nothing", n)
	}
	if n := writes.Load() - before; n != 0 {
		t.Errorf("operator sent %d writes after status writes alone, want 0", n)
	}

	// The spec, changed by another writer, is put back.
	d := &deps.Items[0]
	if err := k8sClient.Patch(ctx, d, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":7}}`))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "replicas put back", func(ctx context.Context) (bool, string, error) {
		cur := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(d), cur); err != nil {
			return false, "", err
		}
		return *cur.Spec.Replicas != 7, fmt.Sprintf("replicas %d", *cur.Spec.Replicas), nil
	})
}

// TestAStatusConflictIsRetriedSoon: a status write that meets a newer
// resourceVersion (the cache behind a write) is looked at again shortly and
// is not returned as an error, which would grow the queue's per-item
// backoff: after an API server outage had grown it, a few conflicts left an
// environment Ready in fact but Provisioning in its status for minutes
// (TestAPIServerOutageDuringProvisioning, under load).
func TestAStatusConflictIsRetriedSoon(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("status-conflict")
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), env) })
	c, conflicts := statusConflicting(t, env.Name)
	r := &HealthEnvironmentReconciler{Client: c, APIReader: c, Recorder: events.NewFakeRecorder(100), Clock: clock.RealClock{},
		Applier: ssa.NewApplier(c), Secrets: RandomSecret, RESTMapper: k8sClient.RESTMapper()}
	res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(env)})
	if conflicts.Load() == 0 {
		t.Fatal("the reconcile wrote no status: the test proves nothing")
	}
	if err != nil || res.RequeueAfter <= 0 || res.RequeueAfter > time.Second {
		t.Errorf("Reconcile after a status conflict = %+v, %v; want no error and a requeue within 1s", res, err)
	}
}

// statusConflicting is a client of the test API server whose every
// write of the status of HealthEnvironment name fails with a conflict, as
// when the cache is behind a write; conflicts counts them.
func statusConflicting(t *testing.T, name string) (client.WithWatch, *atomic.Int32) {
	t.Helper()
	cw, err := client.NewWithWatch(cfg, client.Options{Scheme: NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	conflicts := &atomic.Int32{}
	return interceptor.NewClient(cw, interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			if sub == "status" && o.GetName() == name {
				conflicts.Add(1)
				return apierrors.NewConflict(v1alpha1.GroupVersion.WithResource("healthenvironments").GroupResource(), o.GetName(),
					errors.New("the object has been modified; please apply your changes to the latest version and try again"))
			}
			return c.SubResource(sub).Patch(ctx, o, p, opts...)
		},
	}), conflicts
}
