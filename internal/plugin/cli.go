package plugin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/netpol"
	"github.com/careplane/careplane/internal/version"
)

// FieldManager is the field manager of the plugin's server-side applies of
// spec.isolation.
const FieldManager = "kubectl-careplane"

// options are the flags every command shares.
type options struct {
	config  *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	timeout time.Duration
	noWait  bool

	client  client.Client
	dynamic dynamic.Interface
	disc    discovery.DiscoveryInterface

	// started is set once a command runs (after cobra parsed the flags
	// and checked the arguments): an error before it is a usage error.
	started bool
	// colour paints the words of human output.
	colour palette
}

// NewCommand returns the kubectl-careplane root command.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	cmd, _ := newCommand(streams)
	return cmd
}

func newCommand(streams genericiooptions.IOStreams) (*cobra.Command, *options) {
	o := &options{config: genericclioptions.NewConfigFlags(true), streams: streams, colour: paletteFor(streams.Out, os.Getenv)}
	root := &cobra.Command{
		Use:   "kubectl-careplane",
		Short: "Fence, verify and restore careplane HealthEnvironments",
		Long: `kubectl careplane shows careplane HealthEnvironments and lets incident responders fence, verify and restore them.

Exit status, for scripts (docs/runbook.md):
  0  success; every environment checked is as it should be
  1  any other failure, or failures of different kinds at once
  2  usage: unknown command or flag, missing argument or --reason, purge-evidence without confirmation
  3  not found: the environment, or any environment matching --selector
  4  forbidden: RBAC or a careplane guardrail refused the caller (e.g. not an incident responder), or
     doctor was refused the reads its checks need
  5  timeout: the change is written but the operator did not report it within --timeout
  6  not isolated: verify found an allowed flow, or status shows an environment that should be
     fenced without Fenced=True and IsolationVerified=True
  7  restore blocked: the operator refuses the restore (e.g. an unknown revision, or no recovery point
     fits); the fence stays
  8  preflight failed: doctor found careplane not installed or not working as it must

Shell completion (environment names, -o formats, restore's --revision):
  source <(kubectl-careplane completion bash)    # or zsh, fish, powershell
Colour: on a terminal only, and never when NO_COLOR is set or with -o.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl careplane"},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			o.started = true
			// Completion connects itself, once cobra has parsed
			// --kubeconfig and the like for the command completed.
			if cmd.Name() == "completion" || (cmd.Parent() != nil && cmd.Parent().Name() == "completion") ||
				cmd.Name() == cobra.ShellCompRequestCmd || cmd.Name() == cobra.ShellCompNoDescRequestCmd {
				return nil
			}
			return o.connect()
		},
	}
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	o.config.AddFlags(root.PersistentFlags())
	root.AddCommand(o.statusCmd(), o.fenceCmd(), o.restoreCmd(), o.revisionsCmd(), o.verifyCmd(), o.purgeCmd(), o.recoveryPointsCmd(), o.doctorCmd())
	return root, o
}

// Main runs the plugin and returns the process exit code (see ExitCode).
func Main() int {
	return Run(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}, os.Args[1:])
}

// Run runs the plugin with args and returns the process exit code.
func Run(streams genericiooptions.IOStreams, args []string) int {
	cmd, o := newCommand(streams)
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(streams.ErrOut, "Error:", err)
	if !o.started {
		// cobra refused the command line: an unknown command or flag, or
		// the wrong number of arguments.
		return ExitUsage
	}
	return ExitCode(err)
}

// scheme holds the kinds the plugin reads and prints.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	return s
}()

func (o *options) connect() error {
	cfg, err := o.config.ToRESTConfig()
	if err != nil {
		return fmt.Errorf("loading the kubeconfig: %w", err)
	}
	// client-go's default (5 requests per second) would take minutes to
	// fence a fleet; the API server's priority and fairness still applies.
	cfg.QPS, cfg.Burst = 200, 500
	if o.client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	if o.dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	if o.disc, err = discovery.NewDiscoveryClientForConfig(cfg); err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	return nil
}

func (o *options) waitFlags(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for the operator to report the new state")
	cmd.Flags().BoolVar(&o.noWait, "no-wait", false, "return once the change is written, without waiting for the operator")
}

func (o *options) getEnv(ctx context.Context, name string) (*v1alpha1.HealthEnvironment, error) {
	env := &v1alpha1.HealthEnvironment{}
	if err := o.client.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, withCause(err, "HealthEnvironment %q not found", name)
		}
		return nil, fmt.Errorf("reading HealthEnvironment %s: %w", name, err)
	}
	return env, nil
}

// --- status ---------------------------------------------------------------

func (o *options) statusCmd() *cobra.Command {
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "status [ENV]",
		Short: "Show one or all environments; with ENV, the whole story: conditions, the fence, sites, incidents, events",
		Long: `Show one or all environments: tenant, mode, active site, services, readiness, known-good
revision, last incident. With ENV it also tells the whole story of that environment: every
condition with its message, what holds the fence (its spec or a FenceRequest) and what the fence
did, the last verification, the active site and services, the incidents, and the newest events.

-o json|yaml|name|jsonpath=...|go-template=... prints the HealthEnvironment (with ENV) or a
HealthEnvironmentList as the API server holds it.

Exit status 6 (not isolated) when an environment shown should be fenced (its spec says Fenced,
or a FenceRequest holds it) but its Fenced or IsolationVerified condition is not True; 3 when ENV
does not exist. See "kubectl careplane --help" for every exit status.`,
		Example: `  kubectl careplane status
  kubectl careplane status wales-111
  kubectl careplane status wales-111 -o json | jq '.status.conditions'`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: o.completeEnvs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			printer, err := out.printer()
			if err != nil {
				return err
			}
			var envs []v1alpha1.HealthEnvironment
			var obj runtime.Object
			if len(args) == 1 {
				env, err := o.getEnv(ctx, args[0])
				if err != nil {
					return err
				}
				envs, obj = append(envs, *env), env
			} else {
				list := &v1alpha1.HealthEnvironmentList{}
				if err := o.client.List(ctx, list); err != nil {
					return fmt.Errorf("listing HealthEnvironments: %w", err)
				}
				envs, obj = list.Items, list
			}
			requests := o.fenceRequests(ctx)
			if printer != nil {
				if err := printObj(printer, obj, o.streams.Out); err != nil {
					return err
				}
			} else {
				if err := writeStatus(o.streams.Out, envs, requests, o.colour); err != nil {
					return err
				}
				if len(args) == 1 {
					if err := writeStory(o.streams.Out, o.story(ctx, &envs[0], requests), o.colour); err != nil {
						return err
					}
				}
			}
			return notIsolated(envs, requests)
		},
	}
	out = addOutputFlags(cmd)
	return cmd
}

// notIsolated is the error of status when an environment that should be
// fenced is not isolated (ExitNotIsolated), or nil.
func notIsolated(envs []v1alpha1.HealthEnvironment, requests []v1alpha1.FenceRequest) error {
	var problems []string
	for i := range envs {
		if p := IsolationProblem(&envs[i], v1alpha1.HoldingRequest(requests, envs[i].Name)); p != "" {
			problems = append(problems, p)
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrNotIsolated, strings.Join(problems, "; "))
}

// story gathers what status ENV tells beyond the status row. The events
// are best effort: a responder who may not read them still sees the rest.
func (o *options) story(ctx context.Context, env *v1alpha1.HealthEnvironment, requests []v1alpha1.FenceRequest) Story {
	s := Story{Env: env, HeldBy: v1alpha1.HoldingRequest(requests, env.Name), Now: time.Now()}
	evs, err := o.envEvents(ctx, env)
	if err != nil {
		s.EventsErr = err.Error()
	}
	s.Events = evs
	return s
}

// envEvents lists the events (events.k8s.io) about env. An event about a
// cluster-scoped object is recorded in namespace default; it is looked for
// in every namespace first, in case a recorder puts it elsewhere, and in
// default alone for a caller who may not list events cluster-wide.
func (o *options) envEvents(ctx context.Context, env *v1alpha1.HealthEnvironment) ([]eventsv1.Event, error) {
	sel := fields.Set{"regarding.kind": "HealthEnvironment", "regarding.name": env.Name}.AsSelector()
	var list eventsv1.EventList
	err := o.client.List(ctx, &list, client.MatchingFieldsSelector{Selector: sel})
	if apierrors.IsForbidden(err) {
		err = o.client.List(ctx, &list, client.MatchingFieldsSelector{Selector: sel}, client.InNamespace(metav1.NamespaceDefault))
	}
	if err != nil {
		return nil, err
	}
	var evs []eventsv1.Event
	for _, e := range list.Items {
		// Not those of an earlier environment of the same name.
		if e.Regarding.UID == "" || e.Regarding.UID == env.UID {
			evs = append(evs, e)
		}
	}
	return evs, nil
}

// --- fence ----------------------------------------------------------------

func (o *options) fenceCmd() *cobra.Command {
	var reason, ticket, selector string
	var stop, dryRun bool
	cmd := &cobra.Command{
		Use:   "fence (ENV | --selector LABELS) --reason REASON [--ticket TICKET] [--stop]",
		Short: "Fence environments: cut the primary site off, revoke its credentials, keep or stop its pods",
		Long: `Fence environments: cut the primary site off, revoke its credentials, keep or stop its pods.

fence ENV writes spec.isolation of one HealthEnvironment and waits until careplane reports it
Fenced.

fence --selector fences a fleet in two steps. It first creates a FenceRequest
(fence-<ticket>-xxxxx): careplane matches the selector once, records the environments in the
request's status, and writes the deny-all NetworkPolicy of every one of them at once, before
anything else. The command waits for that, with --no-wait too (at most 30s, or --timeout if
shorter; the fences go ahead after it in any case), and prints how many deny policies are in
place. It then writes spec.isolation of each environment the request recorded, as fence ENV
does, so that each environment's own spec holds its fence; the request, holding none, then
completes. Unless --no-wait, it waits until every one is Fenced. Deleting a FenceRequest never
lifts a fence: restore each environment.

Creating a FenceRequest takes the responders' rights: create, get, list, watch and delete on
fencerequests.careplane.io, and membership of a responder group of the fence-request guard. On
a cluster that does not serve FenceRequests (an older careplane), --selector warns and writes
each environment's spec directly. --dry-run plans each matching environment's fence and
creates no request.`,
		Example: `  kubectl careplane fence wales-111 --reason "ransomware indicators on call-handling" --ticket INC-2041
  kubectl careplane fence --selector region=wales --reason "supplier breach" --ticket INC-2042
  kubectl careplane fence wales-111 --reason test --dry-run`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: o.completeEnvs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required: say why the environment is fenced")
			}
			if (len(args) == 1) == (selector != "") {
				return usagef("name one environment or pass --selector, not both or neither")
			}
			workloads := v1alpha1.WorkloadsPreserve
			if stop {
				workloads = v1alpha1.WorkloadsStop
			}
			names := args
			if selector != "" {
				sel, err := fenceSelector(selector)
				if err != nil {
					return usageError{err}
				}
				if dryRun {
					names, err = o.matching(ctx, selector, sel)
				} else {
					// The request first: its deny policies come before
					// any spec write. Its environments are the ones
					// whose specs are written next, whatever their labels
					// say by then.
					names, err = o.fenceByRequest(ctx, selector, newFenceRequest(sel, reason, ticket, workloads))
				}
				if err != nil {
					return err
				}
			}
			isolation := map[string]any{
				"mode": string(v1alpha1.IsolationFenced), "reason": reason, "workloads": string(workloads),
			}
			if ticket != "" {
				isolation["ticket"] = ticket
			}
			if dryRun {
				// One at a time: each prints a plan.
				return o.forEach(ctx, names, 1, func(ctx context.Context, name string) error {
					return o.fenceDryRun(ctx, name, isolation)
				})
			}
			// Every fence is written before any is waited for: with many
			// environments compromised, none waits behind another.
			gens := map[string]int64{}
			var mu sync.Mutex
			applyErr := o.forEach(ctx, names, fenceParallelism, func(ctx context.Context, name string) error {
				gen, err := o.applyIsolation(ctx, name, isolation, false, selector != "")
				if err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				gens[name] = gen
				fmt.Fprintf(o.streams.Out, "HealthEnvironment %s: fence requested (generation %d)\n", name, gen)
				return nil
			})
			var written []string
			for _, n := range names {
				if _, ok := gens[n]; ok {
					written = append(written, n)
				}
			}
			// Waiting one after another costs no time once they are done.
			waitErr := o.forEach(ctx, written, 1, func(ctx context.Context, name string) error {
				return o.wait(ctx, name, "fenced", func(env *v1alpha1.HealthEnvironment) (bool, string, error) {
					done, msg := FenceDone(env, gens[name])
					return done, msg, nil
				})
			})
			return errors.Join(applyErr, waitErr)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the environment is fenced (required)")
	cmd.Flags().StringVar(&ticket, "ticket", "", "incident reference, e.g. INC-2041; labels the evidence pods")
	cmd.Flags().BoolVar(&stop, "stop", false, "stop the workloads instead of preserving the pods as evidence")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "fence every environment matching this label selector (=, !=, in, notin, KEY, !KEY), through a FenceRequest")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "send the change as a server-side dry run and print what the fence would write or delete")
	o.waitFlags(cmd)
	return cmd
}

// fenceParallelism is how many environments a fleet fence writes at once:
// enough that fencing hundreds takes seconds, few enough to stay within the
// API server's fair share for one client.
const fenceParallelism = 32

// forEach runs fn (a step of a fence) for every name, up to parallel at a
// time, failing closed: every name is attempted, every failure is reported
// (in the order of names), and the command fails if any did.
func (o *options) forEach(ctx context.Context, names []string, parallel int, fn func(context.Context, string) error) error {
	errs := make([]error, len(names))
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
	for i, name := range names {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = fn(ctx, name)
		})
	}
	wg.Wait()
	if len(names) == 1 {
		return errs[0]
	}
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, names[i])
			fmt.Fprintf(o.streams.ErrOut, "Error: fence %s: %v\n", names[i], err)
		}
	}
	if len(failed) > 0 {
		// The failures stay the cause, for ExitCode.
		return withCause(errors.Join(errs...), "fence failed for %d of %d environments: %s", len(failed), len(names), strings.Join(failed, ", "))
	}
	return nil
}

func (o *options) fenceDryRun(ctx context.Context, name string, isolation map[string]any) error {
	if _, err := o.applyIsolation(ctx, name, isolation, true, false); err != nil {
		return err
	}
	env, err := o.getEnv(ctx, name)
	if err != nil {
		return err
	}
	env.Spec.Isolation.Mode = v1alpha1.IsolationFenced
	env.Spec.Isolation.Reason, _ = isolation["reason"].(string)
	env.Spec.Isolation.Ticket, _ = isolation["ticket"].(string)
	w, _ := isolation["workloads"].(string)
	env.Spec.Isolation.Workloads = v1alpha1.WorkloadAction(w)
	st, err := o.gatherFenceState(ctx, env)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.streams.Out, "Server-side dry run of the fence of %s: accepted.\n", name)
	if err := WritePlan(o.streams.Out, PlanFence(st)); err != nil {
		return err
	}
	if st.SecretsAssumed {
		fmt.Fprintln(o.streams.Out, "(You may not list Secrets, so the plan assumes every Secret careplane generated exists; the fence deletes only those.)")
	}
	if len(st.StandbyUnread) > 0 {
		fmt.Fprintf(o.streams.Out, "(You may not read %s of standby namespace %s, so the plan may miss what the fence deletes there: every object of those kinds that is not careplane's, and every RoleBinding that lets its subjects read Secrets; a binding whose role you may not read is shown as deleted.)\n",
			strings.Join(st.StandbyUnread, ", "), build.NamespaceNames(env).Standby)
	}
	if st.FrontEndpointsUnread {
		fmt.Fprintf(o.streams.Out, "(You may not list Endpoints, so the plan does not show those in front namespace %s; the fence deletes every one.)\n", build.NamespaceNames(env).Front)
	}
	return nil
}

// assumedSecrets are the names of the generated Secrets of env's primary
// namespace ns, for a caller who may not list Secrets: each credential of
// the spec at rev, the credentials revision the primary runs
// (build.PrimaryCredentials), as careplane names them.
func assumedSecrets(env *v1alpha1.HealthEnvironment, ns, rev string) []metav1.PartialObjectMetadata {
	var out []metav1.PartialObjectMetadata
	for _, svc := range env.Spec.Services {
		for _, g := range svc.GeneratedSecrets {
			out = append(out, metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
				Namespace: ns, Name: build.GeneratedSecretObjectName(v1alpha1.SitePrimary, svc.Name, g, rev)}})
		}
	}
	return out
}

// gatherFenceState reads what PlanFence needs from the cluster.
func (o *options) gatherFenceState(ctx context.Context, env *v1alpha1.HealthEnvironment) (FenceState, error) {
	names := build.NamespaceNames(env)
	st := FenceState{Env: env}
	in := client.InNamespace(names.Primary)
	var pols networkingv1.NetworkPolicyList
	var sas corev1.ServiceAccountList
	var secrets metav1.PartialObjectMetadataList
	var services corev1.ServiceList
	var pods corev1.PodList
	var deps appsv1.DeploymentList
	var sts appsv1.StatefulSetList
	var es discoveryv1.EndpointSliceList
	var eps corev1.EndpointsList //nolint:staticcheck // what the mirroring controller reads
	secrets.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	for _, l := range []struct {
		what string
		list client.ObjectList
		opts []client.ListOption
	}{
		{"network policies", &pols, []client.ListOption{in}},
		{"service accounts", &sas, []client.ListOption{in}},
		// Only names: the plugin has no business reading credentials.
		{"secrets", &secrets, []client.ListOption{in}},
		{"pods", &pods, []client.ListOption{in}},
		{"services", &services, []client.ListOption{in}},
		{"deployments", &deps, []client.ListOption{in}},
		{"statefulsets", &sts, []client.ListOption{in}},
		{"endpoint slices", &es, []client.ListOption{client.InNamespace(names.Front)}},
		{"endpoints", &eps, []client.ListOption{client.InNamespace(names.Front)}},
	} {
		err := o.client.List(ctx, l.list, l.opts...)
		if err != nil && l.list == &eps && apierrors.IsForbidden(err) {
			// A role from before the responder's read Endpoints: the plan
			// lacks them, and says so.
			st.FrontEndpointsUnread = true
			continue
		}
		if err != nil && l.list == &secrets && apierrors.IsForbidden(err) {
			// The responder role may not list Secrets, by design. The
			// fence deletes only the Secrets careplane generated, whose
			// names the spec and the workloads give: plan them as if they
			// exist (below, once the workloads are read).
			st.SecretsAssumed = true
			continue
		}
		if err != nil {
			return st, fmt.Errorf("listing %s of %s: %w", l.what, env.Name, err)
		}
	}
	st.Policies, st.ServiceAccounts, st.Pods, st.Deployments, st.FrontSlices = pols.Items, sas.Items, pods.Items, deps.Items, es.Items
	st.StatefulSets, st.FrontEndpoints, st.Services = sts.Items, eps.Items, services.Items
	nsObj := &corev1.Namespace{}
	if err := o.client.Get(ctx, client.ObjectKey{Name: names.Primary}, nsObj); client.IgnoreNotFound(err) != nil {
		return st, fmt.Errorf("reading namespace %s: %w", names.Primary, err)
	}
	st.DataGeneration = nsObj.Annotations[v1alpha1.AnnotationDataGeneration]
	if st.SecretsAssumed {
		secrets.Items = assumedSecrets(env, names.Primary, build.PrimaryCredentials(nsObj))
	}
	frontObj := &corev1.Namespace{}
	switch err := o.client.Get(ctx, client.ObjectKey{Name: names.Front}, frontObj); {
	case err == nil:
		st.Front = frontObj
	case !apierrors.IsNotFound(err):
		return st, fmt.Errorf("reading namespace %s: %w", names.Front, err)
	}
	for _, s := range secrets.Items {
		st.Secrets = append(st.Secrets, corev1.Secret{ObjectMeta: s.ObjectMeta})
	}
	st.AdminPolicyKind = o.adminPolicyKind()
	if err := o.gatherEvidenceState(ctx, env, &st); err != nil {
		return st, err
	}
	// The fence's start, as the operator reads it (fence.Record.Began):
	// what the standby's pods are judged against. Zero before a fence.
	var since time.Time
	if metav1.IsControlledBy(nsObj, env) {
		since, _ = fence.RecordOf(nsObj).Began()
	}
	if err := o.gatherStandbyState(ctx, env, &st, since); err != nil {
		return st, err
	}
	return st, nil
}

// gatherStandbyState reads what the fence's standby part plans from, when
// the fence moves traffic to the standby: the standby namespace's
// ServiceAccounts, Secrets (names only), workloads, and the services it
// runs (the critical ones of the known-good revision). since is when the
// fence on record began (zero before one): a pod made after it is the
// control plane's, from careplane's template, and never tampered with.
func (o *options) gatherStandbyState(ctx context.Context, env *v1alpha1.HealthEnvironment, st *FenceState, since time.Time) error {
	if !fence.StandbyServes(env) {
		return nil
	}
	names := build.NamespaceNames(env)
	nsObj := &corev1.Namespace{}
	if err := o.client.Get(ctx, client.ObjectKey{Name: names.Standby}, nsObj); apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading namespace %s: %w", names.Standby, err)
	}
	if !metav1.IsControlledBy(nsObj, env) {
		return nil
	}
	st.StandbyFound, st.StandbyFrozenFor = true, fence.StandbyFrozenFor(nsObj)
	services, err := o.standbyServices(ctx, env)
	if err != nil {
		return err
	}
	st.StandbyServices = services
	in := client.InNamespace(names.Standby)
	var sas corev1.ServiceAccountList
	if err := o.client.List(ctx, &sas, in); err != nil {
		return fmt.Errorf("listing service accounts of %s's standby: %w", env.Name, err)
	}
	st.ServiceAccounts = append(st.ServiceAccounts, sas.Items...)
	// What the fence's clean-up of the standby reads, as the operator
	// reads it (fence.StandbyLists); a kind the caller may not list is
	// said so, but the workloads the rotation plans from.
	lists := fence.NewStandbyLists()
	for _, gvk := range fence.StandbyReadKinds {
		switch err := o.client.List(ctx, lists.For(gvk.Kind), in); {
		case apierrors.IsForbidden(err) && gvk.Kind != "Deployment" && gvk.Kind != "StatefulSet":
			st.StandbyUnread = append(st.StandbyUnread, gvk.Kind)
		case err != nil:
			return fmt.Errorf("listing %s of %s's standby: %w", gvk.Kind, env.Name, err)
		}
	}
	// A ClusterRole one may not read counts as granting, as the operator
	// counts it.
	forbidden, err := lists.ReadClusterRoles(func(name string, into *rbacv1.ClusterRole) error {
		return o.client.Get(ctx, client.ObjectKey{Name: name}, into)
	})
	if err != nil {
		return fmt.Errorf("the roles bound in %s's standby: %w", env.Name, err)
	}
	if len(forbidden) > 0 {
		st.StandbyUnread = append(st.StandbyUnread, "ClusterRoles")
	}
	st.Deployments = append(st.Deployments, lists.Deployments()...)
	st.StatefulSets = append(st.StatefulSets, lists.StatefulSets()...)
	st.StandbyObjects = lists.Read(since)
	var secrets metav1.PartialObjectMetadataList
	secrets.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
	switch err := o.client.List(ctx, &secrets, in); {
	case apierrors.IsForbidden(err):
		// As for the primary: plan the generated ones as if they exist.
		st.SecretsAssumed = true
		for _, svc := range services {
			for _, g := range svc.GeneratedSecrets {
				st.Secrets = append(st.Secrets, corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: names.Standby, Name: build.GeneratedSecretName(svc.Name, g)}})
			}
		}
	case err != nil:
		return fmt.Errorf("listing secrets of %s's standby: %w", env.Name, err)
	default:
		for _, sec := range secrets.Items {
			st.Secrets = append(st.Secrets, corev1.Secret{ObjectMeta: sec.ObjectMeta})
		}
	}
	return nil
}

// standbyServices are the services env's standby runs: the critical
// services of its known-good revision, or, without one readable, of the
// spec (the plan then names what the spec would run).
func (o *options) standbyServices(ctx context.Context, env *v1alpha1.HealthEnvironment) ([]v1alpha1.Service, error) {
	services := env.Spec.Services
	if name := env.Status.KnownGoodRevision; name != "" {
		rev := &appsv1.ControllerRevision{}
		err := o.client.Get(ctx, client.ObjectKey{Namespace: build.FrontNamespace(env), Name: name}, rev)
		switch {
		case err == nil:
			if s, derr := build.ServicesFromRevision(rev.Data.Raw); derr == nil {
				services = s
			}
		case !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err):
			return nil, fmt.Errorf("reading revision %s of %s: %w", name, env.Name, err)
		}
	}
	var critical []v1alpha1.Service
	for _, svc := range services {
		if svc.Critical {
			critical = append(critical, svc)
		}
	}
	return critical, nil
}

// gatherEvidenceState reads what the fence's evidence step plans from: the
// claims and snapshots of the primary namespace, the snapshot class and the
// claims' drivers.
func (o *options) gatherEvidenceState(ctx context.Context, env *v1alpha1.HealthEnvironment, st *FenceState) error {
	ns := build.SiteNamespace(env, v1alpha1.SitePrimary)
	var claims corev1.PersistentVolumeClaimList
	if err := o.client.List(ctx, &claims, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("listing claims of %s: %w", env.Name, err)
	}
	st.Claims = claims.Items
	if len(claims.Items) == 0 {
		return nil
	}
	st.Drivers = map[string]string{}
	for _, c := range claims.Items {
		sc := ""
		if c.Spec.StorageClassName != nil {
			sc = *c.Spec.StorageClassName
		}
		if _, ok := st.Drivers[sc]; sc == "" || ok {
			continue
		}
		cls := &storagev1.StorageClass{}
		if err := o.client.Get(ctx, client.ObjectKey{Name: sc}, cls); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading StorageClass %s: %w", sc, err)
		}
		st.Drivers[sc] = cls.Provisioner
	}
	snaps := &metav1.PartialObjectMetadataList{}
	snaps.SetGroupVersionKind(volumeSnapshotList)
	if err := o.client.List(ctx, snaps, client.InNamespace(ns)); err != nil && !meta.IsNoMatchError(err) {
		return fmt.Errorf("listing VolumeSnapshots of %s: %w", env.Name, err)
	}
	st.Snapshots = snaps.Items
	if rec := env.Spec.Recovery; rec != nil && rec.VolumeSnapshotClassName != "" {
		st.SnapshotClass = &fence.SnapshotClass{Name: rec.VolumeSnapshotClassName}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(volumeSnapshotList.GroupVersion().WithKind("VolumeSnapshotClass"))
		switch err := o.client.Get(ctx, client.ObjectKey{Name: rec.VolumeSnapshotClassName}, u); {
		case err == nil:
			st.SnapshotClass.Found = true
			st.SnapshotClass.Driver, _, _ = unstructured.NestedString(u.Object, "driver")
		case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		default:
			return fmt.Errorf("reading VolumeSnapshotClass %s: %w", rec.VolumeSnapshotClassName, err)
		}
	}
	return nil
}

// adminPolicyKind returns the admin-tier policy kind the cluster serves, as
// the operator picks it: ClusterNetworkPolicy v1alpha2, else
// AdminNetworkPolicy v1alpha1; "" when neither (or discovery fails).
func (o *options) adminPolicyKind() string {
	for _, c := range []struct{ gv, kind string }{
		{"policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy"},
		{"policy.networking.k8s.io/v1alpha1", "AdminNetworkPolicy"},
	} {
		res, err := o.disc.ServerResourcesForGroupVersion(c.gv)
		if err != nil {
			continue
		}
		for _, r := range res.APIResources {
			if r.Kind == c.kind {
				return c.kind
			}
		}
	}
	return ""
}

// applyIsolation server-side applies spec.isolation of env name with the
// plugin's field manager (forcing ownership), and returns the generation
// the API server answered with. listed says the name comes from a list of
// environments just read (a fleet fence): it needs no check that it exists.
func (o *options) applyIsolation(ctx context.Context, name string, isolation map[string]any, dryRun, listed bool) (int64, error) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(),
		"kind":       "HealthEnvironment",
		"metadata":   map[string]any{"name": name},
		"spec":       map[string]any{"isolation": isolation},
	}}
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	// An apply creates what does not exist: check first, so that a typo
	// is an error, not a new (invalid) environment. A listed environment
	// deleted since the list is not created again either: the CRD requires
	// spec.services and spec.tenant, which this apply does not send. Not
	// reading it again halves the requests of a fleet fence, whose
	// every second counts.
	if !listed {
		if _, err := o.getEnv(ctx, name); err != nil {
			return 0, err
		}
	}
	res := v1alpha1.GroupVersion.WithResource("healthenvironments")
	out, err := o.dynamic.Resource(res).Apply(ctx, name, u, opts)
	if err != nil {
		var status apierrors.APIStatus
		if errors.As(err, &status) {
			// The API server's message verbatim: a guardrail denial says
			// who may do what, and why.
			return 0, withCause(err, "%s", status.Status().Message)
		}
		return 0, fmt.Errorf("applying spec.isolation of %s: %w", name, err)
	}
	return out.GetGeneration(), nil
}

// wait polls env name until done says so, printing a progress line whenever
// the state changes.
func (o *options) wait(ctx context.Context, name, what string, done func(*v1alpha1.HealthEnvironment) (bool, string, error)) error {
	if o.noWait {
		fmt.Fprintf(o.streams.Out, "Not waiting (--no-wait); follow it with: kubectl careplane status %s\n", name)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	start := time.Now()
	last := ""
	err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		env := &v1alpha1.HealthEnvironment{}
		var ok bool
		var msg string
		var err error
		if getErr := o.client.Get(ctx, client.ObjectKey{Name: name}, env); getErr != nil {
			// A failed read is retried until the timeout: the change is
			// written, and the operator acts on it whether or not we look.
			msg = "reading the environment: " + getErr.Error()
		} else {
			ok, msg, err = done(env)
		}
		if msg != last {
			fmt.Fprintf(o.streams.ErrOut, "  %s [%s]: %s\n", name, time.Since(start).Round(100*time.Millisecond), msg)
			last = msg
		}
		return ok, err
	})
	if err != nil {
		if wait.Interrupted(err) && ctx.Err() == context.DeadlineExceeded {
			return withCause(context.DeadlineExceeded, "HealthEnvironment %s not %s within %s (last: %s)", name, what, o.timeout, last)
		}
		return err
	}
	fmt.Fprintf(o.streams.Out, "HealthEnvironment %s %s after %s\n", name, what, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// --- restore --------------------------------------------------------------

// --- revisions ------------------------------------------------------------

func (o *options) revisionsCmd() *cobra.Command {
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "revisions ENV",
		Short: "List the known-good revisions of an environment, newest first",
		Long: `List the known-good revisions of an environment, newest first, marking the one
status.knownGoodRevision names. -o json|yaml|... prints them as a ControllerRevisionList
(apps/v1), newest first.`,
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
			revs, err := o.revisions(ctx, env)
			if err != nil {
				return err
			}
			if printer != nil {
				SortRevisions(revs.Items)
				return printObj(printer, revs, o.streams.Out)
			}
			return WriteRevisions(o.streams.Out, revs.Items, env.Status.KnownGoodRevision)
		},
	}
	out = addOutputFlags(cmd)
	return cmd
}

func (o *options) revisions(ctx context.Context, env *v1alpha1.HealthEnvironment) (*appsv1.ControllerRevisionList, error) {
	revs := &appsv1.ControllerRevisionList{}
	if err := o.client.List(ctx, revs, client.InNamespace(build.FrontNamespace(env)),
		client.MatchingLabels{v1alpha1.LabelEnvironment: env.Name}); err != nil {
		return nil, fmt.Errorf("listing revisions of %s: %w", env.Name, err)
	}
	return revs, nil
}

// --- verify ---------------------------------------------------------------

func (o *options) verifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "verify ENV",
		Short:             "Evaluate the primary site's live NetworkPolicies: exit 6 unless no flow reaches or leaves a fenced pod",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeEnvs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			env, err := o.getEnv(ctx, args[0])
			if err != nil {
				return err
			}
			in, err := o.gatherVerifyInput(ctx, env)
			if err != nil {
				return err
			}
			res, err := netpol.VerifyFence(in)
			if err != nil {
				return fmt.Errorf("cannot evaluate the policies of %s, so isolation is not verified: %w", in.Namespace, err)
			}
			fmt.Fprintf(o.streams.Out, "Namespace %s: %d pods, %d NetworkPolicies\n", in.Namespace, len(in.Pods), len(in.Policies))
			if err := netpol.WriteTable(o.streams.Out, res); err != nil {
				return err
			}
			if !res.Isolated {
				return fmt.Errorf("%w: the NetworkPolicies allow the flows above", ErrNotIsolated)
			}
			fmt.Fprintln(o.streams.Out, "Isolated.")
			return nil
		},
	}
}

func (o *options) gatherVerifyInput(ctx context.Context, env *v1alpha1.HealthEnvironment) (netpol.FenceInput, error) {
	ns := build.SiteNamespace(env, v1alpha1.SitePrimary)
	nsObj := &corev1.Namespace{}
	if err := o.client.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		return netpol.FenceInput{}, fmt.Errorf("reading namespace %s: %w", ns, err)
	}
	var pols networkingv1.NetworkPolicyList
	if err := o.client.List(ctx, &pols, client.InNamespace(ns)); err != nil {
		return netpol.FenceInput{}, fmt.Errorf("listing network policies in %s: %w", ns, err)
	}
	var pods corev1.PodList
	if err := o.client.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		return netpol.FenceInput{}, fmt.Errorf("listing pods in %s: %w", ns, err)
	}
	return netpol.NamespaceInput(nsObj, pols.Items, pods.Items, env.Spec.Isolation.ForensicsNamespaces()), nil
}

// confirm asks on a terminal for the environment's name before n evidence
// pods are deleted. Without a terminal it refuses: a script must say --yes.
func confirm(in io.Reader, terminal bool, prompt io.Writer, env string, n int) error {
	if !terminal {
		return usagef("purge-evidence deletes %d evidence pods irreversibly: pass --yes to confirm (or run it on a terminal to be asked); nothing deleted", n)
	}
	fmt.Fprintf(prompt, "This deletes the %d evidence pods above irreversibly. Type the environment's name (%s) to confirm: ", n, env)
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading the confirmation: %w", err)
	}
	if strings.TrimSpace(line) != env {
		return errors.New("not confirmed: nothing deleted")
	}
	return nil
}

// isTerminal says whether r is a terminal a person can answer on.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// purgeRefusal says why evidence of env must not be purged now, or "".
func purgeRefusal(env *v1alpha1.HealthEnvironment) string {
	if env.Spec.Isolation.Mode == v1alpha1.IsolationFenced {
		return fmt.Sprintf("HealthEnvironment %s is fenced: its evidence pods are under investigation and cannot be purged; restore it first (kubectl careplane restore %s)", env.Name, env.Name)
	}
	for _, t := range []string{v1alpha1.ConditionFenced, v1alpha1.ConditionRestoring} {
		for _, c := range env.Status.Conditions {
			if c.Type == t && c.Status == metav1.ConditionTrue {
				return fmt.Sprintf("HealthEnvironment %s is still %s (%s=True): wait until the restore completes before purging evidence", env.Name, strings.ToLower(t), t)
			}
		}
	}
	return ""
}
