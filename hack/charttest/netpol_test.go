package charttest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/careplane/careplane/internal/netpol"
)

// TestManagerNetworkPolicy evaluates the chart's NetworkPolicy for a
// manager pod with careplane's own policy engine (internal/netpol, the one
// behind IsolationVerified), since no test cluster here enforces packets:
// the flows it allows are exactly the metrics and probe ports in, and the
// API server and DNS out.
func TestManagerNetworkPolicy(t *testing.T) {
	for _, c := range []struct {
		name, values, policy string
		labels               map[string]string
		metricsPort          int32
		want                 []string
	}{{
		name: "default", policy: "careplane-manager", metricsPort: 8443,
		labels: map[string]string{"app.kubernetes.io/name": "careplane", "app.kubernetes.io/instance": "careplane", "app.kubernetes.io/component": "manager"},
		want: []string{
			"Ingress any TCP/metrics",
			"Ingress any TCP/probes",
			"Egress any TCP/443",
			"Egress any TCP/6443",
			"Egress pods {k8s-app=kube-dns} in namespaces {kubernetes.io/metadata.name=kube-system} TCP/53",
			"Egress pods {k8s-app=kube-dns} in namespaces {kubernetes.io/metadata.name=kube-system} UDP/53",
		},
	}, {
		name: "custom", values: "testdata/custom.values.yaml", policy: "careplane-prod-manager", metricsPort: 9443,
		labels: map[string]string{"app.kubernetes.io/name": "cp", "app.kubernetes.io/instance": "careplane", "app.kubernetes.io/component": "manager"},
		want: []string{
			"Ingress any pod in namespaces {kubernetes.io/metadata.name=monitoring} TCP/metrics",
			"Ingress any TCP/probes",
			"Egress 10.0.0.1/32 TCP/8443",
			"Egress 192.168.10.0/24 TCP/8443",
			"Egress pods {k8s-app=coredns} in namespaces {kubernetes.io/metadata.name=kube-system} TCP/53",
			"Egress pods {k8s-app=coredns} in namespaces {kubernetes.io/metadata.name=kube-system} UDP/53",
		},
	}} {
		t.Run(c.name, func(t *testing.T) {
			var files []string
			if c.values != "" {
				files = append(files, c.values)
			}
			var np networkingv1.NetworkPolicy
			decode(t, splitRender(t, render(t, files...)), "NetworkPolicy", c.policy, &np)
			manager := netpol.Pod{Name: "manager", Labels: c.labels, Ports: []corev1.ContainerPort{
				{Name: "metrics", ContainerPort: c.metricsPort, Protocol: corev1.ProtocolTCP},
				{Name: "probes", ContainerPort: 8081, Protocol: corev1.ProtocolTCP},
			}}
			res, err := netpol.VerifyFence(netpol.FenceInput{Namespace: "careplane-system",
				Policies: []networkingv1.NetworkPolicy{np}, Pods: []netpol.Pod{manager}})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range res.Flows {
				got = append(got, fmt.Sprintf("%s %s %s", f.Direction, f.Peer, f.Port))
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(c.want))
			if !slices.Equal(got, want) {
				t.Errorf("the manager's NetworkPolicy allows\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
}
