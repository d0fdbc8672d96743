#!/usr/bin/env bash
# `make demo`: a local control plane, the development token server, the CRD, the operator and
# examples/, then the synced Secret, the credential's status and a call to the protected API.
# `make demo-down` (or `hack/demo.sh down`) stops everything and deletes the demo's data.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state="$root/.demo"
port=${DEMO_TOKEN_PORT:-18090}
testbins=$(./hack/testbins.sh --print-dir)
export PATH="$testbins:$PATH"

stop_pid() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null; rm -f "$1"; }
down() {
  stop_pid "$state/operator.pid"
  stop_pid "$state/token-server.pid"
  [ -x target/debug/testenv ] || cargo build -q -p testenv
  if [ -d "$state/cluster" ]; then ./target/debug/testenv down "$state/cluster"; fi
  rm -rf "$state"
  echo "demo stopped"
}
if [ "${1:-}" = down ]; then down; exit 0; fi
if [ -d "$state" ]; then echo "a demo is already running: make demo-down first" >&2; exit 1; fi

echo "==> building the operator and the control-plane launcher"
cargo build -q --bin groupdocs-token-operator -p groupdocs-token-operator -p testenv
mkdir -p "$state"
bin="$root/target/debug/groupdocs-token-operator"

echo "==> starting a local control plane (etcd, kube-apiserver, kube-controller-manager)"
eval "$(./target/debug/testenv up "$state/cluster")"
export KUBECONFIG
kubectl version | sed 's/^/    /'

echo "==> starting the development token server on 127.0.0.1:$port"
"$bin" dev-server --listen "127.0.0.1:$port" >"$state/token-server.log" 2>&1 &
echo $! >"$state/token-server.pid"

echo "==> installing the CRD"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/groupdocscredentials.groupdocs.cloud >/dev/null

echo "==> running the operator (log: .demo/operator.log)"
"$bin" run --allow-http-loopback --metrics-addr 127.0.0.1:18080 --probe-addr 127.0.0.1:18081 >"$state/operator.log" 2>&1 &
echo $! >"$state/operator.pid"

echo "==> kubectl apply -f examples/"
kubectl apply -f examples/ | sed 's/^/    /'
kubectl wait --for=condition=Ready --timeout=60s gdc/viewer >/dev/null

echo; echo "==> kubectl get gdc"
kubectl get gdc
echo; echo "==> the token Secret (values shortened)"
for key in access_token token_type expires_at authorization; do
  value=$(kubectl get secret viewer-token -o "jsonpath={.data.$key}" | base64 -d)
  [ ${#value} -gt 40 ] && value="${value:0:24}...${value: -8} (${#value} chars)"
  printf '    %-14s %s\n' "$key" "$value"
done
echo; echo "==> conditions"
kubectl get gdc viewer -o jsonpath='{range .status.conditions[*]}    {.type}={.status} {.reason}: {.message}{"\n"}{end}'
echo "    tokenFingerprint=$(kubectl get gdc viewer -o jsonpath='{.status.tokenFingerprint}') nextRefreshTime=$(kubectl get gdc viewer -o jsonpath='{.status.nextRefreshTime}')"
echo; echo "==> calling the protected API with the Secret's authorization value"
auth=$(kubectl get secret viewer-token -o jsonpath='{.data.authorization}' | base64 -d)
curl -sS -H "Authorization: $auth" "http://127.0.0.1:$port/v2.0/viewer/formats"; echo
echo; echo "==> the Deployment that mounts the token Secret (no kubelet runs here, so no pod starts)"
kubectl get deployment document-viewer -o jsonpath='    volume {.spec.template.spec.volumes[0].name} -> Secret {.spec.template.spec.volumes[0].secret.secretName}{"\n"}'
cat <<MSG

The demo keeps running. Try:
    export KUBECONFIG=$KUBECONFIG PATH=$testbins:\$PATH
    kubectl annotate gdc viewer groupdocs.cloud/refresh-requested-at="\$(date +%s)" --overwrite   # force a renewal
    kubectl describe gdc viewer
Stop it with: make demo-down
MSG
