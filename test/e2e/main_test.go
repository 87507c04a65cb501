//go:build e2e

// Package e2e holds careplane's end-to-end tests. They run against a real
// cluster — the local kwok cluster that `make test-e2e` starts (a real etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler, with simulated
// nodes) — named by KUBECONFIG. The operator runs in the test process with
// the same wiring as cmd/manager.
package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/controllers"
)

var (
	cfg       *rest.Config
	k8sClient client.Client
	clientset *kubernetes.Clientset
	// operatorWrites counts the mutating requests the operator sends (events
	// aside).
	operatorWrites atomic.Int64
)

// operatorUser is the identity the operator runs as: the ServiceAccount
// config/rbac binds the generated ClusterRole to.
const operatorUser = "system:serviceaccount:careplane-system:careplane-manager"

// resyncPeriod is the operator's cache resync period in these tests: short,
// so that the steady-state test sees several full resyncs in seconds.
const resyncPeriod = 5 * time.Second

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	kubeconfig := os.Getenv("KUBECONFIG")
	if kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "KUBECONFIG is not set: run the e2e tests with `make test-e2e`, which starts a kwok cluster")
		return 1
	}
	var err error
	cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loading %s: %v\n", kubeconfig, err)
		return 1
	}
	cfg.QPS, cfg.Burst = 200, 400
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr), zap.Level(zapLevel())))

	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfPathMissing: true,
	}); err != nil {
		fmt.Fprintf(os.Stderr, "installing CRDs: %v\n", err)
		return 1
	}
	// The operator runs as its own ServiceAccount with the RBAC generated
	// from its markers: a missing verb fails these tests. Responders are a
	// group, bound here for the tests to act as.
	for _, args := range [][]string{
		{"apply", "-f", "../../config/manager/namespace.yaml"},
		{"apply", "-k", "../../config/rbac"},
		{"create", "clusterrolebinding", "careplane-e2e-responders", "--clusterrole=cluster-admin",
			"--group=" + v1alpha1.DefaultResponderGroup, "--dry-run=client", "-o", "yaml"},
	} {
		out, err := kubectlOutput(args...)
		if err == nil && args[0] == "create" {
			out, err = kubectlStdin(out, "apply", "-f", "-")
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubectl %v: %v\n%s\n", args, err, out)
			return 1
		}
	}
	k8sClient, err = client.New(cfg, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "creating client: %v\n", err)
		return 1
	}
	clientset = kubernetes.NewForConfigOrDie(cfg)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, err := startOperator(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the operator: %v\n", err)
		return 1
	}
	code := m.Run()
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "the operator did not stop within 30s")
	}
	return code
}

// startOperator runs careplane's manager in this process, wired as
// cmd/manager wires it.
func startOperator(ctx context.Context) (<-chan struct{}, error) {
	opCfg := rest.CopyConfig(cfg)
	opCfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			switch req.Method {
			case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
				if !strings.Contains(req.URL.Path, "/events") {
					operatorWrites.Add(1)
				}
			}
			return rt.RoundTrip(req)
		})
	})
	cacheOpts := controllers.CacheOptions()
	cacheOpts.SyncPeriod = ptr.To(resyncPeriod)
	mgr, err := ctrl.NewManager(opCfg, ctrl.Options{
		Scheme:                 controllers.NewScheme(),
		Cache:                  cacheOpts,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return nil, err
	}
	if err := controllers.NewReconciler(mgr).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "operator stopped: %v\n", err)
		}
	}()
	return done, nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
