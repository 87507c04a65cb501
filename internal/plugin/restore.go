package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/recovery"
)

// RestoreState is what the cluster holds for a restore of one environment,
// gathered before planning it.
type RestoreState struct {
	// Env is the environment as it would be after the restore patch (its
	// isolation.restoreFrom set as asked).
	Env *v1alpha1.HealthEnvironment
	// Services are the service templates the primary is rebuilt from (the
	// spec's, or the restore revision's), and From says which.
	Services []v1alpha1.Service
	From     string
	// FencedAt is when the fence on record began (zero: not on record).
	FencedAt time.Time
	// Snapshots are the VolumeSnapshots of the primary namespace.
	Snapshots map[string]recovery.SnapshotState
	// Claims are the claims of the primary namespace.
	Claims []corev1.PersistentVolumeClaim
}

// RestorePlan is what a restore would bring back, and from where.
type RestorePlan struct {
	Environment string `json:"environment"`
	// RebuiltFrom is "spec" or the known-good revision the services are
	// rebuilt from.
	RebuiltFrom string `json:"rebuiltFrom"`
	// RecoveryPoint is the point the volumes come back from ("" without
	// volumes), ChosenBy how it was chosen, TakenAt when it was taken and
	// DataLost the data time lost (from the point to the fence).
	RecoveryPoint string       `json:"recoveryPoint,omitempty"`
	ChosenBy      string       `json:"chosenBy,omitempty"`
	TakenAt       *metav1.Time `json:"takenAt,omitempty"`
	DataLost      string       `json:"dataLost,omitempty"`
	// Volumes lists each restored claim and its snapshot.
	Volumes []RestoreVolume `json:"volumes,omitempty"`
	// KeptAsEvidence are the claims of the fenced site that stay, labelled
	// as evidence.
	KeptAsEvidence []string `json:"keptAsEvidence,omitempty"`
}

// RestoreVolume is one claim a restore creates.
type RestoreVolume struct {
	Service string `json:"service"`
	Volume  string `json:"volume"`
	Replica int32  `json:"replica"`
	// Claim is the new claim; its <generation> is set when the restore
	// begins.
	Claim string `json:"claim"`
	// Snapshot is the VolumeSnapshot it is restored from, taken of
	// SnapshotOf.
	Snapshot   string `json:"snapshot"`
	SnapshotOf string `json:"snapshotOf"`
}

// PlanGeneration stands for the data generation in a plan's claim names:
// the operator derives it from the time the restore begins.
const PlanGeneration = "<generation>"

// PlanRestore plans the restore of s.Env as the operator would carry it
// out: the same choice of recovery point (recovery.Choose) and the same
// claims (recovery.RestoreClaims). A restore the operator would block
// returns its reason as a *recovery.NoPointError.
func PlanRestore(s RestoreState) (RestorePlan, error) {
	p := RestorePlan{Environment: s.Env.Name, RebuiltFrom: s.From}
	if !slices.ContainsFunc(s.Services, func(svc v1alpha1.Service) bool { return svc.Stateful() }) {
		return p, nil
	}
	in := recovery.ChooseInput{FencedAt: s.FencedAt, From: s.Env.Spec.Isolation.RestoreFrom, Snapshots: s.Snapshots}
	if st := s.Env.Status.Recovery; st != nil {
		in.Points = st.Points
	}
	c, err := recovery.Choose(in)
	if err != nil {
		return p, err
	}
	claims, err := recovery.RestoreClaims(s.Services, PlanGeneration, c.Point)
	if err != nil {
		return p, err
	}
	p.RecoveryPoint, p.ChosenBy, p.TakenAt, p.DataLost = c.Point.Name, c.By, c.Point.TakenAt.DeepCopy(), c.DataLost.Round(time.Second).String()
	restored := map[string]bool{}
	for _, rc := range claims {
		p.Volumes = append(p.Volumes, RestoreVolume{Service: rc.Service, Volume: rc.Volume, Replica: rc.Ordinal,
			Claim: rc.Claim, Snapshot: rc.Snapshot, SnapshotOf: rc.FromClaim})
		restored[rc.Claim] = true
	}
	for _, c := range s.Claims {
		if !restored[c.Name] {
			p.KeptAsEvidence = append(p.KeptAsEvidence, c.Name)
		}
	}
	slices.Sort(p.KeptAsEvidence)
	return p, nil
}

// WriteRestorePlan writes p for people.
func WriteRestorePlan(w io.Writer, p RestorePlan) error {
	fmt.Fprintf(w, "Restore plan for HealthEnvironment %s (nothing was changed):\n", p.Environment)
	fmt.Fprintf(w, "  services rebuilt from: %s, with new credentials\n", p.RebuiltFrom)
	if p.RecoveryPoint == "" {
		_, err := fmt.Fprintln(w, "  no volumes: no recovery point is needed")
		return err
	}
	fmt.Fprintf(w, "  recovery point: %s (%s), taken %s; data lost: %s\n", p.RecoveryPoint, p.ChosenBy,
		p.TakenAt.UTC().Format(time.RFC3339), p.DataLost)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tVOLUME\tREPLICA\tNEW CLAIM\tFROM SNAPSHOT\tSNAPSHOT OF")
	for _, v := range p.Volumes {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", v.Service, v.Volume, v.Replica, v.Claim, v.Snapshot, v.SnapshotOf)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(p.KeptAsEvidence) > 0 {
		fmt.Fprintf(w, "  kept as evidence (labelled %s, never deleted): %v\n", v1alpha1.LabelEvidence, p.KeptAsEvidence)
	}
	_, err := fmt.Fprintf(w, "  %s is set when the restore begins; the fence stays until every new claim is bound and every pod Ready\n", PlanGeneration)
	return err
}

// --- restore --------------------------------------------------------------

func (o *options) restoreCmd() *cobra.Command {
	var revision, to, before, output string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "restore ENV [--revision REVISION] [--to POINT | --before TIME] [--dry-run [-o json|yaml]]",
		Short: "Restore a fenced environment: rebuild the primary clean, with its data from a recovery point, then lift the fence",
		Long: `Restore a fenced environment: rebuild the primary clean, then lift the fence.

restore ENV sets spec.isolation.mode to None and waits until careplane reports the environment
restored. The services are rebuilt from the spec, or from --revision (a known-good revision, see
kubectl careplane revisions), with new credentials. Services with volumes get their data back
from a recovery point: by default the newest clean one taken before the fence; --to POINT names
one (see status.recovery.points), --before TIME (RFC 3339) takes the newest clean one before that
time, for when the compromise began before the fence. The restore writes
spec.isolation.restoreFrom. New claims are created from the point's VolumeSnapshots for a new
StatefulSet; the fenced claims stay, labelled careplane.io/evidence. If no point fits, the
restore is blocked (exit 7) and the fence stays.

--dry-run sends the change as a server-side dry run and prints the plan: the recovery point,
the data time lost, and which new claim comes from which snapshot. -o json|yaml prints the plan
as JSON or YAML.`,
		Example: `  kubectl careplane restore wales-111
  kubectl careplane restore records-york --before 2026-12-03T05:40:00Z --dry-run
  kubectl careplane restore records-york --to p-20261203-053000`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeEnvs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			name := args[0]
			if to != "" && before != "" {
				return usagef("pass --to or --before, not both")
			}
			if output != "" && output != "json" && output != "yaml" {
				return usagef("-o %q: the restore plan prints as json or yaml", output)
			}
			if output != "" && !dryRun {
				return usagef("-o prints the plan of --dry-run")
			}
			isolation := map[string]any{"mode": string(v1alpha1.IsolationNone)}
			if revision != "" {
				isolation["restoreRevision"] = revision
			}
			var from *v1alpha1.RestoreFrom
			switch {
			case to != "":
				from = &v1alpha1.RestoreFrom{RecoveryPoint: to}
				isolation["restoreFrom"] = map[string]any{"recoveryPoint": to}
			case before != "":
				t, err := time.Parse(time.RFC3339, before)
				if err != nil {
					return usagef("--before %q is not an RFC 3339 time (e.g. 2026-12-03T05:40:00Z): %v", before, err)
				}
				from = &v1alpha1.RestoreFrom{Before: &metav1.Time{Time: t}}
				isolation["restoreFrom"] = map[string]any{"before": t.UTC().Format(time.RFC3339)}
			}
			if dryRun {
				return o.restoreDryRun(ctx, name, isolation, revision, from, output)
			}
			gen, err := o.applyIsolation(ctx, name, isolation, false, false)
			if err != nil {
				return err
			}
			fmt.Fprintf(o.streams.Out, "HealthEnvironment %s: restore requested (generation %d)\n", name, gen)
			return o.wait(ctx, name, "restored", func(env *v1alpha1.HealthEnvironment) (bool, string, error) {
				if msg, blocked := RestoreBlocked(env, gen); blocked {
					return false, msg, withCause(ErrRestoreBlocked, "restore of %s is blocked, the fence stays: %s", name, msg)
				}
				done, msg := RestoreDone(env, gen)
				return done, msg, nil
			})
		},
	}
	cmd.Flags().StringVar(&revision, "revision", "", "known-good revision to rebuild from (see `kubectl careplane revisions`)")
	cmd.Flags().StringVar(&to, "to", "", "recovery point to restore the volumes from (see status.recovery.points)")
	cmd.Flags().StringVar(&before, "before", "", "restore the volumes from the newest clean recovery point taken before this RFC 3339 time")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "send the change as a server-side dry run and print what the restore would bring back, from where")
	cmd.Flags().StringVarP(&output, "output", "o", "", "with --dry-run: print the plan as json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("revision", o.completeRevisions)
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
	})
	o.waitFlags(cmd)
	return cmd
}

// restoreDryRun sends the restore as a server-side dry run, then plans it
// from what the cluster holds, as the operator would carry it out.
func (o *options) restoreDryRun(ctx context.Context, name string, isolation map[string]any, revision string, from *v1alpha1.RestoreFrom, output string) error {
	if _, err := o.applyIsolation(ctx, name, isolation, true, false); err != nil {
		return err
	}
	env, err := o.getEnv(ctx, name)
	if err != nil {
		return err
	}
	env.Spec.Isolation.RestoreFrom = from
	if revision != "" {
		env.Spec.Isolation.RestoreRevision = revision
	}
	st, err := o.gatherRestoreState(ctx, env)
	if err != nil {
		return err
	}
	plan, err := PlanRestore(st)
	var noPoint *recovery.NoPointError
	if errors.As(err, &noPoint) {
		return withCause(ErrRestoreBlocked, "restore of %s would be blocked, the fence would stay: %s", name, err)
	} else if err != nil {
		return err
	}
	switch output {
	case "json":
		b, err := json.MarshalIndent(plan, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(o.streams.Out, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(plan)
		if err != nil {
			return err
		}
		_, err = o.streams.Out.Write(b)
		return err
	}
	fmt.Fprintf(o.streams.Out, "Server-side dry run of the restore of %s: accepted.\n", name)
	return WriteRestorePlan(o.streams.Out, plan)
}

// gatherRestoreState reads what PlanRestore needs: the services the primary
// is rebuilt from, the fence on record, the snapshots and claims of the
// primary namespace.
func (o *options) gatherRestoreState(ctx context.Context, env *v1alpha1.HealthEnvironment) (RestoreState, error) {
	names := build.NamespaceNames(env)
	st := RestoreState{Env: env, Services: env.Spec.Services, From: "spec"}
	if rev := env.Spec.Isolation.RestoreRevision; rev != "" {
		cr := &appsv1.ControllerRevision{}
		if err := o.client.Get(ctx, client.ObjectKey{Namespace: names.Front, Name: rev}, cr); err != nil || cr.Labels[v1alpha1.LabelEnvironment] != env.Name {
			return st, withCause(ErrRestoreBlocked, "isolation.restoreRevision %q is not a known-good revision of %s (see `kubectl careplane revisions %s`)", rev, env.Name, env.Name)
		}
		services, err := build.ServicesFromRevision(cr.Data.Raw)
		if err != nil {
			return st, fmt.Errorf("decoding revision %s: %w", rev, err)
		}
		st.Services, st.From = services, rev
	}
	ns := &corev1.Namespace{}
	if err := o.client.Get(ctx, client.ObjectKey{Name: names.Primary}, ns); err != nil {
		return st, fmt.Errorf("reading namespace %s: %w", names.Primary, err)
	}
	rec := fence.RecordOf(ns)
	if !rec.Present() {
		return st, fmt.Errorf("HealthEnvironment %s is not fenced: there is nothing to restore", env.Name)
	}
	st.FencedAt, _ = rec.Began()
	snaps := &unstructured.UnstructuredList{}
	snaps.SetGroupVersionKind(schema.GroupVersionKind{Group: "snapshot.storage.k8s.io", Version: "v1", Kind: "VolumeSnapshotList"})
	st.Snapshots = map[string]recovery.SnapshotState{}
	if err := o.client.List(ctx, snaps, client.InNamespace(names.Primary)); err != nil && !meta.IsNoMatchError(err) {
		return st, fmt.Errorf("listing VolumeSnapshots in %s: %w", names.Primary, err)
	}
	for _, s := range snaps.Items {
		ready, _, _ := unstructured.NestedBool(s.Object, "status", "readyToUse")
		st.Snapshots[s.GetName()] = recovery.SnapshotState{UID: string(s.GetUID()), ReadyToUse: ready && s.GetDeletionTimestamp() == nil}
	}
	var claims corev1.PersistentVolumeClaimList
	if err := o.client.List(ctx, &claims, client.InNamespace(names.Primary)); err != nil {
		return st, fmt.Errorf("listing claims in %s: %w", names.Primary, err)
	}
	st.Claims = claims.Items
	return st, nil
}
