//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/controllers"
	"github.com/careplane/careplane/internal/build"
)

const (
	guardPolicyFront = "careplane-front-guard"
	guardMsgFront    = "only the careplane manager (" + guardManagerSA + ") says where the front Services of environment "
)

// TestGuardrailFrontGuard proves careplane-front-guard: in a front
// namespace, only the manager creates an EndpointSlice, Endpoints or
// Service, changes where one routes, or takes the namespace's front labels
// off. A cluster-admin GitOps tool, a responder, the control plane's
// mirroring controller and the admin kubeconfig cannot point the front at
// pods of their choosing; a change that routes nothing new, a delete, and
// every write outside front namespaces stay open.
func TestGuardrailFrontGuard(t *testing.T) {
	s := guardSetup(t)
	ctx := context.Background()
	envName := "guard-" + s.run
	front := guardNamespace(t, envName+"-front", envName)
	kubectl(t, "label", "namespace", front, v1alpha1.LabelSite+"="+build.SiteLabelFront)
	open := guardNamespace(t, envName+"-open", envName)

	manager := guardImpersonate(t, guardManagerSA, "system:serviceaccounts", "system:serviceaccounts:careplane-system")
	// careplane's slice, as the manager writes it: to the primary's pod.
	slice := guardSlice(front, "web"+build.FrontEndpointSliceSuffix, "10.0.0.1")
	slice.Labels[discoveryv1.LabelManagedBy] = build.EndpointSliceManagedBy
	if err := manager.client.Create(ctx, slice.DeepCopy()); err != nil {
		t.Fatalf("the manager writing its front EndpointSlice: %v", err)
	}
	// Loaded by the API server: a forged slice is refused.
	guardEventuallyDenied(t, time.Minute, "the front guard denies a forged slice", guardPolicyFront, guardMsgFront,
		func(ctx context.Context) error {
			return s.gitops.client.Create(ctx, guardSlice(front, "web-forged", "10.9.9.9"), client.DryRunAll)
		})
	cur := &discoveryv1.EndpointSlice{}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(slice), cur); err != nil {
		t.Fatal(err)
	}
	whose := guardMsgFront + envName + " send traffic, and "
	// An attacker's pod, outside the environment.
	reroute := client.RawPatch(types.MergePatchType, []byte(`{"endpoints":[{"addresses":["10.9.9.9"]}]}`))

	t.Run("a GitOps user with cluster-admin RBAC cannot reroute the front", func(t *testing.T) {
		err := s.gitops.client.Create(ctx, guardSlice(front, "web-forged", "10.9.9.9"), client.DryRunAll)
		guardDenied(t, err, guardPolicyFront, whose+s.gitops.name+" may not create EndpointSlice web-forged")
		err = s.gitops.client.Patch(ctx, cur.DeepCopy(), reroute, client.DryRunAll)
		guardDenied(t, err, guardPolicyFront, whose+s.gitops.name+" may not change what routes in EndpointSlice "+slice.Name)
		// Moved to another Service's traffic.
		err = s.gitops.client.Patch(ctx, cur.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"kubernetes.io/service-name":"api"}}}`)), client.DryRunAll)
		guardDenied(t, err, guardPolicyFront, s.gitops.name+" may not change")
		err = s.gitops.client.Patch(ctx, cur.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"ports":[{"name":"http","port":9999,"protocol":"TCP"}]}`)), client.DryRunAll)
		guardDenied(t, err, guardPolicyFront, s.gitops.name+" may not change")
	})

	t.Run("nor through the front Service, an Endpoints object or the namespace's labels", func(t *testing.T) {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: front, Name: "web"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}}}
		if err := manager.client.Create(ctx, svc); err != nil {
			t.Fatalf("the manager writing its front Service: %v", err)
		}
		err := s.gitops.client.Patch(ctx, svc.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"spec":{"externalIPs":["203.0.113.9"]}}`)), client.DryRunAll)
		guardDenied(t, err, guardPolicyFront, whose+s.gitops.name+" may not change what routes in Service web")
		// The same Service name, answered by DNS outside the cluster.
		err = s.gitops.client.Patch(ctx, svc.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"spec":{"type":"ExternalName","externalName":"attacker.example","clusterIP":"","clusterIPs":null,"ports":null}}`)), client.DryRunAll)
		guardDenied(t, err, guardPolicyFront, s.gitops.name+" may not change what routes in Service web")
		err = s.gitops.client.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: front, GenerateName: "web-"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, client.DryRunAll)
		guardDenied(t, err, guardPolicyFront, s.gitops.name+" may not create Service web-")
		err = s.gitops.client.Create(ctx, &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: front, Name: "web"}, //nolint:staticcheck // what the mirroring controller copies
			Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "10.9.9.9"}}}}}, client.DryRunAll) //nolint:staticcheck
		guardDenied(t, err, guardPolicyFront, s.gitops.name+" may not create Endpoints web")

		// Stepping the namespace out of the policy, to write and step back.
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: front}}
		err = s.gitops.client.Patch(ctx, ns.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"careplane.io/site":null}}}`)), client.DryRunAll)
		guardDenied(t, err, guardPolicyFront, whose+s.gitops.name+" may not take the front labels off Namespace "+front)
		err = s.gitops.client.Patch(ctx, ns.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"app.kubernetes.io/managed-by":"gitops"}}}`)), client.DryRunAll)
		guardDenied(t, err, guardPolicyFront, s.gitops.name+" may not take the front labels off Namespace "+front)
		guardAllowed(t, s.gitops.client.Patch(ctx, ns.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"e2e.careplane.io/team":"111"}}}`)), client.DryRunAll),
			"labelling the front namespace otherwise")
		guardAllowed(t, s.gitops.client.Patch(ctx, svc.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"metadata":{"annotations":{"e2e.careplane.io/tidy":"yes"}}}`)), client.DryRunAll),
			"annotating the front Service")
	})

	t.Run("nor can a responder, the admin kubeconfig or the mirroring controller", func(t *testing.T) {
		err := s.responder.client.Patch(ctx, cur.DeepCopy(), reroute, client.DryRunAll)
		guardDenied(t, err, guardPolicyFront, whose+s.responder.name+" may not change")
		err = k8sClient.Create(ctx, guardSlice(front, "web-forged", "10.9.9.9"), client.DryRunAll)
		guardDenied(t, err, guardPolicyFront, guardMsgFront)
		// Copies any Endpoints object into a slice; with cluster-admin
		// RBAC here, so that the denial is the policy's.
		mirror := guardImpersonate(t, "system:serviceaccount:kube-system:endpointslicemirroring-controller", "e2e:gitops")
		err = mirror.client.Create(ctx, guardSlice(front, "web-mirrored", "10.9.9.9"), client.DryRunAll)
		guardDenied(t, err, guardPolicyFront, "endpointslicemirroring-controller may not create")
	})

	t.Run("what routes nothing new stays open", func(t *testing.T) {
		// The garbage collector's kind of change: metadata, not routing.
		guardAllowed(t, s.gitops.client.Patch(ctx, cur.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"metadata":{"annotations":{"e2e.careplane.io/tidy":"yes"},"finalizers":["e2e.careplane.io/hold"]}}`)), client.DryRunAll),
			"annotating the front slice and adding a finalizer")
		guardAllowed(t, s.gitops.client.Delete(ctx, cur.DeepCopy(), client.DryRunAll), "deleting the front slice")
		guardAllowed(t, s.gitops.client.Create(ctx, guardSlice(open, "web-forged", "10.9.9.9"), client.DryRunAll),
			"creating a slice in a namespace that is not a front")
	})

	t.Run("careplane routes a real environment's front", func(t *testing.T) {
		env := guardEnvironment(envName+"-real", false)
		if err := k8sClient.Create(ctx, env); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { guardDeleteEnvironment(t, k8sClient, env.Name) })
		key := client.ObjectKey{Namespace: env.Name, Name: "web" + build.FrontEndpointSliceSuffix}
		eventually(t, 2*time.Minute, "the front slice routes to the primary's ready pod", func(ctx context.Context) (bool, string, error) {
			got := &discoveryv1.EndpointSlice{}
			if err := k8sClient.Get(ctx, key, got); err != nil {
				return false, err.Error(), nil
			}
			return len(got.Endpoints) == 1 && got.Labels[build.LabelActiveSite] == build.SiteLabelPrimary,
				fmt.Sprintf("endpoints %v, labels %v", got.Endpoints, got.Labels), nil
		})
	})

	t.Run("the manager moves the front", func(t *testing.T) {
		guardAllowed(t, manager.client.Patch(ctx, cur.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"endpoints":[{"addresses":["10.0.0.2"]}],"metadata":{"labels":{"careplane.io/active-site":"standby"}}}`))),
			"the manager routing the front to the standby")
	})
}

// TestAFenceRemovesRoutesWrittenBeforeTheFrontGuard: the front guard
// refuses new routes, but not those written before it was installed (or
// while its binding was gone). Such a slice, pointing the front of a real
// environment at an address of the attacker's, and an Endpoints object for
// the mirroring controller to copy, are written here as the manager's
// ServiceAccount (the one identity the guard lets through, standing in for
// "before the guard"). A responder's fence removes both before it reports
// Fenced=True, the manager acting under its own RBAC and bounds, and the
// responder's dry run shows it would; careplane's own slice stays.
func TestAFenceRemovesRoutesWrittenBeforeTheFrontGuard(t *testing.T) {
	s := guardSetup(t)
	ctx := context.Background()
	name := "front-sweep-" + s.run
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	manager := guardImpersonate(t, guardManagerSA, "system:serviceaccounts", "system:serviceaccounts:careplane-system")
	exfil := guardSlice(name, "call-handling-exfil", "10.9.9.9")
	exfil.Labels[discoveryv1.LabelServiceName] = "call-handling"
	mirrored := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "referral"}, //nolint:staticcheck // the mirroring controller reads them
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "10.9.9.10"}}, //nolint:staticcheck
			Ports: []corev1.EndpointPort{{Name: "http", Port: 8443}}}}} //nolint:staticcheck
	// The manager's RBAC writes no Endpoints: the one for the mirroring
	// controller is written in its name with system:masters' rights.
	managerAsAdmin := guardImpersonate(t, guardManagerSA, "system:masters", "system:serviceaccounts")
	for _, w := range []struct {
		c client.Client
		o client.Object
	}{{manager.client, exfil}, {managerAsAdmin.client, mirrored}} {
		if err := w.c.Create(ctx, w.o); err != nil {
			t.Fatalf("writing %T %s before the fence: %v", w.o, w.o.GetName(), err)
		}
	}
	// A cluster-admin GitOps tool could not have written it now.
	err := s.gitops.client.Create(ctx, guardSlice(name, "call-handling-exfil2", "10.9.9.9"), client.DryRunAll)
	guardDenied(t, err, guardPolicyFront, s.gitops.name+" may not create EndpointSlice call-handling-exfil2")

	// The responder's dry run shows them going, and where they sent
	// callers: the plan the fence carries out.
	out := buildPlugin(t).asResponder(t, "fence", name, "--reason", "front dry run", "--dry-run")
	for _, o := range []client.Object{exfil, mirrored} {
		kind := "EndpointSlice"
		if _, ok := o.(*corev1.Endpoints); ok { //nolint:staticcheck // the mirroring controller reads them
			kind = "Endpoints"
		}
		if !planLists(out, "delete", kind, name, o.GetName()) {
			t.Errorf("the fence's dry run does not delete %s %s/%s:\n%s", kind, name, o.GetName(), out)
		}
	}
	mustContain(t, "fence --dry-run", out, "routes callers to 10.9.9.9:8080", "routes callers to 10.9.9.10:8443")
	if planLists(out, "delete", "EndpointSlice", name, "call-handling"+build.FrontEndpointSliceSuffix) {
		t.Errorf("the fence's dry run deletes careplane's own front slice:\n%s", out)
	}

	fenceCommand(t, name, "INC-FRONT")
	waitFencedTrue(t, name)
	for _, o := range []client.Object{exfil, mirrored} {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(o), o); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s/%s still routes when the environment is Fenced=True (%v)", o, name, o.GetName(), err)
		}
	}
	own := &discoveryv1.EndpointSlice{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: name, Name: "call-handling" + build.FrontEndpointSliceSuffix}, own); err != nil {
		t.Errorf("careplane's own front slice: %v", err)
	}
	const removed = "Endpoints referral (to 10.9.9.10:8443), EndpointSlice call-handling-exfil (to 10.9.9.9:8080)"
	eventually(t, 30*time.Second, "a ForeignRoutesRemoved Warning naming "+removed, func(ctx context.Context) (bool, string, error) {
		var evs eventsv1.EventList
		if err := k8sClient.List(ctx, &evs); err != nil {
			return false, "", err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == name && e.Reason == controllers.ReasonForeignRoutesRemoved {
				return e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, removed), e.Type + " " + e.Note, nil
			}
		}
		return false, "no such event", nil
	})
}

// guardSlice is an EndpointSlice of the front Service web in ns, routing
// to addr.
func guardSlice(ns, name, addr string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
}
