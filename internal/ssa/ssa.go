// Package ssa writes objects with server-side apply under one field manager,
// and skips the request when it would change nothing.
//
// A server-side apply of an unchanged object is a no-op on the server, but it
// is still a request: a thousand environments resynced would send thousands
// of PATCHes. Applier remembers, per object, a hash of the last desired state
// it applied and the resourceVersion the server answered with. When the
// desired state hashes the same and the object (as the informer cache sees
// it) still has that resourceVersion, nobody has changed it since, so the
// apply is skipped. Any change by anyone — a drifted field, a status update —
// moves the resourceVersion and the next reconcile applies again. This is the
// approach of Cluster API's internal/util/ssa cache, reduced to what careplane
// needs.
package ssa

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FieldOwner is the field manager careplane's operator applies with.
const FieldOwner = "careplane"

// Object is what every client-go apply configuration offers.
type Object interface {
	runtime.ApplyConfiguration
	GetName() *string
	GetNamespace() *string
	GetKind() *string
	GetAPIVersion() *string
}

type entry struct {
	hash                  [sha256.Size]byte
	resourceVersion       string
	kind, namespace, name string
}

// Applier applies objects and remembers what it applied. It is safe for
// concurrent use.
type Applier struct {
	client client.Client

	mu   sync.Mutex
	seen map[string]entry
}

// NewApplier returns an Applier writing through c.
func NewApplier(c client.Client) *Applier {
	return &Applier{client: c, seen: map[string]entry{}}
}

// Apply writes desired with server-side apply (forcing ownership of the
// fields it sets) unless the last apply of an identical desired state
// produced currentResourceVersion, the version the caller's cache holds now
// ("" when the object does not exist). It reports whether it sent a request.
// On success desired holds the server's answer.
func (a *Applier) Apply(ctx context.Context, desired Object, currentResourceVersion string) (bool, error) {
	raw, err := json.Marshal(desired)
	if err != nil {
		return false, fmt.Errorf("encoding %s: %w", describe(desired), err)
	}
	k := key(desired)
	h := sha256.Sum256(raw)

	a.mu.Lock()
	last, ok := a.seen[k]
	a.mu.Unlock()
	if ok && currentResourceVersion != "" && last.hash == h && last.resourceVersion == currentResourceVersion {
		return false, nil
	}

	if err := a.client.Apply(ctx, desired, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		a.Forget(desired)
		return true, fmt.Errorf("applying %s: %w", describe(desired), err)
	}
	rv, err := resourceVersion(desired)
	if err != nil {
		return true, fmt.Errorf("reading the answer to applying %s: %w", describe(desired), err)
	}
	a.mu.Lock()
	a.seen[k] = entry{hash: h, resourceVersion: rv,
		kind: deref(desired.GetKind()), namespace: deref(desired.GetNamespace()), name: deref(desired.GetName())}
	a.mu.Unlock()
	return true, nil
}

// Forget drops what the Applier remembers of obj, so the next Apply sends a
// request. Call it after deleting an object.
func (a *Applier) Forget(obj Object) {
	a.mu.Lock()
	delete(a.seen, key(obj))
	a.mu.Unlock()
}

// ForgetNamespaces drops what the Applier remembers of every object in the
// given namespaces and of the Namespaces themselves: call it when an owner
// of whole namespaces is gone, so the memory does not grow with churn.
func (a *Applier) ForgetNamespaces(namespaces ...string) {
	in := make(map[string]bool, len(namespaces))
	for _, ns := range namespaces {
		in[ns] = true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, e := range a.seen {
		if in[e.namespace] || (e.kind == "Namespace" && in[e.name]) {
			delete(a.seen, k)
		}
	}
}

// Len is how many objects the Applier remembers.
func (a *Applier) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

// resourceVersion reads metadata.resourceVersion of an apply configuration
// that holds the server's answer (apply configurations have no getter for it).
func resourceVersion(o Object) (string, error) {
	raw, err := json.Marshal(o)
	if err != nil {
		return "", err
	}
	var m struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", err
	}
	return m.Metadata.ResourceVersion, nil
}

func key(o Object) string {
	return deref(o.GetAPIVersion()) + "/" + deref(o.GetKind()) + "/" + deref(o.GetNamespace()) + "/" + deref(o.GetName())
}

func describe(o Object) string {
	if ns := deref(o.GetNamespace()); ns != "" {
		return fmt.Sprintf("%s %s/%s", deref(o.GetKind()), ns, deref(o.GetName()))
	}
	return fmt.Sprintf("%s %s", deref(o.GetKind()), deref(o.GetName()))
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
