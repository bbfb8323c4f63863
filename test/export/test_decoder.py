"""The export decoder restates each family's forward pass; these tests pin the family traps of
../shared/reference/tinyllava.md so that a regression fails here by name."""
import math

import pytest
import torch
import transformers

from tinyllava_export.decoder import DecoderSpec, build_export_decoder
from tinyllava_export.model_parts import LLM_CLASSES, from_preset
from tinyllava_export.presets import PRESETS


def real_spec(preset):
    p = PRESETS[preset]
    cfg = getattr(transformers, LLM_CLASSES[p.family][0])(**p.text)
    return DecoderSpec.from_hf_config(p.family, cfg)


def test_phi2_partial_rotary_parallel_block_and_lm_head_bias():
    s = real_spec("phi2-siglip-3.1b")
    assert (s.head_dim, s.rotary_dim) == (80, 32)  # rotary on the first 32 of 80 dims
    assert s.parallel_residual and s.norm == "layer" and s.act == "gelu_tanh" and s.mlp == "fc"
    assert s.lm_head_bias and s.qkv_bias and s.o_bias and not s.tie_embeddings


def test_gemma_norm_embed_scale_and_mqa():
    s = real_spec("gemma-siglip-2.4b")
    assert s.norm == "rms_plus_one" and s.embed_scale == pytest.approx(math.sqrt(2048))
    assert (s.num_heads, s.num_kv_heads, s.head_dim) == (8, 1, 256) and s.act == "gelu_tanh" and s.tie_embeddings


def test_stablelm_qwen2_tinyllama_shapes():
    st = real_spec("stablelm2-siglip-2.0b")
    assert st.rotary_dim == 16 and st.qkv_bias and not st.o_bias and st.norm == "layer" and not st.parallel_residual
    q = real_spec("qwen2-0.5b-siglip")
    assert q.qkv_bias and not q.o_bias and q.tie_embeddings and q.rope_theta == 1e6 and q.num_kv_heads == 2
    ll = real_spec("tinyllama-siglip-1.5b")
    assert (ll.num_heads, ll.num_kv_heads, ll.norm) == (32, 4, "rms") and not ll.qkv_bias


@pytest.mark.parametrize("preset", [n for n, p in PRESETS.items() if p.tiny])
def test_export_decoder_matches_transformers_on_arbitrary_embeddings(preset):
    """Arbitrary inputs_embeds (as spliced image embeddings are) through both decoders."""
    parts = from_preset(PRESETS[preset], 700, seed=1)
    dec = build_export_decoder(parts.family, parts.llm)
    s = dec.spec
    x = torch.randn(1, 11, s.hidden_size)
    with torch.no_grad():
        ref = parts.llm(inputs_embeds=x).logits[0, -1]
        past = [torch.zeros(1, s.num_kv_heads, 0, s.head_dim)] * (2 * s.num_layers)
        ours = dec(x, torch.ones(1, 11, dtype=torch.long), torch.arange(11)[None], *past)[0][0]
    assert torch.allclose(ours, ref, atol=1e-5 * ref.abs().max().item())


def test_gemma_scales_spliced_embeddings_too():
    """transformers' Gemma multiplies whatever inputs_embeds it gets by sqrt(hidden): image
    embeddings included. Dropping the scale (or moving it into embed_tokens) changes the logits."""
    parts = from_preset(PRESETS["tiny-gemma-siglip"], 700, seed=1)
    dec = build_export_decoder("gemma", parts.llm)
    x = torch.randn(1, 5, dec.spec.hidden_size)
    past = [torch.zeros(1, 1, 0, dec.spec.head_dim)] * (2 * dec.spec.num_layers)
    args = (torch.ones(1, 5, dtype=torch.long), torch.arange(5)[None], *past)
    with torch.no_grad():
        ref = parts.llm(inputs_embeds=x).logits[0, -1]
        scaled = dec(x, *args)[0][0]
        dec.spec.embed_scale = None
        unscaled = dec(x, *args)[0][0]
    assert torch.allclose(scaled, ref, atol=1e-5 * ref.abs().max().item())
    assert not torch.allclose(unscaled, ref, atol=1e-2)


def test_unsupported_llm_settings_are_refused():
    cfg = transformers.PhiConfig(qk_layernorm=True)
    with pytest.raises(ValueError, match="qk_layernorm"):
        DecoderSpec.from_hf_config("phi", cfg)
    with pytest.raises(ValueError, match="rope_scaling"):
        DecoderSpec.from_hf_config("llama", transformers.LlamaConfig(rope_scaling={"rope_type": "linear", "factor": 2.0}))
    with pytest.raises(ValueError, match="unsupported LLM family"):
        DecoderSpec.from_hf_config("openelm", transformers.LlamaConfig())


def test_exported_decoders_fuse_the_projections_that_share_an_input():
    """q/k/v and gate/up (q/k/v/fc1 for phi's parallel block) are one MatMul + Split each."""
    import onnx
    from conftest import ROOT
    for name, per_layer in (("tiny-random-llama-siglip", 4), ("tiny-random-phi-siglip", 3)):
        pkg = ROOT / "test" / "fixtures" / "packages" / name
        m = onnx.load(str(pkg / "onnx" / "decoder_model_merged.onnx"))
        weights = {t.name for t in m.graph.initializer}
        projections = [n for n in m.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
        layers = 2
        assert len(projections) == per_layer * layers + 1, name  # + the LM head
        assert sum(n.op_type == "Shape" for n in m.graph.node) < 3 * layers, name


def test_fusion_stores_each_fused_weight_as_it_is_made_and_computes_the_same(tmp_path):
    """The pass runs beside the loaded PyTorch model: each fused weight goes to `store` when it
    is made and the weights it replaces lose their bytes, so no group's copy waits in memory."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from tinyllava_export.fuse_projections import fuse_projections
    rng = np.random.default_rng(0)
    ws = {n: rng.standard_normal((8, c)).astype(np.float32) for n, c in (("q", 8), ("k", 4), ("v", 4))}
    nodes = [helper.make_node("MatMul", ["x", n], [f"{n}_out"]) for n in ws]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info(f"{n}_out", TensorProto.FLOAT, None) for n in ws],
                              [numpy_helper.from_array(a, n) for n, a in ws.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((2, 8)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    originals = {t.name: t for t in model.graph.initializer}
    stored = []

    def store(array, name):
        assert all(not t.raw_data for t in originals.values())  # already released
        stored.append(name)
        return numpy_helper.from_array(array, name)

    assert fuse_projections(model, tmp_path, store) == 2
    assert stored == ["fused_projection_0.weight"]
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Split"]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
