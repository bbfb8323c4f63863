#!/usr/bin/env bash
# Builds the project's Rust addons, run by `npm ci` / `npm install` (package.json "install").
#
# Each folder native/<crate>/ with a Cargo.toml is a napi-rs addon (a cdylib). All of them share
# one target directory, so that crates they have in common compile once, and each built
# library lib<name>.so is copied to native/build/<name>.node, where src/ loads it from.
# Without cargo the addons are skipped with a warning (the server then says, at start-up, which
# backend it falls back to); a build that fails with cargo present fails the install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shopt -s nullglob
manifests=("$root"/native/*/Cargo.toml)
[ ${#manifests[@]} -gt 0 ] || exit 0

if ! command -v cargo >/dev/null 2>&1; then
  echo "build-native: cargo not found; skipping the native addons (install Rust, e.g. Debian's cargo-web, then run npm run build:native)" >&2
  exit 0
fi

export CARGO_TARGET_DIR="$root/native/target"
mkdir -p "$root/native/build"
for manifest in "${manifests[@]}"; do
  echo "build-native: building $(basename "$(dirname "$manifest")") ..." >&2
  cargo build --release --locked --quiet --manifest-path "$manifest"
done
for lib in "$CARGO_TARGET_DIR"/release/lib*.so; do
  name="$(basename "$lib" .so)"
  cp "$lib" "$root/native/build/${name#lib}.node"
done
