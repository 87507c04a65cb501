package controllers

import (
	"context"
	"encoding/json"
	"fmt"
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
// the record on the primary Namespace (the freeze), then the deny policy and
// the fence quota, each written whole. The fence gate, the FenceRequest
// controller and the reconciler all close the window through it, so there
// is one way to write each of these objects.
type fenceWriter struct {
	// c reads from the manager's cache and writes.
	c client.Client
	// live reads from the API server: a policy or quota a tenant created
	// under the fence's name carries no careplane label, and the cache
	// holds only what does (the fence quota) or only metadata.
	live client.Reader
}

// closeWindow writes env's fence record rec and then, with the namespace
// frozen, its deny policy and quota. It reports whether the window is
// closed: false, with no error, when env's primary namespace is not
// careplane's (the reconciler reports that conflict) or is missing.
func (w fenceWriter) closeWindow(ctx context.Context, env *v1alpha1.HealthEnvironment, rec fence.Record) (bool, error) {
	ns := &corev1.Namespace{}
	if err := w.c.Get(ctx, client.ObjectKey{Name: build.SiteNamespace(env, v1alpha1.SitePrimary)}, ns); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(ns, env) || !ns.DeletionTimestamp.IsZero() {
		return false, nil
	}
	if err := w.writeRecord(ctx, ns, rec); err != nil {
		return false, err
	}
	err := all(
		func() error { return w.writeDenyPolicy(ctx, env) },
		func() error { return w.writeWhole(ctx, fence.Quota(env), &corev1.ResourceQuota{}) },
	)
	return err == nil, err
}

// recordFor is the record a fence from source writes over the record in
// place: that one's ID is kept (credentials were revoked under it), and a
// restore under way is cancelled.
func recordFor(inPlace fence.Record, source string, now time.Time) fence.Record {
	if inPlace.Present() {
		return fence.Record{ID: inPlace.ID, Source: source}
	}
	return fence.Record{ID: fence.NewID(now), Source: source}
}

// writeRecord makes ns carry rec (an absent rec clears the record). The
// patch carries ns's resourceVersion: of two writers racing to start a
// fence, one wins and the other reads the winner's ID on its next pass.
func (w fenceWriter) writeRecord(ctx context.Context, ns *corev1.Namespace, rec fence.Record) error {
	if fence.RecordOf(ns) == rec {
		return nil
	}
	labels := map[string]any{v1alpha1.LabelFenced: nil}
	annotations := map[string]any{fence.AnnotationID: nil, fence.AnnotationSource: nil, fence.AnnotationRestoreID: nil}
	for k, v := range rec.Labels() {
		labels[k] = v
	}
	for k, v := range rec.Annotations() {
		annotations[k] = v
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": ns.ResourceVersion, "labels": labels, "annotations": annotations}})
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
func (w fenceWriter) writeWhole(ctx context.Context, want, cur client.Object) error {
	key := client.ObjectKeyFromObject(want)
	err := w.c.Get(ctx, key, cur)
	if apierrors.IsNotFound(err) {
		// Not in the cache: a tenant's object of that name has no
		// careplane label. Ask the API server.
		err = w.live.Get(ctx, key, cur)
	}
	switch {
	case apierrors.IsNotFound(err):
		err = w.c.Create(ctx, want.DeepCopyObject().(client.Object), client.FieldOwner(fieldOwner))
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %T %s: created meanwhile, will write it whole on the next pass: %w", want, key, err)
		}
		return err
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

// windowClosed says, from the cache, whether env's window is closed under
// record rec: the record in place and the deny policy as desired. It sends
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
	return fence.IsDenyPolicy(pol, fence.DenyPolicy(env, true)) || fence.IsDenyPolicy(pol, fence.DenyPolicy(env, false)), nil
}
