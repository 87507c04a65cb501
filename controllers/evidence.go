package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// +kubebuilder:rbac:groups=core,resources=persistentvolumeclaims,verbs=get;list;watch

// observeEvidence adds to obs what the fence's evidence step reads: every
// claim of the primary namespace, careplane's or the tenant's, and every
// VolumeSnapshot there, from the API server; the snapshot class and each
// claim's driver. A cluster that serves no snapshot API has no class.
func (r *HealthEnvironmentReconciler) observeEvidence(ctx context.Context, s *scope, obs *fence.Observed) error {
	ns := s.names.Primary
	var claims corev1.PersistentVolumeClaimList
	if err := r.APIReader.List(ctx, &claims, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("listing claims in %s: %w", ns, err)
	}
	if len(claims.Items) == 0 {
		return nil
	}
	obs.ClaimDrivers = map[string]string{}
	drivers := map[string]string{}
	for i := range claims.Items {
		c := &claims.Items[i]
		obs.Claims = append(obs.Claims, c.ObjectMeta)
		sc := ptrOr(c.Spec.StorageClassName)
		if sc == "" {
			continue // the cluster's default class: not checked here
		}
		if _, ok := drivers[sc]; !ok {
			cls := &storagev1.StorageClass{}
			if err := r.APIReader.Get(ctx, client.ObjectKey{Name: sc}, cls); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("reading StorageClass %s of claim %s: %w", sc, klog.KObj(c), err)
			}
			drivers[sc] = cls.Provisioner
		}
		obs.ClaimDrivers[c.Name] = drivers[sc]
	}
	if rec := s.env.Spec.Recovery; rec != nil && rec.VolumeSnapshotClassName != "" {
		obs.SnapshotClass = &fence.SnapshotClass{Name: rec.VolumeSnapshotClassName}
		class := &snapshotv1.VolumeSnapshotClass{}
		switch err := r.APIReader.Get(ctx, client.ObjectKey{Name: rec.VolumeSnapshotClassName}, class); {
		case err == nil:
			obs.SnapshotClass.Found, obs.SnapshotClass.Driver = true, class.Driver
		case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		default:
			return fmt.Errorf("reading VolumeSnapshotClass %s: %w", rec.VolumeSnapshotClassName, err)
		}
	}
	snaps := &metav1.PartialObjectMetadataList{}
	snaps.SetGroupVersionKind(snapshotv1.SchemeGroupVersion.WithKind("VolumeSnapshotList"))
	if err := r.APIReader.List(ctx, snaps, client.InNamespace(ns)); err != nil && !meta.IsNoMatchError(err) && !apierrors.IsNotFound(err) {
		return fmt.Errorf("listing VolumeSnapshots in %s: %w", ns, err)
	}
	for i := range snaps.Items {
		obs.Snapshots = append(obs.Snapshots, snaps.Items[i].ObjectMeta)
	}
	return nil
}

// takeEvidence carries out the evidence actions of plan: a VolumeSnapshot
// of each claim, labelled with the environment, the ticket and the fence,
// without an owner reference (deleting the environment never deletes one),
// recorded in status.evidenceSnapshots by UID. It never fails the fence: a
// snapshot that cannot be taken is reported in the EvidenceSnapshots
// condition, and the network fence goes on.
func (r *HealthEnvironmentReconciler) takeEvidence(ctx context.Context, s *scope, plan fence.Plan) {
	actions := plan.Snapshots()
	if len(actions) == 0 {
		return
	}
	ev := plan.Evidence
	var mu sync.Mutex
	var failed []string
	taken := map[string]v1alpha1.EvidenceSnapshot{}
	_ = inParallel(actions, func(a fence.Action) error {
		if a.Verb != fence.VerbSnapshot && a.Verb != fence.VerbKeep {
			return nil
		}
		snap, err := r.evidenceSnapshot(ctx, s, a)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed = append(failed, err.Error())
			return nil
		}
		taken[snap.Name] = snap
		return nil
	})
	if len(failed) > 0 && ev.Reason == "" {
		slices.Sort(failed)
		ev.Reason, ev.Message = v1alpha1.ReasonSnapshotFailed, "Evidence snapshots could not be taken (the network fence stands regardless): "+strings.Join(failed, "; ")
	}
	st := s.status
	for _, have := range st.EvidenceSnapshots {
		delete(taken, have.Name) // on record already
	}
	for _, name := range slices.Sorted(mapKeys(taken)) {
		st.EvidenceSnapshots = append(st.EvidenceSnapshots, taken[name])
	}
	if n := len(st.EvidenceSnapshots); n > maxEvidenceSnapshots {
		st.EvidenceSnapshots = st.EvidenceSnapshots[n-maxEvidenceSnapshots:]
	}
	if len(taken) > 0 {
		log.FromContext(ctx).Info("Took evidence snapshots of the fenced namespace", "namespace", s.names.Primary, "snapshots", len(taken))
	}
	status, reason, msg := fence.EvidenceCondition(s.record.ID, len(plan.Snapshots()), st.EvidenceSnapshots, ev)
	prev := meta.FindStatusCondition(s.env.Status.Conditions, v1alpha1.ConditionEvidenceSnapshots)
	s.evidence = &metav1.Condition{Type: v1alpha1.ConditionEvidenceSnapshots, Status: status, Reason: reason, Message: msg, ObservedGeneration: s.env.Generation}
	if prev == nil || prev.Reason != reason {
		typ := corev1.EventTypeNormal
		if status != metav1.ConditionTrue && reason != v1alpha1.ReasonEvidencePending {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(s.env, nil, typ, reason, "Fence", "%s", msg)
	}
}

// maxEvidenceSnapshots bounds status.evidenceSnapshots (the API's MaxItems).
const maxEvidenceSnapshots = 250

// evidenceSnapshot creates the evidence snapshot of action a, or reads the
// one this fence created before (a pass that stopped before its status
// write), and returns its record.
func (r *HealthEnvironmentReconciler) evidenceSnapshot(ctx context.Context, s *scope, a fence.Action) (v1alpha1.EvidenceSnapshot, error) {
	ticket := fence.EvidenceTicket(s.iso)
	labels := build.Labels(s.env, build.SiteLabelPrimary)
	labels[v1alpha1.LabelEvidence] = ticket
	labels[v1alpha1.LabelFenceID] = fence.IDLabel(s.record.ID)
	vs := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: a.Namespace, Name: a.Name, Labels: labels,
			Annotations: map[string]string{v1alpha1.AnnotationFenceID: s.record.ID, v1alpha1.AnnotationTakenAt: s.now.UTC().Format(time.RFC3339)}},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source:                  snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptrTo(a.From)},
			VolumeSnapshotClassName: ptrTo(s.env.Spec.Recovery.VolumeSnapshotClassName),
		},
	}
	rec := v1alpha1.EvidenceSnapshot{Name: a.Name, Claim: a.From, FenceID: s.record.ID, Ticket: s.iso.Ticket,
		TakenAt: &metav1.Time{Time: s.now}}
	if a.Verb == fence.VerbSnapshot {
		err := r.Client.Create(ctx, vs, client.FieldOwner(fieldOwner))
		if err == nil {
			rec.UID = string(vs.UID)
			return rec, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return rec, fmt.Errorf("creating VolumeSnapshot %s of claim %s: %w", klog.KObj(vs), a.From, err)
		}
	}
	live := &snapshotv1.VolumeSnapshot{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(vs), live); err != nil {
		return rec, fmt.Errorf("reading VolumeSnapshot %s: %w", klog.KObj(vs), err)
	}
	if live.Annotations[v1alpha1.AnnotationFenceID] != s.record.ID || ptrOr(live.Spec.Source.PersistentVolumeClaimName) != a.From {
		return rec, fmt.Errorf("VolumeSnapshot %s exists and is not this fence's evidence of claim %s", klog.KObj(vs), a.From)
	}
	rec.UID = string(live.UID)
	if t, err := time.Parse(time.RFC3339, live.Annotations[v1alpha1.AnnotationTakenAt]); err == nil {
		rec.TakenAt = &metav1.Time{Time: t}
	}
	if live.Status != nil && live.Status.ReadyToUse != nil {
		rec.Ready = *live.Status.ReadyToUse
	}
	return rec, nil
}

// refreshEvidence brings status.evidenceSnapshots up to date with the
// snapshots on record (matched by name and UID): their readiness, and the
// EvidenceSnapshots condition. A recorded snapshot that is gone is dropped
// from the record once the environment is no longer fenced (a responder
// purged it); while fenced, it stays on record and the condition says so.
// It returns the change to make to the status (the recovery controller
// writes it with its own, in one write).
func (r *RecoveryReconciler) refreshEvidence(ctx context.Context, env *v1alpha1.HealthEnvironment) (func(*v1alpha1.HealthEnvironmentStatus), error) {
	if len(env.Status.EvidenceSnapshots) == 0 {
		return func(*v1alpha1.HealthEnvironmentStatus) {}, nil
	}
	ns := build.SiteNamespace(env, v1alpha1.SitePrimary)
	nsObj := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: ns}, nsObj); client.IgnoreNotFound(err) != nil {
		return nil, fmt.Errorf("reading namespace %s: %w", ns, err)
	}
	rec := fence.RecordOf(nsObj)
	fenced := rec.Present() || env.Spec.Isolation.Mode == v1alpha1.IsolationFenced
	var kept []v1alpha1.EvidenceSnapshot
	var failed []string
	for _, e := range env.Status.EvidenceSnapshots {
		vs := &snapshotv1.VolumeSnapshot{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: e.Name}, vs)
		switch {
		case (apierrors.IsNotFound(err) || (err == nil && string(vs.UID) != e.UID)) && !fenced:
			continue // purged
		case apierrors.IsNotFound(err):
			failed = append(failed, e.Name+" is gone")
			e.Ready = false
		case err != nil:
			return nil, fmt.Errorf("reading VolumeSnapshot %s/%s: %w", ns, e.Name, err)
		case string(vs.UID) != e.UID:
			failed = append(failed, e.Name+" was replaced (another UID)")
			e.Ready = false
		default:
			e.Ready = vs.Status != nil && vs.Status.ReadyToUse != nil && *vs.Status.ReadyToUse
			if vs.Status != nil && vs.Status.Error != nil && vs.Status.Error.Message != nil {
				failed = append(failed, e.Name+": "+*vs.Status.Error.Message)
			}
		}
		kept = append(kept, e)
	}
	c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionEvidenceSnapshots)
	return func(st *v1alpha1.HealthEnvironmentStatus) {
		st.EvidenceSnapshots = kept
		if len(kept) == 0 && !fenced {
			meta.RemoveStatusCondition(&st.Conditions, v1alpha1.ConditionEvidenceSnapshots)
			return
		}
		// A class problem the fence reported stays until the next fence.
		if c != nil && c.Reason != v1alpha1.ReasonEvidenceTaken && c.Reason != v1alpha1.ReasonEvidencePending && c.Reason != v1alpha1.ReasonSnapshotFailed {
			return
		}
		ev := fence.Evidence{}
		if len(failed) > 0 {
			ev.Reason, ev.Message = v1alpha1.ReasonSnapshotFailed, "Evidence snapshots failed: "+strings.Join(failed, "; ")
		}
		status, reason, msg := fence.EvidenceCondition(rec.ID, -1, kept, ev)
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha1.ConditionEvidenceSnapshots, Status: status,
			Reason: reason, Message: msg, ObservedGeneration: env.Generation})
	}, nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// evidenceMarks are what ns, a site namespace, must change to name the
// evidence pods in it and their addresses (build.LabelHoldsEvidence,
// build.AnnotationEvidencePods, build.AnnotationEvidenceIPs, read by
// careplane-evidence-pod-access), or to carry none of them when there are
// none; empty when it already says so.
func evidenceMarks(ns *corev1.Namespace, pods []corev1.Pod) nsMarks {
	names := make([]string, 0, len(pods))
	var ips []string
	for i := range pods {
		names = append(names, pods[i].Name)
		if p := pods[i].Status.Phase; p == corev1.PodSucceeded || p == corev1.PodFailed {
			// Stopped (evicted for node pressure, say): its address may be
			// a new pod's already.
			continue
		}
		for _, ip := range pods[i].Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		if ip := pods[i].Status.PodIP; ip != "" {
			ips = append(ips, ip)
		}
	}
	slices.Sort(names)
	slices.Sort(ips)
	ips = slices.Compact(ips)
	_, hasLabel := ns.Labels[build.LabelHoldsEvidence]
	_, hasNames := ns.Annotations[build.AnnotationEvidencePods]
	_, hasIPs := ns.Annotations[build.AnnotationEvidenceIPs]
	if len(names) == 0 {
		if !hasLabel && !hasNames && !hasIPs {
			return nsMarks{}
		}
		return nsMarks{labels: map[string]any{build.LabelHoldsEvidence: nil},
			annotations: map[string]any{build.AnnotationEvidencePods: nil, build.AnnotationEvidenceIPs: nil}}
	}
	list, addrs := strings.Join(names, ","), strings.Join(ips, ",")
	if ns.Labels[build.LabelHoldsEvidence] == "true" && ns.Annotations[build.AnnotationEvidencePods] == list &&
		ns.Annotations[build.AnnotationEvidenceIPs] == addrs && hasIPs == (addrs != "") {
		return nsMarks{}
	}
	ann := map[string]any{build.AnnotationEvidencePods: list, build.AnnotationEvidenceIPs: addrs}
	if addrs == "" {
		ann[build.AnnotationEvidenceIPs] = nil
	}
	return nsMarks{labels: map[string]any{build.LabelHoldsEvidence: "true"}, annotations: ann}
}

// restripEvidence takes off the evidence pods a fence of an earlier
// version of careplane kept every label but those an evidence pod keeps
// (fence.EvidenceMetadata): a Service or controller of the tenant's would
// match them by those labels. A pod that carries
// build.AnnotationEvidenceLabels was stripped by its fence already: a label
// it has since is a responder's, and that record stays as it is. Each pod
// is looked at once per process (r.stripped): the cache holds no
// annotations, so looking costs a read.
func (r *HealthEnvironmentReconciler) restripEvidence(ctx context.Context, s *scope, pods []corev1.Pod) error {
	for i := range pods {
		p := &pods[i]
		extra := false
		for k := range p.Labels {
			extra = extra || !slices.Contains(fence.EvidenceLabelKeys, k)
		}
		if _, seen := r.stripped.Load(p.UID); !extra || seen {
			continue
		}
		live := &corev1.Pod{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(p), live); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("reading evidence pod %s: %w", klog.KObj(p), err)
		}
		if _, stripped := live.Annotations[build.AnnotationEvidenceLabels]; stripped || live.UID != p.UID {
			r.stripped.Store(p.UID, true)
			continue
		}
		patch, err := evidencePatch(live.Labels, live.Labels[v1alpha1.LabelEvidence], s.env.Name, live.ResourceVersion)
		if err != nil {
			return err
		}
		err = r.Client.Patch(ctx, live, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner))
		switch {
		case err == nil, apierrors.IsNotFound(err):
			r.stripped.Store(p.UID, true)
		case apierrors.IsConflict(err):
			// Changed since the read: the next pass looks again.
		default:
			return fmt.Errorf("taking the labels off evidence pod %s: %w", klog.KObj(p), err)
		}
	}
	return nil
}

// recordEvidencePods writes evidenceMarks on the namespace name, as the
// cache shows it, when there are any. A namespace the cache does not show
// yet (a new environment's) holds no evidence.
func (r *HealthEnvironmentReconciler) recordEvidencePods(ctx context.Context, s *scope, name string, pods []corev1.Pod) error {
	ns := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
		if apierrors.IsNotFound(err) && len(pods) == 0 {
			return nil
		}
		return fmt.Errorf("reading namespace %s: %w", name, err)
	}
	return r.writeEvidenceMarks(ctx, s.env, ns, pods)
}

// writeEvidenceMarks makes ns name pods, env's evidence pods, when it does
// not already (evidenceMarks); with none, it takes the marks off.
func (r *HealthEnvironmentReconciler) writeEvidenceMarks(ctx context.Context, env *v1alpha1.HealthEnvironment, ns *corev1.Namespace, pods []corev1.Pod) error {
	m := evidenceMarks(ns, pods)
	if m.empty() {
		return nil
	}
	if len(pods) > 0 {
		if err := r.holdForEvidence(ctx, env); err != nil {
			return err
		}
	}
	patch, err := m.patch("")
	if err != nil {
		return err
	}
	// On a copy: the cache's object is not ours to change.
	if err := r.Client.Patch(ctx, ns.DeepCopy(), client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner)); err != nil {
		return fmt.Errorf("writing the evidence marks of namespace %s: %w", ns.Name, err)
	}
	return nil
}

// holdForEvidence adds the data finalizer to env before any write of marks
// that name an evidence pod: from then on, deleting env keeps them
// (retainData), and the evidence namespace guard refuses the garbage
// collector's delete of their namespace.
func (r *HealthEnvironmentReconciler) holdForEvidence(ctx context.Context, env *v1alpha1.HealthEnvironment) error {
	if err := r.writeFinalizer(ctx, env, dataFinalizer, true); err != nil {
		return fmt.Errorf("adding the data finalizer to %s, which keeps its evidence pods: %w", klog.KObj(env), err)
	}
	return nil
}
