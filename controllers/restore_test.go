package controllers

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/testutil"
)

// readySnapshot creates a VolumeSnapshot of claim in ns and reports it ready
// to use, as the snapshot controller would.
func readySnapshot(t *testing.T, ctx context.Context, ns, name, claim string) *snapshotv1.VolumeSnapshot {
	t.Helper()
	vs := &snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: snapshotv1.VolumeSnapshotSpec{Source: snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(claim)}}}
	if err := k8sClient.Create(ctx, vs); err != nil {
		t.Fatal(err)
	}
	vs.Status = &snapshotv1.VolumeSnapshotStatus{ReadyToUse: ptr.To(true), RestoreSize: ptr.To(resource.MustParse("1Gi"))}
	if err := k8sClient.Status().Update(ctx, vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestRestoreFromARecoveryPoint: restoring a fenced care-records
// environment brings the document store's volumes back from the newest
// clean point taken before the fence whose snapshots are the ones on
// record (a snapshot replaced under the same name does not count), into new
// claims a new StatefulSet of the restore's data generation adopts; the
// fenced claims stay, labelled as evidence; the fence stays until the
// restored claims are bound and the pods Ready; the incident names the point
// and the data time lost. A point named that does not exist blocks the
// restore and keeps the fence, creating nothing.
func TestRestoreFromARecoveryPoint(t *testing.T) {
	ctx := context.Background()
	const name = "restorept"
	ns := name + "-primary"
	env := careRecordsEnv(name)
	createFenceable(t, ctx, env)
	ss := &appsv1.StatefulSet{}
	eventually(t, 20*time.Second, "the document store's StatefulSet", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "document-store"}, ss)
		return err == nil, "", client.IgnoreNotFound(err)
	})
	// The claims, bound, as the StatefulSet controller and the binder
	// would leave them.
	vct := ss.Spec.VolumeClaimTemplates[0]
	for i := range 2 {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("records-document-store-%d", i), Labels: vct.Labels},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: vct.Spec.AccessModes, Resources: vct.Spec.Resources}}
		if err := k8sClient.Create(ctx, pvc); err != nil {
			t.Fatal(err)
		}
		pvc.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}
		if err := k8sClient.Status().Update(ctx, pvc); err != nil {
			t.Fatal(err)
		}
	}

	patchIsolation(t, ctx, name, `{"mode":"Fenced","reason":"ransomware","ticket":"INC-77","workloads":"Stop"}`)
	nsObj := &corev1.Namespace{}
	eventually(t, 20*time.Second, "the fence on record", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			return false, "", err
		}
		return fence.RecordOf(nsObj).Present(), "", nil
	})
	eventually(t, 20*time.Second, "the fence's ticket in the status", func(ctx context.Context) (bool, string, error) {
		e := getEnv(t, ctx, name)
		return e.Status.Isolation != nil && e.Status.Isolation.Ticket == "INC-77", fmt.Sprintf("%+v", e.Status.Isolation), nil
	})
	fencedAt, ok := fence.RecordOf(nsObj).Began()
	if !ok {
		t.Fatalf("fence ID %q", nsObj.Annotations[fence.AnnotationID])
	}

	// Three points on record: old (clean, its snapshots as recorded), newer
	// (clean, but a snapshot of it replaced since: another UID), one since
	// the fence (unclean). The recovery point controller is not enabled
	// for this environment (no spec.recovery): the status is the test's.
	point := func(name string, at time.Time, clean bool, snaps ...*snapshotv1.VolumeSnapshot) v1alpha1.RecoveryPoint {
		p := v1alpha1.RecoveryPoint{Name: name, TakenAt: metav1.NewTime(at), Clean: clean, Ready: true}
		for _, s := range snaps {
			p.Snapshots = append(p.Snapshots, v1alpha1.PointSnapshot{Name: s.Name, UID: string(s.UID), Claim: *s.Spec.Source.PersistentVolumeClaimName})
		}
		return p
	}
	old0 := readySnapshot(t, ctx, ns, "old-0", "records-document-store-0")
	old1 := readySnapshot(t, ctx, ns, "old-1", "records-document-store-1")
	new0 := readySnapshot(t, ctx, ns, "new-0", "records-document-store-0")
	new1 := readySnapshot(t, ctx, ns, "new-1", "records-document-store-1")
	after0 := readySnapshot(t, ctx, ns, "after-0", "records-document-store-0")
	after1 := readySnapshot(t, ctx, ns, "after-1", "records-document-store-1")
	pOld := point("p-old", fencedAt.Add(-20*time.Minute).Truncate(time.Second), true, old0, old1)
	pNew := point("p-new", fencedAt.Add(-5*time.Minute).Truncate(time.Second), true, new0, new1)
	pAfter := point("p-after", fencedAt.Add(time.Minute).Truncate(time.Second), false, after0, after1)
	// new-1 replaced: deleted and created again under its name, with
	// labels anyone can set.
	if err := k8sClient.Delete(ctx, new1); err != nil {
		t.Fatal(err)
	}
	readySnapshot(t, ctx, ns, "new-1", "records-document-store-1")
	eventually(t, 10*time.Second, "status.recovery written", func(ctx context.Context) (bool, string, error) {
		e := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, e); err != nil {
			return false, "", err
		}
		e.Status.Recovery = &v1alpha1.RecoveryStatus{Points: []v1alpha1.RecoveryPoint{pOld, pNew, pAfter}}
		err := k8sClient.Status().Update(ctx, e)
		return err == nil, fmt.Sprint(err), nil
	})

	// An unknown point: blocked, the fence stays, nothing is created.
	patchIsolation(t, ctx, name, `{"mode":"None","reason":"","restoreFrom":{"recoveryPoint":"p-nope"}}`)
	got := waitCondition(t, name, v1alpha1.ConditionRestoring, "False", v1alpha1.ReasonRestoreBlocked)
	if c := findCondition(got.Status.Conditions, v1alpha1.ConditionRestoring); !strings.Contains(c.Message, `recoveryPoint "p-nope" is not a recovery point of this environment`) {
		t.Errorf("Restoring message = %q", c.Message)
	}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	if !fence.RecordOf(nsObj).Present() || nsObj.Annotations[v1alpha1.AnnotationDataGeneration] != "" {
		t.Errorf("blocked restore: namespace labels %v annotations %v, want the fence and no data generation", nsObj.Labels, nsObj.Annotations)
	}
	var pvcs corev1.PersistentVolumeClaimList
	if err := k8sClient.List(ctx, &pvcs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(pvcs.Items) != 2 {
		t.Errorf("%d claims after a blocked restore, want the 2 fenced ones only", len(pvcs.Items))
	}

	// The default: the newest clean point before the fence whose snapshots
	// are the ones on record, p-old.
	patchIsolation(t, ctx, name, `{"restoreFrom":null}`)
	var gen string
	eventually(t, 20*time.Second, "the data generation on record", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			return false, "", err
		}
		gen = nsObj.Annotations[v1alpha1.AnnotationDataGeneration]
		return gen != "", "", nil
	})
	restoreStarted, err := time.Parse(time.RFC3339Nano, nsObj.Annotations[fence.AnnotationRestoreID])
	if err != nil || gen != build.DataGeneration(restoreStarted) {
		t.Fatalf("data generation %q, restore ID %q (%v)", gen, nsObj.Annotations[fence.AnnotationRestoreID], err)
	}
	sts := "document-store-" + gen
	eventually(t, 20*time.Second, "restored claims and the new StatefulSet", func(ctx context.Context) (bool, string, error) {
		for i, snap := range []string{"old-0", "old-1"} {
			c := &corev1.PersistentVolumeClaim{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("records-%s-%d", sts, i)}, c); err != nil {
				return false, "", client.IgnoreNotFound(err)
			}
			if ds := c.Spec.DataSource; ds == nil || ds.Kind != "VolumeSnapshot" || ds.Name != snap || ptr.Deref(ds.APIGroup, "") != "snapshot.storage.k8s.io" {
				return false, "", fmt.Errorf("claim %s dataSource %+v, want VolumeSnapshot %s", c.Name, ds, snap)
			}
			if c.Annotations[v1alpha1.AnnotationRestoredFrom] != "p-old/"+snap || c.Labels[v1alpha1.LabelEvidence] != "" {
				return false, "", fmt.Errorf("claim %s annotations %v labels %v", c.Name, c.Annotations, c.Labels)
			}
		}
		cur := &appsv1.StatefulSet{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: sts}, cur); err != nil {
			return false, "StatefulSet " + sts, client.IgnoreNotFound(err)
		}
		return ptr.Deref(cur.Spec.Replicas, 0) == 2, "", nil
	})
	// The fenced claims: kept, labelled as evidence; the old StatefulSet
	// gone (its claims retained).
	for i := range 2 {
		c := &corev1.PersistentVolumeClaim{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("records-document-store-%d", i)}, c); err != nil {
			t.Fatalf("fenced claim %d: %v", i, err)
		}
		if c.Labels[v1alpha1.LabelEvidence] != "INC-77" || c.DeletionTimestamp != nil {
			t.Errorf("fenced claim %s labels %v deleting %v, want evidence=INC-77 and kept", c.Name, c.Labels, c.DeletionTimestamp)
		}
	}
	eventually(t, 10*time.Second, "the fenced StatefulSet removed", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "document-store"}, &appsv1.StatefulSet{})
		return apierrors.IsNotFound(err), "", client.IgnoreNotFound(err)
	})

	// The records API's Deployment is rebuilt in the same pass, after the
	// StatefulSet: marked ready before that, the old one was, and the
	// rebuilt one never became Ready (seen under load in CI).
	eventually(t, 20*time.Second, "the records API rebuilt", func(ctx context.Context) (bool, string, error) {
		d := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "records-api"}, d); err != nil {
			return false, "", client.IgnoreNotFound(err)
		}
		rev := d.Spec.Template.Annotations[build.AnnotationCredentialsRevision]
		return rev == nsObj.Annotations[fence.AnnotationRestoreID], "revision " + rev, nil
	})
	// Pods Ready but the claims not bound yet: the fence stays.
	setDeploymentsReady(t, ctx, ns)
	setStatefulSetReady(t, ctx, ns, sts)
	time.Sleep(2 * time.Second)
	fencePolicy := client.ObjectKey{Namespace: ns, Name: build.FencePolicyName}
	if err := k8sClient.Get(ctx, fencePolicy, &networkingv1.NetworkPolicy{}); err != nil {
		t.Fatalf("the fence went before the restored claims were bound: %v", err)
	}
	if s, r := condition(getEnv(t, ctx, name), v1alpha1.ConditionFenced); s != "True" || r != v1alpha1.ReasonRestoring {
		t.Errorf("Fenced = %s/%s with the claims pending, want True/%s", s, r, v1alpha1.ReasonRestoring)
	}

	for i := range 2 {
		c := &corev1.PersistentVolumeClaim{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("records-%s-%d", sts, i)}, c); err != nil {
			t.Fatal(err)
		}
		c.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}
		if err := k8sClient.Status().Update(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	waitCondition(t, name, v1alpha1.ConditionFenced, "False", v1alpha1.ReasonNotFenced)
	restored := getEnv(t, ctx, name)
	if n := len(restored.Status.Incidents); n != 1 {
		t.Fatalf("incidents = %+v, want 1", restored.Status.Incidents)
	}
	inc := restored.Status.Incidents[0]
	wantLost := fencedAt.Sub(pOld.TakenAt.Time)
	if inc.RecoveryPoint != "p-old" || inc.RecoveryPointTakenAt == nil || !inc.RecoveryPointTakenAt.Equal(&pOld.TakenAt) ||
		inc.DataLost == nil || inc.DataLost.Duration != wantLost || inc.Ticket != "INC-77" {
		t.Errorf("incident = %+v (dataLost %v), want point p-old taken %s, %s lost", inc, inc.DataLost, pOld.TakenAt, wantLost)
	}
	// After the restore the operator keeps to the restored StatefulSet and
	// its claims: nothing of the fenced generation comes back.
	time.Sleep(time.Second)
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "document-store"}, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
		t.Errorf("a StatefulSet of the fenced generation is back (err %v)", err)
	}
	if err := k8sClient.List(ctx, &pvcs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(pvcs.Items) != 4 {
		t.Errorf("%d claims after the restore, want 4 (2 kept as evidence, 2 restored)", len(pvcs.Items))
	}
}

// setStatefulSetReady plays the StatefulSet controller: all replicas ready
// at the current generation.
func setStatefulSetReady(t *testing.T, ctx context.Context, ns, name string) {
	t.Helper()
	ss := &appsv1.StatefulSet{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ss); err != nil {
		t.Fatal(err)
	}
	n := ptr.Deref(ss.Spec.Replicas, 1)
	ss.Status = appsv1.StatefulSetStatus{ObservedGeneration: ss.Generation, Replicas: n, ReadyReplicas: n, UpdatedReplicas: n,
		CurrentReplicas: n, AvailableReplicas: n}
	if err := k8sClient.Status().Update(ctx, ss); err != nil {
		t.Fatal(err)
	}
}

// TestARestoreCleansOnce: a restore clears the fenced namespace (eleven live
// lists and their deletes) once; its later passes, woken by the rebuilt
// pods' progress while it waits for them to be Ready, neither list nor
// write again. Each pass repeated the clean-up: in a fleet restore that was
// most of careplane's requests.
func TestARestoreCleansOnce(t *testing.T) {
	ctx := context.Background()
	const name = "clean-once"
	ns := name + "-primary"
	env := sampleEnv(name)
	createReady(t, ctx, env, 6)
	patchIsolation(t, ctx, name, `{"mode":"Fenced","reason":"ransomware","workloads":"Stop"}`)
	waitCondition(t, name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	// A route written after the fence's last pass (here no front guard
	// refuses it) goes with the restore's clean-up, long before the lift.
	front := build.FrontNamespace(env)
	early := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "early", Namespace: front}, //nolint:staticcheck // the mirroring controller still reads them
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "203.0.113.9"}}}}} //nolint:staticcheck
	if err := k8sClient.Create(ctx, early); err != nil {
		t.Fatal(err)
	}
	patchIsolation(t, ctx, name, `{"mode":"None"}`)

	// The rebuild: both Deployments run the restore's revision.
	var deps appsv1.DeploymentList
	eventually(t, 20*time.Second, "the Deployments rebuilt", func(ctx context.Context) (bool, string, error) {
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			return false, "", err
		}
		rev := fence.RecordOf(nsObj).RestoreID
		if err := k8sClient.List(ctx, &deps, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEnvironment: name}); err != nil {
			return false, "", err
		}
		n := 0
		for _, d := range deps.Items {
			if rev != "" && d.Spec.Template.Annotations[build.AnnotationCredentialsRevision] == rev {
				n++
			}
		}
		return n == 2, fmt.Sprintf("%d of %d rebuilt for restore %q", n, len(deps.Items), rev), nil
	})
	time.Sleep(2 * time.Second)
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(early), early); !apierrors.IsNotFound(err) {
		t.Errorf("Endpoints %s/%s, written after the fence's last pass, still there when the restore's clean-up is done: %v", front, early.Name, err)
	}

	// Each round below changes what the status reports (replicas), so each
	// pass writes the status once: those writes count the passes. The
	// clean-up listed eleven kinds in the namespace and deleted the fence
	// quota, every pass read each Deployment live, and read the record and
	// the FenceRequests live as well (now only before the restore's first
	// write and before it lifts the fence).
	passes, stopPasses := requests.Tap(func(method, path string) bool {
		return method == http.MethodPatch && path == "/apis/careplane.io/v1alpha1/healthenvironments/"+name+"/status"
	})
	inNamespace, stopInNamespace := requests.Tap(func(_, path string) bool {
		return strings.Contains(path, "/namespaces/"+ns+"/") || path == "/api/v1/namespaces/"+ns
	})
	// Nor does the front sweep look again: the clean-up pass swept.
	frontLists, stopFrontLists := requests.Tap(func(method, path string) bool {
		return method == http.MethodGet && (path == "/api/v1/namespaces/"+front+"/endpoints" || path == "/apis/discovery.k8s.io/v1/namespaces/"+front+"/endpointslices")
	})
	defer stopPasses()
	defer stopInNamespace()
	defer stopFrontLists()
	for round := range 4 {
		for i := range deps.Items {
			d := &deps.Items[i]
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
				t.Fatal(err)
			}
			// Starting, not Ready: the restore waits on. The first one's
			// ready count goes up and down, which the status reports.
			ready := int32(0)
			if i == 0 {
				ready = int32(round % 2)
			}
			n := *d.Spec.Replicas
			d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: ready,
				Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
					Reason: "ReplicaSetUpdated", Message: fmt.Sprintf("round %d", round)}}}
			if err := k8sClient.Status().Update(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second)
	}
	time.Sleep(resyncPeriod)
	if passes() < 3 {
		t.Fatalf("only %d passes while the restore waited; the test would prove nothing", passes())
	}
	if c := findCondition(getEnv(t, ctx, name).Status.Conditions, v1alpha1.ConditionFenced); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("the restore ended early: Fenced %+v", c)
	}
	if n := inNamespace(); n != 0 {
		t.Errorf("%d requests to %s in %d passes of a restore waiting for its pods, want none", n, ns, passes())
	}
	if n := frontLists(); n != 0 {
		t.Errorf("%d live lists of %s's routes in %d passes of a restore waiting for its pods, want none", n, front, passes())
	}

	// A route written meanwhile (here no front guard refuses it) goes
	// before the fence lifts.
	late := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: front}, //nolint:staticcheck // the mirroring controller still reads them
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "203.0.113.9"}}}}} //nolint:staticcheck
	if err := k8sClient.Create(ctx, late); err != nil {
		t.Fatal(err)
	}

	// Ready: the restore completes, its fence lifted. The ServiceAccounts
	// it recreated keep the restore's revision on record: the passes after
	// it, which provision the site as usual, dropped it, a write each.
	accounts, stopAccounts := requests.Tap(func(method, path string) bool {
		return method == http.MethodPatch && strings.HasPrefix(path, "/api/v1/namespaces/"+ns+"/serviceaccounts/")
	})
	defer stopAccounts()
	// Every write but events, in the order sent.
	var mu sync.Mutex
	var writes []string
	_, stopWrites := requests.Tap(func(method, path string) bool {
		if method != http.MethodGet && !strings.HasSuffix(path, "/events") && !strings.Contains(path, "/events/") {
			mu.Lock()
			writes = append(writes, method+" "+path)
			mu.Unlock()
		}
		return false
	})
	defer stopWrites()
	setDeploymentsReady(t, ctx, ns)
	waitCondition(t, name, v1alpha1.ConditionFenced, "False", v1alpha1.ReasonNotFenced)
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(late), late); !apierrors.IsNotFound(err) {
		t.Errorf("Endpoints %s/%s, written while the restore waited, still there after the lift: %v", front, late.Name, err)
	}
	time.Sleep(resyncPeriod)
	if n := accounts(); n != 0 {
		t.Errorf("%d ServiceAccount writes after the restore recreated them, want none", n)
	}

	// The lift pass leaves the primary site as every later pass would: the
	// record's lift is the last write there (the front's EndpointSlices,
	// the finalizer and the status follow). The pass after it applied the
	// namespace again (the record moved its resourceVersion) and deleted
	// the evidence policy the lift wrote with no evidence pods to isolate.
	stopWrites()
	mu.Lock()
	defer mu.Unlock()
	liftWrite := http.MethodPatch + " /api/v1/namespaces/" + ns
	lift := slices.Index(writes, liftWrite)
	if lift < 0 {
		t.Fatalf("no write of the record's lift among %q", writes)
	}
	if i := slices.Index(writes, http.MethodDelete+" /api/v1/namespaces/"+front+"/endpoints/"+late.Name); i < 0 || i > lift {
		t.Errorf("the route written while the restore waited was deleted at write %d, the fence lifted at write %d; want it gone first", i, lift)
	}
	for _, w := range writes[lift+1:] {
		if strings.HasSuffix(w, " /api/v1/namespaces/"+ns) || strings.Contains(w, "/namespaces/"+ns+"/") {
			t.Errorf("%s after the fence was lifted; the lift pass should leave the site as it stays", w)
		}
	}
	conds := getEnv(t, ctx, name).Status.Conditions
	if c := findCondition(conds, v1alpha1.ConditionFenced); c == nil || c.Message != "The fence was lifted after the primary site was rebuilt" {
		t.Errorf("Fenced after the restore: %+v, want how the fence ended", c)
	}
	if c := findCondition(conds, v1alpha1.ConditionIsolationVerified); c == nil || c.Reason != v1alpha1.ReasonNotEvaluated {
		t.Errorf("IsolationVerified after the restore: %+v, want NotEvaluated", c)
	}
}

// TestARestoreRebuildsTheDeploymentWhole (hole 8): a container and a label
// another field manager added to careplane's Deployment before the fence are
// gone after the restore, and careplane's apply alone owns the Deployment's
// fields, so that a field the spec drops later is removed. (Replaced in
// place by an update, the update's writer kept every field it changed, the
// credentials revision and the replicas among them.)
func TestARestoreRebuildsTheDeploymentWhole(t *testing.T) {
	ctx := context.Background()
	const name = "replaced-whole"
	ns := name + "-primary"
	env := sampleEnv(name)
	env.Spec.Services[0].Env = []v1alpha1.EnvVar{{Name: "MODE", Value: "live"}}
	createReady(t, ctx, env, 11)
	key := client.ObjectKey{Namespace: ns, Name: "call-handling"}
	before := &appsv1.Deployment{}
	if err := k8sClient.Get(ctx, key, before); err != nil {
		t.Fatal(err)
	}
	injected := []byte(`{"metadata":{"labels":{"injected":"yes"}},"spec":{"template":{"spec":{"containers":[{"name":"exfil","image":"registry.example/exfil@sha256:` +
		strings.Repeat("8", 64) + `"}]}}}}`)
	if err := k8sClient.Patch(ctx, before.DeepCopy(), client.RawPatch(types.StrategicMergePatchType, injected), client.FieldOwner("tenant-pipeline")); err != nil {
		t.Fatal(err)
	}

	patchIsolation(t, ctx, name, `{"mode":"Fenced","reason":"ransomware","workloads":"Stop"}`)
	waitCondition(t, name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	patchIsolation(t, ctx, name, `{"mode":"None"}`)
	dep := &appsv1.Deployment{}
	eventually(t, 20*time.Second, "call-handling rebuilt", func(ctx context.Context) (bool, string, error) {
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			return false, "", err
		}
		rev := fence.RecordOf(nsObj).RestoreID
		if err := k8sClient.Get(ctx, key, dep); err != nil {
			return false, "", client.IgnoreNotFound(err)
		}
		got := dep.Spec.Template.Annotations[build.AnnotationCredentialsRevision]
		return rev != "" && got == rev, fmt.Sprintf("revision %q, restore %q", got, rev), nil
	})
	if _, ok := dep.Labels["injected"]; ok {
		t.Errorf("the injected label survived the restore: %v", dep.Labels)
	}
	if n := len(dep.Spec.Template.Spec.Containers); n != 1 || dep.Spec.Template.Spec.Containers[0].Name != "call-handling" {
		t.Errorf("containers after the restore = %+v, want call-handling alone", dep.Spec.Template.Spec.Containers)
	}
	for _, m := range dep.ManagedFields {
		if m.Manager == "tenant-pipeline" || (m.Manager == fieldOwner && m.Operation != metav1.ManagedFieldsOperationApply) {
			t.Errorf("after the restore %s (%s) owns fields of the Deployment: %s", m.Manager, m.Operation, m.FieldsV1.String())
		}
	}

	// The restore completes; a field the spec drops is removed.
	setDeploymentsReady(t, ctx, ns)
	waitCondition(t, name, v1alpha1.ConditionFenced, "False", v1alpha1.ReasonNotFenced)
	updateEnv(t, ctx, name, func(e *v1alpha1.HealthEnvironment) { e.Spec.Services[0].Env = nil })
	eventually(t, 20*time.Second, "MODE removed from call-handling", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, key, dep); err != nil {
			return false, "", err
		}
		env := dep.Spec.Template.Spec.Containers[0].Env
		return len(env) == 0, fmt.Sprintf("env %+v", env), nil
	})
}

// TestARestoreRotatesIntoSecretsOfTheirOwn: the credentials a restore
// rotates are Secrets of new names, which no pod made before it names (the
// kubelet would serve an evidence pod whatever Secret has the name it
// gives); the Secrets of the fenced revision do not come back. The primary
// then runs the restore's revision, as its Namespace records it: a service
// added after the restore, a Deployment the tenant deletes or re-annotates,
// all come back on it, never on the names from before the restore.
func TestARestoreRotatesIntoSecretsOfTheirOwn(t *testing.T) {
	ctx := context.Background()
	const name = "own-secrets"
	ns := name + "-primary"
	env := sampleEnv(name)
	env.Spec.Services[1].GeneratedSecrets = []string{"cad-key"}
	env.Spec.Services[0].SecretsFrom = []v1alpha1.SecretFrom{{Service: "referral", Secret: "cad-key"}}
	createReady(t, ctx, env, 12)
	named := func(dep string) []string {
		d := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: dep}, d); err != nil {
			return []string{err.Error()}
		}
		var out []string
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				out = append(out, v.Secret.SecretName)
			}
		}
		slices.Sort(out)
		return out
	}
	if got, want := named("call-handling"), []string{"call-handling.db-password", "referral.cad-key"}; !slices.Equal(got, want) {
		t.Fatalf("before any restore call-handling names %v, want %v", got, want)
	}

	patchIsolation(t, ctx, name, `{"mode":"Fenced","reason":"ransomware","workloads":"Stop"}`)
	waitCondition(t, name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	patchIsolation(t, ctx, name, `{"mode":"None"}`)
	var rev string
	eventually(t, 20*time.Second, "rebuilt", func(ctx context.Context) (bool, string, error) {
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			return false, "", err
		}
		rev = fence.RecordOf(nsObj).RestoreID
		var deps appsv1.DeploymentList
		if err := k8sClient.List(ctx, &deps, client.InNamespace(ns)); err != nil {
			return false, "", err
		}
		n := 0
		for _, d := range deps.Items {
			if rev != "" && d.Spec.Template.Annotations[build.AnnotationCredentialsRevision] == rev {
				n++
			}
		}
		return n == 2, fmt.Sprintf("%d of 2 Deployments on restore %q", n, rev), nil
	})
	setDeploymentsReady(t, ctx, ns)
	waitCondition(t, name, v1alpha1.ConditionFenced, "False", v1alpha1.ReasonNotFenced)
	nsObj := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	if got := nsObj.Annotations[build.AnnotationCredentialsRevision]; got != rev {
		t.Errorf("the lifted namespace records credentials revision %q, want the restore's %q", got, rev)
	}
	at := func(svc, secret string) string {
		return build.GeneratedSecretObjectName(v1alpha1.SitePrimary, svc, secret, rev)
	}
	if got, want := named("call-handling"), []string{at("call-handling", "db-password"), at("referral", "cad-key")}; !slices.Equal(got, want) {
		t.Errorf("after the restore call-handling names %v, want the restore's %v", got, want)
	}
	for _, old := range []string{"call-handling.db-password", "referral.cad-key"} {
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: old}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
			t.Errorf("Secret %s of the fenced revision after the restore: %v, want it gone", old, err)
		}
	}

	// A service added after the restore, reading and read.
	updateEnv(t, ctx, name, func(e *v1alpha1.HealthEnvironment) {
		e.Spec.Services = append(e.Spec.Services, v1alpha1.Service{
			Name: "audit", Image: e.Spec.Services[1].Image, Port: 9000, GeneratedSecrets: []string{"audit-key"},
			TalksTo: []string{"referral"}, SecretsFrom: []v1alpha1.SecretFrom{{Service: "referral", Secret: "cad-key"}},
		})
		e.Spec.Services[0].TalksTo = append(e.Spec.Services[0].TalksTo, "audit")
		e.Spec.Services[0].SecretsFrom = append(e.Spec.Services[0].SecretsFrom, v1alpha1.SecretFrom{Service: "audit", Secret: "audit-key"})
	})
	want := map[string][]string{
		"audit":         {at("audit", "audit-key"), at("referral", "cad-key")},
		"call-handling": {at("audit", "audit-key"), at("call-handling", "db-password"), at("referral", "cad-key")},
		"referral":      {at("referral", "cad-key")},
	}
	onTheRestoresRevision := func(ctx context.Context) (bool, string, error) {
		got := map[string][]string{}
		for dep := range want {
			got[dep] = named(dep)
		}
		var secrets corev1.SecretList
		if err := k8sClient.List(ctx, &secrets, client.InNamespace(ns)); err != nil {
			return false, "", err
		}
		var have []string
		for _, sec := range secrets.Items {
			have = append(have, sec.Name)
		}
		slices.Sort(have)
		return reflect.DeepEqual(got, want) && slices.Equal(have, want["call-handling"]),
			fmt.Sprintf("Deployments name %v; Secrets %v", got, have), nil
	}
	eventually(t, 20*time.Second, "every Deployment names the Secrets of the restore's revision, and only those remain", onTheRestoresRevision)

	// The tenant's pipeline (edit) deletes one of careplane's Deployments
	// and re-annotates another as never restored.
	if err := k8sClient.Delete(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "referral"}}); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"spec":{"template":{"metadata":{"annotations":{"` + build.AnnotationCredentialsRevision + `":"` + build.InitialCredentials + `"}}}}}`)
	if err := k8sClient.Patch(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "audit"}},
		client.RawPatch(types.StrategicMergePatchType, patch), client.FieldOwner("tenant-pipeline")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "both back on the restore's revision", onTheRestoresRevision)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if ok, why, err := onTheRestoresRevision(ctx); err != nil || !ok {
			t.Fatalf("back off the restore's revision: %s %v", why, err)
		}
	}
}

// TestAPrimaryRestoredBeforeTheNamespaceRecordKeepsItsCredentials: an
// earlier careplane rotated a restore's credentials in place, under
// <svc>.<name> annotated with the restore's revision, and recorded the
// revision only on the pod templates. Its Namespace records none, so the
// primary runs the initial revision (docs/upgrade.md): the pods roll once,
// onto the same Secrets and values; nothing is generated anew.
func TestAPrimaryRestoredBeforeTheNamespaceRecordKeepsItsCredentials(t *testing.T) {
	ctx := context.Background()
	const name = "restored-before"
	const legacy = "2026-01-01T00:00:00Z"
	env := sampleEnv(name)
	ns := createReady(t, ctx, env, 14)
	secret := &corev1.Secret{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "call-handling.db-password"}, secret); err != nil {
		t.Fatal(err)
	}
	value := string(secret.Data[build.GeneratedSecretKey])
	// What the earlier careplane left: the Secret annotated with its
	// restore, the templates too.
	secret.Annotations = map[string]string{build.AnnotationCredentialsRevision: legacy}
	if err := k8sClient.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"spec":{"template":{"metadata":{"annotations":{"` + build.AnnotationCredentialsRevision + `":"` + legacy + `"}}}}}`)
	for _, dep := range []string{"call-handling", "referral"} {
		if err := k8sClient.Patch(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: dep}},
			client.RawPatch(types.StrategicMergePatchType, patch), client.FieldOwner("careplane-earlier")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "the primary on the initial revision, on the same Secret", func(ctx context.Context) (bool, string, error) {
		var deps appsv1.DeploymentList
		if err := k8sClient.List(ctx, &deps, client.InNamespace(ns)); err != nil {
			return false, "", err
		}
		var revs, names []string
		for _, d := range deps.Items {
			revs = append(revs, d.Spec.Template.Annotations[build.AnnotationCredentialsRevision])
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Secret != nil {
					names = append(names, v.Secret.SecretName)
				}
			}
		}
		ok := len(revs) == 2 && revs[0] == build.InitialCredentials && revs[1] == build.InitialCredentials &&
			slices.Equal(names, []string{"call-handling.db-password"})
		return ok, fmt.Sprintf("revisions %v, Secrets named %v", revs, names), nil
	})
	var secrets corev1.SecretList
	if err := k8sClient.List(ctx, &secrets, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(secrets.Items) != 1 || secrets.Items[0].Name != "call-handling.db-password" ||
		string(secrets.Items[0].Data[build.GeneratedSecretKey]) != value {
		var names []string
		for _, s := range secrets.Items {
			names = append(names, s.Name)
		}
		t.Errorf("Secrets %v after the upgrade's pass, want call-handling.db-password alone, with its value unchanged", names)
	}
}

// fenceAndRestoreUntilRebuilt fences env (created Ready at ipBase) for
// ticket, as alice@responders asks, and restores it, as bob@responders asks,
// until the rebuilt Deployments only wait to be Ready. It returns the
// primary namespace.
func fenceAndRestoreUntilRebuilt(t *testing.T, ctx context.Context, env *v1alpha1.HealthEnvironment, ipBase int, ticket string) string {
	t.Helper()
	ns := createReady(t, ctx, env, ipBase)
	annotateIsolationBy(t, ctx, env.Name, "alice@responders")
	patchIsolation(t, ctx, env.Name, `{"mode":"Fenced","reason":"ransomware","ticket":"`+ticket+`","workloads":"Stop"}`)
	waitCondition(t, env.Name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	annotateIsolationBy(t, ctx, env.Name, "bob@responders")
	patchIsolation(t, ctx, env.Name, `{"mode":"None"}`)
	waitCondition(t, env.Name, v1alpha1.ConditionRestoring, "True", v1alpha1.ReasonRebuilding)
	// The restore's first pass wrote the record's restore; nothing else
	// writes the namespace until the lift.
	time.Sleep(2 * time.Second)
	return ns
}

// checkOneIncident fails t unless env name records exactly one incident, for
// ticket, fenced by alice@responders and restored by bob@responders, with
// one Restored event, and no fence in place.
func checkOneIncident(t *testing.T, ctx context.Context, name, ticket string) {
	t.Helper()
	got := getEnv(t, ctx, name)
	if n := len(got.Status.Incidents); n != 1 {
		t.Errorf("%d incidents, want 1: %+v", n, got.Status.Incidents)
	} else if inc := got.Status.Incidents[0]; inc.Ticket != ticket || inc.FencedBy != "alice@responders" ||
		inc.RestoredBy != "bob@responders" || inc.FencedAt == nil || inc.RestoredAt == nil {
		t.Errorf("incident = %+v, want %s fenced by alice@responders and restored by bob@responders", inc, ticket)
	}
	if got.Status.Isolation != nil {
		t.Errorf("status.isolation = %+v after the restore, want none", got.Status.Isolation)
	}
	eventually(t, 10*time.Second, "one Restored event", func(ctx context.Context) (bool, string, error) {
		var evs eventsv1.EventList
		if err := k8sClient.List(ctx, &evs); err != nil {
			return false, "", err
		}
		n := 0
		for _, e := range evs.Items {
			if e.Regarding.Name == name && e.Reason == "Restored" {
				n++
				if e.Series != nil {
					n += int(e.Series.Count) - 1
				}
			}
		}
		if n > 1 {
			return false, "", fmt.Errorf("%d Restored events, want 1", n)
		}
		return n == 1, fmt.Sprintf("%d Restored events", n), nil
	})
}

// TestALostLiftStatusWriteKeepsTheIncident: the status write of the pass
// that lifts the fence fails (a conflict from a cache behind the last status
// write, a timeout, a crash). The incident (ticket, who fenced, who
// restored) and its event are on record all the same, although the fence
// record it is read from is gone by the next pass.
func TestALostLiftStatusWriteKeepsTheIncident(t *testing.T) {
	ctx := context.Background()
	const name = "lift-lost"
	ns := fenceAndRestoreUntilRebuilt(t, ctx, sampleEnv(name), 12, "INC-409")

	// Every status write after the lift's namespace PATCH fails once.
	var lifted, failedOnce atomic.Bool
	_, stopLift := requests.Tap(func(method, path string) bool {
		if method == http.MethodPatch && path == "/api/v1/namespaces/"+ns {
			lifted.Store(true)
		}
		return false
	})
	defer stopLift()
	failed, stopFail := requests.Fail(func(method, path string) bool {
		return lifted.Load() && method == http.MethodPatch &&
			path == "/apis/careplane.io/v1alpha1/healthenvironments/"+name+"/status" && failedOnce.CompareAndSwap(false, true)
	}, http.StatusConflict)
	defer stopFail()

	liftWithFault(t, ctx, name, ns, "INC-409", failed, "status writes failed after the lift")
}

// TestAnInterruptedLiftRecordsOneIncident: the lift's removal of the fence
// record fails (a timeout) after its incident was written. The next pass
// lifts the fence again, and records neither a second incident nor a
// second event.
func TestAnInterruptedLiftRecordsOneIncident(t *testing.T) {
	ctx := context.Background()
	const name = "lift-twice"
	ns := fenceAndRestoreUntilRebuilt(t, ctx, sampleEnv(name), 13, "INC-504")

	var failedOnce atomic.Bool
	failed, stopFail := requests.Fail(func(method, path string) bool {
		return method == http.MethodPatch && path == "/api/v1/namespaces/"+ns && failedOnce.CompareAndSwap(false, true)
	}, http.StatusGatewayTimeout)
	defer stopFail()

	liftWithFault(t, ctx, name, ns, "INC-504", failed, "lifts failed")
}

// liftWithFault lets the restore of name lift its fence (its rebuilt
// Deployments in ns Ready) and checks that the fault was met once, and that
// the fence's incident is on record once, as checkOneIncident says.
func liftWithFault(t *testing.T, ctx context.Context, name, ns, ticket string, faults func() int64, fault string) {
	t.Helper()
	setDeploymentsReady(t, ctx, ns)
	waitCondition(t, name, v1alpha1.ConditionFenced, "False", v1alpha1.ReasonNotFenced)
	time.Sleep(resyncPeriod)
	if n := faults(); n != 1 {
		t.Fatalf("%d %s, want 1: the test would prove nothing", n, fault)
	}
	checkOneIncident(t, ctx, name, ticket)
}

// TestARestoreLiftsUnderMetadataChurn: a GitOps tool rewrites the
// environment's annotations every few milliseconds, so that a write locked
// to the resourceVersion the reconcile read nearly always conflicts. The
// restore still lifts its fence and records its incident: the incident's
// write is tried again on a fresh read, and its conflicts never grow the
// queue's backoff.
func TestARestoreLiftsUnderMetadataChurn(t *testing.T) {
	ctx := context.Background()
	const name = "lift-churn"
	ns := fenceAndRestoreUntilRebuilt(t, ctx, sampleEnv(name), 14, "INC-CHURN")

	stopChurn := testutil.Churn(ctx, k8sClient, name, 2*time.Millisecond)
	defer stopChurn()
	conflicts, stopConflicts := requests.Tap(func(method, path string) bool {
		return method == http.MethodPatch && path == "/apis/careplane.io/v1alpha1/healthenvironments/"+name+"/status"
	})
	defer stopConflicts()
	setDeploymentsReady(t, ctx, ns)
	eventually(t, 30*time.Second, "the fence lifted under churn", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.FencePolicyName}, &networkingv1.NetworkPolicy{})
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			return false, "", err
		}
		return apierrors.IsNotFound(err) && !fence.RecordOf(nsObj).Present(), fmt.Sprintf("%d status writes so far", conflicts()), nil
	})
	churned := stopChurn()
	t.Logf("%d annotation writes, %d status writes", churned, conflicts())
	if churned == 0 {
		t.Fatal("no annotation write went through during the restore: the test would prove nothing")
	}
	waitCondition(t, name, v1alpha1.ConditionFenced, "False", v1alpha1.ReasonNotFenced)
	checkOneIncident(t, ctx, name, "INC-CHURN")
}

// TestAFenceResumedOverAnAbortedLiftIsRestoredOnce: a lift writes its
// incident, and then its removal of the fence record fails (a timeout, a
// crash) until a responder, seeing the environment still fenced, asks for
// the fence again. The fence resumes under its record, so it is not
// restored: status.incidents does not say it was. The restore that follows
// records the incident as that restore did it (who restored, when), with
// its own Restored event.
func TestAFenceResumedOverAnAbortedLiftIsRestoredOnce(t *testing.T) {
	ctx := context.Background()
	const name = "lift-aborted"
	ns := fenceAndRestoreUntilRebuilt(t, ctx, sampleEnv(name), 15, "INC-ABORT")

	// Every write of the namespace fails from the lift's until the fence
	// is asked for again: the record stays, its restore under way.
	var failing atomic.Bool
	failing.Store(true)
	failed, stopFail := requests.Fail(func(method, path string) bool {
		return failing.Load() && method == http.MethodPatch && path == "/api/v1/namespaces/"+ns
	}, http.StatusGatewayTimeout)
	defer stopFail()
	setDeploymentsReady(t, ctx, ns)
	eventually(t, 30*time.Second, "the aborted lift's incident", func(ctx context.Context) (bool, string, error) {
		got := &v1alpha1.HealthEnvironment{}
		err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, got)
		n := len(got.Status.Incidents)
		return err == nil && n == 1 && failed() > 0, fmt.Sprintf("%d incidents, %d namespace writes failed", n, failed()), nil
	})
	annotateIsolationBy(t, ctx, name, "alice@responders")
	patchIsolation(t, ctx, name, `{"mode":"Fenced","reason":"ransomware","ticket":"INC-ABORT","workloads":"Stop"}`)
	time.Sleep(time.Second)
	failing.Store(false)
	waitCondition(t, name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	eventually(t, 10*time.Second, "no incident while the fence is in force", func(ctx context.Context) (bool, string, error) {
		got := &v1alpha1.HealthEnvironment{}
		err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, got)
		return err == nil && len(got.Status.Incidents) == 0, fmt.Sprintf("incidents %+v", got.Status.Incidents), nil
	})
	// The aborted lift's Restored event stands; a Warning says it did not.
	eventually(t, 10*time.Second, "a LiftAborted event", func(ctx context.Context) (bool, string, error) {
		notes, err := eventNotes(ctx, name, "LiftAborted")
		return len(notes) == 1 && strings.Contains(notes[0], "INC-ABORT"), fmt.Sprintf("LiftAborted events %q", notes), err
	})

	resumed := time.Now()
	annotateIsolationBy(t, ctx, name, "carol@responders")
	patchIsolation(t, ctx, name, `{"mode":"None"}`)
	waitCondition(t, name, v1alpha1.ConditionRestoring, "True", v1alpha1.ReasonRebuilding)
	time.Sleep(2 * time.Second)
	setDeploymentsReady(t, ctx, ns)
	waitCondition(t, name, v1alpha1.ConditionFenced, "False", v1alpha1.ReasonNotFenced)
	got := getEnv(t, ctx, name)
	if n := len(got.Status.Incidents); n != 1 {
		t.Fatalf("%d incidents, want 1: %+v", n, got.Status.Incidents)
	}
	if inc := got.Status.Incidents[0]; inc.RestoredBy != "carol@responders" || inc.FencedBy != "alice@responders" ||
		inc.RestoredAt == nil || inc.RestoredAt.Time.Before(resumed.Truncate(time.Second)) {
		t.Errorf("incident = %+v, want fenced by alice@responders, restored by carol@responders after %s", inc, resumed.Format(time.RFC3339))
	}
	// One Restored event for each lift that wrote its incident.
	eventually(t, 10*time.Second, "the second restore's Restored event", func(ctx context.Context) (bool, string, error) {
		notes, err := eventNotes(ctx, name, "Restored")
		return slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "carol@responders") }),
			fmt.Sprintf("Restored events %q", notes), err
	})
}

// eventNotes are the notes of the events with reason on environment name.
func eventNotes(ctx context.Context, name, reason string) ([]string, error) {
	var evs eventsv1.EventList
	if err := k8sClient.List(ctx, &evs); err != nil {
		return nil, err
	}
	var notes []string
	for _, e := range evs.Items {
		if e.Regarding.Name == name && e.Reason == reason {
			notes = append(notes, e.Note)
		}
	}
	return notes, nil
}

// TestANewFenceAfterALostLiftWriteStartsItsOwnRecord: the status write of
// the pass that lifted a fence is lost, and the environment is fenced again
// before any pass writes the status. status.isolation then describes the
// new fence alone: its start, who asked for it, the credentials it revoked,
// not the lifted fence's (which its incident keeps).
func TestANewFenceAfterALostLiftWriteStartsItsOwnRecord(t *testing.T) {
	ctx := context.Background()
	const name = "refence-lost"
	ns := fenceAndRestoreUntilRebuilt(t, ctx, sampleEnv(name), 16, "INC-ONE")
	first := getEnv(t, ctx, name).Status.Isolation
	if first == nil || first.FencedAt == nil || first.CredentialsRevoked == 0 {
		t.Fatalf("status.isolation of the first fence = %+v, want fencedAt and credentials revoked", first)
	}

	// From the lift's namespace write on, every status write fails until
	// the new fence writes its deny policy, the first step of its first
	// pass: that pass's status write is the first to land.
	var lifted, failing atomic.Bool
	failing.Store(true)
	_, stopLift := requests.Tap(func(method, path string) bool {
		if method == http.MethodPatch && path == "/api/v1/namespaces/"+ns {
			lifted.Store(true)
		}
		if lifted.Load() && method != http.MethodGet && strings.HasPrefix(path, "/apis/networking.k8s.io/v1/namespaces/"+ns+"/networkpolicies") {
			failing.Store(false)
		}
		return false
	})
	defer stopLift()
	failed, stopFail := requests.Fail(func(method, path string) bool {
		return lifted.Load() && failing.Load() && method == http.MethodPatch &&
			path == "/apis/careplane.io/v1alpha1/healthenvironments/"+name+"/status"
	}, http.StatusConflict)
	defer stopFail()
	setDeploymentsReady(t, ctx, ns)
	nsKey := client.ObjectKey{Name: ns}
	waitLiftedWhileFailing(t, ns, failed, "status writes")
	if got := getEnv(t, ctx, name); got.Status.Isolation == nil || len(got.Status.Incidents) != 1 {
		t.Fatalf("status.isolation %+v, %d incidents: want the lifted fence's still there, and its incident", got.Status.Isolation, len(got.Status.Incidents))
	}

	annotateIsolationBy(t, ctx, name, "carol@responders")
	patchIsolation(t, ctx, name, `{"mode":"Fenced","reason":"again","ticket":"INC-TWO","workloads":"Stop"}`)
	waitCondition(t, name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	nsObj := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, nsKey, nsObj); err != nil {
		t.Fatal(err)
	}
	began, ok := fence.RecordOf(nsObj).Began()
	if !ok || !began.After(first.FencedAt.Time) {
		t.Fatalf("fence record %+v, want a new fence's", fence.RecordOf(nsObj))
	}
	iso := getEnv(t, ctx, name).Status.Isolation
	// The new fence revokes what the restore rebuilt, and removes the
	// policies the restore put back: no more than the first fence did.
	if iso == nil || iso.FencedAt == nil || iso.FencedAt.Unix() != began.Unix() || iso.FencedBy != "carol@responders" ||
		iso.Ticket != "INC-TWO" || iso.CredentialsRevoked == 0 || iso.CredentialsRevoked > first.CredentialsRevoked ||
		!slices.Equal(iso.RemovedPolicies, first.RemovedPolicies) {
		t.Errorf("status.isolation = %+v, want the new fence's alone: fenced at %s by carol@responders for INC-TWO, "+
			"at most the first fence's credentials revoked and its policies removed (%+v)", iso, began.Format(time.RFC3339), first)
	}
}

// waitLiftedWhileFailing waits until the restore has lifted the fence on
// namespace ns (its record gone) while the writes a test fails (what,
// counted by failed) have failed at least once.
func waitLiftedWhileFailing(t *testing.T, ns string, failed func() int64, what string) {
	t.Helper()
	eventually(t, 30*time.Second, "the fence lifted, "+what+" failing", func(ctx context.Context) (bool, string, error) {
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			return false, "", err
		}
		rec := fence.RecordOf(nsObj)
		return !rec.Present() && failed() > 0, fmt.Sprintf("record %v, %d %s failed", rec, failed(), what), nil
	})
}
