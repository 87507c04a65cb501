// Package conditions decides a HealthEnvironment's status conditions from
// what one reconcile found and did: a pure function, so that every rule is a
// table test and a new condition touches this file (and the API's condition
// types) only. The reconciler gathers the Input (controllers/status.go);
// nothing here reads a clock or talks to an API server.
//
// # Rules
//
//   - Ready/Degraded, the first that holds: the environment is being deleted
//     while fenced; a fence is on record and no site serves (not Ready, not
//     Degraded: the fence is the point); a namespace conflict (Degraded); a
//     write failed (Degraded); a Deployment cannot make progress (Degraded);
//     services still rolling out; no site serves; all ready.
//   - Fenced=True (FenceComplete) is evidence, not intention: the reconcile
//     carried out the fence, every step succeeded, and the isolation was
//     verified. Done but not verified, or not done, is Fenced=False
//     (FenceIncomplete) with the reason in the message. Restoring behind
//     the fence is Fenced=True (Restoring); lifted is Fenced=False, whose
//     message says how the last fence ended until another is asked for.
//   - IsolationVerified reports the last evaluation of the fenced namespace;
//     while verification could not run, the last verdict stays. Not fenced,
//     or lifted in this pass, it is Unknown (NotEvaluated).
//   - Restoring is True while a restore rebuilds the primary, False
//     (RestoreBlocked) when its input is bad.
//   - ServingFromStandby follows the failover decision; serving from the
//     standby is also Degraded.
package conditions

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/netpol"
)

// Input is what one reconcile found and did.
type Input struct {
	// Generation is the environment's metadata.generation.
	Generation int64
	// Services is the readiness of each service on each site.
	Services []v1alpha1.ServiceStatus
	// ActiveSite is where the front sends traffic; Serving is false when
	// no site may receive it.
	ActiveSite v1alpha1.Site
	Serving    bool
	// DeletionBlocked: the environment is being deleted while fenced.
	DeletionBlocked bool
	// Conflict names a namespace careplane needs but does not own.
	Conflict string
	// Err is why writing the environment's objects failed, if it did.
	Err error
	// Stalled are Deployments that report they cannot make progress.
	Stalled []string
	// Traffic is the failover decision, nil when none was taken.
	Traffic *Traffic
	// Fence is what the reconcile did with the fence.
	Fence Fence
}

// Traffic is the failover decision, as the conditions tell it.
type Traffic struct {
	FromStandby     bool
	Reason, Message string
}

// Fence is what one reconcile did with the fence.
type Fence struct {
	// Fencing: the reconcile carried out a fence.
	Fencing bool
	// Recorded: a fence is on record (fenced, or restoring).
	Recorded bool
	// Restoring: a restore is under way; Restored: it completed in this
	// pass, or in one whose status write was lost.
	Restoring, Restored bool
	// RestoreErr is why the restore cannot proceed.
	RestoreErr error
	// Complete: every step of the fence succeeded in this reconcile.
	Complete bool
	// Verified is the isolation verdict, nil when not evaluated.
	Verified *netpol.Result
	// AdminFence names the admin-tier policy written, if any.
	AdminFence string
	// CredentialsRevoked and EvidencePods are the fence's totals.
	CredentialsRevoked, EvidencePods int32
	// From names what the primary is rebuilt from: "spec" or a revision.
	From string
	// By is who asked for the fence, when known.
	By string
}

// MaxMessage bounds condition messages.
const MaxMessage = 1024

// Truncate shortens s to MaxMessage bytes.
func Truncate(s string) string {
	if len(s) <= MaxMessage {
		return s
	}
	return s[:MaxMessage-3] + "..."
}

// Set sets on conds every condition in decides, and returns how many of the
// active site's services are ready, of how many.
func Set(conds *[]metav1.Condition, in Input) (ready, total int) {
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(conds, metav1.Condition{Type: t, Status: status, Reason: reason, Message: Truncate(msg), ObservedGeneration: in.Generation})
	}
	var unready []string
	for _, svc := range in.Services {
		if svc.Site != in.ActiveSite {
			continue
		}
		total++
		if svc.ReadyReplicas >= svc.Replicas {
			ready++
		} else {
			unready = append(unready, fmt.Sprintf("%s (%d/%d ready)", svc.Name, svc.ReadyReplicas, svc.Replicas))
		}
	}

	setIsolation(set, conds, in)
	f := in.Fence
	switch {
	case in.DeletionBlocked:
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonFenced,
			"The environment is being deleted while fenced; careplane keeps the fence and the evidence until it is restored (set isolation.mode to None), or until a responder removes the careplane.io/fence finalizer")
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "Nothing is degraded")
	case f.Recorded && !f.Restored && in.Conflict == "" && !in.Serving:
		msg := "The primary site is fenced and no site serves traffic"
		if f.Restoring {
			msg = "The primary site is fenced while it is rebuilt; no site serves traffic"
		}
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonFenced, msg)
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "Nothing is degraded")
	case in.Conflict != "":
		msg := fmt.Sprintf("Namespace %s already exists and was not created by careplane for this environment; careplane never adopts a namespace. Delete or rename it, or rename this environment", in.Conflict)
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonNamespaceConflict, msg)
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonNamespaceConflict, msg)
	case in.Err != nil:
		msg := "Writing the environment's objects failed: " + in.Err.Error()
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonApplyFailed, msg)
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonApplyFailed, msg)
	case len(in.Stalled) > 0:
		msg := "Deployments cannot make progress: " + strings.Join(in.Stalled, "; ")
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonServicesUnavailable, msg)
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonServicesUnavailable, msg)
	case len(unready) > 0:
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonProvisioning, "Waiting for services to become ready: "+strings.Join(unready, ", "))
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "Services are rolling out")
	case !in.Serving:
		set(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonFenced, "No site serves traffic")
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "Nothing is degraded")
	default:
		set(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonAvailable,
			fmt.Sprintf("All %d services are ready on the %s site", total, strings.ToLower(string(in.ActiveSite))))
		set(v1alpha1.ConditionDegraded, metav1.ConditionFalse, v1alpha1.ReasonAsExpected, "Nothing is degraded")
	}

	switch {
	case in.Traffic != nil && in.Traffic.FromStandby:
		set(v1alpha1.ConditionServingFromStandby, metav1.ConditionTrue, in.Traffic.Reason, in.Traffic.Message)
		set(v1alpha1.ConditionDegraded, metav1.ConditionTrue, v1alpha1.ReasonServingFromStandby, "Critical services are served from the standby: "+in.Traffic.Message)
	case in.Traffic != nil:
		set(v1alpha1.ConditionServingFromStandby, metav1.ConditionFalse, in.Traffic.Reason, in.Traffic.Message)
	case meta.FindStatusCondition(*conds, v1alpha1.ConditionServingFromStandby) == nil:
		set(v1alpha1.ConditionServingFromStandby, metav1.ConditionFalse, v1alpha1.ReasonServingFromPrimary, "Traffic goes to the primary site")
	}
	return ready, total
}

// setIsolation sets Fenced, Restoring and IsolationVerified.
//
// The pass that lifts a fence sets what every later pass keeps: a message
// or a verdict that changed one pass after the lift would be a status write
// (and an event) for nothing.
func setIsolation(set func(t string, status metav1.ConditionStatus, reason, msg string), conds *[]metav1.Condition, in Input) {
	f := in.Fence
	switch {
	case f.Restored:
		set(v1alpha1.ConditionFenced, metav1.ConditionFalse, v1alpha1.ReasonNotFenced, "The fence was lifted after the primary site was rebuilt")
	case !f.Fencing && !f.Recorded:
		msg := "isolation.mode is None"
		if c := meta.FindStatusCondition(*conds, v1alpha1.ConditionFenced); c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonNotFenced {
			// Still true, and the more telling: how the last fence ended.
			msg = c.Message
		}
		set(v1alpha1.ConditionFenced, metav1.ConditionFalse, v1alpha1.ReasonNotFenced, msg)
	case f.Fencing && f.Complete && in.Err == nil && f.Verified != nil && f.Verified.Isolated:
		msg := fmt.Sprintf("The primary site is fenced and its isolation verified: all traffic denied, %d credentials revoked, %d evidence pods preserved", f.CredentialsRevoked, f.EvidencePods)
		if f.AdminFence != "" {
			msg += "; the admin-tier " + f.AdminFence + " keeps namespace policies from widening the fence"
		}
		if f.By != "" {
			msg += "; asked for by " + f.By
		}
		set(v1alpha1.ConditionFenced, metav1.ConditionTrue, v1alpha1.ReasonFenceComplete, msg)
	case f.Fencing && f.Complete && in.Err == nil:
		msg := "Every fence step is done but the isolation could not be verified yet; the fence is retried"
		if f.Verified != nil {
			msg = "Every fence step is done but the isolation is not verified: " + f.Verified.Summary()
		}
		set(v1alpha1.ConditionFenced, metav1.ConditionFalse, v1alpha1.ReasonFenceIncomplete, msg)
	case f.Fencing:
		msg := "The fence is under way"
		if in.Err != nil {
			msg = "The fence is incomplete and will be retried: " + in.Err.Error()
		}
		set(v1alpha1.ConditionFenced, metav1.ConditionFalse, v1alpha1.ReasonFenceIncomplete, msg)
	default:
		set(v1alpha1.ConditionFenced, metav1.ConditionTrue, v1alpha1.ReasonRestoring, "The fence stays until the rebuilt primary site is Ready")
	}

	switch {
	case f.RestoreErr != nil:
		set(v1alpha1.ConditionRestoring, metav1.ConditionFalse, v1alpha1.ReasonRestoreBlocked, "The restore cannot proceed and the fence stays: "+f.RestoreErr.Error())
	case f.Restoring && !f.Restored:
		set(v1alpha1.ConditionRestoring, metav1.ConditionTrue, v1alpha1.ReasonRebuilding,
			fmt.Sprintf("Rebuilding the primary site from %s with new credentials; the fence stays until its pods are Ready", f.From))
	default:
		set(v1alpha1.ConditionRestoring, metav1.ConditionFalse, v1alpha1.ReasonNotRestoring, "No restore is under way")
	}

	switch {
	case f.Restored, f.Verified == nil && !f.Recorded && !f.Fencing:
		set(v1alpha1.ConditionIsolationVerified, metav1.ConditionUnknown, v1alpha1.ReasonNotEvaluated, "The environment is not fenced; there is nothing to verify")
	case f.Verified == nil:
		// The last verdict stays while verification could not run.
	case f.Verified.Isolated:
		set(v1alpha1.ConditionIsolationVerified, metav1.ConditionTrue, v1alpha1.ReasonNoAllowedFlows,
			"No NetworkPolicy of the fenced namespace allows a flow into or out of a fenced pod, except ingress from the forensics namespaces")
	default:
		set(v1alpha1.ConditionIsolationVerified, metav1.ConditionFalse, v1alpha1.ReasonFlowAllowed, f.Verified.Summary())
	}
}
