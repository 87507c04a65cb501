//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/testutil"
)

// applyFailoverEnv applies fenceEnvYAML with a failover section: call-handling
// is critical, referral is not.
func applyFailoverEnv(t *testing.T, name, failover string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), name+".yaml")
	manifest := strings.Replace(fenceEnvYAML(name), "  isolation:\n", "  failover: "+failover+"\n  isolation:\n", 1)
	if err := os.WriteFile(file, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-f", file)
	t.Cleanup(func() { deleteFencedEnvironment(name) })
}

// readyPodIPs maps the IPs of the Ready pods of a service in ns to their image.
func readyPodIPs(t *testing.T, ctx context.Context, ns, svc string) map[string]string {
	t.Helper()
	var pods corev1.PodList
	if err := k8sClient.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelService: svc}); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if isPodReady(p) && p.Status.PodIP != "" && p.DeletionTimestamp == nil {
			out[p.Status.PodIP] = p.Spec.Containers[0].Image
		}
	}
	return out
}

// frontIPs are the addresses the front EndpointSlice of svc routes to.
func frontIPs(t *testing.T, ctx context.Context, env, svc string) []string {
	t.Helper()
	slice := &discoveryv1.EndpointSlice{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: env, Name: svc + "-careplane"}, slice); err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, e := range slice.Endpoints {
		ips = append(ips, e.Addresses...)
	}
	sort.Strings(ips)
	return ips
}

// routesOnlyTo says every front endpoint of svc is a Ready pod of the site
// namespace, and there is at least one. Endpoints are matched by their pod
// reference: kwok gives pods on different nodes the same IPs.
func routesOnlyTo(t *testing.T, ctx context.Context, env, ns, svc string) (bool, string) {
	slice := &discoveryv1.EndpointSlice{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: env, Name: svc + "-careplane"}, slice); err != nil {
		return false, err.Error()
	}
	var pods corev1.PodList
	if err := k8sClient.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelService: svc}); err != nil {
		return false, err.Error()
	}
	ready := map[string]bool{}
	for i := range pods.Items {
		if isPodReady(&pods.Items[i]) && pods.Items[i].DeletionTimestamp == nil {
			ready[pods.Items[i].Name] = true
		}
	}
	var got []string
	for _, e := range slice.Endpoints {
		if e.TargetRef == nil {
			return false, "an endpoint without a pod reference"
		}
		got = append(got, e.TargetRef.Namespace+"/"+e.TargetRef.Name)
		if e.TargetRef.Namespace != ns || !ready[e.TargetRef.Name] {
			return false, fmt.Sprintf("front routes to %v; ready pods in %s: %v", got, ns, ready)
		}
	}
	return len(got) > 0, fmt.Sprintf("front routes to %v", got)
}

func servingFromStandby(t *testing.T, ctx context.Context, name string) (*metav1.Condition, *v1alpha1.HealthEnvironment) {
	t.Helper()
	e := &v1alpha1.HealthEnvironment{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, e); err != nil {
		t.Fatal(err)
	}
	return meta.FindStatusCondition(e.Status.Conditions, v1alpha1.ConditionServingFromStandby), e
}

// waitServingCondition waits for ServingFromStandby to have the status and
// reason (the front moves inside a reconcile, the status is written at its
// end).
func waitServingCondition(t *testing.T, name string, status metav1.ConditionStatus, reason string) *metav1.Condition {
	t.Helper()
	var c *metav1.Condition
	eventually(t, 15*time.Second, fmt.Sprintf("ServingFromStandby=%s/%s", status, reason), func(ctx context.Context) (bool, string, error) {
		c, _ = servingFromStandby(t, ctx, name)
		return c != nil && c.Status == status && (reason == "" || c.Reason == reason), fmt.Sprint(c), nil
	})
	return c
}

func waitStandbyRunning(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	eventually(t, time.Minute, name+" standby running", func(ctx context.Context) (bool, string, error) {
		d := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: name + "-standby", Name: "call-handling"}, d); err != nil {
			return false, err.Error(), nil
		}
		return d.Status.ReadyReplicas == *d.Spec.Replicas && *d.Spec.Replicas > 0, fmt.Sprintf("%d ready", d.Status.ReadyReplicas), nil
	})
}

// TestFailoverWarmOnFence: fencing an environment with a Warm standby moves
// its critical traffic to Ready standby pods in the reconcile that fences,
// and the standby runs the known-good images, not a newer spec that never
// proved healthy.
func TestFailoverWarmOnFence(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("warm")
	applyFailoverEnv(t, name, "{standby: Warm, trigger: Automatic, unavailableAfter: 5s, placement: {nodeSelector: {careplane.io/pool: standby}}}")
	env := waitReady(t, name, 2*time.Minute)
	waitStandbyRunning(t, ctx, name)
	// Non-critical services do not run in the standby.
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: name + "-standby", Name: "referral"}, &appsv1.Deployment{}); err == nil {
		t.Error("referral (not critical) runs in the standby")
	}
	var standbyPods corev1.PodList
	if err := k8sClient.List(ctx, &standbyPods, client.InNamespace(name+"-standby")); err != nil {
		t.Fatal(err)
	}
	for _, p := range standbyPods.Items {
		if p.Spec.NodeSelector["careplane.io/pool"] != "standby" || !strings.HasPrefix(p.Spec.NodeName, "kwok-standby") {
			t.Errorf("standby pod %s on node %s with selector %v: placement ignored", p.Name, p.Spec.NodeName, p.Spec.NodeSelector)
		}
	}
	knownGood := env.Spec.Services[0].Image
	newer := "registry.example/111/call-handling@sha256:" + strings.Repeat("9", 64)

	// One write: a newer image and the fence.
	start := time.Now()
	responder(t, "patch", "henv", name, "--type=json", "-p", fmt.Sprintf(`[
		{"op":"replace","path":"/spec/services/0/image","value":%q},
		{"op":"replace","path":"/spec/isolation/mode","value":"Fenced"},
		{"op":"add","path":"/spec/isolation/reason","value":"compromised build pipeline"}]`, newer))
	var switched time.Duration
	eventually(t, 30*time.Second, "front routes only to the standby", func(ctx context.Context) (bool, string, error) {
		ok, why := routesOnlyTo(t, ctx, name, name+"-standby", "call-handling")
		switched = time.Since(start)
		return ok, why, nil
	})
	fencedEnv := waitFencedTrue(t, name)
	t.Logf("failover on fence: front EndpointSlices point at the standby %s after the patch (kubectl and 250ms polling included)", switched.Round(time.Millisecond))

	c := waitServingCondition(t, name, metav1.ConditionTrue, "PrimaryFenced")
	if !strings.Contains(c.Message, "referral") {
		t.Errorf("ServingFromStandby = %+v, want True/PrimaryFenced naming referral as not served", c)
	}
	if fencedEnv.Status.ActiveSite != v1alpha1.SiteStandby {
		t.Errorf("status.activeSite = %q, want Standby", fencedEnv.Status.ActiveSite)
	}
	if fencedEnv.Status.Failover == nil || strings.Join(fencedEnv.Status.Failover.NotServedOnStandby, ",") != "referral" {
		t.Errorf("status.failover = %+v, want referral not served", fencedEnv.Status.Failover)
	}
	for ip, image := range readyPodIPs(t, ctx, name+"-standby", "call-handling") {
		if image != knownGood {
			t.Errorf("standby pod %s runs %s, want the known-good %s", ip, image, knownGood)
		}
	}
	if ips := frontIPs(t, ctx, name, "referral"); len(ips) != 0 {
		t.Errorf("referral (not critical) is routed to %v while the primary is fenced", ips)
	}
	n, err := theOperator.metricSum(ctx, "careplane_failovers_total", map[string]string{"reason": "PrimaryFenced"})
	if err != nil || n < 1 {
		t.Errorf("careplane_failovers_total{reason=PrimaryFenced} = %v (%v), want at least 1", n, err)
	}

	// Restore while a GitOps tool keeps relabelling the environment (a new
	// resourceVersion every few tens of milliseconds), so that careplane's
	// status writes conflict. The primary is rebuilt, then traffic fails
	// back to it (the standby is rolling, so not Ready, so without the
	// hold), and must stay there once the standby is Ready again: a
	// decision that read where traffic goes from a status that missed the
	// failback sent it back to the standby for the whole hold (CI saw it
	// under load; TestAFailbackTheStatusMissedStays is the deterministic
	// test of it).
	stopChurn := testutil.Churn(ctx, k8sClient, name, 10*time.Millisecond)
	defer stopChurn()
	responder(t, "patch", "henv", name, "--type=merge", "-p", `{"spec":{"isolation":{"mode":"None"}}}`)
	var back time.Time
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no failback to the rebuilt primary within 2m")
		}
		slice := &discoveryv1.EndpointSlice{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: name, Name: "call-handling-careplane"}, slice); err != nil {
			t.Fatal(err)
		}
		onStandby := false
		for _, e := range slice.Endpoints {
			if e.TargetRef != nil && e.TargetRef.Namespace == name+"-standby" {
				onStandby = true
			}
		}
		switch {
		case back.IsZero():
			if ok, _ := routesOnlyTo(t, ctx, name, name+"-primary", "call-handling"); ok {
				back = time.Now()
				t.Logf("failed back to the primary; watching that traffic stays there")
			}
		case onStandby:
			t.Fatalf("traffic went back to the standby %s after failing back to the primary (the front routes to %v)",
				time.Since(back).Round(time.Millisecond), frontIPs(t, ctx, name, "call-handling"))
		case time.Since(back) > 8*time.Second:
			stopChurn()
		}
		if !back.IsZero() && time.Since(back) > 12*time.Second {
			break
		}
	}
	t.Logf("the environment was relabelled %d times during the restore", stopChurn())
	waitStandbyCurrent(t, ctx, name)
	waitServingCondition(t, name, metav1.ConditionFalse, "")
	if _, e := servingFromStandby(t, ctx, name); e.Status.ActiveSite != v1alpha1.SitePrimary {
		t.Errorf("status.activeSite = %q, want Primary", e.Status.ActiveSite)
	}
}

// waitStandbyCurrent waits for the standby's call-handling to have rolled
// to its latest template with every replica Ready: the standby Ready as the
// failover decision counts it.
func waitStandbyCurrent(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	eventually(t, time.Minute, name+" standby current and Ready", func(ctx context.Context) (bool, string, error) {
		d := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: name + "-standby", Name: "call-handling"}, d); err != nil {
			return false, err.Error(), nil
		}
		s := d.Status
		return s.ObservedGeneration == d.Generation && s.UpdatedReplicas == *d.Spec.Replicas && s.ReadyReplicas == *d.Spec.Replicas &&
			s.Replicas == *d.Spec.Replicas, fmt.Sprintf("%+v", s), nil
	})
}

// TestFailoverCold: a Cold standby runs nothing until the fence; failing
// over creates it, and traffic switches once its pods are Ready.
func TestFailoverCold(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("cold")
	applyFailoverEnv(t, name, "{standby: Cold}")
	waitReady(t, name, 2*time.Minute)
	var deps appsv1.DeploymentList
	if err := k8sClient.List(ctx, &deps, client.InNamespace(name+"-standby")); err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) != 0 {
		t.Errorf("a Cold standby runs %d deployments before any failover", len(deps.Items))
	}
	start := time.Now()
	fenceCommand(t, name, "INC-COLD")
	eventually(t, time.Minute, "front routes to the new standby", func(ctx context.Context) (bool, string, error) {
		ok, why := routesOnlyTo(t, ctx, name, name+"-standby", "call-handling")
		return ok, why, nil
	})
	t.Logf("cold failover: front EndpointSlices point at the standby %s after the fence", time.Since(start).Round(time.Millisecond))
	waitServingCondition(t, name, metav1.ConditionTrue, "PrimaryFenced")
}

// cordonAll makes every node unschedulable (or schedulable again).
func cordonAll(t *testing.T, cordon bool) {
	t.Helper()
	verb := "uncordon"
	if cordon {
		verb = "cordon"
	}
	kubectl(t, verb, "-l", "type=kwok")
}

// makePrimaryUnavailable deletes the primary's call-handling pods while no
// node accepts pods, so the service has no ready replica.
func makePrimaryUnavailable(t *testing.T, name string) {
	t.Helper()
	cordonAll(t, true)
	t.Cleanup(func() { cordonAll(t, false) })
	kubectl(t, "delete", "pods", "-n", name+"-primary", "-l", v1alpha1.LabelService+"=call-handling", "--wait=false")
}

// TestFailoverAutomaticOnUnavailability: when a critical service of the
// primary has had no ready replica for unavailableAfter, traffic moves to
// the standby; it fails back once the primary has been Ready for the hold.
func TestFailoverAutomaticOnUnavailability(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("auto")
	applyFailoverEnv(t, name, "{standby: Warm, trigger: Automatic, unavailableAfter: 5s}")
	waitReady(t, name, 2*time.Minute)
	waitStandbyRunning(t, ctx, name)

	start := time.Now()
	makePrimaryUnavailable(t, name)
	eventually(t, time.Minute, "failover after unavailableAfter", func(ctx context.Context) (bool, string, error) {
		ok, why := routesOnlyTo(t, ctx, name, name+"-standby", "call-handling")
		return ok, why, nil
	})
	took := time.Since(start)
	t.Logf("automatic failover %s after the primary lost its pods (unavailableAfter 5s)", took.Round(time.Millisecond))
	if took < 5*time.Second {
		t.Errorf("failed over after %s, before unavailableAfter (5s)", took)
	}
	waitServingCondition(t, name, metav1.ConditionTrue, "PrimaryUnavailable")

	recovered := time.Now()
	cordonAll(t, false)
	eventually(t, 2*time.Minute, "failback after the hold", func(ctx context.Context) (bool, string, error) {
		ok, why := routesOnlyTo(t, ctx, name, name+"-primary", "call-handling")
		return ok, why, nil
	})
	back := time.Since(recovered)
	t.Logf("failback %s after the primary could run again (hold 30s)", back.Round(time.Millisecond))
	if back < 30*time.Second {
		t.Errorf("failed back after %s, before the 30s hold: traffic would flap", back)
	}
}

// TestFailoverManual: with trigger Manual, an unavailable primary does not
// move traffic; only failover.activeSite does.
func TestFailoverManual(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("manual")
	applyFailoverEnv(t, name, "{standby: Warm, trigger: Manual, unavailableAfter: 5s}")
	waitReady(t, name, 2*time.Minute)
	waitStandbyRunning(t, ctx, name)

	makePrimaryUnavailable(t, name)
	time.Sleep(8 * time.Second)
	if c, e := servingFromStandby(t, ctx, name); c == nil || c.Status != metav1.ConditionFalse || e.Status.ActiveSite != v1alpha1.SitePrimary {
		t.Errorf("Manual mode moved traffic on its own: ServingFromStandby %+v, activeSite %q", c, e.Status.ActiveSite)
	}

	kubectl(t, "patch", "henv", name, "--type=merge", "-p", `{"spec":{"failover":{"activeSite":"Standby"}}}`)
	eventually(t, 30*time.Second, "manual switch to the standby", func(ctx context.Context) (bool, string, error) {
		ok, why := routesOnlyTo(t, ctx, name, name+"-standby", "call-handling")
		return ok, why, nil
	})
	waitServingCondition(t, name, metav1.ConditionTrue, "ManualSwitch")

	cordonAll(t, false)
	kubectl(t, "patch", "henv", name, "--type=merge", "-p", `{"spec":{"failover":{"activeSite":"Primary"}}}`)
	eventually(t, time.Minute, "manual switch back", func(ctx context.Context) (bool, string, error) {
		ok, why := routesOnlyTo(t, ctx, name, name+"-primary", "call-handling")
		return ok, why, nil
	})
}
