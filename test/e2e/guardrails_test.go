//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/controllers"
)

// The guardrail policies of config/guardrails, proved on the real API server
// with impersonated users. The users that must be denied get cluster-admin
// RBAC, so that every denial below is the policy's and not RBAC's: the point
// of the guardrails is that even a cluster-admin GitOps tool cannot undo a
// fence or tidy the evidence away.
//
// The policies are applied as an operator would apply them and left in place
// afterwards: later tests run with the guardrails on, as production does.

const (
	guardPolicyIsolation = "careplane-isolation-guard"
	guardPolicyFreeze    = "careplane-fenced-namespace-freeze"
	guardPolicyRequest   = "careplane-fence-request-guard"
	guardParamsNamespace = "careplane-system"
	guardParamsName      = "careplane-guardrails"
	guardOtherResponders = "e2e:other-responders"
	guardManagerSA       = "system:serviceaccount:careplane-system:careplane-manager"
	guardImage           = "registry.example/e2e/guardrails@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

	// What the denials say, as a user reads them.
	guardMsgIsolation = "only members of " + v1alpha1.DefaultResponderGroup + " may change spec.isolation of HealthEnvironment "
	guardMsgCreate    = "only members of " + v1alpha1.DefaultResponderGroup + " may create a HealthEnvironment with spec.isolation.mode Fenced"
	guardMsgDelete    = "is fenced or being restored, and deleting it would lift the fence and garbage-collect its evidence"
	guardMsgFenced    = "is fenced by careplane (label careplane.io/fenced=true): only careplane and members of " + v1alpha1.DefaultResponderGroup
	guardMsgNoParams  = "no params found for policy binding with `Deny` parameterNotFoundAction"
	guardMsgRequest   = "only members of " + v1alpha1.DefaultResponderGroup + " may " // create|delete a FenceRequest
	guardMsgFinalizer = "only careplane and members of " + v1alpha1.DefaultResponderGroup + " may remove the careplane.io/fence finalizer from "
	guardMsgStatus    = "only the careplane manager (" + guardManagerSA + ") writes the status of "

	guardPolicyStatus   = "careplane-status-guard"
	guardFenceFinalizer = "careplane.io/fence"
)

// guardUser is an identity the tests act as, through impersonation.
type guardUser struct {
	name   string
	groups []string
	client client.Client
}

// guardSession is what every guardrail test starts from: the policies
// installed and loaded, and the users.
type guardSession struct {
	run string
	// gitops stands for a GitOps controller with cluster-admin RBAC.
	gitops guardUser
	// responder is in the default responder group (and has cluster-admin RBAC).
	responder guardUser
	// otherResponder is in a group that is a responder group only when the
	// parameter says so.
	otherResponder guardUser
}

// TestGuardrailIsolationGuard proves careplane-isolation-guard: only
// responders change spec.isolation, create an environment fenced, or delete a
// fenced one; everything else about an environment stays open to GitOps, and
// status writes are not guarded at all.
func TestGuardrailIsolationGuard(t *testing.T) {
	s := guardSetup(t)
	ctx := context.Background()

	env := guardEnvironment("guard-"+s.run, false)
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatalf("creating %s with isolation mode None as the admin: %v", env.Name, err)
	}
	t.Cleanup(func() { guardDeleteEnvironment(t, k8sClient, env.Name) })

	fence := client.RawPatch(types.MergePatchType,
		[]byte(`{"spec":{"isolation":{"mode":"Fenced","reason":"e2e: ransomware indicators","ticket":"INC-E2E"}}}`))

	t.Run("a GitOps user with cluster-admin RBAC cannot fence", func(t *testing.T) {
		err := s.gitops.client.Patch(ctx, env.DeepCopy(), fence)
		guardDenied(t, err, guardPolicyIsolation, guardMsgIsolation+env.Name, s.gitops.name+" is not")
		if mode := guardMode(t, env.Name); mode != v1alpha1.IsolationNone {
			t.Errorf("spec.isolation.mode = %s after the denied patch, want None", mode)
		}
	})

	t.Run("nor change any other isolation field", func(t *testing.T) {
		err := s.gitops.client.Patch(ctx, env.DeepCopy(),
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"isolation":{"workloads":"Stop"}}}`)), client.DryRunAll)
		guardDenied(t, err, guardPolicyIsolation, guardMsgIsolation+env.Name)
	})

	t.Run("nor can the admin kubeconfig (system:masters)", func(t *testing.T) {
		err := k8sClient.Patch(ctx, env.DeepCopy(), fence, client.DryRunAll)
		guardDenied(t, err, guardPolicyIsolation, guardMsgIsolation+env.Name)
	})

	t.Run("the GitOps user changes replicas with a full update", func(t *testing.T) {
		// An update sends the whole object, spec.isolation included and
		// unchanged, as a client-side apply or a self-heal would.
		got := &v1alpha1.HealthEnvironment{}
		if err := s.gitops.client.Get(ctx, clientKey(env), got); err != nil {
			t.Fatal(err)
		}
		got.Spec.Services[0].Replicas = ptr.To[int32](2)
		if err := s.gitops.client.Update(ctx, got); err != nil {
			t.Fatalf("updating spec.services[0].replicas: %v", err)
		}
		if err := k8sClient.Get(ctx, clientKey(env), got); err != nil {
			t.Fatal(err)
		}
		if r := got.Spec.Services[0].ReplicaCount(); r != 2 {
			t.Errorf("spec.services[0].replicas = %d, want 2", r)
		}
	})

	t.Run("spec.isolation left out of a GitOps write is defaulted before admission", func(t *testing.T) {
		// Removing the field is not a change: the API server defaults it
		// again (mode None, workloads Preserve) before the policy compares.
		got := env.DeepCopy()
		err := s.gitops.client.Patch(ctx, got,
			client.RawPatch(types.JSONPatchType, []byte(`[{"op":"remove","path":"/spec/isolation"}]`)), client.DryRunAll)
		if err != nil {
			t.Fatalf("removing spec.isolation (equal to its defaults): %v", err)
		}
		if got.Spec.Isolation.Mode != v1alpha1.IsolationNone || got.Spec.Isolation.Workloads != v1alpha1.WorkloadsPreserve {
			t.Errorf("spec.isolation after the removal = %+v, want the defaults", got.Spec.Isolation)
		}
	})

	t.Run("only the manager writes status", func(t *testing.T) {
		// Rewriting the incident history, as anyone with status patch could.
		history := client.RawPatch(types.MergePatchType,
			[]byte(`{"status":{"incidents":[{"ticket":"INC-FORGED","reason":"nothing happened"}]}}`))
		err := s.gitops.client.Status().Patch(ctx, env.DeepCopy(), history, client.DryRunAll)
		guardDenied(t, err, guardPolicyStatus, guardMsgStatus+"HealthEnvironment "+env.Name, s.gitops.name+" is not")
		err = k8sClient.Status().Patch(ctx, env.DeepCopy(), history, client.DryRunAll)
		guardDenied(t, err, guardPolicyStatus, guardMsgStatus)
		err = s.responder.client.Status().Patch(ctx, env.DeepCopy(), history, client.DryRunAll)
		guardDenied(t, err, guardPolicyStatus, guardMsgStatus, s.responder.name+" is not")
		manager := guardImpersonate(t, guardManagerSA, "system:serviceaccounts", "system:serviceaccounts:careplane-system")
		guardAllowed(t, manager.client.Status().Patch(ctx, env.DeepCopy(),
			client.RawPatch(types.MergePatchType, []byte(`{"status":{"readyServices":"0/9"}}`)), client.DryRunAll),
			"the manager patching status")
	})

	t.Run("a responder fences", func(t *testing.T) {
		got := env.DeepCopy()
		if err := s.responder.client.Patch(ctx, got, fence, client.DryRunAll); err != nil {
			t.Fatalf("fencing as a responder: %v", err)
		}
		if got.Spec.Isolation.Mode != v1alpha1.IsolationFenced {
			t.Errorf("spec.isolation.mode = %s in the response, want Fenced", got.Spec.Isolation.Mode)
		}
	})

	t.Run("a responder changes isolation, and GitOps cannot change it back", func(t *testing.T) {
		if err := s.responder.client.Patch(ctx, env.DeepCopy(),
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"isolation":{"workloads":"Stop"}}}`))); err != nil {
			t.Fatalf("setting isolation.workloads Stop as a responder: %v", err)
		}
		got := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, clientKey(env), got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.Isolation.Workloads != v1alpha1.WorkloadsStop {
			t.Errorf("spec.isolation.workloads = %s, want Stop", got.Spec.Isolation.Workloads)
		}
		// The self-heal to what Git says.
		err := s.gitops.client.Patch(ctx, env.DeepCopy(),
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"isolation":{"workloads":"Preserve"}}}`)))
		guardDenied(t, err, guardPolicyIsolation, guardMsgIsolation+env.Name)
	})

	// A fenced environment, really created: the operator may fence its
	// namespaces, and a fenced namespace outlives its environment, so a
	// responder deletes both at the end.
	fenced := guardEnvironment("guard-"+s.run+"-f", true)
	t.Cleanup(func() {
		for _, ns := range []string{fenced.Name, fenced.Name + "-primary", fenced.Name + "-standby"} {
			guardPurgeNamespace(t, s.responder, ns)
		}
	})
	t.Cleanup(func() { guardDeleteEnvironment(t, s.responder.client, fenced.Name) })
	t.Run("only a responder creates an environment fenced", func(t *testing.T) {
		err := s.gitops.client.Create(ctx, fenced.DeepCopy(), client.DryRunAll)
		guardDenied(t, err, guardPolicyIsolation, guardMsgCreate, s.gitops.name+" is not")
		if err := s.responder.client.Create(ctx, fenced); err != nil {
			t.Fatalf("creating %s fenced as a responder: %v", fenced.Name, err)
		}
	})

	t.Run("only careplane and a responder remove the fence finalizer", func(t *testing.T) {
		if fenced.ResourceVersion == "" {
			t.Skip("the fenced environment was not created")
		}
		e := &v1alpha1.HealthEnvironment{}
		eventually(t, time.Minute, "the fence finalizer on "+fenced.Name, func(ctx context.Context) (bool, string, error) {
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(fenced), e); err != nil {
				return false, "", err
			}
			return slices.Contains(e.Finalizers, guardFenceFinalizer), fmt.Sprintf("finalizers %v", e.Finalizers), nil
		})
		// The "stuck object" reflex of a platform engineer or a GitOps
		// tool with cluster-admin: strip the finalizers.
		strip := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))
		err := s.gitops.client.Patch(ctx, e.DeepCopy(), strip)
		guardDenied(t, err, guardPolicyIsolation, guardMsgFinalizer+"HealthEnvironment "+fenced.Name, s.gitops.name+" is not")
		err = k8sClient.Patch(ctx, e.DeepCopy(), strip, client.DryRunAll)
		guardDenied(t, err, guardPolicyIsolation, guardMsgFinalizer)
		// A JSON patch that removes just this finalizer is the same change.
		err = s.gitops.client.Patch(ctx, e.DeepCopy(), client.RawPatch(types.JSONPatchType,
			[]byte(`[{"op":"test","path":"/metadata/finalizers/0","value":"`+guardFenceFinalizer+`"},`+
				`{"op":"remove","path":"/metadata/finalizers/0"}]`)), client.DryRunAll)
		guardDenied(t, err, guardPolicyIsolation, guardMsgFinalizer)
		got := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(fenced), got); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(got.Finalizers, guardFenceFinalizer) {
			t.Fatalf("finalizers of %s after the denied patches: %v, want %s", fenced.Name, got.Finalizers, guardFenceFinalizer)
		}
		// Anything else about the metadata stays open.
		guardAllowed(t, s.gitops.client.Patch(ctx, got.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"e2e.careplane.io/team":"platform"}}}`)), client.DryRunAll), "labelling as the GitOps user")
		guardAllowed(t, s.responder.client.Patch(ctx, got.DeepCopy(), strip, client.DryRunAll), "a responder stripping the finalizer")
		manager := guardImpersonate(t, guardManagerSA, "system:serviceaccounts", "system:serviceaccounts:careplane-system")
		guardAllowed(t, manager.client.Patch(ctx, got.DeepCopy(), strip, client.DryRunAll), "the manager removing its finalizer")
	})

	t.Run("only a responder deletes a fenced environment", func(t *testing.T) {
		if fenced.ResourceVersion == "" {
			t.Skip("the fenced environment was not created")
		}
		err := s.gitops.client.Delete(ctx, fenced.DeepCopy(), client.DryRunAll)
		guardDenied(t, err, guardPolicyIsolation, "HealthEnvironment "+fenced.Name+" "+guardMsgDelete, s.gitops.name+" is not")
		err = k8sClient.Delete(ctx, fenced.DeepCopy(), client.DryRunAll)
		guardDenied(t, err, guardPolicyIsolation, guardMsgDelete)
		// A responder's delete is allowed, but careplane holds a fenced
		// environment (and its evidence) until the responder also lifts
		// the isolation.
		eventually(t, time.Minute, "the fence finalizer on "+fenced.Name, func(ctx context.Context) (bool, string, error) {
			e := &v1alpha1.HealthEnvironment{}
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(fenced), e); err != nil {
				return false, "", err
			}
			return len(e.Finalizers) > 0, fmt.Sprintf("finalizers %v", e.Finalizers), nil
		})
		if err := s.responder.client.Delete(ctx, fenced.DeepCopy()); err != nil {
			t.Fatalf("deleting %s as a responder: %v", fenced.Name, err)
		}
		time.Sleep(2 * time.Second)
		e := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(fenced), e); err != nil || e.DeletionTimestamp.IsZero() {
			t.Fatalf("a deleted fenced environment should be held, Terminating: %v %+v", err, e.ObjectMeta)
		}
		if err := s.responder.client.Patch(ctx, e, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"isolation":{"mode":"None"}}}`))); err != nil {
			t.Fatalf("lifting the isolation of %s: %v", fenced.Name, err)
		}
		guardDeleteEnvironment(t, s.responder.client, fenced.Name)
	})
}

// TestGuardrailFenceRequestGuard proves careplane-fence-request-guard: only
// responders create a FenceRequest (a fence of every environment its
// selector matches) or delete one; not a cluster-admin GitOps user, not the
// admin kubeconfig. A denied create leaves nothing behind. The request's
// selector matches no environment, so that it fences nothing and may be
// deleted at once.
func TestGuardrailFenceRequestGuard(t *testing.T) {
	s := guardSetup(t)
	ctx := context.Background()
	request := func() *v1alpha1.FenceRequest {
		return &v1alpha1.FenceRequest{
			ObjectMeta: metav1.ObjectMeta{Name: "guard-" + s.run},
			Spec: v1alpha1.FenceRequestSpec{
				Selector: v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"e2e.careplane.io/guard": v1alpha1.LabelValue(s.run)}},
				Reason:   "e2e: supplier breach", Ticket: "INC-E2E",
			},
		}
	}
	fr := request()
	t.Cleanup(func() {
		if err := s.responder.client.Delete(context.Background(), request()); client.IgnoreNotFound(err) != nil {
			t.Errorf("deleting FenceRequest %s: %v", fr.Name, err)
		}
	})
	guardEventuallyDenied(t, time.Minute, "the fence-request guard denies a GitOps user creating a FenceRequest",
		guardPolicyRequest, guardMsgRequest+"create a FenceRequest", func(ctx context.Context) error {
			return s.gitops.client.Create(ctx, request(), client.DryRunAll)
		})

	t.Run("a GitOps user with cluster-admin RBAC cannot create one, and nothing is left behind", func(t *testing.T) {
		err := s.gitops.client.Create(ctx, request())
		guardDenied(t, err, guardPolicyRequest, guardMsgRequest+"create a FenceRequest", s.gitops.name+" is not",
			"kubectl careplane fence --selector")
		if err := k8sClient.Get(ctx, clientKey(fr), &v1alpha1.FenceRequest{}); !apierrors.IsNotFound(err) {
			t.Errorf("FenceRequest %s after the denied create: %v, want NotFound", fr.Name, err)
		}
	})

	t.Run("nor can the admin kubeconfig (system:masters)", func(t *testing.T) {
		err := k8sClient.Create(ctx, request(), client.DryRunAll)
		guardDenied(t, err, guardPolicyRequest, guardMsgRequest+"create a FenceRequest")
	})

	t.Run("a responder creates one", func(t *testing.T) {
		if err := s.responder.client.Create(ctx, fr); err != nil {
			t.Fatalf("creating FenceRequest %s as a responder: %v", fr.Name, err)
		}
		// careplane matches it, and it matched nothing.
		eventually(t, 30*time.Second, "FenceRequest "+fr.Name+" matched", func(ctx context.Context) (bool, string, error) {
			got := &v1alpha1.FenceRequest{}
			if err := k8sClient.Get(ctx, clientKey(fr), got); err != nil {
				return false, "", err
			}
			c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionMatched)
			return c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonNoEnvironments && got.Status.Matched == 0,
				fmt.Sprintf("Matched %+v", c), nil
		})
	})

	t.Run("nobody changes its spec", func(t *testing.T) {
		// The CRD's own rule, not the guard (which does not match UPDATE).
		err := s.responder.client.Patch(ctx, request(),
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"reason":"something else"}}`)), client.DryRunAll)
		if !apierrors.IsInvalid(err) || !strings.Contains(fmt.Sprint(err), "spec of a FenceRequest cannot change: create another") {
			t.Errorf("changing spec.reason as a responder: %v, want Invalid: spec of a FenceRequest cannot change", err)
		}
	})

	t.Run("only a responder deletes one", func(t *testing.T) {
		if fr.ResourceVersion == "" {
			t.Skip("the FenceRequest was not created")
		}
		err := s.gitops.client.Delete(ctx, request())
		guardDenied(t, err, guardPolicyRequest, guardMsgRequest+"delete a FenceRequest", s.gitops.name+" is not")
		err = k8sClient.Delete(ctx, request(), client.DryRunAll)
		guardDenied(t, err, guardPolicyRequest, guardMsgRequest+"delete a FenceRequest")
		got := &v1alpha1.FenceRequest{}
		if err := k8sClient.Get(ctx, clientKey(fr), got); err != nil || !got.DeletionTimestamp.IsZero() {
			t.Fatalf("FenceRequest %s after the denied deletes: %v, deletionTimestamp %v", fr.Name, err, got.DeletionTimestamp)
		}
		if err := s.responder.client.Delete(ctx, request()); err != nil {
			t.Fatalf("deleting FenceRequest %s as a responder: %v", fr.Name, err)
		}
		eventually(t, 30*time.Second, "FenceRequest "+fr.Name+" deleted", func(ctx context.Context) (bool, string, error) {
			err := k8sClient.Get(ctx, clientKey(fr), &v1alpha1.FenceRequest{})
			return apierrors.IsNotFound(err), fmt.Sprint(err), client.IgnoreNotFound(err)
		})
	})
}

// TestGuardrailFencedNamespaceFreeze proves careplane-fenced-namespace-freeze:
// in a namespace labelled careplane.io/fenced=true only careplane, responders
// and the control plane write; not a cluster-admin GitOps user, not the
// admin kubeconfig, not the namespace's own ServiceAccount. Outside fenced
// namespaces nothing changes.
func TestGuardrailFencedNamespaceFreeze(t *testing.T) {
	s := guardSetup(t)
	ctx := context.Background()
	// The namespaces name an environment that does not exist, for the
	// message only: careplane must not see them as its own.
	envName := "guard-" + s.run
	fenced := guardFencedNamespace(t, s, envName+"-fenced", envName)
	open := guardNamespace(t, envName+"-open", envName)
	guardPod(t, open, "app")

	t.Run("a GitOps user with cluster-admin RBAC cannot", func(t *testing.T) {
		whoIs := "namespace " + fenced.name + " (HealthEnvironment " + envName + ") "
		err := s.gitops.client.Create(ctx, guardConfigMap(fenced.name), client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, whoIs+guardMsgFenced, s.gitops.name+" may not CREATE configmaps")

		err = s.gitops.client.Delete(ctx, guardPodRef(fenced.name, "evidence"), client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, whoIs, s.gitops.name+" may not DELETE pods evidence")

		// The tenant (or a tidy-up) re-opening traffic around the fence.
		err = s.gitops.client.Create(ctx, guardAllowAll(fenced.name), client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, whoIs, s.gitops.name+" may not CREATE networkpolicies allow-all")

		out := guardExec(s.gitops, fenced.name, "evidence")
		if !strings.Contains(out, "ValidatingAdmissionPolicy '"+guardPolicyFreeze+"'") ||
			!strings.Contains(out, s.gitops.name+" may not CONNECT pods/exec evidence") {
			t.Errorf("kubectl exec into the evidence pod as the GitOps user was not denied by the freeze:\n%s", out)
		}
	})

	t.Run("nor lift the freeze through the Namespace", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fenced.name}}
		err := s.gitops.client.Patch(ctx, ns.DeepCopy(), guardUnfence(), client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, guardMsgFenced, s.gitops.name+" may not UPDATE namespaces "+fenced.name)
		err = s.gitops.client.Delete(ctx, ns.DeepCopy(), client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, guardMsgFenced, s.gitops.name+" may not DELETE namespaces "+fenced.name)
		// The status and finalize subresources write the labels too.
		err = s.gitops.client.Status().Patch(ctx, ns.DeepCopy(), guardUnfence(), client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, guardMsgFenced, s.gitops.name+" may not UPDATE namespaces/status "+fenced.name)
		live := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(ns), live); err != nil {
			t.Fatal(err)
		}
		delete(live.Labels, v1alpha1.LabelFenced)
		err = s.gitops.client.SubResource("finalize").Update(ctx, live, client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, guardMsgFenced, s.gitops.name+" may not UPDATE namespaces/finalize "+fenced.name)
		// Even one that keeps them is the control plane's alone.
		keep := client.RawPatch(types.MergePatchType, []byte(`{"status":{"conditions":[]}}`))
		guardDenied(t, s.gitops.client.Status().Patch(ctx, ns.DeepCopy(), keep, client.DryRunAll), guardPolicyFreeze, guardMsgFenced)
	})

	t.Run("nor mark another namespace fenced", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: open}}
		err := s.gitops.client.Patch(ctx, ns, guardFence(), client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, guardMsgFenced)
	})

	t.Run("the admin kubeconfig (system:masters) cannot lift it either", func(t *testing.T) {
		// On kwok the admin user is also the control plane (see
		// testdata/guardrails), so it may keep the namespace's pods
		// running; like the control plane, it may not touch the Namespace.
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fenced.name}}
		err := k8sClient.Patch(ctx, ns.DeepCopy(), guardUnfence(), client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, guardMsgFenced)
		err = k8sClient.Status().Patch(ctx, ns.DeepCopy(), guardUnfence(), client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, guardMsgFenced)
		err = k8sClient.Delete(ctx, ns.DeepCopy(), client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, guardMsgFenced)
	})

	t.Run("the namespace's own ServiceAccount cannot", func(t *testing.T) {
		// A real token of the tenant's default ServiceAccount, which has the
		// edit role in its namespace.
		sa, who := fenced.tenant, "system:serviceaccount:"+fenced.name+":default may not "
		guardDenied(t, sa.Create(ctx, guardConfigMap(fenced.name)), guardPolicyFreeze, guardMsgFenced, who+"CREATE configmaps")
		guardDenied(t, sa.Create(ctx, guardAllowAll(fenced.name)), guardPolicyFreeze, guardMsgFenced, who+"CREATE networkpolicies")
		guardDenied(t, sa.Delete(ctx, guardPodRef(fenced.name, "evidence")), guardPolicyFreeze, guardMsgFenced, who+"DELETE pods")
	})

	t.Run("events are still recorded", func(t *testing.T) {
		ev := &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{GenerateName: "guard-", Namespace: fenced.name},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: fenced.name, Name: "evidence", APIVersion: "v1"},
			Reason:         "Probe", Message: "e2e", Type: corev1.EventTypeNormal,
			Source: corev1.EventSource{Component: "e2e"},
		}
		if err := s.gitops.client.Create(ctx, ev, client.DryRunAll); err != nil {
			t.Errorf("creating a core/v1 Event: %v", err)
		}
		ev2 := &eventsv1.Event{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "guard-", Namespace: fenced.name},
			EventTime:  metav1.NowMicro(), ReportingController: "e2e.careplane.io/guardrails", ReportingInstance: "e2e",
			Action: "Probe", Reason: "Probe", Type: corev1.EventTypeNormal,
			Regarding: corev1.ObjectReference{Kind: "Pod", Namespace: fenced.name, Name: "evidence", APIVersion: "v1"},
		}
		if err := s.gitops.client.Create(ctx, ev2, client.DryRunAll); err != nil {
			t.Errorf("creating an events.k8s.io/v1 Event: %v", err)
		}
	})

	t.Run("a responder can", func(t *testing.T) {
		if err := s.responder.client.Create(ctx, guardConfigMap(fenced.name)); err != nil {
			t.Errorf("creating a ConfigMap: %v", err)
		}
		if err := s.responder.client.Create(ctx, guardAllowAll(fenced.name), client.DryRunAll); err != nil {
			t.Errorf("creating a NetworkPolicy: %v", err)
		}
		if out := guardExec(s.responder, fenced.name, "evidence"); strings.Contains(out, "ValidatingAdmissionPolicy") {
			t.Errorf("kubectl exec as a responder was denied by a policy:\n%s", out)
		} else {
			t.Logf("kubectl exec as a responder passed admission (kwok runs no container): %s", strings.TrimSpace(out))
		}
		if err := s.responder.client.Delete(ctx, guardPodRef(fenced.name, "evidence"), client.GracePeriodSeconds(0)); err != nil {
			t.Errorf("deleting the evidence pod: %v", err)
		}
	})

	t.Run("careplane and the control plane can write the contents", func(t *testing.T) {
		for _, u := range guardControlPlane() {
			t.Run(u.name, func(t *testing.T) {
				c := guardImpersonate(t, u.name, u.groups...)
				guardEventuallyAllowed(t, "create a ConfigMap", func(ctx context.Context) error {
					return c.client.Create(ctx, guardConfigMap(fenced.name), client.DryRunAll)
				})
			})
		}
	})

	t.Run("the control plane starts no pod but the restore's", func(t *testing.T) {
		// The ReplicaSet controller, as kube-controller-manager runs it
		// (--use-service-account-credentials).
		rsc := guardImpersonate(t, "system:serviceaccount:kube-system:replicaset-controller",
			"system:serviceaccounts", "system:serviceaccounts:kube-system")
		podOf := func(rev string) *corev1.Pod {
			p := guardPodObject(fenced.name, "")
			p.GenerateName = "app-"
			if rev != "" {
				p.Annotations = map[string]string{"careplane.io/credentials-revision": rev}
			}
			return p
		}
		// No restore under way: none (the fence quota refuses them too, but
		// it goes before the rebuild).
		err := rsc.client.Create(ctx, podOf(""), client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, "the only pods started in it are those of the careplane restore, and none is under way",
			"replicaset-controller may not create this one")
		// A restore under way, on record as careplane writes it.
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fenced.name}}
		restore := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"careplane.io/restore-id":"R-E2E"}}}`))
		if err := s.responder.client.Patch(ctx, ns, restore); err != nil {
			t.Fatalf("recording a restore on %s as a responder: %v", fenced.name, err)
		}
		guardEventuallyAllowed(t, "a pod of the restore's credentials revision", func(ctx context.Context) error {
			return rsc.client.Create(ctx, podOf("R-E2E"), client.DryRunAll)
		})
		for _, rev := range []string{"", "R-FENCED"} {
			err := rsc.client.Create(ctx, podOf(rev), client.DryRunAll)
			guardDenied(t, err, guardPolicyFreeze, "annotated careplane.io/credentials-revision=R-E2E")
		}
		// A responder may start one, for the investigation.
		if err := s.responder.client.Create(ctx, podOf(""), client.DryRunAll); err != nil {
			t.Errorf("creating a pod as a responder: %v", err)
		}
		// A standby frozen by a fence that moves traffic there serves: the
		// control plane starts its pods (they roll onto the fence's
		// credentials, come back after a node is lost), and the
		// controllers that bring a lost node's pods back work there.
		standby := guardFencedNamespace(t, s, envName+"-standby", envName)
		mark := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"careplane.io/site":"standby"},"annotations":{"careplane.io/standby-fence-id":"F-E2E"}}}`))
		sbNs := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: standby.name}}
		if err := s.responder.client.Patch(ctx, sbNs, mark); err != nil {
			t.Fatalf("marking %s as a frozen standby, as a responder: %v", standby.name, err)
		}
		podIn := func(ns, rev string) *corev1.Pod {
			p := podOf(rev)
			p.Namespace = ns
			return p
		}
		guardEventuallyAllowed(t, "a pod of a frozen standby, which serves", func(ctx context.Context) error {
			return rsc.client.Create(ctx, podIn(standby.name, "R-FENCED"), client.DryRunAll)
		})
		podGC := guardImpersonate(t, "system:serviceaccount:kube-system:pod-garbage-collector",
			"system:serviceaccounts", "system:serviceaccounts:kube-system")
		guardEventuallyAllowed(t, "pod-garbage-collector deletes a pod of a frozen standby", func(ctx context.Context) error {
			return podGC.client.Delete(ctx, guardPodRef(standby.name, "evidence"), client.DryRunAll)
		})
		// In a fenced primary it may not: its pods are evidence.
		if err := s.responder.client.Create(ctx, guardPodObject(fenced.name, "podgc-target")); err != nil {
			t.Fatalf("creating a pod in %s as a responder: %v", fenced.name, err)
		}
		err = podGC.client.Delete(ctx, guardPodRef(fenced.name, "podgc-target"), client.DryRunAll)
		guardDenied(t, err, guardPolicyFreeze, "pod-garbage-collector may not")
		// The mark and the site planted on a namespace that is not an
		// environment's standby by name (a primary) do not pass.
		if err := s.responder.client.Patch(ctx, ns, mark); err != nil {
			t.Fatalf("marking %s as a frozen standby, as a responder: %v", fenced.name, err)
		}
		stays(t, 5*time.Second, "a pod of the fenced revision in a primary marked as a frozen standby refused", func(ctx context.Context) (bool, string, error) {
			err := rsc.client.Create(ctx, podOf("R-FENCED"), client.DryRunAll)
			return guardIsDenial(err, guardPolicyFreeze), fmt.Sprint(err), nil
		})
		unmark := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"careplane.io/site":null},"annotations":{"careplane.io/standby-fence-id":null}}}`))
		if err := s.responder.client.Patch(ctx, ns, unmark); err != nil {
			t.Fatalf("unmarking %s, as a responder: %v", fenced.name, err)
		}
	})

	t.Run("look-alikes of the control plane cannot", func(t *testing.T) {
		for _, u := range guardLookAlikes() {
			t.Run(u.name, func(t *testing.T) {
				c := guardImpersonate(t, u.name, u.groups...)
				guardEventuallyDenied(t, 10*time.Second, "creating a ConfigMap is denied", guardPolicyFreeze, u.name+" may not",
					func(ctx context.Context) error {
						return c.client.Create(ctx, guardConfigMap(fenced.name), client.DryRunAll)
					})
			})
		}
	})

	t.Run("a kube-system add-on cannot", func(t *testing.T) {
		// ServiceAccounts in kube-system that are not kube-controller-
		// manager's controllers: CoreDNS, and any add-on installed there.
		for _, sa := range guardAddOns() {
			addOn := guardImpersonate(t, sa.name, sa.groups...)
			err := addOn.client.Create(ctx, guardAllowAll(fenced.name), client.DryRunAll)
			guardDenied(t, err, guardPolicyFreeze, guardMsgFenced, sa.name+" may not CREATE networkpolicies allow-all")
		}
	})

	t.Run("only careplane and responders touch the Namespace itself", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fenced.name}}
		// The garbage collector, with its own RBAC: a fenced namespace
		// outlives its environment until a responder deletes it.
		gc := guardImpersonate(t, "system:serviceaccount:kube-system:generic-garbage-collector",
			"system:serviceaccounts", "system:serviceaccounts:kube-system")
		guardDenied(t, gc.client.Delete(ctx, ns.DeepCopy(), client.DryRunAll), guardPolicyFreeze,
			"generic-garbage-collector may not DELETE namespaces "+fenced.name)
		kcm := guardImpersonate(t, "system:kube-controller-manager")
		guardDenied(t, kcm.client.Patch(ctx, ns.DeepCopy(), guardUnfence(), client.DryRunAll), guardPolicyFreeze,
			"system:kube-controller-manager may not UPDATE namespaces "+fenced.name)
		// The namespace controller's status write, which keeps the labels
		// and the record (once a responder deleted the namespace), passes.
		nsController := guardImpersonate(t, "system:serviceaccount:kube-system:namespace-controller",
			"system:serviceaccounts", "system:serviceaccounts:kube-system")
		live := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(ns), live); err != nil {
			t.Fatal(err)
		}
		guardAllowed(t, nsController.client.Status().Update(ctx, live, client.DryRunAll), "the namespace controller's status write that keeps the labels")
		unfenced := live.DeepCopy()
		delete(unfenced.Labels, v1alpha1.LabelFenced)
		guardDenied(t, nsController.client.Status().Update(ctx, unfenced, client.DryRunAll), guardPolicyFreeze,
			"namespace-controller may not UPDATE namespaces/status "+fenced.name)
		manager := guardImpersonate(t, guardManagerSA, "system:serviceaccounts", "system:serviceaccounts:careplane-system")
		guardEventuallyAllowed(t, "the careplane manager lifts the freeze", func(ctx context.Context) error {
			return manager.client.Patch(ctx, ns.DeepCopy(), guardUnfence(), client.DryRunAll)
		})
		if err := s.responder.client.Delete(ctx, ns.DeepCopy(), client.DryRunAll); err != nil {
			t.Errorf("deleting the fenced namespace as a responder: %v", err)
		}
	})

	t.Run("outside fenced namespaces nothing is blocked", func(t *testing.T) {
		if err := s.gitops.client.Create(ctx, guardConfigMap(open), client.DryRunAll); err != nil {
			t.Errorf("creating a ConfigMap: %v", err)
		}
		if err := s.gitops.client.Create(ctx, guardAllowAll(open), client.DryRunAll); err != nil {
			t.Errorf("creating a NetworkPolicy: %v", err)
		}
		if err := s.gitops.client.Delete(ctx, guardPodRef(open, "app"), client.DryRunAll); err != nil {
			t.Errorf("deleting a pod: %v", err)
		}
		if out := guardExec(s.gitops, open, "app"); strings.Contains(out, "ValidatingAdmissionPolicy") {
			t.Errorf("kubectl exec was denied by a policy:\n%s", out)
		}
	})
}

// TestGuardrailParameters proves that the responder groups come from the
// careplane-guardrails ConfigMap, and that both policies fail closed without
// it. It puts the ConfigMap back as config/guardrails has it.
func TestGuardrailParameters(t *testing.T) {
	s := guardSetup(t)
	ctx := context.Background()
	env := guardEnvironment("guard-"+s.run, false)
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { guardDeleteEnvironment(t, k8sClient, env.Name) })
	fenced := guardFencedNamespace(t, s, env.Name+"-fenced", env.Name+"-x")
	open := guardNamespace(t, env.Name+"-open", env.Name+"-x")

	fence := func(u guardUser) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			return u.client.Patch(ctx, env.DeepCopy(), client.RawPatch(types.MergePatchType,
				[]byte(`{"spec":{"isolation":{"mode":"Fenced","reason":"e2e"}}}`)), client.DryRunAll)
		}
	}
	writeIn := func(u guardUser, ns string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			return u.client.Create(ctx, guardConfigMap(ns), client.DryRunAll)
		}
	}

	t.Run("the responder groups come from the ConfigMap", func(t *testing.T) {
		t.Cleanup(func() { guardRestoreParams(t, s, env) })
		guardSetResponders(t, " "+guardOtherResponders+" ,")
		guardEventuallyAllowed(t, "the other group fences", fence(s.otherResponder))
		guardDenied(t, fence(s.responder)(ctx), guardPolicyIsolation,
			"only members of "+guardOtherResponders+" may change spec.isolation", s.responder.name+" is not")
		guardAllowed(t, writeIn(s.otherResponder, fenced.name)(ctx), "the other group writes in the fenced namespace")
		guardDenied(t, writeIn(s.responder, fenced.name)(ctx), guardPolicyFreeze, "members of "+guardOtherResponders)

		guardSetResponders(t, "")
		guardEventuallyDenied(t, 30*time.Second, "with no responder groups nobody fences", guardPolicyIsolation,
			"none are configured: set data.responderGroups in ConfigMap careplane-system/careplane-guardrails",
			fence(s.otherResponder))
	})

	t.Run("without the ConfigMap both policies fail closed", func(t *testing.T) {
		// Bindings of both policies to a ConfigMap that does not exist,
		// for this test's environment and namespaces only. (Deleting the
		// shared ConfigMap would test the same thing, but on Kubernetes
		// 1.37 the API server then kept serving the policies the deleted
		// copy even after it was re-created; see docs/guardrails.md.)
		const label = "e2e.careplane.io/params"
		absent := func(name, policy string, match admissionregistrationv1.MatchResources) *admissionregistrationv1.ValidatingAdmissionPolicyBinding {
			return &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
					PolicyName: policy,
					ParamRef: &admissionregistrationv1.ParamRef{Name: "careplane-guardrails-absent", Namespace: guardParamsNamespace,
						ParameterNotFoundAction: ptr.To(admissionregistrationv1.DenyAction)},
					MatchResources:    &match,
					ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
				},
			}
		}
		sel := &metav1.LabelSelector{MatchLabels: map[string]string{label: "absent"}}
		bindings := []client.Object{
			absent("e2e-isolation-guard-absent-params", guardPolicyIsolation, admissionregistrationv1.MatchResources{ObjectSelector: sel}),
			absent("e2e-freeze-absent-params", guardPolicyFreeze, admissionregistrationv1.MatchResources{NamespaceSelector: sel}),
		}
		// Labelled first: once the freeze's binding applies, it denies the
		// label's own write to the namespace (a Namespace update is matched
		// by its new labels). Labelled after, the test passed only while the
		// API server was slower to load the binding than the patch.
		labelPatch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+label+`":"absent"}}}`))
		if err := s.responder.client.Patch(ctx, env.DeepCopy(), labelPatch); err != nil {
			t.Fatal(err)
		}
		if err := s.responder.client.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fenced.name}}, labelPatch); err != nil {
			t.Fatal(err)
		}
		for _, b := range bindings {
			if err := k8sClient.Create(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			for _, b := range bindings {
				_ = k8sClient.Delete(context.Background(), b)
			}
			// Deleted bindings stop applying a moment later; take the labels
			// off once they have, so the test's own cleanup can proceed.
			unlabel := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+label+`":null}}}`))
			guardEventuallyAllowed(t, "removing the test label", func(ctx context.Context) error {
				if err := s.responder.client.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fenced.name}}, unlabel); err != nil {
					return err
				}
				return s.responder.client.Patch(ctx, env.DeepCopy(), unlabel)
			})
		})
		scale := func(ctx context.Context) error {
			return s.gitops.client.Patch(ctx, env.DeepCopy(), client.RawPatch(types.JSONPatchType,
				[]byte(`[{"op":"replace","path":"/spec/services/0/replicas","value":3}]`)), client.DryRunAll)
		}
		guardEventuallyDenied(t, 30*time.Second, "a replicas change is denied", guardPolicyIsolation, guardMsgNoParams, scale)

		guardDenied(t, fence(s.responder)(ctx), guardPolicyIsolation, guardMsgNoParams)
		created := guardEnvironment("guard-"+s.run+"-n", false)
		created.Labels = map[string]string{label: "absent"}
		guardDenied(t, s.gitops.client.Create(ctx, created, client.DryRunAll), guardPolicyIsolation, guardMsgNoParams)
		guardDenied(t, writeIn(s.responder, fenced.name)(ctx), guardPolicyFreeze, guardMsgNoParams)
		kcm := guardImpersonate(t, "system:kube-controller-manager")
		guardDenied(t, writeIn(kcm, fenced.name)(ctx), guardPolicyFreeze, guardMsgNoParams)

		// The status guard reads no parameter, so even now the manager
		// writes status; and unfenced namespaces are not the freeze's
		// business.
		manager := guardImpersonate(t, guardManagerSA, "system:serviceaccounts", "system:serviceaccounts:careplane-system")
		guardAllowed(t, manager.client.Status().Patch(ctx, env.DeepCopy(),
			client.RawPatch(types.MergePatchType, []byte(`{"status":{"readyServices":"0/9"}}`)), client.DryRunAll),
			"the manager patching status")
		guardAllowed(t, writeIn(s.gitops, open)(ctx), "writing in an unfenced namespace")
	})
}

// guardSetup installs the guardrails (idempotently), gives the test users
// their RBAC, and waits until the isolation guard is loaded.
// guardrailsKustomization is config/guardrails as installed on the kwok test
// cluster (with kwok's control-plane identity; see its kustomization).
const guardrailsKustomization = "testdata/guardrails"

func guardSetup(t *testing.T) *guardSession {
	t.Helper()
	ctx := context.Background()
	// A real install creates careplane-system with config/default or the chart.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: guardParamsNamespace}}
	if err := k8sClient.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-k", guardrailsKustomization)
	guardRBAC(t)

	s := &guardSession{
		run:            rand.String(5),
		gitops:         guardImpersonate(t, "e2e-gitops-bot", "e2e:gitops"),
		responder:      guardImpersonate(t, "e2e-responder", v1alpha1.DefaultResponderGroup),
		otherResponder: guardImpersonate(t, "e2e-other-responder", guardOtherResponders),
	}
	start := time.Now()
	guardEventuallyDenied(t, time.Minute, "the isolation guard denies a GitOps user creating a fenced environment",
		guardPolicyIsolation, guardMsgCreate, func(ctx context.Context) error {
			return s.gitops.client.Create(ctx, guardEnvironment("guard-"+s.run+"-probe", true), client.DryRunAll)
		})
	t.Logf("the isolation guard denies within %s of kubectl apply", time.Since(start).Round(time.Millisecond))
	return s
}

// guardRBAC binds cluster-admin to the test users' groups, and gives the
// control-plane identities the tests impersonate just enough RBAC for their
// probes. It removes the bindings when the test ends.
func guardRBAC(t *testing.T) {
	t.Helper()
	group := func(name string) rbacv1.Subject {
		return rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: name}
	}
	var probeUsers []rbacv1.Subject
	for _, u := range append(append(guardControlPlane(), guardLookAlikes()...), guardAddOns()...) {
		probeUsers = append(probeUsers, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: u.name})
	}
	for _, obj := range []client.Object{
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "careplane-e2e-guardrails-admin"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   []rbacv1.Subject{group("e2e:gitops"), group(v1alpha1.DefaultResponderGroup), group(guardOtherResponders)},
		},
		&rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "careplane-e2e-guardrails-probe"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}},
				{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"create"}},
				{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"patch"}},
			},
		},
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "careplane-e2e-guardrails-probe"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "careplane-e2e-guardrails-probe"},
			Subjects:   probeUsers,
		},
	} {
		guardUpsert(t, obj)
		t.Cleanup(func() {
			if err := k8sClient.Delete(context.Background(), obj); client.IgnoreNotFound(err) != nil {
				t.Errorf("deleting %s: %v", obj.GetName(), err)
			}
		})
	}
}

// guardControlPlane are the identities the freeze lets write inside a fenced
// namespace besides responders: careplane and the control plane.
func guardControlPlane() []guardUser {
	return []guardUser{
		{name: guardManagerSA, groups: []string{"system:serviceaccounts", "system:serviceaccounts:careplane-system"}},
		{name: "system:kube-controller-manager"},
		{name: "system:kube-scheduler"},
		{name: "system:apiserver", groups: []string{"system:masters"}},
		{name: "system:node:kwok-primary-0", groups: []string{"system:nodes"}},
		{name: "system:serviceaccount:kube-system:replicaset-controller",
			groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system"}},
	}
}

// guardAddOns are kube-system ServiceAccounts that are not the control
// plane: CoreDNS, and an add-on of the kind clusters install into
// kube-system.
func guardAddOns() []guardUser {
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:kube-system"}
	return []guardUser{
		{name: "system:serviceaccount:kube-system:coredns", groups: groups},
		{name: "system:serviceaccount:kube-system:e2e-cni-agent", groups: groups},
	}
}

// guardLookAlikes resemble the allowed identities and must be denied.
func guardLookAlikes() []guardUser {
	return []guardUser{
		{name: "system:node:impostor"}, // a node's name without the system:nodes group
		{name: "system:apiserver"},     // the API server's name without its group
		{name: "system:serviceaccount:kube-system-lookalike:controller",
			groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system-lookalike"}},
		{name: "system:serviceaccount:careplane-system:default",
			groups: []string{"system:serviceaccounts", "system:serviceaccounts:careplane-system"}},
	}
}

// guardImpersonate returns a client that acts as user in groups.
func guardImpersonate(t *testing.T, user string, groups ...string) guardUser {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	cl, err := client.New(c, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return guardUser{name: user, groups: groups, client: cl}
}

// guardFenced is a fenced namespace with an evidence pod, and a client
// holding a token of the namespace's default ServiceAccount, which has the
// "edit" role there.
type guardFenced struct {
	name   string
	tenant client.Client
}

// guardFencedNamespace creates namespace name as careplane would leave a
// fenced site: labelled with its environment, a running pod, then labelled
// careplane.io/fenced=true (by a responder, as the admin may not). It waits
// until the freeze denies the GitOps user.
func guardFencedNamespace(t *testing.T, s *guardSession, name, envName string) guardFenced {
	t.Helper()
	ctx := context.Background()
	guardNamespace(t, name, envName)
	guardPod(t, name, "evidence")

	// The tenant's ServiceAccount, with edit rights in its namespace.
	eventually(t, time.Minute, "ServiceAccount "+name+"/default exists", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: name, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, fmt.Sprint(err), client.IgnoreNotFound(err)
	})
	if err := k8sClient.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "tenant-edit"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: name, Name: "default"}},
	}); err != nil {
		t.Fatal(err)
	}
	tok, err := clientset.CoreV1().ServiceAccounts(name).CreateToken(ctx, "default",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tc := rest.AnonymousClientConfig(cfg)
	tc.BearerToken = tok.Status.Token
	tenant, err := client.New(tc, client.Options{Scheme: controllers.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	// Before the fence the token may write: the denials below are the freeze's.
	guardEventuallyAllowed(t, "the tenant's ServiceAccount writes before the fence", func(ctx context.Context) error {
		return tenant.Create(ctx, guardConfigMap(name), client.DryRunAll)
	})

	if err := s.responder.client.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, guardFence()); err != nil {
		t.Fatalf("labelling %s fenced as a responder: %v", name, err)
	}
	guardEventuallyDenied(t, time.Minute, "the freeze denies the GitOps user in "+name, guardPolicyFreeze, guardMsgFenced,
		func(ctx context.Context) error {
			return s.gitops.client.Create(ctx, guardConfigMap(name), client.DryRunAll)
		})
	return guardFenced{name: name, tenant: tenant}
}

// guardNamespace creates namespace name, labelled as careplane labels its
// own (managed by careplane, environment envName, Pod Security restricted),
// and deletes it when the test ends (lifting a fence first, as a responder
// would, so that the control plane may empty it). envName names no existing
// environment: the suite's operator leaves the namespace alone.
func guardNamespace(t *testing.T, name, envName string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		v1alpha1.LabelManagedBy:              v1alpha1.ManagedByValue,
		v1alpha1.LabelEnvironment:            envName,
		"pod-security.kubernetes.io/enforce": "restricted",
	}}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		guardPurgeNamespace(t, guardImpersonate(t, "e2e-responder", v1alpha1.DefaultResponderGroup), name)
	})
	return name
}

// guardPod runs a pod named name in ns, one that Pod Security restricted
// admits, and waits until it is ready.
func guardPod(t *testing.T, ns, name string) {
	t.Helper()
	pod := guardPodObject(ns, name)
	if err := k8sClient.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "pod "+ns+"/"+name+" is ready", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, clientKey(pod), pod)
		return err == nil && isPodReady(pod), string(pod.Status.Phase), err
	})
}

// guardPodObject is a pod named name in ns that Pod Security restricted
// admits.
func guardPodObject(ns, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "app", Image: guardImage, SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			}}},
		},
	}
}

// guardPurgeNamespace lifts the fence of namespace name as a responder, then
// deletes it. Best effort: the names are unique per run.
func guardPurgeNamespace(t *testing.T, responder guardUser, name string) {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := responder.client.Patch(ctx, ns.DeepCopy(), guardUnfence()); client.IgnoreNotFound(err) != nil {
		t.Logf("lifting the fence of %s: %v", name, err)
	}
	if err := responder.client.Delete(ctx, ns.DeepCopy()); client.IgnoreNotFound(err) != nil {
		t.Errorf("deleting namespace %s: %v", name, err)
	}
}

// guardEnvironment is a minimal valid HealthEnvironment, fenced or not.
func guardEnvironment(name string, fenced bool) *v1alpha1.HealthEnvironment {
	env := &v1alpha1.HealthEnvironment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.HealthEnvironmentSpec{
			Tenant:   v1alpha1.Tenant{DisplayName: "Guardrails e2e"},
			Services: []v1alpha1.Service{{Name: "web", Image: guardImage, Port: 8080, Replicas: ptr.To[int32](1)}},
		},
	}
	if fenced {
		env.Spec.Isolation = v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "e2e: guardrails", Ticket: "INC-E2E"}
	}
	return env
}

// guardDeleteEnvironment deletes environment name as c and waits until it
// is gone.
func guardDeleteEnvironment(t *testing.T, c client.Client, name string) {
	t.Helper()
	env := &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Delete(context.Background(), env); client.IgnoreNotFound(err) != nil {
		t.Errorf("deleting %s: %v", name, err)
		return
	}
	eventually(t, time.Minute, "HealthEnvironment "+name+" is deleted", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &v1alpha1.HealthEnvironment{})
		return apierrors.IsNotFound(err), "still there", client.IgnoreNotFound(err)
	})
}

// guardMode is the stored spec.isolation.mode of environment name.
func guardMode(t *testing.T, name string) v1alpha1.IsolationMode {
	t.Helper()
	env := &v1alpha1.HealthEnvironment{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, env); err != nil {
		t.Fatal(err)
	}
	return env.Spec.Isolation.Mode
}

// guardSetResponders sets data.responderGroups of the parameter ConfigMap.
func guardSetResponders(t *testing.T, groups string) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: guardParamsNamespace, Name: guardParamsName}}
	patch := fmt.Sprintf(`{"data":{"responderGroups":%q}}`, groups)
	if err := k8sClient.Patch(context.Background(), cm, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

// guardRestoreParams re-applies config/guardrails and waits until the
// default responder group may fence env again, so that later tests see the
// shipped configuration.
func guardRestoreParams(t *testing.T, s *guardSession, env *v1alpha1.HealthEnvironment) {
	t.Helper()
	kubectl(t, "apply", "-k", guardrailsKustomization)
	guardEventuallyAllowed(t, "the default responder group fences again", func(ctx context.Context) error {
		return s.responder.client.Patch(ctx, env.DeepCopy(), client.RawPatch(types.MergePatchType,
			[]byte(`{"spec":{"isolation":{"mode":"Fenced","reason":"e2e"}}}`)), client.DryRunAll)
	})
}

// guardUpsert creates obj, or updates it when it exists.
func guardUpsert(t *testing.T, obj client.Object) {
	t.Helper()
	ctx := context.Background()
	err := k8sClient.Create(ctx, obj)
	if apierrors.IsAlreadyExists(err) {
		existing := obj.DeepCopyObject().(client.Object)
		if err = k8sClient.Get(ctx, clientKey(obj), existing); err == nil {
			obj.SetResourceVersion(existing.GetResourceVersion())
			err = k8sClient.Update(ctx, obj)
		}
	}
	if err != nil {
		t.Fatalf("writing %T %s: %v", obj, obj.GetName(), err)
	}
}

// guardExec runs `kubectl exec` into pod as u and returns what kubectl said.
func guardExec(u guardUser, ns, pod string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"exec", "-n", ns, pod, "--as=" + u.name}
	for _, g := range u.groups {
		args = append(args, "--as-group="+g)
	}
	out, _ := exec.CommandContext(ctx, kubectlPath(), append(args, "--", "true")...).CombinedOutput()
	return string(out)
}

func guardConfigMap(ns string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "guard-" + rand.String(5)},
		Data:       map[string]string{"e2e": "guardrails"},
	}
}

// guardAllowAll is the NetworkPolicy that would re-open every flow.
func guardAllowAll(ns string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "allow-all"},
		Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{}},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{}},
		},
	}
}

func guardPodRef(ns, name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func guardFence() client.Patch {
	return client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+v1alpha1.LabelFenced+`":"true"}}}`))
}

func guardUnfence() client.Patch {
	return client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+v1alpha1.LabelFenced+`":null}}}`))
}

// guardDenied checks that err is policy's denial with a message containing
// every part.
func guardDenied(t *testing.T, err error, policy string, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("allowed; want a denial by ValidatingAdmissionPolicy %s", policy)
		return
	}
	if !guardIsDenial(err, policy) {
		t.Errorf("want a denial by ValidatingAdmissionPolicy %s, got %v", policy, err)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("the denial does not say %q:\n%v", p, err)
		}
	}
}

// guardIsDenial reports whether err is policy's denial: Forbidden from its
// validations, or Invalid when the API server cannot evaluate it because its
// parameter is missing (and the binding says Deny).
func guardIsDenial(err error, policy string) bool {
	if err == nil || !strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+policy+"'") {
		return false
	}
	if strings.Contains(err.Error(), guardMsgNoParams) {
		return apierrors.IsInvalid(err)
	}
	return apierrors.IsForbidden(err)
}

func guardAllowed(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

// guardEventuallyDenied retries try until policy denies it with a message
// containing part: policies, their parameter and RBAC load asynchronously.
func guardEventuallyDenied(t *testing.T, timeout time.Duration, what, policy, part string, try func(context.Context) error) {
	t.Helper()
	eventually(t, timeout, what, func(ctx context.Context) (bool, string, error) {
		err := try(ctx)
		return guardIsDenial(err, policy) && strings.Contains(err.Error(), part), fmt.Sprint(err), nil
	})
}

// guardEventuallyAllowed retries try until it succeeds.
func guardEventuallyAllowed(t *testing.T, what string, try func(context.Context) error) {
	t.Helper()
	eventually(t, 30*time.Second, what, func(ctx context.Context) (bool, string, error) {
		err := try(ctx)
		return err == nil, fmt.Sprint(err), nil
	})
}
