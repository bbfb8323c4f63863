#!/usr/bin/env bash
# Side by side, alternating, 3 rounds: our native runtime's decode steps (bench/decode-steps.ts via
# lcb-steps.mjs) on an exported TinyLlama-1.1B+SigLIP package, and llama.cpp's llama-bench (one
# stream) and llama-batched-bench (1 and 8 sequences) on the same shape as GGUF; 2 threads each;
# past 70 and 800. L: llama.cpp's build/bin; PKG: our package; GGUF: llama.cpp's model.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
L=${L:?llama.cpp build/bin}; PKG=${PKG:?package dir}; GGUF=${GGUF:?gguf file}
for r in 1 2 3; do
  echo "== round $r ours"; (cd "$root" && node "$here/lcb-steps.mjs" "$PKG" native 70,800 1,8)
  echo "== round $r llama-bench"; "$L/llama-bench" -m "$GGUF" -t 2 -p 0 -n 32 -d 70,800 -r 1 2>/dev/null | grep -E "tg32"
  echo "== round $r llama-batched-bench"; "$L/llama-batched-bench" -m "$GGUF" -t 2 -c 8192 -b 2048 -ub 512 -npp 70,800 -ntg 32 -npl 1,8 2>/dev/null | grep -E "^\|"
done
