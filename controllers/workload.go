package controllers

import (
	"context"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;patch

// workload is what readiness, the failover decision and the credentials
// revision read of a service's Deployment (a service without volumes) or
// StatefulSet (a service with volumes), as the cache holds it.
type workload struct {
	kind                string
	namespace, name     string
	generation          int64
	observedGeneration  int64
	wanted              int32 // spec.replicas
	replicas, updated   int32 // status
	ready               int32
	credentialsRevision string
	stuck               []string // why a rollout cannot progress
}

// current says the workload's status describes its current spec and every
// replica runs the current template.
func (w *workload) current() bool {
	return w.observedGeneration >= w.generation && w.updated == w.wanted && w.replicas == w.wanted
}

// readWorkload reads svc's workload in ns from the cache: its Deployment or
// its StatefulSet, as svc asks; nil when there is none.
func (r *HealthEnvironmentReconciler) readWorkload(ctx context.Context, ns string, svc v1alpha1.Service) (*workload, error) {
	return r.readWorkloadAs(ctx, ns, svc, svc.Name)
}

// readWorkloadAs is readWorkload of a StatefulSet named sts (see
// scope.statefulSetName).
func (r *HealthEnvironmentReconciler) readWorkloadAs(ctx context.Context, ns string, svc v1alpha1.Service, sts string) (*workload, error) {
	key := client.ObjectKey{Namespace: ns, Name: svc.Name}
	if svc.Stateful() {
		key.Name = sts
		ss := &appsv1.StatefulSet{}
		if err := r.Client.Get(ctx, key, ss, readOnly); apierrors.IsNotFound(err) {
			return nil, nil
		} else if err != nil {
			return nil, fmt.Errorf("reading statefulset %s: %w", key, err)
		}
		return statefulSetWorkload(ss), nil
	}
	dep := &appsv1.Deployment{}
	if err := r.Client.Get(ctx, key, dep, readOnly); apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading deployment %s: %w", key, err)
	}
	return deploymentWorkload(dep), nil
}

func deploymentWorkload(dep *appsv1.Deployment) *workload {
	w := &workload{kind: "Deployment", namespace: dep.Namespace, name: dep.Name, generation: dep.Generation,
		observedGeneration: dep.Status.ObservedGeneration, wanted: 1, replicas: dep.Status.Replicas,
		updated: dep.Status.UpdatedReplicas, ready: dep.Status.ReadyReplicas,
		credentialsRevision: dep.Spec.Template.Annotations[build.AnnotationCredentialsRevision]}
	if dep.Spec.Replicas != nil {
		w.wanted = *dep.Spec.Replicas
	}
	for _, c := range dep.Status.Conditions {
		if deploymentStuck(c) {
			w.stuck = append(w.stuck, c.Message)
		}
	}
	return w
}

func statefulSetWorkload(ss *appsv1.StatefulSet) *workload {
	w := &workload{kind: "StatefulSet", namespace: ss.Namespace, name: ss.Name, generation: ss.Generation,
		observedGeneration: ss.Status.ObservedGeneration, wanted: 1, replicas: ss.Status.Replicas,
		updated: ss.Status.UpdatedReplicas, ready: ss.Status.ReadyReplicas,
		credentialsRevision: ss.Spec.Template.Annotations[build.AnnotationCredentialsRevision]}
	if ss.Spec.Replicas != nil {
		w.wanted = *ss.Spec.Replicas
	}
	return w
}

// applyWorkload writes svc's workload in ns on site, for credentials
// revision rev, with replicas when not nil (a fence's zero) or the
// service's: a StatefulSet with its claims for a service with volumes, a
// Deployment otherwise. The other kind of the same name, left from before
// the service gained or lost its volumes, is deleted (its claims stay: the
// StatefulSet retains them).
func (r *HealthEnvironmentReconciler) applyWorkload(ctx context.Context, s *scope, site v1alpha1.Site, ns string, svc v1alpha1.Service, rev string, replicas *int32) error {
	key := client.ObjectKey{Namespace: ns, Name: svc.Name}
	if !svc.Stateful() {
		if err := r.deleteCached(ctx, client.ObjectKey{Namespace: ns, Name: s.statefulSetName(site, svc)}, &appsv1.StatefulSet{}); err != nil {
			return err
		}
		dep := build.Deployment(s.env, site, ns, svc, rev)
		if replicas != nil {
			dep.Spec.WithReplicas(*replicas)
		}
		return r.apply(ctx, dep, &appsv1.Deployment{})
	}
	if err := r.deleteCached(ctx, key, &appsv1.Deployment{}); err != nil {
		return err
	}
	key.Name = s.statefulSetName(site, svc)
	want := build.StatefulSetOfGeneration(s.env, site, ns, svc, rev, s.dataGenOf(site))
	if replicas != nil {
		want.Spec.WithReplicas(*replicas)
	}
	if err := r.growClaims(ctx, ns, svc, key.Name); err != nil {
		return err
	}
	cached := &appsv1.StatefulSet{}
	err := r.Client.Get(ctx, key, cached, readOnly)
	if err == nil && cached.DeletionTimestamp != nil {
		// Being replaced: garbage collection orphans its pods and claims,
		// then removes it; its deletion wakes the next reconcile.
		return nil
	}
	if err == nil && !sameClaimTemplates(cached, svc) {
		// A StatefulSet's claim templates cannot change: replace it,
		// leaving its pods and claims to the new one (orphan), which
		// adopts them. A grown volume was resized above. Deleted on the
		// precondition of the UID read live (the cache keeps none).
		live := &appsv1.StatefulSet{}
		if err := r.APIReader.Get(ctx, key, live); err != nil {
			return fmt.Errorf("reading statefulset %s: %w", key, err)
		}
		if err := r.Client.Delete(ctx, live, client.PropagationPolicy(metav1.DeletePropagationOrphan),
			client.Preconditions{UID: &live.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("replacing statefulset %s for its new claim templates: %w", key, err)
		}
		log.FromContext(ctx).Info("Replacing StatefulSet for its new volumes; pods and claims are kept", "statefulset", klog.KObj(live))
		r.Applier.Forget(want)
		return nil
	} else if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading statefulset %s: %w", key, err)
	}
	return r.apply(ctx, want, &appsv1.StatefulSet{})
}

// sameClaimTemplates says live's claim templates are svc's volumes: the
// same names and sizes (the cache keeps only these of them).
func sameClaimTemplates(live *appsv1.StatefulSet, svc v1alpha1.Service) bool {
	if len(live.Spec.VolumeClaimTemplates) != len(svc.Volumes) {
		return false
	}
	for i, v := range svc.Volumes {
		c := live.Spec.VolumeClaimTemplates[i]
		size := v.Size.Quantity()
		if c.Name != v.Name || c.Spec.Resources.Requests.Storage().Cmp(size) != 0 {
			return false
		}
	}
	return true
}

// growClaims asks for the new size of each existing claim of svc's
// StatefulSet sts in ns that
// is smaller than its volume now says (the schema refuses a smaller size).
// The StorageClass must allow expansion; if it does not, the API server
// refuses and the reconcile reports it.
func (r *HealthEnvironmentReconciler) growClaims(ctx context.Context, ns string, svc v1alpha1.Service, sts string) error {
	for _, v := range svc.Volumes {
		want := v.Size.Quantity()
		for i := range svc.ReplicaCount() {
			name := build.ClaimName(v.Name, sts, i)
			pvc := &corev1.PersistentVolumeClaim{}
			if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, pvc, readOnly); apierrors.IsNotFound(err) {
				continue
			} else if err != nil {
				return fmt.Errorf("reading claim %s/%s: %w", ns, name, err)
			}
			if pvc.Spec.Resources.Requests.Storage().Cmp(want) >= 0 || pvc.Status.Phase != corev1.ClaimBound {
				// Only a bound claim's request may change; one still
				// pending grows once bound (claims are watched).
				continue
			}
			// A merge patch of the request alone, on the version read:
			// the claim is the StatefulSet controller's object.
			patch, err := json.Marshal(map[string]any{
				"metadata": map[string]any{"resourceVersion": pvc.ResourceVersion},
				"spec":     map[string]any{"resources": map[string]any{"requests": map[string]any{"storage": want.String()}}},
			})
			if err != nil {
				return err
			}
			if err := r.Client.Patch(ctx, pvc.DeepCopy(), client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner)); err != nil {
				return fmt.Errorf("growing claim %s/%s to %s: %w", ns, name, want.String(), err)
			}
			log.FromContext(ctx).Info("Growing volume", "claim", klog.KRef(ns, name), "size", want.String())
		}
	}
	return nil
}

// stopStatefulSet scales svc's StatefulSet in the fenced namespace ns to
// zero, written whole on the template it has (so that nothing rolls). When its claim templates
// no longer match the spec (a volume grew and the replacement has not
// happened), a whole write would be refused: only replicas is patched then,
// for a fence must not wait on a resize. Its claims stay.
func (r *HealthEnvironmentReconciler) stopStatefulSet(ctx context.Context, s *scope, ns string, svc v1alpha1.Service) error {
	live := &appsv1.StatefulSet{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: s.statefulSetName(v1alpha1.SitePrimary, svc)}, live, readOnly)
	// On the template it has: a new one would roll it, for nothing.
	rev := s.record.ID
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("reading statefulset %s/%s: %w", ns, svc.Name, err)
	case !sameClaimTemplates(live, svc):
		patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":0}}`))
		if err := r.Client.Patch(ctx, live.DeepCopy(), patch, client.FieldOwner(fieldOwner)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("scaling statefulset %s/%s to 0: %w", ns, svc.Name, err)
		}
		return nil
	default:
		rev = live.Spec.Template.Annotations[build.AnnotationCredentialsRevision]
	}
	want := build.StatefulSetOfGeneration(s.env, v1alpha1.SitePrimary, ns, svc, rev, s.dataGen)
	want.Spec.WithReplicas(0)
	return r.apply(ctx, want, &appsv1.StatefulSet{})
}
