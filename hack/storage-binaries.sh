#!/usr/bin/env bash
# Builds the local cluster's storage control plane from the Go module proxy:
# snapshot-controller and csi-snapshotter (external-snapshotter),
# csi-provisioner (external-provisioner) and csi-resizer (external-resizer),
# pinned in hack/tools/storage/go.mod;
# the test CSI driver careplane-csi (hack/csi-driver); and copies the
# VolumeSnapshot CRDs (snapshot.storage.k8s.io/v1) out of the pinned
# external-snapshotter client module into OUTDIR/crds.
#
# Usage: hack/storage-binaries.sh OUTDIR
#
# A no-op when OUTDIR already holds binaries built from the same inputs: the
# stamp file records a hash of the pins, of the driver's sources and of this
# script. Built binaries are also kept in a machine-wide cache
# (CAREPLANE_CACHE, default ~/.cache/careplane/storage-binaries/<hash>), so a
# fresh clone on the same machine copies them instead of linking again.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

tools="$root/hack/tools/storage"
driver="$root/hack/csi-driver"
stamp="$out/.stamp"
# The driver's non-test sources, in a stable order, so that editing the
# driver rebuilds it and editing its tests does not.
driver_sources() {
	(cd "$driver" && find . -name '*.go' ! -name '*_test.go' -o -name go.mod -o -name go.sum) | LC_ALL=C sort
}
want=$( {
	cat "$0" "$tools/go.mod" "$tools/go.sum"
	driver_sources | while read -r f; do echo "$f"; cat "$driver/$f"; done
} | sha256sum | cut -d' ' -f1)
bins=(snapshot-controller csi-snapshotter csi-provisioner csi-resizer careplane-csi)
crds=(volumesnapshotclasses volumesnapshotcontents volumesnapshots)

have_all() {
	local b
	for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done
	for b in "${crds[@]}"; do [ -f "$out/crds/snapshot.storage.k8s.io_$b.yaml" ] || return 1; done
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && have_all; then
	echo "storage binaries: up to date in $out"
	exit 0
fi
cache=${CAREPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/careplane}/storage-binaries/$want
if [ -f "$cache/.stamp" ]; then
	cp -pR "$cache"/. "$out"/
	if have_all; then
		echo "storage binaries: copied from the cache $cache"
		exit 0
	fi
fi

# The same flags as hack/cluster-binaries.sh, so that the Kubernetes
# libraries both builds share come from the Go build cache.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
log() { printf '%s storage binaries: %s\n' "$(date +%H:%M:%S)" "$*"; }
pin() { awk -v m="$1" '$1==m {print $2} $1=="require" && $2==m {print $3}' "$tools/go.mod" | head -1; }

snapver=$(pin github.com/kubernetes-csi/external-snapshotter/v8)
provver=$(pin github.com/kubernetes-csi/external-provisioner/v6)
resizever=$(pin github.com/kubernetes-csi/external-resizer/v2)
clientver=$(pin github.com/kubernetes-csi/external-snapshotter/client/v8)
for v in snapver provver resizever clientver; do
	[ -n "${!v}" ] || { echo "cannot read the pin $v from $tools/go.mod" >&2; exit 1; }
done

started=$(date +%s)
log "building the storage control plane into $out (external-snapshotter $snapver, external-provisioner $provver, external-resizer $resizever; a cold build takes several minutes on 2 cores)"
for cmd in snapshot-controller csi-snapshotter; do
	log "go build $cmd $snapver"
	(cd "$tools" && go build -trimpath -ldflags "-s -w -X main.version=$snapver" -o "$out/$cmd" \
		"github.com/kubernetes-csi/external-snapshotter/v8/cmd/$cmd")
done
log "go build csi-provisioner $provver"
(cd "$tools" && go build -trimpath -ldflags "-s -w -X main.version=$provver" -o "$out/csi-provisioner" \
	"github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner")
log "go build csi-resizer $resizever"
(cd "$tools" && go build -trimpath -ldflags "-s -w -X main.version=$resizever" -o "$out/csi-resizer" \
	"github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer")
log "go build careplane-csi"
(cd "$driver" && go build -trimpath -ldflags "-s -w" -o "$out/careplane-csi" ./cmd/careplane-csi)

# The CRDs come from the client module of the pinned release, as upstream
# installs them (client/config/crd); only the snapshot.storage.k8s.io ones:
# the driver has no group snapshots.
clientdir=$(cd "$tools" && go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$clientver" |
	awk -F'"' '$2=="Dir" {print $4}')
[ -d "$clientdir/config/crd" ] || { echo "no config/crd in the external-snapshotter client module ($clientdir)" >&2; exit 1; }
mkdir -p "$out/crds"
rm -f "$out"/crds/*.yaml
for c in "${crds[@]}"; do
	install -m 0644 "$clientdir/config/crd/snapshot.storage.k8s.io_$c.yaml" "$out/crds/"
done

echo "$want" >"$stamp"
log "done in $(($(date +%s) - started))s: $(cd "$out" && echo "${bins[@]}") and ${#crds[@]} CRDs"
# Keep a copy for other clones on this machine; a failure here is harmless.
if mkdir -p "$cache.tmp.$$/crds" 2>/dev/null && cp -p "${bins[@]/#/$out/}" "$cache.tmp.$$"/ &&
	cp -p "$out"/crds/*.yaml "$cache.tmp.$$/crds/" && cp "$stamp" "$cache.tmp.$$/.stamp"; then
	rm -rf "$cache" && mv "$cache.tmp.$$" "$cache" || rm -rf "$cache.tmp.$$"
else
	rm -rf "$cache.tmp.$$"
fi
