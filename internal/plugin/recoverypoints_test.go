package plugin

import (
	"bytes"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/fence"
)

// TestWriteRecoveryPoints: each point with its time, revision, clean, ready
// and snapshot count, then the evidence snapshots; the UIDs on record are
// the points' then the evidence's.
func TestWriteRecoveryPoints(t *testing.T) {
	at := metav1.NewTime(time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC))
	env := &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "records"}}
	env.Spec.Recovery = &v1alpha1.Recovery{VolumeSnapshotClassName: "csi"}
	env.Status.Recovery = &v1alpha1.RecoveryStatus{NewestCleanPointAt: &at, Points: []v1alpha1.RecoveryPoint{
		{Name: "p-20300101t100000z", TakenAt: at, Revision: "records-5c7f9d", Clean: true, Ready: true,
			Snapshots: []v1alpha1.PointSnapshot{{Name: "a", UID: "u1"}, {Name: "b", UID: "u2"}}},
		{Name: "p-20300101t101500z", TakenAt: metav1.NewTime(at.Add(15 * time.Minute)), Snapshots: []v1alpha1.PointSnapshot{{Name: "c", UID: "u3"}}},
	}}
	env.Status.EvidenceSnapshots = []v1alpha1.EvidenceSnapshot{{Name: "evidence-x-records", UID: "u4", Claim: "records", FenceID: "2030-01-01T10:20:00Z", Ticket: "INC-9", Ready: true}}
	var b bytes.Buffer
	if err := WriteRecoveryPoints(&b, env); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"RECOVERY POINT      TAKEN                 REVISION        CLEAN  READY  SNAPSHOTS",
		"p-20300101t100000z  2030-01-01T10:00:00Z  records-5c7f9d  true   true   2",
		"p-20300101t101500z  2030-01-01T10:15:00Z  -               false  false  1",
		"Newest clean point: 2030-01-01T10:00:00Z",
		"evidence-x-records  records",
		"INC-9",
		"purge-evidence records --dry-run",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if got := strings.Join(RecordedSnapshotUIDs(env), ","); got != "u1,u2,u3,u4" {
		t.Errorf("UIDs on record %s", got)
	}
	b.Reset()
	env.Status = v1alpha1.HealthEnvironmentStatus{}
	env.Spec.Recovery = nil
	_ = WriteRecoveryPoints(&b, env)
	if !strings.Contains(b.String(), "sets no spec.recovery") {
		t.Errorf("without spec.recovery: %q", b.String())
	}
}

// TestDryRunPlanShowsTheEvidenceStep: the plugin's plan (the operator's)
// lists a snapshot of every claim of the primary namespace in step 1, and
// with no snapshot class, a skip saying why.
func TestDryRunPlanShowsTheEvidenceStep(t *testing.T) {
	env := &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "records"}}
	env.Spec.Isolation = v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "x", Ticket: "INC-1"}
	class := "csi"
	claims := []corev1.PersistentVolumeClaim{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "records-primary", Name: "records-document-store-0"}, Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &class}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "elsewhere", Name: "not-this-one"}},
	}
	st := FenceState{Env: env, Claims: claims, Drivers: map[string]string{"csi": "csi.example"},
		SnapshotClass: &fence.SnapshotClass{Name: "csi-snap", Found: true, Driver: "csi.example"}}
	env.Spec.Recovery = &v1alpha1.Recovery{VolumeSnapshotClassName: "csi-snap"}
	var b bytes.Buffer
	if err := WritePlan(&b, PlanFence(st)); err != nil {
		t.Fatal(err)
	}
	if !planLists(b.String(), "snapshot", "VolumeSnapshot", "records-primary", fence.EvidenceSnapshotName("<now>", "records-document-store-0")) ||
		strings.Contains(b.String(), "not-this-one") {
		t.Errorf("plan:\n%s", b.String())
	}
	env.Spec.Recovery = nil
	st.SnapshotClass = nil
	b.Reset()
	_ = WritePlan(&b, PlanFence(st))
	if !strings.Contains(b.String(), "skip") || !strings.Contains(b.String(), v1alpha1.ReasonNoSnapshotClass) {
		t.Errorf("plan without a class:\n%s", b.String())
	}
}

// planLists reports whether the plan table in out has a row with these
// ACTION, KIND, NAMESPACE and NAME cells.
func planLists(out, verb, kind, namespace, name string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && f[1] == verb && f[2] == kind && f[3] == namespace && f[4] == name {
			return true
		}
	}
	return false
}

// TestStoryCountsEvidenceSnapshots: status ENV says how many evidence
// snapshots are kept, after the restore too.
func TestStoryCountsEvidenceSnapshots(t *testing.T) {
	env := &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "records"}}
	env.Status.EvidenceSnapshots = []v1alpha1.EvidenceSnapshot{{Name: "a", Ready: true}, {Name: "b"}}
	var b bytes.Buffer
	if err := WriteStory(&b, Story{Env: env, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "Evidence snapshots:") || !strings.Contains(b.String(), "2 (1 ready; kubectl careplane recovery-points records)") {
		t.Errorf("story:\n%s", b.String())
	}
}
