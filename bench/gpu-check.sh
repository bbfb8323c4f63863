#!/usr/bin/env bash
# bench/gpu-check.sh: the prepared check of the native runtime on a lent NVIDIA GPU machine (the
# `device` tool: no node there, no network, at most 64 MiB travels per call, /tmp and ignored
# files survive between calls only while the machine is warm, about 30 s). It reports:
#   - whether the CUDA provider loads, and which ONNX Runtime core library (the onnxruntime-gpu
#     wheel's, brought from here; the CUDA 13 libraries are the machine's own NVIDIA wheels);
#   - greedy tokens on CUDA (fp32 fixture tiny-random-llama-siglip, text cases) against the CPU
#     golden file;
#   - decode step time at batch 1, 8 and 32 with an 800-position past on a TinyLlama-1.1B-shaped
#     random-weight decoder in the shared_kv form, fp16 KV (made there by
#     bench/make_synthetic_decoder.py), and per step the bytes into JS and host<->device;
#   - HF transformers generate() decode speed of the same shape, fp16, on the same GPU
#     (bench/hf_generate_speed.py), and the ratios, all in one run.
#
# 1. Here (a CPU machine with the project installed, `npm run setup:cuda` done, or CUDA_DIR set):
#      flock /work/heavy.lock bash bench/gpu-check.sh prepare
#    builds .gpu-check/part1 .. partN (node, the compiled server, the addon, trimmed
#    node_modules and the wheel's three ORT libraries, xz-compressed and split so that each part
#    plus the working tree stays under 64 MiB) and prints the device calls to make.
# 2. There, back to back (each within ~30 s of the last, so the machine stays warm):
#      run(command="bash bench/gpu-check.sh receive", carry=[".gpu-check/part1"])   # ... up to N-1
#      run(command="bash bench/gpu-check.sh run", carry=[".gpu-check/partN"], timeout_s=600)
#    The last call checks that every piece arrived (else says which are missing: send them
#    again), unpacks, runs everything and writes $OUT/gpu-check.json, $OUT/hf.json and
#    $OUT/summary.txt (also printed).
# GPU_CHECK_PROVIDER=cpu GPU_CHECK_SHAPE=tiny PYTHON=.venv/bin/python bash bench/gpu-check.sh run
# tries the whole flow on a CPU machine of the project (after prepare and receive), small.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle="$root/.gpu-check"
work=/tmp/gpu-check
py="${PYTHON:-python3}" # the one with torch, transformers, onnx and the NVIDIA wheels
piece_bytes=$((40 * 1024 * 1024))

prepare() {
  local cuda="${CUDA_DIR:-$root/.cuda}" capi stage cache="$bundle/cache" stamp
  capi="$(dirname "$(find "$cuda" -name 'libonnxruntime_providers_cuda.so' -print -quit 2>/dev/null)")"
  [ -f "$capi/libonnxruntime_providers_cuda.so" ] || { echo "gpu-check: no onnxruntime-gpu under $cuda: run npm run setup:cuda first (or set CUDA_DIR)" >&2; exit 1; }
  [ -f "$root/native/build/tinyllava_runtime.node" ] || { echo "gpu-check: the native addon is not built: npm run build:native" >&2; exit 1; }
  (cd "$root" && npm run --silent build)
  rm -rf "$bundle"/part* "$bundle/MANIFEST" && mkdir -p "$cache"
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' RETURN
  # What does not change with the code (node, the wheel's ORT libraries, node_modules) is
  # compressed once, the slow part (minutes), and kept in .gpu-check/cache.
  stamp="$(ls -lL "$(command -v node)" "$capi"/libonnxruntime* "$root/package-lock.json" | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$cache/static.tar.xz" ] || [ "$(cat "$cache/static.stamp" 2>/dev/null)" != "$stamp" ]; then
    mkdir -p "$stage/static/root/bin" "$stage/static/root/ort"
    cp "$(command -v node)" "$stage/static/root/bin/node"
    cp "$capi"/libonnxruntime.so.1.* "$capi/libonnxruntime_providers_shared.so" "$capi/libonnxruntime_providers_cuda.so" "$stage/static/root/ort/"
    # node_modules without what the check never loads (onnxruntime-node's binaries, build
    # tools, other platforms' tokenizers); onnxruntime-node's package.json names the ORT version.
    tar -C "$root" -cf - \
      --exclude='node_modules/onnxruntime-node/bin' --exclude='node_modules/typescript' --exclude='node_modules/openai' \
      --exclude='node_modules/@redocly' --exclude='node_modules/openapi-typescript' --exclude='node_modules/@types' \
      --exclude='node_modules/tokenizers/tokenizers.[!l]*' --exclude='node_modules/tokenizers/tokenizers.linux-[!x]*' \
      --exclude='node_modules/tokenizers/tokenizers.linux-x64-musl.node' node_modules | tar -C "$stage/static/root" -xf -
    echo "gpu-check: compressing $(du -sh "$stage/static/root" | cut -f1) once (minutes) ..." >&2
    tar -C "$stage/static" -cf - root | xz -T2 -6 > "$cache/static.tar.xz"
    echo "$stamp" > "$cache/static.stamp"
  fi
  mkdir -p "$stage/app/root/native/build"
  cp -r "$root/dist" "$stage/app/root/dist"
  cp "$root/native/build/tinyllava_runtime.node" "$stage/app/root/native/build/"
  cp "$root/package.json" "$stage/app/root/"
  tar -C "$stage/app" -cf - root | xz -T2 -6 > "$stage/app.tar.xz"
  # Two xz streams, two tar archives, one after the other (unpacked with tar --ignore-zeros).
  cat "$cache/static.tar.xz" "$stage/app.tar.xz" | split -b "$piece_bytes" -d -a 2 - "$stage/payload.tar.xz."
  local n=0 p
  for p in "$stage"/payload.tar.xz.[0-9]*; do
    n=$((n + 1))
    mkdir -p "$bundle/part$n"
    mv "$p" "$bundle/part$n/"
  done
  (cd "$bundle" && sha256sum part*/payload.tar.xz.* | sed 's# part[0-9]*/# #' > MANIFEST)
  cp "$bundle/MANIFEST" "$bundle/part$n/"
  echo "gpu-check: $n parts in $bundle; on the GPU machine, back to back:" >&2
  for p in $(seq 1 $((n - 1))); do echo "  run(command=\"bash bench/gpu-check.sh receive\", carry=[\".gpu-check/part$p\"])" >&2; done
  echo "  run(command=\"bash bench/gpu-check.sh run\", carry=[\".gpu-check/part$n\"], timeout_s=600)" >&2
}

receive() {
  mkdir -p "$work/pieces"
  local f
  for f in "$bundle"/part*/*; do [ -f "$f" ] && cp -f "$f" "$work/pieces/"; done
  echo "gpu-check: $(ls "$work/pieces" | grep -c payload || true) pieces in $work/pieces" >&2
}

xz_decompress() {
  if command -v xz >/dev/null; then xz -dc; else "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)'; fi
}

run_check() {
  receive
  local out="${OUT:-$work/out}" missing=0 name sum
  mkdir -p "$out"
  [ -f "$work/pieces/MANIFEST" ] || { echo "gpu-check: MANIFEST missing: the last part was not carried" >&2; exit 3; }
  while read -r sum name; do
    if [ ! -f "$work/pieces/$name" ] || [ "$(sha256sum < "$work/pieces/$name" | cut -d' ' -f1)" != "$sum" ]; then
      echo "gpu-check: piece $name is missing or damaged: carry its part again" >&2
      missing=1
    fi
  done < "$work/pieces/MANIFEST"
  [ "$missing" = 0 ] || exit 3
  if [ ! -x "$work/root/bin/node" ]; then
    cat "$work/pieces"/payload.tar.xz.* | xz_decompress | tar -C "$work" --ignore-zeros -xf -
  fi
  local app="$work/root" cuda="$work/cuda"
  export PATH="$app/bin:$PATH"
  # The CUDA folder the server expects: the wheel's ORT libraries, and the machine's own NVIDIA
  # CUDA 13 wheels (torch's) linked in by file name.
  rm -rf "$cuda" && mkdir -p "$cuda/onnxruntime-gpu" "$cuda/nvidia"
  ln -s "$app"/ort/* "$cuda/onnxruntime-gpu/"
  local site
  for site in $("$py" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))'); do
    [ -d "$site/nvidia" ] || continue
    find "$site/nvidia" -name 'lib*.so*' -type f | while read -r lib; do ln -sf "$lib" "$cuda/nvidia/$(basename "$lib")"; done
  done
  {
    echo "== gpu-check $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi failed"
    echo "node $(node --version); CUDA libraries linked: $(ls "$cuda/nvidia" | wc -l)"
  } | tee "$out/summary.txt"
  local synth="$work/synth"
  local provider="${GPU_CHECK_PROVIDER:-cuda}" shape="${GPU_CHECK_SHAPE:-tinyllama}"
  [ -f "$synth/dims.json" ] && grep -q "\"$shape\"" "$synth/dims.json" || "$py" "$root/bench/make_synthetic_decoder.py" --out "$synth" --shape "$shape" --dtype fp16 >&2
  # The bundle has no onnxruntime-node binaries (CUDA loads the wheel's core); a CPU dry run
  # here borrows the project's.
  if [ "$provider" = cpu ] && [ ! -e "$app/node_modules/onnxruntime-node/bin" ] && [ -d "$root/node_modules/onnxruntime-node/bin" ]; then
    ln -s "$root/node_modules/onnxruntime-node/bin" "$app/node_modules/onnxruntime-node/bin"
  fi
  # The repo's dist is not there (ignored); the bundle's dist imports the bundle's node_modules.
  set +e
  (cd "$app" && node dist/bench/gpu-check.js --execution-provider "$provider" --cuda-dir "$cuda" \
    --golden-package "$root/test/fixtures/packages/tiny-random-llama-siglip" --decoder-dir "$synth" \
    --batches 1,8,32 --past 800 --steps 20) > "$out/gpu-check.json" 2> >(tee "$out/gpu-check.log" >&2)
  local node_rc=$?
  PYTHONUNBUFFERED=1 "$py" "$root/bench/hf_generate_speed.py" --dims "$synth/dims.json" --batches 1,8,32 --past 800 --new 64 \
    --device "$([ "$provider" = cuda ] && echo cuda || echo cpu)" > "$out/hf.json" 2> >(tee "$out/hf.log" >&2)
  local hf_rc=$?
  set -e
  "$py" - "$out" "$node_rc" "$hf_rc" <<'EOF' | tee -a "$out/summary.txt"
import json, sys
out, node_rc, hf_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(name):
    try:
        return json.load(open(f"{out}/{name}"))
    except Exception as e:
        return {"error": f"{name}: {e}"}
g, h = load("gpu-check.json"), load("hf.json")
print(f"native check exit {node_rc}, HF exit {hf_rc}")
print("provider:", json.dumps(g.get("provider")))
gold = g.get("golden") or {}
print("greedy tokens equal the CPU golden:", gold.get("allEqual"), [(c["name"], c["equal"]) for c in gold.get("cases", [])])
steps = (g.get("steps") or {}).get("timings", [])
hf = {r["batch"]: r for r in h.get("results", [])}
for t in steps:
    r = hf.get(t["batch"])
    ratio = f"{t['tokensPerSecond'] / r['decodeTokensPerSecond']:.2f}x HF" if r else "no HF number"
    print(f"B={t['batch']:>2} past {t['past']}: step {t['stepMs']} ms, {t['tokensPerSecond']} tok/s ({ratio}); per step into JS {t['perStep']['bytesToJs']} B "
          f"(logits {t['logitsBytes']}), host->device {t['perStep']['hostToDeviceBytes']} B, device->host {t['perStep']['deviceToHostBytes']} B")
print("only logits cross per step:", (g.get("steps") or {}).get("onlyLogitsCross"))
print("aggregate over batch 1:", (g.get("steps") or {}).get("aggregateOverBatch1"))
print("HF generate:", json.dumps(h.get("results", h)))
EOF
}

case "${1:-}" in
  prepare) prepare ;;
  receive) receive ;;
  run) run_check ;;
  *) echo "usage: bash bench/gpu-check.sh prepare|receive|run (see its header)" >&2; exit 2 ;;
esac
