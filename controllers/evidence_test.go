package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// boundClaim creates a bound claim in ns, as the StatefulSet controller
// and the PV binder (not running in envtest) would leave it, or as a tenant
// would create it (labels nil).
func boundClaim(t *testing.T, ctx context.Context, ns, name, class string, labels map[string]string) {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To(class),
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	eventually(t, 20*time.Second, "creating claim "+name, func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Create(ctx, pvc)
		return err == nil, fmt.Sprint(err), nil // the namespace may not exist yet
	})
	pvc.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}
	if err := k8sClient.Status().Update(ctx, pvc); err != nil {
		t.Fatal(err)
	}
}

// evidenceClasses creates a StorageClass and a VolumeSnapshotClass of one
// driver, named after prefix.
func evidenceClasses(t *testing.T, ctx context.Context, prefix string) (storageClass, snapshotClass string) {
	t.Helper()
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-csi"}, Provisioner: "csi.careplane.io"}
	vsc := &snapshotv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-snapshots"}, Driver: "csi.careplane.io",
		DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete}
	for _, o := range []client.Object{sc, vsc} {
		if err := k8sClient.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), o) })
	}
	return sc.Name, vsc.Name
}

// TestFenceTakesEvidenceSnapshotsOnce: once the window is closed, a fence
// takes a VolumeSnapshot of every claim of the primary namespace, the
// tenant's too, labelled with the environment, the ticket and the fence,
// without an owner reference, and records each by UID in
// status.evidenceSnapshots; reconciling the fence again takes no second set;
// the condition follows the snapshots' readiness.
func TestFenceTakesEvidenceSnapshotsOnce(t *testing.T) {
	ctx := context.Background()
	const name = "evidence"
	ns := name + "-primary"
	storageClass, snapshotClass := evidenceClasses(t, ctx, name)
	env := careRecordsEnv(name)
	env.Spec.Services[0].Volumes[0].StorageClassName = ptr.To(storageClass)
	env.Spec.Recovery = &v1alpha1.Recovery{VolumeSnapshotClassName: snapshotClass, Interval: &metav1.Duration{Duration: 168 * time.Hour}, Keep: 1}
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), env) })
	owned := map[string]string{v1alpha1.LabelEnvironment: name, v1alpha1.LabelService: "document-store"}
	boundClaim(t, ctx, ns, "records-document-store-0", storageClass, owned)
	boundClaim(t, ctx, ns, "records-document-store-1", storageClass, owned)
	boundClaim(t, ctx, ns, "tenant-scratch", storageClass, nil)

	updateEnv(t, ctx, name, func(e *v1alpha1.HealthEnvironment) {
		e.Spec.Isolation = v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "ransomware", Ticket: "INC-9"}
	})
	got := waitCondition(t, name, v1alpha1.ConditionEvidenceSnapshots, "False", v1alpha1.ReasonEvidencePending)
	waitCondition(t, name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	nsObj := &corev1.Namespace{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
		t.Fatal(err)
	}
	rec := fence.RecordOf(nsObj)

	check := func(got *v1alpha1.HealthEnvironment) {
		t.Helper()
		var snaps snapshotv1.VolumeSnapshotList
		if err := k8sClient.List(ctx, &snaps, client.InNamespace(ns), client.HasLabels{v1alpha1.LabelEvidence}); err != nil {
			t.Fatal(err)
		}
		if len(snaps.Items) != 3 || len(got.Status.EvidenceSnapshots) != 3 {
			t.Fatalf("%d evidence snapshots, %d on record; want one of each of the 3 claims", len(snaps.Items), len(got.Status.EvidenceSnapshots))
		}
		byName := map[string]v1alpha1.EvidenceSnapshot{}
		for _, e := range got.Status.EvidenceSnapshots {
			byName[e.Name] = e
		}
		for _, vs := range snaps.Items {
			e := byName[vs.Name]
			if e.UID != string(vs.UID) || e.FenceID != rec.ID || e.Ticket != "INC-9" || e.Claim != ptr.Deref(vs.Spec.Source.PersistentVolumeClaimName, "") {
				t.Errorf("snapshot %s (uid %s of claim %s) is on record as %+v", vs.Name, vs.UID, ptr.Deref(vs.Spec.Source.PersistentVolumeClaimName, ""), e)
			}
			if vs.Labels[v1alpha1.LabelEvidence] != "INC-9" || vs.Labels[v1alpha1.LabelEnvironment] != name ||
				vs.Labels[v1alpha1.LabelFenceID] != fence.IDLabel(rec.ID) || vs.Annotations[v1alpha1.AnnotationFenceID] != rec.ID {
				t.Errorf("snapshot %s labels %v annotations %v", vs.Name, vs.Labels, vs.Annotations)
			}
			if len(vs.OwnerReferences) != 0 {
				t.Errorf("snapshot %s has owners %v: deleting them would delete the evidence", vs.Name, vs.OwnerReferences)
			}
			if ptr.Deref(vs.Spec.VolumeSnapshotClassName, "") != snapshotClass {
				t.Errorf("snapshot %s of class %v", vs.Name, vs.Spec.VolumeSnapshotClassName)
			}
		}
	}
	check(got)

	// The fence again (a new generation, reconciled as after a restart:
	// the record on the namespace is all it goes by): no second set.
	updateEnv(t, ctx, name, func(e *v1alpha1.HealthEnvironment) { e.Spec.Isolation.Reason = "ransomware, confirmed" })
	eventually(t, 20*time.Second, "the new generation reconciled", func(ctx context.Context) (bool, string, error) {
		e := getEnv(t, ctx, name)
		return e.Status.ObservedGeneration == e.Generation, "", nil
	})
	check(getEnv(t, ctx, name))

	// A pass that took the snapshots and stopped before its status write
	// (the operator killed in between): the record is gone, the snapshots
	// are there. The next pass records those, by UID, and takes no more.
	cur := getEnv(t, ctx, name)
	cur.Status.EvidenceSnapshots = nil
	if err := k8sClient.Status().Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	updateEnv(t, ctx, name, func(e *v1alpha1.HealthEnvironment) { e.Spec.Isolation.Reason = "ransomware, confirmed twice" })
	eventually(t, 20*time.Second, "the evidence on record again", func(ctx context.Context) (bool, string, error) {
		e := getEnv(t, ctx, name)
		return len(e.Status.EvidenceSnapshots) == 3, fmt.Sprintf("%d on record", len(e.Status.EvidenceSnapshots)), nil
	})
	check(getEnv(t, ctx, name))

	// The snapshot controller (not running here) reports them ready.
	var snaps snapshotv1.VolumeSnapshotList
	if err := k8sClient.List(ctx, &snaps, client.InNamespace(ns), client.HasLabels{v1alpha1.LabelEvidence}); err != nil {
		t.Fatal(err)
	}
	for i := range snaps.Items {
		vs := &snaps.Items[i]
		vs.Status = &snapshotv1.VolumeSnapshotStatus{ReadyToUse: ptr.To(true)}
		if err := k8sClient.Status().Update(ctx, vs); err != nil {
			t.Fatal(err)
		}
	}
	got = waitCondition(t, name, v1alpha1.ConditionEvidenceSnapshots, "True", v1alpha1.ReasonEvidenceTaken)
	for _, e := range got.Status.EvidenceSnapshots {
		if !e.Ready {
			t.Errorf("%s ready on the cluster, not on record", e.Name)
		}
	}
	check(got)
}

// TestFenceWithoutSnapshotClassStillFences: with claims and no snapshot
// class, the fence completes and the EvidenceSnapshots condition says why
// no evidence was taken; nothing is snapshotted and no claim deleted.
func TestFenceWithoutSnapshotClassStillFences(t *testing.T) {
	ctx := context.Background()
	const name = "noevidence"
	ns := name + "-primary"
	storageClass, _ := evidenceClasses(t, ctx, name)
	env := careRecordsEnv(name)
	env.Spec.Services[0].Volumes[0].StorageClassName = ptr.To(storageClass)
	if err := k8sClient.Create(ctx, env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), env) })
	boundClaim(t, ctx, ns, "records-document-store-0", storageClass, map[string]string{v1alpha1.LabelEnvironment: name})

	updateEnv(t, ctx, name, func(e *v1alpha1.HealthEnvironment) {
		e.Spec.Isolation = v1alpha1.Isolation{Mode: v1alpha1.IsolationFenced, Reason: "ransomware"}
	})
	waitCondition(t, name, v1alpha1.ConditionFenced, "True", v1alpha1.ReasonFenceComplete)
	got := waitCondition(t, name, v1alpha1.ConditionEvidenceSnapshots, "False", v1alpha1.ReasonNoSnapshotClass)
	if c := findCondition(got.Status.Conditions, v1alpha1.ConditionEvidenceSnapshots); !strings.Contains(c.Message, "set recovery.volumeSnapshotClassName") {
		t.Errorf("message = %q", c.Message)
	}
	var snaps snapshotv1.VolumeSnapshotList
	if err := k8sClient.List(ctx, &snaps, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(snaps.Items) != 0 {
		t.Errorf("%d snapshots taken without a class", len(snaps.Items))
	}
	var pvcs corev1.PersistentVolumeClaimList
	if err := k8sClient.List(ctx, &pvcs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(pvcs.Items) != 1 {
		t.Errorf("%d claims after the fence, want 1", len(pvcs.Items))
	}
}

// TestDeletingAnEnvironmentRetainsItsData: an environment with volumes, or
// whose namespace names evidence pods, carries the data finalizer; deleting
// it (dataDeletionPolicy Retain, the default) leaves the primary namespace
// out of the garbage collector's reach (no owner reference), labelled
// retained and closed by a deny-all policy and a pods: 0 quota of its own,
// its claims, snapshots and evidence pods in it. With Delete, the namespace
// keeps its owner and goes with it, unless it holds evidence: a claim or a
// pod labelled careplane.io/evidence keeps it whatever the policy says.
func TestDeletingAnEnvironmentRetainsItsData(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   v1alpha1.DataDeletionPolicy
		volumes  bool   // a care-records environment, with a claim
		evidence string // "claim": the claim is evidence; "pod": an evidence pod runs
		// dropVolumes takes the volumes out of the spec before the delete:
		// the evidence claim stays, and so must the data finalizer.
		dropVolumes bool
		retained    bool
	}{
		{"retain", v1alpha1.DataRetain, true, "", false, true},
		{"delete", v1alpha1.DataDelete, true, "", false, false},
		{"delete-evidence-claim", v1alpha1.DataDelete, true, "claim", false, true},
		{"evidence-claim-volumes-dropped", v1alpha1.DataDelete, true, "claim", true, true},
		{"evidence-pod", v1alpha1.DataRetain, false, "pod", false, true},
		{"delete-evidence-pod", v1alpha1.DataDelete, false, "pod", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			name := "retain-" + tc.name
			ns := name + "-primary"
			env := sampleEnv(name)
			if tc.volumes {
				env = careRecordsEnv(name)
			}
			env.Spec.DataDeletionPolicy = tc.policy
			if err := k8sClient.Create(ctx, env); err != nil {
				t.Fatal(err)
			}
			if tc.volumes {
				labels := map[string]string{v1alpha1.LabelEnvironment: name}
				if tc.evidence == "claim" {
					labels[v1alpha1.LabelEvidence] = "INC-RETAIN"
				}
				boundClaim(t, ctx, ns, "records-document-store-0", "standard", labels)
			}
			if tc.evidence == "pod" {
				// As a fence leaves one after its restore: a pod of
				// careplane's template, without owner, labelled evidence.
				dep := &appsv1.Deployment{}
				eventually(t, 20*time.Second, "the call-handling Deployment", func(ctx context.Context) (bool, string, error) {
					err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "call-handling"}, dep)
					return err == nil, fmt.Sprint(err), client.IgnoreNotFound(err)
				})
				pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "call-handling-evidence",
					Labels: map[string]string{v1alpha1.LabelEnvironment: name, v1alpha1.LabelEvidence: "INC-RETAIN"}},
					Spec: *dep.Spec.Template.Spec.DeepCopy()}
				if err := k8sClient.Create(ctx, pod); err != nil {
					t.Fatal(err)
				}
				eventually(t, 20*time.Second, "the namespace naming the evidence pod", func(ctx context.Context) (bool, string, error) {
					nsObj := &corev1.Namespace{}
					if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
						return false, "", err
					}
					return nsObj.Annotations[build.AnnotationEvidencePods] == pod.Name, fmt.Sprint(nsObj.Annotations), nil
				})
			}
			if tc.policy == v1alpha1.DataRetain || tc.evidence == "pod" {
				eventually(t, 20*time.Second, "the data finalizer", func(ctx context.Context) (bool, string, error) {
					e := getEnv(t, ctx, name)
					return slices.Contains(e.Finalizers, dataFinalizer), fmt.Sprint(e.Finalizers), nil
				})
			}
			if tc.dropVolumes {
				eventually(t, 20*time.Second, "the data finalizer", func(ctx context.Context) (bool, string, error) {
					e := getEnv(t, ctx, name)
					return slices.Contains(e.Finalizers, dataFinalizer), fmt.Sprint(e.Finalizers), nil
				})
				updateEnv(t, ctx, name, func(e *v1alpha1.HealthEnvironment) { e.Spec.Services[0].Volumes = nil })
				// A pass over the new spec, which has no data of its own.
				eventually(t, 20*time.Second, "the spec without volumes observed", func(ctx context.Context) (bool, string, error) {
					e := getEnv(t, ctx, name)
					return e.Status.ObservedGeneration == e.Generation, fmt.Sprintf("observed %d of %d", e.Status.ObservedGeneration, e.Generation), nil
				})
				if e := getEnv(t, ctx, name); !slices.Contains(e.Finalizers, dataFinalizer) {
					t.Fatalf("finalizers %v once the spec has no volumes, its evidence claim still there: want %s", e.Finalizers, dataFinalizer)
				}
			}
			if err := k8sClient.Delete(ctx, env); err != nil {
				t.Fatal(err)
			}
			eventually(t, 20*time.Second, "the environment gone", func(ctx context.Context) (bool, string, error) {
				err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &v1alpha1.HealthEnvironment{})
				return apierrors.IsNotFound(err), fmt.Sprint(err), client.IgnoreNotFound(err)
			})
			nsObj := &corev1.Namespace{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
				t.Fatal(err)
			}
			if !tc.retained {
				if len(nsObj.OwnerReferences) != 1 || nsObj.Labels[v1alpha1.LabelRetained] != "" {
					t.Errorf("namespace owners %v labels %v, want it left to the garbage collector", nsObj.OwnerReferences, nsObj.Labels)
				}
				return
			}
			if len(nsObj.OwnerReferences) != 0 || nsObj.Labels[v1alpha1.LabelRetained] != "true" {
				t.Fatalf("namespace owners %v labels %v, want no owner and %s=true", nsObj.OwnerReferences, nsObj.Labels, v1alpha1.LabelRetained)
			}
			pol := &networkingv1.NetworkPolicy{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: RetainedPolicyName}, pol); err != nil {
				t.Fatal(err)
			}
			if len(pol.OwnerReferences) != 0 || len(pol.Spec.Ingress) != 0 || len(pol.Spec.Egress) != 0 || len(pol.Spec.PolicyTypes) != 2 || len(pol.Spec.PodSelector.MatchLabels) != 0 {
				t.Errorf("retained policy %+v, want deny-all of every pod without owner", pol)
			}
			q := &corev1.ResourceQuota{}
			if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: RetainedQuotaName}, q); err != nil {
				t.Fatal(err)
			}
			if p := q.Spec.Hard[corev1.ResourcePods]; !p.IsZero() || len(q.OwnerReferences) != 0 {
				t.Errorf("retained quota %+v", q.Spec.Hard)
			}
			if tc.volumes {
				if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "records-document-store-0"}, &corev1.PersistentVolumeClaim{}); err != nil {
					t.Errorf("the claim: %v", err)
				}
			}
		})
	}
}

// TestEvidenceMarks: the namespace names its evidence pods and their
// addresses, sorted, and nothing is written when it already does; with
// none left, every mark goes.
func TestEvidenceMarks(t *testing.T) {
	pod := func(name string, ips ...string) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}
		for _, ip := range ips {
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
		}
		if len(ips) > 0 {
			p.Status.PodIP = ips[0]
		}
		return p
	}
	ns := func(labels, annotations map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: labels, Annotations: annotations}}
	}
	held := map[string]string{build.LabelHoldsEvidence: "true"}
	named := func(v string) map[string]string { return map[string]string{build.AnnotationEvidencePods: v} }
	addressed := func(v, ips string) map[string]string {
		return map[string]string{build.AnnotationEvidencePods: v, build.AnnotationEvidenceIPs: ips}
	}
	for _, tc := range []struct {
		name    string
		ns      *corev1.Namespace
		pods    []corev1.Pod
		want    string // the pods annotation written; "-" none written; "<nil>" removed
		wantIPs string // the addresses annotation written, when any is
	}{
		{"none, none named", ns(nil, nil), nil, "-", ""},
		{"two, none named", ns(nil, nil), []corev1.Pod{pod("b"), pod("a")}, "a,b", "<nil>"},
		{"two, named in order", ns(held, named("a,b")), []corev1.Pod{pod("b"), pod("a")}, "-", ""},
		{"one purged", ns(held, named("a,b")), []corev1.Pod{pod("b")}, "b", "<nil>"},
		{"named, label gone", ns(nil, named("a")), []corev1.Pod{pod("a")}, "a", "<nil>"},
		{"all purged", ns(held, named("a")), nil, "<nil>", "<nil>"},
		{"only the label left", ns(held, nil), nil, "<nil>", "<nil>"},
		{"addresses, dual-stack", ns(nil, nil), []corev1.Pod{pod("b", "10.0.0.9", "fd00::9"), pod("a", "10.0.0.10")}, "a,b", "10.0.0.10,10.0.0.9,fd00::9"},
		{"addresses named", ns(held, addressed("a", "10.0.0.10")), []corev1.Pod{pod("a", "10.0.0.10")}, "-", ""},
		{"an address taken off", ns(held, addressed("a", "")), []corev1.Pod{pod("a", "10.0.0.10")}, "a", "10.0.0.10"},
		{"all purged, addresses named", ns(held, addressed("a", "10.0.0.10")), nil, "<nil>", "<nil>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := evidenceMarks(tc.ns, tc.pods)
			got, gotIPs := "-", ""
			if !m.empty() {
				got = fmt.Sprint(m.annotations[build.AnnotationEvidencePods])
				gotIPs = fmt.Sprint(m.annotations[build.AnnotationEvidenceIPs])
				wantLabel := any("true")
				if got == "<nil>" {
					wantLabel = nil
				}
				if l, ok := m.labels[build.LabelHoldsEvidence]; !ok || l != wantLabel {
					t.Errorf("label %s: %v (set %v), want %v", build.LabelHoldsEvidence, l, ok, wantLabel)
				}
			}
			if got != tc.want || gotIPs != tc.wantIPs {
				t.Errorf("annotations written: pods %s, addresses %s; want %s, %s", got, gotIPs, tc.want, tc.wantIPs)
			}
		})
	}
}
