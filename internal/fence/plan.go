package fence

import (
	"bytes"
	"cmp"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// Verb is what an Action does to its object.
type Verb string

// The verbs of a fence plan.
const (
	// VerbRecord writes the fence's record (label and annotations) on the
	// primary Namespace.
	VerbRecord Verb = "record"
	// VerbWriteWhole creates the object or replaces every field of it.
	VerbWriteWhole Verb = "write-whole"
	// VerbApplyAdmin writes the admin-tier deny, where the cluster serves it.
	VerbApplyAdmin Verb = "apply"
	// VerbDelete deletes the object (on the precondition of its UID).
	VerbDelete Verb = "delete"
	// VerbRecreate deletes the object and creates careplane's own anew.
	VerbRecreate Verb = "recreate"
	// VerbPreserve labels a pod as evidence and detaches it from its
	// owners, so that it keeps running, isolated.
	VerbPreserve Verb = "preserve"
	// VerbKeep leaves an object as it is (it is evidence already).
	VerbKeep Verb = "keep"
	// VerbScale scales careplane's Deployment or StatefulSet to zero (a
	// StatefulSet's claims stay).
	VerbScale Verb = "scale-to-0"
	// VerbDrain empties the front EndpointSlice (or points it at the standby).
	VerbDrain Verb = "empty"
	// VerbRelease takes the finalizers off an object being deleted, so that
	// it goes: a Service held by one still routes.
	VerbRelease Verb = "release-finalizers"
)

// Action is one write of a fence.
type Action struct {
	// Step is the fence step, 1 to 5 (see the package doc).
	Step int
	Verb Verb
	// Kind of the object, e.g. NetworkPolicy.
	Kind string
	// Namespace of the object; empty for cluster-scoped objects.
	Namespace string
	Name      string
	// UID is the object's UID as observed: a delete is made on this
	// precondition, so an object re-created since is not deleted unseen.
	UID types.UID
	// From is what the object is made from: the claim an evidence
	// snapshot is taken of.
	From string
	// Version and Labels are a pod's resourceVersion and labels as
	// observed: preserving it moves its service label, on the precondition
	// that it is still the pod observed.
	Version string
	Labels  map[string]string
	// To are the addresses a route of step 5 sends callers to.
	To []string
	// Immediate deletes with no grace period: a pod that is not
	// careplane's, in a standby that serves, stops at once.
	Immediate bool
	// Note says why, or what else happens.
	Note string
}

// Plan is every write of one environment's fence, by step.
type Plan struct {
	// Environment is the HealthEnvironment's name.
	Environment string
	// Record is the record the fence writes on the primary Namespace.
	Record Record
	// Actions are the writes, in step order.
	Actions []Action
	// Evidence says how the evidence snapshots are taken, or why they
	// cannot be (zero when the namespace holds no claim).
	Evidence Evidence
}

// Snapshots are the evidence actions of the plan: the claims to snapshot,
// those taken already, and those that cannot be.
func (p Plan) Snapshots() []Action {
	var out []Action
	for _, a := range p.Actions {
		if a.Kind == "VolumeSnapshot" {
			out = append(out, a)
		}
	}
	return out
}

// Step returns the actions of step n.
func (p Plan) Step(n int) []Action {
	var out []Action
	for _, a := range p.Actions {
		if a.Step == n {
			out = append(out, a)
		}
	}
	return out
}

// Changes are the actions of steps 2 to 4 that change the namespaces:
// deletions, recreations, rotations, pods preserved, finalizers taken off,
// the standby's freeze and its objects written whole. A pass that finds
// none has nothing left to do (a wait is not a change: the fence waits for
// the control plane, and looks again when it has moved); scaling careplane's Deployments to zero is
// written whole every pass and skipped by the applier when unchanged, and
// the standby's roll is the standby's reconcile's (StandbyWorkloadRevision).
func (p Plan) Changes() []Action {
	var out []Action
	for _, a := range p.Actions {
		if a.Step >= 2 && a.Step <= 4 && (a.Verb == VerbDelete || a.Verb == VerbRecreate || a.Verb == VerbPreserve || a.Verb == VerbRotate ||
			a.Verb == VerbRelease || a.Verb == VerbFreeze || a.Verb == VerbWriteWhole) {
			out = append(out, a)
		}
	}
	return out
}

// Object is what the plan reads of an object of the primary namespace: its
// metadata (for policies, the name is all that counts).
type Object = metav1.ObjectMeta

// Observed is what the cluster holds for one environment's fence: every
// object of the kinds below in the primary namespace, whoever made it, read
// from the API server rather than a cache of careplane's own objects.
type Observed struct {
	// Env is the environment, its spec the user's as the API server holds
	// it.
	Env *v1alpha1.HealthEnvironment
	// Isolation is the isolation in force (Effective): the spec's, or the
	// FenceRequest's before the hand-over. The plan reads the isolation
	// from here, never from Env's spec.
	Isolation v1alpha1.Isolation
	// Record is the record this fence writes: its ID (kept from the record
	// in place, or new) and source.
	Record Record
	// CredentialsRevision keys the ServiceAccounts careplane recreates:
	// one recreated under it already is left as it is. Empty means the
	// fence's ID; a restore passes its own.
	CredentialsRevision string
	// Policies, ServiceAccounts, Secrets and Pods of the primary namespace.
	Policies, ServiceAccounts, Secrets, Pods []Object
	// Services are the Services of the primary namespace.
	Services []ServiceObject
	// Deployments and StatefulSets are careplane's of the primary namespace.
	Deployments, StatefulSets []Object
	// DataGeneration is the data generation the primary's StatefulSets run
	// as (the primary Namespace's careplane.io/data-generation; "" before
	// any restore from a recovery point): it names them.
	DataGeneration string
	// Front is the front Namespace, and FrontRoutes its EndpointSlices and
	// Endpoints objects (ForeignRoutes); both nil when not read.
	Front       *Object
	FrontRoutes []Route
	// AdminPolicyKind is the admin-tier policy kind the cluster serves, or "".
	AdminPolicyKind string
	// Claims are every PersistentVolumeClaim of the primary namespace,
	// careplane's and the tenant's; Snapshots every VolumeSnapshot there.
	Claims, Snapshots []Object
	// SnapshotClass is the class of spec.recovery as found (nil when the
	// spec names none or it was not read).
	SnapshotClass *SnapshotClass
	// ClaimDrivers is the CSI driver of each claim's StorageClass, by claim
	// name; a claim not listed is not checked.
	ClaimDrivers map[string]string
	// Standby is what the fence reads of the standby namespace when the
	// fence moves traffic there (StandbyServes): its credentials are
	// rotated too, in step 3. Nil when there is no standby namespace of
	// careplane's yet, or for a restore (which leaves the standby alone).
	Standby *StandbyObserved
}

// ServiceObject is what the plan reads of a Service: its metadata and its
// selector, and whether anyone but careplane wrote its spec.
type ServiceObject struct {
	Object
	Selector map[string]string
	// ForeignSpec says a field manager other than careplane's wrote fields
	// of its spec (SpecWrittenByOthers): a type, externalIPs, ports.
	ForeignSpec bool
}

// SpecWrittenByOthers says managed, an object's managedFields, names a
// manager other than owner for fields of the object's spec (status and
// other subresources aside).
func SpecWrittenByOthers(managed []metav1.ManagedFieldsEntry, owner string) bool {
	for _, m := range managed {
		if m.Manager != owner && m.Subresource == "" && m.FieldsV1 != nil && bytes.Contains(m.FieldsV1.GetRawBytes(), []byte(`"f:spec"`)) {
			return true
		}
	}
	return false
}

// PlanFence lists the writes of o's fence in the order they are made. Every
// step is idempotent: what an earlier pass of the same fence did (a
// ServiceAccount recreated for this fence ID, a pod already evidence) is
// not done again.
func PlanFence(o Observed) Plan {
	env := o.Env
	names := build.NamespaceNames(env)
	ns := names.Primary
	p := Plan{Environment: env.Name, Record: o.Record}
	add := func(a Action) { p.Actions = append(p.Actions, a) }

	// (1) Close the window.
	add(Action{Step: 1, Verb: VerbRecord, Kind: "Namespace", Name: ns,
		Note: "label " + v1alpha1.LabelFenced + "=true (freezes the namespace) and record fence " + o.Record.ID + " from " + o.Record.Source})
	note := "deny all ingress and egress of every pod"
	if len(o.Isolation.ForensicsNamespaces()) > 0 {
		note += ", except ingress from the forensicsFrom namespaces"
	}
	add(Action{Step: 1, Verb: VerbWriteWhole, Kind: "NetworkPolicy", Namespace: ns, Name: build.FencePolicyName, Note: note})
	add(Action{Step: 1, Verb: VerbWriteWhole, Kind: "ResourceQuota", Namespace: ns, Name: build.FenceQuotaName,
		Note: "pods: 0: no new pod starts behind the fence"})
	if o.AdminPolicyKind != "" {
		add(Action{Step: 1, Verb: VerbApplyAdmin, Kind: o.AdminPolicyKind, Name: build.AdminFencePolicyName(env),
			Note: "admin-tier deny; no namespace policy can widen it"})
	}
	// Evidence: once the window is closed, before anything else may
	// change the data.
	planEvidence(&p, o, ns)

	// (2) Every other policy: allows add up.
	for _, pol := range sorted(o.Policies) {
		if pol.Name == build.FencePolicyName || pol.DeletionTimestamp != nil {
			continue
		}
		n := "allows add up: it could breach the fence"
		if !ours(env, &pol) {
			n = "not careplane's; " + n
		}
		add(Action{Step: 2, Verb: VerbDelete, Kind: "NetworkPolicy", Namespace: ns, Name: pol.Name, UID: pol.UID, Note: n})
	}
	// (2) Every Service but careplane's as careplane wrote it: a NodePort
	// or LoadBalancer Service sends outside traffic to its pods through
	// their node, which most network plugins let through NetworkPolicy,
	// and one without a selector routes to whatever addresses its
	// Endpoints say. careplane's selects careplane.io/service, which no pod
	// has behind the fence (an evidence pod's moved); one whose spec anyone
	// else wrote goes (careplane does not rewrite it while fenced), and the
	// restore writes it anew: nothing another manager added to it survives.
	own := map[string]bool{}
	for _, svc := range env.Spec.Services {
		own[svc.Name] = true
	}
	for _, svc := range slices.SortedFunc(slices.Values(o.Services), func(a, b ServiceObject) int { return cmp.Compare(a.Name, b.Name) }) {
		n := "a Service routes outside traffic to the pods through their node, past NetworkPolicy on most network plugins"
		switch {
		case own[svc.Name] && svc.DeletionTimestamp == nil && !svc.ForeignSpec && maps.Equal(svc.Selector, build.SelectorLabels(env, svc.Name)):
			continue // careplane's as careplane wrote it, selecting no pod behind the fence
		case own[svc.Name]:
			n = "careplane's, changed by someone else (written anew by the restore); " + n
		default:
			n = "not careplane's; " + n
		}
		switch {
		case svc.DeletionTimestamp == nil:
			add(Action{Step: 2, Verb: VerbDelete, Kind: "Service", Namespace: ns, Name: svc.Name, UID: svc.UID, Note: n})
		case len(svc.Finalizers) > 0:
			// Still there, and still routing: held by finalizers (a
			// tenant's, or a load balancer's whose controller the freeze
			// keeps out).
			add(Action{Step: 2, Verb: VerbRelease, Kind: "Service", Namespace: ns, Name: svc.Name, UID: svc.UID,
				Note: "being deleted, held by " + strings.Join(svc.Finalizers, ", ") + ": taken off; " + n})
		}
	}

	// (3) Credentials: every ServiceAccount of the namespace.
	recreate := map[string]bool{"default": true}
	for _, svc := range env.Spec.Services {
		recreate[svc.Name] = true
	}
	rev := cmp.Or(o.CredentialsRevision, o.Record.ID)
	seen := map[string]bool{}
	for _, sa := range sorted(o.ServiceAccounts) {
		seen[sa.Name] = true
		switch {
		case sa.DeletionTimestamp != nil:
		case recreate[sa.Name] && sa.Annotations[build.AnnotationCredentialsRevision] == rev:
			// Recreated under this revision already.
		case recreate[sa.Name]:
			add(Action{Step: 3, Verb: VerbRecreate, Kind: "ServiceAccount", Namespace: ns, Name: sa.Name, UID: sa.UID,
				Note: "new UID: tokens bound to the old one stop working"})
		default:
			add(Action{Step: 3, Verb: VerbDelete, Kind: "ServiceAccount", Namespace: ns, Name: sa.Name, UID: sa.UID,
				Note: "not careplane's: deleted, its tokens stop working"})
		}
	}
	for _, name := range slices.Sorted(mapsKeys(recreate)) {
		if !seen[name] {
			add(Action{Step: 3, Verb: VerbRecreate, Kind: "ServiceAccount", Namespace: ns, Name: name, Note: "does not exist yet; created"})
		}
	}
	// careplane's by name, at any revision, for the spec's services; or
	// by its labels, for those of a restore revision the spec no longer
	// has. A label anyone may set only makes the fence delete more.
	generated := func(sec Object) bool {
		if sec.Labels[build.LabelGenerated] == "true" && sec.Labels[v1alpha1.LabelEnvironment] == env.Name {
			return true
		}
		for _, svc := range env.Spec.Services {
			for _, g := range svc.GeneratedSecrets {
				if build.IsGeneratedSecretObject(sec.Name, svc.Name, g) {
					return true
				}
			}
		}
		return false
	}
	for _, sec := range sorted(o.Secrets) {
		if generated(sec) && sec.DeletionTimestamp == nil {
			add(Action{Step: 3, Verb: VerbDelete, Kind: "Secret", Namespace: ns, Name: sec.Name, UID: sec.UID, Note: "generated credential invalidated"})
		}
	}
	// (3, standby) The standby's credentials, when traffic moves there.
	planStandby(&p, o)

	// (4) Workloads. The quota of step 1 admits no new pod, so every pod
	// not being deleted ran before the fence.
	preserve := o.Isolation.Workloads != v1alpha1.WorkloadsStop
	ticket := EvidenceTicket(o.Isolation)
	for _, pod := range sorted(o.Pods) {
		if pod.DeletionTimestamp != nil {
			continue
		}
		careplanes := ours(env, &pod) && pod.Labels[v1alpha1.LabelService] != ""
		switch {
		// Only careplane and responders set this label
		// (careplane-evidence-pod-guard): an earlier fence's evidence.
		case pod.Labels[v1alpha1.LabelEvidence] != "":
			add(Action{Step: 4, Verb: VerbKeep, Kind: "Pod", Namespace: ns, Name: pod.Name,
				Note: "already evidence (" + v1alpha1.LabelEvidence + "=" + pod.Labels[v1alpha1.LabelEvidence] + "); stays isolated"})
		case preserve:
			n := "detached from its owners, labelled " + v1alpha1.LabelEvidence + "=" + ticket +
				" (its other labels moved to " + build.AnnotationEvidenceLabels + "), kept running isolated"
			if !careplanes {
				n = "not careplane's; " + n
			}
			add(Action{Step: 4, Verb: VerbPreserve, Kind: "Pod", Namespace: ns, Name: pod.Name, UID: pod.UID,
				Version: pod.ResourceVersion, Labels: pod.Labels, Note: n})
		case careplanes:
			add(Action{Step: 4, Verb: VerbKeep, Kind: "Pod", Namespace: ns, Name: pod.Name, Note: "not preserved (workloads: Stop); deleted by the scale-down"})
		default:
			add(Action{Step: 4, Verb: VerbDelete, Kind: "Pod", Namespace: ns, Name: pod.Name, UID: pod.UID, Note: "not careplane's; not preserved (workloads: Stop)"})
		}
	}
	exists := map[string]map[string]bool{"Deployment": {}, "StatefulSet": {}}
	for _, d := range o.Deployments {
		exists["Deployment"][d.Name] = true
	}
	for _, d := range o.StatefulSets {
		exists["StatefulSet"][d.Name] = true
	}
	for _, svc := range sortedServices(env.Spec.Services) {
		kind, name, n := "Deployment", svc.Name, "replicas 0"
		if svc.Stateful() {
			// Its claims stay: the StatefulSet retains them.
			kind, name, n = "StatefulSet", build.StatefulSetName(svc.Name, o.DataGeneration), "replicas 0; its volumes are kept"
		}
		if !exists[kind][name] {
			n = "does not exist yet; created with replicas 0"
		}
		add(Action{Step: 4, Verb: VerbScale, Kind: kind, Namespace: ns, Name: name, Note: n})
	}

	// (5) Traffic.
	slicesIn := map[string]bool{}
	for _, r := range o.FrontRoutes {
		if r.Kind == "EndpointSlice" {
			slicesIn[r.Name] = true
		}
	}
	foreign := ForeignRoutes(env, o.Front, o.FrontRoutes)
	forged := map[string]bool{}
	for _, a := range foreign {
		if a.Kind == "EndpointSlice" {
			forged[a.Name] = true
		}
	}
	for _, svc := range sortedServices(env.Spec.Services) {
		n := "stops sending to the primary"
		if svc.Critical && StandbyServes(env) {
			n += "; switches to the standby"
		}
		name := build.FrontEndpointSliceName(svc.Name)
		switch {
		case forged[name]:
			n += " (the one there is not careplane's: deleted below, and careplane's written anew)"
		case o.FrontRoutes != nil && !slicesIn[name]:
			n += " (does not exist yet)"
		}
		add(Action{Step: 5, Verb: VerbDrain, Kind: "EndpointSlice", Namespace: names.Front, Name: name, Note: n})
	}
	p.Actions = append(p.Actions, foreign...)
	return p
}

// EvidenceTicket is the value of the evidence label a fence puts on the pods
// it preserves: the ticket, or "fenced" without one.
func EvidenceTicket(iso v1alpha1.Isolation) string {
	if iso.Ticket == "" {
		return "fenced"
	}
	return iso.Ticket
}

// ours says o carries env's labels. Labels are not proof of anything (a
// tenant can set them); the plan uses them only to say so in a note, and
// for careplane's pods, which the scale-down stops.
func ours(env *v1alpha1.HealthEnvironment, o *Object) bool {
	return o.Labels[v1alpha1.LabelEnvironment] == env.Name
}

func sorted(items []Object) []Object {
	out := slices.Clone(items)
	slices.SortFunc(out, func(a, b Object) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func sortedServices(services []v1alpha1.Service) []v1alpha1.Service {
	return slices.SortedFunc(slices.Values(services), func(a, b v1alpha1.Service) int { return cmp.Compare(a.Name, b.Name) })
}

func mapsKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
