//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// The network-policy-api CRDs TestAdminTierFence installs (see
// testdata/network-policy-api/README.md), and the kinds they serve.
var (
	networkPolicyAPIDir = filepath.Join("testdata", "network-policy-api")
	cnpCRD              = "clusternetworkpolicies.policy.networking.k8s.io"
	anpCRD              = "adminnetworkpolicies.policy.networking.k8s.io"
	cnpGVK              = schema.GroupVersionKind{Group: "policy.networking.k8s.io", Version: "v1alpha2", Kind: "ClusterNetworkPolicy"}
	anpGVK              = schema.GroupVersionKind{Group: "policy.networking.k8s.io", Version: "v1alpha1", Kind: "AdminNetworkPolicy"}
)

// TestAdminTierFence installs SIG Network's ClusterNetworkPolicy and
// AdminNetworkPolicy CRDs while the operator runs, and fences one
// environment four times: with both served (a ClusterNetworkPolicy in tier
// Admin is written); with the cluster's admission refusing that policy (the
// rest of the fence goes ahead, Fenced waits for it); with only
// AdminNetworkPolicy served (one of those); and with neither (the fence is
// its NetworkPolicy alone, as in TestFenceAndRestore, which runs after this
// test with the CRDs gone). Each restore removes the cluster-scoped policy.
// The CRDs are removed at the end: every other test runs without them.
//
// kwok runs no network plugin, so nothing here enforces these policies: the
// test checks what careplane writes, and that the API server accepts it.
func TestAdminTierFence(t *testing.T) {
	kubectl(t, "apply", "--server-side", "-f", networkPolicyAPIDir)
	t.Cleanup(func() {
		// Gone before the next test, whatever happened here.
		if out, err := kubectlOutput("delete", "crd", cnpCRD, anpCRD, "--ignore-not-found", "--wait=true", "--timeout=60s"); err != nil {
			t.Errorf("removing the network-policy-api CRDs: %v\n%s", err, out)
		}
	})
	kubectl(t, "wait", "--for=condition=Established", "--timeout=30s", "crd/"+cnpCRD, "crd/"+anpCRD)

	name := uniqueName("fence-admin")
	applyFenceEnv(t, name)
	env := waitReady(t, name, 2*time.Minute)
	ns := name + "-primary"
	policy := "careplane-fence-" + name

	// fence fences the environment and returns the Fenced condition's message.
	fence := func(t *testing.T, ticket string) string {
		t.Helper()
		fenceCommand(t, name, ticket)
		e := waitFencedTrue(t, name)
		if got := policyNames(t, ns); strings.Join(got, ",") != "careplane-fence" {
			t.Errorf("policies in the fenced namespace: %v, want only careplane-fence", got)
		}
		return meta.FindStatusCondition(e.Status.Conditions, v1alpha1.ConditionFenced).Message
	}
	restore := func(t *testing.T) {
		t.Helper()
		responder(t, "patch", "henv", name, "--type=merge", "-p", `{"spec":{"isolation":{"mode":"None"}}}`)
		waitReady(t, name, 2*time.Minute)
		if got := policyNames(t, ns); containsPrefix(got, "careplane-fence") {
			t.Errorf("policies after restore: %v; the fence is still there", got)
		}
	}

	t.Run("both served: a ClusterNetworkPolicy in tier Admin", func(t *testing.T) {
		msg := fence(t, "INC-ADMIN-1")
		pol := getAdminPolicy(t, cnpGVK, policy)
		if pol == nil {
			t.Fatalf("no ClusterNetworkPolicy %s while fenced", policy)
		}
		checkAdminPolicy(t, pol, env, ns, true)
		if anp := getAdminPolicy(t, anpGVK, policy); anp != nil {
			t.Errorf("an AdminNetworkPolicy %s was written as well; one admin-tier policy is enough", policy)
		}
		if want := "admin-tier ClusterNetworkPolicy " + policy; !strings.Contains(msg, want) {
			t.Errorf("Fenced message %q does not name %q", msg, want)
		}

		// Nothing but a restore lifts it: deleted, it is back by the next resync.
		if err := k8sClient.Delete(context.Background(), pol); err != nil {
			t.Fatal(err)
		}
		eventually(t, 3*resyncPeriod+10*time.Second, "ClusterNetworkPolicy rewritten", func(ctx context.Context) (bool, string, error) {
			return getAdminPolicy(t, cnpGVK, policy) != nil, "absent", nil
		})

		restore(t)
		if getAdminPolicy(t, cnpGVK, policy) != nil {
			t.Errorf("ClusterNetworkPolicy %s still exists after the restore", policy)
		}
	})

	t.Run("a refused admin-tier write holds up nothing else", func(t *testing.T) {
		// A cluster's own admission rules may refuse the policy (here: a
		// ValidatingAdmissionPolicy reserving priority 0). The rest of the
		// fence goes ahead; Fenced says what is missing until it is written.
		if out, err := kubectlStdin(refuseClusterNetworkPolicies, "apply", "-f", "-"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		t.Cleanup(func() { _, _ = kubectlStdin(refuseClusterNetworkPolicies, "delete", "-f", "-", "--ignore-not-found") })
		eventually(t, 15*time.Second, "the admission policy in force", func(ctx context.Context) (bool, string, error) {
			out, err := kubectlStdin(probeClusterNetworkPolicy, "create", "--dry-run=server", "-f", "-")
			return err != nil && strings.Contains(out, "reserved for"), out, nil
		})

		fenceCommand(t, name, "INC-ADMIN-REFUSED")
		eventually(t, 30*time.Second, "every other step done, Fenced=False naming the admin-tier policy", func(ctx context.Context) (bool, string, error) {
			e := &v1alpha1.HealthEnvironment{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, e); err != nil {
				return false, "", err
			}
			c := meta.FindStatusCondition(e.Status.Conditions, v1alpha1.ConditionFenced)
			var deps appsv1.DeploymentList
			if err := k8sClient.List(ctx, &deps, client.InNamespace(ns)); err != nil {
				return false, "", err
			}
			running := 0
			for _, d := range deps.Items {
				if d.Spec.Replicas == nil || *d.Spec.Replicas != 0 {
					running++
				}
			}
			slice := &discoveryv1.EndpointSlice{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: name, Name: "call-handling-careplane"}, slice); err != nil {
				return false, "", err
			}
			ok := c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonFenceIncomplete &&
				strings.Contains(c.Message, "ClusterNetworkPolicy "+policy) && running == 0 && len(slice.Endpoints) == 0
			return ok, fmt.Sprintf("Fenced=%v; %d deployments running; %d front endpoints", c, running, len(slice.Endpoints)), nil
		})
		if got := policyNames(t, ns); strings.Join(got, ",") != "careplane-fence" {
			t.Errorf("policies in the fenced namespace: %v, want only careplane-fence", got)
		}

		_, _ = kubectlStdin(refuseClusterNetworkPolicies, "delete", "-f", "-")
		e := waitFencedTrue(t, name)
		if msg := meta.FindStatusCondition(e.Status.Conditions, v1alpha1.ConditionFenced).Message; !strings.Contains(msg, "ClusterNetworkPolicy "+policy) {
			t.Errorf("Fenced message %q does not name the ClusterNetworkPolicy", msg)
		}
		restore(t)
	})

	t.Run("only AdminNetworkPolicy served", func(t *testing.T) {
		// The operator's RESTMapper still maps ClusterNetworkPolicy: its
		// writes now meet NotFound, and the fence falls back.
		kubectl(t, "delete", "crd", cnpCRD, "--wait=true", "--timeout=60s")
		msg := fence(t, "INC-ADMIN-2")
		pol := getAdminPolicy(t, anpGVK, policy)
		if pol == nil {
			t.Fatalf("no AdminNetworkPolicy %s while fenced", policy)
		}
		checkAdminPolicy(t, pol, env, ns, false)
		if want := "admin-tier AdminNetworkPolicy " + policy; !strings.Contains(msg, want) {
			t.Errorf("Fenced message %q does not name %q", msg, want)
		}
		restore(t)
		if getAdminPolicy(t, anpGVK, policy) != nil {
			t.Errorf("AdminNetworkPolicy %s still exists after the restore", policy)
		}
	})

	t.Run("neither served: the NetworkPolicy alone", func(t *testing.T) {
		kubectl(t, "delete", "crd", anpCRD, "--wait=true", "--timeout=60s")
		msg := fence(t, "INC-ADMIN-3")
		if strings.Contains(msg, "admin-tier") {
			t.Errorf("Fenced message %q names an admin-tier policy; none is served", msg)
		}
		pol := &networkingv1.NetworkPolicy{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "careplane-fence"}, pol); err != nil {
			t.Fatal(err)
		}
		restore(t)
	})
}

// refuseClusterNetworkPolicies is an admission policy refusing every
// ClusterNetworkPolicy, as a cluster reserving priority 0 would.
const refuseClusterNetworkPolicies = `apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: careplane-e2e-refuse-cnp}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [policy.networking.k8s.io], apiVersions: ["*"], operations: [CREATE, UPDATE], resources: [clusternetworkpolicies]}
  validations:
  - {expression: "false", message: "priority 0 is reserved for the cluster administrators"}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: careplane-e2e-refuse-cnp}
spec: {policyName: careplane-e2e-refuse-cnp, validationActions: [Deny]}
`

// probeClusterNetworkPolicy is a valid ClusterNetworkPolicy, created with
// --dry-run=server to see whether the admission policy is in force.
const probeClusterNetworkPolicy = `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: careplane-e2e-probe}
spec:
  tier: Admin
  priority: 500
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: careplane-e2e-probe}}}
`

// getAdminPolicy reads a cluster-scoped policy of kind gvk; nil when it, or
// its kind, does not exist.
func getAdminPolicy(t *testing.T, gvk schema.GroupVersionKind, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, u)
	switch {
	case err == nil:
		return u
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		return nil
	default:
		t.Fatalf("reading %s %s: %v", gvk.Kind, name, err)
		return nil
	}
}

// checkAdminPolicy checks what a cluster administrator would read off the
// admin-tier fence policy: whose it is (careplane's labels, and no owner:
// garbage collection of a deleted environment must not lift its fence),
// whom it applies to, at what priority, and its rules in order.
func checkAdminPolicy(t *testing.T, pol *unstructured.Unstructured, env *v1alpha1.HealthEnvironment, ns string, tier bool) {
	t.Helper()
	if owners := pol.GetOwnerReferences(); len(owners) != 0 {
		t.Errorf("ownerReferences = %+v, want none", owners)
	}
	if l := pol.GetLabels(); l[v1alpha1.LabelEnvironment] != env.Name || l[v1alpha1.LabelManagedBy] != v1alpha1.ManagedByValue {
		t.Errorf("labels = %v", l)
	}
	want := map[string]any{
		"priority": 0,
		"subject":  map[string]any{"namespaces": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": ns}}},
		"ingress": []any{
			map[string]any{"name": "careplane-forensics", "action": "Pass",
				"from": []any{map[string]any{"namespaces": map[string]any{"matchExpressions": []any{map[string]any{
					"key": "kubernetes.io/metadata.name", "operator": "In", "values": []any{"forensics"}}}}}}},
			map[string]any{"name": "careplane-deny-all", "action": "Deny", "from": []any{map[string]any{"namespaces": map[string]any{}}}},
		},
		"egress": []any{
			map[string]any{"name": "careplane-deny-all", "action": "Deny",
				"to": []any{map[string]any{"namespaces": map[string]any{}}, map[string]any{"networks": []any{"0.0.0.0/0", "::/0"}}}},
		},
	}
	if tier {
		want["tier"] = "Admin"
	}
	got, want2 := jsonString(t, pol.Object["spec"]), jsonString(t, want)
	if got != want2 {
		t.Errorf("%s %s spec =\n%s\nwant\n%s", pol.GetKind(), pol.GetName(), got, want2)
	}
}

func jsonString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
