"""Checkpoint formats: a TinyLLaVA_Factory directory (written as the Factory saves it) is rebuilt
from its stored configs and state dict without remote code; unsupported parts and broken files
are refused with clear messages."""
import json

import pytest
import torch

from tinyllava_export import onnx_export as X, reference as R
from tinyllava_export.export import run_export
from tinyllava_export.checkpoints import from_checkpoint
from tinyllava_export.fixtures import factory_original as F, original_checkpoints as O
from tinyllava_export.model_parts import ExportError


SPEC = O.FactorySpec(
    name="ckpt", llm_family="qwen2", llm_dir_name="qwen2-llm", tokenizer_style="qwen2",
    text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True),
    tower="siglip", tower_cfg=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                   image_size=384, patch_size=14),
    processor=dict(size={"height": 384, "width": 384}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3),
    connector="mlp2x_gelu", seed=5)


def factory_checkpoint(tmp_path, **overrides):
    """A Factory checkpoint written as the Factory saves it, its config.json then edited."""
    ckpt = O.write_factory(SPEC, tmp_path)
    if overrides:
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg.update(overrides)
        (ckpt / "config.json").write_text(json.dumps(cfg))
    return ckpt


def test_factory_checkpoint_roundtrip(tmp_path):
    ckpt = factory_checkpoint(tmp_path)
    result = run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True)
    assert result.parity.passed and result.parity.greedy_agreement == 32
    m = result.manifest
    assert m["source"]["kind"] == "tinyllava-factory"
    assert m["prompt"]["template"] == "qwen2_base" and m["prompt"]["eos_text"] == "<|endoftext|>"
    assert m["vision"]["num_image_tokens"] == 728 and m["max_context"] == 2048
    assert m["image_preprocessing"]["resize_mode"] == "squash" and not m["image_preprocessing"]["pad_to_square"]
    # The rebuilt model is the saved one: identical vision features.
    rebuilt = from_checkpoint(ckpt)
    original = F.load_factory(ckpt)
    px = torch.randn(1, 3, 384, 384)
    assert torch.equal(R.image_features(rebuilt, px), original.vision_tower(px))


def test_pad_aspect_ratio_becomes_pad_to_square(tmp_path):
    ckpt = factory_checkpoint(tmp_path, image_aspect_ratio="pad")
    m = run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True).manifest
    assert m["image_preprocessing"]["pad_to_square"] is True
    assert m["image_preprocessing"]["pad_color"] == [127, 127, 127]  # int(0.5 * 255)


def test_cls_patch_keeps_729_tokens(tmp_path):
    """Legacy-style selection keeps token 0: 27x27 = 729 (the Factory's "patch" gives 728)."""
    ckpt = factory_checkpoint(tmp_path, vision_feature_select_strategy="cls_patch")
    rebuilt = from_checkpoint(ckpt)
    assert rebuilt.num_image_tokens == 729
    assert R.image_features(rebuilt, torch.zeros(1, 3, 384, 384)).shape[1] == 729


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(connector_type="resampler"), "unsupported connector 'resampler'"),
    (lambda c: c.update(connector_type="qformer"), "unsupported connector 'qformer'"),
    (lambda c: c["text_config"].update(model_type="openelm"), "OpenELM LLM is not supported"),
    (lambda c: c["vision_config"].update(model_type="dinov2"), "unsupported vision tower model_type 'dinov2'"),
    (lambda c: c.update(model_type="mystery"), "unsupported model_type 'mystery'"),
    (lambda c: c.update(connector_type="mlp2x_relu"), "unsupported connector 'mlp2x_relu'"),
    (lambda c: c["text_config"].update(tie_word_embeddings=False), "lm_head.weight is missing"),
    (lambda c: c.update(vision_model_name_or_path="some/unknown-siglip"), "pass its directory"),
    (lambda c: c.pop("text_config"), "'text_config' is missing"),
    (lambda c: c["text_config"].update(num_hidden_layers=3), "do not match its config"),
    (lambda c: c.update(image_aspect_ratio="anyres"), "image_aspect_ratio 'anyres' is not supported"),
])
def test_unsupported_or_inconsistent_checkpoints_are_refused(tmp_path, change, message):
    ckpt = factory_checkpoint(tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    change(cfg)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True)
    assert not (tmp_path / "pkg").exists()


def test_truncated_weights_are_refused(tmp_path):
    ckpt = factory_checkpoint(tmp_path)
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="model.safetensors: cannot read weights"):
        run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True)


def test_missing_weights_are_refused(tmp_path):
    ckpt = factory_checkpoint(tmp_path)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(ExportError, match="no weights found"):
        run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True)


def test_vision_encoder_is_hidden_states_minus_2_before_post_layernorm(tmp_path):
    parts = from_checkpoint(factory_checkpoint(tmp_path))
    enc = X.VisionEncoder(parts).eval()
    px = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        ours = enc(px)
        out = parts.vision(px, output_hidden_states=True)
    assert torch.allclose(ours, out.hidden_states[-2][:, 1:], atol=1e-6)
    assert not torch.allclose(ours, out.last_hidden_state[:, 1:], atol=1e-3)  # post_layernorm'd last layer
    assert len(enc.encoder.layers) == parts.vision.config.num_hidden_layers - 1
