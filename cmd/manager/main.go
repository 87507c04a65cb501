// Command manager runs the careplane operator.
package main

import (
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
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/careplane/careplane/controllers"
	"github.com/careplane/careplane/internal/version"
)

func main() {
	var (
		metricsAddr   string
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
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "The address the Prometheus metrics endpoint binds to; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "The address the liveness and readiness probes bind to.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so that only one replica reconciles at a time.")
	flag.StringVar(&leaderElectNS, "leader-election-namespace", "", "The namespace of the leader election Lease (default: the namespace the manager runs in).")
	// controller-runtime's defaults. A replica that dies without releasing
	// the Lease (a crash, a lost node) is replaced after about
	// --leader-election-lease-duration.
	flag.DurationVar(&leaseDuration, "leader-election-lease-duration", 15*time.Second, "How long a standby replica waits, after the leader last renewed the Lease, before it takes over.")
	flag.DurationVar(&renewDeadline, "leader-election-renew-deadline", 10*time.Second, "How long the leader keeps trying to renew the Lease before it gives up leading and exits; less than the lease duration.")
	flag.DurationVar(&retryPeriod, "leader-election-retry-period", 2*time.Second, "How often replicas try to acquire or renew the Lease; less than the renew deadline.")
	flag.Float64Var(&qps, "kube-api-qps", 300, "Requests per second the manager may send to the API server (client-side rate limit; the API server's priority and fairness applies as well).")
	flag.IntVar(&burst, "kube-api-burst", 600, "Burst of requests the manager may send to the API server above --kube-api-qps.")
	flag.DurationVar(&syncPeriod, "sync-period", 10*time.Hour, "How often every cached object is reconciled again even when nothing changed.")
	flag.IntVar(&workers, "concurrency", controllers.DefaultWorkers, "How many environments are reconciled at once.")
	flag.IntVar(&fenceWorkers, "fence-concurrency", controllers.DefaultFenceWorkers, "How many deny policies the fence gate writes at once (the first step of a fence, on its own queue).")
	flag.Float64Var(&fenceQPS, "fence-api-qps", 200, "Requests per second the fence gate may send, apart from --kube-api-qps, so that other work never holds back a deny policy.")
	flag.IntVar(&fenceBurst, "fence-api-burst", 500, "Burst of requests the fence gate may send above --fence-api-qps.")
	flag.DurationVar(&fleetMaxHold, "fleet-fence-max-hold", 30*time.Second, "While a fleet fence is arriving (10 or more fence requests within a second), fences whose deny policy is in place hold their later steps, so that every deny policy of the fleet goes first; this bounds the hold per environment. 0 disables it.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0", "The address a Go pprof endpoint binds to, for profiling; 0 (the default) disables it.")
	flag.Int64Var(&memLimit, "memory-limit", 0, "The container's memory limit in bytes (the Helm chart passes resources.limits.memory); 0 when there is none.")
	flag.Float64Var(&memLimitRatio, "memory-limit-ratio", 0.9, "The share of --memory-limit the Go runtime keeps its memory under (a soft limit, as GOMEMLIMIT sets; GOMEMLIMIT itself takes precedence).")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()

	logger := zap.New(zap.UseFlagOptions(&opts))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
	setupLog := ctrl.Log.WithName("setup")

	if memLimitRatio < 0 || memLimitRatio > 1 {
		setupLog.Error(nil, "--memory-limit-ratio must be between 0 and 1")
		os.Exit(2)
	}
	if limit, ok := memoryLimit(memLimit, memLimitRatio); ok {
		debug.SetMemoryLimit(limit)
		setupLog.Info("Set the Go runtime's memory limit", "bytes", limit, "containerLimit", memLimit)
	}

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(qps), burst
	cacheOpts := controllers.CacheOptions()
	cacheOpts.SyncPeriod = &syncPeriod
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        controllers.NewScheme(),
		Cache:                         cacheOpts,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        probeAddr,
		PprofBindAddress:              pprofAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              "careplane.careplane.io",
		LeaderElectionNamespace:       leaderElectNS,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renewDeadline,
		RetryPeriod:                   &retryPeriod,
	})
	if err != nil {
		setupLog.Error(err, "Unable to create the manager")
		os.Exit(1)
	}
	if workers < 1 || fenceWorkers < 1 || fenceQPS <= 0 || fenceBurst < 1 {
		setupLog.Error(nil, "--concurrency, --fence-concurrency, --fence-api-qps and --fence-api-burst must be positive")
		os.Exit(2)
	}
	if fleetMaxHold < 0 {
		setupLog.Error(nil, "--fleet-fence-max-hold must not be negative (0 disables the hold)")
		os.Exit(2)
	}
	var fleet *controllers.FleetFence
	if fleetMaxHold > 0 {
		fleet = controllers.NewFleetFence()
		fleet.MaxHold = fleetMaxHold
	}
	rec := controllers.NewReconciler(mgr)
	rec.Workers = workers
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
	gate, err := controllers.NewFenceGate(mgr, float32(fenceQPS), fenceBurst)
	if err == nil {
		gate.Workers = fenceWorkers
		gate.FleetFence = fleet
		err = gate.SetupWithManager(mgr)
	}
	if err != nil {
		setupLog.Error(err, "Unable to set up the fence gate")
		os.Exit(1)
	}
	// Fleet fences as one object: deny policies through the gate's client.
	requests := &controllers.FenceRequestReconciler{Client: gate.Client, Live: gate.Live, Now: time.Now, Parallel: controllers.DefaultFenceRequestParallel}
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
