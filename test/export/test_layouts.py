"""Every checkpoint layout, written exactly as its original code saves it, on odd shapes, exported
and run from the package (as the server runs it: the manifest's tokenization and preprocessing,
the ONNX graphs) against that original code's own load-and-generate path: token-exact greedy."""
import json

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from tinyllava_export import preprocessing as P, templates as T, tokenizer_settings as S
from tinyllava_export.export import run_export
from tinyllava_export.fixtures import factory_original as F, original_checkpoints as O
from tinyllava_export.model_parts import ExportError
from tinyllava_export.parity import OnnxPackageRunner

STEPS = 24


def package_greedy(pkg, messages, images, steps=STEPS):
    """Greedy decoding from the package alone, as the server does it."""
    m = json.loads((pkg / "manifest.json").read_text())
    fields, tok = m["prompt"], m["tokenizer"]
    server = S.ServerTokenizer(pkg / "tokenizer.json", tok["prefix_space"], m["text"]["bos_token_id"])
    prompt = T.render_prompt(fields, messages)
    ids = T.tokenize_prompt(prompt, server, fields["image_placeholder"], fields["image_token_mode"],
                            fields.get("image_token_id"))
    run = OnnxPackageRunner(pkg, m["files"], m["text"]["num_layers"])
    embeds = [run.image_embeds(run.image_features(P.manifest_pixels(m["image_preprocessing"], im))) for im in images]
    logits, cache = run.step(run.splice(ids, embeds), [])
    out = []
    for _ in range(steps):
        out.append(int(np.argmax(logits)))
        emb = run.embed.run(None, {"input_ids": np.array([[out[-1]]], dtype=np.int64)})[0]
        logits, cache = run.step(emb, cache)
    return prompt, ids, out


def user(text, images=0):
    return {"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}


def photo(w=320, h=200, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB")


CONVERSATIONS = [
    ([user("What is in the picture?", 1)], [photo()], [("<image>What is in the picture?", None)]),
    ([user("Describe it.", 1), {"role": "assistant", "content": "A cat."}, user("And the colour?")],
     [photo(150, 260, 1)], [("<image>Describe it.", "A cat."), ("And the colour?", None)]),
    ([user("Write a poem about the sea.")], [], [("Write a poem about the sea.", None)]),
]


def assert_table_stored_once(result):
    """The LM head is the input embedding, and the package holds that table once: in
    embed_tokens' data file, which the decoder's Gemm reads too."""
    import onnx
    from onnx import numpy_helper
    m, onnx_dir = result.manifest, (result.out_dir / result.manifest["files"]["decoder"]).parent
    V, D = m["text"]["vocab_size"], m["text"]["hidden_size"]
    embed_path, dec_path = result.out_dir / m["files"]["embed_tokens"], result.out_dir / m["files"]["decoder"]
    embed = numpy_helper.to_array(onnx.load(str(embed_path)).graph.initializer[0], base_dir=str(onnx_dir))
    assert embed.shape == (V, D)
    dec = onnx.load(str(dec_path), load_external_data=False)
    big = [t for t in dec.graph.initializer if sorted(t.dims) == sorted([V, D])]
    assert len(big) == 1  # one output projection
    info = {e.key: e.value for e in big[0].external_data}
    assert info["location"] == embed_path.name + "_data"  # the embedding's own bytes
    assert np.array_equal(numpy_helper.to_array(big[0], base_dir=str(onnx_dir)), embed)
    assert [n.op_type for n in dec.graph.node if big[0].name in n.input] == ["Gemm"]
    table = embed.nbytes
    assert (onnx_dir / (embed_path.name + "_data")).stat().st_size == table
    # Nothing else holds a copy, as it is or transposed (the untied head's layout).
    copies = (embed.tobytes()[:4096], np.ascontiguousarray(embed.T).tobytes()[:4096])
    for p in onnx_dir.iterdir():
        if p.name != embed_path.name + "_data":
            data = p.read_bytes()
            assert not any(c in data for c in copies), p.name


def test_tied_embedding_bytes_are_stored_once_in_fp16_too(tmp_path):
    ckpt = O.write_factory(O.FACTORY_QWEN2_TIED, tmp_path)
    result = run_export(tmp_path / "pkg", checkpoint=ckpt, dtype="fp16", quiet=True)
    assert result.parity.passed
    assert_table_stored_once(result)
    assert result.manifest["files"]["decoder"].endswith("_fp16.onnx")


def test_int4_keeps_the_head_apart(tmp_path):
    """int4 quantises the head (MatMulNBits) but not the embedding: the two differ, both stay."""
    ckpt = O.write_factory(O.FACTORY_QWEN2_TIED, tmp_path)
    result = run_export(tmp_path / "pkg", checkpoint=ckpt, quantize="int4", quiet=True)
    assert result.parity.passed
    onnx_dir = (result.out_dir / result.manifest["files"]["decoder"]).parent
    assert not [p for p in onnx_dir.iterdir() if p.name.endswith("_data")]


@pytest.fixture(scope="module")
def factory_exports(tmp_path_factory):
    out = {}
    for spec in (O.FACTORY_QWEN2_TIED, O.FACTORY_TINYLLAMA_CHAT):
        root = tmp_path_factory.mktemp(spec.name)
        ckpt = O.write_factory(spec, root)
        result = run_export(root / "pkg", checkpoint=ckpt, quiet=True)
        out[spec.name] = (ckpt, result)
    return out


@pytest.mark.parametrize("name", [O.FACTORY_QWEN2_TIED.name, O.FACTORY_TINYLLAMA_CHAT.name])
def test_factory_layout_matches_the_factory_token_for_token(factory_exports, name):
    ckpt, result = factory_exports[name]
    assert result.parity.passed and result.parity.greedy_agreement == 32
    model = F.load_factory(ckpt)
    template = result.manifest["prompt"]["template"]
    for messages, images, turns in CONVERSATIONS:
        prompt, ids, ours = package_greedy(result.out_dir, messages, images)
        assert prompt == F.factory_prompt(template, turns)
        assert ids == F.tokenizer_image_token(prompt, model.tokenizer)
        theirs, _ = F.generate(model, ids, images, STEPS)
        assert ours == theirs, prompt


def test_factory_tied_embeddings_are_tied_in_the_graph_not_duplicated(factory_exports):
    ckpt, result = factory_exports[O.FACTORY_QWEN2_TIED.name]
    from safetensors import safe_open
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "language_model.lm_head.weight" not in keys  # dropped by save_pretrained (shared tensor)
    assert {"connector._connector.weight", "connector._connector.bias"} <= keys  # a bare nn.Linear
    assert_table_stored_once(result)
    m = result.manifest
    assert m["connector"]["type"] == "linear" and m["vision"]["num_image_tokens"] == 195


def test_factory_reads_the_towers_processor_and_the_diffed_configs(factory_exports):
    ckpt, result = factory_exports[O.FACTORY_TINYLLAMA_CHAT.name]
    cfg = json.loads((ckpt / "config.json").read_text())
    # transformers' to_diff_dict: sub-config values equal to the defaults are left out
    assert "rope_theta" not in cfg["text_config"] and "tie_word_embeddings" not in cfg["text_config"]
    assert "hidden_act" not in cfg["vision_config"]  # quick_gelu: CLIP's default
    assert cfg["text_config"]["model_type"] == "llama"
    pp = result.manifest["image_preprocessing"]
    assert pp["resize_mode"] == "squash_center_crop" and pp["resize_size"] == {"height": 240, "width": 240}
    assert pp["size"] == {"height": 196, "width": 196} and pp["resample"] == "lanczos" and pp["pad_to_square"]
    assert result.manifest["connector"]["type"] == "mlp3x_gelu"
    assert result.manifest["tokenizer"]["prefix_space"] is True  # TinyLlama-Chat's legacy: false
    assert not (ckpt / "tokenizer.json").exists()  # the Factory saves its slow tokenizer only
    assert result.manifest["prompt"]["template"] == "llama"


@pytest.fixture(scope="module")
def bench_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    ckpt, tower = O.write_bench(O.BENCH_PHI, root)
    return ckpt, tower, root


def test_bench_layout_matches_tinyllavabench_token_for_token(bench_export):
    from tinyllava_export.fixtures import bench_original as B
    ckpt, tower, root = bench_export
    result = run_export(root / "pkg", checkpoint=ckpt, quiet=True, vision_tower=tower)
    m = result.manifest
    assert m["source"]["kind"] == "tinyllava-bench"
    assert m["vision"]["num_image_tokens"] == 729 and m["vision"]["feature_select"] == "cls_patch"
    assert m["image_preprocessing"]["pad_to_square"] and m["image_preprocessing"]["pad_color"] == [127, 127, 127]
    tokenizer, model, proc = B.load_bench(ckpt)
    assert m["text"]["vocab_size"] == len(tokenizer) == model.lm_head.weight.shape[0]  # resized, as the loader does
    for messages, images, turns in CONVERSATIONS:
        prompt, ids, ours = package_greedy(result.out_dir, messages, images)
        assert prompt == B.conv_prompt(turns)
        their_ids, theirs, _ = B.generate(tokenizer, model, proc, prompt, images, STEPS)
        assert ids == their_ids
        assert ours == theirs, prompt


def test_bench_layout_without_the_tower_directory_uses_the_checkpoints_tower(bench_export, monkeypatch):
    """mm_vision_tower names a hub repo that is not at hand: the tower weights stored in the
    checkpoint (the same tensors) and the published tower's config are used instead."""
    from tinyllava_export import vision_towers
    from tinyllava_export.fixtures import bench_original as B
    ckpt, tower, root = bench_export
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["mm_vision_tower"] = "bczhou/TinyLLaVA-3.1B-SigLIP"
    moved = root / "hub-named"
    moved.mkdir()
    for f in ckpt.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    (moved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="vision tower: checkpoint weights do not match its config"):
        run_export(root / "pkg2", checkpoint=moved, quiet=True)  # the real so400m shape
    tiny = json.loads((tower / "config.json").read_text())
    monkeypatch.setitem(vision_towers.KNOWN_TOWER_CONFIGS, "siglip-so400m-patch14-384", tiny)
    result = run_export(root / "pkg2", checkpoint=moved, quiet=True)
    assert any("weights from the checkpoint" in n for n in result.parts.notes)
    tokenizer, model, proc = B.load_bench(ckpt)
    messages, images, turns = CONVERSATIONS[0]
    prompt, ids, ours = package_greedy(result.out_dir, messages, images)
    assert ours == B.generate(tokenizer, model, proc, prompt, images, STEPS)[1]


def test_llava_hf_tied_qwen2_without_lm_head(tmp_path):
    """transformers' Llava with a tied Qwen2: save_pretrained drops language_model.lm_head.weight."""
    from tinyllava_export.fixtures.tokenizers import train_tokenizer
    from tinyllava_export.model_parts import _init_
    tok = train_tokenizer("qwen2", tmp_path / "ckpt", image_token=True)
    image_id = tok.convert_tokens_to_ids("<image>")
    text = transformers.Qwen2Config(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=len(tok), tie_word_embeddings=True)
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=112, patch_size=16, projection_dim=32)
    cfg = transformers.LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=image_id,
                                   vision_feature_layer=-1, vision_feature_select_strategy="default")
    model = transformers.LlavaForConditionalGeneration(cfg)
    _init_(model, 0.1, torch.Generator().manual_seed(3))
    model.tie_weights()
    model.save_pretrained(str(tmp_path / "ckpt"), safe_serialization=True)
    proc = transformers.CLIPImageProcessor(size={"shortest_edge": 112}, crop_size={"height": 112, "width": 112},
                                           resample=3, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.3, 0.4])
    proc.save_pretrained(str(tmp_path / "ckpt"))
    from safetensors import safe_open
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), "pt") as f:
        assert "language_model.lm_head.weight" not in set(f.keys())
    result = run_export(tmp_path / "pkg", checkpoint=tmp_path / "ckpt", quiet=True)
    assert result.parity.passed and result.manifest["tokenizer"]["strip_answer"] is False
    assert result.manifest["image_preprocessing"]["image_mean"] == [0.5, 0.4, 0.3]
    reloaded = transformers.LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "ckpt")).eval()
    image = photo(200, 130, 4)
    messages = [user("What is it?", 1)]
    prompt, ids, ours = package_greedy(result.out_dir, messages, [image])
    inputs = {"input_ids": torch.tensor([[t if t != T.IMAGE_TOKEN_INDEX else image_id for t in ids]]),
              "pixel_values": proc(image, return_tensors="pt")["pixel_values"]}
    # one placeholder token per image in 4.46's legacy expansion path
    gen = reloaded.generate(**inputs, max_new_tokens=STEPS, do_sample=False, eos_token_id=None, pad_token_id=0,
                            synced_gpus=False)
    assert ours == gen[0, inputs["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("connector", ["identity", "mlp1x_gelu", "mlp4x_gelu"])
def test_every_weight_only_connector(tmp_path, connector):
    spec = O.FactorySpec(
        name=f"conn-{connector}", llm_family="qwen2", llm_dir_name="qwen2-conn-llm", tokenizer_style="qwen2",
        text=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, tie_word_embeddings=True),
        tower="siglip", tower_cfg=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=112, patch_size=16),
        processor=dict(size={"height": 112, "width": 112}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3),
        connector=connector)
    ckpt = O.write_factory(spec, tmp_path)
    result = run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True)
    assert result.parity.passed and result.manifest["connector"]["type"] == connector
    model = F.load_factory(ckpt)
    prompt, ids, ours = package_greedy(result.out_dir, CONVERSATIONS[0][0], CONVERSATIONS[0][1], 12)
    assert ours == F.generate(model, ids, CONVERSATIONS[0][1], 12)[0]


def test_bench_llama_layout_the_15b_release(tmp_path):
    """TinyLLaVA-1.5B's layout: TinyLlavaLlamaForCausalLM (model_type tiny_llava), TinyLlama-Chat's
    legacy:false tokenizer, conv "v1", a linear mm_projector, no <im_patch>."""
    from tinyllava_export.fixtures import bench_original as B
    spec = O.BenchSpec(name="bench-llama", family="llama", conv="v1", mm_projector_type="linear",
                       mm_use_im_patch_token=False, image_aspect_ratio="square",
                       text=dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-5),
                       tower_cfg=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=3,
                                      num_attention_heads=2, image_size=384, patch_size=14), seed=4)
    ckpt, tower = O.write_bench(spec, tmp_path)
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == "tiny_llava"
    result = run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True, vision_tower=tower)
    m = result.manifest
    assert m["prompt"]["template"] == "llama" and m["connector"]["type"] == "linear"
    assert m["tokenizer"]["prefix_space"] is True and m["vision"]["num_image_tokens"] == 729
    tokenizer, model, proc = B.load_bench(ckpt)
    for messages, images, turns in CONVERSATIONS:
        prompt, ids, ours = package_greedy(result.out_dir, messages, images)
        assert prompt == B.conv_prompt(turns, conv="v1")
        their_ids, theirs, _ = B.generate(tokenizer, model, proc, prompt, images, STEPS)
        assert ids == their_ids
        assert ours == theirs, prompt
