//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/internal/plugin"
	"github.com/careplane/careplane/internal/preflight"
)

// doctorLeaseArgs run the suite's operator with leader election, as the
// chart does, with a short lease so that a dead leader's Lease expires
// within seconds.
var doctorLeaseArgs = []string{"--leader-elect", "--leader-election-namespace=" + leaseNamespace,
	"--leader-election-lease-duration=4s", "--leader-election-renew-deadline=3s", "--leader-election-retry-period=1s"}

// TestDoctor runs `kubectl careplane doctor` against the e2e cluster: it
// passes on the suite's install (config/ with the guardrails, the operator
// elected leader), and it fails, naming what is wrong and with its exit
// status, when a guardrail binding is deleted, when the parameter
// ConfigMap is deleted, when no leader holds the Lease, and when the caller
// may not read what it checks. Each break is mended before the next.
func TestDoctor(t *testing.T) {
	p := buildPlugin(t)
	doctorElectLeader(t)

	t.Run("passes on a working install", func(t *testing.T) {
		out, code := p.run(t, "doctor")
		if code != plugin.ExitOK {
			t.Fatalf("doctor exited %d, want 0", code)
		}
		for _, want := range []string{
			"PASS  crds                  FenceRequest, HealthEnvironment served at careplane.io/v1alpha1",
			"PASS  guardrails            31 admission policies and bindings of careplane present and bound",
			"PASS  guardrail-parameters  ConfigMap careplane-system/careplane-guardrails: responder groups careplane:incident-responders",
			"PASS  leader                held by ",
			"PASS  manager-rbac          system:serviceaccount:careplane-system:careplane-manager may do all ",
			// kwok runs no network plugin, and doctor says it cannot tell.
			"WARN  network-policy        unknown: no known network plugin's DaemonSet found",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("doctor's report lacks %q", want)
			}
		}
		// -o json is the report, for scripts.
		stdout, _, code := p.runSplit(t, "doctor", "-o", "json")
		var r preflight.Report
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatalf("doctor -o json: %v", err)
		}
		if code != plugin.ExitOK || len(r.Results) != 6 || r.Failed() || r.Results[3].Check != "leader" || r.Results[3].Status != preflight.Pass {
			t.Errorf("doctor -o json: exit %d, report %+v", code, r)
		}
	})

	t.Run("a deleted guardrail binding fails, named", func(t *testing.T) {
		t.Cleanup(func() { doctorMendGuardrails(t, p) })
		kubectl(t, "delete", "validatingadmissionpolicybinding", "careplane-isolation-guard")
		doctorFails(t, p, plugin.ExitPreflightFailed,
			"FAIL  guardrails            ValidatingAdmissionPolicyBinding careplane-isolation-guard is missing")
	})

	t.Run("a deleted parameter ConfigMap fails", func(t *testing.T) {
		t.Cleanup(func() { doctorMendGuardrails(t, p) })
		kubectl(t, "delete", "configmap", "careplane-guardrails", "-n", "careplane-system")
		doctorFails(t, p, plugin.ExitPreflightFailed,
			"FAIL  guardrail-parameters  ConfigMap careplane-system/careplane-guardrails is missing")
	})

	t.Run("an identity without rights is told what it may not read", func(t *testing.T) {
		out := doctorFails(t, p, plugin.ExitForbidden,
			`FAIL  guardrails            cannot check ValidatingAdmissionPolicy careplane-isolation-guard: validatingadmissionpolicies.admissionregistration.k8s.io "careplane-isolation-guard" is forbidden: User "doctor-nobody" cannot get resource "validatingadmissionpolicies"`,
			`FAIL  leader                cannot check Lease careplane-system/careplane.careplane.io: leases.coordination.k8s.io "careplane.careplane.io" is forbidden: User "doctor-nobody" cannot get resource "leases"`,
			`Error: cannot check: forbidden to check guardrails, guardrail-parameters, leader, manager-rbac`)
		// Discovery is every authenticated user's: the CRD check is made.
		if !strings.Contains(out, "PASS  crds") {
			t.Errorf("doctor as doctor-nobody: the crds check did not pass")
		}
	})

	// Last: the operator is killed and restarted by the cleanup.
	t.Run("no leader fails", func(t *testing.T) {
		theOperator.kill() // no release of the Lease: it expires
		lease := &coordinationv1.Lease{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: leaseNamespace, Name: leaseName}, lease); err != nil {
			t.Fatal(err)
		}
		// Past the lease duration (4s) after the last renewal, the
		// Lease no longer says anyone leads.
		time.Sleep(time.Until(lease.Spec.RenewTime.Add(5 * time.Second)))
		doctorFails(t, p, plugin.ExitPreflightFailed, "FAIL  leader                no leader: Lease careplane-system/careplane.careplane.io, held by ",
			"beyond its 4s duration (the leader stopped renewing)")
		kubectl(t, "delete", "lease", leaseName, "-n", leaseNamespace)
		doctorFails(t, p, plugin.ExitPreflightFailed,
			"FAIL  leader                no leader: Lease careplane-system/careplane.careplane.io does not exist")
	})
}

// doctorFails runs doctor (as doctor-nobody, a user without rights, when
// the wanted exit status is ExitForbidden) and checks its exit status and
// that its report says each of want.
func doctorFails(t *testing.T, p pluginRunner, wantCode int, want ...string) string {
	t.Helper()
	args := []string{"doctor"}
	if wantCode == plugin.ExitForbidden {
		args = append(args, "--as=doctor-nobody")
	}
	// No waiting: doctor reads the objects themselves, so the first run
	// after a change tells.
	out, code := p.run(t, args...)
	if code != wantCode {
		t.Errorf("doctor exited %d, want %d", code, wantCode)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("doctor's report lacks %q", w)
		}
	}
	return out
}

// doctorMendGuardrails puts the suite's guardrails back and waits until
// doctor sees them whole.
func doctorMendGuardrails(t *testing.T, p pluginRunner) {
	t.Helper()
	kubectl(t, "apply", "-k", guardrailsKustomization)
	eventually(t, 20*time.Second, "the guardrails mended", func(context.Context) (bool, string, error) {
		out, err := exec.Command(p.bin, "doctor", "--kubeconfig", os.Getenv("KUBECONFIG")).CombinedOutput()
		return err == nil, string(out), nil
	})
}

// doctorElectLeader runs the suite's operator with leader election for the
// test, and puts it back as it was (no leader election) after.
func doctorElectLeader(t *testing.T) {
	t.Helper()
	deleteLease := func() { _, _ = kubectlOutput("delete", "lease", leaseName, "-n", leaseNamespace, "--ignore-not-found") }
	theOperator.stop()
	deleteLease()
	t.Cleanup(func() {
		theOperator.stop()
		deleteLease()
		if err := theOperator.start(); err != nil {
			t.Errorf("restarting the suite's operator: %v\n%s", err, theOperator.logTail(20))
		}
	})
	if err := theOperator.start(doctorLeaseArgs...); err != nil {
		t.Fatalf("starting the operator with leader election: %v\n%s", err, theOperator.logTail(20))
	}
	eventually(t, 30*time.Second, "the operator holds the Lease", func(ctx context.Context) (bool, string, error) {
		lease := &coordinationv1.Lease{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: leaseNamespace, Name: leaseName}, lease); err != nil {
			return false, err.Error(), nil
		}
		return ptr.Deref(lease.Spec.HolderIdentity, "") != "", "no holder yet", nil
	})
}

// TestHelmTestPreflight is `helm test` as far as kwok allows. kwok's pods
// run no process (a bare pod stays Running and never completes), so
// `helm test` itself would only wait. Instead the chart's test hook is
// rendered, its ServiceAccount and RBAC are applied as Helm would create
// them, and the container's own arguments are run by the manager binary,
// authenticated with a token of that ServiceAccount: the same checks, as
// the same identity, with the same rights. With one rule less the check
// that needs it fails.
func TestHelmTestPreflight(t *testing.T) {
	doctorElectLeader(t)
	// The suite installs config/: a release named careplane in
	// careplane-system has the same names.
	out, err := exec.Command(helmEnv(t).bin, "template", "careplane", helmChart, "--namespace", "careplane-system",
		"--show-only", "templates/tests/preflight.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	var pod *corev1.Pod
	var rbac []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(out)), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		switch u.GetKind() {
		case "":
		case "Pod":
			pod = &corev1.Pod{}
			b, _ := json.Marshal(u.Object)
			if err := json.Unmarshal(b, pod); err != nil {
				t.Fatal(err)
			}
		default:
			if u.GetAnnotations()["helm.sh/hook"] != "test" {
				t.Errorf("%s %s is not a test hook", u.GetKind(), u.GetName())
			}
			rbac = append(rbac, u)
		}
	}
	if pod == nil || pod.Annotations["helm.sh/hook"] != "test" || len(pod.Spec.Containers) != 1 {
		t.Fatalf("the chart's test hook has no test Pod with one container:\n%s", out)
	}
	ctx := context.Background()
	t.Cleanup(func() {
		for _, o := range rbac {
			if err := k8sClient.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	})
	for _, o := range rbac {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatalf("creating %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	sa := pod.Spec.ServiceAccountName
	as, err := operatorAs(theOperator.bin, t.TempDir(), "careplane-system", sa)
	if err != nil {
		t.Fatal(err)
	}
	run := func() (string, int) {
		t.Helper()
		args := append(append([]string{}, pod.Spec.Containers[0].Args...), "--kubeconfig="+as.kubeconfig)
		return runForExit(t, exec.Command(theOperator.bin, args...), "manager "+strings.Join(args, " "))
	}
	// RBAC changes reach the authorizer's cache within a moment.
	var report string
	eventually(t, 20*time.Second, "the preflight passes as "+sa, func(context.Context) (bool, string, error) {
		out, code := run()
		report = out
		return code == 0, out, nil
	})
	for _, want := range []string{
		"PASS  crds", "PASS  guardrails", "PASS  guardrail-parameters", "PASS  leader", "PASS  manager-rbac",
		// The test pod may not list DaemonSets.
		"WARN  network-policy        unknown: cannot list DaemonSets",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the test pod's preflight lacks %q", want)
		}
	}

	// Without the Lease rule, the leader check cannot be made.
	kubectl(t, "patch", "role", sa, "-n", "careplane-system", "--type=json",
		"-p", `[{"op": "remove", "path": "/rules/2"}]`)
	eventually(t, 20*time.Second, "the preflight fails without the Lease rule", func(context.Context) (bool, string, error) {
		out, code := run()
		return code == 1 && strings.Contains(out, `FAIL  leader                cannot check Lease careplane-system/careplane.careplane.io`), out, nil
	})
}
