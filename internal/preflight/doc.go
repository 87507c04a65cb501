// Package preflight checks that careplane is installed and working on a
// cluster: what a platform engineer would look at first when a fence does
// not happen. One package, two callers: `kubectl careplane doctor` (the
// plugin, run by a person) and `manager preflight` (the manager image,
// run by `helm test` as a test pod).
//
// Each check gathers what the cluster holds through the clients it is given
// and judges it with a pure function (no client, no clock: Options.Now is
// the one clock), so the judgements are unit-tested without a cluster. A
// check ends Pass, Warn or Fail, with a message saying what it saw and a
// remediation that links the docs (docs/operations.md#preflight).
//
// The checks, in order:
//
//   - crds: every kind of api/v1alpha1 is served at careplane.io/v1alpha1
//     (discovery, which any authenticated user may read).
//   - guardrails: every admission policy and binding of config/guardrails
//     (the chart copies them; expected_generated.go is derived from them
//     by a test) exists under the install's name, each binding names its
//     policy, a binding with parameters reads the install's ConfigMap, and
//     a policy whose expressions do not type-check warns.
//   - guardrail-parameters: the ConfigMap exists and parses as the policies
//     parse it; no responder group is a Fail (nobody could fence).
//   - leader: the Lease careplane.careplane.io in the install's namespace
//     is held and was renewed within its lease duration.
//   - manager-rbac: the API server's authorizer, asked through
//     SubjectAccessReviews about the manager's ServiceAccount, allows every
//     rule of config/rbac (the code's markers). SelfSubjectAccessReview
//     would answer for the caller, not the manager; a SubjectAccessReview
//     answers for any identity but needs create on subjectaccessreviews,
//     and it says what RBAC grants, not what the guardrails then deny.
//   - network-policy: whether a network plugin known to enforce
//     NetworkPolicy runs as a DaemonSet (Calico, Cilium, Antrea,
//     kube-router, Weave Net, kube-network-policies). Anything else is
//     reported as unknown (Warn), never guessed.
//
// A check the caller may not make (the API server says forbidden) fails
// with Forbidden set, so that a caller without rights never reads "all
// good"; the report says which request was refused and for whom.
package preflight
