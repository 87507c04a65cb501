package fence

import (
	"cmp"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// TestPlanStandbyClean: once the standby is frozen for the fence, whatever
// the tenant planted there goes before the credentials are replaced:
// careplane's policies, Services and workloads are written whole once per
// fence, a pod of careplane's that does not run its template is deleted,
// every RoleBinding that lets its subjects read Secrets is deleted,
// everything else of the StandbyKinds is deleted (a pod at once), and what
// is being deleted but held by finalizers is let go. Nothing of it reads
// managedFields. The credentials are replaced only from a look that finds
// the standby clean, and once careplane's pods all run their workloads'
// current templates.
func TestPlanStandbyClean(t *testing.T) {
	const id = "2030-01-01T00:00:00Z"
	const ns = "wales-111-standby"
	callHandling := v1alpha1.Service{Name: "call-handling", Critical: true}
	records := v1alpha1.Service{Name: "records", Critical: true, Volumes: []v1alpha1.Volume{{Name: "data", MountPath: "/data"}}}
	ctrl := func(kind string, uid types.UID) []metav1.OwnerReference {
		return []metav1.OwnerReference{{Kind: kind, Name: "x", UID: uid, Controller: ptr.To(true)}}
	}
	o := func(kind, name string, owners []metav1.OwnerReference) StandbyObject {
		return StandbyObject{Kind: kind, Object: Object{Name: name, UID: types.UID(kind + "/" + name), OwnerReferences: owners}}
	}
	// What careplane wrote whole under this fence, as the standby
	// Namespace records it.
	recorded := map[string]string{}
	written := func(so StandbyObject) StandbyObject {
		so.Spec = "spec-of-" + so.Name
		recorded[WrittenKey(so.Kind, so.Name)] = WrittenValue(so.UID, so.Spec)
		return so
	}
	going := func(so StandbyObject, finalizers ...string) StandbyObject {
		so.DeletionTimestamp, so.Finalizers = ptr.To(metav1.Now()), finalizers
		return so
	}
	readsSecrets := func(so StandbyObject) StandbyObject {
		so.ReadsSecrets = true
		return so
	}
	tampered := o("Pod", "call-handling-1-b", ctrl("ReplicaSet", "ReplicaSet/call-handling-1"))
	tampered.Tampered = true
	stale := o("Pod", "call-handling-0-a", ctrl("ReplicaSet", "ReplicaSet/call-handling-0"))
	stale.Stale = true
	planted := []StandbyObject{
		o("NetworkPolicy", build.DefaultDenyPolicyName, nil),
		written(o("NetworkPolicy", build.AllowDNSPolicyName, nil)),
		written(o("NetworkPolicy", build.ServicePolicyName("call-handling"), nil)),
		written(o("NetworkPolicy", build.ServicePolicyName("records"), nil)),
		o("NetworkPolicy", "tenant-allow-all", nil),
		going(o("NetworkPolicy", "tenant-held", nil), "tenant.example/hold"),
		o("Service", "call-handling", nil),
		written(o("Service", "records", nil)),
		o("Service", "tenant-nodeport", nil),
		going(o("Service", "tenant-lb", nil), "service.kubernetes.io/load-balancer-cleanup"),
		o("Ingress", "tenant-ingress", nil),
		o("PodDisruptionBudget", "call-handling", nil),
		o("PodDisruptionBudget", "tenant-pdb", nil),
		written(o("Deployment", "call-handling", nil)),
		o("Deployment", "miner", nil),
		o("StatefulSet", "records", nil),
		written(o("StatefulSet", "call-handling", nil)), // careplane's name, not its kind
		o("ReplicaSet", "call-handling-0", ctrl("Deployment", "Deployment/call-handling")),
		o("ReplicaSet", "call-handling-1", ctrl("Deployment", "Deployment/call-handling")),
		o("ReplicaSet", "miner-1", ctrl("Deployment", "Deployment/miner")),
		o("ReplicaSet", "bare", nil),
		o("DaemonSet", "agent", nil),
		o("Job", "once", nil),
		o("CronJob", "nightly", nil),
		o("ReplicationController", "old", nil),
		o("Pod", "call-handling-1-a", ctrl("ReplicaSet", "ReplicaSet/call-handling-1")),
		tampered,
		stale,
		o("Pod", "records-0", ctrl("StatefulSet", "StatefulSet/records")),
		o("Pod", "forged", ctrl("Deployment", "Deployment/call-handling")),
		o("Pod", "of-the-wrong-kind", ctrl("StatefulSet", "StatefulSet/call-handling")),
		o("Pod", "miner-1-x", ctrl("ReplicaSet", "ReplicaSet/miner-1")),
		o("Pod", "bare", nil),
		going(o("Pod", "lingering", nil)),
		going(o("Pod", "held-pod", nil), "tenant.example/hold"),
		going(o("Pod", "call-handling-1-old", ctrl("ReplicaSet", "ReplicaSet/call-handling-1"))),
		readsSecrets(o("RoleBinding", "tenant-pipeline-edit", nil)),
		o("RoleBinding", "tenant-viewers", nil),
		// RBAC ignores a deletion under way: it still grants.
		going(readsSecrets(o("RoleBinding", "tenant-held-binding", nil)), "tenant.example/hold"),
		going(o("RoleBinding", "tenant-held-viewers", nil), "tenant.example/hold"),
	}
	cleanUp := []string{
		"write-whole NetworkPolicy " + build.DefaultDenyPolicyName,
		"delete NetworkPolicy tenant-allow-all",
		"release-finalizers NetworkPolicy tenant-held",
		"write-whole Service call-handling",
		"release-finalizers Service tenant-lb",
		"delete Service tenant-nodeport",
		"delete Ingress tenant-ingress",
		"delete PodDisruptionBudget tenant-pdb",
		"delete Deployment miner",
		"delete StatefulSet call-handling",
		"write-whole StatefulSet records",
		"delete ReplicaSet bare",
		"delete ReplicaSet miner-1",
		"delete DaemonSet agent",
		"delete Job once",
		"delete CronJob nightly",
		"delete ReplicationController old",
		"delete Pod bare",
		"delete Pod call-handling-1-b",
		"delete Pod forged",
		"release-finalizers Pod held-pod",
		"delete Pod lingering",
		"delete Pod miner-1-x",
		"delete Pod of-the-wrong-kind",
		"release-finalizers RoleBinding tenant-held-binding",
		"delete RoleBinding tenant-pipeline-edit",
	}
	immediate := []string{"bare", "forged", "lingering", "miner-1-x", "of-the-wrong-kind", "call-handling-0-a"}
	rotation := []string{
		"recreate ServiceAccount call-handling", "recreate ServiceAccount default", "recreate ServiceAccount records",
		"roll Deployment call-handling", "keep StatefulSet records",
	}
	clean := []StandbyObject{
		written(o("NetworkPolicy", build.DefaultDenyPolicyName, nil)),
		written(o("Deployment", "call-handling", nil)),
		o("ReplicaSet", "call-handling-1", ctrl("Deployment", "Deployment/call-handling")),
		o("Pod", "call-handling-1-a", ctrl("ReplicaSet", "ReplicaSet/call-handling-1")),
		o("RoleBinding", "tenant-viewers", nil), // grants no read of Secrets: stays
	}
	rs0 := o("ReplicaSet", "call-handling-0", ctrl("Deployment", "Deployment/call-handling"))
	// careplane's default-deny changed after it was written whole (a write
	// admitted as the freeze came in): its spec is not the one recorded.
	changedSince := append(slices.Clone(clean[1:]), func() StandbyObject {
		so := o("NetworkPolicy", build.DefaultDenyPolicyName, nil)
		so.Spec = "spec-the-tenant-wrote"
		return so
	}())
	for _, tc := range []struct {
		name      string
		frozenFor string
		objects   []StandbyObject
		want      []string
		waitedOut bool
		recordOf  string // the fence the Namespace's record is of
	}{
		{"frozen, planted: cleaned, the rotation waits for a clean look", id, planted, cleanUp, false, ""},
		{"not frozen yet: the whole story, the freeze first", "", planted,
			slices.Concat([]string{"freeze Namespace " + ns}, cleanUp, rotation), false, ""},
		{"frozen, clean: rotated", id, clean, rotation, false, ""},
		{"frozen, clean, waited out with nothing stale: rotated", id, clean, rotation, true, ""},
		{"frozen, clean, a pod of an older template still running: the rotation waits", id,
			append(slices.Clone(clean), rs0, stale), []string{"wait Pod call-handling-0-a"}, false, ""},
		{"frozen, clean, a pod of an older template terminating: deleted again at once, and the rotation waits", id,
			append(slices.Clone(clean), rs0, going(stale)), []string{"delete Pod call-handling-0-a", "wait Pod call-handling-0-a"}, false, ""},
		{"frozen, clean, waited out: the pod not rolled away is deleted at once, the rotation follows", id,
			append(slices.Clone(clean), rs0, stale), []string{"delete Pod call-handling-0-a"}, true, ""},
		{"frozen, clean, careplane's StatefulSet being replaced: its pods stay", id,
			append(slices.Clone(clean), going(o("StatefulSet", "records", nil)), o("Pod", "records-0", ctrl("StatefulSet", "StatefulSet/records"))),
			rotation, false, ""},
		{"frozen, careplane's object changed since it was written whole: written whole again", id, changedSince,
			[]string{"write-whole NetworkPolicy " + build.DefaultDenyPolicyName}, false, ""},
		{"frozen, the record is an earlier fence's: everything written whole again", id, clean,
			[]string{"write-whole NetworkPolicy " + build.DefaultDenyPolicyName, "write-whole Deployment call-handling"}, false, "2029-01-01T00:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := fencedEnv()
			env.Spec.Services = []v1alpha1.Service{callHandling, records, {Name: "referral"}}
			env.Spec.Failover = v1alpha1.Failover{Standby: v1alpha1.StandbyWarm}
			sb := &StandbyObserved{Services: []v1alpha1.Service{callHandling, records}, FrozenFor: tc.frozenFor, Objects: tc.objects,
				Workloads: map[string]string{"call-handling": "initial", "records": "initial"}, WaitedOut: tc.waitedOut,
				Written: StandbyWritten{Fence: cmp.Or(tc.recordOf, id), Objects: recorded}}
			p := PlanFence(Observed{Env: env, Isolation: env.Spec.Isolation, Record: Record{ID: id, Source: SourceSpec}, Standby: sb})
			var got []string
			for _, a := range p.Actions {
				if a.Namespace != ns && a.Name != ns {
					continue
				}
				got = append(got, string(a.Verb)+" "+a.Kind+" "+a.Name)
				if (a.Verb == VerbDelete || a.Verb == VerbWriteWhole || a.Verb == VerbRelease) && a.UID != types.UID(a.Kind+"/"+a.Name) {
					t.Errorf("%s %s %s: UID %q, want the one observed (written on its precondition)", a.Verb, a.Kind, a.Name, a.UID)
				}
				if a.Verb == VerbDelete && a.Kind == "Pod" && a.Immediate != slices.Contains(immediate, a.Name) {
					t.Errorf("delete Pod %s: Immediate %v (careplane's own get their grace period, no other pod does)", a.Name, a.Immediate)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("standby actions:\n got %q\nwant %q", got, tc.want)
			}
			// Each of the clean-up's is a change, so a pass that made one
			// looks again; a wait is not.
			for _, a := range p.Actions {
				if a.Namespace != ns {
					continue
				}
				change := slices.ContainsFunc(p.Changes(), func(c Action) bool { return c.Kind == a.Kind && c.Name == a.Name && c.Verb == a.Verb })
				if want := a.Verb != VerbWait && a.Verb != VerbRoll && a.Verb != VerbKeep; change != want {
					t.Errorf("%s %s %s: in Changes() %v, want %v", a.Verb, a.Kind, a.Name, change, want)
				}
			}
		})
	}
}

// TestReadStandby: a pod is held to its controller's template by UID, not
// by anything the tenant could write before the freeze. Changed in place
// before the fence (an image swapped, an ephemeral container) it is
// Tampered; what admission adds at creation (a mesh's container, a
// webhook's environment, the API-access volume) is not looked at, nor is
// anything of a pod the control plane made after the fence began. A pod of
// a ReplicaSet whose template is not its Deployment's (an older revision,
// or one the tenant changed), or of another revision of a StatefulSet, is
// Stale. managedFields are dropped unread.
func TestReadStandby(t *testing.T) {
	began := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "call-handling"}, Annotations: map[string]string{build.AnnotationCredentialsRevision: "r1"}},
		Spec: corev1.PodSpec{ServiceAccountName: "call-handling",
			InitContainers: []corev1.Container{{Name: "migrate", Image: "registry.example/migrate@sha256:1"}},
			Containers:     []corev1.Container{{Name: "app", Image: "registry.example/app@sha256:1", Args: []string{"serve"}}}},
	}
	withHash := func(t corev1.PodTemplateSpec, hash string) corev1.PodTemplateSpec {
		t = *t.DeepCopy()
		t.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = hash
		return t
	}
	older := withHash(tmpl, "old")
	older.Spec.Containers[0].Image = "registry.example/app@sha256:0"
	sidecar := withHash(tmpl, "new")
	sidecar.Spec.Containers = append(sidecar.Spec.Containers, corev1.Container{Name: "sidecar", Image: "evil/sidecar:1"})
	dep := appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "call-handling", UID: "dep"}, Spec: appsv1.DeploymentSpec{Template: tmpl}}
	owned := func(kind string, uid types.UID) metav1.ObjectMeta {
		return metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{{Kind: kind, UID: uid, Controller: ptr.To(true)}}}
	}
	rs := func(name string, uid types.UID, t corev1.PodTemplateSpec) appsv1.ReplicaSet {
		r := appsv1.ReplicaSet{ObjectMeta: owned("Deployment", "dep"), Spec: appsv1.ReplicaSetSpec{Template: t}}
		r.Name, r.UID = name, uid
		return r
	}
	sts := appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "records", UID: "sts"}, Spec: appsv1.StatefulSetSpec{Template: tmpl},
		Status: appsv1.StatefulSetStatus{UpdateRevision: "records-2"}}
	pod := func(name string, owner metav1.ObjectMeta, t corev1.PodTemplateSpec, change func(*corev1.Pod)) corev1.Pod {
		p := corev1.Pod{ObjectMeta: owner, Spec: *t.Spec.DeepCopy()}
		p.Name, p.Annotations, p.CreationTimestamp = name, t.Annotations, metav1.NewTime(began.Add(-time.Hour))
		p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}}
		// What admission and the scheduler add at creation.
		p.Spec.NodeName = "node-1"
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "kube-api-access-x1y2z"})
		p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: "OTEL_SERVICE_NAME", Value: "injected"})
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "mesh/proxy:1"})
		if change != nil {
			change(&p)
		}
		return p
	}
	swap := func(p *corev1.Pod) { p.Spec.Containers[0].Image = "evil/app:1" }
	stsPod := func(name, revision string, change func(*corev1.Pod)) corev1.Pod {
		p := pod(name, owned("StatefulSet", "sts"), tmpl, change)
		p.Labels = map[string]string{appsv1.ControllerRevisionHashLabelKey: revision}
		return p
	}
	pods := []corev1.Pod{
		pod("runs", owned("ReplicaSet", "rs-new"), tmpl, nil),
		pod("image-swapped", owned("ReplicaSet", "rs-new"), tmpl, swap),
		pod("debugged", owned("ReplicaSet", "rs-new"), tmpl, func(p *corev1.Pod) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug"}}}
		}),
		pod("init-swapped", owned("ReplicaSet", "rs-new"), tmpl, func(p *corev1.Pod) { p.Spec.InitContainers[0].Image = "evil/migrate:1" }),
		pod("mirrored", owned("ReplicaSet", "rs-new"), tmpl, func(p *corev1.Pod) { p.Spec.Containers[0].Image = "mirror.example/app@sha256:1" }),
		pod("other-digest", owned("ReplicaSet", "rs-new"), tmpl, func(p *corev1.Pod) { p.Spec.Containers[0].Image = "registry.example/app@sha256:2" }),
		pod("made-after-the-fence", owned("ReplicaSet", "rs-new"), tmpl, func(p *corev1.Pod) {
			swap(p)
			p.CreationTimestamp = metav1.NewTime(began.Add(time.Second))
		}),
		pod("older-revision", owned("ReplicaSet", "rs-old"), older, nil),
		pod("template-changed", owned("ReplicaSet", "rs-sidecar"), sidecar, nil),
		stsPod("records-0", "records-2", nil),
		stsPod("records-1", "records-2", swap),
		stsPod("records-2", "records-1", nil),
		pod("bare", metav1.ObjectMeta{}, tmpl, swap),
	}
	rsNew := rs("call-handling-new", "rs-new", withHash(tmpl, "new"))
	got := map[string]StandbyObject{}
	for _, o := range ReadStandby(StandbyRead{
		Objects:     []StandbyObject{{Kind: "Ingress", Object: Object{Name: "i", ManagedFields: pods[0].ManagedFields}}},
		Deployments: []appsv1.Deployment{dep}, ReplicaSets: []appsv1.ReplicaSet{rsNew, rs("call-handling-old", "rs-old", older), rs("call-handling-sidecar", "rs-sidecar", sidecar)},
		StatefulSets: []appsv1.StatefulSet{sts}, Pods: pods, Since: began}) {
		got[o.Kind+"/"+o.Name] = o
		if o.ManagedFields != nil {
			t.Errorf("%s %s keeps its managedFields: nothing may read them", o.Kind, o.Name)
		}
	}
	for _, name := range []string{"Ingress/i", "Deployment/call-handling", "ReplicaSet/call-handling-new", "StatefulSet/records"} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s missing from what the clean-up reads", name)
		}
	}
	if d := got["Deployment/call-handling"]; d.Spec == "" || d.Spec != SpecHash(dep.Spec) {
		t.Errorf("the Deployment's spec hash = %q, want SpecHash of its spec", d.Spec)
	}
	for _, tc := range []struct {
		pod             string
		tampered, stale bool
	}{
		{"runs", false, false},
		{"image-swapped", true, false},
		{"debugged", true, false},
		{"init-swapped", true, false},
		{"mirrored", false, false}, // a registry mirror's webhook: the same digest
		{"other-digest", true, false},
		{"made-after-the-fence", false, false},
		{"older-revision", false, true},
		{"template-changed", false, true},
		{"records-0", false, false},
		{"records-1", true, false},
		{"records-2", false, true},
		{"bare", false, false},
	} {
		o := got["Pod/"+tc.pod]
		if o.Tampered != tc.tampered || o.Stale != tc.stale {
			t.Errorf("pod %s: Tampered %v, Stale %v; want %v, %v", tc.pod, o.Tampered, o.Stale, tc.tampered, tc.stale)
		}
	}
}

// TestSameTemplate: the Deployment controller's comparison, the hash label
// aside.
func TestSameTemplate(t *testing.T) {
	d := &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "a"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "a"}}}}
	rs := d.DeepCopy()
	rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = "abc"
	if !SameTemplate(rs, d) {
		t.Error("a ReplicaSet's template with its hash label is not its Deployment's")
	}
	rs.Annotations = map[string]string{build.AnnotationCredentialsRevision: "new"}
	if SameTemplate(rs, d) {
		t.Error("a template of another credentials revision is the same")
	}
	rs.Annotations = nil
	rs.Spec.Containers = append(rs.Spec.Containers, corev1.Container{Name: "sidecar", Image: "s"})
	if SameTemplate(rs, d) {
		t.Error("a template with a sidecar added is the same")
	}
}

// TestStandbyWrittenOf: the record is read from the standby Namespace only;
// one that cannot be read counts for nothing (everything is written whole
// again), and the freeze's lift removes it.
func TestStandbyWrittenOf(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
		AnnotationStandbyWritten: `{"fence":"F","objects":{"Deployment/a":"uid/h"}}`}}}
	if w := StandbyWrittenOf(ns); w.Fence != "F" || w.Objects["Deployment/a"] != "uid/h" {
		t.Errorf("StandbyWrittenOf = %+v", w)
	}
	ns.Annotations[AnnotationStandbyWritten] = "not json"
	if w := StandbyWrittenOf(ns); w.Fence != "" || len(w.Objects) != 0 {
		t.Errorf("StandbyWrittenOf a bad record = %+v, want nothing", w)
	}
	if _, ann := StandbyFreeze(""); ann[AnnotationStandbyWritten] != nil || !hasKey(ann, AnnotationStandbyWritten) {
		t.Errorf("the freeze's lift does not remove the record: %v", ann)
	}
}

func hasKey(m map[string]any, k string) bool {
	_, ok := m[k]
	return ok
}

// TestStandbyLists: every kind of StandbyKinds gets a list of its own, the
// compared ones typed, and Read hands each to ReadStandby under its kind.
func TestStandbyLists(t *testing.T) {
	l := NewStandbyLists()
	seen := map[List]bool{}
	for _, gvk := range StandbyReadKinds {
		list := l.For(gvk.Kind)
		if list == nil || seen[list] {
			t.Fatalf("%s: list %v (nil, or shared with another kind)", gvk.Kind, list)
		}
		seen[list] = true
		switch list := list.(type) {
		case *metav1.PartialObjectMetadataList:
			if list.Kind != gvk.Kind+"List" {
				t.Errorf("%s's metadata list is of %q", gvk.Kind, list.Kind)
			}
			list.Items = append(list.Items, metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "m"}})
		case *appsv1.DeploymentList:
			list.Items = append(list.Items, appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "d"}})
		case *corev1.PodList:
			list.Items = append(list.Items, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}})
		}
	}
	got := map[string]bool{}
	for _, o := range l.Read(time.Time{}) {
		got[o.Kind+"/"+o.Name] = true
	}
	for _, want := range []string{"Ingress/m", "CronJob/m", "Job/m", "DaemonSet/m", "PodDisruptionBudget/m", "ReplicationController/m", "Deployment/d", "Pod/p"} {
		if !got[want] {
			t.Errorf("Read left out %s: %v", want, got)
		}
	}
	if len(l.Deployments()) != 1 {
		t.Errorf("Deployments() = %v", l.Deployments())
	}
}

// TestStandbyBindingsThatReadSecrets: of the standby's RoleBindings, the
// clean-up deletes those that let their subjects read Secrets, by the rules
// of the role each refers to, so that the tenant's pipeline, with edit
// there, does not read the credentials the rotation writes next (a read is
// never admission's to refuse). A role it could not read counts as one
// that does.
func TestStandbyBindingsThatReadSecrets(t *testing.T) {
	rule := func(groups, resources, verbs []string, names ...string) rbacv1.PolicyRule {
		return rbacv1.PolicyRule{APIGroups: groups, Resources: resources, Verbs: verbs, ResourceNames: names}
	}
	core, all := []string{""}, []string{"*"}
	for _, tc := range []struct {
		name  string
		rules []rbacv1.PolicyRule
		want  bool
	}{
		{"edit-like", []rbacv1.PolicyRule{rule(core, []string{"pods", "secrets", "configmaps"}, []string{"get", "list", "watch", "create"})}, true},
		{"list only", []rbacv1.PolicyRule{rule(core, []string{"secrets"}, []string{"list"})}, true},
		{"watch only", []rbacv1.PolicyRule{rule(core, []string{"secrets"}, []string{"watch"})}, true},
		{"one Secret by name", []rbacv1.PolicyRule{rule(core, []string{"secrets"}, []string{"get"}, "call-handling.db-password")}, true},
		{"every resource", []rbacv1.PolicyRule{rule(core, all, []string{"get"})}, true},
		{"every group", []rbacv1.PolicyRule{rule(all, []string{"secrets"}, []string{"get"})}, true},
		{"every verb", []rbacv1.PolicyRule{rule(core, []string{"secrets"}, all)}, true},
		{"view-like", []rbacv1.PolicyRule{rule(core, []string{"pods", "configmaps", "services"}, []string{"get", "list", "watch"})}, false},
		{"write Secrets, never read them", []rbacv1.PolicyRule{rule(core, []string{"secrets"}, []string{"create", "delete"})}, false},
		{"secrets of another group", []rbacv1.PolicyRule{rule([]string{"example.com"}, []string{"secrets"}, []string{"get"})}, false},
		{"no rules", nil, false},
		{"impersonate a ServiceAccount", []rbacv1.PolicyRule{rule(core, []string{"serviceaccounts"}, []string{"impersonate"})}, true},
		{"impersonate a user", []rbacv1.PolicyRule{rule(core, []string{"users"}, []string{"impersonate"}, "ci")}, true},
		{"every verb on ServiceAccounts", []rbacv1.PolicyRule{rule(core, []string{"serviceaccounts"}, all)}, true},
		{"the second rule reads them", []rbacv1.PolicyRule{rule(core, []string{"pods"}, []string{"get"}), rule(core, []string{"secrets"}, []string{"list"})}, true},
	} {
		if got := ReadsSecrets(tc.rules); got != tc.want {
			t.Errorf("%s: ReadsSecrets = %v, want %v", tc.name, got, tc.want)
		}
	}

	edit := rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "edit"}, Rules: []rbacv1.PolicyRule{rule(core, []string{"secrets"}, []string{"get"})}}
	view := rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "view"}, Rules: []rbacv1.PolicyRule{rule(core, []string{"pods"}, []string{"get"})}}
	reader := rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "secret-reader"}, Rules: []rbacv1.PolicyRule{rule(core, []string{"secrets"}, []string{"get"})}}
	lister := rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "pod-lister"}, Rules: []rbacv1.PolicyRule{rule(core, []string{"pods"}, []string{"list"})}}
	binding := func(name, kind, role string) rbacv1.RoleBinding {
		return rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(name)}, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: role}}
	}
	l := NewStandbyLists()
	l.For("RoleBinding").(*rbacv1.RoleBindingList).Items = []rbacv1.RoleBinding{
		binding("pipeline-edit", "ClusterRole", "edit"),
		binding("viewers", "ClusterRole", "view"),
		binding("to-a-missing-clusterrole", "ClusterRole", "not-yet"),
		binding("reader", "Role", "secret-reader"),
		binding("lister", "Role", "pod-lister"),
		binding("to-a-missing-role", "Role", "gone"),
	}
	l.For("Role").(*rbacv1.RoleList).Items = []rbacv1.Role{reader, lister}
	if got, want := l.clusterRolesNamed(), []string{"edit", "not-yet", "view"}; !slices.Equal(got, want) {
		t.Errorf("clusterRolesNamed() = %q, want %q", got, want)
	}
	// Read as the operator and the plugin read them: a ClusterRole that
	// cannot be read (an upgrade's manager still on its old role) is left
	// out, said, and never holds up the clean-up.
	clusterRoles := map[string]rbacv1.ClusterRole{"edit": edit, "view": view}
	forbidden, err := l.ReadClusterRoles(func(name string, into *rbacv1.ClusterRole) error {
		if cr, ok := clusterRoles[name]; ok {
			*into = cr
			return nil
		}
		return apierrors.NewNotFound(rbacv1.Resource("clusterroles"), name)
	})
	if len(forbidden) != 0 || err != nil {
		t.Errorf("a ClusterRole that is gone is not an error: %v, %v", forbidden, err)
	}
	got := map[string]bool{}
	for _, o := range l.Read(time.Time{}) {
		if o.Kind == "RoleBinding" {
			got[o.Name] = o.ReadsSecrets
		}
	}
	want := map[string]bool{"pipeline-edit": true, "viewers": false, "to-a-missing-clusterrole": true, "reader": true, "lister": false, "to-a-missing-role": true}
	if !maps.Equal(got, want) {
		t.Errorf("RoleBindings that read Secrets: %v, want %v", got, want)
	}
}

// TestAClusterRoleNotReadCountsAsGranting: a binding to a ClusterRole the
// caller may not read is deleted (fail closed), and the refusal is returned
// to be said, not to stop the fence; any other failure to read one is an
// error, so that a timeout deletes no binding.
func TestAClusterRoleNotReadCountsAsGranting(t *testing.T) {
	lists := func() *StandbyLists {
		l := NewStandbyLists()
		l.For("RoleBinding").(*rbacv1.RoleBindingList).Items = []rbacv1.RoleBinding{{ObjectMeta: metav1.ObjectMeta{Name: "viewers"},
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"}}}
		return l
	}
	l := lists()
	forbidden, err := l.ReadClusterRoles(func(name string, _ *rbacv1.ClusterRole) error {
		return apierrors.NewForbidden(rbacv1.Resource("clusterroles"), name, errors.New("no get"))
	})
	if len(forbidden) != 1 || !apierrors.IsForbidden(forbidden[0]) || err != nil {
		t.Errorf("forbidden = %v, err = %v; want the Forbidden, said, and no error", forbidden, err)
	}
	for _, o := range l.Read(time.Time{}) {
		if o.Kind == "RoleBinding" && !o.ReadsSecrets {
			t.Errorf("binding %s to a ClusterRole not read: counted as granting nothing", o.Name)
		}
	}
	if _, err := lists().ReadClusterRoles(func(name string, _ *rbacv1.ClusterRole) error {
		return apierrors.NewTimeoutError("slow", 1)
	}); !apierrors.IsTimeout(err) {
		t.Errorf("a timeout reading a ClusterRole: %v, want it returned", err)
	}
}
