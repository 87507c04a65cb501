package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// The failover decision holds traffic where it is (the anti-flap hold, a
// standby kept while it is not Ready), so it must know where traffic goes
// now. That is what the front EndpointSlices route to, never what the
// status says: the status is written last, and a write lost to a conflict
// after the front moved (or a status rewritten by anyone with status patch)
// would otherwise move traffic straight back, for the whole hold.
//
// frontMemory is where this process last pointed each environment's front,
// and since when. It answers ahead of the cache, which may not hold the
// front's move yet. Only the leader writes the front, so a new leader
// starts empty and reads the front from a freshly synced cache.
type frontMemory struct {
	mu sync.Mutex
	m  map[string]frontState // by environment name
}

type frontState struct {
	uid   types.UID // the environment's: a namesake recreated starts afresh
	site  v1alpha1.Site
	since time.Time
}

// remember records that the front of env points at site ("" when no site
// serves) since the given time, which moves only when the site changes.
func (f *frontMemory) remember(env *v1alpha1.HealthEnvironment, site v1alpha1.Site, since time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]frontState{}
	}
	if old, ok := f.m[env.Name]; ok && old.uid == env.UID && old.site == site {
		return
	}
	// To the microsecond, as status.failover.switchedAt holds it: a
	// finer time read back as the status would differ from it on every
	// reconcile, and rewrite it.
	f.m[env.Name] = frontState{uid: env.UID, site: site, since: since.Truncate(time.Microsecond)}
}

func (f *frontMemory) recall(env *v1alpha1.HealthEnvironment) (frontState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.m[env.Name]
	return st, ok && st.uid == env.UID
}

func (f *frontMemory) forget(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, name)
}

// trafficNow is the site traffic goes to now ("" when none serves) and
// since when (zero when unknown): as this process last pointed the front;
// else as the cached front EndpointSlices route, when they agree; else as
// the status records it (an environment whose front was never written).
func (r *HealthEnvironmentReconciler) trafficNow(ctx context.Context, s *scope) (v1alpha1.Site, time.Time, error) {
	if st, ok := r.front.recall(s.env); ok {
		return st.site, st.since, nil
	}
	recorded, since := s.env.Status.ActiveSite, time.Time{}
	if f := s.env.Status.Failover; f != nil && f.SwitchedAt != nil {
		since = f.SwitchedAt.Time
	}
	var slices discoveryv1.EndpointSliceList
	if err := r.Client.List(ctx, &slices, client.InNamespace(s.names.Front),
		client.MatchingLabels{v1alpha1.LabelEnvironment: s.env.Name}, readOnly); err != nil {
		return "", time.Time{}, fmt.Errorf("listing in %s: %w", s.names.Front, err)
	}
	sites := map[string]bool{}
	for i := range slices.Items {
		sites[slices.Items[i].Labels[build.LabelActiveSite]] = true
	}
	if len(sites) != 1 {
		return recorded, since, nil // no front yet, or one half moved
	}
	var routed v1alpha1.Site
	for label := range sites {
		switch label {
		case build.SiteLabelPrimary:
			routed = v1alpha1.SitePrimary
		case build.SiteLabelStandby:
			routed = v1alpha1.SiteStandby
		}
	}
	if routed != recorded {
		// The status missed the move; when it happened is unknown, so the
		// hold counts from now: the longer wait, never a quicker flap.
		return routed, s.now, nil
	}
	return routed, since, nil
}
