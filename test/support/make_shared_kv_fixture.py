"""Writes test/fixtures/shared-kv/: a tiny two-layer decoder in both forms of
docs/model-package.md, with the same random weights, to check the native runtime's `shared_kv`
path against the `standard` one (test/runtime/shared-kv.test.ts):

- decoder_standard.onnx: today's IO (attention over past + new, grouped per KV head, rotary by
  com.microsoft.RotaryEmbedding on position_ids, presents = the new positions only);
- decoder_gqa_rotary.onnx: com.microsoft.GroupQueryAttention with rotary inside the op, one
  buffer per layer as past and present, seqlens_k / total_sequence_length, no position_ids;
- decoder_gqa_positions.onnx: the same op without its rotary, rotary outside on position_ids
  (the partial-rotary families' shape), so the runtime feeds position_ids too;
- decoder_gqa_positions_fp16.onnx: that graph with float16 KV buffers at its boundary (q/k/v
  cast to float16 for the op, its output cast back), as the exporter's fp16 shared_kv packages
  have them: the runtime's blocks of 2-byte elements;
- embed_tokens.onnx: input_ids -> inputs_embeds.

Run: .venv/bin/python test/support/make_shared_kv_fixture.py (deterministic; outputs committed).
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

L, D, HQ, HKV, DH, V, MAX_POS = 2, 32, 4, 2, 16, 64, 512
G = HQ // HKV
OUT = Path(__file__).resolve().parents[1] / "fixtures" / "shared-kv"

rng = np.random.default_rng(7)


def weight(*shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


W = {
    "embed": weight(V, D, scale=1.0),
    "lm_head": weight(D, V),
    **{f"{n}{l}": weight(D, k * DH) for l in range(L) for n, k in (("wq", HQ), ("wk", HKV), ("wv", HKV))},
    **{f"wo{l}": weight(HQ * DH, D) for l in range(L)},
}
inv = 1.0 / (10000 ** (np.arange(0, DH, 2, dtype=np.float64) / DH))
angles = np.arange(MAX_POS, dtype=np.float64)[:, None] * inv[None, :]
COS, SIN = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)  # [MAX_POS, DH/2]


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.n, self.names = [], [], 0, set()

    def const(self, name, array):
        if name not in self.names:
            self.names.add(name)
            self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, n_out=1, domain="", **attrs):
        self.n += 1
        outs = [f"{op_type.lower()}_{self.n}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, domain=domain or None, **attrs))
        return outs[0] if n_out == 1 else outs

    def save(self, name, inputs, outputs):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, OUT / f"{name}.onnx")


def tensor(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def rotary(g, x, positions, heads):
    return g.op("RotaryEmbedding", [x, positions, "cos_cache", "sin_cache"], domain="com.microsoft", num_heads=heads, interleaved=0)


def projections(g, x, l, positions):
    q = g.op("MatMul", [x, g.const(f"wq{l}", W[f"wq{l}"])])  # [B,T,HQ*DH]
    k = g.op("MatMul", [x, g.const(f"wk{l}", W[f"wk{l}"])])  # [B,T,HKV*DH]
    v = g.op("MatMul", [x, g.const(f"wv{l}", W[f"wv{l}"])])
    if positions is not None:
        q, k = rotary(g, q, positions, HQ), rotary(g, k, positions, HKV)
    return q, k, v


def finish(g, x):
    last = g.op("Gather", [x, g.const("minus_one", np.array(-1, dtype=np.int64))], axis=1)  # [B,D]
    g.nodes.append(helper.make_node("MatMul", [last, g.const("lm_head", W["lm_head"])], ["logits"]))


def heads_first(g, x, heads):  # [B,T,heads*DH] -> [B,heads,T,DH]
    r = g.op("Reshape", [x, g.const(f"shape_bt{heads}", np.array([0, 0, heads, DH], dtype=np.int64))])
    return g.op("Transpose", [r], perm=[0, 2, 1, 3])


def standard():
    g = Graph()
    g.const("cos_cache", COS), g.const("sin_cache", SIN)
    x = "inputs_embeds"
    # bias [B,1,1,T,P+T]: 0 where slot j is a real position of the row (mask) and j <= P + t
    total = g.op("Shape", ["attention_mask"], start=1, end=2)  # [P+T]
    t_len = g.op("Shape", ["inputs_embeds"], start=1, end=2)  # [T]
    p_len = g.op("Sub", [total, t_len])
    zero, one = g.const("zero", np.array(0, dtype=np.int64)), g.const("one", np.array(1, dtype=np.int64))
    j = g.op("Range", [zero, g.op("Squeeze", [total]), one])  # [P+T]
    t = g.op("Add", [g.op("Range", [zero, g.op("Squeeze", [t_len]), one]), p_len])  # [T]
    causal = g.op("LessOrEqual", [g.op("Unsqueeze", [j, zero]), g.op("Unsqueeze", [t, one])])  # [T,P+T]
    real = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", one])], to=TensorProto.BOOL)  # [B,1,P+T]
    allowed = g.op("And", [g.op("Unsqueeze", [causal, zero]), real])  # [B,T,P+T]
    bias = g.op("Where", [allowed, g.const("f0", np.array(0, dtype=np.float32)), g.const("fneg", np.array(-1e9, dtype=np.float32))])
    bias = g.op("Unsqueeze", [bias, g.const("axes12", np.array([1, 2], dtype=np.int64))])  # [B,1,1,T,P+T]
    for l in range(L):
        q, k, v = projections(g, x, l, "position_ids")
        k_new, v_new = heads_first(g, k, HKV), heads_first(g, v, HKV)  # [B,HKV,T,DH]
        g.nodes.append(helper.make_node("Identity", [k_new], [f"present.{l}.key"]))
        g.nodes.append(helper.make_node("Identity", [v_new], [f"present.{l}.value"]))
        keys = g.op("Concat", [f"past_key_values.{l}.key", k_new], axis=2)  # [B,HKV,P+T,DH]
        values = g.op("Concat", [f"past_key_values.{l}.value", v_new], axis=2)
        qh = heads_first(g, q, HQ)  # [B,HQ,T,DH], query head h uses KV head h // G
        qg = g.op("Reshape", [qh, g.const("shape_group", np.array([0, HKV, -1, DH], dtype=np.int64))])  # [B,HKV,G*T,DH]
        scores = g.op("MatMul", [qg, g.op("Transpose", [keys], perm=[0, 1, 3, 2])])  # [B,HKV,G*T,P+T]
        scores = g.op("Mul", [scores, g.const("scale", np.array(1 / np.sqrt(DH), dtype=np.float32))])
        shape5 = g.op("Concat", [g.const("bkg", np.array([0, HKV, G], dtype=np.int64)), t_len, total], axis=0)
        s5 = g.op("Add", [g.op("Reshape", [scores, shape5]), bias])  # [B,HKV,G,T,P+T]
        probs = g.op("Reshape", [g.op("Softmax", [s5], axis=-1), g.op("Shape", [scores])])
        ctx = g.op("MatMul", [probs, values])  # [B,HKV,G*T,DH]
        ctx = g.op("Reshape", [ctx, g.const("shape_heads", np.array([0, HQ, -1, DH], dtype=np.int64))])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), g.const("shape_flat", np.array([0, 0, HQ * DH], dtype=np.int64))])
        x = g.op("Add", [x, g.op("MatMul", [ctx, g.const(f"wo{l}", W[f"wo{l}"])])])
    finish(g, x)
    past = [tensor(f"past_key_values.{l}.{kind}", TensorProto.FLOAT, ["B", HKV, "P", DH]) for l in range(L) for kind in ("key", "value")]
    present = [tensor(f"present.{l}.{kind}", TensorProto.FLOAT, ["B", HKV, "T", DH]) for l in range(L) for kind in ("key", "value")]
    inputs = [
        tensor("inputs_embeds", TensorProto.FLOAT, ["B", "T", D]),
        tensor("attention_mask", TensorProto.INT64, ["B", "PT"]),
        tensor("position_ids", TensorProto.INT64, ["B", "T"]),
        *past,
    ]
    g.save("decoder_standard", inputs, [tensor("logits", TensorProto.FLOAT, ["B", V]), *present])


def shared(rotary_inside, kv_fp16=False):
    g = Graph()
    g.const("cos_cache", COS), g.const("sin_cache", SIN)
    x = "inputs_embeds"
    kv_elem = TensorProto.FLOAT16 if kv_fp16 else TensorProto.FLOAT
    for l in range(L):
        q, k, v = projections(g, x, l, None if rotary_inside else "position_ids")
        if kv_fp16:
            q, k, v = (g.op("Cast", [t], to=TensorProto.FLOAT16) for t in (q, k, v))
        ins = [q, k, v, f"past_key_values.{l}.key", f"past_key_values.{l}.value", "seqlens_k", "total_sequence_length"]
        if rotary_inside:
            ins += ["cos_cache", "sin_cache"]
        out = f"attn_{l}"
        g.nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                ins,
                [out, f"present.{l}.key", f"present.{l}.value"],
                domain="com.microsoft",
                num_heads=HQ,
                kv_num_heads=HKV,
                do_rotary=1 if rotary_inside else 0,
                rotary_interleaved=0,
            )
        )
        if kv_fp16:
            out = g.op("Cast", [out], to=TensorProto.FLOAT)
        x = g.op("Add", [x, g.op("MatMul", [out, g.const(f"wo{l}", W[f"wo{l}"])])])
    finish(g, x)
    kv = lambda n: tensor(n, kv_elem, ["B", HKV, "Cap", DH])  # noqa: E731
    inputs = [
        tensor("inputs_embeds", TensorProto.FLOAT, ["B", "T", D]),
        *([] if rotary_inside else [tensor("position_ids", TensorProto.INT64, ["B", "T"])]),
        tensor("seqlens_k", TensorProto.INT32, ["B"]),
        tensor("total_sequence_length", TensorProto.INT32, []),
        *[kv(f"past_key_values.{l}.{kind}") for l in range(L) for kind in ("key", "value")],
    ]
    outputs = [tensor("logits", TensorProto.FLOAT, ["B", V]), *[kv(f"present.{l}.{kind}") for l in range(L) for kind in ("key", "value")]]
    g.save(("decoder_gqa_rotary" if rotary_inside else "decoder_gqa_positions") + ("_fp16" if kv_fp16 else ""), inputs, outputs)


def embed():
    g = Graph()
    g.nodes.append(helper.make_node("Gather", [g.const("embed", W["embed"]), "input_ids"], ["inputs_embeds"], axis=0))
    g.save("embed_tokens", [tensor("input_ids", TensorProto.INT64, ["B", "T"])], [tensor("inputs_embeds", TensorProto.FLOAT, ["B", "T", D])])


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    embed()
    standard()
    shared(rotary_inside=True)
    shared(rotary_inside=False)
    shared(rotary_inside=False, kv_fp16=True)
    (OUT / "dims.json").write_text(
        f'{{"numLayers": {L}, "hiddenSize": {D}, "numAttentionHeads": {HQ}, "numKvHeads": {HKV}, "headDim": {DH}, "vocabSize": {V}, "maxPositions": {MAX_POS}}}\n'
    )
    print(f"wrote {OUT}")
