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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// TestHarnessPodSecurity proves the local cluster is a real control plane:
// in a namespace labelled Pod Security "restricted", a compliant Deployment
// rolls out to Ready pods (scheduler, controller manager and kwok's nodes at
// work), and a non-compliant pod is rejected by the API server's Pod
// Security admission with its message.
func TestHarnessPodSecurity(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "e2e-podsecurity-",
		Labels: map[string]string{
			"pod-security.kubernetes.io/enforce":         "restricted",
			"pod-security.kubernetes.io/enforce-version": "latest",
		},
	}}
	if err := k8sClient.Create(ctx, ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), ns) })

	restricted := corev1.PodSpec{
		AutomountServiceAccountToken: ptr.To(false),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			RunAsUser:      ptr.To(int64(65532)),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name:  "app",
			Image: "registry.example/app@sha256:" + strings.Repeat("a", 64),
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
	}
	labels := map[string]string{"app": "harness"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "harness"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(3)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: restricted},
		},
	}
	if err := k8sClient.Create(ctx, dep); err != nil {
		t.Fatalf("creating a restricted-compliant deployment: %v", err)
	}
	eventually(t, 90*time.Second, "deployment rolls out", func(ctx context.Context) (bool, string, error) {
		got := &appsv1.Deployment{}
		if err := k8sClient.Get(ctx, clientKey(dep), got); err != nil {
			return false, "", err
		}
		return got.Status.ReadyReplicas == 3, fmt.Sprintf("%d/3 ready", got.Status.ReadyReplicas), nil
	})
	pods := &corev1.PodList{}
	if err := k8sClient.List(ctx, pods, inNamespace(ns.Name)); err != nil {
		t.Fatal(err)
	}
	ready := 0
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" && p.Status.PodIP != "" && isPodReady(&p) {
			ready++
		}
	}
	if ready != 3 {
		t.Fatalf("want 3 scheduled Ready pods with IPs, got %d of %d", ready, len(pods.Items))
	}

	privileged := restricted.DeepCopy()
	privileged.SecurityContext = nil
	privileged.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
	bad := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "privileged"}, Spec: *privileged}
	err := k8sClient.Create(ctx, bad)
	if !apierrors.IsForbidden(err) {
		t.Fatalf("want a privileged pod to be forbidden by Pod Security, got %v", err)
	}
	for _, want := range []string{`violates PodSecurity "restricted:latest"`, "privileged"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("rejection %q does not mention %q", err.Error(), want)
		}
	}
}
