package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func TestMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		name    string
		gomem   string
		limit   int64
		ratio   float64
		want    int64
		wantSet bool
	}{
		{name: "ratio of the container limit", limit: 512 << 20, ratio: 0.9, want: 483183820, wantSet: true},
		{name: "no container limit", limit: 0, ratio: 0.9},
		{name: "ratio 0 turns it off", limit: 512 << 20, ratio: 0},
		{name: "GOMEMLIMIT wins", gomem: "100MiB", limit: 512 << 20, ratio: 0.9},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", c.gomem)
			got, set := memoryLimit(c.limit, c.ratio)
			if got != c.want || set != c.wantSet {
				t.Errorf("memoryLimit(%d, %v) = %d, %v; want %d, %v", c.limit, c.ratio, got, set, c.want, c.wantSet)
			}
		})
	}
}

// TestPreflightUsage: a wrong command line exits 2 before connecting.
func TestPreflightUsage(t *testing.T) {
	for _, args := range [][]string{{"extra"}, {"--output", "xml"}, {"--no-such-flag"}} {
		var out, errOut strings.Builder
		if got := runPreflight(args, &out, &errOut); got != 2 {
			t.Errorf("runPreflight(%q) = %d, want 2; stderr %q", args, got, errOut.String())
		}
	}
}

// TestChartDefaultsAreTheFlagDefaults: the Helm chart passes every tuning
// flag explicitly, so a default changed here and not in
// charts/careplane/values.yaml (or the other way round) would silently
// differ between `go run` and a chart install.
func TestChartDefaultsAreTheFlagDefaults(t *testing.T) {
	b, err := os.ReadFile("../../charts/careplane/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	bindFlags(fs)
	for value, name := range map[string]string{
		"manager.logLevel":             "zap-log-level",
		"manager.concurrency":          "concurrency",
		"manager.fenceConcurrency":     "fence-concurrency",
		"manager.kubeAPIQPS":           "kube-api-qps",
		"manager.kubeAPIBurst":         "kube-api-burst",
		"manager.fenceAPIQPS":          "fence-api-qps",
		"manager.fenceAPIBurst":        "fence-api-burst",
		"manager.fleetFenceMaxHold":    "fleet-fence-max-hold",
		"manager.syncPeriod":           "sync-period",
		"leaderElection.leaseDuration": "leader-election-lease-duration",
		"leaderElection.renewDeadline": "leader-election-renew-deadline",
		"leaderElection.retryPeriod":   "leader-election-retry-period",
		"memoryLimitRatio":             "memory-limit-ratio",
	} {
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("the manager has no flag --%s (value %s)", name, value)
			continue
		}
		var v any = values
		for _, k := range strings.Split(value, ".") {
			v = v.(map[string]any)[k]
		}
		chart := fmt.Sprint(v)
		if d, err := time.ParseDuration(chart); err == nil {
			chart = d.String()
		}
		def := f.DefValue
		if name == "zap-log-level" {
			// zap's level flag has no default string; info is its default.
			def = "info"
		}
		if chart != def {
			t.Errorf("values.yaml %s is %s, the default of --%s is %s", value, chart, name, def)
		}
	}
}
