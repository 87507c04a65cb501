//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Messages of the data fields' rules (api/v1alpha1).
const (
	msgPortOrPorts    = "services[] must set exactly one of port (one TCP port) and ports (named TCP and UDP ports)"
	msgPortsDuplicate = "services[].ports must not list the same port and protocol twice"
	msgPortName       = "ports[].name must be an IANA service name"
	msgSecretsFrom    = "services[].secretsFrom may only name a secret in the generatedSecrets of a service this service talksTo"
	msgSecretEnvVar   = "secretsFrom[].envVar must be a C identifier"
	msgMountPath      = "volumes[].mountPath must be an absolute path without '..' or ':', outside /tmp and /var/run/careplane"
	msgVolumeName     = "volumes[].name must be a DNS label"
	msgVolumeSize     = "volumes[].size must be a quantity between 1Mi and 64Ti, e.g. 10Gi"
	msgMountShared    = "services[].volumes must not share a mountPath"
	msgRecoveryNeeds  = "recovery needs at least one service with volumes"
	msgInterval       = "recovery.interval must be between 10s and 168h (a week)"
	msgRestoreFrom    = "isolation.restoreFrom takes either recoveryPoint or before, not both"
	msgShrink         = "volumes[].size cannot shrink"
	msgClassChange    = "volumes[].storageClassName cannot change"
	msgAccessChange   = "volumes[].accessMode cannot change"
)

// withDataFields turns the valid base into a care-records shaped one: the
// booking service (index 2) keeps its records on a volume, call-handling
// (index 0) reads booking's password and listens on SIP and RTP too, and
// the environment takes recovery points.
func withDataFields(o henv) {
	booking := o.service(2)
	booking["generatedSecrets"] = []any{"db-password"}
	booking["volumes"] = []any{map[string]any{"name": "records", "mountPath": "/var/lib/records", "size": "1Gi"}}
	ch := o.service(0)
	delete(ch, "port")
	ch["ports"] = []any{
		map[string]any{"name": "http", "port": int64(8080)},
		map[string]any{"name": "sip", "port": int64(5060), "protocol": "UDP"},
		map[string]any{"name": "sip-tcp", "port": int64(5060), "protocol": "TCP"},
	}
	ch["secretsFrom"] = []any{map[string]any{"service": "booking", "secret": "db-password", "envVar": "BOOKING_DB_PASSWORD"}}
	o.spec()["recovery"] = map[string]any{"volumeSnapshotClassName": "careplane-csi", "interval": "15m", "keep": int64(4)}
}

func bookingVolume(o henv) map[string]any {
	return o.service(2)["volumes"].([]any)[0].(map[string]any)
}

var dataValidationCases = []validationCase{
	{
		name:   "port and ports",
		mutate: func(o henv) { o.service(0)["port"] = int64(8080) },
		field:  "spec.services[0]", msg: msgPortOrPorts,
	},
	{
		name:   "neither port nor ports",
		mutate: func(o henv) { delete(o.service(1), "port") },
		field:  "spec.services[1]", msg: msgPortOrPorts,
	},
	{
		name: "the same port and protocol twice",
		mutate: func(o henv) {
			o.service(0)["ports"] = append(o.service(0)["ports"].([]any), map[string]any{"name": "sip-again", "port": int64(5060), "protocol": "UDP"})
		},
		field: "spec.services[0].ports", msg: msgPortsDuplicate,
	},
	{
		name:   "a protocol other than TCP and UDP",
		mutate: func(o henv) { o.service(0)["ports"].([]any)[1].(map[string]any)["protocol"] = "SCTP" },
		field:  "spec.services[0].ports[1].protocol", msg: msgUnsupported,
	},
	{
		name:   "a port name with upper case",
		mutate: func(o henv) { o.service(0)["ports"].([]any)[1].(map[string]any)["name"] = "SIP" },
		field:  "spec.services[0].ports[1].name", msg: msgPortName,
	},
	{
		name: "secretsFrom a service it does not talk to",
		mutate: func(o henv) {
			o.service(0)["talksTo"] = []any{"referral"}
		},
		field: "spec.services", msg: msgSecretsFrom,
	},
	{
		name: "secretsFrom a secret the service does not generate",
		mutate: func(o henv) {
			o.service(0)["secretsFrom"] = []any{map[string]any{"service": "booking", "secret": "api-key"}}
		},
		field: "spec.services", msg: msgSecretsFrom,
	},
	{
		name: "secretsFrom the same secret twice",
		mutate: func(o henv) {
			o.service(0)["secretsFrom"] = append(o.service(0)["secretsFrom"].([]any), map[string]any{"service": "booking", "secret": "db-password"})
		},
		field: "spec.services[0].secretsFrom", msg: "services[].secretsFrom must not name the same secret of the same service twice",
	},
	{
		name: "secretsFrom envVar not an identifier",
		mutate: func(o henv) {
			o.service(0)["secretsFrom"].([]any)[0].(map[string]any)["envVar"] = "DB-PASSWORD"
		},
		field: "spec.services[0].secretsFrom[0].envVar", msg: msgSecretEnvVar,
	},
	{
		name:   "a volume mounted at /tmp",
		mutate: func(o henv) { bookingVolume(o)["mountPath"] = "/tmp" },
		field:  "spec.services[2].volumes[0].mountPath", msg: msgMountPath,
	},
	{
		name:   "a volume mounted over the generated secrets",
		mutate: func(o henv) { bookingVolume(o)["mountPath"] = "/var/run/careplane/secrets" },
		field:  "spec.services[2].volumes[0].mountPath", msg: msgMountPath,
	},
	{
		name:   "a relative mount path",
		mutate: func(o henv) { bookingVolume(o)["mountPath"] = "var/lib/records" },
		field:  "spec.services[2].volumes[0].mountPath", msg: msgMountPath,
	},
	{
		name:   "a volume named tmp",
		mutate: func(o henv) { bookingVolume(o)["name"] = "tmp" },
		field:  "spec.services[2].volumes[0].name", msg: msgVolumeName,
	},
	{
		name:   "a size that is no quantity",
		mutate: func(o henv) { bookingVolume(o)["size"] = "lots" },
		field:  "spec.services[2].volumes[0].size", msg: msgVolumeSize,
	},
	{
		name:   "a size of zero",
		mutate: func(o henv) { bookingVolume(o)["size"] = "0" },
		field:  "spec.services[2].volumes[0].size", msg: msgVolumeSize,
	},
	{
		name:   "an access mode that is no enum value",
		mutate: func(o henv) { bookingVolume(o)["accessMode"] = "ReadOnlyMany" },
		field:  "spec.services[2].volumes[0].accessMode", msg: msgUnsupported,
	},
	{
		name: "two volumes at one mount path",
		mutate: func(o henv) {
			o.service(2)["volumes"] = append(o.service(2)["volumes"].([]any),
				map[string]any{"name": "audit", "mountPath": "/var/lib/records", "size": "1Gi"})
		},
		field: "spec.services[2]", msg: msgMountShared,
	},
	{
		name:   "recovery without a volume",
		mutate: func(o henv) { delete(o.service(2), "volumes") },
		field:  "spec.recovery", msg: msgRecoveryNeeds,
	},
	{
		name:   "recovery every 5s",
		mutate: func(o henv) { o.spec()["recovery"].(map[string]any)["interval"] = "5s" },
		field:  "spec.recovery.interval", msg: msgInterval,
	},
	{
		name:   "recovery keeping none",
		mutate: func(o henv) { o.spec()["recovery"].(map[string]any)["keep"] = int64(0) },
		field:  "spec.recovery.keep", msg: "should be greater than or equal to 1",
	},
	{
		name:   "recovery without a snapshot class",
		mutate: func(o henv) { delete(o.spec()["recovery"].(map[string]any), "volumeSnapshotClassName") },
		field:  "spec.recovery.volumeSnapshotClassName", msg: msgRequired,
	},
	{
		name: "restoreFrom a point and a time",
		mutate: func(o henv) {
			o.isolation()["restoreFrom"] = map[string]any{"recoveryPoint": "p-20261202-1015", "before": "2026-12-02T10:00:00Z"}
		},
		field: "spec.isolation.restoreFrom", msg: msgRestoreFrom,
	},
}

// TestDataValidation checks that the API server accepts the data fields as
// documented (volumes, named TCP and UDP ports, a credential read from
// another service, recovery points, a restore choice) and rejects each bad
// use of them with the message a user can act on. Server-side dry runs run
// every validation of a create and store nothing.
func TestDataValidation(t *testing.T) {
	ctx := context.Background()
	run := rand.String(5)
	base := func(t *testing.T, name string) *unstructured.Unstructured {
		obj := newValidBase(t, name)
		withDataFields(henv(obj.Object))
		return obj
	}
	if !t.Run("valid data fields are accepted", func(t *testing.T) {
		for _, restore := range []map[string]any{nil, {"recoveryPoint": "p-20261202-1015"}, {"before": "2026-12-02T10:00:00Z"}} {
			obj := base(t, "data-valid-"+run)
			if restore != nil {
				henv(obj.Object).isolation()["restoreFrom"] = restore
			}
			if err := k8sClient.Create(ctx, obj, client.DryRunAll); err != nil {
				t.Fatalf("the data fields (restoreFrom %v) are rejected: %v", restore, err)
			}
		}
	}) {
		t.FailNow()
	}
	for i, tc := range dataValidationCases {
		t.Run(tc.name, func(t *testing.T) {
			obj := base(t, fmt.Sprintf("data-bad-%02d-%s", i+1, run))
			tc.mutate(henv(obj.Object))
			err := k8sClient.Create(ctx, obj, client.DryRunAll)
			if err == nil {
				t.Fatalf("the API server accepted %s: the CRD's validation is missing this case", obj.GetName())
			}
			t.Logf("rejected: %v", err)
			assertInvalidCause(t, err, tc.field, tc.msg)
		})
	}
}

// TestVolumeChanges checks the transition rules on a stored environment: a
// volume grows, but never shrinks, and keeps its class and access mode.
func TestVolumeChanges(t *testing.T) {
	ctx := context.Background()
	obj := newValidBase(t, uniqueName("data-volumes"))
	withDataFields(henv(obj.Object))
	if err := k8sClient.Create(ctx, obj); err != nil {
		t.Fatalf("creating %s: %v", obj.GetName(), err)
	}
	t.Cleanup(func() { deleteEnvironmentAndWait(t, obj.GetName()) })

	// On the version just read: the operator writes the environment too
	// (its status, its data finalizer), so a conflict is read again.
	update := func(mutate func(v map[string]any)) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur := &unstructured.Unstructured{}
			cur.SetGroupVersionKind(obj.GroupVersionKind())
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
				t.Fatal(err)
			}
			mutate(bookingVolume(henv(cur.Object)))
			return k8sClient.Update(ctx, cur, client.DryRunAll)
		})
	}
	if err := update(func(v map[string]any) { v["size"] = "2Gi" }); err != nil {
		t.Errorf("growing 1Gi to 2Gi is refused: %v", err)
	}
	if err := update(func(v map[string]any) { v["size"] = "1024Mi" }); err != nil {
		t.Errorf("1Gi written as 1024Mi is refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(v map[string]any)
		msg    string
	}{
		{"shrinking 1Gi to 512Mi", func(v map[string]any) { v["size"] = "512Mi" }, msgShrink},
		{"setting a storage class", func(v map[string]any) { v["storageClassName"] = "fast" }, msgClassChange},
		{"changing the access mode", func(v map[string]any) { v["accessMode"] = "ReadWriteMany" }, msgAccessChange},
	} {
		err := update(tc.mutate)
		if err == nil {
			t.Errorf("%s is accepted", tc.name)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		assertInvalidCause(t, err, "spec.services[2].volumes[0]", tc.msg)
	}
}
