package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FenceRequest fences every HealthEnvironment its selector matches, at once:
// the fleet fence of a supplier-wide incident (the 2022 scenario), written
// as one object instead of one spec change per environment.
//
// careplane matches the selector once, when it first sees the request, and
// records the environments in status.environments. It then writes the
// deny-all policy of every one of them, fail closed across the fleet first,
// and fences each in full. The request holds each environment's fence until
// the environment's own spec.isolation says Fenced (kubectl careplane fence
// --selector writes both); from then on the environment is released one at
// a time as usual, by setting its mode back to None. A request is never a
// way to lift a fence: deleted while it holds environments, it stays
// (Terminating) and keeps holding them until their own specs say Fenced.
//
// Only incident responders may create or delete one (the
// careplane-fence-request-guard admission policy). Its spec cannot change.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=fencereq,categories=careplane
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.spec.reason`
// +kubebuilder:printcolumn:name="Ticket",type=string,JSONPath=`.spec.ticket`
// +kubebuilder:printcolumn:name="Environments",type=integer,JSONPath=`.status.matched`
// +kubebuilder:printcolumn:name="Deny",type=integer,JSONPath=`.status.denyPolicies`,description="Environments whose deny-all policy is in place"
// +kubebuilder:printcolumn:name="Holding",type=integer,JSONPath=`.status.holdingCount`,description="Environments whose spec does not yet say Fenced, fenced by this request"
// +kubebuilder:printcolumn:name="Complete",type=string,JSONPath=`.status.conditions[?(@.type=="Complete")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name must be at most 63 characters"
type FenceRequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says which environments to fence, and why.
	// +required
	Spec FenceRequestSpec `json:"spec"`

	// status is what careplane matched and did.
	// +optional
	Status FenceRequestStatus `json:"status,omitempty"`
}

// FenceRequestList is a list of FenceRequests.
//
// +kubebuilder:object:root=true
type FenceRequestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FenceRequest `json:"items"`
}

// FenceRequestSpec is a fleet fence: which environments, why, and what to do
// with their pods. It is the spec.isolation of each matched environment.
//
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec of a FenceRequest cannot change: create another"
type FenceRequestSpec struct {
	// selector matches HealthEnvironments by their labels. It must say
	// something: an empty selector, which would match every environment in
	// the cluster, is refused.
	// +required
	// +kubebuilder:validation:XValidation:rule="(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",message="selector must have matchLabels or matchExpressions: an empty selector would fence every environment in the cluster"
	Selector LabelSelector `json:"selector"`

	// reason says why the environments are fenced.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.trim().size() > 0",message="reason is required: say why the environments are fenced"
	Reason string `json:"reason"`

	// ticket is the incident reference, e.g. INC-2042.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == '' || self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')",message="ticket must be letters, digits, '-', '_' or '.', because it labels the evidence pods"
	Ticket string `json:"ticket,omitempty"`

	// workloads is Preserve (keep the fenced pods running, detached and
	// labelled, as evidence) or Stop (scale to zero).
	// +optional
	// +kubebuilder:default=Preserve
	Workloads WorkloadAction `json:"workloads,omitempty"`
}

// FenceRequestStatus is what careplane matched and did.
type FenceRequestStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// matchedAt is when careplane matched the selector; the environments it
	// matched then are the request's, whatever their labels become.
	// +optional
	MatchedAt *metav1.Time `json:"matchedAt,omitempty"`

	// matched counts status.environments.
	// +optional
	Matched int32 `json:"matched,omitempty"`

	// environments are the HealthEnvironments the selector matched, by name.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=10000
	// +kubebuilder:validation:items:MaxLength=63
	Environments []string `json:"environments,omitempty"`

	// holding are the environments this request still fences: those of
	// status.environments whose own spec.isolation does not yet say
	// Fenced. Once it does, the environment's spec holds its fence.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=10000
	// +kubebuilder:validation:items:MaxLength=63
	Holding []string `json:"holding,omitempty"`

	// holdingCount counts status.holding.
	// +optional
	HoldingCount int32 `json:"holdingCount,omitempty"`

	// denyPolicies counts the environments of status.environments whose
	// deny-all policy is in place.
	// +optional
	DenyPolicies int32 `json:"denyPolicies,omitempty"`

	// conditions: Matched (the selector was matched), DenyPoliciesInPlace
	// (every matched environment's deny-all policy exists) and Complete
	// (every matched environment's own spec says Fenced, or it is gone).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Condition types of a FenceRequest.
const (
	// ConditionMatched is True once the selector was matched and the
	// environments recorded.
	ConditionMatched = "Matched"
	// ConditionDenyPoliciesInPlace is True once every matched environment
	// has its deny-all policy.
	ConditionDenyPoliciesInPlace = "DenyPoliciesInPlace"
	// ConditionComplete is True once no matched environment is held by the
	// request any more.
	ConditionComplete = "Complete"
)

// Condition reasons of a FenceRequest.
const (
	// ReasonSelectorMatched: the environments were recorded.
	ReasonSelectorMatched = "SelectorMatched"
	// ReasonNoEnvironments: the selector matched no environment.
	ReasonNoEnvironments = "NoEnvironments"
	// ReasonWritingDenyPolicies: deny policies are still being written.
	ReasonWritingDenyPolicies = "WritingDenyPolicies"
	// ReasonAwaitingEnvironments: every deny policy that can be written
	// exists; the environments without one are not built yet, and each is
	// fenced as it is built.
	ReasonAwaitingEnvironments = "AwaitingEnvironments"
	// ReasonDenyPoliciesWritten: every deny policy exists.
	ReasonDenyPoliciesWritten = "DenyPoliciesWritten"
	// ReasonHolding: some environments are fenced by this request only.
	ReasonHolding = "Holding"
	// ReasonHandedOver: every environment's spec holds its fence.
	ReasonHandedOver = "HandedOver"
)

// Holds says whether the request still fences the environment named name.
// A request being deleted still does: deleting it lifts no fence.
func (r *FenceRequest) Holds(name string) bool {
	for _, n := range r.Status.Holding {
		if n == name {
			return true
		}
	}
	return false
}

// HoldingRequest returns the request of requests that holds the fence of
// the environment named name, or nil. When several do, the oldest (by
// creation, then name) is the one careplane applies, and the one shown.
func HoldingRequest(requests []FenceRequest, name string) *FenceRequest {
	var held *FenceRequest
	for i := range requests {
		fr := &requests[i]
		if fr.Holds(name) && (held == nil || fr.CreationTimestamp.Before(&held.CreationTimestamp) ||
			(fr.CreationTimestamp.Equal(&held.CreationTimestamp) && fr.Name < held.Name)) {
			held = fr
		}
	}
	return held
}

// DenyPoliciesSettled says whether the request reports every deny policy
// it can write now in place: all of them, or all but those of environments
// not built yet (each fenced as it is built).
func (r *FenceRequest) DenyPoliciesSettled() bool {
	c := meta.FindStatusCondition(r.Status.Conditions, ConditionDenyPoliciesInPlace)
	return c != nil && (c.Status == metav1.ConditionTrue || c.Reason == ReasonAwaitingEnvironments)
}

// DenyPoliciesInPlace says whether the request reports every matched
// environment's deny-all policy in place.
func (r *FenceRequest) DenyPoliciesInPlace() bool {
	return meta.IsStatusConditionTrue(r.Status.Conditions, ConditionDenyPoliciesInPlace)
}

// Isolation is the spec.isolation the request stands for.
func (r *FenceRequest) Isolation() Isolation {
	w := r.Spec.Workloads
	if w == "" {
		w = WorkloadsPreserve
	}
	return Isolation{Mode: IsolationFenced, Reason: r.Spec.Reason, Ticket: r.Spec.Ticket, Workloads: w}
}
