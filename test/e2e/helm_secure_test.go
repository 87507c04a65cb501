//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// helmResponderGroup is a responder group of the release's own: the suite
// binds careplane:incident-responders to cluster-admin, so only a group
// that nothing else binds shows what careplane-responder grants.
const helmResponderGroup = "careplane:e2e-helm-responders"

// helmInstallArgs are TestHelm's install values beyond the image: the
// defaults a hosting provider gets (HA, secure metrics) said out loud, the
// responder role bound to the responder groups, and kwok's control plane
// user (see testdata/guardrails).
func helmInstallArgs() []string {
	return []string{
		"--set", "replicas=2", "--set", "podDisruptionBudget.enabled=true", "--set", "topologySpread.enabled=true",
		"--set", "metrics.secure=true", "--set", "networkPolicy.enabled=true",
		"--set", "responder.bindGroups=true",
		"--set", "guardrails.responderGroups={" + v1alpha1.DefaultResponderGroup + "," + helmResponderGroup + "}",
		"--set", "guardrails.controlPlaneUsers={kwok-admin}",
	}
}

// helmHAInstalled checks what the HA values put in the cluster: two
// replicas spread across nodes, a PodDisruptionBudget, the manager's
// NetworkPolicy, and the manager told to serve metrics securely.
func helmHAInstalled(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	name := client.ObjectKey{Namespace: helmNamespace, Name: helmRelease + "-manager"}
	var dep appsv1.Deployment
	if err := k8sClient.Get(ctx, name, &dep); err != nil {
		t.Fatal(err)
	}
	if got := ptr.Deref(dep.Spec.Replicas, 0); got != 2 {
		t.Errorf("the Deployment has %d replicas, want 2", got)
	}
	spread := dep.Spec.Template.Spec.TopologySpreadConstraints
	if len(spread) != 1 || spread[0].TopologyKey != "kubernetes.io/hostname" {
		t.Errorf("the Deployment spreads %+v, want across kubernetes.io/hostname", spread)
	}
	if args := dep.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--metrics-secure") {
		t.Errorf("the manager's args lack --metrics-secure: %v", args)
	}
	var pdb policyv1.PodDisruptionBudget
	if err := k8sClient.Get(ctx, name, &pdb); err != nil {
		t.Errorf("the release's PodDisruptionBudget: %v", err)
	}
	var np networkingv1.NetworkPolicy
	if err := k8sClient.Get(ctx, name, &np); err != nil {
		t.Errorf("the release's NetworkPolicy: %v", err)
	}
}

// helmSecureMetrics checks the manager's secure metrics endpoint, the
// manager running with the chart's ServiceAccount (and so the chart's
// TokenReview and SubjectAccessReview rights): a ServiceAccount bound to
// the chart's metrics-reader ClusterRole reads /metrics, one without it is
// refused (403), and so is a request without a token (401).
func helmSecureMetrics(t *testing.T, op *operator) {
	t.Helper()
	ctx := context.Background()
	reader, stranger := "e2e-metrics-reader", "e2e-metrics-stranger"
	for _, sa := range []string{reader, stranger} {
		guardUpsert(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: helmNamespace, Name: sa}})
	}
	binding := "careplane-e2e-helm-metrics-reader"
	kubectl(t, "create", "clusterrolebinding", binding, "--clusterrole="+helmRelease+"-metrics-reader",
		"--serviceaccount="+helmNamespace+":"+reader)
	t.Cleanup(func() { _, _ = kubectlOutput("delete", "clusterrolebinding", binding, "--ignore-not-found") })
	token := func(sa string) string {
		out, err := kubectlOutput("create", "token", sa, "-n", helmNamespace, "--duration=10m")
		if err != nil {
			t.Fatalf("a token for %s: %v\n%s", sa, err, out)
		}
		return strings.TrimSpace(out)
	}
	readerToken, strangerToken := token(reader), token(stranger)

	op.mu.Lock()
	addr := op.metricsAddr
	op.mu.Unlock()
	// The manager's certificate is self-signed (no --metrics-cert-dir), as
	// the chart's default is: the client checks who it talks to by the
	// token's answer, not the certificate.
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the self-signed metrics certificate
	get := func(ctx context.Context, scheme, token string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+"/metrics", nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := httpc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}

	eventually(t, 30*time.Second, "the metrics reader gets /metrics over HTTPS", func(ctx context.Context) (bool, string, error) {
		code, body, err := get(ctx, "https", readerToken)
		if err != nil {
			return false, err.Error(), nil
		}
		if code != http.StatusOK {
			return false, fmt.Sprintf("%d %s", code, strings.TrimSpace(body)), nil
		}
		if !strings.Contains(body, "controller_runtime_reconcile_total") {
			return false, "", fmt.Errorf("200 without controller-runtime's metrics:\n%.400s", body)
		}
		return true, "", nil
	})
	for _, c := range []struct {
		who, token string
		want       []int
	}{
		{"a ServiceAccount not bound to the metrics reader", strangerToken, []int{http.StatusForbidden}},
		{"a request without a token", "", []int{http.StatusUnauthorized}},
		// controller-runtime's filter answers 500 "Authentication failed"
		// when the TokenReview says why a token is not valid, which the
		// API server does for a token it cannot parse.
		{"a made-up token", "not-a-token", []int{http.StatusUnauthorized, http.StatusInternalServerError}},
	} {
		code, body, err := get(ctx, "https", c.token)
		if err != nil || !slices.Contains(c.want, code) || strings.Contains(body, "controller_runtime") {
			t.Errorf("%s: got %d %.200q (%v), want %v", c.who, code, strings.TrimSpace(body), err, c.want)
		}
	}
	// And nothing in clear text.
	if code, body, err := get(ctx, "http", readerToken); err == nil && code == http.StatusOK {
		t.Errorf("the manager served /metrics over plain HTTP: %.200s", body)
	}
}

// helmResponderRole acts as a member of a responder group whose only RBAC is
// the chart's careplane-responder ClusterRole (bound by
// responder.bindGroups): it may fence (spec.isolation, a FenceRequest),
// read what a responder reads, and nothing else.
func helmResponderRole(t *testing.T, env *v1alpha1.HealthEnvironment) {
	t.Helper()
	ctx := context.Background()
	// The suite's own guardrails guard the same environments: let them know
	// the group too. TestHelm's cleanup re-applies the suite's guardrails.
	guardSetResponders(t, v1alpha1.DefaultResponderGroup+","+helmResponderGroup)
	responder := guardImpersonate(t, "e2e-helm-responder", helmResponderGroup)
	fence := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"isolation":{"mode":"Fenced","reason":"e2e responder role"}}}`))

	// Allowed. Writes are server-side dry runs: RBAC and admission answer
	// as for the real thing, and nothing is fenced.
	// The guardrails see the ConfigMap's new group within seconds.
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if err = responder.client.Patch(ctx, env.DeepCopy(), fence, client.DryRunAll); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("a careplane-responder member cannot fence %s: %v", env.Name, err)
	}
	fr := &v1alpha1.FenceRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-helm-responder"},
		Spec: v1alpha1.FenceRequestSpec{Reason: "e2e responder role",
			Selector: v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"careplane.io/e2e": "helm"}}},
	}
	if err := responder.client.Create(ctx, fr, client.DryRunAll); err != nil {
		t.Errorf("a careplane-responder member files a FenceRequest: %v", err)
	}
	for what, list := range map[string]client.ObjectList{
		"HealthEnvironments":  &v1alpha1.HealthEnvironmentList{},
		"FenceRequests":       &v1alpha1.FenceRequestList{},
		"pods":                &corev1.PodList{},
		"NetworkPolicies":     &networkingv1.NetworkPolicyList{},
		"ControllerRevisions": &appsv1.ControllerRevisionList{},
	} {
		if err := responder.client.List(ctx, list); err != nil {
			t.Errorf("a careplane-responder member lists %s: %v", what, err)
		}
	}

	// Refused by RBAC: nothing beyond the runbook.
	for _, c := range []struct {
		what string
		try  func() error
	}{
		{"read Secrets", func() error {
			return responder.client.List(ctx, &corev1.SecretList{}, client.InNamespace(helmNamespace))
		}},
		{"delete a namespace", func() error {
			return responder.client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: helmNamespace}}, client.DryRunAll)
		}},
		{"create a HealthEnvironment", func() error {
			return responder.client.Create(ctx, helmEnvironment(uniqueName("helm-responder")), client.DryRunAll)
		}},
		{"delete a HealthEnvironment", func() error {
			return responder.client.Delete(ctx, env.DeepCopy(), client.DryRunAll)
		}},
		{"write an environment's status", func() error {
			return responder.client.Status().Patch(ctx, env.DeepCopy(), client.RawPatch(types.MergePatchType,
				[]byte(`{"status":{"incidents":[{"ticket":"INC-FORGED"}]}}`)), client.DryRunAll)
		}},
		{"change the guardrails' ConfigMap", func() error {
			return responder.client.Patch(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: helmNamespace, Name: helmRelease + "-guardrails"}},
				client.RawPatch(types.MergePatchType, []byte(`{"data":{"responderGroups":"everyone"}}`)), client.DryRunAll)
		}},
	} {
		if err := c.try(); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "e2e-helm-responder") {
			t.Errorf("a careplane-responder member may %s: want an RBAC Forbidden, got %v", c.what, err)
		}
	}
}

// helmResponderRunbook runs the runbook with kubectl careplane as a member of
// a responder group whose only RBAC is careplane-responder, against the
// release's manager: status, a fence the manager carries out, verify,
// revisions, the restore, and purging the evidence. The role is enough for
// every step.
func helmResponderRunbook(t *testing.T, env string) {
	t.Helper()
	// One careplane per cluster, as for the status guard: the suite's
	// freeze lets only the suite's manager write in a fenced namespace, and
	// the release's freeze stands for it. TestHelm's cleanup re-applies it.
	kubectl(t, "delete", "validatingadmissionpolicybinding", guardPolicyFreeze, guardPolicyFreeze+"-label", "--ignore-not-found")
	// A failure between the fence and the restore leaves no fenced
	// environment behind for the tests that follow.
	t.Cleanup(func() {
		e := &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: env}}
		_ = responderClient(t).Patch(context.Background(), e, client.RawPatch(types.MergePatchType,
			[]byte(`{"spec":{"isolation":{"mode":"None"}}}`)))
	})
	plugin := buildPlugin(t)
	as := []string{"--as=e2e-helm-responder", "--as-group=" + helmResponderGroup, "--as-group=system:authenticated"}
	run := func(args ...string) string {
		t.Helper()
		out, code := plugin.run(t, append(args, as...)...)
		if code != 0 {
			t.Fatalf("kubectl careplane %s as a careplane-responder member: exit %d\n%s", strings.Join(args, " "), code, out)
		}
		return out
	}
	run("status", env)
	// The dry runs read what the plans need; the role may not list
	// Secrets, and the fence's plan says what it assumed instead.
	mustContain(t, "fence --dry-run", run("fence", env, "--reason", "e2e responder role", "--dry-run"),
		"Fence plan for HealthEnvironment "+env, "the plan assumes every Secret careplane generated exists")
	mustContain(t, "fence", run("fence", env, "--reason", "e2e responder role", "--ticket", "INC-HELM", "--timeout", "90s"),
		env+" fenced after")
	run("verify", env)
	run("revisions", env)
	run("restore", env, "--dry-run")
	mustContain(t, "restore", run("restore", env, "--timeout", "120s"), env+" restored after")
	mustContain(t, "purge-evidence", run("purge-evidence", env, "--yes"), "deleted (evidence INC-HELM)")
}
