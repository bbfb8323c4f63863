#!/usr/bin/env bash
# The whole test suite: the exporter's pytest suite (exports every tiny preset fresh and checks
# parity against PyTorch), then the TypeScript suite on the committed fixtures (the chat page's
# test drives Debian's chromium, installed here when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup-python.sh
bash tools/setup-browser.sh
npm run --silent build
.venv/bin/python -m pytest -q test/export
shopt -s globstar  # node 20's test runner does not expand globs itself
node --test --test-concurrency=1 dist/test/**/*.test.js
