package controllers

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/careplane/careplane/internal/build"
)

// +kubebuilder:rbac:groups="",resources=endpoints,verbs=list;delete

// sweepFront removes, from the front namespace of a fenced environment,
// every route careplane did not write: each EndpointSlice that is not the
// slice careplane writes for one of the spec's services (by name, and
// controlled by the environment), and every Endpoints object (careplane
// writes none; the endpointslice-mirroring controller copies one into a
// slice). The front Services have no selector, so any such slice decides
// where their callers go. The front guard refuses new ones; this removes
// those written before it was installed or while it was off, so that a
// fenced environment's callers go only where careplane sends them. Read
// from the API server as metadata: the cache holds careplane's objects
// only. Deletes are made on the UID seen.
func (r *HealthEnvironmentReconciler) sweepFront(ctx context.Context, s *scope) error {
	front := s.names.Front
	slices, endpoints := &metav1.PartialObjectMetadataList{}, &metav1.PartialObjectMetadataList{}
	slices.SetGroupVersionKind(discoveryv1.SchemeGroupVersion.WithKind("EndpointSliceList"))
	endpoints.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("EndpointsList"))
	if err := inParallel([]kindList{{"EndpointSlices", slices}, {"Endpoints", endpoints}}, func(l kindList) error {
		if err := r.APIReader.List(ctx, l.list, client.InNamespace(front)); err != nil {
			return fmt.Errorf("listing %s in %s: %w", l.kind, front, err)
		}
		return nil
	}); err != nil {
		return err
	}
	ours := map[string]bool{}
	for _, svc := range s.env.Spec.Services {
		ours[build.FrontEndpointSliceName(svc.Name)] = true
	}
	var removed []string
	for i := range slices.Items {
		m := &slices.Items[i]
		if ours[m.Name] && metav1.IsControlledBy(m, s.env) {
			continue
		}
		if err := r.deleteObserved(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: front, Name: m.Name}}, m.UID); err != nil {
			return err
		}
		removed = append(removed, "EndpointSlice "+m.Name)
	}
	for i := range endpoints.Items {
		m := &endpoints.Items[i]
		if err := r.deleteObserved(ctx, &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: front, Name: m.Name}}, m.UID); err != nil { //nolint:staticcheck // what the mirroring controller reads
			return err
		}
		removed = append(removed, "Endpoints "+m.Name)
	}
	if len(removed) > 0 {
		log.FromContext(ctx).Info("Removed routes careplane did not write from the front of a fenced environment", "namespace", front, "removed", removed)
		r.Recorder.Eventf(s.env, nil, corev1.EventTypeWarning, "ForeignRoutesRemoved", "Fence",
			"Removed routes careplane did not write from front namespace %s: %s", front, strings.Join(removed, ", "))
	}
	return nil
}
