#!/usr/bin/env bash
# Checks the archive `make image` wrote, under every tag it carries: skopeo
# reads each name through both transports (oci-archive: and docker-archive:),
# umoci unpacks the static binary under each name, podman loads the archive
# with every tag and runs `imgbuild --help` as the README shows it
# (`podman run --rm imgbuild:latest --help`) and `--version` under each tag.
# usage: scripts/check-image.sh [dist/imgbuild.oci.tar]
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHIVE=${1:-dist/imgbuild.oci.tar}
TAGS=(imgbuild:0.1.0 imgbuild:latest)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Podman's default ulimits need CAP_SYS_RESOURCE, which CI machines lack.
export CONTAINERS_CONF=$PWD/tests/fixtures/containers.conf

mkdir "$WORK/layout"
tar -xf "$ARCHIVE" -C "$WORK/layout"
for t in "${TAGS[@]}"; do
  skopeo inspect "oci-archive:$ARCHIVE:docker.io/library/$t" >/dev/null
  skopeo inspect "docker-archive:$ARCHIVE:$t" >/dev/null
  umoci unpack --image "$WORK/layout:docker.io/library/$t" "$WORK/bundle-${t#*:}" >/dev/null
  test -x "$WORK/bundle-${t#*:}/rootfs/usr/local/bin/imgbuild"
  test -f "$WORK/bundle-${t#*:}/rootfs/usr/share/doc/imgbuild/README.md"
done

P="podman --root $WORK/podman/root --runroot $WORK/podman/run --storage-driver vfs"
loaded=$($P load -i "$ARCHIVE" 2>/dev/null)
for t in "${TAGS[@]}"; do
  grep -qx "Loaded image: localhost/$t" <<<"$loaded" || {
    echo "check-image: podman load did not name $t:"$'\n'"$loaded" >&2
    exit 1
  }
  version=$($P run --rm --network none "$t" --version)
done
$P run --rm --network none imgbuild:latest --help | grep -q '^Usage: imgbuild'
$P rmi -a -f >/dev/null 2>&1 || true
echo "check-image: $ARCHIVE ok under ${TAGS[*]} ($version)"
