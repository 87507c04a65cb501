package fence

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// VerbWait says a step waits for the control plane: the standby's
// credentials are replaced only once its pods run careplane's templates.
const VerbWait Verb = "wait"

// AnnotationStandbyWritten, on a standby Namespace frozen by a fence, is
// what careplane wrote whole there under that fence (StandbyWritten, as
// JSON): each of careplane's objects by kind and name, with its UID and
// its spec as written (SpecHash). Kept on the Namespace, which only
// careplane writes, not on the objects, which the tenant could mark as
// written before the freeze took hold: an object whose spec is not the one
// recorded (changed by a write admitted as the freeze came in) is written
// whole again.
const AnnotationStandbyWritten = "careplane.io/standby-written"

// StandbyWritten is the record of AnnotationStandbyWritten.
type StandbyWritten struct {
	// Fence is the fence the record is of: an earlier fence's counts for
	// nothing.
	Fence string `json:"fence"`
	// Objects maps "<Kind>/<name>" to "<UID>/<SpecHash>".
	Objects map[string]string `json:"objects"`
}

// StandbyWrittenOf is the record on standby Namespace ns; empty when there
// is none, or it cannot be read (every object is then written whole).
func StandbyWrittenOf(ns metav1.Object) StandbyWritten {
	var w StandbyWritten
	if ns == nil || json.Unmarshal([]byte(ns.GetAnnotations()[AnnotationStandbyWritten]), &w) != nil {
		return StandbyWritten{}
	}
	return w
}

// WrittenKey and WrittenValue are how StandbyWritten records an object of
// kind: by kind and name, its UID and the hash of its spec.
func WrittenKey(kind, name string) string { return kind + "/" + name }

// WrittenValue is the record of an object of UID uid and spec hash spec.
func WrittenValue(uid types.UID, spec string) string { return string(uid) + "/" + spec }

// SpecHashOf is SpecHash of the spec of o, one of the kinds careplane
// writes whole in the standby; "" for another.
func SpecHashOf(o runtime.Object) string {
	switch o := o.(type) {
	case *networkingv1.NetworkPolicy:
		return SpecHash(o.Spec)
	case *corev1.Service:
		return SpecHash(o.Spec)
	case *appsv1.Deployment:
		return SpecHash(o.Spec)
	case *appsv1.StatefulSet:
		return SpecHash(o.Spec)
	}
	return ""
}

// SpecHash is a short hash of an object's spec as the API server holds it.
func SpecHash(spec any) string {
	b, err := json.Marshal(spec)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// StandbyKinds are the kinds the standby's clean-up reads: those that can
// let traffic in or out (NetworkPolicy, Service, Ingress), start a pod, or
// hold one (PodDisruptionBudget), which the built-in edit role may create;
// and RoleBindings, which may let the tenant's pipeline read the Secrets
// the standby's rotation is about to write (ReadsSecrets).
var StandbyKinds = []schema.GroupVersionKind{
	{Group: "networking.k8s.io", Version: "v1", Kind: "NetworkPolicy"},
	{Version: "v1", Kind: "Service"},
	{Group: "networking.k8s.io", Version: "v1", Kind: "Ingress"},
	{Group: "policy", Version: "v1", Kind: "PodDisruptionBudget"},
	{Group: "apps", Version: "v1", Kind: "Deployment"},
	{Group: "apps", Version: "v1", Kind: "StatefulSet"},
	{Group: "apps", Version: "v1", Kind: "ReplicaSet"},
	{Group: "apps", Version: "v1", Kind: "DaemonSet"},
	{Group: "batch", Version: "v1", Kind: "Job"},
	{Group: "batch", Version: "v1", Kind: "CronJob"},
	{Version: "v1", Kind: "ReplicationController"},
	{Version: "v1", Kind: "Pod"},
	{Group: rbacv1.GroupName, Version: "v1", Kind: "RoleBinding"},
}

// StandbyReadKinds are the kinds a read of the standby lists
// (StandbyLists): StandbyKinds, and the Roles the RoleBindings may refer
// to. The ClusterRoles they refer to are read by name
// (StandbyLists.ReadClusterRoles).
var StandbyReadKinds = append(slices.Clone(StandbyKinds), schema.GroupVersionKind{Group: rbacv1.GroupName, Version: "v1", Kind: "Role"})

// ReadsSecrets says a role of rules lets its subjects read Secrets (get,
// list or watch, of any name), or act as someone who may (impersonate): the
// built-in edit and admin roles do, view does not. A rule limited to some
// names counts too.
func ReadsSecrets(rules []rbacv1.PolicyRule) bool {
	for _, r := range rules {
		if (slices.Contains(r.APIGroups, "") || slices.Contains(r.APIGroups, rbacv1.APIGroupAll)) &&
			(slices.Contains(r.Resources, "secrets") || slices.Contains(r.Resources, rbacv1.ResourceAll)) &&
			slices.ContainsFunc(r.Verbs, func(v string) bool {
				return v == "get" || v == "list" || v == "watch" || v == rbacv1.VerbAll
			}) {
			return true
		}
		if slices.Contains(r.Verbs, "impersonate") || (slices.Contains(r.Verbs, rbacv1.VerbAll) &&
			slices.ContainsFunc(r.Resources, func(res string) bool {
				return res == rbacv1.ResourceAll || res == "users" || res == "groups" || res == "serviceaccounts" ||
					res == "uids" || strings.HasPrefix(res, "userextras")
			})) {
			return true
		}
	}
	return false
}

// bindingReadsSecrets says RoleBinding b lets its subjects read Secrets in
// its namespace, by the rules of the role it refers to, among roles (by
// name) and clusterRoles (by name). A role that was not read (gone, or not
// readable by the caller) counts as one that does: a ClusterRole of that
// name may be created at any time, outside the freeze.
func bindingReadsSecrets(b *rbacv1.RoleBinding, roles map[string]*rbacv1.Role, clusterRoles map[string]*rbacv1.ClusterRole) bool {
	switch b.RoleRef.Kind {
	case "Role":
		if r := roles[b.RoleRef.Name]; r != nil {
			return ReadsSecrets(r.Rules)
		}
	case "ClusterRole":
		if r := clusterRoles[b.RoleRef.Name]; r != nil {
			return ReadsSecrets(r.Rules)
		}
	}
	return true
}

// writtenWhole are the kinds of careplane's own objects in the standby that
// the clean-up writes whole: what routes, what allows, what runs.
var writtenWhole = map[string]bool{"NetworkPolicy": true, "Service": true, "Deployment": true, "StatefulSet": true}

// StandbyObject is what the standby's clean-up reads of one object there.
// Nothing of it is taken on trust from what the tenant could write before
// the freeze (managedFields name whoever the client says): careplane's
// objects are known by kind and name and written whole regardless, and a
// pod by its controller's UID and by comparing it with its template.
type StandbyObject struct {
	Kind string
	Object
	// Spec is the hash of the spec of one of careplane's kinds written
	// whole (SpecHash): whether it is still what careplane wrote.
	Spec string
	// For a pod whose controller is a ReplicaSet or StatefulSet read with
	// it: Tampered says it was changed in place before the fence
	// (ChangedInPlace: an image swapped, an ephemeral container); Stale
	// that it is of an older revision than its workload's current one (a
	// roll is under way).
	Tampered, Stale bool
	// ReadsSecrets says a RoleBinding lets its subjects read the
	// standby's Secrets (bindingReadsSecrets).
	ReadsSecrets bool
}

// StandbyRead is what was read of the standby namespace for its clean-up:
// Objects (metadata) of every kind of StandbyKinds but those read whole.
type StandbyRead struct {
	Objects      []StandbyObject
	Policies     []networkingv1.NetworkPolicy
	Services     []corev1.Service
	Deployments  []appsv1.Deployment
	ReplicaSets  []appsv1.ReplicaSet
	StatefulSets []appsv1.StatefulSet
	Pods         []corev1.Pod
	// RoleBindings, with the Roles of the namespace and the ClusterRoles
	// they refer to.
	RoleBindings []rbacv1.RoleBinding
	Roles        []rbacv1.Role
	ClusterRoles []rbacv1.ClusterRole
	// Since is when the fence began (zero before one).
	Since time.Time
}

// StandbyLists are the lists one read of the standby namespace fills, one
// per kind of StandbyKinds: whole for the kinds ReadStandby compares or
// hashes, metadata for the rest. The operator and the plugin's dry run read
// the standby through them alike.
type StandbyLists struct {
	policies networkingv1.NetworkPolicyList
	services corev1.ServiceList
	deps     appsv1.DeploymentList
	rss      appsv1.ReplicaSetList
	stss     appsv1.StatefulSetList
	pods     corev1.PodList
	bindings rbacv1.RoleBindingList
	roles    rbacv1.RoleList
	metadata map[string]*metav1.PartialObjectMetadataList
	// clusterRoles are those ReadClusterRoles read, by name.
	clusterRoles map[string]rbacv1.ClusterRole
}

// List is a list a StandbyLists hands out to be filled.
type List interface {
	metav1.ListInterface
	runtime.Object
}

// NewStandbyLists returns empty lists for every kind of StandbyReadKinds.
func NewStandbyLists() *StandbyLists {
	l := &StandbyLists{metadata: map[string]*metav1.PartialObjectMetadataList{}, clusterRoles: map[string]rbacv1.ClusterRole{}}
	for _, gvk := range StandbyKinds {
		if l.whole(gvk.Kind) == nil {
			m := &metav1.PartialObjectMetadataList{}
			m.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
			l.metadata[gvk.Kind] = m
		}
	}
	return l
}

func (l *StandbyLists) whole(kind string) List {
	switch kind {
	case "NetworkPolicy":
		return &l.policies
	case "Service":
		return &l.services
	case "Deployment":
		return &l.deps
	case "ReplicaSet":
		return &l.rss
	case "StatefulSet":
		return &l.stss
	case "Pod":
		return &l.pods
	case "RoleBinding":
		return &l.bindings
	case "Role":
		return &l.roles
	}
	return nil
}

// clusterRolesNamed are the ClusterRoles the RoleBindings listed refer to,
// to be read by name (ReadClusterRoles). One not read counts as letting its
// subjects read Secrets.
func (l *StandbyLists) clusterRolesNamed() []string {
	var names []string
	for _, b := range l.bindings.Items {
		if b.RoleRef.Kind == "ClusterRole" && !slices.Contains(names, b.RoleRef.Name) {
			names = append(names, b.RoleRef.Name)
		}
	}
	slices.Sort(names)
	return names
}

// ReadClusterRoles reads with get every ClusterRole clusterRolesNamed asks
// for, and gives it to the lists. One the caller may not read (an
// upgrade's manager still on its old role, a responder without the right)
// is left out, so that the bindings to it count as granting (fail closed:
// it never keeps a binding, nor holds up the fence), and returned in
// forbidden to be said; one that is gone is left out too. Any other error
// (a timeout) is err: the look is retried, rather than a transient
// failure deleting every binding to a role.
func (l *StandbyLists) ReadClusterRoles(get func(name string, into *rbacv1.ClusterRole) error) (forbidden []error, err error) {
	for _, name := range l.clusterRolesNamed() {
		var cr rbacv1.ClusterRole
		switch gerr := get(name, &cr); {
		case apierrors.IsNotFound(gerr):
		case apierrors.IsForbidden(gerr):
			forbidden = append(forbidden, fmt.Errorf("reading ClusterRole %s: %w", name, gerr))
		case gerr != nil:
			return forbidden, fmt.Errorf("reading ClusterRole %s: %w", name, gerr)
		default:
			l.clusterRoles[cr.Name] = cr
		}
	}
	return forbidden, nil
}

// For is the list to fill with the standby's objects of kind, one of
// StandbyReadKinds. Lists of different kinds may be filled concurrently.
func (l *StandbyLists) For(kind string) List {
	if w := l.whole(kind); w != nil {
		return w
	}
	return l.metadata[kind]
}

// Deployments and StatefulSets are those the lists hold.
func (l *StandbyLists) Deployments() []appsv1.Deployment   { return l.deps.Items }
func (l *StandbyLists) StatefulSets() []appsv1.StatefulSet { return l.stss.Items }

// Read is ReadStandby of what the lists hold; since is when the fence
// began (zero before one).
func (l *StandbyLists) Read(since time.Time) []StandbyObject {
	in := StandbyRead{Policies: l.policies.Items, Services: l.services.Items, Deployments: l.deps.Items,
		ReplicaSets: l.rss.Items, StatefulSets: l.stss.Items, Pods: l.pods.Items,
		RoleBindings: l.bindings.Items, Roles: l.roles.Items, Since: since}
	for _, name := range slices.Sorted(maps.Keys(l.clusterRoles)) {
		in.ClusterRoles = append(in.ClusterRoles, l.clusterRoles[name])
	}
	for _, gvk := range StandbyKinds {
		if m := l.metadata[gvk.Kind]; m != nil {
			for i := range m.Items {
				in.Objects = append(in.Objects, StandbyObject{Kind: gvk.Kind, Object: m.Items[i].ObjectMeta})
			}
		}
	}
	return ReadStandby(in)
}

// ReadStandby is what the clean-up reads of the standby namespace: objects
// (metadata, of the kinds StandbyLists reads so), and the others whole. Since is
// when the fence began: a pod
// created after it was made by the control plane, from a template
// careplane wrote, in a namespace the tenant no longer writes, so whatever
// differs in it from its template is admission's doing (a mesh, a
// webhook), not the tenant's, and it is never Tampered.
func ReadStandby(in StandbyRead) []StandbyObject {
	out := slices.Clone(in.Objects)
	for i := range in.Policies {
		out = append(out, StandbyObject{Kind: "NetworkPolicy", Object: in.Policies[i].ObjectMeta, Spec: SpecHashOf(&in.Policies[i])})
	}
	for i := range in.Services {
		out = append(out, StandbyObject{Kind: "Service", Object: in.Services[i].ObjectMeta, Spec: SpecHashOf(&in.Services[i])})
	}
	roles, clusterRoles := map[string]*rbacv1.Role{}, map[string]*rbacv1.ClusterRole{}
	for i := range in.Roles {
		roles[in.Roles[i].Name] = &in.Roles[i]
	}
	for i := range in.ClusterRoles {
		clusterRoles[in.ClusterRoles[i].Name] = &in.ClusterRoles[i]
	}
	for i := range in.RoleBindings {
		b := &in.RoleBindings[i]
		out = append(out, StandbyObject{Kind: "RoleBinding", Object: b.ObjectMeta, ReadsSecrets: bindingReadsSecrets(b, roles, clusterRoles)})
	}
	deployments, replicaSets, statefulSets, pods, since := in.Deployments, in.ReplicaSets, in.StatefulSets, in.Pods, in.Since
	deps := map[types.UID]*appsv1.Deployment{}
	for i := range deployments {
		d := &deployments[i]
		deps[d.UID] = d
		out = append(out, StandbyObject{Kind: "Deployment", Object: d.ObjectMeta, Spec: SpecHashOf(d)})
	}
	rss := map[types.UID]*appsv1.ReplicaSet{}
	for i := range replicaSets {
		rs := &replicaSets[i]
		rss[rs.UID] = rs
		out = append(out, StandbyObject{Kind: "ReplicaSet", Object: rs.ObjectMeta})
	}
	stss := map[types.UID]*appsv1.StatefulSet{}
	for i := range statefulSets {
		sts := &statefulSets[i]
		stss[sts.UID] = sts
		out = append(out, StandbyObject{Kind: "StatefulSet", Object: sts.ObjectMeta, Spec: SpecHashOf(sts)})
	}
	for i := range pods {
		p := &pods[i]
		o := StandbyObject{Kind: "Pod", Object: p.ObjectMeta}
		before := since.IsZero() || p.CreationTimestamp.Time.Before(since)
		c := metav1.GetControllerOf(p)
		switch {
		case c == nil:
		case c.Kind == "ReplicaSet" && rss[c.UID] != nil:
			rs := rss[c.UID]
			o.Tampered = before && ChangedInPlace(p, &rs.Spec.Template)
			if d := controllerIn(rs, deps); d != nil {
				o.Stale = !SameTemplate(&rs.Spec.Template, &d.Spec.Template)
			}
		case c.Kind == "StatefulSet" && stss[c.UID] != nil:
			// Only a pod of the StatefulSet's update revision can be held
			// to its template; one of another revision (or labelled so) is
			// replaced by the StatefulSet's own roll, which the rotation
			// waits for.
			sts := stss[c.UID]
			if p.Labels[appsv1.ControllerRevisionHashLabelKey] == sts.Status.UpdateRevision {
				o.Tampered = before && ChangedInPlace(p, &sts.Spec.Template)
			} else {
				o.Stale = true
			}
		}
		out = append(out, o)
	}
	for i := range out {
		out[i].ManagedFields = nil // never read: anyone may write them
	}
	return out
}

func controllerUID(o StandbyObject) types.UID {
	if c := metav1.GetControllerOf(&o.Object); c != nil {
		return c.UID
	}
	return ""
}

func controllerIn(rs *appsv1.ReplicaSet, deps map[types.UID]*appsv1.Deployment) *appsv1.Deployment {
	if c := metav1.GetControllerOf(rs); c != nil && c.Kind == "Deployment" {
		return deps[c.UID]
	}
	return nil
}

// ChangedInPlace says pod, made by its controller from template t, was
// changed since: the image of one of t's containers is not t's, or it has
// an ephemeral container. These are the only changes the API allows to a
// running pod's containers, and what the tenant's pipeline (edit) can do
// to careplane's pods before the fence (`kubectl set image`,
// `kubectl debug`). Anything else that differs from t (an environment
// variable, a volume, a container more) was put there when the pod was
// created, as a mesh or a webhook does to every pod, and is not looked at:
// a pod deleted for it would come back the same, each pass, in the site
// that serves. A pod made to look like careplane's (a controller reference
// written by hand) is counted by careplane's ReplicaSet as one of its own,
// and goes with its scale-down or roll.
func ChangedInPlace(pod *corev1.Pod, t *corev1.PodTemplateSpec) bool {
	if len(pod.Spec.EphemeralContainers) > 0 {
		return true
	}
	return imagesDiffer(pod.Spec.InitContainers, t.Spec.InitContainers) || imagesDiffer(pod.Spec.Containers, t.Spec.Containers)
}

func imagesDiffer(running, want []corev1.Container) bool {
	for _, w := range want {
		i := slices.IndexFunc(running, func(c corev1.Container) bool { return c.Name == w.Name })
		if i >= 0 && !sameImage(running[i].Image, w.Image) {
			return true
		}
	}
	return false
}

// sameImage says a pod's image is its template's: the same, or the same
// digest (careplane's images are pinned by digest; a registry mirror's
// webhook may rewrite the rest).
func sameImage(running, want string) bool {
	if running == want {
		return true
	}
	_, rd, ok1 := strings.Cut(running, "@")
	_, wd, ok2 := strings.Cut(want, "@")
	return ok1 && ok2 && strings.HasPrefix(wd, "sha256:") && rd == wd
}

// SameTemplate says a ReplicaSet's template is its Deployment's, the
// pod-template-hash label aside, as the Deployment controller compares
// them: otherwise the ReplicaSet is of an older revision (or its template
// was changed), and the Deployment rolls its pods away.
func SameTemplate(rs, d *corev1.PodTemplateSpec) bool {
	a, b := rs.DeepCopy(), d.DeepCopy()
	delete(a.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	delete(b.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	return equality.Semantic.DeepEqual(a, b)
}

// planStandbyClean is the standby's clean-up, after its freeze and before
// its credentials are replaced: what the tenant's pipeline planted there
// before the fence goes, so that the site that now serves every caller runs
// careplane's services alone, as careplane wrote them.
//
//   - careplane's policies, Services, Deployments and StatefulSets (by kind
//     and name, as reconcileSite writes them) are written whole once per
//     fence, and again whenever one is no longer what was written
//     (AnnotationStandbyWritten): whatever another writer added to them
//     goes, whoever the managedFields say wrote it;
//   - careplane's ReplicaSets and pods stay, but a pod changed in place
//     before the fence (Tampered) is deleted: its controller starts it
//     anew;
//   - every RoleBinding that lets its subjects read Secrets
//     (ReadsSecrets: the tenant's pipeline, with edit there, would read the
//     rotated ones; admission never sees a read) is deleted; one that does
//     not (view) stays;
//   - every other object of the StandbyKinds is deleted, a pod at once (no
//     grace period); one being deleted but held by finalizers is let go of
//     them, and a pod still terminating is deleted again at once.
//
// It returns the clean-up's actions; careplane's pods that do not run their
// workloads' current templates yet (Stale), until none of which is left the
// standby's rotation waits, so that no pod of a template the tenant changed
// reads the new credentials; and the deletes that hasten that wait (a
// stale pod terminating, or not rolled away in StandbyWaitLimit), which
// are made only while a rotation waits: after it, they would cut short the
// graceful end of the pods its own roll replaces.
func planStandbyClean(env *v1alpha1.HealthEnvironment, ns string, sb *StandbyObserved, rev string) (actions []Action, stale []string, hasten []Action) {
	policies := map[string]bool{}
	for _, pol := range build.NetworkPoliciesFor(env, v1alpha1.SiteStandby, ns, sb.Services) {
		policies[*pol.Name] = true
	}
	workloadKind, budgets := map[string]string{}, map[string]bool{}
	for _, svc := range sb.Services {
		workloadKind[svc.Name] = "Deployment"
		if svc.Stateful() {
			workloadKind[svc.Name] = "StatefulSet"
		}
		budgets[svc.Name] = true
	}
	// careplane's workloads, then their ReplicaSets, by UID.
	workloads, replicaSets := map[types.UID]string{}, map[types.UID]bool{}
	for _, o := range sb.Objects {
		// One being deleted too: careplane replaces a StatefulSet by
		// orphaning its pods to the new one, which must not lose them.
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
	add := func(verb Verb, o StandbyObject, note string) {
		actions = append(actions, Action{Verb: verb, Kind: o.Kind, Name: o.Name, UID: o.UID, Note: note})
	}
	// A pod that is not careplane's stops at once; careplane's own get
	// their grace period (a StatefulSet's pod must stop before its
	// successor of the same name and volumes starts).
	now := func(o StandbyObject, note string) {
		actions = append(actions, Action{Verb: VerbDelete, Kind: o.Kind, Name: o.Name, UID: o.UID, Note: note, Immediate: o.Kind == "Pod"})
	}
	for _, o := range objects {
		if o.Kind == "RoleBinding" && !o.ReadsSecrets {
			continue // it grants no read of what the rotation writes
		}
		var careplanes bool
		switch o.Kind {
		case "NetworkPolicy":
			careplanes = policies[o.Name]
		case "Service":
			careplanes = workloadKind[o.Name] != ""
		case "PodDisruptionBudget":
			careplanes = budgets[o.Name]
		case "Deployment", "StatefulSet":
			careplanes = workloadKind[o.Name] == o.Kind
		case "ReplicaSet":
			careplanes = replicaSets[o.UID]
		case "Pod":
			c := metav1.GetControllerOf(&o.Object)
			careplanes = c != nil && (replicaSets[c.UID] || workloads[c.UID] == "StatefulSet")
		}
		rsPod := o.Kind == "Pod" && replicaSets[controllerUID(o)]
		switch {
		case careplanes && rsPod && o.DeletionTimestamp != nil && (o.Stale || o.Tampered):
			// Of a template the tenant may have changed, still running
			// through a grace period it may have set: the rotation waits
			// until it is gone, and hastens it.
			stale = append(stale, o.Name)
			hasten = append(hasten, Action{Verb: VerbDelete, Kind: o.Kind, Name: o.Name, UID: o.UID, Immediate: true,
				Note: "careplane's, of an older or changed template, still terminating: deleted again, at once, before the rotation"})
		case careplanes && o.DeletionTimestamp != nil:
			// careplane's, going: its controller or reconcile replaces it.
		case careplanes && writtenWhole[o.Kind] && (sb.Written.Fence != rev || sb.Written.Objects[WrittenKey(o.Kind, o.Name)] != WrittenValue(o.UID, o.Spec)):
			add(VerbWriteWhole, o, "careplane's: written whole, once per fence and whenever it changes after: whatever another writer added to it goes")
		case careplanes && o.Kind == "Pod" && o.Tampered:
			add(VerbDelete, o, "careplane's, but changed in place before the fence (an image, an ephemeral container): deleted; its controller starts it anew")
		case careplanes && o.Kind == "Pod" && o.Stale && rsPod && sb.WaitedOut:
			// The roll has not replaced it in time (an unschedulable surge
			// pod, a stuck rollout): it goes, so that the rotation is not
			// held up for ever.
			hasten = append(hasten, Action{Verb: VerbDelete, Kind: o.Kind, Name: o.Name, UID: o.UID, Immediate: true,
				Note: "careplane's, of an older or changed template, not rolled away in " + StandbyWaitLimit.String() + ": deleted at once, before the rotation"})
		case careplanes && o.Kind == "Pod" && o.Stale:
			stale = append(stale, o.Name)
		case careplanes:
		case o.DeletionTimestamp != nil && len(o.Finalizers) > 0:
			add(VerbRelease, o, "not careplane's, being deleted, held by "+strings.Join(o.Finalizers, ", ")+": taken off (it still acts until it goes)")
		case o.DeletionTimestamp != nil && o.Kind == "Pod":
			now(o, "not careplane's, still terminating: deleted again, at once")
		case o.DeletionTimestamp != nil:
		case o.Kind == "RoleBinding":
			now(o, "lets its subjects read the standby's Secrets: deleted before they are replaced (the platform binds it again after the restore)")
		default:
			n := "not careplane's: deleted from the namespace that serves"
			if o.Kind == "Pod" {
				n += ", at once"
			}
			now(o, n)
		}
	}
	return actions, stale, hasten
}
