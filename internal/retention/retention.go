// Package retention holds the rules by which careplane keeps the bytes of an
// environment's primary data out of reach of whatever deletes its
// namespace, claims or snapshots: used by the operator (controllers) and by
// `kubectl careplane purge-evidence` alike.
//
// # Rules
//
//   - While an environment retains its data (dataDeletionPolicy Retain, the
//     default), the PersistentVolume bound to each claim of its primary
//     namespace and the VolumeSnapshotContent bound to each of its recovery
//     points' and evidence snapshots are Retain (reclaim policy, deletion
//     policy), labelled careplane.io/data-of=<environment>, with the policy
//     they had before in careplane.io/policy-before. A garbage collector,
//     a namespace deletion or a pruning GitOps tool then deletes objects,
//     never bytes: the volume is released, the content orphaned.
//   - With dataDeletionPolicy Delete, and for a recovery point retired by
//     spec.recovery.keep, careplane gives them back the policy they had
//     (Release): the data goes with its claim or snapshot.
//   - A responder's purge sets them to Delete (Purge): the storage then
//     deletes the bytes (a released volume at once, a bound one with its
//     claim; an orphaned content at once, a bound one with its snapshot).
//     careplane never keeps a purged object again.
//   - The guardrail careplane-retained-volume-guard refuses anyone else,
//     cluster admins included, a change of the policy or the label of a
//     Retain object labelled data-of, and its deletion.
package retention

import (
	"encoding/json"

	"github.com/careplane/careplane/api/v1alpha1"
)

// The policies, as both PersistentVolumes and VolumeSnapshotContents spell
// them.
const (
	Retain = "Retain"
	Delete = "Delete"
)

// Object is what the rules read of a PersistentVolume (its reclaim policy)
// or a VolumeSnapshotContent (its deletion policy).
type Object struct {
	Labels, Annotations map[string]string
	Policy              string
}

// Change is the change of an Object a rule asks for: the policy to set, and
// the labels and annotations to set (a value) or remove (nil).
type Change struct {
	Policy      string
	Labels      map[string]*string
	Annotations map[string]*string
}

// Kept says whether o is kept as data of env: Retain and labelled so.
func Kept(env string, o Object) bool {
	return o.Policy == Retain && o.Labels[v1alpha1.LabelDataOf] == env
}

// Keep returns the change that keeps o's bytes as data of env, and false
// when it is kept already. The policy it had is recorded, unless careplane
// recorded it before.
func Keep(env string, o Object) (Change, bool) {
	if Kept(env, o) && o.Annotations[v1alpha1.AnnotationPolicyBefore] != "" || Purged(o) {
		return Change{}, false
	}
	before := o.Annotations[v1alpha1.AnnotationPolicyBefore]
	if before == "" {
		before = o.Policy
	}
	if before == "" {
		// No policy: the API's default for both kinds.
		before = Delete
	}
	return Change{
		Policy: Retain,
		// Only its own label: careplane.io/environment would make the
		// volume or content look like one careplane created.
		Labels:      map[string]*string{v1alpha1.LabelDataOf: &env},
		Annotations: map[string]*string{v1alpha1.AnnotationPolicyBefore: &before},
	}, true
}

// Purged says a responder's purge set o to Delete: careplane kept it (the
// label), and does not keep it again.
func Purged(o Object) bool {
	return o.Policy == Delete && o.Labels[v1alpha1.LabelDataOf] != ""
}

// Release returns the change that gives o back the policy it had before
// careplane kept it, and false when careplane does not keep it.
func Release(o Object) (Change, bool) {
	if o.Labels[v1alpha1.LabelDataOf] == "" {
		return Change{}, false
	}
	before := o.Annotations[v1alpha1.AnnotationPolicyBefore]
	if before == "" {
		before = o.Policy // not recorded: leave the policy
	}
	return Change{
		Policy:      before,
		Labels:      map[string]*string{v1alpha1.LabelDataOf: nil},
		Annotations: map[string]*string{v1alpha1.AnnotationPolicyBefore: nil},
	}, true
}

// Purge returns the change a responder's purge makes: Delete, so that the
// storage deletes the bytes; false when o is Delete already. The label
// stays, so that the object is listed as retained until it is gone.
func Purge(o Object) (Change, bool) {
	if o.Policy == Delete {
		return Change{}, false
	}
	return Change{Policy: Delete}, true
}

// MergePatch is c as a JSON merge patch of an object whose policy is at
// spec.<field> (persistentVolumeReclaimPolicy, deletionPolicy), on the
// precondition of the resourceVersion read when rv is not empty.
func (c Change) MergePatch(field, rv string) ([]byte, error) {
	md := map[string]any{}
	if len(c.Labels) > 0 {
		md["labels"] = c.Labels
	}
	if len(c.Annotations) > 0 {
		md["annotations"] = c.Annotations
	}
	if rv != "" {
		md["resourceVersion"] = rv
	}
	p := map[string]any{"spec": map[string]any{field: c.Policy}}
	if len(md) > 0 {
		p["metadata"] = md
	}
	return json.Marshal(p)
}
