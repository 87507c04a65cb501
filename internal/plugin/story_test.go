package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/careplane/careplane/api/v1alpha1"
)

// storyEnv is a fenced environment, serving from its standby, after one
// earlier incident.
func storyEnv(mutate func(*v1alpha1.HealthEnvironment)) *v1alpha1.HealthEnvironment {
	at := func(m int) *metav1.Time { t := metav1.NewTime(t0.Add(time.Duration(m) * time.Minute)); return &t }
	c := func(typ string, s metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, LastTransitionTime: *at(0)}
	}
	T, F := metav1.ConditionTrue, metav1.ConditionFalse
	env := &v1alpha1.HealthEnvironment{
		ObjectMeta: metav1.ObjectMeta{Name: "wales-111", UID: "uid-1", Generation: 4},
		Spec: v1alpha1.HealthEnvironmentSpec{
			Tenant: v1alpha1.Tenant{DisplayName: "NHS 111 Wales"},
			Isolation: v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "ransomware", Ticket: "INC-2041",
				Workloads: v1alpha1.WorkloadsPreserve},
		},
		Status: v1alpha1.HealthEnvironmentStatus{
			ObservedGeneration: 4,
			// Out of order on purpose: status shows them in ConditionTypes order.
			Conditions: []metav1.Condition{
				c(v1alpha1.ConditionIsolationVerified, T, v1alpha1.ReasonNoAllowedFlows, "no allowed flow into or out of 3 pods"),
				c(v1alpha1.ConditionReady, F, v1alpha1.ReasonServingFromStandby, "critical services\nserved from the standby"),
				c(v1alpha1.ConditionFenced, T, v1alpha1.ReasonFenceComplete, "all fence steps done"),
				c(v1alpha1.ConditionServingFromStandby, T, v1alpha1.ReasonServingFromStandby, "call-handling on wales-111-standby"),
			},
			ActiveSite:    v1alpha1.SiteStandby,
			Namespaces:    &v1alpha1.Namespaces{Front: "wales-111", Primary: "wales-111-primary", Standby: "wales-111-standby"},
			Services:      []v1alpha1.ServiceStatus{{Name: "call-handling", Site: v1alpha1.SiteStandby, Replicas: 2, ReadyReplicas: 2, Image: "r/ch@sha256:ab"}},
			ReadyServices: "1/1",
			Isolation: &v1alpha1.IsolationStatus{FencedAt: at(0), Ticket: "INC-2041", CredentialsRevoked: 5, EvidencePods: 3,
				RemovedPolicies: []string{"allow-dns", "tenant-extra"}, VerifiedAt: at(1)},
			Incidents: []v1alpha1.Incident{{Ticket: "INC-1999", Reason: "test", FencedAt: at(-600), RestoredAt: at(-500), RestoredFrom: "wales-111-aaa"}},
		},
	}
	if mutate != nil {
		mutate(env)
	}
	return env
}

func event(name, typ, reason, action, note string, m int, count int32) eventsv1.Event {
	e := eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		EventTime:  metav1.NewMicroTime(t0.Add(time.Duration(m) * time.Minute)),
		Regarding:  corev1.ObjectReference{Kind: "HealthEnvironment", Name: "wales-111", UID: "uid-1"},
		Type:       typ, Reason: reason, Action: action, Note: note,
	}
	if count > 1 {
		e.Series = &eventsv1.EventSeries{Count: count, LastObservedTime: metav1.NewMicroTime(t0.Add(time.Duration(m+1) * time.Minute))}
	}
	return e
}

func TestWriteStory(t *testing.T) {
	events := []eventsv1.Event{
		event("e1", "Normal", "FenceRequested", "Fence", "fence of INC-2041 requested", 0, 1),
		event("e2", "Warning", v1alpha1.ReasonFenceComplete, "Fence", "fenced in 0.4s", 0, 1),
		event("e3", "Normal", "IsolationVerified", "Verify", "no allowed flow", 1, 3),
	}
	var b strings.Builder
	if err := WriteStory(&b, Story{Env: storyEnv(nil), Events: events, Now: t0.Add(5 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	want := `
Conditions:
  TYPE                STATUS  REASON              AGE  MESSAGE
  Ready               False   ServingFromStandby  5m   critical services served from the standby
  Fenced              True    FenceComplete       5m   all fence steps done
  ServingFromStandby  True    ServingFromStandby  5m   call-handling on wales-111-standby
  IsolationVerified   True    NoAllowedFlows      5m   no allowed flow into or out of 3 pods

Fence:
  Held by:              spec.isolation (ticket INC-2041, reason "ransomware", workloads Preserve)
  Fenced at:            2026-11-21T07:00:00Z
  Credentials revoked:  5
  Evidence pods:        3
  Removed policies:     allow-dns, tenant-extra
  Last verification:    2026-11-21T07:01:00Z (4m ago): IsolationVerified=True (NoAllowedFlows)

Sites:
  Active:      Standby: call-handling on wales-111-standby
  Namespaces:  front wales-111, primary wales-111-primary, standby wales-111-standby

Services:
  NAME           SITE     READY  IMAGE
  call-handling  Standby  2/2    r/ch@sha256:ab

Incidents:
  TICKET    FENCED                RESTORED              FROM           REASON
  INC-1999  2026-11-20T21:00:00Z  2026-11-20T22:40:00Z  wales-111-aaa  test

Events (newest 3 of 3):
  LAST SEEN  TYPE     REASON             ACTION  COUNT  NOTE
  3m         Normal   IsolationVerified  Verify  3      no allowed flow
  5m         Normal   FenceRequested     Fence   1      fence of INC-2041 requested
  5m         Warning  FenceComplete      Fence   1      fenced in 0.4s
`
	if b.String() != want {
		t.Errorf("WriteStory:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteStoryCases(t *testing.T) {
	held := &v1alpha1.FenceRequest{ObjectMeta: metav1.ObjectMeta{Name: "fence-inc-2042-x7k2q"},
		Spec: v1alpha1.FenceRequestSpec{Ticket: "INC-2042", Reason: "supplier breach"}}
	tests := []struct {
		name     string
		story    Story
		want     []string
		dontWant []string
	}{{
		name: "held by a FenceRequest, not verified yet",
		story: Story{HeldBy: held, Env: storyEnv(func(e *v1alpha1.HealthEnvironment) {
			e.Spec.Isolation = v1alpha1.Isolation{}
			e.Status.Isolation.VerifiedAt = nil
			e.Status.Isolation.Request = held.Name
			e.Status.Conditions[0].Status, e.Status.Conditions[0].Reason = metav1.ConditionFalse, v1alpha1.ReasonNotEvaluated
		})},
		want: []string{`Held by:              FenceRequest fence-inc-2042-x7k2q (ticket INC-2042, reason "supplier breach")`,
			"Last verification:    never",
			"NOT ISOLATED: HealthEnvironment wales-111 should be fenced but IsolationVerified=False (NotEvaluated)"},
	}, {
		name: "fenced by a request, now by its own spec",
		story: Story{Env: storyEnv(func(e *v1alpha1.HealthEnvironment) {
			e.Status.Isolation.Request = "fence-inc-2042-x7k2q"
		})},
		want: []string{"Held by:              spec.isolation", "Fenced by:            FenceRequest fence-inc-2042-x7k2q"},
	}, {
		name: "restoring: the fence stays",
		story: Story{Env: storyEnv(func(e *v1alpha1.HealthEnvironment) {
			e.Spec.Isolation = v1alpha1.Isolation{Mode: v1alpha1.IsolationNone}
		})},
		want:     []string{"Held by:              the restore: the fence stays until the rebuilt primary is Ready"},
		dontWant: []string{"NOT ISOLATED"},
	}, {
		name: "never fenced, no events readable",
		story: Story{EventsErr: `events.events.k8s.io is forbidden`, Env: storyEnv(func(e *v1alpha1.HealthEnvironment) {
			e.Spec.Isolation = v1alpha1.Isolation{}
			e.Status = v1alpha1.HealthEnvironmentStatus{}
		})},
		want: []string{"none reported yet", "Held by:            nothing: not fenced", "Last verification:  never", "Active:  <none>",
			"Incidents:\n  none", "not readable: events.events.k8s.io is forbidden"},
		dontWant: []string{"Fenced at:", "NOT ISOLATED"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			tt.story.Now = t0.Time
			if err := WriteStory(&b, tt.story); err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.want {
				if !strings.Contains(b.String(), s) {
					t.Errorf("story lacks %q:\n%s", s, b.String())
				}
			}
			for _, s := range tt.dontWant {
				if strings.Contains(b.String(), s) {
					t.Errorf("story has %q:\n%s", s, b.String())
				}
			}
		})
	}
}

func TestNewestEvents(t *testing.T) {
	var evs []eventsv1.Event
	for i := range 20 {
		evs = append(evs, event("e"+string(rune('a'+i)), "Normal", "R", "A", "n", i, 1))
	}
	got := newestEvents(evs, maxEvents)
	if len(got) != maxEvents || got[0].Name != "et" || got[maxEvents-1].Name != "ef" {
		t.Errorf("newestEvents: %d events, first %s, last %s; want %d from et to ef", len(got), got[0].Name, got[len(got)-1].Name, maxEvents)
	}
}

func TestIsolationProblem(t *testing.T) {
	held := &v1alpha1.FenceRequest{ObjectMeta: metav1.ObjectMeta{Name: "fence-x"}}
	setCond := func(typ string, s metav1.ConditionStatus, reason string) func(*v1alpha1.HealthEnvironment) {
		return func(e *v1alpha1.HealthEnvironment) {
			for i := range e.Status.Conditions {
				if e.Status.Conditions[i].Type == typ {
					e.Status.Conditions[i].Status, e.Status.Conditions[i].Reason = s, reason
				}
			}
		}
	}
	unfenced := func(e *v1alpha1.HealthEnvironment) { e.Spec.Isolation = v1alpha1.Isolation{} }
	tests := []struct {
		name   string
		env    *v1alpha1.HealthEnvironment
		heldBy *v1alpha1.FenceRequest
		want   string // "" for isolated or not expected fenced
	}{
		{name: "fenced and verified", env: storyEnv(nil)},
		{name: "fence incomplete", env: storyEnv(setCond(v1alpha1.ConditionFenced, metav1.ConditionFalse, v1alpha1.ReasonFenceIncomplete)),
			want: "HealthEnvironment wales-111 should be fenced but Fenced=False (FenceIncomplete)"},
		{name: "a flow allowed", env: storyEnv(setCond(v1alpha1.ConditionIsolationVerified, metav1.ConditionFalse, v1alpha1.ReasonFlowAllowed)),
			want: "should be fenced but IsolationVerified=False (FlowAllowed)"},
		{name: "not reported yet", env: storyEnv(func(e *v1alpha1.HealthEnvironment) { e.Status.Conditions = nil }),
			want: "should be fenced but Fenced not reported yet, IsolationVerified not reported yet"},
		{name: "held by a request, not verified", heldBy: held,
			env: storyEnv(func(e *v1alpha1.HealthEnvironment) {
				unfenced(e)
				setCond(v1alpha1.ConditionIsolationVerified, metav1.ConditionUnknown, "X")(e)
			}),
			want: "IsolationVerified=Unknown (X)"},
		{name: "not fenced: nothing expected", env: storyEnv(func(e *v1alpha1.HealthEnvironment) { unfenced(e); e.Status.Conditions = nil })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := IsolationProblem(tt.env, tt.heldBy)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("IsolationProblem = %q, want %q", got, tt.want)
			}
			var requests []v1alpha1.FenceRequest
			if tt.heldBy != nil {
				fr := *tt.heldBy
				fr.Status.Holding = []string{tt.env.Name}
				requests = append(requests, fr)
			}
			code := ExitCode(notIsolated([]v1alpha1.HealthEnvironment{*tt.env}, requests))
			if want := map[bool]int{true: ExitOK, false: ExitNotIsolated}[tt.want == ""]; code != want {
				t.Errorf("status exits %d, want %d", code, want)
			}
		})
	}
}

func TestColour(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	tests := []struct {
		name     string
		terminal bool
		getenv   func(string) string
		want     bool
	}{
		{"a terminal", true, env("TERM", "xterm-256color"), true},
		{"piped", false, env("TERM", "xterm-256color"), false},
		{"NO_COLOR set", true, env("TERM", "xterm", "NO_COLOR", "1"), false},
		{"NO_COLOR empty counts as unset", true, env("TERM", "xterm", "NO_COLOR", ""), true},
		{"a dumb terminal", true, env("TERM", "dumb"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := colourWanted(tt.terminal, tt.getenv); got != tt.want {
				t.Errorf("colourWanted = %v, want %v", got, tt.want)
			}
		})
	}
	// A buffer and a pipe are no terminal.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, out := range []io.Writer{&bytes.Buffer{}, w} {
		if paletteFor(out, env("TERM", "xterm")).on {
			t.Errorf("colour on for %T", out)
		}
	}
}

// TestColouredTableAligns: painted words line up as plain ones do, and
// the words are painted by what they mean.
func TestColouredTableAligns(t *testing.T) {
	fenced := storyEnv(nil)
	failing := storyEnv(func(e *v1alpha1.HealthEnvironment) {
		e.Name = "wales-222"
		e.Status.Conditions[0].Status = metav1.ConditionFalse // IsolationVerified
	})
	var plainOut, colourOut strings.Builder
	if err := writeStatus(&plainOut, []v1alpha1.HealthEnvironment{*fenced, *failing}, nil, palette{}); err != nil {
		t.Fatal(err)
	}
	if err := writeStatus(&colourOut, []v1alpha1.HealthEnvironment{*fenced, *failing}, nil, palette{on: true}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plainOut.String(), "\x1b[") {
		t.Errorf("plain output has escape codes:\n%q", plainOut.String())
	}
	for _, s := range []string{"\x1b[32mFenced\x1b[0m", "\x1b[31mFenced\x1b[0m", "\x1b[31mFalse\x1b[0m"} {
		if !strings.Contains(colourOut.String(), s) {
			t.Errorf("coloured output lacks %q:\n%q", s, colourOut.String())
		}
	}
	stripped := strings.NewReplacer("\x1b[31m", "", "\x1b[32m", "", "\x1b[33m", "", "\x1b[39m", "", "\x1b[0m", "").Replace(colourOut.String())
	// Painted cells are longer by the same codes in every row: once the
	// codes are gone, the columns still line up.
	if err := checkAligned(stripped); err != nil {
		t.Errorf("%v:\n%s", err, stripped)
	}
	var story strings.Builder
	if err := writeStory(&story, Story{Env: failing, Now: t0.Time}, palette{on: true}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"\x1b[31mFalse\x1b[0m", "\x1b[32mTrue\x1b[0m", "\x1b[31mNOT ISOLATED"} {
		if !strings.Contains(story.String(), s) {
			t.Errorf("coloured story lacks %q:\n%q", s, story.String())
		}
	}
	if err := checkAligned(strings.NewReplacer("\x1b[31m", "", "\x1b[32m", "", "\x1b[33m", "", "\x1b[39m", "", "\x1b[0m", "").Replace(story.String())); err != nil {
		t.Errorf("story: %v", err)
	}
}

// checkAligned checks that in each block of rows starting with a header
// in capitals, every header word starts at the same column in the rows.
func checkAligned(s string) error {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		fields := strings.Fields(l)
		if len(fields) < 2 || strings.ToUpper(l) != l || strings.Contains(l, ":") {
			continue
		}
		// l is a header: the start of each word.
		var starts []int
		for j := 0; j < len(l); j++ {
			if l[j] != ' ' && (j == 0 || l[j-1] == ' ') {
				starts = append(starts, j)
			}
		}
		for _, row := range lines[i+1:] {
			if strings.TrimSpace(row) == "" || strings.HasSuffix(row, ":") {
				break
			}
			for _, st := range starts[1:] {
				if st >= len(row) || row[st-1] != ' ' || row[st] == ' ' {
					return errors.New("row " + strings.TrimSpace(row) + " not aligned with header " + strings.TrimSpace(l))
				}
			}
		}
	}
	return nil
}

// TestJSONRoundTrips: -o json and -o yaml print the objects so that the
// API types decode them back to what was read.
func TestJSONRoundTrips(t *testing.T) {
	env := storyEnv(func(e *v1alpha1.HealthEnvironment) {
		e.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl-careplane", Operation: metav1.ManagedFieldsOperationApply}}
	})
	want := env.DeepCopy()
	want.ManagedFields = nil
	want.APIVersion, want.Kind = v1alpha1.GroupVersion.String(), "HealthEnvironment"
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			f := &outputFlags{print: newPrintFlags()}
			f.print.OutputFormat = &format
			p, err := f.printer()
			if err != nil {
				t.Fatal(err)
			}
			var single, list bytes.Buffer
			if err := printObj(p, env.DeepCopy(), &single); err != nil {
				t.Fatal(err)
			}
			if err := printObj(p, &v1alpha1.HealthEnvironmentList{Items: []v1alpha1.HealthEnvironment{*env.DeepCopy()}}, &list); err != nil {
				t.Fatal(err)
			}
			var gotEnv v1alpha1.HealthEnvironment
			var gotList v1alpha1.HealthEnvironmentList
			for _, d := range []struct {
				b   []byte
				obj any
			}{{single.Bytes(), &gotEnv}, {list.Bytes(), &gotList}} {
				j, err := yaml.ToJSON(d.b)
				if err != nil {
					t.Fatal(err)
				}
				dec := json.NewDecoder(bytes.NewReader(j))
				dec.DisallowUnknownFields()
				if err := dec.Decode(d.obj); err != nil {
					t.Fatalf("decoding %s: %v\n%s", format, err, d.b)
				}
			}
			if !equality.Semantic.DeepEqual(&gotEnv, want) {
				t.Errorf("-o %s decodes to\n%+v\nwant\n%+v", format, gotEnv, want)
			}
			if gotList.Kind != "HealthEnvironmentList" || len(gotList.Items) != 1 || !equality.Semantic.DeepEqual(&gotList.Items[0], want) {
				t.Errorf("-o %s of a list decodes to %+v", format, gotList)
			}
		})
	}
}

func TestConfirm(t *testing.T) {
	tests := []struct {
		name     string
		terminal bool
		input    string
		want     int
		wantErr  string
	}{
		{"no terminal, no --yes", false, "wales-111\n", ExitUsage, "pass --yes to confirm"},
		{"the name typed", true, "wales-111\n", ExitOK, ""},
		{"the name without a newline", true, "wales-111", ExitOK, ""},
		{"y is not the name", true, "y\n", ExitError, "not confirmed: nothing deleted"},
		{"nothing typed", true, "", ExitError, "not confirmed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prompt strings.Builder
			err := confirm(strings.NewReader(tt.input), tt.terminal, &prompt, "wales-111", 3)
			if ExitCode(err) != tt.want || (tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("confirm = %v (exit %d), want exit %d and %q", err, ExitCode(err), tt.want, tt.wantErr)
			}
			if tt.terminal && !strings.Contains(prompt.String(), "Type the environment's name (wales-111) to confirm") {
				t.Errorf("prompt %q", prompt.String())
			}
		})
	}
}

func TestMatchingNames(t *testing.T) {
	envs := []v1alpha1.HealthEnvironment{{ObjectMeta: metav1.ObjectMeta{Name: "wales-111"}}, {ObjectMeta: metav1.ObjectMeta{Name: "england-111"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "wales-care"}}}
	if got := matchingNames(envs, "wa"); !reflect.DeepEqual(got, []string{"wales-111", "wales-care"}) {
		t.Errorf("matchingNames(wa) = %v", got)
	}
	if got := matchingNames(envs, ""); len(got) != 3 || got[0] != "england-111" {
		t.Errorf("matchingNames() = %v", got)
	}
}
