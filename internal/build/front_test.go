package build

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/careplane/careplane/api/v1alpha1"
)

func TestFrontService(t *testing.T) {
	env := env111()
	s := toTyped[corev1.Service](t, FrontService(env, service(t, env, "call-handling")))
	checkMeta(t, s.TypeMeta, s.ObjectMeta, "v1", "Service", "call-handling", "wales-111", stdLabels("front", "call-handling"))
	if s.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("type = %s, want ClusterIP", s.Spec.Type)
	}
	if s.Spec.Selector != nil {
		t.Errorf("selector = %v, want none: careplane writes the endpoints", s.Spec.Selector)
	}
	want := []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080, TargetPort: intstr.FromInt32(8080)}}
	if !reflect.DeepEqual(s.Spec.Ports, want) {
		t.Errorf("ports = %+v, want %+v", s.Spec.Ports, want)
	}
}

func TestFrontEndpointSlice(t *testing.T) {
	env := env111()
	tests := []struct {
		name      string
		site      v1alpha1.Site
		endpoints []Endpoint
		want      []discoveryv1.Endpoint
	}{
		{
			name: "primary, sorted numerically by IP",
			site: v1alpha1.SitePrimary,
			endpoints: []Endpoint{
				{IP: "10.244.1.10", PodName: "referral-b", NodeName: "node-2", Ready: true},
				{IP: "10.244.1.9", PodName: "referral-a", NodeName: "node-1", Ready: false},
			},
			want: []discoveryv1.Endpoint{
				{
					Addresses:  []string{"10.244.1.9"},
					Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)},
					TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "wales-111-primary", Name: "referral-a"},
					NodeName:   ptr.To("node-1"),
				},
				{
					Addresses:  []string{"10.244.1.10"},
					Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
					TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "wales-111-primary", Name: "referral-b"},
					NodeName:   ptr.To("node-2"),
				},
			},
		},
		{
			name: "standby, pods referred to in the standby namespace; bad, IPv6 and repeated addresses dropped",
			site: v1alpha1.SiteStandby,
			endpoints: []Endpoint{
				{IP: "fd00::1", PodName: "referral-v6", Ready: true},
				{IP: "not-an-ip", PodName: "referral-bad", Ready: true},
				{IP: "10.245.0.7", PodName: "referral-s", Ready: true},
				{IP: "10.245.0.7", PodName: "referral-s", Ready: true},
			},
			want: []discoveryv1.Endpoint{{
				Addresses:  []string{"10.245.0.7"},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "wales-111-standby", Name: "referral-s"},
			}},
		},
		{
			name: "no endpoints: traffic stops",
			site: v1alpha1.SitePrimary,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ac := FrontEndpointSlice(env, service(t, env, "referral"), tt.site, tt.endpoints)
			es := toTyped[discoveryv1.EndpointSlice](t, ac)
			checkMeta(t, es.TypeMeta, es.ObjectMeta, "discovery.k8s.io/v1", "EndpointSlice", "referral-careplane", "wales-111",
				with(stdLabels("front", "referral"),
					"kubernetes.io/service-name", "referral",
					"endpointslice.kubernetes.io/managed-by", "careplane.io",
					"careplane.io/active-site", SiteLabel(tt.site)))
			if es.AddressType != discoveryv1.AddressTypeIPv4 {
				t.Errorf("addressType = %s, want IPv4", es.AddressType)
			}
			wantPorts := []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8081)}}
			if !reflect.DeepEqual(es.Ports, wantPorts) {
				t.Errorf("ports = %s, want %s", mustJSON(es.Ports), mustJSON(wantPorts))
			}
			if !reflect.DeepEqual(es.Endpoints, tt.want) {
				t.Errorf("endpoints =\n%s\nwant\n%s", mustJSON(es.Endpoints), mustJSON(tt.want))
			}
		})
	}
}
