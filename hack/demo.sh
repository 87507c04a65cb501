#!/usr/bin/env bash
# The careplane demo: on the local kwok cluster NAME (started by `make
# cluster-up`), install the CRD, run the manager, apply the sample
# environments and show them reaching Ready. Leaves everything running and
# prints how to explore and how to tear down.
#
# Pods on kwok's simulated nodes run no process, so the manager runs on this
# machine against the cluster, as it would in-cluster.
#
# Usage: hack/demo.sh NAME
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:?usage: $0 NAME}
bin=${K8S_BIN:-$root/bin/k8s}
export KWOK_WORKDIR=${KWOK_WORKDIR:-$root/.kwok}
export KUBECONFIG=$KWOK_WORKDIR/$name.kubeconfig
k() { "$bin/kubectl" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

[ -f "$KUBECONFIG" ] || { echo "no cluster $name: run 'make cluster-up' first" >&2; exit 1; }

say "Installing the HealthEnvironment CRD"
k apply --server-side -f "$root/config/crd/bases"
k wait --for=condition=Established crd/healthenvironments.careplane.io --timeout=60s

say "Starting the careplane manager (logs: $KWOK_WORKDIR/$name-manager.log)"
"$root/hack/cluster.sh" stop-manager "$name"
nohup "$root/bin/manager" --kubeconfig "$KUBECONFIG" --metrics-bind-address=0 --health-probe-bind-address=0 \
	>"$KWOK_WORKDIR/$name-manager.log" 2>&1 &
echo $! >"$KWOK_WORKDIR/$name-manager.pid"
sleep 1
kill -0 "$(cat "$KWOK_WORKDIR/$name-manager.pid")" 2>/dev/null || {
	echo "the manager exited:" >&2
	cat "$KWOK_WORKDIR/$name-manager.log" >&2
	exit 1
}

say "Applying two customer environments: NHS 111 Wales and Yorkshire care records"
run k apply -f "$root/config/samples/wales-111.yaml" -f "$root/config/samples/yorkshire-care-records.yaml"

say "Waiting for both to be Ready"
run k wait --for=condition=Ready henv --all --timeout=180s
run k get henv

say "What careplane built for wales-111"
run k get namespaces -l careplane.io/environment=wales-111 -L pod-security.kubernetes.io/enforce
run k get deployments,services,networkpolicies,resourcequotas -n wales-111-primary
run k get services,endpointslices -n wales-111
run k get controllerrevisions -n wales-111

say "An incident: fencing wales-111 (yorkshire-care-records keeps working; wales-111's critical services move to its warm standby)"
run k patch henv wales-111 --type=merge -p '{"spec":{"isolation":{"mode":"Fenced","reason":"ransomware indicators on call-handling","ticket":"INC-2041"}}}'
run k wait --for=condition=Fenced henv/wales-111 --timeout=30s
run k get henv
run k get networkpolicies -n wales-111-primary
run k get pods -n wales-111-primary -L careplane.io/evidence
run k get endpointslices -n wales-111
run k get pods -n wales-111-standby -o wide
k get henv wales-111 -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'

say "Restoring wales-111: rebuilt behind the fence with new credentials, then the fence goes"
run k patch henv wales-111 --type=merge -p '{"spec":{"isolation":{"mode":"None"}}}'
run k wait --for=condition=Fenced=false henv/wales-111 --timeout=120s
run k get henv
k get henv wales-111 -o jsonpath='{range .status.incidents[*]}incident {.ticket}: fenced {.fencedAt}, restored {.restoredAt} from {.restoredFrom}{"\n"}{end}'
run k get pods -n wales-111-primary -L careplane.io/evidence
k get henv wales-111 -o jsonpath='ServingFromStandby: {.status.conditions[?(@.type=="ServingFromStandby")].message}{"\n"}'
echo "(traffic returns to the rebuilt primary once it has been Ready for the hold: watch kubectl get henv wales-111 -w)"

cat <<EOF

The cluster and the manager keep running. To explore:

  export KUBECONFIG=$KUBECONFIG
  export PATH=$bin:\$PATH
  kubectl get henv
  kubectl describe henv wales-111
  kubectl explain henv.spec.isolation
  kubectl get pods -n wales-111-primary -l careplane.io/evidence   # evidence, still isolated
  tail -f $KWOK_WORKDIR/$name-manager.log

To tear everything down:

  make cluster-down
EOF
