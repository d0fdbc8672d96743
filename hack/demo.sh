#!/usr/bin/env bash
# `make demo`: a local control plane, the development token server, the CRD, the operator and
# examples/, then the synced Secret, the credential's status and calls to the protected API.
#
# Where this machine can run the test node (root, cgroups, `hack/host-deps.sh`), the operator
# runs as a pod from its own image (`make image`), installed by helm, and the example
# Deployment's pod calls the API with its mounted token. Elsewhere one line says why, and the
# operator runs as a local process instead.
#
# `make demo-down` (or `hack/demo.sh down`) stops everything and deletes the demo's data.
# DEMO_NODE=0 forces the process mode.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state="$root/.demo"
port=${DEMO_TOKEN_PORT:-18090}
tls_port=${DEMO_TOKEN_TLS_PORT:-18443}
testbins=$(./hack/testbins.sh --print-dir)
export PATH="$testbins:$PATH"
testenv="$root/target/debug/testenv"
bin="$root/target/debug/groupdocs-token-operator"
token_server="$root/target/debug/groupdocs-dev-token-server"

stop_pid() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null; rm -f "$1"; }
down() {
  stop_pid "$state/operator.pid"
  stop_pid "$state/token-server.pid"
  [ -x "$testenv" ] || cargo build -q -p testenv --bins
  if [ -d "$state/cluster" ]; then "$testenv" down "$state/cluster"; fi
  rm -rf "$state"
  echo "demo stopped"
}
if [ "${1:-}" = down ]; then down; exit 0; fi
if [ -d "$state" ]; then echo "a demo is already running: make demo-down first" >&2; exit 1; fi

echo "==> building the operator, the development token server and the control-plane launcher"
cargo build -q -p groupdocs-token-operator -p groupdocs-dev-token-server -p testenv --bins
mkdir -p "$state"

node=0
if [ "${DEMO_NODE:-1}" = 1 ]; then
  if why=$("$testenv" node-check 2>&1); then
    node=1
  else
    echo "==> no node for pods here (${why#testenv: }); the operator runs as a local process"
  fi
fi

if [ "$node" = 1 ]; then
  echo "==> building the operator's image (make image)"
  make -s image >"$state/image.log" 2>&1 || { tail -n 30 "$state/image.log" >&2; exit 1; }
  echo "==> starting a local control plane and a node (containerd, kubelet, kube-scheduler, kube-proxy)"
  eval "$("$testenv" up "$state/cluster" --node)"
  host=10.217.0.1 # the node bridge's gateway (testenv::node::GATEWAY): pods reach the host there
else
  echo "==> starting a local control plane (etcd, kube-apiserver, kube-controller-manager)"
  eval "$("$testenv" up "$state/cluster")"
  host=127.0.0.1
fi
export KUBECONFIG
kubectl version 2>/dev/null | sed 's/^/    /'

echo "==> starting the development token server on $host:$port (http) and $host:$tls_port (https)"
"$testenv" serving-cert "$state/tls" "$host"
"$token_server" --listen "$host:$port" --tls-listen "$host:$tls_port" \
  --tls-cert "$state/tls/tls.crt" --tls-key "$state/tls/tls.key" >"$state/token-server.log" 2>&1 &
echo $! >"$state/token-server.pid"

if [ "$node" = 1 ]; then
  token_url="https://$host:$tls_port/connect/token"
  echo "==> helm install groupdocs-token-operator (image localhost/groupdocs-token-operator:dev) into groupdocs-system"
  kubectl create namespace groupdocs-system >/dev/null
  kubectl label namespace groupdocs-system pod-security.kubernetes.io/enforce=restricted >/dev/null
  kubectl create configmap dev-token-ca -n groupdocs-system --from-file=ca.crt="$state/tls/ca.crt" >/dev/null
  helm install groupdocs-token-operator deploy/helm/groupdocs-token-operator --namespace groupdocs-system \
    --set image.repository=localhost/groupdocs-token-operator --set image.tag=dev --set image.pullPolicy=Never \
    --set "operator.allowedTokenUrls={https://$host:$tls_port/}" --set operator.allowPrivateNetworks=true \
    --set operator.extraCaConfigMap=dev-token-ca --set operator.logFormat=text >/dev/null
  kubectl rollout status deployment/groupdocs-token-operator -n groupdocs-system --timeout=180s | sed 's/^/    /'
else
  token_url="http://127.0.0.1:$port/connect/token"
  echo "==> installing the CRD"
  kubectl apply --server-side -f crds/ >/dev/null
  kubectl wait --for=condition=Established --timeout=60s crd/groupdocscredentials.groupdocs.cloud crd/clustergroupdocscredentials.groupdocs.cloud >/dev/null
  echo "==> running the operator (log: .demo/operator.log)"
  # The token server is listed like any endpoint; --allow-http-loopback only permits plain http.
  kubectl create namespace groupdocs-system >/dev/null
  "$bin" run --allowed-token-url "http://127.0.0.1:$port/" --allow-http-loopback \
    --cluster-resource-namespace groupdocs-system \
    --metrics-addr 127.0.0.1:18080 --probe-addr 127.0.0.1:18081 >"$state/operator.log" 2>&1 &
  echo $! >"$state/operator.pid"
fi

# examples/ as committed, with the demo's token server, and on the node the local busybox
# image (nothing can be pulled here) calling the development server's protected API.
localize() {
  sed -e "s#tokenUrl: .*#tokenUrl: $token_url#" \
    -e "s#image: curlimages/curl:.*#image: localhost/gdto-consumer:1\n          imagePullPolicy: Never#" \
    -e "s#curl -sf -H#wget -q -O /dev/null --header#" \
    -e "s#https://api.groupdocs.cloud/v2.0/viewer/formats#http://$host:$port/v2.0/viewer/formats#" \
    -e 's#&& echo ok#\&\& echo "$(date +%T) GET /v2.0/viewer/formats with the mounted token: 200 OK"#' \
    -e "s#sleep 60#sleep 5#" "$1"
}
echo "==> kubectl apply -f examples/"
for f in examples/*.yaml; do localize "$f"; echo "---"; done | kubectl apply -f - | sed 's/^/    /'
kubectl wait --for=condition=Ready --timeout=90s gdc/viewer >/dev/null

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

echo; echo "==> kubectl apply -f examples/cluster/ (one client for every namespace labelled groupdocs.cloud/viewer=true)"
localize examples/cluster/cluster-groupdocs-credential.yaml | kubectl apply -f - | sed 's/^/    /'
kubectl wait --for=condition=Ready --timeout=90s cgdc/shared-viewer >/dev/null
kubectl get cgdc | sed 's/^/    /'
kubectl get secrets -A -l groupdocs.cloud/cluster-credential=shared-viewer | sed 's/^/    /'

if [ "$node" = 1 ]; then
  kubectl rollout status deployment/document-viewer --timeout=120s >/dev/null
  echo; echo "==> kubectl get pods -A -o wide"
  kubectl get pods -A -o wide | sed 's/^/    /'
  echo; echo "==> the document-viewer pod calls the API with its mounted token (kubectl logs)"
  for _ in $(seq 1 30); do
    logs=$(kubectl logs deployment/document-viewer 2>/dev/null || true)
    [ "$(printf '%s' "$logs" | grep -c '200 OK')" -ge 2 ] && break
    sleep 1
  done
  printf '%s\n' "$logs" | tail -n 3 | sed 's/^/    /'
  printf '%s' "$logs" | grep -q '200 OK' || { echo "demo: the consumer pod made no successful call" >&2; exit 1; }
else
  echo; echo "==> calling the protected API with the Secret's authorization value"
  auth=$(kubectl get secret viewer-token -o jsonpath='{.data.authorization}' | base64 -d)
  curl -sS -H "Authorization: $auth" "http://127.0.0.1:$port/v2.0/viewer/formats"; echo
fi
cat <<MSG

The demo keeps running. Try:
    export KUBECONFIG=$KUBECONFIG PATH=$testbins:\$PATH
    kubectl annotate gdc viewer groupdocs.cloud/refresh-requested-at="\$(date +%s)" --overwrite   # force a renewal
    kubectl describe gdc viewer
    kubectl label namespace team-web groupdocs.cloud/viewer=true   # team-web gets the shared token
    kubectl get cgdc shared-viewer -o jsonpath='{.status.namespaces}'
MSG
[ "$node" = 1 ] && echo "    kubectl logs -f deployment/document-viewer                # the consumer pod"
[ "$node" = 1 ] && echo "    kubectl logs -n groupdocs-system deployment/groupdocs-token-operator"
echo "Stop it with: make demo-down"
