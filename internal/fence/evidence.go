package fence

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// VerbSnapshot takes a VolumeSnapshot of a claim as evidence.
const VerbSnapshot Verb = "snapshot"

// VerbSkip is a write the plan cannot make; its note says why.
const VerbSkip Verb = "skip"

// SnapshotClass is the VolumeSnapshotClass a fence takes its evidence with,
// as the gatherer found it.
type SnapshotClass struct {
	// Name is spec.recovery.volumeSnapshotClassName.
	Name string
	// Found says the class exists; Driver is its CSI driver.
	Found  bool
	Driver string
}

// Evidence is what the plan says of the evidence snapshots: the class they
// are taken with, or why none can be (Reason and Message, for the
// EvidenceSnapshots condition; empty when nothing stands in the way).
type Evidence struct {
	Class           string
	Reason, Message string
}

// EvidenceSnapshotName names the evidence snapshot fence id takes of a
// claim: one per claim and fence, so that a fence resumed after a restart
// finds the ones it took and takes no second set.
func EvidenceSnapshotName(id, claim string) string {
	name := "evidence-" + compactID(id) + "-" + claim
	if len(name) > 253 {
		name = name[:253]
	}
	return strings.TrimRight(name, "-.")
}

// IDLabel is the fence's ID as a label value can hold it (no colons).
func IDLabel(id string) string {
	return strings.Trim(strings.NewReplacer(":", "", "+", "").Replace(id), "-._")
}

// compactID is the fence's ID in lower-case letters and digits only.
func compactID(id string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// evidenceProblem says why the fence of o cannot snapshot its claims, as a
// condition reason and message; "" when it can.
func evidenceProblem(o Observed) (reason, message string) {
	if o.Env.Spec.Recovery == nil || o.Env.Spec.Recovery.VolumeSnapshotClassName == "" {
		return v1alpha1.ReasonNoSnapshotClass, fmt.Sprintf(
			"The fenced namespace holds %d claims and spec.recovery names no VolumeSnapshotClass, so no evidence snapshot is taken: set recovery.volumeSnapshotClassName (the network fence stands regardless)", len(o.Claims))
	}
	c := o.SnapshotClass
	if c == nil || !c.Found {
		return v1alpha1.ReasonSnapshotClassNotFound, fmt.Sprintf(
			"VolumeSnapshotClass %s does not exist, so no evidence snapshot is taken: set recovery.volumeSnapshotClassName to one of `kubectl get volumesnapshotclasses` (the network fence stands regardless)", o.Env.Spec.Recovery.VolumeSnapshotClassName)
	}
	for _, claim := range sorted(o.Claims) {
		if d, ok := o.ClaimDrivers[claim.Name]; ok && d != c.Driver {
			return v1alpha1.ReasonSnapshotClassMismatch, fmt.Sprintf(
				"VolumeSnapshotClass %s is for driver %s, but claim %s is of driver %q, so no evidence snapshot is taken: choose a snapshot class of the volumes' driver (the network fence stands regardless)", c.Name, c.Driver, claim.Name, d)
		}
	}
	return "", ""
}

// planEvidence adds the evidence actions to p: once the window is closed
// and before any other step may change the data, a VolumeSnapshot of every
// claim of the namespace, careplane's or the tenant's, unless this fence
// took it already.
func planEvidence(p *Plan, o Observed, ns string) {
	if len(o.Claims) == 0 {
		return
	}
	reason, msg := evidenceProblem(o)
	p.Evidence = Evidence{Reason: reason, Message: msg}
	if o.Env.Spec.Recovery != nil {
		p.Evidence.Class = o.Env.Spec.Recovery.VolumeSnapshotClassName
	}
	taken := map[string]bool{}
	for _, s := range o.Snapshots {
		if s.DeletionTimestamp == nil && s.Annotations[v1alpha1.AnnotationFenceID] == o.Record.ID {
			taken[s.Name] = true
		}
	}
	ticket := EvidenceTicket(o.Isolation)
	for _, claim := range slices.SortedFunc(slices.Values(o.Claims), func(a, b Object) int { return cmp.Compare(a.Name, b.Name) }) {
		name := EvidenceSnapshotName(o.Record.ID, claim.Name)
		a := Action{Step: 1, Kind: "VolumeSnapshot", Namespace: ns, Name: name, From: claim.Name}
		switch {
		case taken[name]:
			a.Verb, a.Note = VerbKeep, "evidence of claim "+claim.Name+" taken by this fence already; never deleted while fenced"
		case reason != "":
			a.Verb, a.Note = VerbSkip, "no evidence of claim "+claim.Name+": "+reason
		default:
			n := "evidence of claim " + claim.Name + " (class " + p.Evidence.Class + "), labelled " + v1alpha1.LabelEvidence + "=" + ticket + ", no owner; never deleted while fenced"
			if !ours(o.Env, &claim) {
				n = "not careplane's claim; " + n
			}
			a.Verb, a.Note = VerbSnapshot, n
		}
		p.Actions = append(p.Actions, a)
	}
}

// EvidenceCondition is the EvidenceSnapshots condition: the problem ev
// reports, if any; else whether every evidence snapshot on record of fence
// id (every one on record when id is empty) is ready to use. claims is how
// many the fence planned, or -1 when not known.
func EvidenceCondition(id string, claims int, snaps []v1alpha1.EvidenceSnapshot, ev Evidence) (metav1.ConditionStatus, string, string) {
	if ev.Reason != "" {
		return metav1.ConditionFalse, ev.Reason, ev.Message
	}
	n, ready := 0, 0
	for _, s := range snaps {
		if id != "" && s.FenceID != id {
			continue
		}
		n++
		if s.Ready {
			ready++
		}
	}
	if n > 0 && ready == n && (claims < 0 || n >= claims) {
		return metav1.ConditionTrue, v1alpha1.ReasonEvidenceTaken, fmt.Sprintf(
			"%d evidence snapshots of the fenced volumes are ready; they are kept until a responder purges them", n)
	}
	return metav1.ConditionFalse, v1alpha1.ReasonEvidencePending, fmt.Sprintf(
		"%d of %d evidence snapshots of the fenced volumes are ready", ready, max(n, claims))
}

// EvidenceLabelKeys are the only labels an evidence pod keeps: a selector
// that matches one names only these (careplane-evidence-pod-access refuses
// a Service of anyone else's that selects so).
var EvidenceLabelKeys = []string{v1alpha1.LabelEvidence, v1alpha1.LabelEnvironment, build.LabelEvidenceService}

// EvidenceMetadata is what a merge patch sets on a pod, whose labels are
// labels, to keep it as evidence of ticket in environment env: the
// evidence and environment labels, careplane.io/service moved to
// careplane.io/evidence-service, and every other label taken off and kept,
// as JSON, in build.AnnotationEvidenceLabels (nil values remove a label).
// A pod that is evidence already has nothing left to move: its annotation,
// written by the patch that took its labels, stays. On a pod becoming
// evidence, careplane.io/evidence-service is careplane.io/service's or none:
// a tenant's pod may not bring its own.
func EvidenceMetadata(labels map[string]string, ticket, env string) (setLabels, setAnnotations map[string]any, err error) {
	setLabels = map[string]any{v1alpha1.LabelEvidence: ticket, v1alpha1.LabelEnvironment: env}
	if svc := labels[v1alpha1.LabelService]; svc != "" {
		setLabels[build.LabelEvidenceService] = svc
	} else if _, forged := labels[build.LabelEvidenceService]; forged && labels[v1alpha1.LabelEvidence] == "" {
		setLabels[build.LabelEvidenceService] = nil
	}
	moved := map[string]string{}
	for k, v := range labels {
		if !slices.Contains(EvidenceLabelKeys, k) {
			moved[k] = v
			setLabels[k] = nil
		}
	}
	if len(moved) == 0 {
		return setLabels, nil, nil
	}
	b, err := json.Marshal(moved) // keys sorted
	if err != nil {
		return nil, nil, err
	}
	return setLabels, map[string]any{build.AnnotationEvidenceLabels: string(b)}, nil
}
