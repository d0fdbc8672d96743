#!/usr/bin/env bash
# Builds the test environment's binaries (etcd, kube-apiserver, kube-controller-manager,
# kubectl, helm, promtool, and the node's kubelet, kube-scheduler and kube-proxy) from their Go modules at the versions pinned in hack/testbins.env, into a
# cache outside the repository. Only what is missing is built. Prints the directory last.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=/dev/null
. "$root/hack/testbins.env"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
dir=${TESTBINS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/groupdocs-token-operator/testbins/$K8S_VERSION}
if [ "${1:-}" = "--print-dir" ]; then echo "$dir"; exit 0; fi
mkdir -p "$dir"

log() { echo "testbins: $*" >&2; }
missing() { for b in "$@"; do [ -x "$dir/$b" ] || return 0; done; return 1; }
# A version change in testbins.env invalidates the whole directory, except for promtool:
# it has a stamp of its own, so that pinning or bumping it never costs the 12-minute
# rebuild of the Kubernetes binaries.
stamp=$(grep -v -e '^#' -e '^PROMETHEUS_' "$root/hack/testbins.env")
if [ "$(cat "$dir/.versions" 2>/dev/null)" != "$stamp" ]; then
  rm -f "$dir"/{etcd,kube-apiserver,kube-controller-manager,kubectl,helm,kubelet,kube-scheduler,kube-proxy}
fi
promtool_stamp="PROMETHEUS_VERSION=$PROMETHEUS_VERSION"
if [ "$(cat "$dir/.promtool-version" 2>/dev/null)" != "$promtool_stamp" ]; then
  rm -f "$dir/promtool"
fi

timed_build() { # name, module dir, go build args...
  local name=$1 mod=$2; shift 2
  log "building $name ..."
  local start=$SECONDS
  (cd "$root/testbins/$mod" && go build -trimpath "$@")
  log "built $name in $((SECONDS - start))s"
}

k8s_bins=(kube-apiserver kube-controller-manager kubectl kubelet kube-scheduler kube-proxy)
if missing "${k8s_bins[@]}"; then
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=0000000000000000000000000000000000000000"
    ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  # One `go build` for all six shares the compilation of their common packages.
  timed_build "${k8s_bins[*]} $K8S_VERSION" kubernetes \
    -ldflags "$ldflags" -o "$dir/" "${k8s_bins[@]/#/k8s.io/kubernetes/cmd/}"
fi
if missing etcd; then
  timed_build "etcd $ETCD_VERSION" etcd \
    -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" -o "$dir/etcd" go.etcd.io/etcd/server/v3
fi
if missing helm; then
  timed_build "helm $HELM_VERSION" helm \
    -ldflags "-s -w -X $HELM_MODULE/internal/version.version=$HELM_VERSION -X $HELM_MODULE/internal/version.gitTreeState=clean" \
    -o "$dir/helm" "$HELM_MODULE/cmd/helm"
fi
if missing promtool; then
  timed_build "promtool $PROMETHEUS_VERSION" promtool \
    -ldflags "-s -w" \
    -o "$dir/promtool" github.com/prometheus/prometheus/cmd/promtool
fi
echo "$promtool_stamp" >"$dir/.promtool-version"
echo "$stamp" >"$dir/.versions"
log "ready in $dir ($(du -sh "$dir" | cut -f1))"
echo "$dir"
