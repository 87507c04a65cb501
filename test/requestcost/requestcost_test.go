//go:build bench

// Package requestcost measures what the API server spends on each kind of
// request careplane sends (and a few it could send instead), on a real
// kube-apiserver and etcd (envtest): CPU seconds of each process per
// request, read from /proc around a batch of identical requests. The fleet
// benchmark says how long a fleet fence takes; this says which of its
// requests are dear. Run it with `make bench-requests`.
package requestcost

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

const (
	// perRound requests of a kind in a round, sent by workers at once.
	perRound = 400
	workers  = 8
	rounds   = 3
	// namespaces the requests are spread over.
	namespaces = 100
)

// processCPU is the CPU seconds used so far by every process whose command
// is name.
func processCPU(t *testing.T, name string) float64 {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || filepath.Base(strings.SplitN(string(cmd), "\x00", 2)[0]) != name {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat)[strings.LastIndexByte(string(stat), ')')+2:])
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		total += (utime + stime) / 100 // USER_HZ
	}
	return total
}

// env is a HealthEnvironment like the fleet benchmark's: three services,
// one critical with a generated secret.
func env(name string) *v1alpha1.HealthEnvironment {
	d := func(c string) string { return "@sha256:" + strings.Repeat(c, 64) }
	return &v1alpha1.HealthEnvironment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.HealthEnvironmentSpec{
			Tenant: v1alpha1.Tenant{DisplayName: "Request cost " + name},
			Services: []v1alpha1.Service{
				{Name: "call-handling", Image: "registry.example/111/call-handling" + d("1"), Replicas: ptr.To(int32(1)),
					Port: 8080, Critical: true, TalksTo: []string{"referral"}, GeneratedSecrets: []string{"db-password"}},
				{Name: "referral", Image: "registry.example/111/referral" + d("2"), Replicas: ptr.To(int32(1)), Port: 8443, GeneratedSecrets: []string{"cad-key"}},
				{Name: "booking", Image: "registry.example/111/booking" + d("3"), Replicas: ptr.To(int32(1)), Port: 8080},
			},
		},
	}
}

// kind is one kind of request: prepare makes what round r's requests act
// on (untimed), send sends request i of round r.
type kind struct {
	name    string
	prepare func(r int) error
	send    func(r, i int) error
}

type cost struct{ apiserver, etcd float64 }

func TestRequestCost(t *testing.T) {
	te := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	cfg, err := te.Start()
	if err != nil {
		t.Fatalf("starting envtest (run with `make bench-requests`): %v", err)
	}
	t.Cleanup(func() { _ = te.Stop() })
	cfg.QPS, cfg.Burst = 10000, 10000
	cs := kubernetes.NewForConfigOrDie(cfg)
	scheme := kruntime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := func(i int) string { return fmt.Sprintf("ns-%d", i%namespaces) }
	for i := range namespaces {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns(i)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for j := range 3 {
			if _, err := cs.CoreV1().Pods(ns(i)).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", j),
				Labels: map[string]string{"app.kubernetes.io/name": "call-handling", v1alpha1.LabelEnvironment: "cost"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app"}}}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := cs.CoreV1().Secrets(ns(i)).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("secret-%d", j)},
				Data: map[string][]byte{"key": []byte("value")}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	const heCount = 100
	he := func(i int) string { return fmt.Sprintf("he-%d", i%heCount) }
	for i := range heCount {
		e := env(he(i))
		if err := c.Create(ctx, e); err != nil {
			t.Fatal(err)
		}
		// A status as careplane writes it: services, conditions, an incident.
		now := metav1.Now()
		e.Status = v1alpha1.HealthEnvironmentStatus{ObservedGeneration: e.Generation, ActiveSite: v1alpha1.SitePrimary,
			Incidents: []v1alpha1.Incident{{Ticket: "INC-1", Reason: "test", FencedAt: &now, RestoredAt: &now, RestoredFrom: "spec"}}}
		for _, ct := range []string{v1alpha1.ConditionReady, v1alpha1.ConditionDegraded, v1alpha1.ConditionFenced, v1alpha1.ConditionIsolationVerified,
			v1alpha1.ConditionRestoring, v1alpha1.ConditionServingFromStandby} {
			e.Status.Conditions = append(e.Status.Conditions, metav1.Condition{Type: ct, Status: metav1.ConditionFalse, Reason: "AsExpected",
				Message: "as expected", LastTransitionTime: now, ObservedGeneration: e.Generation})
		}
		for _, svc := range e.Spec.Services {
			e.Status.Services = append(e.Status.Services, v1alpha1.ServiceStatus{Name: svc.Name, Site: v1alpha1.SitePrimary, Replicas: 1, ReadyReplicas: 1})
		}
		if err := c.Status().Update(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	apply := metav1.ApplyOptions{FieldManager: "careplane", Force: true}
	e := env("cost")
	e.UID = "00000000-0000-4000-8000-000000000001" // the owner careplane's builders name; never read
	svc := e.Spec.Services[0]
	name := func(prefix string, r, i int) string { return fmt.Sprintf("%s-%d-%d", prefix, r, i) }
	serviceAccount := func(r, i int) *corev1.ServiceAccount {
		return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name("sa", r, i), Namespace: ns(i),
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "careplane", v1alpha1.LabelEnvironment: "cost"},
			Annotations: map[string]string{build.AnnotationCredentialsRevision: "r1"}}, AutomountServiceAccountToken: ptr.To(false)}
	}
	deployments := func(prefix string) func(r int) error {
		return func(r int) error {
			for i := range perRound {
				d := build.Deployment(e, v1alpha1.SitePrimary, ns(i), svc, "r1")
				d.WithName(name(prefix, r, i))
				if _, err := cs.AppsV1().Deployments(ns(i)).Apply(ctx, d, apply); err != nil {
					return err
				}
			}
			return nil
		}
	}
	policies := func(r int) error {
		for i := range perRound {
			if _, err := cs.NetworkingV1().NetworkPolicies(ns(i)).Create(ctx, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name("np", r, i)}},
				metav1.CreateOptions{}); err != nil {
				return err
			}
		}
		return nil
	}
	serviceAccounts := func(r int) error {
		for i := range perRound {
			if _, err := cs.CoreV1().ServiceAccounts(ns(i)).Create(ctx, serviceAccount(r, i), metav1.CreateOptions{}); err != nil {
				return err
			}
		}
		return nil
	}
	none := func(int) error { return nil }
	kinds := []kind{
		{"POST serviceaccounts", none, func(r, i int) error {
			sa := serviceAccount(r, i)
			sa.Name = name("post", r, i)
			_, err := cs.CoreV1().ServiceAccounts(ns(i)).Create(ctx, sa, metav1.CreateOptions{FieldManager: "careplane"})
			return err
		}},
		{"APPLY serviceaccounts (a new one)", none, func(r, i int) error {
			_, err := cs.CoreV1().ServiceAccounts(ns(i)).Apply(ctx, corev1ac.ServiceAccount(name("apply", r, i), ns(i)).
				WithLabels(map[string]string{"app.kubernetes.io/managed-by": "careplane", v1alpha1.LabelEnvironment: "cost"}).
				WithAnnotations(map[string]string{build.AnnotationCredentialsRevision: "r1"}).WithAutomountServiceAccountToken(false), apply)
			return err
		}},
		{"DELETE serviceaccounts", serviceAccounts, func(r, i int) error {
			return cs.CoreV1().ServiceAccounts(ns(i)).Delete(ctx, name("sa", r, i), metav1.DeleteOptions{})
		}},
		{"APPLY networkpolicies (a new one, careplane's)", none, func(r, i int) error {
			pols := build.NetworkPolicies(e, v1alpha1.SitePrimary, ns(i))
			p := pols[i%len(pols)]
			p.WithName(name("applied", r, i))
			_, err := cs.NetworkingV1().NetworkPolicies(ns(i)).Apply(ctx, p, apply)
			return err
		}},
		{"DELETE networkpolicies", policies, func(r, i int) error {
			return cs.NetworkingV1().NetworkPolicies(ns(i)).Delete(ctx, name("np", r, i), metav1.DeleteOptions{})
		}},
		{"APPLY deployments (a new one, careplane's)", none, func(r, i int) error {
			d := build.Deployment(e, v1alpha1.SitePrimary, ns(i), svc, "r1")
			d.WithName(name("new", r, i))
			_, err := cs.AppsV1().Deployments(ns(i)).Apply(ctx, d, apply)
			return err
		}},
		{"APPLY deployments (replicas 0, the fence's scale-down)", deployments("scale"), func(r, i int) error {
			d := build.Deployment(e, v1alpha1.SitePrimary, ns(i), svc, "r1")
			d.WithName(name("scale", r, i)).Spec.WithReplicas(0)
			_, err := cs.AppsV1().Deployments(ns(i)).Apply(ctx, d, apply)
			return err
		}},
		{"PATCH deployments (replicas 0, merge)", deployments("merge"), func(r, i int) error {
			_, err := cs.AppsV1().Deployments(ns(i)).Patch(ctx, name("merge", r, i), types.MergePatchType, []byte(`{"spec":{"replicas":0}}`),
				metav1.PatchOptions{FieldManager: "careplane"})
			return err
		}},
		{"PATCH deployments/scale (replicas 0, merge)", deployments("sub"), func(r, i int) error {
			_, err := cs.AppsV1().Deployments(ns(i)).Patch(ctx, name("sub", r, i), types.MergePatchType, []byte(`{"spec":{"replicas":0}}`),
				metav1.PatchOptions{FieldManager: "careplane"}, "scale")
			return err
		}},
		{"DELETE deployments", deployments("del"), func(r, i int) error {
			return cs.AppsV1().Deployments(ns(i)).Delete(ctx, name("del", r, i), metav1.DeleteOptions{})
		}},
		{"PATCH pods (metadata, merge: the evidence relabel)", none, func(r, i int) error {
			_, err := cs.CoreV1().Pods(ns(i)).Patch(ctx, fmt.Sprintf("pod-%d", (i/namespaces)%3), types.MergePatchType,
				[]byte(fmt.Sprintf(`{"metadata":{"labels":{"careplane.io/evidence":"r%d-%d"}}}`, r, i)), metav1.PatchOptions{FieldManager: "careplane"})
			return err
		}},
		{"PATCH namespaces (metadata, merge: the fence record)", none, func(r, i int) error {
			_, err := cs.CoreV1().Namespaces().Patch(ctx, ns(i), types.MergePatchType,
				[]byte(fmt.Sprintf(`{"metadata":{"annotations":{"careplane.io/fence-id":"r%d-%d"}}}`, r, i)), metav1.PatchOptions{FieldManager: "careplane"})
			return err
		}},
		{"POST events", none, func(r, i int) error {
			now := metav1.Now()
			_, err := cs.CoreV1().Events(ns(i)).Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "cost-"},
				InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns(i), Name: "pod-0", APIVersion: "v1"}, Reason: "PoliciesRemoved",
				Message: "Removed network policies from fenced namespace: allow-dns, default-deny, svc-call-handling", Type: corev1.EventTypeWarning,
				Source: corev1.EventSource{Component: "careplane"}, FirstTimestamp: now, LastTimestamp: now, Count: 1}, metav1.CreateOptions{})
			return err
		}},
		{"LIST pods (3 in the namespace)", none, func(r, i int) error {
			return c.List(ctx, &corev1.PodList{}, client.InNamespace(ns(i)))
		}},
		{"LIST secrets (metadata only, 3 in the namespace)", none, func(r, i int) error {
			l := &metav1.PartialObjectMetadataList{}
			l.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("SecretList"))
			return c.List(ctx, l, client.InNamespace(ns(i)))
		}},
		{"GET healthenvironments", none, func(r, i int) error {
			return c.Get(ctx, client.ObjectKey{Name: he(i)}, &v1alpha1.HealthEnvironment{})
		}},
		{"PATCH healthenvironments/status (merge: one condition's message)", none, func(r, i int) error {
			// The whole list, as a merge patch of a list sends it, one
			// message changed.
			now := time.Now().UTC().Format(time.RFC3339)
			var conds []string
			for j, ct := range []string{v1alpha1.ConditionReady, v1alpha1.ConditionDegraded, v1alpha1.ConditionFenced, v1alpha1.ConditionIsolationVerified,
				v1alpha1.ConditionRestoring, v1alpha1.ConditionServingFromStandby} {
				msg := "as expected"
				if j == 2 {
					msg = fmt.Sprintf("round %d request %d", r, i)
				}
				conds = append(conds, fmt.Sprintf(`{"type":%q,"status":"False","reason":"AsExpected","message":%q,"lastTransitionTime":%q,"observedGeneration":1}`, ct, msg, now))
			}
			patch := `{"status":{"conditions":[` + strings.Join(conds, ",") + `]}}`
			return c.Status().Patch(ctx, &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: he(i)}}, client.RawPatch(types.MergePatchType, []byte(patch)))
		}},
		{"PATCH healthenvironments (metadata, merge: a finalizer)", none, func(r, i int) error {
			patch := fmt.Sprintf(`{"metadata":{"finalizers":["careplane.io/fence-%d-%d"]}}`, r, i)
			return c.Patch(ctx, &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: he(i)}}, client.RawPatch(types.MergePatchType, []byte(patch)))
		}},
	}
	// Warm up every path once, untimed.
	for _, k := range kinds {
		if err := k.prepare(rounds); err != nil {
			t.Fatalf("%s: %v", k.name, err)
		}
		for i := range workers {
			if err := k.send(rounds, i); err != nil {
				t.Fatalf("%s: %v", k.name, err)
			}
		}
	}
	results := make([][]cost, len(kinds))
	for r := range rounds {
		for ki, k := range kinds {
			if err := k.prepare(r); err != nil {
				t.Fatalf("%s: %v", k.name, err)
			}
			time.Sleep(200 * time.Millisecond) // what prepare wrote settles
			a0, e0 := processCPU(t, "kube-apiserver"), processCPU(t, "etcd")
			if err := sendAll(func(i int) error { return k.send(r, i) }); err != nil {
				t.Fatalf("%s: %v", k.name, err)
			}
			time.Sleep(200 * time.Millisecond) // the watch cache and etcd finish
			a1, e1 := processCPU(t, "kube-apiserver"), processCPU(t, "etcd")
			results[ki] = append(results[ki], cost{(a1 - a0) / perRound, (e1 - e0) / perRound})
		}
	}
	base := median(results[0])
	var b strings.Builder
	fmt.Fprintf(&b, "| request | kube-apiserver CPU per request | etcd CPU per request | kube-apiserver, × POST serviceaccounts |\n|---|---|---|---|\n")
	for ki, k := range kinds {
		m := median(results[ki])
		fmt.Fprintf(&b, "| %s | %.2f ms | %.2f ms | %.1f |\n", k.name, m.apiserver*1000, m.etcd*1000, m.apiserver/base.apiserver)
	}
	fmt.Fprintf(&b, "\n%d requests of each kind per round, %d at once, %d rounds, median; envtest's kube-apiserver and etcd, no admission policies installed.\n",
		perRound, workers, rounds)
	t.Log("\n" + b.String())
	if out := os.Getenv("REQUEST_COST_OUT"); out != "" {
		doc := "# What each request costs the API server\n\n" +
			"Written by `make bench-requests` (test/requestcost); rerun it to reproduce. Do not edit by hand.\n\n" +
			"The fleet benchmark ([benchmarks.md](benchmarks.md)) is bound by the API server's CPU: a fleet fence or restore\n" +
			"takes as long as the requests it causes cost. This is what each kind of request careplane sends costs\n" +
			"kube-apiserver and etcd, alone, and a few it could send instead. The ratio column is the one to compare\n" +
			"across runs: the machines are shared and their speed varies.\n\n" +
			fmt.Sprintf("Run %s on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), machine()) + b.String()
		if err := os.WriteFile(out, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// machine says what the numbers were taken on.
func machine() string {
	model := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs", model, runtime.NumCPU())
}

// sendAll sends perRound requests, workers at once, and returns the first
// error.
func sendAll(send func(i int) error) error {
	next := make(chan int)
	errs := make(chan error, perRound)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := send(i); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range perRound {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}

// median is the cost of the median round, by kube-apiserver CPU.
func median(cs []cost) cost {
	s := slices.Clone(cs)
	slices.SortFunc(s, func(a, b cost) int {
		switch {
		case a.apiserver < b.apiserver:
			return -1
		case a.apiserver > b.apiserver:
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}
