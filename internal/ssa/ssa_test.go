package ssa

import (
	"testing"

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
		a.seen[group][k] = entry{resourceVersion: "1"}
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
	a.seen[group] = map[digest]entry{k: {resourceVersion: "1"}}
	a.Forget(sa)
	if a.Len() != 0 || len(a.seen) != 0 {
		t.Errorf("after Forget: %d entries in %d groups", a.Len(), len(a.seen))
	}
}
