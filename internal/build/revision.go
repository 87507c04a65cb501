package build

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"

	"github.com/careplane/careplane/api/v1alpha1"
)

// RevisionHashLength is the number of hex digits of a revision hash.
const RevisionHashLength = 10

// revisionData is what a known-good revision records. It is an object, not a
// bare list, so that more can be recorded later without breaking old
// revisions.
type revisionData struct {
	// Services are the service templates, sorted by name.
	Services []v1alpha1.Service `json:"services"`
}

// RevisionData returns the canonical JSON of services, the data of a
// known-good revision: {"services":[...]}.
//
// Identical templates give identical bytes, and any change to a template's
// fields gives different bytes. Differences that change nothing are
// canonicalised away: the order of the services (a map keyed by name), the
// order and repeats of talksTo and generatedSecrets (sets), the order of
// secretsFrom (which the builders sort), and the spelling
// of quantities ("1000m" and "1" are one CPU). The order of env, which
// matters to $(VAR) references, and of allowFrom is kept. Object keys are
// sorted at every level, as the API server writes them back, so the hash of
// data read back from a ControllerRevision matches its name.
func RevisionData(services []v1alpha1.Service) ([]byte, error) {
	canon := make([]v1alpha1.Service, len(services))
	for i, s := range services {
		s.TalksTo = nilIfEmpty(sortedUnique(s.TalksTo))
		s.GeneratedSecrets = nilIfEmpty(sortedUnique(s.GeneratedSecrets))
		s.SecretsFrom = nilIfEmpty(sortedSecretsFrom(s.SecretsFrom))
		canon[i] = s // a shallow copy: only the fresh slices differ
	}
	slices.SortStableFunc(canon, func(a, b v1alpha1.Service) int { return cmp.Compare(a.Name, b.Name) })

	raw, err := json.Marshal(revisionData{Services: canon})
	if err != nil {
		return nil, fmt.Errorf("encoding service templates: %w", err)
	}
	// Decode into generic values and encode again: encoding/json writes map
	// keys sorted, so struct field order no longer matters. UseNumber keeps
	// integers exact.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, fmt.Errorf("canonicalising service templates: %w", err)
	}
	data, err := json.Marshal(generic)
	if err != nil {
		return nil, fmt.Errorf("canonicalising service templates: %w", err)
	}
	return data, nil
}

// RevisionHash returns the first RevisionHashLength hex digits of the
// SHA-256 of data: short, stable, and different for different data.
func RevisionHash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:RevisionHashLength]
}

// RevisionName returns the name of the revision of env holding data:
// <env>-<hash>.
func RevisionName(env *v1alpha1.HealthEnvironment, data []byte) string {
	return env.Name + "-" + RevisionHash(data)
}

// ControllerRevision returns the known-good revision of env holding data
// (from RevisionData) as revision number revision, in the front namespace
// and named RevisionName(env, data). Data of a ControllerRevision is
// immutable; the name changes with the data, so re-applying only ever
// changes the revision number.
func ControllerRevision(env *v1alpha1.HealthEnvironment, data []byte, revision int64) *appsv1ac.ControllerRevisionApplyConfiguration {
	return appsv1ac.ControllerRevision(RevisionName(env, data), FrontNamespace(env)).
		WithLabels(Labels(env, SiteLabelFront)).
		WithOwnerReferences(OwnerReference(env)).
		WithData(runtime.RawExtension{Raw: bytes.Clone(data)}).
		WithRevision(revision)
}

// ServicesFromRevision returns the service templates recorded in the data of
// a revision. It rejects unknown fields rather than dropping them, so a
// restore never rebuilds from a silently different template.
func ServicesFromRevision(data []byte) ([]v1alpha1.Service, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var rd revisionData
	if err := dec.Decode(&rd); err != nil {
		return nil, fmt.Errorf("decoding revision data: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decoding revision data: trailing data after the JSON object")
	}
	if len(rd.Services) == 0 {
		return nil, errors.New("revision data holds no services")
	}
	return rd.Services, nil
}

// nilIfEmpty returns nil for an empty slice, so that an empty and an absent
// list encode alike.
func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
