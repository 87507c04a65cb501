package plugin

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

var volumeSnapshotList = schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshotList"}

func (o *options) recoveryPointsCmd() *cobra.Command {
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "recovery-points ENV",
		Short: "List the recovery points of an environment, oldest first, and the evidence snapshots its fences took",
		Long: `List the recovery points of an environment as careplane records them in status.recovery
(oldest first): when each was taken, the known-good revision running then, whether it is clean
(taken while the environment was Ready and not fenced: a restore chooses only those) and ready
(every snapshot ready to use), and how many VolumeSnapshots it holds. Then the evidence snapshots
the fences took (status.evidenceSnapshots), kept until a responder purges them.

Only snapshots on record count: a snapshot's labels can be forged by anyone who may create
snapshots in the namespace, the status only by careplane.

-o json|yaml|name|jsonpath=...|go-template=... prints the VolumeSnapshots on record (the points'
and the evidence) as a VolumeSnapshotList, as the API server holds them; each point's snapshots
are labelled careplane.io/recovery-point, the evidence careplane.io/evidence. Exit status 3 when
ENV does not exist.`,
		Example: `  kubectl careplane recovery-points yorkshire-care-records
  kubectl careplane recovery-points yorkshire-care-records -o yaml`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeEnvs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			printer, err := out.printer()
			if err != nil {
				return err
			}
			env, err := o.getEnv(ctx, args[0])
			if err != nil {
				return err
			}
			if printer == nil {
				return WriteRecoveryPoints(o.streams.Out, env)
			}
			list, err := o.snapshotsOnRecord(ctx, env)
			if err != nil {
				return err
			}
			return printObj(printer, list, o.streams.Out)
		},
	}
	out = addOutputFlags(cmd)
	return cmd
}

// snapshotsOnRecord lists the VolumeSnapshots of env's primary namespace
// whose UIDs its status records, points' first, in the status's order.
func (o *options) snapshotsOnRecord(ctx context.Context, env *v1alpha1.HealthEnvironment) (*unstructured.UnstructuredList, error) {
	ns := build.SiteNamespace(env, v1alpha1.SitePrimary)
	all := &unstructured.UnstructuredList{}
	all.SetGroupVersionKind(volumeSnapshotList)
	if err := o.client.List(ctx, all, client.InNamespace(ns)); err != nil && !meta.IsNoMatchError(err) {
		return nil, fmt.Errorf("listing VolumeSnapshots in %s: %w", ns, err)
	}
	byUID := map[string]unstructured.Unstructured{}
	for _, s := range all.Items {
		byUID[string(s.GetUID())] = s
	}
	out := &unstructured.UnstructuredList{}
	out.SetGroupVersionKind(volumeSnapshotList)
	for _, uid := range RecordedSnapshotUIDs(env) {
		if s, ok := byUID[uid]; ok {
			out.Items = append(out.Items, s)
		}
	}
	return out, nil
}

// RecordedSnapshotUIDs are the UIDs of every snapshot env's status records:
// the recovery points' (oldest first), then the evidence.
func RecordedSnapshotUIDs(env *v1alpha1.HealthEnvironment) []string {
	var uids []string
	if r := env.Status.Recovery; r != nil {
		for _, p := range r.Points {
			for _, s := range p.Snapshots {
				uids = append(uids, s.UID)
			}
		}
	}
	for _, e := range env.Status.EvidenceSnapshots {
		uids = append(uids, e.UID)
	}
	return uids
}

// WriteRecoveryPoints writes env's recovery points and evidence snapshots
// as tables.
func WriteRecoveryPoints(w io.Writer, env *v1alpha1.HealthEnvironment) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var points []v1alpha1.RecoveryPoint
	if r := env.Status.Recovery; r != nil {
		points = r.Points
	}
	switch {
	case env.Spec.Recovery == nil && len(points) == 0:
		fmt.Fprintf(tw, "No recovery points: HealthEnvironment %s sets no spec.recovery.\n", env.Name)
	case len(points) == 0:
		fmt.Fprintf(tw, "No recovery points yet%s.\n", recoveryPointsWhy(env))
	default:
		fmt.Fprintln(tw, "RECOVERY POINT\tTAKEN\tREVISION\tCLEAN\tREADY\tSNAPSHOTS")
		for _, p := range points {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%t\t%s\n", p.Name, p.TakenAt.UTC().Format(time.RFC3339), dash(p.Revision), p.Clean, p.Ready, strconv.Itoa(len(p.Snapshots)))
		}
	}
	if r := env.Status.Recovery; r != nil {
		newest := "none yet"
		if r.NewestCleanPointAt != nil {
			newest = r.NewestCleanPointAt.UTC().Format(time.RFC3339)
		}
		next := "-"
		if r.NextPointAt != nil {
			next = r.NextPointAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "Newest clean point: %s; next point due: %s\n", newest, next)
	}
	if len(env.Status.EvidenceSnapshots) > 0 {
		ev := slices.Clone(env.Status.EvidenceSnapshots)
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "EVIDENCE SNAPSHOT\tCLAIM\tTICKET\tFENCE\tREADY")
		for _, e := range ev {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\n", e.Name, e.Claim, dash(e.Ticket), e.FenceID, e.Ready)
		}
		fmt.Fprintf(tw, "Evidence is kept until a responder purges it: kubectl careplane purge-evidence %s --dry-run\n", env.Name)
	}
	return tw.Flush()
}

// recoveryPointsWhy is the RecoveryPoints condition's message, when it says
// why no point is taken.
func recoveryPointsWhy(env *v1alpha1.HealthEnvironment) string {
	if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionRecoveryPoints); c != nil {
		return " (" + c.Reason + ": " + c.Message + ")"
	}
	return ""
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
