//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// fenceProgress is what a fence of one environment has done so far, read
// from the cluster.
type fenceProgress struct {
	deny             bool // the deny policy exists
	otherPolicies    int  // policies besides the deny policy
	rotatedAccounts  int  // service accounts with a new UID
	secrets          int  // generated secrets left
	evidence         int  // pods labelled as evidence by this fence
	scaledDown       int  // deployments at zero replicas
	deployments      int
	fencedTrue       bool // the status says Fenced=True
	fencedCondReason string
}

func (p fenceProgress) complete() bool {
	return p.deny && p.otherPolicies == 0 && p.rotatedAccounts == 2 && p.secrets == 0 && p.evidence == 3 &&
		p.deployments == 2 && p.scaledDown == 2
}

func (p fenceProgress) String() string {
	return fmt.Sprintf("deny=%t other-policies=%d rotated-accounts=%d secrets=%d evidence=%d scaled-down=%d/%d Fenced=%s",
		p.deny, p.otherPolicies, p.rotatedAccounts, p.secrets, p.evidence, p.scaledDown, p.deployments, p.fencedCondReason)
}

// fenceBaseline is what a fence's progress is measured against: the
// primary site before the fence.
type fenceBaseline struct {
	accounts map[string]types.UID // service accounts by name
	evidence int                  // pods kept as evidence by earlier fences
}

func readFenceBaseline(t *testing.T, ns string) fenceBaseline {
	t.Helper()
	return fenceBaseline{accounts: serviceAccountUIDs(t, ns), evidence: len(evidencePods(t, ns))}
}

func readFenceProgress(t *testing.T, ctx context.Context, env, ns string, before fenceBaseline) fenceProgress {
	t.Helper()
	var p fenceProgress
	for _, name := range policyNames(t, ns) {
		if name == "careplane-fence" {
			p.deny = true
		} else {
			p.otherPolicies++
		}
	}
	for name, uid := range serviceAccountUIDs(t, ns) {
		if uid != before.accounts[name] {
			p.rotatedAccounts++
		}
	}
	p.secrets = len(secretValues(t, ns))
	p.evidence = len(evidencePods(t, ns)) - before.evidence
	var deps appsv1.DeploymentList
	if err := k8sClient.List(ctx, &deps, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Items {
		p.deployments++
		if *d.Spec.Replicas == 0 {
			p.scaledDown++
		}
	}
	e := &v1alpha1.HealthEnvironment{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: env}, e); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(e.Status.Conditions, v1alpha1.ConditionFenced); c != nil {
		p.fencedTrue = c.Status == metav1.ConditionTrue
		p.fencedCondReason = string(c.Status) + "/" + c.Reason
	}
	return p
}

// readyToFence applies a fence test environment, waits until it is Ready
// and adds a policy that a fence must remove, one step more for a test to
// interrupt. It returns the primary namespace and the UIDs of its service
// accounts and evidence, for readFenceProgress.
func readyToFence(t *testing.T, name string) (ns string, before fenceBaseline) {
	t.Helper()
	ns = name + "-primary"
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	if err := k8sClient.Create(context.Background(), allowEverything(ns, "legacy-allow-all")); err != nil {
		t.Fatal(err)
	}
	return ns, readFenceBaseline(t, ns)
}

// TestFenceResumesAfterOperatorKill kills the operator (SIGKILL) at several
// points of a fence and restarts it: the fence completes after the last
// restart, and Fenced=True is never reported before every step is done. The
// operator runs with a low client rate limit during the kills, so that a
// fence takes seconds and the kills land between its steps.
func TestFenceResumesAfterOperatorKill(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("resume")
	ns, before := readyToFence(t, name)
	t.Cleanup(func() { theOperator.restart(t) })

	// Whenever the status first says Fenced=True, every step must already
	// be done: a watch checks the cluster at that moment.
	w := watchNamed(t, &v1alpha1.HealthEnvironmentList{}, name)
	atFencedTrue := make(chan fenceProgress, 1)
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			e, ok := ev.Object.(*v1alpha1.HealthEnvironment)
			if !ok {
				continue
			}
			if c := meta.FindStatusCondition(e.Status.Conditions, v1alpha1.ConditionFenced); c != nil && c.Status == metav1.ConditionTrue {
				atFencedTrue <- readFenceProgress(t, ctx, name, ns, before)
				return
			}
		}
	}()

	// At 2 requests a second the ~25 writes of a fence take over ten
	// seconds, long enough for the kills to land between its steps.
	slow := []string{"--kube-api-qps=2", "--kube-api-burst=1"}
	theOperator.restart(t, slow...)
	fenceCommand(t, name, "INC-KILL")

	checkpoints := []struct {
		name    string
		reached func(fenceProgress) bool
	}{
		{"deny policy written", func(p fenceProgress) bool { return p.deny }},
		{"other policies being removed", func(p fenceProgress) bool { return p.deny && p.otherPolicies < 5 }},
		{"credentials being revoked", func(p fenceProgress) bool { return p.rotatedAccounts > 0 || p.secrets < 2 }},
		{"workloads being preserved", func(p fenceProgress) bool { return p.evidence > 0 || p.scaledDown > 0 }},
	}
	midFence := 0
	for _, cp := range checkpoints {
		var at fenceProgress
		eventually(t, 60*time.Second, "checkpoint "+cp.name, func(ctx context.Context) (bool, string, error) {
			at = readFenceProgress(t, ctx, name, ns, before)
			return cp.reached(at) || at.fencedTrue, at.String(), nil
		})
		theOperator.kill()
		after := readFenceProgress(t, ctx, name, ns, before)
		t.Logf("killed at %q: %s", cp.name, after)
		if after.fencedTrue {
			if !after.complete() {
				t.Fatalf("Fenced=True reported while the fence is incomplete: %s", after)
			}
			t.Logf("the fence completed before this kill point")
			break
		}
		if after.deny && !after.complete() {
			midFence++
		}
		if err := theOperator.start(slow...); err != nil {
			t.Fatal(err)
		}
	}
	if midFence < 2 {
		t.Errorf("only %d kills landed in the middle of the fence; the test proves too little", midFence)
	}

	// The last restart at full speed: the fence completes.
	theOperator.restart(t)
	waitFencedTrue(t, name)
	final := readFenceProgress(t, ctx, name, ns, before)
	if !final.complete() {
		t.Errorf("after the restarts the fence is not complete: %s", final)
	}
	select {
	case p := <-atFencedTrue:
		if !p.complete() {
			t.Errorf("when Fenced=True was first reported the fence was incomplete: %s", p)
		}
	case <-time.After(10 * time.Second):
		t.Error("the watch never saw Fenced=True")
	}
	pols := policyNames(t, ns)
	if strings.Join(pols, ",") != "careplane-fence" {
		t.Errorf("policies after the fence: %v", pols)
	}
}
