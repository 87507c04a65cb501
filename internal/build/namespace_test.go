package build

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/careplane/careplane/api/v1alpha1"
)

func TestNamespace(t *testing.T) {
	env := env111()
	names := NamespaceNames(env)
	tests := []struct {
		name, site string
	}{
		{names.Front, SiteLabelFront},
		{names.Primary, SiteLabelPrimary},
		{names.Standby, SiteLabelStandby},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := toTyped[corev1.Namespace](t, Namespace(env, tt.name, tt.site))
			want := with(stdLabels(tt.site, ""),
				"pod-security.kubernetes.io/enforce", "restricted",
				"pod-security.kubernetes.io/enforce-version", "latest",
				"pod-security.kubernetes.io/warn", "restricted",
				"pod-security.kubernetes.io/audit", "restricted",
			)
			checkMeta(t, ns.TypeMeta, ns.ObjectMeta, "v1", "Namespace", tt.name, "", want)
			if len(ns.Labels) != len(want) {
				t.Errorf("labels = %v, want exactly %v", ns.Labels, want)
			}
		})
	}
}

func TestResourceQuota(t *testing.T) {
	tests := []struct {
		name      string
		quota     v1alpha1.Quota
		namespace string
		site      string
		want      corev1.ResourceList
	}{
		{
			name:      "every limit",
			quota:     env111().Spec.Quota,
			namespace: "wales-111-primary",
			site:      "primary",
			want: corev1.ResourceList{
				corev1.ResourceRequestsCPU:    resource.MustParse("8"),
				corev1.ResourceRequestsMemory: resource.MustParse("16Gi"),
				corev1.ResourcePods:           resource.MustParse("60"),
			},
		},
		{
			name:      "only pods",
			quota:     v1alpha1.Quota{Pods: ptr.To[int32](40)},
			namespace: "wales-111-standby",
			site:      "standby",
			want:      corev1.ResourceList{corev1.ResourcePods: resource.MustParse("40")},
		},
		{
			name:      "only cpu and memory",
			quota:     v1alpha1.Quota{CPU: ptr.To(resource.MustParse("500m")), Memory: ptr.To(resource.MustParse("1Gi"))},
			namespace: "wales-111-primary",
			site:      "primary",
			want: corev1.ResourceList{
				corev1.ResourceRequestsCPU:    resource.MustParse("500m"),
				corev1.ResourceRequestsMemory: resource.MustParse("1Gi"),
			},
		},
		{
			name:      "no limits",
			namespace: "wales-111-primary",
			site:      "primary",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := env111()
			env.Spec.Quota = tt.quota
			q := toTyped[corev1.ResourceQuota](t, ResourceQuota(env, tt.namespace))
			checkMeta(t, q.TypeMeta, q.ObjectMeta, "v1", "ResourceQuota", "careplane-quota", tt.namespace, stdLabels(tt.site, ""))
			if len(q.Spec.Hard) != len(tt.want) {
				t.Fatalf("hard = %v, want %v", q.Spec.Hard, tt.want)
			}
			for k, v := range tt.want {
				got, ok := q.Spec.Hard[k]
				if !ok || got.Cmp(v) != 0 {
					t.Errorf("hard[%s] = %s (present %v), want %s", k, got.String(), ok, v.String())
				}
			}
		})
	}
}

func TestLimitRange(t *testing.T) {
	lr := toTyped[corev1.LimitRange](t, LimitRange(env111(), "wales-111-primary"))
	checkMeta(t, lr.TypeMeta, lr.ObjectMeta, "v1", "LimitRange", "careplane-defaults", "wales-111-primary", stdLabels("primary", ""))
	if len(lr.Spec.Limits) != 1 {
		t.Fatalf("limits = %+v, want one item", lr.Spec.Limits)
	}
	item := lr.Spec.Limits[0]
	if item.Type != corev1.LimitTypeContainer {
		t.Errorf("type = %s, want Container", item.Type)
	}
	if cpu := item.DefaultRequest[corev1.ResourceCPU]; cpu.Cmp(resource.MustParse("100m")) != 0 {
		t.Errorf("defaultRequest cpu = %s, want 100m", cpu.String())
	}
	if mem := item.DefaultRequest[corev1.ResourceMemory]; mem.Cmp(resource.MustParse("128Mi")) != 0 {
		t.Errorf("defaultRequest memory = %s, want 128Mi", mem.String())
	}
	if len(item.Default) != 0 || len(item.Max) != 0 {
		t.Errorf("unexpected default limits or max: %+v", item)
	}
}
