package v1alpha1

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// HealthEnvironment is one customer's health-software environment (for example
// NHS 111 call handling for one region). careplane builds it into three
// namespaces — front, primary and standby — keeps it running, and lets an
// incident responder fence it in seconds and restore it declaratively.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=henv,categories=careplane
// +kubebuilder:printcolumn:name="Tenant",type=string,JSONPath=`.spec.tenant.displayName`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.isolation.mode`,description="What spec.isolation asks for; a FenceRequest may fence an environment whose mode still says None"
// +kubebuilder:printcolumn:name="Fenced",type=string,JSONPath=`.status.conditions[?(@.type=="Fenced")].status`,description="The Fenced condition: True only when every step of the fence is done"
// +kubebuilder:printcolumn:name="Verified",type=string,JSONPath=`.status.conditions[?(@.type=="IsolationVerified")].status`,description="The IsolationVerified condition: True when evaluating the fenced namespace's NetworkPolicies shows no allowed flow"
// +kubebuilder:printcolumn:name="Active",type=string,JSONPath=`.status.activeSite`
// +kubebuilder:printcolumn:name="Services",type=string,JSONPath=`.status.readyServices`,description="Services with all replicas ready, of those that should run"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 40",message="metadata.name must be at most 40 characters: it prefixes the namespaces <name>-primary and <name>-standby"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label (lower-case letters, digits and '-', starting with a letter): it becomes the namespace name"
type HealthEnvironment struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired environment.
	// +required
	Spec HealthEnvironmentSpec `json:"spec"`

	// status is what careplane observed and did.
	// +optional
	Status HealthEnvironmentStatus `json:"status,omitempty"`
}

// HealthEnvironmentList is a list of HealthEnvironments.
//
// +kubebuilder:object:root=true
type HealthEnvironmentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HealthEnvironment `json:"items"`
}

// HealthEnvironmentSpec describes one customer environment.
//
// +kubebuilder:validation:XValidation:rule="self.services.all(s, !has(s.talksTo) || s.talksTo.all(t, self.services.exists(o, o.name == t)))",message="services[].talksTo may only name services declared in spec.services",fieldPath=".services"
// +kubebuilder:validation:XValidation:rule="!has(self.integrations) || self.integrations.all(i, i.services.all(t, self.services.exists(o, o.name == t)))",message="integrations[].services may only name services declared in spec.services",fieldPath=".integrations"
// +kubebuilder:validation:XValidation:rule="!has(self.failover) || !has(self.failover.standby) || self.failover.standby == 'None' || self.services.exists(s, has(s.critical) && s.critical)",message="failover.standby Warm or Cold needs at least one service with critical: true, because only critical services run in the standby"
// +kubebuilder:validation:XValidation:rule="self.services.all(s, !has(s.secretsFrom) || s.secretsFrom.all(f, has(s.talksTo) && f.service in s.talksTo && self.services.exists(o, o.name == f.service && has(o.generatedSecrets) && f.secret in o.generatedSecrets)))",message="services[].secretsFrom may only name a secret in the generatedSecrets of a service this service talksTo",fieldPath=".services"
// +kubebuilder:validation:XValidation:rule="!has(self.recovery) || self.services.exists(s, has(s.volumes) && size(s.volumes) > 0)",message="recovery needs at least one service with volumes: a recovery point snapshots the environment's volumes",fieldPath=".recovery"
type HealthEnvironmentSpec struct {
	// tenant identifies the customer this environment serves.
	// +required
	Tenant Tenant `json:"tenant"`

	// services are the components of the environment (for a 111 service:
	// call handling, referral, booking, care records). Each becomes a
	// Deployment, a Service and a ServiceAccount in each site namespace.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	Services []Service `json:"services"`

	// integrations is the egress allow-list to systems outside the cluster,
	// such as an ambulance computer-aided dispatch. Nothing else may leave
	// the environment except DNS.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=20
	Integrations []Integration `json:"integrations,omitempty"`

	// quota bounds what each site namespace may request.
	// +optional
	// +kubebuilder:default={}
	Quota Quota `json:"quota,omitempty"`

	// failover configures the clean standby site that keeps critical services
	// serving while the primary is fenced or unavailable.
	// +optional
	// +kubebuilder:default={}
	Failover Failover `json:"failover,omitempty"`

	// recovery takes recovery points: every interval, a VolumeSnapshot of
	// every volume of the primary site, taken together and recorded with the
	// time and the known-good revision. A restore brings the data back from
	// one of them. Without recovery, no recovery point is taken.
	// +optional
	Recovery *Recovery `json:"recovery,omitempty"`

	// dataDeletionPolicy says what deleting the environment does with its
	// data: Retain (the default) keeps the primary namespace's claims and
	// snapshots, recovery points and evidence alike, in the primary
	// namespace, isolated, until a responder purges them (`kubectl
	// careplane purge-evidence`); Delete lets them go with the
	// environment's namespaces. A fenced environment's data is never
	// deleted, whatever this says, and neither is evidence: the claims,
	// snapshots and pods labelled careplane.io/evidence keep the primary
	// namespace, as with Retain.
	// +optional
	// +kubebuilder:default=Retain
	DataDeletionPolicy DataDeletionPolicy `json:"dataDeletionPolicy,omitempty"`

	// isolation is the field incident responders flip: mode Fenced cuts the
	// environment off, None (after a fence) rebuilds it clean.
	// +optional
	// +kubebuilder:default={}
	Isolation Isolation `json:"isolation,omitempty"`
}

// Tenant identifies the customer.
type Tenant struct {
	// displayName is the customer's human-readable name, e.g. "NHS 111 Wales".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	DisplayName string `json:"displayName"`

	// odsCode is the NHS Organisation Data Service code of the customer,
	// e.g. "RT4".
	// +optional
	// +kubebuilder:validation:MaxLength=10
	// +kubebuilder:validation:XValidation:rule="self == '' || self.matches('^[A-Z0-9]{3,10}$')",message="odsCode must be 3 to 10 upper-case letters or digits, e.g. RT4"
	ODSCode string `json:"odsCode,omitempty"`
}

// Service is one component of the environment.
//
// +kubebuilder:validation:XValidation:rule="has(self.port) != (has(self.ports) && size(self.ports) > 0)",message="services[] must set exactly one of port (one TCP port) and ports (named TCP and UDP ports)"
// +kubebuilder:validation:XValidation:rule="!has(self.volumes) || self.volumes.all(v, self.volumes.exists_one(w, w.mountPath == v.mountPath))",message="services[].volumes must not share a mountPath"
type Service struct {
	// name identifies the service within the environment; it names its
	// Deployment, Service and ServiceAccount.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="services[].name must be a DNS label: lower-case letters, digits and '-', starting with a letter"
	Name string `json:"name"`

	// image is the container image, pinned by digest
	// (registry/repo@sha256:<64 hex>). Tags are rejected: a tag can be moved
	// to a compromised image, a digest cannot.
	// +required
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9._/:]*[a-z0-9])?(:[-a-zA-Z0-9_.]+)?@sha256:[a-f0-9]{64}$')",message="image must be pinned by digest, e.g. registry.example/111/call-handling@sha256:<64 lower-case hex>; tags alone are rejected"
	Image string `json:"image"`

	// replicas is how many pods of the service run in the primary site (and
	// in the standby, for critical services).
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=50
	Replicas *int32 `json:"replicas,omitempty"`

	// port is the one TCP port the service listens on, named "http"; the
	// Service and the NetworkPolicies use it. Set either port or ports.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`

	// ports are the named ports the service listens on, TCP or UDP (NHS 111
	// telephony: SIP and RTP), for services with more than one port or a UDP
	// one. The Services, the NetworkPolicies and the front EndpointSlices
	// carry every one. Set either port or ports.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:validation:XValidation:rule="self.all(p, self.exists_one(q, q.port == p.port && q.protocol == p.protocol))",message="services[].ports must not list the same port and protocol twice"
	Ports []ServicePort `json:"ports,omitempty"`

	// critical services keep serving from the standby site while the
	// primary is fenced or unavailable.
	// +optional
	Critical bool `json:"critical,omitempty"`

	// talksTo names the services of this environment this service may open
	// connections to (east-west traffic). Everything else is denied.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:MaxLength=40
	TalksTo []string `json:"talksTo,omitempty"`

	// allowFrom lists the peers outside the environment that may connect to
	// this service's port, such as the API gateway's namespace.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=10
	AllowFrom []TrafficPeer `json:"allowFrom,omitempty"`

	// generatedSecrets names random credentials careplane creates for this
	// service as Secrets named <service>.<name> (the dot keeps the names of
	// different services' Secrets apart) with one key, "value", and rotates
	// on restore, into new Secrets named <service>.<name>.<revision hash>
	// in the primary, so that no pod from before the restore reads them.
	// They are mounted read-only at /var/run/careplane/secrets/<name>/value,
	// whatever the Secret's name.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:validation:items:MaxLength=40
	// +kubebuilder:validation:items:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="generatedSecrets entries must be DNS labels: lower-case letters, digits and '-'"
	GeneratedSecrets []string `json:"generatedSecrets,omitempty"`

	// secretsFrom are credentials another service of this environment
	// generates (its generatedSecrets) that this service reads, such as a
	// records API reading the document store's database password. The
	// service must talk to that service (talksTo). Rotated together: a
	// restore rotates the credential and rolls the pods of both.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=10
	// +kubebuilder:validation:XValidation:rule="self.all(f, self.exists_one(g, g.service == f.service && g.secret == f.secret))",message="services[].secretsFrom must not name the same secret of the same service twice"
	SecretsFrom []SecretFrom `json:"secretsFrom,omitempty"`

	// volumes are durable volumes: with any, the service runs as a
	// StatefulSet with one PersistentVolumeClaim per replica and volume,
	// which careplane never deletes (a restore keeps the compromised ones as
	// evidence). Without, it runs as a Deployment with no durable storage.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=5
	Volumes []Volume `json:"volumes,omitempty"`

	// env sets plain environment variables in the service's container.
	// Credentials belong in generatedSecrets, not here.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=50
	Env []EnvVar `json:"env,omitempty"`

	// resources are the container's compute requests and limits. When unset,
	// the namespace LimitRange supplies requests of 100m CPU and 128Mi memory.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// readinessProbe tells Kubernetes when a pod may receive traffic; the
	// front Services route only to ready pods.
	// +optional
	ReadinessProbe *corev1.Probe `json:"readinessProbe,omitempty"`

	// livenessProbe tells Kubernetes when to restart the container.
	// +optional
	LivenessProbe *corev1.Probe `json:"livenessProbe,omitempty"`
}

// ServicePort is one named port of a service.
type ServicePort struct {
	// name names the port in the Service, the container and the front
	// EndpointSlice, e.g. sip or rtp: up to 15 lower-case letters, digits and
	// '-' (an IANA service name).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && !self.contains('--')",message="ports[].name must be an IANA service name: up to 15 lower-case letters, digits and '-', starting with a letter, no '--'"
	Name string `json:"name"`

	// port is the port number.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// protocol is TCP or UDP.
	// +optional
	// +kubebuilder:default=TCP
	// +kubebuilder:validation:Enum=TCP;UDP
	Protocol corev1.Protocol `json:"protocol,omitempty"`
}

// SecretFrom is a credential generated for another service, read by this
// one.
type SecretFrom struct {
	// service is the service that generates the credential; it must be in
	// this service's talksTo.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	Service string `json:"service"`

	// secret is the name in that service's generatedSecrets.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	Secret string `json:"secret"`

	// envVar, when set, exposes the credential as this environment variable.
	// The credential is always also mounted read-only at
	// /var/run/careplane/secrets/<service>.<secret>/value (a file is the
	// safer choice: environment variables leak into crash dumps and child
	// processes).
	// +optional
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z_][A-Za-z0-9_]*$')",message="secretsFrom[].envVar must be a C identifier: letters, digits and '_', not starting with a digit"
	EnvVar string `json:"envVar,omitempty"`
}

// Volume is a durable volume of a service: one PersistentVolumeClaim per
// replica, named <name>-<service>-<ordinal> in the site namespace.
//
// +kubebuilder:validation:XValidation:rule="!isQuantity(self.size) || !isQuantity(oldSelf.size) || quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",message="volumes[].size cannot shrink: a PersistentVolumeClaim can only grow (where its StorageClass allows expansion); restore into a new environment to move to a smaller volume"
// +kubebuilder:validation:XValidation:rule="has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",message="volumes[].storageClassName cannot change: the volumes already exist in the old class"
// +kubebuilder:validation:XValidation:rule="self.accessMode == oldSelf.accessMode",message="volumes[].accessMode cannot change: the volumes already exist with the old mode"
type Volume struct {
	// name identifies the volume within the service and names its claims.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && self != 'tmp' && !self.startsWith('secret-')",message="volumes[].name must be a DNS label (lower-case letters, digits and '-', starting with a letter) other than tmp and not starting with secret- (careplane's own volumes)"
	Name string `json:"name"`

	// mountPath is where the volume is mounted in the container, an
	// absolute path outside /tmp and /var/run/careplane.
	// +required
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/') && !self.contains('..') && !self.contains(':') && self != '/tmp' && !self.startsWith('/tmp/') && !self.startsWith('/var/run/careplane')",message="volumes[].mountPath must be an absolute path without '..' or ':', outside /tmp and /var/run/careplane, e.g. /var/lib/records"
	MountPath string `json:"mountPath"`

	// size is the capacity of each claim, e.g. 10Gi. It may grow (where
	// the StorageClass allows expansion) but never shrink.
	// +required
	Size VolumeSize `json:"size"`

	// storageClassName is the StorageClass of the claims; the cluster's
	// default class when unset. It cannot change once set.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	StorageClassName *string `json:"storageClassName,omitempty"`

	// accessMode is ReadWriteOnce (the default), ReadWriteOncePod or
	// ReadWriteMany. It cannot change.
	// +optional
	// +kubebuilder:default=ReadWriteOnce
	// +kubebuilder:validation:Enum=ReadWriteOnce;ReadWriteOncePod;ReadWriteMany
	AccessMode corev1.PersistentVolumeAccessMode `json:"accessMode,omitempty"`
}

// VolumeSize is a volume's capacity as a Kubernetes quantity string, e.g.
// 10Gi. A string (not resource.Quantity) so that the schema can bound its
// length, which the CEL cost budget needs.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=20
// +kubebuilder:validation:XValidation:rule="isQuantity(self) && quantity(self).compareTo(quantity('1Mi')) >= 0 && quantity(self).compareTo(quantity('64Ti')) <= 0",message="volumes[].size must be a quantity between 1Mi and 64Ti, e.g. 10Gi"
type VolumeSize string

// Quantity returns the size as a quantity, zero when it does not parse (the
// schema admits only sizes that do).
func (v VolumeSize) Quantity() resource.Quantity {
	q, err := resource.ParseQuantity(string(v))
	if err != nil {
		return resource.Quantity{}
	}
	return q
}

// EnvVar is a plain environment variable.
type EnvVar struct {
	// name of the variable.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z_][A-Za-z0-9_]*$')",message="env[].name must be a C identifier: letters, digits and '_', not starting with a digit"
	Name string `json:"name"`

	// value of the variable.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value,omitempty"`
}

// TrafficPeer selects pods outside the environment by namespace (and
// optionally by pod labels within those namespaces).
type TrafficPeer struct {
	// namespaceSelector selects the namespaces allowed to connect.
	// +required
	NamespaceSelector *LabelSelector `json:"namespaceSelector"`

	// podSelector narrows the peers to pods with these labels in the selected
	// namespaces. When unset, every pod in them may connect.
	// +optional
	PodSelector *LabelSelector `json:"podSelector,omitempty"`
}

// LabelSelector selects objects by label. It is metav1.LabelSelector with
// bounds, so that the API server can validate it before careplane writes a
// NetworkPolicy from it (a selector that fails only at fence time would be
// found at the worst moment).
type LabelSelector struct {
	// matchLabels selects objects with all of these labels.
	// +optional
	// +kubebuilder:validation:MaxProperties=20
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k).hasValue())",message="matchLabels keys must be label keys: up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, optionally after a DNS subdomain prefix and '/', e.g. kubernetes.io/metadata.name"
	MatchLabels map[string]LabelValue `json:"matchLabels,omitempty"`

	// matchExpressions selects objects matching all of these requirements.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// LabelValue is a label value: at most 63 characters, alphanumerics with
// '-', '_' or '.' inside.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`
type LabelValue string

// LabelSelectorRequirement is one requirement of a LabelSelector.
//
// +kubebuilder:validation:XValidation:rule="(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",message="matchExpressions[].values must be set for In and NotIn, and empty for Exists and DoesNotExist"
type LabelSelectorRequirement struct {
	// The pattern bounds the key's name to 63 characters, the rule its prefix
	// to 253, as metav1 validation (and so the NetworkPolicy API) requires. A
	// format.qualifiedName() rule would say both, at a CEL cost over the
	// CRD's budget in this many selectors.

	// key is the label key, e.g. kubernetes.io/metadata.name.
	// +required
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self.indexOf('/') <= 253",message="matchExpressions[].key must be a label key: its prefix, before '/', is a DNS subdomain of at most 253 characters"
	Key string `json:"key"`

	// operator is In, NotIn, Exists or DoesNotExist.
	// +required
	// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist
	Operator metav1.LabelSelectorOperator `json:"operator"`

	// values for In and NotIn.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	Values []LabelValue `json:"values,omitempty"`
}

// ToMeta converts the selector to a metav1.LabelSelector (nil stays nil).
func (s *LabelSelector) ToMeta() *metav1.LabelSelector {
	if s == nil {
		return nil
	}
	out := &metav1.LabelSelector{}
	if len(s.MatchLabels) > 0 {
		out.MatchLabels = make(map[string]string, len(s.MatchLabels))
		for k, v := range s.MatchLabels {
			out.MatchLabels[k] = string(v)
		}
	}
	for _, e := range s.MatchExpressions {
		r := metav1.LabelSelectorRequirement{Key: e.Key, Operator: e.Operator}
		for _, v := range e.Values {
			r.Values = append(r.Values, string(v))
		}
		out.MatchExpressions = append(out.MatchExpressions, r)
	}
	return out
}

// Integration is an external system some services may reach.
type Integration struct {
	// name identifies the integration, e.g. "ambulance-cad".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="integrations[].name must be a DNS label: lower-case letters, digits and '-', starting with a letter"
	Name string `json:"name"`

	// cidrs are the destination networks, e.g. 10.20.0.0/16.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="integrations[].cidrs entries must be CIDRs such as 10.20.0.0/16 or 2001:db8::/32"
	// +kubebuilder:validation:items:XValidation:rule="!isCIDR(self) || string(cidr(self).masked()) == self",message="integrations[].cidrs entries must be network addresses in canonical form with no host bits set, e.g. 10.20.0.0/16 rather than 10.20.0.1/16"
	CIDRs []string `json:"cidrs"`

	// ports are the destination TCP ports.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	Ports []int32 `json:"ports"`

	// services names the services of this environment that may reach the
	// integration.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:MaxLength=40
	Services []string `json:"services"`
}

// Quota bounds each site namespace, through a ResourceQuota on requests and
// pods and a LimitRange supplying default requests.
type Quota struct {
	// cpu is the total CPU all pods of one site may request.
	// +optional
	// +kubebuilder:default="4"
	CPU *resource.Quantity `json:"cpu,omitempty"`

	// memory is the total memory all pods of one site may request.
	// +optional
	// +kubebuilder:default="8Gi"
	Memory *resource.Quantity `json:"memory,omitempty"`

	// pods is the most pods one site may hold (evidence pods count too).
	// +optional
	// +kubebuilder:default=40
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	Pods *int32 `json:"pods,omitempty"`
}

// Recovery configures recovery points.
type Recovery struct {
	// volumeSnapshotClassName is the VolumeSnapshotClass
	// (snapshot.storage.k8s.io/v1) of the recovery points; its driver must
	// be the CSI driver of the volumes. Any CSI driver with snapshots works.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	VolumeSnapshotClassName string `json:"volumeSnapshotClassName"`

	// interval is how often a recovery point is taken, e.g. 15m: the most
	// data time a restore from the newest clean point loses.
	// +optional
	// +kubebuilder:default="15m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s') && duration(self) <= duration('168h')",message="recovery.interval must be between 10s and 168h (a week)"
	Interval *metav1.Duration `json:"interval,omitempty"`

	// keep is how many clean recovery points are kept; older ones are
	// deleted, except while the environment is fenced, when nothing is.
	// +optional
	// +kubebuilder:default=8
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=30
	Keep int32 `json:"keep,omitempty"`
}

// RestoreFrom chooses the recovery point a restore brings the data back
// from. Unset, it is the newest clean point taken before the fence.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.recoveryPoint) && has(self.before))",message="isolation.restoreFrom takes either recoveryPoint or before, not both"
type RestoreFrom struct {
	// recoveryPoint names one recovery point (see status.recovery and
	// `kubectl careplane recovery-points`).
	// +optional
	// +kubebuilder:validation:MaxLength=63
	RecoveryPoint string `json:"recoveryPoint,omitempty"`

	// before picks the newest clean recovery point taken before this time,
	// for when the compromise is known to have started before the fence.
	// +optional
	Before *metav1.Time `json:"before,omitempty"`
}

// DataDeletionPolicy says what deleting an environment does with its
// volumes and snapshots.
// +kubebuilder:validation:Enum=Retain;Delete
type DataDeletionPolicy string

const (
	// DataRetain keeps the claims and snapshots of a deleted environment.
	DataRetain DataDeletionPolicy = "Retain"
	// DataDelete deletes them with the environment, evidence excepted.
	DataDelete DataDeletionPolicy = "Delete"
)

// StandbyMode says whether and how a standby site runs.
// +kubebuilder:validation:Enum=None;Warm;Cold
type StandbyMode string

const (
	// StandbyNone runs no standby site.
	StandbyNone StandbyMode = "None"
	// StandbyWarm keeps the critical services running in the standby site.
	StandbyWarm StandbyMode = "Warm"
	// StandbyCold creates the standby site's workloads only when failing over.
	StandbyCold StandbyMode = "Cold"
)

// FailoverTrigger says what moves traffic to the standby.
// +kubebuilder:validation:Enum=Automatic;Manual
type FailoverTrigger string

const (
	// TriggerAutomatic fails over on fence and on sustained unavailability.
	TriggerAutomatic FailoverTrigger = "Automatic"
	// TriggerManual fails over only when failover.activeSite says so.
	TriggerManual FailoverTrigger = "Manual"
)

// Site is one of the two site namespaces of an environment.
// +kubebuilder:validation:Enum=Primary;Standby
type Site string

const (
	// SitePrimary is the <name>-primary namespace.
	SitePrimary Site = "Primary"
	// SiteStandby is the <name>-standby namespace.
	SiteStandby Site = "Standby"
)

// Failover configures the standby site.
//
// +kubebuilder:validation:XValidation:rule="!has(self.activeSite) || self.activeSite != 'Standby' || (has(self.standby) && self.standby != 'None')",message="failover.activeSite cannot be Standby when failover.standby is None"
type Failover struct {
	// standby is None (no standby site), Warm (critical services always
	// running from the last known-good revision) or Cold (created when
	// failing over).
	// +optional
	// +kubebuilder:default=None
	Standby StandbyMode `json:"standby,omitempty"`

	// trigger is Automatic (fail over on fence, and when a critical service
	// has had no ready replica for unavailableAfter) or Manual (only
	// activeSite moves traffic).
	// +optional
	// +kubebuilder:default=Automatic
	Trigger FailoverTrigger `json:"trigger,omitempty"`

	// activeSite is the manual switch: Standby sends traffic to the standby
	// site. With trigger Automatic it also forces the standby while set.
	// +optional
	// +kubebuilder:default=Primary
	ActiveSite Site `json:"activeSite,omitempty"`

	// unavailableAfter is how long a critical service of the primary may
	// have no ready replica before an automatic failover.
	// +optional
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5s') && duration(self) <= duration('1h')",message="failover.unavailableAfter must be between 5s and 1h"
	UnavailableAfter *metav1.Duration `json:"unavailableAfter,omitempty"`

	// placement puts the standby's pods on separate nodes.
	// +optional
	Placement Placement `json:"placement,omitempty"`
}

// Placement constrains where the standby's pods run.
type Placement struct {
	// nodeSelector is added to the standby pods' node selector.
	// +optional
	// +kubebuilder:validation:MaxProperties=20
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations are added to the standby pods.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
}

// IsolationMode is the isolation state a responder asks for.
// +kubebuilder:validation:Enum=None;Fenced
type IsolationMode string

const (
	// IsolationNone runs the environment normally; set after a fence, it
	// restores the environment through a clean rebuild.
	IsolationNone IsolationMode = "None"
	// IsolationFenced cuts the primary site off the network, revokes its
	// credentials and stops or preserves its workloads.
	IsolationFenced IsolationMode = "Fenced"
)

// WorkloadAction is what a fence does with the running pods.
// +kubebuilder:validation:Enum=Preserve;Stop
type WorkloadAction string

const (
	// WorkloadsPreserve keeps the fenced pods running, detached and labelled,
	// as evidence.
	WorkloadsPreserve WorkloadAction = "Preserve"
	// WorkloadsStop scales the workloads to zero.
	WorkloadsStop WorkloadAction = "Stop"
)

// Isolation is the fence switch.
//
// +kubebuilder:validation:XValidation:rule="!has(self.mode) || self.mode != 'Fenced' || (has(self.reason) && self.reason.trim().size() > 0)",message="isolation.reason is required when isolation.mode is Fenced: say why the environment is fenced"
type Isolation struct {
	// mode is None or Fenced. Fenced cuts the primary site off within a
	// second; going back to None rebuilds it clean.
	// +optional
	// +kubebuilder:default=None
	Mode IsolationMode `json:"mode,omitempty"`

	// reason says why the environment is fenced; required when Fenced.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Reason string `json:"reason,omitempty"`

	// ticket is the incident reference, e.g. INC-2041.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == '' || self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')",message="isolation.ticket must be letters, digits, '-', '_' or '.', because it labels the evidence pods"
	Ticket string `json:"ticket,omitempty"`

	// workloads is Preserve (keep the fenced pods running, detached and
	// labelled, as evidence) or Stop (scale to zero).
	// +optional
	// +kubebuilder:default=Preserve
	Workloads WorkloadAction `json:"workloads,omitempty"`

	// forensicsFrom names the namespaces whose pods may still connect to
	// fenced pods, for investigation; nothing else may. Name them by
	// kubernetes.io/metadata.name, the label the API server sets to each
	// namespace's name: {matchLabels: {kubernetes.io/metadata.name: forensics}},
	// or one matchExpressions requirement {key: kubernetes.io/metadata.name,
	// operator: In, values: [forensics, soc]} with 1 to 16 names. Anything
	// else is rejected: {}, other labels (a tenant can label its own
	// namespaces) and other operators would let in namespaces nobody named.
	// The fenced namespace itself is never let in. A value stored before this
	// rule is kept while it is left unchanged (validation ratcheting), and
	// lets no namespace in until it is corrected.
	// +optional
	// +kubebuilder:validation:XValidation:rule="has(self.matchLabels) && size(self.matchLabels) > 0 ? (!has(self.matchExpressions) || size(self.matchExpressions) == 0) && size(self.matchLabels) == 1 && 'kubernetes.io/metadata.name' in self.matchLabels && !format.dns1123Label().validate(self.matchLabels['kubernetes.io/metadata.name']).hasValue() : has(self.matchExpressions) && size(self.matchExpressions) == 1 && self.matchExpressions[0].key == 'kubernetes.io/metadata.name' && self.matchExpressions[0].operator == 'In' && has(self.matchExpressions[0].values) && size(self.matchExpressions[0].values) >= 1 && size(self.matchExpressions[0].values) <= 16 && self.matchExpressions[0].values.all(v, !format.dns1123Label().validate(v).hasValue())",message="isolation.forensicsFrom must name the forensics namespaces by kubernetes.io/metadata.name, the one label no tenant can set: matchLabels: {kubernetes.io/metadata.name: forensics} for one, or matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [forensics, soc]}] for up to 16; {}, other labels and other operators would let in namespaces nobody named"
	ForensicsFrom *LabelSelector `json:"forensicsFrom,omitempty"`

	// restoreRevision names a known-good revision (see status.knownGoodRevision
	// and `kubectl careplane revisions`) to rebuild from on restore, instead
	// of the current spec.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	RestoreRevision string `json:"restoreRevision,omitempty"`

	// restoreFrom chooses the recovery point the restore brings the volumes'
	// data back from: by default the newest clean point taken before the
	// fence; or a named point; or the newest clean point before a time.
	// +optional
	RestoreFrom *RestoreFrom `json:"restoreFrom,omitempty"`
}

// MaxForensicsNamespaces bounds the names isolation.forensicsFrom may list
// (the CRD's rule on it says 16 too).
const MaxForensicsNamespaces = 16

// ForensicsNamespaces returns the namespaces forensicsFrom names, sorted and
// without duplicates: a fence admits ingress from pods in these (other than
// the fenced namespace) and from nothing else. It reads forensicsFrom as the
// CRD's rule on it accepts it. Any other form names no namespace, so that a
// value stored before the rule, which ratcheting keeps while it is left
// unchanged, fails closed.
func (in Isolation) ForensicsNamespaces() []string {
	f := in.ForensicsFrom
	if f == nil {
		return nil
	}
	var names []string
	switch {
	case len(f.MatchLabels) > 0:
		name, ok := f.MatchLabels[corev1.LabelMetadataName]
		if !ok || len(f.MatchLabels) != 1 || len(f.MatchExpressions) != 0 {
			return nil
		}
		names = []string{string(name)}
	case len(f.MatchExpressions) == 1:
		r := f.MatchExpressions[0]
		if r.Key != corev1.LabelMetadataName || r.Operator != metav1.LabelSelectorOpIn ||
			len(r.Values) == 0 || len(r.Values) > MaxForensicsNamespaces {
			return nil
		}
		for _, v := range r.Values {
			names = append(names, string(v))
		}
	default:
		return nil
	}
	for _, n := range names {
		if len(validation.IsDNS1123Label(n)) > 0 {
			return nil
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// HealthEnvironmentStatus is what careplane observed and did.
type HealthEnvironmentStatus struct {
	// observedGeneration is the spec generation the status describes; it is
	// set only when a reconcile of that generation succeeded.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions are Ready, Degraded, Fenced, ServingFromStandby,
	// IsolationVerified and Restoring.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// activeSite is the site the front Services send traffic to.
	// +optional
	ActiveSite Site `json:"activeSite,omitempty"`

	// namespaces are the environment's namespaces.
	// +optional
	Namespaces *Namespaces `json:"namespaces,omitempty"`

	// services is the readiness of each service in each site that runs it.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=40
	Services []ServiceStatus `json:"services,omitempty"`

	// readyServices summarises services as "<ready>/<total>" for kubectl get.
	// +optional
	ReadyServices string `json:"readyServices,omitempty"`

	// knownGoodRevision names the newest ControllerRevision (in the front
	// namespace) recording service templates that were seen Ready.
	// +optional
	KnownGoodRevision string `json:"knownGoodRevision,omitempty"`

	// isolation reports the current or last fence.
	// +optional
	Isolation *IsolationStatus `json:"isolation,omitempty"`

	// failover is what the failover decision remembers between reconciles.
	// +optional
	Failover *FailoverStatus `json:"failover,omitempty"`

	// recovery lists the environment's recovery points, newest last. It is
	// the record a restore chooses from: a VolumeSnapshot counts only when
	// its UID is listed here, since anyone who may create snapshots in the
	// namespace can forge one's labels, and only careplane writes the
	// status.
	// +optional
	Recovery *RecoveryStatus `json:"recovery,omitempty"`

	// evidenceSnapshots are the VolumeSnapshots a fence took of every
	// claim of the primary namespace once the window was closed, kept until
	// a responder purges them (also after the restore). Like
	// status.recovery, it is the record: a snapshot counts as evidence only
	// when its UID is listed here.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=250
	EvidenceSnapshots []EvidenceSnapshot `json:"evidenceSnapshots,omitempty"`

	// incidents is the history of fences, newest last, bounded to 20.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	Incidents []Incident `json:"incidents,omitempty"`
}

// Namespaces names the environment's namespaces.
type Namespaces struct {
	// front holds the stable Services clients call.
	Front string `json:"front,omitempty"`
	// primary holds the primary site's workloads.
	Primary string `json:"primary,omitempty"`
	// standby holds the standby site's workloads, when there is a standby.
	// +optional
	Standby string `json:"standby,omitempty"`
}

// ServiceStatus is the readiness of one service in one site.
type ServiceStatus struct {
	// name of the service.
	Name string `json:"name"`
	// site that runs it.
	Site Site `json:"site"`
	// replicas wanted.
	Replicas int32 `json:"replicas"`
	// readyReplicas observed.
	ReadyReplicas int32 `json:"readyReplicas"`
	// image running.
	Image string `json:"image,omitempty"`
}

// IsolationStatus reports a fence.
type IsolationStatus struct {
	// fencedAt is when the fence was first observed.
	// +optional
	FencedAt *metav1.Time `json:"fencedAt,omitempty"`
	// reason copied from the spec when fenced.
	// +optional
	Reason string `json:"reason,omitempty"`
	// ticket copied from the spec when fenced.
	// +optional
	Ticket string `json:"ticket,omitempty"`
	// request names the FenceRequest that fenced the environment before
	// its own spec.isolation said Fenced (a fleet fence).
	// +optional
	Request string `json:"request,omitempty"`
	// fencedBy is who asked for the fence, as the API server authenticated
	// them (the careplane.io/isolation-by annotation of the environment, or
	// careplane.io/requested-by of the FenceRequest, which the guardrails
	// admit only as the requester's own username).
	// +optional
	// +kubebuilder:validation:MaxLength=512
	FencedBy string `json:"fencedBy,omitempty"`
	// credentialsRevoked counts ServiceAccounts and Secrets revoked.
	// +optional
	CredentialsRevoked int32 `json:"credentialsRevoked,omitempty"`
	// evidencePods counts pods preserved as evidence.
	// +optional
	EvidencePods int32 `json:"evidencePods,omitempty"`
	// removedPolicies names the NetworkPolicies the fence deleted from the
	// primary namespace, including ones careplane did not create.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	RemovedPolicies []string `json:"removedPolicies,omitempty"`
	// verifiedAt is when the isolation was last verified by evaluating the
	// namespace's NetworkPolicies.
	// +optional
	VerifiedAt *metav1.Time `json:"verifiedAt,omitempty"`
}

// FailoverStatus records when traffic last moved and how long the primary
// has been up or down, for the failover decision's thresholds. The times
// keep microseconds: whole seconds would let a threshold pass up to a
// second early.
type FailoverStatus struct {
	// switchedAt is when traffic last moved to the active site (or stopped).
	// +optional
	SwitchedAt *metav1.MicroTime `json:"switchedAt,omitempty"`
	// primaryDownSince is since when a critical service of the primary has
	// had no ready replica.
	// +optional
	PrimaryDownSince *metav1.MicroTime `json:"primaryDownSince,omitempty"`
	// primaryReadySince is since when every critical service of the primary
	// has had all its replicas ready.
	// +optional
	PrimaryReadySince *metav1.MicroTime `json:"primaryReadySince,omitempty"`
	// standbyRevision is the known-good revision the standby runs.
	// +optional
	StandbyRevision string `json:"standbyRevision,omitempty"`
	// notServedOnStandby names the services that are not critical and so do
	// not run in the standby.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=20
	NotServedOnStandby []string `json:"notServedOnStandby,omitempty"`
	// standbyData is the standby's recovery point objective: the clean
	// recovery point its volumes were seeded from, and so the data a
	// failover serves. Set when the standby runs services with volumes and
	// spec.recovery is set.
	// +optional
	StandbyData *StandbyData `json:"standbyData,omitempty"`
}

// StandbyData says which recovery point the standby's volumes hold.
type StandbyData struct {
	// dataFrom names the clean recovery point (of status.recovery.points;
	// retention may have retired it since) the standby's volumes were
	// seeded from; empty while none was (no clean point was ready yet: the
	// volumes start empty).
	// +optional
	// +kubebuilder:validation:MaxLength=63
	DataFrom string `json:"dataFrom,omitempty"`
	// dataTakenAt is when that point was taken: a failover serves the data
	// as it was then, and now − dataTakenAt is how much data it would lose
	// (at most spec.recovery.interval plus the time a refresh takes, while
	// the primary takes clean points).
	// +optional
	DataTakenAt *metav1.Time `json:"dataTakenAt,omitempty"`
	// seededAt is when careplane last created the standby's claims from
	// dataFrom.
	// +optional
	SeededAt *metav1.Time `json:"seededAt,omitempty"`
	// servedSince is since when the standby's volumes have served traffic.
	// They then hold writes made on the standby, and careplane no longer
	// replaces them with newer points: after the primary is back, copy what
	// is needed and delete the standby's claims; careplane seeds them again.
	// +optional
	ServedSince *metav1.Time `json:"servedSince,omitempty"`
	// refreshingTo names the newer clean point the standby's volumes are
	// being replaced with (the standby is scaled to zero meanwhile).
	// +optional
	// +kubebuilder:validation:MaxLength=63
	RefreshingTo string `json:"refreshingTo,omitempty"`
	// claims are the standby's claims careplane created from dataFrom, by
	// name and UID: a claim of the same name with another UID is not one.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Claims []SeededClaim `json:"claims,omitempty"`
}

// SeededClaim is a standby claim careplane created from a recovery point.
type SeededClaim struct {
	// name of the PersistentVolumeClaim in the standby namespace.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// uid of the claim careplane created.
	// +required
	// +kubebuilder:validation:MaxLength=36
	UID string `json:"uid"`
}

// RecoveryStatus reports the recovery points.
type RecoveryStatus struct {
	// points are the recovery points kept, oldest first.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Points []RecoveryPoint `json:"points,omitempty"`

	// nextPointAt is when the next recovery point is due.
	// +optional
	NextPointAt *metav1.Time `json:"nextPointAt,omitempty"`

	// newestCleanPointAt is when the newest clean recovery point was taken:
	// a restore now would lose the data written since.
	// +optional
	NewestCleanPointAt *metav1.Time `json:"newestCleanPointAt,omitempty"`
}

// RecoveryPoint is one consistent set of VolumeSnapshots of all the
// environment's volumes.
type RecoveryPoint struct {
	// name names the point; its snapshots are labelled
	// careplane.io/recovery-point=<name>.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// takenAt is when the snapshots were requested.
	// +required
	TakenAt metav1.Time `json:"takenAt"`

	// revision is the known-good revision the environment ran then.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Revision string `json:"revision,omitempty"`

	// ready is true once every snapshot of the point is ready to use.
	// +optional
	Ready bool `json:"ready,omitempty"`

	// clean is true when the environment was Ready and not fenced when the
	// point was taken. A restore uses, by default, the newest point that is
	// clean and ready.
	// +optional
	Clean bool `json:"clean,omitempty"`

	// snapshots are the VolumeSnapshots of the point, in the primary
	// namespace.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=250
	Snapshots []PointSnapshot `json:"snapshots,omitempty"`
}

// PointSnapshot is one VolumeSnapshot of a recovery point.
type PointSnapshot struct {
	// name of the VolumeSnapshot.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// uid of the VolumeSnapshot careplane created: a snapshot of the same
	// name with another UID is not this point's.
	// +required
	// +kubebuilder:validation:MaxLength=36
	UID string `json:"uid"`
	// claim is the PersistentVolumeClaim it was taken of.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Claim string `json:"claim"`
}

// EvidenceSnapshot is one VolumeSnapshot a fence took as evidence.
type EvidenceSnapshot struct {
	// name of the VolumeSnapshot, in the primary namespace.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// uid of the VolumeSnapshot careplane created.
	// +required
	// +kubebuilder:validation:MaxLength=36
	UID string `json:"uid"`
	// claim is the PersistentVolumeClaim it was taken of.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Claim string `json:"claim"`
	// fenceID is the fence that took it (when the fence began, RFC 3339).
	// +required
	// +kubebuilder:validation:MaxLength=64
	FenceID string `json:"fenceID"`
	// ticket is the fence's incident reference.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Ticket string `json:"ticket,omitempty"`
	// takenAt is when the snapshot was requested.
	// +optional
	TakenAt *metav1.Time `json:"takenAt,omitempty"`
	// ready is true once the snapshot is ready to use.
	// +optional
	Ready bool `json:"ready,omitempty"`
}

// Incident is one fence, from fencing to restore.
type Incident struct {
	// ticket is the incident reference.
	// +optional
	Ticket string `json:"ticket,omitempty"`
	// reason the environment was fenced.
	// +optional
	Reason string `json:"reason,omitempty"`
	// fencedAt is when the fence began.
	// +optional
	FencedAt *metav1.Time `json:"fencedAt,omitempty"`
	// restoredAt is when the environment was Ready again with the fence lifted.
	// +optional
	RestoredAt *metav1.Time `json:"restoredAt,omitempty"`
	// restoredFrom is the revision the primary was rebuilt from.
	// +optional
	RestoredFrom string `json:"restoredFrom,omitempty"`
	// restoreID is the restore that lifted the fence: when it began, RFC
	// 3339. A lift tried again finds its incident by it; a lift aborted by
	// the fence resuming is replaced by the next restore's.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	RestoreID string `json:"restoreID,omitempty"`
	// fencedBy is who asked for the fence (see status.isolation.fencedBy).
	// +optional
	// +kubebuilder:validation:MaxLength=512
	FencedBy string `json:"fencedBy,omitempty"`
	// restoredBy is who asked for the restore, as the API server
	// authenticated them (the careplane.io/isolation-by annotation the
	// isolation guard checked).
	// +optional
	// +kubebuilder:validation:MaxLength=512
	RestoredBy string `json:"restoredBy,omitempty"`
	// recoveryPoint names the recovery point the volumes' data was restored
	// from (see isolation.restoreFrom); empty when the environment has no
	// volumes.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	RecoveryPoint string `json:"recoveryPoint,omitempty"`
	// recoveryPointTakenAt is when that recovery point was taken: the data
	// written after it is not in the restored volumes (it stays in the
	// claims kept as evidence).
	// +optional
	RecoveryPointTakenAt *metav1.Time `json:"recoveryPointTakenAt,omitempty"`
	// dataLost is the data time the restore lost: from the recovery point
	// to the start of the fence (fencedAt - recoveryPointTakenAt).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	DataLost *metav1.Duration `json:"dataLost,omitempty"`
}

// ServicePorts returns the service's ports: ports, or the one TCP port
// named "http" that port declares.
func (s *Service) ServicePorts() []ServicePort {
	if len(s.Ports) > 0 {
		out := slices.Clone(s.Ports)
		for i := range out {
			if out[i].Protocol == "" {
				out[i].Protocol = corev1.ProtocolTCP
			}
		}
		return out
	}
	return []ServicePort{{Name: DefaultPortName, Port: s.Port, Protocol: corev1.ProtocolTCP}}
}

// DefaultPortName names the one port a service's port field declares.
const DefaultPortName = "http"

// Stateful says the service has durable volumes and so runs as a
// StatefulSet.
func (s *Service) Stateful() bool { return len(s.Volumes) > 0 }

// ReplicaCount is the number of replicas the service asks for: replicas, or
// 1 when unset (the schema's default, for objects not yet defaulted).
func (s *Service) ReplicaCount() int32 {
	if s.Replicas == nil {
		return 1
	}
	return *s.Replicas
}
