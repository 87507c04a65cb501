package build

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	discoveryv1ac "k8s.io/client-go/applyconfigurations/discovery/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// Endpoint is one pod of the active site that a front Service may send to.
type Endpoint struct {
	// IP is the pod's IPv4 address.
	IP string
	// PodName names the pod, in the active site's namespace.
	PodName string
	// NodeName names the node the pod runs on, if known.
	NodeName string
	// Ready is whether the pod is ready to serve.
	Ready bool
}

// FrontService returns the stable Service clients call for svc, in the front
// namespace: a selector-less ClusterIP Service whose ports (svc's, each with
// its name and protocol) forward to the same port numbers on the endpoints
// careplane writes (see FrontEndpointSlice).
func FrontService(env *v1alpha1.HealthEnvironment, svc v1alpha1.Service) *corev1ac.ServiceApplyConfiguration {
	spec := corev1ac.ServiceSpec().WithType(corev1.ServiceTypeClusterIP)
	for _, p := range svc.ServicePorts() {
		spec.WithPorts(corev1ac.ServicePort().
			WithName(p.Name).
			WithProtocol(p.Protocol).
			WithPort(p.Port).
			WithTargetPort(intstr.FromInt32(p.Port)))
	}
	return corev1ac.Service(svc.Name, FrontNamespace(env)).
		WithLabels(ServiceLabels(env, SiteLabelFront, svc.Name)).
		WithOwnerReferences(OwnerReference(env)).
		WithSpec(spec)
}

// FrontEndpointSlice returns the EndpointSlice of the front Service of svc,
// pointing at endpoints: pods of svc on site. It is labelled with the
// Service's name (kubernetes.io/service-name), with careplane as its manager
// (endpointslice.kubernetes.io/managed-by, so the EndpointSlice controllers
// leave it alone) and with the active site (careplane.io/active-site).
//
// Endpoints are sorted by IP; an endpoint whose IP is not an IPv4 address
// is left out (the slice is IPv4 and the API server would reject it, which
// would block the traffic switch), as is a repeated IP. Each endpoint is
// ready and serving as the pod is ready, never terminating, and refers to
// its pod in site's namespace. With no endpoints the slice has none, so
// traffic stops rather than going to a stale site.
func FrontEndpointSlice(env *v1alpha1.HealthEnvironment, svc v1alpha1.Service, site v1alpha1.Site, endpoints []Endpoint) *discoveryv1ac.EndpointSliceApplyConfiguration {
	labels := ServiceLabels(env, SiteLabelFront, svc.Name)
	labels[discoveryv1.LabelServiceName] = svc.Name
	labels[discoveryv1.LabelManagedBy] = EndpointSliceManagedBy
	labels[LabelActiveSite] = SiteLabel(site)

	type parsed struct {
		addr netip.Addr
		ep   Endpoint
	}
	eps := make([]parsed, 0, len(endpoints))
	for _, e := range endpoints {
		a, err := netip.ParseAddr(e.IP)
		if err != nil || !a.Is4() {
			continue
		}
		eps = append(eps, parsed{a, e})
	}
	slices.SortStableFunc(eps, func(a, b parsed) int { return a.addr.Compare(b.addr) })
	eps = slices.CompactFunc(eps, func(a, b parsed) bool { return a.addr == b.addr })

	siteNamespace := SiteNamespace(env, site)
	slice := discoveryv1ac.EndpointSlice(FrontEndpointSliceName(svc.Name), FrontNamespace(env)).
		WithLabels(labels).
		WithOwnerReferences(OwnerReference(env)).
		WithAddressType(discoveryv1.AddressTypeIPv4)
	for _, p := range svc.ServicePorts() {
		slice.WithPorts(discoveryv1ac.EndpointPort().
			WithName(p.Name).
			WithProtocol(p.Protocol).
			WithPort(p.Port))
	}
	for _, p := range eps {
		ep := discoveryv1ac.Endpoint().
			WithAddresses(p.addr.String()).
			WithConditions(discoveryv1ac.EndpointConditions().
				WithReady(p.ep.Ready).
				WithServing(p.ep.Ready).
				WithTerminating(false))
		if p.ep.PodName != "" {
			ep.WithTargetRef(corev1ac.ObjectReference().
				WithKind("Pod").
				WithNamespace(siteNamespace).
				WithName(p.ep.PodName))
		}
		if p.ep.NodeName != "" {
			ep.WithNodeName(p.ep.NodeName)
		}
		slice.WithEndpoints(ep)
	}
	return slice
}
