//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// outageDuration is how long the apiserver stays down.
const outageDuration = 20 * time.Second

// The backoffs that bound the operator's retries while the apiserver is down.
const (
	// controller-runtime's workqueue (the priority queue, its default since
	// v0.23) retries a failed reconcile of an item after 5ms, doubling with
	// each failure of that item, up to 1000s.
	reconcileBackoffBase, reconcileBackoffMax = 5 * time.Millisecond, 1000 * time.Second
	// client-go's reflector retries a failed list or watch after 800ms,
	// doubling (plus up to 100% jitter), up to 30s.
	reflectorBackoffBase, reflectorBackoffMax = 800 * time.Millisecond, 30 * time.Second
	// eventsInFlight is how long after the apiserver goes down the events
	// it had already sent may still reach the workqueue: the informers
	// decode what is in their connections' buffers, in a few milliseconds,
	// or tens on a loaded machine.
	eventsInFlight = 100 * time.Millisecond
)

// backoffAttempts is the most tries of one thing failing continuously that
// fit in d when its retries wait base, 2·base, 4·base … up to limit: the first
// try and every retry whose cumulative wait fits in d.
func backoffAttempts(d, base, limit time.Duration) int {
	n, waited, step := 1, time.Duration(0), base
	for waited+step <= d {
		waited += step
		n++
		step = min(2*step, limit)
	}
	return n
}

// retrySample is the operator's own count, from its /metrics (served by the
// operator process, so readable while the apiserver is down), of what has
// failed since it started.
type retrySample struct {
	at time.Time
	// reconcileErrors: controller_runtime_reconcile_errors_total.
	reconcileErrors float64
	// failedRequests: rest_client_requests_total with code "<error>", which
	// client-go counts for a request that got no response at all: the
	// informers' lists and watches, the reconciler's reads and writes.
	failedRequests float64
	// logBytes is the size of the operator's log.
	logBytes int64
}

func sampleRetries(t *testing.T) retrySample {
	t.Helper()
	ctx := context.Background()
	s := retrySample{at: time.Now()}
	var err error
	if s.reconcileErrors, err = theOperator.metricSum(ctx, "controller_runtime_reconcile_errors_total", map[string]string{"controller": "healthenvironment"}); err != nil {
		t.Fatal(err)
	}
	if s.failedRequests, err = theOperator.metricSum(ctx, "rest_client_requests_total", map[string]string{"code": "<error>"}); err != nil {
		t.Fatal(err)
	}
	s.logBytes = logSize(t)
	return s
}

func logSize(t *testing.T) int64 {
	t.Helper()
	fi, err := os.Stat(theOperator.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// operatorWithDefaultResync restarts the suite's operator with main.go's
// default --sync-period (10h) for the rest of the test, and with the suite's
// flags after it. With the suite's 5s resyncs every informer re-queues every
// environment every 5s, through the outage too (a reflector whose watch is
// refused keeps its resync timer), and the retries counted would be those,
// not the workqueue's backoff that production relies on: one environment
// being restored failed 59 times in a 20s outage, against 12 without.
func operatorWithDefaultResync(t *testing.T) {
	t.Helper()
	theOperator.stop()
	t.Cleanup(func() {
		theOperator.stop()
		if err := theOperator.start(); err != nil {
			t.Errorf("restarting the suite's operator: %v\n%s", err, theOperator.logTail(20))
		}
	})
	if err := theOperator.start("--sync-period=10h"); err != nil {
		t.Fatalf("starting the operator: %v\n%s", err, theOperator.logTail(20))
	}
}

// checkOutageRetries checks what the operator did while the apiserver was
// down: that it tried (a test in which it sent nothing would prove nothing),
// and that it retried on its backoffs, not in a loop. items is how many
// environments the cluster held, each a workqueue item.
//
// A reconcile of an item that fails is retried by the workqueue after 5ms,
// 10ms, 20ms … (backoffAttempts). An event makes an item ready at once, so
// an event still in flight when the apiserver went down may cut short one
// of the waits that fit in eventsInFlight: one more try for each of them.
// The informers' lists and watches are retried by client-go's reflector on
// its own backoff, and each may log a line about it. So the operator's
// "Reconciler error" lines and its count of reconcile errors stay within
// items × tries, and its whole log within that plus informers × the
// reflector's tries. An operator retrying every 5ms without backing off
// failed over a thousand times in the same 20s.
func checkOutageRetries(t *testing.T, before, during retrySample, items int) {
	t.Helper()
	window := during.at.Sub(before.at)
	b, err := os.ReadFile(theOperator.logPath)
	if err != nil {
		t.Fatal(err)
	}
	// The informers of the running operator: one per kind it watches,
	// logged when it started.
	started := bytes.LastIndex(b[:before.logBytes], []byte(`"msg":"Starting careplane"`))
	informers := bytes.Count(b[max(started, 0):before.logBytes], []byte(`"msg":"Starting EventSource"`))
	logged := b[before.logBytes:during.logBytes]
	lines := bytes.Count(logged, []byte("\n"))
	errorLines := bytes.Count(logged, []byte(`"msg":"Reconciler error"`))

	reconcileErrors := int(during.reconcileErrors - before.reconcileErrors)
	failedRequests := int(during.failedRequests - before.failedRequests)
	perItem := backoffAttempts(window, reconcileBackoffBase, reconcileBackoffMax) +
		backoffAttempts(eventsInFlight, reconcileBackoffBase, reconcileBackoffMax) - 1
	perInformer := backoffAttempts(window, reflectorBackoffBase, reflectorBackoffMax)
	reconcileBound := items * perItem
	logBound := reconcileBound + informers*perInformer
	t.Logf("during the %s outage: %d reconcile errors and %d \"Reconciler error\" lines (bound %d: %d environments × %d tries), "+
		"%d log lines (bound %d: plus %d informers × %d tries), %d requests that reached no apiserver",
		window.Round(time.Millisecond), reconcileErrors, errorLines, reconcileBound, items, perItem,
		lines, logBound, informers, perInformer, failedRequests)

	if informers == 0 {
		t.Errorf("found no informer started in the operator's log %s", theOperator.logPath)
	}
	if reconcileErrors < 1 || failedRequests < 1 {
		t.Errorf("the operator tried nothing while the apiserver was down (%d reconcile errors, %d failed requests): the outage missed the work it was meant to interrupt",
			reconcileErrors, failedRequests)
	}
	if reconcileErrors > reconcileBound {
		t.Errorf("%d reconcile errors in %s, more than the workqueue's backoff allows (%d): the operator retries in a loop",
			reconcileErrors, window.Round(time.Millisecond), reconcileBound)
	}
	if errorLines > reconcileBound {
		t.Errorf("%d \"Reconciler error\" lines in %s, more than the workqueue's backoff allows (%d)", errorLines, window.Round(time.Millisecond), reconcileBound)
	}
	if lines > logBound {
		t.Errorf("%d log lines in %s, more than the workqueue's and the reflectors' backoffs allow (%d); the first of them:\n%s",
			lines, window.Round(time.Millisecond), logBound, firstLines(logged, 20))
	}
}

func firstLines(b []byte, n int) string {
	lines := strings.SplitN(string(b), "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// outage stops the apiserver for outageDuration as soon as interrupt
// returns, and checks the operator's retries meanwhile; it returns when the
// apiserver serves again. interrupt waits for the moment the outage is meant
// to hit, having created added environments.
func outage(t *testing.T, cp controlPlane, added int, interrupt func()) (back time.Time) {
	t.Helper()
	var envs v1alpha1.HealthEnvironmentList
	if err := k8sClient.List(context.Background(), &envs); err != nil {
		t.Fatal(err)
	}
	before := sampleRetries(t)
	interrupt()
	// The log is measured from the outage on, the counters from before
	// interrupt (which fails nothing): reading them now would delay the
	// outage past the moment interrupt waited for.
	before.logBytes = logSize(t)
	down := cp.stopAPIServer(t)
	time.Sleep(outageDuration - time.Since(down.start))
	during := sampleRetries(t)
	down.end(t)
	checkOutageRetries(t, before, during, len(envs.Items)+added)
	return time.Now()
}

// TestAPIServerOutageDuringProvisioning stops the kube-apiserver for 20s
// while six new environments are being provisioned, and brings it back: the
// operator, which keeps running throughout, finishes them all, and while the
// apiserver was down it retried on its backoff rather than in a loop.
func TestAPIServerOutageDuringProvisioning(t *testing.T) {
	ctx := context.Background()
	cp := localControlPlane(t)
	operatorWithDefaultResync(t)

	names := make([]string, 6)
	for i := range names {
		names[i] = uniqueName(fmt.Sprintf("outage-p%d", i))
	}
	w, err := clientset.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{
		LabelSelector: fmt.Sprintf("%s in (%s)", v1alpha1.LabelEnvironment, strings.Join(names, ","))})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	back := outage(t, cp, len(names), func() {
		// The apiserver goes down as soon as the operator has created the
		// first namespace: the rest of the six environments is still to be
		// written.
		applyFenceEnvs(t, names...)
		select {
		case ev := <-w.ResultChan():
			if ev.Type != watch.Added {
				t.Fatalf("watching the environments' namespaces: %s %v", ev.Type, ev.Object)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the operator created no namespace within 30s")
		}
	})
	writesAtReturn := operatorWrites(t)

	eventually(t, 2*time.Minute, "every environment's objects written", func(ctx context.Context) (bool, string, error) {
		for _, n := range names {
			var deps appsv1.DeploymentList
			if err := k8sClient.List(ctx, &deps, client.InNamespace(n+build.PrimarySuffix)); err != nil {
				return false, err.Error(), nil
			}
			if len(deps.Items) != 2 {
				return false, fmt.Sprintf("%s has %d deployments", n, len(deps.Items)), nil
			}
		}
		return true, "", nil
	})
	written := time.Since(back)
	for _, n := range names {
		waitReady(t, n, 3*time.Minute)
	}
	writes := operatorWrites(t) - writesAtReturn
	t.Logf("after the apiserver returned: every environment's objects written within %s, all %d Ready within %s; %d writes",
		written.Round(time.Millisecond), len(names), time.Since(back).Round(time.Millisecond), writes)
	if writes == 0 {
		t.Error("the operator wrote nothing after the apiserver returned: the outage did not interrupt the provisioning")
	}
}

// TestAPIServerOutageDuringRestore stops the kube-apiserver for 20s in the
// middle of a restore (a fenced environment going back to isolation mode
// None): the operator completes the restore afterwards, rebuilt and with the
// fence lifted, and while the apiserver was down it retried on its backoff.
func TestAPIServerOutageDuringRestore(t *testing.T) {
	ctx := context.Background()
	cp := localControlPlane(t)
	name := uniqueName("outage-r")
	ns := name + build.PrimarySuffix
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	fenceCommand(t, name, "INC-OUTAGE")
	waitFencedTrue(t, name)
	saFenced := serviceAccountUIDs(t, ns)
	operatorWithDefaultResync(t)

	w, err := clientset.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", ns).String()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	back := outage(t, cp, 0, func() {
		// The restore's first write records the restore's ID on the
		// fenced namespace; the apiserver goes down as soon as that is
		// seen, with the rebuild (new credentials, new pods) still to do.
		responder(t, "patch", "henv", name, "--type=merge", "-p", `{"spec":{"isolation":{"mode":"None"}}}`)
		timeout := time.After(30 * time.Second)
		for {
			select {
			case ev := <-w.ResultChan():
				if n, ok := ev.Object.(*corev1.Namespace); ok && n.Annotations[fence.AnnotationRestoreID] != "" {
					return
				}
			case <-timeout:
				t.Fatal("the operator did not start the restore within 30s")
			}
		}
	})

	waitReady(t, name, 3*time.Minute)
	t.Logf("restored and Ready %s after the apiserver returned", time.Since(back).Round(time.Millisecond))
	for sa, uid := range serviceAccountUIDs(t, ns) {
		if uid == saFenced[sa] {
			t.Errorf("service account %s kept the UID it had while fenced: the restore did not rebuild the credentials", sa)
		}
	}
	// The restore is done, and stays done while the operator's informers
	// catch up with the outage (a reflector may take up to a minute to
	// reconnect): a finished restore acted on again from a stale cache
	// relabelled the namespace fenced and appended an empty incident on
	// every reconcile.
	deadline := time.Now().Add(restoreStable)
	for {
		if problem := restoreProblem(t, name); problem != "" {
			t.Fatalf("%s after the apiserver returned, the restore is not done: %s", time.Since(back).Round(time.Millisecond), problem)
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// restoreStable is how long a finished restore is watched for staying done.
const restoreStable = 20 * time.Second

// restoreProblem says what is wrong with environment name as a finished
// restore of the fence TestAPIServerOutageDuringRestore raised, or "".
func restoreProblem(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	ns := name + build.PrimarySuffix
	env := &v1alpha1.HealthEnvironment{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced); c == nil || c.Status != metav1.ConditionFalse {
		return fmt.Sprintf("Fenced = %+v, want False", c)
	}
	if n := len(env.Status.Incidents); n != 1 || env.Status.Incidents[0].RestoredAt == nil || env.Status.Incidents[0].Ticket != "INC-OUTAGE" {
		return fmt.Sprintf("incidents = %+v, want INC-OUTAGE, restored, alone", env.Status.Incidents)
	}
	if got := policyNames(t, ns); slices.Contains(got, build.FencePolicyName) || !slices.Contains(got, "default-deny") {
		return fmt.Sprintf("policies %v; want the fence gone and the allows back", got)
	}
	nsObj := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	if _, ok := nsObj.Labels[v1alpha1.LabelFenced]; ok {
		return fmt.Sprintf("namespace %s is labelled %s", ns, v1alpha1.LabelFenced)
	}
	return ""
}
