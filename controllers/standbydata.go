package controllers

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/recovery"
)

// +kubebuilder:rbac:groups=snapshot.storage.k8s.io,resources=volumesnapshotcontents,verbs=get;create;delete
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=create;delete

// standbyPoll is how soon the standby's data is looked at again while it is
// being seeded: the copies' readiness is not watched.
const standbyPoll = 2 * time.Second

// reconcileStandbyData seeds the standby's claims from the newest clean
// recovery point (recovery.DecideStandby), before the standby's services are
// written: it sets s.standbyHold when the standby's StatefulSets must stay
// at zero replicas meanwhile, and records what the claims hold in
// status.failover.standbyData.
//
// A snapshot is namespaced, so a point's snapshot is used in the standby
// namespace through a copy: a pre-provisioned VolumeSnapshotContent with the
// source content's snapshot handle and deletionPolicy Retain (deleting the
// copy never deletes the snapshot), bound to a VolumeSnapshot in the standby
// namespace, from which the claim is provisioned. The copies are deleted
// once the claims are bound, and owned by the environment otherwise.
//
// Only the standby namespace's claims are ever deleted: they are copies of a
// point, until the standby serves traffic; from then on they are data and
// kept (the rule's).
func (r *HealthEnvironmentReconciler) reconcileStandbyData(ctx context.Context, s *scope) error {
	env := s.env
	services := statefulServices(s.servicesFor(v1alpha1.SiteStandby))
	if env.Spec.Recovery == nil || len(services) == 0 {
		if s.status.Failover != nil && env.Spec.Recovery == nil {
			s.status.Failover.StandbyData = nil
		}
		return nil
	}
	if s.status.Failover == nil {
		s.status.Failover = &v1alpha1.FailoverStatus{}
	}
	rec := s.status.Failover.StandbyData
	if rec == nil {
		rec = &v1alpha1.StandbyData{}
		s.status.Failover.StandbyData = rec
	}
	ns := s.names.Standby
	now := metav1.NewTime(s.now)
	serving := s.env.Status.ActiveSite == v1alpha1.SiteStandby || s.decision != nil && s.decision.ServingFromStandby()

	// The claims the standby's StatefulSets use, as the cache holds them.
	onRecord := map[string]string{}
	for _, c := range rec.Claims {
		onRecord[c.Name] = c.UID
	}
	found := map[string]*corev1.PersistentVolumeClaim{}
	var reseen []v1alpha1.SeededClaim
	var seededAt metav1.Time
	source, _ := recovery.StandbySource(pointsOf(env)) // none: Name "", which nothing was seeded from
	in := recovery.StandbyInput{Points: pointsOf(env), SeededFrom: rec.DataFrom}
	for _, svc := range services {
		for i := range svc.ReplicaCount() {
			for _, v := range svc.Volumes {
				name := build.ClaimName(v.Name, svc.Name, i)
				pvc := &corev1.PersistentVolumeClaim{}
				err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, pvc, readOnly)
				if err != nil && !apierrors.IsNotFound(err) {
					return fmt.Errorf("reading claim %s/%s: %w", ns, name, err)
				}
				c := recovery.StandbyClaim{Name: name, Exists: err == nil}
				if err == nil {
					found[name] = pvc
					c.OnRecord = onRecord[name] == string(pvc.UID)
					if at, ok := r.seeds.made(env, name, pvc.UID, source.Name); !c.OnRecord && ok {
						// This process seeded it from the source, and the
						// status read is older than that.
						c.OnRecord = true
						reseen = append(reseen, v1alpha1.SeededClaim{Name: name, UID: string(pvc.UID)})
						if seededAt.Before(&at) {
							seededAt = at
						}
					}
				}
				in.Claims = append(in.Claims, c)
			}
		}
	}
	// Claims on record that are gone are no longer on record.
	rec.Claims = slices.DeleteFunc(rec.Claims, func(c v1alpha1.SeededClaim) bool {
		pvc, ok := found[c.Name]
		return !ok || string(pvc.UID) != c.UID
	})
	if len(reseen) > 0 {
		rec.Claims = append(rec.Claims, reseen...)
		if rec.DataFrom != source.Name {
			rec.DataFrom, rec.DataTakenAt = source.Name, ptrTo(source.TakenAt)
			in.SeededFrom = source.Name
		}
		// Every claim there and on record: the seed this process finished.
		if !slices.ContainsFunc(in.Claims, func(c recovery.StandbyClaim) bool { return !c.Exists || !c.OnRecord }) {
			if rec.SeededAt == nil {
				rec.SeededAt = &seededAt
			}
			rec.RefreshingTo = ""
		}
	}
	if serving {
		// Every claim that serves traffic is data from now on, seeded or
		// not: on record, so that it is kept.
		for i := range in.Claims {
			c := &in.Claims[i]
			if c.Exists && !c.OnRecord {
				rec.Claims = append(rec.Claims, v1alpha1.SeededClaim{Name: c.Name, UID: string(found[c.Name].UID)})
				c.OnRecord = true
			}
		}
		if rec.ServedSince == nil && len(rec.Claims) > 0 {
			rec.ServedSince = &now
		}
	} else if len(rec.Claims) == 0 {
		// The claims that served are gone (deleted by someone after the
		// incident): a fresh copy may be seeded.
		rec.ServedSince = nil
	}
	in.Served = serving || rec.ServedSince != nil

	d := recovery.DecideStandby(in)
	s.standbyHold = d.Hold
	logger := log.FromContext(ctx)
	switch d.Reason {
	case recovery.StandbyReplacing:
		rec.RefreshingTo = d.Source.Name
		if !r.standbyStopped(ctx, ns, services) {
			s.requeue(standbyPoll)
			return nil
		}
		for _, name := range d.Delete {
			pvc := found[name]
			if pvc.DeletionTimestamp != nil {
				continue
			}
			if err := r.Client.Delete(ctx, pvc.DeepCopy(), client.Preconditions{UID: &pvc.UID}); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
				return fmt.Errorf("deleting standby claim %s to refresh it from recovery point %s: %w", klog.KObj(pvc), d.Source.Name, err)
			}
			logger.Info("Deleted a standby claim to seed it from a newer clean recovery point; it was a copy, never the primary's",
				"claim", klog.KObj(pvc), "from", rec.DataFrom, "to", d.Source.Name)
		}
		s.requeue(standbyPoll)
		return nil
	case recovery.StandbySeeding:
		src := d.Source
		if rec.DataFrom != src.Name {
			*rec = v1alpha1.StandbyData{DataFrom: src.Name, DataTakenAt: ptrTo(src.TakenAt), RefreshingTo: src.Name}
		}
		done, err := r.seedClaims(ctx, s, ns, services, *src, d.Seed, rec)
		if err != nil {
			return err
		}
		if !done {
			s.requeue(standbyPoll)
			return nil
		}
		rec.SeededAt, rec.RefreshingTo = &now, ""
		s.standbyHold = false
		logger.Info("Seeded the standby's volumes from a clean recovery point", "point", src.Name, "claims", len(d.Seed))
	case recovery.StandbyCurrent:
		rec.RefreshingTo = ""
	}
	if serving && rec.ServedSince == nil && len(rec.Claims) > 0 {
		rec.ServedSince = &now
	}
	return r.pruneStandbyCopies(ctx, s, ns, found)
}

// requeue asks for the reconcile to come back within after.
func (s *scope) requeue(after time.Duration) {
	if s.requeueAfter == 0 || after < s.requeueAfter {
		s.requeueAfter = after
	}
}

// requeueWithin is the sooner of after and what this pass asked for with
// requeue; 0 when neither asks.
func (s *scope) requeueWithin(after time.Duration) time.Duration {
	if s.requeueAfter > 0 && (after == 0 || s.requeueAfter < after) {
		return s.requeueAfter
	}
	return after
}

// statefulServices are the services with volumes.
func statefulServices(services []v1alpha1.Service) []v1alpha1.Service {
	var out []v1alpha1.Service
	for _, svc := range services {
		if svc.Stateful() {
			out = append(out, svc)
		}
	}
	return out
}

// standbyStopped says the standby's StatefulSets run no pod, so that their
// claims can go.
func (r *HealthEnvironmentReconciler) standbyStopped(ctx context.Context, ns string, services []v1alpha1.Service) bool {
	for _, svc := range services {
		ss := &appsv1.StatefulSet{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: svc.Name}, ss, readOnly); err != nil {
			continue
		}
		if ss.Spec.Replicas == nil || *ss.Spec.Replicas != 0 || ss.Status.Replicas != 0 {
			return false
		}
	}
	return true
}

// seedClaims creates each named claim of the standby from its snapshot in
// point src, through a copy of the snapshot in ns, and records it; it says
// whether every one is created. A claim whose replica the point has no
// snapshot of is left to its StatefulSet (empty).
func (r *HealthEnvironmentReconciler) seedClaims(ctx context.Context, s *scope, ns string, services []v1alpha1.Service, src v1alpha1.RecoveryPoint, names []string, rec *v1alpha1.StandbyData) (bool, error) {
	done := true
	for _, svc := range services {
		for i := range svc.ReplicaCount() {
			for _, v := range svc.Volumes {
				name := build.ClaimName(v.Name, svc.Name, i)
				if !slices.Contains(names, name) {
					continue
				}
				// The point's snapshot of this volume and replica, taken
				// of the primary's claim of whatever data generation it
				// ran then (a restore renames the primary's claims).
				snap, ok := recovery.SnapshotFor(src, svc.Name, v.Name, i)
				if !ok {
					continue
				}
				copyName, size, ready, err := r.copySnapshot(ctx, s, ns, src, snap)
				if err != nil {
					return false, err
				}
				if !ready {
					done = false
					continue
				}
				uid, err := r.createSeededClaim(ctx, s, ns, svc, v, name, copyName, size, src.Name)
				if err != nil {
					return false, err
				}
				rec.Claims = append(rec.Claims, v1alpha1.SeededClaim{Name: name, UID: string(uid)})
				r.seeds.remember(s.env, name, uid, src.Name, metav1.NewTime(s.now))
			}
		}
	}
	return done, nil
}

// copyContentName is the name of the copy of a point's snapshot in the standby
// namespace: the VolumeSnapshotContent's, which is cluster-wide, starts with
// the namespace; the VolumeSnapshot keeps the snapshot's name.
func copyContentName(ns, snapshot string) string { return "careplane-" + ns + "-" + snapshot }

// copySnapshot makes the copy of snapshot ps of point p in ns (content and
// snapshot), from the source snapshot on record (its UID) and the content
// bound to it, and says whether the copy is ready, its name and the size a
// claim from it needs.
func (r *HealthEnvironmentReconciler) copySnapshot(ctx context.Context, s *scope, ns string, p v1alpha1.RecoveryPoint, ps v1alpha1.PointSnapshot) (string, resource.Quantity, bool, error) {
	var size resource.Quantity
	copyVS := &snapshotv1.VolumeSnapshot{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: ps.Name}, copyVS, readOnly)
	if err != nil && !apierrors.IsNotFound(err) {
		return "", size, false, fmt.Errorf("reading VolumeSnapshot %s/%s: %w", ns, ps.Name, err)
	}
	if err == nil {
		if copyVS.Spec.Source.VolumeSnapshotContentName == nil || *copyVS.Spec.Source.VolumeSnapshotContentName != copyContentName(ns, ps.Name) ||
			copyVS.Labels[v1alpha1.LabelRecoveryPoint] != p.Name {
			return "", size, false, fmt.Errorf("VolumeSnapshot %s/%s is not careplane's copy of recovery point %s; delete it", ns, ps.Name, p.Name)
		}
		st := copyVS.Status
		if st != nil && st.RestoreSize != nil {
			size = *st.RestoreSize
		}
		return ps.Name, size, st != nil && st.ReadyToUse != nil && *st.ReadyToUse, nil
	}

	// The source: the snapshot on record, by UID, ready, and the content
	// bound to it.
	primary := s.names.Primary
	vs := &snapshotv1.VolumeSnapshot{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: primary, Name: ps.Name}, vs, readOnly); err != nil {
		return "", size, false, fmt.Errorf("reading VolumeSnapshot %s/%s of recovery point %s: %w", primary, ps.Name, p.Name, err)
	}
	if string(vs.UID) != ps.UID || vs.Status == nil || vs.Status.BoundVolumeSnapshotContentName == nil ||
		vs.Status.ReadyToUse == nil || !*vs.Status.ReadyToUse {
		return "", size, false, fmt.Errorf("VolumeSnapshot %s/%s is not the ready snapshot of recovery point %s on record", primary, ps.Name, p.Name)
	}
	content := &snapshotv1.VolumeSnapshotContent{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: *vs.Status.BoundVolumeSnapshotContentName}, content); err != nil {
		return "", size, false, fmt.Errorf("reading VolumeSnapshotContent %s of %s: %w", *vs.Status.BoundVolumeSnapshotContentName, klog.KObj(vs), err)
	}
	if content.Spec.VolumeSnapshotRef.UID != vs.UID || content.Status == nil || content.Status.SnapshotHandle == nil {
		return "", size, false, fmt.Errorf("VolumeSnapshotContent %s is not bound to %s with a snapshot handle", content.Name, klog.KObj(vs))
	}

	labels := build.Labels(s.env, build.SiteLabelStandby)
	labels[v1alpha1.LabelRecoveryPoint] = p.Name
	owner := build.OwnerReference(s.env)
	owners := []metav1.OwnerReference{{APIVersion: *owner.APIVersion, Kind: *owner.Kind, Name: *owner.Name, UID: *owner.UID}}
	cname := copyContentName(ns, ps.Name)
	copyContent := &snapshotv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: cname, Labels: labels, OwnerReferences: owners},
		Spec: snapshotv1.VolumeSnapshotContentSpec{
			DeletionPolicy:          snapshotv1.VolumeSnapshotContentRetain,
			Driver:                  content.Spec.Driver,
			Source:                  snapshotv1.VolumeSnapshotContentSource{SnapshotHandle: content.Status.SnapshotHandle},
			VolumeSnapshotClassName: content.Spec.VolumeSnapshotClassName,
			SourceVolumeMode:        content.Spec.SourceVolumeMode,
			VolumeSnapshotRef:       corev1.ObjectReference{Namespace: ns, Name: ps.Name},
		},
	}
	if err := r.Client.Create(ctx, copyContent, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", size, false, fmt.Errorf("creating VolumeSnapshotContent %s, the standby's copy of %s: %w", cname, klog.KObj(vs), err)
	}
	copyVS = &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ps.Name, Labels: labels, OwnerReferences: owners},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source:                  snapshotv1.VolumeSnapshotSource{VolumeSnapshotContentName: &cname},
			VolumeSnapshotClassName: content.Spec.VolumeSnapshotClassName,
		},
	}
	if err := r.Client.Create(ctx, copyVS, client.FieldOwner(fieldOwner)); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", size, false, fmt.Errorf("creating VolumeSnapshot %s, the standby's copy of %s: %w", klog.KObj(copyVS), klog.KObj(vs), err)
	}
	log.FromContext(ctx).Info("Copied a recovery point's snapshot into the standby namespace", "snapshot", klog.KObj(vs), "copy", klog.KObj(copyVS))
	return ps.Name, size, false, nil
}

// createSeededClaim creates standby claim name of volume v of svc from the
// copy copyName, of v's size or the snapshot's if larger, labelled as the
// claims of svc's StatefulSet (which adopts it) and annotated with the
// point; it returns its UID.
func (r *HealthEnvironmentReconciler) createSeededClaim(ctx context.Context, s *scope, ns string, svc v1alpha1.Service, v v1alpha1.Volume, name, copyName string, size resource.Quantity, point string) (types.UID, error) {
	want := v.Size.Quantity()
	if size.Cmp(want) > 0 {
		want = size
	}
	mode := v.AccessMode
	if mode == "" {
		mode = corev1.ReadWriteOnce
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels:      build.ServiceLabels(s.env, build.SiteLabelStandby, svc.Name),
			Annotations: map[string]string{v1alpha1.LabelRecoveryPoint: point}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{mode},
			VolumeMode:       ptrTo(corev1.PersistentVolumeFilesystem),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: want}},
			StorageClassName: v.StorageClassName,
			DataSourceRef: &corev1.TypedObjectReference{APIGroup: ptrTo(snapshotv1.GroupName), Kind: "VolumeSnapshot",
				Name: copyName},
		},
	}
	if err := r.Client.Create(ctx, pvc, client.FieldOwner(fieldOwner)); err != nil {
		return "", fmt.Errorf("creating standby claim %s from recovery point %s: %w", klog.KObj(pvc), point, err)
	}
	return pvc.UID, nil
}

// pruneStandbyCopies deletes the copies of snapshots in ns that no claim
// needs any more: those of the point being refreshed to stay, and those of
// the point the standby holds until every claim on record is bound. A copy's
// content goes with it (deletionPolicy Retain: the source's snapshot stays).
// Only copies are deleted: careplane's labels, and the content name it gives
// a copy.
func (r *HealthEnvironmentReconciler) pruneStandbyCopies(ctx context.Context, s *scope, ns string, claims map[string]*corev1.PersistentVolumeClaim) error {
	rec := s.status.Failover.StandbyData
	if rec.DataFrom == "" && rec.RefreshingTo == "" {
		return nil // nothing was ever copied
	}
	needed := map[string]bool{rec.RefreshingTo: rec.RefreshingTo != ""}
	for _, c := range rec.Claims {
		if pvc, ok := claims[c.Name]; !ok || pvc.Status.Phase != corev1.ClaimBound {
			needed[rec.DataFrom] = true // being provisioned from its copy
		}
	}
	var copies snapshotv1.VolumeSnapshotList
	if err := r.Client.List(ctx, &copies, client.InNamespace(ns), client.MatchingLabels{v1alpha1.LabelEnvironment: s.env.Name}, readOnly); err != nil {
		return fmt.Errorf("listing VolumeSnapshots in %s: %w", ns, err)
	}
	for i := range copies.Items {
		c := &copies.Items[i]
		cname := copyContentName(ns, c.Name)
		if c.DeletionTimestamp != nil || needed[c.Labels[v1alpha1.LabelRecoveryPoint]] ||
			c.Spec.Source.VolumeSnapshotContentName == nil || *c.Spec.Source.VolumeSnapshotContentName != cname {
			continue
		}
		if err := r.Client.Delete(ctx, c.DeepCopy(), client.Preconditions{UID: &c.UID}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting VolumeSnapshot %s, a copy no claim needs: %w", klog.KObj(c), err)
		}
		content := &snapshotv1.VolumeSnapshotContent{ObjectMeta: metav1.ObjectMeta{Name: cname}}
		if err := r.Client.Delete(ctx, content); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting VolumeSnapshotContent %s, a copy no claim needs: %w", cname, err)
		}
		log.FromContext(ctx).Info("Deleted the standby's copy of a recovery point's snapshot", "copy", klog.KObj(c), "content", cname)
	}
	return nil
}

// newCleanPoint passes the status update in which the recovery point
// controller records a newer clean point, for an environment with a
// standby: its data is refreshed from it (the environment's own status
// writes pass no other predicate).
var newCleanPoint = predicate.Funcs{
	UpdateFunc: func(e ctrlevent.UpdateEvent) bool {
		oldEnv, ok1 := e.ObjectOld.(*v1alpha1.HealthEnvironment)
		newEnv, ok2 := e.ObjectNew.(*v1alpha1.HealthEnvironment)
		if !ok1 || !ok2 || !build.HasStandby(newEnv) || newEnv.Spec.Recovery == nil {
			return false
		}
		return !newestCleanAt(oldEnv).Equal(newestCleanAt(newEnv))
	},
	CreateFunc:  func(ctrlevent.CreateEvent) bool { return false },
	DeleteFunc:  func(ctrlevent.DeleteEvent) bool { return false },
	GenericFunc: func(ctrlevent.GenericEvent) bool { return false },
}

func newestCleanAt(env *v1alpha1.HealthEnvironment) time.Time {
	if env.Status.Recovery == nil || env.Status.Recovery.NewestCleanPointAt == nil {
		return time.Time{}
	}
	return env.Status.Recovery.NewestCleanPointAt.Time
}

// seedMemory is, by environment and claim name, the standby claim this
// process last created from a recovery point: its UID and the point. The
// claim's event wakes the next pass before the cache holds the status that
// records it; on that older status the claim would look like a stranger's,
// to be deleted under the standby's pod (TestAStaleStatusKeepsTheSeededClaim).
// A new leader reads the status as its cache first syncs it.
type seedMemory struct {
	mu sync.Mutex
	m  map[seedKey]seed
}

type seedKey struct{ env, claim string }

type seed struct {
	env   types.UID
	claim types.UID
	point string
	at    metav1.Time
}

func (m *seedMemory) remember(env *v1alpha1.HealthEnvironment, claim string, uid types.UID, point string, at metav1.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = map[seedKey]seed{}
	}
	m.m[seedKey{env.Name, claim}] = seed{env: env.UID, claim: uid, point: point, at: at}
}

// made says this process created claim uid of env from point, and when.
func (m *seedMemory) made(env *v1alpha1.HealthEnvironment, claim string, uid types.UID, point string) (metav1.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	got, ok := m.m[seedKey{env.Name, claim}]
	return got.at, ok && point != "" && got.env == env.UID && got.claim == uid && got.point == point
}

// forget drops what is remembered of the environment named name.
func (m *seedMemory) forget(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.m {
		if k.env == name {
			delete(m.m, k)
		}
	}
}
