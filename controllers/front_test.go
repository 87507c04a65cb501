package controllers

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
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// TestAFenceRemovesRoutesCareplaneDidNotWrite: the front Services have no
// selector, so every EndpointSlice labelled with one of their names routes
// its callers, and the endpointslice-mirroring controller turns any
// Endpoints object into such a slice. A slice or Endpoints object written
// before the front guard was installed (or while it was off) by anyone
// else (here: one pointing outside the cluster, one forging the
// environment as its owner, and an Endpoints object) would keep routing
// callers of a fenced environment. A fence removes them all before it
// reports Fenced=True, and says so; careplane's own slices stay.
func TestAFenceRemovesRoutesCareplaneDidNotWrite(t *testing.T) {
	ctx := context.Background()
	env := sampleEnv("front-sweep")
	createReady(t, ctx, env, 70)
	front := build.FrontNamespace(env)
	got := getEnv(t, ctx, env.Name)
	svc := got.Spec.Services[0].Name

	slice := func(name string, owned bool) *discoveryv1.EndpointSlice {
		s := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: front,
				Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"203.0.113.7"}}},
			Ports:       []discoveryv1.EndpointPort{{Port: ptr.To(int32(8080))}},
		}
		if owned {
			s.OwnerReferences = ownerReferences(got)
			s.Labels[v1alpha1.LabelEnvironment] = env.Name
		}
		return s
	}
	held := slice(svc+"-held", false)
	held.Finalizers = []string{"example.com/hold"} // a slice marked for deletion still routes
	foreign := []client.Object{
		slice(svc+"-exfil", false),
		slice(svc+"-forged", true),
		held,
		&corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc, Namespace: front}, //nolint:staticcheck // the mirroring controller still reads them
			Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "203.0.113.8"}}}}}, //nolint:staticcheck
	}
	for _, o := range foreign {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// Not fenced: careplane does not look for them (a fence does).
	time.Sleep(time.Second)
	for _, o := range foreign {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			t.Fatalf("%T %s removed before any fence: %v", o, o.GetName(), err)
		}
	}

	own := &discoveryv1.EndpointSlice{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: front, Name: build.FrontEndpointSliceName(svc)}, own); err != nil {
		t.Fatalf("careplane's own front slice: %v", err)
	}
	ownUID := own.UID

	patchIsolation(t, ctx, env.Name, `{"mode":"Fenced","reason":"test"}`)
	fenced := waitCondition(t, env.Name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	// Fenced=True is reported only once they are gone.
	for _, o := range foreign {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(o), o); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s/%s still there when Fenced=True (generation %d; finalizers %v): %v", o, front, o.GetName(), fenced.Generation, o.GetFinalizers(), err)
		}
	}
	// Not deleted and written again: the same object.
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(own), own); err != nil || own.UID != ownUID {
		t.Errorf("careplane's own front slice: uid %s, want %s (%v)", own.UID, ownUID, err)
	}
	eventually(t, 10*time.Second, "a ForeignRoutesRemoved event naming each", func(ctx context.Context) (bool, string, error) {
		var evs eventsv1.EventList
		if err := k8sClient.List(ctx, &evs); err != nil {
			return false, "", err
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == env.Name && e.Reason == ReasonForeignRoutesRemoved {
				want := fmt.Sprintf("Endpoints %s (to 203.0.113.8), EndpointSlice %s-exfil (to 203.0.113.7:8080), EndpointSlice %s-forged (to 203.0.113.7:8080), EndpointSlice %s-held (to 203.0.113.7:8080)", svc, svc, svc, svc)
				if e.Type != corev1.EventTypeWarning || !strings.Contains(e.Note, want) {
					return false, "", fmt.Errorf("event %s %q, want a Warning naming %s", e.Type, e.Note, want)
				}
				return true, "", nil
			}
		}
		return false, "no such event", nil
	})
}
