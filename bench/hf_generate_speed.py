"""HF transformers generate() decode speed for bench/gpu-check.sh: a random-init Llama of the same
shape as bench/make_synthetic_decoder.py's (dims.json), fp16 on the GPU, greedy, a prompt of
--past tokens per row and a fixed number of new tokens; prints JSON with the decode tokens/s of
all rows at each batch (decode time = generate(past + N) - generate(past + 1), i.e. without the
prefill).

  python3 bench/hf_generate_speed.py --dims DIR/dims.json [--batches 1,8,32] [--past 800] [--new 64]
"""

import argparse
import contextlib
import json
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dims", required=True)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--past", type=int, default=800)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--device", default="cuda", help="cpu: a smoke test of this script (fp32)")
    a = p.parse_args()
    d = json.load(open(a.dims))
    config = LlamaConfig(
        hidden_size=d["hiddenSize"],
        intermediate_size=d["intermediateSize"],
        num_hidden_layers=d["numLayers"],
        num_attention_heads=d["numAttentionHeads"],
        num_key_value_heads=d["numKvHeads"],
        head_dim=d["headDim"],
        vocab_size=d["vocabSize"],
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    dtype = torch.float16 if a.device == "cuda" else torch.float32
    # Built on the GPU where torch can (seconds instead of a minute of CPU init).
    where = torch.device(a.device) if hasattr(torch.device, "__enter__") else contextlib.nullcontext()
    with where:
        model = LlamaForCausalLM(config).to(device=a.device, dtype=dtype).eval()
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)

    def run(batch: int, new: int) -> float:
        ids = torch.randint(0, d["vocabSize"], (batch, a.past), device=a.device)
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
        sync()
        return time.perf_counter() - t0

    results = []
    for b in [int(x) for x in a.batches.split(",")]:
        run(b, 2)  # warm-up
        prefill = min(run(b, 1) for _ in range(2))
        whole = min(run(b, a.new + 1) for _ in range(2))
        seconds = max(whole - prefill, 1e-9)
        results.append({"batch": b, "past": a.past, "newTokens": a.new, "decodeTokensPerSecond": round(b * a.new / seconds, 1), "stepMs": round(seconds / a.new * 1000, 3)})
        print(f"hf generate B={b}: {results[-1]['stepMs']} ms per step", flush=True, file=sys.stderr)
    device = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(json.dumps({"torch": torch.__version__, "device": device, "dtype": str(dtype).removeprefix("torch."), "results": results}, indent=2))


if __name__ == "__main__":
    main()
