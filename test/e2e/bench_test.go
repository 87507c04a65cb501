//go:build e2e && bench

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// The benchmark (make bench): careplane against N environments of three
// services on the local kwok cluster, beside the same work done by kubectl
// and by a minimal Go client. It prints a table and writes
// docs/benchmarks.md. Parameters come from the environment:
//
//	BENCH_N         environments (default 500)
//	BENCH_SAMPLES   single fences timed, idle and again during a resync (20)
//	BENCH_FAILOVER  environments with a Warm standby, fenced one by one (10)
//	BENCH_RUNBOOK_PARALLEL  kubectl runbooks run at once in the fleet fence (8)
//	BENCH_OUT       the report (docs/benchmarks.md; "" prints only)
//	BENCH_OPERATOR_FLAGS  more flags for the operator, space-separated
//	BENCH_QUICK     "true": careplane alone, for the loop of changing it: no
//	                baselines, no steady-state minute, and no report file
//	                unless BENCH_OUT names one
//	BENCH_PROFILE_DIR  a directory for CPU profiles of the operator and of
//	                kube-apiserver over the first 30 s of the fleet fence and of
//	                the fleet restore, and every request kube-apiserver
//	                answered in each (<phase>-requests.txt; floor-requests.txt
//	                for the kubectl floor of the cold start)
//
// The data phase runs last, on environments of its own, so the rows above
// it stay comparable with runs before it existed:
//
//	BENCH_DATA_N    environments with a volume and recovery points (BENCH_N);
//	                lower it where N volumes snapshotted every interval is
//	                more than the machine's storage can take
//	BENCH_DATA_INTERVAL  their spec.recovery.interval (30s; at least 10s)
//	BENCH_DATA_WINDOW    how long the writes, CPU and points are counted
//	                (4 intervals), after a warm-up of 2 intervals
//	BENCH_DATA_SAMPLES   restores timed with volumes, and as many without
//	                (BENCH_SAMPLES; at most BENCH_DATA_N)
type benchParams struct {
	n, samples, failover, runbookParallel int
	dataN, dataSamples                    int
	dataInterval, dataWindow              time.Duration
	out                                   string
	syncPeriod                            time.Duration
	quick                                 bool
	operatorFlags                         []string
	profileDir                            string
}

func benchParamsFromEnv(t *testing.T) benchParams {
	p := benchParams{n: 500, samples: 20, failover: 10, runbookParallel: 8,
		out: filepath.Join("..", "..", "docs", "benchmarks.md"), syncPeriod: 20 * time.Second}
	for _, v := range []struct {
		name string
		into *int
	}{{"BENCH_N", &p.n}, {"BENCH_SAMPLES", &p.samples}, {"BENCH_FAILOVER", &p.failover}, {"BENCH_RUNBOOK_PARALLEL", &p.runbookParallel}} {
		if s := os.Getenv(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive integer", v.name, s)
			}
			*v.into = n
		}
	}
	if s, ok := os.LookupEnv("BENCH_OUT"); ok {
		p.out = s
	}
	p.dataN, p.dataSamples, p.dataInterval = p.n, p.samples, 30*time.Second
	for _, v := range []struct {
		name string
		into *int
	}{{"BENCH_DATA_N", &p.dataN}, {"BENCH_DATA_SAMPLES", &p.dataSamples}} {
		if s := os.Getenv(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive integer", v.name, s)
			}
			*v.into = n
		}
	}
	for _, v := range []struct {
		name string
		into *time.Duration
	}{{"BENCH_DATA_INTERVAL", &p.dataInterval}, {"BENCH_DATA_WINDOW", &p.dataWindow}} {
		if s := os.Getenv(v.name); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				t.Fatalf("%s=%q: want a positive duration, e.g. 30s", v.name, s)
			}
			*v.into = d
		}
	}
	if p.dataWindow == 0 {
		p.dataWindow = 4 * p.dataInterval
	}
	if p.dataInterval < 10*time.Second {
		t.Fatalf("BENCH_DATA_INTERVAL=%s: spec.recovery.interval is at least 10s", p.dataInterval)
	}
	if os.Getenv("BENCH_DATA_SAMPLES") == "" {
		p.dataSamples = min(p.samples, p.dataN)
	}
	if p.dataSamples > p.dataN {
		t.Fatalf("BENCH_DATA_SAMPLES=%d is more than BENCH_DATA_N=%d environments with volumes", p.dataSamples, p.dataN)
	}
	p.operatorFlags = strings.Fields(os.Getenv("BENCH_OPERATOR_FLAGS"))
	p.profileDir = os.Getenv("BENCH_PROFILE_DIR")
	if os.Getenv("BENCH_QUICK") == "true" {
		p.quick = true
		if _, ok := os.LookupEnv("BENCH_OUT"); !ok {
			p.out = ""
		}
	}
	if p.n < p.samples*2+p.failover {
		t.Fatalf("BENCH_N=%d is too small for %d samples twice and %d failover environments", p.n, p.samples, p.failover)
	}
	return p
}

// replicaPrefix renames careplane's label and annotation keys on the copies
// of its objects that the baselines act on, so that careplane neither
// caches nor acts on them, and its guardrails do not apply to them.
const replicaPrefix = "bench."

// replicaOf renders the object one of careplane's builders describes (ac) as
// such a copy: keys renamed, and no owner.
func replicaOf(t *testing.T, ac any) *unstructured.Unstructured {
	t.Helper()
	raw, err := json.Marshal(ac)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal([]byte(strings.ReplaceAll(string(raw), `"careplane.io/`, `"`+replicaPrefix+`careplane.io/`)), &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetOwnerReferences(nil)
	return u
}

// benchConfig is the admin's connection without a client-side rate limit:
// the benchmark's clients must not be what is measured.
func benchConfig() *rest.Config {
	c := rest.CopyConfig(cfg)
	c.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	return c
}

// benchAdmin is a client with the admin's identity and no rate limit.
func benchAdmin(t *testing.T) client.Client {
	t.Helper()
	c, err := client.New(benchConfig(), client.Options{Scheme: k8sClient.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// benchEnv is a HealthEnvironment of three services: a critical one with a
// generated secret that talks to a second, and a third; with failover, a
// Warm standby takes over on a fence.
func benchEnv(name, set string, failover bool) *v1alpha1.HealthEnvironment {
	d := func(c string) string { return "@sha256:" + strings.Repeat(c, 64) }
	env := &v1alpha1.HealthEnvironment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench.careplane.io/set": set}},
		Spec: v1alpha1.HealthEnvironmentSpec{
			Tenant: v1alpha1.Tenant{DisplayName: "Benchmark " + name},
			Services: []v1alpha1.Service{
				{Name: "call-handling", Image: "registry.example/111/call-handling" + d("1"), Replicas: ptr.To(int32(1)),
					Port: 8080, Critical: true, TalksTo: []string{"referral"}, GeneratedSecrets: []string{"db-password"},
					AllowFrom: []v1alpha1.TrafficPeer{{NamespaceSelector: &v1alpha1.LabelSelector{
						MatchLabels: map[string]v1alpha1.LabelValue{"kubernetes.io/metadata.name": "gateway"}}}}},
				{Name: "referral", Image: "registry.example/111/referral" + d("2"), Replicas: ptr.To(int32(1)),
					Port: 8443, GeneratedSecrets: []string{"cad-key"}},
				{Name: "booking", Image: "registry.example/111/booking" + d("3"), Replicas: ptr.To(int32(1)), Port: 8080},
			},
			Integrations: []v1alpha1.Integration{{Name: "ambulance-cad", CIDRs: []string{"10.20.0.0/16"}, Ports: []int32{443}, Services: []string{"referral"}}},
			Isolation: v1alpha1.Isolation{ForensicsFrom: &v1alpha1.LabelSelector{
				MatchLabels: map[string]v1alpha1.LabelValue{"kubernetes.io/metadata.name": "forensics"}}},
		},
	}
	if failover {
		env.Spec.Failover = v1alpha1.Failover{Standby: v1alpha1.StandbyWarm, Trigger: v1alpha1.TriggerAutomatic}
	}
	return env
}

// replica renders what careplane writes for env into unstructured objects
// no operator manages: careplane's keys renamed, no owner. floor is what
// the kubectl floor applies (the namespace, service accounts and
// Deployments: what pods need to run); rest is everything else.
func replica(t *testing.T, env *v1alpha1.HealthEnvironment) (floor, rest []*unstructured.Unstructured) {
	t.Helper()
	names := build.NamespaceNames(env)
	add := func(into *[]*unstructured.Unstructured, ac any) { *into = append(*into, replicaOf(t, ac)) }
	add(&floor, build.Namespace(env, names.Primary, build.SiteLabelPrimary))
	for _, svc := range env.Spec.Services {
		add(&floor, build.ServiceAccount(env, names.Primary, svc))
		add(&floor, build.Deployment(env, v1alpha1.SitePrimary, names.Primary, svc, ""))
	}
	add(&rest, build.Namespace(env, names.Front, build.SiteLabelFront))
	add(&rest, build.ResourceQuota(env, names.Primary))
	add(&rest, build.LimitRange(env, names.Primary))
	for _, p := range build.NetworkPolicies(env, v1alpha1.SitePrimary, names.Primary) {
		add(&rest, p)
	}
	for i, svc := range env.Spec.Services {
		add(&rest, build.Service(env, names.Primary, svc))
		for _, g := range svc.GeneratedSecrets {
			add(&rest, build.GeneratedSecret(env, names.Primary, svc, g, "", []byte("benchmark")))
		}
		add(&rest, build.FrontService(env, svc))
		add(&rest, build.FrontEndpointSlice(env, svc, v1alpha1.SitePrimary,
			[]build.Endpoint{{IP: fmt.Sprintf("10.99.%d.%d", i, 1), PodName: svc.Name, Ready: true}}))
	}
	return floor, rest
}

// createAll creates objects with parallel workers (the untimed set-up),
// namespaces first.
func createAll(t *testing.T, c client.Client, objs []*unstructured.Unstructured, parallel int) {
	t.Helper()
	var namespaces, rest []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			namespaces = append(namespaces, o)
		} else {
			rest = append(rest, o)
		}
	}
	createParallel(t, c, namespaces, parallel)
	createParallel(t, c, rest, parallel)
}

func createParallel(t *testing.T, c client.Client, objs []*unstructured.Unstructured, parallel int) {
	t.Helper()
	errs := make(chan error, len(objs))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, o := range objs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := c.Create(context.Background(), o.DeepCopy()); err != nil && !apierrors.IsAlreadyExists(err) {
				errs <- fmt.Errorf("%s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// startBenchOperator restarts the operator as the chart runs it, with a
// resync short enough to fall inside the steady-state window and to time
// fences during one, plus extra flags; the suite's operator comes back at
// the end. It returns the operator's idle figures.
func startBenchOperator(t *testing.T, p benchParams, extra ...string) procStats {
	t.Helper()
	theOperator.stop()
	flags := append([]string{fmt.Sprintf("--sync-period=%s", p.syncPeriod)}, p.operatorFlags...)
	if err := theOperator.start(append(flags, extra...)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		theOperator.stop()
		_ = theOperator.start()
	})
	time.Sleep(5 * time.Second)
	return operatorProc(t)
}

// operatorProc reads the operator process's resident memory (now and peak, bytes)
// and CPU time (user+system, seconds) from /proc.
type procStats struct {
	rss, peak int64
	cpu       float64
}

func operatorProc(t *testing.T) procStats {
	t.Helper()
	theOperator.mu.Lock()
	pid := theOperator.cmd.Process.Pid
	theOperator.mu.Unlock()
	var s procStats
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			if f[0] == "VmRSS:" {
				s.rss = kb * 1024
			} else {
				s.peak = kb * 1024
			}
		}
	}
	if s.cpu, err = procCPU(strconv.Itoa(pid)); err != nil {
		t.Fatal(err)
	}
	return s
}

// benchIsolation sets spec.isolation of an environment, as c.
func benchIsolation(ctx context.Context, c client.Client, name string, isolation map[string]any) error {
	raw, err := json.Marshal(map[string]any{"spec": map[string]any{"isolation": isolation}})
	if err != nil {
		return err
	}
	env := &v1alpha1.HealthEnvironment{}
	env.Name = name
	return c.Patch(ctx, env, client.RawPatch(types.MergePatchType, raw))
}

func fencedIsolation(ticket string) map[string]any {
	return map[string]any{"mode": "Fenced", "reason": "benchmark", "ticket": ticket, "workloads": "Preserve",
		"forensicsFrom": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "forensics"}}}
}

func unfencedIsolation() map[string]any {
	return map[string]any{"mode": "None", "reason": nil, "ticket": nil, "workloads": nil}
}

// row is one line of the report: a distribution of times, or (count set,
// s empty) a count whose figures are in what.
type row struct {
	what   string
	s      summary
	count  int
	target string
	met    string
}

func (r row) cells() []string {
	d := func(v time.Duration) string {
		switch {
		case r.s.n == 0:
			return "–"
		case v < time.Second:
			return fmt.Sprintf("%.1f ms", float64(v.Microseconds())/1000)
		default:
			return fmt.Sprintf("%.2f s", v.Seconds())
		}
	}
	n := "–"
	if r.s.n > 0 {
		n = strconv.Itoa(r.s.n)
	} else if r.count > 0 {
		n = strconv.Itoa(r.count)
	}
	return []string{r.what, n, d(r.s.min), d(r.s.med), d(r.s.p99), d(r.s.max), r.target, r.met}
}

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// TestBench runs the benchmark. See docs/benchmarks.md for what each
// measurement means.
func TestBench(t *testing.T) {
	p := benchParamsFromEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := benchAdmin(t)
	respCfg := benchConfig()
	respCfg.Impersonate = rest.ImpersonationConfig{UserName: "bench-responder", Groups: []string{v1alpha1.DefaultResponderGroup, "system:authenticated"}}
	resp, err := client.New(respCfg, client.Options{Scheme: k8sClient.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker()
	if err := tr.start(ctx); err != nil {
		t.Fatal(err)
	}
	plugin := buildPlugin(t)
	var rows []row
	var notes []string
	logf := benchLogf
	started := time.Now()
	// The code measured is the tree as it was when the test was built.
	commit := benchCommit()

	pprofAddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	idle := startBenchOperator(t, p, "--zap-time-encoding=rfc3339nano", "--pprof-bind-address="+pprofAddr)
	logf("operator idle: RSS %.1f MiB", float64(idle.rss)/(1<<20))

	// --- Cold start: the kubectl floor, then careplane ---------------------
	fleet := make([]*v1alpha1.HealthEnvironment, p.n)
	for i := range fleet {
		fleet[i] = benchEnv(fmt.Sprintf("cp-%04d", i), "fleet", i < p.failover)
	}
	var floorKeys []string
	var floorEnvs, fleetCopies, singleCopies []*v1alpha1.HealthEnvironment
	var floorTimes []time.Duration
	var floorAll, applied time.Duration
	var floorCost string
	if !p.quick {
		floorFile := filepath.Join(t.TempDir(), "floor.yaml")
		var b strings.Builder
		for i := range p.n {
			env := benchEnv(fmt.Sprintf("ka-%04d", i), "copy", false)
			floorEnvs = append(floorEnvs, env)
			objs, _ := replica(t, env)
			for _, o := range objs {
				raw, err := json.Marshal(o.Object)
				if err != nil {
					t.Fatal(err)
				}
				b.WriteString("---\n")
				b.Write(raw)
				b.WriteString("\n")
				if o.GetKind() == "Deployment" {
					floorKeys = append(floorKeys, o.GetNamespace()+"/"+o.GetName())
				}
			}
		}
		if err := os.WriteFile(floorFile, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		logf("floor: kubectl apply of %d namespaces, %d service accounts, %d Deployments", p.n, len(floorKeys), len(floorKeys))
		cpuBefore := cpuByProcess()
		reqBefore, err := apiRequests(ctx, clientset)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if out, err := kubectlOutput("apply", "-f", floorFile); err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out[:min(len(out), 2000)])
		}
		applied = time.Since(t0)
		floorTimes, err = tr.waitAll(20*time.Minute, t0, floorKeys, tr.availableAfter(t0))
		if err != nil {
			t.Fatalf("floor Deployments available: %v", err)
		}
		floorAll = summarize(floorTimes).max
		logf("floor: kubectl returned after %s; all %d Deployments available after %s", applied.Round(time.Millisecond), len(floorKeys), floorAll.Round(time.Millisecond))
		// What the floor costs, to set beside what the fleet restore costs
		// (the restore's target is a ratio to this floor).
		reqAvailable, err := apiRequests(ctx, clientset)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeRequests(p.profileDir, "floor", reqBefore, reqAvailable); err != nil {
			t.Errorf("writing the floor's requests: %v", err)
		}
		floorCost = "Cold start, kubectl floor, until every Deployment is available: " + cpuSpent(cpuBefore, cpuByProcess(), time.Since(t0)) +
			"; kube-apiserver answered " + requestsBetween(reqBefore, reqAvailable, 12) + "."
	}

	before := operatorProc(t)
	t0 := time.Now()
	createdAt := make([]time.Time, p.n)
	{
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		for i, env := range fleet {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				createdAt[i] = time.Now()
				if err := admin.Create(ctx, env.DeepCopy()); err != nil {
					t.Errorf("creating %s: %v", env.Name, err)
				}
			})
		}
		wg.Wait()
	}
	names := make([]string, p.n)
	for i, env := range fleet {
		names[i] = env.Name
	}
	if _, err := tr.waitAll(30*time.Minute, t0, names, tr.readyAfter(t0)); err != nil {
		t.Fatalf("cold start: %v", err)
	}
	var coldPer []time.Duration
	tr.mu.Lock()
	for i, env := range fleet {
		at, _ := firstAfter(tr.ready[env.Name], t0)
		coldPer = append(coldPer, at.Sub(createdAt[i]))
	}
	tr.mu.Unlock()
	coldAll := time.Since(t0)
	after := operatorProc(t)
	logf("cold start: all %d Ready after %s; CPU %.1f s; peak RSS %.1f MiB", p.n, coldAll.Round(time.Millisecond), after.cpu-before.cpu, float64(after.peak)/(1<<20))
	if !p.quick {
		rows = append(rows, row{what: fmt.Sprintf("cold start, kubectl floor: each of %d Deployments available after `kubectl apply` began", len(floorKeys)), s: summarize(floorTimes)})
	}
	rows = append(rows, row{what: fmt.Sprintf("cold start, careplane: each of %d environments Ready after its create", p.n), s: summarize(coldPer)})
	notes = append(notes,
		fmt.Sprintf("Cold start, all Ready: careplane %.1f s for %d environments (%d Deployments and ~%d other objects); kubectl floor %.1f s for the same %d Deployments with their namespaces and service accounts only (kubectl itself returned after %.1f s). Ratio %.2f.",
			coldAll.Seconds(), p.n, 3*p.n, 30*p.n, floorAll.Seconds(), len(floorKeys), applied.Seconds(), coldAll.Seconds()/floorAll.Seconds()),
		fmt.Sprintf("Operator during the cold start: %.1f CPU seconds, peak RSS %.1f MiB (idle %.1f MiB).",
			after.cpu-before.cpu, float64(after.peak)/(1<<20), float64(idle.rss)/(1<<20)))
	if floorCost != "" {
		notes = append(notes, floorCost)
	}

	// --- Steady state and memory -------------------------------------------
	if !p.quick {
		benchSteadyState(t, p, idle, &notes)
	}

	// --- The copies the baselines fence -------------------------------------
	if !p.quick {
		fleetCopies, singleCopies = benchCopies(t, admin, tr, p, floorEnvs)
	}
	// --- Single fences among N ---------------------------------------------
	single := func(env *v1alpha1.HealthEnvironment, ticket string) (deny, fenced time.Duration) {
		t.Helper()
		ns := build.SiteNamespace(env, v1alpha1.SitePrimary)
		t0 := time.Now()
		if err := benchIsolation(ctx, resp, env.Name, fencedIsolation(ticket)); err != nil {
			t.Fatalf("fencing %s: %v", env.Name, err)
		}
		d, err := tr.waitAll(time.Minute, t0, []string{ns}, tr.denyAfter(t0))
		if err != nil {
			t.Fatalf("deny policy of %s: %v", env.Name, err)
		}
		f, err := tr.waitAll(2*time.Minute, t0, []string{env.Name}, tr.fencedAfter(t0))
		if err != nil {
			t.Fatalf("Fenced of %s: %v", env.Name, err)
		}
		return d[0], f[0]
	}
	restore := func(env *v1alpha1.HealthEnvironment) time.Duration {
		t.Helper()
		ns := build.SiteNamespace(env, v1alpha1.SitePrimary)
		t0 := time.Now()
		if err := benchIsolation(ctx, resp, env.Name, unfencedIsolation()); err != nil {
			t.Fatalf("restoring %s: %v", env.Name, err)
		}
		l, err := tr.waitAll(2*time.Minute, t0, []string{ns}, tr.liftedAfter(t0))
		if err != nil {
			t.Fatalf("fence of %s lifted: %v", env.Name, err)
		}
		r, err := tr.waitAll(2*time.Minute, t0, []string{env.Name}, tr.readyAfter(t0))
		if err != nil {
			t.Fatalf("%s Ready after restore: %v", env.Name, err)
		}
		return max(l[0], r[0])
	}
	var denyIdle, fencedIdle, denyResync, fencedResync, restores, failovers []time.Duration
	plain := fleet[p.failover:]
	for i := range p.samples {
		d, f := single(plain[i], fmt.Sprintf("INC-S%d", i))
		denyIdle, fencedIdle = append(denyIdle, d), append(fencedIdle, f)
		restores = append(restores, restore(plain[i]))
	}
	logf("single fence, idle: deny p99 %s, Fenced p99 %s; restore median %s", summarize(denyIdle).p99, summarize(fencedIdle).p99, summarize(restores).med)
	resyncSeen := 0
	for i := range p.samples {
		env := plain[p.samples+i]
		// Fence when the reconciler's queue holds at least a quarter of the
		// fleet: a resync is under way.
		deadline := time.Now().Add(3 * p.syncPeriod)
		depth := 0.0
		for time.Now().Before(deadline) {
			depth, err = theOperator.metricSum(ctx, "workqueue_depth", map[string]string{"name": "healthenvironment"})
			if err != nil {
				t.Fatal(err)
			}
			if depth >= float64(p.n/4) {
				resyncSeen++
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		d, f := single(env, fmt.Sprintf("INC-R%d", i))
		denyResync, fencedResync = append(denyResync, d), append(fencedResync, f)
		restores = append(restores, restore(env))
	}
	logf("single fence during resync (%d of %d caught the queue at >= N/4): deny p99 %s, Fenced p99 %s", resyncSeen, p.samples, summarize(denyResync).p99, summarize(fencedResync).p99)
	for i := range p.failover {
		env := fleet[i]
		names := build.NamespaceNames(env)
		tr.watchFailover(names.Front, names.Standby, []string{"call-handling"})
		t0 := time.Now()
		if err := benchIsolation(ctx, resp, env.Name, fencedIsolation(fmt.Sprintf("INC-F%d", i))); err != nil {
			t.Fatal(err)
		}
		fo, err := tr.waitAll(time.Minute, t0, []string{names.Front}, tr.standbyAfter(t0))
		if err != nil {
			t.Fatalf("failover of %s: %v", env.Name, err)
		}
		failovers = append(failovers, fo[0])
		if _, err := tr.waitAll(2*time.Minute, t0, []string{env.Name}, tr.fencedAfter(t0)); err != nil {
			t.Fatal(err)
		}
		restores = append(restores, restore(env))
	}
	logf("failover: median %s", summarize(failovers).med)

	// --- Single fences, the two baselines -----------------------------------
	runbook := filepath.Join(t.TempDir(), "runbook-fence.sh")
	if raw, err := os.ReadFile(filepath.Join("testdata", "runbook-fence.sh")); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(runbook, raw, 0o700); err != nil {
		t.Fatal(err)
	}
	denyFile := func(env *v1alpha1.HealthEnvironment) string {
		ns := build.SiteNamespace(env, v1alpha1.SitePrimary)
		raw, err := json.Marshal(replicaOf(t, build.FencePolicy(env, ns, true)).Object)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), env.Name+"-deny.json")
		if err := os.WriteFile(f, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	runbookCmd := func(env *v1alpha1.HealthEnvironment, ticket string) *exec.Cmd {
		names := build.NamespaceNames(env)
		cmd := exec.Command(runbook, denyFile(env), names.Primary, names.Front, ticket)
		cmd.Env = append(os.Environ(), "KUBECTL="+kubectlPath(), "SERVICES=call-handling referral booking",
			"SECRETS=call-handling.db-password referral.cad-key")
		return cmd
	}
	var rbDeny, rbDone, flDeny, flDone []time.Duration
	// (None in a quick run.)
	for i := range len(singleCopies) / 2 {
		env := singleCopies[i]
		ns := build.SiteNamespace(env, v1alpha1.SitePrimary)
		cmd := runbookCmd(env, "INC-RB")
		t0 := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("runbook for %s: %v\n%s", env.Name, err, out)
		}
		rbDone = append(rbDone, time.Since(t0))
		d, err := tr.waitAll(time.Minute, t0, []string{ns}, tr.denyAfter(t0))
		if err != nil {
			t.Fatal(err)
		}
		rbDeny = append(rbDeny, d[0])
	}
	logf("runbook single: deny p99 %s, done median %s", summarize(rbDeny).p99, summarize(rbDone).med)
	for i := range len(singleCopies) / 2 {
		env := singleCopies[p.samples+i]
		plan := floorFencePlan(t, ctx, admin, env)
		t0 := time.Now()
		deny, done := plan.run(ctx, admin)
		ns := build.SiteNamespace(env, v1alpha1.SitePrimary)
		if _, err := tr.waitAll(time.Minute, t0, []string{ns}, tr.denyAfter(t0)); err != nil {
			t.Fatal(err)
		}
		flDeny, flDone = append(flDeny, deny.Sub(t0)), append(flDone, done.Sub(t0))
	}
	logf("API floor single: deny p99 %s, done median %s", summarize(flDeny).p99, summarize(flDone).med)

	rows = append(rows,
		row{what: "single fence among N, idle: spec change → deny policy", s: summarize(denyIdle), target: "p99 < 100 ms", met: verdict(summarize(denyIdle).p99 < 100*time.Millisecond)},
		row{what: "single fence among N, idle: spec change → Fenced=True", s: summarize(fencedIdle), target: "p99 < 1 s", met: verdict(summarize(fencedIdle).p99 < time.Second)},
		row{what: "single fence during a resync of all N: → deny policy", s: summarize(denyResync), target: "p99 < 100 ms", met: verdict(summarize(denyResync).p99 < 100*time.Millisecond)},
		row{what: "single fence during a resync of all N: → Fenced=True", s: summarize(fencedResync), target: "p99 < 1 s", met: verdict(summarize(fencedResync).p99 < time.Second)},
	)
	if !p.quick {
		rows = append(rows,
			row{what: "baseline (a) kubectl runbook, one environment: → deny policy", s: summarize(rbDeny)},
			row{what: "baseline (a) kubectl runbook, one environment: → all steps done", s: summarize(rbDone)},
			row{what: "baseline (b) API floor, one environment: → deny policy written", s: summarize(flDeny)},
			row{what: "baseline (b) API floor, one environment: → all writes done", s: summarize(flDone)})
	}
	rows = append(rows,
		row{what: "failover: fence → front EndpointSlices only at the standby", s: summarize(failovers)},
		row{what: "restore: mode None → Ready with the fence lifted", s: summarize(restores)},
	)
	notes = append(notes, fmt.Sprintf("Fences during a resync: %d of %d were sent while the reconciler's queue held at least N/4 environments (workqueue_depth polled every 20 ms; the rest within 3 sync periods of waiting).", resyncSeen, p.samples))
	if !p.quick {
		notes = append(notes, fmt.Sprintf("Single fence, medians: careplane deny %s / Fenced %s; runbook deny %s / done %s; API floor deny %s / done %s. Careplane's time to Fenced is %.2f× the runbook's and %.1f× the API floor's.",
			summarize(denyIdle).med, summarize(fencedIdle).med, summarize(rbDeny).med, summarize(rbDone).med, summarize(flDeny).med, summarize(flDone).med,
			summarize(fencedIdle).med.Seconds()/summarize(rbDone).med.Seconds(), summarize(fencedIdle).med.Seconds()/summarize(flDone).med.Seconds()))
	}

	// --- Fleet fence ----------------------------------------------------------
	var primaries []string
	for _, env := range fleet {
		primaries = append(primaries, build.SiteNamespace(env, v1alpha1.SitePrimary))
	}
	logf("fleet fence: kubectl careplane fence --selector bench.careplane.io/set=fleet (%d environments)", p.n)
	profiled := profileFleet(ctx, p.profileDir, "fleet", pprofAddr, clientset, 30*time.Second)
	cpuBefore := cpuByProcess()
	reqBefore, err := apiRequests(ctx, clientset)
	if err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	// The plugin runs on while the deny policies arrive (it writes every
	// spec after its FenceRequest's deny policies): the deny phase's CPU
	// and requests are taken when the last deny policy is seen, not when
	// the plugin returns.
	type pluginResult struct {
		out  []byte
		err  error
		took time.Duration
	}
	pluginRan := make(chan pluginResult, 1)
	fleetArgs := []string{"fence", "--selector", "bench.careplane.io/set=fleet", "--reason", "supplier breach", "--ticket", "INC-FLEET", "--no-wait",
		"--as", "bench-responder", "--as-group", v1alpha1.DefaultResponderGroup, "--as-group", "system:authenticated"}
	go func() {
		out, err := exec.Command(plugin.bin, append(fleetArgs, "--kubeconfig", os.Getenv("KUBECONFIG"))...).CombinedOutput()
		pluginRan <- pluginResult{out, err, time.Since(t0)}
	}()
	fleetDeny, err := tr.waitAll(5*time.Minute, t0, primaries, tr.denyAfter(t0))
	if err != nil {
		select {
		case ran := <-pluginRan:
			t.Fatalf("fleet deny policies: %v; the plugin (%v): %s", err, ran.err, ran.out[:min(len(ran.out), 2000)])
		default:
			t.Fatalf("fleet deny policies: %v", err)
		}
	}
	cpuDenied, denyWall := cpuByProcess(), time.Since(t0)
	reqDenied, err := apiRequests(ctx, clientset)
	if err != nil {
		t.Fatal(err)
	}
	ran := <-pluginRan
	pluginDone := ran.took
	t.Logf("kubectl careplane %s\n%s", strings.Join(fleetArgs, " "), ran.out)
	if ran.err != nil {
		t.Fatalf("fleet fence failed (%v): %s", ran.err, ran.out[:min(len(ran.out), 2000)])
	}
	fleetFenced, err := tr.waitAll(15*time.Minute, t0, names, tr.fencedAfter(t0))
	if err != nil {
		t.Fatalf("fleet Fenced: %v", err)
	}
	cpuFenced, fencedWall := cpuByProcess(), time.Since(t0)
	reqFenced, err := apiRequests(ctx, clientset)
	if err != nil {
		t.Fatal(err)
	}
	fenceEvents, err := eventsSince(ctx, clientset, t0, 8, p.profileDir, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	final := operatorProc(t)
	logf("fleet fence: plugin done %s, all deny %s, all Fenced %s", pluginDone, summarize(fleetDeny).max, summarize(fleetFenced).max)
	notes = append(notes,
		"Fleet fence, until the last deny policy: "+cpuSpent(cpuBefore, cpuDenied, denyWall)+"; kube-apiserver answered "+requestsBetween(reqBefore, reqDenied, 12)+".",
		"Fleet fence, from then until the last Fenced=True: "+cpuSpent(cpuDenied, cpuFenced, fencedWall-denyWall)+"; kube-apiserver answered "+requestsBetween(reqDenied, reqFenced, 12)+
			"; events by reporter and reason over the whole fence: "+fenceEvents+".")
	for _, err := range append(profiled(), writeRequests(p.profileDir, "fleet", reqBefore, reqFenced)) {
		if err != nil {
			t.Errorf("profiling the fleet fence: %v", err)
		}
	}
	// --- Fleet restore: the way back ----------------------------------------
	// Each environment released by its own responder write, as responders
	// would after checking each one, 32 at a time.
	logf("fleet restore: isolation.mode None on each of %d environments", p.n)
	cpuBefore = cpuByProcess()
	if reqBefore, err = apiRequests(ctx, clientset); err != nil {
		t.Fatal(err)
	}
	profiled = profileFleet(ctx, p.profileDir, "restore", pprofAddr, clientset, 30*time.Second)
	t0 = time.Now()
	parallelDo(len(fleet), 32, func(i int) {
		if err := benchIsolation(ctx, resp, fleet[i].Name, unfencedIsolation()); err != nil {
			t.Errorf("restoring %s: %v", fleet[i].Name, err)
		}
	})
	lifted, err := tr.waitAll(30*time.Minute, t0, primaries, tr.liftedAfter(t0))
	if err != nil {
		t.Fatalf("fleet restore, fences lifted: %v", err)
	}
	readyAgain, err := tr.waitAll(30*time.Minute, t0, names, tr.readyAfter(t0))
	if err != nil {
		t.Fatalf("fleet restore, Ready: %v", err)
	}
	restoredWall := time.Since(t0)
	fleetRestored := make([]time.Duration, len(lifted))
	for i := range lifted {
		fleetRestored[i] = max(lifted[i], readyAgain[i])
	}
	reqRestored, err := apiRequests(ctx, clientset)
	if err != nil {
		t.Fatal(err)
	}
	restoreEvents, err := eventsSince(ctx, clientset, t0, 8, p.profileDir, "restore")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range append(profiled(), writeRequests(p.profileDir, "restore", reqBefore, reqRestored)) {
		if err != nil {
			t.Errorf("profiling the fleet restore: %v", err)
		}
	}
	logf("fleet restore: all lifted %s, all Ready %s", summarize(lifted).max, summarize(readyAgain).max)
	restoreRow := row{what: "fleet restore of N, each by its own responder write: → each Ready with the fence lifted", s: summarize(fleetRestored)}
	if floorAll > 0 {
		restoreRow.target = fmt.Sprintf("max < 1.5× cold-start floor (%.1f s)", 1.5*floorAll.Seconds())
		restoreRow.met = verdict(summarize(fleetRestored).max < floorAll*3/2)
	}
	notes = append(notes,
		"Fleet restore, until every environment is Ready with its fence lifted: "+cpuSpent(cpuBefore, cpuByProcess(), restoredWall)+"; kube-apiserver answered "+requestsBetween(reqBefore, reqRestored, 12)+
			"; events by reporter and reason: "+restoreEvents+".")

	if p.quick {
		rows = append(rows,
			row{what: fmt.Sprintf("fleet fence of N by label selector: → each deny policy (%d)", p.n), s: summarize(fleetDeny), target: "max < 5 s", met: verdict(summarize(fleetDeny).max < 5*time.Second)},
			row{what: "fleet fence of N by label selector: → each Fenced=True", s: summarize(fleetFenced), target: "max < 60 s", met: verdict(summarize(fleetFenced).max < time.Minute)},
			restoreRow)
		dataRows, dataNotes := benchData(t, ctx, p, admin, tr, single, restore)
		rows, notes = append(rows, dataRows...), append(notes, dataNotes...)
		report := benchReport(p, commit, rows, append(notes, "Quick run (BENCH_QUICK): careplane alone, no baselines and no steady-state minute."), time.Since(started))
		fmt.Print(report)
		if p.out != "" {
			if err := os.WriteFile(p.out, []byte(report), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}

	// The API floor over N copies: every deny policy first, then the rest.
	var plans []floorPlan
	for _, env := range fleetCopies {
		plans = append(plans, floorFencePlan(t, ctx, admin, env))
	}
	t0 = time.Now()
	denied, done := runFloorFleet(ctx, admin, plans, 64)
	floorFleetDeny, floorFleetDone := denied.Sub(t0), done.Sub(t0)
	logf("API floor fleet: all deny %s, all done %s", floorFleetDeny, floorFleetDone)

	// The runbook over the other N copies: one kubectl apply of every deny
	// policy, then the per-environment steps, runbooks in parallel.
	var denyAll strings.Builder
	for _, env := range floorEnvs {
		raw, err := os.ReadFile(denyFile(env))
		if err != nil {
			t.Fatal(err)
		}
		denyAll.WriteString("---\n")
		denyAll.Write(raw)
		denyAll.WriteString("\n")
	}
	denyAllFile := filepath.Join(t.TempDir(), "deny-all.yaml")
	if err := os.WriteFile(denyAllFile, []byte(denyAll.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var copyPrimaries []string
	for _, env := range floorEnvs {
		copyPrimaries = append(copyPrimaries, build.SiteNamespace(env, v1alpha1.SitePrimary))
	}
	t0 = time.Now()
	if out, err := kubectlOutput("apply", "-f", denyAllFile); err != nil {
		t.Fatalf("runbook deny policies: %v\n%s", err, out[:min(len(out), 2000)])
	}
	rbFleetDeny, err := tr.waitAll(5*time.Minute, t0, copyPrimaries, tr.denyAfter(t0))
	if err != nil {
		t.Fatal(err)
	}
	{
		sem := make(chan struct{}, p.runbookParallel)
		var wg sync.WaitGroup
		for _, env := range floorEnvs {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if out, err := runbookCmd(env, "INC-FLEET").CombinedOutput(); err != nil {
					t.Errorf("runbook for %s: %v\n%s", env.Name, err, out)
				}
			})
		}
		wg.Wait()
	}
	rbFleetDone := time.Since(t0)
	logf("runbook fleet: all deny %s, all done %s", summarize(rbFleetDeny).max, rbFleetDone)

	rows = append(rows,
		row{what: fmt.Sprintf("fleet fence of N by label selector: → each deny policy (%d)", p.n), s: summarize(fleetDeny), target: "max < 5 s", met: verdict(summarize(fleetDeny).max < 5*time.Second)},
		row{what: "fleet fence of N by label selector: → each Fenced=True", s: summarize(fleetFenced), target: "max < 60 s", met: verdict(summarize(fleetFenced).max < time.Minute)},
		row{what: "fleet, baseline (a) runbook: → each deny policy (one `kubectl apply`)", s: summarize(rbFleetDeny)},
		restoreRow,
	)
	notes = append(notes,
		fmt.Sprintf("Fleet fence of %d: `kubectl careplane fence --selector` returned after %.2f s; every deny policy existed after %.2f s and every environment reported Fenced after %.2f s. Operator peak RSS over the whole run %.1f MiB, %.1f CPU seconds in all.",
			p.n, pluginDone.Seconds(), summarize(fleetDeny).max.Seconds(), summarize(fleetFenced).max.Seconds(), float64(final.peak)/(1<<20), final.cpu),
		fmt.Sprintf("Fleet, baseline (b) API floor (64 environments at a time, every write of an environment at once, deny policies first): all deny policies %.2f s, all writes %.2f s. Careplane: %.1f× to the last deny policy, %.1f× to all fenced.",
			floorFleetDeny.Seconds(), floorFleetDone.Seconds(),
			summarize(fleetDeny).max.Seconds()/floorFleetDeny.Seconds(), summarize(fleetFenced).max.Seconds()/floorFleetDone.Seconds()),
		fmt.Sprintf("Fleet, baseline (a) runbook (every deny policy in one `kubectl apply`, then the per-environment script, %d at a time): all deny policies %.2f s, all steps %.1f s. Careplane: %.2f× to the last deny policy, %.2f× to all fenced.",
			p.runbookParallel, summarize(rbFleetDeny).max.Seconds(), rbFleetDone.Seconds(),
			summarize(fleetDeny).max.Seconds()/summarize(rbFleetDeny).max.Seconds(), summarize(fleetFenced).max.Seconds()/rbFleetDone.Seconds()))

	// --- Data: recovery points, restore with volumes ------------------------
	dataRows, dataNotes := benchData(t, ctx, p, admin, tr, single, restore)
	rows, notes = append(rows, dataRows...), append(notes, dataNotes...)

	report := benchReport(p, commit, rows, notes, time.Since(started))
	fmt.Print(report)
	if p.out != "" {
		if err := os.WriteFile(p.out, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// benchSteadyState measures the operator's writes, reconciles and memory
// over a minute in which nothing changes, after a full resync.
func benchSteadyState(t *testing.T, p benchParams, idle procStats, notes *[]string) {
	t.Helper()
	logf := benchLogf
	time.Sleep(p.syncPeriod)
	w0, r0, c0 := operatorWrites(t), reconcileCount(t), operatorProc(t).cpu
	time.Sleep(time.Minute)
	w1, r1, steady := operatorWrites(t), reconcileCount(t), operatorProc(t)
	perEnv := float64(steady.rss-idle.rss) / float64(p.n)
	logf("steady state: %d writes and %d reconciles in 60 s; RSS %.1f MiB (%.1f KiB per environment over idle)", w1-w0, r1-r0, float64(steady.rss)/(1<<20), perEnv/1024)
	if r1-r0 < int64(p.n) {
		*notes = append(*notes, fmt.Sprintf("Warning: only %d reconciles in the steady-state minute; fewer than one resync of %d environments.", r1-r0, p.n))
	}
	*notes = append(*notes,
		fmt.Sprintf("Steady state: **%d API writes** by the operator in 60 s (target 0), across %d reconciles (%.0f full resyncs of %d environments at --sync-period=%s), %.1f CPU seconds.",
			w1-w0, r1-r0, float64(r1-r0)/float64(p.n), p.n, p.syncPeriod, steady.cpu-c0),
		fmt.Sprintf("Memory: RSS %.1f MiB with %d environments, %.1f MiB idle: **%.1f KiB per environment** (target under 150 KiB): %s.",
			float64(steady.rss)/(1<<20), p.n, float64(idle.rss)/(1<<20), perEnv/1024, verdict(perEnv < 150*1024)))
}

// benchCopies creates the copies of careplane's objects that the baselines
// fence (untimed): those of the kubectl floor's environments, and N + 2 ×
// samples more, returned as the fleet's and the single fences' copies.
func benchCopies(t *testing.T, admin client.Client, tr *tracker, p benchParams, floorEnvs []*v1alpha1.HealthEnvironment) (fleetCopies, singleCopies []*v1alpha1.HealthEnvironment) {
	t.Helper()
	benchLogf("creating the copies the baselines fence (untimed)")
	var copies []*unstructured.Unstructured
	for _, env := range floorEnvs {
		_, rest := replica(t, env)
		copies = append(copies, rest...)
	}
	for i := range p.n + 2*p.samples {
		env := benchEnv(fmt.Sprintf("kb-%04d", i), "copy", false)
		floor, rest := replica(t, env)
		copies = append(copies, floor...)
		copies = append(copies, rest...)
		if i < p.n {
			fleetCopies = append(fleetCopies, env)
		} else {
			singleCopies = append(singleCopies, env)
		}
	}
	createAll(t, admin, copies, 32)
	var copyKeys []string
	for _, env := range append(append([]*v1alpha1.HealthEnvironment{}, fleetCopies...), singleCopies...) {
		for _, svc := range env.Spec.Services {
			copyKeys = append(copyKeys, build.SiteNamespace(env, v1alpha1.SitePrimary)+"/"+svc.Name)
		}
	}
	if _, err := tr.waitAll(20*time.Minute, time.Time{}, copyKeys, tr.availableAfter(time.Time{})); err != nil {
		t.Fatalf("copies available: %v", err)
	}
	return fleetCopies, singleCopies
}

// benchLogf prints a progress line with the time of day.
func benchLogf(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// floorPlan is exactly the writes one environment's fence needs, read
// beforehand: the API floor issues them all at once.
type floorPlan struct {
	deny     *unstructured.Unstructured
	quota    *unstructured.Unstructured
	ns       string
	others   []string
	accounts []string
	secrets  []string
	pods     []string
	deps     []string
	front    string
	slices   []string
}

func floorFencePlan(t *testing.T, ctx context.Context, c client.Client, env *v1alpha1.HealthEnvironment) floorPlan {
	t.Helper()
	names := build.NamespaceNames(env)
	pl := floorPlan{ns: names.Primary, front: names.Front,
		deny:  replicaOf(t, build.FencePolicy(env, names.Primary, true)),
		quota: replicaOf(t, build.FenceQuota(env, names.Primary))}
	var pols networkingv1.NetworkPolicyList
	var pods corev1.PodList
	var slices discoveryv1.EndpointSliceList
	for _, l := range []struct {
		list client.ObjectList
		ns   string
	}{{&pols, names.Primary}, {&pods, names.Primary}, {&slices, names.Front}} {
		if err := c.List(ctx, l.list, client.InNamespace(l.ns)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range pols.Items {
		pl.others = append(pl.others, p.Name)
	}
	for _, p := range pods.Items {
		pl.pods = append(pl.pods, p.Name)
	}
	for _, s := range slices.Items {
		pl.slices = append(pl.slices, s.Name)
	}
	for _, svc := range env.Spec.Services {
		pl.accounts = append(pl.accounts, svc.Name)
		pl.deps = append(pl.deps, svc.Name)
		for _, g := range svc.GeneratedSecrets {
			pl.secrets = append(pl.secrets, build.GeneratedSecretName(svc.Name, g))
		}
	}
	return pl
}

// denyWrite creates the deny policy.
func (pl floorPlan) denyWrite(ctx context.Context, c client.Client) error {
	return c.Create(ctx, pl.deny.DeepCopy())
}

// restWrites are the fence's other writes, each a function to run at once.
func (pl floorPlan) restWrites(c client.Client) []func(context.Context) error {
	merge := func(o client.Object, patch string) func(context.Context) error {
		return func(ctx context.Context) error {
			return c.Patch(ctx, o, client.RawPatch(types.MergePatchType, []byte(patch)))
		}
	}
	var w []func(context.Context) error
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: pl.ns}}
	w = append(w, merge(ns, `{"metadata":{"labels":{"bench.careplane.io/fenced":"true"}}}`))
	w = append(w, func(ctx context.Context) error { return c.Create(ctx, pl.quota.DeepCopy()) })
	for _, n := range pl.others {
		w = append(w, func(ctx context.Context) error {
			return c.Delete(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: pl.ns, Name: n}})
		})
	}
	for _, n := range pl.accounts {
		w = append(w, func(ctx context.Context) error {
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: pl.ns, Name: n}}
			if err := c.Delete(ctx, sa); err != nil {
				return err
			}
			return c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: pl.ns, Name: n}})
		})
	}
	for _, n := range pl.secrets {
		w = append(w, func(ctx context.Context) error {
			return c.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: pl.ns, Name: n}})
		})
	}
	for _, n := range pl.pods {
		w = append(w, merge(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pl.ns, Name: n}},
			`{"metadata":{"ownerReferences":null,"labels":{"bench.careplane.io/service":null,"bench.careplane.io/evidence":"INC-FLOOR"}}}`))
	}
	for _, n := range pl.deps {
		w = append(w, merge(&unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"namespace": pl.ns, "name": n}}}, `{"spec":{"replicas":0}}`))
	}
	for _, n := range pl.slices {
		w = append(w, merge(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: pl.front, Name: n}}, `{"endpoints":[]}`))
	}
	return w
}

// run issues every write of the plan at once and returns when the deny
// policy was written and when the last write returned.
func (pl floorPlan) run(ctx context.Context, c client.Client) (deny, done time.Time) {
	writes := append([]func(context.Context) error{func(ctx context.Context) error {
		err := pl.denyWrite(ctx, c)
		deny = time.Now()
		return err
	}}, pl.restWrites(c)...)
	var wg sync.WaitGroup
	for _, w := range writes {
		wg.Go(func() {
			if err := w(ctx); err != nil {
				panic(fmt.Sprintf("API floor write in %s: %v", pl.ns, err))
			}
		})
	}
	wg.Wait()
	return deny, time.Now()
}

// runFloorFleet writes every deny policy, parallel at a time, then every
// other write of every plan the same way.
func runFloorFleet(ctx context.Context, c client.Client, plans []floorPlan, parallel int) (denied, done time.Time) {
	do := func(writes []func(context.Context) error) {
		sem := make(chan struct{}, parallel)
		var wg sync.WaitGroup
		for _, w := range writes {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := w(ctx); err != nil {
					panic(fmt.Sprintf("API floor write: %v", err))
				}
			})
		}
		wg.Wait()
	}
	var denies, rest []func(context.Context) error
	for _, pl := range plans {
		denies = append(denies, func(ctx context.Context) error { return pl.denyWrite(ctx, c) })
		rest = append(rest, pl.restWrites(c)...)
	}
	do(denies)
	denied = time.Now()
	do(rest)
	return denied, time.Now()
}

// benchCommit names the commit under test, "+changes" when the tree differs.
func benchCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	commit := strings.TrimSpace(string(out))
	if status, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(status))) > 0 {
		commit += "+changes"
	}
	return commit
}

// benchReport renders the report: what was run where, the table, the
// comparisons.
func benchReport(p benchParams, commit string, rows []row, notes []string, took time.Duration) string {
	var b strings.Builder
	cpu := "unknown"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	mem := "unknown"
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(strings.SplitN(string(raw), "\n", 2)[0]); len(f) >= 2 {
			kb, _ := strconv.ParseFloat(f[1], 64)
			mem = fmt.Sprintf("%.1f GiB", kb/(1<<20))
		}
	}
	server, _ := kubectlOutput("version", "-o", "json")
	var v struct {
		Server struct{ GitVersion string } `json:"serverVersion"`
	}
	_ = json.Unmarshal([]byte(server), &v)

	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (test/e2e/bench_test.go); rerun it to reproduce. Do not edit by hand.\n\n")
	fmt.Fprintf(&b, "| run | |\n|---|---|\n")
	for _, kv := range [][2]string{
		{"date", time.Now().UTC().Format("2006-01-02 15:04 MST")},
		{"N (environments × 3 services)", strconv.Itoa(p.n)},
		{"samples (single fences, each case)", strconv.Itoa(p.samples)},
		{"failover environments (Warm standby)", strconv.Itoa(p.failover)},
		{"data environments (one service with a volume, recovery points)", fmt.Sprintf("%d, every %s, counted over %s; restores timed %d with a volume and %d without", p.dataN, p.dataInterval, p.dataWindow, p.dataSamples, p.dataSamples)},
		{"machine", fmt.Sprintf("%s, %d CPUs, %s RAM, shared", cpu, runtime.NumCPU(), mem)},
		{"cluster", fmt.Sprintf("kwok (kwokctl binary runtime): kube-apiserver %s, etcd, kube-controller-manager, kube-scheduler on this machine", v.Server.GitVersion)},
		{"careplane", fmt.Sprintf("commit %s, %s, operator flags: defaults + %s", commit, runtime.Version(), strings.Join(append([]string{"--sync-period=" + p.syncPeriod.String()}, p.operatorFlags...), " "))},
		{"benchmark wall time", took.Round(time.Second).String()},
	} {
		fmt.Fprintf(&b, "| %s | %s |\n", kv[0], kv[1])
	}
	fmt.Fprintf(&b, "\n| measurement | n | min | median | p99 | max | target | met |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s |\n", strings.Join(r.cells(), " | "))
	}
	fmt.Fprintf(&b, "\n")
	for _, n := range notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	fmt.Fprintf(&b, "\n%s", benchMethod)
	return b.String()
}

// benchMethod explains how each number is taken.
const benchMethod = `## How the numbers are taken

- Every time is taken by the benchmark's informers when the watch delivers the change (the deny policy
  created, the environment's Fenced or Ready condition at its current generation, the front
  EndpointSlices listing only standby pods), measured from just before the request that asks for it.
  Watch delivery is part of every careplane number; the baselines' "done" is when their last request
  returned, so the comparison leans their way.
- Cold start: N HealthEnvironments created 32 at a time; per environment, from its create to Ready.
  The kubectl floor applies, in one ` + "`kubectl apply -f`" + `, the same Deployments careplane renders
  (its builders, keys renamed so that careplane ignores them) with only what their pods need to run
  (namespace, service accounts); careplane also writes per environment a front namespace, a quota, a
  limit range, six network policies, services, secrets and front EndpointSlices.
- Steady state counts the operator's own POST/PUT/PATCH/DELETE requests (client-go's
  ` + "`rest_client_requests_total`" + `) over one minute that includes full resyncs.
- Memory is the operator's resident set (/proc VmRSS) with N environments minus its idle resident set
  before any existed, divided by N; peak is VmHWM.
- A single fence is a responder's merge patch of spec.isolation; each sample fences a different
  environment and restores it afterwards (the restore is timed too). "During a resync" fences are sent
  when the reconciler's ` + "`workqueue_depth`" + ` holds at least N/4 environments.
- Baselines act on copies of careplane's objects that no operator manages: (a) the runbook,
  test/e2e/testdata/runbook-fence.sh, one kubectl command per step in careplane's order; (b) the API
  floor, a Go client with no rate limit sending exactly the writes the fence needs (deny policy,
  namespace label, policy deletions, service account delete+create, secret deletions, pod patches,
  scale to zero, front slices emptied), all at once, the objects read beforehand.
- The fleet fence is ` + "`kubectl careplane fence --selector`" + ` as a responder, and the guardrails
  (admission policies) are installed, as in production.
- The fleet restore follows it: each fenced environment released by its own responder write
  (` + "`isolation.mode: None`" + `, 32 writes at a time), timed to the later of its deny policy's removal
  and its Ready=True; the target is 1.5× the cold start's kubectl floor (all Deployments
  available), since a restore rebuilds what a cold start builds.
- The data phase runs last, on environments of its own (one service, a document store, with a 16Mi
  volume of the cluster's default class, spec.recovery every BENCH_DATA_INTERVAL keeping 2), so the rows
  above are as they were without it; the storage is the cluster's real one (csi-provisioner,
  snapshot-controller, csi-snapshotter, the test CSI driver copying each volume's directory).
  Recovery points are counted from the environments' status as the benchmark's informer sees it,
  every point taken in the window once even when retention has removed it by the end; "taken →
  ready" is from the point's takenAt (whole seconds) to the first status calling it ready. The
  operator's API writes (client-go's ` + "`rest_client_requests_total`" + `, POST/PUT/PATCH/DELETE) and
  CPU seconds (/proc) are counted over BENCH_DATA_WINDOW after a warm-up of two intervals, and
  extrapolated to an hour; "net" subtracts the operator's rate over the minute before the data
  environments were created (the other environments' resyncs), so it still includes the data
  environments' own resyncs. Restores with a volume and without alternate on the same cluster: each a
  single fence (Preserve; with a volume, the evidence snapshot is a fence step) and then
  ` + "`isolation.mode: None`" + ` with no restoreFrom, which restores the newest clean point before the fence
  into new claims, timed as the single restores above.
`

// parallelDo runs fn(0) to fn(n-1), at most limit at a time.
func parallelDo(n, limit int, fn func(i int)) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}
