package ssa

import (
	"testing"

	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
)

func TestForgetNamespaces(t *testing.T) {
	a := NewApplier(nil)
	remember := func(o Object) {
		a.seen[key(o)] = entry{kind: deref(o.GetKind()), namespace: deref(o.GetNamespace()), name: deref(o.GetName())}
	}
	remember(corev1ac.Namespace("wales-111"))
	remember(corev1ac.Namespace("wales-111-primary"))
	remember(corev1ac.ServiceAccount("call-handling", "wales-111-primary"))
	remember(corev1ac.Service("call-handling", "wales-111"))
	remember(corev1ac.Namespace("yorkshire"))
	remember(corev1ac.ServiceAccount("records-api", "yorkshire-primary"))

	a.ForgetNamespaces("wales-111", "wales-111-primary", "wales-111-standby")

	if n := a.Len(); n != 2 {
		t.Fatalf("%d entries left, want the 2 of yorkshire", n)
	}
	for k := range a.seen {
		if e := a.seen[k]; e.namespace != "yorkshire-primary" && e.name != "yorkshire" {
			t.Errorf("kept %s", k)
		}
	}
}
