#!/usr/bin/env bash
# Runs a command against a fresh kwok cluster and deletes the cluster after,
# whatever the command's result (set KEEP_CLUSTER=true to keep it for
# debugging).
#
# Usage: hack/e2e.sh NAME COMMAND [ARGS...]
# The command gets KUBECONFIG pointing at the cluster and K8S_BIN at the
# control-plane binaries.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:?usage: $0 NAME COMMAND...}
shift
export K8S_BIN=${K8S_BIN:-$root/bin/k8s}
export KWOK_WORKDIR=${KWOK_WORKDIR:-$root/.kwok}

cleanup() {
	if [ "${KEEP_CLUSTER:-false}" = true ]; then
		echo "keeping cluster $name: export KUBECONFIG=$("$root/hack/cluster.sh" kubeconfig "$name")" >&2
	else
		"$root/hack/cluster.sh" down "$name"
	fi
}
# A fresh cluster every run: never test against leftovers of an earlier run.
"$root/hack/cluster.sh" down "$name"
trap cleanup EXIT
"$root/hack/cluster.sh" up "$name"
KUBECONFIG=$("$root/hack/cluster.sh" kubeconfig "$name")
export KUBECONFIG
"$@"
