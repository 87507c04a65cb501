package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/ssa"
)

// The admin-tier fence policy: when the cluster serves SIG Network's
// ClusterNetworkPolicy v1alpha2 or AdminNetworkPolicy v1alpha1, a fence also
// writes a cluster-scoped deny for the fenced namespace, evaluated before any
// NetworkPolicy, so that no namespaced policy can widen the fence. Without
// them the fence is its NetworkPolicy alone, as before.
//
// Which kinds are served is asked of the manager's RESTMapper, and the
// answer kept for adminKindsFor. controller-runtime's mapper
// (apiutil.NewDynamicRESTMapper) is lazy: a kind it cannot map costs one
// discovery request (GET /apis/<group>/<version>) every time it is asked and
// is never remembered as missing. Asked on every fence pass and every
// restore, that was several requests per environment in a fleet fence;
// kept for adminKindsFor, it is two per adminKindsFor however many fences
// run, and CRDs installed after the operator started are found by every
// fence that starts that long after. A kind it has mapped
// stays mapped after its CRD is deleted: the write then fails with
// NotFound, which is taken to mean "not served" as well.

// adminKindsFor is how long the answer to which admin-tier kinds are served
// is kept: long against the passes of a fleet fence, short against
// installing the CRDs and then fencing.
const adminKindsFor = 2 * time.Second

// adminKindsMemory is the last answer of servedAdminFenceKinds.
type adminKindsMemory struct {
	mu    sync.Mutex
	at    time.Time
	kinds []build.AdminFenceKind
}

// servedAdminFenceKinds returns the admin-tier policy kinds the API server
// serves, most preferred first.
func (r *HealthEnvironmentReconciler) servedAdminFenceKinds(ctx context.Context) ([]build.AdminFenceKind, error) {
	if r.RESTMapper == nil {
		return nil, nil
	}
	now := r.Clock.Now()
	m := &r.adminKinds
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.at.IsZero() && now.Sub(m.at) < adminKindsFor && !now.Before(m.at) {
		return m.kinds, nil
	}
	var served []build.AdminFenceKind
	for _, k := range build.AdminFenceKinds {
		_, err := r.RESTMapper.RESTMapping(k.GVK.GroupKind(), k.GVK.Version)
		switch {
		case err == nil:
			served = append(served, k)
		case meta.IsNoMatchError(err):
			log.FromContext(ctx).V(1).Info("Admin-tier policy kind not served", "kind", k.GVK.String())
		default:
			return nil, fmt.Errorf("discovering %s: %w", k.GVK, err)
		}
	}
	m.at, m.kinds = now, served
	return served, nil
}

// applyAdminFence writes the admin-tier fence policy of the fenced primary
// namespace with the most preferred kind the cluster serves, and records it
// in the scope. Nothing is written when no kind is served.
func (r *HealthEnvironmentReconciler) applyAdminFence(ctx context.Context, s *scope) error {
	logger := log.FromContext(ctx)
	kinds, err := r.servedAdminFenceKinds(ctx)
	if err != nil {
		return err
	}
	for _, k := range kinds {
		pol := k.Build(s.env, s.names.Primary, true)
		err := r.applyUnstructured(ctx, pol)
		if err != nil && (apierrors.IsInternalError(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)) {
			// AdminNetworkPolicy CRDs of the standard channel before
			// network-policy-api v0.1.7 have no egress networks peer, and
			// server-side apply refuses a field the schema does not declare
			// (a 500, "field not declared in schema"). Deny pod egress at
			// least; the NetworkPolicy still denies the rest.
			if err2 := r.applyUnstructured(ctx, k.Build(s.env, s.names.Primary, false)); err2 == nil {
				logger.Info("Admin-tier fence policy written without its egress networks peer, which the installed CRD rejected",
					"kind", k.GVK.Kind, "name", pol.GetName(), "error", err.Error())
				err = nil
			}
		}
		switch {
		case err == nil:
			s.adminFence = fmt.Sprintf("%s %s", k.GVK.Kind, pol.GetName())
			logger.V(1).Info("Admin-tier fence policy applied", "kind", k.GVK.Kind, "name", pol.GetName())
			return nil
		case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
			// The CRD was deleted after the RESTMapper mapped it.
			logger.V(1).Info("Admin-tier policy kind no longer served", "kind", k.GVK.String())
		default:
			return fmt.Errorf("writing the admin-tier fence policy %s %s: %w", k.GVK.Kind, pol.GetName(), err)
		}
	}
	logger.V(1).Info("No admin-tier policy API is served; the fence is its NetworkPolicy alone")
	return nil
}

// deleteAdminFence deletes the admin-tier fence policy of the environment in
// every kind served, any of which it may have been written as (the served
// kinds can change during a fence).
func (r *HealthEnvironmentReconciler) deleteAdminFence(ctx context.Context, s *scope) error {
	// A kind not served now has no policy to delete: its CRD, and every
	// object of it, is gone.
	kinds, err := r.servedAdminFenceKinds(ctx)
	if err != nil {
		return err
	}
	for _, k := range kinds {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(k.GVK)
		u.SetName(build.AdminFencePolicyName(s.env))
		err := r.Client.Delete(ctx, u)
		if err != nil && !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err) {
			return fmt.Errorf("deleting the admin-tier fence policy %s %s: %w", k.GVK.Kind, u.GetName(), err)
		}
	}
	return nil
}

// applyUnstructured writes u with server-side apply as careplane's field
// manager. ssa.Applier takes typed apply configurations only, and these
// objects are not cached, so there is no resourceVersion to skip a no-op by.
func (r *HealthEnvironmentReconciler) applyUnstructured(ctx context.Context, u *unstructured.Unstructured) error {
	return r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(ssa.FieldOwner), client.ForceOwnership)
}
