package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// TestRecoveryPointsCheckTheClassThenSnapshotEveryClaim: a missing
// VolumeSnapshotClass, then one of another driver, is a clear condition and
// no snapshot; with the right class and every claim bound, one point holds
// a VolumeSnapshot of each claim, labelled with the environment and the
// point, without an owner (deleting the environment never deletes one), and
// is recorded in status.recovery by UID.
func TestRecoveryPointsCheckTheClassThenSnapshotEveryClaim(t *testing.T) {
	ctx := context.Background()
	const name = "points"
	ns := name + "-primary"
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "points-csi"}, Provisioner: "csi.careplane.io"}
	if err := k8sClient.Create(ctx, sc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), sc) })
	env := careRecordsEnv(name)
	env.Spec.Services[0].Volumes[0].StorageClassName = ptr.To(sc.Name)
	env.Spec.Recovery = &v1alpha1.Recovery{VolumeSnapshotClassName: "points-snapshots", Interval: &metav1.Duration{Duration: time.Hour}, Keep: 2}
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), env) })

	got := waitCondition(t, name, v1alpha1.ConditionRecoveryPoints, "False", v1alpha1.ReasonSnapshotClassNotFound)
	if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionRecoveryPoints); !strings.Contains(c.Message, "VolumeSnapshotClass points-snapshots does not exist") {
		t.Errorf("message = %q", c.Message)
	}

	// A class of another driver.
	class := &snapshotv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: "points-snapshots"}, Driver: "ebs.csi.aws.com",
		DeletionPolicy: snapshotv1.VolumeSnapshotContentRetain}
	if err := k8sClient.Create(ctx, class); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), class) })
	// The claims, bound, as the StatefulSet controller and the PV binder
	// would leave them.
	for i := range 2 {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("records-document-store-%d", i),
			Labels: map[string]string{v1alpha1.LabelEnvironment: name, v1alpha1.LabelService: "document-store"}},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To(sc.Name),
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
		eventually(t, 20*time.Second, "creating claim "+pvc.Name, func(ctx context.Context) (bool, string, error) {
			err := k8sClient.Create(ctx, pvc)
			return err == nil, fmt.Sprint(err), nil // the namespace may not exist yet
		})
		pvc.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}
		if err := k8sClient.Status().Update(ctx, pvc); err != nil {
			t.Fatal(err)
		}
	}
	// The class is read live, the claims' events wake the controller.
	got = waitCondition(t, name, v1alpha1.ConditionRecoveryPoints, "False", v1alpha1.ReasonSnapshotClassMismatch)
	if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionRecoveryPoints); !strings.Contains(c.Message, "is for driver ebs.csi.aws.com") {
		t.Errorf("message = %q", c.Message)
	}
	var snaps snapshotv1.VolumeSnapshotList
	if err := k8sClient.List(ctx, &snaps, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(snaps.Items) != 0 {
		t.Errorf("%d VolumeSnapshots taken with a class of another driver", len(snaps.Items))
	}

	// The right driver: one point of both claims. (Not Ready: the
	// environment's pods never run in envtest, so it is not clean.)
	class.Driver = "csi.careplane.io"
	if err := k8sClient.Update(ctx, class); err != nil {
		t.Fatal(err)
	}
	updateEnv(t, ctx, name, func(e *v1alpha1.HealthEnvironment) { e.Spec.Recovery.Keep = 3 }) // a spec change wakes it at once
	got = waitCondition(t, name, v1alpha1.ConditionRecoveryPoints, "True", v1alpha1.ReasonPointsTaken)
	if got.Status.Recovery == nil || len(got.Status.Recovery.Points) != 1 {
		t.Fatalf("status.recovery = %+v, want one point", got.Status.Recovery)
	}
	p := got.Status.Recovery.Points[0]
	if len(p.Snapshots) != 2 || p.Clean || p.Ready || !strings.HasPrefix(p.Name, "p-") {
		t.Errorf("point = %+v, want two snapshots, not clean (the environment is not Ready), not ready", p)
	}
	if got.Status.Recovery.NextPointAt == nil || got.Status.Recovery.NextPointAt.Sub(p.TakenAt.Time) != time.Hour {
		t.Errorf("nextPointAt = %v, want an hour after %v", got.Status.Recovery.NextPointAt, p.TakenAt)
	}
	for _, s := range p.Snapshots {
		vs := &snapshotv1.VolumeSnapshot{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: s.Name}, vs); err != nil {
			t.Fatal(err)
		}
		if string(vs.UID) != s.UID || ptr.Deref(vs.Spec.Source.PersistentVolumeClaimName, "") != s.Claim ||
			ptr.Deref(vs.Spec.VolumeSnapshotClassName, "") != "points-snapshots" {
			t.Errorf("snapshot %s = %+v, recorded %+v", s.Name, vs.Spec, s)
		}
		if vs.Labels[v1alpha1.LabelEnvironment] != name || vs.Labels[v1alpha1.LabelRecoveryPoint] != p.Name ||
			vs.Labels[v1alpha1.LabelClean] != "false" || vs.Annotations[v1alpha1.AnnotationTakenAt] == "" {
			t.Errorf("snapshot %s labels %v annotations %v", s.Name, vs.Labels, vs.Annotations)
		}
		if len(vs.OwnerReferences) != 0 {
			t.Errorf("snapshot %s has owners %v: deleting the environment would delete it", s.Name, vs.OwnerReferences)
		}
	}
}

// TestARecoveryStatusConflictIsRetriedSoon: the recovery point controller
// shares the status with the environment reconciler, so its writes meet a
// newer resourceVersion often; like the reconciler's, such a write is
// looked at again shortly and not returned as an error, whose growing
// per-item backoff would hold up the next point (and log each as a
// reconciler error).
func TestARecoveryStatusConflictIsRetriedSoon(t *testing.T) {
	ctx := context.Background()
	env := careRecordsEnv("recovery-conflict")
	env.Spec.Recovery = &v1alpha1.Recovery{VolumeSnapshotClassName: "no-such-class"}
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), env) })
	c, conflicts := statusConflicting(t, env.Name)
	// Read as the cache behind a write has it: the suite's own recovery
	// controller may have written this status already, and a reconcile
	// that finds it so writes nothing.
	c = interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
			err := c.Get(ctx, key, o, opts...)
			if e, ok := o.(*v1alpha1.HealthEnvironment); ok && err == nil {
				e.Status = v1alpha1.HealthEnvironmentStatus{}
			}
			return err
		},
	})
	r := &RecoveryReconciler{Client: c, APIReader: c, Recorder: events.NewFakeRecorder(100), Clock: clock.RealClock{}, Served: true}
	res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(env)})
	if conflicts.Load() == 0 {
		t.Fatal("the reconcile wrote no status: the test proves nothing")
	}
	if err != nil || res.RequeueAfter <= 0 || res.RequeueAfter > time.Second {
		t.Errorf("Reconcile after a status conflict = %+v, %v; want no error and a requeue within 1s", res, err)
	}
}

func TestOnlyConflicts(t *testing.T) {
	gr := v1alpha1.GroupVersion.WithResource("healthenvironments").GroupResource()
	conflict := apierrors.NewConflict(gr, "x", errors.New("modified"))
	other := apierrors.NewForbidden(gr, "x", errors.New("no"))
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"a conflict", conflict, true},
		{"a wrapped conflict", fmt.Errorf("updating: %w", conflict), true},
		{"conflicts joined", errors.Join(conflict, fmt.Errorf("deleting: %w", conflict)), true},
		{"a conflict joined with another error", errors.Join(conflict, other), false},
		{"that, wrapped", fmt.Errorf("reconciling: %w", errors.Join(conflict, errors.New("listing failed"))), false},
		{"another error", other, false},
	} {
		if got := onlyConflicts(tc.err); got != tc.want {
			t.Errorf("%s: onlyConflicts(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
