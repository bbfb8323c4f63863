#!/usr/bin/env bash
# The fused decoder against the unfused one, alternating, ROUNDS rounds (default 3), in one run: the same random
# TinyLlama-1.1B+SigLIP weights exported by 41c0a75's exporter (FUSED) and by 5fc70ad's (UNFUSED),
# timed by lcb-steps.mjs (bench/decode-steps.ts; native runtime, 2 threads, median of 20 steps).
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
FUSED=${FUSED:?fused package}; UNFUSED=${UNFUSED:?unfused package}
steps="$root/bench/results/2026-12-03-llamacpp/lcb-steps.mjs"
for r in $(seq 1 "${ROUNDS:-3}"); do
  echo "== round $r fused"; (cd "$root" && node "$steps" "$FUSED" native 70,800 1,8)
  echo "== round $r unfused"; (cd "$root" && node "$steps" "$UNFUSED" native 70,800 1,8)
done
