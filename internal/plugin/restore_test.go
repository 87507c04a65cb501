package plugin

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/recovery"
)

// TestPlanRestore: the dry run's plan is the operator's choice of point and
// claims: which claim comes from which snapshot, the data lost, the claims
// kept as evidence; a point the operator would refuse is refused here too.
func TestPlanRestore(t *testing.T) {
	fencedAt := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	store := v1alpha1.Service{Name: "document-store", Replicas: ptr.To(int32(2)),
		Volumes: []v1alpha1.Volume{{Name: "records", MountPath: "/var/lib/records", Size: "1Gi"}}}
	point := func(name string, minutesBefore int, clean bool) v1alpha1.RecoveryPoint {
		return v1alpha1.RecoveryPoint{Name: name, TakenAt: metav1.NewTime(fencedAt.Add(-time.Duration(minutesBefore) * time.Minute)), Clean: clean,
			Snapshots: []v1alpha1.PointSnapshot{
				{Name: name + "-0", UID: "u-" + name + "-0", Claim: "records-document-store-0"},
				{Name: name + "-1", UID: "u-" + name + "-1", Claim: "records-document-store-1"},
			}}
	}
	points := []v1alpha1.RecoveryPoint{point("p-a", 30, true), point("p-b", 10, true), point("p-c", 5, false)}
	snaps := map[string]recovery.SnapshotState{}
	for _, p := range points {
		for _, s := range p.Snapshots {
			snaps[s.Name] = recovery.SnapshotState{UID: s.UID, ReadyToUse: true}
		}
	}
	state := func(from *v1alpha1.RestoreFrom) RestoreState {
		env := &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "records-york"}}
		env.Spec.Services = []v1alpha1.Service{store, {Name: "records-api"}}
		env.Spec.Isolation.RestoreFrom = from
		env.Status.Recovery = &v1alpha1.RecoveryStatus{Points: points}
		return RestoreState{Env: env, Services: env.Spec.Services, From: "spec", FencedAt: fencedAt, Snapshots: snaps,
			Claims: []corev1.PersistentVolumeClaim{
				{ObjectMeta: metav1.ObjectMeta{Name: "records-document-store-0"}},
				{ObjectMeta: metav1.ObjectMeta{Name: "records-document-store-1"}},
			}}
	}

	p, err := PlanRestore(state(nil))
	if err != nil {
		t.Fatal(err)
	}
	if p.RecoveryPoint != "p-b" || p.DataLost != "10m0s" || len(p.Volumes) != 2 ||
		p.Volumes[1].Claim != "records-document-store-<generation>-1" || p.Volumes[1].Snapshot != "p-b-1" ||
		strings.Join(p.KeptAsEvidence, ",") != "records-document-store-0,records-document-store-1" {
		t.Errorf("default plan = %+v", p)
	}
	var out bytes.Buffer
	if err := WriteRestorePlan(&out, p); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"recovery point: p-b (the newest clean point before the fence)", "data lost: 10m0s",
		"records-document-store-<generation>-1  p-b-1", "kept as evidence"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("plan output lacks %q:\n%s", want, out.String())
		}
	}

	before := metav1.NewTime(fencedAt.Add(-15 * time.Minute))
	if p, err := PlanRestore(state(&v1alpha1.RestoreFrom{Before: &before})); err != nil || p.RecoveryPoint != "p-a" || p.DataLost != "30m0s" {
		t.Errorf("--before plan = %+v, %v; want p-a losing 30m", p, err)
	}
	_, err = PlanRestore(state(&v1alpha1.RestoreFrom{RecoveryPoint: "p-c"}))
	var noPoint *recovery.NoPointError
	if !errors.As(err, &noPoint) || !strings.Contains(err.Error(), "it is not clean") {
		t.Errorf("--to an unclean point: %v, want blocked", err)
	}
	noVolumes := state(nil)
	noVolumes.Services = []v1alpha1.Service{{Name: "records-api"}}
	if p, err := PlanRestore(noVolumes); err != nil || p.RecoveryPoint != "" {
		t.Errorf("no volumes: %+v, %v; want no point", p, err)
	}
}
