// Package plugin is the logic of the kubectl plugin kubectl-careplane: the
// pure fence plan and table formatting, unit-tested without a cluster, and
// the cobra commands that gather from and write to the cluster.
package plugin

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// Verbs of a planned action.
const (
	VerbApply    = "apply"
	VerbDelete   = "delete"
	VerbRecreate = "recreate"
	VerbPreserve = "preserve"
	VerbScale    = "scale-to-0"
	VerbDrain    = "empty"
)

// Action is one write a fence would make.
type Action struct {
	// Step is the fence step (1-5) the write belongs to.
	Step int
	// Verb is what happens to the object: apply, delete, recreate,
	// preserve (kept running as evidence), scale-to-0, empty.
	Verb string
	// Kind of the object, e.g. NetworkPolicy.
	Kind string
	// Namespace of the object; empty for cluster-scoped objects.
	Namespace string
	// Name of the object.
	Name string
	// Note says why, or what else happens.
	Note string
}

// Plan is every write a fence of one environment would make, in the order
// the operator makes them.
type Plan struct {
	// Environment is the HealthEnvironment's name.
	Environment string
	// Actions are the writes, by step.
	Actions []Action
}

// FenceState is what the cluster holds for one environment, gathered before
// planning its fence. Objects of other environments or namespaces may be
// included; the plan ignores them.
type FenceState struct {
	// Env is the environment as it would be after the fence patch (mode
	// Fenced, with the fence's ticket and workloads).
	Env *v1alpha1.HealthEnvironment
	// Policies are the NetworkPolicies of the primary namespace.
	Policies []networkingv1.NetworkPolicy
	// ServiceAccounts are the ServiceAccounts of the primary namespace.
	ServiceAccounts []corev1.ServiceAccount
	// Secrets are the Secrets of the primary namespace.
	Secrets []corev1.Secret
	// Pods are the pods of the primary namespace.
	Pods []corev1.Pod
	// Deployments are the Deployments of the primary namespace.
	Deployments []appsv1.Deployment
	// FrontSlices are the EndpointSlices of the front namespace.
	FrontSlices []discoveryv1.EndpointSlice
	// AdminPolicyKind is the kind of the admin-tier policy the cluster serves
	// (ClusterNetworkPolicy or AdminNetworkPolicy), or "" for none.
	AdminPolicyKind string
}

// PlanFence lists what a fence of s.Env would write or delete, following the
// operator's fence steps: (1) the deny policy (and the admin-tier one), (2)
// every other policy of the primary namespace deleted, (3) ServiceAccounts
// recreated and generated Secrets deleted, (4) no new pods admitted, pods
// preserved as evidence (or not) and Deployments scaled to zero, (5) the
// front EndpointSlices emptied or switched to the standby.
func PlanFence(s FenceState) Plan {
	env := s.Env
	names := build.NamespaceNames(env)
	ns := names.Primary
	p := Plan{Environment: env.Name}
	add := func(a Action) { p.Actions = append(p.Actions, a) }

	// (1) Deny.
	note := "deny all ingress and egress of every pod"
	if env.Spec.Isolation.ForensicsFrom != nil {
		note += ", except ingress from the forensicsFrom namespaces"
	}
	add(Action{Step: 1, Verb: VerbApply, Kind: "NetworkPolicy", Namespace: ns, Name: build.FencePolicyName, Note: note})
	add(Action{Step: 1, Verb: VerbApply, Kind: "Namespace", Name: ns, Note: "label " + v1alpha1.LabelFenced + "=true (freezes the namespace)"})
	if s.AdminPolicyKind != "" {
		add(Action{Step: 1, Verb: VerbApply, Kind: s.AdminPolicyKind, Name: build.AdminFencePolicyName(env), Note: "admin-tier deny; a tenant cannot override it"})
	}

	// (2) Every other policy.
	for _, pol := range sortedByName(s.Policies, func(o networkingv1.NetworkPolicy) (string, string) { return o.Namespace, o.Name }) {
		if pol.Namespace != ns || pol.Name == build.FencePolicyName || pol.DeletionTimestamp != nil {
			continue
		}
		n := "allows add up: it could breach the fence"
		if pol.Labels[v1alpha1.LabelEnvironment] != env.Name {
			n = "not careplane's; " + n
		}
		add(Action{Step: 2, Verb: VerbDelete, Kind: "NetworkPolicy", Namespace: ns, Name: pol.Name, Note: n})
	}

	// (3) Credentials.
	sas := map[string]bool{}
	for _, sa := range s.ServiceAccounts {
		if sa.Namespace == ns {
			sas[sa.Name] = true
		}
	}
	secrets := map[string]bool{}
	for _, sec := range s.Secrets {
		if sec.Namespace == ns {
			secrets[sec.Name] = true
		}
	}
	services := slices.SortedFunc(slices.Values(env.Spec.Services), func(a, b v1alpha1.Service) int { return cmp.Compare(a.Name, b.Name) })
	for _, svc := range services {
		n := "new UID: tokens bound to the old one stop working"
		if !sas[svc.Name] {
			n = "does not exist yet; created"
		}
		add(Action{Step: 3, Verb: VerbRecreate, Kind: "ServiceAccount", Namespace: ns, Name: svc.Name, Note: n})
	}
	for _, svc := range services {
		for _, g := range slices.Sorted(slices.Values(svc.GeneratedSecrets)) {
			name := build.GeneratedSecretName(svc.Name, g)
			if secrets[name] {
				add(Action{Step: 3, Verb: VerbDelete, Kind: "Secret", Namespace: ns, Name: name, Note: "generated credential invalidated"})
			}
		}
	}

	// (4) Workloads.
	preserve := env.Spec.Isolation.Workloads != v1alpha1.WorkloadsStop
	ticket := env.Spec.Isolation.Ticket
	if ticket == "" {
		ticket = "fenced"
	}
	add(Action{Step: 4, Verb: VerbApply, Kind: "ResourceQuota", Namespace: ns, Name: build.FenceQuotaName,
		Note: "pods: 0: no new pod starts behind the fence (sent with the deny policy)"})
	for _, pod := range sortedByName(s.Pods, func(o corev1.Pod) (string, string) { return o.Namespace, o.Name }) {
		if pod.Namespace != ns || pod.Labels[v1alpha1.LabelEnvironment] != env.Name || pod.DeletionTimestamp != nil {
			continue
		}
		switch {
		case pod.Labels[v1alpha1.LabelEvidence] != "":
			add(Action{Step: 4, Verb: VerbPreserve, Kind: "Pod", Namespace: ns, Name: pod.Name,
				Note: "already evidence (" + v1alpha1.LabelEvidence + "=" + pod.Labels[v1alpha1.LabelEvidence] + "); stays isolated"})
		case pod.Labels[v1alpha1.LabelService] == "":
			continue
		case preserve:
			add(Action{Step: 4, Verb: VerbPreserve, Kind: "Pod", Namespace: ns, Name: pod.Name,
				Note: "detached from its ReplicaSet, labelled " + v1alpha1.LabelEvidence + "=" + ticket + ", kept running isolated"})
		default:
			add(Action{Step: 4, Verb: VerbDelete, Kind: "Pod", Namespace: ns, Name: pod.Name, Note: "not preserved (workloads: Stop); deleted by the scale-down"})
		}
	}
	deps := map[string]bool{}
	for _, d := range s.Deployments {
		if d.Namespace == ns {
			deps[d.Name] = true
		}
	}
	for _, svc := range services {
		n := "replicas 0"
		if !deps[svc.Name] {
			n = "does not exist yet; created with replicas 0"
		}
		add(Action{Step: 4, Verb: VerbScale, Kind: "Deployment", Namespace: ns, Name: svc.Name, Note: n})
	}

	// (5) Traffic.
	frontSlices := map[string]bool{}
	for _, es := range s.FrontSlices {
		if es.Namespace == names.Front {
			frontSlices[es.Name] = true
		}
	}
	for _, svc := range services {
		n := "stops sending to the primary"
		if build.HasStandby(env) && svc.Critical && env.Spec.Failover.Trigger != v1alpha1.TriggerManual {
			n += "; switches to the standby"
		}
		if !frontSlices[build.FrontEndpointSliceName(svc.Name)] {
			n += " (does not exist yet)"
		}
		add(Action{Step: 5, Verb: VerbDrain, Kind: "EndpointSlice", Namespace: names.Front, Name: build.FrontEndpointSliceName(svc.Name), Note: n})
	}
	return p
}

func sortedByName[T any](items []T, key func(T) (string, string)) []T {
	out := slices.Clone(items)
	slices.SortFunc(out, func(a, b T) int {
		an, aName := key(a)
		bn, bName := key(b)
		return cmp.Or(cmp.Compare(an, bn), cmp.Compare(aName, bName))
	})
	return out
}

// WritePlan writes p as a table: STEP ACTION KIND NAMESPACE NAME NOTE.
func WritePlan(w io.Writer, p Plan) error {
	if _, err := fmt.Fprintf(w, "Fence plan for HealthEnvironment %s (%d writes; nothing was changed):\n", p.Environment, len(p.Actions)); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tACTION\tKIND\tNAMESPACE\tNAME\tNOTE")
	for _, a := range p.Actions {
		ns := a.Namespace
		if ns == "" {
			ns = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", a.Step, a.Verb, a.Kind, ns, a.Name, a.Note)
	}
	return tw.Flush()
}
