#!/usr/bin/env bash
# Installs the Debian packages the test node and the image build need, at pinned versions:
# containerd, runc and the CNI plugins run the node; umoci assembles OCI images; iptables and
# conntrack serve kube-proxy; busybox-static is the pause and consumer images' only binary.
# Idempotent: installs only what is missing or at another version. Needs root (or sudo).
set -euo pipefail
packages=(
  containerd=1.6.20~ds1-1+deb12u3
  runc=1.1.5+ds1-1+deb12u1
  containernetworking-plugins=1.1.1+ds1-3+b5
  umoci=0.4.7+ds-3+b7
  iptables=1.8.9-2
  conntrack=1:1.4.7-1+b2
  busybox-static=1:1.35.0-4+deb12u1+b1
)
if [ "${1:-}" = "--list" ]; then printf '%s\n' "${packages[@]}"; exit 0; fi
need=()
for p in "${packages[@]}"; do
  name=${p%%=*} version=${p#*=}
  have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
  [ "$have" = "install ok installed $version" ] || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "host-deps: installing ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
