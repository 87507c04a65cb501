package controllers

import (
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/ssa"
)

const fieldOwner = ssa.FieldOwner

// scope is what one reconcile of one environment gathers and decides; the
// deferred status write turns it into conditions.
type scope struct {
	env    *v1alpha1.HealthEnvironment
	now    time.Time
	names  build.Names
	status *v1alpha1.HealthEnvironmentStatus

	// conflict names a namespace careplane needs but does not own.
	conflict string
	// applyFailed is the error of writing children, if any.
	applyFailed error
	// services is the readiness gathered per service and site.
	services []v1alpha1.ServiceStatus
	// stalled names Deployments that report they cannot make progress.
	stalled []string
}

func newScope(env *v1alpha1.HealthEnvironment, now time.Time) *scope {
	st := env.Status.DeepCopy()
	names := build.NamespaceNames(env)
	st.Namespaces = &v1alpha1.Namespaces{Front: names.Front, Primary: names.Primary, Standby: names.Standby}
	return &scope{env: env, now: now, names: names, status: st}
}

// sites are the site namespaces this environment has.
func (s *scope) sites() []v1alpha1.Site {
	if build.HasStandby(s.env) {
		return []v1alpha1.Site{v1alpha1.SitePrimary, v1alpha1.SiteStandby}
	}
	return []v1alpha1.Site{v1alpha1.SitePrimary}
}

func (s *scope) namespaceOf(site v1alpha1.Site) string { return s.names.ForSite(site) }

// namespaces are the desired namespaces, front first.
func (s *scope) namespaces() []*corev1ac.NamespaceApplyConfiguration {
	out := []*corev1ac.NamespaceApplyConfiguration{build.Namespace(s.env, s.names.Front, build.SiteLabelFront)}
	for _, site := range s.sites() {
		out = append(out, build.Namespace(s.env, s.namespaceOf(site), build.SiteLabel(site)))
	}
	return out
}

// servicesFor are the services that run on a site. The standby's workloads
// (critical services from the last known-good revision) come with failover.
func (s *scope) servicesFor(site v1alpha1.Site) []v1alpha1.Service {
	if site == v1alpha1.SitePrimary {
		return s.env.Spec.Services
	}
	return nil
}

// activeSite is the site the front Services send traffic to.
func (s *scope) activeSite() v1alpha1.Site { return v1alpha1.SitePrimary }

// credentialsRevision changes whenever credentials are rotated, and rolls
// the pods through their template annotation.
func (s *scope) credentialsRevision() string {
	if n := len(s.env.Status.Incidents); n > 0 {
		if t := s.env.Status.Incidents[n-1].RestoredAt; t != nil {
			return t.UTC().Format(time.RFC3339)
		}
	}
	return "initial"
}

// observeDeployment records a service's readiness from its Deployment (nil
// when the cache does not hold it yet).
func (s *scope) observeDeployment(site v1alpha1.Site, svc v1alpha1.Service, dep *appsv1.Deployment) {
	st := v1alpha1.ServiceStatus{Name: svc.Name, Site: site, Replicas: svc.ReplicaCount(), Image: svc.Image}
	if dep != nil && deploymentCurrent(dep) {
		st.ReadyReplicas = dep.Status.ReadyReplicas
	}
	if dep != nil {
		for _, c := range dep.Status.Conditions {
			if (c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse) ||
				(c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue) {
				s.stalled = append(s.stalled, fmt.Sprintf("%s/%s: %s", dep.Namespace, dep.Name, c.Message))
			}
		}
	}
	s.services = append(s.services, st)
}

// deploymentCurrent says the Deployment's status describes its current spec
// and every replica runs the current template.
func deploymentCurrent(dep *appsv1.Deployment) bool {
	want := int32(1)
	if dep.Spec.Replicas != nil {
		want = *dep.Spec.Replicas
	}
	return dep.Status.ObservedGeneration >= dep.Generation &&
		dep.Status.UpdatedReplicas == want && dep.Status.Replicas == want
}

// finish turns what the reconcile gathered into the status conditions.
func (s *scope) finish(reconcileErr error) {
	st := s.status
	gen := s.env.Generation
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
		})
	}

	ready, total := 0, 0
	var unready []string
	active := s.activeSite()
	for _, svc := range s.services {
		if svc.Site != active {
			continue
		}
		total++
		if svc.ReadyReplicas >= svc.Replicas {
			ready++
		} else {
			unready = append(unready, fmt.Sprintf("%s (%d/%d ready)", svc.Name, svc.ReadyReplicas, svc.Replicas))
		}
	}
	if s.services != nil || reconcileErr == nil {
		st.Services = s.services
		st.ReadyServices = fmt.Sprintf("%d/%d", ready, total)
	}

	switch {
	case s.conflict != "":
		msg := fmt.Sprintf("Namespace %s already exists and was not created by careplane for this environment; careplane never adopts a namespace. Delete or rename it, or rename this environment", s.conflict)
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonNamespaceConflict, msg)
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonNamespaceConflict, msg)
	case s.applyFailed != nil || reconcileErr != nil:
		err := s.applyFailed
		if err == nil {
			err = reconcileErr
		}
		msg := truncate("Writing the environment's objects failed: "+err.Error(), 1024)
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonApplyFailed, msg)
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonApplyFailed, msg)
	case len(s.stalled) > 0:
		msg := truncate("Deployments cannot make progress: "+strings.Join(s.stalled, "; "), 1024)
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonServicesUnavailable, msg)
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonServicesUnavailable, msg)
	case len(unready) > 0:
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonProvisioning,
			truncate("Waiting for services to become ready: "+strings.Join(unready, ", "), 1024))
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "Services are rolling out")
	default:
		set(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonAvailable,
			fmt.Sprintf("All %d services are ready on the %s site", total, strings.ToLower(string(active))))
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "Nothing is degraded")
	}

	// The conditions of fence and failover, until those behaviours set them.
	setDefault := func(t string, status metav1.ConditionStatus, reason, msg string) {
		if meta.FindStatusCondition(st.Conditions, t) == nil {
			set(t, status, reason, msg)
		}
	}
	setDefault(v1alpha1.ConditionFenced, metav1.ConditionFalse, v1alpha1.ReasonNotFenced, "isolation.mode is None")
	setDefault(v1alpha1.ConditionServingFromStandby, metav1.ConditionFalse, v1alpha1.ReasonServingFromPrimary, "Traffic goes to the primary site")
	setDefault(v1alpha1.ConditionIsolationVerified, metav1.ConditionUnknown, v1alpha1.ReasonNotEvaluated, "The environment is not fenced; there is nothing to verify")
	setDefault(v1alpha1.ConditionRestoring, metav1.ConditionFalse, v1alpha1.ReasonNotRestoring, "No restore is under way")
}

// isReady reports whether the gathered state makes the environment Ready.
func (s *scope) isReady() bool {
	c := meta.FindStatusCondition(s.status.Conditions, v1alpha1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue
}

// event is one event to record on a status transition.
type event struct {
	eventType, reason, action, note string
}

// transitions are the events a status change deserves: the Ready and
// Degraded conditions changing, and a new known-good revision.
func transitions(before, after *v1alpha1.HealthEnvironmentStatus) []event {
	var out []event
	for _, t := range []string{v1alpha1.ConditionReady, v1alpha1.ConditionDegraded} {
		b := meta.FindStatusCondition(before.Conditions, t)
		a := meta.FindStatusCondition(after.Conditions, t)
		if a == nil || (b != nil && b.Status == a.Status && b.Reason == a.Reason) {
			continue
		}
		good := (t == v1alpha1.ConditionReady) == (a.Status == metav1.ConditionTrue)
		if a.Status == metav1.ConditionUnknown || (b == nil && !good && a.Reason == v1alpha1.ReasonProvisioning) {
			// Provisioning from scratch is expected; not worth an event.
			continue
		}
		typ := corev1.EventTypeNormal
		if !good {
			typ = corev1.EventTypeWarning
		}
		out = append(out, event{eventType: typ, reason: a.Reason, action: "Reconcile", note: a.Message})
	}
	if after.KnownGoodRevision != "" && after.KnownGoodRevision != before.KnownGoodRevision {
		out = append(out, event{eventType: corev1.EventTypeNormal, reason: "RevisionRecorded", action: "RecordRevision",
			note: "Recorded known-good revision " + after.KnownGoodRevision})
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
