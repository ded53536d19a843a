#!/usr/bin/env bash
# Provides the Kubernetes control plane the test/k8s tests run against: kube-apiserver,
# kube-controller-manager and kubectl built from the k8s.io/kubernetes Go module, etcd (Debian's
# when the apiserver supports it, otherwise built from go.etcd.io/etcd), and helm. There is no
# cluster, container engine or binary download on the machines this runs on, but the Go module
# proxy is reachable, so everything is compiled from pinned module versions (versions.env) into
# a cache outside the repository, and reused from there on every later run.
#
#   bash test/k8s/tools.sh                 build what is missing, reuse the rest (idempotent)
#   bash test/k8s/tools.sh node            also the node: kube-scheduler, kubelet, kube-proxy
#                                          (same module), CoreDNS, Prometheus (with Kubernetes
#                                          service discovery), and the pause image (from the
#                                          module's build/pause/linux/pause.c) for test/e2e
#   bash test/k8s/tools.sh bin-dir         print the directory holding the binaries
#   bash test/k8s/tools.sh update-modules  rewrite tools/*/go.mod for the versions in versions.env
#
# Environment: SWITCHBOARD_K8S_CACHE (default ~/.cache/switchboard-k8s),
# SWITCHBOARD_K8S_ETCD=auto|system|build (default auto: system etcd if new enough).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
# The oldest system etcd used instead of building one. kube-apiserver $KUBE_VERSION starts on
# Debian 12's etcd 3.4.23 and the smoke tests pass on it, but the apiserver flags it as lacking
# RequestWatchProgress (the watch-progress fix is in 3.4.31/3.5.13) and falls back from
# consistent reads served by its watch cache, which no real cluster of this version does; and
# 3.4 is out of upstream support. Kubernetes $KUBE_VERSION is built and tested with etcd 3.7.
ETCD_MIN_VERSION=3.5.13

cache_root="${SWITCHBOARD_K8S_CACHE:-$HOME/.cache/switchboard-k8s}"
dest="$cache_root/$KUBE_VERSION"
bin="$dest/bin"

log() { echo "k8s-tools: $*"; }
die() { echo "k8s-tools: error: $*" >&2; exit 1; }

# version_ge A B: true when dotted version A >= B (a leading v and any -suffix ignored).
version_ge() {
  local a="${1#v}" b="${2#v}"
  a="${a%%-*}"; b="${b%%-*}"
  [ "$(printf '%s\n%s\n' "$a" "$b" | sort -V | head -n1)" = "$b" ]
}

check_prerequisites() {
  local missing=()
  for cmd in go openssl flock sha256sum; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]} (Debian: apt-get install golang openssl util-linux coreutils; Go must be >= 1.26)"
  local gov
  gov="$(go env GOVERSION)"
  version_ge "${gov#go}" 1.26 || die "Go $gov is too old: k8s.io/kubernetes $KUBE_VERSION needs Go >= 1.26"
}

# A stamp records what a binary was built from; a binary is reused only when its stamp matches.
stamp_of() { printf '%s\n' "$@" "$(go env GOVERSION)" | sha256sum | cut -d' ' -f1; }
is_current() { [ -x "$bin/$1" ] && [ "$(cat "$bin/.$1.stamp" 2>/dev/null)" = "$2" ]; }
mark() { echo "$2" > "$bin/.$1.stamp"; }

# require_version DIR MODULE VERSION: the Go module in DIR must build MODULE at VERSION.
require_version() {
  local have
  have="$(go -C "$1" list -m -f '{{.Version}}' "$2")" || die "cannot read $2 from $1/go.mod"
  [ "$have" = "$3" ] ||
    die "${1#"$here/"}/go.mod has $2 $have, versions.env says $3: run 'bash test/k8s/tools.sh update-modules'"
}

built=(); reused=()
timed() {
  local what="$1" start=$SECONDS; shift
  log "building $what (the first build takes a while; later runs reuse it)"
  "$@"
  log "built $what in $((SECONDS - start))s"
}

build_kube() {
  local mod="$here/tools/kube"
  require_version "$mod" k8s.io/kubernetes "$KUBE_VERSION"
  local key names=(kube-apiserver kube-controller-manager kubectl) stale=()
  [ "$with_node" = 0 ] || names+=(kube-scheduler kubelet kube-proxy)
  key="$(stamp_of kube "$KUBE_VERSION" "$(cat "$mod/go.mod" "$mod/go.sum")")"
  for n in "${names[@]}"; do is_current "$n" "$key" || stale+=("$n"); done
  if [ ${#stale[@]} -eq 0 ]; then reused+=("${names[@]}"); return; fi
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w" v
  for v in "gitVersion=$KUBE_VERSION" gitMajor=1 "gitMinor=$minor" gitTreeState=clean; do
    ldflags+=" -X k8s.io/component-base/version.$v -X k8s.io/client-go/pkg/version.$v"
  done
  local tmp="$dest/tmp.kube"
  rm -rf "$tmp"; mkdir -p "$tmp"
  local pkgs=() n
  for n in "${stale[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
  timed "${stale[*]} $KUBE_VERSION" go -C "$mod" build -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}"
  for n in "${stale[@]}"; do mv -f "$tmp/$n" "$bin/$n"; mark "$n" "$key"; built+=("$n"); done
  rm -rf "$tmp"
  for n in "${names[@]}"; do [[ " ${stale[*]} " == *" $n "* ]] || reused+=("$n"); done
}

system_etcd_ok() {
  local path v
  path="$(command -v etcd 2>/dev/null)" || return 1
  v="$("$path" --version 2>/dev/null | awk '/^etcd Version:/ {print $3}')"
  [ -n "$v" ] && version_ge "$v" "$ETCD_MIN_VERSION"
}

provide_etcd() {
  local mode="${SWITCHBOARD_K8S_ETCD:-auto}" mod="$here/tools/etcd"
  case "$mode" in auto|system|build) ;; *) die "SWITCHBOARD_K8S_ETCD must be auto, system or build, not '$mode'" ;; esac
  if [ "$mode" = system ] || { [ "$mode" = auto ] && system_etcd_ok; }; then
    command -v etcd >/dev/null || die "SWITCHBOARD_K8S_ETCD=system but no etcd on PATH"
    ln -sfn "$(command -v etcd)" "$bin/etcd"; rm -f "$bin/.etcd.stamp"
    reused+=("etcd (system: $(command -v etcd))")
    return
  fi
  [ "$mode" = auto ] && command -v etcd >/dev/null &&
    log "system etcd $(etcd --version | awk '/^etcd Version:/ {print $3}') is older than $ETCD_MIN_VERSION; using etcd $ETCD_VERSION built from source"
  require_version "$mod" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  local key
  key="$(stamp_of etcd "$ETCD_VERSION" "$(cat "$mod/go.mod" "$mod/go.sum" "$mod/main.go")")"
  if [ ! -L "$bin/etcd" ] && is_current etcd "$key"; then reused+=(etcd); return; fi
  local tmp="$dest/tmp.etcd"
  rm -rf "$tmp"; mkdir -p "$tmp"
  timed "etcd $ETCD_VERSION" go -C "$mod" build -ldflags "-s -w" -o "$tmp/etcd" .
  rm -f "$bin/etcd"; mv -f "$tmp/etcd" "$bin/etcd"; mark etcd "$key"; built+=(etcd)
  rm -rf "$tmp"
}

build_helm() {
  local key
  key="$(stamp_of helm "$HELM_VERSION")"
  if is_current helm "$key"; then reused+=(helm); return; fi
  # Helm's Makefile stamps its version and the Kubernetes version of its client libraries.
  local gomod kmaj kmin p
  gomod="$(cd /tmp && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | awk -F'"' '/"GoMod"/ {print $4}')"
  read -r kmaj kmin < <(awk '$1 == "k8s.io/client-go" {sub(/^v0\./, "", $2); split($2, p, "."); print 1, p[1]}' "$gomod")
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in pkg/lint/rules pkg/chartutil; do
    ldflags+=" -X helm.sh/helm/v3/$p.k8sVersionMajor=$kmaj -X helm.sh/helm/v3/$p.k8sVersionMinor=$kmin"
  done
  local tmp="$dest/tmp.helm"
  rm -rf "$tmp"; mkdir -p "$tmp"
  timed "helm $HELM_VERSION" env GOBIN="$tmp" go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv -f "$tmp/helm" "$bin/helm"; mark helm "$key"; built+=(helm)
  rm -rf "$tmp"
}

# Points tools/kube/go.mod at KUBE_VERSION: each k8s.io module the published k8s.io/kubernetes
# go.mod requires at v0.0.0 (and replaces with ./staging/src/...) is mapped to its published
# v0.<minor>.<patch> instead. Then moves tools/etcd to ETCD_VERSION.
update_modules() {
  local mod="$here/tools/kube" gomod m drops=()
  gomod="$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | awk -F'"' '/"GoMod"/ {print $4}')"
  [ -f "$gomod" ] || die "cannot download k8s.io/kubernetes@$KUBE_VERSION"
  for m in $(cd "$mod" && go mod edit -json | awk -F'"' '/"Old"/ {getline; print $4}'); do
    drops+=("-dropreplace=$m")
  done
  (cd "$mod" && go mod edit ${drops[@]+"${drops[@]}"} "-require=k8s.io/kubernetes@$KUBE_VERSION")
  {
    printf '\nreplace (\n'
    awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$gomod" | sort -u |
      while read -r m; do printf '\t%s => %s v0.%s\n' "$m" "$m" "${KUBE_VERSION#v1.}"; done
    printf ')\n'
  } >> "$mod/go.mod"
  (cd "$mod" && go mod edit -fmt && go mod tidy)
  (cd "$here/tools/etcd" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go mod tidy)
  log "tools/kube now builds Kubernetes $KUBE_VERSION, tools/etcd etcd $ETCD_VERSION"
}

# CoreDNS for the node's cluster DNS: its main module has no replace directives, so it installs
# straight from the module proxy, like helm.
build_coredns() {
  local key
  key="$(stamp_of coredns "$COREDNS_VERSION")"
  if is_current coredns "$key"; then reused+=(coredns); return; fi
  local tmp="$dest/tmp.coredns"
  rm -rf "$tmp"; mkdir -p "$tmp"
  timed "coredns $COREDNS_VERSION" env GOBIN="$tmp" go install -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  mv -f "$tmp/coredns" "$bin/coredns"; mark coredns "$key"; built+=(coredns)
  rm -rf "$tmp"
}

# Prometheus with Kubernetes service discovery, for the node's scraping. Debian's prometheus
# package is built without it (its config parser rejects kubernetes_sd_configs: "field
# kubernetes_sd_configs not found in type config.ScrapeConfig"), so it is built from its Go
# module (v0.3xx.y is Prometheus 3.xx.y), like helm; without the builtinassets tag, so no web UI,
# only the HTTP API the tests use.
build_prometheus() {
  local key
  key="$(stamp_of prometheus "$PROMETHEUS_VERSION")"
  if is_current prometheus "$key"; then reused+=(prometheus); return; fi
  local tmp="$dest/tmp.prometheus" rest="${PROMETHEUS_VERSION#v0.}" v
  rm -rf "$tmp"; mkdir -p "$tmp"
  v="3.$((${rest%%.*} - 300)).${rest#*.}" # v0.316.0 -> 3.16.0
  timed "prometheus $PROMETHEUS_VERSION" env GOBIN="$tmp" go install \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=${v}" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
  mv -f "$tmp/prometheus" "$bin/prometheus"; mark prometheus "$key"; built+=(prometheus)
  rm -rf "$tmp"
}

# The pod sandbox ("pause") image the kubelet's CRI asks for. There is no registry to pull
# registry.k8s.io/pause from, so it is made the way Kubernetes makes it: pause.c from the
# k8s.io/kubernetes module (build/pause/linux), compiled static, alone in an image. buildah
# writes it as an OCI archive that the node harness imports into containerd.
build_pause() {
  local src key out="$dest/images/pause-$PAUSE_VERSION.oci.tar"
  src="$(go -C "$here/tools/kube" list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
  [ -f "$src" ] || die "no $src in the k8s.io/kubernetes module"
  key="$(stamp_of pause "$PAUSE_VERSION" "$(cat "$src")" "$(gcc --version | head -n1)")"
  if [ -f "$out" ] && is_current pause "$key"; then reused+=(pause); return; fi
  for cmd in gcc buildah; do command -v "$cmd" >/dev/null || die "$cmd not found (Debian: apt-get install gcc buildah)"; done
  local tmp="$dest/tmp.pause" store
  rm -rf "$tmp"; mkdir -p "$tmp" "$dest/images"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-switchboard" -o "$tmp/pause" "$src"
  strip "$tmp/pause"
  # A throwaway buildah store (vfs: no overlayfs or daemon needed).
  store=(buildah --root "$tmp/storage" --runroot "$tmp/run" --storage-driver vfs)
  local c
  c="$("${store[@]}" from scratch)"
  "${store[@]}" copy --chmod 0755 "$c" "$tmp/pause" /pause >/dev/null
  "${store[@]}" config --os linux --arch amd64 --entrypoint '["/pause"]' --user 65535:65535 "$c"
  "${store[@]}" commit --quiet --format oci --rm "$c" "oci-archive:$out.part:registry.k8s.io/pause:$PAUSE_VERSION" >/dev/null
  mv -f "$out.part" "$out"
  cp "$tmp/pause" "$bin/pause"; mark pause "$key"; built+=(pause)
  rm -rf "$tmp"
}

main() {
  with_node=0
  case "${1:-}" in
    bin-dir) echo "$bin"; return ;;
    update-modules) check_prerequisites; update_modules; return ;;
    node) with_node=1 ;;
    "") ;;
    *) die "unknown command '$1' (try: node, bin-dir, update-modules)" ;;
  esac
  check_prerequisites
  mkdir -p "$bin"
  exec 9>"$dest/.lock"
  flock 9 # a second run (another checkout, a parallel CI job) waits instead of racing
  local start=$SECONDS
  # Smaller, path-independent binaries; no VCS stamping (the modules live inside this git
  # checkout, which need not be readable as one on CI). Keeps GOFLAGS set with `go env -w`.
  GOFLAGS="-trimpath -buildvcs=false $(go env GOFLAGS)"
  export GOFLAGS
  build_kube
  provide_etcd
  build_helm
  if [ "$with_node" = 1 ]; then
    build_coredns
    build_prometheus
    build_pause
  fi
  [ ${#reused[@]} -eq 0 ] || log "reused: ${reused[*]}"
  [ ${#built[@]} -eq 0 ] || log "built: ${built[*]} in $((SECONDS - start))s"
  log "binaries for Kubernetes $KUBE_VERSION in $bin"
}

main "$@"
