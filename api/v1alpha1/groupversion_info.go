// Package v1alpha1 contains the careplane.io/v1alpha1 API: HealthEnvironment,
// one object per customer environment, and FenceRequest, a fence of many at
// once.
//
// The package is pure data: types, enum constants, condition types and
// reasons, and small pure methods. It imports only apimachinery and k8s.io/api
// (not controller-runtime), so clients can use it without the operator's
// dependencies.
//
// +kubebuilder:object:generate=true
// +groupName=careplane.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "careplane.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &HealthEnvironment{}, &HealthEnvironmentList{}, &FenceRequest{}, &FenceRequestList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
