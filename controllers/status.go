package controllers

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/conditions"
	"github.com/careplane/careplane/internal/failover"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/netpol"
	"github.com/careplane/careplane/internal/recovery"
	"github.com/careplane/careplane/internal/ssa"
)

const fieldOwner = ssa.FieldOwner

// scope is what one reconcile of one environment gathers and decides; the
// deferred status write turns it into conditions.
type scope struct {
	// env is the environment as the API server holds it: its spec is the
	// user's, never changed in memory (careplane writes no spec).
	env *v1alpha1.HealthEnvironment
	// iso is the isolation in force (fence.Effective): the spec's, or, while
	// a fence the spec does not ask for holds, that fence's mode, reason,
	// ticket and workloads. What the fence does and reports reads this.
	iso    v1alpha1.Isolation
	now    time.Time
	names  build.Names
	status *v1alpha1.HealthEnvironmentStatus
	// isoStatus is the status.isolation read as far as it describes the
	// fence on record (fence.IsolationOf); what this fence did so far.
	isoStatus *v1alpha1.IsolationStatus

	// fenceRequest names the FenceRequest that holds the fence, while the
	// environment's own spec does not say Fenced.
	fenceRequest string
	// fencedBy is who asked for the fence in force, as the guardrails
	// checked it (v1alpha1.AnnotationIsolationBy or AnnotationRequestedBy).
	fencedBy string
	// conflict names a namespace careplane needs but does not own.
	conflict string
	// applyFailed is the error of writing children, if any.
	applyFailed error
	// services is the readiness gathered per service and site.
	services []v1alpha1.ServiceStatus
	// credentials is the credentials revision of the primary, as its
	// Namespace records it (build.PrimaryCredentials); "" before it is read.
	credentials string
	// stalled names Deployments that report they cannot make progress.
	stalled []string

	// record is the fence on record on the primary Namespace.
	record fence.Record
	// windowClosed says this pass wrote the fence's window, its record
	// included, against the namespace as the API server holds it: record
	// is not one read from a cache behind a lift.
	windowClosed bool
	// course is what this reconcile does with the fence (fence.Decide).
	course fence.Course
	// primary are the service templates the primary site runs: the spec's,
	// or a restore revision's while one is set.
	primary []v1alpha1.Service
	// primaryFrom names where they come from: "spec" or a revision.
	primaryFrom string
	// fenceComplete says every fence step succeeded in this reconcile.
	fenceComplete bool
	// standbyWaiting says the standby's rotation waits for its pods to run
	// careplane's templates (fence.VerbWait): the fence is not complete.
	standbyWaiting bool
	// standbyErr is why the standby's part of the fence failed in this
	// reconcile: reported once the front is switched, so that it holds up
	// nothing else.
	standbyErr error
	// standbyWritten is what careplane wrote whole in the standby under
	// this fence, as its Namespace records it (fence.StandbyWritten).
	standbyWritten fence.StandbyWritten
	// restoring says a restore is under way; restored that it completed.
	restoring, restored bool
	// restoreErr is why a restore cannot proceed.
	restoreErr error
	// dataGen is the data generation the primary's StatefulSets run as
	// (the primary Namespace's careplane.io/data-generation); a restore
	// from a recovery point moves it to its own.
	dataGen string
	// holdsEvidence says the primary Namespace names evidence pods
	// (build.LabelHoldsEvidence): the environment keeps the data finalizer
	// while it does, so that deleting it keeps them (retain.go).
	holdsEvidence bool
	// restorePoint is the recovery point a restore of services with
	// volumes uses, and restoreClaims the claims it creates from it.
	restorePoint  *recovery.Choice
	restoreClaims []recovery.RestoredClaim
	restoreGen    string
	// removedPolicies, credentialsRevoked and evidencePods are what the
	// fence did and found in this reconcile.
	removedPolicies    []string
	credentialsRevoked int32
	evidencePods       int32
	// verified is the isolation verdict, when the fence was evaluated.
	verified *netpol.Result
	// deletionBlocked says the environment is being deleted while fenced.
	deletionBlocked bool
	// adminFence names the admin-tier fence policy written in this
	// reconcile ("<Kind> <name>"), if any; adminFenceErr is why it could
	// not be written.
	adminFence    string
	adminFenceErr error

	// evidence is the EvidenceSnapshots condition the fence's evidence
	// step found (nil: it did not run), set when the status is finished.
	evidence *metav1.Condition

	// decision is where traffic goes (nil until decided in this reconcile).
	decision *failover.Decision
	// standbyTemplates are the critical services of the known-good revision.
	standbyTemplates []v1alpha1.Service
	// standbyServices are the services the standby runs, as the fence's
	// standby step read them (its Secrets are rotated by name).
	standbyServices []v1alpha1.Service
	// standbyRotation is the fence ID under which this reconcile's fence
	// rotated every credential of the standby ("" when it did not): the
	// standby's ServiceAccounts keep it, and its workloads roll onto it
	// (fence.StandbyWorkloadRevision).
	standbyRotation string
	// standbyHold: the standby's StatefulSets stay at zero replicas while
	// their claims are replaced (reconcileStandbyData).
	standbyHold bool
	// requeueAfter asks for a reconcile within this time (0: none), for
	// what no watch reports.
	requeueAfter time.Duration
	// seen is the fenced namespace as the fence's last look saw it:
	// what verifyIsolation evaluates.
	seen *seenNamespace
	// liftUnchecked: the fence was read from the cache alone, for a
	// restore waiting for its pods (restoreWaiting); it is read from the
	// API server before the restore lifts it.
	liftUnchecked bool
}

func newScope(env *v1alpha1.HealthEnvironment, now time.Time) *scope {
	st := env.Status.DeepCopy()
	names := build.NamespaceNames(env)
	st.Namespaces = &v1alpha1.Namespaces{Front: names.Front, Primary: names.Primary, Standby: names.Standby}
	return &scope{env: env, iso: *env.Spec.Isolation.DeepCopy(), isoStatus: env.Status.Isolation, now: now, names: names, status: st}
}

// statefulSetName names svc's StatefulSet on site: in the primary, that of
// its data generation.
func (s *scope) statefulSetName(site v1alpha1.Site, svc v1alpha1.Service) string {
	return build.StatefulSetName(svc.Name, s.dataGenOf(site))
}

// dataGenOf is the data generation of site's StatefulSets: the primary's,
// or "" (the standby's are named after their services).
func (s *scope) dataGenOf(site v1alpha1.Site) string {
	if site != v1alpha1.SitePrimary {
		return ""
	}
	return s.dataGen
}

// sites are the site namespaces this environment has.
func (s *scope) sites() []v1alpha1.Site {
	if build.HasStandby(s.env) {
		return []v1alpha1.Site{v1alpha1.SitePrimary, v1alpha1.SiteStandby}
	}
	return []v1alpha1.Site{v1alpha1.SitePrimary}
}

func (s *scope) namespaceOf(site v1alpha1.Site) string { return s.names.ForSite(site) }

// primaryFenced says the primary site is fenced or being fenced.
func (s *scope) primaryFenced() bool {
	return s.course == fence.CourseFence || s.course == fence.CourseRestore || s.record.Present()
}

// namespaces are the desired namespaces, front first.
func (s *scope) namespaces() []*corev1ac.NamespaceApplyConfiguration {
	out := []*corev1ac.NamespaceApplyConfiguration{build.Namespace(s.env, s.names.Front, build.SiteLabelFront)}
	for _, site := range s.sites() {
		out = append(out, build.Namespace(s.env, s.namespaceOf(site), build.SiteLabel(site)))
	}
	return out
}

// servicesFor are the services that run on a site: the spec's on the
// primary; on the standby, the critical services of the last known-good
// revision, when the failover decision wants the standby running.
func (s *scope) servicesFor(site v1alpha1.Site) []v1alpha1.Service {
	if site == v1alpha1.SitePrimary {
		return s.primary
	}
	if s.decision != nil && s.decision.RunStandby {
		return s.standbyTemplates
	}
	return nil
}

// activeSite is the site the front Services send traffic to, as the
// failover decision says; serving is false when no site may receive traffic.
func (s *scope) activeSite() (site v1alpha1.Site, serving bool) {
	if s.decision != nil {
		return s.decision.Site, s.decision.Serving
	}
	// Not decided (the reconcile stopped early): never route to a fenced
	// primary.
	return v1alpha1.SitePrimary, !s.record.Present() || s.restored
}

// credentialsRevision is the revision of credentials a workload's pods
// run with: what its template records (a restore sets it), or
// build.InitialCredentials. Keeping it rolls nothing; a restore changes it,
// which rolls the pods.
func credentialsRevision(w *workload) string {
	if w != nil && w.credentialsRevision != "" {
		return w.credentialsRevision
	}
	return build.InitialCredentials
}

// primaryCredentials is the credentials revision every workload of the
// primary runs outside a restore (which rebuilds on its own), as its
// Namespace records it (build.PrimaryCredentials): not each workload's
// own, since a workload replaced (a StatefulSet whose claims grew, a
// service added, a Deployment the tenant deleted or re-annotated) must not
// fall back to the initial revision, whose Secret names are those the
// evidence pods of a first fence mount.
func (s *scope) primaryCredentials() string {
	return cmp.Or(s.credentials, build.InitialCredentials)
}

// observeDeployment records a service's readiness from its Deployment (nil
// when the cache does not hold it yet).
func (s *scope) observeDeployment(site v1alpha1.Site, svc v1alpha1.Service, dep *appsv1.Deployment) {
	var w *workload
	if dep != nil {
		w = deploymentWorkload(dep)
	}
	s.observeWorkload(site, svc, w)
}

// observeWorkload records a service's readiness from its Deployment or
// StatefulSet (nil when the cache does not hold it yet).
func (s *scope) observeWorkload(site v1alpha1.Site, svc v1alpha1.Service, w *workload) {
	st := v1alpha1.ServiceStatus{Name: svc.Name, Site: site, Replicas: svc.ReplicaCount(), Image: svc.Image}
	if w != nil && w.current() {
		st.ReadyReplicas = w.ready
	}
	if w != nil {
		for _, msg := range w.stuck {
			s.stalled = append(s.stalled, fmt.Sprintf("%s/%s: %s", w.namespace, w.name, msg))
		}
	}
	s.services = append(s.services, st)
}

// deploymentStuck says a Deployment condition reports a rollout that does
// not progress. The cache keeps only these (trimDeployment).
func deploymentStuck(c appsv1.DeploymentCondition) bool {
	return (c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse) ||
		(c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue)
}

// finish turns what the reconcile gathered into the status: the conditions
// (package conditions decides them), the services and status.isolation.
func (s *scope) finish(reconcileErr error) {
	st := s.status
	// Again: this pass may have written a new fence's record where it
	// gathered none. The conditions read isoStatus too.
	s.forgetLiftedIsolation()
	active, serving := s.activeSite()
	err := s.applyFailed
	if err == nil {
		err = reconcileErr
	}
	in := conditions.Input{
		Generation: s.env.Generation, Services: s.services, ActiveSite: active, Serving: serving,
		DeletionBlocked: s.deletionBlocked, Conflict: s.conflict, Err: err, Stalled: s.stalled,
		Fence: conditions.Fence{
			Fencing: s.course == fence.CourseFence, Recorded: s.record.Present(),
			Restoring: s.restoring, Restored: s.restored || s.liftedEarlier(), RestoreErr: s.restoreErr,
			Complete: s.fenceComplete, Verified: s.verified, AdminFence: s.adminFence,
			CredentialsRevoked: s.credentialsRevokedTotal(), EvidencePods: s.evidencePods, From: s.primaryFrom,
			By: s.fencedByOnRecord(),
		},
	}
	if s.decision != nil {
		in.Traffic = &conditions.Traffic{FromStandby: s.decision.ServingFromStandby(), Reason: s.decision.Reason, Message: s.servingMessage()}
	}
	ready, total := conditions.Set(&st.Conditions, in)
	if s.evidence != nil {
		meta.SetStatusCondition(&st.Conditions, *s.evidence)
	}
	if s.services != nil || reconcileErr == nil {
		st.Services = s.services
		st.ReadyServices = fmt.Sprintf("%d/%d", ready, total)
	}
	s.finishIsolation()
}

// liftedEarlier says an earlier pass lifted the fence the status still
// describes, and its status write was lost (a conflict, a timeout, a
// crash): no fence is on record or asked for, and the last incident is that
// fence's. This pass writes what the lift's would have.
func (s *scope) liftedEarlier() bool {
	return s.course == fence.CourseNone && !s.record.Present() && fence.Lifted(s.env.Status.Isolation, s.env.Status.Incidents)
}

// finishIsolation writes status.isolation from what the fence or restore
// did.
func (s *scope) finishIsolation() {
	st := s.status
	iso := s.iso
	fencing := s.course == fence.CourseFence
	// status.isolation describes the fence in place; history goes to
	// status.incidents.
	if !s.record.Present() || s.restored {
		st.Isolation = nil
		return
	}
	if fencing && s.windowClosed {
		// An incident of this fence is of a lift it resumed over. Only of
		// a record this pass wrote: one read from a cache behind a lift
		// is the lifted fence's, and its incident stands.
		st.Incidents = fence.Resumed(st.Incidents, s.record)
	}
	if st.Isolation == nil {
		st.Isolation = &v1alpha1.IsolationStatus{}
	}
	if t, ok := s.record.Began(); ok && st.Isolation.FencedAt == nil {
		st.Isolation.FencedAt = &metav1.Time{Time: t}
	}
	if fencing {
		st.Isolation.Reason, st.Isolation.Ticket = iso.Reason, iso.Ticket
	}
	if s.fenceRequest != "" {
		st.Isolation.Request = s.fenceRequest
	}
	if st.Isolation.FencedBy == "" {
		// Who asked first: the request's creator, or the spec's writer.
		st.Isolation.FencedBy = s.fencedBy
	}
	st.Isolation.CredentialsRevoked = s.credentialsRevokedTotal()
	if s.verified != nil {
		st.Isolation.EvidencePods = s.evidencePods
	}
	if len(s.removedPolicies) > 0 {
		all := append(append([]string{}, st.Isolation.RemovedPolicies...), s.removedPolicies...)
		if len(all) > 100 {
			all = all[len(all)-100:]
		}
		st.Isolation.RemovedPolicies = all
	}
	if s.verified != nil {
		if prev := findCondition(s.env.Status.Conditions, v1alpha1.ConditionIsolationVerified); prev == nil ||
			st.Isolation.VerifiedAt == nil || string(prev.Status) != string(conditionStatus(s.verified.Isolated)) {
			st.Isolation.VerifiedAt = &metav1.Time{Time: s.now}
		}
	}
}

// forgetLiftedIsolation drops the status.isolation read when it describes
// another fence than the one on record: one a restore lifted, its last
// status write lost. None of it is this fence's.
func (s *scope) forgetLiftedIsolation() {
	if fence.IsolationOf(s.record, s.isoStatus) == nil {
		s.isoStatus, s.status.Isolation = nil, nil
	}
}

// fencedByOnRecord is who asked for the fence in force: as the status
// recorded it first, or as this reconcile found it.
func (s *scope) fencedByOnRecord() string {
	if iso := s.isoStatus; iso != nil && iso.FencedBy != "" {
		return iso.FencedBy
	}
	return s.fencedBy
}

// credentialsRevokedTotal counts the credentials this fence revoked: what
// earlier reconciles recorded plus what this one did.
func (s *scope) credentialsRevokedTotal() int32 {
	n := s.credentialsRevoked
	if s.isoStatus != nil {
		n += s.isoStatus.CredentialsRevoked
	}
	return n
}

// unrecordedMemory is, by environment name, what a fence pass did (the
// policies it removed, the credentials it revoked) that its status write,
// conflicting, did not record. The next pass finds nothing left to do, and
// records it instead (TestWhatAFencePassDidOutlivesItsConflictedStatusWrite).
// Only a conflict is carried: a write refused for a newer resourceVersion
// certainly did not land, while one that timed out may have, and its
// count would be counted twice. A new leader has none of it: what a pass
// did before a crash, or before a status write whose fate is unknown, is
// told by its events alone (PoliciesRemoved).
type unrecordedMemory struct {
	mu sync.Mutex
	m  map[string]unrecorded
}

// unrecorded is what passes of one fence (the environment's UID and the
// fence's ID) did and did not record.
type unrecorded struct {
	uid                types.UID
	fence              string
	removedPolicies    []string
	credentialsRevoked int32
}

// take adds to what s's pass did what earlier passes of its fence did and
// did not record, and forgets it. Of another environment (re-created) or
// another fence, it is dropped. A pass that has no fence on record (one
// that stopped before it read or wrote the record, or read a cache behind
// it) leaves it for the next.
func (m *unrecordedMemory) take(s *scope) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.m[s.env.Name]
	switch {
	case !ok:
		return
	case u.uid == s.env.UID && !s.record.Present():
		return
	}
	delete(m.m, s.env.Name)
	if u.uid != s.env.UID || u.fence != s.record.ID {
		return
	}
	s.removedPolicies = append(u.removedPolicies, s.removedPolicies...)
	s.credentialsRevoked += u.credentialsRevoked
}

// keep remembers what s's pass did, what it took included, its status
// write having conflicted.
func (m *unrecordedMemory) keep(s *scope) {
	if !s.record.Present() || (len(s.removedPolicies) == 0 && s.credentialsRevoked == 0) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = map[string]unrecorded{}
	}
	m.m[s.env.Name] = unrecorded{uid: s.env.UID, fence: s.record.ID,
		removedPolicies: slices.Clone(s.removedPolicies), credentialsRevoked: s.credentialsRevoked}
}

func (m *unrecordedMemory) forget(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, name)
}

func conditionStatus(b bool) metav1.ConditionStatus {
	if b {
		return metav1.ConditionTrue
	}
	return metav1.ConditionFalse
}

// setCondition sets a condition, for the given generation.
func setCondition(conds *[]metav1.Condition, gen int64, t string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(conds, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
}

func findCondition(conds []metav1.Condition, t string) *metav1.Condition {
	return meta.FindStatusCondition(conds, t)
}

// event is one event to record on a status transition.
type event struct {
	eventType, reason, action, note string
}

// transitions are the events a status change deserves: a condition changing
// its status or reason, an incident withdrawn, and a new known-good revision
// (a new incident has its own, writeIncident). Conditions seen for the first
// time in their quiet state (provisioning, not fenced, nothing to verify) are
// not worth an event, nor is a move another event of the same change tells
// (toldBy).
func transitions(before, after *v1alpha1.HealthEnvironmentStatus) []event {
	var out []event
	for _, t := range []string{v1alpha1.ConditionReady, v1alpha1.ConditionDegraded, v1alpha1.ConditionFenced,
		v1alpha1.ConditionIsolationVerified, v1alpha1.ConditionRestoring, v1alpha1.ConditionServingFromStandby} {
		b := meta.FindStatusCondition(before.Conditions, t)
		a := meta.FindStatusCondition(after.Conditions, t)
		if a == nil || (b != nil && b.Status == a.Status && b.Reason == a.Reason) {
			continue
		}
		if t == v1alpha1.ConditionServingFromStandby && (b == nil || b.Status == a.Status) {
			// Only moves of traffic are worth an event.
			continue
		}
		quiet := a.Status == metav1.ConditionUnknown || a.Reason == v1alpha1.ReasonProvisioning ||
			a.Reason == v1alpha1.ReasonNotFenced || a.Reason == v1alpha1.ReasonNotRestoring || a.Reason == v1alpha1.ReasonAsExpected
		if b == nil && quiet {
			continue
		}
		typ := corev1.EventTypeNormal
		if alarming(t, a) {
			typ = corev1.EventTypeWarning
		} else if toldBy(before, after, t, a) {
			// A Warning is never folded: responders filter on them.
			continue
		}
		out = append(out, event{eventType: typ, reason: a.Reason, action: "Reconcile", note: a.Message})
	}
	if inc := fence.Withdrawn(before.Incidents, after.Incidents, after.Isolation); inc != nil {
		note := "The fence was asked for again before its lift finished: it stays, and incident " + inc.Ticket
		if inc.RestoredAt != nil {
			note += ", recorded as restored at " + inc.RestoredAt.UTC().Format(time.RFC3339) + ","
		}
		out = append(out, event{eventType: corev1.EventTypeWarning, reason: "LiftAborted", action: "Fence", note: note + " is withdrawn"})
	}
	if after.KnownGoodRevision != "" && after.KnownGoodRevision != before.KnownGoodRevision {
		out = append(out, event{eventType: corev1.EventTypeNormal, reason: "RevisionRecorded", action: "RecordRevision",
			note: "Recorded known-good revision " + after.KnownGoodRevision})
	}
	return out
}

// toldBy says whether condition t's move to a is told by another event of
// the same status change, and so is worth none of its own (unless it is a
// Warning: transitions never folds one).
func toldBy(before, after *v1alpha1.HealthEnvironmentStatus, t string, a *metav1.Condition) bool {
	moved := func(t, reason string) bool {
		b, a := meta.FindStatusCondition(before.Conditions, t), meta.FindStatusCondition(after.Conditions, t)
		return a != nil && a.Reason == reason && (b == nil || b.Reason != reason || b.Status != a.Status)
	}
	switch {
	case a.Reason == v1alpha1.ReasonNotFenced || a.Reason == v1alpha1.ReasonNotEvaluated || a.Reason == v1alpha1.ReasonNotRestoring:
		// The lifted fence, nothing left to verify, the restore over: the
		// Restored event of the fence's incident (writeIncident).
		return before.Isolation != nil && after.Isolation == nil && fence.Lifted(before.Isolation, after.Incidents)
	case t == v1alpha1.ConditionIsolationVerified && a.Reason == v1alpha1.ReasonNoAllowedFlows:
		// FenceComplete says the isolation is verified.
		return moved(v1alpha1.ConditionFenced, v1alpha1.ReasonFenceComplete)
	}
	return false
}

// alarming says whether a condition in this state deserves a Warning event.
func alarming(t string, c *metav1.Condition) bool {
	switch t {
	case v1alpha1.ConditionReady:
		return c.Status == metav1.ConditionFalse && c.Reason != v1alpha1.ReasonProvisioning
	case v1alpha1.ConditionDegraded:
		return c.Status == metav1.ConditionTrue
	case v1alpha1.ConditionFenced:
		return c.Status == metav1.ConditionTrue || c.Reason == v1alpha1.ReasonFenceIncomplete
	case v1alpha1.ConditionIsolationVerified:
		return c.Status == metav1.ConditionFalse
	case v1alpha1.ConditionRestoring:
		return c.Reason == v1alpha1.ReasonRestoreBlocked
	case v1alpha1.ConditionServingFromStandby:
		return c.Status == metav1.ConditionTrue
	}
	return false
}
