//go:build e2e && bench

package e2e

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// benchProcesses are the processes that share the machine's CPUs during a
// benchmark: the control plane kwokctl runs, and careplane (the e2e binary
// runs the manager as "manager").
var benchProcesses = []string{"kube-apiserver", "etcd", "kube-controller", "kube-scheduler", "kwok-controller", "manager"}

// cpuByProcess reads the CPU seconds (user+system) each of benchProcesses
// has used so far, by its /proc comm (the first 15 bytes of its name).
// Several processes of one name are added up.
func cpuByProcess() map[string]float64 {
	out := map[string]float64{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(comm))
		if !slices.Contains(benchProcesses, name) {
			continue
		}
		if cpu, err := procCPU(d.Name()); err == nil {
			out[name] += cpu
		}
	}
	return out
}

// procCPU reads the CPU seconds (user+system) process pid has used.
func procCPU(pid string) (float64, error) {
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	f := strings.Fields(string(stat)[strings.LastIndexByte(string(stat), ')')+2:])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100, nil // USER_HZ is 100 on Linux
}

// cpuSpent formats the CPU seconds each process used between two readings
// of cpuByProcess, over wall time d.
func cpuSpent(before, after map[string]float64, d time.Duration) string {
	var parts []string
	total := 0.0
	for _, name := range benchProcesses {
		s := after[name] - before[name]
		total += s
		parts = append(parts, fmt.Sprintf("%s %.1f", name, s))
	}
	return fmt.Sprintf("CPU seconds over %.1f s of wall time (%.2f of the machine's cores on average): %s",
		d.Seconds(), total/d.Seconds(), strings.Join(parts, ", "))
}

// profileFleet takes CPU profiles of the operator and of kube-apiserver for
// the first d of a fleet phase (phase names the files), into dir, when dir
// is not "": call it just before the phase starts, and wait for what it returns before reading the
// files. The operator must have been started with --pprof-bind-address
// pprofAddr.
func profileFleet(ctx context.Context, dir, phase, pprofAddr string, cs kubernetes.Interface, d time.Duration) (wait func() []error) {
	if dir == "" {
		return func() []error { return nil }
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	secs := strconv.Itoa(int(d.Seconds()))
	wg.Go(func() {
		raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", secs).Timeout(d + 30*time.Second).DoRaw(ctx)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, phase+"-apiserver.pb.gz"), raw, 0o644)
		}
		errs[0] = err
	})
	wg.Go(func() {
		raw, err := httpGet(ctx, "http://"+pprofAddr+"/debug/pprof/profile?seconds="+secs)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, phase+"-operator.pb.gz"), raw, 0o644)
		}
		errs[1] = err
	})
	return func() []error { wg.Wait(); return errs }
}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// apiRequests reads kube-apiserver's count of the requests it has answered,
// by verb and resource (apiserver_request_total), keyed "VERB resource" or
// "VERB resource/subresource".
func apiRequests(ctx context.Context, cs kubernetes.Interface) (map[string]float64, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, m := range families["apiserver_request_total"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		if l["verb"] == "WATCH" || l["resource"] == "" {
			continue
		}
		key := l["verb"] + " " + l["resource"]
		if l["subresource"] != "" {
			key += "/" + l["subresource"]
		}
		// Refused requests apart: a 403 or 409 retried is load that
		// the successful ones do not explain.
		if c := l["code"]; c != "" && !strings.HasPrefix(c, "2") {
			key += " (" + c + ")"
		}
		out[key] += m.GetCounter().GetValue()
	}
	return out, nil
}

// eventsSince formats the events recorded since t (core events, each
// counted as often as it was reported), by reporting component and
// reason, most first, the top n. With dir not "", it writes them all into
// dir as <phase>-events.txt, each with the first message seen for it: a
// warning's message is what says why a controller failed.
func eventsSince(ctx context.Context, cs kubernetes.Interface, t time.Time, n int, dir, phase string) (string, error) {
	tally := map[string]float64{}
	example := map[string]string{}
	total := 0.0
	var cont string
	for {
		list, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{Limit: 5000, Continue: cont})
		if err != nil {
			return "", err
		}
		for _, e := range list.Items {
			last := e.LastTimestamp.Time
			if e.Series != nil {
				last = e.Series.LastObservedTime.Time
			}
			if last.IsZero() {
				last = e.EventTime.Time
			}
			if last.Before(t.Truncate(time.Second)) {
				continue
			}
			who := e.Source.Component
			if who == "" {
				who = e.ReportingController
			}
			c := float64(max(e.Count, 1))
			key := who + " " + e.Reason
			tally[key] += c
			total += c
			if _, ok := example[key]; !ok {
				example[key] = e.Type + ": " + e.Message
			}
		}
		if cont = list.Continue; cont == "" {
			break
		}
	}
	if dir != "" {
		var b strings.Builder
		for _, c := range sortedCounts(tally) {
			fmt.Fprintf(&b, "%8.0f %s\n         e.g. %s\n", c.n, c.key, example[c.key])
		}
		if err := os.WriteFile(filepath.Join(dir, phase+"-events.txt"), []byte(b.String()), 0o644); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%.0f events; most: %s", total, topOf(tally, n)), nil
}

// requestsBetween formats the requests kube-apiserver answered between two
// readings of apiRequests, most first, the top n.
func requestsBetween(before, after map[string]float64, n int) string {
	delta := deltaOf(before, after)
	total := 0.0
	for _, d := range delta {
		total += d
	}
	return fmt.Sprintf("%.0f requests (not watches); most: %s", total, topOf(delta, n))
}

// deltaOf is what each count grew by between two readings.
func deltaOf(before, after map[string]float64) map[string]float64 {
	delta := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			delta[k] = d
		}
	}
	return delta
}

// writeRequests writes every request kube-apiserver answered between two
// readings of apiRequests, most first, one per line, into dir (when not
// ""), as <phase>-requests.txt: the notes list only the top few.
func writeRequests(dir, phase string, before, after map[string]float64) error {
	if dir == "" {
		return nil
	}
	var b strings.Builder
	for _, c := range sortedCounts(deltaOf(before, after)) {
		fmt.Fprintf(&b, "%8.0f %s\n", c.n, c.key)
	}
	return os.WriteFile(filepath.Join(dir, phase+"-requests.txt"), []byte(b.String()), 0o644)
}

// topOf formats the n largest counts of tally, most first.
func topOf(tally map[string]float64, n int) string {
	counts := sortedCounts(tally)
	var parts []string
	for _, c := range counts[:min(n, len(counts))] {
		parts = append(parts, fmt.Sprintf("%s %.0f", c.key, c.n))
	}
	return strings.Join(parts, ", ")
}

// count is one entry of a tally.
type count struct {
	key string
	n   float64
}

// sortedCounts is tally, most first (then by key).
func sortedCounts(tally map[string]float64) []count {
	var counts []count
	for k, v := range tally {
		counts = append(counts, count{k, v})
	}
	slices.SortFunc(counts, func(a, b count) int {
		if a.n != b.n {
			return cmp.Compare(b.n, a.n)
		}
		return strings.Compare(a.key, b.key)
	})
	return counts
}
