#!/usr/bin/env bash
# Builds the image the chart's embedded Redis runs (redis.embedded.image, `redis:7`), for the
# single-node cluster of test/e2e, where no registry can be pulled from. It is Debian bookworm's
# redis-server and redis-cli on the base image scripts/build-image.sh already built and cached
# (the Debian bookworm slim stand-in), with the official image's conventions: WORKDIR /data, and
# an entrypoint that runs redis-server when the arguments start with "-" (the chart passes only
# arguments), so the chart's pod spec runs it unchanged.
#
#   scripts/build-redis-image.sh [OUT]     OUT defaults to dist-image/redis.oci.tar
#
# Needs root, buildah, and the base from a previous scripts/build-image.sh run. Reuses OUT when
# it is newer than this script and the base. Environment: SWITCHBOARD_IMAGE_CACHE as for
# build-image.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/dist-image/redis.oci.tar}
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac
CACHE=${SWITCHBOARD_IMAGE_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/switchboard-image}
TAG=7 # what the chart's redis.embedded.image.tag asks for; the content is Debian's redis 7.0

log() { printf '%s build-redis-image: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (buildah's chroot isolation)"
command -v buildah >/dev/null || die "buildah not found (apt-get install -y buildah)"
# shellcheck disable=SC2012
BASE_ARCHIVE=$(ls -t "$CACHE"/base-*.oci.tar 2>/dev/null | head -n1 || true)
[ -n "$BASE_ARCHIVE" ] || die "no base image in $CACHE: run scripts/build-image.sh first"
if [ -f "$OUT" ] && [ "$OUT" -nt "$0" ] && [ "$OUT" -nt "$BASE_ARCHIVE" ]; then
  log "up to date: $OUT"
  exit 0
fi

mkdir -p "$(dirname "$OUT")"
BUILDAH=(buildah --root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver vfs)
export BUILDAH_ISOLATION=chroot
exec 9>"$CACHE/lock"
flock 9 # shares the store with build-image.sh

c=""
cleanup() { [ -z "$c" ] || "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1 || true; }
trap cleanup EXIT

log "from $BASE_ARCHIVE"
c=$("${BUILDAH[@]}" from --quiet --pull=never "oci-archive:$BASE_ARCHIVE")
"${BUILDAH[@]}" run --isolation chroot "$c" -- sh -ec '
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends redis-server redis-tools >/dev/null
  rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log /etc/redis/redis.conf.dpkg-*
  # Not needed to run Redis (the base carries them for Switchboard).
  rm -rf /usr/local/bin/node /usr/local/bin/npm /usr/local/bin/npx /usr/local/lib/node_modules
  mkdir -p /data && chmod 1777 /data
  printf "%s\n" "#!/bin/sh" "set -e" \
    "# As the official image: arguments alone (or a .conf) run redis-server with them." \
    "if [ \"\${1#-}\" != \"\$1\" ] || [ \"\${1%.conf}\" != \"\$1\" ]; then set -- redis-server \"\$@\"; fi" \
    "exec \"\$@\"" >/usr/local/bin/docker-entrypoint.sh
  chmod 755 /usr/local/bin/docker-entrypoint.sh
  redis-server --version
'
"${BUILDAH[@]}" config \
  --workingdir /data \
  --entrypoint '["docker-entrypoint.sh"]' --cmd '["redis-server"]' \
  --env NODE_VERSION- \
  --port 6379/tcp \
  --label org.opencontainers.image.description="Debian bookworm redis-server for the switchboard chart's embedded Redis (test/e2e)" \
  "$c"
rm -f "$OUT.part"
"${BUILDAH[@]}" commit --quiet --format oci --rm "$c" "oci-archive:$OUT.part:docker.io/library/redis:$TAG" >/dev/null
c=""
mv "$OUT.part" "$OUT"
log "done: $OUT ($(du -h "$OUT" | cut -f1))"
