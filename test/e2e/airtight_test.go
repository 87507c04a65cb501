//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/controllers"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/netpol"
)

// The fence's promise tried as the attackers of THREATS.md would: the
// tenant's own deployment pipeline (a ServiceAccount with the built-in edit
// role in the primary namespace), a responder's fleet fence losing its
// request, a stressed engineer deleting a fenced environment. Each test
// names the hole of the adversarial review it closes.

// tenantPipeline binds the edit role in ns to a new ServiceAccount there and
// returns a client that acts as it (impersonating it, with the groups the
// API server gives a ServiceAccount).
func tenantPipeline(t *testing.T, ns string) client.Client {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-pipeline"}}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-pipeline-edit"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa.Name}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
	}
	for _, o := range []client.Object{sa, rb} {
		if err := k8sClient.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + sa.Name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	cl, err := client.New(c, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	// edit lets it write NetworkPolicies: check, so that a refusal later
	// means the fence, not a test without rights. The probe leaves
	// evidence pods out, as every policy must in a namespace that holds
	// them (careplane-evidence-pod-access).
	probe := allowEverything(ns, "tenant-probe")
	probe.Spec.PodSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: v1alpha1.LabelEvidence, Operator: metav1.LabelSelectorOpDoesNotExist}}}
	if err := cl.Create(ctx, probe); err != nil {
		t.Fatalf("the tenant pipeline cannot write in its own namespace: %v", err)
	}
	if err := cl.Delete(ctx, probe); err != nil {
		t.Fatal(err)
	}
	return cl
}

// squattedFence is the deny policy's name taken by the tenant first, as an
// allow-all in and out.
func squattedFence(ns string) *networkingv1.NetworkPolicy {
	pol := guardAllowAll(ns)
	pol.Name = "careplane-fence"
	return pol
}

// incidents is the number of incidents env records.
func incidents(t *testing.T, name string) int {
	t.Helper()
	env := &v1alpha1.HealthEnvironment{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, env); err != nil {
		t.Fatal(err)
	}
	return len(env.Status.Incidents)
}

// touch makes the operator reconcile name now: a change of the spec
// outside spec.isolation, as a GitOps tool makes.
func touch(t *testing.T, name string) {
	t.Helper()
	kubectl(t, "patch", "henv", name, "--type=merge", "-p",
		fmt.Sprintf(`{"spec":{"tenant":{"displayName":"Touched %d"}}}`, time.Now().UnixNano()))
}

// stays checks cond for d, failing the test the first time it is false.
func stays(t *testing.T, d time.Duration, what string, cond func(ctx context.Context) (bool, string, error)) {
	t.Helper()
	ctx := context.Background()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		ok, detail, err := cond(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatalf("%s did not hold: %s", what, detail)
		}
	}
}

// verifyLive evaluates every policy of ns against every pod in it.
func verifyLive(t *testing.T, ns string, forensics []string) netpol.Result {
	t.Helper()
	ctx := context.Background()
	nsObj := &corev1.Namespace{}
	var pols networkingv1.NetworkPolicyList
	var pods corev1.PodList
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	if err := k8sClient.List(ctx, &pols, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if err := k8sClient.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	res, err := netpol.VerifyFence(netpol.NamespaceInput(nsObj, pols.Items, pods.Items, forensics))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestTenantCannotFakeOrWidenTheFence (holes 1 and 2): the tenant's
// pipeline takes the deny policy's name with an allow-all before any fence.
// That is no fence: nothing is restored, no credential rotated, no incident
// recorded. When a responder then fences, the policy is written whole (its
// allow rules gone), Fenced=True comes only with the isolation verified, and
// from then on the pipeline can change nothing in the namespace.
func TestTenantCannotFakeOrWidenTheFence(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("fake-fence")
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	ns := name + "-primary"
	tenant := tenantPipeline(t, ns)
	saBefore := serviceAccountUIDs(t, ns)

	if err := tenant.Create(ctx, squattedFence(ns)); err != nil {
		t.Fatalf("the tenant could not create its policy: %v", err)
	}
	touch(t, name)
	stays(t, 6*time.Second, "no fake fence and no fake restore", func(ctx context.Context) (bool, string, error) {
		env := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		for _, typ := range []string{v1alpha1.ConditionFenced, v1alpha1.ConditionRestoring} {
			if c := meta.FindStatusCondition(env.Status.Conditions, typ); c != nil && c.Status == metav1.ConditionTrue {
				return false, fmt.Sprintf("%s=True/%s: %s", typ, c.Reason, c.Message), nil
			}
		}
		if len(env.Status.Incidents) != 0 || env.Status.Isolation != nil {
			return false, fmt.Sprintf("incidents %+v, status.isolation %+v", env.Status.Incidents, env.Status.Isolation), nil
		}
		return true, "", nil
	})
	for n, uid := range serviceAccountUIDs(t, ns) {
		if saBefore[n] != uid {
			t.Errorf("service account %s was rotated by a fence nobody asked for", n)
		}
	}

	fenceCommand(t, name, "INC-FAKE")
	env := waitFencedTrue(t, name)
	pol := &networkingv1.NetworkPolicy{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "careplane-fence"}, pol); err != nil {
		t.Fatal(err)
	}
	if len(pol.Spec.Egress) != 0 || len(pol.Spec.Ingress) != 1 || len(pol.Spec.Ingress[0].From) != 1 || pol.Spec.Ingress[0].From[0].NamespaceSelector == nil {
		t.Errorf("the tenant's allow rules survived the fence: %+v", pol.Spec)
	}
	if len(pol.OwnerReferences) != 0 {
		t.Errorf("the deny policy has owners %v: garbage collection could take it", pol.OwnerReferences)
	}
	if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionIsolationVerified); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Fenced=True with IsolationVerified %+v", c)
	}
	if res := verifyLive(t, ns, []string{"forensics"}); !res.Isolated {
		t.Errorf("the fenced namespace is not isolated: %s", res.Summary())
	}
	// Frozen: the pipeline can neither add an allow nor change the fence.
	if err := tenant.Create(ctx, allowEverything(ns, "tenant-reopen")); err == nil {
		t.Error("the tenant pipeline created an allow policy in the fenced namespace")
	}
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"egress":[{}]}}`))
	if err := tenant.Patch(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "careplane-fence"}}, patch); err == nil {
		t.Error("the tenant pipeline widened the deny policy")
	}
}

// TestFenceRevokesAndRestoreRemovesWhatTheTenantAdded (hole 8): a
// ServiceAccount of the tenant's own is revoked by the fence like
// careplane's; a pod careplane did not start is kept as evidence and
// verified; the restore removes the tenant's CronJob, Deployment,
// ReplicationController and RoleBinding and drops a sidecar another field manager injected into careplane's
// Deployment.
func TestFenceRevokesAndRestoreRemovesWhatTheTenantAdded(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("clean-rebuild")
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	ns := name + "-primary"
	tenant := tenantPipeline(t, ns)

	backdoor := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "backdoor"}}
	if err := tenant.Create(ctx, backdoor); err != nil {
		t.Fatal(err)
	}
	cron := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "miner"},
		Spec: batchv1.CronJobSpec{Schedule: "*/1 * * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "m", Image: "registry.example/miner@sha256:" + strings.Repeat("9", 64)}}}}}}},
	}
	if err := tenant.Create(ctx, cron); err != nil {
		t.Fatal(err)
	}
	// edit grants no RBAC writes; a tenant's namespace admin (or its
	// pipeline with admin) does. Created as such here.
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "backdoor-edit"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "backdoor"}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
	}
	if err := k8sClient.Create(ctx, rb); err != nil {
		t.Fatal(err)
	}
	// Workload controllers of the tenant's own, which would start their
	// pods again once the fence quota goes.
	shadow := guardPodObject(ns, "")
	shadow.Labels = map[string]string{"app": "shadow"}
	if err := tenant.Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shadow"},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: shadow.Labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: shadow.ObjectMeta, Spec: shadow.Spec}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := tenant.Create(ctx, &corev1.ReplicationController{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shadow-rc"},
		Spec: corev1.ReplicationControllerSpec{Selector: map[string]string{"app": "shadow-rc"},
			Template: &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "shadow-rc"}}, Spec: shadow.Spec}},
	}); err != nil {
		t.Fatal(err)
	}
	// A sidecar, injected with another field manager.
	sidecar := []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"exfil","image":"registry.example/exfil@sha256:` +
		strings.Repeat("8", 64) + `"}]}}}}`)
	if err := tenant.Patch(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "referral"}},
		client.RawPatch(types.StrategicMergePatchType, sidecar), client.FieldOwner("tenant-pipeline")); err != nil {
		t.Fatal(err)
	}
	backdoorUID := func() types.UID {
		sa := &corev1.ServiceAccount{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "backdoor"}, sa); err != nil {
			return ""
		}
		return sa.UID
	}
	before := backdoorUID()

	fenceCommand(t, name, "INC-REBUILD")
	waitFencedTrue(t, name)
	if uid := backdoorUID(); uid != "" && uid == before {
		t.Errorf("the tenant's ServiceAccount backdoor kept its UID (and its tokens) through the fence")
	}

	responder(t, "patch", "henv", name, "--type=merge", "-p", restorePatch)
	eventually(t, 2*time.Minute, name+" restored", func(ctx context.Context) (bool, string, error) {
		env := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced)
		return c != nil && c.Reason == v1alpha1.ReasonNotFenced && len(env.Status.Incidents) == 1, fmt.Sprintf("%+v", c), nil
	})
	for _, o := range []client.Object{&batchv1.CronJob{}, &rbacv1.RoleBinding{}, &corev1.ServiceAccount{}, &appsv1.Deployment{}, &corev1.ReplicationController{}} {
		key := client.ObjectKey{Namespace: ns, Name: map[string]string{"*v1.CronJob": "miner", "*v1.RoleBinding": "backdoor-edit", "*v1.ServiceAccount": "backdoor",
			"*v1.Deployment": "shadow", "*v1.ReplicationController": "shadow-rc"}[fmt.Sprintf("%T", o)]}
		if err := k8sClient.Get(ctx, key, o); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s survived the restore (err %v)", o, key, err)
		}
	}
	dep := &appsv1.Deployment{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "referral"}, dep); err != nil {
		t.Fatal(err)
	}
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name == "exfil" {
			t.Errorf("the injected sidecar survived the restore: %+v", dep.Spec.Template.Spec.Containers)
		}
	}
	// The responders are told what the tenant had left, and only that:
	// careplane's own Deployments of the fence and their ReplicaSets go
	// too, but are not the tenant's.
	var evs eventsv1.EventList
	if err := k8sClient.List(ctx, &evs); err != nil {
		t.Fatal(err)
	}
	var note string
	for _, e := range evs.Items {
		if e.Regarding.Name == name && e.Reason == "TenantObjectsRemoved" {
			note = e.Note
		}
	}
	for _, want := range []string{"CronJob miner", "Deployment shadow", "ReplicationController shadow-rc", "RoleBinding backdoor-edit"} {
		if !strings.Contains(note, want) {
			t.Errorf("the TenantObjectsRemoved event does not name %s: %q", want, note)
		}
	}
	for _, ours := range []string{"Deployment call-handling", "Deployment referral", "ReplicaSet call-handling", "ReplicaSet referral"} {
		if strings.Contains(note, ours) {
			t.Errorf("the TenantObjectsRemoved event names careplane's own %s as the tenant's: %q", ours, note)
		}
	}
}

// TestFleetFenceOutlivesItsRequest (hole 5): a FenceRequest fences an
// environment whose spec still says None. Its finalizer cannot be stripped
// while it holds the environment, by a responder or the admin kubeconfig
// (careplane-fence-request-guard). Without the guardrails the request is
// deleted, its finalizer stripped: the fence stays, and nothing is
// restored. Only the hand-over (the spec says Fenced) and then a restore
// lift it.
func TestFleetFenceOutlivesItsRequest(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("orphan-fence")
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	label := "e2e/fleet-" + name
	kubectl(t, "label", "henv", name, label+"=yes")

	rc := responderClient(t)
	fr := &v1alpha1.FenceRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.FenceRequestSpec{Reason: "supplier breach", Ticket: "INC-FLEET",
			Selector: v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{label: "yes"}}},
	}
	if err := rc.Create(ctx, fr); err != nil {
		t.Fatal(err)
	}
	waitFencedTrue(t, name)

	strip := []string{"patch", "fencerequest", name, "--type=merge", "-p", `{"metadata":{"finalizers":null}}`}
	for who, as := range map[string][]string{"a responder": responderArgs, "the admin kubeconfig": nil} {
		out, err := kubectlOutput(append(append([]string{}, as...), strip...)...)
		if err == nil || !strings.Contains(out, "careplane-fence-request-guard") || !strings.Contains(out, "still holds 1 environment(s)") {
			t.Errorf("%s stripping the finalizer of a request that holds %s: %v\n%s; want refused by careplane-fence-request-guard", who, name, err, out)
		}
	}

	// The guardrails gone (uninstalled, or taken away by an admin): the
	// request can vanish, and its fence stays.
	t.Cleanup(func() { kubectl(t, "apply", "-k", guardrailsKustomization) })
	kubectl(t, "delete", "validatingadmissionpolicybinding", "careplane-fence-request-guard")
	eventually(t, 30*time.Second, "the finalizer stripped without the guard", func(context.Context) (bool, string, error) {
		out, err := kubectlOutput(append(append([]string{}, responderArgs...), strip...)...)
		return err == nil, out, nil
	})
	responder(t, "delete", "fencerequest", name, "--wait=true")
	touch(t, name)
	stays(t, 6*time.Second, "the fence of a deleted request", func(ctx context.Context) (bool, string, error) {
		env := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != v1alpha1.ReasonFenceComplete || len(env.Status.Incidents) != 0 {
			return false, fmt.Sprintf("Fenced %+v, incidents %d", c, len(env.Status.Incidents)), nil
		}
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: name + "-primary", Name: "careplane-fence"}, &networkingv1.NetworkPolicy{})
		return err == nil, fmt.Sprint(err), nil
	})

	// The hand-over, then the restore.
	fenceCommand(t, name, "INC-FLEET")
	waitFencedTrue(t, name)
	responder(t, "patch", "henv", name, "--type=merge", "-p", restorePatch)
	eventually(t, 2*time.Minute, name+" restored after the hand-over", func(ctx context.Context) (bool, string, error) {
		n := incidents(t, name)
		return n == 1, fmt.Sprintf("%d incidents", n), nil
	})
}

// TestRestoreFromARevisionStaysOnIt (hole 3): restored from a known-good
// revision, the primary keeps running that revision while
// isolation.restoreRevision is set, through any later reconcile.
func TestRestoreFromARevisionStaysOnIt(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("stay-on-rev")
	applyFenceEnv(t, name)
	good := waitReady(t, name, 2*time.Minute)
	eventually(t, 30*time.Second, "a known-good revision", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, good); err != nil {
			return false, "", err
		}
		return good.Status.KnownGoodRevision != "", "", nil
	})
	revision := good.Status.KnownGoodRevision
	image := func() string {
		dep := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: name + "-primary", Name: "referral"}, dep); err != nil {
			t.Fatal(err)
		}
		return dep.Spec.Template.Spec.Containers[0].Image
	}
	goodImage := image()
	compromised := "registry.example/111/referral@sha256:" + strings.Repeat("6", 64)
	kubectl(t, "patch", "henv", name, "--type=json", "-p",
		`[{"op":"replace","path":"/spec/services/1/image","value":"`+compromised+`"}]`)
	eventually(t, time.Minute, "the new image rolled out", func(context.Context) (bool, string, error) {
		return image() == compromised, image(), nil
	})

	fenceCommand(t, name, "INC-REV")
	waitFencedTrue(t, name)
	responder(t, "patch", "henv", name, "--type=merge", "-p", `{"spec":{"isolation":{"mode":"None","restoreRevision":"`+revision+`"}}}`)
	eventually(t, 2*time.Minute, name+" restored", func(ctx context.Context) (bool, string, error) {
		n := incidents(t, name)
		return n == 1, fmt.Sprintf("%d incidents", n), nil
	})
	touch(t, name)
	stays(t, 5*time.Second, "the primary on the restored revision", func(context.Context) (bool, string, error) {
		return image() == goodImage, "image " + image() + ", want " + goodImage, nil
	})
}

// TestDeletingAFencedEnvironmentKeepsItIsolated (hole 4): a stressed
// engineer with responder rights strips the fence finalizer and deletes the
// fenced environment. Garbage collection then runs, and the fenced
// namespace, its evidence pods and its deny policy stay, the namespace still
// isolated.
func TestDeletingAFencedEnvironmentKeepsItIsolated(t *testing.T) {
	name := uniqueName("delete-fenced")
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	ns := name + "-primary"
	fenceCommand(t, name, "INC-DEL")
	waitFencedTrue(t, name)
	if len(evidencePods(t, ns)) == 0 {
		t.Fatal("no evidence pods to keep")
	}
	t.Cleanup(func() {
		rc := responderClient(t)
		_ = rc.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	})

	deleteFencedEnvironment(name)
	eventually(t, time.Minute, "the environment gone", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &v1alpha1.HealthEnvironment{})
		return apierrors.IsNotFound(err), fmt.Sprint(err), nil
	})
	// Give the garbage collector time to act on the orphans.
	eventually(t, time.Minute, "the front namespace collected", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &corev1.Namespace{})
		return apierrors.IsNotFound(err), fmt.Sprint(err), nil
	})
	stays(t, 5*time.Second, "the fence of a deleted environment", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "careplane-fence"}, &networkingv1.NetworkPolicy{}); err != nil {
			return false, "deny policy: " + err.Error(), nil
		}
		return true, "", nil
	})
	if len(evidencePods(t, ns)) == 0 {
		t.Error("the evidence pods went with the environment")
	}
	if res := verifyLive(t, ns, []string{"forensics"}); !res.Isolated {
		t.Errorf("the fenced namespace of a deleted environment is not isolated: %s", res.Summary())
	}

	// Re-created under the same name, with mode None (which anyone may
	// create): the earlier fence is not the new object's to lift.
	applyFenceEnv(t, name)
	eventually(t, time.Minute, "the re-created environment reports the conflict", func(ctx context.Context) (bool, string, error) {
		env := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, err.Error(), nil
		}
		c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionReady)
		return c != nil && c.Reason == v1alpha1.ReasonNamespaceConflict, fmt.Sprintf("%+v", c), nil
	})
	stays(t, 5*time.Second, "the fence under a re-created environment", func(ctx context.Context) (bool, string, error) {
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			return false, "", err
		}
		if nsObj.Labels[v1alpha1.LabelFenced] != "true" {
			return false, fmt.Sprintf("namespace labels %v", nsObj.Labels), nil
		}
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "careplane-fence"}, &networkingv1.NetworkPolicy{})
		return err == nil, fmt.Sprint(err), nil
	})
}

// TestTenantRacingTheFence (hole 1): the tenant's pipeline writes in its
// namespace as fast as it can for the whole fence — an allow policy, a
// field added to the deny policy, a ServiceAccount of its own, a pod
// deleted — from before the responder's fence until Fenced=True. Whatever
// it managed before the freeze, nothing of it survives the fence: one
// policy, exactly the deny policy; no ServiceAccount but those recreated
// under the fence; every pod left is evidence; the isolation verified.
func TestTenantRacingTheFence(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("race")
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	ns := name + "-primary"
	tenant := tenantPipeline(t, ns)

	stop := make(chan struct{})
	done := make(chan [2]int)
	go func() {
		var tried, admitted int
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- [2]int{tried, admitted}
				return
			default:
			}
			var err error
			switch i % 4 {
			case 0:
				err = tenant.Create(ctx, allowEverything(ns, fmt.Sprintf("race-allow-%d", i)))
			case 1:
				err = tenant.Patch(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "careplane-fence"}},
					client.RawPatch(types.MergePatchType, []byte(`{"spec":{"egress":[{}],"ingress":[{}]}}`)))
			case 2:
				err = tenant.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("race-sa-%d", i)}})
			case 3:
				var pods corev1.PodList
				if err = tenant.List(ctx, &pods, client.InNamespace(ns)); err == nil && len(pods.Items) > 0 {
					err = tenant.Delete(ctx, &pods.Items[i%len(pods.Items)])
				}
			}
			tried++
			if err == nil {
				admitted++
			}
		}
	}()
	time.Sleep(500 * time.Millisecond) // the race is on before the fence
	fenceCommand(t, name, "INC-RACE")
	env := waitFencedTrue(t, name)
	close(stop)
	counts := <-done
	t.Logf("the tenant tried %d writes during the fence; %d were admitted (before the freeze)", counts[0], counts[1])

	if got := policyNames(t, ns); strings.Join(got, ",") != "careplane-fence" {
		t.Errorf("policies in the fenced namespace: %v, want only careplane-fence", got)
	}
	pol := &networkingv1.NetworkPolicy{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "careplane-fence"}, pol); err != nil {
		t.Fatal(err)
	}
	if len(pol.Spec.Egress) != 0 || len(pol.Spec.Ingress) != 1 || len(pol.Spec.Ingress[0].From) != 1 {
		t.Errorf("the deny policy is not deny-all but forensics: %+v", pol.Spec)
	}
	fenceID := ""
	nsObj := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	fenceID = nsObj.Annotations["careplane.io/fence-id"]
	var sas corev1.ServiceAccountList
	if err := k8sClient.List(ctx, &sas, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, sa := range sas.Items {
		if sa.Annotations["careplane.io/credentials-revision"] != fenceID || fenceID == "" {
			t.Errorf("service account %s survived the fence (credentials revision %q, fence %q)", sa.Name,
				sa.Annotations["careplane.io/credentials-revision"], fenceID)
		}
	}
	var pods corev1.PodList
	if err := k8sClient.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Labels[v1alpha1.LabelEvidence] == "" {
			t.Errorf("pod %s runs behind the fence and is not evidence", p.Name)
		}
	}
	if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionIsolationVerified); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("IsolationVerified = %+v", c)
	}
	if res := verifyLive(t, ns, []string{"forensics"}); !res.Isolated {
		t.Errorf("not isolated: %s", res.Summary())
	}
}

// TestOrphaningDeleteOfAFencedEnvironmentKeepsTheFence: a stressed engineer
// with responder rights deletes a fenced environment with --cascade=orphan.
// The garbage collector may not write the frozen Namespace, so the
// environment waits with its finalizers; nothing of the fence is the
// environment's to orphan (the deny policy and the quota carry no owner), so
// careplane and the collector do not fight over it; and the responder's
// restore of the deleted environment releases it with its primary namespace
// still fenced and isolated, its evidence kept.
func TestOrphaningDeleteOfAFencedEnvironmentKeepsTheFence(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("orphan-fenced")
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	ns := name + "-primary"
	fenceCommand(t, name, "INC-ORPHAN")
	waitFencedTrue(t, name)
	t.Cleanup(func() {
		rc := responderClient(t)
		_ = rc.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	})
	if len(evidencePods(t, ns)) == 0 {
		t.Fatal("no evidence pods to keep")
	}
	fenceObjects := func(ctx context.Context) (policyRV, quotaRV string, why string) {
		pol := &networkingv1.NetworkPolicy{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.FencePolicyName}, pol); err != nil {
			return "", "", "deny policy: " + err.Error()
		}
		q := &corev1.ResourceQuota{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.FenceQuotaName}, q); err != nil {
			return "", "", "fence quota: " + err.Error()
		}
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			return "", "", "namespace: " + err.Error()
		}
		if nsObj.Labels[v1alpha1.LabelFenced] != "true" {
			return "", "", fmt.Sprintf("namespace labels %v", nsObj.Labels)
		}
		return pol.ResourceVersion, q.ResourceVersion, ""
	}
	policyRV, quotaRV, why := fenceObjects(ctx)
	if why != "" {
		t.Fatal(why)
	}

	responder(t, "delete", "henv", name, "--cascade=orphan", "--wait=false")
	stays(t, 10*time.Second, "the fence of an environment deleted with --cascade=orphan, untouched", func(ctx context.Context) (bool, string, error) {
		env := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "environment: " + err.Error(), nil
		}
		if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced); env.DeletionTimestamp == nil || c == nil || c.Status != metav1.ConditionTrue {
			return false, fmt.Sprintf("deleting %v, Fenced %+v", env.DeletionTimestamp != nil, c), nil
		}
		p, q, why := fenceObjects(ctx)
		if why != "" {
			return false, why, nil
		}
		// Rewritten would mean careplane and the collector take turns.
		return p == policyRV && q == quotaRV, fmt.Sprintf("deny policy resourceVersion %s → %s, quota %s → %s", policyRV, p, quotaRV, q), nil
	})
	if res := verifyLive(t, ns, []string{"forensics"}); !res.Isolated {
		t.Errorf("the fenced namespace of an environment being deleted is not isolated: %s", res.Summary())
	}

	// The restore a deleted environment gets: released, its fenced
	// namespace kept, still fenced, with its evidence.
	responder(t, "patch", "henv", name, "--type=merge", "-p", restorePatch)
	eventually(t, time.Minute, "the released environment gone", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &v1alpha1.HealthEnvironment{})
		return apierrors.IsNotFound(err), fmt.Sprint(err), nil
	})
	stays(t, 5*time.Second, "the fence of the released environment's namespace", func(ctx context.Context) (bool, string, error) {
		_, _, why := fenceObjects(ctx)
		return why == "", why, nil
	})
	if len(evidencePods(t, ns)) == 0 {
		t.Error("the evidence pods went with the environment")
	}
	if res := verifyLive(t, ns, []string{"forensics"}); !res.Isolated {
		t.Errorf("the fenced namespace of a released environment is not isolated: %s", res.Summary())
	}
}
