package controllers

import (
	"context"
	"encoding/json"
	"fmt"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
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

// retainsData says deleting env keeps its data: dataDeletionPolicy is not
// Delete, and the environment has, or had, data: volumes, recovery points or
// evidence snapshots. (A tenant's claims in an environment without any of
// those are not careplane's to keep.)
func retainsData(env *v1alpha1.HealthEnvironment) bool {
	if env.Spec.DataDeletionPolicy == v1alpha1.DataDelete {
		return false
	}
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

// ensureDataFinalizer adds or removes the data finalizer as retainsData
// says.
func (r *HealthEnvironmentReconciler) ensureDataFinalizer(ctx context.Context, env *v1alpha1.HealthEnvironment) error {
	want := retainsData(env)
	if controllerutil.ContainsFinalizer(env, dataFinalizer) == want {
		return nil
	}
	patch := client.MergeFrom(env.DeepCopy())
	if want {
		controllerutil.AddFinalizer(env, dataFinalizer)
	} else {
		controllerutil.RemoveFinalizer(env, dataFinalizer)
	}
	if err := r.Client.Patch(ctx, env, patch, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("updating the data finalizer of %s: %w", klog.KObj(env), err)
	}
	return nil
}

// retainData keeps the data of an environment being deleted (not fenced:
// a fenced one keeps everything, finalizer and all): when the primary
// namespace holds claims or snapshots and dataDeletionPolicy is Retain, it
// closes the namespace (a deny-all policy and a pods: 0 quota of its own,
// without an owner), takes the environment's owner reference off it, so
// that the garbage collector leaves it and what is in it, and labels it
// careplane.io/retained=true. Then it lets the environment go.
func (r *HealthEnvironmentReconciler) retainData(ctx context.Context, s *scope) error {
	env := s.env
	if !controllerutil.ContainsFinalizer(env, dataFinalizer) {
		return nil
	}
	if env.Spec.DataDeletionPolicy != v1alpha1.DataDelete {
		if err := r.retainNamespace(ctx, env, s.names.Primary); err != nil {
			return err
		}
	}
	patch := client.MergeFrom(env.DeepCopy())
	controllerutil.RemoveFinalizer(env, dataFinalizer)
	if err := r.Client.Patch(ctx, env, patch, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing the data finalizer from %s: %w", klog.KObj(env), err)
	}
	return nil
}

func (r *HealthEnvironmentReconciler) retainNamespace(ctx context.Context, env *v1alpha1.HealthEnvironment, ns string) error {
	nsObj := &corev1.Namespace{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: ns}, nsObj); apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading namespace %s: %w", ns, err)
	}
	if !metav1.IsControlledBy(nsObj, env) || nsObj.DeletionTimestamp != nil {
		return nil // not this environment's, or going already
	}
	n, err := r.dataIn(ctx, ns)
	if err != nil || n == 0 {
		return err
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
	log.FromContext(ctx).Info("Retained the data of a deleted environment", "namespace", ns, "objects", n)
	r.Recorder.Eventf(env, nil, corev1.EventTypeNormal, "DataRetained", "Delete",
		"Kept namespace %s with its %d claims and snapshots (dataDeletionPolicy Retain); a responder purges them with kubectl careplane purge-evidence %s", ns, n, env.Name)
	return nil
}

// dataIn counts the claims and VolumeSnapshots of ns.
func (r *HealthEnvironmentReconciler) dataIn(ctx context.Context, ns string) (int, error) {
	n := 0
	for _, gvk := range []string{"PersistentVolumeClaimList", "VolumeSnapshotList"} {
		list := &metav1.PartialObjectMetadataList{}
		if gvk == "VolumeSnapshotList" {
			list.SetGroupVersionKind(snapshotv1.SchemeGroupVersion.WithKind(gvk))
		} else {
			list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind(gvk))
		}
		if err := r.APIReader.List(ctx, list, client.InNamespace(ns)); err != nil {
			if meta.IsNoMatchError(err) {
				continue
			}
			return 0, fmt.Errorf("listing %s in %s: %w", gvk, ns, err)
		}
		n += len(list.Items)
	}
	return n, nil
}
