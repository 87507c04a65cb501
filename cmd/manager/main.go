// Command manager runs the careplane operator.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"net/http"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/careplane/careplane/controllers"
	"github.com/careplane/careplane/internal/version"
)

// managerFlags are the manager's command-line flags. The Helm chart's
// manager.* values set them; main_test.go checks that the chart's defaults
// are these.
type managerFlags struct {
	metricsAddr   string
	metricsSecure bool
	metricsCerts  string
	enableHTTP2   bool
	probeAddr     string
	leaderElect   bool
	leaderElectNS string
	leaseDuration time.Duration
	renewDeadline time.Duration
	retryPeriod   time.Duration
	qps           float64
	burst         int
	syncPeriod    time.Duration
	workers       int
	fenceWorkers  int
	fenceQPS      float64
	fenceBurst    int
	fleetMaxHold  time.Duration
	pprofAddr     string
	memLimit      int64
	memLimitRatio float64
}

// bindFlags defines the manager's flags on fs.
func bindFlags(fs *flag.FlagSet) (*managerFlags, *zap.Options) {
	f := &managerFlags{}
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "The address the Prometheus metrics endpoint binds to; 0 disables it.")
	fs.BoolVar(&f.metricsSecure, "metrics-secure", false, "Serve metrics over HTTPS, only to clients that authenticate with a Kubernetes token and are authorized to get the non-resource URL /metrics (TokenReview and SubjectAccessReview). The Helm chart turns it on; plain HTTP is for local development.")
	fs.StringVar(&f.metricsCerts, "metrics-cert-dir", "", "A directory holding tls.crt and tls.key for --metrics-secure (reloaded when they change); empty means a self-signed certificate generated at start.")
	fs.BoolVar(&f.enableHTTP2, "enable-http2", false, "Serve HTTP/2 on the secure metrics endpoint; off because of the HTTP/2 rapid reset and stream cancellation vulnerabilities (CVE-2023-44487, CVE-2023-39325).")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "The address the liveness and readiness probes bind to.")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "Elect a leader, so that only one replica reconciles at a time.")
	fs.StringVar(&f.leaderElectNS, "leader-election-namespace", "", "The namespace of the leader election Lease (default: the namespace the manager runs in).")
	// controller-runtime's defaults. A replica that dies without releasing
	// the Lease (a crash, a lost node) is replaced after about
	// --leader-election-lease-duration.
	fs.DurationVar(&f.leaseDuration, "leader-election-lease-duration", 15*time.Second, "How long a standby replica waits, after the leader last renewed the Lease, before it takes over.")
	fs.DurationVar(&f.renewDeadline, "leader-election-renew-deadline", 10*time.Second, "How long the leader keeps trying to renew the Lease before it gives up leading and exits; less than the lease duration.")
	fs.DurationVar(&f.retryPeriod, "leader-election-retry-period", 2*time.Second, "How often replicas try to acquire or renew the Lease; less than the renew deadline.")
	fs.Float64Var(&f.qps, "kube-api-qps", 300, "Requests per second the manager may send to the API server (client-side rate limit; the API server's priority and fairness applies as well).")
	fs.IntVar(&f.burst, "kube-api-burst", 600, "Burst of requests the manager may send to the API server above --kube-api-qps.")
	fs.DurationVar(&f.syncPeriod, "sync-period", 10*time.Hour, "How often every cached object is reconciled again even when nothing changed.")
	fs.IntVar(&f.workers, "concurrency", controllers.DefaultWorkers, "How many environments are reconciled at once.")
	fs.IntVar(&f.fenceWorkers, "fence-concurrency", controllers.DefaultFenceWorkers, "How many deny policies the fence gate writes at once (the first step of a fence, on its own queue).")
	fs.Float64Var(&f.fenceQPS, "fence-api-qps", 200, "Requests per second the fence gate may send, apart from --kube-api-qps, so that other work never holds back a deny policy.")
	fs.IntVar(&f.fenceBurst, "fence-api-burst", 500, "Burst of requests the fence gate may send above --fence-api-qps.")
	fs.DurationVar(&f.fleetMaxHold, "fleet-fence-max-hold", 30*time.Second, "While a fleet fence is arriving (10 or more fence requests within a second), fences whose deny policy is in place hold their later steps, so that every deny policy of the fleet goes first; this bounds the hold per environment. 0 disables it.")
	fs.StringVar(&f.pprofAddr, "pprof-bind-address", "0", "The address a Go pprof endpoint binds to, for profiling; 0 (the default) disables it.")
	fs.Int64Var(&f.memLimit, "memory-limit", 0, "The container's memory limit in bytes (the Helm chart passes resources.limits.memory); 0 when there is none.")
	fs.Float64Var(&f.memLimitRatio, "memory-limit-ratio", 0.9, "The share of --memory-limit the Go runtime keeps its memory under (a soft limit, as GOMEMLIMIT sets; GOMEMLIMIT itself takes precedence).")
	opts := &zap.Options{}
	opts.BindFlags(fs)
	return f, opts
}

func main() {
	// `manager preflight`: the install's checks, for helm test (preflight.go).
	if len(os.Args) > 1 && os.Args[1] == "preflight" {
		os.Exit(runPreflight(os.Args[2:], os.Stdout, os.Stderr))
	}
	f, opts := bindFlags(flag.CommandLine)
	flag.Parse()

	logger := zap.New(zap.UseFlagOptions(opts))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
	setupLog := ctrl.Log.WithName("setup")

	if f.memLimitRatio < 0 || f.memLimitRatio > 1 {
		setupLog.Error(nil, "--memory-limit-ratio must be between 0 and 1")
		os.Exit(2)
	}
	if limit, ok := memoryLimit(f.memLimit, f.memLimitRatio); ok {
		debug.SetMemoryLimit(limit)
		setupLog.Info("Set the Go runtime's memory limit", "bytes", limit, "containerLimit", f.memLimit)
	}

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(f.qps), f.burst
	cacheOpts := controllers.CacheOptions()
	cacheOpts.SyncPeriod = &f.syncPeriod
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        controllers.NewScheme(),
		Cache:                         cacheOpts,
		Metrics:                       metricsOptions(f.metricsAddr, f.metricsSecure, f.metricsCerts, f.enableHTTP2),
		HealthProbeBindAddress:        f.probeAddr,
		PprofBindAddress:              f.pprofAddr,
		LeaderElection:                f.leaderElect,
		LeaderElectionID:              "careplane.careplane.io",
		LeaderElectionNamespace:       f.leaderElectNS,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &f.leaseDuration,
		RenewDeadline:                 &f.renewDeadline,
		RetryPeriod:                   &f.retryPeriod,
	})
	if err != nil {
		setupLog.Error(err, "Unable to create the manager")
		os.Exit(1)
	}
	if f.workers < 1 || f.fenceWorkers < 1 || f.fenceQPS <= 0 || f.fenceBurst < 1 {
		setupLog.Error(nil, "--concurrency, --fence-concurrency, --fence-api-qps and --fence-api-burst must be positive")
		os.Exit(2)
	}
	if f.fleetMaxHold < 0 {
		setupLog.Error(nil, "--fleet-fence-max-hold must not be negative (0 disables the hold)")
		os.Exit(2)
	}
	var fleet *controllers.FleetFence
	if f.fleetMaxHold > 0 {
		fleet = controllers.NewFleetFence()
		fleet.MaxHold = f.fleetMaxHold
	}
	rec := controllers.NewReconciler(mgr)
	rec.Workers = f.workers
	rec.FleetFence = fleet
	if err := rec.SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "Unable to set up the HealthEnvironment controller")
		os.Exit(1)
	}
	points := controllers.NewRecoveryReconciler(mgr)
	if !points.Served {
		setupLog.Info("The cluster serves no VolumeSnapshot API: environments with spec.recovery report RecoveryPoints=False until it does and careplane restarts")
	}
	if err := points.SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "Unable to set up the recovery point controller")
		os.Exit(1)
	}
	gate, err := controllers.NewFenceGate(mgr, float32(f.fenceQPS), f.fenceBurst)
	if err == nil {
		gate.Workers = f.fenceWorkers
		gate.FleetFence = fleet
		err = gate.SetupWithManager(mgr)
	}
	if err != nil {
		setupLog.Error(err, "Unable to set up the fence gate")
		os.Exit(1)
	}
	// Fleet fences as one object: deny policies through the gate's client.
	requests := &controllers.FenceRequestReconciler{Client: gate.Client, Live: gate.Live, Clock: gate.Clock, Parallel: controllers.DefaultFenceRequestParallel}
	if err := requests.SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "Unable to set up the FenceRequest controller")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "Unable to set up the health check")
		os.Exit(1)
	}
	// Ready once the cache has synced: before that a reconcile would see
	// an empty world.
	var synced atomic.Bool
	ctx := ctrl.SetupSignalHandler()
	go func() { synced.Store(mgr.GetCache().WaitForCacheSync(ctx)) }()
	if err := mgr.AddReadyzCheck("readyz", func(*http.Request) error {
		if !synced.Load() {
			return errors.New("the cache has not synced yet")
		}
		return nil
	}); err != nil {
		setupLog.Error(err, "Unable to set up the ready check")
		os.Exit(1)
	}

	setupLog.Info("Starting careplane", "version", version.Version)
	if err := mgr.Start(ctx); err != nil {
		setupLog.Error(err, "The manager stopped with an error")
		os.Exit(1)
	}
}

// metricsOptions serves metrics on addr: over plain HTTP to anyone, or with
// secure over HTTPS, where controller-runtime's filter asks the API server
// who the client is (TokenReview) and whether it may get /metrics
// (SubjectAccessReview), as the kubebuilder scaffold does. Without a
// certificate directory the server uses a self-signed certificate.
func metricsOptions(addr string, secure bool, certDir string, http2 bool) metricsserver.Options {
	o := metricsserver.Options{BindAddress: addr}
	if !secure {
		return o
	}
	o.SecureServing = true
	o.FilterProvider = filters.WithAuthenticationAndAuthorization
	o.CertDir = certDir
	if !http2 {
		o.TLSOpts = append(o.TLSOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	return o
}

// memoryLimit is the soft memory limit for the Go runtime: ratio of the
// container's limit, so that the garbage collector works harder near the
// limit instead of the heap growing past it to an OOM kill (by default the
// runtime lets the heap double its live size before collecting, whatever
// the container's limit). An explicit GOMEMLIMIT wins, and without a
// container limit there is nothing to set.
func memoryLimit(containerLimit int64, ratio float64) (int64, bool) {
	if os.Getenv("GOMEMLIMIT") != "" || containerLimit <= 0 || ratio <= 0 {
		return 0, false
	}
	return int64(float64(containerLimit) * ratio), true
}
