package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// The fence's deny policy and quota are written whole: an update.
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=update
// +kubebuilder:rbac:groups="",resources=resourcequotas,verbs=update

// fenceWriter makes the fence's first step, the one that closes the window:
// the deny policy (the traffic cut), the record on the primary Namespace
// (the freeze) and the fence quota, each policy and quota written whole. The
// fence gate, the FenceRequest controller and the reconciler all close the
// window through it, so there is one way to write each of these objects.
//
// The three writes go out together: one round trip closes the window. A
// tenant's write to the deny policy admitted before the freeze takes effect
// (admission sees the label a moment after it is written) is an event on a
// careplane-labelled policy, which wakes the reconciler, and its closeWindow
// writes the policy whole again; a tenant who strips the label makes it a
// deletion, which wakes the gate. The isolation verdict, read live, is the
// last word either way.
type fenceWriter struct {
	// c reads from the manager's cache and writes.
	c client.Client
	// live reads from the API server: a policy or quota a tenant created
	// under the fence's name carries no careplane label, and the cache
	// holds only what does (the fence quota) or only metadata.
	live client.Reader
}

// closeWindow writes env's deny policy, its fence record rec and its quota.
// It reports whether the window is closed: false, with no error, when env's
// primary namespace is not careplane's (the reconciler reports that
// conflict) or is missing. With it, the record in force: rec, or the one
// another writer of the fence put there first (freeze).
func (w fenceWriter) closeWindow(ctx context.Context, env *v1alpha1.HealthEnvironment, rec fence.Record) (fence.Record, bool, error) {
	ns, err := w.primary(ctx, env)
	if ns == nil || err != nil {
		return fence.Record{}, false, err
	}
	err = all(
		func() error { return w.cut(ctx, env) },
		func() (err error) { rec, err = w.freeze(ctx, env, ns, rec); return err },
	)
	return rec, err == nil, err
}

// primary is env's primary namespace from the cache, or nil when it is
// missing, not careplane's for env, or going.
func (w fenceWriter) primary(ctx context.Context, env *v1alpha1.HealthEnvironment) (*corev1.Namespace, error) {
	ns := &corev1.Namespace{}
	if err := w.c.Get(ctx, client.ObjectKey{Name: build.SiteNamespace(env, v1alpha1.SitePrimary)}, ns); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(ns, env) || !ns.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	return ns, nil
}

// cut writes env's deny policy whole: the part of the window that stops
// traffic. A fleet fence cuts every environment before it freezes any
// (FenceRequestReconciler.closeWindows).
func (w fenceWriter) cut(ctx context.Context, env *v1alpha1.HealthEnvironment) error {
	return w.writeDenyPolicy(ctx, env)
}

// freeze writes the record rec on ns, env's primary namespace, and the
// fence quota: the part of the window that stops change. It returns the
// record in force (record).
func (w fenceWriter) freeze(ctx context.Context, env *v1alpha1.HealthEnvironment, ns *corev1.Namespace, rec fence.Record) (fence.Record, error) {
	err := all(
		func() (err error) { rec, err = w.record(ctx, env, ns, rec); return err },
		func() error { return w.writeWhole(ctx, fence.Quota(env), &corev1.ResourceQuota{}) },
	)
	return rec, err
}

// record writes the fence record rec on ns, env's primary namespace, and
// returns the record in force. The fence gate, a FenceRequest and the
// reconciler all start a fence, each from its own read of the namespace:
// the one whose read is behind the others' write loses the race for the
// record (writeRecord's precondition). The loser reads the namespace again,
// and when its record is already what rec's source would write over it, it
// takes that record and carries on under its ID, writing nothing: losing a
// race that is by design is no failure, and costs no failed pass
// (TestALostRaceForTheRecordIsNoFailure). Any other record there is
// returned as the conflict, for the next pass to decide on fresh state (a
// restore under way, another source).
func (w fenceWriter) record(ctx context.Context, env *v1alpha1.HealthEnvironment, ns *corev1.Namespace, rec fence.Record) (fence.Record, error) {
	err := w.writeRecord(ctx, ns, rec, nsMarks{})
	if !rec.Present() || !apierrors.IsConflict(err) {
		return rec, err
	}
	live := &corev1.Namespace{}
	if gerr := w.live.Get(ctx, client.ObjectKeyFromObject(ns), live); gerr != nil {
		return rec, err
	}
	if won, ok := recordInForce(env, live, rec.Source); ok {
		return won, nil
	}
	return rec, err
}

// recordInForce is the fence record on live, env's primary namespace as the
// API server holds it, when a fence from source would leave it as it is:
// a fence on record, of that source, with no restore under way (Over
// cancels one), in a namespace careplane made for env and not going.
func recordInForce(env *v1alpha1.HealthEnvironment, live *corev1.Namespace, source string) (fence.Record, bool) {
	won := fence.RecordOf(live)
	ok := metav1.IsControlledBy(live, env) && live.DeletionTimestamp.IsZero() && won.Present() && won.Over(source, time.Time{}) == won
	return won, ok
}

// nsMarks are labels and annotations to set on a namespace (a nil value
// removes one), written with its fence record.
type nsMarks struct {
	labels, annotations map[string]any
}

func (m nsMarks) empty() bool { return len(m.labels) == 0 && len(m.annotations) == 0 }

// patch is the merge patch that writes m, on the precondition of
// resourceVersion version unless it is empty.
func (m nsMarks) patch(version string) ([]byte, error) {
	// Only what m has: "labels": null would remove every label.
	md := map[string]any{}
	if m.labels != nil {
		md["labels"] = m.labels
	}
	if m.annotations != nil {
		md["annotations"] = m.annotations
	}
	if version != "" {
		md["resourceVersion"] = version
	}
	return json.Marshal(map[string]any{"metadata": md})
}

// writeRecord makes ns carry rec (an absent rec clears the record), and
// also's marks in the same write. The patch carries ns's resourceVersion:
// of two writers racing to start a fence, one wins and the other reads the
// winner's ID on its next pass.
func (w fenceWriter) writeRecord(ctx context.Context, ns *corev1.Namespace, rec fence.Record, also nsMarks) error {
	if fence.RecordOf(ns) == rec && also.empty() {
		return nil
	}
	labels := map[string]any{v1alpha1.LabelFenced: nil}
	annotations := map[string]any{fence.AnnotationID: nil, fence.AnnotationSource: nil, fence.AnnotationRestoreID: nil,
		fence.AnnotationHandedOverFrom: nil}
	maps.Copy(labels, also.labels)
	maps.Copy(annotations, also.annotations)
	for k, v := range rec.Labels() {
		labels[k] = v
	}
	for k, v := range rec.Annotations() {
		annotations[k] = v
	}
	patch, err := nsMarks{labels: labels, annotations: annotations}.patch(ns.ResourceVersion)
	if err != nil {
		return err
	}
	// On a copy: the cache's object is not the caller's to change.
	if err := w.c.Patch(ctx, ns.DeepCopy(), client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner)); err != nil {
		return fmt.Errorf("recording fence %q on namespace %s: %w", rec.ID, ns.Name, err)
	}
	if rec.Present() {
		log.FromContext(ctx).Info("Fence recorded; namespace frozen", "namespace", ns.Name, "fence", rec.ID, "source", rec.Source)
	}
	return nil
}

// writeDenyPolicy writes env's deny policy whole. Failing closed: if the
// forensics exception is rejected, the fence goes up without it.
func (w fenceWriter) writeDenyPolicy(ctx context.Context, env *v1alpha1.HealthEnvironment) error {
	err := w.writeWhole(ctx, fence.DenyPolicy(env, true), &networkingv1.NetworkPolicy{})
	if err != nil && apierrors.IsInvalid(err) && env.Spec.Isolation.ForensicsFrom != nil {
		log.FromContext(ctx).Error(err, "Fence policy with the forensics exception was rejected; fencing without it")
		err = w.writeWhole(ctx, fence.DenyPolicy(env, false), &networkingv1.NetworkPolicy{})
	}
	if err != nil {
		return fmt.Errorf("writing the fence policy of %s: %w", klog.KObj(env), err)
	}
	return nil
}

// writeWhole makes the object at want's key exactly want: created when
// missing, every field replaced (an update, not a patch) when it differs.
// cur is an empty object of want's kind.
//
// It creates first when the cache holds no such object: in a fence the
// object is nearly always missing, and a live read before every create
// doubled the requests of a fleet fence. An object of that name the cache
// does not hold (a tenant's carries no careplane label) makes the create
// fail with AlreadyExists; it is then read live and written whole.
func (w fenceWriter) writeWhole(ctx context.Context, want, cur client.Object) error {
	key := client.ObjectKeyFromObject(want)
	err := w.c.Get(ctx, key, cur)
	if apierrors.IsNotFound(err) {
		err = w.c.Create(ctx, want.DeepCopyObject().(client.Object), client.FieldOwner(fieldOwner))
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		err = w.live.Get(ctx, key, cur)
	}
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%T %s exists and is gone again: will write it on the next pass: %w", want, key, err)
	case err != nil:
		return fmt.Errorf("reading %T %s: %w", want, key, err)
	case asDesired(cur, want):
		return nil
	}
	upd := want.DeepCopyObject().(client.Object)
	upd.SetResourceVersion(cur.GetResourceVersion())
	if err := w.c.Update(ctx, upd, client.FieldOwner(fieldOwner)); err != nil {
		return fmt.Errorf("writing %T %s whole: %w", want, key, err)
	}
	log.FromContext(ctx).Info("Rewrote a fence object whole", "kind", fmt.Sprintf("%T", want), "object", klog.KObj(want))
	return nil
}

// asDesired says cur is want, for the kinds writeWhole writes.
func asDesired(cur, want client.Object) bool {
	switch c := cur.(type) {
	case *networkingv1.NetworkPolicy:
		return fence.IsDenyPolicy(c, want.(*networkingv1.NetworkPolicy))
	case *corev1.ResourceQuota:
		return fence.IsQuota(c, want.(*corev1.ResourceQuota))
	}
	return false
}

// windowClosed says, from the cache, whether env's window is closed: the
// record in place, and the deny policy and the quota as desired. It sends
// nothing.
func (w fenceWriter) windowClosed(ctx context.Context, env *v1alpha1.HealthEnvironment) (bool, error) {
	ns := &corev1.Namespace{}
	if err := w.c.Get(ctx, client.ObjectKey{Name: build.SiteNamespace(env, v1alpha1.SitePrimary)}, ns); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	if !fence.RecordOf(ns).Present() {
		return false, nil
	}
	pol := &networkingv1.NetworkPolicy{}
	err := w.c.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: build.FencePolicyName}, pol)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fence.IsDenyPolicy(pol, fence.DenyPolicy(env, true)) && !fence.IsDenyPolicy(pol, fence.DenyPolicy(env, false)) {
		return false, nil
	}
	want := fence.Quota(env)
	q := &corev1.ResourceQuota{}
	err = w.c.Get(ctx, client.ObjectKeyFromObject(want), q)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil && fence.IsQuota(q, want), err
}

// writeStandbyFreeze freezes standby namespace ns for fence id
// (fence.StandbyFreeze): a fence that moves traffic there keeps everyone but
// careplane, responders and the control plane out of what serves. With id
// "", it lifts the freeze.
func (r *HealthEnvironmentReconciler) writeStandbyFreeze(ctx context.Context, ns, id string) error {
	labels, annotations := fence.StandbyFreeze(id)
	patch, err := nsMarks{labels: labels, annotations: annotations}.patch("")
	if err != nil {
		return err
	}
	err = r.Client.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner))
	switch {
	case err != nil && id == "" && apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("writing the freeze of standby namespace %s (fence %q): %w", ns, id, err)
	case id != "":
		log.FromContext(ctx).Info("Standby namespace frozen: it serves while the primary is fenced", "namespace", ns, "fence", id)
	default:
		log.FromContext(ctx).Info("Standby namespace's freeze lifted with the fence", "namespace", ns)
	}
	return nil
}

// liftStandbyFreeze lifts the freeze a fence put on env's standby namespace,
// once no fence is on record: at the end of the restore, on any later pass
// (after a restore cut short between its lift and this write), and before a
// released environment's deletion (the garbage collector may not delete a
// frozen namespace). A
// freeze careplane did not write (no fence ID on it) is a responder's, and
// stays.
func (r *HealthEnvironmentReconciler) liftStandbyFreeze(ctx context.Context, s *scope) error {
	// By its name whatever the spec says now: a standby dropped from the
	// spec during the fence is deleted once unfrozen.
	ns := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: build.SiteNamespace(s.env, v1alpha1.SiteStandby)}, ns); err != nil {
		return client.IgnoreNotFound(err)
	}
	if fence.StandbyFrozenFor(ns) == "" || !metav1.IsControlledBy(ns, s.env) {
		return nil
	}
	return r.writeStandbyFreeze(ctx, ns.Name, "")
}
