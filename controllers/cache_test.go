package controllers

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestCacheTrims: the cache keeps what the reconciler reads and drops the
// rest (credentials above all).
func TestCacheTrims(t *testing.T) {
	mf := []metav1.ManagedFieldsEntry{{Manager: "x"}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Labels: map[string]string{"a": "b"}, ManagedFields: mf},
		Data: map[string][]byte{"password": []byte("hunter2")}, StringData: map[string]string{"k": "v"}}
	if _, err := trimSecret(secret); err != nil {
		t.Fatal(err)
	}
	if secret.Data != nil || secret.StringData != nil || secret.ManagedFields != nil || secret.Labels["a"] != "b" {
		t.Errorf("trimmed secret = %+v", secret)
	}

	port := []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"a": "b"}, ManagedFields: mf},
		Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: "sa",
			InitContainers: []corev1.Container{{Name: "sidecar", Image: "i", Ports: port, Env: []corev1.EnvVar{{Name: "E"}}}},
			Containers:     []corev1.Container{{Name: "app", Image: "i", Ports: port, Args: []string{"--x"}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app"}}},
	}
	if _, err := trimPod(pod); err != nil {
		t.Fatal(err)
	}
	if pod.Spec.NodeName != "n1" || pod.Spec.ServiceAccountName != "" || len(pod.Spec.Containers) != 1 ||
		pod.Spec.Containers[0].Name != "app" || pod.Spec.Containers[0].Image != "" || pod.Spec.Containers[0].Ports[0].Name != "http" ||
		pod.Spec.InitContainers[0].Ports[0].Name != "http" || pod.Spec.InitContainers[0].Env != nil {
		t.Errorf("trimmed pod spec = %+v", pod.Spec)
	}
	if pod.Status.PodIP != "10.0.0.1" || len(pod.Status.Conditions) != 1 || pod.Status.ContainerStatuses != nil || pod.Labels["a"] != "b" || pod.ManagedFields != nil {
		t.Errorf("trimmed pod = %+v", pod)
	}

	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "d", ManagedFields: mf}, Spec: appsv1.DeploymentSpec{
		Replicas: new(int32(2)),
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"rev": "1"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}},
		Status: appsv1.DeploymentStatus{ReadyReplicas: 2}}
	if _, err := trimDeployment(dep); err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Template.Spec.Containers != nil || *dep.Spec.Replicas != 2 || dep.Spec.Template.Annotations["rev"] != "1" || dep.Status.ReadyReplicas != 2 || dep.ManagedFields != nil {
		t.Errorf("trimmed deployment = %+v", dep)
	}
}
