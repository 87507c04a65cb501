package fence

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/careplane/careplane/api/v1alpha1"
)

// TestForeignRoutes: every route of the front that careplane did not write
// goes, Endpoints first; careplane's own slice for a spec service stays only
// when both its name and its controller are careplane's; nothing outside the
// front namespace is touched.
func TestForeignRoutes(t *testing.T) {
	env := fencedEnv()
	env.Spec.Services = []v1alpha1.Service{{Name: "call-handling"}, {Name: "referral"}}
	owner := metav1.OwnerReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: "HealthEnvironment", Name: env.Name, UID: env.UID, Controller: ptr.To(true)}
	forged := owner
	forged.UID = "uid-not-wales"
	notController := owner
	notController.Controller = nil
	slice := func(ns, name string, refs ...metav1.OwnerReference) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), OwnerReferences: refs},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"203.0.113.7", "203.0.113.8"}}},
			Ports:     []discoveryv1.EndpointPort{{Port: ptr.To[int32](8080)}, {Port: ptr.To[int32](9090)}}}
	}
	going := slice("wales-111", "held", owner)
	going.Finalizers = []string{"example.com/hold"}
	going.DeletionTimestamp = &metav1.Time{}
	noPorts := slice("wales-111", "no-ports")
	noPorts.Ports = nil
	mirrored := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "wales-111", Name: "referral", UID: "uid-ep"}, //nolint:staticcheck // the mirroring controller reads them
		Subsets: []corev1.EndpointSubset{{ //nolint:staticcheck
			Addresses:         []corev1.EndpointAddress{{IP: "198.51.100.1"}},
			NotReadyAddresses: []corev1.EndpointAddress{{IP: "198.51.100.2"}},
			Ports:             []corev1.EndpointPort{{Port: 8443}}}}} //nolint:staticcheck
	routes := []Route{
		SliceRoute(slice("wales-111", "call-handling-careplane", owner)), // careplane's own
		SliceRoute(slice("wales-111", "referral-careplane", forged)),     // its name, another owner
		SliceRoute(slice("wales-111", "call-handling-careplane-x", owner)),
		SliceRoute(slice("wales-111", "referral-careplane-2", notController)),
		SliceRoute(going),
		SliceRoute(noPorts),
		EndpointsRoute(mirrored),
		SliceRoute(slice("scotland-111", "exfil")), // another front
		EndpointsRoute(&corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "wales-111-primary", Name: "referral"}}), //nolint:staticcheck
	}
	front := &Object{Name: "wales-111", OwnerReferences: []metav1.OwnerReference{owner}}
	var got []string
	for _, a := range ForeignRoutes(env, front, routes) {
		if a.Step != 5 || a.Verb != VerbDelete || a.Namespace != "wales-111" || a.UID == "" {
			t.Errorf("%+v: want a step-5 delete in wales-111 on its UID", a)
		}
		got = append(got, a.Removed()+": "+a.Note)
	}
	want := []string{
		"Endpoints referral (to 198.51.100.1:8443, 198.51.100.2:8443): not careplane's; routes callers to 198.51.100.1:8443, 198.51.100.2:8443; deleted",
		"EndpointSlice call-handling-careplane-x (to 203.0.113.7:8080, 203.0.113.7:9090, 203.0.113.8:8080, 203.0.113.8:9090): not careplane's; routes callers to 203.0.113.7:8080, 203.0.113.7:9090, 203.0.113.8:8080, 203.0.113.8:9090; deleted",
		"EndpointSlice held (to 203.0.113.7:8080, 203.0.113.7:9090, 203.0.113.8:8080, 203.0.113.8:9090): already going; not careplane's; routes callers to 203.0.113.7:8080, 203.0.113.7:9090, 203.0.113.8:8080, 203.0.113.8:9090; deleted, its finalizers first",
		"EndpointSlice no-ports (to 203.0.113.7, 203.0.113.8): not careplane's; routes callers to 203.0.113.7, 203.0.113.8; deleted",
		"EndpointSlice referral-careplane (to 203.0.113.7:8080, 203.0.113.7:9090, 203.0.113.8:8080, 203.0.113.8:9090): not careplane's; routes callers to 203.0.113.7:8080, 203.0.113.7:9090, 203.0.113.8:8080, 203.0.113.8:9090; deleted",
		"EndpointSlice referral-careplane-2 (to 203.0.113.7:8080, 203.0.113.7:9090, 203.0.113.8:8080, 203.0.113.8:9090): not careplane's; routes callers to 203.0.113.7:8080, 203.0.113.7:9090, 203.0.113.8:8080, 203.0.113.8:9090; deleted",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ForeignRoutes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The plan's step 5 carries them, after the drains; a plan that did
	// not read the front (the operator's own, whose front step sweeps)
	// has none.
	// A front namespace the environment does not control, or none read:
	// nothing is removed from it.
	for _, ns := range []*Object{nil, {Name: "wales-111"}, {Name: "wales-111", OwnerReferences: []metav1.OwnerReference{forged}}} {
		if got := ForeignRoutes(env, ns, routes); got != nil {
			t.Errorf("ForeignRoutes in front namespace %+v: %d deletions, want none", ns, len(got))
		}
	}

	o := Observed{Env: env, Isolation: env.Spec.Isolation, Record: Record{ID: "id", Source: SourceSpec}, Front: front, FrontRoutes: routes}
	var step5 []string
	for _, a := range PlanFence(o).Step(5) {
		step5 = append(step5, string(a.Verb)+" "+a.Kind+" "+a.Name)
	}
	wantStep5 := []string{"empty EndpointSlice call-handling-careplane", "empty EndpointSlice referral-careplane",
		"delete Endpoints referral", "delete EndpointSlice call-handling-careplane-x", "delete EndpointSlice held",
		"delete EndpointSlice no-ports", "delete EndpointSlice referral-careplane", "delete EndpointSlice referral-careplane-2"}
	if !slices.Equal(step5, wantStep5) {
		t.Errorf("step 5 of the plan: %q, want %q", step5, wantStep5)
	}
	// The slice of careplane's name it did not write: its drain says so.
	for _, a := range PlanFence(o).Step(5) {
		if a.Verb == VerbDrain && a.Name == "referral-careplane" && !strings.Contains(a.Note, "not careplane's: deleted below") {
			t.Errorf("the drain of referral-careplane, a slice careplane did not write: %q", a.Note)
		}
	}
	o.FrontRoutes = nil
	if n := len(PlanFence(o).Step(5)); n != 2 {
		t.Errorf("step 5 of a plan that did not read the front: %d actions, want the 2 drains", n)
	}
	if len(PlanFence(o).Changes()) != len(PlanFence(Observed{Env: env, Isolation: env.Spec.Isolation, Record: o.Record, Front: front, FrontRoutes: routes}).Changes()) {
		t.Error("the front's deletions count among the changes a fence pass repeats until none is left; they are the front step's")
	}
}
