package plugin

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

var t0 = metav1.NewTime(time.Date(2026, 11, 21, 7, 0, 0, 0, time.UTC))

func cond(typ string, status metav1.ConditionStatus, reason string, gen int64) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, ObservedGeneration: gen, Message: reason + " message"}
}

func TestWriteStatus(t *testing.T) {
	ready := testEnv(func(e *v1alpha1.HealthEnvironment) {
		e.Name = "wales-111"
		e.Spec.Isolation = v1alpha1.Isolation{}
		e.Status = v1alpha1.HealthEnvironmentStatus{
			ActiveSite: v1alpha1.SitePrimary, ReadyServices: "2/2", KnownGoodRevision: "wales-111-c750c3f4be",
			Conditions: []metav1.Condition{cond(v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonAvailable, 1)},
			Incidents:  []v1alpha1.Incident{{Ticket: "INC-1", FencedAt: &t0}, {Ticket: "INC-2", FencedAt: &t0, RestoredAt: &t0}},
		}
	})
	fenced := testEnv(func(e *v1alpha1.HealthEnvironment) {
		e.Name = "england-111"
		e.Spec.Tenant.DisplayName = "NHS 111 England"
		e.Status = v1alpha1.HealthEnvironmentStatus{
			ActiveSite: v1alpha1.SiteStandby, ReadyServices: "1/2",
			Conditions: []metav1.Condition{cond(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonFenced, 2)},
			Isolation:  &v1alpha1.IsolationStatus{FencedAt: &t0},
		}
	})
	fresh := testEnv(func(e *v1alpha1.HealthEnvironment) {
		e.Name = "scotland-111"
		e.Spec.Tenant.DisplayName = "NHS 24"
		e.Spec.Isolation = v1alpha1.Isolation{}
		e.Status = v1alpha1.HealthEnvironmentStatus{}
	})
	// held: fenced by a FenceRequest, its own spec not yet written.
	held := testEnv(func(e *v1alpha1.HealthEnvironment) {
		e.Name = "wales-999"
		e.Spec.Isolation = v1alpha1.Isolation{}
		e.Status = v1alpha1.HealthEnvironmentStatus{
			ActiveSite: v1alpha1.SiteStandby, ReadyServices: "0/2",
			Conditions: []metav1.Condition{cond(v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonFenced, 1)},
			Isolation:  &v1alpha1.IsolationStatus{FencedAt: &t0, Request: "fence-inc-2042-x7k2q"},
		}
	})
	request := func(name, ticket string, created time.Time, holding ...string) v1alpha1.FenceRequest {
		return v1alpha1.FenceRequest{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)},
			Spec:       v1alpha1.FenceRequestSpec{Ticket: ticket},
			Status: v1alpha1.FenceRequestStatus{Matched: 500, Holding: holding, HoldingCount: int32(len(holding)),
				Environments: []string{"england-111", "wales-999"}},
		}
	}
	requests := []v1alpha1.FenceRequest{
		request("fence-later", "INC-2043", t0.Add(time.Minute), "wales-999"),
		request("fence-inc-2042-x7k2q", "INC-2042", t0.Time, "wales-999", "wales-998"),
		request("fence-done", "", t0.Time),
	}
	tests := []struct {
		name     string
		envs     []v1alpha1.HealthEnvironment
		requests []v1alpha1.FenceRequest
		want     string
	}{{
		name: "none",
		want: "No HealthEnvironments found.\n",
	}, {
		name: "sorted by name; fenced, restored and new environments",
		envs: []v1alpha1.HealthEnvironment{*ready, *fresh, *fenced},
		want: `NAME          TENANT           MODE    ACTIVE   SERVICES  READY    KNOWN-GOOD            LAST-INCIDENT
england-111   NHS 111 England  Fenced  Standby  1/2       False    <none>                INC-2041 open since 2026-11-21T07:00:00Z
scotland-111  NHS 24           None    <none>   <none>    Unknown  <none>                <none>
wales-111     NHS 111 Wales    None    Primary  2/2       True     wales-111-c750c3f4be  INC-2 restored 2026-11-21T07:00:00Z
`,
	}, {
		// The oldest request holding an environment is the one careplane
		// fences it by; every request holding one of those shown is listed,
		// oldest first.
		name:     "an environment held by a FenceRequest is shown fenced, and the request listed",
		envs:     []v1alpha1.HealthEnvironment{*held, *fenced},
		requests: requests,
		want: `NAME         TENANT           MODE    ACTIVE   SERVICES  READY  KNOWN-GOOD  LAST-INCIDENT
england-111  NHS 111 England  Fenced  Standby  1/2       False  <none>      INC-2041 open since 2026-11-21T07:00:00Z
wales-999    NHS 111 Wales    Fenced  Standby  0/2       False  <none>      INC-2042 open since 2026-11-21T07:00:00Z by FenceRequest fence-inc-2042-x7k2q

FenceRequest fence-inc-2042-x7k2q (INC-2042) still holds the fence of 2 of its 500 environments: their own spec.isolation does not say Fenced yet (kubectl careplane fence --selector writes it)

FenceRequest fence-later (INC-2043) still holds the fence of 1 of its 500 environments: their own spec.isolation does not say Fenced yet (kubectl careplane fence --selector writes it)
`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := WriteStatus(&b, tt.envs, tt.requests); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("WriteStatus:\n%s\nwant:\n%s", b.String(), tt.want)
			}
		})
	}
}

func TestWriteRevisions(t *testing.T) {
	rev := func(name string, n int64, at time.Time) appsv1.ControllerRevision {
		return appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(at)}, Revision: n}
	}
	at := t0.Time
	tests := []struct {
		name      string
		revs      []appsv1.ControllerRevision
		knownGood string
		want      string
	}{{
		name: "none",
		want: "No revisions recorded yet: an environment records one when it is first Ready.\n",
	}, {
		name:      "newest first, known-good marked",
		revs:      []appsv1.ControllerRevision{rev("w-aaa", 1, at), rev("w-ccc", 3, at.Add(2*time.Minute)), rev("w-bbb", 2, at.Add(time.Minute))},
		knownGood: "w-bbb",
		want: `KNOWN-GOOD  NAME   REVISION  CREATED
            w-ccc  3         2026-11-21T07:02:00Z
*           w-bbb  2         2026-11-21T07:01:00Z
            w-aaa  1         2026-11-21T07:00:00Z
`,
	}, {
		name:      "equal revision numbers fall back to creation time",
		revs:      []appsv1.ControllerRevision{rev("w-old", 1, at), rev("w-new", 1, at.Add(time.Hour))},
		knownGood: "w-gone",
		want: `KNOWN-GOOD  NAME   REVISION  CREATED
            w-new  1         2026-11-21T08:00:00Z
            w-old  1         2026-11-21T07:00:00Z
`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := WriteRevisions(&b, tt.revs, tt.knownGood); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("WriteRevisions:\n%q\nwant:\n%q", b.String(), tt.want)
			}
		})
	}
}

func TestFenceAndRestoreDone(t *testing.T) {
	withConds := func(gen int64, cs ...metav1.Condition) *v1alpha1.HealthEnvironment {
		e := testEnv(nil)
		e.Status.ObservedGeneration = gen
		e.Status.Conditions = cs
		return e
	}
	T, F := metav1.ConditionTrue, metav1.ConditionFalse
	tests := []struct {
		name        string
		env         *v1alpha1.HealthEnvironment
		fence, rest bool
		blocked     bool
	}{
		{name: "no conditions yet", env: withConds(0)},
		{name: "fence incomplete", env: withConds(3, cond(v1alpha1.ConditionFenced, F, v1alpha1.ReasonFenceIncomplete, 3))},
		{name: "fenced at an older generation", env: withConds(2, cond(v1alpha1.ConditionFenced, T, v1alpha1.ReasonFenceComplete, 2))},
		{name: "fenced", env: withConds(3, cond(v1alpha1.ConditionFenced, T, v1alpha1.ReasonFenceComplete, 3)), fence: true},
		{name: "restoring", env: withConds(3, cond(v1alpha1.ConditionReady, F, v1alpha1.ReasonRestoring, 3),
			cond(v1alpha1.ConditionFenced, T, v1alpha1.ReasonFenceComplete, 3), cond(v1alpha1.ConditionRestoring, T, v1alpha1.ReasonRebuilding, 3)), fence: true},
		{name: "restore blocked", env: withConds(3, cond(v1alpha1.ConditionReady, F, v1alpha1.ReasonFenced, 3),
			cond(v1alpha1.ConditionFenced, T, v1alpha1.ReasonFenceComplete, 3), cond(v1alpha1.ConditionRestoring, F, v1alpha1.ReasonRestoreBlocked, 3)), fence: true, blocked: true},
		{name: "Ready from before the restore", env: withConds(2, cond(v1alpha1.ConditionReady, T, v1alpha1.ReasonAvailable, 2),
			cond(v1alpha1.ConditionFenced, F, v1alpha1.ReasonNotFenced, 2))},
		{name: "restored", env: withConds(3, cond(v1alpha1.ConditionReady, T, v1alpha1.ReasonAvailable, 3),
			cond(v1alpha1.ConditionFenced, F, v1alpha1.ReasonNotFenced, 3)), rest: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, msg := FenceDone(tt.env, 3); got != tt.fence || msg == "" {
				t.Errorf("FenceDone = %v (%q), want %v", got, msg, tt.fence)
			}
			if got, msg := RestoreDone(tt.env, 3); got != tt.rest || msg == "" {
				t.Errorf("RestoreDone = %v (%q), want %v", got, msg, tt.rest)
			}
			if msg, got := RestoreBlocked(tt.env, 3); got != tt.blocked || (got && msg == "") {
				t.Errorf("RestoreBlocked = %v (%q), want %v", got, msg, tt.blocked)
			}
		})
	}
}

func TestPurgeRefusal(t *testing.T) {
	tests := []struct {
		name string
		env  *v1alpha1.HealthEnvironment
		want string // substring; "" means allowed
	}{
		{name: "fenced", env: testEnv(nil), want: "is fenced: its evidence pods are under investigation"},
		{name: "restore under way", env: testEnv(func(e *v1alpha1.HealthEnvironment) {
			e.Spec.Isolation.Mode = v1alpha1.IsolationNone
			e.Status.Conditions = []metav1.Condition{cond(v1alpha1.ConditionRestoring, metav1.ConditionTrue, v1alpha1.ReasonRebuilding, 1)}
		}), want: "wait until the restore completes"},
		{name: "restored", env: testEnv(func(e *v1alpha1.HealthEnvironment) {
			e.Spec.Isolation.Mode = v1alpha1.IsolationNone
			e.Status.Conditions = []metav1.Condition{cond(v1alpha1.ConditionFenced, metav1.ConditionFalse, v1alpha1.ReasonNotFenced, 1)}
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := purgeRefusal(tt.env)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("purgeRefusal = %q, want %q", got, tt.want)
			}
		})
	}
}
