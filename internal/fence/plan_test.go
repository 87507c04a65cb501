package fence

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// TestPlanLeavesNothingOpen: over random namespaces (careplane's objects and
// the tenant's, some already handled by an earlier pass of the same fence),
// the plan closes the window first, in order, and leaves nothing behind that
// could reopen it: no policy but the deny policy, no Service but careplane's
// as careplane wrote it (one whose selector someone changed goes, and is
// written anew by the restore), none held by a finalizer, no ServiceAccount
// not recreated under this fence, no running pod that is neither evidence
// nor stopped.
func TestPlanLeavesNothingOpen(t *testing.T) {
	const id = "2030-01-01T00:00:00Z"
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		env := fencedEnv()
		env.Spec.Services = []v1alpha1.Service{{Name: "call-handling", Replicas: ptr.To[int32](2), GeneratedSecrets: []string{"db"}}, {Name: "referral"}}
		if r.IntN(2) == 0 {
			env.Spec.Isolation.Workloads = v1alpha1.WorkloadsStop
		}
		o := Observed{Env: env, Isolation: env.Spec.Isolation, Record: Record{ID: id, Source: SourceSpec}}
		meta := func(name string, own bool) Object {
			m := Object{Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{}, Annotations: map[string]string{}}
			if own {
				m.Labels[v1alpha1.LabelEnvironment] = env.Name
			}
			if r.IntN(5) == 0 {
				m.DeletionTimestamp = &metav1.Time{}
			}
			return m
		}
		for j := range r.IntN(5) {
			o.Policies = append(o.Policies, meta(fmt.Sprintf("pol-%d", j), r.IntN(2) == 0))
		}
		if r.IntN(2) == 0 {
			o.Policies = append(o.Policies, meta(build.FencePolicyName, r.IntN(2) == 0))
		}
		for _, name := range []string{"call-handling", "referral", "default", "backdoor", "ci"} {
			if r.IntN(3) == 0 {
				continue
			}
			sa := meta(name, name != "backdoor" && name != "ci")
			if r.IntN(3) == 0 {
				sa.Annotations[build.AnnotationCredentialsRevision] = id
			}
			o.ServiceAccounts = append(o.ServiceAccounts, sa)
		}
		for _, name := range []string{"call-handling", "referral", "nodeport", "planted"} {
			if r.IntN(3) != 0 {
				svc := ServiceObject{Object: meta(name, r.IntN(2) == 0), Selector: build.SelectorLabels(env, name)}
				if svc.DeletionTimestamp != nil && r.IntN(2) == 0 {
					svc.Finalizers = []string{"example.com/keep"}
				}
				if r.IntN(3) == 0 {
					svc.Selector = map[string]string{v1alpha1.LabelEnvironment: env.Name}
				}
				svc.ForeignSpec = r.IntN(4) == 0
				o.Services = append(o.Services, svc)
			}
		}
		for j := range r.IntN(6) {
			p := meta(fmt.Sprintf("pod-%d", j), r.IntN(2) == 0)
			if p.Labels[v1alpha1.LabelEnvironment] != "" && r.IntN(2) == 0 {
				p.Labels[v1alpha1.LabelService] = "call-handling"
			}
			if r.IntN(4) == 0 {
				p.Labels[v1alpha1.LabelEvidence] = "INC-0"
			}
			o.Pods = append(o.Pods, p)
		}
		p := PlanFence(o)
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkPlan(t, o, p) })
	}
}

func checkPlan(t *testing.T, o Observed, p Plan) {
	t.Helper()
	if len(p.Actions) < 3 || p.Actions[0].Verb != VerbRecord || p.Actions[1].Name != build.FencePolicyName ||
		p.Actions[1].Verb != VerbWriteWhole || p.Actions[2].Kind != "ResourceQuota" || p.Actions[2].Verb != VerbWriteWhole {
		t.Fatalf("the plan does not close the window first: %+v", p.Actions[:min(3, len(p.Actions))])
	}
	for i := 1; i < len(p.Actions); i++ {
		if p.Actions[i].Step < p.Actions[i-1].Step {
			t.Fatalf("steps out of order: %+v before %+v", p.Actions[i-1], p.Actions[i])
		}
	}
	acted := map[string]Verb{}
	for _, a := range p.Actions {
		acted[a.Kind+"/"+a.Name] = a.Verb
	}
	for _, pol := range o.Policies {
		if pol.Name != build.FencePolicyName && pol.DeletionTimestamp == nil && acted["NetworkPolicy/"+pol.Name] != VerbDelete {
			t.Errorf("policy %s stays beside the fence", pol.Name)
		}
	}
	for _, svc := range o.Services {
		v := acted["Service/"+svc.Name]
		careplanes := (svc.Name == "call-handling" || svc.Name == "referral") && !svc.ForeignSpec &&
			maps.Equal(svc.Selector, build.SelectorLabels(o.Env, svc.Name))
		switch {
		case careplanes && svc.DeletionTimestamp == nil && v != "":
			t.Errorf("careplane's Service %s, as careplane wrote it, is %s", svc.Name, v)
		case !careplanes && svc.DeletionTimestamp == nil && v != VerbDelete:
			t.Errorf("Service %s (selector %v) stays beside the fence: %q", svc.Name, svc.Selector, v)
		case svc.DeletionTimestamp != nil && len(svc.Finalizers) > 0 && v != VerbRelease:
			t.Errorf("Service %s, held by %v, stays beside the fence: %q", svc.Name, svc.Finalizers, v)
		}
	}
	for _, sa := range o.ServiceAccounts {
		done := sa.Annotations[build.AnnotationCredentialsRevision] == o.Record.ID &&
			(sa.Name == "default" || sa.Name == "call-handling" || sa.Name == "referral")
		v := acted["ServiceAccount/"+sa.Name]
		if sa.DeletionTimestamp == nil && !done && v != VerbDelete && v != VerbRecreate {
			t.Errorf("service account %s keeps its tokens", sa.Name)
		}
		if done && v != "" {
			t.Errorf("service account %s, recreated under this fence already, is %s again", sa.Name, v)
		}
	}
	for _, pod := range o.Pods {
		if pod.DeletionTimestamp != nil {
			continue
		}
		v := acted["Pod/"+pod.Name]
		switch {
		case pod.Labels[v1alpha1.LabelEvidence] != "":
			if v != VerbKeep {
				t.Errorf("evidence pod %s is %s", pod.Name, v)
			}
		case o.Isolation.Workloads != v1alpha1.WorkloadsStop:
			if v != VerbPreserve {
				t.Errorf("pod %s is %q, not preserved as evidence", pod.Name, v)
			}
		case pod.Labels[v1alpha1.LabelService] == "":
			if v != VerbDelete {
				t.Errorf("pod %s careplane does not scale down is %q, not stopped", pod.Name, v)
			}
		}
	}
	for _, svc := range o.Env.Spec.Services {
		if acted["Deployment/"+svc.Name] != VerbScale {
			t.Errorf("deployment %s not scaled to zero", svc.Name)
		}
	}
}

// TestChangesOfAFencedNamespace: a namespace a pass has fenced already has
// nothing left to change; one object the tenant slipped in is one change.
func TestChangesOfAFencedNamespace(t *testing.T) {
	const id = "2030-01-01T00:00:00Z"
	env := fencedEnv()
	env.Spec.Services = []v1alpha1.Service{{Name: "call-handling"}}
	rev := map[string]string{build.AnnotationCredentialsRevision: id}
	o := Observed{Env: env, Isolation: env.Spec.Isolation, Record: Record{ID: id, Source: SourceSpec},
		Policies:        []Object{{Name: build.FencePolicyName}},
		ServiceAccounts: []Object{{Name: "call-handling", Annotations: rev}, {Name: "default", Annotations: rev}},
		Pods:            []Object{{Name: "call-handling-1", Labels: map[string]string{v1alpha1.LabelEvidence: "INC-1"}}},
		Deployments:     []Object{{Name: "call-handling"}},
	}
	if c := PlanFence(o).Changes(); len(c) != 0 {
		t.Fatalf("a fenced namespace: changes %+v, want none", c)
	}
	o.ServiceAccounts = append(o.ServiceAccounts, Object{Name: "slipped-in", UID: "u1"})
	if c := PlanFence(o).Changes(); len(c) != 1 || c[0].Verb != VerbDelete || c[0].Name != "slipped-in" {
		t.Fatalf("one tenant ServiceAccount slipped in: changes %+v, want its deletion", c)
	}
}

// TestPlanStopsStatefulSetsAndKeepsTheirVolumes: a service with volumes
// runs as a StatefulSet, which the fence scales to zero like a Deployment;
// nothing in the plan touches its claims.
func TestPlanStopsStatefulSetsAndKeepsTheirVolumes(t *testing.T) {
	env := fencedEnv()
	env.Spec.Services = []v1alpha1.Service{
		{Name: "document-store", Volumes: []v1alpha1.Volume{{Name: "records", MountPath: "/var/lib/records", Size: "1Gi"}}},
		{Name: "records-api"},
	}
	o := Observed{Env: env, Isolation: env.Spec.Isolation, Record: Record{ID: "x", Source: SourceSpec},
		StatefulSets: []Object{{Name: "document-store"}}}
	got := map[string]Action{}
	for _, a := range PlanFence(o).Step(4) {
		if a.Verb == VerbScale {
			got[a.Name] = a
		}
	}
	if a := got["document-store"]; a.Kind != "StatefulSet" || a.Note != "replicas 0; its volumes are kept" {
		t.Errorf("document-store: %+v, want the StatefulSet scaled to 0, its volumes kept", a)
	}
	if a := got["records-api"]; a.Kind != "Deployment" || a.Note != "does not exist yet; created with replicas 0" {
		t.Errorf("records-api: %+v, want its Deployment", a)
	}
	for _, a := range PlanFence(o).Actions {
		if a.Kind == "PersistentVolumeClaim" && a.Verb == VerbDelete {
			t.Errorf("the fence deletes a claim: %+v", a)
		}
	}
}

// TestPlanInvalidatesEveryRevisionOfAGeneratedSecret: the fence deletes a
// generated credential whatever revision's Secret holds it (one never
// rotated, one a restore rotated under a name of its own, one of a service
// only a restore revision had), and no other Secret, though its name
// starts the same.
func TestPlanInvalidatesEveryRevisionOfAGeneratedSecret(t *testing.T) {
	env := fencedEnv()
	env.Spec.Services = []v1alpha1.Service{{Name: "call-handling", GeneratedSecrets: []string{"db"}}, {Name: "referral"}}
	rotated := build.GeneratedSecretObjectName(v1alpha1.SitePrimary, "call-handling", "db", "2030-01-01T00:00:00Z")
	o := Observed{Env: env, Isolation: env.Spec.Isolation, Record: Record{ID: "x", Source: SourceSpec}}
	for _, name := range []string{"call-handling.db", rotated, "call-handling.dbx", "call-handling.db.a.b", "call-handling.db.bak", "referral.db", "tenant-notes"} {
		o.Secrets = append(o.Secrets, Object{Name: name, UID: types.UID("uid-" + name)})
	}
	// One of a restore revision's service the spec no longer has: known
	// by careplane's labels.
	o.Secrets = append(o.Secrets, Object{Name: "audit.key", UID: "uid-audit",
		Labels: map[string]string{build.LabelGenerated: "true", v1alpha1.LabelEnvironment: env.Name}})
	var deleted []string
	for _, a := range PlanFence(o).Step(3) {
		if a.Kind == "Secret" && a.Verb == VerbDelete {
			deleted = append(deleted, a.Name)
		}
	}
	if want := []string{"audit.key", "call-handling.db", rotated}; !slices.Equal(deleted, want) {
		t.Errorf("the fence deletes Secrets %v, want %v", deleted, want)
	}
}

// TestPlanStopsTheRestoredGeneration: after a restore from a recovery point
// the service's StatefulSet is named by the data generation on record; a
// fence scales that one, not one of the service's bare name (which would be
// created anew, on the claims kept as evidence).
func TestPlanStopsTheRestoredGeneration(t *testing.T) {
	env := fencedEnv()
	env.Spec.Services = []v1alpha1.Service{
		{Name: "document-store", Volumes: []v1alpha1.Volume{{Name: "records", MountPath: "/var/lib/records", Size: "1Gi"}}},
	}
	o := Observed{Env: env, Isolation: env.Spec.Isolation, Record: Record{ID: "x", Source: SourceSpec},
		DataGeneration: "rtpg000", StatefulSets: []Object{{Name: "document-store-rtpg000"}}}
	var scaled []string
	for _, a := range PlanFence(o).Step(4) {
		if a.Verb == VerbScale {
			scaled = append(scaled, a.Kind+" "+a.Name+": "+a.Note)
		}
	}
	if len(scaled) != 1 || scaled[0] != "StatefulSet document-store-rtpg000: replicas 0; its volumes are kept" {
		t.Errorf("scaled %v, want only the StatefulSet of generation rtpg000", scaled)
	}
}

// TestSpecWrittenByOthers: a Service's spec is careplane's alone unless
// another field manager wrote a field of it; status writes do not count.
func TestSpecWrittenByOthers(t *testing.T) {
	entry := func(manager, sub, fields string) metav1.ManagedFieldsEntry {
		return metav1.ManagedFieldsEntry{Manager: manager, Subresource: sub, FieldsV1: metav1.NewFieldsV1(fields)}
	}
	ours := entry("careplane", "", `{"f:metadata":{"f:labels":{}},"f:spec":{"f:selector":{},"f:type":{}}}`)
	for _, tc := range []struct {
		name    string
		managed []metav1.ManagedFieldsEntry
		want    bool
	}{
		{"careplane's alone", []metav1.ManagedFieldsEntry{ours}, false},
		{"a label of someone else's", []metav1.ManagedFieldsEntry{ours, entry("kubectl-label", "", `{"f:metadata":{"f:labels":{"f:team":{}}}}`)}, false},
		{"a load balancer's status", []metav1.ManagedFieldsEntry{ours, entry("service-controller", "status", `{"f:status":{"f:loadBalancer":{}}}`)}, false},
		{"the pipeline's externalIPs", []metav1.ManagedFieldsEntry{ours, entry("kubectl-patch", "", `{"f:spec":{"f:externalIPs":{}}}`)}, true},
		{"no managedFields", nil, false},
	} {
		if got := SpecWrittenByOthers(tc.managed, "careplane"); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
