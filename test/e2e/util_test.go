//go:build e2e

package e2e

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// zapLevel is the operator's log level in tests: info by default, more with
// E2E_LOG_LEVEL=N (N > 0 is debug verbosity).
func zapLevel() zapcore.Level {
	if n, err := strconv.Atoi(os.Getenv("E2E_LOG_LEVEL")); err == nil {
		return zapcore.Level(-n)
	}
	return zapcore.InfoLevel
}

// eventually polls cond every 250ms until it returns true or timeout passes,
// then fails the test with the last reason cond gave.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := ""
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		ok, why, err := cond(ctx)
		last = why
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
