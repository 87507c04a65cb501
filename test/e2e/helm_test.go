//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// The chart's e2e release. Its name contains "careplane", so its objects are
// named careplane-helm-*: nothing clashes with the suite's own install from
// config/ (careplane-system/careplane-manager, ClusterRole careplane-manager,
// VAP careplane-isolation-guard, ...).
const (
	helmRelease   = "careplane-helm"
	helmNamespace = "careplane-helm"
	helmSA        = helmRelease + "-manager"
	helmChart     = "../../charts/careplane"
)

// crdNames are the chart's CRDs, which the suite installed from config/.
var crdNames = []string{"healthenvironments.careplane.io", "fencerequests.careplane.io"}

// TestHelm installs the chart with its HA and secure-metrics values, runs
// the manager binary with the chart's ServiceAccount (pods run no process
// on kwok), checks that its metrics answer only an authorized reader and
// that the chart's responder role can fence and nothing more, upgrades, shows that the
// chart's ClusterRole is exactly enough (one verb less and the operator
// cannot provision), and uninstalls: the CRD and the environments stay.
//
// The suite's operator is stopped for the duration so that two operators
// never reconcile the same environments at once.
func TestHelm(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	env := helmEnv(t)

	// The suite installed the CRDs itself; hand them to the release (Helm
	// adopts an object carrying its ownership metadata) so that the install,
	// the upgrade and crds.keep on uninstall are tested on the real CRDs.
	for _, crd := range crdNames {
		kubectl(t, "label", "crd", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
		kubectl(t, "annotate", "crd", crd, "meta.helm.sh/release-name="+helmRelease,
			"meta.helm.sh/release-namespace="+helmNamespace, "--overwrite")
	}

	var helmOp *operator
	t.Cleanup(func() {
		if helmOp != nil {
			helmOp.stop()
		}
		if out, err := env.run("uninstall", helmRelease, "-n", helmNamespace, "--ignore-not-found"); err != nil {
			t.Logf("helm uninstall: %v\n%s", err, out)
		}
		// The release's guardrails outlive it (guardrails.keep): remove them
		// deliberately, as docs/guardrails.md says, and give the suite its
		// own status guard back.
		helmRemoveGuardrails(t)
		if out, err := kubectlOutput("apply", "-k", guardrailsKustomization); err != nil {
			t.Errorf("re-applying the suite's guardrails: %v\n%s", err, out)
		}
		// The CRDs stay (crds.keep); give them back to the suite.
		for _, crd := range crdNames {
			_, _ = kubectlOutput("label", "crd", crd, "app.kubernetes.io/managed-by-", "helm.sh/chart-",
				"app.kubernetes.io/instance-", "app.kubernetes.io/version-", "app.kubernetes.io/name-", "app.kubernetes.io/part-of-")
			_, _ = kubectlOutput("annotate", "crd", crd, "meta.helm.sh/release-name-",
				"meta.helm.sh/release-namespace-", "helm.sh/resource-policy-")
		}
		// Only if the test got as far as stopping it: a second start would
		// leave the running one behind, reconciling beside the next tests.
		if theOperator.pid() == 0 {
			if err := theOperator.start(); err != nil {
				t.Errorf("restarting the suite's operator: %v", err)
			}
		}
		// The suite's operator finalizes the environments.
		_, _ = kubectlOutput("delete", "henv", "-l", "careplane.io/e2e=helm", "--wait=false")
		_, _ = kubectlOutput("delete", "namespace", helmNamespace, "--wait=false")
	})

	// Install, as a hosting provider would (but not waiting for the
	// Deployment: kwok's pods run nothing; --wait=hookOnly is Helm 4's --wait=false).
	t.Log("helm install")
	env.must(append([]string{"install", helmRelease, helmChart, "-n", helmNamespace, "--create-namespace", "--wait=hookOnly",
		"--set", "image.repository=registry.example/careplane/manager", "--set", "image.tag=e2e"}, helmInstallArgs()...)...)
	helmHAInstalled(t)

	// The chart's ClusterRole carries exactly the rules generated from the
	// code's markers.
	var generated rbacv1.ClusterRole
	b, err := os.ReadFile("../../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &generated); err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: helmSA}, &role); err != nil {
		t.Fatalf("the chart's ClusterRole: %v", err)
	}
	if fmt.Sprint(role.Rules) != fmt.Sprint(generated.Rules) {
		t.Fatalf("the chart's ClusterRole rules differ from config/rbac/role.yaml:\nchart: %v\ngenerated: %v", role.Rules, generated.Rules)
	}
	// The guardrails are installed, named after the release, and loaded by
	// the API server (their CEL compiles).
	for _, name := range helmPolicies {
		var vap admissionregistrationv1.ValidatingAdmissionPolicy
		eventually(t, 20*time.Second, "VAP "+name+" type-checked", func(ctx context.Context) (bool, string, error) {
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &vap); err != nil {
				return false, err.Error(), nil
			}
			if vap.Status.TypeChecking == nil {
				return false, "not type-checked yet", nil
			}
			if len(vap.Status.TypeChecking.ExpressionWarnings) > 0 {
				return false, fmt.Sprint(vap.Status.TypeChecking.ExpressionWarnings), fmt.Errorf("type-check warnings: %v", vap.Status.TypeChecking.ExpressionWarnings)
			}
			return true, "", nil
		})
	}

	// The aggregated roles: viewers read FenceRequests, and so do editors
	// (edit aggregates view), but no editor creates or deletes one: a
	// request fences a fleet, a responder's power.
	eventually(t, 20*time.Second, "the edit ClusterRole aggregates the chart's rules", func(ctx context.Context) (bool, string, error) {
		var view, edit rbacv1.ClusterRole
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: "view"}, &view); err != nil {
			return false, "", err
		}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: "edit"}, &edit); err != nil {
			return false, "", err
		}
		ready := helmGrants(view.Rules, "fencerequests", "list") && helmGrants(edit.Rules, "fencerequests", "watch") &&
			helmGrants(edit.Rules, "healthenvironments", "create")
		if !ready {
			return false, "not aggregated yet", nil
		}
		for _, verb := range []string{"create", "delete", "deletecollection", "update", "patch"} {
			if helmGrants(edit.Rules, "fencerequests", verb) {
				return false, "", fmt.Errorf("the edit ClusterRole grants %s on fencerequests", verb)
			}
		}
		return true, "", nil
	})

	// The operator as the chart deploys it: the manager binary, with a token
	// of the chart's ServiceAccount and the Deployment's leader election.
	theOperator.stop()
	// One careplane per cluster: the suite's status, front and evidence pod
	// guards let only the suite's manager write status, front
	// EndpointSlices, evidence labels and policies where evidence is
	// held, so they stand aside while the release's manager is the
	// cluster's careplane (the release's own guards let only that one
	// write). The cleanup puts them back.
	kubectl(t, "delete", "validatingadmissionpolicybinding", guardPolicyStatus, guardPolicyFront,
		guardPolicyEvidencePods, guardPolicyEvidenceAccess, guardPolicyEvidenceNamespace, "--ignore-not-found")
	helmOp, err = operatorAs(theOperator.bin, t.TempDir(), helmNamespace, helmSA)
	if err != nil {
		t.Fatal(err)
	}
	startHelmOp := func() {
		t.Helper()
		// The Deployment's metrics flags too: HTTPS, authenticated and
		// authorized through the chart's RBAC.
		if err := helmOp.start("--leader-elect", "--leader-election-namespace="+helmNamespace, "--metrics-secure"); err != nil {
			t.Fatalf("starting the manager as %s/%s: %v\n%s", helmNamespace, helmSA, err, helmOp.logTail(40))
		}
	}
	startHelmOp()

	first := helmEnvironment(uniqueName("helm"))
	if err := k8sClient.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	waitReady(t, first.Name, 45*time.Second)
	t.Logf("%s Ready under the chart's RBAC after %s", first.Name, time.Since(start).Round(time.Millisecond))

	// Metrics only for those the chart's metrics-reader role admits.
	helmSecureMetrics(t, helmOp)
	// The chart's responder role, with a real identity.
	helmResponderRole(t, first)
	helmResponderRunbook(t, first.Name)

	// Upgrade with a changed value.
	t.Log("helm upgrade --set replicas=3")
	env.must("upgrade", helmRelease, helmChart, "-n", helmNamespace, "--reuse-values", "--wait=hookOnly", "--set", "replicas=3")
	var dep appsv1.Deployment
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: helmNamespace, Name: helmRelease + "-manager"}, &dep); err != nil {
		t.Fatal(err)
	}
	if got := ptr.Deref(dep.Spec.Replicas, 0); got != 3 {
		t.Fatalf("after the upgrade the Deployment has %d replicas, want 3", got)
	}

	// Exactly enough: the chart rendered with one verb less (create on
	// namespaces) and the operator cannot provision a new environment.
	t.Log("helm upgrade with a ClusterRole lacking create on namespaces")
	lacking := chartWithout(t, "namespaces", "create")
	env.must("upgrade", helmRelease, lacking, "-n", helmNamespace, "--reuse-values", "--wait=hookOnly")
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: helmSA}, &role); err != nil {
		t.Fatal(err)
	}
	for _, r := range role.Rules {
		if slices.Contains(r.Resources, "namespaces") && slices.Contains(r.Verbs, "create") {
			t.Fatalf("the variant chart's ClusterRole still allows create on namespaces: %v", r)
		}
	}
	second := helmEnvironment(uniqueName("helm-rbac"))
	if err := k8sClient.Create(ctx, second); err != nil {
		t.Fatal(err)
	}
	forbidden := regexp.MustCompile(`cannot create resource \\?"namespaces\\?"`)
	eventually(t, 20*time.Second, "the operator is forbidden to create "+second.Name+"'s namespaces", func(ctx context.Context) (bool, string, error) {
		b, err := os.ReadFile(helmOp.logPath)
		if err != nil {
			return false, "", err
		}
		return forbidden.Match(b), "no forbidden in the log yet", nil
	})
	got := &v1alpha1.HealthEnvironment{}
	if err := k8sClient.Get(ctx, clientKey(second), got); err != nil {
		t.Fatal(err)
	}
	if meta.IsStatusConditionTrue(got.Status.Conditions, v1alpha1.ConditionReady) {
		t.Fatalf("%s is Ready without create on namespaces", second.Name)
	}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: second.Name}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace %s exists (or: %v) although the operator may not create namespaces", second.Name, err)
	}

	// And the chart's own rules are enough again: back to the real chart,
	// and (to skip the failed reconcile's back-off) a restarted operator
	// provisions it.
	t.Log("helm upgrade back to the chart")
	env.must("upgrade", helmRelease, helmChart, "-n", helmNamespace, "--reuse-values", "--wait=hookOnly")
	helmOp.stop()
	startHelmOp()
	waitReady(t, second.Name, 45*time.Second)

	// Turning the guardrails off in an upgrade leaves them in force
	// (guardrails.keep): an environment may be fenced.
	t.Log("helm upgrade --set guardrails.enabled=false")
	env.must("upgrade", helmRelease, helmChart, "-n", helmNamespace, "--reuse-values", "--wait=hookOnly", "--set", "guardrails.enabled=false")
	helmGuardrailsInForce(t, "after helm upgrade --set guardrails.enabled=false")
	env.must("upgrade", helmRelease, helmChart, "-n", helmNamespace, "--reuse-values", "--wait=hookOnly", "--set", "guardrails.enabled=true")

	// Uninstall: the CRD (crds.keep), every environment and the guardrails
	// (guardrails.keep) stay; the rest goes.
	helmOp.stop()
	t.Log("helm uninstall")
	env.must("uninstall", helmRelease, "-n", helmNamespace)
	helmGuardrailsInForce(t, "after helm uninstall")
	for _, crd := range crdNames {
		out, err := kubectlOutput("get", "crd", crd, "-o", "jsonpath={.metadata.deletionTimestamp}")
		if err != nil {
			t.Fatalf("CRD %s is gone after helm uninstall (crds.keep): %v\n%s", crd, err, out)
		}
		if strings.TrimSpace(out) != "" {
			t.Fatalf("CRD %s is being deleted after helm uninstall (crds.keep): deletionTimestamp %s", crd, out)
		}
	}
	for _, e := range []*v1alpha1.HealthEnvironment{first, second} {
		if err := k8sClient.Get(ctx, clientKey(e), &v1alpha1.HealthEnvironment{}); err != nil {
			t.Fatalf("HealthEnvironment %s after helm uninstall: %v", e.Name, err)
		}
	}
	eventually(t, 20*time.Second, "the release's cluster-scoped objects are gone", func(ctx context.Context) (bool, string, error) {
		for _, o := range []client.Object{
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: helmSA}},
			&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: helmSA}},
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: helmRelease + "-metrics-auth"}},
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: helmRelease + "-metrics-reader"}},
			&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: helmRelease + "-responder"}},
			&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: helmRelease + "-responder"}},
		} {
			if err := k8sClient.Get(ctx, clientKey(o), o); !apierrors.IsNotFound(err) {
				return false, fmt.Sprintf("%T %s: %v", o, o.GetName(), err), nil
			}
		}
		return true, "", nil
	})
	t.Logf("install, run, upgrade, RBAC variant and uninstall in %s", time.Since(start).Round(time.Millisecond))
}

// helmPolicies are the release's guardrail policies; each has a binding of
// the same name (the freeze a second one, helmFreezeLabelBinding).
var helmPolicies = []string{helmRelease + "-isolation-guard", helmRelease + "-fence-request-guard",
	helmRelease + "-fenced-namespace-freeze", helmRelease + "-status-guard", helmRelease + "-front-guard", helmRelease + "-manager-bounds"}

const helmFreezeLabelBinding = helmRelease + "-fenced-namespace-freeze-label"

// helmGuardrailsInForce checks that the release's guardrail policies, their
// bindings and their parameter ConfigMap exist, and that the API server
// still enforces them: the release's manager may not mint a token in
// kube-system (its manager bounds), and the admin kubeconfig may not write
// an environment's status (its status guard; the suite's stands aside
// during TestHelm).
func helmGuardrailsInForce(t *testing.T, when string) {
	t.Helper()
	ctx := context.Background()
	objs := []client.Object{
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: helmNamespace, Name: helmRelease + "-guardrails"}},
		&admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: helmFreezeLabelBinding}},
	}
	for _, name := range helmPolicies {
		objs = append(objs, &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}},
			&admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: name}})
	}
	for _, o := range objs {
		if err := k8sClient.Get(ctx, clientKey(o), o); err != nil {
			t.Errorf("%T %s %s: %v", o, o.GetName(), when, err)
		} else if !o.GetDeletionTimestamp().IsZero() {
			t.Errorf("%T %s is being deleted %s", o, o.GetName(), when)
		}
	}
	// The release's manager, with RBAC of its own for the probe (after the
	// uninstall the release's ClusterRole is gone, and RBAC would refuse
	// before admission).
	managerName := "system:serviceaccount:" + helmNamespace + ":" + helmSA
	probe := []client.Object{
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "careplane-e2e-helm-probe"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}}}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "careplane-e2e-helm-probe"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "careplane-e2e-helm-probe"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: managerName}}},
	}
	for _, o := range probe {
		guardUpsert(t, o)
		t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), o) })
	}
	manager := guardImpersonate(t, managerName, "system:serviceaccounts", "system:serviceaccounts:"+helmNamespace)
	token := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "helm-token",
			Annotations: map[string]string{corev1.ServiceAccountNameKey: "clusterrole-aggregation-controller"}},
		Type: corev1.SecretTypeServiceAccountToken,
	}
	guardEventuallyDenied(t, 20*time.Second, "the release's manager bounds deny a token Secret in kube-system "+when,
		helmRelease+"-manager-bounds", "may not CREATE secrets", func(ctx context.Context) error {
			return manager.client.Create(ctx, token, client.DryRunAll)
		})

	// The admin kubeconfig, not the release's manager, writing status.
	var envs v1alpha1.HealthEnvironmentList
	if err := k8sClient.List(ctx, &envs, client.MatchingLabels{"careplane.io/e2e": "helm"}); err != nil || len(envs.Items) == 0 {
		t.Fatalf("listing the test's environments: %v (%d)", err, len(envs.Items))
	}
	err := k8sClient.Status().Patch(ctx, &envs.Items[0], client.RawPatch(types.MergePatchType,
		[]byte(`{"status":{"incidents":[{"ticket":"INC-FORGED"}]}}`)), client.DryRunAll)
	guardDenied(t, err, helmRelease+"-status-guard", "only the careplane manager ("+managerName+")")
}

// helmRemoveGuardrails deletes the release's guardrails as docs/guardrails.md
// says to once no environment is fenced: bindings first, then the policies,
// then the parameter ConfigMap.
func helmRemoveGuardrails(t *testing.T) {
	t.Helper()
	sel := "app.kubernetes.io/instance=" + helmRelease + ",app.kubernetes.io/component=guardrails"
	for _, kind := range []string{"validatingadmissionpolicybinding", "validatingadmissionpolicy"} {
		if out, err := kubectlOutput("delete", kind, "-l", sel, "--ignore-not-found"); err != nil {
			t.Errorf("deleting the release's %s: %v\n%s", kind, err, out)
		}
	}
	if out, err := kubectlOutput("delete", "configmap", "-n", helmNamespace, "-l", sel, "--ignore-not-found"); err != nil {
		t.Errorf("deleting the release's guardrails ConfigMap: %v\n%s", err, out)
	}
}

// helmGrants says whether rules grant verb on resource of careplane.io.
func helmGrants(rules []rbacv1.PolicyRule, resource, verb string) bool {
	anyOf := func(list []string, v string) bool { return slices.Contains(list, v) || slices.Contains(list, "*") }
	for _, r := range rules {
		if anyOf(r.APIGroups, v1alpha1.GroupVersion.Group) && anyOf(r.Resources, resource) && anyOf(r.Verbs, verb) {
			return true
		}
	}
	return false
}

// helmEnvironment is a small environment, labelled for the test's cleanup.
func helmEnvironment(name string) *v1alpha1.HealthEnvironment {
	return &v1alpha1.HealthEnvironment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"careplane.io/e2e": "helm"}},
		Spec: v1alpha1.HealthEnvironmentSpec{
			Tenant:   v1alpha1.Tenant{DisplayName: "Helm e2e"},
			Services: []v1alpha1.Service{{Name: "web", Image: guardImage, Port: 8080, Replicas: ptr.To[int32](1)}},
		},
	}
}

// operatorAs is buildOperator's variant for another ServiceAccount: it
// reuses an already built manager binary and writes a kubeconfig holding a
// token of namespace/serviceAccount.
func operatorAs(bin, dir, namespace, serviceAccount string) (*operator, error) {
	token, err := kubectlOutput("create", "token", serviceAccount, "-n", namespace, "--duration=1h")
	if err != nil {
		return nil, fmt.Errorf("creating a token for %s/%s: %w\n%s", namespace, serviceAccount, err, token)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData,
		CertificateAuthority: cfg.CAFile, InsecureSkipTLSVerify: cfg.Insecure}
	kc.AuthInfos[serviceAccount] = &clientcmdapi.AuthInfo{Token: strings.TrimSpace(token)}
	kc.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: serviceAccount}
	kc.CurrentContext = "e2e"
	kubeconfig := filepath.Join(dir, serviceAccount+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		return nil, err
	}
	return &operator{bin: bin, kubeconfig: kubeconfig, logPath: filepath.Join(dir, "manager.log")}, nil
}

// chartWithout copies the chart and removes verb from the generated rule
// that grants it on resource, returning the copy's path.
func chartWithout(t *testing.T, resource, verb string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "careplane")
	if out, err := exec.Command("cp", "-r", helmChart, dir).CombinedOutput(); err != nil {
		t.Fatalf("copying the chart: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "files", "manager-rules.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rules []rbacv1.PolicyRule
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	removed := false
	for i, r := range rules {
		if slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) {
			if len(r.Resources) != 1 {
				t.Fatalf("the rule granting %s on %s covers other resources too: %v", verb, resource, r.Resources)
			}
			rules[i].Verbs = slices.DeleteFunc(slices.Clone(r.Verbs), func(v string) bool { return v == verb })
			removed = true
		}
	}
	if !removed {
		t.Fatalf("no generated rule grants %s on %s", verb, resource)
	}
	out, err := yaml.Marshal(rules)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// helmRunner runs the pinned helm (HELM, or the repository's bin/helm)
// against the test cluster, with its own cache and config directories.
type helmRunner struct {
	t   *testing.T
	bin string
	env []string
}

func helmEnv(t *testing.T) *helmRunner {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		bin = filepath.Join("..", "..", "bin", "helm")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("helm not found at %s (run make helm): %v", bin, err)
	}
	home := t.TempDir()
	return &helmRunner{t: t, bin: bin, env: append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)}
}

func (h *helmRunner) run(args ...string) (string, error) {
	cmd := exec.Command(h.bin, args...)
	cmd.Env = h.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (h *helmRunner) must(args ...string) string {
	h.t.Helper()
	start := time.Now()
	out, err := h.run(args...)
	if err != nil {
		h.t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	h.t.Logf("helm %s: %s", args[0], time.Since(start).Round(time.Millisecond))
	return out
}
