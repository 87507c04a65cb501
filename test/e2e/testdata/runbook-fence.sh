#!/usr/bin/env bash
# The runbook a hosting provider would follow today without careplane: the
# fence of one environment as a script of kubectl commands, in careplane's
# fail-closed order. The benchmark runs it against copies of careplane's
# objects that no operator manages, and compares its time with careplane's.
#
# Usage: runbook-fence.sh DENY_POLICY_FILE PRIMARY_NS FRONT_NS TICKET
# Env:   KUBECTL (default kubectl); SERVICES and SECRETS, space-separated
#        service account and generated secret names.
set -euo pipefail
k=${KUBECTL:-kubectl}
deny=$1 ns=$2 front=$3 ticket=$4

# 1. Deny everything, then mark the namespace.
"$k" apply -f "$deny" >/dev/null
"$k" label namespace "$ns" bench.careplane.io/fenced=true --overwrite >/dev/null
# 2. Remove every other policy.
others=$("$k" get networkpolicies -n "$ns" -o name | grep -v '/careplane-fence$' || true)
if [ -n "$others" ]; then
	# shellcheck disable=SC2086
	"$k" delete -n "$ns" $others >/dev/null
fi
# 3. Credentials: new service accounts, generated secrets deleted.
for sa in ${SERVICES}; do
	"$k" delete serviceaccount -n "$ns" "$sa" >/dev/null
	"$k" create serviceaccount -n "$ns" "$sa" >/dev/null
done
# shellcheck disable=SC2086
"$k" delete secret -n "$ns" --ignore-not-found ${SECRETS} >/dev/null
# 4. No new pods behind the fence; keep the pods as evidence, then stop the
# workloads.
"$k" create quota careplane-fence -n "$ns" --hard=pods=0 >/dev/null
for pod in $("$k" get pods -n "$ns" -o name); do
	"$k" patch -n "$ns" "$pod" --type merge -p \
		"{\"metadata\":{\"ownerReferences\":null,\"labels\":{\"bench.careplane.io/service\":null,\"bench.careplane.io/evidence\":\"$ticket\"}}}" >/dev/null
done
"$k" scale deployment -n "$ns" --all --replicas=0 >/dev/null
# 5. Stop routing to the site.
for es in $("$k" get endpointslices -n "$front" -o name); do
	"$k" patch -n "$front" "$es" --type merge -p '{"endpoints":[]}' >/dev/null
done
