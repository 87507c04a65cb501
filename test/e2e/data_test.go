//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
)

// careRecordsYAML is a care-records environment as a platform team writes
// it: a document store keeping the records on a volume of the cluster's
// default class, and a records API reading the store's password, with
// recovery points every 10 seconds (a test's interval; 15m is the default).
func careRecordsYAML(name string) string {
	d := func(c string) string { return "@sha256:" + string(slices.Repeat([]byte(c), 64)) }
	return fmt.Sprintf(`apiVersion: careplane.io/v1alpha1
kind: HealthEnvironment
metadata:
  name: %s
spec:
  tenant: {displayName: Yorkshire Shared Care Record}
  services:
  - name: document-store
    image: registry.example/records/store%s
    replicas: 1
    port: 5432
    generatedSecrets: [db-password]
    volumes:
    - {name: records, mountPath: /var/lib/records, size: 64Mi}
  - name: records-api
    image: registry.example/records/api%s
    replicas: 1
    ports:
    - {name: http, port: 8080}
    - {name: syslog, port: 514, protocol: UDP}
    talksTo: [document-store]
    secretsFrom:
    - {service: document-store, secret: db-password, envVar: STORE_PASSWORD}
  recovery:
    volumeSnapshotClassName: %s
    interval: 10s
    keep: 3
`, name, d("1"), d("2"), snapshotClass)
}

// TestCareRecordsTakeRecoveryPoints runs a care-records environment on the
// cluster's real storage: it becomes Ready with its document store's claim
// bound by the real provisioner; recovery points appear on schedule as
// ready VolumeSnapshots of that claim, clean while the environment is Ready;
// once fenced the points go on, unclean, and nothing (no claim, no
// snapshot) is deleted.
func TestCareRecordsTakeRecoveryPoints(t *testing.T) {
	ctx := context.Background()
	requireStorage(t, ctx)
	name := uniqueName("records")
	ns := name + "-primary"
	file := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(file, []byte(careRecordsYAML(name)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteFencedEnvironment(name) })
	kubectl(t, "apply", "-f", file)

	env := waitReadyEnv(t, name, 90*time.Second)
	pvc := &corev1.PersistentVolumeClaim{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "records-document-store-0"}, pvc); err != nil {
		t.Fatalf("the document store's claim: %v", err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		t.Fatalf("claim %s is %s (volume %q), want Bound", pvc.Name, pvc.Status.Phase, pvc.Spec.VolumeName)
	}
	t.Logf("Ready with claim %s bound to %s", pvc.Name, pvc.Spec.VolumeName)

	// Two clean, ready points about an interval apart.
	eventually(t, 60*time.Second, "two clean, ready recovery points", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		n := cleanReady(env)
		return n >= 2, fmt.Sprintf("%d clean, ready points; %s", n, recoveryCondition(env)), nil
	})
	points := env.Status.Recovery.Points
	last, prev := points[len(points)-1], points[len(points)-2]
	if gap := last.TakenAt.Sub(prev.TakenAt.Time); gap < 10*time.Second || gap > 20*time.Second {
		t.Errorf("points %s and %s are %s apart, want the 10s interval", prev.Name, last.Name, gap)
	}
	for _, p := range points {
		if len(p.Snapshots) != 1 || p.Snapshots[0].Claim != pvc.Name || p.Revision == "" && p.Clean {
			t.Errorf("point %+v: want one snapshot of %s, and the known-good revision when clean", p, pvc.Name)
		}
	}
	vs := snapshotOf(t, ns, last.Snapshots[0].Name)
	if string(vs.GetUID()) != last.Snapshots[0].UID || vs.GetLabels()[v1alpha1.LabelClean] != "true" ||
		vs.GetLabels()[v1alpha1.LabelRecoveryPoint] != last.Name || vs.GetLabels()[v1alpha1.LabelEnvironment] != name {
		t.Errorf("snapshot %s: uid %s labels %v, recorded %+v", vs.GetName(), vs.GetUID(), vs.GetLabels(), last.Snapshots[0])
	}
	if ready, _, _ := unstructured.NestedBool(vs.Object, "status", "readyToUse"); !ready {
		t.Errorf("snapshot %s of a ready point is not readyToUse", vs.GetName())
	}

	// Fenced: the points go on, unclean; nothing is deleted.
	fenceCommand(t, name, "INC-DATA-1")
	env = waitFencedTrue(t, name)
	fencedAt := env.Status.Isolation.FencedAt.Time
	var during v1alpha1.RecoveryPoint
	eventually(t, 40*time.Second, "a point taken while fenced", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		// fencedAt has whole seconds: a point of the same second may have
		// been taken just before the fence, clean.
		for _, p := range env.Status.Recovery.Points {
			if p.TakenAt.After(fencedAt.Add(time.Second)) && p.Ready {
				during = p
				return true, "", nil
			}
		}
		return false, recoveryCondition(env), nil
	})
	if during.Clean {
		t.Errorf("point %s taken while fenced is clean", during.Name)
	}
	if got := snapshotOf(t, ns, during.Snapshots[0].Name).GetLabels()[v1alpha1.LabelClean]; got != "false" {
		t.Errorf("snapshot of point %s taken while fenced: clean=%q, want false", during.Name, got)
	}
	for _, p := range points {
		for _, s := range p.Snapshots {
			snapshotOf(t, ns, s.Name) // fails the test if gone
		}
	}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(pvc), &corev1.PersistentVolumeClaim{}); err != nil {
		t.Errorf("the claim after the fence: %v", err)
	}
}

// waitReadyEnv waits for Ready=True.
func waitReadyEnv(t *testing.T, name string, timeout time.Duration) *v1alpha1.HealthEnvironment {
	t.Helper()
	env := &v1alpha1.HealthEnvironment{}
	eventually(t, timeout, name+" Ready", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, err.Error(), nil
		}
		c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionReady)
		if c == nil {
			return false, "no Ready condition", nil
		}
		return c.Status == metav1.ConditionTrue, fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message), nil
	})
	return env
}

func cleanReady(env *v1alpha1.HealthEnvironment) int {
	n := 0
	if env.Status.Recovery != nil {
		for _, p := range env.Status.Recovery.Points {
			if p.Clean && p.Ready {
				n++
			}
		}
	}
	return n
}

func recoveryCondition(env *v1alpha1.HealthEnvironment) string {
	c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionRecoveryPoints)
	if c == nil {
		return "no RecoveryPoints condition"
	}
	return fmt.Sprintf("RecoveryPoints=%s/%s: %s", c.Status, c.Reason, c.Message)
}

func snapshotOf(t *testing.T, ns, name string) *unstructured.Unstructured {
	t.Helper()
	vs := &unstructured.Unstructured{}
	vs.SetGroupVersionKind(volumeSnapshotGVK)
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, vs); err != nil {
		t.Fatalf("VolumeSnapshot %s/%s: %v", ns, name, err)
	}
	return vs
}
