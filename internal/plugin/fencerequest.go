package plugin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/careplane/careplane/api/v1alpha1"
)

// A fleet fence (fence --selector) is one FenceRequest first and the
// environments' specs second. The operator matches the request's selector
// once and writes every matched environment's deny-all policy at once,
// without the ~10 ms of API server CPU that each HealthEnvironment write
// costs ahead of it; at 500 environments on the 2-core bench machine the
// last deny policy existed 1.58 s after the command started, against 13.84 s
// through the specs (docs/benchmarks.md). The specs are written next,
// so that each environment's own spec.isolation holds its fence (and the
// request, holding none, completes): a fence is lifted per environment, by
// restore, and never by deleting the request.

const (
	// denyWaitMax bounds the wait for a request's deny-all policies: the
	// fences go ahead after it anyway (the specs say Fenced, and the
	// operator fences each), only without the head start.
	denyWaitMax = 30 * time.Second
	// denyWaitPoll is how often the request is read while waiting: a
	// Get of one object, cheap next to the fleet's writes.
	denyWaitPoll = 100 * time.Millisecond
)

// fenceSelector converts --selector, in kubectl's syntax, into the selector
// of a FenceRequest. It refuses what kubectl would accept but a request
// cannot say (numeric comparisons), and an empty selector, which would fence
// every environment in the cluster.
//
// It converts from the parsed requirements rather than with
// metav1.ParseToLabelSelector, which refuses `key!=value` and keeps only the
// last of `key=a,key=b`; here the first becomes NotIn [value] and the second
// stays a requirement of its own (In [b]), so the request matches exactly
// what kubectl get -l matches.
func fenceSelector(s string) (v1alpha1.LabelSelector, error) {
	var sel v1alpha1.LabelSelector
	reqs, err := labels.ParseToRequirements(s)
	if err != nil {
		return sel, fmt.Errorf("--selector %q is not a label selector: %w", s, err)
	}
	if len(reqs) == 0 {
		return sel, fmt.Errorf("--selector %q selects every environment in the cluster: name the ones to fence, e.g. --selector region=wales", s)
	}
	for _, r := range reqs {
		var op metav1.LabelSelectorOperator
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals:
			v := r.ValuesUnsorted()[0] // the parser allows exactly one
			if _, dup := sel.MatchLabels[r.Key()]; !dup {
				if sel.MatchLabels == nil {
					sel.MatchLabels = map[string]v1alpha1.LabelValue{}
				}
				sel.MatchLabels[r.Key()] = v1alpha1.LabelValue(v)
				continue
			}
			op = metav1.LabelSelectorOpIn
		case selection.In:
			op = metav1.LabelSelectorOpIn
		case selection.NotIn, selection.NotEquals:
			op = metav1.LabelSelectorOpNotIn
		case selection.Exists:
			op = metav1.LabelSelectorOpExists
		case selection.DoesNotExist:
			op = metav1.LabelSelectorOpDoesNotExist
		default: // > and <
			return sel, fmt.Errorf("--selector %q: %q is compared as a number, which a FenceRequest's selector cannot say: use =, !=, in, notin, KEY or !KEY",
				s, r.Key())
		}
		req := v1alpha1.LabelSelectorRequirement{Key: r.Key(), Operator: op}
		for _, v := range r.ValuesUnsorted() {
			req.Values = append(req.Values, v1alpha1.LabelValue(v))
		}
		slices.Sort(req.Values)
		sel.MatchExpressions = append(sel.MatchExpressions, req)
	}
	return sel, nil
}

// newFenceRequest is the FenceRequest of a fleet fence. Its name is
// generated from the ticket, so that the request of an incident is easy to
// find (fence-inc-2042-x7k2q), or is fence-<random> without one.
func newFenceRequest(sel v1alpha1.LabelSelector, reason, ticket string, workloads v1alpha1.WorkloadAction) *v1alpha1.FenceRequest {
	return &v1alpha1.FenceRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: fenceRequestPrefix(ticket)},
		Spec: v1alpha1.FenceRequestSpec{
			Selector:  sel,
			Reason:    reason,
			Ticket:    ticket,
			Workloads: workloads,
		},
	}
}

// fenceRequestPrefix is the generateName of a request for ticket: a DNS
// label (the ticket lower-cased, with '-' for '_' and '.'), within the
// 63 characters of a name once the API server appends its 5 random ones.
func fenceRequestPrefix(ticket string) string {
	t := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		default:
			return '-'
		}
	}, ticket)
	t = strings.Trim(t, "-")
	if t == "" {
		return "fence-"
	}
	const maxPrefix = 63 - 5
	p := "fence-" + t
	if len(p) > maxPrefix-1 {
		p = strings.TrimRight(p[:maxPrefix-1], "-")
	}
	return p + "-"
}

// requestsNotServed says whether err, from creating a FenceRequest, means
// the cluster does not serve the kind (its CRD is not installed: an older
// careplane), so that the fence falls back to writing each environment's
// spec. Any other error stops the fence: a request refused by RBAC or by the
// fence-request guard would be refused as spec writes too, and a failing
// API server fails those as well.
func requestsNotServed(err error) bool {
	return meta.IsNoMatchError(err) || apierrors.IsNotFound(err)
}

// denyWait is the progress of a FenceRequest's deny-all policies, as its
// status reports them.
type denyWait struct {
	// matched: the operator recorded the environments (Matched is set).
	matched bool
	// none: the selector matched no environment.
	none bool
	// inPlace: every matched environment's deny-all policy exists.
	inPlace bool
	// settled: every deny-all policy careplane can write now exists; the
	// environments without one are not built yet, and are fenced as they
	// are built, which may take minutes.
	settled bool
	// count and of: deny policies in place, of so many environments.
	count, of int32
}

// denyProgress reads fr's status.
func denyProgress(fr *v1alpha1.FenceRequest) denyWait {
	w := denyWait{count: fr.Status.DenyPolicies, of: fr.Status.Matched}
	// matchedAt, the environments and the conditions are one status write.
	w.matched = fr.Status.MatchedAt != nil
	w.none = w.matched && fr.Status.Matched == 0
	w.inPlace = fr.DenyPoliciesInPlace()
	w.settled = fr.DenyPoliciesSettled()
	return w
}

// done says whether to stop waiting: the selector matched nothing, or every
// deny policy careplane can write now is in place, as the request's
// DenyPoliciesInPlace condition says.
func (w denyWait) done() bool {
	return w.none || (w.matched && (w.inPlace || w.settled))
}

func (w denyWait) String() string {
	switch {
	case !w.matched:
		return "waiting for careplane to match the selector"
	case w.none:
		return "the selector matched no HealthEnvironment"
	case w.settled && !w.inPlace:
		return fmt.Sprintf("deny-all policy in place for %d of %d environments; the others are fenced as they are built", w.count, w.of)
	default:
		return fmt.Sprintf("deny-all policy in place for %d of %d environments", w.count, w.of)
	}
}

// fenceByRequest creates the FenceRequest of a fleet fence, waits (bounded)
// until its deny-all policies are in place, and returns the environments it
// matched: the ones whose specs the fence writes next. When the cluster does
// not serve FenceRequests, or the operator does not match the request in
// time, it returns the environments selector matches now, read here, as a
// fleet fence did before requests.
func (o *options) fenceByRequest(ctx context.Context, selector string, fr *v1alpha1.FenceRequest) ([]string, error) {
	start := time.Now()
	if err := o.client.Create(ctx, fr); err != nil {
		if requestsNotServed(err) {
			fmt.Fprintf(o.streams.ErrOut, "Warning: this cluster does not serve FenceRequests (%v): "+
				"fencing each environment through its spec instead, which is slower for many environments\n", err)
			return o.matching(ctx, selector, fr.Spec.Selector)
		}
		var status apierrors.APIStatus
		if errors.As(err, &status) {
			// The API server's message verbatim: the fence-request
			// guard's denial says who may fence, RBAC's what is missing.
			return nil, withCause(err, "creating the FenceRequest: %s", status.Status().Message)
		}
		return nil, fmt.Errorf("creating the FenceRequest: %w", err)
	}
	fmt.Fprintf(o.streams.Out, "FenceRequest %s created: fencing every HealthEnvironment matching %q\n", fr.Name, selector)

	bound := denyWaitMax
	if o.timeout > 0 {
		bound = min(bound, o.timeout)
	}
	w, err := o.waitDenyPolicies(ctx, fr, bound)
	took := time.Since(start).Round(100 * time.Millisecond)
	switch {
	case err != nil && !wait.Interrupted(err):
		return nil, err
	case w.none:
		// Nothing was fenced: the request would only clutter the list
		// of fences. A responder may delete it (the guard lets them).
		if derr := o.client.Delete(ctx, fr); client.IgnoreNotFound(derr) != nil {
			fmt.Fprintf(o.streams.ErrOut, "Warning: deleting FenceRequest %s, which fences nothing: %v\n", fr.Name, derr)
		}
		return nil, noMatch(selector)
	case !w.matched:
		// The operator is down or far behind. Withdraw the request, so
		// that it does not match the selector later, when the labels may
		// say something else (a request that matched meanwhile holds its
		// environments until their specs, written next, say Fenced: a
		// delete lifts nothing), and fence through the specs.
		fmt.Fprintf(o.streams.ErrOut, "Warning: careplane did not match FenceRequest %s within %s; withdrawing it "+
			"and fencing each environment through its spec (the operator fences them when it runs)\n", fr.Name, bound)
		if derr := o.client.Delete(ctx, fr); client.IgnoreNotFound(derr) != nil {
			fmt.Fprintf(o.streams.ErrOut, "Warning: deleting FenceRequest %s: %v; delete it, or careplane fences "+
				"what its selector matches when it next runs\n", fr.Name, derr)
		}
		return o.matching(ctx, selector, fr.Spec.Selector)
	case !w.settled && !w.inPlace:
		fmt.Fprintf(o.streams.ErrOut, "Warning: FenceRequest %s: %s after %s; writing the fences anyway "+
			"(an environment not yet built is fenced as it is built)\n", fr.Name, w, took)
	default:
		fmt.Fprintf(o.streams.Out, "FenceRequest %s: %s (%s)\n", fr.Name, w, took)
	}
	return fr.Status.Environments, nil
}

// waitDenyPolicies polls fr every denyWaitPoll until denyWait.done, for at
// most bound, printing its progress to stderr whenever it changes. fr is
// left as last read.
func (o *options) waitDenyPolicies(ctx context.Context, fr *v1alpha1.FenceRequest, bound time.Duration) (denyWait, error) {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	start := time.Now()
	var w denyWait
	last := ""
	err := wait.PollUntilContextCancel(ctx, denyWaitPoll, true, func(ctx context.Context) (bool, error) {
		got := &v1alpha1.FenceRequest{}
		if err := o.client.Get(ctx, client.ObjectKeyFromObject(fr), got); err != nil {
			if apierrors.IsNotFound(err) {
				return false, fmt.Errorf("FenceRequest %s was deleted while careplane wrote its deny policies", fr.Name)
			}
			return false, nil // retried until the bound: the request is written
		}
		*fr = *got
		w = denyProgress(fr)
		if msg := w.String(); msg != last {
			fmt.Fprintf(o.streams.ErrOut, "  FenceRequest %s [%s]: %s\n", fr.Name, time.Since(start).Round(100*time.Millisecond), msg)
			last = msg
		}
		return w.done(), nil
	})
	return w, err
}

// matching lists the environments sel matches now, by name.
func (o *options) matching(ctx context.Context, selector string, sel v1alpha1.LabelSelector) ([]string, error) {
	ls, err := metav1.LabelSelectorAsSelector(sel.ToMeta())
	if err != nil {
		return nil, fmt.Errorf("--selector %q: %w", selector, err)
	}
	var list v1alpha1.HealthEnvironmentList
	if err := o.client.List(ctx, &list, client.MatchingLabelsSelector{Selector: ls}); err != nil {
		return nil, fmt.Errorf("listing HealthEnvironments: %w", err)
	}
	if len(list.Items) == 0 {
		return nil, noMatch(selector)
	}
	names := make([]string, 0, len(list.Items))
	for _, e := range list.Items {
		names = append(names, e.Name)
	}
	return names, nil
}

// noMatch is the error of a fleet fence whose selector matches no
// environment: not found, for ExitCode.
func noMatch(selector string) error {
	gr := v1alpha1.GroupVersion.WithResource("healthenvironments").GroupResource()
	return withCause(apierrors.NewNotFound(gr, selector), "no HealthEnvironment matches selector %q: nothing fenced", selector)
}

// fenceRequests lists the FenceRequests, for status to show the fences they
// hold. Without them status still shows every environment as its spec says:
// a cluster that does not serve the kind has none, and a user who may not
// list them is told what is missing.
func (o *options) fenceRequests(ctx context.Context) []v1alpha1.FenceRequest {
	var list v1alpha1.FenceRequestList
	if err := o.client.List(ctx, &list); err != nil {
		if !requestsNotServed(err) {
			fmt.Fprintf(o.streams.ErrOut, "Warning: listing FenceRequests: %v; environments held by one are shown as their spec says\n", err)
		}
		return nil
	}
	return list.Items
}
