#!/usr/bin/env bash
# Sets up the Python environment the exporter, its tests and the API fuzzer need, idempotently.
#
# PyTorch comes from Debian's python3-torch (1.13, CPU only): the PyPI wheel is a multi-GB
# CUDA build. The venv therefore sits on Debian's /usr/bin/python3 with system site-packages,
# and pip adds the pinned rest (transformers, onnx, onnxruntime, tokenizers, ...).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
# The exporter's packages and the fuzzer's (schemathesis), resolved together.
reqs=("$root/tools/export/requirements.txt" "$root/tools/fuzz/requirements.txt")
stamp="$venv/.requirements.sha256"
sys_python=/usr/bin/python3

# Debian's torch calls the system BLAS; without OpenBLAS that is the netlib reference BLAS,
# which makes exporting a real-size model take an hour instead of minutes.
if ! "$sys_python" -c 'import torch' >/dev/null 2>&1 || ! [ -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup-python: installing Debian's python3-torch (CPU) ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-torch python3-venv python3-pil libopenblas0-pthread >/dev/null
  else
    echo "setup-python: PyTorch is missing for $sys_python; run as root: apt-get install python3-torch python3-venv python3-pil libopenblas0-pthread" >&2
    exit 1
  fi
fi

want="$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup-python: creating $venv ..." >&2
"$sys_python" -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]/#/-r}"
echo "$want" > "$stamp"
