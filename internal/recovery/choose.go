package recovery

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// The restore's choice of a recovery point, and the claims it restores from
// it: pure functions used by the operator (controllers/restore.go) and by
// `kubectl careplane restore --dry-run` alike.
//
// # Rules
//
//   - By default a restore uses the newest point that is clean and ready and
//     was taken before the fence began.
//   - spec.isolation.restoreFrom.recoveryPoint names one point: it must be on
//     record, and clean, ready and taken before the fence too (a point taken
//     since holds what the fenced workloads wrote).
//   - spec.isolation.restoreFrom.before picks the newest clean, ready point
//     taken before that time (and before the fence).
//   - A point counts as ready only when every one of its snapshots is on
//     record in status.recovery, exists with the UID on record and is ready
//     to use: anyone who may create VolumeSnapshots can forge their labels,
//     and only careplane writes the status.
//   - Anything else is no choice, with a reason a responder can act on: the
//     restore is blocked and the fence stays.

// SnapshotState is what the cluster holds of one VolumeSnapshot, by name.
type SnapshotState struct {
	// UID of the VolumeSnapshot of that name.
	UID string
	// ReadyToUse is its status.readyToUse.
	ReadyToUse bool
}

// ChooseInput is what the choice reads.
type ChooseInput struct {
	// Points are status.recovery.points, oldest first.
	Points []v1alpha1.RecoveryPoint
	// FencedAt is when the fence being lifted began.
	FencedAt time.Time
	// From is spec.isolation.restoreFrom (nil: the default).
	From *v1alpha1.RestoreFrom
	// Snapshots are the VolumeSnapshots of the primary namespace, by name.
	Snapshots map[string]SnapshotState
}

// Choice is the point a restore uses.
type Choice struct {
	Point v1alpha1.RecoveryPoint
	// By says how it was chosen, for messages: "the newest clean point
	// before the fence", "named", "the newest clean point before <time>".
	By string
	// DataLost is the data time the restore loses: from the point to the
	// fence.
	DataLost time.Duration
}

// NoPointError says why no point can be used.
type NoPointError struct{ Reason string }

func (e *NoPointError) Error() string { return e.Reason }

func noPoint(format string, args ...any) error {
	return &NoPointError{Reason: fmt.Sprintf(format, args...)}
}

// usable says why p cannot be restored from, or "".
func usable(p v1alpha1.RecoveryPoint, fencedAt time.Time, snaps map[string]SnapshotState) string {
	switch {
	case !p.TakenAt.Time.Before(fencedAt):
		return fmt.Sprintf("it was taken at %s, not before the fence began at %s", rfc(p.TakenAt.Time), rfc(fencedAt))
	case !p.Clean:
		return "it is not clean (the environment was not Ready, or was fenced, when it was taken)"
	case len(p.Snapshots) == 0:
		return "it has no snapshots on record"
	}
	for _, s := range p.Snapshots {
		live, ok := snaps[s.Name]
		switch {
		case !ok:
			return fmt.Sprintf("its VolumeSnapshot %s is gone", s.Name)
		case live.UID != s.UID:
			return fmt.Sprintf("its VolumeSnapshot %s is not the one on record (another UID)", s.Name)
		case !live.ReadyToUse:
			return fmt.Sprintf("its VolumeSnapshot %s is not ready to use", s.Name)
		}
	}
	return ""
}

// Choose applies the rules above.
func Choose(in ChooseInput) (Choice, error) {
	if in.FencedAt.IsZero() {
		return Choice{}, noPoint("the fence's start is not on record, so no recovery point can be shown to predate it")
	}
	if in.From != nil && in.From.RecoveryPoint != "" {
		name := in.From.RecoveryPoint
		i := slices.IndexFunc(in.Points, func(p v1alpha1.RecoveryPoint) bool { return p.Name == name })
		if i < 0 {
			return Choice{}, noPoint("isolation.restoreFrom.recoveryPoint %q is not a recovery point of this environment (see `kubectl careplane recovery-points` or status.recovery.points)", name)
		}
		p := in.Points[i]
		if why := usable(p, in.FencedAt, in.Snapshots); why != "" {
			return Choice{}, noPoint("recovery point %s cannot be restored from: %s", name, why)
		}
		return choice(p, "named in isolation.restoreFrom.recoveryPoint", in.FencedAt), nil
	}
	limit, by := in.FencedAt, "the newest clean point before the fence"
	if in.From != nil && in.From.Before != nil {
		if b := in.From.Before.Time; b.Before(limit) {
			limit = b
		}
		by = "the newest clean point before " + rfc(in.From.Before.Time)
	}
	var skipped []string
	for i := len(in.Points) - 1; i >= 0; i-- {
		p := in.Points[i]
		if !p.TakenAt.Time.Before(limit) {
			continue
		}
		why := usable(p, in.FencedAt, in.Snapshots)
		if why == "" {
			return choice(p, by, in.FencedAt), nil
		}
		if p.Clean {
			skipped = append(skipped, p.Name+": "+why)
		}
	}
	msg := fmt.Sprintf("no clean, ready recovery point was taken before %s", rfc(limit))
	if len(skipped) > 0 {
		msg += " (" + strings.Join(skipped, "; ") + ")"
	}
	return Choice{}, noPoint("%s", msg)
}

func choice(p v1alpha1.RecoveryPoint, by string, fencedAt time.Time) Choice {
	return Choice{Point: p, By: by, DataLost: fencedAt.Sub(p.TakenAt.Time)}
}

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// RestoredClaim is one claim a restore creates from a snapshot.
type RestoredClaim struct {
	// Service and Volume of the spec, and the replica's Ordinal.
	Service, Volume string
	Ordinal         int32
	// Claim is the new claim's name; the restored StatefulSet adopts it.
	Claim string
	// Snapshot is the VolumeSnapshot it is restored from, and FromClaim the
	// claim that snapshot was taken of.
	Snapshot, FromClaim string
}

// claimPattern matches the claims of volume of replica ordinal of service
// svc in any data generation.
func claimPattern(volume, svc string, ordinal int32) *regexp.Regexp {
	return regexp.MustCompile("^" + regexp.QuoteMeta(volume+"-"+svc) + "(-r[0-9a-z]+)?-" + strconv.Itoa(int(ordinal)) + "$")
}

// snapshotsFor returns point's snapshots of volume of replica ordinal of
// service svc, taken in whatever data generation the primary then ran.
func snapshotsFor(point v1alpha1.RecoveryPoint, svc, volume string, ordinal int32) []v1alpha1.PointSnapshot {
	re := claimPattern(volume, svc, ordinal)
	var found []v1alpha1.PointSnapshot
	for _, s := range point.Snapshots {
		if re.MatchString(s.Claim) {
			found = append(found, s)
		}
	}
	return found
}

// SnapshotFor returns point's snapshot of volume of replica ordinal of
// service svc, whatever data generation the primary ran when it was taken
// (after a restore from a recovery point its claims are
// <volume>-<service>-<generation>-<ordinal>); false when the point holds
// none, or more than one that could be it. The restore and the standby's
// seeding both find a point's data with it.
func SnapshotFor(point v1alpha1.RecoveryPoint, svc, volume string, ordinal int32) (v1alpha1.PointSnapshot, bool) {
	found := snapshotsFor(point, svc, volume, ordinal)
	if len(found) != 1 {
		return v1alpha1.PointSnapshot{}, false
	}
	return found[0], true
}

// RestoreClaims lists the claims a restore of services into data generation
// gen creates from point: one per volume and replica of each service with
// volumes, each from the point's snapshot of the same volume and replica
// (whatever generation it was taken in). A replica or volume the point has
// no snapshot of, or more than one, is an error: its data would come from
// nowhere, or from a guess.
func RestoreClaims(services []v1alpha1.Service, gen string, point v1alpha1.RecoveryPoint) ([]RestoredClaim, error) {
	var out []RestoredClaim
	var missing []string
	for _, svc := range services {
		if !svc.Stateful() {
			continue
		}
		sts := build.StatefulSetName(svc.Name, gen)
		for i := range svc.ReplicaCount() {
			for _, v := range svc.Volumes {
				found := snapshotsFor(point, svc.Name, v.Name, i)
				switch len(found) {
				case 1:
					out = append(out, RestoredClaim{Service: svc.Name, Volume: v.Name, Ordinal: i,
						Claim: build.ClaimName(v.Name, sts, i), Snapshot: found[0].Name, FromClaim: found[0].Claim})
				case 0:
					missing = append(missing, fmt.Sprintf("no snapshot of volume %s of %s replica %d", v.Name, svc.Name, i))
				default:
					missing = append(missing, fmt.Sprintf("%d snapshots that could be volume %s of %s replica %d", len(found), v.Name, svc.Name, i))
				}
			}
		}
	}
	if len(missing) > 0 {
		return nil, noPoint("recovery point %s does not hold the volumes the restore needs: %s", point.Name, strings.Join(missing, "; "))
	}
	return out, nil
}
