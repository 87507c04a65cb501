package preflight

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
)

// --- crds -----------------------------------------------------------------

// ExpectedKinds are the kinds of api/v1alpha1: each must be served at
// careplane.io/v1alpha1. Read from the API package's scheme, so that a new
// kind is checked without a change here.
func ExpectedKinds() []string {
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	pkg := reflect.TypeFor[v1alpha1.HealthEnvironment]().PkgPath()
	var kinds []string
	for kind, typ := range s.KnownTypes(v1alpha1.GroupVersion) {
		if typ.PkgPath() == pkg && !strings.HasSuffix(kind, "List") {
			kinds = append(kinds, kind)
		}
	}
	slices.Sort(kinds)
	return kinds
}

func checkCRDs(_ context.Context, c Clients, _ Options) Result {
	gv := v1alpha1.GroupVersion.String()
	var served []string
	list, err := c.Discovery.ServerResourcesForGroupVersion(gv)
	switch {
	case err == nil:
		for _, r := range list.APIResources {
			if !strings.Contains(r.Name, "/") {
				served = append(served, r.Kind)
			}
		}
	case apierrors.IsNotFound(err):
	default:
		if r := refused("crds", "the API resources of "+gv, err); r != nil {
			return *r
		}
		return Result{Status: Fail, Message: fmt.Sprintf("discovering %s: %v", gv, err), Remediation: remedy("crds", "check that the API server is reachable")}
	}
	return JudgeCRDs(ExpectedKinds(), served)
}

// JudgeCRDs is the crds check over the kinds the API server serves at
// careplane.io/v1alpha1.
func JudgeCRDs(expected, served []string) Result {
	var missing []string
	for _, k := range expected {
		if !slices.Contains(served, k) {
			missing = append(missing, k)
		}
	}
	gv := v1alpha1.GroupVersion.String()
	if len(missing) > 0 {
		return Result{Status: Fail,
			Message:     fmt.Sprintf("not served at %s: %s", gv, strings.Join(missing, ", ")),
			Remediation: remedy("crds", "install or upgrade the CRDs: the chart with crds.enabled=true, or kubectl apply -k config/crd")}
	}
	return Result{Status: Pass, Message: fmt.Sprintf("%s served at %s", strings.Join(expected, ", "), gv)}
}

// --- guardrails -----------------------------------------------------------

// guardrailObject is one object of config/guardrails, named Name-Suffix
// in an install named Name.
type guardrailObject struct {
	Kind, APIVersion, Suffix string
	// Policy is the suffix of the policy a binding binds.
	Policy string
	// Params says whether a binding reads the parameter ConfigMap.
	Params bool
}

func (g guardrailObject) binding() bool { return strings.HasSuffix(g.Kind, "Binding") }

// paramsName is the guardrails' parameter ConfigMap of an install.
func paramsName(o Options) string {
	for _, g := range guardrailObjects {
		if g.Kind == "ConfigMap" {
			return o.Name + "-" + g.Suffix
		}
	}
	return o.Name + "-guardrails"
}

// seenGuardrail is what the cluster holds of one guardrail object.
type seenGuardrail struct {
	// Missing: not found; Unserved: the API server does not serve its kind.
	Missing, Unserved bool
	// PolicyName, ParamName, ParamNamespace and Actions are a binding's
	// spec.policyName, spec.paramRef and spec.validationActions.
	PolicyName, ParamName, ParamNamespace string
	Actions                               []string
	// TypeWarnings are a ValidatingAdmissionPolicy's
	// status.typeChecking.expressionWarnings: an expression that does not
	// type-check against the CRD's schema.
	TypeWarnings []string
}

func checkGuardrails(ctx context.Context, c Clients, o Options) Result {
	seen := map[string]seenGuardrail{}
	for _, g := range guardrailObjects {
		if g.Kind == "ConfigMap" {
			continue // guardrail-parameters
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.FromAPIVersionAndKind(g.APIVersion, g.Kind))
		name := o.Name + "-" + g.Suffix
		err := c.Client.Get(ctx, client.ObjectKey{Name: name}, u)
		var s seenGuardrail
		switch {
		case err == nil:
			s.PolicyName, _, _ = unstructured.NestedString(u.Object, "spec", "policyName")
			s.ParamName, _, _ = unstructured.NestedString(u.Object, "spec", "paramRef", "name")
			s.ParamNamespace, _, _ = unstructured.NestedString(u.Object, "spec", "paramRef", "namespace")
			s.Actions, _, _ = unstructured.NestedStringSlice(u.Object, "spec", "validationActions")
			warnings, _, _ := unstructured.NestedSlice(u.Object, "status", "typeChecking", "expressionWarnings")
			for _, w := range warnings {
				if m, ok := w.(map[string]any); ok {
					s.TypeWarnings = append(s.TypeWarnings, fmt.Sprintf("%v: %v", m["fieldRef"], m["warning"]))
				}
			}
		case apierrors.IsNotFound(err):
			s.Missing = true
		case meta.IsNoMatchError(err):
			s.Unserved = true
		default:
			if r := refused("guardrails", g.Kind+" "+name, err); r != nil {
				return *r
			}
			return Result{Status: Fail, Message: fmt.Sprintf("reading %s %s: %v", g.Kind, name, err), Remediation: remedy("guardrails", "check that the API server is reachable")}
		}
		seen[g.Kind+"/"+name] = s
	}
	return JudgeGuardrails(o, seen)
}

// JudgeGuardrails is the guardrails check over what the cluster holds,
// keyed Kind/name.
func JudgeGuardrails(o Options, seen map[string]seenGuardrail) Result {
	var problems, warnings []string
	n := 0
	for _, g := range guardrailObjects {
		if g.Kind == "ConfigMap" {
			continue
		}
		n++
		name := o.Name + "-" + g.Suffix
		s := seen[g.Kind+"/"+name]
		switch {
		case s.Unserved:
			problems = append(problems, fmt.Sprintf("%s %s: the API server does not serve %s (%s)", g.Kind, name, g.Kind, g.APIVersion))
			continue
		case s.Missing:
			problems = append(problems, fmt.Sprintf("%s %s is missing", g.Kind, name))
			continue
		case !g.binding():
			for _, w := range s.TypeWarnings {
				warnings = append(warnings, fmt.Sprintf("%s %s does not type-check: %s", g.Kind, name, w))
			}
			continue
		}
		if want := o.Name + "-" + g.Policy; s.PolicyName != want {
			problems = append(problems, fmt.Sprintf("%s %s binds policy %q, not %s", g.Kind, name, s.PolicyName, want))
		}
		if g.Params && (s.ParamName != paramsName(o) || s.ParamNamespace != o.Namespace) {
			problems = append(problems, fmt.Sprintf("%s %s reads parameters from ConfigMap %s/%s, not %s/%s", g.Kind, name, s.ParamNamespace, s.ParamName, o.Namespace, paramsName(o)))
		}
		if g.Kind == "ValidatingAdmissionPolicyBinding" && !slices.Contains(s.Actions, "Deny") {
			problems = append(problems, fmt.Sprintf("%s %s does not deny (validationActions %v)", g.Kind, name, s.Actions))
		}
	}
	if len(problems) > 0 {
		return Result{Status: Fail, Message: strings.Join(problems, "; "),
			Remediation: remedy("guardrails", "reinstall the guardrails: helm upgrade with guardrails.enabled=true, or kubectl apply -k config/guardrails; until then a GitOps tool or a tenant can undo a fence")}
	}
	if len(warnings) > 0 {
		return Result{Status: Warn, Message: strings.Join(warnings, "; "),
			Remediation: remedy("guardrails", "install the guardrails of the same careplane version as the CRDs (helm upgrade installs both)")}
	}
	return Result{Status: Pass, Message: fmt.Sprintf("%d admission policies and bindings of %s present and bound", n, o.Name)}
}

// --- guardrail-parameters ---------------------------------------------------

func checkParameters(ctx context.Context, c Clients, o Options) Result {
	cm := &corev1.ConfigMap{}
	err := c.Client.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: paramsName(o)}, cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = nil
	case err != nil:
		if r := refused("guardrail-parameters", "ConfigMap "+o.Namespace+"/"+paramsName(o), err); r != nil {
			return *r
		}
		return Result{Status: Fail, Message: fmt.Sprintf("reading ConfigMap %s/%s: %v", o.Namespace, paramsName(o), err), Remediation: remedy("guardrail-parameters", "check that the API server is reachable")}
	}
	return JudgeParameters(o, cm)
}

// parameterKeys are the keys the guardrail policies read.
var parameterKeys = []string{"responderGroups", "controlPlaneUsers"}

// splitList parses a parameter as the policies do:
// split(',').map(g, g.trim()).filter(g, g != ”).
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// JudgeParameters is the guardrail-parameters check over the ConfigMap, nil
// when it does not exist.
func JudgeParameters(o Options, cm *corev1.ConfigMap) Result {
	ref := o.Namespace + "/" + paramsName(o)
	if cm == nil {
		return Result{Status: Fail, Message: fmt.Sprintf("ConfigMap %s is missing: the guardrails deny every request they guard, fences and restores by responders included", ref),
			Remediation: remedy("guardrail-parameters", "recreate it: helm upgrade (guardrails.enabled=true), or kubectl apply -k config/guardrails")}
	}
	var problems, warnings []string
	groups := splitList(cm.Data["responderGroups"])
	if len(groups) == 0 {
		problems = append(problems, "data.responderGroups names no group: nobody may fence or restore")
	}
	for k := range cm.Data {
		if !slices.Contains(parameterKeys, k) {
			warnings = append(warnings, fmt.Sprintf("unknown key %q (the policies read %s)", k, strings.Join(parameterKeys, " and ")))
		}
	}
	for _, k := range parameterKeys {
		for _, v := range splitList(cm.Data[k]) {
			if strings.ContainsAny(v, " \t\n") {
				warnings = append(warnings, fmt.Sprintf("%s entry %q contains whitespace: entries are separated by commas", k, v))
			}
		}
	}
	if len(cm.BinaryData) > 0 {
		warnings = append(warnings, "binaryData is ignored by the policies")
	}
	slices.Sort(warnings)
	switch {
	case len(problems) > 0:
		return Result{Status: Fail, Message: fmt.Sprintf("ConfigMap %s: %s", ref, strings.Join(append(problems, warnings...), "; ")),
			Remediation: remedy("guardrail-parameters", "set guardrails.responderGroups (helm upgrade) or data.responderGroups")}
	case len(warnings) > 0:
		return Result{Status: Warn, Message: fmt.Sprintf("ConfigMap %s: %s", ref, strings.Join(warnings, "; ")),
			Remediation: remedy("guardrail-parameters", "fix the ConfigMap's data (helm upgrade with guardrails.responderGroups and guardrails.controlPlaneUsers)")}
	}
	return Result{Status: Pass, Message: fmt.Sprintf("ConfigMap %s: responder groups %s", ref, strings.Join(groups, ", "))}
}

// --- leader ---------------------------------------------------------------

func checkLeader(ctx context.Context, c Clients, o Options) Result {
	if o.NoLeaderElection {
		return Result{Status: Warn, Message: "not checked: the manager runs without leader election, so no Lease records a leader; one replica only, or two would both reconcile",
			Remediation: remedy("leader", "enable leader election (the chart's leaderElection=true) to run more than one replica")}
	}
	lease := &coordinationv1.Lease{}
	err := c.Client.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: LeaseName}, lease)
	switch {
	case apierrors.IsNotFound(err):
		lease = nil
	case err != nil:
		if r := refused("leader", "Lease "+o.Namespace+"/"+LeaseName, err); r != nil {
			return *r
		}
		return Result{Status: Fail, Message: fmt.Sprintf("reading Lease %s/%s: %v", o.Namespace, LeaseName, err), Remediation: remedy("leader", "check that the API server is reachable")}
	}
	return JudgeLease(o, lease, o.Now())
}

// JudgeLease is the leader check over the leader election Lease (nil when
// it does not exist) at now: held, and renewed within its duration.
func JudgeLease(o Options, lease *coordinationv1.Lease, now time.Time) Result {
	ref := o.Namespace + "/" + LeaseName
	fix := remedy("leader", "check the manager's pods (kubectl -n "+o.Namespace+" get pods; their logs) and that they run with --leader-elect --leader-election-namespace="+o.Namespace+" (the chart's leaderElection=true)")
	if lease == nil {
		return Result{Status: Fail, Message: fmt.Sprintf("no leader: Lease %s does not exist (no manager has been elected)", ref), Remediation: fix}
	}
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	if holder == "" {
		return Result{Status: Fail, Message: fmt.Sprintf("no leader: Lease %s is held by nobody (the last leader released it)", ref), Remediation: fix}
	}
	if lease.Spec.RenewTime == nil {
		return Result{Status: Fail, Message: fmt.Sprintf("no leader: Lease %s, held by %s, was never renewed", ref, holder), Remediation: fix}
	}
	duration := 15 * time.Second // controller-runtime's default
	if lease.Spec.LeaseDurationSeconds != nil {
		duration = time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second
	}
	age := now.Sub(lease.Spec.RenewTime.Time)
	if age > duration {
		return Result{Status: Fail, Message: fmt.Sprintf("no leader: Lease %s, held by %s, was last renewed %s ago, beyond its %s duration (the leader stopped renewing)", ref, holder, age.Round(time.Second), duration), Remediation: fix}
	}
	return Result{Status: Pass, Message: fmt.Sprintf("held by %s, renewed %s ago", holder, max(age, 0).Round(time.Second))}
}

// --- manager-rbac ---------------------------------------------------------

// Access is one thing the manager's code needs: a verb on a resource,
// cluster-wide or in the manager's namespace.
type Access struct {
	Namespace, Group, Resource, Verb string
}

func (a Access) String() string {
	r := a.Resource
	if a.Group != "" {
		r += "." + a.Group
	}
	if a.Namespace != "" {
		return fmt.Sprintf("%s %s in %s", a.Verb, r, a.Namespace)
	}
	return a.Verb + " " + r
}

// ManagerAccess is every access the manager's RBAC must grant in an
// install: the rules generated from the code's markers, cluster-wide, and
// the leader election rules in its namespace.
func ManagerAccess(o Options) []Access {
	var out []Access
	add := func(ns string, rules []rbacv1.PolicyRule) {
		for _, r := range rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						out = append(out, Access{Namespace: ns, Group: g, Resource: res, Verb: v})
					}
				}
			}
		}
	}
	add("", managerClusterRules)
	add(o.Namespace, managerNamespaceRules)
	return out
}

// managerUser is the manager ServiceAccount's username and groups, as the
// API server authenticates its token.
func managerUser(o Options) (string, []string) {
	sa := o.Name + "-manager"
	return "system:serviceaccount:" + o.Namespace + ":" + sa,
		[]string{"system:serviceaccounts", "system:serviceaccounts:" + o.Namespace, "system:authenticated"}
}

func checkManagerRBAC(ctx context.Context, c Clients, o Options) Result {
	user, groups := managerUser(o)
	sa := &corev1.ServiceAccount{}
	err := c.Client.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: o.Name + "-manager"}, sa)
	switch {
	case apierrors.IsNotFound(err):
		return Result{Status: Fail, Message: fmt.Sprintf("ServiceAccount %s/%s-manager is missing", o.Namespace, o.Name),
			Remediation: remedy("manager-rbac", "reinstall the chart (or kubectl apply -k config/rbac)")}
	case err != nil:
		if r := refused("manager-rbac", "ServiceAccount "+o.Namespace+"/"+o.Name+"-manager", err); r != nil {
			return *r
		}
		return Result{Status: Fail, Message: fmt.Sprintf("reading ServiceAccount %s/%s-manager: %v", o.Namespace, o.Name, err), Remediation: remedy("manager-rbac", "check that the API server is reachable")}
	}
	var denied []Access
	all := ManagerAccess(o)
	for _, a := range all {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: a.Namespace, Group: a.Group, Resource: a.Resource, Verb: a.Verb},
		}}
		if err := c.Client.Create(ctx, sar); err != nil {
			if r := refused("manager-rbac", "the manager's rights (create subjectaccessreviews.authorization.k8s.io)", err); r != nil {
				return *r
			}
			return Result{Status: Fail, Message: fmt.Sprintf("asking whether %s may %s: %v", user, a, err), Remediation: remedy("manager-rbac", "check that the API server is reachable")}
		}
		if !sar.Status.Allowed {
			denied = append(denied, a)
		}
	}
	return JudgeRBAC(user, len(all), denied)
}

// JudgeRBAC is the manager-rbac check over the accesses the API server's
// authorizer denied the manager, of n asked.
func JudgeRBAC(user string, n int, denied []Access) Result {
	if len(denied) > 0 {
		s := make([]string, len(denied))
		for i, a := range denied {
			s[i] = a.String()
		}
		return Result{Status: Fail, Message: fmt.Sprintf("%s may not: %s", user, strings.Join(s, ", ")),
			Remediation: remedy("manager-rbac", "restore the manager's ClusterRole, Role and bindings: helm upgrade, or kubectl apply -k config/rbac")}
	}
	return Result{Status: Pass, Message: fmt.Sprintf("%s may do all %d things its code's RBAC markers ask for", user, n)}
}

// --- network-policy -------------------------------------------------------

// networkPlugins are DaemonSet names of network plugins that enforce
// NetworkPolicy (by default), and of those known not to.
var networkPlugins = []struct {
	name, plugin string
	enforces     bool
}{
	{"calico-node", "Calico", true},
	{"canal", "Canal (Calico policy)", true},
	{"cilium", "Cilium", true},
	{"antrea-agent", "Antrea", true},
	{"kube-router", "kube-router", true},
	{"weave-net", "Weave Net", true},
	{"kube-network-policies", "kube-network-policies", true},
	{"kube-flannel-ds", "Flannel", false},
	{"kube-flannel", "Flannel", false},
}

func checkNetworkPolicy(ctx context.Context, c Clients, _ Options) Result {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("DaemonSetList"))
	err := c.Client.List(ctx, list)
	if apierrors.IsForbidden(err) {
		// Network plugins mostly run in kube-system.
		err = c.Client.List(ctx, list, client.InNamespace(metav1.NamespaceSystem))
	}
	if err != nil {
		return Result{Status: Warn, Message: fmt.Sprintf("unknown: cannot list DaemonSets: %v", err),
			Remediation: remedy("network-policy", "ask the cluster's administrator which network plugin runs and whether it enforces NetworkPolicy")}
	}
	var names []string
	for _, d := range list.Items {
		names = append(names, d.Namespace+"/"+d.Name)
	}
	return JudgeNetworkPolicy(names)
}

// JudgeNetworkPolicy is the network-policy check over the cluster's
// DaemonSets (namespace/name).
func JudgeNetworkPolicy(daemonSets []string) Result {
	var enforcing, other []string
	for _, ds := range daemonSets {
		_, name, _ := strings.Cut(ds, "/")
		for _, p := range networkPlugins {
			if name == p.name {
				if p.enforces {
					enforcing = append(enforcing, fmt.Sprintf("%s (%s)", p.plugin, ds))
				} else {
					other = append(other, fmt.Sprintf("%s (%s)", p.plugin, ds))
				}
			}
		}
	}
	slices.Sort(enforcing)
	slices.Sort(other)
	switch {
	case len(enforcing) > 0:
		return Result{Status: Pass, Message: "enforced by " + strings.Join(enforcing, ", ")}
	case len(other) > 0:
		return Result{Status: Warn, Message: "not enforced: " + strings.Join(other, ", ") + " does not enforce NetworkPolicy, so a fence's deny policy stops no packet",
			Remediation: remedy("network-policy", "run a network plugin that enforces NetworkPolicy (e.g. Calico beside Flannel, as Canal does); careplane still revokes credentials and stops or freezes workloads")}
	}
	return Result{Status: Warn, Message: "unknown: no known network plugin's DaemonSet found (Calico, Cilium, Antrea, kube-router, Weave Net, kube-network-policies); careplane cannot tell whether NetworkPolicy is enforced",
		Remediation: remedy("network-policy", "check with the cluster's network plugin that it enforces NetworkPolicy")}
}
