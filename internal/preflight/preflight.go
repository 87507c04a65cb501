package preflight

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Status is a check's verdict.
type Status string

const (
	// Pass: the check saw what a working install has.
	Pass Status = "Pass"
	// Warn: careplane works, but something deserves a look, or the check
	// could not tell (for example an unknown network plugin).
	Warn Status = "Warn"
	// Fail: careplane is not installed or not working as it must; a fence
	// may not happen or may not hold.
	Fail Status = "Fail"
)

// DocsURL is where every remediation points: the preflight section of the
// operations guide, one anchor per check.
const DocsURL = "https://github.com/careplane/careplane/blob/main/docs/operations.md"

// Result is one check's outcome.
type Result struct {
	// Check is the check's name (crds, guardrails, ...).
	Check string `json:"check"`
	// Status is Pass, Warn or Fail.
	Status Status `json:"status"`
	// Message says what the check saw.
	Message string `json:"message"`
	// Remediation says what to do about a Warn or Fail, and links the docs.
	Remediation string `json:"remediation,omitempty"`
	// Forbidden is set when the API server refused the caller a request
	// the check needs: the check could not be made.
	Forbidden bool `json:"forbidden,omitempty"`
}

// Report is every check's outcome, in order.
type Report struct {
	// Namespace and Name are the install checked: its namespace and the
	// prefix of its objects' names.
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Results   []Result `json:"results"`
}

// Failed says whether any check failed.
func (r Report) Failed() bool {
	for _, c := range r.Results {
		if c.Status == Fail {
			return true
		}
	}
	return false
}

// OnlyForbidden says whether every failed check failed only because the
// caller was refused: nothing is known to be broken, the caller could not
// look.
func (r Report) OnlyForbidden() bool {
	failed := false
	for _, c := range r.Results {
		if c.Status == Fail {
			if !c.Forbidden {
				return false
			}
			failed = true
		}
	}
	return failed
}

// Options name the install to check.
type Options struct {
	// Namespace is the install's namespace (the Helm release's; config/
	// uses careplane-system).
	Namespace string
	// Name is the prefix of the install's object names: the chart's full
	// name (the release name, with -careplane appended unless it says
	// careplane), careplane for config/.
	Name string
	// NoLeaderElection says the install runs its manager without leader
	// election (the chart's leaderElection=false): there is no Lease to
	// check, and the leader check warns instead.
	NoLeaderElection bool
	// Now is the clock the leader's Lease is judged by.
	Now func() time.Time
}

// Defaults for Options: the install of config/ and of a release named
// careplane in careplane-system.
const (
	DefaultNamespace = "careplane-system"
	DefaultName      = "careplane"
	// LeaseName is the manager's leader election Lease
	// (cmd/manager's LeaderElectionID).
	LeaseName = "careplane.careplane.io"
)

// Clients are what the checks read through.
type Clients struct {
	// Client reads and creates (SubjectAccessReviews) objects; its scheme
	// must hold client-go's kinds.
	Client client.Client
	// Discovery tells which API resources the API server serves.
	Discovery discovery.DiscoveryInterface
}

// check is one named check.
type check struct {
	name string
	run  func(context.Context, Clients, Options) Result
}

var checks = []check{
	{"crds", checkCRDs},
	{"guardrails", checkGuardrails},
	{"guardrail-parameters", checkParameters},
	{"leader", checkLeader},
	{"manager-rbac", checkManagerRBAC},
	{"network-policy", checkNetworkPolicy},
}

// Run runs every check and reports them in order.
func Run(ctx context.Context, c Clients, o Options) Report {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := Report{Namespace: o.Namespace, Name: o.Name}
	for _, ch := range checks {
		res := ch.run(ctx, c, o)
		res.Check = ch.name
		r.Results = append(r.Results, res)
	}
	return r
}

// remedy is a remediation ending in the docs link of check's section.
func remedy(check, what string) string {
	return fmt.Sprintf("%s (%s#preflight-%s)", what, DocsURL, check)
}

// refused is the result of a check whose request the API server refused:
// forbidden or unauthorized, or nil.
func refused(check, what string, err error) *Result {
	if !apierrors.IsForbidden(err) && !apierrors.IsUnauthorized(err) {
		return nil
	}
	var status apierrors.APIStatus
	msg := err.Error()
	if errors.As(err, &status) && status.Status().Message != "" {
		msg = status.Status().Message
	}
	return &Result{
		Status:      Fail,
		Forbidden:   true,
		Message:     fmt.Sprintf("cannot check %s: %s", what, msg),
		Remediation: remedy(check, "run the preflight as an identity that may read what it checks (the chart's test ServiceAccount's ClusterRole lists it), e.g. a cluster admin"),
	}
}

// Painter colours a check's status word on a terminal; nil leaves it plain.
type Painter func(s Status, word string) string

// WriteText writes the report for a person: one line per check, and the
// message and remediation of each one that did not pass. paint, when not
// nil, colours the status words (all four letters wide, so the columns
// stay aligned).
func WriteText(w io.Writer, r Report, paint Painter) error {
	var b strings.Builder
	fmt.Fprintf(&b, "careplane preflight of %s/%s\n", r.Namespace, r.Name)
	width := 0
	for _, c := range r.Results {
		width = max(width, len(c.Check))
	}
	for _, c := range r.Results {
		word := fmt.Sprintf("%-4s", strings.ToUpper(string(c.Status)))
		if paint != nil {
			word = paint(c.Status, word)
		}
		fmt.Fprintf(&b, "%s  %-*s  %s\n", word, width, c.Check, c.Message)
		if c.Status != Pass && c.Remediation != "" {
			fmt.Fprintf(&b, "      %-*s  -> %s\n", width, "", c.Remediation)
		}
	}
	fail, warn := 0, 0
	for _, c := range r.Results {
		switch c.Status {
		case Fail:
			fail++
		case Warn:
			warn++
		}
	}
	fmt.Fprintf(&b, "%d checks: %d passed, %d warnings, %d failed\n", len(r.Results), len(r.Results)-fail-warn, warn, fail)
	_, err := io.WriteString(w, b.String())
	return err
}
