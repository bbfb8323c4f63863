#!/usr/bin/env bash
# Copies what the server needs at run time from a built checkout (after `npm run build`,
# `npm run build:native` and `npm prune --omit=dev`) into a folder that becomes /app in the
# images: the compiled server, its production node_modules, the Rust addons, openapi.yaml,
# package.json, the chat page (ui/) and the bundled default model package (the CUDA image adds
# .cuda/, from `npm run setup:cuda`). Tests, the exporter and other model exports stay out.
#
#   bash tools/deploy/runtime-files.sh /app /out
set -euo pipefail
src="$1"
out="$2"
rm -rf "$out"
mkdir -p "$out/dist" "$out/native/build" "$out/models"
cp -a "$src/dist/src" "$out/dist/"
cp -a "$src/package.json" "$src/openapi.yaml" "$src/node_modules" "$src/ui" "$out/"
cp -a "$src/models/tinyllava-demo" "$out/models/"
if compgen -G "$src/native/build/*.node" >/dev/null; then cp -a "$src"/native/build/*.node "$out/native/build/"; fi
