package netpol

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// FenceInput is everything VerifyFence looks at. The caller gathers it from
// the cluster; nothing here talks to an API server.
type FenceInput struct {
	// Namespace is the name of the fenced namespace.
	Namespace string
	// NamespaceLabels are the fenced namespace's labels. The
	// kubernetes.io/metadata.name label is always taken to be Namespace, as
	// the API server keeps it.
	NamespaceLabels map[string]string
	// Pods are the fenced pods. With none, the result is vacuously isolated.
	Pods []Pod
	// Policies are all NetworkPolicies in the namespace, including careplane's
	// own fence policy. A policy whose namespace is empty is taken to be in
	// Namespace; a policy in another namespace cannot select a fenced pod and
	// is ignored.
	Policies []networkingv1.NetworkPolicy
	// ForensicsNamespaces are the namespaces spec.isolation.forensicsFrom
	// names (v1alpha1.Isolation.ForensicsNamespaces): ingress from pods in
	// them, other than the fenced namespace, is the one permitted flow.
	// Empty permits nothing. They are names, not a selector, because every
	// other namespace label can be set by whoever writes the namespace: a
	// policy admitting namespaces by any other label breaches the fence.
	ForensicsNamespaces []string
}

// Pod is a fenced pod as the verifier needs it.
type Pod struct {
	// Name is the pod's name, used in reported flows.
	Name string
	// Labels are the pod's labels, matched against policies' podSelectors.
	Labels map[string]string
	// Ports are the pod's declared container ports; they resolve named ports
	// in ingress rules. A named port matches only pods that declare it.
	Ports []corev1.ContainerPort
}

// PodFromObject extracts what VerifyFence needs from a pod: its name, labels
// and the ports of all its containers, init containers included (restartable
// sidecars serve traffic, and declaring more names only reports more flows).
func PodFromObject(pod *corev1.Pod) Pod {
	p := Pod{Name: pod.Name, Labels: maps.Clone(pod.Labels)}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			p.Ports = append(p.Ports, c.Ports...)
		}
	}
	return p
}

// Result is the verdict of VerifyFence.
type Result struct {
	// Isolated is true when no NetworkPolicy allows a flow into or out of any
	// fenced pod other than ingress from the named forensics namespaces.
	Isolated bool
	// Flows are the allowed flows that breach the fence, sorted by pod,
	// direction (Ingress first), peer and port.
	Flows []Flow
}

// Flow is one allowed flow that breaches the fence: one peer clause and one
// port clause of a rule (or "any"), as written in the policies that allow it.
type Flow struct {
	// Direction is Ingress (into the pod) or Egress (out of it).
	Direction networkingv1.PolicyType
	// Pod is the fenced pod's name.
	Pod string
	// Peer describes the other end, e.g. "any", "any pod in namespaces
	// {team=red}", "pods {app=web} in namespace wales-111-primary" or
	// "10.0.0.0/8 except 10.1.0.0/16". Ingress from forensics namespaces that
	// the peer also covers is not part of the breach.
	Peer string
	// Port describes the ports, e.g. "any", "TCP/443", "UDP/any",
	// "TCP/8000-8080" or "TCP/http".
	Port string
	// Policies name the NetworkPolicies that allow the flow, sorted. Empty
	// means no policy selects the pod for this direction, so everything is
	// allowed.
	Policies []string
}

// Policies returns the sorted, de-duplicated names of the NetworkPolicies that
// allow a breaching flow. A breach because no policy selects a pod names none.
func (r Result) Policies() []string {
	var names []string
	for _, f := range r.Flows {
		names = append(names, f.Policies...)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Summary is a one-line explanation for the IsolationVerified condition
// message: the first breaching flow and how many there are.
func (r Result) Summary() string {
	if len(r.Flows) == 0 {
		return "No NetworkPolicy allows a flow into or out of a fenced pod"
	}
	f := r.Flows[0]
	var b strings.Builder
	if len(f.Policies) == 0 {
		fmt.Fprintf(&b, "No NetworkPolicy selects pod %s for %s, so all %s is allowed", f.Pod, f.Direction, f.Direction)
	} else {
		into, prep := "into", "from"
		if f.Direction == networkingv1.PolicyTypeEgress {
			into, prep = "out of", "to"
		}
		fmt.Fprintf(&b, "NetworkPolicy %s allows %s %s pod %s %s %s on port %s",
			strings.Join(f.Policies, ", "), f.Direction, into, f.Pod, prep, f.Peer, f.Port)
	}
	if n := len(r.Flows); n > 1 {
		fmt.Fprintf(&b, " (%d breaching flows in total)", n)
	}
	return b.String()
}

// AnyPod stands for every pod a namespace could hold when it holds none:
// a pod with no labels, which a podSelector {} selects.
const AnyPod = "(any pod)"

// NamespaceInput is the FenceInput for a namespace as it is: its labels,
// all its NetworkPolicies and every pod that is not terminating — or, with
// none, AnyPod — and the forensics namespaces, by name. The operator's
// IsolationVerified and `kubectl careplane verify` both judge a fence with it.
func NamespaceInput(ns *corev1.Namespace, policies []networkingv1.NetworkPolicy, pods []corev1.Pod, forensics []string) FenceInput {
	labels := ns.Labels
	if labels[corev1.LabelMetadataName] == "" {
		labels = map[string]string{corev1.LabelMetadataName: ns.Name}
		for k, v := range ns.Labels {
			labels[k] = v
		}
	}
	in := FenceInput{Namespace: ns.Name, NamespaceLabels: labels, Policies: policies, ForensicsNamespaces: forensics}
	for i := range pods {
		if pods[i].DeletionTimestamp == nil {
			in.Pods = append(in.Pods, PodFromObject(&pods[i]))
		}
	}
	if len(in.Pods) == 0 {
		in.Pods = []Pod{{Name: AnyPod}}
	}
	return in
}
