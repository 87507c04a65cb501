package plugin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/retention"
)

// The kinds purge-evidence deletes, in the order it deletes them: the pods
// first (a claim in use stays until its pod is gone), then the snapshots,
// then the claims.
var purgeKinds = []struct {
	resource string
	gvk      schema.GroupVersionKind
}{
	{"pod", schema.GroupVersionKind{Version: "v1", Kind: "PodList"}},
	{"volumesnapshot", schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshotList"}},
	{"persistentvolumeclaim", schema.GroupVersionKind{Version: "v1", Kind: "PersistentVolumeClaimList"}},
}

// PurgeTarget is one object purge-evidence deletes.
type PurgeTarget struct {
	// Resource is pod, volumesnapshot or persistentvolumeclaim.
	Resource string
	Object   metav1.PartialObjectMetadata
	// Why it is chosen: "evidence <ticket>", or "retained".
	Why string
	// Orphan marks a kept snapshot content whose snapshot the purge does
	// not delete (gone with its namespace): the snapshot controller never
	// deletes such a content, so the purge marks it being deleted and
	// deletes it, and the CSI snapshotter deletes the snapshot.
	Orphan bool
}

// PurgeTargets chooses what purge-evidence deletes from the objects of a
// primary namespace, by resource: in a retained namespace (its environment
// deleted, its data kept), every claim and snapshot; in any, the
// objects labelled careplane.io/evidence (the evidence pods, the fence's
// evidence snapshots, the claims a restore kept as evidence). Recovery
// points and the claims in use are never chosen in a live environment.
func PurgeTargets(retained bool, objects map[string][]metav1.PartialObjectMetadata) []PurgeTarget {
	var out []PurgeTarget
	for _, k := range purgeKinds {
		items := slices.Clone(objects[k.resource])
		slices.SortFunc(items, func(a, b metav1.PartialObjectMetadata) int { return cmp.Compare(a.Name, b.Name) })
		for _, o := range items {
			if o.DeletionTimestamp != nil {
				continue
			}
			why := ""
			if t := o.Labels[v1alpha1.LabelEvidence]; t != "" {
				why = "evidence " + t
			}
			if retained && why == "" && k.resource != "pod" {
				// The data, not whatever else was left running.
				why = "retained"
			}
			if why != "" {
				out = append(out, PurgeTarget{Resource: k.resource, Object: o, Why: why})
			}
		}
	}
	return out
}

// The kinds of the volumes and snapshot contents careplane keeps of an
// environment's primary data (package retention): a purge sets them to
// Delete, before it deletes their claims and snapshots, so that the storage
// deletes their bytes.
var keptKinds = []struct {
	resource string
	gvk      schema.GroupVersionKind
	policy   []string // where the policy is
	bound    []string // the name of the claim or snapshot it is bound to
	boundNS  []string
}{
	{"persistentvolume", schema.GroupVersionKind{Version: "v1", Kind: "PersistentVolumeList"},
		[]string{"spec", "persistentVolumeReclaimPolicy"}, []string{"spec", "claimRef", "name"}, []string{"spec", "claimRef", "namespace"}},
	{"volumesnapshotcontent", schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshotContentList"},
		[]string{"spec", "deletionPolicy"}, []string{"spec", "volumeSnapshotRef", "name"}, []string{"spec", "volumeSnapshotRef", "namespace"}},
}

// KeptObject is a volume or snapshot content careplane keeps of an
// environment (labelled careplane.io/data-of).
type KeptObject struct {
	// Resource is persistentvolume or volumesnapshotcontent.
	Resource string
	Object   metav1.PartialObjectMetadata
	Policy   string
	// Namespace and Bound name the claim or snapshot it is bound to.
	Namespace, Bound string
}

// KeptTargets chooses the kept volumes and contents a purge sets to Delete
// (retention.Purge), to go first: of a deleted environment, every one (its
// namespace kept or not); of a live one, those bound to the claims and
// snapshots the purge deletes (its evidence). One a purge set to Delete
// already is not chosen again.
func KeptTargets(retained bool, kept []KeptObject, targets []PurgeTarget) []PurgeTarget {
	why := map[string]string{}
	for _, t := range targets {
		why[t.Resource+"/"+t.Object.Name] = t.Why
	}
	var out []PurgeTarget
	for _, k := range keptKinds {
		items := slices.Clone(kept)
		slices.SortFunc(items, func(a, b KeptObject) int { return cmp.Compare(a.Object.Name, b.Object.Name) })
		for _, o := range items {
			if o.Resource != k.resource || o.Object.DeletionTimestamp != nil {
				continue
			}
			if _, ok := retention.Purge(retention.Object{Labels: o.Object.Labels, Policy: o.Policy}); !ok {
				continue
			}
			boundTo := "persistentvolumeclaim/" + o.Bound
			if o.Resource == "volumesnapshotcontent" {
				boundTo = "volumesnapshot/" + o.Bound
			}
			w := why[boundTo]
			if w == "" && retained {
				w = "retained"
			}
			if w != "" {
				_, bound := why[boundTo]
				out = append(out, PurgeTarget{Resource: o.Resource, Object: o.Object, Why: w,
					Orphan: o.Resource == "volumesnapshotcontent" && !bound})
			}
		}
	}
	return out
}

// isKept says whether resource is one a purge sets to Delete rather than
// deletes.
func isKept(resource string) bool {
	return resource == "persistentvolume" || resource == "volumesnapshotcontent"
}

// listKept lists the volumes and contents careplane keeps as data of env
// (none where the snapshot API is not served).
func (o *options) listKept(ctx context.Context, env string) ([]KeptObject, error) {
	var out []KeptObject
	for _, k := range keptKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(k.gvk)
		if err := o.client.List(ctx, list, client.MatchingLabels{v1alpha1.LabelDataOf: env}); err != nil {
			if meta.IsNoMatchError(err) {
				continue
			}
			return nil, fmt.Errorf("listing the %ss kept as data of %s: %w", k.resource, env, err)
		}
		for _, u := range list.Items {
			policy, _, _ := unstructured.NestedString(u.Object, k.policy...)
			bound, _, _ := unstructured.NestedString(u.Object, k.bound...)
			ns, _, _ := unstructured.NestedString(u.Object, k.boundNS...)
			m := metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), UID: u.GetUID(),
				Labels: u.GetLabels(), DeletionTimestamp: u.GetDeletionTimestamp()}}
			out = append(out, KeptObject{Resource: k.resource, Object: m, Policy: policy, Namespace: ns, Bound: bound})
		}
	}
	return out, nil
}

func (o *options) purgeCmd() *cobra.Command {
	var dryRun, yes bool
	cmd := &cobra.Command{
		Use:   "purge-evidence ENV (--dry-run | --yes)",
		Short: "Delete the evidence of a restored environment, or the data kept of a deleted one, irreversibly",
		Long: `Delete what careplane keeps as evidence, irreversibly:

- of a restored environment: the pods a fence preserved, the VolumeSnapshots a fence took of its
  volumes, and the claims a restore kept, all labelled careplane.io/evidence (recovery points
  are not evidence: spec.recovery.keep retires them);
- of a deleted environment whose data or evidence was retained: its evidence pods, and every claim
  and VolumeSnapshot of its primary namespace, labelled careplane.io/retained=true, and every
  PersistentVolume and VolumeSnapshotContent careplane kept of it (Retain, labelled
  careplane.io/data-of), its namespace kept or not.

Kept volumes and contents (of the data purged) are set to Delete first, so that the storage deletes
their bytes with their claims and snapshots, or at once when those are gone.

It is refused while the environment is fenced or being restored, and it asks first. Only
incident responders may: the guardrails refuse anyone else's delete of evidence or retained data.

--dry-run lists exactly what it would delete and sends each delete as a server-side dry run
(so RBAC and the guardrails answer too), deleting nothing. Without --dry-run it lists them and
asks for the environment's name on a terminal; --yes confirms without asking. Without a terminal
and without --yes it deletes nothing and exits 2.`,
		Example: `  kubectl careplane purge-evidence wales-111 --dry-run
  kubectl careplane purge-evidence wales-111
  kubectl careplane purge-evidence wales-111 --yes`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeEnvs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if dryRun && yes {
				return usagef("--dry-run deletes nothing: pass --dry-run or --yes, not both")
			}
			name := args[0]
			kept, err := o.listKept(ctx, name)
			if err != nil {
				return err
			}
			ns, retained, err := o.purgeNamespace(ctx, name, len(kept) > 0)
			if err != nil {
				return err
			}
			objects := map[string][]metav1.PartialObjectMetadata{}
			for _, k := range purgeKinds {
				if ns == "" {
					break // the namespace is gone: only the volumes and contents kept
				}
				list := &metav1.PartialObjectMetadataList{}
				list.SetGroupVersionKind(k.gvk)
				var opts []client.ListOption
				opts = append(opts, client.InNamespace(ns))
				if !retained {
					opts = append(opts, client.HasLabels{v1alpha1.LabelEvidence})
				}
				if err := o.client.List(ctx, list, opts...); err != nil {
					if meta.IsNoMatchError(err) {
						continue // no snapshot API served
					}
					return fmt.Errorf("listing %ss in %s: %w", k.resource, ns, err)
				}
				objects[k.resource] = list.Items
			}
			targets := PurgeTargets(retained, objects)
			// The kept volumes and contents of those the purge deletes: set
			// to Delete first, so that their bytes go with them.
			targets = append(KeptTargets(retained, kept, targets), targets...)
			what, where := "evidence", ns
			if retained {
				what = "retained data"
			}
			if ns == "" {
				where = "the cluster (its namespace is gone)"
			}
			if len(targets) == 0 {
				fmt.Fprintf(o.streams.Out, "No %s of %s in %s.\n", what, name, where)
				return nil
			}
			var opts []client.DeleteOption
			if dryRun {
				opts = append(opts, client.DryRunAll)
			} else {
				fmt.Fprintf(o.streams.Out, "%d objects of %s %s in %s:\n", len(targets), what, name, where)
				for _, t := range targets {
					fmt.Fprintf(o.streams.Out, "  %s/%s (%s)\n", t.Resource, t.Object.Name, t.Why)
				}
				if !yes {
					if err := confirm(o.streams.In, isTerminal(o.streams.In), o.streams.ErrOut, name, len(targets)); err != nil {
						return err
					}
				}
			}
			// Every delete as a server-side dry run first: RBAC or a
			// guardrail refusing one refuses the purge before anything
			// is deleted.
			del := func(t PurgeTarget, opts ...client.DeleteOption) error {
				if isKept(t.Resource) {
					return o.purgeKept(ctx, t, slices.Contains(opts, client.DeleteOption(client.DryRunAll)))
				}
				obj := &unstructured.Unstructured{}
				obj.SetGroupVersionKind(purgeGVK(t.Resource))
				obj.SetNamespace(ns)
				obj.SetName(t.Object.Name)
				uid := t.Object.UID
				opts = append(opts, client.Preconditions{UID: &uid})
				if err := o.client.Delete(ctx, obj, opts...); err != nil && !apierrors.IsNotFound(err) {
					fmt.Fprintf(o.streams.ErrOut, "Error: deleting %s %s/%s: %v\n", t.Resource, ns, t.Object.Name, err)
					return err
				}
				return nil
			}
			var failed []string
			var errs []error
			if !dryRun {
				for _, t := range targets {
					if err := del(t, client.DryRunAll); err != nil {
						failed, errs = append(failed, t.Resource+"/"+t.Object.Name), append(errs, err)
					}
				}
				if len(failed) > 0 {
					return fmt.Errorf("nothing deleted: %d of %d deletes refused: %s: %w", len(failed), len(targets), strings.Join(failed, ", "), errors.Join(errs...))
				}
			}
			for _, t := range targets {
				if err := del(t, opts...); err != nil {
					failed, errs = append(failed, t.Resource+"/"+t.Object.Name), append(errs, err)
					continue
				}
				obj := t.Object
				switch {
				case isKept(t.Resource) && dryRun:
					fmt.Fprintf(o.streams.Out, "%s/%s would be set to Delete, its bytes deleted (%s; server-side dry run)\n", t.Resource, obj.Name, t.Why)
				case isKept(t.Resource):
					fmt.Fprintf(o.streams.Out, "%s/%s set to Delete: the storage deletes its bytes (%s)\n", t.Resource, obj.Name, t.Why)
				case dryRun:
					fmt.Fprintf(o.streams.Out, "%s/%s would be deleted (%s; server-side dry run)\n", t.Resource, obj.Name, t.Why)
				default:
					fmt.Fprintf(o.streams.Out, "%s/%s deleted (%s)\n", t.Resource, obj.Name, t.Why)
				}
			}
			if len(failed) > 0 {
				// The API server's answers, for the exit code (a refusal
				// of every delete is forbidden).
				return fmt.Errorf("%d of %d objects not deleted: %s: %w", len(failed), len(targets), strings.Join(failed, ", "), errors.Join(errs...))
			}
			if dryRun {
				fmt.Fprintf(o.streams.Out, "Dry run: nothing deleted. Delete these %d objects with: kubectl careplane purge-evidence %s --yes\n", len(targets), name)
			} else if retained && ns != "" {
				fmt.Fprintf(o.streams.Out, "The retained namespace %s holds no data now; a responder deletes it with: kubectl delete namespace %s\n", ns, ns)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be deleted, and send the deletes as a server-side dry run; delete nothing")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "delete without asking for confirmation (needed without a terminal)")
	return cmd
}

func purgeGVK(resource string) schema.GroupVersionKind {
	for _, k := range purgeKinds {
		if k.resource == resource {
			return k.gvk.GroupVersion().WithKind(strings.TrimSuffix(k.gvk.Kind, "List"))
		}
	}
	return schema.GroupVersionKind{}
}

// purgeKept sets a kept volume or content to Delete (retention.Purge), on
// the precondition of the UID listed.
func (o *options) purgeKept(ctx context.Context, t PurgeTarget, dryRun bool) error {
	var field string
	obj := &unstructured.Unstructured{}
	for _, k := range keptKinds {
		if k.resource == t.Resource {
			field = k.policy[len(k.policy)-1]
			obj.SetGroupVersionKind(k.gvk.GroupVersion().WithKind(strings.TrimSuffix(k.gvk.Kind, "List")))
		}
	}
	obj.SetName(t.Object.Name)
	ch, _ := retention.Purge(retention.Object{Policy: retention.Retain})
	patch, err := ch.MergePatch(field, "")
	if err != nil {
		return err
	}
	// The UID as a precondition: a merge patch carrying metadata.uid is
	// refused (conflict) when the object was replaced.
	md := fmt.Sprintf(`"uid":%q`, t.Object.UID)
	if t.Orphan {
		// What the snapshot controller sets when a snapshot is deleted:
		// the CSI snapshotter deletes the snapshot of a content being
		// deleted only with it.
		md += `,"annotations":{"snapshot.storage.kubernetes.io/volumesnapshot-being-deleted":"yes"}`
	}
	patch = append(patch[:len(patch)-1], []byte(`,"metadata":{`+md+`}}`)...)
	opts := []client.PatchOption{}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	if err := o.client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch), opts...); err != nil && !apierrors.IsNotFound(err) {
		fmt.Fprintf(o.streams.ErrOut, "Error: setting %s %s to Delete: %v\n", t.Resource, t.Object.Name, err)
		return err
	}
	if t.Orphan && !dryRun {
		uid := t.Object.UID
		if err := o.client.Delete(ctx, obj, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
			fmt.Fprintf(o.streams.ErrOut, "Error: deleting %s %s: %v\n", t.Resource, t.Object.Name, err)
			return err
		}
	}
	return nil
}

// purgeNamespace finds the primary namespace whose evidence or retained
// data purge-evidence deletes: the environment's, refused while it is
// fenced or restoring; or, the environment deleted, its retained namespace
// (labelled careplane.io/retained=true and with the environment's label);
// or, the environment deleted and its namespace not kept (a foreground
// delete has the garbage collector delete it), none ("") when volumes or
// contents are kept of it (kept).
func (o *options) purgeNamespace(ctx context.Context, name string, kept bool) (ns string, retained bool, err error) {
	env := &v1alpha1.HealthEnvironment{}
	err = o.client.Get(ctx, client.ObjectKey{Name: name}, env)
	switch {
	case err == nil:
		if why := purgeRefusal(env); why != "" {
			return "", false, errors.New(why)
		}
		return build.SiteNamespace(env, v1alpha1.SitePrimary), false, nil
	case !apierrors.IsNotFound(err):
		return "", false, fmt.Errorf("reading HealthEnvironment %s: %w", name, err)
	}
	env.Name = name
	ns = build.SiteNamespace(env, v1alpha1.SitePrimary)
	nsObj := &metav1.PartialObjectMetadata{}
	nsObj.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"})
	if gerr := o.client.Get(ctx, client.ObjectKey{Name: ns}, nsObj); gerr != nil || nsObj.Labels[v1alpha1.LabelRetained] != "true" ||
		nsObj.Labels[v1alpha1.LabelEnvironment] != name {
		if kept {
			return "", true, nil
		}
		// No environment and no data of one: not found.
		return "", false, withCause(err, "HealthEnvironment %q not found, and no data of it is retained (no namespace %s labelled %s=true)", name, ns, v1alpha1.LabelRetained)
	}
	if nsObj.Labels[v1alpha1.LabelFenced] == "true" {
		// Deleted while fenced, then released by a responder: the freeze
		// stays on the retained namespace, and only a responder lifts it.
		return "", false, fmt.Errorf("namespace %s, the retained data of deleted HealthEnvironment %s, is still fenced (%s=true): its data is under investigation and cannot be purged; when the investigation is over, a responder removes the label (kubectl label namespace %s %s-) and purges", ns, name, v1alpha1.LabelFenced, ns, v1alpha1.LabelFenced)
	}
	return ns, true, nil
}
