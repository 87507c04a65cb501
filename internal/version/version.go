// Package version holds careplane's version, set at build time with
// -ldflags "-X github.com/careplane/careplane/internal/version.Version=...".
package version

// Version is careplane's version.
var Version = "dev"
