package plugin

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/careplane/careplane/api/v1alpha1"
)

func TestFenceSelector(t *testing.T) {
	type labels = map[string]v1alpha1.LabelValue
	type req = v1alpha1.LabelSelectorRequirement
	vals := func(vs ...v1alpha1.LabelValue) []v1alpha1.LabelValue { return vs }
	tests := []struct {
		selector string
		want     v1alpha1.LabelSelector
		wantErr  string
	}{
		{selector: "region=wales", want: v1alpha1.LabelSelector{MatchLabels: labels{"region": "wales"}}},
		{selector: "region==wales,supplier=acme", want: v1alpha1.LabelSelector{MatchLabels: labels{"region": "wales", "supplier": "acme"}}},
		{selector: "region in (wales, england),!retired", want: v1alpha1.LabelSelector{MatchExpressions: []req{
			{Key: "region", Operator: metav1.LabelSelectorOpIn, Values: vals("england", "wales")},
			{Key: "retired", Operator: metav1.LabelSelectorOpDoesNotExist},
		}}},
		{selector: "careplane.io/supplier,tier notin (test)", want: v1alpha1.LabelSelector{MatchExpressions: []req{
			{Key: "careplane.io/supplier", Operator: metav1.LabelSelectorOpExists},
			{Key: "tier", Operator: metav1.LabelSelectorOpNotIn, Values: vals("test")},
		}}},
		// metav1.ParseToLabelSelector refuses != ...
		{selector: "region!=scotland", want: v1alpha1.LabelSelector{MatchExpressions: []req{
			{Key: "region", Operator: metav1.LabelSelectorOpNotIn, Values: vals("scotland")},
		}}},
		// ... and would keep only region=england, fencing what kubectl get -l does not list.
		{selector: "region=wales,region=england", want: v1alpha1.LabelSelector{
			MatchLabels:      labels{"region": "wales"},
			MatchExpressions: []req{{Key: "region", Operator: metav1.LabelSelectorOpIn, Values: vals("england")}},
		}},
		{selector: " ", wantErr: `--selector " " selects every environment in the cluster: name the ones to fence`},
		{selector: "generation>2", wantErr: `--selector "generation>2": "generation" is compared as a number, which a FenceRequest's selector cannot say`},
		{selector: "region=wales=x", wantErr: `--selector "region=wales=x" is not a label selector:`},
	}
	for _, tt := range tests {
		t.Run(tt.selector, func(t *testing.T) {
			got, err := fenceSelector(tt.selector)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("fenceSelector(%q) = %+v, want %+v", tt.selector, got, tt.want)
			}
		})
	}
}

func TestFenceRequestPrefix(t *testing.T) {
	for ticket, want := range map[string]string{
		"":                                      "fence-",
		"INC-2042":                              "fence-inc-2042-",
		"ops_7.b":                               "fence-ops-7-b-",
		"_":                                     "fence-",
		strings.Repeat("A", 63):                 "fence-" + strings.Repeat("a", 51) + "-",
		"INC-" + strings.Repeat("9", 47) + "-x": "fence-inc-" + strings.Repeat("9", 47) + "-",
	} {
		got := fenceRequestPrefix(ticket)
		if got != want {
			t.Errorf("fenceRequestPrefix(%q) = %q, want %q", ticket, got, want)
		}
		if len(got) > 58 {
			t.Errorf("fenceRequestPrefix(%q) has %d characters: with the 5 random ones the name passes 63", ticket, len(got))
		}
	}
}

// TestRequestsNotServed: only a cluster without the kind falls back to spec
// writes; a refusal is the fence's answer.
func TestRequestsNotServed(t *testing.T) {
	gr := schema.GroupResource{Group: v1alpha1.GroupVersion.Group, Resource: "fencerequests"}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"no kind match (CRD not installed)", &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "careplane.io", Kind: "FenceRequest"}}, true},
		{"no resource match", &meta.NoResourceMatchError{PartialResource: gr.WithVersion("v1alpha1")}, true},
		{"resource not found (404)", apierrors.NewNotFound(gr, ""), true},
		{"wrapped", fmt.Errorf("creating: %w", &meta.NoKindMatchError{}), true},
		{"forbidden by RBAC or the guard", apierrors.NewForbidden(gr, "", errors.New("only members of x")), false},
		{"invalid", apierrors.NewInvalid(schema.GroupKind{Group: "careplane.io", Kind: "FenceRequest"}, "", nil), false},
		{"API server down", errors.New("connection refused"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := requestsNotServed(tt.err); got != tt.want {
				t.Errorf("requestsNotServed(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestDenyWaitDone(t *testing.T) {
	at := metav1.NewTime(time.Date(2026, 11, 21, 7, 0, 0, 0, time.UTC))
	fr := func(matched, deny int32, inPlace bool, reason string) *v1alpha1.FenceRequest {
		fr := &v1alpha1.FenceRequest{Status: v1alpha1.FenceRequestStatus{MatchedAt: &at, Matched: matched, DenyPolicies: deny}}
		st := metav1.ConditionFalse
		if inPlace {
			st = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&fr.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionDenyPoliciesInPlace, Status: st, Reason: reason})
		return fr
	}
	for _, tt := range []struct {
		name    string
		fr      *v1alpha1.FenceRequest
		want    bool
		wantMsg string
	}{
		{"not matched yet", &v1alpha1.FenceRequest{}, false, "waiting for careplane to match the selector"},
		{"matched, writing", fr(500, 0, false, v1alpha1.ReasonWritingDenyPolicies), false, "deny-all policy in place for 0 of 500 environments"},
		{"every one in place", fr(500, 500, true, v1alpha1.ReasonDenyPoliciesWritten), true, "deny-all policy in place for 500 of 500 environments"},
		// However long the count stays: the operator says it is still writing.
		{"some, still writing", fr(500, 499, false, v1alpha1.ReasonWritingDenyPolicies), false, "deny-all policy in place for 499 of 500 environments"},
		{"the rest are not built", fr(500, 499, false, v1alpha1.ReasonAwaitingEnvironments), true,
			"deny-all policy in place for 499 of 500 environments; the others are fenced as they are built"},
		{"matched nothing", fr(0, 0, true, v1alpha1.ReasonNoEnvironments), true, "the selector matched no HealthEnvironment"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := denyProgress(tt.fr)
			if got := w.done(); got != tt.want {
				t.Errorf("done = %v, want %v (%+v)", got, tt.want, w)
			}
			if w.String() != tt.wantMsg {
				t.Errorf("progress %q, want %q", w.String(), tt.wantMsg)
			}
		})
	}
}

// TestFenceByRequest drives the fleet fence's first step against a fake API
// server: the request created as the flags say, the operator's match
// simulated on reads, and the fallbacks.
func TestFenceByRequest(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	env := func(name, region string) *v1alpha1.HealthEnvironment {
		return &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"region": region}}}
	}
	at := metav1.NewTime(time.Date(2026, 11, 21, 7, 0, 0, 0, time.UTC))
	// operator fills in the status as careplane would: matched on the
	// second read, every deny policy in place on the third.
	operator := func(envs []string) func(*v1alpha1.FenceRequest, int) {
		return func(fr *v1alpha1.FenceRequest, read int) {
			if read < 2 {
				return
			}
			fr.Status.MatchedAt, fr.Status.Matched, fr.Status.Environments = &at, int32(len(envs)), envs
			in := metav1.ConditionFalse
			if read >= 3 || len(envs) == 0 {
				fr.Status.DenyPolicies, in = int32(len(envs)), metav1.ConditionTrue
			}
			meta.SetStatusCondition(&fr.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionDenyPoliciesInPlace, Status: in, Reason: "R"})
		}
	}
	gr := schema.GroupResource{Group: v1alpha1.GroupVersion.Group, Resource: "fencerequests"}
	tests := []struct {
		name string
		// createErr is what the API server answers the create with.
		createErr error
		// status simulates the operator on the n-th read of the request.
		status  func(fr *v1alpha1.FenceRequest, read int)
		timeout time.Duration
		want    []string
		wantErr string
		// wantOut and wantStderr are parts of what the command prints.
		wantOut, wantStderr []string
		wantRequest         bool // the request is left in place
	}{{
		// The request's record, not a fresh list: wales-3 (labelled
		// since) is not fenced, wales-2 (relabelled since) is.
		name:   "the environments the request matched",
		status: operator([]string{"wales-1", "wales-2"}),
		want:   []string{"wales-1", "wales-2"},
		wantOut: []string{"FenceRequest fence-inc-2042-", ` created: fencing every HealthEnvironment matching "region=wales"`,
			": deny-all policy in place for 2 of 2 environments ("},
		wantStderr:  []string{"waiting for careplane to match the selector", "deny-all policy in place for 0 of 2 environments"},
		wantRequest: true,
	}, {
		name:       "a request that matched nothing fences nothing, and is deleted",
		status:     operator(nil),
		wantErr:    `no HealthEnvironment matches selector "region=wales": nothing fenced`,
		wantStderr: []string{"the selector matched no HealthEnvironment"},
	}, {
		name:       "without the kind served, the environments the selector matches now",
		createErr:  &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "careplane.io", Kind: "FenceRequest"}},
		want:       []string{"wales-1", "wales-3"},
		wantStderr: []string{"Warning: this cluster does not serve FenceRequests", "fencing each environment through its spec instead"},
	}, {
		name: "a refused request stops the fence",
		createErr: apierrors.NewForbidden(gr, "", errors.New("ValidatingAdmissionPolicy 'careplane-fence-request-guard' with binding "+
			"'careplane-fence-request-guard' denied request: only members of careplane:responders may create a FenceRequest")),
		wantErr: "creating the FenceRequest: fencerequests.careplane.io is forbidden: ValidatingAdmissionPolicy " +
			"'careplane-fence-request-guard' with binding 'careplane-fence-request-guard' denied request: only members of careplane:responders",
	}, {
		name:       "a request careplane does not match in time is withdrawn, and the selector matched here",
		status:     func(*v1alpha1.FenceRequest, int) {},
		timeout:    300 * time.Millisecond,
		want:       []string{"wales-1", "wales-3"},
		wantStderr: []string{"Warning: careplane did not match FenceRequest fence-inc-2042-", "within 300ms; withdrawing it"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reads atomic.Int32
			c := fake.NewClientBuilder().WithScheme(scheme).
				WithObjects(env("wales-1", "wales"), env("wales-2", "england"), env("wales-3", "wales")).
				WithInterceptorFuncs(interceptor.Funcs{
					Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
						if tt.createErr != nil {
							return tt.createErr
						}
						return c.Create(ctx, obj, opts...)
					},
					Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
						if err := c.Get(ctx, key, obj, opts...); err != nil {
							return err
						}
						if fr, ok := obj.(*v1alpha1.FenceRequest); ok {
							tt.status(fr, int(reads.Add(1)))
						}
						return nil
					},
				}).Build()
			var stdout, stderr bytes.Buffer
			o := &options{client: c, timeout: cmp.Or(tt.timeout, 2*time.Minute),
				streams: genericiooptions.IOStreams{Out: &stdout, ErrOut: &stderr}}
			sel, err := fenceSelector("region=wales")
			if err != nil {
				t.Fatal(err)
			}
			got, err := o.fenceByRequest(context.Background(), "region=wales",
				newFenceRequest(sel, "supplier breach", "INC-2042", v1alpha1.WorkloadsStop))
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("environments = %v, want %v", got, tt.want)
			}
			mustHave(t, "stdout", stdout.String(), tt.wantOut)
			mustHave(t, "stderr", stderr.String(), tt.wantStderr)

			var left v1alpha1.FenceRequestList
			if err := c.List(context.Background(), &left); err != nil {
				t.Fatal(err)
			}
			if n := len(left.Items); (n == 1) != tt.wantRequest || n > 1 {
				t.Fatalf("%d FenceRequests left, want the request left: %v", n, tt.wantRequest)
			}
			if tt.wantRequest {
				fr := left.Items[0]
				want := v1alpha1.FenceRequestSpec{Selector: sel, Reason: "supplier breach", Ticket: "INC-2042", Workloads: v1alpha1.WorkloadsStop}
				if !reflect.DeepEqual(fr.Spec, want) || !strings.HasPrefix(fr.Name, "fence-inc-2042-") {
					t.Errorf("the request is %s %+v, want fence-inc-2042-* %+v", fr.Name, fr.Spec, want)
				}
			}
		})
	}
}

func mustHave(t *testing.T, what, out string, parts []string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(out, p) {
			t.Errorf("%s lacks %q:\n%s", what, p, out)
		}
	}
}
