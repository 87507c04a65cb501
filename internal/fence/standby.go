package fence

import (
	"cmp"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/ssa"
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
		return map[string]any{v1alpha1.LabelFenced: nil}, map[string]any{AnnotationStandbyFence: nil}
	}
	return map[string]any{v1alpha1.LabelFenced: "true"}, map[string]any{AnnotationStandbyFence: id}
}

// VerbStrip removes, from careplane's own object, every field of its spec
// another field manager wrote (ssa.TakeOver), in place: the object and what
// it runs stay.
const VerbStrip Verb = "strip"

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
	// FrozenFor is the fence the standby namespace is frozen for
	// (StandbyFrozenFor), as the API server holds it.
	FrozenFor string
	// Objects are every object of the StandbyKinds in the standby
	// namespace, whoever made it, read once it is frozen for this fence
	// (StandbyObjectOf): what the clean-up reads.
	Objects []StandbyObject
}

// StandbyObject is what the standby's clean-up reads of one object there:
// its kind, its metadata, and whether a writer other than the one that
// makes it wrote its spec (ForeignSpec).
type StandbyObject struct {
	Kind string
	Object
	// ForeignSpec says a field manager other than careplane (for a
	// ReplicaSet or a pod, other than the controller manager, which makes
	// them) wrote fields of its spec: a sidecar, an allow rule, an image.
	ForeignSpec bool
}

// StandbyKinds are the kinds the standby's clean-up reads: those that can
// let traffic in or out (NetworkPolicy, Service) or start a pod, which the
// built-in edit role may create.
var StandbyKinds = []schema.GroupVersionKind{
	{Group: "networking.k8s.io", Version: "v1", Kind: "NetworkPolicy"},
	{Version: "v1", Kind: "Service"},
	{Group: "apps", Version: "v1", Kind: "Deployment"},
	{Group: "apps", Version: "v1", Kind: "StatefulSet"},
	{Group: "apps", Version: "v1", Kind: "ReplicaSet"},
	{Group: "apps", Version: "v1", Kind: "DaemonSet"},
	{Group: "batch", Version: "v1", Kind: "Job"},
	{Group: "batch", Version: "v1", Kind: "CronJob"},
	{Version: "v1", Kind: "ReplicationController"},
	{Version: "v1", Kind: "Pod"},
}

// controllerManager is the field manager of the kube-controller-manager,
// which makes ReplicaSets and pods.
const controllerManager = "kube-controller-manager"

// StandbyObjectOf is what the clean-up reads of m, an object of kind (one
// of StandbyKinds) in the standby namespace.
func StandbyObjectOf(kind string, m metav1.ObjectMeta) StandbyObject {
	foreign := slices.ContainsFunc(m.ManagedFields, ForeignWriter(kind))
	// Whether anyone else wrote the spec is all the plan reads of them.
	m.ManagedFields = nil
	return StandbyObject{Kind: kind, Object: m, ForeignSpec: foreign}
}

// ForeignWriter says an entry of the managedFields of an object of kind in
// the standby is another writer's, for StandbyObject.ForeignSpec: a writer
// of its spec other than the one that makes it (careplane; the controller
// manager for a ReplicaSet or a pod), or, for a pod, one that added an
// ephemeral container.
func ForeignWriter(kind string) func(metav1.ManagedFieldsEntry) bool {
	maker := ssa.FieldOwner
	if kind == "ReplicaSet" || kind == "Pod" {
		maker = controllerManager
	}
	return func(e metav1.ManagedFieldsEntry) bool {
		return ssa.WritesSpec(e, maker) || (kind == "Pod" && e.Subresource == "ephemeralcontainers")
	}
}

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
	// Then what the tenant planted goes, before any credential is
	// replaced: nothing of it runs on the new ones.
	planStandbyClean(add, o.Env, ns, sb)

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

// planStandbyClean is the standby's clean-up, after its freeze and before
// its credentials are replaced: what the tenant's pipeline planted there
// before the fence goes, so that the site that now serves every caller runs
// careplane's services alone, as careplane wrote them. Every object of the
// StandbyKinds that is not careplane's is deleted: a policy (allows add up),
// a Service (a NodePort routes past NetworkPolicy), and whatever starts pods,
// with its pods; careplane's own policies, Services and workloads lose the
// fields another writer added (strip), and a ReplicaSet of careplane's
// Deployment whose template another writer changed is deleted (the
// Deployment makes a clean one). A pod is careplane's when its controller
// is careplane's workload (by UID) and nobody but the controller manager
// wrote its spec.
func planStandbyClean(add func(Action), env *v1alpha1.HealthEnvironment, ns string, sb *StandbyObserved) {
	policies := map[string]bool{}
	for _, pol := range build.NetworkPoliciesFor(env, v1alpha1.SiteStandby, ns, sb.Services) {
		policies[*pol.Name] = true
	}
	workloadKind := map[string]string{}
	for _, svc := range sb.Services {
		workloadKind[svc.Name] = "Deployment"
		if svc.Stateful() {
			workloadKind[svc.Name] = "StatefulSet"
		}
	}
	// careplane's workloads, then their ReplicaSets, by UID.
	workloads, replicaSets := map[types.UID]string{}, map[types.UID]bool{}
	for _, o := range sb.Objects {
		if (o.Kind == "Deployment" || o.Kind == "StatefulSet") && workloadKind[o.Name] == o.Kind {
			workloads[o.UID] = o.Kind
		}
	}
	for _, o := range sb.Objects {
		if c := metav1.GetControllerOf(&o.Object); o.Kind == "ReplicaSet" && c != nil && c.Kind == "Deployment" && workloads[c.UID] == "Deployment" {
			replicaSets[o.UID] = true
		}
	}
	order := map[string]int{}
	for i, gvk := range StandbyKinds {
		order[gvk.Kind] = i
	}
	objects := slices.SortedFunc(slices.Values(sb.Objects), func(a, b StandbyObject) int {
		return cmp.Or(cmp.Compare(order[a.Kind], order[b.Kind]), cmp.Compare(a.Name, b.Name))
	})
	for _, o := range objects {
		if o.DeletionTimestamp != nil {
			if o.Kind == "Service" && len(o.Finalizers) > 0 {
				add(Action{Verb: VerbRelease, Kind: o.Kind, Name: o.Name, UID: o.UID,
					Note: "being deleted, held by " + strings.Join(o.Finalizers, ", ") + ": taken off (it still routes)"})
			}
			continue
		}
		var careplanes bool
		switch o.Kind {
		case "NetworkPolicy":
			careplanes = policies[o.Name]
		case "Service":
			careplanes = workloadKind[o.Name] != ""
		case "Deployment", "StatefulSet":
			careplanes = workloads[o.UID] != ""
		case "ReplicaSet":
			if replicaSets[o.UID] {
				if o.ForeignSpec {
					add(Action{Verb: VerbDelete, Kind: o.Kind, Name: o.Name, UID: o.UID,
						Note: "of careplane's Deployment, its template changed by another writer: deleted with its pods; the Deployment starts a clean one"})
				}
				continue
			}
		case "Pod":
			c := metav1.GetControllerOf(&o.Object)
			careplanes = c != nil && (replicaSets[c.UID] || workloads[c.UID] == "StatefulSet")
			if careplanes && o.ForeignSpec {
				add(Action{Verb: VerbDelete, Kind: o.Kind, Name: o.Name, UID: o.UID,
					Note: "careplane's, its spec changed by another writer (an image, a container): deleted; its controller starts a clean one"})
				continue
			}
		}
		switch {
		case careplanes && o.ForeignSpec:
			add(Action{Verb: VerbStrip, Kind: o.Kind, Name: o.Name, UID: o.UID,
				Note: "careplane's: the fields of its spec another writer added are removed, in place"})
		case careplanes:
		default:
			add(Action{Verb: VerbDelete, Kind: o.Kind, Name: o.Name, UID: o.UID,
				Note: "not careplane's: deleted from the namespace that serves"})
		}
	}
}

func sortedUnique(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
