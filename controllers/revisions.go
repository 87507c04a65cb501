package controllers

import (
	"context"
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// maxRevisions is how many known-good revisions are kept per environment.
const maxRevisions = 10

// reconcileRevisions records the service templates as a known-good
// revision once the environment is Ready with templates not yet recorded,
// keeps the newest maxRevisions, and names the newest in the status.
func (r *HealthEnvironmentReconciler) reconcileRevisions(ctx context.Context, s *scope) error {
	var list appsv1.ControllerRevisionList
	// readOnly: the list's items are copies of the cached structs, and only
	// their own fields (Revision of a moved one) are changed below.
	if err := r.Client.List(ctx, &list, client.InNamespace(s.names.Front),
		client.MatchingLabels{v1alpha1.LabelEnvironment: s.env.Name}, readOnly); err != nil {
		return fmt.Errorf("listing revisions of %s: %w", klog.KObj(s.env), err)
	}
	revs := list.Items
	sort.Slice(revs, func(i, j int) bool { return revs[i].Revision < revs[j].Revision })

	// Ready is judged on what this reconcile observed; finish() has not run
	// yet, so decide from the gathered services directly.
	if s.allReady() {
		data, err := build.RevisionData(s.servicesFor(v1alpha1.SitePrimary))
		if err != nil {
			return fmt.Errorf("encoding revision of %s: %w", klog.KObj(s.env), err)
		}
		name := build.RevisionName(s.env, data)
		next := int64(1)
		if n := len(revs); n > 0 {
			next = revs[n-1].Revision + 1
		}
		idx := -1
		for i := range revs {
			if revs[i].Name == name {
				idx = i
			}
		}
		switch {
		case idx == -1:
			rev := build.ControllerRevision(s.env, data, next)
			if _, err := r.Applier.Apply(ctx, rev, ""); err != nil {
				return err
			}
			log.FromContext(ctx).Info("Recorded known-good revision", "revision", name, "number", next)
			revs = append(revs, appsv1.ControllerRevision{})
			revs[len(revs)-1].Name = name
			revs[len(revs)-1].Namespace = s.names.Front
			revs[len(revs)-1].Revision = next
		case idx != len(revs)-1:
			// The templates went back to an earlier known-good revision:
			// make it the newest again rather than recording a copy.
			rev := build.ControllerRevision(s.env, data, next)
			if _, err := r.Applier.Apply(ctx, rev, revs[idx].ResourceVersion); err != nil {
				return err
			}
			moved := revs[idx]
			moved.Revision = next
			revs = append(append(revs[:idx:idx], revs[idx+1:]...), moved)
		}
	}

	for len(revs) > maxRevisions {
		if err := r.deleteIfExists(ctx, &revs[0]); err != nil {
			return err
		}
		revs = revs[1:]
	}
	if n := len(revs); n > 0 {
		s.status.KnownGoodRevision = revs[n-1].Name
	}
	return nil
}

// allReady says every service of the spec has all its replicas ready on the
// primary, which is not fenced.
func (s *scope) allReady() bool {
	return !s.record.Present() && s.allReadyOf(s.env.Spec.Services)
}

// allReadyOf says every one of services was observed on the primary with all
// its replicas ready.
func (s *scope) allReadyOf(services []v1alpha1.Service) bool {
	if s.conflict != "" || s.applyFailed != nil || len(s.stalled) > 0 {
		return false
	}
	n := 0
	for _, svc := range s.services {
		if svc.Site != v1alpha1.SitePrimary {
			continue
		}
		n++
		if svc.ReadyReplicas < svc.Replicas {
			return false
		}
	}
	return n == len(services)
}
