//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// TestProvisionSamples applies the two samples with kubectl, as a platform
// team would, and checks what careplane built on the real control plane:
// every Deployment and StatefulSet rolled out (the care records' document
// store on a bound claim of the real storage), the network policies and
// quotas as specified; then that an image edit rolls only its Deployment,
// that a steady state sends no writes, and that deleting an environment
// removes everything it owned but its data, which a responder purges.
func TestProvisionSamples(t *testing.T) {
	ctx := context.Background()
	kubectl(t, "apply", "-f", "../../config/samples/wales-111.yaml", "-f", "../../config/samples/yorkshire-care-records.yaml")
	t.Cleanup(func() {
		_, _ = kubectlOutput("delete", "--ignore-not-found", "--wait=false", "-f", "../../config/samples/wales-111.yaml", "-f", "../../config/samples/yorkshire-care-records.yaml")
	})

	for _, name := range []string{"wales-111", "yorkshire-care-records"} {
		waitReady(t, name, 3*time.Minute)
	}

	t.Run("every workload's pods are ready", func(t *testing.T) {
		var sets appsv1.StatefulSetList
		if err := k8sClient.List(ctx, &sets, client.InNamespace("yorkshire-care-records-primary")); err != nil {
			t.Fatal(err)
		}
		if len(sets.Items) != 1 || sets.Items[0].Name != "document-store" || sets.Items[0].Status.ReadyReplicas != 1 {
			t.Errorf("statefulsets in yorkshire-care-records-primary = %+v, want document-store with 1 ready", sets.Items)
		}
		waitClaimBound(t, "yorkshire-care-records-primary", "records-document-store-0")
		for ns, want := range map[string][]string{
			"wales-111-primary":              {"booking", "call-handling", "referral"},
			"yorkshire-care-records-primary": {"records-api"},
		} {
			var deps appsv1.DeploymentList
			if err := k8sClient.List(ctx, &deps, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, d := range deps.Items {
				names = append(names, d.Name)
				if d.Status.ReadyReplicas != *d.Spec.Replicas {
					t.Errorf("%s/%s: %d/%d ready", ns, d.Name, d.Status.ReadyReplicas, *d.Spec.Replicas)
				}
			}
			sort.Strings(names)
			if strings.Join(names, ",") != strings.Join(want, ",") {
				t.Errorf("deployments in %s = %v, want %v", ns, names, want)
			}
			var pods corev1.PodList
			if err := k8sClient.List(ctx, &pods, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
			for _, p := range pods.Items {
				if !isPodReady(&p) {
					t.Errorf("pod %s/%s not ready", ns, p.Name)
				}
			}
		}
	})

	t.Run("network policies as specified", func(t *testing.T) {
		for _, ns := range []string{"wales-111-primary", "wales-111-standby", "yorkshire-care-records-primary"} {
			pol := &networkingv1.NetworkPolicy{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default-deny"}, pol); err != nil {
				t.Fatalf("default-deny in %s: %v", ns, err)
			}
			if len(pol.Spec.PodSelector.MatchLabels)+len(pol.Spec.PodSelector.MatchExpressions) != 0 ||
				len(pol.Spec.PolicyTypes) != 2 || len(pol.Spec.Ingress)+len(pol.Spec.Egress) != 0 {
				t.Errorf("default-deny in %s is not a deny-all: %+v", ns, pol.Spec)
			}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "allow-dns"}, &networkingv1.NetworkPolicy{}); err != nil {
				t.Errorf("allow-dns in %s: %v", ns, err)
			}
		}
		referral := &networkingv1.NetworkPolicy{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "wales-111-primary", Name: "svc-referral"}, referral); err != nil {
			t.Fatal(err)
		}
		if !egressToCIDR(referral, "10.20.0.0/16", 443) {
			t.Errorf("svc-referral does not allow egress to the ambulance CAD 10.20.0.0/16:443: %+v", referral.Spec.Egress)
		}
		calls := &networkingv1.NetworkPolicy{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "wales-111-primary", Name: "svc-call-handling"}, calls); err != nil {
			t.Fatal(err)
		}
		if !ingressFromNamespace(calls, "gateway", 8080) {
			t.Errorf("svc-call-handling does not allow ingress from the gateway namespace on 8080: %+v", calls.Spec.Ingress)
		}
		if egressToCIDR(calls, "10.20.0.0/16", 443) {
			t.Error("svc-call-handling may reach the ambulance CAD, but only referral lists it")
		}
	})

	t.Run("quotas as specified", func(t *testing.T) {
		q := &corev1.ResourceQuota{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "wales-111-primary", Name: "careplane-quota"}, q); err != nil {
			t.Fatal(err)
		}
		for res, want := range map[corev1.ResourceName]string{
			corev1.ResourceRequestsCPU: "8", corev1.ResourceRequestsMemory: "16Gi", corev1.ResourcePods: "60",
		} {
			if got := q.Spec.Hard[res]; got.Cmp(resource.MustParse(want)) != 0 {
				t.Errorf("quota %s = %s, want %s", res, got.String(), want)
			}
		}
		if used := q.Status.Used[corev1.ResourcePods]; used.Value() != 7 {
			t.Errorf("quota reports %s pods used in wales-111-primary, want 7 (3+2+2)", used.String())
		}
	})

	t.Run("an image edit rolls only its deployment", func(t *testing.T) {
		before := deploymentGenerations(t, "wales-111-primary")
		newImage := "registry.example/111/booking@sha256:" + strings.Repeat("e", 64)
		kubectl(t, "patch", "henv", "wales-111", "--type=json",
			`-p=[{"op":"replace","path":"/spec/services/2/image","value":"`+newImage+`"}]`)
		eventually(t, 2*time.Minute, "booking rolled out", func(ctx context.Context) (bool, string, error) {
			d := &appsv1.Deployment{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: "wales-111-primary", Name: "booking"}, d); err != nil {
				return false, "", err
			}
			rolled := d.Spec.Template.Spec.Containers[0].Image == newImage && d.Status.ObservedGeneration == d.Generation &&
				d.Status.UpdatedReplicas == *d.Spec.Replicas && d.Status.ReadyReplicas == *d.Spec.Replicas && d.Status.Replicas == *d.Spec.Replicas
			return rolled, fmt.Sprintf("updated %d ready %d", d.Status.UpdatedReplicas, d.Status.ReadyReplicas), nil
		})
		after := deploymentGenerations(t, "wales-111-primary")
		for name, gen := range before {
			if name == "booking" {
				if after[name] <= gen {
					t.Errorf("booking generation %d -> %d", gen, after[name])
				}
				continue
			}
			if after[name] != gen {
				t.Errorf("%s generation %d -> %d: an unrelated Deployment was rewritten", name, gen, after[name])
			}
		}
		waitReady(t, "wales-111", 2*time.Minute)
	})

	t.Run("no writes in a steady state", func(t *testing.T) {
		// The care records' first recovery point, taken as the environment
		// was built, is recorded ready once its snapshot is: a write with
		// something to do. Wait for it, and for a window with no point due.
		eventually(t, time.Minute, "yorkshire-care-records' recovery points settled", func(ctx context.Context) (bool, string, error) {
			env := &v1alpha1.HealthEnvironment{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: "yorkshire-care-records"}, env); err != nil {
				return false, "", err
			}
			rs := env.Status.Recovery
			if rs == nil || len(rs.Points) == 0 {
				return false, "no recovery point yet", nil
			}
			for _, p := range rs.Points {
				if !p.Ready {
					return false, "point " + p.Name + " not ready", nil
				}
			}
			if rs.NextPointAt == nil || time.Until(rs.NextPointAt.Time) < 3*resyncPeriod+time.Minute {
				return false, fmt.Sprintf("the next point is due at %v, within the window", rs.NextPointAt), nil
			}
			return true, "", nil
		})
		// Let the last rollout's status updates settle first.
		time.Sleep(3 * time.Second)
		before := ownedVersions(t, "wales-111", "yorkshire-care-records")
		writesBefore := operatorWrites(t)
		reconcilesBefore := reconcileCount(t)
		time.Sleep(3*resyncPeriod + time.Second)
		if n := reconcileCount(t) - reconcilesBefore; n < 4 {
			t.Fatalf("only %d reconciles during 3 resyncs of 2 environments; the check below would prove nothing", n)
		}
		after := ownedVersions(t, "wales-111", "yorkshire-care-records")
		for k, rv := range before {
			if after[k] != rv {
				t.Errorf("%s changed from resourceVersion %s to %s with nothing to do", k, rv, after[k])
			}
		}
		if len(after) != len(before) {
			t.Errorf("%d objects before, %d after", len(before), len(after))
		}
		if n := operatorWrites(t) - writesBefore; n != 0 {
			t.Errorf("the operator sent %d writes during %d resyncs of a steady state, want 0", n, 3)
		}
		t.Logf("%d objects unchanged across 3 resyncs of %s", len(before), resyncPeriod)
	})

	t.Run("deleting an environment removes all it owned but its data", func(t *testing.T) {
		const primary = "yorkshire-care-records-primary"
		kubectl(t, "delete", "henv", "yorkshire-care-records", "--wait=false")
		eventually(t, 2*time.Minute, "the environment and its workloads gone, its data kept", func(ctx context.Context) (bool, string, error) {
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: "yorkshire-care-records"}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
				return false, fmt.Sprintf("front namespace: %v", err), nil
			}
			var sets appsv1.StatefulSetList
			var deps appsv1.DeploymentList
			if err := k8sClient.List(ctx, &sets, client.InNamespace(primary)); err != nil {
				return false, "", err
			}
			if err := k8sClient.List(ctx, &deps, client.InNamespace(primary)); err != nil {
				return false, "", err
			}
			if n := len(sets.Items) + len(deps.Items); n != 0 {
				return false, fmt.Sprintf("%d workloads left in %s", n, primary), nil
			}
			ns := &corev1.Namespace{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: primary}, ns); err != nil {
				return false, "", err
			}
			if ns.Labels[v1alpha1.LabelRetained] != "true" || len(ns.OwnerReferences) != 0 || ns.DeletionTimestamp != nil {
				return false, fmt.Sprintf("%s: labels %v owners %v", primary, ns.Labels, ns.OwnerReferences), nil
			}
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: primary, Name: "records-document-store-0"}, &corev1.PersistentVolumeClaim{})
			return err == nil, fmt.Sprintf("claim: %v", err), nil
		})
		// The other environment is untouched.
		waitReady(t, "wales-111", 10*time.Second)
		// A responder purges the data, then deletes the emptied namespace.
		buildPlugin(t).asResponder(t, "purge-evidence", "yorkshire-care-records", "--yes")
		eventually(t, time.Minute, "the retained claim purged", func(ctx context.Context) (bool, string, error) {
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: primary, Name: "records-document-store-0"}, &corev1.PersistentVolumeClaim{})
			return apierrors.IsNotFound(err), fmt.Sprint(err), client.IgnoreNotFound(err)
		})
		if err := responderClient(t).Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: primary}}); err != nil {
			t.Errorf("a responder deletes the emptied retained namespace: %v", err)
		}
	})
}

// waitReady waits for an environment's Ready condition to be True for its
// current generation.
func waitReady(t *testing.T, name string, timeout time.Duration) *v1alpha1.HealthEnvironment {
	t.Helper()
	env := &v1alpha1.HealthEnvironment{}
	eventually(t, timeout, name+" Ready", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, err.Error(), nil
		}
		c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionReady)
		if c == nil {
			return false, "no Ready condition", nil
		}
		return c.Status == metav1.ConditionTrue && env.Status.ObservedGeneration == env.Generation,
			fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message), nil
	})
	return env
}

func deploymentGenerations(t *testing.T, ns string) map[string]int64 {
	t.Helper()
	var deps appsv1.DeploymentList
	if err := k8sClient.List(context.Background(), &deps, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, d := range deps.Items {
		out[d.Name] = d.Generation
	}
	return out
}

// ownedVersions maps every object careplane labels as belonging to the named
// environments (and the environments themselves) to its resourceVersion.
func ownedVersions(t *testing.T, envs ...string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	lists := []client.ObjectList{
		&corev1.NamespaceList{}, &corev1.ServiceAccountList{}, &corev1.ServiceList{}, &corev1.SecretList{},
		&corev1.ResourceQuotaList{}, &corev1.LimitRangeList{}, &appsv1.DeploymentList{}, &appsv1.ControllerRevisionList{},
		&networkingv1.NetworkPolicyList{},
	}
	for _, env := range envs {
		e := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: env}, e); err != nil {
			t.Fatal(err)
		}
		out["HealthEnvironment/"+env] = e.ResourceVersion
		for _, l := range lists {
			if err := k8sClient.List(ctx, l, client.MatchingLabels{v1alpha1.LabelEnvironment: env}); err != nil {
				t.Fatal(err)
			}
			items, err := meta.ExtractList(l)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range items {
				o := it.(client.Object)
				out[fmt.Sprintf("%T %s/%s", o, o.GetNamespace(), o.GetName())] = o.GetResourceVersion()
			}
		}
	}
	return out
}

func egressToCIDR(p *networkingv1.NetworkPolicy, cidr string, port int32) bool {
	for _, r := range p.Spec.Egress {
		if !hasPort(r.Ports, port) {
			continue
		}
		for _, peer := range r.To {
			if peer.IPBlock != nil && peer.IPBlock.CIDR == cidr {
				return true
			}
		}
	}
	return false
}

func ingressFromNamespace(p *networkingv1.NetworkPolicy, ns string, port int32) bool {
	for _, r := range p.Spec.Ingress {
		if !hasPort(r.Ports, port) {
			continue
		}
		for _, peer := range r.From {
			if peer.NamespaceSelector != nil && peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == ns {
				return true
			}
		}
	}
	return false
}

func hasPort(ports []networkingv1.NetworkPolicyPort, port int32) bool {
	for _, p := range ports {
		if p.Port != nil && p.Port.IntValue() == int(port) {
			return true
		}
	}
	return false
}
