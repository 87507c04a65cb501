package plugin

import (
	"bytes"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
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
