// Package ssa writes objects with server-side apply under one field manager,
// and skips the request when it would change nothing.
//
// A server-side apply of an unchanged object is a no-op on the server, but it
// is still a request: a thousand environments resynced would send thousands
// of PATCHes. Applier remembers, per object, a hash of the last desired state
// it applied and the resourceVersion the server answered with. When the
// desired state hashes the same and the object (as the informer cache sees
// it) still has that version, nobody has changed it since, so the apply is
// skipped; so it is when the cache still shows the object from before that
// apply (behind). Any change by anyone to what careplane writes — a drifted field, a
// label — moves the version and the next reconcile applies again. The version
// is the resourceVersion, except for the kinds whose status their controllers
// write on every pod they start (see Version). This is the approach of
// Cluster API's internal/util/ssa cache, reduced to what careplane needs.
package ssa

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// An Applier remembers tens of objects per environment, so what it keeps of
// each is small and of fixed size: hashes rather than names and desired
// states (a map keyed by apiVersion/kind/namespace/name strings, and the
// names kept again for ForgetNamespaces, took about 340 bytes an object;
// this takes about 70). 128 bits of SHA-256 make a collision of two keys or
// two desired states of one object practically impossible; and a collision
// of keys alone only costs a request, as a skip needs the desired state and
// the resourceVersion to match as well.
type digest [16]byte

type entry struct {
	desired digest
	version string
}

// Applier applies objects and remembers what it applied. It is safe for
// concurrent use.
type Applier struct {
	client client.Client

	mu sync.Mutex
	// seen holds the entries by the namespace they are forgotten with: an
	// object's own namespace, or for a Namespace its name (cluster-scoped
	// objects of other kinds are under ""). ForgetNamespaces then deletes
	// whole groups without scanning every entry.
	seen map[string]map[digest]entry
}

// NewApplier returns an Applier writing through c.
func NewApplier(c client.Client) *Applier {
	return &Applier{client: c, seen: map[string]map[digest]entry{}}
}

// Apply writes desired with server-side apply (forcing ownership of the
// fields it sets) unless the last apply of an identical desired state
// produced currentVersion, the Version of the object the caller's cache
// holds now ("" when the object does not exist, or to apply regardless). It
// reports whether it sent a request. On success desired holds the server's
// answer.
func (a *Applier) Apply(ctx context.Context, desired Object, currentVersion string) (bool, error) {
	// Encoded straight into the hash: most applies are skipped, and the
	// encoding would be garbage at once.
	hash := sha256.New()
	if err := json.NewEncoder(hash).Encode(desired); err != nil {
		return false, fmt.Errorf("encoding %s: %w", describe(desired), err)
	}
	var h digest
	copy(h[:], hash.Sum(nil))
	group, k := key(desired)

	a.mu.Lock()
	last, ok := a.seen[group][k]
	a.mu.Unlock()
	if ok && currentVersion != "" && last.desired == h && (last.version == currentVersion || behind(currentVersion, last.version)) {
		return false, nil
	}

	if err := a.client.Apply(ctx, desired, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		a.Forget(desired)
		return true, fmt.Errorf("applying %s: %w", describe(desired), err)
	}
	v, err := answerVersion(desired)
	if err != nil {
		return true, fmt.Errorf("reading the answer to applying %s: %w", describe(desired), err)
	}
	a.mu.Lock()
	m := a.seen[group]
	if m == nil {
		m = map[digest]entry{}
		a.seen[group] = m
	}
	m[k] = entry{desired: h, version: v}
	a.mu.Unlock()
	return true, nil
}

// Forget drops what the Applier remembers of obj, so the next Apply sends a
// request. Call it after deleting an object.
func (a *Applier) Forget(obj Object) {
	group, k := key(obj)
	a.mu.Lock()
	if m := a.seen[group]; m != nil {
		delete(m, k)
		if len(m) == 0 {
			delete(a.seen, group)
		}
	}
	a.mu.Unlock()
}

// ForgetNamespaces drops what the Applier remembers of every object in the
// given namespaces and of the Namespaces themselves: call it when an owner
// of whole namespaces is gone, so the memory does not grow with churn.
func (a *Applier) ForgetNamespaces(namespaces ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ns := range namespaces {
		delete(a.seen, ns)
	}
}

// Len is how many objects the Applier remembers.
func (a *Applier) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, m := range a.seen {
		n += len(m)
	}
	return n
}

// answerVersion is the Version of the server's answer held by an apply
// configuration (apply configurations have no getters for its metadata).
func answerVersion(o Object) (string, error) {
	raw, err := json.Marshal(o)
	if err != nil {
		return "", err
	}
	var m struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", err
	}
	return Version(o, &m.Metadata), nil
}

// statusChurns are the kinds (apiVersion and kind) whose controllers write
// their status on every pod they start, stop or count, and whose
// metadata.generation moves on every change to their spec (the scale
// subresource's included).
var statusChurns = map[string]bool{
	"apps/v1\x00Deployment":            true,
	"apps/v1\x00StatefulSet":           true,
	"policy/v1\x00PodDisruptionBudget": true,
}

// metadataOnly are the kinds careplane applies only metadata to (a
// Namespace: its labels and owner). Other writers' changes to the rest (the
// fence record's annotations, the namespace controller's status) are
// nothing an apply would undo.
var metadataOnly = map[string]bool{
	"v1\x00Namespace": true,
}

// Version is the version of current, an object of desired's kind, that Apply
// compares with the one its last apply produced. It is the resourceVersion,
// which any write moves. For the kinds in statusChurns it is instead the
// UID, the generation and a digest of the labels, owners, finalizers and
// deletion: their status writes, which an apply neither undoes nor needs to,
// then cost no request, while a change to the spec (which moves the
// generation), to that metadata, or the object made anew, is applied over as
// before. Annotations are left out: careplane sets none on these kinds and
// its cache does not keep them (controllers/manager.go), so a change to
// them is nothing an apply would undo. There current must keep its UID: one
// without (a cache that drops it) gets its resourceVersion, so nothing is
// skipped that should not be.
//
// For the kinds in metadataOnly it is that digest alone: they have no
// generation, and careplane sets nothing else on them, so one made anew
// with the same labels and owner (the owner names the environment's UID)
// is nothing an apply would change either. The namespace cache does not
// keep the UID.
func Version(desired Object, current metav1.Object) string {
	if current == nil {
		return ""
	}
	kind := deref(desired.GetAPIVersion()) + "\x00" + deref(desired.GetKind())
	uid, gen := current.GetUID(), current.GetGeneration()
	switch {
	case metadataOnly[kind]:
		uid, gen = "", 0
	case !statusChurns[kind] || gen == 0 || uid == "":
		return current.GetResourceVersion()
	}
	// encoding/json writes map keys sorted: the digest is stable.
	raw, err := json.Marshal([]any{current.GetLabels(), current.GetOwnerReferences(), current.GetFinalizers(), current.GetDeletionTimestamp()})
	if err != nil {
		return current.GetResourceVersion()
	}
	d := sum(raw)
	return fmt.Sprintf("%s/%d/%x", uid, gen, d[:])
}

// behind says current, the Version of an object as the caller's cache holds
// it, is that object from before last, the Version of the answer to the last
// apply: the same UID, labels, owners, finalizers and deletion, an older
// generation. The cache has not caught up with that apply (a fence's second
// look at the Deployments it scaled down a moment before); no other writer
// can move the generation back, and one that moves it past last is applied
// over once the cache shows it. Versions without a generation never are.
func behind(current, last string) bool {
	cu, cg, cd, ok := splitVersion(current)
	lu, lg, ld, lok := splitVersion(last)
	return ok && lok && cu != "" && cu == lu && cd == ld && cg < lg
}

// splitVersion reads a Version of the form uid/generation/digest.
func splitVersion(v string) (uid string, gen int64, d string, ok bool) {
	parts := strings.SplitN(v, "/", 3)
	if len(parts) != 3 {
		return "", 0, "", false
	}
	gen, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return "", 0, "", false
	}
	return parts[0], gen, parts[2], true
}

// key is the group an object is remembered in (see Applier.seen) and its
// key there.
func key(o Object) (string, digest) {
	group, name := deref(o.GetNamespace()), deref(o.GetName())
	if group == "" && deref(o.GetKind()) == "Namespace" && deref(o.GetAPIVersion()) == "v1" {
		group = name
	}
	// NUL cannot occur in any of the parts, so the encoding is unambiguous.
	return group, sum([]byte(deref(o.GetAPIVersion()) + "\x00" + deref(o.GetKind()) + "\x00" + deref(o.GetNamespace()) + "\x00" + name))
}

func sum(b []byte) digest {
	h := sha256.Sum256(b)
	return digest(h[:len(digest{})])
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

// Typed writes the object apply configuration from describes into to, an
// empty typed object of its kind: for a write that is not an apply (a
// create that must not replace, an update of the whole object).
func Typed(from, to any) error {
	raw, err := json.Marshal(from)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, to)
}
