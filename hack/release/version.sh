#!/usr/bin/env bash
# Prints the version that `make release-snapshot` stamps on every artefact
# (the manager's and the plugin's version, the image tag, the chart's version
# and appVersion), from the Makefile's VERSION (git describe --tags --always
# --dirty): a tag vX.Y.Z[-pre] as it is, and anything else as the snapshot
# v0.0.0-snapshot.g<VERSION>. Helm and OCI need a SemVer version; the g keeps
# an all-digit commit id from being a number with a leading zero, which
# SemVer forbids.
set -euo pipefail
version=${1:?usage: version.sh VERSION}
if [[ $version =~ ^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$ ]]; then
	echo "$version"
else
	echo "v0.0.0-snapshot.g${version}"
fi
