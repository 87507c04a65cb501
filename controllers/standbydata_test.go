package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/failover"
)

// seedFixture is a Warm standby's seeding as the tests below drive it
// against the API server: the primary's claim and the standby's empty one
// (as its StatefulSet made it), a clean recovery point whose snapshot of
// pointClaim is ready, with its content as snapshot-controller and the CSI
// sidecar leave them, and a pass of reconcileStandbyData.
type seedFixture struct {
	t                *testing.T
	ctx              context.Context
	primary, standby string
	claimName        string
	primaryClaim     *corev1.PersistentVolumeClaim
	vs               *snapshotv1.VolumeSnapshot
	content          *snapshotv1.VolumeSnapshotContent
	taken            metav1.Time
	env              *v1alpha1.HealthEnvironment
	r                *HealthEnvironmentReconciler
	s                *scope
}

func newSeedFixture(t *testing.T, name string, uid types.UID, pointClaim string) *seedFixture {
	t.Helper()
	ctx := context.Background()
	f := &seedFixture{t: t, ctx: ctx, primary: name + "-primary", standby: name + "-standby", claimName: "records-document-store-0",
		taken: metav1.NewTime(time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC))}
	for _, ns := range []string{f.primary, f.standby} {
		if err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	newClaim := func(ns string) *corev1.PersistentVolumeClaim {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: f.claimName,
			Labels: map[string]string{v1alpha1.LabelEnvironment: name}},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}}}}
		if err := k8sClient.Create(ctx, pvc); err != nil {
			t.Fatal(err)
		}
		return pvc
	}
	f.primaryClaim = newClaim(f.primary)
	newClaim(f.standby)

	f.vs = &snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: f.primary, Name: "p-1-" + f.claimName},
		Spec: snapshotv1.VolumeSnapshotSpec{Source: snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(f.claimName)},
			VolumeSnapshotClassName: ptr.To("sd-snapshots")}}
	if err := k8sClient.Create(ctx, f.vs); err != nil {
		t.Fatal(err)
	}
	f.content = &snapshotv1.VolumeSnapshotContent{ObjectMeta: metav1.ObjectMeta{Name: "snapcontent-" + name + "-1"},
		Spec: snapshotv1.VolumeSnapshotContentSpec{DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete, Driver: "csi.careplane.io",
			Source:                  snapshotv1.VolumeSnapshotContentSource{VolumeHandle: ptr.To("vol-1")},
			VolumeSnapshotClassName: ptr.To("sd-snapshots"),
			VolumeSnapshotRef:       corev1.ObjectReference{Namespace: f.primary, Name: f.vs.Name, UID: f.vs.UID}}}
	if err := k8sClient.Create(ctx, f.content); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), f.content) })
	f.content.Status = &snapshotv1.VolumeSnapshotContentStatus{SnapshotHandle: ptr.To("snap-of-vol-1"), ReadyToUse: ptr.To(true)}
	if err := k8sClient.Status().Update(ctx, f.content); err != nil {
		t.Fatal(err)
	}
	size := resource.MustParse("64Mi")
	f.vs.Status = &snapshotv1.VolumeSnapshotStatus{BoundVolumeSnapshotContentName: ptr.To(f.content.Name), ReadyToUse: ptr.To(true), RestoreSize: &size}
	if err := k8sClient.Status().Update(ctx, f.vs); err != nil {
		t.Fatal(err)
	}

	f.env = careRecordsEnv(name)
	f.env.UID = uid
	f.env.Spec.Services[0].Critical = true
	f.env.Spec.Services[0].Replicas = ptr.To(int32(1))
	f.env.Spec.Failover.Standby = v1alpha1.StandbyWarm
	f.env.Spec.Recovery = &v1alpha1.Recovery{VolumeSnapshotClassName: "sd-snapshots"}
	f.env.Status.Recovery = &v1alpha1.RecoveryStatus{Points: []v1alpha1.RecoveryPoint{{Name: "p-1", TakenAt: f.taken, Clean: true, Ready: true,
		Snapshots: []v1alpha1.PointSnapshot{{Name: f.vs.Name, UID: string(f.vs.UID), Claim: pointClaim}}}}}
	f.r = &HealthEnvironmentReconciler{Client: k8sClient, APIReader: k8sClient}
	return f
}

// pass runs reconcileStandbyData once, as the reconcile would, and keeps
// the status it computed.
func (f *seedFixture) pass() {
	f.t.Helper()
	f.s = newScope(f.env, time.Now())
	f.s.decision = &failover.Decision{RunStandby: true, Serving: f.env.Status.ActiveSite != "", Site: f.env.Status.ActiveSite}
	f.s.standbyTemplates = f.env.Spec.Services[:1]
	if err := f.r.reconcileStandbyData(f.ctx, f.s); err != nil {
		f.t.Fatalf("reconcileStandbyData: %v", err)
	}
	f.env.Status = *f.s.status
}

func (f *seedFixture) getClaim(ns string) (*corev1.PersistentVolumeClaim, error) {
	pvc := &corev1.PersistentVolumeClaim{}
	return pvc, k8sClient.Get(f.ctx, client.ObjectKey{Namespace: ns, Name: f.claimName}, pvc)
}

// seedToCopy runs the first two passes: the standby's empty claim is
// replaced and the primary's not touched; then the point's snapshot is
// copied into the standby (a content with the source's snapshot handle,
// Retain, bound to a VolumeSnapshot of the standby).
func (f *seedFixture) seedToCopy() *snapshotv1.VolumeSnapshotContent {
	t, ctx := f.t, f.ctx
	t.Helper()
	f.pass()
	sd := f.env.Status.Failover.StandbyData
	if !f.s.standbyHold || sd.RefreshingTo != "p-1" {
		t.Fatalf("first pass: hold %v, standbyData %+v; want held, refreshing to p-1", f.s.standbyHold, sd)
	}
	old, err := f.getClaim(f.standby)
	if err != nil || old.DeletionTimestamp == nil {
		t.Fatalf("the standby's empty claim is not being deleted: %v %+v", err, old.ObjectMeta)
	}
	if got, err := f.getClaim(f.primary); err != nil || got.DeletionTimestamp != nil || got.UID != f.primaryClaim.UID {
		t.Fatalf("the primary's claim: %v, deleting %v", err, got.DeletionTimestamp)
	}
	old.Finalizers = nil // play the PVC protection controller
	if err := k8sClient.Update(ctx, old); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}

	f.pass()
	copyContent := &snapshotv1.VolumeSnapshotContent{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: "careplane-" + f.standby + "-" + f.vs.Name}, copyContent); err != nil {
		t.Fatalf("the copy's content: %v", err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), copyContent) })
	if h := copyContent.Spec.Source.SnapshotHandle; h == nil || *h != "snap-of-vol-1" || copyContent.Spec.Source.VolumeHandle != nil ||
		copyContent.Spec.DeletionPolicy != snapshotv1.VolumeSnapshotContentRetain || copyContent.Spec.VolumeSnapshotRef.Namespace != f.standby ||
		copyContent.Spec.VolumeSnapshotRef.Name != f.vs.Name || copyContent.Labels[v1alpha1.LabelSite] != "standby" {
		t.Errorf("the copy's content = %+v %+v", copyContent.Labels, copyContent.Spec)
	}
	return copyContent
}

// TestStandbyDataSeedsFromTheCleanPointOnRecord drives the standby's
// seeding against the API server, playing the storage controllers (none
// run in envtest): a claim the StatefulSet made empty in the standby is
// replaced, never the primary's; the copy of the point's snapshot is a
// content with the source content's handle, Retain, bound into the standby;
// the claim is created from it once it is ready, and recorded by UID; the
// copies go once the claim is bound; a standby that serves keeps its claim
// when a newer clean point comes; and a point whose snapshot on record was
// replaced (another UID) seeds nothing.
func TestStandbyDataSeedsFromTheCleanPointOnRecord(t *testing.T) {
	f := newSeedFixture(t, "sdseed", types.UID("5d1a5e0c-0000-4000-8000-000000000001"), "records-document-store-0")
	ctx, primary, standby, claimName, vs, content, taken, env, r := f.ctx, f.primary, f.standby, f.claimName, f.vs, f.content, f.taken, f.env, f.r
	pass, getClaim := f.pass, f.getClaim

	// The empty claim is replaced, the primary's is not touched; then the
	// copy, and the claim from it once it is ready.
	copyContent := f.seedToCopy()
	size := resource.MustParse("64Mi")
	copyVS := &snapshotv1.VolumeSnapshot{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: standby, Name: vs.Name}, copyVS); err != nil {
		t.Fatalf("the copy: %v", err)
	}
	if src := copyVS.Spec.Source.VolumeSnapshotContentName; src == nil || *src != copyContent.Name {
		t.Errorf("the copy's source = %+v", copyVS.Spec.Source)
	}
	if _, err := getClaim(standby); !apierrors.IsNotFound(err) || !f.s.standbyHold {
		t.Fatalf("a claim before the copy is ready (err %v), hold %v", err, f.s.standbyHold)
	}
	copyVS.Status = &snapshotv1.VolumeSnapshotStatus{BoundVolumeSnapshotContentName: ptr.To(copyContent.Name), ReadyToUse: ptr.To(true), RestoreSize: &size}
	if err := k8sClient.Status().Update(ctx, copyVS); err != nil {
		t.Fatal(err)
	}
	pass()
	seeded, err := getClaim(standby)
	if err != nil {
		t.Fatalf("the seeded claim: %v", err)
	}
	if ref := seeded.Spec.DataSourceRef; ref == nil || ref.Kind != "VolumeSnapshot" || ref.Name != vs.Name || f.s.standbyHold {
		t.Errorf("seeded claim dataSourceRef %+v, hold %v", ref, f.s.standbyHold)
	}
	sd := env.Status.Failover.StandbyData
	if sd.DataFrom != "p-1" || !sd.DataTakenAt.Equal(&taken) || sd.SeededAt == nil || sd.RefreshingTo != "" ||
		len(sd.Claims) != 1 || sd.Claims[0].UID != string(seeded.UID) {
		t.Errorf("standbyData = %+v", sd)
	}

	// Bound: the copies go.
	seeded.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}
	if err := k8sClient.Status().Update(ctx, seeded); err != nil {
		t.Fatal(err)
	}
	pass()
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(copyVS), copyVS); !apierrors.IsNotFound(err) && copyVS.DeletionTimestamp == nil {
		t.Errorf("the copy is still there once the claim is bound (err %v)", err)
	}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(copyContent), copyContent); !apierrors.IsNotFound(err) && copyContent.DeletionTimestamp == nil {
		t.Errorf("the copy's content is still there once the claim is bound (err %v)", err)
	}

	// Serving: a newer clean point does not replace the claim.
	env.Status.ActiveSite = v1alpha1.SiteStandby
	env.Status.Recovery.Points = append(env.Status.Recovery.Points, v1alpha1.RecoveryPoint{Name: "p-2", TakenAt: metav1.NewTime(taken.Add(time.Minute)),
		Clean: true, Ready: true, Snapshots: []v1alpha1.PointSnapshot{{Name: "p-2-" + claimName, UID: "u-2", Claim: claimName}}})
	pass()
	if got, err := getClaim(standby); err != nil || got.DeletionTimestamp != nil || f.s.standbyHold || env.Status.Failover.StandbyData.ServedSince == nil {
		t.Errorf("serving standby: claim err %v deleting %v, hold %v, standbyData %+v", err, got.DeletionTimestamp, f.s.standbyHold, env.Status.Failover.StandbyData)
	}

	// Not serving any more, but it served: still kept.
	env.Status.ActiveSite = v1alpha1.SitePrimary
	pass()
	if got, err := getClaim(standby); err != nil || got.DeletionTimestamp != nil {
		t.Errorf("a standby that served: claim err %v, deleting %v", err, got.DeletionTimestamp)
	}

	// A point whose snapshot on record was replaced (another UID) seeds
	// nothing: the standby's claims are deleted by a person, and p-2's
	// snapshot is not the one on record.
	if err := k8sClient.Delete(ctx, seeded); err != nil {
		t.Fatal(err)
	}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(seeded), seeded); err == nil {
		seeded.Finalizers = nil // play the PVC protection controller
		if err := k8sClient.Update(ctx, seeded); client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
	}
	forged := &snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: primary, Name: "p-2-" + claimName,
		Labels: map[string]string{v1alpha1.LabelClean: "true", v1alpha1.LabelRecoveryPoint: "p-2"}},
		Spec: snapshotv1.VolumeSnapshotSpec{Source: snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(claimName)}}}
	if err := k8sClient.Create(ctx, forged); err != nil {
		t.Fatal(err)
	}
	forged.Status = &snapshotv1.VolumeSnapshotStatus{BoundVolumeSnapshotContentName: ptr.To(content.Name), ReadyToUse: ptr.To(true)}
	if err := k8sClient.Status().Update(ctx, forged); err != nil {
		t.Fatal(err)
	}
	f.s = newScope(env, time.Now())
	f.s.decision = &failover.Decision{RunStandby: true}
	f.s.standbyTemplates = env.Spec.Services[:1]
	err = r.reconcileStandbyData(ctx, f.s)
	if err == nil || !strings.Contains(err.Error(), "is not the ready snapshot of recovery point p-2 on record") {
		t.Errorf("seeding from a replaced snapshot: err %v, want it refused", err)
	}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: "careplane-" + standby + "-" + forged.Name}, &snapshotv1.VolumeSnapshotContent{}); !apierrors.IsNotFound(err) {
		t.Errorf("a copy of the replaced snapshot was made (err %v)", err)
	}
}

// TestAStaleStatusKeepsTheSeededClaim: a pass whose status is behind this
// process's own seeding (the cache has the new claim, not yet the status
// that records it: the claim's event wakes the next pass at once) keeps the
// claim, and records it again. Taken for a stranger's, it was deleted under
// the standby's pod, and the standby never served (seen once in
// TestColdStandbySeedsAtFailover: "from p to p").
func TestAStaleStatusKeepsTheSeededClaim(t *testing.T) {
	f := newSeedFixture(t, "sdstale", types.UID("5d1a5e0c-0000-4000-8000-000000000009"), "records-document-store-0")
	f.seedToCopy()
	copyVS := &snapshotv1.VolumeSnapshot{}
	if err := k8sClient.Get(f.ctx, client.ObjectKey{Namespace: f.standby, Name: f.vs.Name}, copyVS); err != nil {
		t.Fatalf("the copy: %v", err)
	}
	size := resource.MustParse("64Mi")
	copyVS.Status = &snapshotv1.VolumeSnapshotStatus{BoundVolumeSnapshotContentName: copyVS.Spec.Source.VolumeSnapshotContentName, ReadyToUse: ptr.To(true), RestoreSize: &size}
	if err := k8sClient.Status().Update(f.ctx, copyVS); err != nil {
		t.Fatal(err)
	}
	stale := f.env.Status.DeepCopy()
	if sd := stale.Failover.StandbyData; sd.DataFrom != "p-1" || len(sd.Claims) != 0 {
		t.Fatalf("the status before the seed = %+v, want from p-1 with no claim yet", sd)
	}
	f.pass()
	seeded, err := f.getClaim(f.standby)
	if err != nil || len(f.env.Status.Failover.StandbyData.Claims) != 1 {
		t.Fatalf("the seed: claim %v, standbyData %+v", err, f.env.Status.Failover.StandbyData)
	}

	seededAt := f.env.Status.Failover.StandbyData.SeededAt
	f.env.Status = *stale // the cache, behind the seed's status write
	f.pass()
	got, err := f.getClaim(f.standby)
	if err != nil || got.DeletionTimestamp != nil || got.UID != seeded.UID {
		t.Fatalf("the seeded claim after a pass on the status from before it: err %v, deleting %v, UID %s (seeded %s)", err, got.DeletionTimestamp, got.UID, seeded.UID)
	}
	if sd := f.env.Status.Failover.StandbyData; sd.DataFrom != "p-1" || len(sd.Claims) != 1 || sd.Claims[0].UID != string(seeded.UID) || f.s.standbyHold ||
		sd.SeededAt == nil || !sd.SeededAt.Equal(seededAt) || sd.RefreshingTo != "" {
		t.Errorf("standbyData after that pass = %+v, hold %v; want the seed on record again as it was (seeded at %v), not held", sd, f.s.standbyHold, seededAt)
	}

	// Older still: a status that records no seed at all (the write that
	// began this one lost as well).
	stale.Failover.StandbyData = &v1alpha1.StandbyData{}
	f.env.Status = *stale
	f.pass()
	got, err = f.getClaim(f.standby)
	if err != nil || got.DeletionTimestamp != nil || got.UID != seeded.UID {
		t.Fatalf("the seeded claim after a pass on a status with no seed: err %v, deleting %v", err, got.DeletionTimestamp)
	}
	if sd := f.env.Status.Failover.StandbyData; sd.DataFrom != "p-1" || !sd.DataTakenAt.Equal(&f.taken) || len(sd.Claims) != 1 || sd.Claims[0].UID != string(seeded.UID) || f.s.standbyHold ||
		sd.SeededAt == nil || !sd.SeededAt.Equal(seededAt) || sd.RefreshingTo != "" {
		t.Errorf("standbyData after that pass = %+v, hold %v; want the seed from p-1 on record again as it was, not held", sd, f.s.standbyHold)
	}

	// Another process (a new leader) remembers nothing: it reads the status
	// its cache synced, which records the seed.
	f.r = &HealthEnvironmentReconciler{Client: k8sClient, APIReader: k8sClient}
	f.pass()
	if got, err := f.getClaim(f.standby); err != nil || got.DeletionTimestamp != nil || got.UID != seeded.UID {
		t.Errorf("the seeded claim after a pass of a new leader: err %v, deleting %v", err, got.DeletionTimestamp)
	}
}

// TestCachedClaimKeepsItsUID: the standby's claims are known by the UIDs on
// record and deleted on the precondition of their UID, read from the cache.
func TestCachedClaimKeepsItsUID(t *testing.T) {
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "n", UID: "u-1",
		Annotations: map[string]string{"a": "b"}},
		Spec: corev1.PersistentVolumeClaimSpec{DataSourceRef: &corev1.TypedObjectReference{Kind: "VolumeSnapshot", Name: "s"}}}
	if _, err := trimClaim(pvc); err != nil {
		t.Fatal(err)
	}
	if pvc.UID != "u-1" || pvc.Annotations != nil || pvc.Spec.DataSourceRef != nil {
		t.Errorf("trimmed claim = %+v", pvc)
	}
}

// TestStandbyDataSeedsFromAPointOfARestoredPrimary: after a restore from a
// recovery point the primary's claims carry its data generation
// (records-document-store-<generation>-0), and so do the snapshots of every
// point taken since; the standby's claim (records-document-store-0) is still
// seeded from the point's snapshot of the same volume and replica.
func TestStandbyDataSeedsFromAPointOfARestoredPrimary(t *testing.T) {
	f := newSeedFixture(t, "sdgen", types.UID("5d1a5e0c-0000-4000-8000-000000000002"),
		// Taken of the primary's claim after a restore from a recovery
		// point: of its data generation, not of the standby's claim name.
		"records-document-store-rtpg000-0")
	f.seedToCopy()
}
