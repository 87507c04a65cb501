package controllers

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/metrics"
)

// The state of each environment is exported by a collector that reads the
// manager's cache when Prometheus scrapes, as cert-manager exports its
// certificates' conditions: no reconciler has to remember to set a gauge,
// a series is never older than the cache, and a deleted environment's
// series are gone at the next scrape.
//
// Only the leader exports them (with leader election off, the one
// replica is the leader): a standby replica's cache holds the same
// environments, and two copies of each series would page twice. The alert
// rules aggregate by environment, so a change of leader does not reset them.
//
// The metric names and their labels are listed once, in internal/metrics,
// which the tests of the alert rules and of the dashboard check against.

// Counters incremented where their event happens.
var (
	// fenceIncompleteReconciles counts reconciles of a fence that ended
	// with the fence not complete (a step failed, or isolation is not
	// verified yet): each is retried, so a steady rate is a stuck fence.
	fenceIncompleteReconciles = prometheus.NewCounter(prometheus.CounterOpts{
		Name: metrics.FenceIncompleteReconciles,
		Help: "Reconciles of a fence that ended with the fence incomplete (Fenced=False/FenceIncomplete); each is retried.",
	})
	// restoresBlocked counts restores that became blocked
	// (Restoring=False/RestoreBlocked), e.g. on an unknown restoreRevision.
	restoresBlocked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: metrics.RestoresBlocked,
		Help: "Restores that became blocked (Restoring=False/RestoreBlocked); the fence stays.",
	})
	// guardrailCheckErrors counts failed reads of the guardrail bindings
	// or their parameters (other than a missing ConfigMap).
	guardrailCheckErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: metrics.GuardrailCheckErrors,
		Help: "Failed reads of the guardrail bindings or of their parameter ConfigMaps (a missing ConfigMap is not an error).",
	})
)

func init() {
	ctrlmetrics.Registry.MustRegister(stateMetrics, fenceIncompleteReconciles, restoresBlocked, guardrailCheckErrors)
}

// stateMetrics is the one collector of the process; registerStateMetrics
// points it at a manager (the last one set up, in tests that set up
// several).
var stateMetrics = &stateCollector{}

type stateCollector struct {
	mu sync.Mutex
	// reader is the manager's cache.
	reader client.Reader
	// elected is closed once this replica leads.
	elected <-chan struct{}
	// guardrails is the last check of the guardrails' parameters.
	guardrails *guardrailCheck
}

// guardrailCheck is the outcome of one read of the guardrail bindings.
type guardrailCheck struct {
	at       time.Time
	bindings []metrics.GuardrailBinding
}

// registerStateMetrics points the collector at mgr and starts the leader's
// periodic check of the guardrails' parameters.
func registerStateMetrics(mgr ctrl.Manager) error {
	stateMetrics.mu.Lock()
	stateMetrics.reader, stateMetrics.elected, stateMetrics.guardrails = mgr.GetCache(), mgr.Elected(), nil
	stateMetrics.mu.Unlock()
	return mgr.Add(&guardrailWatch{reader: mgr.GetAPIReader(), every: guardrailCheckPeriod})
}

// guardrailCheckPeriod is how often the leader reads the guardrail bindings
// and their parameter ConfigMaps: a few requests a period.
const guardrailCheckPeriod = 30 * time.Second

// Describe sends every descriptor of the collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	metrics.DescribeState(ch)
}

// Collect reads every environment and FenceRequest from the cache and sends
// their series, when this replica leads.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	reader, elected, guardrails := c.reader, c.elected, c.guardrails
	c.mu.Unlock()
	if reader == nil || !closed(elected) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var envs v1alpha1.HealthEnvironmentList
	var requests v1alpha1.FenceRequestList
	if err := reader.List(ctx, &envs, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "Listing HealthEnvironments for metrics")
		return
	}
	if err := reader.List(ctx, &requests, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "Listing FenceRequests for metrics")
		return
	}
	for _, m := range metrics.EnvironmentSeries(envs.Items, requests.Items) {
		ch <- m
	}
	if guardrails != nil {
		for _, m := range metrics.GuardrailSeries(guardrails.at, guardrails.bindings) {
			ch <- m
		}
	}
}

func closed(ch <-chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// countFenceOutcome counts a reconcile that leaves a fence incomplete.
func countFenceOutcome(status *v1alpha1.HealthEnvironmentStatus) {
	if c := findCondition(status.Conditions, v1alpha1.ConditionFenced); c != nil && c.Reason == v1alpha1.ReasonFenceIncomplete {
		fenceIncompleteReconciles.Inc()
	}
}

// countTransitions counts the transitions of a status write that the
// counters track: a restore becoming blocked.
func countTransitions(before, after *v1alpha1.HealthEnvironmentStatus) {
	if c := findCondition(after.Conditions, v1alpha1.ConditionRestoring); c != nil && c.Reason == v1alpha1.ReasonRestoreBlocked {
		if b := findCondition(before.Conditions, v1alpha1.ConditionRestoring); b == nil || b.Reason != v1alpha1.ReasonRestoreBlocked {
			restoresBlocked.Inc()
		}
	}
}

// Reading the guardrail bindings; their ConfigMap is read through a Role on
// it alone (config/rbac/guardrails_params_role.yaml).
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicybindings,verbs=list

// The guardrails' ValidatingAdmissionPolicyBindings carry this label, from
// the chart and from config/guardrails alike.
const guardrailComponentLabel = "app.kubernetes.io/component"

// guardrailWatch reads careplane's guardrail bindings and checks that the
// parameter ConfigMap each names exists: without it the policy denies every
// request it guards, responders' and careplane's included. It runs on the
// leader (a manager Runnable).
type guardrailWatch struct {
	reader client.Reader
	every  time.Duration
}

// Start checks at once and then every period until ctx ends.
func (w *guardrailWatch) Start(ctx context.Context) error {
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		w.check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (w *guardrailWatch) check(ctx context.Context) {
	g, err := readGuardrails(ctx, w.reader)
	if err != nil {
		guardrailCheckErrors.Inc()
		log.FromContext(ctx).Error(err, "Checking the guardrails' parameters")
		return
	}
	stateMetrics.mu.Lock()
	stateMetrics.guardrails = g
	stateMetrics.mu.Unlock()
}

// readGuardrails reads the guardrail bindings and, for each that names its
// parameters, whether that ConfigMap exists. The ConfigMap is read by name
// (RBAC grants get on it alone, in the release namespace).
func readGuardrails(ctx context.Context, c client.Reader) (*guardrailCheck, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var bindings admissionv1.ValidatingAdmissionPolicyBindingList
	if err := c.List(ctx, &bindings, client.MatchingLabels{guardrailComponentLabel: "guardrails"}); err != nil {
		return nil, err
	}
	g := &guardrailCheck{at: time.Now()}
	exists := map[client.ObjectKey]bool{}
	for _, b := range bindings.Items {
		ref := b.Spec.ParamRef
		if ref == nil || ref.Name == "" {
			continue
		}
		key := client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}
		present, seen := exists[key]
		if !seen {
			err := c.Get(ctx, key, &corev1.ConfigMap{})
			if err != nil && !apierrors.IsNotFound(err) {
				return nil, err
			}
			present = err == nil
			exists[key] = present
		}
		g.bindings = append(g.bindings, metrics.GuardrailBinding{Name: b.Name, Namespace: key.Namespace, ConfigMap: key.Name, Present: present})
	}
	return g, nil
}
