#!/usr/bin/env bash
# Builds OCI images without a Docker engine, with umoci, as OCI-layout tarballs in target/image/:
#   groupdocs-token-operator.oci.tar  localhost/groupdocs-token-operator:dev  the release binary on a
#                                     base made like distroless cc-debian12 (libc6, libgcc-s1,
#                                     ca-certificates), configured as the Dockerfile's final stage
#   pause.oci.tar                     localhost/gdto-pause:1     /bin/busybox sleeping (pod sandbox)
#   consumer.oci.tar                  localhost/gdto-consumer:1  busybox with its applet links
# The .debs are fetched with `apt-get download` at the versions installed here (else the pins
# below) and cached by version outside the repository. Layers are reproducible: every path has
# the mtime SOURCE_DATE_EPOCH (default: the last commit's time for the operator, the busybox
# package's build time for the busybox images) and is owned by root, except /home/nonroot.
# An image is rebuilt only when its inputs changed. `ctr -n k8s.io images import <tar>` names
# each image as above (index.json carries the full name as org.opencontainers.image.ref.name).
# Needs root (file ownership in the layers), umoci, dpkg-deb and apt-get (hack/host-deps.sh).
set -euo pipefail
umask 022
export LC_ALL=C
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/target/image
work=$out/work
debs=${XDG_CACHE_HOME:-$HOME/.cache}/groupdocs-token-operator/debs
bin=${OPERATOR_BIN:-$root/target/release/groupdocs-token-operator}
arch=amd64 multiarch=x86_64-linux-gnu
# Used when the package is not installed on this machine (Debian 12 versions).
declare -A pinned=(
  [libc6]=2.36-9+deb12u14
  [libgcc-s1]=12.2.0-14+deb12u1
  [ca-certificates]=20230311+deb12u1
  [busybox-static]=1:1.35.0-4+deb12u1+b1
)

die() { echo "image: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root: layer files must be owned by 0 and 65532 (run with sudo)"
[ "$(dpkg --print-architecture)" = "$arch" ] || die "builds $arch images only, on an $arch host"
for tool in umoci dpkg-deb apt-get ldd; do command -v "$tool" >/dev/null || die "$tool missing (hack/host-deps.sh)"; done
[ -x "$bin" ] || die "$bin missing: run make release"

# deb PKG: prints the path of PKG's .deb (installed version, else pinned), downloading it once.
deb() {
  local pkg=$1 version file
  version=$(dpkg-query -W -f='${Status} ${Version}\n' "$pkg" 2>/dev/null | awk '$3 == "installed" { print $4; exit }')
  version=${version:-${pinned[$pkg]}}
  file=$(find "$debs" -maxdepth 1 -name "${pkg}_${version//:/%3a}_*.deb" 2>/dev/null | head -n1)
  if [ -z "$file" ]; then
    mkdir -p "$debs"
    local opts=() tmp
    [ "$(id -u)" -ne 0 ] || opts=(-o APT::Sandbox::User=root)
    tmp=$(mktemp -d "$debs/.download.XXXXXX")
    (cd "$tmp" && apt-get download -q "${opts[@]}" "$pkg=$version" >&2) || { rm -rf "$tmp"; die "apt-get download $pkg=$version failed (apt-get update?)"; }
    file=$(find "$tmp" -name '*.deb' | head -n1)
    mv "$file" "$debs/" && rm -rf "$tmp"
    file=$debs/$(basename "$file")
  fi
  echo "$file"
}

# extract PKG: unpacks PKG's .deb under $work/debs/ (once per version); prints the folder.
extract() {
  local file dir
  file=$(deb "$1")
  dir=$work/debs/$(basename "$file" .deb)
  if [ ! -e "$dir/.done" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    dpkg-deb -x "$file" "$dir"
    touch "$dir/.done"
  fi
  echo "$dir"
}

# build FILE REF EPOCH FILL COMMENT -- CONFIG-ARGS...: one image, one layer filled by the function
# FILL (given the rootfs), written to $out/FILE.oci.tar unless its inputs are unchanged.
build() {
  local file=$1 ref=$2 epoch=$3 fill=$4 comment=$5
  shift 6
  local tar=$out/$file.oci.tar stamp=$out/.$file.inputs inputs
  inputs=$(
    sha256sum < "$0"
    printf '%s\n' "$ref" "$epoch" "$@"
    "$fill" --inputs
  )
  if [ -f "$tar" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
    echo "image: $ref up to date"
    return
  fi
  echo "image: building $ref"
  local dir=$work/$file created
  created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
  rm -rf "$dir" && mkdir -p "$dir"
  umoci init --layout "$dir/layout"
  umoci new --image "$dir/layout:$ref"
  umoci unpack --image "$dir/layout:$ref" "$dir/bundle" >/dev/null
  "$fill" "$dir/bundle/rootfs"
  find "$dir/bundle/rootfs" -exec touch -h -d "@$epoch" {} +
  umoci repack --image "$dir/layout:$ref" --history.created "$created" \
    --history.created_by "hack/image.sh" --history.comment "$comment" "$dir/bundle"
  umoci config --image "$dir/layout:$ref" --created "$created" --history.created "$created" \
    --history.created_by "hack/image.sh" --architecture "$arch" --os linux "$@"
  umoci gc --layout "$dir/layout"
  tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --mode=go+r \
    -C "$dir/layout" -cf "$tar.tmp" oci-layout index.json blobs
  mv "$tar.tmp" "$tar"
  echo "$inputs" > "$stamp"
  rm -rf "$dir"
}

nonroot_etc() { # the user database of distroless' nonroot images
  local r=$1
  mkdir -p "$r/etc"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$r/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' > "$r/etc/group"
  chmod 0644 "$r/etc/passwd" "$r/etc/group"
  mkdir -p -m 1777 "$r/tmp" && chmod 1777 "$r/tmp"
}

fill_operator() {
  local pkgs=(libc6 libgcc-s1 ca-certificates)
  if [ "$1" = --inputs ]; then
    local p; for p in "${pkgs[@]}"; do basename "$(deb "$p")"; done
    sha256sum < "$bin"
    return
  fi
  local r=$1 libc gcc ca lib p
  libc=$(extract libc6) gcc=$(extract libgcc-s1) ca=$(extract ca-certificates)
  # Shared libraries only: no gconv modules, locales, documentation or maintainer scripts.
  mkdir -p "$r/lib/$multiarch" "$r/lib64"
  cp -a "$libc/lib/$multiarch"/*.so* "$gcc/lib/$multiarch"/libgcc_s.so.1 "$r/lib/$multiarch/"
  cp -a "$libc/lib64/." "$r/lib64/"
  for p in "${pkgs[@]}"; do # licences of what is redistributed (libgcc-s1's is in gcc-12-base)
    if [ -f "$(extract "$p")/usr/share/doc/$p/copyright" ] && [ ! -L "$(extract "$p")/usr/share/doc/$p" ]; then
      install -D -m 0644 "$(extract "$p")/usr/share/doc/$p/copyright" "$r/usr/share/doc/$p/copyright"
    fi
  done
  mkdir -p "$r/etc/ssl/certs"
  cat "$ca"/usr/share/ca-certificates/mozilla/*.crt > "$r/etc/ssl/certs/ca-certificates.crt"
  nonroot_etc "$r"
  printf '%s\n' 'passwd: files' 'group: files' 'shadow: files' 'hosts: files dns' \
    'networks: files' 'protocols: files' 'services: files' > "$r/etc/nsswitch.conf"
  mkdir -p -m 0700 "$r/root" "$r/home/nonroot"
  install -D -m 0755 "$bin" "$r/usr/local/bin/groupdocs-token-operator"
  chown -R 0:0 "$r" && chown 65532:65532 "$r/home/nonroot"
  # Every library the binary links must be in the image.
  for lib in $(ldd "$bin" | awk '/=>/ { print $1 } /^\t\// { print $1 }'); do
    [ -e "$r/lib/$multiarch/$(basename "$lib")" ] || [ -e "$r$lib" ] || die "$lib (needed by the binary) is not in the image"
  done
}

busybox_dir() { extract busybox-static; }
fill_pause() {
  if [ "$1" = --inputs ]; then basename "$(deb busybox-static)"; return; fi
  install -D -m 0755 "$(busybox_dir)/bin/busybox" "$1/bin/busybox"
  chown -R 0:0 "$1"
}
fill_consumer() {
  if [ "$1" = --inputs ]; then basename "$(deb busybox-static)"; return; fi
  local r=$1 applet
  install -D -m 0755 "$(busybox_dir)/bin/busybox" "$r/bin/busybox"
  for applet in $("$r/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$r/bin/$applet"
  done
  nonroot_etc "$r"
  chown -R 0:0 "$r"
}

field() { # field NAME: a [package] value of Cargo.toml
  awk -v k="$1" '/^\[/ { p = ($0 == "[package]") } p && $1 == k { sub(/^[^"]*"/, ""); sub(/".*$/, ""); print; exit }' "$root/Cargo.toml"
}
version=$(field version) license=$(field license) source=$(field repository)
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
operator_epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
busybox_epoch=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$(busybox_dir)/bin/busybox")}
busybox_version=$(dpkg-deb -f "$(deb busybox-static)" Version)
path_env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "$out"

build groupdocs-token-operator localhost/groupdocs-token-operator:dev "$operator_epoch" fill_operator \
  "groupdocs-token-operator on libc6, libgcc-s1, ca-certificates" -- \
  --config.user 65532:65532 --config.workingdir /home/nonroot \
  --config.env "$path_env" --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.entrypoint /usr/local/bin/groupdocs-token-operator --config.cmd run \
  --config.exposedports 8080/tcp --config.exposedports 8081/tcp \
  --config.label "org.opencontainers.image.title=groupdocs-token-operator" \
  --config.label "org.opencontainers.image.source=$source" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.revision=$revision" \
  --config.label "org.opencontainers.image.licenses=$license"
build pause localhost/gdto-pause:1 "$busybox_epoch" fill_pause "busybox-static $busybox_version" -- \
  --config.user 65535:65535 --config.env "$path_env" \
  --config.entrypoint /bin/busybox --config.entrypoint sleep --config.entrypoint 2147483647 \
  --config.label "org.opencontainers.image.source=$source" \
  --config.label "org.opencontainers.image.licenses=GPL-2.0-only"
build consumer localhost/gdto-consumer:1 "$busybox_epoch" fill_consumer "busybox-static $busybox_version" -- \
  --config.user 65532:65532 --config.env "$path_env" --config.cmd /bin/sh \
  --config.label "org.opencontainers.image.source=$source" \
  --config.label "org.opencontainers.image.licenses=GPL-2.0-only"

for f in groupdocs-token-operator pause consumer; do
  printf '%s\t%s\n' "$(du -h --apparent-size "$out/$f.oci.tar" | cut -f1)" "$out/$f.oci.tar"
done
