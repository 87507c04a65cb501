package plugin

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/careplane/careplane/internal/preflight"
)

// --- doctor -----------------------------------------------------------------

func (o *options) doctorCmd() *cobra.Command {
	var name, output string
	var leaderElection bool
	cmd := &cobra.Command{
		Use:   "doctor [-n NAMESPACE] [--name NAME]",
		Short: "Check careplane's install: CRDs, guardrails and their parameters, a leader, the manager's RBAC, NetworkPolicy enforcement",
		Long: `Check that careplane is installed and working: the first thing to run when a fence does not
happen. It runs the same preflight as "helm test" (internal/preflight), from your identity:

  crds                  HealthEnvironment, FenceRequest (every kind of the API) served at careplane.io/v1alpha1
  guardrails            every guardrail admission policy and binding present, bound to its policy and its parameters
  guardrail-parameters  the parameter ConfigMap present, with at least one responder group
  leader                the manager's Lease held and renewed within its lease duration
  manager-rbac          the API server allows the manager's ServiceAccount everything its code's RBAC asks for
                        (SubjectAccessReviews: you need create on subjectaccessreviews)
  network-policy        a network plugin that enforces NetworkPolicy runs (Calico, Cilium, Antrea,
                        kube-router, Weave Net, kube-network-policies), or "unknown"

Each check passes, warns or fails, with what to do and a link to docs/operations.md#preflight.
-n names the install's namespace (default careplane-system, not the kubeconfig's namespace);
--name is the prefix of its objects' names: the chart's full name (the release name, with
-careplane appended unless it says careplane).

-o json|yaml prints the report for scripts.

Exit status 0 when no check failed (warnings included), 8 when a check failed, and 4 when the only
failures are checks the API server did not let you make (forbidden). See "kubectl careplane --help"
for every exit status.`,
		Example: `  kubectl careplane doctor
  kubectl careplane doctor -n careplane-helm --name careplane-helm
  kubectl careplane doctor -o json | jq '.results[] | select(.status != "Pass")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" && output != "yaml" {
				return usagef("-o %q: doctor prints json or yaml", output)
			}
			ns := preflight.DefaultNamespace
			if cmd.Flags().Changed("namespace") && *o.config.Namespace != "" {
				ns = *o.config.Namespace
			}
			report := preflight.Run(cmd.Context(), preflight.Clients{Client: o.client, Discovery: o.disc},
				preflight.Options{Namespace: ns, Name: name, NoLeaderElection: !leaderElection})
			if err := o.writeReport(report, output); err != nil {
				return err
			}
			return doctorError(report)
		},
	}
	cmd.Flags().StringVar(&name, "name", preflight.DefaultName, "the prefix of the install's object names: the chart's full name")
	cmd.Flags().BoolVar(&leaderElection, "leader-election", true, "whether the manager runs with leader election (the chart's leaderElection); false skips the leader check")
	cmd.Flags().StringVarP(&output, "output", "o", "", "Output format: json or yaml; the default is a human-readable report")
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

func (o *options) writeReport(r preflight.Report, output string) error {
	switch output {
	case "json":
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(o.streams.Out, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(r)
		if err != nil {
			return err
		}
		_, err = o.streams.Out.Write(b)
		return err
	}
	return preflight.WriteText(o.streams.Out, r, o.paintStatus)
}

// paintStatus colours a check's status word: green passed, yellow warned,
// red failed (only on a terminal without NO_COLOR; see palette).
func (o *options) paintStatus(s preflight.Status, word string) string {
	c := map[preflight.Status]colour{preflight.Pass: green, preflight.Warn: yellow, preflight.Fail: red}[s]
	if c == "" {
		c = plain
	}
	return o.colour.paint(c, word)
}

// doctorError is the error of a report: ErrPreflightFailed when a check
// failed on what it saw, ErrCannotCheck when the only failures are checks
// the caller may not make, nil when none failed.
func doctorError(r preflight.Report) error {
	if !r.Failed() {
		return nil
	}
	var failed []string
	for _, c := range r.Results {
		if c.Status == preflight.Fail {
			failed = append(failed, c.Check)
		}
	}
	if r.OnlyForbidden() {
		return fmt.Errorf("%w: forbidden to check %s", ErrCannotCheck, strings.Join(failed, ", "))
	}
	return fmt.Errorf("%w: %s", ErrPreflightFailed, strings.Join(failed, ", "))
}
