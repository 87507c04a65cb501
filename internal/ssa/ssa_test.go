package ssa

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	networkingv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
)

func TestForgetNamespaces(t *testing.T) {
	a := NewApplier(nil)
	remember := func(o Object) {
		group, k := key(o)
		if a.seen[group] == nil {
			a.seen[group] = map[digest]entry{}
		}
		a.seen[group][k] = entry{version: "1"}
	}
	remember(corev1ac.Namespace("wales-111"))
	remember(corev1ac.Namespace("wales-111-primary"))
	remember(corev1ac.ServiceAccount("call-handling", "wales-111-primary"))
	remember(corev1ac.Service("call-handling", "wales-111"))
	yorkshire := corev1ac.Namespace("yorkshire")
	records := corev1ac.ServiceAccount("records-api", "yorkshire-primary")
	remember(yorkshire)
	remember(records)

	a.ForgetNamespaces("wales-111", "wales-111-primary", "wales-111-standby")

	if n := a.Len(); n != 2 {
		t.Fatalf("%d entries left, want the 2 of yorkshire", n)
	}
	for _, o := range []Object{yorkshire, records} {
		group, k := key(o)
		if _, ok := a.seen[group][k]; !ok {
			t.Errorf("forgot %s", describe(o))
		}
	}
}

// TestKeysDistinct: objects that differ only in kind, namespace or name are
// remembered apart.
func TestKeysDistinct(t *testing.T) {
	objs := []Object{
		corev1ac.Namespace("a"),
		corev1ac.Service("a", "b"),
		corev1ac.ServiceAccount("a", "b"),
		corev1ac.ServiceAccount("b", "a"),
		corev1ac.ServiceAccount("a", "ab"),
		networkingv1ac.NetworkPolicy("a", "b"),
	}
	seen := map[digest]string{}
	for _, o := range objs {
		_, k := key(o)
		if prev, ok := seen[k]; ok {
			t.Errorf("%s and %s share a key", prev, describe(o))
		}
		seen[k] = describe(o)
	}
}

func TestForget(t *testing.T) {
	a := NewApplier(nil)
	sa := corev1ac.ServiceAccount("a", "b")
	group, k := key(sa)
	a.seen[group] = map[digest]entry{k: {version: "1"}}
	a.Forget(sa)
	if a.Len() != 0 || len(a.seen) != 0 {
		t.Errorf("after Forget: %d entries in %d groups", a.Len(), len(a.seen))
	}
}

// TestVersion: for the kinds whose status churns, a status write keeps the
// version and anything an apply would undo, or a new object, moves it; for
// the others every write moves it.
func TestVersion(t *testing.T) {
	dep := appsv1ac.Deployment("records-api", "wales-111-primary")
	meta := func() *metav1.ObjectMeta {
		return &metav1.ObjectMeta{UID: "u1", Generation: 3, ResourceVersion: "10",
			Labels:          map[string]string{"careplane.io/environment": "wales-111"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "careplane.io/v1alpha1", Kind: "HealthEnvironment", Name: "wales-111", UID: "e1"}}}
	}
	base := Version(dep, meta())
	for _, c := range []struct {
		name   string
		change func(m *metav1.ObjectMeta)
		same   bool
	}{
		{"a status write", func(m *metav1.ObjectMeta) { m.ResourceVersion = "11" }, true},
		{"an annotation", func(m *metav1.ObjectMeta) {
			m.Annotations = map[string]string{"deployment.kubernetes.io/revision": "2"}
		}, true},
		{"the spec", func(m *metav1.ObjectMeta) { m.Generation = 4 }, false},
		{"a label", func(m *metav1.ObjectMeta) { m.Labels["careplane.io/environment"] = "other" }, false},
		{"an owner", func(m *metav1.ObjectMeta) { m.OwnerReferences = nil }, false},
		{"a finalizer", func(m *metav1.ObjectMeta) { m.Finalizers = []string{"x"} }, false},
		{"made anew", func(m *metav1.ObjectMeta) { m.UID = "u2" }, false},
		{"deleting", func(m *metav1.ObjectMeta) { t := metav1.Unix(1, 0); m.DeletionTimestamp = &t }, false},
	} {
		m := meta()
		c.change(m)
		if got := Version(dep, m); (got == base) != c.same {
			t.Errorf("%s: version %q against %q, want same=%v", c.name, got, base, c.same)
		}
	}
	noUID := meta()
	noUID.UID = ""
	if got := Version(dep, noUID); got != "10" {
		t.Errorf("without a UID: version %q, want the resourceVersion", got)
	}
	if got := Version(corev1ac.ServiceAccount("a", "b"), meta()); got != "10" {
		t.Errorf("a ServiceAccount: version %q, want the resourceVersion", got)
	}

	// A Namespace has no generation; careplane applies its labels and
	// owner only.
	ns := corev1ac.Namespace("wales-111-primary")
	nsMeta := func() *metav1.ObjectMeta {
		m := meta()
		m.Generation = 0
		return m
	}
	nsBase := Version(ns, nsMeta())
	for _, c := range []struct {
		name   string
		change func(m *metav1.ObjectMeta)
		same   bool
	}{
		{"the fence record written and lifted", func(m *metav1.ObjectMeta) {
			m.ResourceVersion = "12"
			m.Annotations = map[string]string{"careplane.io/fence-id": "1700000000000000000"}
		}, true},
		{"a label", func(m *metav1.ObjectMeta) { m.Labels["careplane.io/fenced"] = "true" }, false},
		{"an owner", func(m *metav1.ObjectMeta) { m.OwnerReferences = nil }, false},
		{"read from a cache without its UID", func(m *metav1.ObjectMeta) { m.UID = "" }, true},
		{"deleting", func(m *metav1.ObjectMeta) { t := metav1.Unix(1, 0); m.DeletionTimestamp = &t }, false},
	} {
		m := nsMeta()
		c.change(m)
		if got := Version(ns, m); (got == nsBase) != c.same {
			t.Errorf("namespace, %s: version %q against %q, want same=%v", c.name, got, nsBase, c.same)
		}
	}
}

// TestBehind: a cache that shows an object from before careplane's last
// apply of it (an older generation, all else the same) is behind that
// apply, not changed by someone else; anything else is a change.
func TestBehind(t *testing.T) {
	dep := appsv1ac.Deployment("records-api", "wales-111-primary")
	meta := func(gen int64) *metav1.ObjectMeta {
		return &metav1.ObjectMeta{UID: "u1", Generation: gen, ResourceVersion: "10",
			Labels: map[string]string{"careplane.io/environment": "wales-111"}}
	}
	applied := Version(dep, meta(5))
	for _, c := range []struct {
		name   string
		cached func() *metav1.ObjectMeta
		behind bool
	}{
		{"an older generation", func() *metav1.ObjectMeta { return meta(4) }, true},
		{"the same generation", func() *metav1.ObjectMeta { return meta(5) }, false},
		{"a newer generation (another writer)", func() *metav1.ObjectMeta { return meta(6) }, false},
		{"older, another label", func() *metav1.ObjectMeta {
			m := meta(4)
			m.Labels["x"] = "y"
			return m
		}, false},
		{"older, made anew", func() *metav1.ObjectMeta {
			m := meta(4)
			m.UID = "u2"
			return m
		}, false},
		{"without a UID (its resourceVersion)", func() *metav1.ObjectMeta {
			m := meta(4)
			m.UID = ""
			return m
		}, false},
	} {
		if got := behind(Version(dep, c.cached()), applied); got != c.behind {
			t.Errorf("%s: behind = %v, want %v", c.name, got, c.behind)
		}
	}
	// Versions that are resourceVersions, and a Namespace's (no
	// generation), are never behind.
	if behind("9", "10") || behind(Version(corev1ac.Namespace("n"), meta(0)), Version(corev1ac.Namespace("n"), meta(0))) {
		t.Error("a version without a generation is behind")
	}
}
