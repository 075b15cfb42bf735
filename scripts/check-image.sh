#!/usr/bin/env bash
# Checks the archive `make image` wrote: skopeo reads it, umoci unpacks the
# static binary, podman loads it and runs `imgbuild --version` inside it.
# usage: scripts/check-image.sh [dist/imgbuild.oci.tar]
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHIVE=${1:-dist/imgbuild.oci.tar}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export CONTAINERS_CONF=$PWD/tests/fixtures/containers.conf

skopeo inspect "oci-archive:$ARCHIVE" >/dev/null
skopeo copy -q "oci-archive:$ARCHIVE" "oci:$WORK/layout:img"
umoci unpack --image "$WORK/layout:img" "$WORK/bundle" >/dev/null
test -x "$WORK/bundle/rootfs/usr/local/bin/imgbuild"
test -f "$WORK/bundle/rootfs/usr/share/doc/imgbuild/README.md"

P="podman --root $WORK/podman/root --runroot $WORK/podman/run --storage-driver vfs"
$P load -q -i "$ARCHIVE" >/dev/null
version=$($P run --rm --network none imgbuild:0.1.0 --version)
$P rmi -a -f >/dev/null 2>&1 || true
echo "check-image: $ARCHIVE ok ($version)"
