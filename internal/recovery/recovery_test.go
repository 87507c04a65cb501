package recovery

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// pt is a point taken m minutes after t0; flags "c" clean, "r" ready.
func pt(m int, flags string) v1alpha1.RecoveryPoint {
	at := t0.Add(time.Duration(m) * time.Minute)
	return v1alpha1.RecoveryPoint{Name: PointName(at), TakenAt: metav1.NewTime(at),
		Clean: slices.Contains([]byte(flags), 'c'), Ready: slices.Contains([]byte(flags), 'r')}
}

func names(ps ...v1alpha1.RecoveryPoint) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func TestDecide(t *testing.T) {
	const every = 15 * time.Minute
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	for _, tc := range []struct {
		name string
		in   Input
		want Decision
	}{
		{
			name: "first point, Ready: clean",
			in:   Input{Now: at(0), Interval: every, Keep: 3, Ready: true},
			want: Decision{Take: true, Name: "p-20261202-100000", Clean: true, NextAt: at(15)},
		},
		{
			name: "first point, not Ready: unclean",
			in:   Input{Now: at(0), Interval: every, Keep: 3},
			want: Decision{Take: true, Name: "p-20261202-100000", NextAt: at(15)},
		},
		{
			name: "not due yet",
			in:   Input{Now: at(14), Interval: every, Keep: 3, Ready: true, Points: []v1alpha1.RecoveryPoint{pt(0, "cr")}},
			want: Decision{NextAt: at(15)},
		},
		{
			name: "due, the newest not ready yet: taken anyway",
			in:   Input{Now: at(15), Interval: every, Keep: 3, Ready: true, Points: []v1alpha1.RecoveryPoint{pt(0, "c")}},
			want: Decision{Take: true, Name: "p-20261202-101500", Clean: true, NextAt: at(30)},
		},
		{
			name: "late: taken now, next an interval from now",
			in:   Input{Now: at(40), Interval: every, Keep: 3, Ready: true, Points: []v1alpha1.RecoveryPoint{pt(0, "cr")}},
			want: Decision{Take: true, Name: "p-20261202-104000", Clean: true, NextAt: at(55)},
		},
		{
			name: "fenced: unclean, even when Ready",
			in:   Input{Now: at(15), Interval: every, Keep: 3, Ready: true, Fenced: true, FencedAt: at(10), Points: []v1alpha1.RecoveryPoint{pt(0, "cr")}},
			want: Decision{Take: true, Name: "p-20261202-101500", NextAt: at(30)},
		},
		{
			name: "fenced with keep points since the fence: paused, nothing deleted",
			in: Input{Now: at(60), Interval: every, Keep: 2, Fenced: true, FencedAt: at(10),
				Points: []v1alpha1.RecoveryPoint{pt(0, "cr"), pt(5, "cr"), pt(15, "r"), pt(30, "r")}},
			want: Decision{Paused: true, NextAt: at(45)},
		},
		{
			name: "keep 2 clean: older points go, unclean newer ones stay",
			in: Input{Now: at(55), Interval: every, Keep: 2, Ready: true,
				Points: []v1alpha1.RecoveryPoint{pt(0, "cr"), pt(10, "r"), pt(20, "cr"), pt(30, "r"), pt(40, "cr")}},
			want: Decision{Take: true, Name: "p-20261202-105500", Clean: true, NextAt: at(70),
				Delete: names(pt(0, ""), pt(10, ""))},
		},
		{
			name: "a clean point not ready does not count as kept",
			in: Input{Now: at(45), Interval: every, Keep: 1, Ready: true,
				Points: []v1alpha1.RecoveryPoint{pt(0, "cr"), pt(30, "c")}},
			want: Decision{Take: true, Name: "p-20261202-104500", Clean: true, NextAt: at(60)},
		},
		{
			name: "never Ready: unclean points bounded to keep",
			in: Input{Now: at(45), Interval: every, Keep: 2,
				Points: []v1alpha1.RecoveryPoint{pt(0, "r"), pt(15, "r"), pt(30, "r")}},
			want: Decision{Take: true, Name: "p-20261202-104500", NextAt: at(60), Delete: names(pt(0, ""))},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(tc.in)
			if got.Take != tc.want.Take || got.Name != tc.want.Name || got.Clean != tc.want.Clean || got.Paused != tc.want.Paused ||
				!got.NextAt.Equal(tc.want.NextAt) || !slices.Equal(got.Delete, tc.want.Delete) {
				t.Errorf("Decide = %+v\nwant     %+v", got, tc.want)
			}
		})
	}
}

// TestDecideNeverDeletesWhileFencedNorTheNewestCleanPoints: over every
// combination of a few points' flags, a fenced environment deletes nothing,
// and an unfenced one never deletes one of its newest keep clean, ready
// points.
func TestDecideNeverDeletesWhileFencedNorTheNewestCleanPoints(t *testing.T) {
	flags := []string{"", "c", "r", "cr"}
	for mask := range 1 << 10 {
		var points []v1alpha1.RecoveryPoint
		for i := range 5 {
			points = append(points, pt(i*15, flags[(mask>>(2*i))&3]))
		}
		for keep := 1; keep <= 3; keep++ {
			in := Input{Now: at75(), Interval: 15 * time.Minute, Keep: keep, Points: points}
			if d := Decide(Input{Now: in.Now, Interval: in.Interval, Keep: keep, Points: points, Fenced: true, FencedAt: t0}); len(d.Delete) > 0 {
				t.Fatalf("fenced, deletes %v", d.Delete)
			}
			d := Decide(in)
			kept := 0
			for i := len(points) - 1; i >= 0 && kept < keep; i-- {
				if points[i].Clean && points[i].Ready {
					kept++
					if slices.Contains(d.Delete, points[i].Name) {
						t.Fatalf("keep %d, points %+v: deletes %s, one of the newest clean points", keep, points, points[i].Name)
					}
				}
			}
		}
	}
}

func at75() time.Time { return t0.Add(75 * time.Minute) }
