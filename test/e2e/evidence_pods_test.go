//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

const (
	guardPolicyEvidencePods      = "careplane-evidence-pod-guard"
	guardPolicyEvidenceAccess    = "careplane-evidence-pod-access"
	guardPolicyEvidenceNamespace = "careplane-evidence-namespace-guard"
)

// TestEvidencePodsStayTheFences: the pods a fence keeps are evidence until
// a responder purges them, also after the restore, when the freeze no longer
// guards their namespace. The tenant's pipeline (edit in the primary
// namespace) cannot forge the mark before a fence, nor, after the restore,
// put a compromised pod back on the network and behind the front by taking
// the mark off, change its image, have a ReplicaSet of its own adopt it,
// delete, evict, exec or proxy into it, or open it with a NetworkPolicy of
// its own; the cluster admin cannot delete it or relabel it either.
// A responder can, and careplane keeps naming what is left on the
// namespace.
func TestEvidencePodsStayTheFences(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("evidence-pods")
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	ns := name + "-primary"
	tenant := tenantPipeline(t, ns)

	t.Run("the tenant cannot forge the mark before a fence", func(t *testing.T) {
		forged := guardPodObject(ns, "forged-evidence")
		forged.Labels[v1alpha1.LabelEvidence] = "INC-FORGED"
		guardDenied(t, tenant.Create(ctx, forged, client.DryRunAll), guardPolicyEvidencePods, "may create a pod labelled as evidence")

		var pods corev1.PodList
		if err := k8sClient.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelService: "call-handling"}); err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) == 0 {
			t.Fatal("no call-handling pod")
		}
		mark := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+v1alpha1.LabelEvidence+`":"INC-FORGED"}}}`))
		guardDenied(t, tenant.Patch(ctx, &pods.Items[0], mark, client.DryRunAll), guardPolicyEvidencePods, "may label a pod as evidence")
	})

	// Routes planted before the fence: a NodePort Service selecting every
	// pod of the environment by a label an evidence pod keeps, held by a
	// finalizer of the pipeline's. And a field of careplane's own Service
	// that careplane does not write: nothing the tenant added may survive
	// the restore.
	planted := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "planted-nodeport", Finalizers: []string{"example.com/keep"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 8080}},
			Selector: map[string]string{v1alpha1.LabelEnvironment: name}}}
	if err := tenant.Create(ctx, planted); err != nil {
		t.Fatalf("the pipeline's NodePort Service before the fence: %v", err)
	}
	careplanes := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "call-handling"}}
	if err := tenant.Patch(ctx, careplanes, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"sessionAffinity":"ClientIP"}}`))); err != nil {
		t.Fatalf("the pipeline changing careplane's Service: %v", err)
	}

	fenceCommand(t, name, "INC-EVPODS")
	waitFencedTrue(t, name)
	// The fence removes every Service but careplane's as careplane wrote
	// it, and lets go of a finalizer that holds one: through the node, a
	// NodePort reaches the pods past NetworkPolicy on most network plugins.
	for _, svc := range []*corev1.Service{planted, careplanes} {
		eventually(t, 10*time.Second, "Service "+svc.Name+" gone with the fence", func(ctx context.Context) (bool, string, error) {
			live := &corev1.Service{}
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(svc), live)
			return apierrors.IsNotFound(err), fmt.Sprintf("%v: deletion %v, finalizers %v", err, live.DeletionTimestamp, live.Finalizers), client.IgnoreNotFound(err)
		})
	}
	var evidence corev1.PodList
	if err := k8sClient.List(ctx, &evidence, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEvidence: "INC-EVPODS"}); err != nil {
		t.Fatal(err)
	}
	if len(evidence.Items) == 0 {
		t.Fatal("the fence kept no evidence pod")
	}
	// An evidence pod keeps only careplane's evidence labels: no selector
	// of the tenant's (a Service's, a ReplicaSet's) matches it by a label
	// it ran with. Those are kept in an annotation.
	for _, p := range evidence.Items {
		for k := range p.Labels {
			if !slices.Contains(fence.EvidenceLabelKeys, k) {
				t.Errorf("evidence pod %s kept label %s (labels %v); want only %v", p.Name, k, p.Labels, fence.EvidenceLabelKeys)
			}
		}
		var moved map[string]string
		if err := json.Unmarshal([]byte(p.Annotations[build.AnnotationEvidenceLabels]), &moved); err != nil ||
			moved[build.LabelAppName] == "" || moved[v1alpha1.LabelService] != p.Labels[build.LabelEvidenceService] {
			t.Errorf("evidence pod %s: annotation %s = %q (%v), want the labels it ran with", p.Name, build.AnnotationEvidenceLabels,
				p.Annotations[build.AnnotationEvidenceLabels], err)
		}
	}
	// The first version of the namespace the freeze no longer guards must
	// already name the evidence pods: no moment is left for an eviction
	// or an exec that nothing refuses.
	w := watchNamed(t, &corev1.NamespaceList{}, ns)
	firstUnfrozen := make(chan *corev1.Namespace, 1)
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if o, ok := ev.Object.(*corev1.Namespace); ok && o.Labels[v1alpha1.LabelFenced] == "" {
				firstUnfrozen <- o
				return
			}
		}
	}()
	responder(t, "patch", "henv", name, "--type=merge", "-p", restorePatch)
	waitRestored(t, name)
	select {
	case o := <-firstUnfrozen:
		if o.Labels[build.LabelHoldsEvidence] != "true" || o.Annotations[build.AnnotationEvidencePods] == "" {
			t.Errorf("namespace %s was unfrozen (resourceVersion %s) before it named its evidence pods: labels %v, annotations %v",
				ns, o.ResourceVersion, o.Labels, o.Annotations)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the watch saw no unfrozen version of namespace %s", ns)
	}

	// careplane's Service is back, written anew: without what the
	// pipeline added.
	rebuiltSvc := &corev1.Service{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(careplanes), rebuiltSvc); err != nil || rebuiltSvc.Spec.SessionAffinity != corev1.ServiceAffinityNone {
		t.Errorf("careplane's Service %s after the restore: %v, sessionAffinity %q; want it written anew, None", careplanes.Name, err, rebuiltSvc.Spec.SessionAffinity)
	}

	// The restore removed the pipeline's binding with everything else the
	// tenant had added; its namespace admin grants it again.
	tenant = tenantPipeline(t, ns)
	pod := &evidence.Items[0]
	svc := pod.Labels[build.LabelEvidenceService]
	t.Logf("evidence pod %s of service %q, after the restore", pod.Name, svc)
	nsObj := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	if named := strings.Split(nsObj.Annotations[build.AnnotationEvidencePods], ","); !slices.Contains(named, pod.Name) ||
		nsObj.Labels[build.LabelHoldsEvidence] != "true" || len(named) != len(evidence.Items) {
		t.Errorf("namespace %s once restored: labels %v, annotations %v; want it to name the %d evidence pods",
			ns, nsObj.Labels, nsObj.Annotations, len(evidence.Items))
	}

	t.Run("after the restore the tenant cannot", func(t *testing.T) {
		// Back on the network, and behind the front: the allow policies
		// and the front select pods of the service without the mark.
		back := client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:null,%q:%q}}}`,
			v1alpha1.LabelEvidence, v1alpha1.LabelService, svc)))
		err := tenant.Patch(ctx, pod.DeepCopy(), back)
		guardDenied(t, err, guardPolicyEvidencePods, "may change an evidence pod", "pod "+pod.Name, "careplane.io/evidence=INC-EVPODS")
		if err == nil {
			eventually(t, 30*time.Second, "the relabelled pod behind the front (to show what the refusal prevents)", func(ctx context.Context) (bool, string, error) {
				slice := &discoveryv1.EndpointSlice{}
				if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: name, Name: svc + "-careplane"}, slice); err != nil {
					return false, err.Error(), nil
				}
				for _, e := range slice.Endpoints {
					if e.TargetRef != nil && e.TargetRef.Namespace == ns && e.TargetRef.Name == pod.Name {
						t.Errorf("the compromised pod %s serves the front of %s again", pod.Name, svc)
						return true, "", nil
					}
				}
				return false, fmt.Sprintf("%d endpoints, not the pod", len(slice.Endpoints)), nil
			})
		}

		image := client.RawPatch(types.StrategicMergePatchType, []byte(fmt.Sprintf(`{"spec":{"containers":[{"name":%q,"image":%q}]}}`,
			pod.Spec.Containers[0].Name, guardImage)))
		guardDenied(t, tenant.Patch(ctx, pod.DeepCopy(), image, client.DryRunAll), guardPolicyEvidencePods, "may change an evidence pod")

		guardDenied(t, tenant.Delete(ctx, pod.DeepCopy(), client.DryRunAll), guardPolicyEvidencePods, "may delete an evidence pod")

		// An exec reaches into the pod, and an eviction deletes it with no
		// DELETE request to admit: both are refused by the pod's name.
		who := guardUser{name: "system:serviceaccount:" + ns + ":tenant-pipeline",
			groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}
		if out := guardExec(who, ns, pod.Name); !strings.Contains(out, "ValidatingAdmissionPolicy '"+guardPolicyEvidenceAccess+"'") ||
			!strings.Contains(out, "may connect to (exec) evidence pod "+pod.Name) {
			t.Errorf("kubectl exec into the evidence pod as the tenant's pipeline was not refused by %s:\n%s", guardPolicyEvidenceAccess, out)
		}
		eviction := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod.Name}}
		guardDenied(t, tenant.SubResource("eviction").Create(ctx, pod.DeepCopy(), eviction), guardPolicyEvidenceAccess, "may evict evidence pod "+pod.Name)
		// A proxy's name carries a port, and a Service of the tenant's
		// could select the pod: both refused while it holds evidence.
		for _, path := range []string{"pods/" + pod.Name + ":8080", "pods/http:" + pod.Name + ":8080", "services/" + svc + ":8080"} {
			out := guardRaw(who, "/api/v1/namespaces/"+ns+"/"+path+"/proxy/")
			if !strings.Contains(out, "ValidatingAdmissionPolicy '"+guardPolicyEvidenceAccess+"'") {
				t.Errorf("a proxy to %s as the tenant's pipeline was not refused by %s:\n%s", path, guardPolicyEvidenceAccess, out)
			}
		}

		// NetworkPolicies add up: one that selects the evidence pods
		// would open them, whatever careplane-evidence says.
		guardDenied(t, tenant.Create(ctx, allowEverything(ns, "tenant-allow-all"), client.DryRunAll), guardPolicyEvidenceAccess,
			"unless its podSelector excludes evidence pods")
		excluding := allowEverything(ns, "tenant-allow-app")
		excluding.Spec.PodSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: v1alpha1.LabelEvidence, Operator: metav1.LabelSelectorOpDoesNotExist}}}
		guardAllowed(t, tenant.Create(ctx, excluding, client.DryRunAll), "the tenant's allow policy that excludes evidence pods")
		evPolicy := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: build.EvidencePolicyName}}
		guardDenied(t, tenant.Delete(ctx, evPolicy, client.DryRunAll), guardPolicyEvidenceAccess, "change or delete NetworkPolicy careplane-evidence")
		// A DeleteCollection is admitted item by item, with no name in
		// the request.
		guardDenied(t, tenant.DeleteAllOf(ctx, &networkingv1.NetworkPolicy{}, client.InNamespace(ns), client.DryRunAll),
			guardPolicyEvidenceAccess, "change or delete NetworkPolicy careplane-evidence")

		// A Service routes outside traffic to a pod through its node,
		// which most network plugins let through NetworkPolicy: none of
		// the tenant's may select an evidence pod, or list its address.
		route := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-nodeport"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 8080}},
				Selector: map[string]string{v1alpha1.LabelEvidence: "INC-EVPODS"}}}
		guardDenied(t, tenant.Create(ctx, route.DeepCopy(), client.DryRunAll), guardPolicyEvidenceAccess,
			"whose selector names only labels an evidence pod keeps")
		route.Spec.Selector = map[string]string{v1alpha1.LabelEnvironment: name, build.LabelEvidenceService: svc}
		guardDenied(t, tenant.Create(ctx, route.DeepCopy(), client.DryRunAll), guardPolicyEvidenceAccess,
			"whose selector names only labels an evidence pod keeps")
		ip := pod.Status.PodIP
		if ip == "" {
			t.Fatalf("evidence pod %s has no address", pod.Name)
		}
		manual := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-manual"}, //nolint:staticcheck // what a tenant can still write
			Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: ip}}, Ports: []corev1.EndpointPort{{Port: 8080}}}}} //nolint:staticcheck // as above
		// Endpoints are no longer the edit role's to write (CVE-2021-25740):
		// a cluster-admin GitOps tool's, then.
		guardDenied(t, k8sClient.Create(ctx, manual, client.DryRunAll), guardPolicyEvidenceAccess, "which lists the address of an evidence pod")
		slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "admin-manual",
			Labels: map[string]string{discoveryv1.LabelServiceName: "tenant-manual"}},
			AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}}}}
		guardDenied(t, k8sClient.Create(ctx, slice, client.DryRunAll), guardPolicyEvidenceAccess, "which lists the address of an evidence pod")
		// A slice with no endpoints routes nowhere: the control plane
		// writes one (endpoints null, as the API's own conversion gives
		// it to admission) whenever a Service's last pod goes. Refusing it
		// would leave the slice routing to pods that are gone.
		empty := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "admin-empty",
			Labels: map[string]string{discoveryv1.LabelServiceName: "tenant-manual"}}, AddressType: discoveryv1.AddressTypeIPv4}
		guardAllowed(t, k8sClient.Create(ctx, empty, client.DryRunAll), "an EndpointSlice with no endpoints, as the control plane empties one")
		// A Service that selects the service's pods by a label they all
		// ran with: allowed, and it routes to the rebuilt pods only.
		route.Spec.Selector = map[string]string{build.LabelAppName: svc}
		if err := tenant.Create(ctx, route); err != nil {
			t.Fatalf("the tenant's NodePort Service selecting %s=%s: %v", build.LabelAppName, svc, err)
		}
		eventually(t, 30*time.Second, "the tenant's Service routing to the rebuilt pods, not the evidence pod", func(ctx context.Context) (bool, string, error) {
			_, addrs, err := sliceAddresses(ctx, ns, route.Name)
			if err != nil {
				return false, "", err
			}
			for _, a := range addrs {
				for _, p := range evidence.Items {
					if a == p.Status.PodIP {
						return false, "", fmt.Errorf("the tenant's Service %s routes to evidence pod %s (%s): %v", route.Name, p.Name, a, addrs)
					}
				}
			}
			return len(addrs) > 0, fmt.Sprintf("addresses %v", addrs), nil
		})
		// And once it selects no pod, the control plane empties its slice:
		// one left as it was would route to a pod the Service no longer
		// selects.
		route.Spec.Selector = map[string]string{build.LabelAppName: "nothing-runs-this"}
		if err := tenant.Update(ctx, route); err != nil {
			t.Fatalf("the tenant's Service selecting no pod: %v", err)
		}
		eventually(t, 30*time.Second, "the tenant's Service's slice emptied by the control plane", func(ctx context.Context) (bool, string, error) {
			n, addrs, err := sliceAddresses(ctx, ns, route.Name)
			return n > 0 && len(addrs) == 0, fmt.Sprintf("%d slices, addresses %v", n, addrs), err
		})

		// Its other pods are the tenant's to evict.
		var rebuilt corev1.PodList
		if err := k8sClient.List(ctx, &rebuilt, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelService: svc}); err != nil || len(rebuilt.Items) == 0 {
			t.Fatalf("the rebuilt pods of %s: %v (%d)", svc, err, len(rebuilt.Items))
		}
		other := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: rebuilt.Items[0].Name}, DeleteOptions: &metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}}
		guardAllowed(t, tenant.SubResource("eviction").Create(ctx, &rebuilt.Items[0], other), "the tenant evicting a rebuilt pod (dry run)")

		// A ReplicaSet of the tenant's that selects the pod, scaled to
		// zero: the control plane would adopt the pod, then delete it.
		adopt := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "adopter"},
			Spec: appsv1.ReplicaSetSpec{Replicas: new(int32),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{v1alpha1.LabelEvidence: "INC-EVPODS"}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{v1alpha1.LabelEvidence: "INC-EVPODS"}},
					Spec: guardPodObject(ns, "adopter").Spec}},
		}
		if err := tenant.Create(ctx, adopt); err != nil {
			t.Fatal(err)
		}
		stays(t, 10*time.Second, "the evidence pod unowned and running", func(ctx context.Context) (bool, string, error) {
			p := &corev1.Pod{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), p); err != nil {
				return false, err.Error(), nil
			}
			return p.DeletionTimestamp == nil && len(p.OwnerReferences) == 0 && p.Labels[v1alpha1.LabelEvidence] == "INC-EVPODS",
				fmt.Sprintf("owners %v, labels %v, deletion %v", p.OwnerReferences, p.Labels, p.DeletionTimestamp), nil
		})
	})

	t.Run("nor can the cluster admin delete it, its namespace or the namespace's marks, or relabel it through its status", func(t *testing.T) {
		guardDenied(t, k8sClient.Delete(ctx, pod.DeepCopy(), client.DryRunAll), guardPolicyEvidencePods, "may delete an evidence pod")
		// A pruning GitOps tool deleting the namespace underneath: the
		// namespace controller would delete the evidence pods with it.
		nsRef := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		guardDenied(t, k8sClient.Delete(ctx, nsRef.DeepCopy(), client.DryRunAll), guardPolicyEvidenceNamespace,
			"may delete namespace "+ns, "purge-evidence "+name)
		for _, patch := range []string{
			`{"metadata":{"labels":{"` + build.LabelHoldsEvidence + `":null}}}`,
			`{"metadata":{"annotations":{"` + build.AnnotationEvidencePods + `":"someone-else"}}}`,
			`{"metadata":{"labels":{"` + build.LabelHoldsEvidence + `":null},"annotations":{"` + build.AnnotationEvidencePods + `":null}}}`,
			// The revision the restored primary runs: without it the
			// Secrets would be named as the evidence pods mount them.
			`{"metadata":{"annotations":{"` + build.AnnotationCredentialsRevision + `":null}}}`,
		} {
			guardDenied(t, k8sClient.Patch(ctx, nsRef.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch)), client.DryRunAll),
				guardPolicyEvidenceNamespace, "may change careplane.io/holds-evidence, careplane.io/evidence-pods, careplane.io/evidence-ips or careplane.io/credentials-revision")
			// The status subresource writes the labels too.
			guardDenied(t, k8sClient.Status().Patch(ctx, nsRef.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch)), client.DryRunAll),
				guardPolicyEvidenceNamespace, "may change careplane.io/holds-evidence")
		}
		// Other labels of the namespace stay the platform team's.
		other := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"e2e"}}}`))
		guardAllowed(t, k8sClient.Patch(ctx, nsRef.DeepCopy(), other, client.DryRunAll), "the admin labelling the namespace otherwise")
		relabel := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+v1alpha1.LabelEvidence+`":null}}}`))
		guardDenied(t, k8sClient.Status().Patch(ctx, pod.DeepCopy(), relabel, client.DryRunAll), guardPolicyEvidencePods,
			"may change an evidence pod (status)")
		// A status write that keeps the labels (the kubelet's) passes.
		keep := client.RawPatch(types.MergePatchType, []byte(`{"status":{"message":"e2e"}}`))
		guardAllowed(t, k8sClient.Status().Patch(ctx, pod.DeepCopy(), keep, client.DryRunAll), "a status write that keeps the labels")
	})

	t.Run("a responder purges it", func(t *testing.T) {
		guardAllowed(t, responderClient(t).Delete(ctx, pod.DeepCopy()), "a responder deleting an evidence pod")
		eventually(t, 30*time.Second, "the purged pod gone", func(ctx context.Context) (bool, string, error) {
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
			return apierrors.IsNotFound(err), fmt.Sprintf("%v", err), nil
		})
		// careplane names only the evidence left on the namespace.
		var left []string
		for _, p := range evidence.Items[1:] {
			left = append(left, p.Name)
		}
		slices.Sort(left)
		eventually(t, 30*time.Second, "the namespace naming the evidence left", func(ctx context.Context) (bool, string, error) {
			nsObj := &corev1.Namespace{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
				return false, "", err
			}
			got := nsObj.Annotations[build.AnnotationEvidencePods]
			want := strings.Join(left, ",")
			held := nsObj.Labels[build.LabelHoldsEvidence] == "true"
			return got == want && held == (len(left) > 0), fmt.Sprintf("%s=%q (want %q), %s=%q", build.AnnotationEvidencePods, got, want,
				build.LabelHoldsEvidence, nsObj.Labels[build.LabelHoldsEvidence]), nil
		})
	})

	// Deleting the environment, in the foreground as Argo CD does, as the
	// cluster admin: the garbage collector's delete of the namespace is
	// refused while it names evidence pods, and careplane's finalizer keeps
	// the namespace, closed and labelled retained, with the evidence pods
	// left in it. A responder purges them, then deletes the namespace.
	t.Run("deleting the environment keeps its evidence until a responder purges it", func(t *testing.T) {
		plugin := buildPlugin(t)
		kubectl(t, "delete", "henv", name, "--cascade=foreground", "--wait=false")
		eventually(t, 2*time.Minute, "environment "+name+" gone", func(ctx context.Context) (bool, string, error) {
			err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &v1alpha1.HealthEnvironment{})
			return apierrors.IsNotFound(err), fmt.Sprint(err), client.IgnoreNotFound(err)
		})
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			t.Fatalf("namespace %s of the deleted environment, which named evidence pods: %v", ns, err)
		}
		if nsObj.DeletionTimestamp != nil || nsObj.Labels[v1alpha1.LabelRetained] != "true" || len(nsObj.OwnerReferences) != 0 {
			t.Fatalf("namespace %s of the deleted environment: deletion %v, labels %v, owners %v; want it kept, labelled %s=true, without owner",
				ns, nsObj.DeletionTimestamp, nsObj.Labels, nsObj.OwnerReferences, v1alpha1.LabelRetained)
		}
		var left []string
		for _, p := range evidence.Items[1:] {
			live := &corev1.Pod{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(&p), live); err != nil || live.DeletionTimestamp != nil {
				t.Errorf("evidence pod %s after the environment's deletion: %v, deletion %v; want it kept", p.Name, err, live.DeletionTimestamp)
			}
			left = append(left, p.Name)
		}
		for _, policy := range []string{build.EvidencePolicyName, "careplane-retained"} {
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: policy}, &networkingv1.NetworkPolicy{}); err != nil {
				t.Errorf("NetworkPolicy %s in the retained namespace: %v", policy, err)
			}
		}
		if err := k8sClient.Delete(ctx, nsObj.DeepCopy(), client.DryRunAll); !apierrors.IsForbidden(err) {
			t.Errorf("the admin deleting the retained namespace: %v, want it refused", err)
		}

		out := plugin.asResponder(t, "purge-evidence", name, "--yes")
		for _, p := range left {
			mustContain(t, "purge-evidence", out, "pod/"+p+" deleted (evidence INC-EVPODS)")
		}
		guardAllowed(t, responderClient(t).Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}), "a responder deleting the purged namespace")
		eventually(t, 2*time.Minute, "namespace "+ns+" gone", func(ctx context.Context) (bool, string, error) {
			err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
			return apierrors.IsNotFound(err), fmt.Sprint(err), client.IgnoreNotFound(err)
		})
	})
}

// guardRaw sends a GET of path as u with kubectl and returns what it said.
func guardRaw(u guardUser, path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"get", "--raw", path, "--as=" + u.name}
	for _, g := range u.groups {
		args = append(args, "--as-group="+g)
	}
	out, _ := exec.CommandContext(ctx, kubectlPath(), args...).CombinedOutput()
	return string(out)
}

// sliceAddresses is how many EndpointSlices Service service of namespace ns
// has, and every address they list.
func sliceAddresses(ctx context.Context, ns, service string) (int, []string, error) {
	var slices discoveryv1.EndpointSliceList
	if err := k8sClient.List(ctx, &slices, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
		return 0, nil, err
	}
	var addrs []string
	for _, sl := range slices.Items {
		for _, e := range sl.Endpoints {
			addrs = append(addrs, e.Addresses...)
		}
	}
	return len(slices.Items), addrs, nil
}
