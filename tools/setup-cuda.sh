#!/usr/bin/env bash
# `npm run setup:cuda [-- DIR]`: installs the CUDA execution provider of the native runtime from
# PyPI into DIR (default: $CUDA_DIR, else .cuda/ in the project), where the server finds it with
# --execution-provider cuda (docs/gpu.md has the contract):
#   DIR/onnxruntime-gpu/  the onnxruntime-gpu wheel of onnxruntime-node's version (its core
#                         library and CUDA provider; its Python parts are unused)
#   DIR/nvidia/           NVIDIA's CUDA 13 wheels: runtime, cuBLAS, cuRAND, cuFFT, NVRTC,
#                         nvJitLink, cuDNN 9
#   DIR/installed.txt     what was installed (a rerun with the same pins does nothing)
# Needs python3 with pip and about 3 GB of disk; downloads about 1.6 GB. The NVIDIA driver
# (R580 or newer, for CUDA 13.0) is the machine's, not a wheel: the server checks it at start.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-${CUDA_DIR:-$root/.cuda}}"
python="${PYTHON:-python3}"

ort_version="$(sed -n 's/.*"onnxruntime-node": *"\([0-9.]*\)".*/\1/p' "$root/package.json")"
[ -n "$ort_version" ] || { echo "setup-cuda: cannot read the onnxruntime-node version from package.json" >&2; exit 1; }
# CUDA 13.0 releases (what onnxruntime-gpu $ort_version is built for; any R580+ driver runs them).
nvidia=(
  nvidia-cuda-runtime==13.0.96
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.0.35
  nvidia-cufft==12.0.0.61
  nvidia-cuda-nvrtc==13.0.88
  nvidia-nvjitlink==13.0.88
  nvidia-cudnn-cu13==9.14.0.64
)
want="onnxruntime-gpu==$ort_version ${nvidia[*]}"
if [ -f "$dir/installed.txt" ] && [ "$(cat "$dir/installed.txt")" = "$want" ]; then
  echo "setup-cuda: $dir already holds $want" >&2
  exit 0
fi
if ! "$python" -m pip --version >/dev/null 2>&1; then
  echo "setup-cuda: $python has no pip (Debian/Ubuntu: apt-get install python3-pip); set PYTHON to another interpreter" >&2
  exit 1
fi
pip=("$python" -m pip install --quiet --disable-pip-version-check --no-cache-dir --only-binary=:all: --upgrade)
mkdir -p "$dir"
rm -f "$dir/installed.txt"
echo "setup-cuda: installing onnxruntime-gpu==$ort_version into $dir/onnxruntime-gpu ..." >&2
# Only its shared libraries are used, so any CPython ABI will do: pick one, skip its Python deps.
"${pip[@]}" --no-deps --target "$dir/onnxruntime-gpu" --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 "onnxruntime-gpu==$ort_version"
echo "setup-cuda: installing ${nvidia[*]} into $dir/nvidia ..." >&2
# One pip call for all of them: they share the nvidia/ namespace folder, which --target replaces per call.
"${pip[@]}" --no-deps --target "$dir/nvidia" "${nvidia[@]}"
echo "$want" > "$dir/installed.txt"
echo "setup-cuda: done ($(du -sh "$dir" | cut -f1) in $dir); start the server with --execution-provider cuda" >&2
