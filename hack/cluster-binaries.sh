#!/usr/bin/env bash
# Builds the local Kubernetes control plane from the Go module proxy:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (Kubernetes
# pinned in hack/tools/k8s/go.mod), etcd (hack/tools/etcd) and kwok/kwokctl
# (hack/tools/kwok). No Docker and no binary downloads are needed.
#
# Usage: hack/cluster-binaries.sh OUTDIR
#
# A no-op when OUTDIR already holds binaries built from the same pins: the
# stamp file records a hash of the three go.mod/go.sum pairs and of this script.
# Built binaries are also kept in a machine-wide cache
# (CAREPLANE_CACHE, default ~/.cache/careplane/cluster-binaries/<hash>), so a
# fresh clone on the same machine copies them instead of linking again.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

tools="$root/hack/tools"
stamp="$out/.stamp"
want=$(cat "$0" "$tools"/k8s/go.mod "$tools"/k8s/go.sum "$tools"/etcd/go.mod "$tools"/etcd/go.sum \
	"$tools"/kwok/go.mod "$tools"/kwok/go.sum | sha256sum | cut -d' ' -f1)
bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok kwokctl)

have_all() {
	local b
	for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && have_all; then
	echo "cluster binaries: up to date in $out"
	exit 0
fi
cache=${CAREPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/careplane}/cluster-binaries/$want
if [ -f "$cache/.stamp" ]; then
	cp -p "$cache"/* "$out"/ && cp "$cache/.stamp" "$stamp"
	if have_all; then
		echo "cluster binaries: copied from the cache $cache"
		exit 0
	fi
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
log() { printf '%s cluster binaries: %s\n' "$(date +%H:%M:%S)" "$*"; }

# The Kubernetes version comes from the pin, so the binaries report it
# instead of v0.0.0-master.
kver=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$tools/k8s/go.mod")
[ -n "$kver" ] || { echo "cannot read the k8s.io/kubernetes pin from $tools/k8s/go.mod" >&2; exit 1; }
major=${kver#v}; major=${major%%.*}
minor=${kver#v*.}; minor=${minor%%.*}
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$kver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
done

started=$(date +%s)
log "building Kubernetes $kver control plane into $out (a cold build takes about ten minutes on 2 cores; the Go build cache makes later builds take seconds)"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
	log "go build $cmd"
	(cd "$tools/k8s" && go build -trimpath -ldflags "$ldflags" -o "$out/$cmd" "k8s.io/kubernetes/cmd/$cmd")
done
etcdver=$(awk '$1=="require" && $2=="go.etcd.io/etcd/server/v3" {print $3}' "$tools/etcd/go.mod")
log "go build etcd $etcdver"
(cd "$tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
kwokver=$(awk '$1=="require" && $2=="sigs.k8s.io/kwok" {print $3}' "$tools/kwok/go.mod")
for cmd in kwok kwokctl; do
	log "go build $cmd $kwokver"
	(cd "$tools/kwok" && go build -trimpath \
		-ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$kwokver -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$kver" \
		-o "$out/$cmd" "sigs.k8s.io/kwok/cmd/$cmd")
done
echo "$want" >"$stamp"
log "done in $(($(date +%s) - started))s: $(cd "$out" && echo "${bins[@]}")"
# Keep a copy for other clones on this machine; a failure here is harmless.
if mkdir -p "$cache.tmp.$$" 2>/dev/null && cp -p "${bins[@]/#/$out/}" "$cache.tmp.$$"/ && cp "$stamp" "$cache.tmp.$$/.stamp"; then
	rm -rf "$cache" && mv "$cache.tmp.$$" "$cache" || rm -rf "$cache.tmp.$$"
else
	rm -rf "$cache.tmp.$$"
fi
