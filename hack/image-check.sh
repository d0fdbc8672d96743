#!/usr/bin/env bash
# Checks the OCI tarballs of hack/image.sh (for CI; exits non-zero on any failure):
#  1. prints each image's name and config from the tarball and asserts user, entrypoint, cmd
#     and ports;
#  2. starts a throwaway containerd (own root, state and socket under a temporary folder; the
#     default /run/containerd/containerd.sock is not touched), imports each tarball with
#     `ctr -n k8s.io images import`, checks that `ctr images ls` shows the expected names, and
#     runs the consumer, the operator (--version) and the pause image once;
#  3. stops that containerd, unmounts what is left under the folder and removes it.
# Needs root, containerd, ctr, runc (hack/host-deps.sh) and python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${IMAGE_DIR:-$root/target/image}
operator=localhost/groupdocs-token-operator:dev pause=localhost/gdto-pause:1 consumer=localhost/gdto-consumer:1
die() { echo "image-check: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (containerd)"
for f in groupdocs-token-operator pause consumer; do [ -f "$dir/$f.oci.tar" ] || die "$dir/$f.oci.tar missing: run make image"; done
version=$(awk '/^\[/ { p = ($0 == "[package]") } p && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' "$root/Cargo.toml")

# 1. Config, read from the tarballs.
python3 - "$dir" <<'EOF'
import json, sys, tarfile
expected = {
    "groupdocs-token-operator": dict(name="localhost/groupdocs-token-operator:dev", User="65532:65532",
        Entrypoint=["/usr/local/bin/groupdocs-token-operator"], Cmd=["run"],
        ExposedPorts=["8080/tcp", "8081/tcp"]),
    "pause": dict(name="localhost/gdto-pause:1", User="65535:65535",
        Entrypoint=["/bin/busybox", "sleep", "2147483647"], Cmd=None, ExposedPorts=[]),
    "consumer": dict(name="localhost/gdto-consumer:1", User="65532:65532", Entrypoint=None,
        Cmd=["/bin/sh"], ExposedPorts=[]),
}
failed = False
for file, want in expected.items():
    with tarfile.open(f"{sys.argv[1]}/{file}.oci.tar") as tar:
        blob = lambda digest: json.load(tar.extractfile("blobs/" + digest.replace(":", "/")))
        index = json.load(tar.extractfile("index.json"))
        [desc] = index["manifests"]
        manifest = blob(desc["digest"])
        image = blob(manifest["config"]["digest"])
    c = image.get("config", {})
    got = dict(name=desc.get("annotations", {}).get("org.opencontainers.image.ref.name"),
               User=c.get("User"), Entrypoint=c.get("Entrypoint"), Cmd=c.get("Cmd"),
               ExposedPorts=sorted(c.get("ExposedPorts") or {}))
    print(f"{file}.oci.tar: {got['name']} {image['os']}/{image['architecture']} "
          f"{len(manifest['layers'])} layer(s), {sum(l['size'] for l in manifest['layers'])} bytes")
    print(f"  user {got['User']}  entrypoint {json.dumps(got['Entrypoint'])}  cmd {json.dumps(got['Cmd'])}"
          f"  ports {' '.join(got['ExposedPorts']) or '-'}  workdir {c.get('WorkingDir') or '-'}")
    for k, v in sorted((c.get("Labels") or {}).items()):
        print(f"  label {k}={v}")
    for k, v in want.items():
        if got[k] != v:
            print(f"image-check: FAIL: {file}: {k} is {got[k]!r}, want {v!r}", file=sys.stderr)
            failed = True
    if (image["os"], image["architecture"]) != ("linux", "amd64"):
        print(f"image-check: FAIL: {file}: platform {image['os']}/{image['architecture']}", file=sys.stderr)
        failed = True
sys.exit(1 if failed else 0)
EOF

# 2. A throwaway containerd.
for tool in containerd ctr runc; do command -v "$tool" >/dev/null || die "$tool missing (hack/host-deps.sh)"; done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/image-check.XXXXXX")
sock=$tmp/containerd.sock pid=""
shims=/run/containerd # containerd 1.6 puts shim sockets in $shims/s whatever its config
[ -e "$shims" ] && shims=""
cgroup=/$(basename "$tmp") # the tasks' cgroups: $cgroup/<id> in each hierarchy
ctr() { command ctr --address "$sock" -n k8s.io "$@"; }
run() { # run [ctr run flags] IMAGE ID [ARGS]: runc state, FIFOs and cgroup of our own
  local flags=()
  while [[ $1 == -* ]]; do flags+=("$1"); shift; done
  ctr run "${flags[@]}" --runc-root "$tmp/runc" --fifo-dir "$tmp/fifo" --cgroup "$cgroup/$2" "$@"
}
cleanup() {
  local status=$? task mnt
  if [ -n "$pid" ]; then
    for task in $(ctr tasks ls -q 2>/dev/null); do # ends the shims of tasks a failure left
      ctr tasks kill -s SIGKILL "$task" 2>/dev/null || true
      ctr tasks delete -f "$task" >/dev/null 2>&1 || true
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ "$status" -eq 0 ] || { echo "image-check: containerd log:" >&2; tail -n 20 "$tmp/containerd.log" >&2; }
  fi
  rmdir /sys/fs/cgroup/*/"$cgroup" /sys/fs/cgroup/"$cgroup" 2>/dev/null || true
  [ -z "$shims" ] || rmdir "$shims/s" "$shims" 2>/dev/null || true # when created by this run
  # Unmount leftovers (deepest first), then remove the folder.
  for mnt in $(awk -v t="$tmp" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
  done
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
cat > "$tmp/config.toml" <<EOF
version = 2
root = "$tmp/root"
state = "$tmp/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$tmp/opt"
EOF
containerd --config "$tmp/config.toml" > "$tmp/containerd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  ctr version >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || die "containerd exited"
  sleep 0.1
done
ctr version >/dev/null || die "containerd did not answer on $sock"
echo "image-check: containerd $(command ctr --version | awk '{print $3}') on $sock"

for f in groupdocs-token-operator pause consumer; do
  ctr images import "$dir/$f.oci.tar" | sed 's/^/  /'
done
names=$(ctr images ls -q)
echo "image-check: ctr images ls:" $names
for name in "$operator" "$pause" "$consumer"; do
  grep -qxF "$name" <<< "$names" || die "$name not among the imported images"
done
[ "$(wc -l <<< "$names")" -eq 3 ] || die "expected exactly 3 images"

out=$(run --rm "$consumer" t1 /bin/sh -c 'echo hello $(id -u):$(id -g) $(wget --help 2>&1 | head -n1)' 2>&1) ||
  die "consumer run failed: $out"
echo "image-check: consumer: $out"
[[ $out == "hello 65532:65532"* ]] || die "consumer printed $out"
out=$(run --rm "$operator" t2 /usr/local/bin/groupdocs-token-operator --version 2>&1) ||
  die "operator run failed: $out"
echo "image-check: operator --version: $out"
[[ $out == *"$version"* ]] || die "operator --version does not show $version"
run -d "$pause" t3 >/dev/null || die "pause run failed"
sleep 1
state=$(ctr tasks ls | awk '$1 == "t3" { print $3 }')
echo "image-check: pause task: $state"
[ "$state" = RUNNING ] || die "pause task is ${state:-gone}"
ctr tasks kill -s SIGKILL t3 && ctr tasks delete -f t3 >/dev/null 2>&1 && ctr containers delete t3
echo "image-check: OK"
