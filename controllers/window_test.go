package controllers

import (
	"context"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/careplane/careplane/internal/fence"
)

// TestClosingAWindowSendsThreeWrites: a window closed in a namespace
// without fence objects is three writes and no read of the API server (a
// live read before each create doubled a fleet fence's requests); one that
// is closed already sends nothing.
func TestClosingAWindowSendsThreeWrites(t *testing.T) {
	ctx := context.Background()
	_, objs := requestFixture(t, []string{"three"}, []string{"three"})
	env := objs[1]
	var liveReads, writes int
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(objs[1:]...).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
				writes++
				return c.Create(ctx, o, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
				writes++
				return c.Update(ctx, o, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
				writes++
				return c.Patch(ctx, o, p, opts...)
			},
		}).Build()
	live := interceptor.NewClient(c.(client.WithWatch), interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
			liveReads++
			return c.Get(ctx, key, o, opts...)
		},
	})
	w := fenceWriter{c: c, live: live}
	he := sampleEnv("three")
	if err := c.Get(ctx, client.ObjectKeyFromObject(env), he); err != nil {
		t.Fatal(err)
	}
	rec := fence.Record{ID: "f-1", Source: fence.SourceSpec}
	for round, want := range []int{3, 0} {
		writes, liveReads = 0, 0
		closed, err := w.closeWindow(ctx, he, rec)
		if err != nil || !closed {
			t.Fatalf("round %d: closeWindow = %t, %v", round, closed, err)
		}
		if writes != want || liveReads != 0 {
			t.Errorf("round %d: %d writes and %d live reads, want %d and 0", round, writes, liveReads, want)
		}
	}
	pol := &networkingv1.NetworkPolicy{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(fence.DenyPolicy(he, true)), pol); err != nil || !fence.IsDenyPolicy(pol, fence.DenyPolicy(he, true)) {
		t.Errorf("deny policy = %+v, %v", pol.Spec, err)
	}
}
