//go:build e2e && bench

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
)

// Name prefixes of the data phase's environments: with a volume and
// recovery points, and the same service without a volume.
const (
	dataVolumePrefix   = "dv-"
	dataNoVolumePrefix = "dz-"
)

// benchDataEnv is the data phase's care-records environment: one document
// store with a generated password. With volume, its records are on a volume
// of the cluster's default class and recovery points are taken every
// interval, two kept; without, the same service keeps nothing, for the
// restore timed beside.
func benchDataEnv(name string, volume bool, interval time.Duration) *v1alpha1.HealthEnvironment {
	env := &v1alpha1.HealthEnvironment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench.careplane.io/set": "data"}},
		Spec: v1alpha1.HealthEnvironmentSpec{
			Tenant: v1alpha1.Tenant{DisplayName: "Benchmark " + name},
			Services: []v1alpha1.Service{{Name: "document-store",
				Image:    "registry.example/records/store@sha256:" + strings.Repeat("4", 64),
				Replicas: ptr.To(int32(1)), Port: 5432, GeneratedSecrets: []string{"db-password"}}},
			Isolation: v1alpha1.Isolation{ForensicsFrom: &v1alpha1.LabelSelector{
				MatchLabels: map[string]v1alpha1.LabelValue{"kubernetes.io/metadata.name": "forensics"}}},
		},
	}
	if volume {
		env.Spec.Services[0].Volumes = []v1alpha1.Volume{{Name: "records", MountPath: "/var/lib/records", Size: "16Mi"}}
		env.Spec.Recovery = &v1alpha1.Recovery{VolumeSnapshotClassName: snapshotClass,
			Interval: &metav1.Duration{Duration: interval}, Keep: 2}
	}
	return env
}

// benchData is the data phase, run after every other phase on environments
// of its own: BENCH_DATA_N environments with a volume taking recovery
// points every BENCH_DATA_INTERVAL, the operator's writes and CPU counted
// over BENCH_DATA_WINDOW (net of its rate just before they existed); then
// single fences and restores of environments with a volume and without,
// alternately, timed by single and restore (TestBench's).
func benchData(t *testing.T, ctx context.Context, p benchParams, admin client.Client, tr *tracker,
	single func(*v1alpha1.HealthEnvironment, string) (deny, fenced time.Duration),
	restore func(*v1alpha1.HealthEnvironment) time.Duration) (rows []row, notes []string) {
	t.Helper()
	logf := benchLogf

	// The operator's rate before the data environments exist: the other
	// environments' resyncs.
	base := min(p.dataWindow, time.Minute)
	logf("data: the operator's writes and CPU over %s before the data environments", base)
	bw0, bc0 := operatorWrites(t), operatorProc(t).cpu
	time.Sleep(base)
	bw1, bc1 := operatorWrites(t), operatorProc(t).cpu
	baseWrites, baseCPU := float64(bw1-bw0)/base.Hours(), (bc1-bc0)/base.Hours()

	var withVolume, without []*v1alpha1.HealthEnvironment
	for i := range p.dataN {
		withVolume = append(withVolume, benchDataEnv(fmt.Sprintf("%s%04d", dataVolumePrefix, i), true, p.dataInterval))
	}
	for i := range p.dataSamples {
		without = append(without, benchDataEnv(fmt.Sprintf("%s%04d", dataNoVolumePrefix, i), false, 0))
	}
	all := append(append([]*v1alpha1.HealthEnvironment{}, withVolume...), without...)
	logf("data: %d environments with a volume and recovery points every %s, %d without", len(withVolume), p.dataInterval, len(without))
	t0 := time.Now()
	createdAt := make([]time.Time, len(all))
	parallelDo(len(all), 32, func(i int) {
		createdAt[i] = time.Now()
		if err := admin.Create(ctx, all[i].DeepCopy()); err != nil {
			t.Errorf("creating %s: %v", all[i].Name, err)
		}
	})
	names := make([]string, len(withVolume))
	for i, env := range withVolume {
		names[i] = env.Name
	}
	if _, err := tr.waitAll(30*time.Minute, t0, names, tr.readyAfter(t0)); err != nil {
		t.Fatalf("data environments Ready: %v", err)
	}
	var coldPer []time.Duration
	tr.mu.Lock()
	for i, env := range withVolume {
		at, _ := firstAfter(tr.ready[env.Name], t0)
		coldPer = append(coldPer, at.Sub(createdAt[i]))
	}
	tr.mu.Unlock()
	logf("data: all %d with a volume Ready after %s", len(withVolume), summarize(coldPer).max.Round(time.Millisecond))

	// Warm-up: every environment has taken its points and retention (keep
	// 2) deletes one a point from now on, as in a long run.
	time.Sleep(2 * p.dataInterval)
	w0, c0, from := operatorWrites(t), operatorProc(t).cpu, time.Now()
	time.Sleep(p.dataWindow)
	w1, c1, to := operatorWrites(t), operatorProc(t).cpu, time.Now()
	window := to.Sub(from)
	taken, _ := tr.pointsTaken(dataVolumePrefix, from, to)
	writesPerHour, cpuPerHour := float64(w1-w0)/window.Hours(), (c1-c0)/window.Hours()
	netWrites, netCPU := writesPerHour-baseWrites, cpuPerHour-baseCPU
	expected := float64(p.dataN) * window.Seconds() / p.dataInterval.Seconds()
	logf("data: %d points in %s (%.0f due); %d writes, %.1f CPU s", taken, window.Round(time.Second), expected, w1-w0, c1-c0)
	if float64(taken) < 0.9*expected {
		notes = append(notes, fmt.Sprintf("Warning: %d recovery points taken in the data window, fewer than 90%% of the %.0f due.", taken, expected))
	}

	// Restores, with a volume and without, alternately.
	var fenceVol, fenceNone, restoreVol, restoreNone []time.Duration
	for i := range p.dataSamples {
		_, f := single(withVolume[i], fmt.Sprintf("INC-DV%d", i))
		fenceVol = append(fenceVol, f)
		restoreVol = append(restoreVol, restore(withVolume[i]))
		_, f = single(without[i], fmt.Sprintf("INC-DZ%d", i))
		fenceNone = append(fenceNone, f)
		restoreNone = append(restoreNone, restore(without[i]))
	}
	logf("data: restore median with a volume %s, without %s", summarize(restoreVol).med, summarize(restoreNone).med)
	// Points taken near the window's end have had the samples' time to
	// become ready.
	_, toReady := tr.pointsTaken(dataVolumePrefix, from, to)

	rows = append(rows,
		row{what: fmt.Sprintf("data: each of %d environments with a volume and recovery points Ready after its create", p.dataN), s: summarize(coldPer)},
		row{what: fmt.Sprintf("data: recovery points of %d environments every %s (n: taken in %s): operator API writes per hour %.0f (%.1f per environment, %.1f per point), CPU seconds per hour %.0f (%.2f per environment); net of the rate before: %.0f writes (%.1f per environment), %.0f CPU s (%.2f per environment)",
			p.dataN, p.dataInterval, window.Round(time.Second), writesPerHour, writesPerHour/float64(p.dataN), float64(w1-w0)/float64(max(taken, 1)),
			cpuPerHour, cpuPerHour/float64(p.dataN), netWrites, netWrites/float64(p.dataN), netCPU, netCPU/float64(p.dataN)), count: taken},
		row{what: fmt.Sprintf("data: recovery point taken → ready in status (%d points of %d environments every %s)", taken, p.dataN, p.dataInterval), s: summarize(toReady)},
		row{what: "data: single fence, one service with a volume (evidence snapshot): → Fenced=True", s: summarize(fenceVol)},
		row{what: "data: single fence, the same service without a volume: → Fenced=True", s: summarize(fenceNone)},
		row{what: "data: restore with a volume (new claim from the newest clean point): mode None → Ready with the fence lifted", s: summarize(restoreVol)},
		row{what: "data: restore without a volume, same run: mode None → Ready with the fence lifted", s: summarize(restoreNone)},
	)
	notes = append(notes,
		fmt.Sprintf("Recovery points: %d environments with a volume, spec.recovery.interval %s, keep 2; over %s: %d points taken (%.0f due), ready %d; the operator sent %d API writes and used %.1f CPU seconds: **%.0f writes per hour (%.1f per environment, %.1f per point), %.0f CPU seconds per hour (%.2f per environment)**; net of its rate before the data environments existed (%.0f writes, %.1f CPU seconds per hour): %.0f writes per hour (%.1f per environment), %.0f CPU seconds per hour (%.2f per environment). A recovery point every %s is %.0f per environment per hour.",
			p.dataN, p.dataInterval, window.Round(time.Second), taken, expected, len(toReady), w1-w0, c1-c0,
			writesPerHour, writesPerHour/float64(p.dataN), float64(w1-w0)/float64(max(taken, 1)), cpuPerHour, cpuPerHour/float64(p.dataN),
			baseWrites, baseCPU, netWrites, netWrites/float64(p.dataN), netCPU, netCPU/float64(p.dataN),
			p.dataInterval, time.Hour.Seconds()/p.dataInterval.Seconds()),
		fmt.Sprintf("Restore with a volume beside without, %d samples each, alternately: medians %s and %s (%.1f×).",
			p.dataSamples, summarize(restoreVol).med.Round(time.Millisecond), summarize(restoreNone).med.Round(time.Millisecond),
			summarize(restoreVol).med.Seconds()/summarize(restoreNone).med.Seconds()))
	return rows, notes
}
