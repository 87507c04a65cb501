//go:build e2e && bench

package e2e

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// tracker records, from informers, the moment each state the benchmark
// times is first seen: an environment Ready or Fenced at its current
// generation, a deny policy created or deleted, a front switched to the
// standby, a Deployment available. Times are taken in the event handler,
// when the watch delivers the change, so every duration includes the
// watch's delivery, as a user watching would see it.
type tracker struct {
	mu   sync.Mutex
	cond *sync.Cond

	ready, fenced  map[string][]time.Time // environment -> transitions to true
	wasReady       map[string]bool
	wasFenced      map[string]bool
	denyAdded      map[string][]time.Time // namespace -> created
	denyDeleted    map[string][]time.Time
	standby        map[string][]time.Time // front namespace -> transitions to "only the standby"
	wasStandby     map[string]bool
	failoverWanted map[string]failoverSite
	slices         map[string]map[string]*discoveryv1.EndpointSlice
	available      map[string]time.Time // namespace/name of floor Deployments -> first available
	points         map[string]pointSeen // environment/recovery point -> as the status recorded it
}

// pointSeen is one recovery point as an environment's status recorded it:
// when it was taken, and when the status first said it was ready.
type pointSeen struct {
	takenAt, readySeen time.Time
}

type failoverSite struct {
	standbyNS string
	critical  []string
}

func newTracker() *tracker {
	tr := &tracker{
		ready: map[string][]time.Time{}, fenced: map[string][]time.Time{},
		wasReady: map[string]bool{}, wasFenced: map[string]bool{},
		denyAdded: map[string][]time.Time{}, denyDeleted: map[string][]time.Time{},
		standby: map[string][]time.Time{}, wasStandby: map[string]bool{}, failoverWanted: map[string]failoverSite{},
		slices: map[string]map[string]*discoveryv1.EndpointSlice{}, available: map[string]time.Time{},
		points: map[string]pointSeen{},
	}
	tr.cond = sync.NewCond(&tr.mu)
	return tr
}

// start runs the informers until ctx ends.
func (tr *tracker) start(ctx context.Context) error {
	owned, err := labels.NewRequirement(v1alpha1.LabelEnvironment, selection.Exists, nil)
	if err != nil {
		return err
	}
	replica, err := labels.NewRequirement(replicaPrefix+v1alpha1.LabelEnvironment, selection.Exists, nil)
	if err != nil {
		return err
	}
	c, err := cache.New(benchConfig(), cache.Options{Scheme: k8sClient.Scheme(), ByObject: map[client.Object]cache.ByObject{
		&networkingv1.NetworkPolicy{}: {Field: fields.OneTermEqualSelector("metadata.name", build.FencePolicyName)},
		&discoveryv1.EndpointSlice{}:  {Label: labels.NewSelector().Add(*owned)},
		&appsv1.Deployment{}:          {Label: labels.NewSelector().Add(*replica)},
		&v1alpha1.HealthEnvironment{}: {},
	}})
	if err != nil {
		return err
	}
	handlers := []struct {
		obj client.Object
		on  func(obj any, deleted bool)
	}{
		{&v1alpha1.HealthEnvironment{}, tr.onEnv},
		{&networkingv1.NetworkPolicy{}, tr.onPolicy},
		{&discoveryv1.EndpointSlice{}, tr.onSlice},
		{&appsv1.Deployment{}, tr.onDeployment},
	}
	for _, h := range handlers {
		inf, err := c.GetInformer(ctx, h.obj)
		if err != nil {
			return err
		}
		on := h.on
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { on(o, false) },
			UpdateFunc: func(_, o any) { on(o, false) },
			DeleteFunc: func(o any) {
				if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
					o = d.Obj
				}
				on(o, true)
			},
		}); err != nil {
			return err
		}
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return fmt.Errorf("the benchmark's informers did not sync")
	}
	return nil
}

func (tr *tracker) onEnv(o any, deleted bool) {
	env, ok := o.(*v1alpha1.HealthEnvironment)
	if !ok {
		return
	}
	now := time.Now()
	current := !deleted && env.Status.ObservedGeneration == env.Generation
	ready := current && meta.IsStatusConditionTrue(env.Status.Conditions, v1alpha1.ConditionReady)
	c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced)
	fenced := current && c != nil && c.Status == metav1.ConditionTrue && c.Reason == v1alpha1.ReasonFenceComplete
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if ready && !tr.wasReady[env.Name] {
		tr.ready[env.Name] = append(tr.ready[env.Name], now)
	}
	if fenced && !tr.wasFenced[env.Name] {
		tr.fenced[env.Name] = append(tr.fenced[env.Name], now)
	}
	tr.wasReady[env.Name], tr.wasFenced[env.Name] = ready, fenced
	if !deleted && env.Status.Recovery != nil {
		// Retention removes points from the status: remembered here, a
		// point counts even when it is gone by the end of a window.
		for _, p := range env.Status.Recovery.Points {
			key := env.Name + "/" + p.Name
			seen, ok := tr.points[key]
			if !ok {
				seen.takenAt = p.TakenAt.Time
			}
			if p.Ready && seen.readySeen.IsZero() {
				seen.readySeen = now
			}
			tr.points[key] = seen
		}
	}
	tr.cond.Broadcast()
}

func (tr *tracker) onPolicy(o any, deleted bool) {
	p, ok := o.(*networkingv1.NetworkPolicy)
	if !ok {
		return
	}
	now := time.Now()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	switch {
	case deleted:
		tr.denyDeleted[p.Namespace] = append(tr.denyDeleted[p.Namespace], now)
	case p.DeletionTimestamp == nil && len(tr.denyAdded[p.Namespace]) <= len(tr.denyDeleted[p.Namespace]):
		// First sight since it last went: created. Updates of a live
		// policy (a restore annotates it) are not creations.
		tr.denyAdded[p.Namespace] = append(tr.denyAdded[p.Namespace], now)
	}
	tr.cond.Broadcast()
}

func (tr *tracker) onSlice(o any, deleted bool) {
	es, ok := o.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	now := time.Now()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	m := tr.slices[es.Namespace]
	if m == nil {
		m = map[string]*discoveryv1.EndpointSlice{}
		tr.slices[es.Namespace] = m
	}
	if deleted {
		delete(m, es.Name)
	} else {
		m[es.Name] = es
	}
	want, ok := tr.failoverWanted[es.Namespace]
	if !ok {
		return
	}
	onStandby := true
	for _, svc := range want.critical {
		s := m[build.FrontEndpointSliceName(svc)]
		if s == nil || len(s.Endpoints) == 0 {
			onStandby = false
			break
		}
		for _, ep := range s.Endpoints {
			if ep.TargetRef == nil || ep.TargetRef.Namespace != want.standbyNS {
				onStandby = false
			}
		}
	}
	if onStandby && !tr.wasStandby[es.Namespace] {
		tr.standby[es.Namespace] = append(tr.standby[es.Namespace], now)
	}
	tr.wasStandby[es.Namespace] = onStandby
	tr.cond.Broadcast()
}

func (tr *tracker) onDeployment(o any, deleted bool) {
	d, ok := o.(*appsv1.Deployment)
	if !ok || deleted || d.Spec.Replicas == nil || *d.Spec.Replicas == 0 {
		return
	}
	if d.Status.ObservedGeneration != d.Generation || d.Status.AvailableReplicas != *d.Spec.Replicas {
		return
	}
	now := time.Now()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	key := d.Namespace + "/" + d.Name
	if _, seen := tr.available[key]; !seen {
		tr.available[key] = now
	}
	tr.cond.Broadcast()
}

// watchFailover asks the tracker to time when the front of env serves only
// from its standby.
func (tr *tracker) watchFailover(front, standbyNS string, critical []string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.failoverWanted[front] = failoverSite{standbyNS: standbyNS, critical: critical}
}

// pointsTaken returns how many recovery points of the environments whose
// names start with prefix were taken in [from, to), and for those the
// status has called ready so far, the time from takenAt to that status.
func (tr *tracker) pointsTaken(prefix string, from, to time.Time) (taken int, toReady []time.Duration) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for key, p := range tr.points {
		// takenAt has whole seconds.
		if !strings.HasPrefix(key, prefix) || p.takenAt.Before(from.Truncate(time.Second)) || !p.takenAt.Before(to.Truncate(time.Second)) {
			continue
		}
		taken++
		if !p.readySeen.IsZero() {
			toReady = append(toReady, p.readySeen.Sub(p.takenAt))
		}
	}
	return taken, toReady
}

// firstAfter returns the first time in ts not before t0.
func firstAfter(ts []time.Time, t0 time.Time) (time.Time, bool) {
	for _, t := range ts {
		if !t.Before(t0) {
			return t, true
		}
	}
	return time.Time{}, false
}

// waitAll waits until at returns a time for every key, and returns the
// durations since t0; keys missing at the timeout are reported.
func (tr *tracker) waitAll(timeout time.Duration, t0 time.Time, keys []string, at func(key string) (time.Time, bool)) ([]time.Duration, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		tr.mu.Lock()
		tr.cond.Broadcast()
		tr.mu.Unlock()
	})
	defer timer.Stop()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for {
		var missing []string
		out := make([]time.Duration, 0, len(keys))
		for _, k := range keys {
			t, ok := at(k)
			if !ok {
				missing = append(missing, k)
				continue
			}
			out = append(out, t.Sub(t0))
		}
		if len(missing) == 0 {
			return out, nil
		}
		if !time.Now().Before(deadline) {
			if len(missing) > 5 {
				missing = append(missing[:5], fmt.Sprintf("and %d more", len(missing)-5))
			}
			return out, fmt.Errorf("not within %s: %s", timeout, strings.Join(missing, ", "))
		}
		tr.cond.Wait()
	}
}

// Accessors for waitAll; the tracker's lock is held.
func (tr *tracker) readyAfter(t0 time.Time) func(string) (time.Time, bool) {
	return func(env string) (time.Time, bool) { return firstAfter(tr.ready[env], t0) }
}

func (tr *tracker) fencedAfter(t0 time.Time) func(string) (time.Time, bool) {
	return func(env string) (time.Time, bool) { return firstAfter(tr.fenced[env], t0) }
}

func (tr *tracker) denyAfter(t0 time.Time) func(string) (time.Time, bool) {
	return func(ns string) (time.Time, bool) { return firstAfter(tr.denyAdded[ns], t0) }
}

func (tr *tracker) liftedAfter(t0 time.Time) func(string) (time.Time, bool) {
	return func(ns string) (time.Time, bool) { return firstAfter(tr.denyDeleted[ns], t0) }
}

func (tr *tracker) standbyAfter(t0 time.Time) func(string) (time.Time, bool) {
	return func(front string) (time.Time, bool) { return firstAfter(tr.standby[front], t0) }
}

func (tr *tracker) availableAfter(t0 time.Time) func(string) (time.Time, bool) {
	return func(key string) (time.Time, bool) {
		t, ok := tr.available[key]
		return t, ok && !t.Before(t0)
	}
}

// summary is the distribution of one measurement.
type summary struct {
	n                  int
	min, med, p99, max time.Duration
}

// summarize returns min, median, 99th percentile (nearest rank) and max.
func summarize(d []time.Duration) summary {
	if len(d) == 0 {
		return summary{}
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(i, 0)]
	}
	return summary{n: len(s), min: s[0], med: rank(0.5), p99: rank(0.99), max: s[len(s)-1]}
}
