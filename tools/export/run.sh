#!/usr/bin/env bash
# `npm run export -- ...`: runs the exporter in the project's Python environment.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bash "$root/tools/setup-python.sh"
PYTHONPATH="$root/tools/export${PYTHONPATH:+:$PYTHONPATH}" exec "$root/.venv/bin/python" -m tinyllava_export "$@"
