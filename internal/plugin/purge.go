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
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
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

func (o *options) purgeCmd() *cobra.Command {
	var dryRun, yes bool
	cmd := &cobra.Command{
		Use:   "purge-evidence ENV (--dry-run | --yes)",
		Short: "Delete the evidence of a restored environment, or the data kept of a deleted one, irreversibly",
		Long: `Delete what careplane keeps as evidence, irreversibly:

- of a restored environment: the pods a fence preserved, the VolumeSnapshots a fence took of its
  volumes, and the claims a restore kept, all labelled careplane.io/evidence (recovery points
  are not evidence: spec.recovery.keep retires them);
- of a deleted environment whose data was retained (dataDeletionPolicy Retain): every pod, claim
  and VolumeSnapshot of its primary namespace, labelled careplane.io/retained=true.

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
			ns, retained, err := o.purgeNamespace(ctx, name)
			if err != nil {
				return err
			}
			objects := map[string][]metav1.PartialObjectMetadata{}
			for _, k := range purgeKinds {
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
			what := "evidence"
			if retained {
				what = "retained data"
			}
			if len(targets) == 0 {
				fmt.Fprintf(o.streams.Out, "No %s in %s.\n", what, ns)
				return nil
			}
			var opts []client.DeleteOption
			if dryRun {
				opts = append(opts, client.DryRunAll)
			} else {
				fmt.Fprintf(o.streams.Out, "%d objects of %s %s in %s:\n", len(targets), what, name, ns)
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
				if dryRun {
					fmt.Fprintf(o.streams.Out, "%s/%s would be deleted (%s; server-side dry run)\n", t.Resource, obj.Name, t.Why)
				} else {
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
			} else if retained {
				fmt.Fprintf(o.streams.Out, "The retained namespace %s holds no data now; the platform team deletes it with: kubectl delete namespace %s\n", ns, ns)
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

// purgeNamespace finds the primary namespace whose evidence or retained
// data purge-evidence deletes: the environment's, refused while it is
// fenced or restoring; or, the environment deleted, its retained namespace
// (labelled careplane.io/retained=true and with the environment's label).
func (o *options) purgeNamespace(ctx context.Context, name string) (ns string, retained bool, err error) {
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
