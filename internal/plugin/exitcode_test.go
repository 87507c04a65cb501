package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/careplane/careplane/internal/preflight"
)

var henvs = schema.GroupResource{Group: "careplane.io", Resource: "healthenvironments"}

// guardrailDenial is what the API server answers when a careplane
// ValidatingAdmissionPolicy (reason: Forbidden) refuses a write.
func guardrailDenial() error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: 403, Reason: metav1.StatusReasonForbidden,
		Message: `healthenvironments.careplane.io "wales-111" is forbidden: ValidatingAdmissionPolicy 'careplane-isolation-guard' denied request: only members of careplane:incident-responders may change spec.isolation`,
	}}
}

func TestExitCode(t *testing.T) {
	notFound := apierrors.NewNotFound(henvs, "wales-111")
	forbidden := apierrors.NewForbidden(henvs, "wales-111", errors.New("RBAC: no rule"))
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, ExitOK},
		{"a plain error", errors.New("boom"), ExitError},
		{"a conflict", apierrors.NewConflict(henvs, "wales-111", errors.New("changed")), ExitError},
		{"connection refused", fmt.Errorf("reading HealthEnvironment x: %w", errors.New("dial tcp 127.0.0.1:1: connect: connection refused")), ExitError},
		{"usage", usagef("--reason is required"), ExitUsage},
		{"a selector that does not parse", usageError{fmt.Errorf("--selector %q is not a label selector", "a=(")}, ExitUsage},
		{"not found, said in words", withCause(notFound, "HealthEnvironment %q not found", "wales-111"), ExitNotFound},
		{"not found, wrapped", fmt.Errorf("reading: %w", notFound), ExitNotFound},
		{"no environment matches the selector", noMatch("region=mars"), ExitNotFound},
		{"RBAC forbidden", fmt.Errorf("listing HealthEnvironments: %w", forbidden), ExitForbidden},
		{"a guardrail's denial, its message verbatim", withCause(guardrailDenial(), "%s", "only members of ..."), ExitForbidden},
		{"unauthorized", apierrors.NewUnauthorized("token expired"), ExitForbidden},
		{"the wait timed out", withCause(context.DeadlineExceeded, "HealthEnvironment x not fenced within 2m0s"), ExitTimeout},
		{"the API server timed out", apierrors.NewTimeoutError("etcd slow", 1), ExitTimeout},
		{"the API server's request timeout", apierrors.NewServerTimeout(henvs, "get", 1), ExitTimeout},
		{"verify found a flow", fmt.Errorf("%w: the NetworkPolicies allow the flows above", ErrNotIsolated), ExitNotIsolated},
		{"restore blocked", withCause(ErrRestoreBlocked, "restore of x is blocked"), ExitRestoreBlocked},
		{"doctor: a check failed", doctorError(preflight.Report{Results: []preflight.Result{{Check: "leader", Status: preflight.Fail}, {Check: "crds", Status: preflight.Fail, Forbidden: true}}}), ExitPreflightFailed},
		{"doctor: only forbidden checks", doctorError(preflight.Report{Results: []preflight.Result{{Check: "leader", Status: preflight.Fail, Forbidden: true}, {Check: "network-policy", Status: preflight.Warn}}}), ExitForbidden},
		{"doctor: warnings only", doctorError(preflight.Report{Results: []preflight.Result{{Check: "network-policy", Status: preflight.Warn}}}), ExitOK},
		{"an aggregate (a slice type) does not panic", utilerrors.NewAggregate([]error{errors.New("a"), errors.New("b")}), ExitError},
		{"Ctrl-C is no timeout", fmt.Errorf("waiting: %w", context.Canceled), ExitError},
		{"a fleet: every failure forbidden", withCause(errors.Join(nil, guardrailDenial(), nil, forbidden), "fence failed for 2 of 4"), ExitForbidden},
		{"a fleet: failures of two kinds", withCause(errors.Join(guardrailDenial(), notFound), "fence failed for 2 of 2"), ExitError},
		{"fence: writes forbidden, nothing to wait for", errors.Join(withCause(guardrailDenial(), "denied"), nil), ExitForbidden},
		{"fence: one write refused, one wait timed out", errors.Join(guardrailDenial(), withCause(context.DeadlineExceeded, "not fenced")), ExitError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ExitCode(tt.err); got != tt.want {
				t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

// TestExitCodeOfFleetFence: the error forEach returns for a fleet keeps
// every failure as its cause.
func TestExitCodeOfFleetFence(t *testing.T) {
	o := &options{streams: genericiooptions.IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}}}
	err := o.forEach(context.Background(), []string{"a", "b", "c"}, 2, func(_ context.Context, n string) error {
		if n == "b" {
			return nil
		}
		return withCause(guardrailDenial(), "denied %s", n)
	})
	if got := ExitCode(err); got != ExitForbidden {
		t.Errorf("ExitCode(%v) = %d, want %d (forbidden)", err, got, ExitForbidden)
	}
}

// TestRunUsage: a wrong command line exits 2 and sends nothing; the
// kubeconfig names a server that does not answer, so anything sent would
// fail with 1 instead.
func TestRunUsage(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args    []string
		want    int
		wantErr string
	}{
		{[]string{"frobnicate"}, ExitUsage, `unknown command "frobnicate"`},
		{[]string{"status", "--no-such-flag"}, ExitUsage, "unknown flag: --no-such-flag"},
		{[]string{"status", "a", "b"}, ExitUsage, "accepts at most 1 arg(s)"},
		{[]string{"verify"}, ExitUsage, "accepts 1 arg(s), received 0"},
		{[]string{"fence", "wales-111"}, ExitUsage, "--reason is required"},
		{[]string{"fence", "--reason", "x"}, ExitUsage, "name one environment or pass --selector"},
		{[]string{"fence", "--selector", "a=(", "--reason", "x"}, ExitUsage, "is not a label selector"},
		{[]string{"fence", "--selector", "", "--reason", "x", "wales-111", "--dry-run"}, ExitError, "connection refused"},
		{[]string{"status", "-o", "xml"}, ExitUsage, `unable to match a printer suitable for the output format "xml"`},
		{[]string{"purge-evidence", "wales-111", "--dry-run", "--yes"}, ExitUsage, "pass --dry-run or --yes, not both"},
		{[]string{"status", "wales-111"}, ExitError, "connection refused"},
		{[]string{"doctor", "-o", "xml"}, ExitUsage, `-o "xml": doctor prints json or yaml`},
		{[]string{"doctor", "extra"}, ExitUsage, `unknown command "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			got := Run(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut},
				append(tt.args, "--kubeconfig", kubeconfig, "--request-timeout", "5s"))
			if got != tt.want || !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("exit %d, want %d; stderr %q, want it to contain %q", got, tt.want, errOut.String(), tt.wantErr)
			}
		})
	}
}
