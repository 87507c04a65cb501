package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/failover"
)

// decideTraffic gathers what the failover decision needs — the primary's and
// the standby's readiness, how long the primary has been down or up, where
// traffic goes now — decides with failover.Decide, and records the decision
// in the scope; the standby site and the front Services follow it.
func (r *HealthEnvironmentReconciler) decideTraffic(ctx context.Context, s *scope) error {
	env := s.env
	fo := env.Spec.Failover
	st := &v1alpha1.FailoverStatus{}
	if env.Status.Failover != nil {
		st = env.Status.Failover.DeepCopy()
	}

	if build.HasStandby(env) {
		services, rev, err := r.standbyTemplates(ctx, s)
		if err != nil {
			return err
		}
		s.standbyTemplates, st.StandbyRevision = services, rev
	} else {
		st.StandbyRevision, st.StandbyData = "", nil
	}

	critical := map[string]bool{}
	var notServed []string
	for _, svc := range env.Spec.Services {
		if svc.Critical {
			critical[svc.Name] = true
		} else {
			notServed = append(notServed, svc.Name)
		}
	}
	sort.Strings(notServed)
	st.NotServedOnStandby = nil
	if build.HasStandby(env) {
		st.NotServedOnStandby = notServed
	}

	// The primary, as this reconcile observed it (a fenced primary counts no
	// ready replica; a critical service not observed is not ready).
	observed := 0
	criticalDown := false
	primaryReady := true
	for _, svc := range s.services {
		if svc.Site != v1alpha1.SitePrimary || !critical[svc.Name] {
			continue
		}
		observed++
		if svc.ReadyReplicas < svc.Replicas {
			primaryReady = false
		}
		if svc.ReadyReplicas == 0 && svc.Replicas > 0 {
			criticalDown = true
		}
	}
	fenced := s.primaryFenced() && !s.restored
	if fenced || observed < len(critical) || len(critical) == 0 {
		primaryReady = false
	}
	now := metav1.NewMicroTime(s.now)
	switch {
	case criticalDown && st.PrimaryDownSince == nil:
		st.PrimaryDownSince = &now
	case !criticalDown:
		st.PrimaryDownSince = nil
	}
	switch {
	case primaryReady && st.PrimaryReadySince == nil:
		st.PrimaryReadySince = &now
	case !primaryReady:
		st.PrimaryReadySince = nil
	}

	// The standby, from the cache: every critical service of the known-good
	// revision running with all replicas ready.
	standbyReady := len(s.standbyTemplates) > 0
	for _, svc := range s.standbyTemplates {
		w, err := r.readWorkload(ctx, s.names.Standby, svc)
		if err != nil {
			return err
		}
		if w == nil || !w.current() || w.ready < svc.ReplicaCount() || svc.ReplicaCount() == 0 {
			standbyReady = false
		}
	}

	current, switchedAt, err := r.trafficNow(ctx, s)
	if err != nil {
		return err
	}

	unavailableAfter := failover.DefaultUnavailableAfter
	if fo.UnavailableAfter != nil {
		unavailableAfter = fo.UnavailableAfter.Duration
	}
	in := failover.Input{
		Standby: fo.Standby, Trigger: fo.Trigger, RequestedSite: fo.ActiveSite, UnavailableAfter: unavailableAfter,
		Now: s.now, PrimaryFenced: fenced, PrimaryReady: primaryReady, StandbyReady: standbyReady,
		Current: current, SwitchedAt: switchedAt,
	}
	if st.PrimaryDownSince != nil {
		in.CriticalDownSince = st.PrimaryDownSince.Time
	}
	if st.PrimaryReadySince != nil {
		in.PrimaryReadySince = st.PrimaryReadySince.Time
	}
	d := failover.Decide(in)
	s.decision = &d

	newSite := v1alpha1.Site("")
	if d.Serving {
		newSite = d.Site
	}
	switch {
	case newSite != current || switchedAt.IsZero():
		st.SwitchedAt = &now
	default:
		st.SwitchedAt = &metav1.MicroTime{Time: switchedAt}
	}
	s.status.Failover = st

	if d.Failover {
		trigger := s.now
		switch {
		case fenced && s.record.Present():
			if began, ok := s.record.Began(); ok {
				trigger = began
			}
		case d.Reason == failover.ReasonPrimaryUnavailable && st.PrimaryDownSince != nil:
			trigger = st.PrimaryDownSince.Add(unavailableAfter)
		}
		failovers.WithLabelValues(d.Reason).Inc()
		failoverDuration.Observe(s.now.Sub(trigger).Seconds())
		log.FromContext(ctx).Info("Failing over to the standby", "reason", d.Reason, "sinceTrigger", s.now.Sub(trigger).Round(time.Millisecond))
	}
	if d.Failback {
		log.FromContext(ctx).Info("Failing back to the primary", "reason", d.Reason)
	}
	return nil
}

// standbyTemplates are the critical services of the latest known-good
// revision, which the standby runs: never a newer spec that has not proven
// healthy. None before a revision is recorded.
func (r *HealthEnvironmentReconciler) standbyTemplates(ctx context.Context, s *scope) ([]v1alpha1.Service, string, error) {
	name := s.env.Status.KnownGoodRevision
	if name == "" {
		return nil, "", nil
	}
	rev := &appsv1.ControllerRevision{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.names.Front, Name: name}, rev)
	if apierrors.IsNotFound(err) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading revision %s of %s: %w", name, klog.KObj(s.env), err)
	}
	services, err := build.ServicesFromRevision(rev.Data.Raw)
	if err != nil {
		return nil, "", fmt.Errorf("decoding revision %s: %w", name, err)
	}
	var critical []v1alpha1.Service
	for _, svc := range services {
		if svc.Critical {
			critical = append(critical, svc)
		}
	}
	return critical, name, nil
}

// servingMessage is the ServingFromStandby condition's message: the
// decision's, and which services the standby does not serve.
func (s *scope) servingMessage() string {
	msg := s.decision.Message
	if s.decision.ServingFromStandby() && s.status.Failover != nil && len(s.status.Failover.NotServedOnStandby) > 0 {
		msg += fmt.Sprintf("; not critical, so not served while on the standby: %s", strings.Join(s.status.Failover.NotServedOnStandby, ", "))
	}
	if s.decision.ServingFromStandby() && s.status.Failover != nil && s.status.Failover.StandbyData != nil {
		if sd := s.status.Failover.StandbyData; sd.DataFrom != "" && sd.DataTakenAt != nil {
			msg += fmt.Sprintf("; the standby's volumes hold the data of recovery point %s, taken at %s", sd.DataFrom, sd.DataTakenAt.UTC().Format(time.RFC3339))
		}
	}
	return msg
}
