//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
)

// careRecordsStandbyYAML is the care-records environment with its document
// store critical (it runs in the standby) and a standby of the given kind.
func careRecordsStandbyYAML(name, standby string) string {
	y := careRecordsYAML(name)
	y = strings.Replace(y, "    port: 5432\n", "    port: 5432\n    critical: true\n", 1)
	return y + "  failover: {standby: " + standby + "}\n"
}

func applyStandbyEnv(t *testing.T, name, standby string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(file, []byte(careRecordsStandbyYAML(name, standby)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteFencedEnvironment(name) })
	kubectl(t, "apply", "-f", file)
}

const storeClaim = "records-document-store-0"

// newestCleanPoint is the newest clean, ready point on record.
func newestCleanPoint(env *v1alpha1.HealthEnvironment) (v1alpha1.RecoveryPoint, bool) {
	if env.Status.Recovery == nil {
		return v1alpha1.RecoveryPoint{}, false
	}
	ps := env.Status.Recovery.Points
	for i := len(ps) - 1; i >= 0; i-- {
		if ps[i].Clean && ps[i].Ready {
			return ps[i], true
		}
	}
	return v1alpha1.RecoveryPoint{}, false
}

func standbyData(env *v1alpha1.HealthEnvironment) *v1alpha1.StandbyData {
	if env.Status.Failover == nil || env.Status.Failover.StandbyData == nil {
		return &v1alpha1.StandbyData{}
	}
	return env.Status.Failover.StandbyData
}

// waitCleanPointAfter waits for a clean, ready point taken after t (points
// have whole seconds: one of the same second may predate t).
func waitCleanPointAfter(t *testing.T, name string, after time.Time) v1alpha1.RecoveryPoint {
	t.Helper()
	var p v1alpha1.RecoveryPoint
	eventually(t, 60*time.Second, "a clean point taken after "+after.Format(time.RFC3339Nano), func(ctx context.Context) (bool, string, error) {
		env := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		var ok bool
		p, ok = newestCleanPoint(env)
		return ok && p.TakenAt.After(after.Add(time.Second)), recoveryCondition(env), nil
	})
	return p
}

// waitStandbyHolds waits for the standby to record its claims seeded from
// the newest clean point on record, not refreshing, with the store's claim
// bound and on record, and returns the environment and what the claim's
// volume holds.
func waitStandbyHolds(t *testing.T, name string, notBefore time.Time) (*v1alpha1.HealthEnvironment, map[string]string) {
	t.Helper()
	ns := name + "-standby"
	env := &v1alpha1.HealthEnvironment{}
	eventually(t, 90*time.Second, "the standby seeded from the newest clean point", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		p, ok := newestCleanPoint(env)
		sd := standbyData(env)
		if !ok || sd.DataFrom != p.Name || sd.RefreshingTo != "" || len(sd.Claims) != 1 || p.TakenAt.Time.Before(notBefore) {
			return false, fmt.Sprintf("newest clean point %s; standbyData %+v", p.Name, sd), nil
		}
		pvc := &corev1.PersistentVolumeClaim{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: storeClaim}, pvc); err != nil {
			return false, err.Error(), nil
		}
		return pvc.Status.Phase == corev1.ClaimBound && string(pvc.UID) == sd.Claims[0].UID,
			fmt.Sprintf("standby claim %s (%s), recorded %+v", pvc.Status.Phase, pvc.UID, sd.Claims), nil
	})
	return env, readFiles(t, dataDir(t, waitClaimBound(t, ns, storeClaim)))
}

// TestWarmStandbyServesNewestCleanPoint: a Warm standby's document store
// runs on a copy of the newest clean recovery point, refreshed as newer
// clean points are taken; after a fence it serves that data — what the
// primary held at the point — not what was written to the primary after
// it, and its status says which point and when. The copies of snapshots
// it was seeded through are cleaned up; nothing of the primary is deleted.
func TestWarmStandbyServesNewestCleanPoint(t *testing.T) {
	ctx := context.Background()
	requireStorage(t, ctx)
	name := uniqueName("warmdata")
	primary, standby := name+"-primary", name+"-standby"
	applyStandbyEnv(t, name, "Warm")
	waitReadyEnv(t, name, 90*time.Second)
	primaryPV := waitClaimBound(t, primary, storeClaim)
	primaryDir := dataDir(t, primaryPV)

	// A record, then a clean point after it: the standby gets it.
	writeFiles(t, primaryDir, map[string]string{"records/patient-1.json": `{"allergy":"penicillin"}`})
	wrote := time.Now()
	p1 := waitCleanPointAfter(t, name, wrote)
	_, got := waitStandbyHolds(t, name, p1.TakenAt.Time)
	if got["records/patient-1.json"] != `{"allergy":"penicillin"}` {
		t.Fatalf("the standby's volume holds %v, want patient-1 as written before point %s", got, p1.Name)
	}
	t.Logf("standby seeded from %s", p1.Name)

	// The record changes; the standby is refreshed from a newer clean point.
	writeFiles(t, primaryDir, map[string]string{"records/patient-1.json": `{"allergy":"penicillin","seen":"2026-12-03"}`})
	wrote = time.Now()
	p2 := waitCleanPointAfter(t, name, wrote)
	_, got = waitStandbyHolds(t, name, p2.TakenAt.Time)
	if got["records/patient-1.json"] != `{"allergy":"penicillin","seen":"2026-12-03"}` {
		t.Fatalf("after refresh the standby's volume holds %v, want the record as of point %s", got, p2.Name)
	}
	t.Logf("standby refreshed to %s", p2.Name)

	// Fence, then the attacker's last write lands on the primary's volume.
	fenceCommand(t, name, "INC-STANDBY-DATA")
	env := waitFencedTrue(t, name)
	writeFiles(t, primaryDir, map[string]string{"records/patient-1.json": "ENCRYPTED"})
	eventually(t, 90*time.Second, "the front routes the document store to the standby", func(ctx context.Context) (bool, string, error) {
		ok, why := routesOnlyTo(t, ctx, name, standby, "document-store")
		return ok, why, nil
	})
	// Unclean points go on while fenced; the standby stays on the newest
	// clean one, taken before the fence.
	eventually(t, 40*time.Second, "an unclean point after the fence", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		n := len(env.Status.Recovery.Points)
		last := env.Status.Recovery.Points[n-1]
		return !last.Clean && last.Ready && last.TakenAt.After(env.Status.Isolation.FencedAt.Add(time.Second)), recoveryCondition(env), nil
	})
	env, got = waitStandbyHolds(t, name, p2.TakenAt.Time)
	sd := standbyData(env)
	clean, _ := newestCleanPoint(env)
	if sd.DataTakenAt == nil || !sd.DataTakenAt.Equal(&clean.TakenAt) || clean.TakenAt.After(env.Status.Isolation.FencedAt.Time) ||
		sd.ServedSince == nil || env.Status.ActiveSite != v1alpha1.SiteStandby {
		t.Errorf("standbyData %+v, activeSite %q; want the newest clean point %s (taken %s, before the fence at %s), served",
			sd, env.Status.ActiveSite, clean.Name, clean.TakenAt, env.Status.Isolation.FencedAt)
	}
	if got["records/patient-1.json"] != `{"allergy":"penicillin","seen":"2026-12-03"}` {
		t.Errorf("the standby serves %v, want the record as of clean point %s, not what was written after the fence", got, sd.DataFrom)
	}
	c, _ := servingFromStandby(t, ctx, name)
	if c == nil || !strings.Contains(c.Message, "recovery point "+sd.DataFrom) {
		t.Errorf("ServingFromStandby = %+v, want its message to name recovery point %s", c, sd.DataFrom)
	}
	age := time.Since(sd.DataTakenAt.Time)
	t.Logf("serving from the standby on recovery point %s (data age %s at the check)", sd.DataFrom, age.Round(time.Second))

	// The copies are gone once the claims are bound; the primary's claim
	// and the points' snapshots are all there.
	eventually(t, 30*time.Second, "the standby's snapshot copies cleaned up", func(ctx context.Context) (bool, string, error) {
		vs := &unstructured.UnstructuredList{}
		vs.SetGroupVersionKind(volumeSnapshotGVK.GroupVersion().WithKind("VolumeSnapshotList"))
		if err := k8sClient.List(ctx, vs, client.InNamespace(standby)); err != nil {
			return false, "", err
		}
		contents := &unstructured.UnstructuredList{}
		contents.SetGroupVersionKind(volumeSnapshotGVK.GroupVersion().WithKind("VolumeSnapshotContentList"))
		if err := k8sClient.List(ctx, contents, client.MatchingLabels{v1alpha1.LabelEnvironment: name}); err != nil {
			return false, "", err
		}
		return len(vs.Items) == 0 && len(contents.Items) == 0, fmt.Sprintf("%d snapshots in %s, %d contents labelled %s", len(vs.Items), standby, len(contents.Items), name), nil
	})
	pvc := &corev1.PersistentVolumeClaim{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: primary, Name: storeClaim}, pvc); err != nil || pvc.DeletionTimestamp != nil {
		t.Errorf("the primary's claim after all this: %v (deleting %v)", err, pvc.DeletionTimestamp)
	}
	for _, p := range env.Status.Recovery.Points {
		snapshotOf(t, primary, p.Snapshots[0].Name)
	}
	if files := readFiles(t, primaryDir); files["records/patient-1.json"] != "ENCRYPTED" {
		t.Errorf("the primary's volume (evidence) holds %v, want it untouched", files)
	}
}

// TestColdStandbySeedsAtFailover: a Cold standby has no volume until the
// failover; the fence creates it from the newest clean point, and traffic
// moves once it runs on that data.
func TestColdStandbySeedsAtFailover(t *testing.T) {
	ctx := context.Background()
	requireStorage(t, ctx)
	name := uniqueName("colddata")
	primary, standby := name+"-primary", name+"-standby"
	applyStandbyEnv(t, name, "Cold")
	waitReadyEnv(t, name, 90*time.Second)
	primaryDir := dataDir(t, waitClaimBound(t, primary, storeClaim))
	writeFiles(t, primaryDir, map[string]string{"records/patient-2.json": `{"nhs":"943 476 5919"}`})
	p := waitCleanPointAfter(t, name, time.Now())

	var claims corev1.PersistentVolumeClaimList
	if err := k8sClient.List(ctx, &claims, client.InNamespace(standby)); err != nil {
		t.Fatal(err)
	}
	if len(claims.Items) != 0 {
		t.Fatalf("a Cold standby has %d claims before any failover", len(claims.Items))
	}

	start := time.Now()
	fenceCommand(t, name, "INC-COLD-DATA")
	eventually(t, 90*time.Second, "the front routes the document store to the new standby", func(ctx context.Context) (bool, string, error) {
		ok, why := routesOnlyTo(t, ctx, name, standby, "document-store")
		return ok, why, nil
	})
	t.Logf("cold failover with data: the front points at the standby %s after the fence", time.Since(start).Round(time.Millisecond))
	env, got := waitStandbyHolds(t, name, p.TakenAt.Time)
	if got["records/patient-2.json"] != `{"nhs":"943 476 5919"}` {
		t.Errorf("the Cold standby serves %v, want patient-2 as of point %s", got, standbyData(env).DataFrom)
	}
	// The front moves in the pass that records it, before that pass's
	// status write: the record follows.
	eventually(t, 30*time.Second, "the standby's data on record as seeded at the failover and served", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		sd := standbyData(env)
		if sd.SeededAt != nil && sd.SeededAt.Before(&metav1.Time{Time: start.Add(-time.Second)}) {
			return false, "", fmt.Errorf("standbyData %+v: seeded before the failover at %s", sd, start)
		}
		return sd.ServedSince != nil && sd.SeededAt != nil, fmt.Sprintf("standbyData %+v", sd), nil
	})
}
