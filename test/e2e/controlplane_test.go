//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// controlPlane is the local kwok cluster's control plane, for tests that
// take part of it down. hack/cluster.sh starts the cluster with kwokctl's
// binary runtime: each component (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kwok-controller) is a process
// whose command line kwokctl recorded in <workdir>/clusters/<name>/kwok.yaml,
// with its pid in pids/<component>.pid; the kubeconfig is
// <workdir>/<name>.kubeconfig.
type controlPlane struct {
	name, workdir string
}

func (c controlPlane) dir() string { return filepath.Join(c.workdir, "clusters", c.name) }

// localControlPlane finds the kwok cluster KUBECONFIG belongs to, by
// hack/cluster.sh's layout.
func localControlPlane(t *testing.T) controlPlane {
	t.Helper()
	kc := os.Getenv("KUBECONFIG")
	c := controlPlane{name: strings.TrimSuffix(filepath.Base(kc), ".kubeconfig"), workdir: filepath.Dir(kc)}
	if _, err := os.Stat(filepath.Join(c.dir(), "kwok.yaml")); err != nil {
		t.Fatalf("this test stops part of the control plane of the local kwok cluster that hack/cluster.sh starts "+
			"(KUBECONFIG=<workdir>/<name>.kubeconfig beside <workdir>/clusters/<name>/kwok.yaml, as `make test-e2e` runs it); "+
			"KUBECONFIG=%s is not one: %v", kc, err)
	}
	return c
}

// kwokComponent is what kwok.yaml records of a component that matters here.
type kwokComponent struct {
	Name  string `json:"name"`
	Ports []struct {
		Port int `json:"port"`
	} `json:"ports"`
}

func (c controlPlane) components(t *testing.T) []kwokComponent {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir(), "kwok.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The first document is kwokctl's configuration; kwok's stages follow.
	first, _, _ := strings.Cut(string(b), "\n---\n")
	var conf struct {
		Components []kwokComponent `json:"components"`
	}
	if err := yaml.Unmarshal([]byte(first), &conf); err != nil {
		t.Fatalf("reading %s: %v", filepath.Join(c.dir(), "kwok.yaml"), err)
	}
	if len(conf.Components) == 0 {
		t.Fatalf("%s lists no components", filepath.Join(c.dir(), "kwok.yaml"))
	}
	return conf.Components
}

// pid is the process of a running component, or 0 when the component is not
// running: no pid file, or a process that is gone, is a zombie (it is
// reparented to init, which reaps it in its own time), or is another program.
func (c controlPlane) pid(component string) int {
	b, err := os.ReadFile(filepath.Join(c.dir(), "pids", component+".pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0
	}
	argv0, _, _ := bytes.Cut(cmdline, []byte{0}) // a zombie's is empty
	if filepath.Base(string(argv0)) != filepath.Base(component) {
		return 0
	}
	return pid
}

// componentOutage is a stopped control-plane component (kube-apiserver or
// kube-controller-manager), and whatever stopped with it.
//
// The component is killed with SIGKILL, as `kwokctl stop cluster` stops each
// component and as a crash or an OOM kill would: clients' connections drop,
// and new ones are refused. Nothing else is touched; when it is the
// apiserver that stops, on a real control
// plane kube-controller-manager and kube-scheduler exit when they cannot
// renew their leader Lease (renew deadline 10s), and the kubelet restarts
// them; here end restarts them the same way.
//
// While a component is down its ports are held, so that no other process
// takes them before it comes back (on a machine running several kwok
// clusters, a cluster created during the outage did take the apiserver's
// port: kwokctl picks ports by trying to listen on 127.0.0.1:P and :P). The
// hold is a listener on 127.0.0.2:P: it makes those trials fail, while a
// connection to 127.0.0.1:P — every client's — is refused exactly as when
// nothing listens.
type componentOutage struct {
	cp         controlPlane
	components []kwokComponent
	start      time.Time

	stopGuard chan struct{}
	guardDone chan struct{}
	mu        sync.Mutex
	exited    []string                // components that stopped, in order
	held      map[string]net.Listener // "component:port" → the hold
	ended     bool
}

// stopAPIServer kills the cluster's kube-apiserver and returns when it has
// exited. The test's cleanup brings the control plane back if the test ends
// first.
func (c controlPlane) stopAPIServer(t *testing.T) *componentOutage {
	t.Helper()
	return c.stop(t, "kube-apiserver")
}

// stopControllerManager kills the cluster's kube-controller-manager (every
// built-in controller: Deployments, ReplicaSets, garbage collection) and
// returns when it has exited; end starts it again.
func (c controlPlane) stopControllerManager(t *testing.T) *componentOutage {
	t.Helper()
	return c.stop(t, "kube-controller-manager")
}

// stop kills component with SIGKILL and returns when it has exited.
func (c controlPlane) stop(t *testing.T, component string) *componentOutage {
	t.Helper()
	pid := c.pid(component)
	if pid == 0 {
		t.Fatalf("%s of cluster %s is not running", component, c.name)
	}
	o := &componentOutage{cp: c, components: c.components(t), stopGuard: make(chan struct{}), guardDone: make(chan struct{}),
		held: map[string]net.Listener{}}
	t.Cleanup(func() { o.end(t) })
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing %s (pid %d): %v", component, pid, err)
	}
	o.start = time.Now()
	go o.guard()
	deadline := time.Now().Add(10 * time.Second)
	for !o.hasExited(component) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) did not exit within 10s of SIGKILL", component, pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return o
}

// guard notices every component that exits during the outage and holds its
// ports until end.
func (o *componentOutage) guard() {
	defer close(o.guardDone)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, comp := range o.components {
			if o.cp.pid(comp.Name) != 0 {
				continue
			}
			o.mu.Lock()
			if !slices.Contains(o.exited, comp.Name) {
				o.exited = append(o.exited, comp.Name)
			}
			for _, p := range comp.Ports {
				key := fmt.Sprintf("%s:%d", comp.Name, p.Port)
				if o.held[key] != nil {
					continue
				}
				// Fails while the exiting process still holds the port;
				// the next tick tries again.
				if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", p.Port)); err == nil {
					o.held[key] = l
				}
			}
			o.mu.Unlock()
		}
		select {
		case <-o.stopGuard:
			return
		case <-tick.C:
		}
	}
}

func (o *componentOutage) hasExited(component string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Contains(o.exited, component)
}

// end brings the control plane back: it forgets the pid files of the
// components that exited (as kwokctl's own stop does), releases their ports
// and runs `kwokctl start cluster`, which starts every component that is not
// running with the command line it recorded and waits until the apiserver
// serves. end returns when the apiserver is ready, and does nothing the
// second time.
func (o *componentOutage) end(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	if o.ended {
		o.mu.Unlock()
		return
	}
	o.ended = true
	o.mu.Unlock()
	close(o.stopGuard)
	<-o.guardDone

	for _, name := range o.exited {
		if err := os.Remove(filepath.Join(o.cp.dir(), "pids", name+".pid")); err != nil && !os.IsNotExist(err) {
			t.Errorf("removing the pid file of %s: %v", name, err)
		}
	}
	for _, l := range o.held {
		_ = l.Close()
	}
	cmd := exec.Command(filepath.Join(filepath.Dir(kubectlPath()), "kwokctl"), "--name", o.cp.name, "start", "cluster", "--timeout", "2m")
	cmd.Env = append(os.Environ(), "KWOK_WORKDIR="+o.cp.workdir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kwokctl start cluster %s: %v\n%s", o.cp.name, err, out)
	}
	var notRunning []string
	for _, comp := range o.components {
		if o.cp.pid(comp.Name) == 0 {
			notRunning = append(notRunning, comp.Name)
		}
	}
	if len(notRunning) > 0 {
		t.Fatalf("after kwokctl start cluster, not running: %v (logs in %s)", notRunning, filepath.Join(o.cp.dir(), "logs"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		if err := clientset.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error(); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kube-apiserver not ready within 2m of its restart")
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("control plane back after %s; restarted: %s", time.Since(o.start).Round(time.Millisecond), strings.Join(o.exited, ", "))
}
