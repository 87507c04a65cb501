// Package plugin is the logic of the kubectl plugin kubectl-careplane: the
// pure fence plan and table formatting, unit-tested without a cluster, and
// the cobra commands that gather from and write to the cluster.
package plugin

import (
	"fmt"
	"io"
	"text/tabwriter"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
	"github.com/careplane/careplane/internal/fence"
	"github.com/careplane/careplane/internal/ssa"
)

// Plan is every write a fence of one environment would make, in the order
// the operator makes them: the operator's own plan (package fence).
type Plan = fence.Plan

// FenceState is what the cluster holds for one environment, gathered before
// planning its fence. Objects of other environments or namespaces may be
// included; the plan ignores them.
type FenceState struct {
	// Env is the environment as it would be after the fence patch (mode
	// Fenced, with the fence's ticket and workloads).
	Env *v1alpha1.HealthEnvironment
	// Policies are the NetworkPolicies of the primary namespace.
	Policies []networkingv1.NetworkPolicy
	// ServiceAccounts are the ServiceAccounts of the primary namespace.
	ServiceAccounts []corev1.ServiceAccount
	// Secrets are the Secrets of the primary namespace.
	Secrets []corev1.Secret
	// SecretsAssumed says the Secrets could not be listed (the caller may
	// not): Secrets are then the ones careplane generates, by name.
	SecretsAssumed bool
	// Pods are the pods of the primary namespace.
	Pods []corev1.Pod
	// Services are the Services of the primary namespace: a fence deletes
	// every one but careplane's as careplane wrote it.
	Services []corev1.Service
	// Deployments are the Deployments of the primary namespace.
	Deployments []appsv1.Deployment
	// StatefulSets are the StatefulSets of the primary namespace.
	StatefulSets []appsv1.StatefulSet
	// DataGeneration is the primary Namespace's careplane.io/data-generation:
	// it names the StatefulSets after a restore from a recovery point.
	DataGeneration string
	// FrontSlices are the EndpointSlices of the front namespace, and
	// FrontEndpoints its Endpoints objects: a fence deletes every route
	// there careplane did not write (fence.ForeignRoutes).
	FrontSlices    []discoveryv1.EndpointSlice
	FrontEndpoints []corev1.Endpoints //nolint:staticcheck // what the mirroring controller reads
	// FrontEndpointsUnread says the front's Endpoints could not be listed
	// (the caller may not).
	FrontEndpointsUnread bool
	// Front is the front Namespace (nil when it does not exist): careplane
	// removes routes only from one the environment controls.
	Front *corev1.Namespace
	// AdminPolicyKind is the kind of the admin-tier policy the cluster serves
	// (ClusterNetworkPolicy or AdminNetworkPolicy), or "" for none.
	AdminPolicyKind string
	// Claims are the PersistentVolumeClaims of the primary namespace, and
	// Snapshots its VolumeSnapshots (metadata): the evidence step's.
	Claims    []corev1.PersistentVolumeClaim
	Snapshots []metav1.PartialObjectMetadata
	// SnapshotClass is spec.recovery's class as found (nil without one).
	SnapshotClass *fence.SnapshotClass
	// Drivers is the provisioner of each StorageClass the claims name.
	Drivers map[string]string
	// StandbyFound says the standby namespace exists and is this
	// environment's: the fence rotates its credentials when it moves
	// traffic there (fence.StandbyServes). Its ServiceAccounts, Secrets,
	// Deployments and StatefulSets are in the lists above.
	StandbyFound bool
	// StandbyFrozenFor is the fence the standby namespace is frozen for
	// (fence.StandbyFrozenFor).
	StandbyFrozenFor string
	// StandbyServices are the services the standby runs: the critical
	// services of the known-good revision.
	StandbyServices []v1alpha1.Service
	// StandbyObjects are the objects of the standby namespace the fence's
	// clean-up reads (fence.StandbyKinds), and StandbyUnread the kinds of
	// them, or of the roles their RoleBindings refer to, the caller may not
	// read.
	StandbyObjects []fence.StandbyObject
	StandbyUnread  []string
}

// PlanFence lists what a fence of s.Env would write or delete: the plan the
// operator carries out (fence.PlanFence), from what the plugin read.
func PlanFence(s FenceState) Plan {
	ns := build.NamespaceNames(s.Env)
	o := fence.Observed{
		Env: s.Env, Isolation: s.Env.Spec.Isolation, AdminPolicyKind: s.AdminPolicyKind,
		Record:      fence.Record{ID: "<now>", Source: fence.SourceSpec},
		FrontRoutes: []fence.Route{}, DataGeneration: s.DataGeneration,
	}
	for _, p := range s.Policies {
		if p.Namespace == ns.Primary {
			o.Policies = append(o.Policies, p.ObjectMeta)
		}
	}
	for _, sa := range s.ServiceAccounts {
		if sa.Namespace == ns.Primary {
			o.ServiceAccounts = append(o.ServiceAccounts, sa.ObjectMeta)
		}
	}
	for _, sec := range s.Secrets {
		if sec.Namespace == ns.Primary {
			o.Secrets = append(o.Secrets, sec.ObjectMeta)
		}
	}
	for _, p := range s.Pods {
		if p.Namespace == ns.Primary {
			o.Pods = append(o.Pods, p.ObjectMeta)
		}
	}
	for _, svc := range s.Services {
		if svc.Namespace == ns.Primary {
			o.Services = append(o.Services, fence.ServiceObject{Object: svc.ObjectMeta, Selector: svc.Spec.Selector,
				ForeignSpec: fence.SpecWrittenByOthers(svc.ManagedFields, ssa.FieldOwner)})
		}
	}
	for _, d := range s.Deployments {
		if d.Namespace == ns.Primary && d.Labels[v1alpha1.LabelEnvironment] == s.Env.Name {
			o.Deployments = append(o.Deployments, d.ObjectMeta)
		}
	}
	for _, d := range s.StatefulSets {
		if d.Namespace == ns.Primary && d.Labels[v1alpha1.LabelEnvironment] == s.Env.Name {
			o.StatefulSets = append(o.StatefulSets, d.ObjectMeta)
		}
	}
	if s.Front != nil {
		o.Front = &s.Front.ObjectMeta
	}
	for i, es := range s.FrontSlices {
		if es.Namespace == ns.Front {
			o.FrontRoutes = append(o.FrontRoutes, fence.SliceRoute(&s.FrontSlices[i]))
		}
	}
	for i, e := range s.FrontEndpoints {
		if e.Namespace == ns.Front {
			o.FrontRoutes = append(o.FrontRoutes, fence.EndpointsRoute(&s.FrontEndpoints[i]))
		}
	}
	for _, c := range s.Claims {
		if c.Namespace != ns.Primary {
			continue
		}
		o.Claims = append(o.Claims, c.ObjectMeta)
		if sc := c.Spec.StorageClassName; sc != nil && *sc != "" {
			if o.ClaimDrivers == nil {
				o.ClaimDrivers = map[string]string{}
			}
			o.ClaimDrivers[c.Name] = s.Drivers[*sc]
		}
	}
	for _, v := range s.Snapshots {
		if v.Namespace == ns.Primary {
			o.Snapshots = append(o.Snapshots, v.ObjectMeta)
		}
	}
	o.SnapshotClass = s.SnapshotClass
	if s.StandbyFound {
		sb := &fence.StandbyObserved{Services: s.StandbyServices, Workloads: map[string]string{}, FrozenFor: s.StandbyFrozenFor,
			Objects: s.StandbyObjects}
		for _, sa := range s.ServiceAccounts {
			if sa.Namespace == ns.Standby {
				sb.ServiceAccounts = append(sb.ServiceAccounts, sa.ObjectMeta)
			}
		}
		for _, sec := range s.Secrets {
			if sec.Namespace == ns.Standby {
				sb.Secrets = append(sb.Secrets, sec.ObjectMeta)
			}
		}
		for _, d := range s.Deployments {
			if d.Namespace == ns.Standby && d.Labels[v1alpha1.LabelEnvironment] == s.Env.Name {
				sb.Workloads[d.Name] = d.Spec.Template.Annotations[build.AnnotationCredentialsRevision]
			}
		}
		for _, d := range s.StatefulSets {
			if d.Namespace == ns.Standby && d.Labels[v1alpha1.LabelEnvironment] == s.Env.Name {
				sb.Workloads[d.Name] = d.Spec.Template.Annotations[build.AnnotationCredentialsRevision]
			}
		}
		o.Standby = sb
	}
	return fence.PlanFence(o)
}

// WritePlan writes p as a table: STEP ACTION KIND NAMESPACE NAME NOTE.
func WritePlan(w io.Writer, p Plan) error {
	if _, err := fmt.Fprintf(w, "Fence plan for HealthEnvironment %s (%d writes; nothing was changed):\n", p.Environment, len(p.Actions)); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tACTION\tKIND\tNAMESPACE\tNAME\tNOTE")
	for _, a := range p.Actions {
		ns := a.Namespace
		if ns == "" {
			ns = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", a.Step, a.Verb, a.Kind, ns, a.Name, a.Note)
	}
	return tw.Flush()
}
