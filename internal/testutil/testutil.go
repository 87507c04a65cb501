// Package testutil holds what careplane's integration and end-to-end suites
// share to observe the operator from outside: the requests it writes and the
// reconciles it runs.
package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// WriteCounter counts the mutating requests (POST, PUT, PATCH, DELETE) sent
// through the transports it wraps, except events.
type WriteCounter struct{ n atomic.Int64 }

// Wrap is a rest.Config WrapTransport function.
func (c *WriteCounter) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		switch req.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
			if !strings.Contains(req.URL.Path, "/events") {
				c.n.Add(1)
			}
		}
		return rt.RoundTrip(req)
	})
}

// Load is the number of writes counted so far.
func (c *WriteCounter) Load() int64 { return c.n.Load() }

// Taps count the requests sent through the transports they wrap, by what
// each tap asks for. Watches are not counted.
type Taps struct {
	mu   sync.Mutex
	taps map[*tap]struct{}
}

type tap struct {
	match func(method, path string) bool
	// body, when set, must accept the request's body too.
	body func(body []byte) bool
	n    atomic.Int64
	// fail, when set, is the HTTP status the matched requests are answered
	// with instead of being sent.
	fail int
}

// Wrap is a rest.Config WrapTransport function.
func (c *Taps) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		fail := 0
		if req.URL.Query().Get("watch") != "true" {
			var body []byte
			read := false
			c.mu.Lock()
			for t := range c.taps {
				if !t.match(req.Method, req.URL.Path) {
					continue
				}
				if t.body != nil && !read {
					body, read = requestBody(req), true
				}
				if t.body == nil || t.body(body) {
					t.n.Add(1)
					if t.fail != 0 {
						fail = t.fail
					}
				}
			}
			c.mu.Unlock()
		}
		if fail != 0 {
			return failed(req, fail)
		}
		return rt.RoundTrip(req)
	})
}

// Tap counts, from now until stop, the requests match accepts (by HTTP
// method and URL path); count is how many so far.
func (c *Taps) Tap(match func(method, path string) bool) (count func() int64, stop func()) {
	return c.add(&tap{match: match})
}

// Fail answers, from now until stop, the requests match accepts with the
// API server's error for HTTP status code (409 a conflict, 504 a timeout),
// without sending them: a fault at the moment a test chooses. count is how
// many were failed so far.
func (c *Taps) Fail(match func(method, path string) bool, code int) (count func() int64, stop func()) {
	return c.add(&tap{match: match, fail: code})
}

// FailBody is Fail for the requests whose body body accepts too: a fault
// in the one write that carries what a test names (a status write with
// the fence's removed policies), however many others share its path.
func (c *Taps) FailBody(match func(method, path string) bool, body func(body []byte) bool, code int) (count func() int64, stop func()) {
	return c.add(&tap{match: match, body: body, fail: code})
}

// requestBody is req's body, req left able to send it.
func requestBody(req *http.Request) []byte {
	if req.Body == nil || req.Body == http.NoBody {
		return nil
	}
	if req.GetBody != nil {
		if rc, err := req.GetBody(); err == nil {
			defer rc.Close()
			if b, err := io.ReadAll(rc); err == nil {
				return b
			}
		}
	}
	b, _ := io.ReadAll(req.Body)
	_ = req.Body.Close()
	req.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

func (c *Taps) add(t *tap) (count func() int64, stop func()) {
	c.mu.Lock()
	if c.taps == nil {
		c.taps = map[*tap]struct{}{}
	}
	c.taps[t] = struct{}{}
	c.mu.Unlock()
	return t.n.Load, func() {
		c.mu.Lock()
		delete(c.taps, t)
		c.mu.Unlock()
	}
}

// failed is the API server's answer with status code to req.
func failed(req *http.Request, code int) (*http.Response, error) {
	st := apierrors.NewGenericServerResponse(code, req.Method, schema.GroupResource{}, "", "injected by the test", 0, false).ErrStatus
	st.Kind, st.APIVersion = "Status", "v1"
	body, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: code, Header: http.Header{"Content-Type": []string{"application/json"}},
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Request: req}, nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// ReconcileCount is how many reconciles the named controller has finished in
// this process, from controller-runtime's own metric.
func ReconcileCount(controller string) (int64, error) {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		return 0, err
	}
	var n float64
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == controller {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return int64(n), nil
}

// Churn rewrites an annotation of the HealthEnvironment name every `every`,
// as a GitOps tool's sync might: each write is a new resourceVersion, so a
// write locked to an older one conflicts. stop ends it (again: a no-op) and
// returns how many writes went through.
func Churn(ctx context.Context, c client.Client, name string, every time.Duration) (stop func() int) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		n := 0
		for ctx.Err() == nil {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{"e2e.careplane.io/gitops-sync":"%d"}}}`, n)
			if err := c.Patch(ctx, &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: name}},
				client.RawPatch(types.MergePatchType, []byte(patch))); err == nil {
				n++
			}
			time.Sleep(every)
		}
		done <- n
	}()
	var once sync.Once
	var n int
	return func() int {
		once.Do(func() {
			cancel()
			n = <-done
		})
		return n
	}
}
