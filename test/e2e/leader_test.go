//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// The manager's leader election Lease: cmd/manager's LeaderElectionID, in the
// namespace the chart would run it in.
const (
	leaseName      = "careplane.careplane.io"
	leaseNamespace = "careplane-system"
)

// isLeader says whether a replica's controller-runtime reports itself the
// leader.
func isLeader(ctx context.Context, o *operator) (bool, error) {
	n, err := o.metricSum(ctx, "leader_election_master_status", map[string]string{"name": leaseName})
	return n == 1, err
}

// TestLeaderKilledDuringFence runs two replicas of the operator with leader
// election, as the chart does, and kills the leader (SIGKILL: no release of
// the Lease) in the middle of a fence. The standby, which has sent nothing
// while it was not leading, takes the Lease and completes the fence.
func TestLeaderKilledDuringFence(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("leader")
	ns, before := readyToFence(t, name)

	// The two replicas must be the only writers: the suite's operator, which
	// runs without leader election, stops for the test.
	dir := t.TempDir()
	a := theOperator.replica(filepath.Join(dir, "replica-a.log"))
	b := theOperator.replica(filepath.Join(dir, "replica-b.log"))
	deleteLease := func() { _, _ = kubectlOutput("delete", "lease", leaseName, "-n", leaseNamespace, "--ignore-not-found") }
	theOperator.stop()
	deleteLease()
	t.Cleanup(func() {
		a.kill()
		b.stop()
		deleteLease()
		if err := theOperator.start(); err != nil {
			t.Errorf("restarting the suite's operator: %v\n%s", err, theOperator.logTail(20))
		}
	})
	// A standby takes over 6s after the leader's last renewal (the default
	// is 15s). The low client rate limit makes the fence take seconds, so
	// that the kill lands between its steps (as in
	// TestFenceResumesAfterOperatorKill).
	args := []string{"--leader-elect", "--leader-election-namespace=" + leaseNamespace,
		"--leader-election-lease-duration=6s", "--leader-election-renew-deadline=4s", "--leader-election-retry-period=1s",
		"--kube-api-qps=5", "--kube-api-burst=1"}
	start := func(o *operator, which string) {
		t.Helper()
		if err := o.start(args...); err != nil {
			t.Fatalf("starting replica %s: %v\n%s", which, err, o.logTail(20))
		}
	}
	// leads waits until replica o reports itself the leader and the Lease
	// names a holder other than previous; it returns the holder.
	lease := &coordinationv1.Lease{}
	leads := func(o *operator, which, previous string) string {
		t.Helper()
		var holder string
		eventually(t, 60*time.Second, "replica "+which+" leads", func(ctx context.Context) (bool, string, error) {
			leader, err := isLeader(ctx, o)
			if err != nil {
				return false, err.Error(), nil
			}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: leaseNamespace, Name: leaseName}, lease); err != nil {
				return false, err.Error(), nil
			}
			holder = ptr.Deref(lease.Spec.HolderIdentity, "")
			return leader && holder != "" && holder != previous,
				fmt.Sprintf("leader_election_master_status %t, Lease holder %q", leader, holder), nil
		})
		return holder
	}

	start(a, "a")
	holderA := leads(a, "a", "")
	start(b, "b")
	if leads, err := isLeader(ctx, b); err != nil || leads {
		t.Fatalf("replica b leads (%t, %v) while replica a holds the Lease", leads, err)
	}
	t.Logf("replica a (pid %d) leads, Lease holder %q; replica b (pid %d) stands by", a.pid(), holderA, b.pid())

	fenceCommand(t, name, "INC-LEADER")
	// readFenceProgress fails the test on an error, so it does not get the
	// polls' context: a poll cut short would hide the last progress.
	eventually(t, 60*time.Second, "the fence has begun", func(context.Context) (bool, string, error) {
		p := readFenceProgress(t, ctx, name, ns, before)
		return p.deny || p.fencedTrue, p.String(), nil
	})
	pidA := a.pid()
	a.kill()
	killed := time.Now()
	atKill := readFenceProgress(t, ctx, name, ns, before)
	t.Logf("killed the leader, replica a (pid %d), with the fence at: %s", pidA, atKill)
	if atKill.fencedTrue || atKill.complete() {
		t.Fatalf("the fence was complete before the leader was killed; the test proves nothing: %s", atKill)
	}
	standbyWrites, err := b.metricSum(ctx, "rest_client_requests_total", map[string]string{"method": "POST|PUT|PATCH|DELETE"})
	if err != nil {
		t.Fatal(err)
	}
	standbyReconciles, err := b.metricSum(ctx, "controller_runtime_reconcile_total", map[string]string{"controller": "healthenvironment"})
	if err != nil {
		t.Fatal(err)
	}
	if standbyWrites != 0 || standbyReconciles != 0 {
		t.Errorf("replica b sent %v writes and ran %v reconciles while it was not the leader, want none", standbyWrites, standbyReconciles)
	}

	holderB := leads(b, "b", holderA)
	acquired := lease.Spec.AcquireTime.Sub(killed)
	t.Logf("replica b (pid %d) leads, Lease holder %q, acquired %s after the kill (lease transitions: %d)",
		b.pid(), holderB, acquired.Round(time.Millisecond), ptr.Deref(lease.Spec.LeaseTransitions, 0))

	var done fenceProgress
	eventually(t, 90*time.Second, "the fence completes under the new leader", func(context.Context) (bool, string, error) {
		done = readFenceProgress(t, ctx, name, ns, before)
		return done.complete() && done.fencedCondReason == "True/"+v1alpha1.ReasonFenceComplete, done.String(), nil
	})
	t.Logf("the fence completed %s after the kill: %s", time.Since(killed).Round(time.Millisecond), done)
	if n, err := b.metricSum(ctx, "controller_runtime_reconcile_total", map[string]string{"controller": "healthenvironment"}); err != nil || n == 0 {
		t.Errorf("replica b ran %v reconciles (%v): the fence was not completed by the new leader", n, err)
	}
}
