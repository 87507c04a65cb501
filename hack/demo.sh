#!/usr/bin/env bash
# The careplane demo, on the local kwok cluster NAME (started by `make
# cluster-up`): install careplane with its Helm chart, run the manager as the
# chart's ServiceAccount, apply four customer environments, then tell the
# incident with the kubectl plugin: fence one, show the others untouched and
# its critical services serving from the standby, verify the isolation,
# restore it, and show the incident record; then the care records' data:
# records written, a recovery point, the records encrypted, a fence, and a
# restore that brings them back from the point while the encrypted volume is
# kept as evidence. Leaves everything running.
#
# Pods on kwok's simulated nodes run no process, so the chart's manager pod
# does nothing; the manager binary runs on this machine instead, with a token
# of the chart's ServiceAccount — so it has exactly the chart's RBAC.
#
# Usage: hack/demo.sh NAME
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:?usage: $0 NAME}
bin=${K8S_BIN:-$root/bin/k8s}
export KWOK_WORKDIR=${KWOK_WORKDIR:-$root/.kwok}
export KUBECONFIG=$KWOK_WORKDIR/$name.kubeconfig
export PATH=$root/bin:$bin:$PATH
ns=careplane-system
responder=(--as=demo-responder --as-group=careplane:incident-responders --as-group=system:authenticated)
k() { "$bin/kubectl" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() {
	printf '$ %s\n' "$*"
	"$@"
}

[ -f "$KUBECONFIG" ] || {
	echo "no cluster $name: run 'make cluster-up' first" >&2
	exit 1
}

say "Installing careplane with Helm (CRD, RBAC, guardrail admission policies)"
# kwok runs its scheduler and simulated kubelets as kwok-admin: on this
# cluster that user is the control plane, which the freeze of fenced
# namespaces must let keep pods running.
# Incident responders are a group (guardrails.responderGroups), bound to the
# chart's careplane-responder ClusterRole: what a responder needs, nothing more.
run helm upgrade --install careplane "$root/charts/careplane" -n $ns --create-namespace \
	--set 'guardrails.controlPlaneUsers={kwok-admin}' --set responder.bindGroups=true
k wait --for=condition=Established crd/healthenvironments.careplane.io --timeout=60s >/dev/null

say "Starting the manager as the chart's ServiceAccount (log: $KWOK_WORKDIR/$name-manager.log)"
"$root/hack/cluster.sh" stop-manager "$name"
token=$(k create token careplane-manager -n $ns --duration=24h)
sakc=$KWOK_WORKDIR/$name-manager.kubeconfig
cp "$KUBECONFIG" "$sakc"
k --kubeconfig "$sakc" config set-credentials careplane-manager --token="$token" >/dev/null
k --kubeconfig "$sakc" config set-context --current --user=careplane-manager >/dev/null
nohup "$root/bin/manager" --kubeconfig "$sakc" --leader-elect --leader-election-namespace=$ns \
	--metrics-bind-address=0 --health-probe-bind-address=0 \
	>"$KWOK_WORKDIR/$name-manager.log" 2>&1 &
echo $! >"$KWOK_WORKDIR/$name-manager.pid"
sleep 1
kill -0 "$(cat "$KWOK_WORKDIR/$name-manager.pid")" 2>/dev/null || {
	echo "the manager exited:" >&2
	cat "$KWOK_WORKDIR/$name-manager.log" >&2
	exit 1
}

say "Applying four customer environments: 111 for Wales, the North East and the South West, and Yorkshire care records"
# The admission policies learn a new CRD's kind some seconds after it is
# Established, and refuse its objects until then (ServiceUnavailable,
# "There can be a delay..."): try again for up to a minute.
printf '$ k apply -k %s\n' "$root/config/samples"
for i in $(seq 30); do
	out=$(k apply -k "$root/config/samples" 2>&1) && { echo "$out"; break; }
	case $out in *"There can be a delay"*) [ "$i" -lt 30 ] && { sleep 2; continue; } ;; esac
	echo "$out" >&2
	exit 1
done
run k wait --for=condition=Ready henv --all --timeout=180s
run kubectl-careplane status

say "What careplane built for wales-111"
run k get namespaces -l careplane.io/environment=wales-111 -L pod-security.kubernetes.io/enforce
run k get deployments,networkpolicies,resourcequotas -n wales-111-primary
run k get deployments -n wales-111-standby -o wide
run k get endpointslices -n wales-111

say "An incident at wales-111: what would a fence do? (server-side dry run)"
run kubectl-careplane "${responder[@]}" fence wales-111 --reason "ransomware indicators on call-handling" --ticket INC-2041 --dry-run

say "Fencing wales-111 as an incident responder"
run kubectl-careplane "${responder[@]}" fence wales-111 --reason "ransomware indicators on call-handling" --ticket INC-2041
run kubectl-careplane status
echo "(the other three environments are untouched and Ready; wales-111's critical services serve from its standby)"
run k get endpointslices -n wales-111
run k get pods -n wales-111-primary -L careplane.io/evidence
run kubectl-careplane "${responder[@]}" verify wales-111
k get henv wales-111 -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'

say "Without the responder group, nobody — not even cluster-admin — can lift it"
printf '$ kubectl patch henv wales-111 --type=merge -p {"spec":{"isolation":{"mode":"None"}}}\n'
k patch henv wales-111 --type=merge -p '{"spec":{"isolation":{"mode":"None"}}}' 2>&1 | sed -n 1p || true

say "Restoring wales-111: rebuilt behind the fence with new credentials, then the fence goes"
run kubectl-careplane "${responder[@]}" restore wales-111
run kubectl-careplane status
k get henv wales-111 -o jsonpath='{range .status.incidents[*]}incident {.ticket}: fenced {.fencedAt}, restored {.restoredAt} from {.restoredFrom}; fenced by {.fencedBy}, restored by {.restoredBy}{"\n"}{end}'
run kubectl-careplane revisions wales-111
k get henv wales-111 -o jsonpath='ServingFromStandby: {.status.conditions[?(@.type=="ServingFromStandby")].message}{"\n"}'
echo "(traffic returns to the rebuilt primary once it has been Ready for the hold; evidence pods stay isolated until purged)"

say "Care records keep their records: yorkshire-care-records' document store writes to a durable volume"
pvc=records-document-store-0
pns=yorkshire-care-records-primary
datadir() { # the directory where the local cluster's CSI driver keeps a claim's bytes
	local pv
	pv=$(k get pvc -n $pns "$1" -o jsonpath='{.spec.volumeName}')
	k get pv "$pv" -o jsonpath='{.spec.csi.volumeAttributes.csi\.careplane\.io/data-dir}'
}
dir=$(datadir $pvc)
echo "(the local cluster's CSI driver keeps each volume in a directory on this machine: $dir; here the demo writes the records the document store would)"
mkdir -p "$dir/patients"
echo '{"nhsNumber":"9434765919","allergies":["penicillin"]}' >"$dir/patients/9434765919.json"
run cat "$dir/patients/9434765919.json"
# The sample takes a recovery point every 15 minutes; for the demo, every 20 s.
run k patch henv yorkshire-care-records --type=merge -p '{"spec":{"recovery":{"interval":"20s"}}}'
written=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf 'waiting for a clean recovery point taken after %s ' "$written"
for i in $(seq 60); do
	newest=$(k get henv yorkshire-care-records -o jsonpath='{range .status.recovery.points[?(@.clean==true)]}{.takenAt} {.ready}{"\n"}{end}' | awk '$2 == "true"' | sort | tail -1 | cut -d' ' -f1)
	[[ -n $newest && $newest > $written ]] && break
	printf .
	sleep 2
done
echo
run kubectl-careplane recovery-points yorkshire-care-records

say "Ransomware encrypts the records; a responder fences yorkshire-care-records"
echo 'x8f1b... encrypted' >"$dir/patients/9434765919.json"
echo 'pay 5 BTC to get your records back' >"$dir/README-RESTORE-FILES.txt"
run ls "$dir" "$dir/patients"
run kubectl-careplane "${responder[@]}" fence yorkshire-care-records --reason "records encrypted" --ticket INC-2042
k get henv yorkshire-care-records -o jsonpath='EvidenceSnapshots: {.status.conditions[?(@.type=="EvidenceSnapshots")].message}{"\n"}'

say "Restoring yorkshire-care-records from the newest clean recovery point before the fence"
run kubectl-careplane "${responder[@]}" restore yorkshire-care-records --dry-run
run kubectl-careplane "${responder[@]}" restore yorkshire-care-records
gen=$(k get ns $pns -o jsonpath='{.metadata.annotations.careplane\.io/data-generation}')
restored=$(datadir "records-document-store-$gen-0")
echo "(the document store now runs on a new claim, records-document-store-$gen-0, made from the point's snapshot)"
run cat "$restored/patients/9434765919.json"
run k get pvc -n $pns -L careplane.io/evidence
echo "(the encrypted claim is kept as evidence, with what the attacker left: $(ls "$dir" | tr '\n' ' '))"
k get henv yorkshire-care-records -o jsonpath='{range .status.incidents[*]}incident {.ticket}: restored from recovery point {.recoveryPoint} taken {.recoveryPointTakenAt}; data time lost {.dataLost}{"\n"}{end}'

cat <<EOF

Everything keeps running. To explore:

  export KUBECONFIG=$KUBECONFIG
  export PATH=$root/bin:$bin:\$PATH
  kubectl careplane status            # (kubectl finds bin/kubectl-careplane on PATH)
  kubectl get henv -w
  kubectl describe henv wales-111
  kubectl explain henv.spec.isolation
  kubectl label henv north-east-111 south-west-111 drill=yes
  kubectl careplane ${responder[*]} fence --selector drill=yes --reason drill   # the fleet case
  kubectl careplane ${responder[*]} purge-evidence wales-111 --dry-run
  kubectl careplane recovery-points yorkshire-care-records
  tail -f $KWOK_WORKDIR/$name-manager.log

To tear everything down:

  make cluster-down
EOF
