package fence

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// TestPlanStandby: a fence that moves traffic to the standby plans, in step
// 3, the standby namespace frozen first, then the standby's ServiceAccounts recreated (the standby services' and
// default) or deleted (every other), its generated Secrets rotated and its
// workloads rolled, once per fence ID; a fence that does not move traffic
// there, or a standby not observed, plans nothing of the standby.
func TestPlanStandby(t *testing.T) {
	const id = "2030-01-01T00:00:00Z"
	const ns = "wales-111-standby"
	callHandling := v1alpha1.Service{Name: "call-handling", Replicas: ptr.To[int32](2), Critical: true, GeneratedSecrets: []string{"db", "api"}}
	records := v1alpha1.Service{Name: "records", Critical: true, Volumes: []v1alpha1.Volume{{Name: "data", MountPath: "/data"}}}
	recordsHA := records
	recordsHA.Replicas = ptr.To[int32](3)
	obj := func(name, rev string) Object {
		o := Object{Name: name, UID: types.UID("uid-" + name), Annotations: map[string]string{}}
		if rev != "" {
			o.Annotations[build.AnnotationCredentialsRevision] = rev
		}
		return o
	}
	// Read before the freeze, then after it.
	unfrozen := func() *StandbyObserved {
		return &StandbyObserved{
			Services:        []v1alpha1.Service{callHandling},
			ServiceAccounts: []Object{obj("call-handling", ""), obj("default", ""), obj("backdoor", "")},
			Secrets:         []Object{obj(build.GeneratedSecretName("call-handling", "db"), ""), obj(build.GeneratedSecretName("call-handling", "api"), ""), obj("tenant-notes", "")},
			Workloads:       map[string]string{"call-handling": "initial"},
		}
	}
	standby := func() *StandbyObserved {
		sb := unfrozen()
		sb.FrozenFor = id
		return sb
	}
	// Rotated under this fence already, the namespace frozen for frozenFor.
	rotated := func(frozenFor string) *StandbyObserved {
		return &StandbyObserved{
			Services:        []v1alpha1.Service{callHandling},
			ServiceAccounts: []Object{obj("call-handling", id), obj("default", id)},
			Secrets:         []Object{obj(build.GeneratedSecretName("call-handling", "db"), id), obj(build.GeneratedSecretName("call-handling", "api"), id)},
			Workloads:       map[string]string{"call-handling": id},
			FrozenFor:       frozenFor,
		}
	}
	for _, tc := range []struct {
		name     string
		failover v1alpha1.Failover
		standby  func() *StandbyObserved
		want     []string // "verb kind name", in order
	}{
		{
			name:     "Warm, Automatic, before the freeze: frozen first, then everything rotated",
			failover: v1alpha1.Failover{Standby: v1alpha1.StandbyWarm, Trigger: v1alpha1.TriggerAutomatic},
			standby:  unfrozen,
			want: []string{
				"freeze Namespace " + ns, "delete ServiceAccount backdoor", "recreate ServiceAccount call-handling", "recreate ServiceAccount default",
				"rotate Secret " + build.GeneratedSecretName("call-handling", "api"), "rotate Secret " + build.GeneratedSecretName("call-handling", "db"), "roll Deployment call-handling",
			},
		},
		{
			name:     "Warm, Automatic, frozen: everything rotated",
			failover: v1alpha1.Failover{Standby: v1alpha1.StandbyWarm, Trigger: v1alpha1.TriggerAutomatic},
			standby:  standby,
			want: []string{
				"delete ServiceAccount backdoor", "recreate ServiceAccount call-handling", "recreate ServiceAccount default",
				"rotate Secret " + build.GeneratedSecretName("call-handling", "api"), "rotate Secret " + build.GeneratedSecretName("call-handling", "db"), "roll Deployment call-handling",
			},
		},
		{
			name:     "Cold, before the standby runs: created under the fence",
			failover: v1alpha1.Failover{Standby: v1alpha1.StandbyCold},
			standby: func() *StandbyObserved {
				return &StandbyObserved{Services: []v1alpha1.Service{callHandling}, ServiceAccounts: []Object{obj("default", "")}, FrozenFor: id}
			},
			want: []string{
				"recreate ServiceAccount default", "recreate ServiceAccount call-handling",
				"rotate Secret " + build.GeneratedSecretName("call-handling", "api"), "rotate Secret " + build.GeneratedSecretName("call-handling", "db"), "roll Deployment call-handling",
			},
		},
		{
			name:     "rotated under this fence already: nothing again",
			failover: v1alpha1.Failover{Standby: v1alpha1.StandbyWarm},
			standby:  func() *StandbyObserved { return rotated(id) },
		},
		{
			name:     "rotated under this fence, the standby not frozen (a careplane before the standby's freeze): frozen",
			failover: v1alpha1.Failover{Standby: v1alpha1.StandbyWarm},
			standby:  func() *StandbyObserved { return rotated("") },
			want:     []string{"freeze Namespace " + ns},
		},
		{
			name:     "rotated under an earlier fence: rotated again",
			failover: v1alpha1.Failover{Standby: v1alpha1.StandbyWarm},
			standby: func() *StandbyObserved {
				old := "2029-01-01T00:00:00Z"
				return &StandbyObserved{
					Services:        []v1alpha1.Service{callHandling},
					ServiceAccounts: []Object{obj("call-handling", old), obj("default", old)},
					Secrets:         []Object{obj(build.GeneratedSecretName("call-handling", "db"), old), obj(build.GeneratedSecretName("call-handling", "api"), id)},
					Workloads:       map[string]string{"call-handling": old},
					FrozenFor:       old,
				}
			},
			want: []string{
				"freeze Namespace " + ns, "recreate ServiceAccount call-handling", "recreate ServiceAccount default",
				"rotate Secret " + build.GeneratedSecretName("call-handling", "db"), "roll Deployment call-handling",
			},
		},
		{
			name:     "a StatefulSet of one replica is not rolled, one of three is",
			failover: v1alpha1.Failover{Standby: v1alpha1.StandbyWarm},
			standby: func() *StandbyObserved {
				ha := recordsHA
				ha.Name = "records-ha"
				return &StandbyObserved{
					Services:        []v1alpha1.Service{records, ha},
					ServiceAccounts: []Object{obj("records", id), obj("records-ha", id), obj("default", id)},
					Workloads:       map[string]string{"records": "initial", "records-ha": "initial"},
					FrozenFor:       id,
				}
			},
			want: []string{"keep StatefulSet records", "roll StatefulSet records-ha"},
		},
		{
			name:     "Manual, activeSite Standby: the fence keeps traffic on the standby",
			failover: v1alpha1.Failover{Standby: v1alpha1.StandbyWarm, Trigger: v1alpha1.TriggerManual, ActiveSite: v1alpha1.SiteStandby},
			standby:  standby,
			want: []string{
				"delete ServiceAccount backdoor", "recreate ServiceAccount call-handling", "recreate ServiceAccount default",
				"rotate Secret " + build.GeneratedSecretName("call-handling", "api"), "rotate Secret " + build.GeneratedSecretName("call-handling", "db"), "roll Deployment call-handling",
			},
		},
		{
			name:     "Manual, activeSite Primary: traffic does not move, nothing rotated",
			failover: v1alpha1.Failover{Standby: v1alpha1.StandbyWarm, Trigger: v1alpha1.TriggerManual},
			standby:  standby,
		},
		{
			name:     "no standby: nothing",
			failover: v1alpha1.Failover{Standby: v1alpha1.StandbyNone},
			standby:  standby,
		},
		{
			name:     "standby namespace not observed: nothing",
			failover: v1alpha1.Failover{Standby: v1alpha1.StandbyWarm},
			standby:  func() *StandbyObserved { return nil },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := fencedEnv()
			env.Spec.Services = []v1alpha1.Service{callHandling, {Name: "referral"}}
			env.Spec.Failover = tc.failover
			o := Observed{Env: env, Isolation: env.Spec.Isolation, Record: Record{ID: id, Source: SourceSpec}, Standby: tc.standby()}
			p := PlanFence(o)
			var got []string
			for _, a := range p.Actions {
				if a.Namespace != ns && (a.Kind != "Namespace" || a.Name != ns) {
					continue
				}
				if a.Step != 3 || !strings.HasPrefix(a.Note, "standby: ") {
					t.Errorf("standby action %+v is not a labelled part of step 3", a)
				}
				got = append(got, string(a.Verb)+" "+a.Kind+" "+a.Name)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("standby actions:\n got %q\nwant %q", got, tc.want)
			}
			for i := 1; i < len(p.Actions); i++ {
				if p.Actions[i].Step < p.Actions[i-1].Step {
					t.Fatalf("steps out of order: %+v before %+v", p.Actions[i-1], p.Actions[i])
				}
			}
			// What the fence carries out in passes: the roll is the
			// standby reconcile's, and a plan with only it left is done.
			for _, a := range p.Changes() {
				if a.Verb == VerbRoll || a.Verb == VerbKeep {
					t.Errorf("Changes() holds %+v", a)
				}
			}
			// The freeze is a change: a pass that made it looks again.
			if slices.Contains(tc.want, "freeze Namespace "+ns) &&
				!slices.ContainsFunc(p.Changes(), func(a Action) bool { return a.Verb == VerbFreeze }) {
				t.Error("Changes() leaves out the standby's freeze")
			}
		})
	}
}

// TestPlanStandbyLeavesTenantSecretsAlone: the plan names what it rotates,
// never a value (it only sees metadata), and a tenant's own Secret in the
// standby is not careplane's to rotate.
func TestPlanStandbyLeavesTenantSecretsAlone(t *testing.T) {
	env := fencedEnv()
	env.Spec.Failover = v1alpha1.Failover{Standby: v1alpha1.StandbyWarm}
	o := Observed{Env: env, Isolation: env.Spec.Isolation, Record: Record{ID: "x", Source: SourceSpec}, Standby: &StandbyObserved{
		Secrets: []Object{{Name: "tenant-notes"}},
	}}
	for _, a := range PlanFence(o).Actions {
		if a.Kind == "Secret" {
			t.Errorf("the plan touches Secret %s, which careplane did not generate", a.Name)
		}
	}
}

// TestAStandbyNotReadIsFrozenAndNothingElse: when only the standby's
// Namespace could be read (its lists failed), the plan freezes it, so that
// the site traffic moves to is at least closed to the tenant's writes, and
// plans nothing that needs the rest: a rotation from a partial look would
// replace credentials with the tenant's objects still there.
func TestAStandbyNotReadIsFrozenAndNothingElse(t *testing.T) {
	env := fencedEnv()
	env.Spec.Failover = v1alpha1.Failover{Standby: v1alpha1.StandbyWarm}
	const id = "2030-01-01T00:00:00Z"
	for _, tc := range []struct {
		frozenFor string
		want      []string
	}{
		{"", []string{"freeze Namespace wales-111-standby"}},
		{id, nil},
	} {
		o := Observed{Env: env, Isolation: env.Spec.Isolation, Record: Record{ID: id, Source: SourceSpec},
			Standby: &StandbyObserved{FrozenFor: tc.frozenFor, Unread: true}}
		var got []string
		for _, a := range PlanFence(o).Actions {
			if a.Namespace == "wales-111-standby" || a.Name == "wales-111-standby" {
				got = append(got, string(a.Verb)+" "+a.Kind+" "+a.Name)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("frozen for %q, unread: standby actions %q, want %q", tc.frozenFor, got, tc.want)
		}
	}
}

// TestStandbyWorkloadRevision: the standby's workload keeps its credentials
// until a fence rotated them; a new one starts on them; one that exists
// rolls only once traffic is on record on the standby (a roll earlier would
// hold up the failover), and never when it cannot roll without a gap.
func TestStandbyWorkloadRevision(t *testing.T) {
	dep := v1alpha1.Service{Name: "call-handling"}
	sts1 := v1alpha1.Service{Name: "records", Volumes: []v1alpha1.Volume{{Name: "data"}}}
	sts2 := v1alpha1.Service{Name: "records", Replicas: ptr.To[int32](2), Volumes: []v1alpha1.Volume{{Name: "data"}}}
	for _, tc := range []struct {
		name      string
		svc       v1alpha1.Service
		current   string
		exists    bool
		rotation  string
		onStandby bool
		want      string
	}{
		{"no rotation", dep, "initial", true, "", true, "initial"},
		{"rotated already", dep, "F", true, "F", false, "F"},
		{"new workload starts on the rotation", dep, "initial", false, "F", false, "F"},
		{"traffic not on record on the standby yet: waits", dep, "initial", true, "F", false, "initial"},
		{"traffic on the standby: rolls", dep, "initial", true, "F", true, "F"},
		{"StatefulSet of one: never rolls", sts1, "initial", true, "F", true, "initial"},
		{"StatefulSet of two: rolls", sts2, "initial", true, "F", true, "F"},
		{"new StatefulSet of one: starts on it", sts1, "", false, "F", false, "F"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := StandbyWorkloadRevision(tc.svc, tc.current, tc.exists, tc.rotation, tc.onStandby); got != tc.want {
				t.Errorf("StandbyWorkloadRevision = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestStandbyServes follows failover.Decide for a fenced primary: the
// standby serves with an Automatic trigger, or a Manual one asking for it.
func TestStandbyServes(t *testing.T) {
	for _, tc := range []struct {
		fo   v1alpha1.Failover
		want bool
	}{
		{v1alpha1.Failover{}, false},
		{v1alpha1.Failover{Standby: v1alpha1.StandbyNone, Trigger: v1alpha1.TriggerAutomatic}, false},
		{v1alpha1.Failover{Standby: v1alpha1.StandbyWarm, Trigger: v1alpha1.TriggerAutomatic}, true},
		{v1alpha1.Failover{Standby: v1alpha1.StandbyCold}, true},
		{v1alpha1.Failover{Standby: v1alpha1.StandbyWarm, Trigger: v1alpha1.TriggerManual}, false},
		{v1alpha1.Failover{Standby: v1alpha1.StandbyCold, Trigger: v1alpha1.TriggerManual, ActiveSite: v1alpha1.SiteStandby}, true},
	} {
		env := fencedEnv()
		env.Spec.Failover = tc.fo
		if got := StandbyServes(env); got != tc.want {
			t.Errorf("StandbyServes(%+v) = %v, want %v", tc.fo, got, tc.want)
		}
	}
}
