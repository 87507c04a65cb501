// Command chart-docs writes the values table of a Helm chart's README.md
// from the "# --" comments of its values.yaml (make chart-docs). make
// verify runs it and fails when the README changed.
//
// Usage: go run ./hack/chart-docs [CHART_DIR]
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/careplane/careplane/hack/charttest"
)

func main() {
	dir := "charts/careplane"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if err := run(dir); err != nil {
		fmt.Fprintln(os.Stderr, "chart-docs:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "values.yaml"))
	if err != nil {
		return err
	}
	values, err := charttest.ParseValues(b)
	if err != nil {
		return err
	}
	if missing := values.Undocumented(); len(missing) > 0 {
		return fmt.Errorf("values without a '# --' comment in %s/values.yaml: %s", dir, strings.Join(missing, ", "))
	}
	path := filepath.Join(dir, "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := charttest.WithTable(string(readme), charttest.Table(values.Documented))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if out == string(readme) {
		return nil
	}
	return os.WriteFile(path, []byte(out), 0o644)
}
