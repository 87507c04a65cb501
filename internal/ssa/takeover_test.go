package ssa

import (
	"encoding/json"
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestTakeOver: the foreign entries' fields join careplane's apply entry
// (created when careplane never applied), the foreign entries go, and every
// other entry (the controller manager's, a status writer's) stays as it was.
func TestTakeOver(t *testing.T) {
	entry := func(manager string, op metav1.ManagedFieldsOperationType, subresource, fields string) metav1.ManagedFieldsEntry {
		return metav1.ManagedFieldsEntry{Manager: manager, Operation: op, Subresource: subresource, APIVersion: "apps/v1",
			FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(fields)}
	}
	const (
		mine    = `{"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:image":{}}}}}}}`
		sidecar = `{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"sidecar\"}":{".":{},"f:image":{}}}}}}}`
		both    = `{"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:image":{}},"k:{\"name\":\"sidecar\"}":{".":{},"f:image":{}}}}}}}`
		rev     = `{"f:metadata":{"f:annotations":{"f:deployment.kubernetes.io/revision":{}}}}`
		status  = `{"f:status":{"f:replicas":{}}}`
	)
	kcm := entry("kube-controller-manager", metav1.ManagedFieldsOperationUpdate, "", rev)
	kcmStatus := entry("kube-controller-manager", metav1.ManagedFieldsOperationUpdate, "status", status)
	tenant := entry("kubectl-patch", metav1.ManagedFieldsOperationUpdate, "", sidecar)
	foreign := func(m metav1.ManagedFieldsEntry) bool { return WritesSpec(m, FieldOwner) }
	for _, tc := range []struct {
		name    string
		managed []metav1.ManagedFieldsEntry
		want    []metav1.ManagedFieldsEntry
		ok      bool
	}{
		{
			name:    "a sidecar another manager added joins careplane's fields",
			managed: []metav1.ManagedFieldsEntry{entry(FieldOwner, metav1.ManagedFieldsOperationApply, "", mine), kcm, tenant, kcmStatus},
			want:    []metav1.ManagedFieldsEntry{entry(FieldOwner, metav1.ManagedFieldsOperationApply, "", both), kcm, kcmStatus},
			ok:      true,
		},
		{
			name:    "careplane never applied: its entry is made",
			managed: []metav1.ManagedFieldsEntry{tenant, kcmStatus},
			want:    []metav1.ManagedFieldsEntry{kcmStatus, entry(FieldOwner, metav1.ManagedFieldsOperationApply, "", sidecar)},
			ok:      true,
		},
		{
			name:    "nothing foreign: unchanged",
			managed: []metav1.ManagedFieldsEntry{entry(FieldOwner, metav1.ManagedFieldsOperationApply, "", mine), kcm, kcmStatus},
			want:    []metav1.ManagedFieldsEntry{entry(FieldOwner, metav1.ManagedFieldsOperationApply, "", mine), kcm, kcmStatus},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := TakeOver(tc.managed, "apps/v1", foreign)
			if err != nil || ok != tc.ok {
				t.Fatalf("TakeOver: ok %v, err %v; want ok %v", ok, err, tc.ok)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("TakeOver = %d entries, want %d: %+v", len(got), len(tc.want), got)
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.Manager != w.Manager || g.Operation != w.Operation || g.Subresource != w.Subresource || g.APIVersion != w.APIVersion {
					t.Errorf("entry %d = %s/%s/%s, want %s/%s/%s", i, g.Manager, g.Operation, g.Subresource, w.Manager, w.Operation, w.Subresource)
				}
				var gf, wf any
				if err := json.Unmarshal(g.FieldsV1.GetRawBytes(), &gf); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(w.FieldsV1.GetRawBytes(), &wf); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(gf, wf) {
					t.Errorf("entry %d fields = %s, want %s", i, g.FieldsV1.GetRawBytes(), w.FieldsV1.GetRawBytes())
				}
			}
		})
	}
	t.Run("fields of another version are refused, not mixed", func(t *testing.T) {
		old := tenant
		old.APIVersion = "apps/v1beta2"
		if _, _, err := TakeOver([]metav1.ManagedFieldsEntry{old}, "apps/v1", foreign); err == nil {
			t.Error("TakeOver took over apps/v1beta2 field paths as apps/v1")
		}
	})
}
