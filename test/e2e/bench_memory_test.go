//go:build e2e && bench

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestBenchMemory measures only the operator's memory per environment, and
// profiles its heap: `make bench-memory` (BENCH_N environments, default 500).
// It is the quick loop for changing what the cache holds; make bench
// measures everything else.
func TestBenchMemory(t *testing.T) {
	p := benchParamsFromEnv(t)
	ctx := context.Background()
	admin := benchAdmin(t)
	tr := newTracker()
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := tr.start(tctx); err != nil {
		t.Fatal(err)
	}
	pprofAddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	idle := startBenchOperator(t, p, "--pprof-bind-address="+pprofAddr)

	names := make([]string, p.n)
	t0 := time.Now()
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range p.n {
		env := benchEnv(fmt.Sprintf("mem-%04d", i), "fleet", i < p.failover)
		names[i] = env.Name
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := admin.Create(ctx, env); err != nil {
				t.Errorf("creating %s: %v", env.Name, err)
			}
		})
	}
	wg.Wait()
	if _, err := tr.waitAll(30*time.Minute, t0, names, tr.readyAfter(t0)); err != nil {
		t.Fatal(err)
	}
	// A full resync, then the resident set.
	time.Sleep(p.syncPeriod + 10*time.Second)
	steady := operatorProc(t)
	heap, err := theOperator.metricSum(ctx, "go_memstats_heap_inuse_bytes", nil)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("memory with %d environments: RSS %.1f MiB (idle %.1f MiB), %.1f KiB per environment; heap in use %.1f MiB; peak RSS %.1f MiB\n",
		p.n, float64(steady.rss)/(1<<20), float64(idle.rss)/(1<<20), float64(steady.rss-idle.rss)/float64(p.n)/1024,
		heap/(1<<20), float64(steady.peak)/(1<<20))
	profile := filepath.Join(t.TempDir(), "heap.pb.gz")
	out, err := exec.Command("go", "tool", "pprof", "-proto", "-output", profile, "http://"+pprofAddr+"/debug/pprof/heap").CombinedOutput()
	if err != nil {
		t.Fatalf("pprof: %v\n%s", err, out)
	}
	top, _ := exec.Command("go", "tool", "pprof", "-top", "-inuse_space", "-nodecount=25", profile).CombinedOutput()
	fmt.Printf("%s\n", top)
	if dir := os.Getenv("BENCH_PROFILE_DIR"); dir != "" {
		raw, err := os.ReadFile(profile)
		if err == nil {
			_ = os.WriteFile(filepath.Join(dir, "heap.pb.gz"), raw, 0o644)
		}
	}
}
