//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// pluginRunner runs the kubectl-careplane binary against the test cluster.
type pluginRunner struct {
	bin string
}

func buildPlugin(t *testing.T) pluginRunner {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kubectl-careplane")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/kubectl-careplane").CombinedOutput()
	if err != nil {
		t.Fatalf("building kubectl-careplane: %v\n%s", err, out)
	}
	return pluginRunner{bin: bin}
}

// run runs the plugin with --kubeconfig and returns its combined output and
// exit code.
func (p pluginRunner) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return runForExit(t, exec.Command(p.bin, append(args, "--kubeconfig", os.Getenv("KUBECONFIG"))...), "kubectl careplane "+strings.Join(args, " "))
}

// runSplit runs the plugin with --kubeconfig and returns its standard
// output and standard error apart, and its exit code.
func (p pluginRunner) runSplit(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(p.bin, append(args, "--kubeconfig", os.Getenv("KUBECONFIG"))...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("kubectl careplane %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), stdout.String(), stderr.String())
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &exit):
		return stdout.String(), stderr.String(), exit.ExitCode()
	default:
		t.Fatalf("running kubectl-careplane %v: %v", args, err)
		return "", "", -1
	}
}

// exits runs the plugin and fails the test unless it exits with code and
// its output contains subs.
func (p pluginRunner) exits(t *testing.T, code int, args []string, subs ...string) string {
	t.Helper()
	out, got := p.run(t, args...)
	if got != code {
		t.Errorf("kubectl careplane %s: exit %d, want %d\n%s", strings.Join(args, " "), got, code, out)
	}
	mustContain(t, "kubectl careplane "+strings.Join(args, " "), out, subs...)
	return out
}

// nobodyArgs impersonate an authenticated user with no RBAC rights and no
// responder group.
var nobodyArgs = []string{"--as=e2e-nobody", "--as-group=system:authenticated"}

// Exit codes of kubectl careplane (internal/plugin/exitcode.go), spelled
// out: they are an interface scripts rely on.
const (
	exitNotFound    = 3
	exitForbidden   = 4
	exitTimeout     = 5
	exitNotIsolated = 6
	exitUsage       = 2
)

// ok runs the plugin and fails the test unless it succeeds.
func (p pluginRunner) ok(t *testing.T, args ...string) string {
	t.Helper()
	out, code := p.run(t, args...)
	if code != 0 {
		t.Fatalf("kubectl careplane %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// asResponder runs the plugin as an incident responder (the same
// impersonation kubectl's responderArgs use) and fails unless it succeeds.
func (p pluginRunner) asResponder(t *testing.T, args ...string) string {
	t.Helper()
	return p.ok(t, append(append([]string{}, args...), responderArgs...)...)
}

// planLists reports whether the plan table in out has a row with these
// ACTION, KIND, NAMESPACE and NAME cells.
func planLists(out, verb, kind, namespace, name string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && f[1] == verb && f[2] == kind && f[3] == namespace && f[4] == name {
			return true
		}
	}
	return false
}

func mustContain(t *testing.T, what, out string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(out, s) {
			t.Errorf("%s: output lacks %q:\n%s", what, s, out)
		}
	}
}

// TestPlugin drives kubectl-careplane through a responder's incident: status,
// a dry run that changes nothing, a fence (refused without the responder
// group, with the guardrail's own message), verify, restore, revisions,
// purging the evidence, and a fence of several environments by selector
// through a FenceRequest (refused without the responder group; handed over
// to the environments' specs; none left behind when nothing matched).
func TestPlugin(t *testing.T) {
	ctx := context.Background()
	plugin := buildPlugin(t)
	a, b := uniqueName("plug-a"), uniqueName("plug-b")
	run := uniqueName("run")
	for _, n := range []string{a, b} {
		applyFenceEnv(t, n)
	}
	kubectl(t, "label", "henv", a, b, "careplane-e2e-plugin="+run)
	envA := waitReady(t, a, 2*time.Minute)
	waitReady(t, b, 2*time.Minute)
	eventually(t, 15*time.Second, a+" known-good revision", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: a}, envA); err != nil {
			return false, "", err
		}
		return envA.Status.KnownGoodRevision != "", "none yet", nil
	})
	nsA := a + "-primary"

	t.Run("status", func(t *testing.T) {
		out := plugin.ok(t, "status", a)
		mustContain(t, "status "+a, out, "NAME", "TENANT", "MODE", "ACTIVE", "SERVICES", "READY", "KNOWN-GOOD", "LAST-INCIDENT",
			a, "Fence test "+a, "None", "Primary", "2/2", "True", envA.Status.KnownGoodRevision)
		// The whole story of one environment.
		mustContain(t, "status "+a, out, "Conditions:", "Ready   ", "Available", "Fence:", "Held by:", "nothing: not fenced",
			"Last verification:", "Sites:", "Active:", "Primary", "Services:", "call-handling", "Incidents:", "Events (newest")
		all := statusOfAll(t, plugin, a, b)
		mustContain(t, "status", all, a, b)
		if strings.Contains(out+all, "\x1b[") {
			t.Errorf("status piped to a file is coloured:\n%q", out+all)
		}
	})

	t.Run("colour on a terminal, not with NO_COLOR", func(t *testing.T) {
		onTTY := func(env ...string) string {
			cmd := exec.Command(plugin.bin, "status", a)
			cmd.Env = append(os.Environ(), append([]string{"TERM=xterm"}, env...)...)
			f, err := pty.Start(cmd)
			if err != nil {
				t.Fatalf("starting the plugin on a pseudo-terminal: %v", err)
			}
			out, _ := io.ReadAll(f) // EIO once the plugin exits
			_ = f.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("status %s on a terminal: %v\n%s", a, err, out)
			}
			return string(out)
		}
		// Ready True is green; every condition word is painted.
		if out := onTTY("NO_COLOR="); !strings.Contains(out, "\x1b[32mTrue\x1b[0m") {
			t.Errorf("status on a terminal is not coloured:\n%q", out)
		}
		if out := onTTY("NO_COLOR=1"); strings.Contains(out, "\x1b[") || !strings.Contains(out, "Conditions:") {
			t.Errorf("status on a terminal with NO_COLOR=1 is coloured (or empty):\n%q", out)
		}
	})

	t.Run("exit codes: not found, forbidden, usage", func(t *testing.T) {
		plugin.exits(t, exitNotFound, []string{"status", "no-such-env"}, `HealthEnvironment "no-such-env" not found`)
		plugin.exits(t, exitNotFound, []string{"verify", "no-such-env"}, `HealthEnvironment "no-such-env" not found`)
		plugin.exits(t, exitNotFound, append([]string{"fence", "no-such-env", "--reason", "x"}, responderArgs...), `HealthEnvironment "no-such-env" not found`)
		// RBAC: an authenticated user with no rights.
		plugin.exits(t, exitForbidden, append([]string{"status", a}, nobodyArgs...), `User "e2e-nobody" cannot get resource "healthenvironments"`)
		plugin.exits(t, exitForbidden, append([]string{"status"}, nobodyArgs...), `cannot list resource "healthenvironments"`)
		plugin.exits(t, exitUsage, []string{"status", a, b}, "accepts at most 1 arg(s)")
		plugin.exits(t, exitUsage, []string{"fence", a}, "--reason is required")
		plugin.exits(t, exitUsage, []string{"status", "-o", "xml"}, "xml")
	})

	t.Run("-o json and yaml round-trip through the API types", func(t *testing.T) {
		// The operator may write the status between the two reads: read
		// again until both saw the same resourceVersion.
		eventually(t, 30*time.Second, "status -o json equal to the object read", func(ctx context.Context) (bool, string, error) {
			stdout, _, code := plugin.runSplit(t, "status", a, "-o", "json")
			if code != 0 {
				return false, "", fmt.Errorf("status -o json: exit %d", code)
			}
			var got v1alpha1.HealthEnvironment
			if err := strictJSON(stdout, &got); err != nil {
				return false, "", err
			}
			want := &v1alpha1.HealthEnvironment{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: a}, want); err != nil {
				return false, "", err
			}
			if got.ResourceVersion != want.ResourceVersion {
				return false, "resourceVersion " + got.ResourceVersion + " != " + want.ResourceVersion, nil
			}
			if got.APIVersion != v1alpha1.GroupVersion.String() || got.Kind != "HealthEnvironment" || len(got.ManagedFields) != 0 {
				return false, "", fmt.Errorf("status -o json: apiVersion %q, kind %q, %d managedFields; want careplane.io/v1alpha1 HealthEnvironment without them",
					got.APIVersion, got.Kind, len(got.ManagedFields))
			}
			want.ManagedFields, want.TypeMeta = nil, got.TypeMeta
			if !equality.Semantic.DeepEqual(&got, want) {
				return false, "", fmt.Errorf("status -o json decodes to\n%+v\nthe API server holds\n%+v", got, want)
			}
			return true, "", nil
		})

		stdout, _, code := plugin.runSplit(t, "status", "-o", "yaml")
		var list v1alpha1.HealthEnvironmentList
		if err := strictYAML(stdout, &list); code != 0 || err != nil {
			t.Fatalf("status -o yaml: exit %d, %v", code, err)
		}
		names := map[string]v1alpha1.HealthEnvironment{}
		for _, e := range list.Items {
			names[e.Name] = e
		}
		if list.Kind != "HealthEnvironmentList" || names[a].Kind != "HealthEnvironment" || names[b].Spec.Tenant.DisplayName != "Fence test "+b {
			t.Errorf("status -o yaml: kind %q, items %v", list.Kind, names)
		}

		stdout, _, code = plugin.runSplit(t, "revisions", a, "-o", "json")
		var revs appsv1.ControllerRevisionList
		if err := strictJSON(stdout, &revs); code != 0 || err != nil {
			t.Fatalf("revisions -o json: exit %d, %v", code, err)
		}
		if len(revs.Items) == 0 || revs.Items[0].Namespace != a || revs.Items[0].Kind != "ControllerRevision" ||
			!slices.ContainsFunc(revs.Items, func(r appsv1.ControllerRevision) bool { return r.Name == envA.Status.KnownGoodRevision }) {
			t.Errorf("revisions -o json: %d items, want the known-good %s among them", len(revs.Items), envA.Status.KnownGoodRevision)
		}
		if name := strings.TrimSpace(plugin.ok(t, "status", a, "-o", "name")); name != "healthenvironment.careplane.io/"+a {
			t.Errorf("status -o name = %q", name)
		}
	})

	t.Run("completion lists the environments", func(t *testing.T) {
		// The word completed comes last: the cluster is the one
		// KUBECONFIG names.
		complete := func(args ...string) string {
			out, err := exec.Command(plugin.bin, append([]string{"__complete"}, args...)...).Output()
			if err != nil {
				t.Fatalf("kubectl-careplane __complete %v: %v", args, err)
			}
			return string(out)
		}
		out := complete("status", "plug-")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if !slices.Contains(lines, a) || !slices.Contains(lines, b) || lines[len(lines)-1] != ":4" {
			t.Errorf("completion of status plug-: %q, want %s and %s, then :4 (no file completion)", lines, a, b)
		}
		if out := complete("verify", a, ""); strings.Contains(out, b) {
			t.Errorf("completion of a second argument of verify offers %s:\n%s", b, out)
		}
	})

	t.Run("fence --dry-run changes nothing and lists the plan", func(t *testing.T) {
		before := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: a}, before); err != nil {
			t.Fatal(err)
		}
		policiesBefore := policyNames(t, nsA)
		out := plugin.asResponder(t, "fence", a, "--reason", "plugin dry run", "--ticket", "INC-DRY", "--dry-run")
		mustContain(t, "dry run", out, "Server-side dry run", "careplane-fence", "ServiceAccount", "call-handling.db-password",
			"scale-to-0", "call-handling-careplane", "careplane.io/evidence=INC-DRY")
		for _, p := range policiesBefore {
			if !planLists(out, "delete", "NetworkPolicy", nsA, p) {
				t.Errorf("the plan does not list policy %s for deletion:\n%s", p, out)
			}
		}
		if !planLists(out, "write-whole", "NetworkPolicy", nsA, "careplane-fence") {
			t.Errorf("the plan does not list the deny policy careplane-fence:\n%s", out)
		}
		if len(policiesBefore) < 3 {
			t.Errorf("the primary has only policies %v; want default-deny, allow-dns and the services'", policiesBefore)
		}
		after := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: a}, after); err != nil {
			t.Fatal(err)
		}
		if after.ResourceVersion != before.ResourceVersion || after.Spec.Isolation.Mode == v1alpha1.IsolationFenced {
			t.Errorf("the dry run changed %s: resourceVersion %s -> %s, mode %q", a, before.ResourceVersion, after.ResourceVersion, after.Spec.Isolation.Mode)
		}
		if got := policyNames(t, nsA); strings.Join(got, ",") != strings.Join(policiesBefore, ",") {
			t.Errorf("policies changed by the dry run: %v -> %v", policiesBefore, got)
		}
	})

	t.Run("fence without the responder group is refused with the guardrail's message", func(t *testing.T) {
		out, code := plugin.run(t, "fence", a, "--reason", "not a responder", "--timeout", "10s")
		if code != exitForbidden {
			t.Fatalf("fence by a non-responder: exit %d, want %d (forbidden)\n%s", code, exitForbidden, out)
		}
		mustContain(t, "non-responder fence", out, "only members of "+v1alpha1.DefaultResponderGroup+" may change spec.isolation of HealthEnvironment "+a)
	})

	t.Run("fence as a responder waits for Fenced=True", func(t *testing.T) {
		out := plugin.asResponder(t, "fence", a, "--reason", "ransomware indicators", "--ticket", "INC-P1", "--timeout", "60s")
		mustContain(t, "fence", out, "fence requested", a+" fenced after")
		e := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: a}, e); err != nil {
			t.Fatal(err)
		}
		if c := meta.FindStatusCondition(e.Status.Conditions, v1alpha1.ConditionFenced); c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("Fenced = %+v after the plugin returned", c)
		}
		if e.Spec.Isolation.Ticket != "INC-P1" || e.Spec.Isolation.Reason != "ransomware indicators" {
			t.Errorf("spec.isolation = %+v", e.Spec.Isolation)
		}
		managed := false
		for _, m := range e.ManagedFields {
			managed = managed || (m.Manager == "kubectl-careplane" && m.Operation == metav1.ManagedFieldsOperationApply)
		}
		if !managed {
			t.Errorf("no server-side apply by field manager kubectl-careplane in %+v", e.ManagedFields)
		}
		// kubectl get henv shows the outcome, not only the spec.
		eventually(t, 30*time.Second, "kubectl get henv "+a+" Fenced and Verified True", func(context.Context) (bool, string, error) {
			out, err := kubectlOutput("get", "henv", a)
			if err != nil {
				return false, "", fmt.Errorf("kubectl get henv %s: %w\n%s", a, err, out)
			}
			return getHenvColumns(out)["VERIFIED"] == "True", out, nil
		})
		cols := getHenvColumns(kubectl(t, "get", "henv", a))
		if cols["MODE"] != "Fenced" || cols["FENCED"] != "True" || cols["VERIFIED"] != "True" || cols["NAME"] != a {
			t.Errorf("kubectl get henv %s: %v, want MODE Fenced, FENCED True, VERIFIED True", a, cols)
		}
		cols = getHenvColumns(kubectl(t, "get", "henv", b))
		if cols["MODE"] != "None" || cols["FENCED"] != "False" || cols["VERIFIED"] != "Unknown" {
			t.Errorf("kubectl get henv %s: %v, want MODE None, FENCED False, VERIFIED Unknown (nothing to verify)", b, cols)
		}
		// status tells the fence's story, and exits 0: it is isolated.
		out = plugin.ok(t, "status", a)
		mustContain(t, "status of fenced "+a, out, `Held by:              spec.isolation (ticket INC-P1, reason "ransomware indicators", workloads Preserve)`,
			"Fenced at:", "Credentials revoked:", "Evidence pods:", "IsolationVerified=True (NoAllowedFlows)", "INC-P1", "FenceComplete")
	})

	t.Run("verify", func(t *testing.T) {
		out := plugin.ok(t, "verify", a)
		mustContain(t, "verify "+a, out, "No NetworkPolicy allows a flow into or out of a fenced pod.", "Isolated.")
		out, code := plugin.run(t, "verify", b)
		if code != exitNotIsolated {
			t.Errorf("verify of unfenced %s: exit %d, want %d (not isolated)\n%s", b, code, exitNotIsolated, out)
		}
		mustContain(t, "verify "+b, out, "DIRECTION", "not isolated")
	})

	t.Run("purge-evidence is refused while fenced", func(t *testing.T) {
		out, code := plugin.run(t, append([]string{"purge-evidence", a}, responderArgs...)...)
		if code == 0 {
			t.Fatalf("purge-evidence of a fenced environment succeeded:\n%s", out)
		}
		mustContain(t, "purge while fenced", out, "is fenced", "restore it first")
		if len(evidencePods(t, nsA)) == 0 {
			t.Errorf("no evidence pods in %s", nsA)
		}
	})

	t.Run("revisions", func(t *testing.T) {
		out := plugin.ok(t, "revisions", a)
		mustContain(t, "revisions", out, "NAME", "KNOWN-GOOD")
		found := false
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			found = found || (len(f) == 4 && f[0] == "*" && f[1] == envA.Status.KnownGoodRevision)
		}
		if !found {
			t.Errorf("revisions does not mark %s as known-good:\n%s", envA.Status.KnownGoodRevision, out)
		}
	})

	t.Run("restore waits for Ready and the fence lifted", func(t *testing.T) {
		// A wait shorter than the restore: the change is written, and the
		// plugin says it timed out.
		plugin.exits(t, exitTimeout, append([]string{"restore", a, "--revision", envA.Status.KnownGoodRevision, "--timeout", "100ms"}, responderArgs...),
			"restore requested", "not restored within 100ms")
		out := plugin.asResponder(t, "restore", a, "--revision", envA.Status.KnownGoodRevision, "--timeout", "90s")
		mustContain(t, "restore", out, "restore requested", a+" restored after")
		e := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: a}, e); err != nil {
			t.Fatal(err)
		}
		if n := len(e.Status.Incidents); n != 1 || e.Status.Incidents[0].Ticket != "INC-P1" || e.Status.Incidents[0].RestoredFrom != envA.Status.KnownGoodRevision {
			t.Errorf("incidents = %+v", e.Status.Incidents)
		}
		if e.Spec.Isolation.Reason != "" || e.Spec.Isolation.Mode != v1alpha1.IsolationNone {
			t.Errorf("spec.isolation after restore = %+v; want mode None and the fence's reason gone", e.Spec.Isolation)
		}
		mustContain(t, "status after restore", plugin.ok(t, "status", a), "INC-P1 restored")
	})

	t.Run("purge-evidence --dry-run lists exactly the evidence pods and deletes nothing", func(t *testing.T) {
		pods := evidencePods(t, nsA)
		if len(pods) == 0 {
			t.Fatalf("no evidence pods in %s", nsA)
		}
		out := plugin.asResponder(t, "purge-evidence", a, "--dry-run")
		if got := strings.Count(out, " would be deleted (evidence INC-P1; server-side dry run)"); got != len(pods) {
			t.Errorf("the dry run lists %d pods, want the %d evidence pods:\n%s", got, len(pods), out)
		}
		for _, p := range pods {
			mustContain(t, "dry run", out, "pod/"+p.Name+" would be deleted")
		}
		mustContain(t, "dry run", out, "Dry run: nothing deleted.")
		if left := evidencePods(t, nsA); len(left) != len(pods) {
			t.Errorf("the dry run deleted evidence: %d pods left of %d", len(left), len(pods))
		}
	})

	t.Run("purge-evidence without a terminal and without --yes deletes nothing", func(t *testing.T) {
		n := len(evidencePods(t, nsA))
		plugin.exits(t, exitUsage, append([]string{"purge-evidence", a}, responderArgs...), "pass --yes to confirm", "nothing deleted")
		if left := len(evidencePods(t, nsA)); left != n {
			t.Errorf("evidence deleted without confirmation: %d pods left of %d", left, n)
		}
	})

	t.Run("purge-evidence", func(t *testing.T) {
		n := len(evidencePods(t, nsA))
		out := plugin.asResponder(t, "purge-evidence", a, "--yes")
		if got := strings.Count(out, " deleted (evidence INC-P1)"); got != n || n == 0 {
			t.Errorf("purge-evidence deleted %d pods, want the %d evidence pods:\n%s", got, n, out)
		}
		eventually(t, 30*time.Second, "evidence pods gone", func(ctx context.Context) (bool, string, error) {
			left := len(evidencePods(t, nsA))
			return left == 0, fmt.Sprintf("%d left", left), nil
		})
	})

	selector := "careplane-e2e-plugin=" + run
	t.Run("fence --selector without the responder group is refused with the guard's message, and creates nothing", func(t *testing.T) {
		out, code := plugin.run(t, "fence", "--selector", selector, "--reason", "not a responder", "--timeout", "10s")
		if code == 0 {
			t.Fatalf("fence --selector by a non-responder succeeded:\n%s", out)
		}
		// No fallback to spec writes: the guard's denial is the answer.
		mustContain(t, "non-responder fence --selector", out, "creating the FenceRequest:",
			"only members of "+v1alpha1.DefaultResponderGroup+" may create a FenceRequest")
		if got := fenceRequestsOf(t, selector); len(got) != 0 {
			t.Errorf("FenceRequests %v exist after the refused fence", fenceRequestNames(got))
		}
		if mode := guardMode(t, b); mode != v1alpha1.IsolationNone {
			t.Errorf("%s has mode %s after the refused fence, want None", b, mode)
		}
	})

	t.Run("fence --selector fences every matching environment through a FenceRequest", func(t *testing.T) {
		out := plugin.asResponder(t, "fence", "--selector", selector, "--reason", "supplier breach", "--ticket", "INC-P2", "--stop", "--timeout", "60s")
		mustContain(t, "fence --selector", out, "FenceRequest fence-inc-p2-", "deny-all policy in place for 2 of 2 environments",
			a+" fenced after", b+" fenced after")
		reqs := fenceRequestsOf(t, selector)
		if len(reqs) != 1 {
			t.Fatalf("FenceRequests matching %s: %v, want the one the plugin created", selector, fenceRequestNames(reqs))
		}
		fr := reqs[0]
		t.Cleanup(func() { deleteFenceRequest(t, fr.Name) })
		want := v1alpha1.FenceRequestSpec{
			Selector: v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"careplane-e2e-plugin": v1alpha1.LabelValue(run)}},
			Reason:   "supplier breach", Ticket: "INC-P2", Workloads: v1alpha1.WorkloadsStop,
		}
		if !strings.HasPrefix(fr.Name, "fence-inc-p2-") || !reflect.DeepEqual(fr.Spec, want) {
			t.Errorf("FenceRequest %s spec %+v, want fence-inc-p2-* with %+v", fr.Name, fr.Spec, want)
		}
		envs := []string{a, b}
		slices.Sort(envs)
		if !slices.Equal(fr.Status.Environments, envs) || fr.Status.Matched != 2 || fr.Status.MatchedAt == nil {
			t.Errorf("FenceRequest %s matched %d %v at %v, want %v", fr.Name, fr.Status.Matched, fr.Status.Environments, fr.Status.MatchedAt, envs)
		}
		if !meta.IsStatusConditionTrue(fr.Status.Conditions, v1alpha1.ConditionDenyPoliciesInPlace) || fr.Status.DenyPolicies != 2 {
			t.Errorf("FenceRequest %s: %d deny policies, conditions %+v", fr.Name, fr.Status.DenyPolicies, fr.Status.Conditions)
		}
		// The plugin wrote both specs: the request hands both over, holds
		// none, and lets go of its finalizer.
		eventually(t, 30*time.Second, "FenceRequest "+fr.Name+" Complete", func(ctx context.Context) (bool, string, error) {
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: fr.Name}, &fr); err != nil {
				return false, "", err
			}
			c := meta.FindStatusCondition(fr.Status.Conditions, v1alpha1.ConditionComplete)
			done := c != nil && c.Status == metav1.ConditionTrue && c.Reason == v1alpha1.ReasonHandedOver &&
				len(fr.Status.Holding) == 0 && fr.Status.HoldingCount == 0 && len(fr.Finalizers) == 0
			return done, fmt.Sprintf("Complete %+v, holding %v, finalizers %v", c, fr.Status.Holding, fr.Finalizers), nil
		})
		for _, n := range envs {
			e := &v1alpha1.HealthEnvironment{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: n}, e); err != nil {
				t.Fatal(err)
			}
			c := meta.FindStatusCondition(e.Status.Conditions, v1alpha1.ConditionFenced)
			if c == nil || c.Status != metav1.ConditionTrue || e.Spec.Isolation.Mode != v1alpha1.IsolationFenced ||
				e.Spec.Isolation.Workloads != v1alpha1.WorkloadsStop || e.Spec.Isolation.Ticket != "INC-P2" || e.Spec.Isolation.Reason != "supplier breach" {
				t.Errorf("%s after fence --selector: Fenced %+v, isolation %+v", n, c, e.Spec.Isolation)
			}
			if st := e.Status.Isolation; st == nil || st.Ticket != "INC-P2" {
				t.Errorf("%s: status.isolation %+v, want the fence of INC-P2", n, st)
			} else if st.Request != "" && st.Request != fr.Name {
				t.Errorf("%s: status.isolation.request %q, want %s (or none, had its spec said Fenced first)", n, st.Request, fr.Name)
			}
			if !slices.Contains(policyNames(t, n+"-primary"), "careplane-fence") {
				t.Errorf("%s has no deny-all policy careplane-fence", n)
			}
		}
		// status shows the environments fenced, and no request holding them.
		status := statusOfAll(t, plugin, a, b)
		mustContain(t, "status after fence --selector", status, "INC-P2 open")
		if strings.Contains(status, "FenceRequest "+fr.Name+" (INC-P2) still holds") {
			t.Errorf("status lists %s as holding fences after it completed:\n%s", fr.Name, status)
		}
	})

	t.Run("fence --selector matching nothing fences nothing and leaves no FenceRequest", func(t *testing.T) {
		none := "careplane-e2e-plugin=none-" + run
		if out, code := plugin.run(t, append([]string{"fence", "--selector", none, "--reason", "x"}, responderArgs...)...); code != exitNotFound ||
			!strings.Contains(out, `no HealthEnvironment matches selector "`+none+`": nothing fenced`) {
			t.Errorf("fence of an empty selection: exit %d\n%s", code, out)
		}
		eventually(t, 30*time.Second, "the empty FenceRequest deleted", func(context.Context) (bool, string, error) {
			left := fenceRequestsOf(t, none)
			return len(left) == 0, fmt.Sprintf("left: %v", fenceRequestNames(left)), nil
		})
	})
}

// statusOfAll runs status of every environment and fails the test unless
// it succeeds, or exits 6 (not isolated) for environments other than
// mine: leftovers of other tests may be under way.
func statusOfAll(t *testing.T, plugin pluginRunner, mine ...string) string {
	t.Helper()
	stdout, stderr, code := plugin.runSplit(t, "status")
	switch code {
	case 0:
	case exitNotIsolated:
		for _, n := range mine {
			if strings.Contains(stderr, "HealthEnvironment "+n+" ") {
				t.Errorf("status: %s not isolated:\n%s", n, stderr)
			}
		}
	default:
		t.Errorf("status: exit %d\n%s", code, stderr)
	}
	return stdout
}

// getHenvColumns parses the one row of kubectl get henv NAME into its
// columns by header. Cells are cut at the headers' positions, as kubectl
// aligns them: a cell may be empty (ACTIVE when no site serves) or hold
// spaces (TENANT).
func getHenvColumns(out string) map[string]string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 2 {
		return nil
	}
	header, row := lines[0], lines[1]
	var starts []int
	for i := range header {
		if header[i] != ' ' && (i == 0 || header[i-1] == ' ') {
			starts = append(starts, i)
		}
	}
	cols := map[string]string{}
	for k, st := range starts {
		end := len(header)
		if k+1 < len(starts) {
			end = starts[k+1]
		}
		name := strings.TrimSpace(header[st:end])
		if k+1 == len(starts) {
			end = len(row)
		}
		if st < len(row) {
			cols[name] = strings.TrimSpace(row[st:min(end, len(row))])
		} else {
			cols[name] = ""
		}
	}
	return cols
}

// strictJSON decodes s into obj, refusing fields the API types lack.
func strictJSON(s string, obj any) error {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	return dec.Decode(obj)
}

// strictYAML decodes YAML s into obj as strictJSON does.
func strictYAML(s string, obj any) error {
	j, err := yaml.ToJSON([]byte(s))
	if err != nil {
		return err
	}
	return strictJSON(string(j), obj)
}

// fenceRequestsOf lists the FenceRequests whose selector is exactly the
// one label selector key=value.
func fenceRequestsOf(t *testing.T, selector string) []v1alpha1.FenceRequest {
	t.Helper()
	key, value, _ := strings.Cut(selector, "=")
	var list v1alpha1.FenceRequestList
	if err := k8sClient.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	var out []v1alpha1.FenceRequest
	for _, fr := range list.Items {
		sel := fr.Spec.Selector
		if len(sel.MatchLabels) == 1 && len(sel.MatchExpressions) == 0 && string(sel.MatchLabels[key]) == value {
			out = append(out, fr)
		}
	}
	return out
}

func fenceRequestNames(reqs []v1alpha1.FenceRequest) []string {
	var names []string
	for _, fr := range reqs {
		names = append(names, fr.Name)
	}
	return names
}

// deleteFenceRequest deletes FenceRequest name as a responder (the
// fence-request guard refuses anyone else), and does not wait: a request
// still holding environments stays until their specs say Fenced.
func deleteFenceRequest(t *testing.T, name string) {
	t.Helper()
	fr := &v1alpha1.FenceRequest{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := responderClient(t).Delete(context.Background(), fr); client.IgnoreNotFound(err) != nil {
		t.Errorf("deleting FenceRequest %s: %v", name, err)
	}
}
