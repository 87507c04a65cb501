package netpol

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fuzzing"
)

// FuzzVerifyFence decodes the fuzzer's bytes with the differential tests'
// generator (policies, pods, namespace labels and forensics namespaces over a
// small alphabet, so that brute force stays exhaustive), then a direction,
// a pod and a peer, and checks:
//
//   - VerifyFence accepts the input and agrees with brute force;
//   - allows add up: the verdict is the union of each policy's own verdict,
//     and a pod no policy selects is open;
//   - neither the order of policies and pods nor policies of other
//     namespaces change the verdict, and NamespaceInput of the same
//     namespace and pods (plus a terminating pod) gives the same;
//   - careplane's fence policy alone isolates; beside other policies, every
//     breach names one of them and never the fence;
//   - on the flows between one fenced pod and the probe peers (and one
//     peer more) on every port, the engine agrees with cyclonus, and adding
//     a policy changes nothing for a pod it does not select and never
//     denies what a pod already selected was allowed.
func FuzzVerifyFence(f *testing.F) {
	for _, seed := range fuzzing.Seeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g := gen{fuzzing.Rand(data)}
		in := g.input()
		got, err := VerifyFence(in)
		if err != nil {
			t.Fatalf("VerifyFence rejected valid input: %v\ninput: %s", err, describe(in))
		}
		if want := bruteForce(t, in); !sameResult(got, want) {
			t.Fatalf("VerifyFence disagrees with brute force\ninput: %s\ngot:\n%s\nbrute force:\n%s", describe(in), Format(got), Format(want))
		}
		if want := unionOfPolicies(t, in); !sameResult(got, want) {
			t.Fatalf("the verdict is not the union of each policy's\ninput: %s\ngot:\n%s\nunion:\n%s", describe(in), Format(got), Format(want))
		}
		checkIrrelevantChanges(t, g, in, got)
		checkFence(t, in)
		checkFlows(t, g, in)
	})
}

func sameResult(a, b Result) bool {
	return a.Isolated == b.Isolated && reflect.DeepEqual(a.Flows, b.Flows)
}

// unionOfPolicies rebuilds VerifyFence's verdict one policy at a time. A
// fragment breaches or not whatever the other policies are, so the flows of
// the set are those of each policy for the pods it selects; a pod that no
// policy selects for a direction is open in it.
func unionOfPolicies(t *testing.T, in FenceInput) Result {
	t.Helper()
	found := map[flowKey]map[string]bool{}
	unselected := map[flowKey]int{}
	for _, p := range in.Policies {
		one := in
		one.Policies = []networkingv1.NetworkPolicy{p}
		r, err := VerifyFence(one)
		if err != nil {
			t.Fatalf("policy %s alone: %v", p.Name, err)
		}
		for _, fl := range r.Flows {
			k := flowKey{fl.Direction, fl.Pod, fl.Peer, fl.Port}
			if len(fl.Policies) == 0 {
				unselected[k]++
				continue
			}
			if found[k] == nil {
				found[k] = map[string]bool{}
			}
			for _, name := range fl.Policies {
				found[k][name] = true
			}
		}
	}
	for k, n := range unselected {
		if n == len(in.Policies) {
			found[k] = map[string]bool{}
		}
	}
	return resultOf(found)
}

// checkIrrelevantChanges verifies in again reordered, with a copy of every
// policy in another namespace, and through NamespaceInput with a
// terminating pod: none of it may change the verdict.
func checkIrrelevantChanges(t *testing.T, g gen, in FenceInput, want Result) {
	t.Helper()
	shuffled := in
	shuffled.Policies = nil
	for _, p := range slices.Backward(in.Policies) {
		foreign := *p.DeepCopy()
		foreign.Namespace = "elsewhere"
		shuffled.Policies = append(shuffled.Policies, p, foreign)
	}
	shuffled.Pods = slices.Clone(in.Pods)
	slices.Reverse(shuffled.Pods)
	if got, err := VerifyFence(shuffled); err != nil || !sameResult(got, want) {
		t.Fatalf("reversing policies and pods and adding foreign policies changed the verdict (error %v)\ninput: %s\ngot:\n%s\nwant:\n%s",
			err, describe(shuffled), Format(got), Format(want))
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: in.Namespace, Labels: in.NamespaceLabels}}
	if g.chance(0.5) {
		// The API server sets the name label; NamespaceInput supplies it
		// when a caller's object lacks it.
		ns.Labels = maps.Clone(in.NamespaceLabels)
		delete(ns.Labels, nameLabel)
	}
	var pods []corev1.Pod
	for _, p := range in.Pods {
		pods = append(pods, podObject(g, p))
	}
	terminating := podObject(g, Pod{Name: "terminating", Labels: g.labels(podAlphabet), Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 1}}})
	terminating.DeletionTimestamp = &metav1.Time{}
	pods = slices.Insert(pods, g.pick(len(pods)+1), terminating)
	if got, err := VerifyFence(NamespaceInput(ns, in.Policies, pods, in.ForensicsNamespaces)); err != nil || !sameResult(got, want) {
		t.Fatalf("NamespaceInput with a terminating pod changed the verdict (error %v)\ninput: %s\ngot:\n%s\nwant:\n%s",
			err, describe(in), Format(got), Format(want))
	}
}

// podObject is p as a pod object, its ports split between an init container
// and a container.
func podObject(g gen, p Pod) corev1.Pod {
	split := g.pick(len(p.Ports) + 1)
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Labels: p.Labels},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "sidecar", Ports: p.Ports[:split]}},
			Containers:     []corev1.Container{{Name: "app", Ports: p.Ports[split:]}},
		},
	}
}

// checkFence puts careplane's own fence policy, as build writes it, in
// place of the generator's: alone it must isolate, and beside the other
// policies every breach must name one of them, never the fence.
func checkFence(t *testing.T, in FenceInput) {
	t.Helper()
	fence := careplaneFence(t, in.Namespace, in.ForensicsNamespaces)
	alone := in
	alone.Policies = []networkingv1.NetworkPolicy{fence}
	res, err := VerifyFence(alone)
	if err != nil || !res.Isolated {
		t.Fatalf("careplane's fence policy alone does not isolate (error %v)\ninput: %s\n%s", err, describe(alone), Format(res))
	}
	fenced := in
	fenced.Policies = []networkingv1.NetworkPolicy{fence}
	for _, p := range in.Policies {
		if p.Name != build.FencePolicyName {
			fenced.Policies = append(fenced.Policies, p)
		}
	}
	got, err := VerifyFence(fenced)
	if err != nil {
		t.Fatal(err)
	}
	for _, fl := range got.Flows {
		if len(fl.Policies) == 0 || slices.Contains(fl.Policies, build.FencePolicyName) {
			t.Fatalf("behind careplane's fence, breach %+v is not blamed on another policy\ninput: %s\n%s", fl, describe(fenced), Format(got))
		}
	}
}

// careplaneFence is build.FencePolicy for namespace with the forensics
// exception, forensicsFrom naming the forensics namespaces as the CRD
// accepts it, as a typed object.
func careplaneFence(t *testing.T, namespace string, forensics []string) networkingv1.NetworkPolicy {
	t.Helper()
	env := &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: "fuzz", UID: "fuzz"}}
	if len(forensics) > 0 {
		r := v1alpha1.LabelSelectorRequirement{Key: nameLabel, Operator: metav1.LabelSelectorOpIn}
		for _, n := range forensics {
			r.Values = append(r.Values, v1alpha1.LabelValue(n))
		}
		env.Spec.Isolation.ForensicsFrom = &v1alpha1.LabelSelector{MatchExpressions: []v1alpha1.LabelSelectorRequirement{r}}
		if got := env.Spec.Isolation.ForensicsNamespaces(); len(got) == 0 {
			t.Fatalf("forensicsFrom %v names no namespace", env.Spec.Isolation.ForensicsFrom)
		}
	}
	raw, err := json.Marshal(build.FencePolicy(env, namespace, true))
	if err != nil {
		t.Fatal(err)
	}
	var np networkingv1.NetworkPolicy
	if err := json.Unmarshal(raw, &np); err != nil {
		t.Fatal(err)
	}
	return np
}

// checkFlows decodes a direction, a fenced pod and a peer, and checks the
// flows between the pod and that peer or any probe peer, on every port of
// the universe, against cyclonus and against what adding the last policy
// to the others may do.
func checkFlows(t *testing.T, g gen, in FenceInput) {
	t.Helper()
	v, err := newVerifier(in)
	if err != nil {
		t.Fatal(err)
	}
	dir := directions[g.pick(len(directions))]
	pod := in.Pods[g.pick(len(in.Pods))]
	all := universe(in)
	peers := append(v.peerProbes(dir), all[g.pick(len(all))])
	oracle := newCyclonusOracle(in)
	others, last := v.policies[:len(v.policies)-1], v.policies[len(v.policies)-1]
	selectedBefore := slices.ContainsFunc(others, func(pol *policy) bool { return pol.selects(dir, pod.Labels) })
	for _, p := range peers {
		for _, pt := range universePorts(dir, pod) {
			after := allowed(v.policies, dir, pod.Labels, p, pt)
			if theirs := oracle.allowed(dir, in, pod, p, pt); after != theirs {
				t.Fatalf("%s %s peer %v port %v: engine says %v, cyclonus says %v\ninput: %s", dir, pod.Name, p, pt, after, theirs, describe(in))
			}
			before := allowed(others, dir, pod.Labels, p, pt)
			switch {
			case !last.selects(dir, pod.Labels) && after != before:
				t.Fatalf("%s %s peer %v port %v: adding %s, which does not select the pod, turned %v into %v\ninput: %s",
					dir, pod.Name, p, pt, last.name, before, after, describe(in))
			case selectedBefore && before && !after:
				t.Fatalf("%s %s peer %v port %v: adding %s denied a flow another policy allowed\ninput: %s",
					dir, pod.Name, p, pt, last.name, describe(in))
			}
		}
	}
}
