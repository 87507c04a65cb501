package plugin

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	fakediscovery "k8s.io/client-go/discovery/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/fence"
)

// TestDryRunJudgesStandbyPodsByTheFencesStart: while a fence is on record,
// the dry run judges the standby's pods as the operator does, against the
// fence's start (fence.ReadStandby): a pod of careplane's ReplicaSet made
// before it, its image changed since, was tampered with and goes; one made
// after it was made by the control plane, whatever a registry mirror's
// webhook did to its image, and stays. Judged against a zero start, the dry
// run listed the second for deletion too.
func TestDryRunJudgesStandbyPodsByTheFencesStart(t *testing.T) {
	began := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	env := testEnv(func(e *v1alpha1.HealthEnvironment) {
		e.Spec.Failover = v1alpha1.Failover{Standby: v1alpha1.StandbyWarm, Trigger: v1alpha1.TriggerAutomatic}
	})
	owned := func(name string, uid types.UID) metav1.ObjectMeta {
		m := metav1.ObjectMeta{Name: name, UID: uid}
		m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "careplane.io/v1alpha1", Kind: "HealthEnvironment",
			Name: env.Name, UID: env.UID, Controller: ptr.To(true)}}
		return m
	}
	rec := fence.Record{ID: fence.NewID(began), Source: fence.SourceSpec}
	primary := &corev1.Namespace{ObjectMeta: owned("wales-111-primary", "uid-primary")}
	primary.Labels, primary.Annotations = rec.Labels(), rec.Annotations()
	standby := &corev1.Namespace{ObjectMeta: owned("wales-111-standby", "uid-standby")}

	const ns, image = "wales-111-standby", "registry.example/111/call-handling@sha256:aaaa"
	template := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "call-handling"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "call-handling", Image: image}}}}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "call-handling", UID: "uid-dep"},
		Spec: appsv1.DeploymentSpec{Template: template}}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "call-handling-5f7", UID: "uid-rs",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID, Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Template: template}}
	pod := func(name string, created time.Time) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name),
			CreationTimestamp: metav1.NewTime(created), Labels: template.Labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}},
			// Another image than the template's: changed in place, or
			// rewritten by admission.
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "call-handling", Image: "registry.example/111/call-handling:latest"}}}}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(env.DeepCopy(), primary, standby, dep, rs,
		pod("before-the-fence", began.Add(-time.Hour)), pod("after-the-fence", began.Add(time.Minute))).Build()
	o := &options{client: c, disc: &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}}
	st, err := o.gatherFenceState(context.Background(), env)
	if err != nil {
		t.Fatalf("gatherFenceState: %v", err)
	}
	deleted := map[string]bool{}
	for _, a := range PlanFence(st).Actions {
		if a.Verb == fence.VerbDelete && a.Kind == "Pod" && a.Namespace == ns {
			deleted[a.Name] = true
		}
	}
	if !deleted["before-the-fence"] || deleted["after-the-fence"] {
		t.Errorf("the dry run deletes standby pods %v; want before-the-fence (tampered with) alone", deleted)
	}
}
