#!/usr/bin/env bash
# Proves the Dockerfile's build context without a Docker engine: copies exactly the paths the
# build stage COPYs (not `COPY --from=` copies) from the repository into a clean temporary
# folder laid out as the stage's WORKDIR, then runs there the stage's own `RUN cargo build ...`
# with --offline added. A path the build needs but the Dockerfile does not copy (a new
# workspace member, say) makes cargo fail here as it would in `docker build`.
# Registry crates are compiled once into a target folder cached outside the repository
# (CARGO_TARGET_DIR below); the workspace's own crates are rebuilt on every run.
# Not modelled: .dockerignore (warned about), COPY's JSON form and --chown/--chmod.
# `--out PATH` copies the built binary there: `make release` builds this way, so the binary
# in the images is always the one the Dockerfile's context builds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=""
if [ "${1:-}" = --out ]; then out=$2; fi
dockerfile=${DOCKERFILE:-$root/Dockerfile}
target=${DOCKER_CONTEXT_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/groupdocs-token-operator/docker-context-target}
start=$SECONDS
die() { echo "docker-context-check: $*" >&2; exit 1; }
[ ! -e "$root/.dockerignore" ] || echo "docker-context-check: warning: .dockerignore is not applied" >&2

# Logical lines: comments dropped, backslash continuations joined.
mapfile -t lines < <(awk '/^[[:space:]]*#/ { next }
  { if (sub(/\\[[:space:]]*$/, "")) { buf = buf $0 " "; next } print buf $0; buf = "" }' "$dockerfile")

# The build stage is the one whose RUN calls `cargo build`; keep its WORKDIR, ENV, COPY, RUN.
stage=() build=()
for line in "${lines[@]}" ""; do
  word=${line%%[[:space:]]*}
  if [ "${word^^}" = FROM ] || [ -z "$line" ]; then
    for l in "${stage[@]}"; do
      if [[ $l =~ ^[Rr][Uu][Nn][[:space:]].*cargo[[:space:]]+build ]]; then build=("${stage[@]}"); break; fi
    done
    [ ${#build[@]} -eq 0 ] || break
    stage=()
  fi
  stage+=("$line")
done
[ ${#build[@]} -gt 0 ] || die "no stage of $dockerfile runs cargo build"

ctx=$(mktemp -d "${TMPDIR:-/tmp}/docker-context.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
workdir=/ cmd="" envs=()
shopt -s nullglob
for line in "${build[@]}"; do
  read -r word rest <<< "$line"
  case ${word^^} in
    WORKDIR) case $rest in /*) workdir=$rest ;; *) workdir=${workdir%/}/$rest ;; esac ;;
    ENV) for kv in $rest; do if [[ $kv == *=* ]]; then envs+=("$kv"); fi; done ;;
    ADD) die "ADD is not modelled: $line" ;;
    COPY)
      [[ $rest != \[* ]] || die "COPY's JSON form is not modelled: $line"
      read -r -a args <<< "$rest"
      while [[ ${args[0]} == --* ]]; do
        [[ ${args[0]} != --from=* ]] || continue 2 # a copy from another stage or image
        args=("${args[@]:1}")
      done
      dest=${args[-1]} srcs=("${args[@]:0:${#args[@]}-1}")
      [[ $dest == /* ]] || dest=${workdir%/}/$dest
      shown=${dest//\/.\//\/}
      case $dest in
        "$workdir" | "$workdir"/ | "${workdir%/}"/*) rel=${dest#"${workdir%/}"} && dest=$ctx/${rel#/} ;;
        *) die "COPY outside the WORKDIR $workdir is not modelled: $line" ;;
      esac
      for src in "${srcs[@]}"; do
        matches=("$root"/$src)
        [ ${#matches[@]} -gt 0 ] && [ -e "${matches[0]}" ] || die "COPY source $src does not exist"
        for m in "${matches[@]}"; do
          if [ -d "$m" ]; then # a folder's contents go into dest
            mkdir -p "$dest" && cp -a "$m/." "$dest/"
          elif [[ $dest == */ ]] || [ ${#srcs[@]} -gt 1 ]; then
            mkdir -p "$dest" && cp -a "$m" "$dest/"
          else
            mkdir -p "$(dirname "$dest")" && cp -a "$m" "$dest"
          fi
          echo "copied ${m#"$root"/}$([ -d "$m" ] && echo /) -> $shown"
        done
      done
      ;;
    RUN) if [[ $rest =~ cargo[[:space:]]+build ]]; then cmd=$rest; fi ;;
  esac
done
while [[ $cmd == --* ]]; do cmd=${cmd#*[[:space:]]}; done # RUN --mount=... flags
[[ $cmd != \[* ]] || die "RUN's JSON form is not modelled"
cmd=$(sed -E 's/cargo([[:space:]]+)build/cargo\1build --offline/' <<< "$cmd")

echo "docker-context-check: in $ctx (as $workdir): $cmd"
mkdir -p "$target"
(cd "$ctx" && env ${envs[@]+"${envs[@]}"} CARGO_TARGET_DIR="$target" sh -c "$cmd") ||
  die "the build failed in the Dockerfile's context (a missing COPY?) after $((SECONDS - start))s"
echo "docker-context-check: the Dockerfile's build context builds ($((SECONDS - start))s)"
if [ -n "$out" ]; then
  built=$(grep -oE -- '--bin[[:space:]]+[^[:space:]]+' <<< "$cmd" | awk '{print $2}')
  mkdir -p "$(dirname "$out")"
  cp "$target/release/$built" "$out.tmp" && mv "$out.tmp" "$out"
  echo "docker-context-check: $out"
fi
