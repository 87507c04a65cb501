package recovery

import (
	"github.com/careplane/careplane/api/v1alpha1"
)

// The standby's data: which recovery point a standby's volumes are seeded
// from, and when careplane replaces them (DecideStandby). The controller
// (controllers/standbydata.go) gathers the claims, makes the copies of the
// point's snapshots in the standby namespace, creates and deletes the
// standby's claims and records what they hold in
// status.failover.standbyData.
//
// # Rules
//
//   - The source is the newest point on record that is clean and ready and
//     has snapshots (StandbySource). Only points on record count: a snapshot
//     whose labels say "clean" is not a point unless its UID is in
//     status.recovery.
//   - Without a source, nothing is seeded or deleted: the standby's claims
//     are made empty by its StatefulSets, as without spec.recovery.
//   - A standby that serves traffic, or has served it with claims still on
//     record, keeps every claim it has: they hold writes made there, which
//     are data, not a copy. Only when it has none of its claims (a Cold
//     standby failing over for the first time) are they seeded, from the
//     source. (The gatherer puts every claim that serves on record, and
//     counts a standby whose served claims are all gone — deleted by a
//     person after the incident — as not served.)
//   - Otherwise the standby's claims must be exactly the source's copies:
//     each claim that exists and is not on record as seeded from the source
//     (another point's, or one careplane did not create) is deleted, the
//     standby's StatefulSets held at zero replicas meanwhile; once none is
//     left, the missing claims are seeded from the source. The standby is
//     held at zero until every claim is created.
//   - Only claims of the standby namespace are ever named: the primary's
//     claims are not an input.

// StandbyInput is what the standby's data decision reads.
type StandbyInput struct {
	// Points are the points on record (status.recovery.points), oldest
	// first.
	Points []v1alpha1.RecoveryPoint
	// SeededFrom is the point the claims on record were seeded from
	// (status.failover.standbyData.dataFrom); "" for none.
	SeededFrom string
	// Claims are the claims the standby's StatefulSets use, each as found
	// in the standby namespace.
	Claims []StandbyClaim
	// Served: the standby serves traffic now, or has served it with claims
	// that are still on record.
	Served bool
}

// StandbyClaim is one claim of the standby, as found.
type StandbyClaim struct {
	Name string
	// Exists: a claim of that name is in the standby namespace (also one
	// being deleted).
	Exists bool
	// OnRecord: its UID is one careplane recorded creating from
	// SeededFrom.
	OnRecord bool
}

// StandbyDecision is what to do with the standby's claims now.
type StandbyDecision struct {
	// Source is the point to seed from; nil when there is none.
	Source *v1alpha1.RecoveryPoint
	// Delete names the claims to delete (standby claims only).
	Delete []string
	// Seed names the claims to create from Source.
	Seed []string
	// Hold: keep the standby's StatefulSets at zero replicas.
	Hold bool
	// Reason says why, for the log and the status.
	Reason string
}

// Reasons of a StandbyDecision.
const (
	StandbyNoCleanPoint = "NoCleanPoint"
	StandbyServed       = "ServedTraffic"
	StandbyCurrent      = "Current"
	StandbyReplacing    = "Replacing"
	StandbySeeding      = "Seeding"
)

// StandbySource is the newest point on record that is clean, ready and has
// snapshots; false when there is none.
func StandbySource(points []v1alpha1.RecoveryPoint) (v1alpha1.RecoveryPoint, bool) {
	for i := len(points) - 1; i >= 0; i-- {
		if p := points[i]; p.Clean && p.Ready && len(p.Snapshots) > 0 {
			return p, true
		}
	}
	return v1alpha1.RecoveryPoint{}, false
}

// DecideStandby applies the rules above.
func DecideStandby(in StandbyInput) StandbyDecision {
	src, ok := StandbySource(in.Points)
	if !ok {
		return StandbyDecision{Reason: StandbyNoCleanPoint}
	}
	d := StandbyDecision{Source: &src}
	var existing, missing []string
	for _, c := range in.Claims {
		if c.Exists {
			existing = append(existing, c.Name)
		} else {
			missing = append(missing, c.Name)
		}
	}
	if in.Served {
		if len(existing) > 0 {
			d.Reason = StandbyServed
			return d
		}
		d.Seed, d.Hold, d.Reason = missing, len(missing) > 0, StandbySeeding
		return d
	}
	current := in.SeededFrom == src.Name
	for _, c := range in.Claims {
		if c.Exists && (!c.OnRecord || !current) {
			d.Delete = append(d.Delete, c.Name)
		}
	}
	switch {
	case len(d.Delete) > 0:
		d.Hold, d.Reason = true, StandbyReplacing
	case len(missing) > 0:
		d.Seed, d.Hold, d.Reason = missing, true, StandbySeeding
	default:
		d.Reason = StandbyCurrent
	}
	return d
}
