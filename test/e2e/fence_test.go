//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/netpol"
)

// fenceEnvYAML is a small environment for the fence tests, applied with
// kubectl so that a later re-apply of the same manifest is the GitOps case.
func fenceEnvYAML(name string) string {
	d := func(c string) string { return "@sha256:" + strings.Repeat(c, 64) }
	return fmt.Sprintf(`apiVersion: careplane.io/v1alpha1
kind: HealthEnvironment
metadata:
  name: %s
spec:
  tenant: {displayName: Fence test %s}
  services:
  - name: call-handling
    image: registry.example/111/call-handling%s
    replicas: 2
    port: 8080
    critical: true
    talksTo: [referral]
    allowFrom:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: gateway}}
    generatedSecrets: [db-password]
  - name: referral
    image: registry.example/111/referral%s
    replicas: 1
    port: 8443
    generatedSecrets: [cad-key]
  integrations:
  - {name: ambulance-cad, cidrs: [10.20.0.0/16], ports: [443], services: [referral]}
  isolation:
    forensicsFrom: {matchLabels: {kubernetes.io/metadata.name: forensics}}
`, name, name, d("1"), d("2"))
}

// applyFenceEnv writes the manifest of an environment to a file and applies
// it with kubectl; it returns the file.
func applyFenceEnv(t *testing.T, name string) string {
	t.Helper()
	return applyFenceEnvs(t, name)
}

// applyFenceEnvs applies the manifests of several environments with one
// kubectl call, so that the operator receives them together; it returns the
// file.
func applyFenceEnvs(t *testing.T, names ...string) string {
	t.Helper()
	docs := make([]string, len(names))
	for i, name := range names {
		docs[i] = fenceEnvYAML(name)
		t.Cleanup(func() { deleteFencedEnvironment(name) })
	}
	file := filepath.Join(t.TempDir(), names[0]+".yaml")
	if err := os.WriteFile(file, []byte(strings.Join(docs, "---\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-f", file)
	return file
}

// deleteFencedEnvironment removes a test environment even if it is still
// fenced, by lifting the finalizer that protects a fenced environment.
func deleteFencedEnvironment(name string) {
	as := func(args ...string) { _, _ = kubectlOutput(append(append([]string{}, responderArgs...), args...)...) }
	as("delete", "henv", name, "--wait=false", "--ignore-not-found")
	as("patch", "henv", name, "--type=merge", "-p", `{"metadata":{"finalizers":null}}`)
}

// fenceCommand is the raw responder path: a merge patch of spec.isolation.
func fenceCommand(t *testing.T, name, ticket string) {
	t.Helper()
	responder(t, "patch", "henv", name, "--type=merge", "-p", fencePatch(ticket))
}

// fencePatch is the merge patch a responder sends to fence an environment.
func fencePatch(ticket string) string {
	return fmt.Sprintf(`{"spec":{"isolation":{"mode":"Fenced","reason":"ransomware indicators on call handling","ticket":%q}}}`, ticket)
}

// restorePatch is the merge patch a responder sends to restore an
// environment.
const restorePatch = `{"spec":{"isolation":{"mode":"None"}}}`

func waitFencedTrue(t *testing.T, name string) *v1alpha1.HealthEnvironment {
	t.Helper()
	env := &v1alpha1.HealthEnvironment{}
	eventually(t, 30*time.Second, name+" Fenced=True", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, err.Error(), nil
		}
		c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced)
		if c == nil {
			return false, "no Fenced condition", nil
		}
		return c.Status == metav1.ConditionTrue && c.Reason == v1alpha1.ReasonFenceComplete,
			fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message), nil
	})
	return env
}

func serviceAccountUIDs(t *testing.T, ns string) map[string]types.UID {
	t.Helper()
	var sas corev1.ServiceAccountList
	if err := k8sClient.List(context.Background(), &sas, client.InNamespace(ns), client.HasLabels{v1alpha1.LabelEnvironment}); err != nil {
		t.Fatal(err)
	}
	out := map[string]types.UID{}
	for _, sa := range sas.Items {
		out[sa.Name] = sa.UID
	}
	return out
}

// secretValues maps each generated credential of namespace ns
// (<service>.<secret>, whichever revision's Secret holds it) to its value.
func secretValues(t *testing.T, ns string) map[string]string {
	t.Helper()
	var secrets corev1.SecretList
	if err := k8sClient.List(context.Background(), &secrets, client.InNamespace(ns), client.HasLabels{v1alpha1.LabelEnvironment}); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range secrets.Items {
		parts := strings.SplitN(s.Name, ".", 3)
		credential := strings.Join(parts[:min(2, len(parts))], ".")
		if _, twice := out[credential]; twice {
			t.Errorf("two Secrets in %s hold credential %s", ns, credential)
		}
		out[credential] = string(s.Data["value"])
	}
	return out
}

// secretsNamed are the Secrets a pod spec names: volumes, projected
// volumes and environment variables.
func secretsNamed(spec *corev1.PodSpec) []string {
	var out []string
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			out = append(out, v.Secret.SecretName)
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					out = append(out, src.Secret.Name)
				}
			}
		}
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				out = append(out, e.ValueFrom.SecretKeyRef.Name)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				out = append(out, e.SecretRef.Name)
			}
		}
	}
	return out
}

// checkNoOldPodReadsTheRotatedSecrets fails unless, after a restore, every
// Secret the Deployments of namespace ns name holds the restore's
// credentials (annotated with their template's revision) and none that the
// pods kept as evidence name exists: the kubelet serves a pod whatever
// Secret has the name it gives, so a compromised pod that names one the
// restore rotated would read the new credentials.
func checkNoOldPodReadsTheRotatedSecrets(t *testing.T, ns string, evidence []corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	var deps appsv1.DeploymentList
	if err := k8sClient.List(ctx, &deps, client.InNamespace(ns), client.HasLabels{v1alpha1.LabelEnvironment}); err != nil {
		t.Fatal(err)
	}
	read := 0
	for _, d := range deps.Items {
		rev := d.Spec.Template.Annotations[build.AnnotationCredentialsRevision]
		for _, name := range secretsNamed(&d.Spec.Template.Spec) {
			sec := &corev1.Secret{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, sec); err != nil {
				t.Errorf("Deployment %s names Secret %s: %v", d.Name, name, err)
			} else if got := sec.Annotations[build.AnnotationCredentialsRevision]; got != rev {
				t.Errorf("Deployment %s of credentials revision %q names Secret %s of revision %q", d.Name, rev, name, got)
			}
			read++
		}
	}
	if read == 0 {
		t.Fatalf("no Deployment in %s names a Secret: nothing to compare the evidence pods with", ns)
	}
	named := 0
	for _, p := range evidence {
		for _, name := range secretsNamed(&p.Spec) {
			named++
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &corev1.Secret{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("evidence pod %s names Secret %s, which exists after the restore (%v): the kubelet serves it the rotated credentials", p.Name, name, err)
			}
		}
	}
	if named == 0 {
		t.Fatalf("no evidence pod in %s names a Secret: the check would pass whatever the restore did", ns)
	}
}

func policyNames(t *testing.T, ns string) []string {
	t.Helper()
	var pols networkingv1.NetworkPolicyList
	if err := k8sClient.List(context.Background(), &pols, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pols.Items {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return names
}

func evidencePods(t *testing.T, ns string) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := k8sClient.List(context.Background(), &pods, client.InNamespace(ns), client.HasLabels{v1alpha1.LabelEvidence}); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

// allowEverything is the policy a tenant (or a forgotten runbook) might
// leave or add: every pod may receive anything.
func allowEverything(ns, name string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{}},
		},
	}
}

// TestFenceAndRestore is the reason careplane exists: with three
// environments Ready, a responder fences one; it is cut off, its
// credentials die, its pods are kept as evidence, and nothing of the other
// two changes. Nothing but a restore lifts the fence; the restore rebuilds
// the site with new credentials and records the incident, and the evidence
// stays isolated.
func TestFenceAndRestore(t *testing.T) {
	ctx := context.Background()
	a, b, c := uniqueName("fence-a"), uniqueName("fence-b"), uniqueName("fence-c")
	names := []string{a, b, c}
	files := map[string]string{}
	for _, n := range names {
		files[n] = applyFenceEnv(t, n)
	}
	for _, n := range names {
		waitReady(t, n, 2*time.Minute)
	}
	ns := a + "-primary"
	// A policy careplane did not create, left in the namespace before the
	// incident: allows add up, so the fence must remove it.
	if err := k8sClient.Create(ctx, allowEverything(ns, "legacy-allow-all")); err != nil {
		t.Fatal(err)
	}
	saBefore := serviceAccountUIDs(t, ns)
	secretsBefore := secretValues(t, ns)
	if len(saBefore) != 2 || len(secretsBefore) != 2 {
		t.Fatalf("before the fence: %d service accounts, %d secrets; want 2 and 2", len(saBefore), len(secretsBefore))
	}
	var podsBefore corev1.PodList
	if err := k8sClient.List(ctx, &podsBefore, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	othersBefore := ownedVersions(t, b, c)
	// Every pod the primary namespace gets from here on: the fence's quota
	// admits none, so the ReplicaSets cannot replace the pods it detaches.
	podWatch, err := clientset.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: podsBefore.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer podWatch.Stop()

	start := time.Now()
	fenceCommand(t, a, "INC-2041")
	var denyAfter time.Duration
	eventually(t, 10*time.Second, "deny policy", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "careplane-fence"}, &networkingv1.NetworkPolicy{})
		denyAfter = time.Since(start)
		return err == nil, fmt.Sprint(err), nil
	})
	env := waitFencedTrue(t, a)
	t.Logf("fence: deny policy after %s, Fenced=True after %s (as seen by polling every 250ms)", denyAfter.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	t.Run("the deny policy is the only policy", func(t *testing.T) {
		if got := policyNames(t, ns); strings.Join(got, ",") != "careplane-fence" {
			t.Errorf("policies in the fenced namespace: %v, want only careplane-fence", got)
		}
		pol := &networkingv1.NetworkPolicy{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "careplane-fence"}, pol); err != nil {
			t.Fatal(err)
		}
		byName := []metav1.LabelSelectorRequirement{{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: []string{"forensics"}}}
		if len(pol.Spec.PodSelector.MatchLabels)+len(pol.Spec.PodSelector.MatchExpressions) != 0 || len(pol.Spec.PolicyTypes) != 2 ||
			len(pol.Spec.Egress) != 0 || len(pol.Spec.Ingress) != 1 || len(pol.Spec.Ingress[0].From) != 1 ||
			len(pol.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels) != 0 ||
			!reflect.DeepEqual(pol.Spec.Ingress[0].From[0].NamespaceSelector.MatchExpressions, byName) {
			t.Errorf("fence policy is not deny-all except forensics ingress: %+v", pol.Spec)
		}
		if !containsPrefix(env.Status.Isolation.RemovedPolicies, "legacy-allow-all") {
			t.Errorf("status.isolation.removedPolicies = %v, want legacy-allow-all reported", env.Status.Isolation.RemovedPolicies)
		}
		if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionIsolationVerified); c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("IsolationVerified = %+v, want True", c)
		}
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			t.Fatal(err)
		}
		if nsObj.Labels[v1alpha1.LabelFenced] != "true" {
			t.Errorf("namespace %s is not labelled %s=true", ns, v1alpha1.LabelFenced)
		}
	})

	t.Run("credentials are revoked", func(t *testing.T) {
		after := serviceAccountUIDs(t, ns)
		for name, uid := range saBefore {
			if after[name] == uid {
				t.Errorf("service account %s kept its UID %s: tokens bound to it still work", name, uid)
			}
		}
		if got := secretValues(t, ns); len(got) != 0 {
			t.Errorf("generated secrets still exist in the fenced namespace: %v", keys(got))
		}
		if env.Status.Isolation.CredentialsRevoked < 2 {
			t.Errorf("status.isolation.credentialsRevoked = %d, want at least 2", env.Status.Isolation.CredentialsRevoked)
		}
	})

	t.Run("pods are kept as evidence and workloads stopped", func(t *testing.T) {
		ev := evidencePods(t, ns)
		if len(ev) != len(podsBefore.Items) {
			t.Errorf("%d evidence pods, want the %d pods that ran", len(ev), len(podsBefore.Items))
		}
		for _, p := range ev {
			if p.Labels[v1alpha1.LabelEvidence] != "INC-2041" || len(p.OwnerReferences) != 0 || p.DeletionTimestamp != nil {
				t.Errorf("evidence pod %s: labels %v owners %v", p.Name, p.Labels, p.OwnerReferences)
			}
		}
		if env.Status.Isolation.EvidencePods != int32(len(ev)) {
			t.Errorf("status.isolation.evidencePods = %d, want %d", env.Status.Isolation.EvidencePods, len(ev))
		}
		var deps appsv1.DeploymentList
		if err := k8sClient.List(ctx, &deps, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for _, d := range deps.Items {
			if *d.Spec.Replicas != 0 {
				t.Errorf("deployment %s has %d replicas while fenced", d.Name, *d.Spec.Replicas)
			}
		}
	})

	t.Run("no pod starts behind the fence", func(t *testing.T) {
		q := &corev1.ResourceQuota{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.FenceQuotaName}, q); err != nil {
			t.Errorf("the fence's quota: %v", err)
		} else if pods, ok := q.Spec.Hard[corev1.ResourcePods]; !ok || !pods.IsZero() {
			t.Errorf("the fence's quota allows %v pods, want 0", q.Spec.Hard)
		}
		// The ReplicaSets saw their pods detached before the scale-down
		// reached them; any replacement they were admitted would show here.
		var started []string
		quiet := time.After(2 * time.Second)
	watching:
		for {
			select {
			case ev := <-podWatch.ResultChan():
				if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type == watch.Added {
					started = append(started, p.Name)
				}
			case <-quiet:
				break watching
			}
		}
		if len(started) > 0 {
			t.Errorf("pods started in the fenced namespace: %v", started)
		}
	})

	t.Run("the front no longer routes to the primary", func(t *testing.T) {
		for _, svc := range []string{"call-handling", "referral"} {
			slice := &discoveryv1.EndpointSlice{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: a, Name: svc + "-careplane"}, slice); err != nil {
				t.Fatal(err)
			}
			if len(slice.Endpoints) != 0 {
				t.Errorf("front slice %s still has endpoints %+v", svc, slice.Endpoints)
			}
		}
	})

	t.Run("the fence latency is observed in the metric", func(t *testing.T) {
		eventually(t, 10*time.Second, "careplane_fence_duration_seconds observed", func(ctx context.Context) (bool, string, error) {
			n, err := theOperator.metricSum(ctx, "careplane_fence_duration_seconds", nil)
			return err == nil && n >= 1, fmt.Sprintf("%v observations (%v)", n, err), nil
		})
	})

	t.Run("a warning event is recorded", func(t *testing.T) {
		eventually(t, 10*time.Second, "FenceComplete event", func(ctx context.Context) (bool, string, error) {
			var evs eventsv1.EventList
			if err := k8sClient.List(ctx, &evs); err != nil {
				return false, "", err
			}
			for _, e := range evs.Items {
				if e.Regarding.Name == a && e.Type == corev1.EventTypeWarning && e.Reason == v1alpha1.ReasonFenceComplete {
					return true, "", nil
				}
			}
			return false, "none yet", nil
		})
	})

	t.Run("other environments are untouched", func(t *testing.T) {
		after := ownedVersions(t, b, c)
		for k, rv := range othersBefore {
			if after[k] != rv {
				t.Errorf("%s changed (resourceVersion %s -> %s) when another environment was fenced", k, rv, after[k])
			}
		}
	})

	t.Run("a policy added during the fence is removed and reported", func(t *testing.T) {
		// With the guardrails installed only responders may write in a
		// fenced namespace (the guardrail tests show tenants are denied);
		// one adding an allow by mistake is the case left to the operator.
		if err := responderClient(t).Create(ctx, allowEverything(ns, "tenant-reopen")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, "tenant policy removed", func(ctx context.Context) (bool, string, error) {
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "tenant-reopen"}, &networkingv1.NetworkPolicy{})
			return apierrors.IsNotFound(err), fmt.Sprint(err), nil
		})
		eventually(t, 10*time.Second, "reported", func(ctx context.Context) (bool, string, error) {
			e := &v1alpha1.HealthEnvironment{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: a}, e); err != nil {
				return false, "", err
			}
			return e.Status.Isolation != nil && containsPrefix(e.Status.Isolation.RemovedPolicies, "tenant-reopen"),
				fmt.Sprint(e.Status.Isolation), nil
		})
	})

	t.Run("nothing but a restore lifts the fence", func(t *testing.T) {
		// Deleting a child: the fence policy comes back.
		pol := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "careplane-fence"}}
		if err := responderClient(t).Delete(ctx, pol); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, "fence policy rewritten", func(ctx context.Context) (bool, string, error) {
			err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "careplane-fence"}, &networkingv1.NetworkPolicy{})
			return err == nil, fmt.Sprint(err), nil
		})
		// Re-applying the manifest GitOps holds, which has no mode: Fenced.
		kubectl(t, "apply", "-f", files[a])
		// Resyncs.
		time.Sleep(2*resyncPeriod + time.Second)
		e := waitFencedTrue(t, a)
		if e.Spec.Isolation.Mode != v1alpha1.IsolationFenced {
			t.Errorf("re-applying the manifest changed isolation.mode to %q", e.Spec.Isolation.Mode)
		}
		if got := policyNames(t, ns); strings.Join(got, ",") != "careplane-fence" {
			t.Errorf("policies after resyncs: %v", got)
		}
	})

	t.Run("restore rebuilds with new credentials and keeps evidence isolated", func(t *testing.T) {
		fencedSAs := serviceAccountUIDs(t, ns)
		evidence := evidencePods(t, ns)
		responder(t, "patch", "henv", a, "--type=merge", "-p", restorePatch)
		e := waitReady(t, a, 2*time.Minute)
		if c := meta.FindStatusCondition(e.Status.Conditions, v1alpha1.ConditionFenced); c == nil || c.Status != metav1.ConditionFalse {
			t.Errorf("Fenced after restore = %+v", c)
		}
		if n := len(e.Status.Incidents); n != 1 {
			t.Fatalf("%d incidents recorded, want 1", n)
		}
		inc := e.Status.Incidents[0]
		if inc.Ticket != "INC-2041" || inc.FencedAt == nil || inc.RestoredAt == nil || inc.RestoredFrom != "spec" || inc.Reason == "" {
			t.Errorf("incident = %+v", inc)
		}
		after := serviceAccountUIDs(t, ns)
		for name := range saBefore {
			if after[name] == saBefore[name] || after[name] == fencedSAs[name] || after[name] == "" {
				t.Errorf("service account %s: UID %s, before the fence %s, during %s: want a new one", name, after[name], saBefore[name], fencedSAs[name])
			}
		}
		secrets := secretValues(t, ns)
		for name, v := range secretsBefore {
			if secrets[name] == "" || secrets[name] == v {
				t.Errorf("secret %s was not rotated", name)
			}
		}
		checkNoOldPodReadsTheRotatedSecrets(t, ns, evidence)
		if got := policyNames(t, ns); containsPrefix(got, "careplane-fence") || !containsPrefix(got, "careplane-evidence") || !containsPrefix(got, "default-deny") {
			t.Errorf("policies after restore: %v; want the allows and the evidence policy back, the fence gone", got)
		}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.FenceQuotaName}, &corev1.ResourceQuota{}); !apierrors.IsNotFound(err) {
			t.Errorf("the fence's quota after restore: %v, want it gone", err)
		}
		// The evidence is still there, and still isolated.
		if now := evidencePods(t, ns); len(now) != len(evidence) {
			t.Errorf("%d evidence pods after restore, want %d", len(now), len(evidence))
		}
		var pols networkingv1.NetworkPolicyList
		if err := k8sClient.List(ctx, &pols, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		in := netpol.FenceInput{Namespace: ns, NamespaceLabels: map[string]string{corev1.LabelMetadataName: ns}, Policies: pols.Items,
			ForensicsNamespaces: []string{"forensics"}}
		for i := range evidence {
			in.Pods = append(in.Pods, netpol.PodFromObject(&evidence[i]))
		}
		res, err := netpol.VerifyFence(in)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Isolated {
			t.Errorf("evidence pods are reachable after restore:\n%s", netpol.Format(res))
		}
		// The front routes to the rebuilt pods, never to evidence.
		evIPs := map[string]bool{}
		for _, p := range evidence {
			evIPs[p.Status.PodIP] = true
		}
		eventually(t, 15*time.Second, "front routes to new pods", func(ctx context.Context) (bool, string, error) {
			slice := &discoveryv1.EndpointSlice{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: a, Name: "call-handling-careplane"}, slice); err != nil {
				return false, "", err
			}
			for _, ep := range slice.Endpoints {
				if evIPs[ep.Addresses[0]] {
					return false, "", fmt.Errorf("front routes to evidence pod %s", ep.Addresses[0])
				}
			}
			return len(slice.Endpoints) == 2, fmt.Sprintf("%d endpoints", len(slice.Endpoints)), nil
		})
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			t.Fatal(err)
		}
		if _, ok := nsObj.Labels[v1alpha1.LabelFenced]; ok {
			t.Errorf("namespace still labelled fenced after restore")
		}
	})

	t.Run("the tenant cannot bring back the Secret names the evidence pods mount", func(t *testing.T) {
		// Its pipeline (edit) deletes one of careplane's Deployments and
		// marks the other's pods as of no restore: both come back on the
		// restore's revision, which the Namespace records, not on the
		// names from before the fence.
		pipeline := tenantPipeline(t, ns)
		if err := pipeline.Delete(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "referral"}}); err != nil {
			t.Fatal(err)
		}
		patch := []byte(`{"spec":{"template":{"metadata":{"annotations":{"` + build.AnnotationCredentialsRevision + `":"` + build.InitialCredentials + `"}}}}}`)
		if err := pipeline.Patch(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "call-handling"}},
			client.RawPatch(types.StrategicMergePatchType, patch)); err != nil {
			t.Fatal(err)
		}
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			t.Fatal(err)
		}
		rev := nsObj.Annotations[build.AnnotationCredentialsRevision]
		if rev == "" || rev == build.InitialCredentials {
			t.Fatalf("the restored namespace records credentials revision %q", rev)
		}
		eventually(t, 30*time.Second, "both Deployments back on the restore's revision", func(ctx context.Context) (bool, string, error) {
			var got []string
			for _, name := range []string{"call-handling", "referral"} {
				d := &appsv1.Deployment{}
				if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
					return false, err.Error(), nil
				}
				got = append(got, d.Spec.Template.Annotations[build.AnnotationCredentialsRevision])
			}
			return got[0] == rev && got[1] == rev, fmt.Sprintf("revisions %v, want %s", got, rev), nil
		})
		checkNoOldPodReadsTheRotatedSecrets(t, ns, evidencePods(t, ns))
	})
}

// TestRestoreFromUnknownRevisionKeepsTheFence checks that a restore from a
// revision that does not exist is a clear error and lifts nothing, and that
// a restore from the recorded known-good revision then works.
func TestRestoreFromUnknownRevisionKeepsTheFence(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("fence-rev")
	applyFenceEnv(t, name)
	env := waitReady(t, name, 2*time.Minute)
	eventually(t, 10*time.Second, "known-good revision", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		return env.Status.KnownGoodRevision != "", "none", nil
	})
	good := env.Status.KnownGoodRevision
	fenceCommand(t, name, "INC-7")
	waitFencedTrue(t, name)

	responder(t, "patch", "henv", name, "--type=merge", "-p", `{"spec":{"isolation":{"mode":"None","restoreRevision":"no-such-revision"}}}`)
	eventually(t, 15*time.Second, "restore blocked", func(ctx context.Context) (bool, string, error) {
		e := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, e); err != nil {
			return false, "", err
		}
		c := meta.FindStatusCondition(e.Status.Conditions, v1alpha1.ConditionRestoring)
		return c != nil && c.Reason == v1alpha1.ReasonRestoreBlocked && strings.Contains(c.Message, "no-such-revision"), fmt.Sprint(c), nil
	})
	time.Sleep(2 * time.Second)
	if got := policyNames(t, name+"-primary"); strings.Join(got, ",") != "careplane-fence" {
		t.Errorf("policies while the restore is blocked: %v, want only careplane-fence", got)
	}

	responder(t, "patch", "henv", name, "--type=merge", "-p", fmt.Sprintf(`{"spec":{"isolation":{"restoreRevision":%q}}}`, good))
	e := waitReady(t, name, 2*time.Minute)
	if n := len(e.Status.Incidents); n != 1 || e.Status.Incidents[0].RestoredFrom != good {
		t.Errorf("incidents = %+v, want one restored from %s", e.Status.Incidents, good)
	}
	_ = ctx
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
