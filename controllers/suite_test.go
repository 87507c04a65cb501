package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/testutil"
)

// The integration tests run the real reconciler in a real manager against a
// real kube-apiserver and etcd (envtest, binaries from `make
// cluster-binaries`). There is no controller manager or scheduler, so the
// tests play their part where needed: they set Deployment status and create
// pods by hand.
var (
	cfg       *rest.Config
	k8sClient client.Client
	// mgrCache is the operator's cache, to check what it holds.
	mgrCache cache.Cache
	// writes counts the mutating requests the operator's client sends.
	writes testutil.WriteCounter
	// requests counts the requests it sends, as each test asks.
	requests testutil.Taps
	// suiteFleetFence is the reconciler's and the gate's FleetFence: a
	// short hold, so that a test that keeps a fleet fence arriving waits
	// little, and no other test's few fences ever make one.
	suiteFleetFence = &FleetFence{Threshold: 10, Window: time.Second, MaxHold: 3 * time.Second}
	// suiteReconciler is the manager's HealthEnvironment reconciler, for a
	// test that reads what a reconcile returns.
	suiteReconciler *HealthEnvironmentReconciler
)

// resyncPeriod is the cache resync period in this suite: short, so that the
// steady-state test sees several full resyncs.
const resyncPeriod = 2 * time.Second

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run these tests with `make test-integration`, which builds the control plane binaries")
		return 1
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	testEnv := &envtest.Environment{
		// careplane's CRDs, and the CSI snapshot API's (from the storage
		// binaries, make storage-binaries) for the recovery points.
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases"), filepath.Join("..", "bin", "storage", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	cfg, err = testEnv.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting envtest: %v\n", err)
		return 1
	}
	defer func() {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping envtest: %v\n", err)
		}
	}()
	k8sClient, err = client.New(cfg, client.Options{Scheme: NewScheme()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "creating client: %v\n", err)
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opCfg := rest.CopyConfig(cfg)
	opCfg.Wrap(writes.Wrap)
	opCfg.Wrap(requests.Wrap)
	cacheOpts := CacheOptions()
	cacheOpts.SyncPeriod = ptr.To(resyncPeriod)
	mgr, err := ctrl.NewManager(opCfg, ctrl.Options{
		Scheme:                 NewScheme(),
		Cache:                  cacheOpts,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "creating manager: %v\n", err)
		return 1
	}
	mgrCache = mgr.GetCache()
	rec := NewReconciler(mgr)
	rec.FleetFence = suiteFleetFence
	suiteReconciler = rec
	if err := rec.SetupWithManager(mgr); err != nil {
		fmt.Fprintf(os.Stderr, "setting up reconciler: %v\n", err)
		return 1
	}
	points := NewRecoveryReconciler(mgr)
	if !points.Served {
		fmt.Fprintln(os.Stderr, "the VolumeSnapshot CRDs are not served: run `make storage-binaries`")
		return 1
	}
	if err := points.SetupWithManager(mgr); err != nil {
		fmt.Fprintf(os.Stderr, "setting up the recovery point controller: %v\n", err)
		return 1
	}
	gate, err := NewFenceGate(mgr, 100, 200)
	if err == nil {
		gate.FleetFence = suiteFleetFence
		err = gate.SetupWithManager(mgr)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "setting up the fence gate: %v\n", err)
		return 1
	}
	requests := &FenceRequestReconciler{Client: gate.Client, Live: gate.Live, Clock: gate.Clock, Parallel: DefaultFenceRequestParallel}
	if err := requests.SetupWithManager(mgr); err != nil {
		fmt.Fprintf(os.Stderr, "setting up the FenceRequest controller: %v\n", err)
		return 1
	}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "manager: %v\n", err)
		}
	}()
	return m.Run()
}

// eventually polls cond until it returns true or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := ""
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		ok, why, err := cond(ctx)
		last = why
		return ok, err
	})
	if err != nil {
		t.Fatalf("%s: not within %s: %v (last: %s)", what, timeout, err, last)
	}
}

// sampleEnv is a small 111-shaped environment.
func sampleEnv(name string) *v1alpha1.HealthEnvironment {
	digest := "@sha256:" + strings.Repeat("ab", 32)
	return &v1alpha1.HealthEnvironment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.HealthEnvironmentSpec{
			Tenant: v1alpha1.Tenant{DisplayName: "NHS 111 Test", ODSCode: "RT4"},
			Services: []v1alpha1.Service{
				{
					Name: "call-handling", Image: "registry.example/111/call-handling" + digest,
					Replicas: ptr.To(int32(2)), Port: 8080, Critical: true, TalksTo: []string{"referral"},
					AllowFrom: []v1alpha1.TrafficPeer{{NamespaceSelector: &v1alpha1.LabelSelector{
						MatchLabels: map[string]v1alpha1.LabelValue{"kubernetes.io/metadata.name": "gateway"}}}},
					GeneratedSecrets: []string{"db-password"},
				},
				{
					Name: "referral", Image: "registry.example/111/referral" + digest,
					Replicas: ptr.To(int32(1)), Port: 8443,
				},
			},
			Integrations: []v1alpha1.Integration{{
				Name: "ambulance-cad", CIDRs: []string{"10.20.0.0/16"}, Ports: []int32{443}, Services: []string{"referral"},
			}},
		},
	}
}

// condition returns the status of a condition type ("" when absent) and its reason.
func condition(env *v1alpha1.HealthEnvironment, t string) (string, string) {
	for _, c := range env.Status.Conditions {
		if c.Type == t {
			return string(c.Status), c.Reason
		}
	}
	return "", ""
}

// podReadyStatus is the status of a Ready pod with an IP.
func podReadyStatus(ip string) corev1.PodStatus {
	return corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
}

// reconcileCount is how many reconciles the controller has finished.
func reconcileCount(t *testing.T) int64 {
	t.Helper()
	n, err := testutil.ReconcileCount("healthenvironment")
	if err != nil {
		t.Fatal(err)
	}
	return n
}
