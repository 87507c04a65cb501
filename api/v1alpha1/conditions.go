package v1alpha1

// Condition types of a HealthEnvironment. Every type is set on first sight,
// as Unknown or False when it does not yet apply.
const (
	// ConditionReady summarises the environment: True when every service that
	// should run on the active site has all its replicas ready and nothing
	// blocks reconciliation.
	ConditionReady = "Ready"
	// ConditionDegraded is True when some, but not all, of what should run is
	// unavailable, or when careplane cannot write what the spec asks for.
	ConditionDegraded = "Degraded"
	// ConditionFenced is True only when every step of a fence is complete.
	ConditionFenced = "Fenced"
	// ConditionServingFromStandby is True while the front Services send
	// traffic to the standby site.
	ConditionServingFromStandby = "ServingFromStandby"
	// ConditionIsolationVerified is True when evaluating the fenced
	// namespace's NetworkPolicies shows no allowed flow into or out of a
	// fenced pod.
	ConditionIsolationVerified = "IsolationVerified"
	// ConditionRestoring is True while a fenced environment is being rebuilt.
	ConditionRestoring = "Restoring"
	// ConditionRecoveryPoints is True while recovery points are taken as
	// spec.recovery asks; set only when spec.recovery is (not one of
	// ConditionTypes, which every environment carries).
	ConditionRecoveryPoints = "RecoveryPoints"
	// ConditionEvidenceSnapshots is True once every claim of a fenced
	// primary namespace has a ready evidence snapshot of the fence; set
	// only for a fence of a namespace that holds claims (not one of
	// ConditionTypes).
	ConditionEvidenceSnapshots = "EvidenceSnapshots"
)

// ConditionTypes lists every condition type, in the order status shows them.
var ConditionTypes = []string{
	ConditionReady, ConditionDegraded, ConditionFenced,
	ConditionServingFromStandby, ConditionIsolationVerified, ConditionRestoring,
}

// Condition reasons.
const (
	// ReasonProvisioning: children are being created or are not ready yet.
	ReasonProvisioning = "Provisioning"
	// ReasonAvailable: every service is ready.
	ReasonAvailable = "Available"
	// ReasonServicesUnavailable: at least one service has fewer ready
	// replicas than wanted.
	ReasonServicesUnavailable = "ServicesUnavailable"
	// ReasonNamespaceConflict: a namespace the environment needs exists and
	// was not created by careplane; careplane never adopts it.
	ReasonNamespaceConflict = "NamespaceConflict"
	// ReasonApplyFailed: writing a child object failed.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonAsExpected: nothing is wrong.
	ReasonAsExpected = "AsExpected"
	// ReasonNotFenced: isolation.mode is None.
	ReasonNotFenced = "NotFenced"
	// ReasonFenceIncomplete: a fence is under way or was interrupted; some
	// steps are not done yet.
	ReasonFenceIncomplete = "FenceIncomplete"
	// ReasonFenceComplete: every fence step is done.
	ReasonFenceComplete = "FenceComplete"
	// ReasonServingFromPrimary: traffic goes to the primary site.
	ReasonServingFromPrimary = "ServingFromPrimary"
	// ReasonNotEvaluated: there is nothing to verify, or verification has not
	// run yet.
	ReasonNotEvaluated = "NotEvaluated"
	// ReasonNoAllowedFlows: verification found no allowed flow.
	ReasonNoAllowedFlows = "NoAllowedFlows"
	// ReasonFlowAllowed: verification found an allowed flow.
	ReasonFlowAllowed = "FlowAllowed"
	// ReasonNotRestoring: no restore is under way.
	ReasonNotRestoring = "NotRestoring"
	// ReasonServingFromStandby: critical services are served from the
	// standby site.
	ReasonServingFromStandby = "ServingFromStandby"
	// ReasonFenced: the primary site is fenced and no site serves traffic.
	ReasonFenced = "Fenced"
	// ReasonRestoring: the fence stays while the primary site is rebuilt.
	ReasonRestoring = "Restoring"
	// ReasonRebuilding: the primary site is being rebuilt.
	ReasonRebuilding = "Rebuilding"
	// ReasonRestoreBlocked: the restore cannot proceed (for example an
	// unknown restoreRevision); the fence stays.
	ReasonRestoreBlocked = "RestoreBlocked"
	// ReasonPointsTaken: recovery points are taken on schedule.
	ReasonPointsTaken = "PointsTaken"
	// ReasonWaitingForVolumes: no volume of the primary site is bound yet.
	ReasonWaitingForVolumes = "WaitingForVolumes"
	// ReasonSnapshotClassNotFound: recovery.volumeSnapshotClassName names
	// no VolumeSnapshotClass (or the cluster serves no snapshot API).
	ReasonSnapshotClassNotFound = "SnapshotClassNotFound"
	// ReasonSnapshotClassMismatch: the VolumeSnapshotClass's driver is not
	// the CSI driver of the environment's volumes.
	ReasonSnapshotClassMismatch = "SnapshotClassMismatch"
	// ReasonSnapshotFailed: a snapshot of a recovery point reports an error.
	ReasonSnapshotFailed = "SnapshotFailed"
	// ReasonPausedWhileFenced: while fenced, points are taken (unclean, as
	// evidence of what changed) until keep of them exist, and none is
	// deleted.
	ReasonPausedWhileFenced = "PausedWhileFenced"
	// ReasonEvidenceTaken: every claim of the fenced namespace has a ready
	// evidence snapshot.
	ReasonEvidenceTaken = "EvidenceTaken"
	// ReasonEvidencePending: the evidence snapshots are requested and not
	// all ready yet.
	ReasonEvidencePending = "EvidencePending"
	// ReasonNoSnapshotClass: the environment sets no
	// recovery.volumeSnapshotClassName, so the fence cannot snapshot its
	// volumes (the network fence stands regardless).
	ReasonNoSnapshotClass = "NoSnapshotClass"
)

// Labels and annotations careplane sets on what it owns. Users may select on
// the labels; they must not set them.
const (
	// LabelManagedBy marks objects careplane created; a namespace without it
	// is never adopted.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy on careplane's objects.
	ManagedByValue = "careplane"
	// LabelEnvironment names the HealthEnvironment an object belongs to.
	LabelEnvironment = "careplane.io/environment"
	// LabelSite names the site (primary, standby or front) of an object.
	LabelSite = "careplane.io/site"
	// LabelService names the service of an object.
	LabelService = "careplane.io/service"
	// LabelEvidence marks a pod preserved as evidence, a fence's evidence
	// VolumeSnapshot, and a claim a restore kept as evidence; its value is
	// the ticket (or "fenced" when the fence has no ticket).
	LabelEvidence = "careplane.io/evidence"
	// AnnotationDataGeneration on the primary Namespace names the data
	// generation its StatefulSets run as: absent before any restore from a
	// recovery point, then the generation the last one rebuilt (their
	// names are <service>-<generation>, so that neither the evidence pods
	// nor the claims kept as evidence hold a name they need).
	AnnotationDataGeneration = "careplane.io/data-generation"
	// AnnotationRestoredFrom on a claim a restore created names the
	// recovery point and VolumeSnapshot its data came from
	// (<point>/<snapshot>).
	AnnotationRestoredFrom = "careplane.io/restored-from"
	// LabelRecoveryPoint on a VolumeSnapshot names the recovery point it
	// belongs to.
	LabelRecoveryPoint = "careplane.io/recovery-point"
	// LabelClean on a recovery point's VolumeSnapshot is "true" when the
	// point is clean (see RecoveryPoint.clean), "false" otherwise.
	LabelClean = "careplane.io/clean"
	// AnnotationTakenAt on a recovery point's VolumeSnapshot is when the
	// point was taken (RFC 3339).
	AnnotationTakenAt = "careplane.io/taken-at"
	// AnnotationRevision on a recovery point's VolumeSnapshot is the
	// known-good revision the environment ran when it was taken.
	AnnotationRevision = "careplane.io/revision"
	// LabelFenceID on an evidence VolumeSnapshot is the fence that took it:
	// its ID without the colons a label value cannot hold.
	LabelFenceID = "careplane.io/fence-id"
	// AnnotationFenceID on an evidence VolumeSnapshot is the fence's ID as
	// the namespace records it (RFC 3339).
	AnnotationFenceID = "careplane.io/fence-id"
	// LabelRetained is "true" on the primary namespace of a deleted
	// environment whose data careplane kept (dataDeletionPolicy Retain).
	LabelRetained = "careplane.io/retained"
	// LabelDataOf on a PersistentVolume or VolumeSnapshotContent names the
	// environment whose primary data it holds, and says careplane set its
	// reclaim (deletion) policy to Retain: deleting the environment, its
	// namespace or a claim or snapshot in it leaves the bytes, whatever
	// deletes them, until a responder purges them (package retention).
	LabelDataOf = "careplane.io/data-of"
	// AnnotationPolicyBefore on such a PersistentVolume or
	// VolumeSnapshotContent is its policy before careplane set Retain (the
	// class's), restored when the environment's dataDeletionPolicy is
	// Delete and when a recovery point is retired.
	AnnotationPolicyBefore = "careplane.io/policy-before"
	// LabelFenced is set to "true" on the namespaces of a fenced site. The
	// freeze admission policy selects namespaces by it: while it is there,
	// only careplane, incident responders and the control plane may write
	// in the namespace.
	LabelFenced = "careplane.io/fenced"
	// AnnotationIsolationBy on a HealthEnvironment names who last changed
	// its spec.isolation, as the API server authenticated them: the
	// isolation guard admits a change of spec.isolation only when this
	// annotation is the requester's own username, and refuses any other
	// change of it. careplane records it as who fenced and who restored.
	AnnotationIsolationBy = "careplane.io/isolation-by"
	// AnnotationRequestedBy on a FenceRequest names who created it, checked
	// the same way by the FenceRequest guard.
	AnnotationRequestedBy = "careplane.io/requested-by"
	// DefaultResponderGroup is the group allowed to change spec.isolation
	// when the guardrail policies are installed with their defaults.
	DefaultResponderGroup = "careplane:incident-responders"
)
