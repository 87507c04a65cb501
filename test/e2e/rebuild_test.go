//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
)

// TestARestoreStartsNoPodOfTheFencedTemplate (hole 8): the fence scales
// careplane's Deployments to zero, but their ReplicaSets follow only when
// the Deployment controller gets to them (in `make bench`'s fleet fence of
// 500, two thirds had not by the time every environment was Fenced). A
// ReplicaSet still asking for a pod when the restore removed the fence quota
// started one of the fenced template, the one a sidecar may have been
// injected into, on the restore's new Secrets.
//
// Here kube-controller-manager is down from before the fence until the
// restore's clean-up is done, so that the fenced ReplicaSets still ask for
// their replicas when the quota goes. Once it is back, the only pods created
// in the namespace must be the rebuild's.
func TestARestoreStartsNoPodOfTheFencedTemplate(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("no-fenced-pod")
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	ns := name + "-primary"

	var before appsv1.ReplicaSetList
	if err := k8sClient.List(ctx, &before, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	fenced := map[types.UID]string{}
	for _, rs := range before.Items {
		fenced[rs.UID] = rs.Name
	}

	kcm := localControlPlane(t).stopControllerManager(t)
	fenceCommand(t, name, "INC-FENCED-TEMPLATE")
	waitFencedTrue(t, name)
	var asking []string
	for _, rs := range before.Items {
		cur := &appsv1.ReplicaSet{}
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(&rs), cur); err != nil {
			t.Fatal(err)
		}
		if cur.Spec.Replicas != nil && *cur.Spec.Replicas > 0 {
			asking = append(asking, cur.Name)
		}
	}
	if len(asking) == 0 {
		t.Fatal("no fenced ReplicaSet still asks for a replica: the test cannot show anything")
	}
	t.Logf("fenced ReplicaSets still asking for replicas: %v", asking)

	// Every pod created from here on.
	pods, err := clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := clientset.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: pods.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	responder(t, "patch", "henv", name, "--type=merge", "-p", restorePatch)
	restoreID := waitCleanedForRebuild(t, ns)
	kcm.end(t)

	waitRestored(t, name)
	// The restore lifts the fence once its rebuilt pods are Ready: a pod
	// of the fenced template would have been created by then.
	var created, wrong []string
	for done := false; !done; {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("the pod watch ended early")
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if ev.Type != watch.Added || !isPod {
				continue
			}
			created = append(created, p.Name)
			owner := metav1.GetControllerOf(p)
			if owner != nil && fenced[owner.UID] != "" {
				wrong = append(wrong, fmt.Sprintf("%s of fenced ReplicaSet %s", p.Name, fenced[owner.UID]))
			} else if rev := p.Annotations[build.AnnotationCredentialsRevision]; rev != restoreID {
				wrong = append(wrong, fmt.Sprintf("%s of credentials revision %q", p.Name, rev))
			}
		case <-time.After(2 * time.Second):
			done = true
		}
	}
	if len(wrong) > 0 {
		t.Errorf("the restore %s started pods not of its rebuild: %s", restoreID, strings.Join(wrong, "; "))
	}
	if len(created) == 0 {
		t.Error("no pod was created after the restore began: the watch saw nothing")
	}
	t.Logf("pods created after the restore began: %v", created)
}

// TestARestoreLeavesNoPodOfTheFencedTemplate (hole 8): with workloads: Stop
// the fence keeps no evidence and leaves careplane's pods to the
// scale-down, which reaches them only when the Deployment controller does.
// A pod the scale-down had not reached by the restore was left to the
// garbage collector, and nothing held the lift until it was gone. Here
// kube-controller-manager is down from before the fence: once the restore's
// clean-up is done, the only pods left must be going.
func TestARestoreLeavesNoPodOfTheFencedTemplate(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("no-fenced-left")
	applyFenceEnv(t, name)
	waitReady(t, name, 2*time.Minute)
	ns := name + "-primary"

	kcm := localControlPlane(t).stopControllerManager(t)
	responder(t, "patch", "henv", name, "--type=merge", "-p",
		`{"spec":{"isolation":{"mode":"Fenced","workloads":"Stop","reason":"ransomware indicators","ticket":"INC-STOP"}}}`)
	waitFencedTrue(t, name)
	var pods corev1.PodList
	if err := k8sClient.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var running []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			running = append(running, p.Name)
		}
	}
	if len(running) == 0 {
		t.Fatal("no pod of the fenced site still runs: the test cannot show anything")
	}
	t.Logf("pods the scale-down has not reached: %v", running)

	responder(t, "patch", "henv", name, "--type=merge", "-p", restorePatch)
	restoreID := waitCleanedForRebuild(t, ns)
	if err := k8sClient.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Labels[v1alpha1.LabelEvidence] == "" && p.Annotations[build.AnnotationCredentialsRevision] != restoreID {
			t.Errorf("pod %s (credentials revision %q) is still running once the restore %s removed the fence quota",
				p.Name, p.Annotations[build.AnnotationCredentialsRevision], restoreID)
		}
	}
	kcm.end(t)
	waitRestored(t, name)
}

// waitCleanedForRebuild waits until a restore of the fenced namespace ns has
// carried out its clean-up: the restore on record, the fence quota gone and
// every Deployment recreated for it. It returns the restore's ID.
func waitCleanedForRebuild(t *testing.T, ns string) string {
	t.Helper()
	var restoreID string
	eventually(t, time.Minute, ns+" cleaned for the rebuild", func(ctx context.Context) (bool, string, error) {
		nsObj := &corev1.Namespace{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, nsObj); err != nil {
			return false, "", err
		}
		restoreID = nsObj.Annotations[fence.AnnotationRestoreID]
		if restoreID == "" {
			return false, "no restore on record", nil
		}
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.FenceQuotaName}, &corev1.ResourceQuota{})
		if !apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("fence quota still there (err %v)", err), nil
		}
		var deps appsv1.DeploymentList
		if err := k8sClient.List(ctx, &deps, client.InNamespace(ns)); err != nil {
			return false, "", err
		}
		for _, d := range deps.Items {
			if d.Spec.Template.Annotations[build.AnnotationCredentialsRevision] != restoreID {
				return false, "Deployment " + d.Name + " not rebuilt yet", nil
			}
		}
		return len(deps.Items) > 0, fmt.Sprintf("%d Deployments", len(deps.Items)), nil
	})
	return restoreID
}

// waitRestored waits until name's fence is lifted.
func waitRestored(t *testing.T, name string) {
	t.Helper()
	eventually(t, 2*time.Minute, name+" restored", func(ctx context.Context) (bool, string, error) {
		env := &v1alpha1.HealthEnvironment{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return false, "", err
		}
		c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionFenced)
		return c != nil && c.Reason == v1alpha1.ReasonNotFenced, fmt.Sprintf("%+v", c), nil
	})
}
