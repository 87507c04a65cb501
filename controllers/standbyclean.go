package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/ssa"
)

// +kubebuilder:rbac:groups="",resources=pods;services;replicationcontrollers,verbs=list;delete;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=update
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=list;delete;update;patch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses,verbs=list;delete;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=list;delete;patch
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets,verbs=list;delete;update;patch
// +kubebuilder:rbac:groups=apps,resources=daemonsets;replicasets,verbs=list;delete;patch
// +kubebuilder:rbac:groups=batch,resources=cronjobs;jobs,verbs=list;delete;patch
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=rolebindings;roles,verbs=list;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=rolebindings,verbs=get;patch
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles,verbs=get

// readStandby reads, from the API server, every object of fence.StandbyKinds
// in the standby namespace ns, for its clean-up: metadata, and whole the
// workloads and pods whose templates it compares (fence.ReadStandby).
func (r *HealthEnvironmentReconciler) readStandby(ctx context.Context, s *scope, ns string) ([]fence.StandbyObject, error) {
	lists := fence.NewStandbyLists()
	if err := inParallel(fence.StandbyReadKinds, func(gvk schema.GroupVersionKind) error {
		if err := r.APIReader.List(ctx, lists.For(gvk.Kind), client.InNamespace(ns)); err != nil {
			return fmt.Errorf("listing %s in %s: %w", gvk.Kind, ns, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	// One it may not read counts as granting: its bindings go.
	forbidden, err := lists.ReadClusterRoles(func(name string, into *rbacv1.ClusterRole) error {
		return r.APIReader.Get(ctx, client.ObjectKey{Name: name}, into)
	})
	for _, ferr := range forbidden {
		log.FromContext(ctx).Error(ferr, "A ClusterRole bound in the standby may not be read: its bindings there are deleted", "namespace", ns)
	}
	if err != nil {
		return nil, fmt.Errorf("the roles bound in %s: %w", ns, err)
	}
	began, _ := s.record.Began()
	return lists.Read(began), nil
}

// cleansStandby says a is of the standby's clean-up: careplane's object
// written whole, or anything deleted (but a ServiceAccount, the rotation's)
// or let go of its finalizers.
func cleansStandby(a fence.Action) bool {
	return a.Verb == fence.VerbWriteWhole || a.Verb == fence.VerbRelease || (a.Verb == fence.VerbDelete && a.Kind != "ServiceAccount")
}

// cleanStandbyOne makes one write of the standby's clean-up, on the
// precondition of the UID observed: an object replaced since is the next
// look's.
func (r *HealthEnvironmentReconciler) cleanStandbyOne(ctx context.Context, s *scope, a fence.Action, d *done) error {
	gvk, ok := standbyKind(a.Kind)
	if !ok {
		return fmt.Errorf("the standby's clean-up does not know kind %s", a.Kind)
	}
	o := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: a.Namespace, Name: a.Name}}
	o.SetGroupVersionKind(gvk)
	what := a.Kind + " " + a.Name
	switch a.Verb {
	case fence.VerbDelete:
		var now []client.DeleteOption
		if a.Immediate {
			now = append(now, client.GracePeriodSeconds(0))
		}
		if err := r.deleteObserved(ctx, o, a.UID, now...); err != nil {
			return err
		}
		what += " (deleted)"
	case fence.VerbRelease:
		if err := r.release(ctx, o, a.UID); err != nil {
			return err
		}
		what += " (finalizers taken off)"
	case fence.VerbWriteWhole:
		written, err := r.writeStandbyWhole(ctx, s, gvk, a, d)
		if err != nil || !written {
			return err
		}
		what += " (written whole)"
	default:
		return nil
	}
	d.add(func(d *done) { d.standby = append(d.standby, what) })
	return nil
}

// release takes the finalizers off o, of UID uid, when it is being deleted
// and held by some: a tenant's, or one whose controller the freeze keeps
// out (a load balancer's: its cloud resources are then left to the
// platform team).
func (r *HealthEnvironmentReconciler) release(ctx context.Context, o *metav1.PartialObjectMetadata, uid types.UID) error {
	live := o.DeepCopy()
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(o), live); apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading %s %s/%s: %w", o.Kind, o.Namespace, o.Name, err)
	}
	if live.UID != uid || live.DeletionTimestamp == nil || len(live.Finalizers) == 0 {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": nil, "uid": uid}})
	if err != nil {
		return err
	}
	err = r.Client.Patch(ctx, o.DeepCopy(), client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner))
	if client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
		return fmt.Errorf("taking the finalizers %v off %s %s/%s, being deleted: %w", live.Finalizers, o.Kind, o.Namespace, o.Name, err)
	}
	return nil
}

// writeStandbyWhole replaces careplane's object of a.Kind and a.Name in the
// standby with what careplane's reconcile writes there (an update of every
// field, not an apply, which would leave another writer's), and keeps in d
// what it wrote, for recordStandbyWritten. The replicas, and what the API server allocated or
// will not change, are kept as they are; the managedFields keep careplane's
// apply and the subresources' entries only, so that no writer the tenant
// named (any name will do) owns anything. Its next apply, in the same
// reconcile, is not skipped. It reports whether it wrote: an object
// replaced or changed since it was read is the next look's.
func (r *HealthEnvironmentReconciler) writeStandbyWhole(ctx context.Context, s *scope, gvk schema.GroupVersionKind, a fence.Action, d *done) (bool, error) {
	desired, live, err := r.standbyDesired(ctx, s, a)
	if err != nil || desired == nil {
		return false, err
	}
	key := client.ObjectKey{Namespace: a.Namespace, Name: a.Name}
	if err := r.APIReader.Get(ctx, key, live); apierrors.IsNotFound(err) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("reading %s %s: %w", gvk.Kind, key, err)
	}
	if live.GetUID() != a.UID || live.GetDeletionTimestamp() != nil {
		return false, nil
	}
	// From the desired object alone, then what must stay as live has it.
	fresh := newOfKind(gvk.Kind)
	if err := ssa.Typed(desired, fresh); err != nil {
		return false, err
	}
	keepFromLive(fresh, live)
	fresh.SetUID(live.GetUID())
	fresh.SetResourceVersion(live.GetResourceVersion())
	var managed []metav1.ManagedFieldsEntry
	for _, m := range live.GetManagedFields() {
		if (m.Manager == ssa.FieldOwner && m.Operation == metav1.ManagedFieldsOperationApply && m.Subresource == "") || m.Subresource != "" {
			managed = append(managed, m)
		}
	}
	if len(managed) == 0 {
		managed = []metav1.ManagedFieldsEntry{{}} // none: cleared (an empty list would keep them)
	}
	fresh.SetManagedFields(managed)
	if err := r.Client.Update(ctx, fresh, client.FieldOwner(fieldOwner)); err != nil {
		switch {
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			return false, nil
		case apierrors.IsInvalid(err):
			// What the API server will not change from live (a selector
			// the tenant chose when it made the object anew) is not
			// careplane's: the object goes, and careplane's reconcile
			// writes its own.
			log.FromContext(ctx).Info("careplane's object in the standby cannot be written whole; deleting it to write it anew", "kind", gvk.Kind, "object", key, "error", err.Error())
			r.Applier.Forget(desired)
			return true, r.deleteObserved(ctx, live, live.GetUID())
		}
		return false, fmt.Errorf("writing %s %s whole: %w", gvk.Kind, key, err)
	}
	r.Applier.Forget(desired)
	// What was written, as the API server answered: recorded on the
	// standby Namespace (recordStandbyWritten).
	d.add(func(d *done) {
		if d.written == nil {
			d.written = map[string]string{}
		}
		d.written[fence.WrittenKey(gvk.Kind, a.Name)] = fence.WrittenValue(fresh.GetUID(), fence.SpecHashOf(fresh))
	})
	return true, nil
}

// recordStandbyWritten records on the standby Namespace what this look
// wrote whole under fence id (fence.AnnotationStandbyWritten), beside what
// earlier looks of the same fence did.
func (r *HealthEnvironmentReconciler) recordStandbyWritten(ctx context.Context, s *scope, d *done, id string) error {
	d.mu.Lock()
	written := d.written
	d.written = nil
	d.mu.Unlock()
	if len(written) == 0 {
		return nil
	}
	rec := fence.StandbyWritten{Fence: id, Objects: map[string]string{}}
	if s.standbyWritten.Fence == id {
		maps.Copy(rec.Objects, s.standbyWritten.Objects)
	}
	maps.Copy(rec.Objects, written)
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	patch, err := nsMarks{annotations: map[string]any{fence.AnnotationStandbyWritten: string(raw)}}.patch("")
	if err != nil {
		return err
	}
	if err := r.Client.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.names.Standby}},
		client.RawPatch(types.MergePatchType, patch), client.FieldOwner(fieldOwner)); err != nil {
		return fmt.Errorf("recording what was written whole in standby namespace %s: %w", s.names.Standby, err)
	}
	s.standbyWritten = rec
	return nil
}

// standbyDesired is what careplane's reconcile of the standby writes for
// a's object (reconcileSite: the policies, Services and workloads of the
// services the standby runs), and an empty object of its kind; nil when
// careplane writes no such object there.
func (r *HealthEnvironmentReconciler) standbyDesired(ctx context.Context, s *scope, a fence.Action) (ssa.Object, client.Object, error) {
	ns := a.Namespace
	if a.Kind == "NetworkPolicy" {
		for _, p := range build.NetworkPoliciesFor(s.env, v1alpha1.SiteStandby, ns, s.standbyServices) {
			if *p.Name == a.Name {
				return p, &networkingv1.NetworkPolicy{}, nil
			}
		}
		return nil, nil, nil
	}
	for _, svc := range s.standbyServices {
		if svc.Name != a.Name {
			continue
		}
		switch {
		case a.Kind == "Service":
			return build.Service(s.env, ns, svc), &corev1.Service{}, nil
		case a.Kind == "Deployment" && !svc.Stateful():
			w, err := r.readWorkload(ctx, ns, svc)
			if err != nil {
				return nil, nil, err
			}
			return build.Deployment(s.env, v1alpha1.SiteStandby, ns, svc, credentialsRevision(w)), &appsv1.Deployment{}, nil
		case a.Kind == "StatefulSet" && svc.Stateful():
			w, err := r.readWorkload(ctx, ns, svc)
			if err != nil {
				return nil, nil, err
			}
			return build.StatefulSetOfGeneration(s.env, v1alpha1.SiteStandby, ns, svc, credentialsRevision(w), s.dataGenOf(v1alpha1.SiteStandby)),
				&appsv1.StatefulSet{}, nil
		}
	}
	return nil, nil, nil
}

// newOfKind is an empty object of one of the kinds writeStandbyWhole
// writes.
func newOfKind(kind string) client.Object {
	switch kind {
	case "NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "Service":
		return &corev1.Service{}
	case "Deployment":
		return &appsv1.Deployment{}
	default:
		return &appsv1.StatefulSet{}
	}
}

// keepFromLive copies into want, careplane's object to be written whole,
// what stays as live has it: the replicas (its reconcile sets them, a
// Cold standby's held at zero included), what the API server allocated
// (a Service's cluster IPs), and a StatefulSet's claim templates. Any other
// field the API server will not change, as the tenant set it, makes the
// update invalid, and the object is deleted instead (writeStandbyWhole).
func keepFromLive(want, live client.Object) {
	switch w := want.(type) {
	case *corev1.Service:
		l := live.(*corev1.Service)
		w.Spec.ClusterIP, w.Spec.ClusterIPs = l.Spec.ClusterIP, l.Spec.ClusterIPs
		w.Spec.IPFamilies, w.Spec.IPFamilyPolicy = l.Spec.IPFamilies, l.Spec.IPFamilyPolicy
	case *appsv1.Deployment:
		w.Spec.Replicas = live.(*appsv1.Deployment).Spec.Replicas
	case *appsv1.StatefulSet:
		// Its claim templates cannot change: careplane replaces the
		// StatefulSet when its volumes do (applyWorkload).
		l := live.(*appsv1.StatefulSet)
		w.Spec.Replicas, w.Spec.VolumeClaimTemplates = l.Spec.Replicas, l.Spec.VolumeClaimTemplates
	}
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
