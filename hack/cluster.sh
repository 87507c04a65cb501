#!/usr/bin/env bash
# Starts and stops a local kwok cluster built from the binaries in bin/k8s:
# a real etcd, kube-apiserver (RBAC, admission: Pod Security and
# ValidatingAdmissionPolicy enforced), kube-controller-manager and
# kube-scheduler, with simulated nodes on which pods are scheduled and become
# Ready without running a process.
#
# Usage:
#   hack/cluster.sh up NAME     start NAME (reuse it when it is already healthy)
#   hack/cluster.sh down NAME   stop and delete NAME
#   hack/cluster.sh kubeconfig NAME
#   hack/cluster.sh stop-manager NAME   stop a manager hack/demo.sh started
#
# Environment:
#   KWOK_WORKDIR   where clusters live (default: .kwok in the repository); the
#                  kubeconfig is written to $KWOK_WORKDIR/NAME.kubeconfig
#   NODES          simulated worker nodes in the "primary" pool (default 3);
#                  one more node is always added in the "standby" pool
#   DISABLE_QPS_LIMITS=true  lift the control plane's client rate limits
#                  (for benchmarks)
#   SERVICE_CIDR   the Service address range (default kwokctl's, 254
#                  addresses; the benchmark uses 10.0.0.0/16)
#   CONTROLLER_SA_CREDENTIALS=false  run kube-controller-manager's
#                  controllers as kwok-admin instead of each as its own
#                  ServiceAccount (kube-system/<controller>)
#   KUBE_AUDIT_POLICY  an audit policy file for kube-apiserver; the log is
#                  $KWOK_WORKDIR/clusters/NAME/logs/audit.log
#
# Works as root and as a normal user: everything lives under KWOK_WORKDIR and
# every port is picked free by kwokctl, so clusters with different names run
# side by side and a second `up` of the same name reuses or replaces it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${K8S_BIN:-$root/bin/k8s}
export KWOK_WORKDIR=${KWOK_WORKDIR:-$root/.kwok}
export KWOK_KUBECTL_BINARY=$bin/kubectl
cmd=${1:?usage: $0 up|down|kubeconfig NAME}
name=${2:?usage: $0 up|down|kubeconfig NAME}
kubeconfig=$KWOK_WORKDIR/$name.kubeconfig
nodes=${NODES:-3}

log() { printf '%s cluster %s: %s\n' "$(date +%H:%M:%S)" "$name" "$*" >&2; }

exists() { "$bin/kwokctl" get clusters 2>/dev/null | grep -qx "$name"; }
healthy() {
	[ -f "$kubeconfig" ] && "$bin/kubectl" --kubeconfig "$kubeconfig" --request-timeout=5s get --raw=/readyz >/dev/null 2>&1
}

# stop_manager stops the manager hack/demo.sh runs against this cluster.
stop_manager() {
	local pidfile=$KWOK_WORKDIR/$name-manager.pid
	if [ -f "$pidfile" ]; then
		kill "$(cat "$pidfile")" 2>/dev/null || true
		rm -f "$pidfile"
	fi
}

down() {
	stop_manager
	# The demo's manager kubeconfig holds a ServiceAccount token: it goes
	# with the cluster.
	rm -f "$KWOK_WORKDIR/$name-manager.kubeconfig" "$KWOK_WORKDIR/$name-manager.log"
	if exists; then
		log "deleting"
		"$bin/kwokctl" delete cluster --name "$name" --kubeconfig "$kubeconfig" >&2 || true
	fi
	rm -f "$kubeconfig"
}

nodes_yaml() {
	local i pool
	for i in $(seq 0 "$nodes"); do
		pool=primary
		[ "$i" -eq "$nodes" ] && pool=standby
		cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-$pool-$i
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: kwok-$pool-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    type: kwok
    careplane.io/pool: $pool
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "250"}
  capacity: {cpu: "64", memory: 256Gi, pods: "250"}
---
EOF
	done
}

up() {
	if healthy; then
		log "already running (kubeconfig $kubeconfig)"
		return 0
	fi
	down
	mkdir -p "$KWOK_WORKDIR"
	local extra=()
	[ "${DISABLE_QPS_LIMITS:-false}" = true ] && extra+=(--disable-qps-limits)
	# kwokctl's Service range holds 254 addresses: the benchmark's thousands
	# of Services need more (a superset, so the kubernetes Service keeps
	# its address).
	[ -n "${SERVICE_CIDR:-}" ] && extra+=(--extra-args "kube-apiserver=service-cluster-ip-range=$SERVICE_CIDR")
	# Each of kube-controller-manager's controllers acts as its own
	# ServiceAccount, as on kubeadm and managed clusters: the guardrails'
	# fenced-namespace freeze names exactly the controllers a fenced site
	# needs, and the e2e tests prove that list with the real identities.
	[ "${CONTROLLER_SA_CREDENTIALS:-true}" = true ] &&
		extra+=(--extra-args "kube-controller-manager=use-service-account-credentials=true")
	[ -n "${KUBE_AUDIT_POLICY:-}" ] && extra+=(--kube-audit-policy "$KUBE_AUDIT_POLICY")
	log "creating with the binaries in $bin"
	"$bin/kwokctl" create cluster --name "$name" --runtime binary \
		--kubeconfig "$kubeconfig" \
		--kube-apiserver-binary "$bin/kube-apiserver" \
		--kube-controller-manager-binary "$bin/kube-controller-manager" \
		--kube-scheduler-binary "$bin/kube-scheduler" \
		--kwok-controller-binary "$bin/kwok" \
		--etcd-binary "$bin/etcd" \
		--kube-authorization=true --kube-admission=true \
		--timeout 5m --wait 2m "${extra[@]}" >&2
	log "adding $nodes primary nodes and 1 standby node"
	nodes_yaml | "$bin/kubectl" --kubeconfig "$kubeconfig" apply -f - >&2
	"$bin/kubectl" --kubeconfig "$kubeconfig" wait --for=condition=Ready node --all --timeout=120s >&2
	# Namespaces the tests and samples use as allowFrom and forensics peers.
	for ns in gateway forensics; do
		"$bin/kubectl" --kubeconfig "$kubeconfig" create namespace "$ns" --dry-run=client -o yaml |
			"$bin/kubectl" --kubeconfig "$kubeconfig" apply -f - >&2
	done
	log "ready; kubeconfig $kubeconfig"
}

case "$cmd" in
up) up ;;
down) down ;;
kubeconfig) echo "$kubeconfig" ;;
stop-manager) stop_manager ;;
*)
	echo "usage: $0 up|down|kubeconfig|stop-manager NAME" >&2
	exit 2
	;;
esac
