#!/usr/bin/env bash
# Build the real `docker compose` CLI from the Go module proxy into ~/.cache/winnow/bin, so that
# tests/deploy/test_compose.py can run `docker-compose config` on the generated files where no
# Docker is installed (CI). `config` needs no Docker engine. Idempotent; about a minute with a
# warm module cache, a few minutes cold. Needs Go (the module asks for go >= 1.26.8; with
# GOTOOLCHAIN=auto an older go fetches that toolchain from the proxy).
#
#   bash docker/build-compose-cli.sh
set -euo pipefail

version="v5.6.0"  # the newest release whose dependencies the module proxy serves (v5.7.0's do not all resolve)
bin_dir="${WINNOW_CACHE:-$HOME/.cache/winnow}/bin"
target="$bin_dir/docker-compose"

if [ -x "$target" ] && "$target" version >/dev/null 2>&1 && [ -f "$target.version" ] \
   && [ "$(cat "$target.version")" = "$version" ]; then
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "build-compose-cli: go is not installed" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
# `go install pkg@version` refuses this module (its go.mod has exclude directives): build inside it
dir="$(go mod download -json "github.com/docker/compose/v5@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
mkdir -p "$bin_dir"
(cd "$work/src" && go build -trimpath -o "$target.tmp" ./cmd)
mv "$target.tmp" "$target"
echo "$version" > "$target.version"
"$target" version
