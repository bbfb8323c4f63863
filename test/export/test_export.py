"""The exporter end to end: every tiny preset exports fresh and passes the parity check against
transformers, packages load in onnxruntime, and a failed export leaves nothing behind."""
import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from tinyllava_export import manifest as M
from tinyllava_export.export import run_export
from tinyllava_export.model_parts import ExportError
from tinyllava_export.presets import PRESETS

from conftest import ROOT

TINY = [name for name, p in PRESETS.items() if p.tiny]
EXPECTED_IMAGE_TOKENS = {"siglip": 728, "clip": 576}  # 27x27 - 1 ("patch" drops token 0); 24x24 + CLS - CLS


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(preset, **kw):
        key = (preset, tuple(sorted(kw.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("pkg") / preset
            cache[key] = run_export(out, preset=preset, quiet=True, **kw)
        return cache[key]

    return get


@pytest.mark.parametrize("preset", TINY)
def test_tiny_preset_exports_and_passes_parity(exported, preset):
    result = exported(preset)
    p = result.parity
    assert p.passed and p.greedy_agreement == p.steps == 32, p.verdict
    assert p.rel_logit_diff <= 1e-4
    m = json.loads((result.out_dir / "manifest.json").read_text())
    M.validate(m)
    assert m["vision"]["num_image_tokens"] == EXPECTED_IMAGE_TOKENS[PRESETS[preset].vision]
    assert m["text"]["family"] == PRESETS[preset].family
    assert json.loads((result.out_dir / "parity.json").read_text())["passed"] is True
    for key in ("vision_encoder", "connector", "embed_tokens", "decoder"):
        sess = ort.InferenceSession(str(result.out_dir / m["files"][key]), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()
    assert (result.out_dir / "tokenizer.json").exists()
    assert not list(result.out_dir.parent.glob(".*partial*"))


def test_decoder_io_names_follow_the_manifest(exported):
    result = exported("tiny-llama-siglip")
    m = result.manifest
    sess = ort.InferenceSession(str(result.out_dir / m["files"]["decoder"]), providers=["CPUExecutionProvider"])
    n = m["text"]["num_layers"]
    inputs = [i.name for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]
    assert inputs[:3] == ["inputs_embeds", "attention_mask", "position_ids"]
    assert inputs[3:] == [f"past_key_values.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    assert outputs == ["logits"] + [f"present.{i}.{kv}" for i in range(n) for kv in ("key", "value")]


def _decoder_feeds(m, embeds, mask, pos, past):
    feeds = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": pos}
    for i in range(m["text"]["num_layers"]):
        feeds[f"past_key_values.{i}.key"] = past[2 * i]
        feeds[f"past_key_values.{i}.value"] = past[2 * i + 1]
    return feeds


@pytest.mark.parametrize("preset", ["tiny-llama-siglip", "tiny-phi-siglip", "tiny-gemma-siglip"])
def test_batched_rows_with_different_lengths_equal_single_rows(exported, preset):
    """The batching rules of docs/model-package.md: padded past slots (mask 0), left-padded new
    positions, real position ids; each row's logits equal the row run alone."""
    result = exported(preset)
    m = result.manifest
    sess = ort.InferenceSession(str(result.out_dir / m["files"]["decoder"]), providers=["CPUExecutionProvider"])
    hkv, dh, d = m["text"]["num_key_value_heads"], m["text"]["head_dim"], m["text"]["hidden_size"]
    n = m["text"]["num_layers"]
    rng = np.random.default_rng(0)

    def alone(x):  # x [L, D]: prefill all but the last 2, then 2 new tokens with the cache
        L = x.shape[0]
        empty = [np.zeros((1, hkv, 0, dh), np.float32)] * (2 * n)
        out = sess.run(None, _decoder_feeds(m, x[None, :L - 2], np.ones((1, L - 2), np.int64),
                                            np.arange(L - 2)[None], empty))
        cache = out[1:]
        out2 = sess.run(None, _decoder_feeds(m, x[None, L - 2:], np.ones((1, L), np.int64),
                                             np.arange(L - 2, L)[None], cache))
        return out2[0][0], cache

    a = rng.standard_normal((9, d)).astype(np.float32)
    b = rng.standard_normal((5, d)).astype(np.float32)
    logits_a, cache_a = alone(a)
    logits_b, cache_b = alone(b)
    # Batch: row a has 7 past + 2 new; row b has 3 past (padded to 7 at the front) + 1 new (left-padded to 2),
    # then its second new token is run in a later step in real use; here we check its first one.
    P, T = 7, 2
    past = []
    for k in range(2 * n):
        buf = np.zeros((2, hkv, P, dh), np.float32)
        buf[0] = cache_a[k][0]
        buf[1, :, P - 3:] = cache_b[k][0]
        past.append(buf)
    embeds = np.zeros((2, T, d), np.float32)
    embeds[0] = a[7:9]
    embeds[1, 1] = b[3]
    mask = np.zeros((2, P + T), np.int64)
    mask[0] = 1
    mask[1, P - 3:P] = 1
    mask[1, P + 1] = 1
    pos = np.array([[7, 8], [0, 3]], np.int64)
    out = sess.run(None, _decoder_feeds(m, embeds, mask, pos, past))
    np.testing.assert_allclose(out[0][0], logits_a, atol=1e-5)
    # Row b after 4 tokens: compare with b's own prefix of 4 run alone.
    ref_b = sess.run(None, _decoder_feeds(m, b[None, :4], np.ones((1, 4), np.int64), np.arange(4)[None],
                                          [np.zeros((1, hkv, 0, dh), np.float32)] * (2 * n)))
    np.testing.assert_allclose(out[0][1], ref_b[0][0], atol=1e-5)
    # present holds only the new positions
    assert out[1].shape == (2, hkv, T, dh)


def test_fp16_and_int4_exports_report_parity(exported):
    fp16 = exported("tiny-qwen2-siglip", dtype="fp16")
    assert fp16.manifest["dtype"] == "fp16" and fp16.manifest["files"]["decoder"].endswith("_fp16.onnx")
    assert fp16.manifest["name"] == "random-tiny-qwen2-siglip-fp16"  # precision in the default name
    assert fp16.parity.dtype == "fp16" and fp16.parity.rel_logit_diff < 0.05
    q4 = exported("tiny-qwen2-siglip", quantize="int4")
    assert q4.manifest["quantization"]["format"] == "MatMulNBits"
    assert q4.manifest["name"] == "random-tiny-qwen2-siglip-int4"
    assert q4.parity.dtype == "int4"
    import onnx
    nodes = [n for n in onnx.load(str(q4.out_dir / q4.manifest["files"]["decoder"])).graph.node
             if n.op_type == "MatMulNBits"]
    assert nodes
    # int8 activations in the dot products: what makes int4 fast on onnxruntime's CPU provider
    assert all(onnx.helper.get_attribute_value(a) == 4 for n in nodes for a in n.attribute if a.name == "accuracy_level")
    assert all(any(a.name == "accuracy_level" for a in n.attribute) for n in nodes)


def test_int4_block_size_reaches_graph_and_manifest(exported):
    q4 = exported("tiny-qwen2-siglip", quantize="int4", block_size=16)
    assert q4.manifest["quantization"]["block_size"] == 16
    import onnx
    nodes = [n for n in onnx.load(str(q4.out_dir / q4.manifest["files"]["decoder"])).graph.node
             if n.op_type == "MatMulNBits"]
    assert nodes and all(onnx.helper.get_attribute_value(a) == 16
                         for n in nodes for a in n.attribute if a.name == "block_size")


def test_block_size_needs_int4():
    from tinyllava_export.__main__ import parse_args
    with pytest.raises(SystemExit):
        parse_args(["--random-init", "tiny-qwen2-siglip", "--out", "/tmp/never", "--block-size", "128"])
    assert parse_args(["--random-init", "tiny-qwen2-siglip", "--out", "/x", "--quantize", "int4",
                       "--block-size", "128"]).block_size == 128


def test_failed_parity_leaves_nothing(tmp_path, monkeypatch):
    import tinyllava_export.parity as parity
    monkeypatch.setattr(parity, "FP32_REL_TOLERANCE", 0.0)
    out = tmp_path / "pkg"
    with pytest.raises(ExportError, match="parity check FAILED"):
        run_export(out, preset="tiny-qwen2-siglip", quiet=True)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "pkg"
    out.mkdir()
    with pytest.raises(ExportError, match="--force"):
        run_export(out, preset="tiny-qwen2-siglip", quiet=True)


def _cli(*args):
    env = {"PYTHONPATH": str(ROOT / "tools" / "export"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "tinyllava_export", *args], capture_output=True, text=True, env=env)


def test_cli_random_init_and_clear_errors(tmp_path):
    ok = _cli("--random-init", "tiny-stablelm-clip", "--out", str(tmp_path / "a"), "--seed", "3")
    assert ok.returncode == 0, ok.stderr
    assert "[1/8]" in ok.stderr and "parity passed" in ok.stderr
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["source"]["seed"] == 3 and m["source"]["preset"] == "tiny-stablelm-clip"
    missing = _cli("--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "b"))
    assert missing.returncode == 1
    assert "config.json is missing" in missing.stderr
    assert not (tmp_path / "b").exists()
    bad = _cli("--random-init", "no-such-preset", "--out", str(tmp_path / "c"))
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
    listing = _cli("--list-presets")
    assert listing.returncode == 0 and "qwen2-0.5b-siglip" in listing.stdout


def test_big_graphs_keep_weights_in_one_external_file(tmp_path, monkeypatch):
    """Graphs over protobuf's 2 GiB limit (real-size decoders) store weights in <graph>.onnx_data."""
    import tinyllava_export.onnx_export as X
    monkeypatch.setattr(X, "INLINE_LIMIT", 10_000)
    result = run_export(tmp_path / "pkg", preset="tiny-llama-siglip", quiet=True)
    assert result.parity.passed
    onnx_dir = result.out_dir / "onnx"
    names = sorted(p.name for p in onnx_dir.iterdir())
    assert "decoder_model_merged.onnx_data" in names and "vision_encoder.onnx_data" in names
    assert all(n.endswith((".onnx", ".onnx_data")) for n in names)  # no loose per-tensor files
    assert (onnx_dir / "decoder_model_merged.onnx").stat().st_size < 100_000
    import onnx
    decoder = onnx.load(str(onnx_dir / "decoder_model_merged.onnx"), load_external_data=False)
    assert any(n.name.startswith("fused_projection_") for n in decoder.graph.node)  # fused on this path too


def test_progress_never_stays_silent(capfd):
    """A step that runs for a while without printing gets heartbeat lines with elapsed time, also
    while the GIL is held (the heartbeat is a child process): here a busy loop in C code."""
    import time
    from tinyllava_export.progress import Progress
    p = Progress(2, heartbeat_s=0.3)
    p.step("a long step")
    t = time.time()
    while time.time() - t < 1.5:
        sum(range(20_000_000))  # one C call holding the GIL for a while (as onnx passes do)
    p.step("a short step")
    p.close()
    lines = capfd.readouterr().err.splitlines()
    assert lines[0].startswith("[1/2] a long step (t+")
    beats = [l for l in lines if l.strip().startswith("... a long step (t+")]
    assert len(beats) >= 2
    assert lines[-1].startswith("[2/2] a short step")


def test_progress_reports_layers(monkeypatch):
    import tinyllava_export.progress as progress
    monkeypatch.setattr(progress, "SUB_STEP_MIN_S", 0.0)  # tiny layers are fast: show every line
    lines = []
    p = progress.Progress(9, quiet=False)
    p._print = lines.append
    import torch
    layers = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(3))
    with p.layers(layers, "tracing"):
        for m in layers:
            m(torch.zeros(1, 2))
    p.close()
    assert [l.split(" (t+")[0].strip() for l in lines] == [f"tracing: layer {i}/3" for i in (1, 2, 3)]


SHARED_KV = ["tiny-llama-siglip", "tiny-qwen2-siglip", "tiny-stablelm-clip", "tiny-gemma-siglip"]


@pytest.mark.parametrize("preset", SHARED_KV)
def test_shared_kv_form_exports_and_passes_parity(exported, preset):
    """--decoder-form shared_kv: GroupQueryAttention over one buffer per layer, the same logits
    as transformers within the fp32 tolerance and the same 32 greedy tokens (the parity check runs
    that form as the server does: seqlens_k, total_sequence_length, buffers passed back in)."""
    result = exported(preset, decoder_form="shared_kv")
    p = result.parity
    assert p.passed and p.greedy_agreement == p.steps == 32, p.verdict
    import onnx
    graph = onnx.load(str(result.out_dir / result.manifest["files"]["decoder"])).graph
    n = result.manifest["text"]["num_layers"]
    # Rotary inside the op where its kernel takes the rotary dim (all but the tiny StableLM's 4 of 16).
    inside = preset != "tiny-stablelm-clip"
    assert [i.name for i in graph.input] == ["inputs_embeds", *([] if inside else ["position_ids"]), "seqlens_k",
                                             "total_sequence_length"] + [
        f"past_key_values.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    assert [o.name for o in graph.output] == ["logits"] + [f"present.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    assert sum(node.op_type == "GroupQueryAttention" for node in graph.node) == n
    assert not any(node.op_type == "Softmax" for node in graph.node)
    # Every layer's GroupQueryAttention reads its past buffers and writes its present ones directly.
    for node in (node for node in graph.node if node.op_type == "GroupQueryAttention"):
        i = int(node.input[3].split(".")[1])
        assert list(node.input[3:7]) == [f"past_key_values.{i}.key", f"past_key_values.{i}.value", "seqlens_k", "total_sequence_length"]
        assert list(node.output[1:]) == [f"present.{i}.key", f"present.{i}.value"]
        assert onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "do_rotary")) == int(inside)
        assert len(node.input) == (9 if inside else 7)
    # The standard export of the same weights gives the same tokens.
    assert exported(preset).parity.greedy_agreement == 32


def test_shared_kv_fp16_keeps_the_kv_buffers_fp16_at_the_boundary(exported):
    """The CUDA form: fp16 KV buffers in and out (no Cast between a buffer and the op, so the runtime's one
    buffer is past and present); inputs_embeds and logits stay float32 as in every package."""
    import onnx
    from onnx import TensorProto
    result = exported("tiny-qwen2-siglip", dtype="fp16", decoder_form="shared_kv")
    assert result.parity.rel_logit_diff < 0.05, result.parity.verdict
    graph = onnx.load(str(result.out_dir / result.manifest["files"]["decoder"])).graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(graph.input) + list(graph.output)}
    assert types["inputs_embeds"] == types["logits"] == TensorProto.FLOAT
    kv = [name for name in types if name.startswith(("past_key_values.", "present."))]
    assert kv and all(types[name] == TensorProto.FLOAT16 for name in kv)
    assert not any(node.op_type == "Cast" and (set(node.input) | set(node.output)) & set(kv) for node in graph.node)
    # int4 (fp32 KV, for CPU): the same quantised weights and the same tokens as the standard form.
    q4 = exported("tiny-qwen2-siglip", quantize="int4", decoder_form="shared_kv")
    standard_q4 = exported("tiny-qwen2-siglip", quantize="int4").parity
    assert q4.parity.greedy_agreement == standard_q4.greedy_agreement, q4.parity.verdict
    assert abs(q4.parity.max_abs_logit_diff - standard_q4.max_abs_logit_diff) <= 1e-3 * standard_q4.max_ref_logit


def test_shared_kv_refuses_a_head_dim_groupqueryattention_cannot_run(tmp_path):
    with pytest.raises(ExportError, match="multiple of 8; this model's is 20"):
        run_export(tmp_path / "phi", preset="tiny-phi-siglip", quiet=True, decoder_form="shared_kv")
    assert not (tmp_path / "phi").exists()


def test_large_constants_torch_stores_externally_become_initializers(tmp_path):
    """Over 2 GiB torch writes a folded table (the shared_kv decoder's rotary caches) as external
    data of a Constant node, in a file of its own: the gathered graph holds it as an initializer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import tinyllava_export.onnx_export as X
    table = np.arange(512, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["table"], value=numpy_helper.from_array(table, "table")),
         helper.make_node("Add", ["x", "table"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512])])
    raw = tmp_path / "raw" / "model.onnx"
    raw.parent.mkdir()
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(raw),
                    save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0,
                    convert_attribute=True)
    assert onnx.load(str(raw), load_external_data=False).graph.node[0].attribute[0].t.data_location == TensorProto.EXTERNAL
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    X._gather_weights(raw, out)
    import shutil
    shutil.rmtree(raw.parent)  # nothing may still point at torch's files
    onnx.checker.check_model(str(out))
    model = onnx.load(str(out))
    assert [n.op_type for n in model.graph.node] == ["Add"] and [t.name for t in model.graph.initializer] == ["table"]
    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": np.ones(512, np.float32)})[0]
    np.testing.assert_array_equal(y, table + 1)
