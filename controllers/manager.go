package controllers

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"hash/maphash"
	"maps"
	"reflect"
	"sync"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

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
	if err := snapshotv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// CacheOptions make the manager cache only what careplane owns (objects
// labelled with an environment) and of each object only what careplane
// reads. Caching every Secret or Pod of a cluster is how operators run out
// of memory; at a thousand environments, so is caching every field of
// careplane's own tens of objects per environment.
//
// A trim must keep every field a reader of the cache uses, and no more:
// careplane writes its children with server-side apply from the spec and
// decides whether to write from the resourceVersion (internal/ssa), so a
// cached spec is never compared nor written back. TestCacheTrims checks
// each transform against what the reconciler reads.
func CacheOptions() cache.Options {
	req, err := labels.NewRequirement(v1alpha1.LabelEnvironment, selection.Exists, nil)
	if err != nil {
		panic(err)
	}
	owned := labels.NewSelector().Add(*req)
	// Of EndpointSlices only the front's, which careplane writes: the
	// EndpointSlice controller copies a Service's labels onto the slices it
	// makes for the sites' Services, and those careplane never reads.
	front, err := labels.NewRequirement(discoveryv1.LabelManagedBy, selection.Equals, []string{build.EndpointSliceManagedBy})
	if err != nil {
		panic(err)
	}
	// Only the HealthEnvironments are resynced (every --sync-period, the
	// cache's default): a resync of an environment reconciles it, children
	// and all. Resyncing every child as well enqueued the same environment
	// tens of times a period, and each of those events was garbage to
	// collect (the owner handlers' REST mapping of every owner reference).
	never := ptr.To(time.Duration(0))
	by := map[client.Object]cache.ByObject{
		&corev1.Namespace{}:             {Label: owned, Transform: trimNamespace, SyncPeriod: never},
		&corev1.ServiceAccount{}:        {Label: owned, Transform: trimServiceAccount, SyncPeriod: never},
		&corev1.Service{}:               {Label: owned, Transform: trimService, SyncPeriod: never},
		&corev1.ResourceQuota{}:         {Label: owned, Transform: trimResourceQuota, SyncPeriod: never},
		&corev1.LimitRange{}:            {Label: owned, Transform: trimLimitRange, SyncPeriod: never},
		&appsv1.ControllerRevision{}:    {Label: owned, Transform: trimMeta, SyncPeriod: never},
		&policyv1.PodDisruptionBudget{}: {Label: owned, Transform: trimPodDisruptionBudget, SyncPeriod: never},
		&discoveryv1.EndpointSlice{}:    {Label: labels.NewSelector().Add(*req, *front), Transform: trimEndpointSlice, SyncPeriod: never},
		&corev1.Secret{}:                {Label: owned, Transform: trimSecret, SyncPeriod: never},
		&corev1.Pod{}:                   {Label: owned, Transform: trimPod, SyncPeriod: never},
		&appsv1.Deployment{}:            {Label: owned, Transform: trimDeployment, SyncPeriod: never},
		&appsv1.StatefulSet{}:           {Label: owned, Transform: trimStatefulSet, SyncPeriod: never},
		// The claims of careplane's StatefulSets (labelled from their claim
		// templates): their size, for growing them, and their phase.
		&corev1.PersistentVolumeClaim{}: {Label: owned, Transform: trimClaim, SyncPeriod: never},
		// Recovery points' snapshots (read only where the API is served).
		&snapshotv1.VolumeSnapshot{}: {Label: owned, Transform: trimMeta, SyncPeriod: never},
		// NetworkPolicies are cached whoever created them: a fence removes
		// every policy of the fenced namespace, and one a tenant adds
		// during the fence must wake the operator. What the fence verifies
		// it reads live from the API server, so the cache needs only their
		// metadata (but for the fence policy, see trimNetworkPolicy).
		&networkingv1.NetworkPolicy{}: {Transform: trimNetworkPolicy, SyncPeriod: never},
	}
	return cache.Options{ByObject: by, DefaultTransform: trimMeta}
}

// resynced passes the periodic resync of a HealthEnvironment (an update
// event whose old and new object are the same version), which
// predicate.GenerationChangedPredicate drops with the status updates: it is
// what reconciles every environment each --sync-period.
var resynced = predicate.Funcs{
	UpdateFunc: func(e ctrlevent.UpdateEvent) bool {
		return e.ObjectOld.GetResourceVersion() == e.ObjectNew.GetResourceVersion()
	},
	CreateFunc:  func(ctrlevent.CreateEvent) bool { return false },
	DeleteFunc:  func(ctrlevent.DeleteEvent) bool { return false },
	GenericFunc: func(ctrlevent.GenericEvent) bool { return false },
}

// trimMeta drops from a cached object's metadata what no reader uses —
// managed fields, kubectl's last-applied copy of the whole object — and
// shares what tens of objects of an environment repeat (label sets, label
// keys and values, the owner reference, the namespace) instead of keeping
// one copy per object, as decoding leaves them.
func trimMeta(obj any) (any, error) {
	o, ok := obj.(metav1.Object)
	if !ok {
		return obj, nil
	}
	o.SetManagedFields(nil)
	o.SetNamespace(interned.of(o.GetNamespace()))
	if l := o.GetLabels(); l != nil {
		o.SetLabels(interned.stringMap(l))
	}
	if a := o.GetAnnotations(); a != nil {
		delete(a, corev1.LastAppliedConfigAnnotation)
		shared := make(map[string]string, len(a))
		for k, v := range a {
			shared[interned.of(k)] = v
		}
		o.SetAnnotations(shared)
	}
	if refs := o.GetOwnerReferences(); len(refs) > 0 {
		o.SetOwnerReferences(interned.ownerReferences(refs))
	}
	return obj, nil
}

// trimmer returns a transform that applies trimMeta and then trim to
// objects of type T.
//
// It drops the object's UID as well: careplane reads and deletes children
// by name. Of a child only a ServiceAccount's UID is read (a revoked
// ServiceAccount is deleted on the precondition of its UID), so
// trimServiceAccount keeps it, and the UID of the kinds ssa.Version reads
// it of (trimmerKeepingUID).
func trimmer[T any](trim func(T)) func(any) (any, error) {
	return func(obj any) (any, error) {
		if o, ok := obj.(T); ok {
			trim(o)
		}
		if o, ok := obj.(metav1.Object); ok {
			o.SetUID("")
		}
		return trimMeta(obj)
	}
}

// trimmerKeepingUID is trimmer for the kinds whose applies are skipped on
// ssa.Version, which names the object by its UID: one deleted and created
// again by someone else, with the same generation and labels, is applied
// over.
func trimmerKeepingUID[T any](trim func(T)) func(any) (any, error) {
	return func(obj any) (any, error) {
		if o, ok := obj.(T); ok {
			trim(o)
		}
		return trimMeta(obj)
	}
}

var (
	// trimNamespace: a namespace is read for its labels, owner and
	// deletion only.
	trimNamespace = trimmer(func(n *corev1.Namespace) {
		n.Spec, n.Status = corev1.NamespaceSpec{}, corev1.NamespaceStatus{}
	})
	// trimServiceAccount: a ServiceAccount is read for its annotations
	// (the credentials revision) and UID, which it keeps.
	trimServiceAccount = func(obj any) (any, error) {
		if sa, ok := obj.(*corev1.ServiceAccount); ok {
			sa.Secrets, sa.ImagePullSecrets = nil, nil
		}
		return trimMeta(obj)
	}
	// The rest of careplane's children are read for their metadata alone:
	// resourceVersion to skip an unchanged apply, labels to prune.
	trimService = trimmer(func(s *corev1.Service) {
		s.Spec, s.Status = corev1.ServiceSpec{}, corev1.ServiceStatus{}
	})
	// Of ResourceQuotas the fence's own keeps its spec, which the fence
	// compares with the desired one (fence.IsQuota).
	trimResourceQuota = trimmer(func(q *corev1.ResourceQuota) {
		if q.Name != build.FenceQuotaName {
			q.Spec = corev1.ResourceQuotaSpec{}
		}
		q.Status = corev1.ResourceQuotaStatus{}
	})
	trimLimitRange = trimmer(func(l *corev1.LimitRange) {
		l.Spec = corev1.LimitRangeSpec{}
	})
	trimPodDisruptionBudget = trimmerKeepingUID(func(p *policyv1.PodDisruptionBudget) {
		p.Spec, p.Status = policyv1.PodDisruptionBudgetSpec{}, policyv1.PodDisruptionBudgetStatus{}
	})
	trimEndpointSlice = trimmer(func(e *discoveryv1.EndpointSlice) {
		e.Endpoints, e.Ports = nil, nil
	})
	// Of NetworkPolicies the fence's own keeps its spec: the reconciler
	// compares it with the desired one, so as to send nothing for a deny
	// policy the gate wrote as desired (fencePolicyIsAsDesired).
	trimNetworkPolicy = trimmer(func(p *networkingv1.NetworkPolicy) {
		if p.Name != build.FencePolicyName {
			p.Spec = networkingv1.NetworkPolicySpec{}
		}
	})
	// trimSecret drops a cached Secret's data: careplane generates
	// credentials and deletes them, but never reads them back.
	trimSecret = trimmer(func(s *corev1.Secret) {
		s.Data, s.StringData = nil, nil
	})
	// trimPod keeps of a cached Pod what readiness, the front
	// EndpointSlices, evidence and the fence's verification read:
	// metadata but the annotations, node, container names and ports (named ports), the Ready
	// condition and the IP.
	trimPod = trimmer(func(p *corev1.Pod) {
		p.Annotations = nil
		p.Spec = corev1.PodSpec{NodeName: p.Spec.NodeName, InitContainers: portsOnly(p.Spec.InitContainers), Containers: portsOnly(p.Spec.Containers)}
		var ready []corev1.PodCondition
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				ready = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
			}
		}
		var ips []corev1.PodIP
		if len(p.Status.PodIPs) > 1 {
			// A dual-stack pod's other address: the evidence marks name
			// every address of an evidence pod (evidenceMarks).
			ips = p.Status.PodIPs
		}
		p.Status = corev1.PodStatus{Phase: p.Status.Phase, Conditions: ready, PodIP: p.Status.PodIP, PodIPs: ips}
	})
	// trimDeployment keeps of a cached Deployment what readiness and the
	// credentials revision read: metadata but the annotations (the
	// Deployment controller's revision), replicas, the template's
	// annotations, the status counts and the conditions that say a rollout
	// is stuck.
	trimDeployment = trimmerKeepingUID(func(d *appsv1.Deployment) {
		d.Annotations = nil
		var template map[string]string
		if a := d.Spec.Template.Annotations; a != nil {
			template = interned.stringMap(a)
		}
		d.Spec = appsv1.DeploymentSpec{Replicas: d.Spec.Replicas,
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: template}}}
		var stuck []appsv1.DeploymentCondition
		for _, c := range d.Status.Conditions {
			if deploymentStuck(c) {
				stuck = append(stuck, c)
			}
		}
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Status.ObservedGeneration, Replicas: d.Status.Replicas,
			UpdatedReplicas: d.Status.UpdatedReplicas, ReadyReplicas: d.Status.ReadyReplicas,
			AvailableReplicas: d.Status.AvailableReplicas, Conditions: stuck}
	})
)

// trimStatefulSet keeps of a cached StatefulSet what readiness, the
// credentials revision and growing volumes read: metadata but the
// annotations, replicas, the template's annotations, the claim templates'
// names and storage requests, and the status counts.
var trimStatefulSet = trimmerKeepingUID(func(ss *appsv1.StatefulSet) {
	ss.Annotations = nil
	var template map[string]string
	if a := ss.Spec.Template.Annotations; a != nil {
		template = interned.stringMap(a)
	}
	var claims []corev1.PersistentVolumeClaim
	for _, c := range ss.Spec.VolumeClaimTemplates {
		claims = append(claims, corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: c.Name},
			Spec: corev1.PersistentVolumeClaimSpec{Resources: corev1.VolumeResourceRequirements{Requests: c.Spec.Resources.Requests}}})
	}
	ss.Spec = appsv1.StatefulSetSpec{Replicas: ss.Spec.Replicas, VolumeClaimTemplates: claims,
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: template}}}
	ss.Status = appsv1.StatefulSetStatus{ObservedGeneration: ss.Status.ObservedGeneration, Replicas: ss.Status.Replicas,
		UpdatedReplicas: ss.Status.UpdatedReplicas, ReadyReplicas: ss.Status.ReadyReplicas}
})

// trimClaim keeps of a cached PersistentVolumeClaim its metadata but the
// annotations, its storage class, volume name and storage request, and its
// phase and capacity. It keeps the UID, unlike trimmer: a standby's claims
// are known by the UIDs on record (standbydata.go).
func trimClaim(obj any) (any, error) {
	if c, ok := obj.(*corev1.PersistentVolumeClaim); ok {
		c.Annotations = nil
		c.Spec = corev1.PersistentVolumeClaimSpec{StorageClassName: c.Spec.StorageClassName, VolumeName: c.Spec.VolumeName,
			Resources: corev1.VolumeResourceRequirements{Requests: c.Spec.Resources.Requests}}
		c.Status = corev1.PersistentVolumeClaimStatus{Phase: c.Status.Phase, Capacity: c.Status.Capacity}
	}
	return trimMeta(obj)
}

func portsOnly(cs []corev1.Container) []corev1.Container {
	if cs == nil {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		out[i] = corev1.Container{Name: c.Name, Ports: c.Ports}
	}
	return interned.containers(out)
}

// interned holds one copy of each string the cached objects repeat, and of
// each set of labels, owner references and pod ports: the ServiceAccount,
// Deployment and Service of a service carry the same labels, as do the
// NetworkPolicies, ResourceQuota and LimitRange of a site (and a map costs
// some 300 bytes however few labels it holds); every child of an
// environment has the same owner reference; the pods of a service the same
// container ports. Sharing is safe because nothing changes a cached object
// (a reader that wants to must deep-copy it first, as the cache's contract
// says), so nothing changes a shared map either.
//
// The tables are bounded: past maxInterned entries one starts again empty,
// so the names of environments long deleted do not stay forever; the
// objects that share a string or a map keep it alive themselves.
var interned = &internTable{strings: map[string]string{}, labelSets: map[uint64]map[string]string{},
	ownerRefs: map[uint64][]metav1.OwnerReference{}, ports: map[uint64][]corev1.Container{}, seed: maphash.MakeSeed()}

const maxInterned = 1 << 14

type internTable struct {
	mu        sync.Mutex
	strings   map[string]string
	labelSets map[uint64]map[string]string
	ownerRefs map[uint64][]metav1.OwnerReference
	ports     map[uint64][]corev1.Container
	seed      maphash.Seed
}

func (t *internTable) of(s string) string {
	if s == "" {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ofLocked(s)
}

func (t *internTable) ofLocked(s string) string {
	if v, ok := t.strings[s]; ok {
		return v
	}
	if len(t.strings) >= maxInterned {
		clear(t.strings)
	}
	t.strings[s] = s
	return s
}

// stringMap returns a map equal to l (labels, annotations), shared with
// every other cached object that holds an equal one. The table is keyed by
// a hash of the map; on a collision of two different maps the later one is
// not shared.
func (t *internTable) stringMap(l map[string]string) map[string]string {
	var h uint64
	var pair maphash.Hash
	pair.SetSeed(t.seed)
	for k, v := range l {
		// A sum of per-pair hashes does not depend on the map's order.
		pair.Reset()
		pair.WriteString(k)
		pair.WriteByte(0)
		pair.WriteString(v)
		h += pair.Sum64()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if shared, ok := t.labelSets[h]; ok && maps.Equal(shared, l) {
		return shared
	}
	shared := make(map[string]string, len(l))
	for k, v := range l {
		shared[t.ofLocked(k)] = t.ofLocked(v)
	}
	remember(t.labelSets, h, shared)
	return shared
}

// remember stores v under sum unless another value holds it (a collision:
// the later value is not shared), emptying the table at maxInterned.
func remember[T any](table map[uint64]T, sum uint64, v T) {
	if _, taken := table[sum]; taken {
		return
	}
	if len(table) >= maxInterned {
		clear(table)
	}
	table[sum] = v
}

// ownerReferences returns a slice equal to refs, shared with every other
// cached object whose owner references are equal.
func (t *internTable) ownerReferences(refs []metav1.OwnerReference) []metav1.OwnerReference {
	var h maphash.Hash
	h.SetSeed(t.seed)
	for _, r := range refs {
		for _, s := range []string{r.APIVersion, r.Kind, r.Name, string(r.UID)} {
			h.WriteString(s)
			h.WriteByte(0)
		}
		h.WriteByte(flag(r.Controller))
		h.WriteByte(flag(r.BlockOwnerDeletion))
	}
	sum := h.Sum64()
	t.mu.Lock()
	defer t.mu.Unlock()
	if shared, ok := t.ownerRefs[sum]; ok && reflect.DeepEqual(shared, refs) {
		return shared
	}
	for i := range refs {
		r := &refs[i]
		r.APIVersion, r.Kind, r.Name = t.ofLocked(r.APIVersion), t.ofLocked(r.Kind), t.ofLocked(r.Name)
		r.UID = types.UID(t.ofLocked(string(r.UID)))
	}
	remember(t.ownerRefs, sum, refs)
	return refs
}

// containers returns a slice equal to cs, containers with names and ports
// only (portsOnly), shared with every other cached pod whose are equal.
func (t *internTable) containers(cs []corev1.Container) []corev1.Container {
	var h maphash.Hash
	h.SetSeed(t.seed)
	for _, c := range cs {
		h.WriteString(c.Name)
		h.WriteByte(0)
		for _, p := range c.Ports {
			h.WriteString(p.Name)
			h.WriteByte(0)
			h.WriteString(string(p.Protocol))
			h.WriteByte(0)
			h.WriteString(p.HostIP)
			h.WriteByte(0)
			for _, n := range []int32{p.ContainerPort, p.HostPort} {
				h.WriteByte(byte(n))
				h.WriteByte(byte(n >> 8))
				h.WriteByte(byte(n >> 16))
				h.WriteByte(byte(n >> 24))
			}
		}
		h.WriteByte(1)
	}
	sum := h.Sum64()
	t.mu.Lock()
	defer t.mu.Unlock()
	if shared, ok := t.ports[sum]; ok && reflect.DeepEqual(shared, cs) {
		return shared
	}
	remember(t.ports, sum, cs)
	return cs
}

func flag(b *bool) byte {
	switch {
	case b == nil:
		return 0
	case *b:
		return 2
	default:
		return 1
	}
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
	live, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return nil, fmt.Errorf("creating the fence gate's live reader: %w", err)
	}
	return &FenceGate{Client: c, Live: live, Clock: clock.RealClock{}, Workers: DefaultFenceWorkers}, nil
}
