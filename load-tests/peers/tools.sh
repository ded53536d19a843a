#!/usr/bin/env bash
# Builds the peer servers of the load suite (load-tests/README.md, "Peers"): nats-server and
# Centrifugo, compiled with `go install` from the pinned module versions in versions.env into a
# cache outside the repository (the machines this runs on download no release binaries, but
# reach the Go module proxy), the way test/k8s/tools.sh provides the Kubernetes tools. A binary
# is reused while its stamp (module, version, Go version) matches, so later runs take a second.
#
#   bash load-tests/peers/tools.sh           build what is missing or stale, reuse the rest
#   bash load-tests/peers/tools.sh bin-dir   print the cache directory
#
# Environment: SWITCHBOARD_PEERS_CACHE (default ~/.cache/switchboard-peers).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

cache="${SWITCHBOARD_PEERS_CACHE:-$HOME/.cache/switchboard-peers}"

log() { echo "peer-tools: $*"; }
die() { echo "peer-tools: error: $*" >&2; exit 1; }

stamp_of() { printf '%s\n' "$@" "$(go env GOVERSION)" | sha256sum | cut -d' ' -f1; }

built=(); reused=()

# build NAME VERSION PACKAGE [LDFLAGS]: go install PACKAGE@VERSION into $cache/NAME/VERSION/NAME.
build() {
  local name="$1" version="$2" pkg="$3" ldflags="-s -w ${4:-}"
  local dir="$cache/$name/$version" key
  key="$(stamp_of "$pkg" "$version" "$ldflags")"
  if [ -x "$dir/$name" ] && [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$key" ]; then
    reused+=("$name $version"); return
  fi
  local tmp="$dir/tmp" start=$SECONDS
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "building $name $version (the first build takes a few minutes; later runs reuse it)"
  GOBIN="$tmp" go install -ldflags "$ldflags" "$pkg@$version"
  mv -f "$tmp/$name" "$dir/$name"; rm -rf "$tmp"
  echo "$key" > "$dir/.stamp"
  log "built $name $version in $((SECONDS - start))s"
  built+=("$name $version")
}

main() {
  case "${1:-}" in
    bin-dir) echo "$cache"; return ;;
    "") ;;
    *) die "unknown command '$1' (try: bin-dir)" ;;
  esac
  command -v go >/dev/null || die "go not found (Debian: apt-get install golang; Go >= 1.26)"
  for cmd in flock sha256sum; do command -v "$cmd" >/dev/null || die "$cmd not found"; done
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9 # a parallel run (another checkout, CI) waits instead of racing
  # The modules' go lines (1.26) are what the machine's Go provides; the local toolchain builds
  # them rather than a newer one being fetched for a `toolchain` line. No VCS stamping, paths
  # trimmed: the same binary from any checkout.
  export GOTOOLCHAIN=local GOFLAGS="-trimpath -buildvcs=false"
  local start=$SECONDS
  build nats-server "$NATS_SERVER_VERSION" github.com/nats-io/nats-server/v2
  build centrifugo "$CENTRIFUGO_VERSION" github.com/centrifugal/centrifugo/v6 \
    "-X github.com/centrifugal/centrifugo/v6/internal/build.Version=${CENTRIFUGO_VERSION#v}"
  [ ${#reused[@]} -eq 0 ] || log "reused: ${reused[*]}"
  [ ${#built[@]} -eq 0 ] || log "built: ${built[*]} in $((SECONDS - start))s"
  log "peer servers in $cache"
}

main "$@"
