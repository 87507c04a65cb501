#!/usr/bin/env bash
# Renders charts/careplane with its default values and with
# testdata/custom.values.yaml, and compares the output with the golden files
# charts/careplane/testdata/*.golden.yaml. UPDATE=1 rewrites the golden files
# instead (review the diff before committing).
#
# Usage: [UPDATE=1] hack/chart-golden.sh [HELM]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
helm=${1:-${HELM:-$root/bin/helm}}
chart=$root/charts/careplane
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

render() { # NAME [HELM ARGS...]
	local name=$1
	shift
	"$helm" template careplane "$chart" --namespace careplane-system "$@" >"$tmp/$name.golden.yaml"
}
render default
render custom -f "$chart/testdata/custom.values.yaml"

status=0
for f in "$tmp"/*.golden.yaml; do
	golden=$chart/testdata/$(basename "$f")
	if [ "${UPDATE:-}" = 1 ]; then
		cp "$f" "$golden"
		echo "updated ${golden#"$root"/}"
	elif ! diff -u "$golden" "$f"; then
		echo "${golden#"$root"/} is out of date (see the diff above); if the change is intended, run UPDATE=1 hack/chart-golden.sh" >&2
		status=1
	fi
done
exit $status
