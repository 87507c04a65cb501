package ssa

import (
	"bytes"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// WritesSpec says m, one entry of an object's managedFields, is a field
// manager other than owner that wrote fields of the object's spec (status
// and other subresources aside).
func WritesSpec(m metav1.ManagedFieldsEntry, owner string) bool {
	return m.Manager != owner && m.Subresource == "" && m.FieldsV1 != nil && bytes.Contains(m.FieldsV1.GetRawBytes(), []byte(`"f:spec"`))
}

// TakeOver returns managed, an object's managedFields, with every entry that
// foreign says is not to stay moved into FieldOwner's apply entry (created
// for apiVersion when there is none): as if careplane had applied those
// fields itself. careplane's next apply, which does not set them, then
// removes them, as server-side apply removes the fields an applier set
// before and no longer does, once no other manager owns them. It is how
// careplane strips what another writer added to one of its objects (a
// sidecar, an allow rule) without deleting the object: a forced apply alone
// does not, since it takes over only the fields it sets, and a field set to
// the same value by two managers is owned by both.
//
// The managedFields must be written back whole with the object's
// resourceVersion as a precondition. ok is false when no entry was moved.
func TakeOver(managed []metav1.ManagedFieldsEntry, apiVersion string, foreign func(metav1.ManagedFieldsEntry) bool) (out []metav1.ManagedFieldsEntry, ok bool, err error) {
	owned := &fieldpath.Set{}
	mine := -1
	for _, m := range managed {
		if m.Manager == FieldOwner && m.Operation == metav1.ManagedFieldsOperationApply && m.Subresource == "" {
			mine = len(out)
			if m.APIVersion != apiVersion {
				return nil, false, fmt.Errorf("careplane's fields are recorded for %s, not %s", m.APIVersion, apiVersion)
			}
			if owned, err = fieldsOf(m); err != nil {
				return nil, false, err
			}
			out = append(out, m)
			continue
		}
		if !foreign(m) {
			out = append(out, m)
			continue
		}
		if m.APIVersion != apiVersion {
			// Field paths are those of one version: they cannot be taken
			// over as another's.
			return nil, false, fmt.Errorf("%s's fields are recorded for %s, not %s", m.Manager, m.APIVersion, apiVersion)
		}
		theirs, err := fieldsOf(m)
		if err != nil {
			return nil, false, err
		}
		owned, ok = owned.Union(theirs), true
	}
	if !ok {
		return managed, false, nil
	}
	raw, err := owned.ToJSON()
	if err != nil {
		return nil, false, fmt.Errorf("encoding careplane's fields: %w", err)
	}
	if mine < 0 {
		out = append(out, metav1.ManagedFieldsEntry{Manager: FieldOwner, Operation: metav1.ManagedFieldsOperationApply,
			APIVersion: apiVersion, FieldsType: "FieldsV1"})
		mine = len(out) - 1
	}
	out[mine].FieldsV1 = metav1.NewFieldsV1(string(raw))
	now := metav1.Now()
	out[mine].Time = &now
	return out, true, nil
}

func fieldsOf(m metav1.ManagedFieldsEntry) (*fieldpath.Set, error) {
	s := &fieldpath.Set{}
	if m.FieldsV1 == nil {
		return s, nil
	}
	if err := s.FromJSON(bytes.NewReader(m.FieldsV1.GetRawBytes())); err != nil {
		return nil, fmt.Errorf("decoding the fields of %s: %w", m.Manager, err)
	}
	return s, nil
}
