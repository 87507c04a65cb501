package plugin

import (
	"context"
	"errors"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	clienttesting "k8s.io/client-go/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// TestFenceStateReadsTheFrontsRoutes: the fence's dry run reads the front's
// Endpoints, so that the plan lists the deletion of each (fence.ForeignRoutes);
// a caller whose role may not list them (one from before the responder role
// granted it) still gets a plan, which says what it could not read, rather
// than an error.
func TestFenceStateReadsTheFrontsRoutes(t *testing.T) {
	env := testEnv(nil)
	front := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "wales-111", UID: "uid-front"}}
	front.OwnerReferences = frontSliceMeta(env, "x").OwnerReferences
	route := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "wales-111", Name: "referral", UID: "uid-ep"}, //nolint:staticcheck // the mirroring controller reads them
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "203.0.113.7"}}}}} //nolint:staticcheck
	for _, tc := range []struct {
		name       string
		forbidden  bool
		wantUnread bool
		wantDelete bool
	}{
		{name: "listed", wantDelete: true},
		{name: "forbidden", forbidden: true, wantUnread: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := gatherForbidding(t, env, func(list client.ObjectList) bool {
				_, ok := list.(*corev1.EndpointsList) //nolint:staticcheck // the mirroring controller reads them
				return ok && tc.forbidden
			}, front.DeepCopy(), route.DeepCopy())
			if st.FrontEndpointsUnread != tc.wantUnread || st.Front == nil || st.Front.UID != front.UID {
				t.Errorf("FrontEndpointsUnread %v, Front %v; want %v, the front namespace", st.FrontEndpointsUnread, st.Front, tc.wantUnread)
			}
			deleted := false
			for _, a := range PlanFence(st).Step(5) {
				if a.Verb == fence.VerbDelete && a.Kind == "Endpoints" && a.Name == "referral" {
					deleted = true
				}
			}
			if deleted != tc.wantDelete {
				t.Errorf("the plan deletes Endpoints wales-111/referral: %v, want %v", deleted, tc.wantDelete)
			}
		})
	}
}

// TestFenceStateAssumesTheSecretsThePrimaryNames: a responder who may not
// list Secrets still gets the fence's deletions of the generated ones, by
// the names careplane gave them: those of the revision the restored
// primary's Namespace records, or of none before any restore.
func TestFenceStateAssumesTheSecretsThePrimaryNames(t *testing.T) {
	env := testEnv(nil)
	const rev = "2026-12-07T21:00:00.5Z"
	forbidden := func(list client.ObjectList) bool {
		return list.GetObjectKind().GroupVersionKind().Kind == "SecretList"
	}
	for _, tc := range []struct {
		what string
		ns   *corev1.Namespace
		want []string
	}{
		{"never restored", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "wales-111-primary"}},
			[]string{"call-handling.db-password", "referral.cad-key"}},
		{"restored", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "wales-111-primary",
			Annotations: map[string]string{build.AnnotationCredentialsRevision: rev}}},
			[]string{build.GeneratedSecretObjectName(v1alpha1.SitePrimary, "call-handling", "db-password", rev),
				build.GeneratedSecretObjectName(v1alpha1.SitePrimary, "referral", "cad-key", rev)}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			st := gatherForbidding(t, env, forbidden, tc.ns)
			var deleted []string
			for _, a := range PlanFence(st).Step(3) {
				if a.Verb == fence.VerbDelete && a.Kind == "Secret" {
					deleted = append(deleted, a.Name)
				}
			}
			slices.Sort(deleted)
			if !st.SecretsAssumed || !slices.Equal(deleted, tc.want) {
				t.Errorf("assumed %v, the plan deletes Secrets %v; want assumed, %v", st.SecretsAssumed, deleted, tc.want)
			}
		})
	}
}

// gatherForbidding gathers env's fence state from a cluster holding env and
// objs, as a caller whose role may not list what forbidden says.
func gatherForbidding(t *testing.T, env *v1alpha1.HealthEnvironment, forbidden func(client.ObjectList) bool, objs ...client.Object) FenceState {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(append([]client.Object{env.DeepCopy()}, objs...)...).
		WithInterceptorFuncs(interceptor.Funcs{
			List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				if forbidden(list) {
					return apierrors.NewForbidden(schema.GroupResource{Resource: list.GetObjectKind().GroupVersionKind().Kind}, "", errors.New("no rule"))
				}
				return c.List(ctx, list, opts...)
			},
		}).Build()
	o := &options{client: c, disc: &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}}
	st, err := o.gatherFenceState(context.Background(), env)
	if err != nil {
		t.Fatalf("gatherFenceState: %v", err)
	}
	return st
}
