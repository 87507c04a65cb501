//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/careplane/careplane/api/v1alpha1"
	"github.com/careplane/careplane/internal/build"
)

// validBase is a realistic NHS 111 environment that passes validation: every
// rejection case below changes exactly one thing in it. It is written as the
// platform team would write it (and as config/samples/wales-111.yaml does), and
// kept here so that edits to the samples cannot change what this test proves.
const validBase = `
apiVersion: careplane.io/v1alpha1
kind: HealthEnvironment
metadata:
  name: set-by-the-test
spec:
  tenant:
    displayName: NHS 111 Wales
    odsCode: RT4
  services:
  - name: call-handling
    image: registry.example/111/call-handling@sha256:4f3c9b6e1d2a0c8b7e6f5a4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09
    replicas: 3
    port: 8080
    critical: true
    talksTo: [referral, booking]
    allowFrom:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: gateway}}
    generatedSecrets: [db-password]
    env:
    - {name: LOG_LEVEL, value: info}
    resources: {requests: {cpu: 100m, memory: 128Mi}}
  - name: referral
    image: registry.example/111/referral@sha256:9a8b7c6d5e4f30211a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081
    replicas: 2
    port: 8443
    critical: true
    generatedSecrets: [cad-api-key]
  - name: booking
    image: registry.example/111/booking@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    replicas: 2
    port: 8080
  integrations:
  - name: ambulance-cad
    cidrs: [10.20.0.0/16, "2001:db8::/32"]
    ports: [443]
    services: [referral]
  quota: {cpu: "8", memory: 16Gi, pods: 60}
  failover:
    standby: Warm
    trigger: Automatic
    activeSite: Primary
    unavailableAfter: 60s
    placement: {nodeSelector: {careplane.io/pool: standby}}
  isolation:
    mode: None
    workloads: Preserve
    forensicsFrom: {matchLabels: {kubernetes.io/metadata.name: forensics}}
`

// Messages the API server must show. The CEL ones are the markers' messages
// in api/v1alpha1; the others are the OpenAPI validator's wording.
const (
	msgImage           = "image must be pinned by digest, e.g. registry.example/111/call-handling@sha256:<64 lower-case hex>; tags alone are rejected"
	msgServiceName     = "services[].name must be a DNS label: lower-case letters, digits and '-', starting with a letter"
	msgTalksTo         = "services[].talksTo may only name services declared in spec.services"
	msgIntegrationSvcs = "integrations[].services may only name services declared in spec.services"
	msgIntegrationName = "integrations[].name must be a DNS label: lower-case letters, digits and '-', starting with a letter"
	msgCIDR            = "integrations[].cidrs entries must be CIDRs such as 10.20.0.0/16 or 2001:db8::/32"
	msgReason          = "isolation.reason is required when isolation.mode is Fenced: say why the environment is fenced"
	msgTicket          = "isolation.ticket must be letters, digits, '-', '_' or '.', because it labels the evidence pods"
	msgNameLength      = "metadata.name must be at most 40 characters: it prefixes the namespaces <name>-primary and <name>-standby"
	msgNameLabel       = "metadata.name must be a DNS label (lower-case letters, digits and '-', starting with a letter): it becomes the namespace name"
	msgActiveSite      = "failover.activeSite cannot be Standby when failover.standby is None"
	msgNoCritical      = "failover.standby Warm or Cold needs at least one service with critical: true, because only critical services run in the standby"
	msgUnavailable     = "failover.unavailableAfter must be between 5s and 1h"
	msgODSCode         = "odsCode must be 3 to 10 upper-case letters or digits, e.g. RT4"
	msgSecretName      = "generatedSecrets entries must be DNS labels: lower-case letters, digits and '-'"
	msgCIDRHostBits    = "integrations[].cidrs entries must be network addresses in canonical form with no host bits set, e.g. 10.20.0.0/16 rather than 10.20.0.1/16"
	msgSelectorValues  = "matchExpressions[].values must be set for In and NotIn, and empty for Exists and DoesNotExist"
	msgPattern         = "should match"
	msgMatchLabelsKey  = "matchLabels keys must be label keys: up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, optionally after a DNS subdomain prefix and '/', e.g. kubernetes.io/metadata.name"
	msgSelectorKey     = "matchExpressions[].key must be a label key: its prefix, before '/', is a DNS subdomain of at most 253 characters"
	msgEnvName         = "env[].name must be a C identifier: letters, digits and '_', not starting with a digit"
	msgForensics       = "isolation.forensicsFrom must name the forensics namespaces by kubernetes.io/metadata.name, the one label no tenant can set: matchLabels: {kubernetes.io/metadata.name: forensics} for one, or matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [forensics, soc]}] for up to 16; {}, other labels and other operators would let in namespaces nobody named"

	// The API server names no field for rules on the object's root (the
	// metadata.name rules): their causes' field is "<nil>", as kubectl shows.
	rootField = "<nil>"

	msgRequired    = "Required value"
	msgUnsupported = "Unsupported value"
	msgDuplicate   = "Duplicate value"
)

// validationCase is one bad HealthEnvironment: the valid base with one
// change, and what the API server must say about it.
type validationCase struct {
	name   string     // what is wrong; the subtest name
	mutate func(henv) // the one change to the valid base
	field  string     // the field path the server must name
	msg    string     // text the server's message for that field must contain
}

// validationCases are the bad objects. Several of them (a string where an
// integer belongs, a missing required field) cannot be written with the typed
// Go structs, which is why every object is sent as unstructured JSON.
var validationCases = []validationCase{
	// Images: digests only.
	{
		name:   "image with a tag only",
		mutate: func(o henv) { o.service(0)["image"] = "registry.example/111/call-handling:1.4.2" },
		field:  "spec.services[0].image", msg: msgImage,
	},
	{
		name:   "image with the latest tag",
		mutate: func(o henv) { o.service(0)["image"] = "registry.example/111/call-handling:latest" },
		field:  "spec.services[0].image", msg: msgImage,
	},
	{
		name:   "image digest with short hex",
		mutate: func(o henv) { o.service(0)["image"] = "registry.example/111/call-handling@sha256:4f3c9b6e1d2a" },
		field:  "spec.services[0].image", msg: msgImage,
	},
	{
		name: "image digest with 65 hex",
		mutate: func(o henv) {
			o.service(0)["image"] = "registry.example/111/call-handling@sha256:" + strings.Repeat("a", 65)
		},
		field: "spec.services[0].image", msg: msgImage,
	},
	{
		name: "image digest in upper case",
		mutate: func(o henv) {
			o.service(0)["image"] = "registry.example/111/call-handling@sha256:" + strings.Repeat("4F3C9B6E", 8)
		},
		field: "spec.services[0].image", msg: msgImage,
	},
	{
		name: "image digest sha512",
		mutate: func(o henv) {
			o.service(0)["image"] = "registry.example/111/call-handling@sha512:" + strings.Repeat("4f3c9b6e", 16)
		},
		field: "spec.services[0].image", msg: msgImage,
	},
	{
		name:   "image digest without a repository",
		mutate: func(o henv) { o.service(0)["image"] = "@sha256:" + strings.Repeat("a", 64) },
		field:  "spec.services[0].image", msg: msgImage,
	},
	{
		name:   "image missing",
		mutate: func(o henv) { delete(o.service(0), "image") },
		field:  "spec.services[0].image", msg: msgRequired,
	},

	// Service names.
	{
		name: "a second service named referral",
		mutate: func(o henv) {
			o.spec()["services"] = append(o.spec()["services"].([]any), map[string]any{
				"name":  "referral",
				"image": "registry.example/111/referral@sha256:" + strings.Repeat("b", 64),
				"port":  int64(8443),
			})
		},
		field: "spec.services[3]", msg: msgDuplicate,
	},
	{
		name:   "service name in upper case",
		mutate: func(o henv) { o.service(0)["name"] = "Call-Handling" },
		field:  "spec.services[0].name", msg: msgServiceName,
	},
	{
		name:   "service name starting with a digit",
		mutate: func(o henv) { o.service(0)["name"] = "111-call-handling" },
		field:  "spec.services[0].name", msg: msgServiceName,
	},
	{
		name:   "service name longer than 40",
		mutate: func(o henv) { o.service(0)["name"] = "call-handling-" + strings.Repeat("x", 27) },
		field:  "spec.services[0].name", msg: "may not be more than 40",
	},
	{
		name: "too many services",
		mutate: func(o henv) {
			o.spec()["services"] = append(o.spec()["services"].([]any), validationExtraServices(18)...)
		},
		field: "spec.services", msg: "must have at most 20 items",
	},
	{
		name:   "no services",
		mutate: func(o henv) { o.spec()["services"] = []any{} },
		field:  "spec.services", msg: "should have at least 1 items",
	},

	// Service fields.
	{
		name:   "talksTo names an undeclared service",
		mutate: func(o henv) { o.service(0)["talksTo"] = []any{"referral", "dispatch"} },
		field:  "spec.services", msg: msgTalksTo,
	},
	{
		name:   "replicas negative",
		mutate: func(o henv) { o.service(0)["replicas"] = int64(-1) },
		field:  "spec.services[0].replicas", msg: "should be greater than or equal to 0",
	},
	{
		name:   "replicas above 50",
		mutate: func(o henv) { o.service(0)["replicas"] = int64(51) },
		field:  "spec.services[0].replicas", msg: "should be less than or equal to 50",
	},
	{
		name:   "replicas as a string",
		mutate: func(o henv) { o.service(0)["replicas"] = "3" },
		field:  "spec.services[0].replicas", msg: "must be of type integer",
	},
	{
		name:   "port 0",
		mutate: func(o henv) { o.service(0)["port"] = int64(0) },
		field:  "spec.services[0].port", msg: "should be greater than or equal to 1",
	},
	{
		name:   "port 65536",
		mutate: func(o henv) { o.service(0)["port"] = int64(65536) },
		field:  "spec.services[0].port", msg: "should be less than or equal to 65535",
	},
	{
		name: "allowFrom peer without namespaceSelector",
		mutate: func(o henv) {
			o.service(0)["allowFrom"] = []any{map[string]any{"podSelector": validationMatchLabels("app", "gateway")}}
		},
		field: "spec.services[0].allowFrom[0].namespaceSelector", msg: msgRequired,
	},
	{
		name:   "generatedSecrets name not a DNS label",
		mutate: func(o henv) { o.service(0)["generatedSecrets"] = []any{"DB_PASSWORD"} },
		field:  "spec.services[0].generatedSecrets[0]", msg: msgSecretName,
	},
	{
		name:   "CIDR with host bits set",
		mutate: func(o henv) { o.integration(0)["cidrs"] = []any{"10.20.0.1/16"} },
		field:  "spec.integrations[0].cidrs[0]", msg: msgCIDRHostBits,
	},
	{
		name: "forensicsFrom with an unknown operator",
		mutate: func(o henv) {
			o.isolation()["forensicsFrom"] = map[string]any{"matchExpressions": []any{
				map[string]any{"key": "team", "operator": "Like", "values": []any{"forensics"}}}}
		},
		field: "spec.isolation.forensicsFrom.matchExpressions[0].operator", msg: msgUnsupported,
	},
	{
		name: "forensicsFrom In without values",
		mutate: func(o henv) {
			o.isolation()["forensicsFrom"] = map[string]any{"matchExpressions": []any{
				map[string]any{"key": "team", "operator": "In"}}}
		},
		field: "spec.isolation.forensicsFrom.matchExpressions[0]", msg: msgSelectorValues,
	},
	{
		name: "forensicsFrom with an invalid label key",
		mutate: func(o henv) {
			o.isolation()["forensicsFrom"] = map[string]any{"matchExpressions": []any{
				map[string]any{"key": "bad key", "operator": "Exists"}}}
		},
		field: "spec.isolation.forensicsFrom.matchExpressions[0].key", msg: msgPattern,
	},
	{
		// Keys the NetworkPolicy API rejects must not get as far as a
		// NetworkPolicy.
		name: "forensicsFrom with a label key whose name is longer than 63 characters",
		mutate: func(o henv) {
			o.isolation()["forensicsFrom"] = map[string]any{"matchExpressions": []any{
				map[string]any{"key": strings.Repeat("k", 64), "operator": "Exists"}}}
		},
		field: "spec.isolation.forensicsFrom.matchExpressions[0].key", msg: msgPattern,
	},
	{
		name: "forensicsFrom with a label key whose prefix is longer than 253 characters",
		mutate: func(o henv) {
			o.isolation()["forensicsFrom"] = map[string]any{"matchExpressions": []any{
				map[string]any{"key": strings.Repeat("a", 254) + "/k", "operator": "Exists"}}}
		},
		field: "spec.isolation.forensicsFrom.matchExpressions[0].key", msg: msgSelectorKey,
	},

	// forensicsFrom names namespaces, by the label only the API server sets.
	{
		name:   "forensicsFrom {} (every namespace)",
		mutate: func(o henv) { o.isolation()["forensicsFrom"] = map[string]any{} },
		field:  "spec.isolation.forensicsFrom", msg: msgForensics,
	},
	{
		name:   "forensicsFrom by a label anyone can set",
		mutate: func(o henv) { o.isolation()["forensicsFrom"] = validationMatchLabels("team", "forensics") },
		field:  "spec.isolation.forensicsFrom", msg: msgForensics,
	},
	{
		name: "forensicsFrom by name and another label",
		mutate: func(o henv) {
			o.isolation()["forensicsFrom"] = map[string]any{"matchLabels": map[string]any{
				"kubernetes.io/metadata.name": "forensics", "team": "dfir"}}
		},
		field: "spec.isolation.forensicsFrom", msg: msgForensics,
	},
	{
		name: "forensicsFrom naming something that is not a namespace name",
		mutate: func(o henv) {
			o.isolation()["forensicsFrom"] = validationMatchLabels("kubernetes.io/metadata.name", "Forensics")
		},
		field: "spec.isolation.forensicsFrom", msg: msgForensics,
	},
	{
		name: "forensicsFrom NotIn",
		mutate: func(o henv) {
			o.isolation()["forensicsFrom"] = validationNameExpression("NotIn", "wales-111-primary")
		},
		field: "spec.isolation.forensicsFrom", msg: msgForensics,
	},
	{
		name:   "forensicsFrom Exists (every namespace has a name)",
		mutate: func(o henv) { o.isolation()["forensicsFrom"] = validationNameExpression("Exists") },
		field:  "spec.isolation.forensicsFrom", msg: msgForensics,
	},
	{
		name: "forensicsFrom In on another label",
		mutate: func(o henv) {
			o.isolation()["forensicsFrom"] = map[string]any{"matchExpressions": []any{
				map[string]any{"key": "team", "operator": "In", "values": []any{"forensics"}}}}
		},
		field: "spec.isolation.forensicsFrom", msg: msgForensics,
	},
	{
		name: "forensicsFrom In with 17 names",
		mutate: func(o henv) {
			o.isolation()["forensicsFrom"] = validationNameExpression("In", validationForensicsNames(17)...)
		},
		field: "spec.isolation.forensicsFrom", msg: msgForensics,
	},
	{
		name: "forensicsFrom with two requirements",
		mutate: func(o henv) {
			two := validationNameExpression("In", "forensics")
			two["matchExpressions"] = append(two["matchExpressions"].([]any), validationNameExpression("In", "soc")["matchExpressions"].([]any)...)
			o.isolation()["forensicsFrom"] = two
		},
		field: "spec.isolation.forensicsFrom", msg: msgForensics,
	},
	{
		name: "forensicsFrom with both forms at once",
		mutate: func(o henv) {
			both := validationNameExpression("In", "soc")
			both["matchLabels"] = map[string]any{"kubernetes.io/metadata.name": "forensics"}
			o.isolation()["forensicsFrom"] = both
		},
		field: "spec.isolation.forensicsFrom", msg: msgForensics,
	},
	{
		name: "allowFrom with a matchLabels key that is not a label key",
		mutate: func(o henv) {
			o.service(0)["allowFrom"] = []any{map[string]any{"namespaceSelector": validationMatchLabels("team name", "blue")}}
		},
		field: "spec.services[0].allowFrom[0].namespaceSelector.matchLabels", msg: msgMatchLabelsKey,
	},
	{
		name: "allowFrom with an invalid label value",
		mutate: func(o henv) {
			o.service(0)["allowFrom"] = []any{map[string]any{"namespaceSelector": validationMatchLabels("team", "blue team!")}}
		},
		field: "spec.services[0].allowFrom[0].namespaceSelector.matchLabels.team", msg: msgPattern,
	},
	{
		name:   "env var name not a C identifier",
		mutate: func(o henv) { o.service(0)["env"] = []any{map[string]any{"name": "LOG-LEVEL", "value": "info"}} },
		field:  "spec.services[0].env[0].name", msg: msgEnvName,
	},
	{
		name:   "env var name starting with a digit",
		mutate: func(o henv) { o.service(0)["env"] = []any{map[string]any{"name": "1ST_LEVEL", "value": "info"}} },
		field:  "spec.services[0].env[0].name", msg: msgEnvName,
	},

	// Integrations.
	{
		name:   "integration services names an undeclared service",
		mutate: func(o henv) { o.integration(0)["services"] = []any{"referral", "dispatch"} },
		field:  "spec.integrations", msg: msgIntegrationSvcs,
	},
	{
		name:   "CIDR prefix longer than 32",
		mutate: func(o henv) { o.integration(0)["cidrs"] = []any{"10.20.0.0/33"} },
		field:  "spec.integrations[0].cidrs[0]", msg: msgCIDR,
	},
	{
		name:   "CIDR without a prefix length",
		mutate: func(o henv) { o.integration(0)["cidrs"] = []any{"10.20.0.1"} },
		field:  "spec.integrations[0].cidrs[0]", msg: msgCIDR,
	},
	{
		name:   "CIDR that is a host name",
		mutate: func(o henv) { o.integration(0)["cidrs"] = []any{"cad.ambulance.example/16"} },
		field:  "spec.integrations[0].cidrs[0]", msg: msgCIDR,
	},
	{
		name:   "CIDR IPv6 with non-hex groups",
		mutate: func(o henv) { o.integration(0)["cidrs"] = []any{"10.20.0.0/16", "2001:db8::zz/32"} },
		field:  "spec.integrations[0].cidrs[1]", msg: msgCIDR,
	},
	{
		name:   "CIDR IPv6 with two double colons",
		mutate: func(o henv) { o.integration(0)["cidrs"] = []any{"2001::db8::/32"} },
		field:  "spec.integrations[0].cidrs[0]", msg: msgCIDR,
	},
	{
		name:   "CIDR IPv6 prefix longer than 128",
		mutate: func(o henv) { o.integration(0)["cidrs"] = []any{"2001:db8::/129"} },
		field:  "spec.integrations[0].cidrs[0]", msg: msgCIDR,
	},
	{
		name: "duplicate integration names",
		mutate: func(o henv) {
			o.spec()["integrations"] = append(o.spec()["integrations"].([]any), map[string]any{
				"name": "ambulance-cad", "cidrs": []any{"10.30.0.0/16"}, "ports": []any{int64(8443)}, "services": []any{"call-handling"},
			})
		},
		field: "spec.integrations[1]", msg: msgDuplicate,
	},
	{
		name:   "integration name not a DNS label",
		mutate: func(o henv) { o.integration(0)["name"] = "Ambulance_CAD" },
		field:  "spec.integrations[0].name", msg: msgIntegrationName,
	},
	{
		name:   "integration without ports",
		mutate: func(o henv) { delete(o.integration(0), "ports") },
		field:  "spec.integrations[0].ports", msg: msgRequired,
	},
	{
		name:   "integration with an empty ports list",
		mutate: func(o henv) { o.integration(0)["ports"] = []any{} },
		field:  "spec.integrations[0].ports", msg: "should have at least 1 items",
	},
	{
		name:   "integration port 0",
		mutate: func(o henv) { o.integration(0)["ports"] = []any{int64(0)} },
		field:  "spec.integrations[0].ports[0]", msg: "should be greater than or equal to 1",
	},

	// Tenant.
	{
		name:   "tenant displayName missing",
		mutate: func(o henv) { delete(o.tenant(), "displayName") },
		field:  "spec.tenant.displayName", msg: msgRequired,
	},
	{
		name:   "tenant displayName empty",
		mutate: func(o henv) { o.tenant()["displayName"] = "" },
		field:  "spec.tenant.displayName", msg: "should be at least 1 chars long",
	},
	{
		name:   "odsCode in lower case",
		mutate: func(o henv) { o.tenant()["odsCode"] = "rt4" },
		field:  "spec.tenant.odsCode", msg: msgODSCode,
	},

	// Failover.
	{
		name:   "standby not an enum value",
		mutate: func(o henv) { o.failover()["standby"] = "Hot" },
		field:  "spec.failover.standby", msg: msgUnsupported,
	},
	{
		name:   "trigger not an enum value",
		mutate: func(o henv) { o.failover()["trigger"] = "automatic" },
		field:  "spec.failover.trigger", msg: msgUnsupported,
	},
	{
		name:   "activeSite not an enum value",
		mutate: func(o henv) { o.failover()["activeSite"] = "Secondary" },
		field:  "spec.failover.activeSite", msg: msgUnsupported,
	},
	{
		name: "activeSite Standby with standby None",
		mutate: func(o henv) {
			o.failover()["standby"] = "None"
			o.failover()["activeSite"] = "Standby"
		},
		field: "spec.failover", msg: msgActiveSite,
	},
	{
		name: "standby Warm with no critical service",
		mutate: func(o henv) {
			for i := range o.spec()["services"].([]any) {
				delete(o.service(i), "critical")
			}
		},
		field: "spec", msg: msgNoCritical,
	},
	{
		name:   "unavailableAfter 1s",
		mutate: func(o henv) { o.failover()["unavailableAfter"] = "1s" },
		field:  "spec.failover.unavailableAfter", msg: msgUnavailable,
	},
	{
		name:   "unavailableAfter 2h",
		mutate: func(o henv) { o.failover()["unavailableAfter"] = "2h" },
		field:  "spec.failover.unavailableAfter", msg: msgUnavailable,
	},

	{
		name:   "unavailableAfter without a unit",
		mutate: func(o henv) { o.failover()["unavailableAfter"] = "60" },
		field:  "spec.failover.unavailableAfter", msg: "must be of type duration",
	},

	// Quota.
	{
		name:   "quota cpu not a quantity",
		mutate: func(o henv) { o.spec()["quota"].(map[string]any)["cpu"] = "eight" },
		field:  "spec.quota.cpu", msg: "should match",
	},
	{
		name:   "quota pods 0",
		mutate: func(o henv) { o.spec()["quota"].(map[string]any)["pods"] = int64(0) },
		field:  "spec.quota.pods", msg: "should be greater than or equal to 1",
	},

	// Isolation.
	{
		name:   "mode not an enum value",
		mutate: func(o henv) { o.isolation()["mode"] = "Isolated" },
		field:  "spec.isolation.mode", msg: msgUnsupported,
	},
	{
		name:   "workloads not an enum value",
		mutate: func(o henv) { o.isolation()["workloads"] = "Delete" },
		field:  "spec.isolation.workloads", msg: msgUnsupported,
	},
	{
		name:   "mode Fenced without a reason",
		mutate: func(o henv) { o.isolation()["mode"] = "Fenced" },
		field:  "spec.isolation", msg: msgReason,
	},
	{
		name: "mode Fenced with a whitespace-only reason",
		mutate: func(o henv) {
			o.isolation()["mode"] = "Fenced"
			o.isolation()["reason"] = " \t\n "
		},
		field: "spec.isolation", msg: msgReason,
	},
	{
		name: "ticket with spaces",
		mutate: func(o henv) {
			o.isolation()["mode"] = "Fenced"
			o.isolation()["reason"] = "ransomware indicators on call-handling"
			o.isolation()["ticket"] = "INC 2041"
		},
		field: "spec.isolation.ticket", msg: msgTicket,
	},
	{
		name: "ticket longer than 63",
		mutate: func(o henv) {
			o.isolation()["mode"] = "Fenced"
			o.isolation()["reason"] = "ransomware indicators on call-handling"
			o.isolation()["ticket"] = "INC-" + strings.Repeat("2041", 15)
		},
		field: "spec.isolation.ticket", msg: "may not be more than 63",
	},

	// The name, which prefixes the namespaces.
	{
		name:   "metadata.name longer than 40",
		mutate: func(o henv) { o.setName(validationPadName(o.name(), 41)) },
		field:  rootField, msg: msgNameLength,
	},
	{
		name:   "metadata.name with a dot",
		mutate: func(o henv) { o.setName(o.name() + ".nhs") },
		field:  rootField, msg: msgNameLabel,
	},
}

// TestValidation sends each bad object to the API server and checks that it
// is rejected as Invalid with the message a user would see, and that neither
// the object nor any of its namespaces exist afterwards. A positive control
// first proves the unchanged base is accepted and provisioned, so that every
// rejection comes from the one change, and the "nothing created" checks look
// where the operator would have written.
func TestValidation(t *testing.T) {
	run := rand.String(5)
	ctx := context.Background()

	if !t.Run("valid base is accepted", func(t *testing.T) {
		obj := newValidBase(t, "valid-"+run)
		if err := k8sClient.Create(ctx, obj); err != nil {
			t.Fatalf("creating the valid base: %v", err)
		}
		t.Cleanup(func() { deleteEnvironmentAndWait(t, obj.GetName()) })
		start := time.Now()
		for _, ns := range validationNamespaces(obj.GetName()) {
			eventually(t, 30*time.Second, "namespace "+ns+" is created", func(ctx context.Context) (bool, string, error) {
				err := k8sClient.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
				if apierrors.IsNotFound(err) {
					return false, "not found", nil
				}
				return err == nil, "", err
			})
		}
		t.Logf("the operator created the namespaces of a valid environment in %s", time.Since(start).Round(time.Millisecond))
	}) {
		t.FailNow()
	}

	// Send every bad object first, then wait once, then look for what the
	// operator might have created: one shared settling time instead of one
	// per case. The operator runs in this process and created the valid
	// base's namespaces in about 0.3s on a 2-core machine, so a second is
	// ample for it to have written anything it was going to write.
	names := make([]string, len(validationCases))
	top := t
	t.Run("rejected", func(t *testing.T) {
		for i, tc := range validationCases {
			obj := newValidBase(t, fmt.Sprintf("bad-%02d-%s", i+1, run))
			tc.mutate(henv(obj.Object))
			names[i] = obj.GetName()
			t.Run(tc.name, func(t *testing.T) {
				err := k8sClient.Create(ctx, obj)
				if err == nil {
					// Deleted only at the end, so that "nothing created"
					// reports it and what the operator made of it.
					top.Cleanup(func() { deleteEnvironmentAndWait(top, obj.GetName()) })
					t.Fatalf("the API server accepted %s: the CRD's validation is missing this case", obj.GetName())
				}
				t.Logf("rejected: %v", err)
				assertInvalidCause(t, err, tc.field, tc.msg)
			})
		}
	})

	time.Sleep(time.Second)

	t.Run("nothing created", func(t *testing.T) {
		for i, tc := range validationCases {
			t.Run(tc.name, func(t *testing.T) {
				assertNotExists(t, &v1alpha1.HealthEnvironment{}, names[i])
				for _, ns := range validationNamespaces(names[i]) {
					assertNotExists(t, &corev1.Namespace{}, ns)
				}
			})
		}
	})
}

// assertInvalidCause checks that err is an Invalid error with a cause for field
// whose message contains msg, and that the whole message (what kubectl
// prints) contains msg too.
func assertInvalidCause(t *testing.T, err error, field, msg string) {
	t.Helper()
	if !apierrors.IsInvalid(err) {
		t.Fatalf("want an Invalid error, got %v (reason %q)", err, apierrors.ReasonForError(err))
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("message does not contain %q:\n%v", msg, err)
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		t.Fatalf("error has no details: %v", err)
	}
	var causes []string
	for _, c := range status.Status().Details.Causes {
		if c.Field == field && strings.Contains(c.Message, msg) {
			return
		}
		causes = append(causes, fmt.Sprintf("  %s: %s", c.Field, c.Message))
	}
	t.Errorf("no cause for field %q containing %q; causes:\n%s", field, msg, strings.Join(causes, "\n"))
}

// assertNotExists checks that no object of obj's kind is named name.
func assertNotExists(t *testing.T, obj client.Object, name string) {
	t.Helper()
	err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, obj)
	switch {
	case apierrors.IsNotFound(err):
	case err == nil:
		t.Errorf("%T %s exists, but its environment was rejected", obj, name)
	default:
		t.Errorf("getting %T %s: %v", obj, name, err)
	}
}

// deleteEnvironmentAndWait deletes the HealthEnvironment name and waits until it is gone.
func deleteEnvironmentAndWait(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	env := &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8sClient.Delete(ctx, env); client.IgnoreNotFound(err) != nil {
		t.Errorf("deleting %s: %v", name, err)
		return
	}
	eventually(t, 30*time.Second, "HealthEnvironment "+name+" is deleted", func(ctx context.Context) (bool, string, error) {
		err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &v1alpha1.HealthEnvironment{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		return false, "still there", client.IgnoreNotFound(err)
	})
}

// validationNamespaces are the namespaces careplane creates for the
// environment name: front, primary and (the base has a Warm standby) standby.
func validationNamespaces(name string) []string {
	return []string{name, name + "-primary", name + "-standby"}
}

// newValidBase returns a fresh copy of the valid base named name.
func newValidBase(t *testing.T, name string) *unstructured.Unstructured {
	t.Helper()
	data, err := yaml.YAMLToJSON([]byte(validBase))
	if err != nil {
		t.Fatalf("the valid base is not YAML: %v", err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		t.Fatalf("the valid base is not an object: %v", err)
	}
	obj.SetName(name)
	return obj
}

// henv is an unstructured HealthEnvironment (the Object of an
// unstructured.Unstructured), with accessors for the mutations. They panic on
// a base that lacks the field, which would be a bug in validBase.
type henv map[string]any

func (o henv) spec() map[string]any      { return o["spec"].(map[string]any) }
func (o henv) tenant() map[string]any    { return o.spec()["tenant"].(map[string]any) }
func (o henv) failover() map[string]any  { return o.spec()["failover"].(map[string]any) }
func (o henv) isolation() map[string]any { return o.spec()["isolation"].(map[string]any) }
func (o henv) name() string              { return o["metadata"].(map[string]any)["name"].(string) }
func (o henv) setName(n string)          { o["metadata"].(map[string]any)["name"] = n }

func (o henv) service(i int) map[string]any {
	return o.spec()["services"].([]any)[i].(map[string]any)
}

func (o henv) integration(i int) map[string]any {
	return o.spec()["integrations"].([]any)[i].(map[string]any)
}

// validationPadName lengthens name with "-xxx…" to n characters, keeping it a DNS label.
func validationPadName(name string, n int) string {
	return name + "-" + strings.Repeat("x", n-len(name)-1)
}

func validationMatchLabels(k, v string) map[string]any {
	return map[string]any{"matchLabels": map[string]any{k: v}}
}

// validationExtraServices returns n valid, distinct services to add to the base.
func validationExtraServices(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = map[string]any{
			"name":  fmt.Sprintf("extra-%02d", i+1),
			"image": fmt.Sprintf("registry.example/111/extra-%02d@sha256:%s", i+1, strings.Repeat("c", 64)),
			"port":  int64(8080),
		}
	}
	return out
}

// validationNameExpression is a selector with one requirement on
// kubernetes.io/metadata.name.
func validationNameExpression(op string, values ...string) map[string]any {
	r := map[string]any{"key": "kubernetes.io/metadata.name", "operator": op}
	if len(values) > 0 {
		vs := make([]any, len(values))
		for i, v := range values {
			vs[i] = v
		}
		r["values"] = vs
	}
	return map[string]any{"matchExpressions": []any{r}}
}

// validationForensicsNames returns n distinct namespace names.
func validationForensicsNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("forensics-%02d", i+1)
	}
	return out
}

// TestForensicsFromAccepted checks that the two forms of forensicsFrom the
// CRD documents are admitted: the server-side dry run runs every validation
// a create does and stores nothing.
func TestForensicsFromAccepted(t *testing.T) {
	run := rand.String(5)
	for i, tc := range []struct {
		name          string
		forensicsFrom map[string]any
	}{
		{"matchLabels by name", validationMatchLabels("kubernetes.io/metadata.name", "forensics")},
		{"In by name", validationNameExpression("In", "forensics", "soc")},
		{"In with 16 names", validationNameExpression("In", validationForensicsNames(16)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := newValidBase(t, fmt.Sprintf("forensics-%d-%s", i+1, run))
			henv(obj.Object).isolation()["forensicsFrom"] = tc.forensicsFrom
			if err := k8sClient.Create(context.Background(), obj, client.DryRunAll); err != nil {
				t.Fatalf("forensicsFrom %v was rejected: %v", tc.forensicsFrom, err)
			}
		})
	}
}

// TestForensicsFromStoredBeforeTheRule: an environment stored with
// forensicsFrom {} before the CRD had its rule (the rule is taken out of the
// served CRD while it is created) must not become un-updatable for a
// responder. While forensicsFrom is left as it is, the API server ratchets
// the rule: the responder can fence it, the operator can write its status
// and finalizer, and the fence it writes admits no namespace, verified.
// Changing forensicsFrom to another value the rule rejects is refused;
// correcting it is accepted, and the fence then admits the named namespace.
func TestForensicsFromStoredBeforeTheRule(t *testing.T) {
	ctx := context.Background()
	name := uniqueName("forensics-old")
	everyNamespace := map[string]any{}
	probe := func() error {
		obj := newValidBase(t, name+"-probe")
		henv(obj.Object).isolation()["forensicsFrom"] = everyNamespace
		return k8sClient.Create(ctx, obj, client.DryRunAll)
	}

	restoreRule := setForensicsRule(t, nil)
	t.Cleanup(func() { restoreRule() })
	eventually(t, 30*time.Second, "the served CRD accepts forensicsFrom {}", func(context.Context) (bool, string, error) {
		err := probe()
		return err == nil, fmt.Sprint(err), nil
	})
	yamlText := strings.Replace(fenceEnvYAML(name), "forensicsFrom: {matchLabels: {kubernetes.io/metadata.name: forensics}}", "forensicsFrom: {}", 1)
	if !strings.Contains(yamlText, "forensicsFrom: {}") {
		t.Fatal("the fence test's environment no longer sets forensicsFrom")
	}
	t.Cleanup(func() { deleteFencedEnvironment(name) })
	kubectlStdinOrFail(t, yamlText, "apply", "-f", "-")

	restoreRule()
	eventually(t, 30*time.Second, "the served CRD rejects forensicsFrom {} again", func(context.Context) (bool, string, error) {
		err := probe()
		return apierrors.IsInvalid(err) && strings.Contains(err.Error(), msgForensics), fmt.Sprint(err), nil
	})

	// Fenced by a responder, with forensicsFrom untouched.
	responder(t, "patch", "henv", name, "--type=merge", "-p", fencePatch("INC-6"))
	env := waitFencedTrue(t, name)
	if c := meta.FindStatusCondition(env.Status.Conditions, v1alpha1.ConditionIsolationVerified); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("IsolationVerified is %+v, want True", c)
	}
	ns := name + build.PrimarySuffix
	fence := &networkingv1.NetworkPolicy{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.FencePolicyName}, fence); err != nil {
		t.Fatal(err)
	}
	if len(fence.Spec.Ingress) != 0 {
		t.Fatalf("the fence admits ingress through forensicsFrom {}: %+v", fence.Spec.Ingress)
	}

	// Another value the rule rejects is refused; a corrected one is not.
	rc := responderClient(t)
	patch := func(forensicsFrom string) error {
		return rc.Patch(ctx, &v1alpha1.HealthEnvironment{ObjectMeta: metav1.ObjectMeta{Name: name}},
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"isolation":{"forensicsFrom":`+forensicsFrom+`}}}`)))
	}
	err := patch(`{"matchLabels":{"team":"forensics"}}`)
	if err == nil {
		t.Fatal("forensicsFrom changed to a selector on a forgeable label was accepted")
	}
	assertInvalidCause(t, err, "spec.isolation.forensicsFrom", msgForensics)
	if err := patch(`{"matchLabels":{"kubernetes.io/metadata.name":"forensics"}}`); err != nil {
		t.Fatalf("correcting forensicsFrom was rejected: %v", err)
	}
	want := `[{"from":[{"namespaceSelector":{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"In","values":["forensics"]}]}}]}]`
	eventually(t, 30*time.Second, "the fence admits the forensics namespace by name", func(ctx context.Context) (bool, string, error) {
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: build.FencePolicyName}, fence); err != nil {
			return false, err.Error(), nil
		}
		got, err := json.Marshal(fence.Spec.Ingress)
		return string(got) == want, string(got), err
	})
}

// setForensicsRule replaces the CEL rules of the served HealthEnvironment
// CRD's spec.isolation.forensicsFrom with rules (nil: none) and returns a
// function, safe to call twice, that puts the original ones back.
func setForensicsRule(t *testing.T, rules []any) func() {
	t.Helper()
	ctx := context.Background()
	path := []string{"schema", "openAPIV3Schema", "properties", "spec", "properties", "isolation", "properties", "forensicsFrom", "x-kubernetes-validations"}
	var original []any
	update := func(set func(version map[string]any) error) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			crd := &unstructured.Unstructured{}
			crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: "healthenvironments.careplane.io"}, crd); err != nil {
				return err
			}
			versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
			if len(versions) != 1 {
				return fmt.Errorf("want one served version, the CRD has %d", len(versions))
			}
			if err := set(versions[0].(map[string]any)); err != nil {
				return err
			}
			if err := unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions"); err != nil {
				return err
			}
			return k8sClient.Update(ctx, crd)
		})
	}
	err := update(func(v map[string]any) error {
		cur, found, err := unstructured.NestedSlice(v, path...)
		if err != nil {
			return fmt.Errorf("reading the CRD's rules on forensicsFrom: %w", err)
		}
		if !found {
			return errors.New("the CRD has no rule on forensicsFrom")
		}
		original = cur
		if rules == nil {
			unstructured.RemoveNestedField(v, path...)
			return nil
		}
		return unstructured.SetNestedSlice(v, rules, path...)
	})
	if err != nil {
		t.Fatalf("changing the CRD's forensicsFrom rule: %v", err)
	}
	restored := false
	return func() {
		if restored {
			return
		}
		restored = true
		if err := update(func(v map[string]any) error { return unstructured.SetNestedSlice(v, original, path...) }); err != nil {
			t.Errorf("restoring the CRD's forensicsFrom rule: %v", err)
		}
	}
}

// kubectlStdinOrFail runs kubectl with stdin and fails the test if it fails.
func kubectlStdinOrFail(t *testing.T, stdin string, args ...string) {
	t.Helper()
	if out, err := kubectlStdin(stdin, args...); err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
}
