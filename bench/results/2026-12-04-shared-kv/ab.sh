#!/usr/bin/env bash
# Decode steps of several packages, alternating, ROUNDS rounds (default 3), in one run:
#   ROUNDS=3 bash ab.sh standard=DIR shared_kv=DIR
# Each round times every LABEL=DIR in the order given with lcb-steps.mjs (bench/decode-steps.ts;
# native runtime, 2 threads, B rows x past positions, median of 20 steps), printing
# "== round R LABEL" before its lines.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
[ $# -gt 0 ] || { echo "usage: ROUNDS=3 $0 LABEL=PACKAGE_DIR ..." >&2; exit 2; }
steps="$root/bench/results/2026-12-03-llamacpp/lcb-steps.mjs"
for r in $(seq 1 "${ROUNDS:-3}"); do
  for pair in "$@"; do
    echo "== round $r ${pair%%=*}"
    (cd "$root" && node "$steps" "${pair#*=}" native 70,800 1,8)
  done
done
