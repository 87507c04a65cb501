//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

const (
	// fleetSize is how many environments are fenced together.
	fleetSize = 20
	// fleetKills is how many times the operator is killed during fleet
	// fences, spread over fleetFences fences with a restore between them.
	fleetKills  = 10
	fleetFences = 2
	// fleetSeedEnv names the variable that fixes the seed of the kill
	// moments, to replay a run's schedule.
	fleetSeedEnv = "FLEET_KILL_SEED"
)

// slowFleetOperator are the operator's flags while it is killed: a low
// client rate limit stretches a fence of the whole fleet over tens of
// seconds, so that kills land in the middle of it.
var slowFleetOperator = []string{"--kube-api-qps=10", "--kube-api-burst=1"}

// TestFleetFenceSurvivesKills fences 20 environments at once and kills the
// operator (SIGKILL) at random moments of the fence, ten times over two
// fleet fences, restarting it after each kill. Every environment ends fully
// fenced, and none ever reports Fenced=True while its deny policy is
// missing or before its fence steps are done.
//
// A first fleet fence without kills measures how long a fleet fence takes
// at the slowed operator's pace; the kills are then spread over that time:
// ten strata, the first before the first deny policy appears and the others
// splitting the rest, one kill at a random moment of each, the strata dealt
// to the two fences in turn. A kill's moment counts the operator's working
// time on the fence, which leaves out each restart, so late strata land
// late in the fence however long the restarts take. The operator stays slow
// while a fence is being killed and comes back at full speed after the
// fence's last kill. A watch of the environments and of the NetworkPolicies
// records every change in etcd's order, and the whole history is replayed
// against the fence's promises at the end.
func TestFleetFenceSurvivesKills(t *testing.T) {
	began := time.Now()
	rng := rand.New(rand.NewPCG(fleetSeed(t), 0))
	run := uniqueName("fleet")
	f := &fleet{responder: responderClient(t)}
	for i := range fleetSize {
		name := fmt.Sprintf("%s-%02d", run, i)
		f.names = append(f.names, name)
		applyFenceEnv(t, name)
	}
	kubectl(t, append(append([]string{"label", "henv"}, f.names...), "careplane-e2e-fleet="+run)...)
	for _, n := range f.names {
		waitReady(t, n, 3*time.Minute)
	}
	t.Logf("%d environments Ready after %s", fleetSize, since(began))
	// Cleanups run last first: the operator is back to its defaults before
	// the environments are deleted.
	t.Cleanup(func() { theOperator.restart(t) })
	f.history = recordFenceHistory(t, labels.SelectorFromSet(labels.Set{"careplane-e2e-fleet": run}), f.names)
	// The history is judged however the test ends.
	t.Cleanup(func() { f.history.verify(t) })

	// The fence without kills, which times the others.
	f.startSlow(t)
	f.fence(t, "INC-FLEET-0")
	f.awaitFenced(t, 3*time.Minute)
	took := f.lastReport.Sub(f.requested)
	firstDeny, ok := f.history.firstDenyAfter(f.requested)
	if !ok {
		t.Fatal("the watch saw no deny policy created during the fleet fence")
	}
	deny := firstDeny.Sub(f.requested)
	t.Logf("fleet fence without kills: first deny policy after %s, every environment Fenced=True after %s", round(deny), round(took))
	f.verifyFenced(t)
	theOperator.restart(t)
	f.restore(t)

	var results []killResult
	schedule := killSchedule(rng, fleetKills, fleetFences, deny, took)
	for i, kills := range schedule {
		f.startSlow(t)
		f.fence(t, fmt.Sprintf("INC-FLEET-%d", i+1))
		// The kill moments count the time the operator has worked on
		// the fence: from the request, less the time from each kill
		// until the restarted operator works again.
		worked, resumed := time.Duration(0), f.requested
		for j, k := range kills {
			f.follow(t, resumed.Add(k.at-worked), false)
			worked += time.Since(resumed)
			r := killResult{worked: worked, at: time.Since(f.requested)}
			theOperator.kill()
			f.inspectKilled(t, &r)
			results = append(results, r)
			t.Logf("kill %d/%d (fence %d): planned after %s of work on the fence (stratum %s-%s), killed after %s (%s since the request): %s",
				len(results), fleetKills, i+1, round(k.at), round(k.lo), round(k.hi), round(r.worked), round(r.at), r)
			if j < len(kills)-1 {
				theOperator.restart(t, slowFleetOperator...)
			} else {
				theOperator.restart(t)
			}
			resumed = awaitOperatorWorking(t)
		}
		f.awaitFenced(t, 3*time.Minute)
		t.Logf("fence %d: every environment Fenced=True after %s", i+1, round(f.lastReport.Sub(f.requested)))
		f.verifyFenced(t)
		if i < len(schedule)-1 {
			f.restore(t)
		}
	}

	midFence, interrupted := 0, 0
	for _, r := range results {
		// Incomplete as the responders see it: some environment does not
		// say Fenced=True yet. One whose steps are done and whose report is
		// not yet written resumes too (the report is the fence's last step).
		if r.notStarted+r.inProgress+r.unreported > 0 {
			midFence++
		}
		if r.inProgress > 0 {
			interrupted++
		}
	}
	t.Logf("%d of %d kills landed while the fleet fence was incomplete, %d with an environment between its deny policy and its last step; %s in all",
		midFence, len(results), interrupted, since(began))
	if midFence < len(results)*7/10 {
		t.Errorf("only %d of %d kills landed while the fleet fence was incomplete: the kills missed the fence and prove little", midFence, len(results))
	}
	// One worker fences one environment at a time, so about three kills in
	// four catch one between its steps; a fence that writes every deny
	// policy first would leave many there.
	if interrupted < len(results)/3 {
		t.Errorf("only %d of %d kills interrupted an environment between its deny policy and its last step: resumption was hardly exercised", interrupted, len(results))
	}
}

// fleetSeed is the seed of the kill moments: FLEET_KILL_SEED, or the clock.
func fleetSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(fleetSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", fleetSeedEnv, s, err)
		}
	}
	t.Logf("kill moments seeded with %d (%s=%d replays where in each stratum the kills land)", seed, fleetSeedEnv, seed)
	return seed
}

// killPlan is when to kill the operator: at, a random moment of the
// stratum [lo, hi), counted from the fence request.
type killPlan struct {
	lo, hi, at time.Duration
}

// killSchedule spreads n kills over the given number of fences, for a fence
// whose first deny policy appears after deny and which completes after
// took: n strata, the first before the first deny policy and the others
// splitting the rest evenly, one kill at a random moment of each; the
// strata are dealt to the fences in turn, so each fence is killed early and
// late.
func killSchedule(rng *rand.Rand, n, fences int, deny, took time.Duration) [][]killPlan {
	out := make([][]killPlan, fences)
	step := (took - deny) / time.Duration(n-1)
	for i := range n {
		k := killPlan{lo: 0, hi: deny}
		if i > 0 {
			k.lo = deny + time.Duration(i-1)*step
			k.hi = k.lo + step
		}
		k.at = k.lo + time.Duration(rng.Int64N(int64(k.hi-k.lo)+1))
		out[i%fences] = append(out[i%fences], k)
	}
	return out
}

// killResult is the state of the fleet's fences right after a kill, read
// while no operator runs.
type killResult struct {
	worked time.Duration // the operator's time on the fence
	at     time.Duration // since the fence request
	// notStarted environments have no deny policy yet; inProgress ones
	// have it but not every other step; unreported ones have every step
	// done but do not say Fenced=True yet; reported ones say it.
	notStarted, inProgress, unreported, reported int
}

func (r killResult) String() string {
	return fmt.Sprintf("%d Fenced=True, %d done but not yet reported, %d in progress, %d not started",
		r.reported, r.unreported, r.inProgress, r.notStarted)
}

// fleet is the environments fenced together, and the fence under way.
type fleet struct {
	names     []string
	responder client.Client
	history   *fenceHistory

	// The fence under way: when it was requested, the generation each
	// environment got from the request, its primary site before, and when
	// each first reported Fenced=True.
	requested  time.Time
	generation map[string]int64
	before     map[string]fenceBaseline
	reported   map[string]time.Time
	lastReport time.Time
}

// startSlow restarts the operator slowed down and waits until it works, so
// that every fence starts from the same state: the operator's cache synced,
// its resync of the fleet under way.
func (f *fleet) startSlow(t *testing.T) {
	t.Helper()
	theOperator.restart(t, slowFleetOperator...)
	awaitOperatorWorking(t)
}

// awaitOperatorWorking waits until the operator, just started, has synced
// its cache and reconciles, and returns when it was first seen doing so.
func awaitOperatorWorking(t *testing.T) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	working := map[string]string{"controller": "healthenvironment"}
	err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		active, err := theOperator.metricSum(ctx, "controller_runtime_active_workers", working)
		if err != nil || active > 0 {
			return active > 0, nil
		}
		done, err := theOperator.metricSum(ctx, "controller_runtime_reconcile_total", working)
		return err == nil && done > 0, nil
	})
	if err != nil {
		t.Fatalf("the operator did not start reconciling within a minute: %v\n%s", err, theOperator.logTail(20))
	}
	return time.Now()
}

// fence requests the fence of every environment of the fleet at once, as a
// responder would with `kubectl careplane fence --selector`.
func (f *fleet) fence(t *testing.T, ticket string) {
	t.Helper()
	f.before = map[string]fenceBaseline{}
	for _, n := range f.names {
		f.before[n] = readFenceBaseline(t, n+"-primary")
	}
	f.reported, f.lastReport = map[string]time.Time{}, time.Time{}
	f.requested = time.Now()
	f.generation = f.patch(t, fencePatch(ticket))
}

// restore restores every environment of the fleet at once and waits until
// each is Ready with its fence lifted.
func (f *fleet) restore(t *testing.T) {
	t.Helper()
	start := time.Now()
	f.patch(t, restorePatch)
	for _, n := range f.names {
		env := waitReady(t, n, 3*time.Minute)
		if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced); c == nil || c.Status != metav1.ConditionFalse {
			t.Fatalf("%s is Ready after the restore but Fenced = %+v", n, c)
		}
	}
	t.Logf("fleet restored in %s", round(time.Since(start)))
}

// patch sends one merge patch to every environment of the fleet
// concurrently, as a responder, and returns the generation each answered
// with.
func (f *fleet) patch(t *testing.T, body string) map[string]int64 {
	t.Helper()
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
	)
	gens := map[string]int64{}
	for _, n := range f.names {
		wg.Go(func() {
			env := &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: n}}
			err := f.responder.Patch(context.Background(), env, client.RawPatch(types.MergePatchType, []byte(body)))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n, err))
				return
			}
			gens[n] = env.Generation
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("patching the fleet with %s: %v", body, err)
	}
	return gens
}

// follow checks each Fenced=True report of the fence under way as the watch
// delivers it, until deadline, or until every environment has reported when
// all is set.
func (f *fleet) follow(t *testing.T, deadline time.Time, all bool) {
	t.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for !all || len(f.reported) < len(f.names) {
		select {
		case r := <-f.history.reports:
			f.check(t, r)
		case <-timer.C:
			return
		}
	}
}

// check looks at the fence of an environment that has just reported
// Fenced=True for the first time: every step must be done already. The
// steps only move forward during a fence, so what is missing now was
// missing when the report was written.
func (f *fleet) check(t *testing.T, r fenceReport) {
	t.Helper()
	if r.generation != f.generation[r.env] || !f.reported[r.env].IsZero() {
		return // an earlier fence's, or not the first
	}
	f.reported[r.env] = r.at
	if r.at.After(f.lastReport) {
		f.lastReport = r.at
	}
	p := readFenceProgress(t, context.Background(), r.env, r.env+"-primary", f.before[r.env])
	if !p.complete() {
		t.Errorf("%s reported Fenced=True (resourceVersion %d, %s into the fence) before its fence was complete: %s",
			r.env, r.rv, round(r.at.Sub(f.requested)), p)
	}
}

// awaitFenced waits until every environment of the fleet has reported
// Fenced=True for the fence under way.
func (f *fleet) awaitFenced(t *testing.T, timeout time.Duration) {
	t.Helper()
	f.follow(t, time.Now().Add(timeout), true)
	if len(f.reported) == len(f.names) {
		return
	}
	var missing []string
	for _, n := range f.names {
		if f.reported[n].IsZero() {
			missing = append(missing, fmt.Sprintf("%s: %s", n, readFenceProgress(t, context.Background(), n, n+"-primary", f.before[n])))
		}
	}
	t.Fatalf("%d environments did not report Fenced=True within %s of the fence request:\n%s\noperator log:\n%s",
		len(missing), round(time.Since(f.requested)), strings.Join(missing, "\n"), theOperator.logTail(30))
}

// inspectKilled reads the fleet's fences right after a kill into r, and
// checks that none says Fenced=True before it is complete.
func (f *fleet) inspectKilled(t *testing.T, r *killResult) {
	t.Helper()
	for _, n := range f.names {
		p := readFenceProgress(t, context.Background(), n, n+"-primary", f.before[n])
		switch {
		case p.fencedTrue:
			r.reported++
			if !p.complete() {
				t.Errorf("killed %s after the fence request: %s says Fenced=True while its fence is incomplete: %s", round(r.at), n, p)
			}
		case p.complete():
			r.unreported++
		case p.deny:
			r.inProgress++
		default:
			r.notStarted++
		}
	}
}

// verifyFenced checks that every environment of the fleet is fully fenced
// and says so for the generation that requested the fence.
func (f *fleet) verifyFenced(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, n := range f.names {
		if p := readFenceProgress(t, ctx, n, n+"-primary", f.before[n]); !p.complete() {
			t.Errorf("%s is not fully fenced: %s", n, p)
		}
		env := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: n}, env); err != nil {
			t.Fatal(err)
		}
		c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced)
		if !fenceCompleteStatus(env) || c.ObservedGeneration != f.generation[n] || env.Status.ObservedGeneration != f.generation[n] {
			t.Errorf("%s: Fenced = %+v, status.observedGeneration %d; want True/FenceComplete for generation %d",
				n, c, env.Status.ObservedGeneration, f.generation[n])
		}
	}
}

func round(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }

func since(t time.Time) time.Duration { return round(time.Since(t)) }
