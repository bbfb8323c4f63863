"""Writes a random-weight Llama-shaped decoder in the `shared_kv` form of docs/model-package.md
(the form built for CUDA): per layer RMSNorm, one fused QKV MatMul, GroupQueryAttention over one
fp16 buffer that is both past and present (rotary inside the op), the output projection, RMSNorm
and a fused gate/up MatMul with SiLU; then the final norm, the last position and the LM head.
Plus embed_tokens.onnx and dims.json. Used by bench/gpu-check.sh to time decode steps of a
TinyLlama-1.1B-shaped model on a GPU with nothing downloaded; the same shape goes to HF
transformers (bench/hf_generate_speed.py) for the ratio. Random weights: timings only, the text
is meaningless.

  python3 bench/make_synthetic_decoder.py --out DIR [--shape tinyllama|tiny] [--dtype fp16|fp32]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SHAPES = {
    # TinyLlama-1.1B: 22 layers, hidden 2048, 32 query / 4 KV heads of 64, MLP 5632, vocab 32000
    "tinyllama": dict(layers=22, hidden=2048, heads=32, kv_heads=4, head_dim=64, intermediate=5632, vocab=32000),
    "tiny": dict(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=256),
}
MAX_POS = 4096


def build(out: Path, shape: str, dtype: str) -> None:
    s = SHAPES[shape]
    L, D, HQ, HKV, DH, I, V = (s[k] for k in ("layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab"))
    np_t = np.float16 if dtype == "fp16" else np.float32
    onnx_t = TensorProto.FLOAT16 if dtype == "fp16" else TensorProto.FLOAT
    rng = np.random.default_rng(0)
    inits, nodes, names = [], [], set()

    def const(name, array):
        if name not in names:
            names.add(name)
            inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def w(name, *shape_, scale=0.02):
        return const(name, (rng.standard_normal(shape_, dtype=np.float32) * scale).astype(np_t))

    n = [0]

    def op(op_type, inputs, outputs=None, domain=None, **attrs):
        n[0] += 1
        outs = outputs or [f"{op_type.lower()}_{n[0]}"]
        nodes.append(helper.make_node(op_type, inputs, outs, domain=domain, **attrs))
        return outs[0] if len(outs) == 1 else outs

    eps = const("eps", np.array(1e-5, dtype=np_t))

    def rms_norm(x, name):
        var = op("ReduceMean", [op("Mul", [x, x])], axes=[-1], keepdims=1)
        return op("Mul", [op("Div", [x, op("Sqrt", [op("Add", [var, eps])])]), const(name, np.ones(D, dtype=np_t))])

    inv = 1.0 / (10000 ** (np.arange(0, DH, 2, dtype=np.float64) / DH))
    angles = np.arange(MAX_POS, dtype=np.float64)[:, None] * inv[None, :]
    const("cos_cache", np.cos(angles).astype(np_t))
    const("sin_cache", np.sin(angles).astype(np_t))

    x = op("Cast", ["inputs_embeds"], to=onnx_t)  # the graph boundary is fp32
    for l in range(L):
        h = rms_norm(x, f"ln1_{l}")
        qkv = op("MatMul", [h, w(f"wqkv{l}", D, (HQ + 2 * HKV) * DH)])
        q, k, v = op("Split", [qkv, const("split_qkv", np.array([HQ * DH, HKV * DH, HKV * DH], dtype=np.int64))], outputs=[f"q{l}", f"k{l}", f"v{l}"], axis=-1)
        attn, _, _ = op(
            "GroupQueryAttention",
            [q, k, v, f"past_key_values.{l}.key", f"past_key_values.{l}.value", "seqlens_k", "total_sequence_length", "cos_cache", "sin_cache"],
            outputs=[f"attn{l}", f"present.{l}.key", f"present.{l}.value"],
            domain="com.microsoft",
            num_heads=HQ,
            kv_num_heads=HKV,
            do_rotary=1,
        )
        x = op("Add", [x, op("MatMul", [attn, w(f"wo{l}", HQ * DH, D)])])
        h = rms_norm(x, f"ln2_{l}")
        gu = op("MatMul", [h, w(f"wgu{l}", D, 2 * I)])
        g, u = op("Split", [gu, const("split_gu", np.array([I, I], dtype=np.int64))], outputs=[f"g{l}", f"u{l}"], axis=-1)
        act = op("Mul", [op("Mul", [g, op("Sigmoid", [g])]), u])
        x = op("Add", [x, op("MatMul", [act, w(f"wd{l}", I, D)])])
    x = rms_norm(x, "ln_f")
    last = op("Gather", [x, const("minus_one", np.array(-1, dtype=np.int64))], axis=1)
    op("Cast", [op("MatMul", [last, w("lm_head", D, V)])], outputs=["logits"], to=TensorProto.FLOAT)

    kv = lambda name: helper.make_tensor_value_info(name, onnx_t, ["B", HKV, "Cap", DH])  # noqa: E731
    inputs = [
        helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["B", "T", D]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["B"]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
        *[kv(f"past_key_values.{l}.{kind}") for l in range(L) for kind in ("key", "value")],
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", V]), *[kv(f"present.{l}.{kind}") for l in range(L) for kind in ("key", "value")]]
    save(out / "decoder.onnx", helper.make_graph(nodes, "decoder", inputs, outputs, inits))

    table = (rng.standard_normal((V, D), dtype=np.float32) * 0.02).astype(np.float32)
    embed = helper.make_graph(
        [helper.make_node("Gather", ["embed", "input_ids"], ["inputs_embeds"], axis=0)],
        "embed_tokens",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "T"])],
        [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["B", "T", D])],
        [numpy_helper.from_array(table, "embed")],
    )
    save(out / "embed_tokens.onnx", embed)
    dims = {"numLayers": L, "hiddenSize": D, "numAttentionHeads": HQ, "numKvHeads": HKV, "headDim": DH, "intermediateSize": I, "vocabSize": V, "dtype": dtype, "shape": shape}
    (out / "dims.json").write_text(json.dumps(dims) + "\n")


def save(path: Path, graph) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    big = sum(t.ByteSize() for t in graph.initializer) > 1 << 30
    onnx.save(model, path, save_as_external_data=big, all_tensors_to_one_file=True, location=path.name + ".data")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--shape", default="tinyllama", choices=sorted(SHAPES))
    p.add_argument("--dtype", default="fp16", choices=["fp16", "fp32"])
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    build(a.out, a.shape, a.dtype)
    print(f"wrote {a.out}")
