package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/recovery"
)

// +kubebuilder:rbac:groups=snapshot.storage.k8s.io,resources=volumesnapshots,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=snapshot.storage.k8s.io,resources=volumesnapshotclasses,verbs=get
// +kubebuilder:rbac:groups=storage.k8s.io,resources=storageclasses,verbs=get

// RecoveryReconciler takes recovery points: on spec.recovery's schedule, a
// VolumeSnapshot of every claim of the primary site's StatefulSets, all
// created in one pass, recorded in status.recovery (the record a restore
// chooses from) and labelled for people and tools. It is its own
// controller, with its own queue, so that a fence never waits behind it;
// the schedule and retention are recovery.Decide's.
type RecoveryReconciler struct {
	Client    client.Client
	APIReader client.Reader
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	// Served says whether the cluster serves snapshot.storage.k8s.io/v1
	// VolumeSnapshots (checked once, at start: controller-runtime cannot
	// watch a kind that appears later; restart the manager after
	// installing the snapshot CRDs).
	Served bool

	keeper dataKeeper
}

// NewRecoveryReconciler wires the recovery point controller to a manager.
func NewRecoveryReconciler(mgr ctrl.Manager) *RecoveryReconciler {
	_, err := mgr.GetRESTMapper().RESTMapping(snapshotv1.SchemeGroupVersion.WithKind("VolumeSnapshot").GroupKind(), "v1")
	return &RecoveryReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Recorder: mgr.GetEventRecorder("careplane"), Clock: clock.RealClock{}, Served: err == nil}
}

// Reconcile takes the recovery points that are due, refreshes the status of
// those on record and retires the old ones; and keeps the primary's data
// (keepData), after them: a volume or content it cannot keep yet (a
// conflict with the storage's controllers) never holds up a point.
func (r *RecoveryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	env := &v1alpha1.HealthEnvironment{}
	if err := r.Client.Get(ctx, req.NamespacedName, env); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if env.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	res, err := r.reconcile(ctx, env)
	if err != nil && onlyConflicts(err) {
		// The environment reconciler writes the status too: look again on
		// fresh state, soon, as it does (Reconcile there), without growing
		// the per-item backoff that would hold up the next point.
		log.FromContext(ctx).V(1).Info("Status write conflicted; looking again", "after", statusConflictRetry)
		err = nil
		if res.RequeueAfter == 0 || res.RequeueAfter > statusConflictRetry {
			res.RequeueAfter = statusConflictRetry
		}
	}
	if kerr := r.keepData(ctx, env); kerr != nil {
		// Not a reconcile error: its growing backoff would hold up the
		// next point. Retried soon.
		log.FromContext(ctx).Info("Could not keep the primary's data yet; retrying", "error", kerr.Error())
		if res.RequeueAfter == 0 || res.RequeueAfter > keepRetry {
			res.RequeueAfter = keepRetry
		}
	}
	return res, err
}

// onlyConflicts says every error joined or wrapped in err is a conflict.
func onlyConflicts(err error) bool {
	switch e := err.(type) { //nolint:errorlint // walking the tree link by link
	case interface{ Unwrap() []error }:
		for _, c := range e.Unwrap() {
			if !onlyConflicts(c) {
				return false
			}
		}
		return true
	case apierrors.APIStatus:
		return apierrors.IsConflict(err)
	case interface{ Unwrap() error }:
		return e.Unwrap() != nil && onlyConflicts(e.Unwrap())
	}
	return false
}

// keepRetry is how soon keepData is retried after a failure.
const keepRetry = 5 * time.Second

func (r *RecoveryReconciler) reconcile(ctx context.Context, env *v1alpha1.HealthEnvironment) (ctrl.Result, error) {
	// The evidence snapshots a fence took (evidence.go): woken by the same
	// snapshot events, written with the same status write.
	evidence, err := r.refreshEvidence(ctx, env)
	if err != nil {
		return ctrl.Result{}, err
	}
	if env.Spec.Recovery == nil {
		return ctrl.Result{}, r.writeStatus(ctx, env, func(st *v1alpha1.HealthEnvironmentStatus) {
			evidence(st)
			meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionRecoveryPoints)
		})
	}
	res, cond, err := r.reconcilePoints(ctx, env)
	if cond == nil {
		return res, errors.Join(err, r.writeStatus(ctx, env, evidence))
	}
	before := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionRecoveryPoints)
	if before == nil || before.Status != cond.status || before.Reason != cond.reason {
		typ := corev1.EventTypeNormal
		if cond.status != metav1.ConditionTrue && cond.reason != v1alpha1.ReasonWaitingForVolumes {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(env, nil, typ, cond.reason, "RecoveryPoints", "%s", cond.message)
	}
	werr := r.writeStatus(ctx, env, func(st *v1alpha1.HealthEnvironmentStatus) {
		evidence(st)
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionRecoveryPoints, Status: cond.status,
			Reason: cond.reason, Message: cond.message, ObservedGeneration: env.Generation})
		if cond.points != nil {
			st.Recovery = cond.points
		}
	})
	return res, errors.Join(err, werr)
}

// recoveryCondition is what one pass found, for the status.
type recoveryCondition struct {
	status          metav1.ConditionStatus
	reason, message string
	points          *v1alpha1.RecoveryStatus // nil: leave status.recovery as it is
}

func recoveryFalse(reason, format string, args ...any) *recoveryCondition {
	return &recoveryCondition{status: metav1.ConditionFalse, reason: reason, message: fmt.Sprintf(format, args...)}
}

// reconcilePoints checks the snapshot class against the claims, then carries
// out recovery.Decide. Nothing is created unless every claim is bound and
// the class's driver is theirs: a point is all the volumes or none.
func (r *RecoveryReconciler) reconcilePoints(ctx context.Context, env *v1alpha1.HealthEnvironment) (ctrl.Result, *recoveryCondition, error) {
	spec := env.Spec.Recovery
	now := r.Clock.Now()
	interval := 15 * time.Minute
	if spec.Interval != nil {
		interval = spec.Interval.Duration
	}
	keep := int(spec.Keep)
	if keep < 1 {
		keep = 8
	}
	if !r.Served {
		return ctrl.Result{}, recoveryFalse(v1alpha1.ReasonSnapshotClassNotFound,
			"The cluster serves no snapshot.storage.k8s.io/v1 VolumeSnapshot API: install the CSI snapshot CRDs and snapshot-controller, then restart careplane"), nil
	}
	class := &snapshotv1.VolumeSnapshotClass{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: spec.VolumeSnapshotClassName}, class); apierrors.IsNotFound(err) {
		return ctrl.Result{RequeueAfter: interval}, recoveryFalse(v1alpha1.ReasonSnapshotClassNotFound,
			"VolumeSnapshotClass %s does not exist: set recovery.volumeSnapshotClassName to one of `kubectl get volumesnapshotclasses`; no recovery point is taken", spec.VolumeSnapshotClassName), nil
	} else if err != nil {
		return ctrl.Result{}, nil, fmt.Errorf("reading VolumeSnapshotClass %s: %w", spec.VolumeSnapshotClassName, err)
	}

	ns := build.SiteNamespace(env, v1alpha1.SitePrimary)
	claims, waiting, err := r.claims(ctx, env, ns)
	if err != nil {
		return ctrl.Result{}, nil, err
	}
	if len(waiting) > 0 || len(claims) == 0 {
		return ctrl.Result{}, recoveryFalse(v1alpha1.ReasonWaitingForVolumes,
			"Waiting for the volumes to be bound before the first recovery point: %s", strings.Join(waiting, ", ")), nil
	}
	drivers := map[string]string{}
	for _, c := range claims {
		sc := ptrOr(c.Spec.StorageClassName)
		if _, ok := drivers[sc]; ok {
			continue
		}
		cls := &storagev1.StorageClass{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Name: sc}, cls); err != nil {
			return ctrl.Result{}, nil, fmt.Errorf("reading StorageClass %q of claim %s: %w", sc, klog.KObj(&c), err)
		}
		drivers[sc] = cls.Provisioner
		if cls.Provisioner != class.Driver {
			return ctrl.Result{RequeueAfter: interval}, recoveryFalse(v1alpha1.ReasonSnapshotClassMismatch,
				"VolumeSnapshotClass %s is for driver %s, but claim %s is of StorageClass %s, driver %s: choose a snapshot class of the volumes' driver; no recovery point is taken",
				class.Name, class.Driver, klog.KObj(&c), sc, cls.Provisioner), nil
		}
	}

	// The points on record, refreshed from their snapshots.
	points := append([]v1alpha1.RecoveryPoint(nil), pointsOf(env)...)
	failed, err := r.refresh(ctx, ns, points)
	if err != nil {
		return ctrl.Result{}, nil, err
	}
	rec, fencedAt, err := r.fenceOf(ctx, env, ns)
	if err != nil {
		return ctrl.Result{}, nil, err
	}
	in := recovery.Input{Now: now, Interval: interval, Keep: keep, Points: points, Fenced: rec,
		Ready: readyNow(env)}
	if fencedAt != nil {
		in.FencedAt = fencedAt.Time
	}
	d := recovery.Decide(in)

	if d.Take {
		p, err := r.take(ctx, env, ns, d, now, claims)
		if err != nil {
			return ctrl.Result{}, nil, err
		}
		points = append(points, p)
		log.FromContext(ctx).Info("Took a recovery point", "point", p.Name, "clean", p.Clean, "snapshots", len(p.Snapshots))
	}
	var kept []v1alpha1.RecoveryPoint
	for _, p := range points {
		if !containsString(d.Delete, p.Name) {
			kept = append(kept, p)
			continue
		}
		if err := r.retire(ctx, ns, p); err != nil {
			return ctrl.Result{}, nil, err
		}
		log.FromContext(ctx).Info("Deleted a recovery point past recovery.keep", "point", p.Name)
	}
	st := &v1alpha1.RecoveryStatus{Points: kept, NextPointAt: &metav1.Time{Time: d.NextAt}}
	for _, p := range kept {
		if p.Clean && p.Ready {
			st.NewestCleanPointAt = ptrTo(p.TakenAt)
		}
	}
	res := ctrl.Result{RequeueAfter: max(d.NextAt.Sub(now), time.Second)}
	switch {
	case len(failed) > 0:
		c := recoveryFalse(v1alpha1.ReasonSnapshotFailed, "Snapshots of recovery points failed: %s", strings.Join(failed, "; "))
		c.points = st
		return res, c, nil
	case d.Paused:
		c := recoveryFalse(v1alpha1.ReasonPausedWhileFenced,
			"Fenced: %d recovery points were taken since the fence (recovery.keep); no more are taken and none is deleted until the restore", keep)
		c.points = st
		return res, c, nil
	}
	msg := fmt.Sprintf("%d recovery points of %d volumes; the next is due at %s", len(kept), len(claims), d.NextAt.UTC().Format(time.RFC3339))
	if st.NewestCleanPointAt == nil {
		msg += "; no clean point is ready yet"
	}
	return res, &recoveryCondition{status: metav1.ConditionTrue, reason: v1alpha1.ReasonPointsTaken, message: msg, points: st}, nil
}

// claims returns the claims of the primary site's StatefulSets (of the
// data generation on record: after a restore from a recovery point, the
// restored claims, not the ones kept as evidence), as their claim templates
// name them, read from the cache; and the ones not bound
// yet. The claims are found by name, not by label: a label is anyone's to
// set.
func (r *RecoveryReconciler) claims(ctx context.Context, env *v1alpha1.HealthEnvironment, ns string) ([]corev1.PersistentVolumeClaim, []string, error) {
	var out []corev1.PersistentVolumeClaim
	var waiting []string
	gen, err := dataGeneration(ctx, r.Client, env, ns)
	if err != nil {
		return nil, nil, err
	}
	for _, svc := range env.Spec.Services {
		for i := range svc.ReplicaCount() {
			for _, v := range svc.Volumes {
				name := build.ClaimName(v.Name, build.StatefulSetName(svc.Name, gen), i)
				pvc := &corev1.PersistentVolumeClaim{}
				if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, pvc); apierrors.IsNotFound(err) {
					waiting = append(waiting, name+" (not created yet)")
					continue
				} else if err != nil {
					return nil, nil, fmt.Errorf("reading claim %s/%s: %w", ns, name, err)
				}
				if pvc.Status.Phase != corev1.ClaimBound {
					waiting = append(waiting, fmt.Sprintf("%s (%s)", name, pvc.Status.Phase))
					continue
				}
				out = append(out, *pvc)
			}
		}
	}
	return out, waiting, nil
}

// refresh sets each point's readiness from its snapshots (the ones on
// record, by name and UID) and returns the snapshots that failed.
func (r *RecoveryReconciler) refresh(ctx context.Context, ns string, points []v1alpha1.RecoveryPoint) ([]string, error) {
	var failed []string
	for i := range points {
		p := &points[i]
		ready := len(p.Snapshots) > 0
		for _, s := range p.Snapshots {
			vs := &snapshotv1.VolumeSnapshot{}
			err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: s.Name}, vs)
			switch {
			case apierrors.IsNotFound(err):
				ready = false
				failed = append(failed, fmt.Sprintf("%s of point %s is gone", s.Name, p.Name))
				continue
			case err != nil:
				return nil, fmt.Errorf("reading VolumeSnapshot %s/%s: %w", ns, s.Name, err)
			}
			if string(vs.UID) != s.UID {
				ready = false
				failed = append(failed, fmt.Sprintf("%s of point %s was replaced (another UID)", s.Name, p.Name))
				continue
			}
			st := vs.Status
			if st != nil && st.Error != nil && st.Error.Message != nil {
				failed = append(failed, fmt.Sprintf("%s of point %s: %s", s.Name, p.Name, *st.Error.Message))
			}
			if st == nil || st.ReadyToUse == nil || !*st.ReadyToUse {
				ready = false
			}
		}
		p.Ready = ready
	}
	return failed, nil
}

// fenceOf says whether a fence is on record on the primary namespace (the
// record is the fence: package fence), and since when, from the status.
func (r *RecoveryReconciler) fenceOf(ctx context.Context, env *v1alpha1.HealthEnvironment, ns string) (bool, *metav1.Time, error) {
	nsObj := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		return false, nil, fmt.Errorf("reading namespace %s: %w", ns, err)
	}
	fenced := fence.RecordOf(nsObj).Present()
	var at *metav1.Time
	if env.Status.Isolation != nil {
		at = env.Status.Isolation.FencedAt
	}
	// A fence asked for but not on record yet counts as a fence: a point
	// taken in between must not be clean. So does a FenceRequest's hold
	// before its record sweep reaches this namespace.
	if env.Spec.Isolation.Mode == v1alpha1.IsolationFenced {
		fenced = true
	} else if !fenced {
		held, err := fenceRequestHolding(ctx, r.Client, env.Name)
		if err != nil {
			return false, nil, err
		}
		fenced = held != nil
	}
	if fenced && at == nil {
		at = &metav1.Time{Time: r.Clock.Now()}
	}
	return fenced, at, nil
}

// take creates the VolumeSnapshots of a new point, one per claim, in one
// pass, and returns the point as recorded. now is the time d was decided
// at: the point's name, its takenAt and the next point's time all read it
// (a second reading of the clock could fall in the next second).
func (r *RecoveryReconciler) take(ctx context.Context, env *v1alpha1.HealthEnvironment, ns string, d recovery.Decision, now time.Time, claims []corev1.PersistentVolumeClaim) (v1alpha1.RecoveryPoint, error) {
	p := v1alpha1.RecoveryPoint{Name: d.Name, TakenAt: metav1.NewTime(now), Revision: env.Status.KnownGoodRevision, Clean: d.Clean}
	for i := range claims {
		c := &claims[i]
		labels := build.Labels(env, build.SiteLabelPrimary)
		labels[v1alpha1.LabelRecoveryPoint] = d.Name
		labels[v1alpha1.LabelClean] = fmt.Sprint(d.Clean)
		if svc := c.Labels[v1alpha1.LabelService]; svc != "" {
			labels[v1alpha1.LabelService] = svc
		}
		// No owner reference: deleting the environment never deletes a
		// snapshot.
		vs := &snapshotv1.VolumeSnapshot{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: d.Name + "-" + c.Name, Labels: labels,
				Annotations: map[string]string{v1alpha1.AnnotationTakenAt: now.UTC().Format(time.RFC3339),
					v1alpha1.AnnotationRevision: env.Status.KnownGoodRevision}},
			Spec: snapshotv1.VolumeSnapshotSpec{
				Source:                  snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptrTo(c.Name)},
				VolumeSnapshotClassName: ptrTo(env.Spec.Recovery.VolumeSnapshotClassName),
			},
		}
		if err := r.Client.Create(ctx, vs, client.FieldOwner(fieldOwner)); err != nil {
			if !apierrors.IsAlreadyExists(err) {
				return p, fmt.Errorf("taking recovery point %s: creating VolumeSnapshot %s: %w", d.Name, klog.KObj(vs), err)
			}
			// Created by a pass that stopped before the status write:
			// careplane's only if its labels say this point's.
			if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(vs), vs); err != nil {
				return p, fmt.Errorf("reading VolumeSnapshot %s: %w", klog.KObj(vs), err)
			}
		}
		p.Snapshots = append(p.Snapshots, v1alpha1.PointSnapshot{Name: vs.Name, UID: string(vs.UID), Claim: c.Name})
	}
	sort.Slice(p.Snapshots, func(i, j int) bool { return p.Snapshots[i].Name < p.Snapshots[j].Name })
	return p, nil
}

// keepData keeps the primary's volumes and snapshot contents (Retain) as
// soon as they are bound, while the environment retains its data; with
// dataDeletionPolicy Delete it gives them their policies back, unless
// fenced (a fenced environment's data is never let go). Woken by the
// claims' and snapshots' events.
func (r *RecoveryReconciler) keepData(ctx context.Context, env *v1alpha1.HealthEnvironment) error {
	if !hasData(env) {
		return nil
	}
	ns := build.SiteNamespace(env, v1alpha1.SitePrimary)
	keep := env.Spec.DataDeletionPolicy != v1alpha1.DataDelete || env.Spec.Isolation.Mode == v1alpha1.IsolationFenced
	if !keep {
		nsObj := &corev1.Namespace{}
		if err := r.Client.Get(ctx, client.ObjectKey{Name: ns}, nsObj); client.IgnoreNotFound(err) != nil {
			return err
		}
		keep = nsObj.Labels[v1alpha1.LabelFenced] == "true"
	}
	return r.keeper.syncData(ctx, r.Client, r.APIReader, env.Name, ns, keep)
}

// retire deletes a point's snapshots, each on the precondition of its UID
// on record, each content given back its policy first (Retain while the
// point was kept), so that its bytes go with it.
func (r *RecoveryReconciler) retire(ctx context.Context, ns string, p v1alpha1.RecoveryPoint) error {
	for _, s := range p.Snapshots {
		uid := types.UID(s.UID)
		vs := &snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: s.Name}}
		if err := r.Client.Get(ctx, client.ObjectKeyFromObject(vs), vs); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("reading VolumeSnapshot %s of recovery point %s: %w", klog.KObj(vs), p.Name, err)
		}
		if vs.UID == uid && vs.Status != nil && vs.Status.BoundVolumeSnapshotContentName != nil {
			if err := r.keeper.retireContent(ctx, r.Client, r.APIReader, ns, *vs.Status.BoundVolumeSnapshotContentName); err != nil {
				return err
			}
		}
		if err := r.Client.Delete(ctx, vs, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("deleting VolumeSnapshot %s of recovery point %s: %w", klog.KObj(vs), p.Name, err)
		}
	}
	return nil
}

// writeStatus patches the status with change, on the resourceVersion read
// (the environment reconciler writes the status too: a conflict retries).
func (r *RecoveryReconciler) writeStatus(ctx context.Context, env *v1alpha1.HealthEnvironment, change func(*v1alpha1.HealthEnvironmentStatus)) error {
	after := env.DeepCopy()
	change(&after.Status)
	if equalStatus(env.Status, after.Status) {
		return nil
	}
	patch := client.MergeFromWithOptions(env, client.MergeFromWithOptimisticLock{})
	if err := r.Client.Status().Patch(ctx, after, patch); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("updating the recovery status of %s: %w", klog.KObj(env), err))
	}
	return nil
}

// SetupWithManager registers the controller: environments (spec changes and
// the periodic resync), their claims and, where served, their snapshots.
func (r *RecoveryReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.HealthEnvironment{}, builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, resynced))).
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(environmentOfLabels)).
		Named("recoverypoints")
	if r.Served {
		b = b.Watches(&snapshotv1.VolumeSnapshot{}, handler.EnqueueRequestsFromMapFunc(environmentOfLabels))
	}
	return b.Complete(r)
}

func pointsOf(env *v1alpha1.HealthEnvironment) []v1alpha1.RecoveryPoint {
	if env.Status.Recovery == nil {
		return nil
	}
	return env.Status.Recovery.Points
}

// readyNow says the environment's Ready condition is True for its current
// generation.
func readyNow(env *v1alpha1.HealthEnvironment) bool {
	c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == env.Generation
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func ptrTo[T any](v T) *T { return &v }

func ptrOr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func equalStatus(a, b v1alpha1.HealthEnvironmentStatus) bool {
	return equality.Semantic.DeepEqual(a, b)
}
