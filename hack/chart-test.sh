#!/usr/bin/env bash
# The Helm chart's static tests (make test-chart):
#   1. helm lint --strict, with the default and the non-default values;
#   2. the rendered output equals the golden files (hack/chart-golden.sh);
#   3. every leaf value in values.yaml is used: each template reference
#      .Values.<path> (or a parent of it, rendered whole with toYaml);
#   4. the schema rejects a typo (replica: 2) with a clear message;
#   5. the chart's generated files are in sync with config/ (hack/chart-sync.sh
#      changes nothing).
#
# Usage: hack/chart-test.sh [HELM]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
helm=${1:-${HELM:-$root/bin/helm}}
chart=$root/charts/careplane
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "--- helm lint --strict"
"$helm" lint --strict "$chart"
"$helm" lint --strict "$chart" -f "$chart/testdata/custom.values.yaml"

echo "--- golden files"
"$root/hack/chart-golden.sh" "$helm"

echo "--- every value is used"
unused=0
while IFS= read -r path; do
	# A path is used when a template names it, or names a parent that it
	# renders whole (toYaml .Values.resources covers resources.requests.cpu).
	p=$path found=
	while [ -n "$p" ]; do
		re="\\.Values\\.${p//./\\.}([^A-Za-z0-9_.]|\$)"
		if grep -rqE "$re" "$chart/templates"; then found=1; break; fi
		[[ $p == *.* ]] || break
		p=${p%.*}
	done
	if [ -z "$found" ]; then echo "value $path is not used by any template" >&2; unused=1; fi
done < <(python3 - "$chart/values.yaml" <<'PY'
import sys, yaml
def leaves(v, prefix):
    if isinstance(v, dict) and v:
        for k, x in v.items():
            yield from leaves(x, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix
for p in leaves(yaml.safe_load(open(sys.argv[1])), ""):
    print(p)
PY
)
[ $unused = 0 ] || fail "values.yaml has values that no template uses"
# And every value is documented in README.md.
while IFS= read -r path; do
	grep -qF "\`$path\`" "$chart/README.md" || fail "value $path is not documented in charts/careplane/README.md"
done < <(python3 -c 'import sys,yaml
def leaves(v,p):
    if isinstance(v,dict) and v and p not in ("resources","podSecurityContext","securityContext"):
        for k,x in v.items(): yield from leaves(x, f"{p}.{k}" if p else k)
    else: yield p
[print(x) for x in leaves(yaml.safe_load(open(sys.argv[1])),"")]' "$chart/values.yaml")

echo "--- a typo in the values fails with the schema's message"
if out=$("$helm" template careplane "$chart" --set replica=2 2>&1); then
	fail "helm template accepted the unknown value replica=2"
fi
echo "$out" | grep -q "additional properties 'replica' not allowed" ||
	fail "helm template failed on replica=2 without the schema's message: $out"
echo "rejected as expected: $(echo "$out" | grep -m1 replica)"
if out=$("$helm" template careplane "$chart" --set guardrails.responderGroup=x 2>&1); then
	fail "helm template accepted the unknown value guardrails.responderGroup"
fi
echo "$out" | grep -q "additional properties 'responderGroup' not allowed" ||
	fail "helm template failed on guardrails.responderGroup without the schema's message: $out"

echo "--- generated chart files are in sync with config/"
before=$(cd "$root" && find charts/careplane/templates/crds charts/careplane/templates/guardrails charts/careplane/files -type f -exec sha256sum {} + | sort)
"$root/hack/chart-sync.sh"
after=$(cd "$root" && find charts/careplane/templates/crds charts/careplane/templates/guardrails charts/careplane/files -type f -exec sha256sum {} + | sort)
[ "$before" = "$after" ] || fail "hack/chart-sync.sh changed the chart: run make manifests and commit"

echo "chart tests passed"
