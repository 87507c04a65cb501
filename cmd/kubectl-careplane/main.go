// Command kubectl-careplane is the careplane kubectl plugin: install it on
// the PATH and run `kubectl careplane status|fence|verify|restore|revisions|recovery-points|purge-evidence|doctor`.
// Its exit status tells scripts what went wrong (plugin.ExitCode; the
// table is in `kubectl careplane --help` and docs/runbook.md).
package main

import (
	"os"

	"github.com/careplane/careplane/internal/plugin"
)

func main() {
	os.Exit(plugin.Main())
}
