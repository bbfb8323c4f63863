#!/usr/bin/env bash
# `npm run train-demo -- [train.py flags]`: trains the demo TinyLLaVA on synthetic shapes
# (tools/train_demo/train.py), exports its TinyLLaVA_Factory checkpoint with the exporter
# (parity-checked) to models/tinyllava-demo, and adds the bundled example and the training report.
# DEMO_WORK_DIR (default .cache/train-demo) holds the tokenizer, configs and checkpoint;
# DEMO_OUT (default models/tinyllava-demo) is the package written.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="${DEMO_WORK_DIR:-$root/.cache/train-demo}"
out="${DEMO_OUT:-$root/models/tinyllava-demo}"
bash "$root/tools/setup-python.sh"
start=$(date +%s)
PYTHONPATH="$root/tools/export" "$root/.venv/bin/python" "$root/tools/train_demo/train.py" --out "$work" "$@"
bash "$root/tools/export/run.sh" --checkpoint "$work/checkpoint" --out "$out" --name tinyllava-demo --force
"$root/.venv/bin/python" "$root/tools/train_demo/synth.py" --examples --out "$out/examples"
cp "$work/checkpoint/train_report.json" "$out/train_report.json"
echo "train-demo: wrote $out in $(( $(date +%s) - start )) s"
