package fence

import (
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// Route is an object of a front namespace that tells callers of the front
// Services where to go: an EndpointSlice (the front Services have no
// selector, so every slice labelled with one of their names routes them),
// or an Endpoints object (the endpointslice-mirroring controller copies it
// into such a slice).
type Route struct {
	// Kind is "EndpointSlice" or "Endpoints".
	Kind string
	Object
	// To are the addresses it sends callers to, host:port.
	To []string
}

// SliceRoute is the route of an EndpointSlice.
func SliceRoute(sl *discoveryv1.EndpointSlice) Route {
	var to []string
	for _, ep := range sl.Endpoints {
		for _, a := range ep.Addresses {
			if len(sl.Ports) == 0 {
				to = append(to, a)
			}
			for _, p := range sl.Ports {
				if p.Port != nil {
					to = append(to, net.JoinHostPort(a, strconv.Itoa(int(*p.Port))))
				}
			}
		}
	}
	return Route{Kind: "EndpointSlice", Object: sl.ObjectMeta, To: to}
}

// EndpointsRoute is the route of an Endpoints object, ready addresses or
// not (the mirroring controller copies both).
func EndpointsRoute(e *corev1.Endpoints) Route { //nolint:staticcheck // what the mirroring controller reads
	var to []string
	for _, sub := range e.Subsets {
		for _, a := range append(slices.Clone(sub.Addresses), sub.NotReadyAddresses...) {
			if len(sub.Ports) == 0 {
				to = append(to, a.IP)
			}
			for _, p := range sub.Ports {
				to = append(to, net.JoinHostPort(a.IP, strconv.Itoa(int(p.Port))))
			}
		}
	}
	return Route{Kind: "Endpoints", Object: e.ObjectMeta, To: to}
}

// ForeignRoutes are the deletions of step 5 that leave a fenced
// environment's callers going only where careplane sends them: every route
// of its front namespace careplane did not write. That is every Endpoints
// object (careplane writes none) and every EndpointSlice that is not
// careplane's own for one of the spec's services, by name *and* controlled
// by the environment (a name or an owner alone is easy to forge). The front
// guard refuses new ones; these were written before it was installed, or
// while it was off. One already being deleted is listed too: a slice marked
// for deletion still routes until its finalizers go. front is the front
// Namespace as read: nothing is removed from one the environment does not
// control (a re-created environment's, or one labelled by hand).
func ForeignRoutes(env *v1alpha1.HealthEnvironment, front *Object, routes []Route) []Action {
	if front == nil || !metav1.IsControlledBy(front, env) {
		return nil
	}
	ours := map[string]bool{}
	for _, svc := range env.Spec.Services {
		ours[build.FrontEndpointSliceName(svc.Name)] = true
	}
	var out []Action
	for _, r := range routes {
		if r.Namespace != front.Name || (r.Kind == "EndpointSlice" && ours[r.Name] && metav1.IsControlledBy(&r.Object, env)) {
			continue
		}
		note := "not careplane's; routes callers to " + orNothing(r.To) + "; deleted"
		if len(r.Finalizers) > 0 {
			note += ", its finalizers first"
		}
		if r.DeletionTimestamp != nil {
			note = "already going; " + note
		}
		out = append(out, Action{Step: 5, Verb: VerbDelete, Kind: r.Kind, Namespace: r.Namespace, Name: r.Name, UID: r.UID,
			To: r.To, Note: note})
	}
	// Endpoints before slices, so that the mirroring controller has
	// nothing to copy back; then by name.
	first := func(a Action) int {
		if a.Kind == "Endpoints" {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(out, func(a, b Action) int {
		if first(a) != first(b) {
			return first(a) - first(b)
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// Removed says what a deletion of ForeignRoutes removes: its kind, name
// and where it sent callers.
func (a Action) Removed() string {
	return a.Kind + " " + a.Name + " (to " + orNothing(a.To) + ")"
}

func orNothing(s []string) string {
	if len(s) == 0 {
		return "nothing"
	}
	return strings.Join(s, ", ")
}
