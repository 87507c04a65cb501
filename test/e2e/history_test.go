//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// fencePolicy is the deny-all NetworkPolicy a fence writes into the primary
// namespace.
const fencePolicy = "careplane-fence"

// listed is the type of the history entries that hold the state the
// history starts from.
const listed watch.EventType = "LISTED"

// historyEvent is one change the API server reported: its type, the object
// as it was after the change (as it was before, for a deletion), the
// resourceVersion of the change and when the watch delivered it.
type historyEvent struct {
	typ watch.EventType
	obj client.Object
	rv  uint64
	at  time.Time
}

// fenceReport is an environment's Fenced condition turning True with reason
// FenceComplete, as a watch delivered it.
type fenceReport struct {
	env        string
	generation int64
	rv         uint64
	at         time.Time
}

// fenceHistory records every change of a fleet of environments and of the
// NetworkPolicies of their primary namespaces, from one resourceVersion on,
// in one log. The two kinds come from two watches; the resourceVersions of
// one etcd order their changes against each other, which is what replay
// relies on.
type fenceHistory struct {
	envs map[string]bool // the fleet's environments by name
	// reports receives every Fenced=True report, for the test to check the
	// fence at that moment.
	reports chan fenceReport

	mu       sync.Mutex
	events   []historyEvent
	reported map[string]bool // the environment's last event said Fenced=True
	errs     []error
}

// recordFenceHistory starts recording the environments selected by sel,
// named names, and the NetworkPolicies of every namespace (kept when they
// are in one of the environments' primary namespaces). Both watches start
// at the resourceVersion of one list of the environments; the state at that
// version is the history's first entries. Recording stops when the test
// ends.
func recordFenceHistory(t *testing.T, sel labels.Selector, names []string) *fenceHistory {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &fenceHistory{envs: map[string]bool{}, reports: make(chan fenceReport, 4096), reported: map[string]bool{}}
	for _, n := range names {
		h.envs[n] = true
	}
	var envs v1alpha1.HealthEnvironmentList
	if err := k8sClient.List(ctx, &envs, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		t.Fatal(err)
	}
	start := envs.ResourceVersion
	var pols networkingv1.NetworkPolicyList
	if err := k8sClient.List(ctx, &pols, &client.ListOptions{Raw: &metav1.ListOptions{
		ResourceVersion: start, ResourceVersionMatch: metav1.ResourceVersionMatchExact}}); err != nil {
		t.Fatalf("listing network policies at resourceVersion %s: %v", start, err)
	}
	now := time.Now()
	for i := range envs.Items {
		h.add(watch.Event{Type: listed, Object: &envs.Items[i]}, now)
	}
	for i := range pols.Items {
		h.add(watch.Event{Type: listed, Object: &pols.Items[i]}, now)
	}

	watcher, err := client.NewWithWatch(cfg, client.Options{Scheme: k8sClient.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, w := range []struct {
		list client.ObjectList
		opts []client.ListOption
	}{
		{&v1alpha1.HealthEnvironmentList{}, []client.ListOption{client.MatchingLabelsSelector{Selector: sel}}},
		{&networkingv1.NetworkPolicyList{}, nil},
	} {
		// A RetryWatcher resumes from the last resourceVersion it delivered
		// if the API server closes the watch, so no change is missed.
		rw, err := watchtools.NewRetryWatcherWithContext(ctx, start, &cache.ListWatch{
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return watcher.Watch(ctx, w.list.DeepCopyObject().(client.ObjectList), append([]client.ListOption{&client.ListOptions{Raw: &o}}, w.opts...)...)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer rw.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case ev, ok := <-rw.ResultChan():
					if !ok {
						if ctx.Err() == nil {
							h.fail(fmt.Errorf("the watch of %T ended early", w.list))
						}
						return
					}
					h.add(ev, time.Now())
				}
			}
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return h
}

func (h *fenceHistory) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errs = append(h.errs, err)
}

// add appends one event to the log, and reports an environment whose
// Fenced condition has just turned True/FenceComplete.
func (h *fenceHistory) add(ev watch.Event, at time.Time) {
	if ev.Type == watch.Error {
		h.fail(fmt.Errorf("watch error: %v", ev.Object))
		return
	}
	obj, ok := ev.Object.(client.Object)
	if !ok {
		return
	}
	if p, ok := obj.(*networkingv1.NetworkPolicy); ok && !h.envs[strings.TrimSuffix(p.Namespace, "-primary")] {
		return
	}
	rv, err := strconv.ParseUint(obj.GetResourceVersion(), 10, 64)
	if err != nil {
		h.fail(fmt.Errorf("%s %T %s: resourceVersion %q: %w", ev.Type, obj, obj.GetName(), obj.GetResourceVersion(), err))
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, historyEvent{typ: ev.Type, obj: obj, rv: rv, at: at})
	env, ok := obj.(*v1alpha1.HealthEnvironment)
	if !ok {
		return
	}
	complete := ev.Type != watch.Deleted && fenceCompleteStatus(env)
	if complete && !h.reported[env.Name] && ev.Type != listed {
		h.reports <- fenceReport{env: env.Name, generation: env.Generation, rv: rv, at: at}
	}
	h.reported[env.Name] = complete
}

// fenceCompleteStatus says the environment's status reports the fence
// complete: Fenced=True with reason FenceComplete.
func fenceCompleteStatus(env *v1alpha1.HealthEnvironment) bool {
	c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced)
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == v1alpha1.ReasonFenceComplete
}

// err is why recording failed, if it did.
func (h *fenceHistory) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return errors.Join(h.errs...)
}

// log is the history so far in resourceVersion order.
func (h *fenceHistory) log() []historyEvent {
	h.mu.Lock()
	out := append([]historyEvent{}, h.events...)
	h.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].rv < out[j].rv })
	return out
}

// firstDenyAfter is when the watch delivered the first creation of a
// fleet environment's fence policy after t, if there was one.
func (h *fenceHistory) firstDenyAfter(t time.Time) (time.Time, bool) {
	for _, e := range h.log() {
		if e.typ == watch.Added && e.obj.GetName() == fencePolicy && !e.at.Before(t) {
			return e.at, true
		}
	}
	return time.Time{}, false
}

// fenceViolations replays the history in resourceVersion order and returns
// every moment at which the fleet's fences broke their promises, each with
// the environment's events that led to it:
//
//   - an environment reported Fenced=True (FenceComplete) while its deny
//     policy did not exist: checked at every event of the environment, and
//     at every deletion of the deny policy while the environment's mode was
//     Fenced;
//   - while an environment's mode was Fenced, a policy of its primary
//     namespace was deleted before the deny policy existed: fail-closed
//     means the fence goes up before anything else comes down.
func (h *fenceHistory) fenceViolations() []string {
	type state struct {
		mode     v1alpha1.IsolationMode
		complete bool
		deny     bool
		recent   []string // the last events, for the report
	}
	states := map[string]*state{}
	var out []string
	for _, e := range h.log() {
		env := e.obj.GetName()
		if e.obj.GetNamespace() != "" {
			env = strings.TrimSuffix(e.obj.GetNamespace(), "-primary")
		}
		s := states[env]
		if s == nil {
			s = &state{}
			states[env] = s
		}
		s.recent = append(s.recent, e.String())
		if len(s.recent) > 8 {
			s.recent = s.recent[1:]
		}
		var broken string
		switch o := e.obj.(type) {
		case *v1alpha1.HealthEnvironment:
			s.mode = o.Spec.Isolation.Mode
			s.complete = e.typ != watch.Deleted && fenceCompleteStatus(o)
			if s.complete && !s.deny {
				broken = fmt.Sprintf("%s reported Fenced=True (FenceComplete) while its deny policy %s did not exist", env, fencePolicy)
			}
		case *networkingv1.NetworkPolicy:
			switch {
			case o.Name == fencePolicy:
				s.deny = e.typ != watch.Deleted
				if !s.deny && s.complete && s.mode == v1alpha1.IsolationFenced {
					broken = fmt.Sprintf("the deny policy of %s was deleted while it reported Fenced=True (FenceComplete)", env)
				}
			case e.typ == watch.Deleted && s.mode == v1alpha1.IsolationFenced && !s.deny:
				broken = fmt.Sprintf("policy %s/%s was deleted while %s was being fenced and its deny policy did not exist: the namespace was open", o.Namespace, o.Name, env)
			}
		}
		if broken != "" {
			out = append(out, fmt.Sprintf("at resourceVersion %d: %s; its events up to then:\n\t%s", e.rv, broken, strings.Join(s.recent, "\n\t")))
		}
	}
	return out
}

// String describes the event on one line.
func (e historyEvent) String() string {
	what := fmt.Sprintf("%d %s %-8s %s %s", e.rv, e.at.Format("15:04:05.000"), e.typ, reflect.TypeOf(e.obj).Elem().Name(), klog.KObj(e.obj))
	if env, ok := e.obj.(*v1alpha1.HealthEnvironment); ok {
		fenced := "-"
		if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced); c != nil {
			fenced = string(c.Status) + "/" + c.Reason
		}
		what += fmt.Sprintf(" generation=%d mode=%s Fenced=%s", env.Generation, env.Spec.Isolation.Mode, fenced)
	}
	return what
}

// verify fails the test for every moment the history breaks the fences'
// promises, and if recording failed.
func (h *fenceHistory) verify(t *testing.T) {
	t.Helper()
	if err := h.err(); err != nil {
		t.Errorf("recording the history: %v", err)
	}
	violations := h.fenceViolations()
	for i, v := range violations {
		if i == 10 {
			t.Errorf("... and %d more", len(violations)-i)
			break
		}
		t.Error(v)
	}
	t.Logf("history: %s", h.counts())
}

// counts summarises the history for the test's log.
func (h *fenceHistory) counts() string {
	n := map[string]int{}
	for _, e := range h.log() {
		n[fmt.Sprintf("%s %s", reflect.TypeOf(e.obj).Elem().Name(), e.typ)]++
	}
	var parts []string
	for k, v := range n {
		parts = append(parts, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}
