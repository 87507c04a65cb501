package recovery

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// spt is a point taken m minutes after t0 with one snapshot of claim
// data-docs-0 per flags: "c" clean; its snapshot's live state is set by
// the test's snapshot map.
func spt(m int, clean bool) v1alpha1.RecoveryPoint {
	p := pt(m, "r")
	p.Clean = clean
	p.Snapshots = []v1alpha1.PointSnapshot{{Name: p.Name + "-data-docs-0", UID: "uid-" + p.Name, Claim: "data-docs-0"}}
	return p
}

// live is the cluster's state of every snapshot of points: on record and
// ready, unless changed by the test.
func live(points ...v1alpha1.RecoveryPoint) map[string]SnapshotState {
	out := map[string]SnapshotState{}
	for _, p := range points {
		for _, s := range p.Snapshots {
			out[s.Name] = SnapshotState{UID: s.UID, ReadyToUse: true}
		}
	}
	return out
}

func TestChoose(t *testing.T) {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	p0, p15, p30, p45 := spt(0, true), spt(15, true), spt(30, false), spt(45, true)
	all := []v1alpha1.RecoveryPoint{p0, p15, p30, p45}
	before := func(m int) *v1alpha1.RestoreFrom {
		t := metav1.NewTime(at(m))
		return &v1alpha1.RestoreFrom{Before: &t}
	}
	named := func(n string) *v1alpha1.RestoreFrom { return &v1alpha1.RestoreFrom{RecoveryPoint: n} }
	for _, tc := range []struct {
		name     string
		points   []v1alpha1.RecoveryPoint
		fencedAt time.Time
		from     *v1alpha1.RestoreFrom
		snaps    func(map[string]SnapshotState)
		want     string // the point's name
		lost     time.Duration
		err      string // part of the reason
	}{
		{name: "default: newest clean before the fence, skipping an unclean one", points: all, fencedAt: at(40),
			want: p15.Name, lost: 25 * time.Minute},
		{name: "default: a point taken after the fence is not used", points: all, fencedAt: at(50),
			want: p45.Name, lost: 5 * time.Minute},
		{name: "default: a point taken at the fence's very instant is not before it", points: all, fencedAt: at(45),
			want: p15.Name, lost: 30 * time.Minute},
		{name: "default: snapshot not ready skips the point", points: all, fencedAt: at(50),
			snaps: func(m map[string]SnapshotState) { m[p45.Snapshots[0].Name] = SnapshotState{UID: "uid-" + p45.Name} },
			want:  p15.Name, lost: 35 * time.Minute},
		{name: "default: forged snapshot (other UID) skips the point", points: all, fencedAt: at(50),
			snaps: func(m map[string]SnapshotState) {
				m[p45.Snapshots[0].Name] = SnapshotState{UID: "forged", ReadyToUse: true}
			},
			want: p15.Name, lost: 35 * time.Minute},
		{name: "default: snapshot gone skips the point", points: all, fencedAt: at(50),
			snaps: func(m map[string]SnapshotState) { delete(m, p45.Snapshots[0].Name) },
			want:  p15.Name, lost: 35 * time.Minute},
		{name: "default: none before the fence", points: all, fencedAt: at(0),
			err: "no clean, ready recovery point was taken before 2026-12-02T10:00:00Z"},
		{name: "default: no points at all", fencedAt: at(10),
			err: "no clean, ready recovery point was taken before"},
		{name: "default: the only clean one is forged: says why", points: []v1alpha1.RecoveryPoint{p0}, fencedAt: at(10),
			snaps: func(m map[string]SnapshotState) { m[p0.Snapshots[0].Name] = SnapshotState{UID: "x", ReadyToUse: true} },
			err:   "not the one on record (another UID)"},
		{name: "no fence start on record", points: all,
			err: "the fence's start is not on record"},
		{name: "named point", points: all, fencedAt: at(50), from: named(p0.Name),
			want: p0.Name, lost: 50 * time.Minute},
		{name: "named point unknown", points: all, fencedAt: at(50), from: named("p-nope"),
			err: `isolation.restoreFrom.recoveryPoint "p-nope" is not a recovery point of this environment`},
		{name: "named point unclean", points: all, fencedAt: at(50), from: named(p30.Name),
			err: "it is not clean"},
		{name: "named point after the fence", points: all, fencedAt: at(40), from: named(p45.Name),
			err: "not before the fence began"},
		{name: "named point not ready", points: all, fencedAt: at(50), from: named(p15.Name),
			snaps: func(m map[string]SnapshotState) { m[p15.Snapshots[0].Name] = SnapshotState{UID: "uid-" + p15.Name} },
			err:   "is not ready to use"},
		{name: "named point without snapshots", points: []v1alpha1.RecoveryPoint{pt(0, "cr")}, fencedAt: at(50), from: named(pt(0, "").Name),
			err: "it has no snapshots on record"},
		{name: "before: newest clean before the time", points: all, fencedAt: at(50), from: before(20),
			want: p15.Name, lost: 35 * time.Minute},
		{name: "before: strictly before", points: all, fencedAt: at(50), from: before(15),
			want: p0.Name, lost: 50 * time.Minute},
		{name: "before a time after the fence: still before the fence", points: all, fencedAt: at(40), from: before(60),
			want: p15.Name, lost: 25 * time.Minute},
		{name: "before: none", points: all, fencedAt: at(50), from: before(0),
			err: "no clean, ready recovery point was taken before 2026-12-02T10:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snaps := live(tc.points...)
			if tc.snaps != nil {
				tc.snaps(snaps)
			}
			got, err := Choose(ChooseInput{Points: tc.points, FencedAt: tc.fencedAt, From: tc.from, Snapshots: snaps})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want it to contain %q (chose %s)", err, tc.err, got.Point.Name)
				}
				return
			}
			if err != nil {
				t.Fatalf("error = %v, want point %s", err, tc.want)
			}
			if got.Point.Name != tc.want || got.DataLost != tc.lost {
				t.Errorf("chose %s losing %s, want %s losing %s", got.Point.Name, got.DataLost, tc.want, tc.lost)
			}
		})
	}
}

// TestChooseInvariants runs the choice over every combination of four
// points (clean or not, snapshot ready, forged or gone), fence times and
// restoreFrom, and checks what must always hold: a chosen point is clean,
// taken before the fence (and before `before`), every snapshot live with
// the UID on record and ready; the default and `before` choose the newest
// such point; no choice comes without a reason.
func TestChooseInvariants(t *testing.T) {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	states := []string{"ready", "notready", "forged", "gone"}
	n := 0
	for mask := range 1 << 4 {
		for st := range 1 << 8 { // 2 bits of snapshot state per point
			var points []v1alpha1.RecoveryPoint
			snaps := map[string]SnapshotState{}
			for i := range 4 {
				p := spt(i*10, mask&(1<<i) != 0)
				points = append(points, p)
				s := p.Snapshots[0]
				switch states[(st>>(2*i))&3] {
				case "ready":
					snaps[s.Name] = SnapshotState{UID: s.UID, ReadyToUse: true}
				case "notready":
					snaps[s.Name] = SnapshotState{UID: s.UID}
				case "forged":
					snaps[s.Name] = SnapshotState{UID: "forged", ReadyToUse: true}
				}
			}
			good := func(p v1alpha1.RecoveryPoint, limit time.Time) bool {
				live, ok := snaps[p.Snapshots[0].Name]
				return p.Clean && p.TakenAt.Time.Before(limit) && ok && live.UID == p.Snapshots[0].UID && live.ReadyToUse
			}
			for _, fenced := range []int{0, 5, 10, 25, 40} {
				var froms []*v1alpha1.RestoreFrom
				froms = append(froms, nil)
				for _, b := range []int{0, 15, 30, 60} {
					tm := metav1.NewTime(at(b))
					froms = append(froms, &v1alpha1.RestoreFrom{Before: &tm})
				}
				for _, p := range points {
					froms = append(froms, &v1alpha1.RestoreFrom{RecoveryPoint: p.Name})
				}
				froms = append(froms, &v1alpha1.RestoreFrom{RecoveryPoint: "p-unknown"})
				for _, from := range froms {
					n++
					limit := at(fenced)
					if from != nil && from.Before != nil && from.Before.Time.Before(limit) {
						limit = from.Before.Time
					}
					got, err := Choose(ChooseInput{Points: points, FencedAt: at(fenced), From: from, Snapshots: snaps})
					desc := fmt.Sprintf("mask %04b states %08b fenced %d from %+v", mask, st, fenced, from)
					if err != nil {
						if err.Error() == "" {
							t.Fatalf("%s: no reason", desc)
						}
					}
					switch {
					case from != nil && from.RecoveryPoint != "":
						var want *v1alpha1.RecoveryPoint
						for i := range points {
							if points[i].Name == from.RecoveryPoint && good(points[i], limit) {
								want = &points[i]
							}
						}
						if (want == nil) != (err != nil) || (want != nil && got.Point.Name != want.Name) {
							t.Fatalf("%s: chose %q err %v, want %v", desc, got.Point.Name, err, want)
						}
					default:
						var want *v1alpha1.RecoveryPoint
						for i := range points {
							if good(points[i], limit) {
								want = &points[i]
							}
						}
						if (want == nil) != (err != nil) || (want != nil && got.Point.Name != want.Name) {
							t.Fatalf("%s: chose %q err %v, want %v", desc, got.Point.Name, err, want)
						}
					}
					if err == nil && got.DataLost != at(fenced).Sub(got.Point.TakenAt.Time) {
						t.Fatalf("%s: data lost %s", desc, got.DataLost)
					}
				}
			}
		}
	}
	t.Logf("%d combinations", n)
}

func TestRestoreClaims(t *testing.T) {
	size := v1alpha1.VolumeSize("1Gi")
	two := int32(2)
	docs := v1alpha1.Service{Name: "docs", Replicas: &two, Volumes: []v1alpha1.Volume{{Name: "data", Size: size}, {Name: "wal", Size: size}}}
	web := v1alpha1.Service{Name: "web"}
	snap := func(name, claim string) v1alpha1.PointSnapshot {
		return v1alpha1.PointSnapshot{Name: name, UID: "u-" + name, Claim: claim}
	}
	for _, tc := range []struct {
		name  string
		snaps []v1alpha1.PointSnapshot
		want  []string // claim<-snapshot
		err   string
	}{
		{name: "first restore: claims of the first generation",
			snaps: []v1alpha1.PointSnapshot{snap("s1", "data-docs-0"), snap("s2", "wal-docs-0"), snap("s3", "data-docs-1"), snap("s4", "wal-docs-1")},
			want:  []string{"data-docs-rgen-0<-s1", "wal-docs-rgen-0<-s2", "data-docs-rgen-1<-s3", "wal-docs-rgen-1<-s4"}},
		{name: "second restore: the point was taken of restored claims",
			snaps: []v1alpha1.PointSnapshot{snap("s1", "data-docs-rabc-0"), snap("s2", "wal-docs-rabc-0"), snap("s3", "data-docs-rabc-1"), snap("s4", "wal-docs-rabc-1")},
			want:  []string{"data-docs-rgen-0<-s1", "wal-docs-rgen-0<-s2", "data-docs-rgen-1<-s3", "wal-docs-rgen-1<-s4"}},
		{name: "a replica more than the point has: blocked",
			snaps: []v1alpha1.PointSnapshot{snap("s1", "data-docs-0"), snap("s2", "wal-docs-0")},
			err:   "no snapshot of volume data of docs replica 1; no snapshot of volume wal of docs replica 1"},
		{name: "two snapshots that could be the same volume: blocked",
			snaps: []v1alpha1.PointSnapshot{snap("s1", "data-docs-0"), snap("s1b", "data-docs-rx-0"), snap("s2", "wal-docs-0"), snap("s3", "data-docs-1"), snap("s4", "wal-docs-1")},
			err:   "2 snapshots that could be volume data of docs replica 0"},
		{name: "another service's claim does not count",
			snaps: []v1alpha1.PointSnapshot{snap("s1", "data-docsx-0"), snap("s2", "wal-docs-0"), snap("s3", "data-docs-1"), snap("s4", "wal-docs-1")},
			err:   "no snapshot of volume data of docs replica 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RestoreClaims([]v1alpha1.Service{web, docs}, "rgen", v1alpha1.RecoveryPoint{Name: "p", Snapshots: tc.snaps})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var gotS []string
			for _, c := range got {
				gotS = append(gotS, c.Claim+"<-"+c.Snapshot)
			}
			if strings.Join(gotS, ",") != strings.Join(tc.want, ",") {
				t.Errorf("got %v, want %v", gotS, tc.want)
			}
		})
	}
}

// TestSnapshotFor: a point's snapshot of a volume and replica is found
// whatever data generation the primary ran when it was taken; none, or two
// that could be it, is no answer.
func TestSnapshotFor(t *testing.T) {
	p := v1alpha1.RecoveryPoint{Name: "p", Snapshots: []v1alpha1.PointSnapshot{
		{Name: "a", Claim: "records-docs-0"}, {Name: "b", Claim: "records-docs-rtpg000-1"},
		{Name: "c", Claim: "records-docsx-2"}, {Name: "d", Claim: "records-docs-3"}, {Name: "e", Claim: "records-docs-r1-3"},
	}}
	for _, tc := range []struct {
		ordinal int32
		want    string
	}{{0, "a"}, {1, "b"}, {2, ""}, {3, ""}, {4, ""}} {
		got, ok := SnapshotFor(p, "docs", "records", tc.ordinal)
		if ok != (tc.want != "") || got.Name != tc.want {
			t.Errorf("replica %d: %q %v, want %q", tc.ordinal, got.Name, ok, tc.want)
		}
	}
}
