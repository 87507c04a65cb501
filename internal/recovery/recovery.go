// Package recovery decides when an environment takes a recovery point and
// which points its retention deletes: a pure function of the points on
// record, the schedule and the environment's state, so that every rule is a
// table test. The controller (controllers/recovery.go) gathers the Input,
// creates and deletes the VolumeSnapshots, and records the points in
// status.recovery.
//
// # Rules
//
//   - A point is due when there is none, or interval has passed since the
//     newest was taken. A point whose snapshots are not ready does not hold
//     the schedule up: a failing driver is reported, not waited for.
//   - A point is clean when the environment was Ready (at its current
//     generation) and not fenced when it was taken; a restore uses, by
//     default, the newest clean point whose snapshots are all ready.
//   - While fenced, points are still taken (unclean: they record what the
//     fenced workloads did to the data) until keep of them were taken since
//     the fence, and none is deleted: a fenced environment's snapshots are
//     evidence.
//   - Not fenced: the newest keep clean and ready points are kept, and so is
//     every point newer than the oldest of them; of the others (older, or
//     unclean ones beyond keep) the oldest go first. With fewer than keep
//     clean points nothing clean is deleted, and unclean ones are bounded to
//     keep.
package recovery

import (
	"slices"
	"time"

	"github.com/careplane/careplane/api/v1alpha1"
)

// Input is what the decision reads.
type Input struct {
	// Now is the controller's clock.
	Now time.Time
	// Interval and Keep are spec.recovery's.
	Interval time.Duration
	Keep     int
	// Points are the points on record (status.recovery.points), oldest
	// first.
	Points []v1alpha1.RecoveryPoint
	// Ready: the environment's Ready condition is True at its current
	// generation.
	Ready bool
	// Fenced: a fence is on record; FencedAt is when it began.
	Fenced   bool
	FencedAt time.Time
}

// Decision is what to do now.
type Decision struct {
	// Take says to take a point now, named Name, clean or not.
	Take  bool
	Name  string
	Clean bool
	// Paused: a point is due but the fence has taken keep already.
	Paused bool
	// Delete names the points whose snapshots retention deletes.
	Delete []string
	// NextAt is when the next point is due (after the one taken now).
	NextAt time.Time
}

// PointName names a point taken at t: p-YYYYMMDD-HHMMSS (UTC), a label
// value that sorts by time.
func PointName(t time.Time) string { return "p-" + t.UTC().Format("20060102-150405") }

// Decide applies the package's rules.
func Decide(in Input) Decision {
	var d Decision
	newest := time.Time{}
	if n := len(in.Points); n > 0 {
		newest = in.Points[n-1].TakenAt.Time
	}
	due := newest.IsZero() || !in.Now.Before(newest.Add(in.Interval))
	if due && in.Fenced {
		since := 0
		for _, p := range in.Points {
			if !p.TakenAt.Time.Before(in.FencedAt) {
				since++
			}
		}
		if since >= in.Keep {
			due, d.Paused = false, true
		}
	}
	points := in.Points
	if due {
		name := PointName(in.Now)
		// Not again when taken this very second already.
		if !slices.ContainsFunc(in.Points, func(p v1alpha1.RecoveryPoint) bool { return p.Name == name }) {
			d.Take, d.Name, d.Clean = true, name, in.Ready && !in.Fenced
			newest = in.Now
		}
	}
	d.NextAt = newest.Add(in.Interval)
	if newest.IsZero() {
		d.NextAt = in.Now
	}
	if in.Fenced {
		return d
	}
	d.Delete = retire(points, in.Keep)
	return d
}

// retire names the points retention deletes (see the package rules).
func retire(points []v1alpha1.RecoveryPoint, keep int) []string {
	var clean []int
	for i, p := range points {
		if p.Clean && p.Ready {
			clean = append(clean, i)
		}
	}
	oldestKept := 0
	if len(clean) >= keep {
		oldestKept = clean[len(clean)-keep]
	}
	var out []string
	unclean := 0
	for i := len(points) - 1; i >= 0; i-- {
		p := points[i]
		restorable := p.Clean && p.Ready
		switch {
		case i < oldestKept:
			out = append(out, p.Name)
		case !restorable:
			unclean++
			if unclean > keep {
				out = append(out, p.Name)
			}
		}
	}
	slices.Reverse(out)
	return out
}
