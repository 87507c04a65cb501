//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/controllers"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// tenantIdentity binds the built-in edit role in each of namespaces to a
// user of its own and returns a client acting as it: the tenant's deployment
// pipeline, which lives outside the environment's namespaces (so that no
// fence deletes it).
func tenantIdentity(t *testing.T, user string, namespaces ...string) client.Client {
	t.Helper()
	ctx := context.Background()
	for _, ns := range namespaces {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-pipeline-edit"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		}
		if err := k8sClient.Create(ctx, rb); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	cl, err := client.New(c, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// mintToken asks the API server, as c, for a token of ServiceAccount ns/name
// (TokenRequest), as the tenant's pipeline may.
func mintToken(t *testing.T, c client.Client, ns, name string) string {
	t.Helper()
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := c.SubResource("token").Create(context.Background(), sa, tr); err != nil {
		t.Fatalf("the tenant pipeline could not mint a token for %s/%s: %v", ns, name, err)
	}
	return tr.Status.Token
}

// whoAmI makes an authenticated call (a SelfSubjectReview) with token: the
// user it authenticates as, or the API server's refusal.
func whoAmI(ctx context.Context, token string) (string, error) {
	c := rest.AnonymousClientConfig(cfg)
	c.BearerToken = token
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		return "", err
	}
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return r.Status.UserInfo.Username, nil
}

// TestFenceRotatesTheStandbysCredentials (issue 13, hole 8): the tenant's
// pipeline, with edit in the environment's namespaces, the standby's
// included, mints tokens for the standby's ServiceAccounts and reads its
// generated Secret before the fence. A fence that moves traffic to the
// standby kills those tokens, takes away the pipeline's binding there (it
// would read the new Secret) and rotates the Secret, once per fence, while
// the standby serves throughout: its pods roll onto the new credentials
// with a surge, and the front never routes to nothing.
func TestFenceRotatesTheStandbysCredentials(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("standby-creds")
	applyFailoverEnv(t, name, "{standby: Warm, trigger: Automatic, unavailableAfter: 5s}")
	waitReady(t, name, 2*time.Minute)
	waitStandbyRunning(t, ctx, name)
	standby := name + "-standby"
	tenant := tenantIdentity(t, "tenant-pipeline-"+name, name, name+"-primary", standby)
	// The platform also lets the tenant's people view the standby: a
	// binding that reads no Secret, which the fence leaves.
	viewers := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "tenant-viewers"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "tenant-viewer-" + name}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
	}
	if err := k8sClient.Create(ctx, viewers); err != nil {
		t.Fatal(err)
	}
	// And a tool that may write policies there but read no Secret: its
	// binding stays too, and the freeze is what refuses it.
	writerUser := "tenant-writer-" + name
	for _, o := range []client.Object{
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "tenant-writer"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{networkingv1.GroupName}, Resources: []string{"networkpolicies"}, Verbs: []string{"create"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "tenant-writer"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: writerUser}},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "tenant-writer"}},
	} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	writer := guardImpersonate(t, writerUser, "system:authenticated")

	// Before the fence: what the compromised pipeline takes.
	tokens := map[string]string{}
	for _, sa := range []string{"call-handling", "default"} {
		tokens[sa] = mintToken(t, tenant, standby, sa)
		if who, err := whoAmI(ctx, tokens[sa]); err != nil || who != "system:serviceaccount:"+standby+":"+sa {
			t.Fatalf("the minted token of %s does not authenticate before the fence: %q, %v", sa, who, err)
		}
	}
	secretKey := client.ObjectKey{Namespace: standby, Name: build.GeneratedSecretName("call-handling", "db-password")}
	stolen := &corev1.Secret{}
	if err := tenant.Get(ctx, secretKey, stolen); err != nil {
		t.Fatalf("the tenant pipeline could not read the standby's Secret: %v", err)
	}
	if len(stolen.Data[build.GeneratedSecretKey]) == 0 {
		t.Fatal("the standby's generated Secret is empty")
	}

	// The dry run shows the standby's part of step 3.
	out := buildPlugin(t).asResponder(t, "fence", name, "--reason", "standby dry run", "--ticket", "INC-DRY", "--dry-run")
	for _, want := range [][]string{
		{"recreate", "ServiceAccount", standby, "call-handling"},
		{"recreate", "ServiceAccount", standby, "default"},
		{"rotate", "Secret", standby, secretKey.Name},
		{"roll", "Deployment", standby, "call-handling"},
		{"delete", "RoleBinding", standby, "tenant-pipeline-edit"},
	} {
		if !planLists(out, want[0], want[1], want[2], want[3]) {
			t.Errorf("the fence's dry run does not list %v:\n%s", want, out)
		}
	}

	// From the failover on, the front of the critical service never routes
	// to nothing, the standby's roll included.
	// The pipeline reads the Secret throughout the fence: not once does it
	// get the rotated value (its binding goes before the rotation).
	reads := pollSecret(ctx, tenant, secretKey, stolen.Data[build.GeneratedSecretKey])
	gaps := fenceOntoStandby(t, name, "INC-STANDBY")
	env := waitFencedTrue(t, name)
	if ok, leaked := reads.end(); ok == 0 || len(leaked) > 0 {
		t.Errorf("the tenant pipeline's reads during the fence: %d of the stolen value, the rotated one at resourceVersions %v; want some, and never the rotated one", ok, leaked)
	}
	primaryNs := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: name + "-primary"}, primaryNs); err != nil {
		t.Fatal(err)
	}
	fenceID := fence.RecordOf(primaryNs).ID
	if fenceID == "" {
		t.Fatal("no fence on record on the primary namespace")
	}

	// The stolen tokens are refused: their ServiceAccounts were recreated.
	for sa, token := range tokens {
		eventually(t, 30*time.Second, "the stolen token of "+sa+" refused", func(ctx context.Context) (bool, string, error) {
			who, err := whoAmI(ctx, token)
			return apierrors.IsUnauthorized(err), fmt.Sprintf("authenticated as %q (%v)", who, err), nil
		})
	}
	// The stolen Secret's value is no longer the standby's.
	rotated := &corev1.Secret{}
	if err := k8sClient.Get(ctx, secretKey, rotated); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(rotated.Data[build.GeneratedSecretKey], stolen.Data[build.GeneratedSecretKey]) || len(rotated.Data[build.GeneratedSecretKey]) == 0 {
		t.Error("the standby's generated Secret kept the value the tenant read before the fence")
	}
	if got := rotated.Annotations[build.AnnotationCredentialsRevision]; got != fenceID {
		t.Errorf("the rotated Secret's credentials revision = %q, want the fence's %q", got, fenceID)
	}
	// Nor can the pipeline read the new one: a read is never admission's
	// to refuse, so the fence took away its binding (edit reads Secrets)
	// before it rotated anything. The viewers' binding stays.
	if err := tenant.Get(ctx, secretKey, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("the tenant pipeline reads the standby's rotated Secret after the fence: %v, want Forbidden", err)
	}
	if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(viewers), &rbacv1.RoleBinding{}); err != nil {
		t.Errorf("the viewers' binding in the standby, which reads no Secret, after the fence: %v", err)
	}
	if env.Status.Isolation == nil || env.Status.Isolation.CredentialsRevoked < 4 {
		t.Errorf("status.isolation = %+v, want at least 4 credentials revoked (the primary's and the standby's)", env.Status.Isolation)
	}

	// The standby's pods roll onto the new credentials, and serve.
	waitStandbyRolled(t, standby, fenceID)
	eventually(t, 30*time.Second, "front routes only to the rolled standby", func(ctx context.Context) (bool, string, error) {
		ok, why := routesOnlyTo(t, ctx, name, standby, "call-handling")
		return ok, why, nil
	})

	// What serves now is the standby, and the pipeline that may write there
	// is the suspect: from the fence on it mints no token for the new
	// credentials, and adds no pod, policy or sidecar to what serves.
	sbNs := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: standby}, sbNs); err != nil {
		t.Fatal(err)
	}
	if got := standbyFrozenFor(sbNs); got != fenceID {
		t.Errorf("standby namespace frozen for %q (labels %v), want the fence %q", got, sbNs.Labels, fenceID)
	}
	// RBAC refuses the pipeline first now; the freeze refuses a GitOps
	// tool that is cluster-admin, which no fence unbinds.
	gitops := guardImpersonate(t, "e2e-gitops-"+name, "system:masters", "system:authenticated")
	for what, err := range tenantWritesInStandby(ctx, tenant, standby) {
		t.Run("the pipeline: "+what, func(t *testing.T) {
			if !apierrors.IsForbidden(err) {
				t.Errorf("%v, want Forbidden", err)
			}
		})
	}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: standby, Name: "tenant-writer"}, &rbacv1.RoleBinding{}); err != nil {
		t.Errorf("the writer's binding, which reads no Secret, after the fence: %v", err)
	}
	guardDenied(t, writer.client.Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "writer-allow"},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{}}}}), guardPolicyFreeze, writerUser+" may not")
	for what, err := range tenantWritesInStandby(ctx, gitops.client, standby) {
		t.Run("a cluster-admin GitOps tool: "+what, func(t *testing.T) {
			guardDenied(t, err, guardPolicyFreeze, "e2e-gitops-"+name+" may not")
		})
	}

	// A resync rotates nothing again.
	uids := map[string]types.UID{}
	for _, sa := range []string{"call-handling", "default"} {
		o := &corev1.ServiceAccount{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: standby, Name: sa}, o); err != nil {
			t.Fatal(err)
		}
		uids[sa] = o.UID
	}
	touch(t, name)
	stays(t, 6*time.Second, "the standby's credentials after a resync", func(ctx context.Context) (bool, string, error) {
		s := &corev1.Secret{}
		if err := k8sClient.Get(ctx, secretKey, s); err != nil {
			return false, "", err
		}
		if !bytes.Equal(s.Data[build.GeneratedSecretKey], rotated.Data[build.GeneratedSecretKey]) {
			return false, "the standby's Secret was rotated again", nil
		}
		for sa, uid := range uids {
			o := &corev1.ServiceAccount{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: standby, Name: sa}, o); err != nil {
				return false, fmt.Sprintf("ServiceAccount %s: %v", sa, err), nil
			}
			if o.UID != uid {
				return false, fmt.Sprintf("ServiceAccount %s was recreated again", sa), nil
			}
		}
		return true, "", nil
	})

	gaps.check(t)
	if c := findCond(t, name, v1alpha1.ConditionFenced); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Fenced = %+v after the standby's rotation", c)
	}

	// The freeze goes with the fence: after the restore the pipeline writes
	// in the standby again.
	responder(t, "patch", "henv", name, "--type=merge", "-p", restorePatch)
	waitRestored(t, name)
	eventually(t, 30*time.Second, "the standby's freeze lifted with the fence", func(ctx context.Context) (bool, string, error) {
		ns := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: standby}, ns); err != nil {
			return false, "", err
		}
		return standbyFrozenFor(ns) == "" && ns.Labels[v1alpha1.LabelFenced] == "", fmt.Sprintf("labels %v", ns.Labels), nil
	})
	// The platform binds the pipeline again (GitOps would), which the
	// freeze no longer refuses.
	if err := k8sClient.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "tenant-pipeline-edit"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "tenant-pipeline-" + name}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
	}); err != nil {
		t.Fatalf("the platform binds the pipeline in the standby again after the restore: %v", err)
	}
	eventually(t, 30*time.Second, "the tenant pipeline mints a token in the standby again", func(ctx context.Context) (bool, string, error) {
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
		err := tenant.SubResource("token").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: standby, Name: "call-handling"}}, tr)
		return err == nil, fmt.Sprint(err), nil
	})
}

// poller calls a function at an interval until halted.
type poller struct {
	stop    chan struct{}
	stopped chan struct{}
}

// poll calls f every interval, from now until halt.
func poll(every time.Duration, f func()) *poller {
	p := &poller{stop: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(p.stopped)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(every):
			}
			f()
		}
	}()
	return p
}

// halt stops the calls and waits for the last to end; again is a no-op.
func (p *poller) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.stopped
}

// frontGaps polls, every 100 ms until check, the front EndpointSlice of one
// service for a moment it routes to no ready endpoint.
type frontGaps struct {
	*poller
	what  string
	mu    sync.Mutex
	polls int
	gaps  []string
}

// watchFrontGaps starts polling the front of service svc of environment env.
func watchFrontGaps(t *testing.T, env, svc string) *frontGaps {
	g := &frontGaps{what: svc}
	g.poller = poll(100*time.Millisecond, func() {
		slice := &discoveryv1.EndpointSlice{}
		err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: env, Name: build.FrontEndpointSliceName(svc)}, slice)
		ready := 0
		for _, e := range slice.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				ready++
			}
		}
		g.mu.Lock()
		g.polls++
		if err != nil || ready == 0 {
			g.gaps = append(g.gaps, fmt.Sprintf("%s: %d ready endpoints (%v)", time.Now().Format(time.RFC3339Nano), ready, err))
		}
		g.mu.Unlock()
	})
	t.Cleanup(g.halt)
	return g
}

// check stops the polling and fails t if any poll found no ready endpoint.
func (g *frontGaps) check(t *testing.T) {
	t.Helper()
	g.halt()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.gaps) > 0 {
		t.Errorf("the front of %s routed to no ready endpoint %d times of %d polls: %v", g.what, len(g.gaps), g.polls, g.gaps)
	}
	t.Logf("the front of %s had ready endpoints in all %d polls", g.what, g.polls)
}

// fenceOntoStandby fences environment name as a responder, waits until the
// front of call-handling routes only to the standby, and from then on
// watches it for a moment it routes to nothing.
func fenceOntoStandby(t *testing.T, name, ticket string) *frontGaps {
	t.Helper()
	fenceCommand(t, name, ticket)
	eventually(t, 30*time.Second, "front routes only to the standby", func(ctx context.Context) (bool, string, error) {
		ok, why := routesOnlyTo(t, ctx, name, name+"-standby", "call-handling")
		return ok, why, nil
	})
	return watchFrontGaps(t, name, "call-handling")
}

// waitStandbyRolled waits until the standby's call-handling Deployment runs
// the credentials of fence id on every replica.
func waitStandbyRolled(t *testing.T, standby, id string) {
	t.Helper()
	eventually(t, 2*time.Minute, "the standby rolled onto the fence's credentials", func(ctx context.Context) (bool, string, error) {
		d := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: standby, Name: "call-handling"}, d); err != nil {
			return false, "", err
		}
		rev := d.Spec.Template.Annotations[build.AnnotationCredentialsRevision]
		st := d.Status
		done := rev == id && st.ObservedGeneration >= d.Generation && st.UpdatedReplicas == *d.Spec.Replicas &&
			st.Replicas == *d.Spec.Replicas && st.ReadyReplicas == *d.Spec.Replicas
		return done, fmt.Sprintf("template revision %q, status %+v", rev, st), nil
	})
}

// standbyFrozenFor is the fence a standby namespace is frozen for, as the
// docs spell the freeze: the label careplane.io/fenced=true and the fence's
// ID in careplane.io/standby-fence-id.
func standbyFrozenFor(ns *corev1.Namespace) string {
	if ns.Labels[v1alpha1.LabelFenced] != "true" {
		return ""
	}
	return ns.Annotations["careplane.io/standby-fence-id"]
}

// tenantWritesInStandby tries, as the tenant's pipeline c, what it would do
// to keep a hold on a standby that serves: a token for its ServiceAccount,
// an allow-all policy, a pod of its own, a change to careplane's
// Deployment. Each error by what was tried.
func tenantWritesInStandby(ctx context.Context, c client.Client, ns string) map[string]error {
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	allow := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-allow-all"},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{}}, Egress: []networkingv1.NetworkPolicyEgressRule{{}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-implant"}, Spec: restrictedPodSpec("implant")}
	sidecar := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"tenant.example/sidecar":"inject"}}}`))
	return map[string]error{
		"token for ServiceAccount call-handling": c.SubResource("token").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "call-handling"}}, tr),
		"allow-all NetworkPolicy":                c.Create(ctx, allow),
		"pod of its own":                         c.Create(ctx, pod),
		"change to Deployment call-handling":     c.Patch(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "call-handling"}}, sidecar),
	}
}

// findCond reads condition typ of environment name.
func findCond(t *testing.T, name, typ string) *metav1.Condition {
	t.Helper()
	env := &v1alpha1.HealthEnvironment{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, env); err != nil {
		t.Fatal(err)
	}
	for i := range env.Status.Conditions {
		if env.Status.Conditions[i].Type == typ {
			return &env.Status.Conditions[i]
		}
	}
	return nil
}

// secretReads are the reads pollSecret makes until end.
type secretReads struct {
	*poller
	mu    sync.Mutex
	same  int      // reads that returned the value it was given
	other []string // resourceVersions of reads that returned another
}

// pollSecret reads Secret key as c every 50 ms until end, and tells the
// value was apart from any other.
func pollSecret(ctx context.Context, c client.Client, key client.ObjectKey, was []byte) *secretReads {
	r := &secretReads{}
	r.poller = poll(50*time.Millisecond, func() {
		s := &corev1.Secret{}
		if err := c.Get(ctx, key, s); err != nil {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if bytes.Equal(s.Data[build.GeneratedSecretKey], was) {
			r.same++
		} else {
			r.other = append(r.other, s.ResourceVersion)
		}
	})
	return r
}

// end ends the reads: how many returned the value given, and the
// resourceVersions of those that returned another.
func (r *secretReads) end() (int, []string) {
	r.halt()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.same, r.other
}
