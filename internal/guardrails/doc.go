// Package guardrails holds the tests of careplane's admission policies
// (config/guardrails), evaluated in-process by kube-apiserver's own
// ValidatingAdmissionPolicy code: every expression, every request shape,
// in milliseconds. What a cluster adds (matching, bindings, the order of
// admission) is the e2e tests' to show.
package guardrails
