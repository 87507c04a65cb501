// Package build computes the desired state of a HealthEnvironment's children.
//
// Every function here is pure: no client, no clock, no randomness (random
// secret values are passed in), so the same input always yields the same
// output. Builders return client-go apply configurations rather than typed
// objects because the reconciler writes every child with server-side apply
// under one field manager and must send only the fields careplane owns: a
// field set here is owned by careplane, a field left unset is left to
// defaulting and to other actors, and a field careplane stops setting is
// removed on the next apply.
//
// Every object carries the labels app.kubernetes.io/managed-by=careplane,
// careplane.io/environment and careplane.io/site (plus careplane.io/service
// and app.kubernetes.io/name for per-service objects) and a controller owner
// reference to the cluster-scoped HealthEnvironment, so garbage collection
// removes it with the environment.
//
// Lists are emitted in a deterministic (sorted) order so that re-applying an
// unchanged spec is a no-op on the server.
package build
