//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// operator is careplane's manager binary, built from ./cmd/manager and run
// as a separate process against the test cluster, authenticated with a
// token of the careplane-manager ServiceAccount: the RBAC generated from the
// code's markers is all it has. Tests observe it through its /metrics
// endpoint, and may kill and restart it.
type operator struct {
	bin, kubeconfig, logPath string

	mu          sync.Mutex
	cmd         *exec.Cmd
	exited      chan struct{}
	metricsAddr string
}

// buildOperator builds the manager binary and writes a kubeconfig holding a
// token of the careplane-manager ServiceAccount.
func buildOperator(dir string) (*operator, error) {
	bin := filepath.Join(dir, "manager")
	build := exec.Command("go", "build", "-o", bin, "./cmd/manager")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the manager: %w\n%s", err, out)
	}
	token, err := kubectlOutput("create", "token", "careplane-manager", "-n", "careplane-system", "--duration=6h")
	if err != nil {
		return nil, fmt.Errorf("creating a token for careplane-manager: %w\n%s", err, token)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData,
		CertificateAuthority: cfg.CAFile, InsecureSkipTLSVerify: cfg.Insecure}
	kc.AuthInfos["careplane-manager"] = &clientcmdapi.AuthInfo{Token: strings.TrimSpace(token)}
	kc.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "careplane-manager"}
	kc.CurrentContext = "e2e"
	kubeconfig := filepath.Join(dir, "careplane-manager.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		return nil, err
	}
	return &operator{bin: bin, kubeconfig: kubeconfig, logPath: filepath.Join(dir, "manager.log")}, nil
}

// replica is another process of the same manager binary, with the same
// credentials and a log of its own.
func (o *operator) replica(logPath string) *operator {
	return &operator{bin: o.bin, kubeconfig: o.kubeconfig, logPath: logPath}
}

// pid is the manager's process id, or 0 when it is not running.
func (o *operator) pid() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cmd == nil {
		return 0
	}
	return o.cmd.Process.Pid
}

// start runs the manager with the suite's flags plus args, and waits until
// it reports ready. Its ports are found free by binding and closing them, so
// another process may take one before the manager binds it: a start that
// fails only because an address is in use is tried again on fresh ports.
func (o *operator) start(args ...string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for attempt := 1; ; attempt++ {
		inUse, err := o.startOnce(args)
		if err == nil || !inUse || attempt == 3 {
			return err
		}
	}
}

// startOnce is one start; inUse says the manager exited because an address
// it was to listen on was taken.
func (o *operator) startOnce(args []string) (inUse bool, err error) {
	addrs, err := freeAddrs(2)
	if err != nil {
		return false, err
	}
	metrics, probes := addrs[0], addrs[1]
	logFile, err := os.OpenFile(o.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return false, err
	}
	var logStart int64
	if fi, err := logFile.Stat(); err == nil {
		logStart = fi.Size()
	}
	all := append([]string{
		"--kubeconfig=" + o.kubeconfig,
		"--metrics-bind-address=" + metrics,
		"--health-probe-bind-address=" + probes,
		"--sync-period=" + resyncPeriod.String(),
	}, args...)
	cmd := exec.Command(o.bin, all...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return false, err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	o.cmd, o.exited, o.metricsAddr = cmd, exited, metrics

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			o.cmd = nil
			return o.loggedSince(logStart, "address already in use"),
				fmt.Errorf("the manager exited at start; log: %s", o.logPath)
		default:
		}
		resp, err := http.Get("http://" + probes + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return false, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false, fmt.Errorf("the manager was not ready within 30s; log: %s", o.logPath)
}

// loggedSince says whether the manager's log, from byte offset on, holds s.
func (o *operator) loggedSince(offset int64, s string) bool {
	b, err := os.ReadFile(o.logPath)
	if err != nil || int64(len(b)) < offset {
		return false
	}
	return strings.Contains(string(b[offset:]), s)
}

// kill stops the manager with SIGKILL: no graceful shutdown, as a crash or
// an OOM kill would.
func (o *operator) kill() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cmd == nil {
		return
	}
	_ = o.cmd.Process.Signal(syscall.SIGKILL)
	<-o.exited
	o.cmd = nil
}

// restart kills the manager and starts it again with args, failing the
// test if it does not come up.
func (o *operator) restart(t *testing.T, args ...string) {
	t.Helper()
	o.kill()
	if err := o.start(args...); err != nil {
		t.Fatalf("restarting the operator with %v: %v\n%s", args, err, o.logTail(20))
	}
}

// stop stops the manager gracefully.
func (o *operator) stop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cmd == nil {
		return
	}
	_ = o.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-o.exited:
	case <-time.After(30 * time.Second):
		_ = o.cmd.Process.Kill()
		<-o.exited
	}
	o.cmd = nil
}

// metricSum scrapes the manager's /metrics and sums the samples of a metric
// family whose labels include all of want (a label value may list
// alternatives separated by '|').
func (o *operator) metricSum(ctx context.Context, family string, want map[string]string) (float64, error) {
	o.mu.Lock()
	addr := o.metricsAddr
	o.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return 0, err
	}
	f, ok := families[family]
	if !ok {
		return 0, nil
	}
	var sum float64
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if !oneOf(labels[k], strings.Split(v, "|")) {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		}
	}
	return sum, nil
}

// logTail returns the end of the manager's log, for failure messages.
func (o *operator) logTail(n int) string {
	b, err := os.ReadFile(o.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func oneOf(s string, options []string) bool {
	for _, o := range options {
		if s == o {
			return true
		}
	}
	return false
}

func freeAddr() (string, error) {
	addrs, err := freeAddrs(1)
	if err != nil {
		return "", err
	}
	return addrs[0], nil
}

// freeAddrs finds n distinct free loopback addresses. All n listeners stay
// open until the last is bound, so the kernel cannot hand one port out twice.
func freeAddrs(n int) ([]string, error) {
	addrs := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}
