package recovery

import (
	"slices"
	"testing"

	"github.com/careplane/careplane/api/v1alpha1"
)

// snap gives a point one snapshot.
func snap(p v1alpha1.RecoveryPoint) v1alpha1.RecoveryPoint {
	p.Snapshots = []v1alpha1.PointSnapshot{{Name: p.Name + "-records-store-0", UID: "u-" + p.Name, Claim: "records-store-0"}}
	return p
}

func TestStandbySource(t *testing.T) {
	for _, tc := range []struct {
		name   string
		points []v1alpha1.RecoveryPoint
		want   string
	}{
		{"none", nil, ""},
		{"newest clean and ready", []v1alpha1.RecoveryPoint{snap(pt(0, "cr")), snap(pt(15, "cr"))}, pt(15, "").Name},
		{"a newer unclean point is skipped", []v1alpha1.RecoveryPoint{snap(pt(0, "cr")), snap(pt(15, "r"))}, pt(0, "").Name},
		{"a newer clean point not ready yet is skipped", []v1alpha1.RecoveryPoint{snap(pt(0, "cr")), snap(pt(15, "c"))}, pt(0, "").Name},
		{"a point without snapshots is skipped", []v1alpha1.RecoveryPoint{snap(pt(0, "cr")), pt(15, "cr")}, pt(0, "").Name},
		{"only unclean points", []v1alpha1.RecoveryPoint{snap(pt(0, "r")), snap(pt(15, "r"))}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := StandbySource(tc.points)
			if ok != (tc.want != "") || got.Name != tc.want {
				t.Errorf("StandbySource = %q, %v; want %q", got.Name, ok, tc.want)
			}
		})
	}
}

func TestDecideStandby(t *testing.T) {
	old, newer := snap(pt(0, "cr")), snap(pt(15, "cr"))
	fenced := snap(pt(30, "r")) // taken while fenced: unclean
	points := []v1alpha1.RecoveryPoint{old, newer, fenced}
	claim := func(name string, exists, onRecord bool) StandbyClaim {
		return StandbyClaim{Name: name, Exists: exists, OnRecord: onRecord}
	}
	for _, tc := range []struct {
		name string
		in   StandbyInput
		want StandbyDecision // Source compared by name
	}{
		{
			name: "no clean point: nothing seeded, nothing deleted, not held",
			in:   StandbyInput{Points: []v1alpha1.RecoveryPoint{fenced}, Claims: []StandbyClaim{claim("a-0", true, false)}},
			want: StandbyDecision{Reason: StandbyNoCleanPoint},
		},
		{
			name: "first seed of a Warm standby: the claims its StatefulSet made empty are replaced",
			in:   StandbyInput{Points: points, Claims: []StandbyClaim{claim("a-0", true, false), claim("a-1", true, false)}},
			want: StandbyDecision{Source: &newer, Delete: []string{"a-0", "a-1"}, Hold: true, Reason: StandbyReplacing},
		},
		{
			name: "none left: seeded from the newest clean point",
			in:   StandbyInput{Points: points, Claims: []StandbyClaim{claim("a-0", false, false), claim("a-1", false, false)}},
			want: StandbyDecision{Source: &newer, Seed: []string{"a-0", "a-1"}, Hold: true, Reason: StandbySeeding},
		},
		{
			name: "seeded from the newest clean point: kept",
			in:   StandbyInput{Points: points, SeededFrom: newer.Name, Claims: []StandbyClaim{claim("a-0", true, true)}},
			want: StandbyDecision{Source: &newer, Reason: StandbyCurrent},
		},
		{
			name: "a newer clean point: refreshed (the old copies deleted first)",
			in:   StandbyInput{Points: points, SeededFrom: old.Name, Claims: []StandbyClaim{claim("a-0", true, true)}},
			want: StandbyDecision{Source: &newer, Delete: []string{"a-0"}, Hold: true, Reason: StandbyReplacing},
		},
		{
			name: "a claim of the right name careplane did not create is replaced",
			in:   StandbyInput{Points: points, SeededFrom: newer.Name, Claims: []StandbyClaim{claim("a-0", true, true), claim("a-1", true, false)}},
			want: StandbyDecision{Source: &newer, Delete: []string{"a-1"}, Hold: true, Reason: StandbyReplacing},
		},
		{
			name: "a replica added: its claim seeded, the others kept",
			in:   StandbyInput{Points: points, SeededFrom: newer.Name, Claims: []StandbyClaim{claim("a-0", true, true), claim("a-1", false, false)}},
			want: StandbyDecision{Source: &newer, Seed: []string{"a-1"}, Hold: true, Reason: StandbySeeding},
		},
		{
			name: "serving: an older copy is kept, it holds writes",
			in:   StandbyInput{Points: points, SeededFrom: old.Name, Served: true, Claims: []StandbyClaim{claim("a-0", true, true)}},
			want: StandbyDecision{Source: &newer, Reason: StandbyServed},
		},
		{
			name: "served: a claim careplane did not create is kept too",
			in:   StandbyInput{Points: points, Served: true, Claims: []StandbyClaim{claim("a-0", true, false), claim("a-1", false, false)}},
			want: StandbyDecision{Source: &newer, Reason: StandbyServed},
		},
		{
			name: "Cold standby failing over: no claim yet, seeded though serving",
			in:   StandbyInput{Points: points, Served: true, Claims: []StandbyClaim{claim("a-0", false, false)}},
			want: StandbyDecision{Source: &newer, Seed: []string{"a-0"}, Hold: true, Reason: StandbySeeding},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := DecideStandby(tc.in)
			if (got.Source == nil) != (tc.want.Source == nil) || got.Source != nil && got.Source.Name != tc.want.Source.Name ||
				!slices.Equal(got.Delete, tc.want.Delete) || !slices.Equal(got.Seed, tc.want.Seed) ||
				got.Hold != tc.want.Hold || got.Reason != tc.want.Reason {
				t.Errorf("DecideStandby =\n %s\nwant\n %s", describe(got), describe(tc.want))
			}
		})
	}
}

// TestDecideStandbyInvariants checks every combination of up to three
// claims: only claims of the input are named; a served standby with a claim
// loses none; nothing is deleted or seeded without a clean source; claims
// are never deleted and seeded in the same step; a standby being changed is
// held.
func TestDecideStandbyInvariants(t *testing.T) {
	pointSets := [][]v1alpha1.RecoveryPoint{nil, {snap(pt(0, "r"))}, {snap(pt(0, "cr"))}, {snap(pt(0, "cr")), snap(pt(15, "cr"))}}
	seeded := []string{"", pt(0, "").Name, pt(15, "").Name, "p-forged"}
	states := []StandbyClaim{{Exists: false}, {Exists: true}, {Exists: true, OnRecord: true}}
	n := 0
	for _, points := range pointSets {
		for _, from := range seeded {
			for _, served := range []bool{false, true} {
				for count := 0; count <= 3; count++ {
					combos := 1
					for range count {
						combos *= len(states)
					}
					for c := range combos {
						var claims []StandbyClaim
						names := map[string]bool{}
						anyExists := false
						for i, x := 0, c; i < count; i, x = i+1, x/len(states) {
							s := states[x%len(states)]
							s.Name = string(rune('a'+i)) + "-0"
							claims = append(claims, s)
							names[s.Name] = true
							anyExists = anyExists || s.Exists
						}
						in := StandbyInput{Points: points, SeededFrom: from, Served: served, Claims: claims}
						d := DecideStandby(in)
						n++
						for _, name := range append(slices.Clone(d.Delete), d.Seed...) {
							if !names[name] {
								t.Fatalf("%+v: names claim %q not in the input", in, name)
							}
						}
						if served && anyExists && (len(d.Delete) > 0 || len(d.Seed) > 0) {
							t.Fatalf("%+v: a served standby's claims changed: %s", in, describe(d))
						}
						if d.Source == nil && (len(d.Delete) > 0 || len(d.Seed) > 0 || d.Hold) {
							t.Fatalf("%+v: changes without a clean source: %s", in, describe(d))
						}
						if d.Source != nil && (!d.Source.Clean || !d.Source.Ready) {
							t.Fatalf("%+v: source %s is not clean and ready", in, d.Source.Name)
						}
						if len(d.Delete) > 0 && len(d.Seed) > 0 {
							t.Fatalf("%+v: deletes and seeds at once: %s", in, describe(d))
						}
						if (len(d.Delete) > 0 || len(d.Seed) > 0) != d.Hold {
							t.Fatalf("%+v: hold %v with changes %s", in, d.Hold, describe(d))
						}
					}
				}
			}
		}
	}
	t.Logf("%d inputs", n)
}

func describe(d StandbyDecision) string {
	src := "<nil>"
	if d.Source != nil {
		src = d.Source.Name
	}
	return "source " + src + " delete " + stringsOf(d.Delete) + " seed " + stringsOf(d.Seed) + " hold " + map[bool]string{true: "yes", false: "no"}[d.Hold] + " reason " + d.Reason
}

func stringsOf(s []string) string {
	out := "["
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out + "]"
}
