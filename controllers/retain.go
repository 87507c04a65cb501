package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/retention"
)

// dataFinalizer holds the deletion of an environment whose data is to be
// retained until careplane has taken the primary namespace, and the claims
// and snapshots in it, out of the garbage collector's reach.
const dataFinalizer = "careplane.io/data"

// RetainedPolicyName and RetainedQuotaName name the deny-all policy and the
// pods: 0 quota careplane leaves in the primary namespace of a deleted
// environment whose data it retains: the environment's own policies and
// quota go with it, and nothing may run or talk beside the retained data.
const (
	RetainedPolicyName = "careplane-retained"
	RetainedQuotaName  = "careplane-retained"
)

// ensureDataFinalizer adds or removes the data finalizer as hasData says,
// or while the primary namespace names evidence pods: whatever
// dataDeletionPolicy says, careplane has data or evidence to keep or to let
// go (retainData) before the environment goes.
func (r *HealthEnvironmentReconciler) ensureDataFinalizer(ctx context.Context, s *scope) error {
	env := s.env
	want := s.keepsData()
	if !want && controllerutil.ContainsFinalizer(env, dataFinalizer) {
		// Let go only on the API server's word: the cache may miss the
		// namespace (its labels changed), or hold evidence claims and
		// snapshots of services the spec no longer has.
		held, err := r.evidenceHeld(ctx, env, s.names.Primary)
		if err != nil {
			return err
		}
		want = held
	}
	if err := r.writeFinalizer(ctx, env, dataFinalizer, want); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("updating the data finalizer of %s: %w", klog.KObj(env), err)
	}
	return nil
}

// evidenceHeld says namespace ns, env's, names evidence pods or holds
// evidence: pods, claims or snapshots labelled careplane.io/evidence.
func (r *HealthEnvironmentReconciler) evidenceHeld(ctx context.Context, env *v1alpha1.HealthEnvironment, ns string) (bool, error) {
	nsObj := &corev1.Namespace{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: ns}, nsObj); apierrors.IsNotFound(err) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("reading namespace %s: %w", ns, err)
	}
	if !metav1.IsControlledBy(nsObj, env) && nsObj.Labels[v1alpha1.LabelEnvironment] != env.Name {
		return false, nil // not this environment's
	}
	if _, ok := nsObj.Labels[build.LabelHoldsEvidence]; ok {
		return true, nil
	}
	held, err := r.keptIn(ctx, ns, false)
	return !held.none(), err
}

// retainData keeps the data and the evidence of an environment being
// deleted (not fenced: a fenced one keeps everything, finalizer and all).
// With dataDeletionPolicy Retain, the volumes and snapshot contents of the
// primary namespace are Retain (they are from the start: dataKeeper; this
// makes sure), so that whatever deletes the namespace deletes no bytes; and
// when the namespace holds claims, snapshots or evidence pods it closes it
// (a deny-all policy and a pods: 0 quota of its own, without an owner),
// takes the environment's owner reference off it, so that the garbage
// collector leaves it and what is in it, and labels it
// careplane.io/retained=true. (A foreground delete has the garbage collector
// delete the namespace while the finalizer holds the environment: then only
// the volumes and contents stay, unless the namespace names evidence pods,
// whose deletion careplane-evidence-namespace-guard refuses.) With Delete,
// the data gets its policies back, to go with its claims and snapshots, but
// evidence never does: the evidence claims, snapshots and pods are kept as
// with Retain, and the namespace with them. Then it lets the environment go.
func (r *HealthEnvironmentReconciler) retainData(ctx context.Context, s *scope) error {
	env := s.env
	// The fence's finalizer too: a fenced environment deleted, then
	// released by a responder, lets go here, its namespace frozen.
	if !controllerutil.ContainsFinalizer(env, dataFinalizer) && !controllerutil.ContainsFinalizer(env, fenceFinalizer) {
		return nil
	}
	// A namespace still frozen keeps everything, whatever the policy.
	keep := env.Spec.DataDeletionPolicy != v1alpha1.DataDelete || s.record.Present()
	if err := r.keeper.syncData(ctx, r.Client, r.APIReader, env.Name, s.names.Primary, keep); err != nil {
		return err
	}
	if err := r.retainNamespace(ctx, env, s.names.Primary, keep); err != nil {
		return err
	}
	if err := r.writeFinalizer(ctx, env, dataFinalizer, false); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing the data finalizer from %s: %w", klog.KObj(env), err)
	}
	return nil
}

// retainNamespace keeps namespace ns of env, being deleted, when it holds
// what careplane keeps: its claims and snapshots (all of them with
// allData, the evidence ones without) and its evidence pods.
func (r *HealthEnvironmentReconciler) retainNamespace(ctx context.Context, env *v1alpha1.HealthEnvironment, ns string, allData bool) error {
	nsObj := &corev1.Namespace{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: ns}, nsObj); apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading namespace %s: %w", ns, err)
	}
	if !metav1.IsControlledBy(nsObj, env) || nsObj.DeletionTimestamp != nil {
		return nil // not this environment's, or going already
	}
	held, err := r.keptIn(ctx, ns, allData)
	if err != nil {
		return err
	}
	if held.none() {
		// Marks that outlived the pods they named (purged just before the
		// deletion) would have the evidence namespace guard refuse the
		// garbage collector's delete for good.
		return r.writeEvidenceMarks(ctx, env, nsObj, nil)
	}
	labels := build.Labels(env, build.SiteLabelPrimary)
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: RetainedPolicyName, Labels: labels},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}}}
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: RetainedQuotaName, Labels: labels},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")}}}
	for _, o := range []client.Object{deny, quota} {
		if err := r.Client.Create(ctx, o, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("closing the retained namespace %s: %w", ns, err)
		}
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"ownerReferences": nil, "labels": map[string]string{v1alpha1.LabelRetained: "true"},
		// The precondition: the namespace as read, still this environment's.
		"uid": nsObj.UID, "resourceVersion": nsObj.ResourceVersion,
	}})
	if err != nil {
		return err
	}
	if err := r.Client.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner)); err != nil {
		return fmt.Errorf("retaining namespace %s: %w", ns, err)
	}
	log.FromContext(ctx).Info("Retained the data of a deleted environment", "namespace", ns, "objects", held.data, "evidencePods", held.pods)
	why := "dataDeletionPolicy Retain"
	if !allData {
		why = "evidence, whatever dataDeletionPolicy says"
	}
	r.Recorder.Eventf(env, nil, corev1.EventTypeNormal, "DataRetained", "Delete",
		"Kept namespace %s with its %d claims and snapshots and %d evidence pods (%s); a responder purges them with kubectl careplane purge-evidence %s", ns, held.data, held.pods, why, env.Name)
	return nil
}

// kept counts what retainNamespace keeps of a namespace.
type kept struct{ data, pods int }

func (k kept) none() bool { return k.data == 0 && k.pods == 0 }

// keptIn counts the claims and VolumeSnapshots of ns (all of them with
// allData, those labelled careplane.io/evidence without), and its evidence
// pods.
func (r *HealthEnvironmentReconciler) keptIn(ctx context.Context, ns string, allData bool) (kept, error) {
	var k kept
	for _, gvk := range []schema.GroupVersionKind{
		corev1.SchemeGroupVersion.WithKind("PersistentVolumeClaimList"),
		snapshotv1.SchemeGroupVersion.WithKind("VolumeSnapshotList"),
		corev1.SchemeGroupVersion.WithKind("PodList"),
	} {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(gvk)
		opts := []client.ListOption{client.InNamespace(ns)}
		isPods := gvk.Kind == "PodList"
		if isPods || !allData {
			opts = append(opts, client.HasLabels{v1alpha1.LabelEvidence})
		}
		if err := r.APIReader.List(ctx, list, opts...); err != nil {
			if meta.IsNoMatchError(err) {
				continue
			}
			return kept{}, fmt.Errorf("listing %s in %s: %w", gvk.Kind, ns, err)
		}
		if isPods {
			k.pods += len(list.Items)
		} else {
			k.data += len(list.Items)
		}
	}
	return k, nil
}

// +kubebuilder:rbac:groups="",resources=persistentvolumes,verbs=get;patch
// +kubebuilder:rbac:groups=snapshot.storage.k8s.io,resources=volumesnapshotcontents,verbs=get;patch

// keepsData says the environment of s is to carry the data finalizer: it
// has data, or its primary namespace names evidence pods.
func (s *scope) keepsData() bool {
	return hasData(s.env) || s.holdsEvidence
}

// hasData says env has, or had, data careplane keeps or lets go as
// dataDeletionPolicy says: volumes, recovery points or evidence snapshots.
func hasData(env *v1alpha1.HealthEnvironment) bool {
	if env.Spec.Recovery != nil || len(env.Status.EvidenceSnapshots) > 0 {
		return true
	}
	for _, svc := range env.Spec.Services {
		if svc.Stateful() {
			return true
		}
	}
	return false
}

// dataKeeper sets the reclaim and deletion policies of an environment's
// primary data as package retention says: the PersistentVolumes of the
// claims and the VolumeSnapshotContents of the snapshots in its primary
// namespace (careplane's, as cached). done remembers what was set, by
// object, so that a steady environment costs no reads.
type dataKeeper struct {
	done sync.Map // "pv/<name>", "vsc/<name>" -> "keep <env>", "release" or retired
}

// retired marks a content given back its policy because its recovery point
// retired: it is never kept again, although its snapshot is still listed
// for a while (by the cache at once after the delete, and by the API server
// while the snapshot controller deletes the content). Kept again, the
// content outlived its snapshot, Retain, and the retired point's bytes
// stayed for good.
const retired = "retired"

// syncData keeps (keep) or releases the data of env in namespace ns; its
// evidence (claims and snapshots labelled careplane.io/evidence) it keeps
// whatever keep says, until a responder purges it.
func (k *dataKeeper) syncData(ctx context.Context, c client.Client, reader client.Reader, env, ns string, keep bool) error {
	var claims corev1.PersistentVolumeClaimList
	if err := c.List(ctx, &claims, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("listing the claims of %s: %w", ns, err)
	}
	var errs []error
	for _, pvc := range claims.Items {
		if pvc.Spec.VolumeName != "" {
			errs = append(errs, k.volume(ctx, c, reader, env, ns, pvc.Spec.VolumeName, keep || isEvidence(pvc.Labels)))
		}
	}
	var snaps snapshotv1.VolumeSnapshotList
	if err := c.List(ctx, &snaps, client.InNamespace(ns)); err != nil && !meta.IsNoMatchError(err) {
		return errors.Join(append(errs, fmt.Errorf("listing the snapshots of %s: %w", ns, err))...)
	}
	for _, vs := range snaps.Items {
		if vs.Status != nil && vs.Status.BoundVolumeSnapshotContentName != nil {
			errs = append(errs, k.content(ctx, c, reader, env, ns, *vs.Status.BoundVolumeSnapshotContentName, keep || isEvidence(vs.Labels)))
		}
	}
	return errors.Join(errs...)
}

// isEvidence says an object is labelled as a fence's evidence.
func isEvidence(labels map[string]string) bool {
	_, ok := labels[v1alpha1.LabelEvidence]
	return ok
}

func want(env string, keep bool) string {
	if keep {
		return "keep " + env
	}
	return "release"
}

func change(env string, o retention.Object, keep bool) (retention.Change, bool) {
	if keep {
		return retention.Keep(env, o)
	}
	return retention.Release(o)
}

// volume keeps or releases PersistentVolume name, bound to a claim of ns.
func (k *dataKeeper) volume(ctx context.Context, c client.Client, reader client.Reader, env, ns, name string, keep bool) error {
	key, w := "pv/"+name, want(env, keep)
	if v, ok := k.done.Load(key); ok && v == w {
		return nil
	}
	pv := &corev1.PersistentVolume{}
	if err := reader.Get(ctx, client.ObjectKey{Name: name}, pv); apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading PersistentVolume %s: %w", name, err)
	}
	if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != ns {
		return nil // not bound to a claim of ns (yet, or any more)
	}
	o := retention.Object{Labels: pv.Labels, Annotations: pv.Annotations, Policy: string(pv.Spec.PersistentVolumeReclaimPolicy)}
	if ch, ok := change(env, o, keep); ok {
		// No resourceVersion precondition: the storage's controllers update
		// volumes and contents all the time, and only careplane and a
		// responder change what this writes.
		patch, err := ch.MergePatch("persistentVolumeReclaimPolicy", "")
		if err != nil {
			return err
		}
		if err := c.Patch(ctx, pv, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner)); err != nil {
			return client.IgnoreNotFound(fmt.Errorf("setting the reclaim policy of PersistentVolume %s (claim %s/%s) to %s: %w", name, ns, pv.Spec.ClaimRef.Name, ch.Policy, err))
		}
		log.FromContext(ctx).V(1).Info("Set the reclaim policy of a volume", "volume", name, "claim", pv.Spec.ClaimRef.Name, "policy", ch.Policy)
	}
	k.done.Store(key, w)
	return nil
}

// content keeps or releases VolumeSnapshotContent name, bound to a
// snapshot of ns.
func (k *dataKeeper) content(ctx context.Context, c client.Client, reader client.Reader, env, ns, name string, keep bool) error {
	key, w := "vsc/"+name, want(env, keep)
	if v, ok := k.done.Load(key); ok && (v == w || keep && v == retired) {
		return nil
	}
	vsc := &snapshotv1.VolumeSnapshotContent{}
	if err := reader.Get(ctx, client.ObjectKey{Name: name}, vsc); apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading VolumeSnapshotContent %s: %w", name, err)
	}
	if vsc.Spec.VolumeSnapshotRef.Namespace != ns {
		return nil
	}
	o := retention.Object{Labels: vsc.Labels, Annotations: vsc.Annotations, Policy: string(vsc.Spec.DeletionPolicy)}
	if ch, ok := change(env, o, keep); ok {
		patch, err := ch.MergePatch("deletionPolicy", "")
		if err != nil {
			return err
		}
		if err := c.Patch(ctx, vsc, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner)); err != nil {
			return client.IgnoreNotFound(fmt.Errorf("setting the deletion policy of VolumeSnapshotContent %s (snapshot %s/%s) to %s: %w", name, ns, vsc.Spec.VolumeSnapshotRef.Name, ch.Policy, err))
		}
		log.FromContext(ctx).V(1).Info("Set the deletion policy of a snapshot's content", "content", name, "snapshot", vsc.Spec.VolumeSnapshotRef.Name, "policy", ch.Policy)
	}
	k.done.Store(key, w)
	return nil
}

// retireContent gives content name, bound to a snapshot of ns whose
// recovery point retires, its policy back, for good.
func (k *dataKeeper) retireContent(ctx context.Context, c client.Client, reader client.Reader, ns, name string) error {
	if err := k.content(ctx, c, reader, "", ns, name, false); err != nil {
		return err
	}
	k.done.Store("vsc/"+name, retired)
	return nil
}
