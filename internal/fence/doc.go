// Package fence is the fence's one home: what a fence is, where it is
// recorded, when it lifts, and what it writes, as pure functions. The
// operator (controllers/) gathers what the cluster holds into an Observed,
// calls PlanFence and carries out the steps in order; `kubectl careplane
// fence --dry-run` gathers the same Observed and prints the same plan.
// Nothing here reads a clock or talks to an API server.
//
// # The record
//
// A fence is recorded on the primary Namespace object, the one object of a
// fenced environment that a tenant cannot write (the built-in edit role
// grants no namespace writes) and that the freeze admission policy guards
// against everyone but careplane and the responders once it carries the
// freeze label (docs/guardrails.md). The record is:
//
//   - label careplane.io/fenced=true: the freeze;
//   - annotation careplane.io/fence-id: when the fence began (RFC 3339,
//     careplane's clock); the fence's credential revocation is keyed by it;
//   - annotation careplane.io/fence-source: what asked for the fence:
//     "spec" (the environment's own spec.isolation said Fenced) or
//     "FenceRequest/<name>" (a fleet fence, before the hand-over);
//   - annotation careplane.io/restore-id: when a restore began, while one
//     is under way;
//   - annotation careplane.io/fence-handed-over-from: on a fence whose source
//     is the spec, the "FenceRequest/<name>" it was handed over from. The
//     request lets go of the environment when it reads it.
//
// Nothing else marks a fence: not a NetworkPolicy's name (a tenant can
// create a policy of any name), not the environment's status (a status
// writer could erase it, and a deleted and re-created environment has
// none), not a FenceRequest (it can be deleted).
//
// # Rules
//
// Decide says what the reconcile does with the fence:
//
//   - The environment's spec says Fenced: fence, source "spec" (this is the
//     hand-over of a fleet fence, too, and the record says from which
//     request).
//   - A FenceRequest holds the environment: fence. The source stays "spec"
//     when the record says the fence was handed over from that request
//     (the request has not let go yet), stays another request's when it is
//     that request's, and is otherwise this request's (a fleet fence during
//     a restore cancels the restore).
//   - The record's source is a FenceRequest: fence, whatever became of the
//     request. A fleet fence lifts only after the hand-over.
//   - The record's source is "spec", the spec says None and no request
//     holds the environment: restore. This is the only way a fence lifts,
//     and it needs a record careplane wrote, a responder's explicit change
//     of the spec, and no request's hold; a request lets go only once it
//     reads the spec saying Fenced or the hand-over on record, so it never
//     holds an environment whose fence has lifted.
//   - No record, nothing asks for a fence: no fence.
//
// Effective says which isolation a fence carries out and reports: the
// spec's, or, while a fence the spec does not ask for holds (Decide fences
// with the spec not saying Fenced), the holding request's mode, reason,
// ticket and workloads (with the request gone, the reason and ticket the
// status recorded). It is a value beside the environment: careplane never
// rewrites the user's spec, not even in memory.
//
// PlanFence lists the writes of a fence in the order they must be made:
//
//  1. Close the window: the record on the namespace first (the freeze stops
//     every tenant write from then on), then the deny-all policy and the
//     pods: 0 quota, each written whole: a field another writer added
//     before the freeze does not survive.
//     Then, in step 1, once the window is closed and before anything else
//     may change the data, the evidence: a VolumeSnapshot of every claim of
//     the namespace, careplane's or the tenant's, one set per fence ID
//     (evidence.go); skipped, with the reason, when no snapshot class fits.
//     It never holds up the network fence.
//  2. Every other NetworkPolicy of the namespace deleted, whoever made it:
//     allows add up.
//  3. Every ServiceAccount of the namespace revoked: careplane's are
//     recreated (tokens bound to the old UID die), every other one deleted
//     (the control plane recreates default); generated Secrets deleted.
//     When the fence moves traffic to the standby (StandbyServes), the
//     standby's part (standby.go): its ServiceAccounts recreated or deleted
//     by the same rule, its generated Secrets rotated, once per fence ID,
//     and its workloads rolled onto them with a surge once traffic is on
//     record there (StandbyWorkloadRevision).
//  4. Workloads: every running pod of the namespace, careplane's or not,
//     labelled and detached as evidence (Preserve), then careplane's
//     Deployments scaled to zero.
//  5. The front stops sending to the primary (the reconciler's front step),
//     and every route of the front namespace careplane did not write goes
//     (ForeignRoutes, front.go).
//
// Fenced=True is reported only when every step is done and the namespace's
// policies, evaluated, let no flow in or out (Verified).
package fence
