#!/usr/bin/env bash
# Starts and stops a local kwok cluster built from the binaries in bin/k8s:
# a real etcd, kube-apiserver (RBAC, admission: Pod Security and
# ValidatingAdmissionPolicy enforced), kube-controller-manager and
# kube-scheduler, with simulated nodes on which pods are scheduled and become
# Ready without running a process; and beside it the real storage control
# plane (csi-provisioner, csi-resizer, csi-snapshotter and
# snapshot-controller as processes, the VolumeSnapshot CRDs) serving the
# test CSI driver careplane-csi, whose volumes are directories under the
# cluster's workdir.
#
# Usage:
#   hack/cluster.sh up NAME     start NAME (reuse it when it is already healthy)
#   hack/cluster.sh down NAME   stop and delete NAME
#   hack/cluster.sh kubeconfig NAME
#   hack/cluster.sh stop-manager NAME   stop a manager hack/demo.sh started
#   hack/cluster.sh storage-up NAME     (re)start NAME's storage control plane
#   hack/cluster.sh storage-down NAME   stop it (the driver's data stays)
#
# Environment:
#   KWOK_WORKDIR   where clusters live (default: .kwok in the repository); the
#                  kubeconfig is written to $KWOK_WORKDIR/NAME.kubeconfig
#   NODES          simulated worker nodes in the "primary" pool (default 3);
#                  one more node is always added in the "standby" pool
#   DISABLE_QPS_LIMITS=true  lift the control plane's client rate limits,
#                  and the storage processes' (for benchmarks)
#   SERVICE_CIDR   the Service address range (default kwokctl's, 254
#                  addresses; the benchmark uses 10.0.0.0/16)
#   CONTROLLER_SA_CREDENTIALS=false  run kube-controller-manager's
#                  controllers as kwok-admin instead of each as its own
#                  ServiceAccount (kube-system/<controller>)
#   KUBE_AUDIT_POLICY  an audit policy file for kube-apiserver; the log is
#                  $KWOK_WORKDIR/clusters/NAME/logs/audit.log
#   CLUSTER_STORAGE=0  start no storage control plane (no StorageClass, no
#                  VolumeSnapshot CRDs)
#   STORAGE_BIN    the storage binaries and CRDs (default bin/storage, built
#                  by hack/storage-binaries.sh)
#
# Works as root and as a normal user: everything lives under KWOK_WORKDIR and
# every port is picked free by kwokctl, so clusters with different names run
# side by side and a second `up` of the same name reuses or replaces it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${K8S_BIN:-$root/bin/k8s}
storage_bin=${STORAGE_BIN:-$root/bin/storage}
export KWOK_WORKDIR=${KWOK_WORKDIR:-$root/.kwok}
export KWOK_KUBECTL_BINARY=$bin/kubectl
cmd=${1:?usage: $0 up|down|kubeconfig NAME}
name=${2:?usage: $0 up|down|kubeconfig NAME}
kubeconfig=$KWOK_WORKDIR/$name.kubeconfig
nodes=${NODES:-3}
# The storage control plane's processes, logs, pid files and the driver's
# volumes live beside kwokctl's components, so deleting the cluster deletes
# them.
storage_dir=$KWOK_WORKDIR/clusters/$name/storage
storage_procs=(careplane-csi csi-provisioner csi-resizer csi-snapshotter snapshot-controller)

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
	stop_storage
	# The demo's manager kubeconfig holds a ServiceAccount token: it goes
	# with the cluster.
	rm -f "$KWOK_WORKDIR/$name-manager.kubeconfig" "$KWOK_WORKDIR/$name-manager.log"
	if exists; then
		log "deleting"
		"$bin/kwokctl" delete cluster --name "$name" --kubeconfig "$kubeconfig" >&2 || true
	fi
	rm -f "$kubeconfig"
}

# pid_of NAME prints the pid of the storage process NAME when it is still
# the binary we started (a recycled pid is not ours). Its pid file holds the
# pid and the binary, as /proc names it: every symbolic link resolved, and
# "(deleted)" once the file was rebuilt.
pid_of() {
	local pid exe
	[ -f "$storage_dir/$1.pid" ] && read -r pid exe <"$storage_dir/$1.pid" || return 1
	case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in
	"$exe" | "$exe (deleted)") echo "$pid" ;;
	*) return 1 ;;
	esac
}

storage_running() {
	local p
	for p in "${storage_procs[@]}"; do pid_of "$p" >/dev/null || return 1; done
}

stop_storage() {
	local p pid pids=()
	for p in "${storage_procs[@]}"; do
		if pid=$(pid_of "$p"); then
			kill "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
		rm -f "$storage_dir/$p.pid"
	done
	# Each exits on SIGTERM, usually within a second or two; whatever is
	# still there after 5s is killed.
	for _ in $(seq 50); do
		[ "${#pids[@]}" -eq 0 ] && break
		local alive=()
		for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
		pids=("${alive[@]}")
		[ "${#pids[@]}" -eq 0 ] || sleep 0.1
	done
	[ "${#pids[@]}" -eq 0 ] || kill -9 "${pids[@]}" 2>/dev/null || true
	if [ -f "$storage_dir/socket-dir" ]; then
		rm -rf "$(cat "$storage_dir/socket-dir")" "$storage_dir/socket-dir"
	fi
}

# start_proc NAME ARGS... runs storage binary NAME in its own session (like
# kwokctl's components, it outlives this script and a Ctrl-C of make), with
# its log in the storage directory (appended to, so that a restart keeps the
# log of the run before).
start_proc() {
	local p=$1
	shift
	echo "--- $(date -u +%FT%TZ) starting $storage_bin/$p $*" >>"$storage_dir/$p.log"
	setsid "$storage_bin/$p" "$@" >>"$storage_dir/$p.log" 2>&1 </dev/null &
	local pid=$!
	echo "$pid $(readlink -f "$storage_bin/$p")" >"$storage_dir/$p.pid"
	# Until its exec, the pid is a shell's, which pid_of does not own.
	for _ in $(seq 50); do
		pid_of "$p" >/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.05
	done
}

# storage_fail names what did not come up, with the end of its log.
storage_fail() {
	local p
	log "storage control plane: $1"
	for p in "${storage_procs[@]}"; do
		if [ -f "$storage_dir/$p.pid" ] && ! pid_of "$p" >/dev/null; then
			log "$p exited; the end of its last run in $storage_dir/$p.log:"
			awk '/^--- .* starting /{n=0} {line[n++]=$0} END{for (i=(n>15?n-15:0); i<n; i++) print line[i]}' \
				"$storage_dir/$p.log" >&2 2>/dev/null || true
		fi
	done
	log "logs: $storage_dir/*.log (CLUSTER_STORAGE=0 starts the cluster without storage)"
	exit 1
}

start_storage() {
	local k=("$bin/kubectl" --kubeconfig "$kubeconfig") p c
	for p in "${storage_procs[@]}"; do
		[ -x "$storage_bin/$p" ] || {
			log "no $storage_bin/$p: run 'make storage-binaries' (hack/storage-binaries.sh $storage_bin), or CLUSTER_STORAGE=0 to start without storage"
			exit 1
		}
	done
	stop_storage
	mkdir -p "$storage_dir/data"
	# A unix socket path holds at most 107 bytes: a deep workdir gets its
	# socket in a short temporary directory instead.
	local sock=$storage_dir/csi.sock
	if [ "${#sock}" -gt 100 ]; then
		local sockdir
		sockdir=$(mktemp -d "${TMPDIR:-/tmp}/careplane-csi.XXXXXX")
		echo "$sockdir" >"$storage_dir/socket-dir"
		sock=$sockdir/csi.sock
	fi
	rm -f "$sock"
	log "starting the storage control plane (logs in $storage_dir)"
	"${k[@]}" apply --server-side -f "$storage_bin/crds" >&2
	local crds=()
	for c in "$storage_bin"/crds/*.yaml; do crds+=("crd/$(basename "$c" .yaml | sed 's/^\([^_]*\)_\(.*\)$/\2.\1/')"); done
	"${k[@]}" wait --for condition=established --timeout=60s "${crds[@]}" >&2
	"${k[@]}" apply -f "$root/hack/storage/classes.yaml" >&2

	start_proc careplane-csi --endpoint "unix://$sock" --root "$storage_dir/data" --node-id "$name"
	for _ in $(seq 100); do
		[ -S "$sock" ] && break
		pid_of careplane-csi >/dev/null || break
		sleep 0.1
	done
	[ -S "$sock" ] || storage_fail "careplane-csi did not open $sock"
	# Group snapshots are off in the snapshotter and its controller: the
	# driver has none, and with the gate on each waits 30s for their CRDs
	# before going on without them.
	# Their client rate limits (5 QPS by default) are lifted with the
	# control plane's, for benchmarks.
	local common=(--kubeconfig "$kubeconfig" --leader-election=false)
	[ "${DISABLE_QPS_LIMITS:-false}" = true ] && common+=(--kube-api-qps=1000 --kube-api-burst=2000)
	start_proc csi-provisioner "${common[@]}" --csi-address "$sock" --timeout 30s
	start_proc csi-resizer "${common[@]}" --csi-address "$sock"
	start_proc csi-snapshotter "${common[@]}" --csi-address "$sock" \
		--feature-gates=CSIVolumeGroupSnapshot=false --timeout 30s
	start_proc snapshot-controller "${common[@]}" --feature-gates=CSIVolumeGroupSnapshot=false
	storage_check
}

# storage_wait OBJECT JSONPATH=VALUE WHAT waits up to 60s for an object of
# the check namespace (check_ns), and fails as soon as a storage process has
# exited.
storage_wait() {
	local i
	for i in $(seq 60); do
		"$bin/kubectl" --kubeconfig "$kubeconfig" -n "$check_ns" wait "$1" \
			--for=jsonpath="$2" --timeout=1s >/dev/null 2>&1 && return 0
		storage_running || storage_fail "a process exited while waiting for $3"
		sleep 0.2 # a missing object makes kubectl wait fail at once
	done
	storage_fail "$3 did not happen within 60s (see namespace $check_ns)"
}

# storage_check proves the storage control plane serves the classes: a
# claim binds once a pod uses it (kube-scheduler's volume binding,
# csi-provisioner, the PV controller) and a snapshot of it becomes ready
# (snapshot-controller, csi-snapshotter), in a namespace deleted after.
storage_check() {
	# A namespace of its own: an earlier check's may still be terminating.
	local k=("$bin/kubectl" --kubeconfig "$kubeconfig") ns
	ns=careplane-storage-check-$(date +%s)
	check_ns=$ns
	"${k[@]}" apply -f - >&2 <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $ns
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: check
  namespace: $ns
spec:
  storageClassName: careplane-csi
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Mi}}
EOF
	# A pod needs its namespace's default ServiceAccount, which the
	# control plane creates a moment after the namespace.
	storage_wait serviceaccount/default '{.metadata.name}'=default "the default ServiceAccount of $ns"
	"${k[@]}" apply -f - >&2 <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: check
  namespace: $ns
spec:
  containers: [{name: check, image: check, volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: check}}]
EOF
	storage_wait pvc/check '{.status.phase}'=Bound "a claim of StorageClass careplane-csi to bind"
	"${k[@]}" apply -f - >&2 <<EOF
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: check
  namespace: $ns
spec:
  volumeSnapshotClassName: careplane-csi
  source: {persistentVolumeClaimName: check}
EOF
	storage_wait volumesnapshot/check '{.status.readyToUse}'=true "a VolumeSnapshot of class careplane-csi to be ready"
	"${k[@]}" delete namespace "$ns" --wait=false >&2
	log "storage control plane ready: StorageClass and VolumeSnapshotClass careplane-csi (driver csi.careplane.io)"
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
		if [ "${CLUSTER_STORAGE:-1}" != 0 ] && ! storage_running; then
			log "running, but not its storage control plane"
			start_storage
		fi
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
	if [ "${CLUSTER_STORAGE:-1}" != 0 ]; then
		start_storage
	fi
	log "ready; kubeconfig $kubeconfig"
}

case "$cmd" in
up) up ;;
down) down ;;
kubeconfig) echo "$kubeconfig" ;;
stop-manager) stop_manager ;;
storage-up) start_storage ;;
storage-down) stop_storage ;;
*)
	echo "usage: $0 up|down|kubeconfig|stop-manager|storage-up|storage-down NAME" >&2
	exit 2
	;;
esac
