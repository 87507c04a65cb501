package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/careplane/careplane/controllers"
	"github.com/careplane/careplane/internal/preflight"
)

// runPreflight is `manager preflight`: the checks of internal/preflight,
// as the chart's helm test pod runs them (in-cluster, as its own
// ServiceAccount) and as `kubectl careplane doctor` runs them from a
// workstation. It exits 0 when no check failed (warnings included), 1
// when one did, 2 on a wrong command line.
func runPreflight(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("preflight", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ns := fs.String("namespace", preflight.DefaultNamespace, "The namespace careplane is installed in (the Helm release's).")
	name := fs.String("name", preflight.DefaultName, "The prefix of the install's object names: the chart's full name.")
	output := fs.String("output", "", "json prints the report as JSON; the default is a human-readable report.")
	leaderElection := fs.Bool("leader-election", true, "Whether the manager runs with leader election; false skips the leader check (there is no Lease).")
	timeout := fs.Duration("timeout", time.Minute, "How long the checks may take in all.")
	kubeconfig := fs.String("kubeconfig", "", "A kubeconfig file; the default is the pod's ServiceAccount (in-cluster) or $KUBECONFIG.")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || (*output != "" && *output != "json") {
		fmt.Fprintln(stderr, "usage: manager preflight [--namespace NS] [--name NAME] [--output json] [--kubeconfig FILE]")
		return 2
	}
	if *kubeconfig != "" {
		// controller-runtime's config loader reads the flag's value from
		// here (it registers --kubeconfig on the main flag set only).
		_ = os.Setenv("KUBECONFIG", *kubeconfig)
	}
	cfg, err := config.GetConfig()
	if err != nil {
		fmt.Fprintln(stderr, "Error: loading the client configuration:", err)
		return 1
	}
	// Over a hundred SubjectAccessReviews; client-go's default of 5 per
	// second would take most of a minute.
	cfg.QPS, cfg.Burst = 100, 200
	c, err := client.New(cfg, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		fmt.Fprintln(stderr, "Error: creating a client:", err)
		return 1
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "Error: creating a client:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	report := preflight.Run(ctx, preflight.Clients{Client: c, Discovery: disc}, preflight.Options{Namespace: *ns, Name: *name, NoLeaderElection: !*leaderElection})
	if *output == "json" {
		b, _ := json.MarshalIndent(report, "", "  ")
		_, err = fmt.Fprintf(stdout, "%s\n", b)
	} else {
		err = preflight.WriteText(stdout, report, nil)
	}
	if err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		return 1
	}
	if report.Failed() {
		fmt.Fprintln(stderr, "Error: preflight failed")
		return 1
	}
	return 0
}
