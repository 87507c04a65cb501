//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// restrictedPodSpec is a pod spec with one container that Pod Security's
// restricted level admits: only careplane's guardrails or clean-up stop it.
func restrictedPodSpec(container string) corev1.PodSpec {
	return corev1.PodSpec{
		SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		Containers:      []corev1.Container{restrictedContainer(container)},
	}
}

func restrictedContainer(name string) corev1.Container {
	return corev1.Container{Name: name, Image: "registry.example/" + name + ":1",
		SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), RunAsNonRoot: ptr.To(true),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}}
}

// TestFenceCleansTheStandby (issue 13, hole 8, for the standby): before the
// fence, the tenant's pipeline, with edit in the standby namespace too,
// plants what would keep a hold on the site that serves once traffic moves
// there: an allow-all policy, an allow added to careplane's default-deny, a
// sidecar in careplane's Deployment, an external IP on careplane's Service,
// a Deployment, a CronJob and a NodePort Service of its own, and a bare pod.
// The fence freezes the standby, then removes every one of them before the
// standby's credentials are replaced: careplane's own objects lose what the
// tenant added, in place, and the standby serves throughout.
func TestFenceCleansTheStandby(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("standby-clean")
	applyFailoverEnv(t, name, "{standby: Warm, trigger: Automatic, unavailableAfter: 5s}")
	waitReady(t, name, 2*time.Minute)
	waitStandbyRunning(t, ctx, name)
	standby := name + "-standby"
	user := "tenant-pipeline-" + name
	tenant := tenantIdentity(t, user, name, name+"-primary", standby)
	asTenant := client.FieldOwner("tenant-pipeline")

	// What the pipeline plants before the fence.
	allowAll := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "tenant-allow-all"},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{}}, Egress: []networkingv1.NetworkPolicyEgressRule{{}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}}}
	miner := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "miner"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "miner"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "miner"}}, Spec: restrictedPodSpec("miner")}}}
	nightlySpec := restrictedPodSpec("nightly")
	nightlySpec.RestartPolicy = corev1.RestartPolicyNever
	nightly := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "nightly"},
		Spec: batchv1.CronJobSpec{Schedule: "* * * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
			Template: corev1.PodTemplateSpec{Spec: nightlySpec}}}}}
	nodePort := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "tenant-nodeport"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "miner"},
			Ports: []corev1.ServicePort{{Port: 80}}}}
	implant := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "tenant-implant"}, Spec: restrictedPodSpec("implant")}
	pathType := networkingv1.PathTypePrefix
	ingress := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "tenant-ingress"},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &pathType, Backend: networkingv1.IngressBackend{
				Service: &networkingv1.IngressServiceBackend{Name: "call-handling", Port: networkingv1.ServiceBackendPort{Number: 8080}}}}}}}}}}}
	// An allow held by a finalizer of the tenant's, and being deleted: it
	// still acts until it goes, and the freeze keeps anyone else from
	// taking the finalizer off.
	held := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "tenant-held-allow", Finalizers: []string{"tenant.example/hold"}},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{}}, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	for _, o := range []client.Object{allowAll, miner, nightly, nodePort, implant, ingress, held} {
		if err := tenant.Create(ctx, o, asTenant); err != nil {
			t.Fatalf("the tenant pipeline could not create %T %s before the fence: %v", o, o.GetName(), err)
		}
	}
	sidecar, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		"containers": []corev1.Container{restrictedContainer("sidecar")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tenant.Delete(ctx, held); err != nil {
		t.Fatal(err)
	}
	// A binding that reads Secrets, held by a finalizer and being deleted
	// (the platform's: edit cannot write RoleBindings). RBAC ignores the
	// deletion: it grants until it goes.
	heldBinding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "tenant-held-binding", Finalizers: []string{"tenant.example/hold"}},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "tenant-ci-" + name}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "admin"},
	}
	if err := k8sClient.Create(ctx, heldBinding); err != nil {
		t.Fatal(err)
	}
	if err := k8sClient.Delete(ctx, heldBinding); err != nil {
		t.Fatal(err)
	}
	// Its changes to careplane's own objects, under whatever field manager
	// it likes (careplane's and the controller manager's names included),
	// or none (managedFields cleared).
	for _, p := range []struct {
		obj   client.Object
		patch client.Patch
		as    string
	}{
		{&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: build.DefaultDenyPolicyName}},
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"egress":[{}]}}`)), "careplane"},
		{&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "call-handling"}},
			client.RawPatch(types.StrategicMergePatchType, sidecar), "tenant-pipeline"},
		{&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "call-handling"}},
			client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"managedFields":[{}]}}`)), "tenant-pipeline"},
		{&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "call-handling"}},
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"externalIPs":["203.0.113.9"]}}`)), "kube-controller-manager"},
	} {
		if err := tenant.Patch(ctx, p.obj, p.patch, client.FieldOwner(p.as)); err != nil {
			t.Fatalf("the tenant pipeline could not change careplane's %T %s before the fence: %v", p.obj, p.obj.GetName(), err)
		}
	}
	// careplane's own reconcile leaves what the tenant added (it applies
	// only its own fields), and the standby runs the sidecar.
	touch(t, name)
	eventually(t, 2*time.Minute, "the standby runs the tenant's sidecar and pods", func(ctx context.Context) (bool, string, error) {
		var pods corev1.PodList
		if err := k8sClient.List(ctx, &pods, client.InNamespace(standby)); err != nil {
			return false, "", err
		}
		withSidecar, running := 0, map[string]bool{}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
				continue
			}
			running[p.Labels["app"]] = true
			running[p.Name] = true
			if p.Labels[v1alpha1.LabelService] == "call-handling" && hasContainer(p.Spec.Containers, "sidecar") {
				withSidecar++
			}
		}
		return withSidecar == 2 && running["miner"] && running["tenant-implant"], fmt.Sprintf("%d call-handling pods with the sidecar, running %v", withSidecar, running), nil
	})
	if p := readPolicy(t, standby, build.DefaultDenyPolicyName); len(p.Spec.Egress) == 0 {
		t.Fatal("the tenant's allow in careplane's default-deny did not survive careplane's reconcile: the test plants nothing")
	}
	// And it swaps the image of one of careplane's pods, in place, as the
	// controller manager.
	var running corev1.PodList
	if err := k8sClient.List(ctx, &running, client.InNamespace(standby), client.MatchingLabels{v1alpha1.LabelService: "call-handling"}); err != nil {
		t.Fatal(err)
	}
	var swapped string
	for _, p := range running.Items {
		if p.DeletionTimestamp == nil && hasContainer(p.Spec.Containers, "sidecar") {
			swapped = p.Name
			break
		}
	}
	image := client.RawPatch(types.StrategicMergePatchType, []byte(`{"spec":{"containers":[{"name":"call-handling","image":"registry.example/evil:1"}]}}`))
	if err := tenant.Patch(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: swapped}}, image,
		client.FieldOwner("kube-controller-manager")); err != nil {
		t.Fatalf("the tenant pipeline could not swap the image of careplane's pod %q: %v", swapped, err)
	}

	// The dry run lists the clean-up.
	out := buildPlugin(t).asResponder(t, "fence", name, "--reason", "standby clean dry run", "--ticket", "INC-DRY", "--dry-run")
	for _, want := range [][]string{
		{"delete", "NetworkPolicy", "tenant-allow-all"},
		{"write-whole", "NetworkPolicy", build.DefaultDenyPolicyName},
		{"write-whole", "Deployment", "call-handling"},
		{"write-whole", "Service", "call-handling"},
		{"delete", "Ingress", "tenant-ingress"},
		{"release-finalizers", "NetworkPolicy", "tenant-held-allow"},
		{"delete", "Pod", swapped},
		{"delete", "Deployment", "miner"},
		{"delete", "CronJob", "nightly"},
		{"delete", "Service", "tenant-nodeport"},
		{"delete", "Pod", "tenant-implant"},
		{"delete", "RoleBinding", "tenant-pipeline-edit"},
		{"release-finalizers", "RoleBinding", "tenant-held-binding"},
	} {
		if !planLists(out, want[0], want[1], standby, want[2]) {
			t.Errorf("the fence's dry run does not list %v:\n%s", want, out)
		}
	}

	// From the failover on, the front never routes to nothing, while the
	// clean-up writes the Deployment whole and the standby rolls.
	gaps := fenceOntoStandby(t, name, "INC-STANDBY-CLEAN")
	waitFencedTrue(t, name)

	// What was the tenant's is gone.
	for _, o := range []client.Object{allowAll, miner, nightly, nodePort, ingress, held, heldBinding} {
		eventually(t, 30*time.Second, fmt.Sprintf("%T %s gone from the standby", o, o.GetName()), func(ctx context.Context) (bool, string, error) {
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(o), o.DeepCopyObject().(client.Object))
			return apierrors.IsNotFound(err), fmt.Sprint(err), nil
		})
	}
	// So are its pods, and careplane's carry no sidecar.
	eventually(t, 2*time.Minute, "the standby runs careplane's pods alone, as careplane wrote them", func(ctx context.Context) (bool, string, error) {
		var pods corev1.PodList
		if err := k8sClient.List(ctx, &pods, client.InNamespace(standby)); err != nil {
			return false, "", err
		}
		dep := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: standby, Name: "call-handling"}, dep); err != nil {
			return false, "", err
		}
		var left []string
		for _, p := range pods.Items {
			if p.Labels[v1alpha1.LabelService] != "call-handling" || hasContainer(p.Spec.Containers, "sidecar") ||
				p.Spec.Containers[0].Image != dep.Spec.Template.Spec.Containers[0].Image {
				left = append(left, p.Name+" "+p.Spec.Containers[0].Image+" "+strings.Join(containerNames(p.Spec.Containers), ","))
			}
		}
		return len(left) == 0, fmt.Sprintf("still there: %v", left), nil
	})
	// careplane's own objects lost what the tenant added, and no field of
	// them is the tenant's any longer.
	if p := readPolicy(t, standby, build.DefaultDenyPolicyName); len(p.Spec.Egress) != 0 {
		t.Errorf("careplane's default-deny after the fence: egress %+v, managers %v", p.Spec.Egress, managers(p.ManagedFields))
	}
	dep := &appsv1.Deployment{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: standby, Name: "call-handling"}, dep); err != nil {
		t.Fatal(err)
	}
	if hasContainer(dep.Spec.Template.Spec.Containers, "sidecar") || managedBy(dep.ManagedFields, "tenant-pipeline") {
		t.Errorf("careplane's Deployment after the fence: containers %v, managers %v", containerNames(dep.Spec.Template.Spec.Containers), managers(dep.ManagedFields))
	}
	svc := &corev1.Service{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: standby, Name: "call-handling"}, svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.ExternalIPs) != 0 || managedBy(svc.ManagedFields, "tenant-pipeline") {
		t.Errorf("careplane's Service after the fence: externalIPs %v, managers %v", svc.Spec.ExternalIPs, managers(svc.ManagedFields))
	}
	// The responders are told what went.
	var evs eventsv1.EventList
	if err := k8sClient.List(ctx, &evs); err != nil {
		t.Fatal(err)
	}
	var notes []string
	for _, e := range evs.Items {
		if e.Regarding.Name == name && e.Reason == "StandbyCleaned" {
			notes = append(notes, e.Note)
		}
	}
	for _, want := range []string{"NetworkPolicy tenant-allow-all (deleted)", "Deployment miner (deleted)", "CronJob nightly (deleted)",
		"Pod tenant-implant (deleted)", "Deployment call-handling (written whole)", "Ingress tenant-ingress (deleted)",
		"NetworkPolicy tenant-held-allow (finalizers taken off)", "Pod " + swapped + " (deleted)", "RoleBinding tenant-pipeline-edit (deleted)", "RoleBinding tenant-held-binding (finalizers taken off)"} {
		if !slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, want) }) {
			t.Errorf("no StandbyCleaned event names %q: %q", want, notes)
		}
	}

	// A write to careplane's object that got in after it was written whole
	// (one admitted as the freeze came in; here the cluster's admin, whom
	// the freeze lets through) is undone too: the standby Namespace, which
	// only careplane writes, records what was written.
	sbNs := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: standby}, sbNs); err != nil {
		t.Fatal(err)
	}
	if rec := sbNs.Annotations["careplane.io/standby-written"]; !strings.Contains(rec, `"NetworkPolicy/`+build.DefaultDenyPolicyName+`"`) {
		t.Errorf("the standby Namespace's record of what was written whole = %q, want default-deny in it", rec)
	}
	late := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: build.DefaultDenyPolicyName}}
	if err := k8sClient.Patch(ctx, late, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"egress":[{}]}}`)), client.FieldOwner("late-writer")); err != nil {
		t.Fatal(err)
	}
	touch(t, name)
	eventually(t, 30*time.Second, "the late allow in careplane's default-deny undone", func(ctx context.Context) (bool, string, error) {
		p := &networkingv1.NetworkPolicy{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(late), p); err != nil {
			return false, "", err
		}
		return len(p.Spec.Egress) == 0, fmt.Sprintf("egress %+v", p.Spec.Egress), nil
	})

	// The standby serves throughout, until it runs the fence's credentials
	// without the sidecar.
	primaryNs := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: name + "-primary"}, primaryNs); err != nil {
		t.Fatal(err)
	}
	waitStandbyRolled(t, standby, fence.RecordOf(primaryNs).ID)
	gaps.check(t)

	responder(t, "patch", "henv", name, "--type=merge", "-p", restorePatch)
	waitRestored(t, name)
	eventually(t, 30*time.Second, "the standby's freeze and record lifted with the fence", func(ctx context.Context) (bool, string, error) {
		ns := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: standby}, ns); err != nil {
			return false, "", err
		}
		_, recorded := ns.Annotations["careplane.io/standby-written"]
		return standbyFrozenFor(ns) == "" && !recorded, fmt.Sprintf("annotations %v", ns.Annotations), nil
	})
}

func hasContainer(cs []corev1.Container, name string) bool {
	return slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == name })
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func readPolicy(t *testing.T, ns, name string) *networkingv1.NetworkPolicy {
	t.Helper()
	p := &networkingv1.NetworkPolicy{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func managedBy(managed []metav1.ManagedFieldsEntry, manager string) bool {
	return slices.ContainsFunc(managed, func(m metav1.ManagedFieldsEntry) bool { return m.Manager == manager })
}

func managers(managed []metav1.ManagedFieldsEntry) []string {
	var out []string
	for _, m := range managed {
		out = append(out, m.Manager+"/"+string(m.Operation)+"/"+m.Subresource)
	}
	return out
}
