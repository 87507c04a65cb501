package build

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/fuzzing"
	"github.com/careplane/careplane/internal/netpol"
)

// FuzzBuild decodes the fuzzer's bytes into a HealthEnvironment that passes
// the CRD's validation (see envGen) and runs every builder on it, checking:
//
//   - every object's name, namespace, labels and owner reference are what
//     the API server accepts, and each NetworkPolicy passes its validation
//     of NetworkPolicies (fuzzing.ValidateNetworkPolicy);
//   - Deployments keep the restricted security context, select their own
//     pods, and name their containers, ports, volumes and mounts validly;
//   - the fence policy, with or without the forensics exception, isolates
//     every pod of the site; beside the site's own policies it is never the
//     policy a breach is blamed on; evidence pods stay isolated among the
//     site's policies and the evidence policy;
//   - front EndpointSlices hold only distinct, canonical IPv4 addresses, in
//     order;
//   - a known-good revision of the services rebuilds the same Deployments
//     and NetworkPolicies;
//   - the output is deterministic: building twice, or from a spec whose sets
//     (services, talksTo, generatedSecrets, integrations and their lists)
//     are reordered, gives the same objects.
func FuzzBuild(f *testing.F) {
	for _, seed := range fuzzing.Seeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g := envGen{r: fuzzing.Rand(data)}
		env := g.env()
		endpoints := g.endpoints()
		out := checkEnvironment(t, env, endpoints)
		if again := buildAll(env, endpoints); !equalJSON(out, again) {
			t.Fatalf("building twice gives different objects")
		}
		reordered := g.reorderSets(env)
		if again := buildAll(reordered, endpoints); !equalJSON(out, again) {
			t.Fatalf("reordering sets in the spec changes the objects\nspec: %s\nreordered: %s", mustJSON(env.Spec), mustJSON(reordered.Spec))
		}
	})
}

// checkEnvironment runs every builder on env, checks each object, and
// returns them all.
func checkEnvironment(t *testing.T, env *v1alpha1.HealthEnvironment, endpoints []Endpoint) []any {
	t.Helper()
	names := NamespaceNames(env)
	for _, ns := range []string{names.Front, names.Primary, names.Standby} {
		if ns == "" {
			continue
		}
		n := toTyped[corev1.Namespace](t, Namespace(env, ns, siteLabelOfNamespace(env, ns)))
		checkObjectMeta(t, "Namespace", n.ObjectMeta, false, apivalidation.NameIsDNSLabel)
	}
	sites := []v1alpha1.Site{v1alpha1.SitePrimary}
	if HasStandby(env) {
		sites = append(sites, v1alpha1.SiteStandby)
	}
	for _, site := range sites {
		checkSite(t, env, site)
	}
	for _, svc := range env.Spec.Services {
		s := toTyped[corev1.Service](t, FrontService(env, svc))
		checkObjectMeta(t, "front Service", s.ObjectMeta, true, apivalidation.NameIsDNS1035Label)
		for _, site := range sites {
			es := toTyped[discoveryv1.EndpointSlice](t, FrontEndpointSlice(env, svc, site, endpoints))
			checkObjectMeta(t, "EndpointSlice", es.ObjectMeta, true, apivalidation.NameIsDNSSubdomain)
			checkEndpoints(t, es, endpoints)
		}
	}
	for _, k := range AdminFenceKinds {
		for _, denyNetworks := range []bool{true, false} {
			u := k.Build(env, names.Primary, denyNetworks)
			om := metav1.ObjectMeta{Name: u.GetName(), Labels: u.GetLabels(), OwnerReferences: u.GetOwnerReferences()}
			checkObjectMeta(t, k.GVK.Kind, om, false, apivalidation.NameIsDNSSubdomain)
			if errs := checkAgainstCRD(t, k.GVK, u.Object); len(errs) > 0 {
				t.Fatalf("%s does not match its CRD: %v\n%s", k.GVK.Kind, errs, mustJSON(u.Object))
			}
		}
	}
	data, err := RevisionData(env.Spec.Services)
	if err != nil {
		t.Fatalf("RevisionData: %v", err)
	}
	cr := toTyped[appsv1.ControllerRevision](t, ControllerRevision(env, data, 1))
	checkObjectMeta(t, "ControllerRevision", cr.ObjectMeta, true, apivalidation.NameIsDNSSubdomain)
	templates, err := ServicesFromRevision(data)
	if err != nil {
		t.Fatalf("ServicesFromRevision: %v", err)
	}
	for _, site := range sites {
		ns := SiteNamespace(env, site)
		if !equalJSON(NetworkPoliciesFor(env, site, ns, templates), NetworkPolicies(env, site, ns)) {
			t.Fatalf("%s: the revision's services give other NetworkPolicies than the spec's", site)
		}
		fromRevision, fromSpec := SiteServices(templates, site), ServicesForSite(env, site)
		for i := range fromSpec {
			if !equalJSON(Deployment(env, site, ns, fromRevision[i], "1"), Deployment(env, site, ns, fromSpec[i], "1")) {
				t.Fatalf("%s: the revision's %s gives another Deployment than the spec's", site, fromSpec[i].Name)
			}
		}
	}
	return buildAll(env, endpoints)
}

// checkSite checks the objects of one site namespace and its fence.
func checkSite(t *testing.T, env *v1alpha1.HealthEnvironment, site v1alpha1.Site) {
	t.Helper()
	ns := SiteNamespace(env, site)
	rq := toTyped[corev1.ResourceQuota](t, ResourceQuota(env, ns))
	checkObjectMeta(t, "ResourceQuota", rq.ObjectMeta, true, apivalidation.NameIsDNSSubdomain)
	fq := toTyped[corev1.ResourceQuota](t, FenceQuota(env, ns))
	checkObjectMeta(t, "fence ResourceQuota", fq.ObjectMeta, true, apivalidation.NameIsDNSSubdomain)
	if pods := fq.Spec.Hard[corev1.ResourcePods]; len(fq.Spec.Hard) != 1 || !pods.IsZero() {
		t.Errorf("the fence's quota is %v, want pods: 0 alone", fq.Spec.Hard)
	}
	lr := toTyped[corev1.LimitRange](t, LimitRange(env, ns))
	checkObjectMeta(t, "LimitRange", lr.ObjectMeta, true, apivalidation.NameIsDNSSubdomain)

	var policies []networkingv1.NetworkPolicy
	seen := map[string]bool{}
	for _, ac := range NetworkPolicies(env, site, ns) {
		np := toTyped[networkingv1.NetworkPolicy](t, ac)
		if errs := fuzzing.ValidateNetworkPolicy(np, true); len(errs) > 0 {
			t.Fatalf("NetworkPolicy %s/%s is invalid: %v\n%s", ns, np.Name, errs.ToAggregate(), mustJSON(np))
		}
		if seen[np.Name] {
			t.Fatalf("two NetworkPolicies named %s in %s", np.Name, ns)
		}
		seen[np.Name] = true
		policies = append(policies, *np)
	}

	pods := []netpol.Pod{{Name: netpol.AnyPod}}
	var evidence []netpol.Pod
	for _, svc := range ServicesForSite(env, site) {
		sa := toTyped[corev1.ServiceAccount](t, ServiceAccount(env, ns, svc))
		checkObjectMeta(t, "ServiceAccount", sa.ObjectMeta, true, apivalidation.NameIsDNSSubdomain)
		s := toTyped[corev1.Service](t, Service(env, ns, svc))
		checkObjectMeta(t, "Service", s.ObjectMeta, true, apivalidation.NameIsDNS1035Label)
		if pdb := PodDisruptionBudget(env, ns, svc); (pdb == nil) != (svc.ReplicaCount() <= 1) {
			t.Fatalf("%s with %d replicas: PodDisruptionBudget %v", svc.Name, svc.ReplicaCount(), pdb)
		} else if pdb != nil {
			p := toTyped[policyv1.PodDisruptionBudget](t, pdb)
			checkObjectMeta(t, "PodDisruptionBudget", p.ObjectMeta, true, apivalidation.NameIsDNSSubdomain)
		}
		for _, g := range svc.GeneratedSecrets {
			sec := toTyped[corev1.Secret](t, GeneratedSecret(env, ns, svc, g, "", []byte("fuzz")))
			checkObjectMeta(t, "Secret", sec.ObjectMeta, true, apivalidation.NameIsDNSSubdomain)
		}
		var tmpl corev1.PodTemplateSpec
		if svc.Stateful() {
			ss := toTyped[appsv1.StatefulSet](t, StatefulSet(env, site, ns, svc, "1"))
			checkWorkload(t, "StatefulSet", ss.ObjectMeta, ss.Spec.Selector, *ss.Spec.Replicas, ss.Spec.Template)
			for _, c := range ss.Spec.VolumeClaimTemplates {
				if errs := validation.IsDNS1123Label(c.Name); len(errs) > 0 || c.Labels[v1alpha1.LabelEnvironment] != env.Name {
					t.Fatalf("StatefulSet %s: claim template %q: %v, labels %v", ss.Name, c.Name, errs, c.Labels)
				}
				if errs := validation.IsDNS1123Subdomain(ClaimName(c.Name, svc.Name, 49)); len(errs) > 0 {
					t.Fatalf("StatefulSet %s: claim name: %v", ss.Name, errs)
				}
			}
			tmpl = ss.Spec.Template
		} else {
			d := toTyped[appsv1.Deployment](t, Deployment(env, site, ns, svc, "1"))
			checkDeployment(t, d)
			tmpl = d.Spec.Template
		}

		pod := netpol.PodFromObject(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Labels: tmpl.Labels}, Spec: tmpl.Spec})
		pods = append(pods, pod)
		// What a fence does to a pod it preserves as evidence.
		ev := pod
		ev.Labels = with(tmpl.Labels, v1alpha1.LabelEvidence, cmp.Or(env.Spec.Isolation.Ticket, "fenced"), LabelEvidenceService, svc.Name)
		delete(ev.Labels, v1alpha1.LabelService)
		evidence = append(evidence, ev)
	}

	// The namespace as careplane labels it, and as a fence marks it.
	nsLabels := toTyped[corev1.Namespace](t, Namespace(env, ns, SiteLabel(site))).Labels
	nsLabels = with(nsLabels, corev1.LabelMetadataName, ns)
	fencedLabels := with(nsLabels, v1alpha1.LabelFenced, "true")
	forensics := env.Spec.Isolation.ForensicsNamespaces()
	for _, withForensics := range []bool{true, false} {
		if res := verifyWith(t, ns, fencedLabels, forensics, pods, nil, FencePolicy(env, ns, withForensics)); !res.Isolated {
			t.Fatalf("%s: the fence (forensics exception %v) does not isolate\nforensicsFrom: %s\n%s",
				ns, withForensics, mustJSON(env.Spec.Isolation.ForensicsFrom), netpol.Format(res))
		}
	}
	fenced := verifyWith(t, ns, fencedLabels, forensics, pods, policies, FencePolicy(env, ns, true))
	for _, fl := range fenced.Flows {
		if slices.Contains(fl.Policies, FencePolicyName) || len(fl.Policies) == 0 {
			t.Fatalf("%s: beside the site's policies, the fence is blamed for %+v", ns, fl)
		}
	}
	if res := verifyWith(t, ns, nsLabels, forensics, evidence, policies, EvidencePolicy(env, ns)); !res.Isolated {
		t.Fatalf("%s: evidence pods are reachable among the site's policies\n%s", ns, netpol.Format(res))
	}
}

// verifyWith judges the fence of namespace ns holding policies and the
// extra policies careplane builds, each checked against API validation.
func verifyWith(t *testing.T, ns string, nsLabels map[string]string, forensics []string, pods []netpol.Pod,
	policies []networkingv1.NetworkPolicy, extra ...any) netpol.Result {
	t.Helper()
	all := slices.Clone(policies)
	for _, ac := range extra {
		np := toTyped[networkingv1.NetworkPolicy](t, ac)
		if errs := fuzzing.ValidateNetworkPolicy(np, true); len(errs) > 0 {
			t.Fatalf("NetworkPolicy %s/%s is invalid: %v\n%s", ns, np.Name, errs.ToAggregate(), mustJSON(np))
		}
		all = append(all, *np)
	}
	res, err := netpol.VerifyFence(netpol.FenceInput{Namespace: ns, NamespaceLabels: nsLabels, Pods: pods, Policies: all, ForensicsNamespaces: forensics})
	if err != nil {
		t.Fatalf("VerifyFence: %v", err)
	}
	return res
}

// checkObjectMeta checks an object's metadata as the API server's
// ValidateObjectMeta does: name (by the kind's rule), namespace, labels,
// annotations and owner references; and that careplane's owner reference
// and labels are there.
func checkObjectMeta(t *testing.T, kind string, om metav1.ObjectMeta, namespaced bool, name apivalidation.ValidateNameFunc) {
	t.Helper()
	if errs := apivalidation.ValidateObjectMeta(&om, namespaced, name, field.NewPath("metadata")); len(errs) > 0 {
		t.Fatalf("%s %s/%s: %v", kind, om.Namespace, om.Name, errs.ToAggregate())
	}
	// The fence's objects and the evidence policy have no owner: garbage
	// collection of a deleted environment must not lift an isolation.
	owners := 1
	if om.Name == FencePolicyName || om.Name == EvidencePolicyName || strings.HasPrefix(om.Name, FencePolicyName+"-") {
		owners = 0
	}
	if len(om.OwnerReferences) != owners || om.Labels[v1alpha1.LabelManagedBy] != v1alpha1.ManagedByValue {
		t.Fatalf("%s %s/%s: owner references %v (want %d), labels %v", kind, om.Namespace, om.Name, om.OwnerReferences, owners, om.Labels)
	}
}

// checkDeployment checks what the API server's validation of a Deployment
// and Pod Security "restricted" would reject, as far as apimachinery can
// tell without k8s.io/kubernetes.
func checkDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	checkWorkload(t, "Deployment", d.ObjectMeta, d.Spec.Selector, *d.Spec.Replicas, d.Spec.Template)
}

// checkWorkload checks a Deployment or StatefulSet (kind) as checkDeployment
// says.
func checkWorkload(t *testing.T, kind string, om metav1.ObjectMeta, selector *metav1.LabelSelector, replicas int32, tmpl corev1.PodTemplateSpec) {
	t.Helper()
	d := struct{ Name string }{om.Name}
	checkObjectMeta(t, kind, om, true, apivalidation.NameIsDNSSubdomain)
	if errs := metav1validation.ValidateLabels(tmpl.Labels, field.NewPath("template")); len(errs) > 0 {
		t.Fatalf("%s %s: pod labels: %v", kind, d.Name, errs.ToAggregate())
	}
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(tmpl.Labels)) {
		t.Fatalf("%s %s: selector %v does not select its pods %v (%v)", kind, d.Name, selector, tmpl.Labels, err)
	}
	if r := replicas; r < 0 || r > 50 {
		t.Fatalf("%s %s: %d replicas", kind, d.Name, r)
	}
	stateful := map[string]bool{}
	if kind == "StatefulSet" {
		// The claim templates' volumes, added to each pod by the
		// StatefulSet controller.
		for _, c := range tmpl.Spec.Containers {
			for _, m := range c.VolumeMounts {
				if !slices.ContainsFunc(tmpl.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name }) {
					stateful[m.Name] = true
				}
			}
		}
	}
	checkRestricted(t, &tmpl.Spec)
	volumes := map[string]bool{}
	for _, v := range tmpl.Spec.Volumes {
		if errs := validation.IsDNS1123Label(v.Name); len(errs) > 0 || volumes[v.Name] {
			t.Fatalf("%s %s: volume name %q: %v (repeated: %v)", kind, d.Name, v.Name, errs, volumes[v.Name])
		}
		volumes[v.Name] = true
	}
	for v := range stateful {
		volumes[v] = true
	}
	for _, c := range tmpl.Spec.Containers {
		if errs := validation.IsDNS1123Label(c.Name); len(errs) > 0 {
			t.Fatalf("%s %s: container name %q: %v", kind, d.Name, c.Name, errs)
		}
		for _, p := range c.Ports {
			if errs := append(validation.IsValidPortName(p.Name), validation.IsValidPortNum(int(p.ContainerPort))...); len(errs) > 0 {
				t.Fatalf("%s %s: port %+v: %v", kind, d.Name, p, errs)
			}
		}
		paths := map[string]bool{}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] || paths[m.MountPath] {
				t.Fatalf("%s %s: mount %+v of no volume, or at a path mounted twice", kind, d.Name, m)
			}
			paths[m.MountPath] = true
		}
		for _, e := range c.Env {
			if errs := validation.IsEnvVarName(e.Name); len(errs) > 0 {
				t.Fatalf("%s %s: env %q: %v", kind, d.Name, e.Name, errs)
			}
		}
	}
}

// checkEndpoints checks that a front EndpointSlice holds the IPv4 endpoints
// given, each once, canonical, sorted, and nothing else.
func checkEndpoints(t *testing.T, es *discoveryv1.EndpointSlice, given []Endpoint) {
	t.Helper()
	want := map[netip.Addr]bool{}
	for _, e := range given {
		if a, err := netip.ParseAddr(e.IP); err == nil && a.Is4() {
			want[a] = true
		}
	}
	var prev netip.Addr
	for i, e := range es.Endpoints {
		a, err := netip.ParseAddr(e.Addresses[0])
		if err != nil || !a.Is4() || a.String() != e.Addresses[0] || len(e.Addresses) != 1 || !want[a] || (i > 0 && !prev.Less(a)) {
			t.Fatalf("EndpointSlice %s: endpoint %d %v is not one canonical IPv4 address given, in order", es.Name, i, e.Addresses)
		}
		prev = a
	}
	if len(es.Endpoints) != len(want) {
		t.Fatalf("EndpointSlice %s: %d endpoints for %d distinct IPv4 addresses given", es.Name, len(es.Endpoints), len(want))
	}
}

// buildAll returns every object careplane builds for env, in a fixed order.
func buildAll(env *v1alpha1.HealthEnvironment, endpoints []Endpoint) []any {
	names := NamespaceNames(env)
	out := []any{names}
	for _, ns := range []string{names.Front, names.Primary, names.Standby} {
		if ns == "" {
			continue
		}
		out = append(out, Namespace(env, ns, siteLabelOfNamespace(env, ns)), ResourceQuota(env, ns), LimitRange(env, ns),
			FencePolicy(env, ns, true), FenceQuota(env, ns), EvidencePolicy(env, ns))
	}
	for _, site := range []v1alpha1.Site{v1alpha1.SitePrimary, v1alpha1.SiteStandby} {
		ns := SiteNamespace(env, site)
		out = append(out, NetworkPolicies(env, site, ns))
		for _, svc := range ServicesForSite(env, site) {
			out = append(out, ServiceAccount(env, ns, svc), Deployment(env, site, ns, svc, "1"), Service(env, ns, svc),
				PodDisruptionBudget(env, ns, svc), FrontService(env, svc), FrontEndpointSlice(env, svc, site, endpoints))
			for _, g := range sortedUnique(svc.GeneratedSecrets) {
				out = append(out, GeneratedSecret(env, ns, svc, g, "", []byte("fuzz")))
			}
		}
	}
	for _, k := range AdminFenceKinds {
		out = append(out, k.Build(env, names.Primary, true))
	}
	data, err := RevisionData(env.Spec.Services)
	return append(out, string(data), err, ControllerRevision(env, data, 1))
}

// envGen decodes a HealthEnvironment that passes the CRD's validation (the
// markers of api/v1alpha1) from a rand.Rand the fuzzer steers. Names come
// from a small alphabet, so that they collide with and prefix each other,
// and reach the longest length allowed; label selectors mention careplane's
// own namespaces and labels; the other fields take their typical values and
// their bounds.
type envGen struct{ r *rand.Rand }

func (g envGen) pick(n int) int        { return g.r.IntN(n) }
func (g envGen) chance(p float64) bool { return g.r.Float64() < p }

func oneOf[T any](g envGen, options ...T) T { return options[g.pick(len(options))] }

// dnsLabel returns a DNS label of at most maxLen characters, starting with
// a letter when letterFirst is set.
func (g envGen) dnsLabel(maxLen int, letterFirst bool) string {
	b := make([]byte, oneOf(g, 1, 2, 3, 7, maxLen))
	for i := range b {
		b[i] = "ab0-"[g.pick(4)]
	}
	if letterFirst || b[0] == '-' {
		b[0] = "ab"[g.pick(2)]
	}
	if b[len(b)-1] == '-' {
		b[len(b)-1] = "a0"[g.pick(2)]
	}
	return string(b)
}

// uniqueLabels returns up to n distinct DNS labels.
func (g envGen) uniqueLabels(n, maxLen int, letterFirst bool) []string {
	var out []string
	for range n {
		if l := g.dnsLabel(maxLen, letterFirst); !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}

func (g envGen) env() *v1alpha1.HealthEnvironment {
	env := &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: g.dnsLabel(40, true), UID: testUID}}
	spec := &env.Spec
	spec.Tenant = v1alpha1.Tenant{DisplayName: "NHS 111 Fuzz", ODSCode: oneOf(g, "", "RT4", "ABCDEFGHIJ")}
	names := g.uniqueLabels(1+g.pick(5), 40, true)
	known := append([]string{env.Name, env.Name + PrimarySuffix, env.Name + StandbySuffix, DNSNamespace}, names...)
	for _, n := range names {
		spec.Services = append(spec.Services, g.service(n, names, known))
	}
	// Credentials read from a service talked to, as the CRD admits them.
	for i := range spec.Services {
		s := &spec.Services[i]
		for _, t := range s.TalksTo {
			for _, o := range spec.Services {
				if o.Name == t && len(o.GeneratedSecrets) > 0 && g.chance(0.5) {
					f := v1alpha1.SecretFrom{Service: t, Secret: o.GeneratedSecrets[g.pick(len(o.GeneratedSecrets))]}
					if g.chance(0.5) {
						f.EnvVar = oneOf(g, "DB_PASSWORD", "_x", "A9")
					}
					s.SecretsFrom = append(s.SecretsFrom, f)
				}
			}
		}
	}
	for _, n := range g.uniqueLabels(g.pick(3), 40, true) {
		spec.Integrations = append(spec.Integrations, g.integration(n, names))
	}
	if g.chance(0.5) {
		spec.Quota = v1alpha1.Quota{CPU: ptr.To(resource.MustParse(oneOf(g, "500m", "8"))),
			Memory: ptr.To(resource.MustParse(oneOf(g, "128Mi", "16Gi"))), Pods: ptr.To(int32(1 + g.pick(1000)))}
	}
	f := &spec.Failover
	f.Standby = oneOf(g, v1alpha1.StandbyNone, v1alpha1.StandbyWarm, v1alpha1.StandbyCold, "")
	if HasStandby(env) {
		if !slices.ContainsFunc(spec.Services, func(s v1alpha1.Service) bool { return s.Critical }) {
			spec.Services[g.pick(len(spec.Services))].Critical = true
		}
		f.ActiveSite = oneOf(g, v1alpha1.SitePrimary, v1alpha1.SiteStandby)
	}
	f.Trigger = oneOf(g, v1alpha1.TriggerAutomatic, v1alpha1.TriggerManual)
	if g.chance(0.5) {
		f.Placement.NodeSelector = map[string]string{"careplane.io/pool": "standby"}
		f.Placement.Tolerations = []corev1.Toleration{{Key: "careplane.io/pool", Operator: corev1.TolerationOpEqual, Value: "standby", Effect: corev1.TaintEffectNoSchedule}}
	}
	iso := &spec.Isolation
	iso.Mode = oneOf(g, v1alpha1.IsolationNone, v1alpha1.IsolationFenced, "")
	if iso.Mode == v1alpha1.IsolationFenced {
		iso.Reason = "ransomware indicators"
	}
	iso.Ticket = oneOf(g, "", "INC-2041", "a", strings.Repeat("T", 63))
	iso.Workloads = oneOf(g, v1alpha1.WorkloadsPreserve, v1alpha1.WorkloadsStop)
	if g.chance(0.7) {
		iso.ForensicsFrom = g.forensicsFrom(known)
	}
	return env
}

func (g envGen) service(name string, names, known []string) v1alpha1.Service {
	s := v1alpha1.Service{
		Name:     name,
		Image:    "registry.example/111/" + name + oneOf(g, "", ":v1.2") + "@sha256:" + strings.Repeat("0123456789abcdef", 4),
		Port:     oneOf(g, 1, 53, 80, 443, 8080, 65535, int32(1+g.pick(65535))),
		Critical: g.chance(0.5),
	}
	if g.chance(0.8) {
		s.Replicas = ptr.To(int32(g.pick(51)))
	}
	if g.chance(0.3) {
		// Named ports, TCP and UDP, as the CRD admits them: distinct names,
		// no port and protocol twice.
		s.Port = 0
		for i, n := range g.uniqueLabels(1+g.pick(3), 15, true) {
			if strings.Contains(n, "--") { // the CRD refuses it in a port name
				n = fmt.Sprintf("p%d", i)
			}
			s.Ports = append(s.Ports, v1alpha1.ServicePort{Name: n, Port: oneOf(g, 5060, 5061, int32(10000+i)),
				Protocol: oneOf(g, corev1.ProtocolTCP, corev1.ProtocolUDP, "")})
		}
		s.Ports = slices.CompactFunc(s.Ports, func(a, b v1alpha1.ServicePort) bool {
			return a.Port == b.Port && cmp.Or(a.Protocol, corev1.ProtocolTCP) == cmp.Or(b.Protocol, corev1.ProtocolTCP)
		})
	}
	if g.chance(0.3) {
		for i := range 1 + g.pick(2) {
			v := v1alpha1.Volume{Name: fmt.Sprintf("data-%d", i), MountPath: fmt.Sprintf("/var/lib/data-%d", i), Size: oneOf[v1alpha1.VolumeSize](g, "1Mi", "10Gi", "64Ti"),
				AccessMode: oneOf(g, corev1.ReadWriteOnce, corev1.ReadWriteOncePod, "")}
			if g.chance(0.5) {
				v.StorageClassName = ptr.To("careplane-csi")
			}
			s.Volumes = append(s.Volumes, v)
		}
	}
	for _, n := range names {
		if g.chance(0.3) {
			s.TalksTo = append(s.TalksTo, n)
		}
	}
	for range g.pick(3) {
		p := v1alpha1.TrafficPeer{NamespaceSelector: g.selector(known)}
		if g.chance(0.5) {
			p.PodSelector = g.selector(known)
		}
		s.AllowFrom = append(s.AllowFrom, p)
	}
	s.GeneratedSecrets = g.uniqueLabels(g.pick(3), 40, false)
	for _, n := range []string{"LOG_LEVEL", "_x9", "A"} {
		if g.chance(0.3) {
			s.Env = append(s.Env, v1alpha1.EnvVar{Name: n, Value: oneOf(g, "", "info", "$(LOG_LEVEL)")})
		}
	}
	if g.chance(0.3) {
		s.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		}
	}
	if g.chance(0.3) {
		s.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString(PortName)}}}
		s.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(s.Port)}}, PeriodSeconds: 10}
	}
	return s
}

// labelKey returns a key the CRD accepts in a label selector.
func (g envGen) labelKey() string {
	return oneOf(g, corev1.LabelMetadataName, v1alpha1.LabelEnvironment, v1alpha1.LabelSite, v1alpha1.LabelEvidence,
		v1alpha1.LabelFenced, LabelPodSecurityEnforce, DNSPodLabel, "team", "example.com/tier", strings.Repeat("k", 63))
}

// labelValue returns a value the CRD's LabelValue accepts, often one of
// known (careplane's namespaces and services).
func (g envGen) labelValue(known []string) string {
	if g.chance(0.5) {
		return known[g.pick(len(known))]
	}
	return oneOf(g, "", "true", PodSecurityRestricted, "gateway", "forensics", "Red_Team.1", strings.Repeat("v", 63))
}

func (g envGen) selector(known []string) *v1alpha1.LabelSelector {
	s := &v1alpha1.LabelSelector{}
	for range g.pick(4) {
		k := g.labelKey()
		op := oneOf(g, "", metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn, metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist)
		switch op {
		case "":
			if s.MatchLabels == nil {
				s.MatchLabels = map[string]v1alpha1.LabelValue{}
			}
			s.MatchLabels[k] = v1alpha1.LabelValue(g.labelValue(known))
		case metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn:
			r := v1alpha1.LabelSelectorRequirement{Key: k, Operator: op}
			for range 1 + g.pick(2) {
				r.Values = append(r.Values, v1alpha1.LabelValue(g.labelValue(known)))
			}
			s.MatchExpressions = append(s.MatchExpressions, r)
		default:
			s.MatchExpressions = append(s.MatchExpressions, v1alpha1.LabelSelectorRequirement{Key: k, Operator: op})
		}
	}
	return s
}

// forensicsFrom returns a forensicsFrom in one of the two forms the CRD
// accepts, naming namespaces among known (careplane's own included, which
// the fence must not admit) and two others; or, now and then, any selector,
// as an object stored before the CRD's rule may still hold (validation
// ratcheting keeps an unchanged value), which must open nothing.
func (g envGen) forensicsFrom(known []string) *v1alpha1.LabelSelector {
	names := append([]string{"forensics", "soc"}, known...)
	switch {
	case g.chance(0.1):
		return g.selector(known)
	case g.chance(0.5):
		return &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{
			corev1.LabelMetadataName: v1alpha1.LabelValue(names[g.pick(len(names))])}}
	}
	r := v1alpha1.LabelSelectorRequirement{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn}
	for range 1 + g.pick(v1alpha1.MaxForensicsNamespaces) {
		r.Values = append(r.Values, v1alpha1.LabelValue(names[g.pick(len(names))]))
	}
	return &v1alpha1.LabelSelector{MatchExpressions: []v1alpha1.LabelSelectorRequirement{r}}
}

func (g envGen) integration(name string, services []string) v1alpha1.Integration {
	in := v1alpha1.Integration{Name: name}
	for range 1 + g.pick(2) {
		// Canonical, as the CRD requires: masked, in netip's form.
		b := make([]byte, oneOf(g, 4, 16))
		for i := range b {
			b[i] = byte(g.pick(256))
		}
		a, _ := netip.AddrFromSlice(b)
		bits := oneOf(g, 0, a.BitLen()/4, a.BitLen()/2, a.BitLen(), g.pick(a.BitLen()+1))
		if c := netip.PrefixFrom(a, bits).Masked().String(); !slices.Contains(in.CIDRs, c) {
			in.CIDRs = append(in.CIDRs, c)
		}
	}
	for range 1 + g.pick(2) {
		if p := oneOf(g, 443, 8443, 1, 65535, int32(1+g.pick(65535))); !slices.Contains(in.Ports, p) {
			in.Ports = append(in.Ports, p)
		}
	}
	for _, s := range services {
		if g.chance(0.5) {
			in.Services = append(in.Services, s)
		}
	}
	if len(in.Services) == 0 {
		in.Services = []string{services[g.pick(len(services))]}
	}
	return in
}

// endpoints returns pods a front EndpointSlice may point at: IPv4 addresses,
// repeated ones, and addresses it must leave out.
func (g envGen) endpoints() []Endpoint {
	var out []Endpoint
	for i := range g.pick(5) {
		ip := oneOf(g, "10.0.0.1", "10.0.0.10", "10.0.0.2", "2001:db8::1", "::ffff:10.0.0.9", "010.0.0.3", "not-an-ip",
			fmt.Sprintf("10.%d.%d.%d", g.pick(256), g.pick(256), g.pick(256)))
		out = append(out, Endpoint{IP: ip, PodName: fmt.Sprintf("pod-%d", i), NodeName: oneOf(g, "", "node-a"), Ready: g.chance(0.5)})
	}
	return out
}

// reorderSets returns a copy of env with every list the API declares a set
// or a map keyed by name shuffled: services, talksTo, generatedSecrets,
// integrations and their cidrs, ports and services.
func (g envGen) reorderSets(env *v1alpha1.HealthEnvironment) *v1alpha1.HealthEnvironment {
	out := env.DeepCopy()
	shuffle(g, out.Spec.Services)
	for _, s := range out.Spec.Services {
		shuffle(g, s.TalksTo)
		shuffle(g, s.GeneratedSecrets)
		shuffle(g, s.SecretsFrom)
	}
	shuffle(g, out.Spec.Integrations)
	for _, in := range out.Spec.Integrations {
		shuffle(g, in.CIDRs)
		shuffle(g, in.Ports)
		shuffle(g, in.Services)
	}
	return out
}

func shuffle[T any](g envGen, s []T) { g.r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] }) }
