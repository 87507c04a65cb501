//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
)

// operatorMemory is the operator process's memory: its resident set as the
// kernel counts it, and the bytes in in-use spans of its Go heap.
type operatorMemory struct {
	rss, heapInuse int64
}

func (m operatorMemory) String() string {
	return fmt.Sprintf("RSS %.1f MiB, Go heap in use %.1f MiB", float64(m.rss)/(1<<20), float64(m.heapInuse)/(1<<20))
}

// readOperatorMemory samples the operator's memory a few times over a second
// and keeps the highest of each: the heap saws up and down between garbage
// collections, and one sample could fall anywhere on it.
func readOperatorMemory(t *testing.T) operatorMemory {
	t.Helper()
	var m operatorMemory
	for i := range 5 {
		if i > 0 {
			time.Sleep(250 * time.Millisecond)
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", theOperator.pid()))
		if err != nil {
			t.Fatal(err)
		}
		_, rest, ok := bytes.Cut(status, []byte("\nVmRSS:"))
		line, _, _ := bytes.Cut(rest, []byte("\n"))
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(string(line)), " kB"), 10, 64)
		if !ok || err != nil {
			t.Fatalf("no VmRSS in /proc/%d/status: %v", theOperator.pid(), err)
		}
		heap, err := theOperator.metricSum(context.Background(), "go_memstats_heap_inuse_bytes", nil)
		if err != nil || heap == 0 {
			t.Fatalf("go_memstats_heap_inuse_bytes from the operator: %v, %v", heap, err)
		}
		m.rss, m.heapInuse = max(m.rss, kb<<10), max(m.heapInuse, int64(heap))
	}
	return m
}

// TestInvalidEnvironmentsAtScale sends 200 invalid HealthEnvironments at
// once, the cases of TestValidation over and over: the API server rejects
// every one with its message, nothing of them is left behind, and the
// operator never hears of them: its log does not name one, and its memory
// stays flat.
func TestInvalidEnvironmentsAtScale(t *testing.T) {
	const count = 200
	// What the operator's memory may grow by across the test. Sampled at
	// rest it varies by about 1 MiB; an operator that held 200 environments
	// would hold thousands of their objects in its cache.
	const tolerance = 8 << 20
	ctx := context.Background()
	run := rand.String(5)

	memBefore := readOperatorMemory(t)
	logBefore := logSize(t)
	objs := make([]*unstructured.Unstructured, count)
	cases := make([]validationCase, count)
	for i := range objs {
		cases[i] = validationCases[i%len(validationCases)]
		objs[i] = newValidBase(t, fmt.Sprintf("bad-%03d-%s", i, run))
		cases[i].mutate(henv(objs[i].Object))
	}
	errs := make([]error, count)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range objs {
		wg.Go(func() { errs[i] = k8sClient.Create(ctx, objs[i]) })
	}
	wg.Wait()
	t.Logf("%d creates sent concurrently, all answered in %s", count, time.Since(start).Round(time.Millisecond))

	top := t
	t.Run("rejected", func(t *testing.T) {
		for i, err := range errs {
			t.Run(fmt.Sprintf("%03d %s", i, cases[i].name), func(t *testing.T) {
				if err == nil {
					// Deleted only at the end, so that "nothing left
					// behind" reports it and what the operator made of it.
					top.Cleanup(func() { deleteEnvironmentAndWait(top, objs[i].GetName()) })
					t.Fatalf("the API server accepted %s", objs[i].GetName())
				}
				assertInvalidCause(t, err, cases[i].field, cases[i].msg)
			})
		}
	})

	t.Run("nothing left behind", func(t *testing.T) {
		// Every name of the run holds its random part, whatever the case
		// made of it.
		for _, list := range []client.ObjectList{&v1alpha1.HealthEnvironmentList{}, &corev1.NamespaceList{}} {
			if err := k8sClient.List(ctx, list); err != nil {
				t.Fatal(err)
			}
			items, err := meta.ExtractList(list)
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range items {
				if o := it.(client.Object); strings.Contains(o.GetName(), run) {
					t.Errorf("%T %s exists", o, o.GetName())
				}
			}
		}
		b, err := os.ReadFile(theOperator.logPath)
		if err != nil {
			t.Fatal(err)
		}
		if n := bytes.Count(b[logBefore:], []byte(run)); n != 0 {
			t.Errorf("the operator's log names the rejected environments %d times", n)
		}
	})

	t.Run("the operator's memory stays flat", func(t *testing.T) {
		memAfter := readOperatorMemory(t)
		t.Logf("before: %s; after: %s; tolerance %d MiB", memBefore, memAfter, tolerance>>20)
		if memAfter.rss > memBefore.rss+tolerance || memAfter.heapInuse > memBefore.heapInuse+tolerance {
			t.Errorf("the operator's memory grew from %s to %s, more than %d MiB", memBefore, memAfter, tolerance>>20)
		}
	})
}
