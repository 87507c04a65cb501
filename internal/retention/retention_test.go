package retention

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/careplane/careplane/api/v1alpha1"
)

// apply is what the API server makes of c.
func apply(o Object, c Change) Object {
	out := Object{Labels: map[string]string{}, Annotations: map[string]string{}, Policy: c.Policy}
	for k, v := range o.Labels {
		out.Labels[k] = v
	}
	for k, v := range o.Annotations {
		out.Annotations[k] = v
	}
	for k, v := range c.Labels {
		if v == nil {
			delete(out.Labels, k)
		} else {
			out.Labels[k] = *v
		}
	}
	for k, v := range c.Annotations {
		if v == nil {
			delete(out.Annotations, k)
		} else {
			out.Annotations[k] = *v
		}
	}
	return out
}

func TestKeepThenReleaseGivesBackThePolicy(t *testing.T) {
	for _, before := range []string{Delete, Retain, ""} {
		o := Object{Labels: map[string]string{"tenant": "x"}, Policy: before}
		c, ok := Keep("wales-111", o)
		if !ok {
			t.Fatalf("%q: Keep of an object not kept: no change", before)
		}
		kept := apply(o, c)
		if !Kept("wales-111", kept) || len(kept.Labels) != 2 || kept.Labels["tenant"] != "x" {
			t.Errorf("%q: kept %+v, want Retain labelled data-of wales-111 (and no other label of careplane's), its own labels kept", before, kept)
		}
		want := before
		if want == "" {
			want = Delete
		}
		if got := kept.Annotations[v1alpha1.AnnotationPolicyBefore]; got != want {
			t.Errorf("%q: policy before recorded %q, want %q", before, got, want)
		}
		if _, again := Keep("wales-111", kept); again {
			t.Errorf("%q: Keep of a kept object asks for a change", before)
		}
		c, ok = Release(kept)
		if !ok {
			t.Fatalf("%q: Release of a kept object: no change", before)
		}
		released := apply(kept, c)
		if released.Policy != want || released.Labels[v1alpha1.LabelDataOf] != "" || released.Annotations[v1alpha1.AnnotationPolicyBefore] != "" {
			t.Errorf("%q: released %+v, want policy %s and careplane's marks gone", before, released, want)
		}
	}
}

func TestKeepOfAnotherEnvironmentsObjectKeepsThePolicyBefore(t *testing.T) {
	// Relabelled (a namespace re-created under another name cannot happen,
	// but the record of the class's policy must survive a second Keep).
	o := Object{Labels: map[string]string{v1alpha1.LabelDataOf: "a"}, Annotations: map[string]string{v1alpha1.AnnotationPolicyBefore: Delete}, Policy: Retain}
	c, ok := Keep("b", o)
	if !ok || *c.Annotations[v1alpha1.AnnotationPolicyBefore] != Delete {
		t.Errorf("Keep(b) of a's object: %+v %v, want relabelled with the policy before Delete", c, ok)
	}
}

func TestReleaseLeavesWhatCareplaneDoesNotKeep(t *testing.T) {
	if c, ok := Release(Object{Policy: Retain}); ok {
		t.Errorf("Release of a volume the class retains: %+v", c)
	}
}

func TestPurgeDeletesTheBytes(t *testing.T) {
	o := Object{Labels: map[string]string{v1alpha1.LabelDataOf: "a"}, Policy: Retain}
	c, ok := Purge(o)
	if !ok || c.Policy != Delete || c.Labels != nil {
		t.Errorf("Purge: %+v %v, want Delete, labels kept", c, ok)
	}
	purged := apply(o, c)
	if _, ok := Purge(purged); ok {
		t.Error("Purge of a Delete object asks for a change")
	}
	if c, ok := Keep("a", purged); ok || !Purged(purged) {
		t.Errorf("Keep of a purged object: %+v, want none: careplane does not fight a responder's purge", c)
	}
}

func TestMergePatch(t *testing.T) {
	c, _ := Keep("a", Object{Policy: Delete})
	b, err := c.MergePatch("persistentVolumeReclaimPolicy", "42")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"spec": map[string]any{"persistentVolumeReclaimPolicy": "Retain"},
		"metadata": map[string]any{
			"resourceVersion": "42",
			"labels":          map[string]any{v1alpha1.LabelDataOf: "a"},
			"annotations":     map[string]any{v1alpha1.AnnotationPolicyBefore: "Delete"},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("patch %s, want %v", b, want)
	}
	r, _ := Release(apply(Object{Policy: Delete}, c))
	b, _ = r.MergePatch("deletionPolicy", "")
	if string(b) != `{"metadata":{"annotations":{"careplane.io/policy-before":null},"labels":{"careplane.io/data-of":null}},"spec":{"deletionPolicy":"Delete"}}` {
		t.Errorf("release patch %s", b)
	}
}
