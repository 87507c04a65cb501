//go:build e2e

package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// eventually polls cond every 250ms until it returns true or timeout passes,
// then fails the test with the last reason cond gave.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := ""
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		ok, why, err := cond(ctx)
		// A call cut short by the deadline says less than the one before.
		if why != "" || err == nil {
			last = why
		}
		return ok, err
	})
	if err != nil {
		t.Fatalf("%s: not within %s: %v (last: %s)", what, timeout, err, last)
	}
}

func clientKey(o client.Object) client.ObjectKey { return client.ObjectKeyFromObject(o) }

func inNamespace(ns string) client.ListOption { return client.InNamespace(ns) }

func isPodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// kubectlPath is the kubectl built with the cluster (K8S_BIN, set by
// hack/e2e.sh), or the repository's bin/k8s/kubectl.
func kubectlPath() string {
	if dir := os.Getenv("K8S_BIN"); dir != "" {
		return filepath.Join(dir, "kubectl")
	}
	return filepath.Join("..", "..", "bin", "k8s", "kubectl")
}

// kubectlOutput runs the real kubectl against the test cluster.
func kubectlOutput(args ...string) (string, error) {
	out, err := exec.Command(kubectlPath(), args...).CombinedOutput()
	return string(out), err
}

// kubectlStdin runs kubectl with stdin.
func kubectlStdin(stdin string, args ...string) (string, error) {
	cmd := exec.Command(kubectlPath(), args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// responderArgs make kubectl act as an incident responder.
var responderArgs = []string{"--as=e2e-responder", "--as-group=" + v1alpha1.DefaultResponderGroup, "--as-group=system:authenticated"}

// responderClient is a client acting as an incident responder.
func responderClient(t *testing.T) client.Client {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: "e2e-responder", Groups: []string{v1alpha1.DefaultResponderGroup, "system:authenticated"}}
	cl, err := client.New(c, client.Options{Scheme: k8sClient.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// responder runs kubectl as an incident responder and fails the test if it
// fails.
func responder(t *testing.T, args ...string) string {
	t.Helper()
	return kubectl(t, append(append([]string{}, responderArgs...), args...)...)
}

// kubectl runs kubectl and fails the test if it fails.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectlOutput(args...)
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return out
}

// uniqueName returns prefix with a random suffix, so that runs against a
// long-lived development cluster do not meet each other's leftovers.
func uniqueName(prefix string) string {
	return prefix + "-" + rand.String(4)
}

// runForExit runs cmd, logs its output under what, and returns the output
// and the exit code; a command that cannot run fails the test.
func runForExit(t *testing.T, cmd *exec.Cmd, what string) (string, int) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	t.Logf("%s\n%s", what, out)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("running %s: %v", what, err)
	return "", -1
}

// watchNamed watches the objects of list's kind named name, until the test
// ends; the caller stops it sooner with Stop.
func watchNamed(t *testing.T, list client.ObjectList, name string) watch.Interface {
	t.Helper()
	watcher, err := client.NewWithWatch(cfg, client.Options{Scheme: k8sClient.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	w, err := watcher.Watch(ctx, list, client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)})
	if err != nil {
		t.Fatal(err)
	}
	return w
}
