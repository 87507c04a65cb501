package controllers

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/ssa"
)

// NewScheme returns a scheme with the Kubernetes types and careplane's API.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// CacheOptions make the manager cache only what careplane owns: objects
// labelled with an environment, with managed fields stripped. Caching every
// Secret or Pod of a cluster is how operators run out of memory.
func CacheOptions() cache.Options {
	req, err := labels.NewRequirement(v1alpha1.LabelEnvironment, selection.Exists, nil)
	if err != nil {
		panic(err)
	}
	owned := cache.ByObject{Label: labels.NewSelector().Add(*req)}
	by := map[client.Object]cache.ByObject{}
	for _, o := range []client.Object{
		&corev1.Namespace{}, &corev1.ServiceAccount{}, &corev1.Service{},
		&corev1.ResourceQuota{}, &corev1.LimitRange{},
		&appsv1.ControllerRevision{},
		&policyv1.PodDisruptionBudget{},
	} {
		by[o] = owned
	}
	// Of EndpointSlices only the front's, which careplane writes: the
	// EndpointSlice controller copies a Service's labels onto the slices it
	// makes for the sites' Services, and those careplane never reads.
	front, err := labels.NewRequirement(discoveryv1.LabelManagedBy, selection.Equals, []string{build.EndpointSliceManagedBy})
	if err != nil {
		panic(err)
	}
	by[&discoveryv1.EndpointSlice{}] = cache.ByObject{Label: labels.NewSelector().Add(*req, *front)}
	// Of Secrets, Pods and Deployments the reconciler reads less than the
	// API returns: the cache keeps what it reads. Credentials never stay in
	// the operator's memory; pod and template specs are most of the bytes
	// of a large fleet.
	by[&corev1.Secret{}] = cache.ByObject{Label: owned.Label, Transform: trimSecret}
	by[&corev1.Pod{}] = cache.ByObject{Label: owned.Label, Transform: trimPod}
	by[&appsv1.Deployment{}] = cache.ByObject{Label: owned.Label, Transform: trimDeployment}
	// NetworkPolicies are cached whoever created them: a fence removes every
	// policy of the fenced namespace, and one a tenant adds during the fence
	// must wake the operator. Policies are few and small.
	return cache.Options{ByObject: by, DefaultTransform: cache.TransformStripManagedFields()}
}

var stripManagedFields = cache.TransformStripManagedFields()

// trimSecret drops a cached Secret's data: careplane generates credentials
// and deletes them, but never reads them back.
func trimSecret(obj any) (any, error) {
	if s, ok := obj.(*corev1.Secret); ok {
		s.Data, s.StringData = nil, nil
	}
	return stripManagedFields(obj)
}

// trimPod keeps of a cached Pod what readiness, the front EndpointSlices,
// evidence and the fence's verification read: metadata, node, container
// names and ports (named ports), conditions and addresses.
func trimPod(obj any) (any, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		p.Spec = corev1.PodSpec{NodeName: p.Spec.NodeName, InitContainers: portsOnly(p.Spec.InitContainers), Containers: portsOnly(p.Spec.Containers)}
		p.Status = corev1.PodStatus{Phase: p.Status.Phase, Conditions: p.Status.Conditions, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs}
	}
	return stripManagedFields(obj)
}

func portsOnly(cs []corev1.Container) []corev1.Container {
	if cs == nil {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		out[i] = corev1.Container{Name: c.Name, Ports: c.Ports}
	}
	return out
}

// trimDeployment drops the pod template's spec from a cached Deployment:
// careplane writes it with server-side apply and reads back only replicas,
// the template's annotations and the status.
func trimDeployment(obj any) (any, error) {
	if d, ok := obj.(*appsv1.Deployment); ok {
		d.Spec.Template.Spec = corev1.PodSpec{}
	}
	return stripManagedFields(obj)
}

// RandomSecret returns a credential of 256 random bits from crypto/rand,
// base64url-encoded without padding (43 printable characters), so it can be
// used as a password anywhere.
func RandomSecret() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	out := make([]byte, base64.RawURLEncoding.EncodedLen(len(b)))
	base64.RawURLEncoding.Encode(out, b)
	return out, nil
}

// Default concurrency: environments reconciled at once, and deny policies
// written at once by the fence gate. A fence is some seven round trips deep,
// each waiting on the API server; with 8 workers a fleet fence of 500 on a
// 2-core kwok cluster reached its median Fenced in 163 s, with 32 in 87 s
// (the same loaded machine, docs/benchmarks.md has a quiet run).
const (
	DefaultWorkers      = 32
	DefaultFenceWorkers = 16
)

// NewReconciler wires a HealthEnvironmentReconciler to a manager.
func NewReconciler(mgr ctrl.Manager) *HealthEnvironmentReconciler {
	return &HealthEnvironmentReconciler{
		Workers:    DefaultWorkers,
		Client:     mgr.GetClient(),
		APIReader:  mgr.GetAPIReader(),
		Recorder:   mgr.GetEventRecorder("careplane"),
		Clock:      clock.RealClock{},
		Applier:    ssa.NewApplier(mgr.GetClient()),
		Secrets:    RandomSecret,
		RESTMapper: mgr.GetRESTMapper(),
	}
}

// NewFenceGate wires the fence's fast path to a manager. It reads from the
// manager's cache but writes through a client of its own, rate-limited at
// qps/burst apart from the reconciler's, so that provisioning or resync
// traffic never holds back a deny policy (the API server's priority and
// fairness still applies to both).
func NewFenceGate(mgr ctrl.Manager, qps float32, burst int) (*FenceGate, error) {
	cfg := rest.CopyConfig(mgr.GetConfig())
	cfg.QPS, cfg.Burst, cfg.RateLimiter = qps, burst, nil
	c, err := client.New(cfg, client.Options{
		Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(),
		Cache: &client.CacheOptions{Reader: mgr.GetCache()},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the fence gate's client: %w", err)
	}
	return &FenceGate{Client: c, Now: time.Now, Workers: DefaultFenceWorkers}, nil
}
