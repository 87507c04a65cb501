package main

import (
	"strings"
	"testing"
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
