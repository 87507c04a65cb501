//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
)

// exitRestoreBlocked is kubectl careplane's exit code of a blocked restore.
const exitRestoreBlocked = 7

// startCareRecords applies a care-records environment, waits for it to be
// Ready and returns the directory holding its document store's volume.
func startCareRecords(t *testing.T, name string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(file, []byte(careRecordsYAML(name)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteFencedEnvironment(name) })
	kubectl(t, "apply", "-f", file)
	waitReadyEnv(t, name, 90*time.Second)
	return dataDir(t, waitClaimBound(t, name+"-primary", "records-document-store-0"))
}

// pointAfter waits for a clean recovery point taken after t0 whose
// snapshots are ready to use (the driver has copied the volume: what is
// written from now on is not in it), early enough in the interval that the
// caller can act before the next point is taken.
func pointAfter(t *testing.T, name string, t0 time.Time) v1alpha1.RecoveryPoint {
	t.Helper()
	ns := name + "-primary"
	env := &v1alpha1.HealthEnvironment{}
	var p v1alpha1.RecoveryPoint
	eventually(t, 60*time.Second, "a clean point taken after "+t0.UTC().Format(time.RFC3339Nano), func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		if env.Status.Recovery == nil || len(env.Status.Recovery.Points) == 0 {
			return false, recoveryCondition(env), nil
		}
		p = env.Status.Recovery.Points[len(env.Status.Recovery.Points)-1]
		// takenAt has whole seconds: after t0 once truncated is after it.
		if !p.Clean || !p.TakenAt.After(t0) || len(p.Snapshots) == 0 {
			return false, fmt.Sprintf("newest point %s taken %s clean %v", p.Name, p.TakenAt.UTC().Format(time.RFC3339), p.Clean), nil
		}
		if time.Since(p.TakenAt.Time) > 6*time.Second {
			// Too late in its interval to act before the next one.
			t0 = p.TakenAt.Time
			return false, "point " + p.Name + " is too old; waiting for the next", nil
		}
		for _, s := range p.Snapshots {
			vs := &unstructured.Unstructured{}
			vs.SetGroupVersionKind(volumeSnapshotGVK)
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: s.Name}, vs); err != nil {
				return false, "", client.IgnoreNotFound(err)
			}
			if ready, _, _ := unstructured.NestedBool(vs.Object, "status", "readyToUse"); !ready {
				return false, "snapshot " + s.Name + " not ready", nil
			}
		}
		return true, "", nil
	})
	return p
}

// restoredClaim returns the data generation the restore recorded and the
// document store's restored claim, bound.
func restoredClaim(t *testing.T, name string) (string, *corev1.PersistentVolume) {
	t.Helper()
	ns := &corev1.Namespace{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name + "-primary"}, ns); err != nil {
		t.Fatal(err)
	}
	gen := ns.Annotations[v1alpha1.AnnotationDataGeneration]
	if gen == "" {
		t.Fatalf("no %s on namespace %s after the restore: %v", v1alpha1.AnnotationDataGeneration, ns.Name, ns.Annotations)
	}
	return gen, waitClaimBound(t, ns.Name, "records-document-store-"+gen+"-0")
}

// lastIncident returns the environment's newest incident.
func lastIncident(t *testing.T, name string) (v1alpha1.Incident, *v1alpha1.HealthEnvironment) {
	t.Helper()
	env := &v1alpha1.HealthEnvironment{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, env); err != nil {
		t.Fatal(err)
	}
	if len(env.Status.Incidents) == 0 {
		t.Fatalf("no incident recorded: status %+v", env.Status)
	}
	return env.Status.Incidents[len(env.Status.Incidents)-1], env
}

// TestCareRecordsRestoreFromARecoveryPoint is the ransomware drill on real
// storage: records written into the document store's volume; a clean
// recovery point; the records "encrypted"; the environment fenced (its pods
// kept as evidence); restored with kubectl careplane restore. The records
// come back as they were, in a new claim restored from the point's
// snapshot, served by a new StatefulSet whose pod does not collide with the
// evidence pod; the compromised claim still exists, labelled as evidence,
// with the encrypted content; nothing was deleted; the incident names the
// point and the data time lost.
func TestCareRecordsRestoreFromARecoveryPoint(t *testing.T) {
	ctx := context.Background()
	requireStorage(t, ctx)
	plugin := buildPlugin(t)
	name := uniqueName("drill")
	ns := name + "-primary"
	dir := startCareRecords(t, name)

	original := map[string]string{
		"patients/9434765919.json": `{"nhsNumber":"9434765919","allergies":["penicillin"]}`,
		"patients/9434765870.json": `{"nhsNumber":"9434765870","medication":["warfarin 3mg"]}`,
	}
	writeFiles(t, dir, original)
	good := pointAfter(t, name, time.Now())

	// The attacker encrypts every record and leaves a note; the responder
	// fences at once (before the next point).
	encrypted := map[string]string{"README-RESTORE-FILES.txt": "pay 5 BTC"}
	for f := range original {
		encrypted[f] = "\x8f\x1b encrypted \x03"
	}
	writeFiles(t, dir, encrypted)
	const ticket = "INC-DATA-2"
	fenceCommand(t, name, ticket)
	waitFencedTrue(t, name)

	// The dry run shows where the data comes from, and changes nothing.
	out := plugin.asResponder(t, "restore", name, "--dry-run")
	mustContain(t, "restore --dry-run", out, "recovery point: "+good.Name, "records-document-store-<generation>-0",
		good.Snapshots[0].Name, "kept as evidence")
	if s := readNamespaceLabel(t, ns, v1alpha1.LabelFenced); s != "true" {
		t.Fatalf("the dry run lifted the fence (label %q)", s)
	}

	plugin.asResponder(t, "restore", name, "--timeout", "3m")
	inc, env := lastIncident(t, name)
	if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != "True" {
		t.Errorf("Ready after the restore: %+v", c)
	}
	if inc.RecoveryPoint != good.Name || inc.RecoveryPointTakenAt == nil || !inc.RecoveryPointTakenAt.Equal(&good.TakenAt) || inc.DataLost == nil {
		t.Fatalf("incident %+v, want recovery point %s taken %s and the data lost", inc, good.Name, good.TakenAt)
	}
	// fencedAt has whole seconds; the operator's fence record, nanoseconds.
	if want := inc.FencedAt.Sub(good.TakenAt.Time); inc.DataLost.Duration < want-time.Second || inc.DataLost.Duration > want+time.Second || inc.DataLost.Duration <= 0 {
		t.Errorf("data lost %s, want fencedAt %s - point %s = %s", inc.DataLost.Duration, inc.FencedAt, good.TakenAt, want)
	}
	t.Logf("restored from %s (taken %s); data lost %s", inc.RecoveryPoint, inc.RecoveryPointTakenAt.UTC().Format(time.RFC3339), inc.DataLost.Duration)

	gen, restoredPV := restoredClaim(t, name)
	restoredDir := dataDir(t, restoredPV)
	if restoredDir == dir {
		t.Fatalf("the restored claim's volume is the compromised one (%s)", dir)
	}
	if got := readFiles(t, restoredDir); !maps.Equal(got, original) {
		t.Errorf("restored volume holds %q, want the original records %q", got, original)
	}
	// The compromised claim: kept, as evidence, with what the attacker left.
	old := &corev1.PersistentVolumeClaim{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "records-document-store-0"}, old); err != nil {
		t.Fatalf("the compromised claim: %v", err)
	}
	if old.Labels[v1alpha1.LabelEvidence] != ticket || old.DeletionTimestamp != nil || old.Status.Phase != corev1.ClaimBound {
		t.Errorf("compromised claim labels %v, phase %s, deleting %v; want evidence=%s, bound, kept", old.Labels, old.Status.Phase, old.DeletionTimestamp, ticket)
	}
	if got := readFiles(t, dir); !maps.Equal(got, encrypted) {
		t.Errorf("the compromised volume holds %q, want the evidence %q", got, encrypted)
	}
	// The evidence pod keeps its name; the restored pod has its own.
	evidence := &corev1.Pod{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "document-store-0"}, evidence); err != nil {
		t.Errorf("the evidence pod: %v", err)
	} else if evidence.Labels[v1alpha1.LabelEvidence] != ticket {
		t.Errorf("pod document-store-0 labels %v, want the evidence it was", evidence.Labels)
	}
	restoredPod := &corev1.Pod{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "document-store-" + gen + "-0"}, restoredPod); err != nil || !isPodReady(restoredPod) {
		t.Errorf("restored pod document-store-%s-0: %v, ready %v", gen, err, isPodReady(restoredPod))
	} else if v := restoredPod.Spec.Volumes; !usesClaim(restoredPod, "records-document-store-"+gen+"-0") {
		t.Errorf("restored pod's volumes %+v do not use the restored claim", v)
	}
	// Nothing deleted: the point's snapshots are there too.
	for _, s := range good.Snapshots {
		snapshotOf(t, ns, s.Name)
	}

	// After the restore the operator stays on the restored generation.
	time.Sleep(3 * time.Second)
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "document-store"}, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
		t.Errorf("the fenced generation's StatefulSet document-store: %v, want it gone", err)
	}
}

// TestCareRecordsRestoreBeforeATime: two clean points hold two versions of
// the records; --before a time between them restores the older one (the
// default would take the newer); a point that does not exist blocks the
// restore (exit 7) and keeps the fence, creating nothing.
func TestCareRecordsRestoreBeforeATime(t *testing.T) {
	ctx := context.Background()
	requireStorage(t, ctx)
	plugin := buildPlugin(t)
	name := uniqueName("before")
	ns := name + "-primary"
	dir := startCareRecords(t, name)

	v1 := map[string]string{"patients/9434765919.json": `{"nhsNumber":"9434765919","allergies":[]}`}
	writeFiles(t, dir, v1)
	p1 := pointAfter(t, name, time.Now())
	v2 := map[string]string{"patients/9434765919.json": `{"nhsNumber":"9434765919","allergies":["penicillin"],"note":"already tampered"}`}
	writeFiles(t, dir, v2)
	p2 := pointAfter(t, name, time.Now())
	if !p2.TakenAt.After(p1.TakenAt.Time) {
		t.Fatalf("points %s and %s", p1.Name, p2.Name)
	}
	writeFiles(t, dir, map[string]string{"patients/9434765919.json": "encrypted"})
	fenceCommand(t, name, "INC-DATA-3")
	waitFencedTrue(t, name)

	// A point that does not exist: blocked, the fence stays.
	plugin.exits(t, exitRestoreBlocked, append([]string{"restore", name, "--to", "p-19990101-000000", "--timeout", "1m"}, responderArgs...),
		`recoveryPoint "p-19990101-000000" is not a recovery point of this environment`, "the fence stays")
	if s := readNamespaceLabel(t, ns, v1alpha1.LabelFenced); s != "true" {
		t.Errorf("a blocked restore lifted the fence (label %q)", s)
	}
	var claims corev1.PersistentVolumeClaimList
	if err := k8sClient.List(ctx, &claims, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(claims.Items) != 1 {
		t.Errorf("%d claims after a blocked restore, want only the fenced one", len(claims.Items))
	}

	// --before a time between the points: the older one.
	before := p1.TakenAt.Add(time.Second).UTC().Format(time.RFC3339)
	out := plugin.asResponder(t, "restore", name, "--before", before, "--dry-run", "-o", "json")
	mustContain(t, "restore --before --dry-run -o json", out, `"recoveryPoint": "`+p1.Name+`"`)
	plugin.asResponder(t, "restore", name, "--before", before, "--timeout", "3m")
	inc, _ := lastIncident(t, name)
	if inc.RecoveryPoint != p1.Name {
		t.Fatalf("restored from %q, want %s (the newest clean point before %s; %s is newer)", inc.RecoveryPoint, p1.Name, before, p2.Name)
	}
	_, pv := restoredClaim(t, name)
	if got := readFiles(t, dataDir(t, pv)); !maps.Equal(got, v1) {
		t.Errorf("restored volume holds %q, want the records of %s, %q", got, p1.Name, v1)
	}
}

func readNamespaceLabel(t *testing.T, ns, label string) string {
	t.Helper()
	o := &corev1.Namespace{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: ns}, o); err != nil {
		t.Fatal(err)
	}
	return o.Labels[label]
}

func usesClaim(p *corev1.Pod, claim string) bool {
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim {
			return true
		}
	}
	return false
}
