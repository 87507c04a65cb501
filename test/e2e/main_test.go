//go:build e2e

// Package e2e holds careplane's end-to-end tests. They run against a real
// cluster — the local kwok cluster that `make test-e2e` starts (a real etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler, with simulated
// nodes) — named by KUBECONFIG. The operator is the manager binary, built
// from ./cmd/manager and run as a separate process with a token of its own
// ServiceAccount, so the RBAC generated from the code's markers is exactly
// what it has.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/controllers"
)

var (
	cfg       *rest.Config
	k8sClient client.Client
	clientset *kubernetes.Clientset
	// theOperator is the careplane manager process the tests run against.
	theOperator *operator
)

// resyncPeriod is the operator's --sync-period in these tests: short, so
// that the steady-state tests see several full resyncs in seconds.
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
	// The test process's own clients log nothing; the operator's log is
	// its own file.
	ctrllog.SetLogger(logr.Discard())

	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfPathMissing: true,
	}); err != nil {
		fmt.Fprintf(os.Stderr, "installing CRDs: %v\n", err)
		return 1
	}
	// The operator's namespace, ServiceAccount and generated RBAC; the
	// incident responders, a group, bound here for the tests to act as; and
	// the guardrail admission policies.
	for _, args := range [][]string{
		{"apply", "-f", "../../config/manager/namespace.yaml"},
		{"apply", "-k", "../../config/rbac"},
		{"create", "clusterrolebinding", "careplane-e2e-responders", "--clusterrole=cluster-admin",
			"--group=" + v1alpha1.DefaultResponderGroup, "--dry-run=client", "-o", "yaml"},
		// Every test runs with the guardrails, as production does.
		{"apply", "-k", guardrailsKustomization},
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
	// The admission policies learn a new CRD's kind some seconds after it
	// is Established, and refuse its objects until then (ServiceUnavailable,
	// "There can be a delay ..."): wait for that here, not in the first test.
	for i := 0; ; i++ {
		out, err := kubectlOutput("apply", "--dry-run=server", "-f", "../../config/samples/wales-111.yaml")
		if err == nil {
			break
		}
		if !strings.Contains(out, "There can be a delay") || i == 60 {
			fmt.Fprintf(os.Stderr, "a server-side dry run of a HealthEnvironment: %v\n%s\n", err, out)
			return 1
		}
		time.Sleep(time.Second)
	}
	k8sClient, err = client.New(cfg, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "creating client: %v\n", err)
		return 1
	}
	clientset = kubernetes.NewForConfigOrDie(cfg)

	dir, err := os.MkdirTemp("", "careplane-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	theOperator, err = buildOperator(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := theOperator.start(); err != nil {
		fmt.Fprintf(os.Stderr, "starting the operator: %v\n%s\n", err, theOperator.logTail(40))
		return 1
	}
	fmt.Fprintf(os.Stderr, "careplane manager running; log: %s\n", theOperator.logPath)
	code := m.Run()
	theOperator.stop()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "the last lines of the manager's log (%s):\n%s\n", theOperator.logPath, theOperator.logTail(60))
	} else {
		_ = os.RemoveAll(dir)
	}
	return code
}

// reconcileCount is how many reconciles the operator has finished since it
// last started.
func reconcileCount(t *testing.T) int64 {
	t.Helper()
	n, err := theOperator.metricSum(context.Background(), "controller_runtime_reconcile_total", map[string]string{"controller": "healthenvironment"})
	if err != nil {
		t.Fatal(err)
	}
	return int64(n)
}

// operatorWrites is how many mutating requests the operator has sent since
// it last started, from client-go's request metric.
func operatorWrites(t *testing.T) int64 {
	t.Helper()
	n, err := theOperator.metricSum(context.Background(), "rest_client_requests_total", map[string]string{"method": "POST|PUT|PATCH|DELETE"})
	if err != nil {
		t.Fatal(err)
	}
	return int64(n)
}
