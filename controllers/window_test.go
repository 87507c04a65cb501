package controllers

import (
	"context"
	"sync/atomic"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/fence"
)

// TestClosingAWindowSendsThreeWrites: a window closed in a namespace
// without fence objects is three writes and no read of the API server (a
// live read before each create doubled a fleet fence's requests); one that
// is closed already sends nothing.
func TestClosingAWindowSendsThreeWrites(t *testing.T) {
	ctx := context.Background()
	_, objs := requestFixture(t, []string{"three"}, []string{"three"})
	var liveReads, writes atomic.Int32
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(objs[1:]...).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
				writes.Add(1)
				return c.Create(ctx, o, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
				writes.Add(1)
				return c.Update(ctx, o, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
				writes.Add(1)
				return c.Patch(ctx, o, p, opts...)
			},
		}).Build()
	live := interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
			liveReads.Add(1)
			return c.Get(ctx, key, o, opts...)
		},
	})
	w := fenceWriter{c: c, live: live}
	he := objs[1].(*v1alpha1.HealthEnvironment)
	rec := fence.Record{ID: "f-1", Source: fence.SourceSpec}
	for round, want := range []int32{3, 0} {
		writes.Store(0)
		liveReads.Store(0)
		closed, err := w.closeWindow(ctx, he, rec)
		if err != nil || !closed {
			t.Fatalf("round %d: closeWindow = %t, %v", round, closed, err)
		}
		if writes.Load() != want || liveReads.Load() != 0 {
			t.Errorf("round %d: %d writes and %d live reads, want %d and 0", round, writes.Load(), liveReads.Load(), want)
		}
	}
	pol := &networkingv1.NetworkPolicy{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(fence.DenyPolicy(he, true)), pol); err != nil || !fence.IsDenyPolicy(pol, fence.DenyPolicy(he, true)) {
		t.Errorf("deny policy = %+v, %v", pol.Spec, err)
	}
}
