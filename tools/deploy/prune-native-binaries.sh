#!/usr/bin/env bash
# Removes from a node_modules folder the prebuilt binaries of other platforms than linux-x64
# (glibc), which the images never load: onnxruntime-node ships darwin, win32 and linux-arm64
# builds of itself (~245 MB), tokenizers a .node file for each of 13 targets (~60 MB). Fails when
# the linux-x64 ones are not where this expects them, so that a new package layout is noticed.
#
#   bash tools/deploy/prune-native-binaries.sh node_modules
set -euo pipefail
nm="$1"
keep=(
  "$nm/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1"
  "$nm/onnxruntime-node/bin/napi-v6/linux/x64/onnxruntime_binding.node"
  "$nm/tokenizers/tokenizers.linux-x64-gnu.node"
)
for f in "${keep[@]}"; do
  [ -f "$f" ] || { echo "prune-native-binaries: $f is missing; has the package's layout changed?" >&2; exit 1; }
done
before="$(du -sm "$nm" | cut -f1)"
ort="$nm/onnxruntime-node/bin/napi-v6"
find "$ort" -mindepth 1 -maxdepth 1 ! -name linux -exec rm -rf {} +
find "$ort/linux" -mindepth 1 -maxdepth 1 ! -name x64 -exec rm -rf {} +
find "$nm/tokenizers" -maxdepth 1 -name 'tokenizers.*.node' ! -name tokenizers.linux-x64-gnu.node -delete
echo "prune-native-binaries: node_modules ${before} MB -> $(du -sm "$nm" | cut -f1) MB" >&2
