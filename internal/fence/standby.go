package fence

import (
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// VerbRotate replaces a generated Secret with a new random value (deleted
// and created whole, annotated with the credentials revision).
const VerbRotate Verb = "rotate"

// VerbFreeze labels the standby namespace with the freeze, for the fence
// whose ID it records (StandbyFreeze).
const VerbFreeze Verb = "freeze"

// AnnotationStandbyFence, on a standby Namespace frozen by a fence that moves
// traffic there, is that fence's ID: careplane lifts only a freeze it wrote,
// and the freeze policy lets the control plane start pods in a standby so
// frozen (it serves: its pods roll onto the fence's credentials, and come
// back when a node is lost).
const AnnotationStandbyFence = "careplane.io/standby-fence-id"

// StandbyFrozenFor is the fence the standby Namespace ns is frozen for: its
// AnnotationStandbyFence, with the freeze label; "" when it is not frozen.
func StandbyFrozenFor(ns metav1.Object) string {
	if ns == nil || ns.GetLabels()[v1alpha1.LabelFenced] != "true" {
		return ""
	}
	return ns.GetAnnotations()[AnnotationStandbyFence]
}

// StandbyFreeze is the labels and annotations that freeze a standby
// Namespace for fence id; with id "", the values (nil) that lift it.
func StandbyFreeze(id string) (labels, annotations map[string]any) {
	if id == "" {
		return map[string]any{v1alpha1.LabelFenced: nil}, map[string]any{AnnotationStandbyFence: nil, AnnotationStandbyWritten: nil}
	}
	return map[string]any{v1alpha1.LabelFenced: "true"}, map[string]any{AnnotationStandbyFence: id}
}

// VerbRoll rolls a workload onto new credentials: its pod template gets the
// credentials revision, and a surge rollout starts new pods before the old
// ones stop.
const VerbRoll Verb = "roll"

// StandbyObserved is what a fence reads of the standby namespace, when the
// fence moves traffic there (StandbyServes).
type StandbyObserved struct {
	// Services are the services the standby runs: the critical services of
	// the latest known-good revision. Their ServiceAccounts are careplane's,
	// their generated Secrets are rotated.
	Services []v1alpha1.Service
	// ServiceAccounts and Secrets are every one of the standby namespace,
	// whoever made it (metadata).
	ServiceAccounts, Secrets []Object
	// Workloads maps the name of each of the standby's Deployments and
	// StatefulSets that exists to the credentials revision of its pod
	// template ("" when it carries none).
	Workloads map[string]string
	// Unread says the namespace was read but not the rest: only its
	// freeze is planned, nothing that needs the rest (a clean-up or a
	// rotation from a partial look would replace credentials with the
	// tenant's objects still there).
	Unread bool
	// FrozenFor is the fence the standby namespace is frozen for
	// (StandbyFrozenFor), as the API server holds it.
	FrozenFor string
	// Objects are every object of the StandbyKinds in the standby
	// namespace, whoever made it, read once it is frozen for this fence
	// (ReadStandby): what the clean-up reads. Nil before.
	Objects []StandbyObject
	// Written is what careplane wrote whole there under this fence, as
	// the standby Namespace records it (StandbyWrittenOf).
	Written StandbyWritten
	// WaitedOut says the rotation has waited long enough for careplane's
	// pods to run their workloads' current templates (StandbyWaitLimit
	// since the fence began): those of a ReplicaSet still not rolled away
	// are deleted.
	WaitedOut bool
}

// StandbyWaitLimit is how long the standby's rotation waits for its
// workloads' rolls before it deletes the pods they have not replaced.
const StandbyWaitLimit = time.Minute

// StandbyServes says a fence of env moves (or keeps) its critical traffic on
// the standby, as failover.Decide wants it for a fenced primary: there is a
// standby, and the trigger is Automatic or failover.activeSite asks for the
// standby. A failover without a fence (an unavailable primary, a manual
// switch) declares no compromise and rotates nothing.
func StandbyServes(env *v1alpha1.HealthEnvironment) bool {
	fo := env.Spec.Failover
	return build.HasStandby(env) && (fo.Trigger != v1alpha1.TriggerManual || fo.ActiveSite == v1alpha1.SiteStandby)
}

// planStandby is the standby's part of step 3: when the fence moves traffic
// to the standby, whatever credentials of the standby the compromised tenant
// may have read or minted before the fence (its pipeline may write there)
// stop working, once per fence (keyed by the fence ID, like the primary's):
// every ServiceAccount recreated (the standby services' and default) or
// deleted (every other), every generated Secret rotated, and each workload
// rolled onto them with a surge, so that the standby never stops serving.
func planStandby(p *Plan, o Observed) {
	sb := o.Standby
	if sb == nil || !StandbyServes(o.Env) {
		return
	}
	ns := build.NamespaceNames(o.Env).Standby
	rev := o.Record.ID
	const part = "standby: "
	add := func(a Action) {
		a.Step, a.Namespace, a.Note = 3, ns, part+a.Note
		p.Actions = append(p.Actions, a)
	}

	// First, before any credential is replaced: the standby serves from
	// here on, and the tenant's pipeline, which may write there as in the
	// primary, must not mint a token for a new ServiceAccount, read a new
	// Secret, or add a pod, a policy or a sidecar to what serves.
	// The operator carries out a plan with the freeze in it by the freeze
	// alone (StandbyFreezeFirst): the rest is made from a look taken once
	// it is in place, so that nothing the tenant adds meanwhile is missed.
	if sb.FrozenFor != rev {
		p.Actions = append(p.Actions, Action{Step: 3, Verb: VerbFreeze, Kind: "Namespace", Name: ns,
			Note: part + "label " + v1alpha1.LabelFenced + "=true and record fence " + rev +
				" (freezes the namespace that serves: only careplane, responders and the control plane write there until the fence lifts)"})
	}
	if sb.Unread {
		return
	}
	// Then what the tenant planted goes, before any credential is
	// replaced: nothing of it runs on the new ones.
	clean, stale, hasten := planStandbyClean(o.Env, ns, sb, rev)
	for _, a := range clean {
		add(a)
	}
	rotations := len(p.Actions)

	recreate := map[string]bool{"default": true}
	for _, svc := range sb.Services {
		recreate[svc.Name] = true
	}
	seen := map[string]bool{}
	for _, sa := range sorted(sb.ServiceAccounts) {
		seen[sa.Name] = true
		switch {
		case sa.DeletionTimestamp != nil:
		case recreate[sa.Name] && sa.Annotations[build.AnnotationCredentialsRevision] == rev:
			// Recreated under this fence already.
		case recreate[sa.Name]:
			add(Action{Verb: VerbRecreate, Kind: "ServiceAccount", Name: sa.Name, UID: sa.UID,
				Note: "new UID: tokens minted for the old one stop working"})
		default:
			add(Action{Verb: VerbDelete, Kind: "ServiceAccount", Name: sa.Name, UID: sa.UID,
				Note: "not careplane's: deleted, its tokens stop working"})
		}
	}
	for _, name := range slices.Sorted(mapsKeys(recreate)) {
		if !seen[name] {
			add(Action{Verb: VerbRecreate, Kind: "ServiceAccount", Name: name, Note: "does not exist yet; created"})
		}
	}

	secrets := map[string]Object{}
	for _, sec := range sb.Secrets {
		secrets[sec.Name] = sec
	}
	for _, svc := range sortedServices(sb.Services) {
		for _, g := range sortedUnique(svc.GeneratedSecrets) {
			name := build.GeneratedSecretName(svc.Name, g)
			sec, ok := secrets[name]
			switch {
			case ok && sec.Annotations[build.AnnotationCredentialsRevision] == rev:
				// Rotated under this fence already.
			case ok && sec.DeletionTimestamp == nil:
				add(Action{Verb: VerbRotate, Kind: "Secret", Name: name, UID: sec.UID,
					Note: "generated credential replaced by a new random value"})
			default:
				add(Action{Verb: VerbRotate, Kind: "Secret", Name: name, Note: "does not exist yet; created with a new random value"})
			}
		}
	}

	for _, svc := range sortedServices(sb.Services) {
		kind := "Deployment"
		if svc.Stateful() {
			kind = "StatefulSet"
		}
		cur, exists := sb.Workloads[svc.Name]
		switch {
		case cur == rev:
		case !exists:
			add(Action{Verb: VerbRoll, Kind: kind, Name: svc.Name, Note: "does not exist yet; its pods start on the new credentials"})
		case !CanRollWithoutAGap(svc):
			add(Action{Verb: VerbKeep, Kind: kind, Name: svc.Name,
				Note: "not rolled: one pod of a StatefulSet cannot surge; the kubelet updates its mounted Secrets in place"})
		default:
			add(Action{Verb: VerbRoll, Kind: kind, Name: svc.Name,
				Note: "rolled onto the new credentials once traffic is on the standby: new pods start before old ones stop"})
		}
	}

	// Once frozen, the credentials are replaced only from a look that found
	// the standby clean, and once careplane's pods all run their workloads'
	// current templates: a pod of a template the tenant changed, still
	// running while its workload rolls, would read the new Secrets.
	if sb.FrozenFor == rev && (len(clean) > 0 || len(stale) > 0 || len(hasten) > 0) {
		pending := slices.ContainsFunc(p.Actions[rotations:], func(a Action) bool {
			return a.Verb == VerbRecreate || a.Verb == VerbDelete || a.Verb == VerbRotate
		})
		p.Actions = p.Actions[:rotations]
		if pending && len(clean) == 0 {
			for _, a := range hasten {
				add(a)
			}
			if len(stale) > 0 {
				add(Action{Verb: VerbWait, Kind: "Pod", Name: stale[0],
					Note: "the credentials are replaced once careplane's pods all run their workloads' current templates; still running an older one: " + strings.Join(stale, ", ")})
			}
		}
	}
}

// CanRollWithoutAGap says svc's standby workload can roll onto new
// credentials while some pod of it stays Ready throughout: a Deployment
// (careplane's surge one pod and never go below the wanted count), or a
// StatefulSet of more than one replica (it replaces one pod at a time). A
// StatefulSet of one replica cannot: its one pod must stop before the new
// one, of the same name and claims, starts.
func CanRollWithoutAGap(svc v1alpha1.Service) bool {
	return !svc.Stateful() || svc.ReplicaCount() > 1
}

// StandbyWorkloadRevision is the credentials revision the standby runs svc's
// workload with: current (its template's, "" for none; exists says the
// workload exists), or rotation, the fence's ID when the fence rotated the
// standby's credentials ("" when it did not), where the roll cannot hold up
// the failover or stop the standby serving. A workload that does not exist
// yet starts on it. One that exists rolls only once traffic is on record on
// the standby (onStandby): failover.Decide moves traffic only to a standby
// whose every replica runs its current template, and keeps traffic there
// while it rolls. And only when CanRollWithoutAGap.
func StandbyWorkloadRevision(svc v1alpha1.Service, current string, exists bool, rotation string, onStandby bool) string {
	switch {
	case rotation == "" || current == rotation:
		return current
	case !exists:
		return rotation
	case onStandby && CanRollWithoutAGap(svc):
		return rotation
	}
	return current
}

func sortedUnique(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
