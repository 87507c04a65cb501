package plugin

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/fence"
)

func testEnv(mutate func(*v1alpha1.HealthEnvironment)) *v1alpha1.HealthEnvironment {
	env := &v1alpha1.HealthEnvironment{
		ObjectMeta: metav1.ObjectMeta{Name: "wales-111", UID: "uid-wales"},
		Spec: v1alpha1.HealthEnvironmentSpec{
			Tenant: v1alpha1.Tenant{DisplayName: "NHS 111 Wales"},
			Services: []v1alpha1.Service{
				{Name: "referral", Port: 8443, Replicas: ptr.To[int32](1), GeneratedSecrets: []string{"cad-key"}},
				{Name: "call-handling", Port: 8080, Replicas: ptr.To[int32](2), Critical: true, GeneratedSecrets: []string{"db-password"}},
			},
			Isolation: v1alpha1.Isolation{
				Mode: v1alpha1.IsolationFenced, Reason: "ransomware", Ticket: "INC-2041",
				ForensicsFrom: &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"kubernetes.io/metadata.name": "forensics"}},
			},
		},
	}
	if mutate != nil {
		mutate(env)
	}
	return env
}

func objMeta(ns, name string, lbls ...string) metav1.ObjectMeta {
	m := metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{}}
	for i := 0; i+1 < len(lbls); i += 2 {
		m.Labels[lbls[i]] = lbls[i+1]
	}
	return m
}

// clusterState is what a Ready, unfenced wales-111 holds, plus a policy
// careplane did not create and objects of another environment.
func clusterState(env *v1alpha1.HealthEnvironment) FenceState {
	const ns, other = "wales-111-primary", "scotland-111-primary"
	own := []string{v1alpha1.LabelEnvironment, "wales-111"}
	pod := func(name, svc string, extra ...string) corev1.Pod {
		return corev1.Pod{ObjectMeta: objMeta(ns, name, append(append([]string{}, own...), append([]string{v1alpha1.LabelService, svc}, extra...)...)...)}
	}
	return FenceState{
		Env: env,
		Policies: []networkingv1.NetworkPolicy{
			{ObjectMeta: objMeta(ns, "svc-referral", own...)},
			{ObjectMeta: objMeta(ns, "default-deny", own...)},
			{ObjectMeta: objMeta(ns, "legacy-allow-all")},
			{ObjectMeta: objMeta(ns, "allow-dns", own...)},
			{ObjectMeta: objMeta(other, "default-deny")},
		},
		ServiceAccounts: []corev1.ServiceAccount{
			{ObjectMeta: objMeta(ns, "call-handling", own...)}, {ObjectMeta: objMeta(ns, "referral", own...)}, {ObjectMeta: objMeta(ns, "default")},
			{ObjectMeta: objMeta(ns, "tenant-ci")}, {ObjectMeta: objMeta(other, "default")},
		},
		Secrets: []corev1.Secret{
			{ObjectMeta: objMeta(ns, "call-handling.db-password", own...)}, {ObjectMeta: objMeta(ns, "referral.cad-key", own...)},
			{ObjectMeta: objMeta(other, "call-handling.db-password")},
		},
		Pods: []corev1.Pod{
			pod("referral-7d9-x1", "referral"),
			pod("call-handling-5c-a", "call-handling"),
			pod("call-handling-5c-b", "call-handling"),
			{ObjectMeta: objMeta(ns, "tenant-miner")},
			{ObjectMeta: objMeta(other, "call-handling-zz", v1alpha1.LabelEnvironment, "scotland-111", v1alpha1.LabelService, "call-handling")},
		},
		Deployments: []appsv1.Deployment{{ObjectMeta: objMeta(ns, "call-handling")}, {ObjectMeta: objMeta(ns, "referral")}},
		Front:       &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "wales-111", OwnerReferences: frontSliceMeta(env, "").OwnerReferences}},
		FrontSlices: []discoveryv1.EndpointSlice{
			{ObjectMeta: frontSliceMeta(env, "call-handling-careplane")}, {ObjectMeta: frontSliceMeta(env, "referral-careplane")},
		},
	}
}

// frontSliceMeta is the metadata of careplane's own front slice name of env.
func frontSliceMeta(env *v1alpha1.HealthEnvironment, name string) metav1.ObjectMeta {
	m := objMeta("wales-111", name, v1alpha1.LabelEnvironment, env.Name)
	m.OwnerReferences = []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "HealthEnvironment",
		Name: env.Name, UID: env.UID, Controller: ptr.To(true)}}
	return m
}

// planLines renders actions as "step verb kind namespace/name" for
// comparison.
func planLines(p Plan) []string {
	var out []string
	for _, a := range p.Actions {
		name := a.Name
		if a.Namespace != "" {
			name = a.Namespace + "/" + a.Name
		}
		out = append(out, strings.Join([]string{string(rune('0' + a.Step)), string(a.Verb), a.Kind, name}, " "))
	}
	return out
}

// readyPlan is the plan of clusterState's Ready environment, preserving
// evidence.
var readyPlan = []string{
	"1 record Namespace wales-111-primary",
	"1 write-whole NetworkPolicy wales-111-primary/careplane-fence",
	"1 write-whole ResourceQuota wales-111-primary/careplane-fence",
	"2 delete NetworkPolicy wales-111-primary/allow-dns",
	"2 delete NetworkPolicy wales-111-primary/default-deny",
	"2 delete NetworkPolicy wales-111-primary/legacy-allow-all",
	"2 delete NetworkPolicy wales-111-primary/svc-referral",
	"3 recreate ServiceAccount wales-111-primary/call-handling",
	"3 recreate ServiceAccount wales-111-primary/default",
	"3 recreate ServiceAccount wales-111-primary/referral",
	"3 delete ServiceAccount wales-111-primary/tenant-ci",
	"3 delete Secret wales-111-primary/call-handling.db-password",
	"3 delete Secret wales-111-primary/referral.cad-key",
	"4 preserve Pod wales-111-primary/call-handling-5c-a",
	"4 preserve Pod wales-111-primary/call-handling-5c-b",
	"4 preserve Pod wales-111-primary/referral-7d9-x1",
	"4 preserve Pod wales-111-primary/tenant-miner",
	"4 scale-to-0 Deployment wales-111-primary/call-handling",
	"4 scale-to-0 Deployment wales-111-primary/referral",
	"5 empty EndpointSlice wales-111/call-handling-careplane",
	"5 empty EndpointSlice wales-111/referral-careplane",
}

func TestPlanFence(t *testing.T) {
	tests := []struct {
		name      string
		state     func() FenceState
		want      []string
		wantNotes map[string]string // name -> substring of its note
	}{{
		name:  "a Ready environment, preserving evidence",
		state: func() FenceState { return clusterState(testEnv(nil)) },
		want:  readyPlan,
		wantNotes: map[string]string{
			"careplane-fence":    "except ingress from the forensicsFrom namespaces",
			"legacy-allow-all":   "not careplane's",
			"call-handling-5c-a": "careplane.io/evidence=INC-2041",
			"tenant-miner":       "not careplane's",
			"tenant-ci":          "not careplane's",
		},
	}, {
		name: "--stop, no ticket, no forensics, an admin tier, a standby and a policy already gone",
		state: func() FenceState {
			s := clusterState(testEnv(func(e *v1alpha1.HealthEnvironment) {
				e.Spec.Isolation.Workloads = v1alpha1.WorkloadsStop
				e.Spec.Isolation.Ticket = ""
				e.Spec.Isolation.ForensicsFrom = nil
				e.Spec.Failover.Standby = v1alpha1.StandbyWarm
			}))
			s.AdminPolicyKind = "ClusterNetworkPolicy"
			now := metav1.Now()
			s.Policies[0].DeletionTimestamp = &now
			s.Policies = append(s.Policies, networkingv1.NetworkPolicy{ObjectMeta: objMeta("wales-111-primary", "careplane-fence")})
			s.Secrets = s.Secrets[1:] // call-handling.db-password already deleted
			return s
		},
		want: []string{
			"1 record Namespace wales-111-primary",
			"1 write-whole NetworkPolicy wales-111-primary/careplane-fence",
			"1 write-whole ResourceQuota wales-111-primary/careplane-fence",
			"1 apply ClusterNetworkPolicy careplane-fence-wales-111",
			"2 delete NetworkPolicy wales-111-primary/allow-dns",
			"2 delete NetworkPolicy wales-111-primary/default-deny",
			"2 delete NetworkPolicy wales-111-primary/legacy-allow-all",
			"3 recreate ServiceAccount wales-111-primary/call-handling",
			"3 recreate ServiceAccount wales-111-primary/default",
			"3 recreate ServiceAccount wales-111-primary/referral",
			"3 delete ServiceAccount wales-111-primary/tenant-ci",
			"3 delete Secret wales-111-primary/referral.cad-key",
			"4 keep Pod wales-111-primary/call-handling-5c-a",
			"4 keep Pod wales-111-primary/call-handling-5c-b",
			"4 keep Pod wales-111-primary/referral-7d9-x1",
			"4 delete Pod wales-111-primary/tenant-miner",
			"4 scale-to-0 Deployment wales-111-primary/call-handling",
			"4 scale-to-0 Deployment wales-111-primary/referral",
			"5 empty EndpointSlice wales-111/call-handling-careplane",
			"5 empty EndpointSlice wales-111/referral-careplane",
		},
		wantNotes: map[string]string{
			"careplane-fence":         "deny all ingress and egress of every pod",
			"call-handling-careplane": "switches to the standby",
			"call-handling-5c-a":      "workloads: Stop",
			"tenant-miner":            "not careplane's; not preserved (workloads: Stop)",
		},
	}, {
		name: "a Warm standby the fence moves traffic to: its credentials are rotated too",
		state: func() FenceState {
			env := testEnv(func(e *v1alpha1.HealthEnvironment) { e.Spec.Failover.Standby = v1alpha1.StandbyWarm })
			s := FenceState{Env: env, StandbyFound: true, StandbyServices: []v1alpha1.Service{env.Spec.Services[1]}}
			const sb = "wales-111-standby"
			own := []string{v1alpha1.LabelEnvironment, "wales-111"}
			s.ServiceAccounts = []corev1.ServiceAccount{
				{ObjectMeta: objMeta(sb, "call-handling", own...)}, {ObjectMeta: objMeta(sb, "default")}, {ObjectMeta: objMeta(sb, "stolen")},
			}
			s.Secrets = []corev1.Secret{{ObjectMeta: objMeta(sb, "call-handling.db-password", own...)}}
			s.Deployments = []appsv1.Deployment{{ObjectMeta: objMeta(sb, "call-handling", own...)}}
			return s
		},
		want: []string{
			"1 record Namespace wales-111-primary",
			"1 write-whole NetworkPolicy wales-111-primary/careplane-fence",
			"1 write-whole ResourceQuota wales-111-primary/careplane-fence",
			"3 recreate ServiceAccount wales-111-primary/call-handling",
			"3 recreate ServiceAccount wales-111-primary/default",
			"3 recreate ServiceAccount wales-111-primary/referral",
			"3 freeze Namespace wales-111-standby",
			"3 recreate ServiceAccount wales-111-standby/call-handling",
			"3 recreate ServiceAccount wales-111-standby/default",
			"3 delete ServiceAccount wales-111-standby/stolen",
			"3 rotate Secret wales-111-standby/call-handling.db-password",
			"3 roll Deployment wales-111-standby/call-handling",
			"4 scale-to-0 Deployment wales-111-primary/call-handling",
			"4 scale-to-0 Deployment wales-111-primary/referral",
			"5 empty EndpointSlice wales-111/call-handling-careplane",
			"5 empty EndpointSlice wales-111/referral-careplane",
		},
		wantNotes: map[string]string{
			"stolen":                    "standby: not careplane's",
			"call-handling.db-password": "standby: generated credential replaced by a new random value",
		},
	}, {
		name: "an environment not provisioned yet, with evidence from an earlier fence",
		state: func() FenceState {
			s := FenceState{Env: testEnv(nil)}
			s.Pods = []corev1.Pod{{ObjectMeta: objMeta("wales-111-primary", "call-handling-old",
				v1alpha1.LabelEnvironment, "wales-111", v1alpha1.LabelEvidence, "INC-1")}}
			return s
		},
		want: []string{
			"1 record Namespace wales-111-primary",
			"1 write-whole NetworkPolicy wales-111-primary/careplane-fence",
			"1 write-whole ResourceQuota wales-111-primary/careplane-fence",
			"3 recreate ServiceAccount wales-111-primary/call-handling",
			"3 recreate ServiceAccount wales-111-primary/default",
			"3 recreate ServiceAccount wales-111-primary/referral",
			"4 keep Pod wales-111-primary/call-handling-old",
			"4 scale-to-0 Deployment wales-111-primary/call-handling",
			"4 scale-to-0 Deployment wales-111-primary/referral",
			"5 empty EndpointSlice wales-111/call-handling-careplane",
			"5 empty EndpointSlice wales-111/referral-careplane",
		},
		wantNotes: map[string]string{
			"call-handling-old": "already evidence (careplane.io/evidence=INC-1)",
			"referral":          "does not exist yet",
		},
	}, {
		name: "routes of the front careplane did not write",
		state: func() FenceState {
			s := clusterState(testEnv(nil))
			forged := s.FrontSlices[1].DeepCopy()
			forged.Name = "referral-careplane-exfil"
			forged.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"203.0.113.7"}}}
			forged.Ports = []discoveryv1.EndpointPort{{Port: ptr.To[int32](8443)}}
			s.FrontSlices = append(s.FrontSlices, *forged)
			s.FrontEndpoints = []corev1.Endpoints{{ObjectMeta: objMeta("wales-111", "call-handling"), //nolint:staticcheck // the mirroring controller reads them
				Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "203.0.113.8"}}}}}, //nolint:staticcheck
				{ObjectMeta: objMeta("wales-111-primary", "call-handling")}} // the primary's, not a front route
			return s
		},
		want: append(slices.Clone(readyPlan[:len(readyPlan)-2]),
			"5 empty EndpointSlice wales-111/call-handling-careplane",
			"5 empty EndpointSlice wales-111/referral-careplane",
			"5 delete Endpoints wales-111/call-handling",
			"5 delete EndpointSlice wales-111/referral-careplane-exfil",
		),
		wantNotes: map[string]string{
			"referral-careplane-exfil": "not careplane's; routes callers to 203.0.113.7:8443; deleted",
			"call-handling":            "routes callers to 203.0.113.8; deleted",
		},
	}, {
		name: "a front namespace not the environment's: nothing in it is removed",
		state: func() FenceState {
			s := clusterState(testEnv(nil))
			s.FrontEndpoints = []corev1.Endpoints{{ObjectMeta: objMeta("wales-111", "call-handling")}} //nolint:staticcheck // the mirroring controller reads them
			s.Front.OwnerReferences = nil
			return s
		},
		want: readyPlan,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := PlanFence(tt.state())
			if p.Environment != "wales-111" {
				t.Errorf("Environment = %q", p.Environment)
			}
			got := planLines(p)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			for name, sub := range tt.wantNotes {
				found := false
				for _, a := range p.Actions {
					if a.Name == name && strings.Contains(a.Note, sub) {
						found = true
					}
				}
				if !found {
					t.Errorf("no action on %s with a note containing %q", name, sub)
				}
			}
		})
	}
}

func TestWritePlan(t *testing.T) {
	p := Plan{Environment: "wales-111", Actions: []fence.Action{
		{Step: 1, Verb: fence.VerbWriteWhole, Kind: "NetworkPolicy", Namespace: "wales-111-primary", Name: "careplane-fence", Note: "deny all"},
		{Step: 1, Verb: fence.VerbApplyAdmin, Kind: "ClusterNetworkPolicy", Name: "careplane-fence-wales-111", Note: "admin tier"},
	}}
	var b strings.Builder
	if err := WritePlan(&b, p); err != nil {
		t.Fatal(err)
	}
	want := `Fence plan for HealthEnvironment wales-111 (2 writes; nothing was changed):
STEP  ACTION       KIND                  NAMESPACE          NAME                       NOTE
1     write-whole  NetworkPolicy         wales-111-primary  careplane-fence            deny all
1     apply        ClusterNetworkPolicy  -                  careplane-fence-wales-111  admin tier
`
	if b.String() != want {
		t.Errorf("WritePlan:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestPlanFenceRemovesEveryService: the dry run lists the Services the fence
// deletes (the tenant's, and careplane's whose selector someone changed),
// and the one held by a finalizer that it lets go, as the operator's plan
// does; careplane's, as careplane wrote it, stays.
func TestPlanFenceRemovesEveryService(t *testing.T) {
	s := clusterState(testEnv(nil))
	now := metav1.Now()
	svc := func(name string, selector map[string]string) corev1.Service {
		return corev1.Service{ObjectMeta: objMeta("wales-111-primary", name), Spec: corev1.ServiceSpec{Selector: selector}}
	}
	held := svc("held-nodeport", nil)
	held.DeletionTimestamp, held.Finalizers = &now, []string{"example.com/keep"}
	elsewhere := svc("other", nil)
	elsewhere.Namespace = "other-primary"
	s.Services = []corev1.Service{
		svc("call-handling", map[string]string{v1alpha1.LabelEnvironment: "wales-111"}), // its selector changed
		svc("referral", map[string]string{v1alpha1.LabelEnvironment: "wales-111", v1alpha1.LabelService: "referral"}),
		svc("planted-nodeport", map[string]string{v1alpha1.LabelEnvironment: "wales-111"}), held, elsewhere,
	}
	notes := map[string]string{}
	for _, a := range PlanFence(s).Actions {
		if a.Kind == "Service" {
			notes[string(a.Verb)+" "+a.Namespace+"/"+a.Name] = a.Note
		}
	}
	for want, note := range map[string]string{
		"delete wales-111-primary/call-handling":             "careplane's, changed by someone else",
		"delete wales-111-primary/planted-nodeport":          "not careplane's",
		"release-finalizers wales-111-primary/held-nodeport": "held by example.com/keep",
	} {
		if got, ok := notes[want]; !ok || !strings.Contains(got, note) {
			t.Errorf("plan: %s = %q (listed %v), want a note saying %q", want, got, ok, note)
		}
	}
	if len(notes) != 3 {
		t.Errorf("Service actions %v, want exactly three: careplane's referral, as careplane wrote it, stays", notes)
	}
}
