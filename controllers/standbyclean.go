package controllers

import (
	"context"
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/ssa"
)

// +kubebuilder:rbac:groups="",resources=pods;services;replicationcontrollers,verbs=list;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=list;delete;patch
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;daemonsets;replicasets,verbs=list;delete
// +kubebuilder:rbac:groups=batch,resources=cronjobs;jobs,verbs=list;delete

// cleansStandby says a is of the standby's clean-up (fence.planStandbyClean):
// a delete of anything but a ServiceAccount, a strip, or finalizers taken
// off a Service being deleted.
func cleansStandby(a fence.Action) bool {
	return a.Verb == fence.VerbStrip || a.Verb == fence.VerbRelease || (a.Verb == fence.VerbDelete && a.Kind != "ServiceAccount")
}

// cleanStandbyOne makes one write of the standby's clean-up, on the
// precondition of the UID observed: an object replaced since is the next
// look's.
func (r *HealthEnvironmentReconciler) cleanStandbyOne(ctx context.Context, a fence.Action, d *done) error {
	gvk, ok := standbyKind(a.Kind)
	if !ok {
		return fmt.Errorf("the standby's clean-up does not know kind %s", a.Kind)
	}
	o := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: a.Namespace, Name: a.Name}}
	o.SetGroupVersionKind(gvk)
	what := a.Kind + " " + a.Name
	switch a.Verb {
	case fence.VerbDelete:
		if err := r.deleteObserved(ctx, o, a.UID); err != nil {
			return err
		}
		if a.Kind == "Service" {
			r.Applier.Forget(corev1ac.Service(a.Name, a.Namespace))
			// One held by a finalizer still routes: in the same pass, let go.
			if err := r.releaseService(ctx, o.ObjectMeta, a.UID); err != nil {
				return err
			}
		}
		what += " (deleted)"
	case fence.VerbRelease:
		if err := r.releaseService(ctx, o.ObjectMeta, a.UID); err != nil {
			return err
		}
		what += " (finalizers taken off)"
	case fence.VerbStrip:
		stripped, err := r.stripForeignFields(ctx, o, gvk, a.UID)
		if err != nil || !stripped {
			return err
		}
		what += " (fields of other writers removed)"
	default:
		return nil
	}
	d.add(func(d *done) { d.standby = append(d.standby, what) })
	return nil
}

// stripForeignFields has careplane take over every field of o's spec
// another writer wrote (ssa.TakeOver, fence.ForeignWriter), so that its next
// apply of o, in the same reconcile (reconcileSite), removes them, and
// forgets its last apply of o so that the apply is not skipped. It reports
// whether it wrote; an object replaced or changed since it was read is left
// to the next look.
func (r *HealthEnvironmentReconciler) stripForeignFields(ctx context.Context, o *metav1.PartialObjectMetadata, gvk schema.GroupVersionKind, uid types.UID) (bool, error) {
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	if o.UID != uid || o.DeletionTimestamp != nil {
		return false, nil
	}
	managed, ok, err := ssa.TakeOver(o.ManagedFields, gvk.GroupVersion().String(), fence.ForeignWriter(gvk.Kind))
	if err != nil || !ok {
		return false, err
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"managedFields": managed, "resourceVersion": o.ResourceVersion}})
	if err != nil {
		return false, err
	}
	if err := r.Client.Patch(ctx, o, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner)); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("taking over the fields other writers added to %s %s/%s: %w", gvk.Kind, o.Namespace, o.Name, err)
	}
	switch gvk.Kind {
	case "NetworkPolicy":
		r.Applier.Forget(networkingv1ac.NetworkPolicy(o.Name, o.Namespace))
	case "Service":
		r.Applier.Forget(corev1ac.Service(o.Name, o.Namespace))
	case "Deployment":
		r.Applier.Forget(appsv1ac.Deployment(o.Name, o.Namespace))
	case "StatefulSet":
		r.Applier.Forget(appsv1ac.StatefulSet(o.Name, o.Namespace))
	}
	return true, nil
}

// standbyKind is the group, version and kind of kind, one of
// fence.StandbyKinds.
func standbyKind(kind string) (schema.GroupVersionKind, bool) {
	for _, gvk := range fence.StandbyKinds {
		if gvk.Kind == kind {
			return gvk, true
		}
	}
	return schema.GroupVersionKind{}, false
}
