package controllers

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// TestTrafficNowIsWhereTheFrontRoutes: the failover decision's "where
// traffic goes now" is where this process pointed the front, else what the
// cached front routes to, and the status only when the front says nothing.
// A status that missed a move (its write lost to a conflict) read as the
// truth undid a failback for the whole anti-flap hold
// (TestFailoverWarmOnFence, under load).
func TestTrafficNowIsWhereTheFrontRoutes(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	now := t0.Add(time.Minute)
	env := sampleEnv("traffic")
	env.UID = "uid-1"
	env.Status.ActiveSite = v1alpha1.SiteStandby
	env.Status.Failover = &v1alpha1.FailoverStatus{SwitchedAt: &metav1.MicroTime{Time: t0}}
	slice := func(svc, site string) client.Object {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "traffic", Name: svc + build.FrontEndpointSliceSuffix,
			Labels: map[string]string{v1alpha1.LabelEnvironment: "traffic", build.LabelActiveSite: site}}}
	}
	for _, tc := range []struct {
		name      string
		slices    []client.Object
		remember  v1alpha1.Site // where this process pointed the front, when remembers
		remembers bool
		otherUID  bool
		want      v1alpha1.Site
		wantSince time.Time
	}{
		{name: "the status missed a failback", slices: []client.Object{slice("call-handling", "primary"), slice("referral", "primary")},
			want: v1alpha1.SitePrimary, wantSince: now},
		{name: "front and status agree", slices: []client.Object{slice("call-handling", "standby"), slice("referral", "standby")},
			want: v1alpha1.SiteStandby, wantSince: t0},
		{name: "no front yet", want: v1alpha1.SiteStandby, wantSince: t0},
		{name: "a front half moved", slices: []client.Object{slice("call-handling", "primary"), slice("referral", "standby")},
			want: v1alpha1.SiteStandby, wantSince: t0},
		{name: "no site serves", slices: []client.Object{slice("call-handling", ""), slice("referral", "")}, want: "", wantSince: now},
		{name: "the cache behind this process's move", slices: []client.Object{slice("call-handling", "standby"), slice("referral", "standby")},
			remember: v1alpha1.SitePrimary, remembers: true, want: v1alpha1.SitePrimary, wantSince: t0.Add(30 * time.Second)},
		{name: "a namesake's memory", slices: []client.Object{slice("call-handling", "standby"), slice("referral", "standby")},
			remember: v1alpha1.SitePrimary, remembers: true, otherUID: true, want: v1alpha1.SiteStandby, wantSince: t0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &HealthEnvironmentReconciler{Client: fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(tc.slices...).Build()}
			if tc.remembers {
				other := env.DeepCopy()
				if tc.otherUID {
					other.UID = "uid-0"
				}
				r.front.remember(other, tc.remember, t0.Add(30*time.Second))
			}
			site, since, err := r.trafficNow(context.Background(), newScope(env, now))
			if err != nil {
				t.Fatal(err)
			}
			if site != tc.want || !since.Equal(tc.wantSince) {
				t.Errorf("trafficNow = %q since %s, want %q since %s", site, since, tc.want, tc.wantSince)
			}
		})
	}
}

// TestFrontMemoryMovesSinceOnlyOnASwitch: pointing the front where it
// already points keeps when it moved there (the anti-flap hold counts from
// the switch); a switch, or a namesake, starts afresh.
func TestFrontMemoryMovesSinceOnlyOnASwitch(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	env := sampleEnv("memory")
	env.UID = "uid-1"
	var f frontMemory
	f.remember(env, v1alpha1.SiteStandby, t0)
	f.remember(env, v1alpha1.SiteStandby, t0.Add(time.Minute))
	if st, ok := f.recall(env); !ok || st.site != v1alpha1.SiteStandby || !st.since.Equal(t0) {
		t.Errorf("after pointing at the standby twice: %+v, %v; want standby since %s", st, ok, t0)
	}
	f.remember(env, v1alpha1.SitePrimary, t0.Add(2*time.Minute))
	if st, _ := f.recall(env); st.site != v1alpha1.SitePrimary || !st.since.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("after a failback: %+v; want primary since the failback", st)
	}
	f.remember(env, v1alpha1.SiteStandby, t0.Add(1234567*time.Nanosecond))
	if st, _ := f.recall(env); !st.since.Equal(t0.Add(1234 * time.Microsecond)) {
		t.Errorf("remembered since %s; want it to the microsecond, as the status holds it (else every reconcile rewrites the status)", st.since)
	}
	namesake := env.DeepCopy()
	namesake.UID = "uid-2"
	if _, ok := f.recall(namesake); ok {
		t.Error("a recreated namesake recalls its predecessor's front")
	}
	f.forget(env.Name)
	if _, ok := f.recall(env); ok {
		t.Error("a deleted environment's front is still remembered")
	}
}

// failedBackFixture is an environment just failed back to its primary
// (the standby was rolling, so not Ready): the front routes to the primary
// and the standby is Ready again, but the status still says Standby, its
// write lost to a conflict (or the cache behind it).
func failedBackFixture(t *testing.T, frontSite string) (*HealthEnvironmentReconciler, *scope) {
	t.Helper()
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	env := sampleEnv("flap")
	env.UID = "uid-flap"
	env.Spec.Failover = v1alpha1.Failover{Standby: v1alpha1.StandbyWarm, Trigger: v1alpha1.TriggerAutomatic}
	data, err := build.RevisionData(env.Spec.Services)
	if err != nil {
		t.Fatal(err)
	}
	rev := &appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Namespace: "flap", Name: build.RevisionName(env, data)},
		Data: runtime.RawExtension{Raw: data}, Revision: 1}
	env.Status.KnownGoodRevision = rev.Name
	env.Status.ActiveSite = v1alpha1.SiteStandby
	env.Status.Failover = &v1alpha1.FailoverStatus{SwitchedAt: &metav1.MicroTime{Time: now.Add(-10 * time.Second)},
		PrimaryReadySince: &metav1.MicroTime{Time: now.Add(-5 * time.Second)}}
	standby := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "flap-standby", Name: "call-handling", Generation: 2},
		Spec:   appsv1.DeploymentSpec{Replicas: ptr.To(int32(2))},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2}}
	objs := []client.Object{rev, standby}
	for _, svc := range env.Spec.Services {
		objs = append(objs, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "flap", Name: svc.Name + build.FrontEndpointSliceSuffix,
			Labels: map[string]string{v1alpha1.LabelEnvironment: "flap", build.LabelActiveSite: frontSite}}})
	}
	r := &HealthEnvironmentReconciler{Client: fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(objs...).Build()}
	s := newScope(env, now)
	for _, svc := range env.Spec.Services {
		s.services = append(s.services, v1alpha1.ServiceStatus{Name: svc.Name, Site: v1alpha1.SitePrimary, Replicas: svc.ReplicaCount(), ReadyReplicas: svc.ReplicaCount()})
	}
	return r, s
}

// TestAFailbackTheStatusMissedStays: the next decision after a failback
// whose status write was lost keeps traffic on the primary. Read from the
// status, it held traffic on the standby, Ready again, for the anti-flap
// hold (TestFailoverWarmOnFence, in CI under load).
func TestAFailbackTheStatusMissedStays(t *testing.T) {
	r, s := failedBackFixture(t, build.SiteLabelPrimary)
	if err := r.decideTraffic(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if d := s.decision; d.Site != v1alpha1.SitePrimary || d.Failover || d.Failback {
		t.Errorf("decision = %+v; want traffic kept on the primary, no switch", *d)
	}
}

// TestAFailbackTheCacheMissedStays: so does the decision after a failback
// the cache has not caught up with (the front still routing to the standby
// there): this process remembers where it pointed the front.
func TestAFailbackTheCacheMissedStays(t *testing.T) {
	r, s := failedBackFixture(t, build.SiteLabelStandby)
	r.front.remember(s.env, v1alpha1.SitePrimary, s.now.Add(-time.Second))
	if err := r.decideTraffic(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if d := s.decision; d.Site != v1alpha1.SitePrimary || d.Failover || d.Failback {
		t.Errorf("decision = %+v; want traffic kept on the primary, no switch", *d)
	}
	if got := s.status.Failover.SwitchedAt; got == nil || !got.Time.Equal(s.now.Add(-time.Second)) {
		t.Errorf("status.failover.switchedAt = %v, want the failback's time", got)
	}
}
