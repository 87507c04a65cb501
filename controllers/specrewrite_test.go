package controllers

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/ssa"
)

// specWatch is a client that keeps every HealthEnvironment it reads (the
// objects the reconciler then works on) and checks every HealthEnvironment
// it writes against the API server's spec: careplane never writes spec, so
// an object it holds or sends must carry the user's spec as it is.
type specWatch struct {
	client.Client
	mu    sync.Mutex
	read  []*v1alpha1.HealthEnvironment
	wrong []string
	// sent are the status.isolation of the status writes, in order.
	sent []*v1alpha1.IsolationStatus
	// onRead, when set, changes each HealthEnvironment read.
	onRead func(*v1alpha1.HealthEnvironment)
}

func newSpecWatch(t *testing.T) *specWatch {
	t.Helper()
	direct, err := client.NewWithWatch(cfg, client.Options{Scheme: NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	w := &specWatch{}
	check := func(ctx context.Context, verb string, o client.Object) {
		env, ok := o.(*v1alpha1.HealthEnvironment)
		if !ok {
			return
		}
		if why := specDiffers(ctx, env); why != "" {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.wrong = append(w.wrong, verb+": "+why)
		}
	}
	w.Client = interceptor.NewClient(direct, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
			err := c.Get(ctx, key, o, opts...)
			if env, ok := o.(*v1alpha1.HealthEnvironment); ok && err == nil {
				w.mu.Lock()
				defer w.mu.Unlock()
				if w.onRead != nil {
					w.onRead(env)
				}
				w.read = append(w.read, env)
			}
			return err
		},
		Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			check(ctx, "update", o)
			return c.Update(ctx, o, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
			check(ctx, "patch", o)
			return c.Patch(ctx, o, p, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, o client.Object, opts ...client.SubResourceUpdateOption) error {
			check(ctx, sub+" update", o)
			return c.SubResource(sub).Update(ctx, o, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			check(ctx, sub+" patch", o)
			if env, ok := o.(*v1alpha1.HealthEnvironment); ok && sub == "status" {
				w.mu.Lock()
				w.sent = append(w.sent, env.Status.Isolation.DeepCopy())
				w.mu.Unlock()
			}
			return c.SubResource(sub).Patch(ctx, o, p, opts...)
		},
	})
	return w
}

// specDiffers says how env's spec differs from the API server's, or "".
func specDiffers(ctx context.Context, env *v1alpha1.HealthEnvironment) string {
	live := &v1alpha1.HealthEnvironment{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(env), live); err != nil {
		return fmt.Sprintf("reading %s: %v", env.Name, err)
	}
	if equality.Semantic.DeepEqual(env.Spec, live.Spec) {
		return ""
	}
	return fmt.Sprintf("%s: spec.isolation in memory %+v, on the API server %+v", env.Name, env.Spec.Isolation, live.Spec.Isolation)
}

// heldObjectsChanged lists the environments w read whose spec no longer is
// the API server's.
func (w *specWatch) heldObjectsChanged(ctx context.Context, name string) (found int, changed []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, env := range w.read {
		if env.Name != name {
			continue
		}
		found++
		if why := specDiffers(ctx, env); why != "" {
			changed = append(changed, why)
		}
	}
	return found, append(changed, w.wrong...)
}

// TestHeldFenceLeavesTheSpecAlone: while a FenceRequest holds an environment
// whose spec does not say Fenced, the reconciler and the FenceRequest
// controller carry out the request's isolation without rewriting the
// environment's spec in memory: every HealthEnvironment they read still
// carries the user's spec when they are done, and none they write carries
// another. A spec rewritten in memory is one serialisation away from being
// written (a status write, a patch built from the object), and readers
// could not tell the user's spec from the fence in force. It was also
// lost: a patch's answer, decoded into the object mid-reconcile, put the
// user's spec back, and the rest of the reconcile fenced and reported with
// the spec's empty ticket and reason and its workloads.
func TestHeldFenceLeavesTheSpecAlone(t *testing.T) {
	ctx := context.Background()
	const name = "spec-held"
	env := sampleEnv(name)
	env.Labels = map[string]string{"supplier": name}
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Patch(context.Background(), env, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
		_ = k8sClient.Delete(context.Background(), env)
	})
	markDeploymentsReadyWhenPresent(t, ctx, name, name+build.PrimarySuffix, 90)
	waitCondition(t, name, v1alpha1.ConditionReady, "True", "")

	fr := &v1alpha1.FenceRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.FenceRequestSpec{
			Selector: v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"supplier": name}},
			Reason:   "supplier breach", Ticket: "INC-4040", Workloads: v1alpha1.WorkloadsStop,
		},
	}
	if err := k8sClient.Create(ctx, fr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8sClient.Patch(context.Background(), fr, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
		_ = k8sClient.Delete(context.Background(), fr)
	})
	eventually(t, 10*time.Second, "the request holds the environment with its deny policy", func(ctx context.Context) (bool, string, error) {
		got, err := getRequest(t, ctx, fr.Name)
		if err != nil {
			return false, "", err
		}
		return got.Holds(name) && got.DenyPoliciesSettled(), fmt.Sprintf("%+v", got.Status), nil
	})

	t.Run("reconciler", func(t *testing.T) {
		w := newSpecWatch(t)
		r := &HealthEnvironmentReconciler{Client: w, APIReader: w, Recorder: events.NewFakeRecorder(1000), Clock: clock.RealClock{},
			Applier: ssa.NewApplier(w), Secrets: RandomSecret, RESTMapper: k8sClient.RESTMapper()}
		for range 2 { // the fence, then a pass over the fence in place
			if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: name}}); err != nil {
				t.Fatal(err)
			}
		}
		found, changed := w.heldObjectsChanged(ctx, name)
		if found == 0 {
			t.Fatal("the reconciler read no HealthEnvironment through the client: the test proves nothing")
		}
		for _, c := range changed {
			t.Errorf("reconciler of a request-held environment: %s", c)
		}
		got := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
			t.Fatal(err)
		}
		// The fence in force is still the request's, as the status says.
		if iso := got.Status.Isolation; iso == nil || iso.Ticket != "INC-4040" || iso.Reason != "supplier breach" || iso.Request != fr.Name {
			t.Errorf("status.isolation = %+v, want the request's ticket, reason and name", iso)
		}
		if got.Spec.Isolation.Mode == v1alpha1.IsolationFenced {
			t.Errorf("spec.isolation.mode = Fenced on the API server: careplane wrote spec")
		}
	})
	t.Run("a patch's answer mid-reconcile", func(t *testing.T) {
		// The answer to a patch of the environment (here the data
		// finalizer's, which the reconcile removes from an environment
		// that keeps no data) is decoded into the object the reconcile
		// holds, spec and all: the fence in force must not live there.
		w := newSpecWatch(t)
		w.onRead = func(env *v1alpha1.HealthEnvironment) { env.Finalizers = append(env.Finalizers, dataFinalizer) }
		r := &HealthEnvironmentReconciler{Client: w, APIReader: w, Recorder: events.NewFakeRecorder(1000), Clock: clock.RealClock{},
			Applier: ssa.NewApplier(w), Secrets: RandomSecret, RESTMapper: k8sClient.RESTMapper()}
		if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: name}}); err != nil {
			t.Fatal(err)
		}
		got := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, got); err != nil {
			t.Fatal(err)
		}
		if iso := got.Status.Isolation; iso == nil || iso.Ticket != "INC-4040" || iso.Reason != "supplier breach" {
			t.Errorf("status.isolation after the reconcile = %+v, want the request's ticket INC-4040 and reason", iso)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, iso := range w.sent {
			if iso == nil || iso.Ticket != "INC-4040" || iso.Reason != "supplier breach" {
				t.Errorf("status write sent status.isolation %+v, want the request's ticket INC-4040 and reason", iso)
			}
		}
	})
	t.Run("fence request controller", func(t *testing.T) {
		w := newSpecWatch(t)
		r := &FenceRequestReconciler{Client: w, Live: w, Clock: clock.RealClock{}, Parallel: 4}
		if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: fr.Name}}); err != nil {
			t.Fatal(err)
		}
		found, changed := w.heldObjectsChanged(ctx, name)
		if found == 0 {
			t.Fatal("the FenceRequest controller read no HealthEnvironment through the client: the test proves nothing")
		}
		for _, c := range changed {
			t.Errorf("FenceRequest controller: %s", c)
		}
	})
}
