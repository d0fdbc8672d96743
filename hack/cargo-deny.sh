#!/usr/bin/env bash
# Checks every dependency's licence, bans and sources with cargo-deny, built from crates.io at a
# pinned version into a cache outside the repository. Offline: it reads only the crates cargo
# has already fetched. (Advisories need the RustSec database from GitHub, which this machine
# cannot reach, so `advisories` is not checked here; run `cargo deny check advisories` where
# GitHub is reachable.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=0.20.2
dir=${XDG_CACHE_HOME:-$HOME/.cache}/groupdocs-token-operator/cargo-deny-$version
if [ ! -x "$dir/bin/cargo-deny" ]; then
  echo "cargo-deny $version: building (once; cached in $dir)"
  cargo install --locked --quiet cargo-deny --version "$version" --root "$dir"
fi
cd "$root"
cargo fetch --locked --quiet
"$dir/bin/cargo-deny" --offline --workspace check licenses bans sources
echo "cargo-deny $version: licences, bans and sources clean"
