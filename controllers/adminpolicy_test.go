package controllers

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clocktesting "k8s.io/utils/clock/testing"
)

// countingMapper maps nothing and counts how often it is asked, as the
// manager's lazy mapper sends a discovery request for every kind it cannot
// map.
type countingMapper struct {
	meta.RESTMapper
	asked int
}

func (m *countingMapper) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	m.asked++
	return m.RESTMapper.RESTMapping(gk, versions...)
}

// TestServedAdminFenceKindsAsksOnceAWhile: a fleet fence asked discovery
// for the admin-tier kinds on every pass of every environment; the answer
// is now kept for adminKindsFor, and asked again after it.
func TestServedAdminFenceKindsAsksOnceAWhile(t *testing.T) {
	mapper := &countingMapper{RESTMapper: meta.NewDefaultRESTMapper(nil)}
	clk := clocktesting.NewFakePassiveClock(time.Unix(1000, 0))
	r := &HealthEnvironmentReconciler{RESTMapper: mapper, Clock: clk}
	ctx := context.Background()
	ask := func() {
		t.Helper()
		kinds, err := r.servedAdminFenceKinds(ctx)
		if err != nil || len(kinds) != 0 {
			t.Fatalf("served = %v, %v; want none", kinds, err)
		}
	}
	ask()
	first := mapper.asked
	if first == 0 {
		t.Fatal("the mapper was not asked")
	}
	for range 50 {
		ask()
	}
	clk.SetTime(clk.Now().Add(adminKindsFor - time.Millisecond))
	ask()
	if mapper.asked != first {
		t.Errorf("asked %d times within %s, want %d", mapper.asked, adminKindsFor, first)
	}
	clk.SetTime(clk.Now().Add(time.Millisecond))
	ask()
	if mapper.asked != 2*first {
		t.Errorf("asked %d times after %s, want %d", mapper.asked, adminKindsFor, 2*first)
	}
}
