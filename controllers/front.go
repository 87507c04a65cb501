package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/careplane/careplane/internal/fence"
)

// +kubebuilder:rbac:groups="",resources=endpoints,verbs=list;patch;delete

// ReasonForeignRoutesRemoved is the Warning event of a fence that removed
// routes careplane did not write from the front (sweepFront).
const ReasonForeignRoutesRemoved = "ForeignRoutesRemoved"

// sweepFront removes, from the front namespace of a fenced environment,
// every route careplane did not write (fence.ForeignRoutes, the rule the
// dry run shows too). The front guard refuses new ones; this removes those
// written before it was installed or while it was off, so that a fenced
// environment's callers go only where careplane sends them.
//
// Read from the API server (the cache holds careplane's objects only),
// whole: where each route went is evidence, logged and told in the event
// before it goes. A finalizer does not keep one: the finalizers are
// stripped first (a slice marked for deletion still routes). Endpoints go
// before slices, so the mirroring controller has nothing to copy back.
// Every write is made on the UID seen. An error leaves Fenced short of
// True, or holds a restore's lift, and the next pass looks again.
func (r *HealthEnvironmentReconciler) sweepFront(ctx context.Context, s *scope) error {
	front := s.names.Front
	nsObj := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: front}, nsObj, readOnly); err != nil {
		return client.IgnoreNotFound(err)
	}
	var eps corev1.EndpointsList //nolint:staticcheck // what the mirroring controller reads
	var sls discoveryv1.EndpointSliceList
	if err := inParallel([]kindList{{"Endpoints", &eps}, {"EndpointSlices", &sls}}, func(l kindList) error {
		if err := r.APIReader.List(ctx, l.list, client.InNamespace(front)); err != nil {
			return fmt.Errorf("listing %s in %s: %w", l.kind, front, err)
		}
		return nil
	}); err != nil {
		return err
	}
	routes := make([]fence.Route, 0, len(eps.Items)+len(sls.Items))
	objs := map[string]client.Object{}
	for i := range eps.Items {
		routes = append(routes, fence.EndpointsRoute(&eps.Items[i]))
		objs["Endpoints/"+eps.Items[i].Name] = &eps.Items[i]
	}
	for i := range sls.Items {
		routes = append(routes, fence.SliceRoute(&sls.Items[i]))
		objs["EndpointSlice/"+sls.Items[i].Name] = &sls.Items[i]
	}

	var removed []string
	var errs []error
	for _, a := range fence.ForeignRoutes(s.env, &nsObj.ObjectMeta, routes) {
		o := objs[a.Kind+"/"+a.Name]
		going := !o.GetDeletionTimestamp().IsZero()
		if err := r.removeRoute(ctx, o); err != nil {
			errs = append(errs, err)
			continue
		}
		if !going { // told once: not again for one already going
			removed = append(removed, a.Removed())
		}
	}
	if len(removed) > 0 {
		log.FromContext(ctx).Info("Removed routes careplane did not write from the front of a fenced environment", "namespace", front, "removed", removed)
		r.Recorder.Eventf(s.env, nil, corev1.EventTypeWarning, ReasonForeignRoutesRemoved, "Fence",
			"Removed routes careplane did not write from front namespace %s: %s", front, strings.Join(removed, ", "))
	}
	return errors.Join(errs...)
}

// removeRoute deletes o, a route careplane did not write, on its UID;
// finalizers first, which would otherwise keep it routing while it goes.
func (r *HealthEnvironmentReconciler) removeRoute(ctx context.Context, o client.Object) error {
	if len(o.GetFinalizers()) > 0 {
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": o.GetUID(), "finalizers": nil}})
		if err != nil {
			return err
		}
		if err := r.Client.Patch(ctx, o, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("removing the finalizers of %T %s: %w", o, klog.KObj(o), err)
		}
	}
	return r.deleteObserved(ctx, o, o.GetUID())
}
