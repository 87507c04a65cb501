package build

// Conversions from the typed API structs that HealthEnvironment embeds to
// their apply configurations. They are written out field by field, rather
// than through a JSON round trip, so the builders need no error path;
// TestConversionsKeepEveryField fills every field at random and fails when a
// Kubernetes upgrade adds a field these functions do not copy.

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
)

// probeApply converts a probe; nil stays nil.
func probeApply(p *corev1.Probe) *corev1ac.ProbeApplyConfiguration {
	if p == nil {
		return nil
	}
	out := corev1ac.Probe()
	if h := p.Exec; h != nil {
		a := corev1ac.ExecAction()
		if len(h.Command) > 0 {
			a.WithCommand(h.Command...)
		}
		out.WithExec(a)
	}
	if h := p.HTTPGet; h != nil {
		a := corev1ac.HTTPGetAction().WithPort(h.Port)
		if h.Path != "" {
			a.WithPath(h.Path)
		}
		if h.Host != "" {
			a.WithHost(h.Host)
		}
		if h.Scheme != "" {
			a.WithScheme(h.Scheme)
		}
		for _, hd := range h.HTTPHeaders {
			a.WithHTTPHeaders(corev1ac.HTTPHeader().WithName(hd.Name).WithValue(hd.Value))
		}
		if h.Protocol != nil {
			a.WithProtocol(*h.Protocol)
		}
		out.WithHTTPGet(a)
	}
	if h := p.TCPSocket; h != nil {
		a := corev1ac.TCPSocketAction().WithPort(h.Port)
		if h.Host != "" {
			a.WithHost(h.Host)
		}
		out.WithTCPSocket(a)
	}
	if h := p.GRPC; h != nil {
		a := corev1ac.GRPCAction().WithPort(h.Port)
		if h.Service != nil {
			a.WithService(*h.Service)
		}
		if h.Mode != nil {
			a.WithMode(*h.Mode)
		}
		out.WithGRPC(a)
	}
	if p.InitialDelaySeconds != 0 {
		out.WithInitialDelaySeconds(p.InitialDelaySeconds)
	}
	if p.TimeoutSeconds != 0 {
		out.WithTimeoutSeconds(p.TimeoutSeconds)
	}
	if p.PeriodSeconds != 0 {
		out.WithPeriodSeconds(p.PeriodSeconds)
	}
	if p.SuccessThreshold != 0 {
		out.WithSuccessThreshold(p.SuccessThreshold)
	}
	if p.FailureThreshold != 0 {
		out.WithFailureThreshold(p.FailureThreshold)
	}
	if p.TerminationGracePeriodSeconds != nil {
		out.WithTerminationGracePeriodSeconds(*p.TerminationGracePeriodSeconds)
	}
	return out
}

// tolerationApply converts a toleration.
func tolerationApply(t corev1.Toleration) *corev1ac.TolerationApplyConfiguration {
	out := corev1ac.Toleration()
	if t.Key != "" {
		out.WithKey(t.Key)
	}
	if t.Operator != "" {
		out.WithOperator(t.Operator)
	}
	if t.Value != "" {
		out.WithValue(t.Value)
	}
	if t.Effect != "" {
		out.WithEffect(t.Effect)
	}
	if t.TolerationSeconds != nil {
		out.WithTolerationSeconds(*t.TolerationSeconds)
	}
	return out
}

// resourcesApply converts compute resources; it returns nil when nothing is
// set, so the LimitRange's defaults apply.
func resourcesApply(r corev1.ResourceRequirements) *corev1ac.ResourceRequirementsApplyConfiguration {
	if len(r.Limits) == 0 && len(r.Requests) == 0 && len(r.Claims) == 0 {
		return nil
	}
	out := corev1ac.ResourceRequirements()
	if len(r.Limits) > 0 {
		out.WithLimits(r.DeepCopy().Limits)
	}
	if len(r.Requests) > 0 {
		out.WithRequests(r.DeepCopy().Requests)
	}
	for _, c := range r.Claims {
		a := corev1ac.ResourceClaim().WithName(c.Name)
		if c.Request != "" {
			a.WithRequest(c.Request)
		}
		out.WithClaims(a)
	}
	return out
}

// labelSelectorApply converts a label selector; nil stays nil, and an empty
// selector stays empty (it selects everything).
func labelSelectorApply(s *metav1.LabelSelector) *metav1ac.LabelSelectorApplyConfiguration {
	if s == nil {
		return nil
	}
	out := metav1ac.LabelSelector()
	if len(s.MatchLabels) > 0 {
		out.WithMatchLabels(s.MatchLabels)
	}
	for _, e := range s.MatchExpressions {
		r := metav1ac.LabelSelectorRequirement().WithKey(e.Key).WithOperator(e.Operator)
		if len(e.Values) > 0 {
			r.WithValues(e.Values...)
		}
		out.WithMatchExpressions(r)
	}
	return out
}
