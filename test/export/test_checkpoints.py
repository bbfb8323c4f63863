"""Checkpoint formats: a TinyLLaVA_Factory directory is rebuilt from its stored configs and state
dict without remote code; unsupported parts and broken files are refused with clear messages."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tinyllava_export import onnx_export as X, reference as R
from tinyllava_export.export import run_export
from tinyllava_export.fixtures.tokenizers import train_tokenizer
from tinyllava_export.model_parts import ExportError, from_checkpoint, from_preset
from tinyllava_export.presets import PRESETS


def save_factory_checkpoint(parts, tok_dir, out, **overrides):
    """Write `parts` the way TinyLLaVA_Factory saves a model (config.json + model.safetensors)."""
    out.mkdir(parents=True)
    cfg = {
        "model_type": "tinyllava", "architectures": ["TinyLlavaForConditionalGeneration"],
        "text_config": parts.llm.config.to_dict(), "vision_config": parts.vision.config.to_dict(),
        "connector_type": "mlp2x_gelu", "vision_feature_layer": -2, "vision_feature_select_strategy": "patch",
        "image_aspect_ratio": "square", "tokenizer_model_max_length": 2048, "tokenizer_use_fast": False,
        "llm_model_name_or_path": "some/llm", "vision_model_name_or_path": "some/vision",
    }
    cfg.update(overrides)
    (out / "config.json").write_text(json.dumps(cfg))
    sd = {}
    for prefix, module in (("language_model.", parts.llm), ("vision_tower._vision_tower.", parts.vision),
                           ("connector._connector.", parts.connector)):
        for k, v in module.state_dict().items():
            sd[prefix + k] = v.clone().contiguous()  # clone: safetensors refuses tied (shared) tensors
    save_file(sd, str(out / "model.safetensors"))
    for f in tok_dir.iterdir():
        shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def qwen_parts(tmp_path_factory):
    tok_dir = tmp_path_factory.mktemp("tok")
    tok = train_tokenizer("qwen2", tok_dir)
    return from_preset(PRESETS["tiny-qwen2-siglip"], len(tok), seed=5), tok_dir


def test_factory_checkpoint_roundtrip(tmp_path, qwen_parts):
    parts, tok_dir = qwen_parts
    ckpt = save_factory_checkpoint(parts, tok_dir, tmp_path / "ckpt")
    result = run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True)
    assert result.parity.passed and result.parity.greedy_agreement == 32
    m = result.manifest
    assert m["source"]["kind"] == "tinyllava-factory"
    assert m["prompt"]["template"] == "qwen2_base" and m["prompt"]["eos_text"] == "<|endoftext|>"
    assert m["vision"]["num_image_tokens"] == 728 and m["max_context"] == 2048
    assert m["image_preprocessing"]["resize_mode"] == "squash" and not m["image_preprocessing"]["pad_to_square"]
    # The rebuilt model is the saved one: identical vision features.
    rebuilt = from_checkpoint(ckpt)
    px = torch.randn(1, 3, 384, 384)
    assert torch.equal(R.image_features(rebuilt, px), R.image_features(parts, px))


def test_pad_aspect_ratio_becomes_pad_to_square(tmp_path, qwen_parts):
    parts, tok_dir = qwen_parts
    ckpt = save_factory_checkpoint(parts, tok_dir, tmp_path / "ckpt", image_aspect_ratio="pad")
    m = run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True).manifest
    assert m["image_preprocessing"]["pad_to_square"] is True
    assert m["image_preprocessing"]["pad_color"] == [127, 127, 127]  # int(0.5 * 255)


def test_cls_patch_keeps_729_tokens(tmp_path, qwen_parts):
    """Legacy-style selection keeps token 0: 27x27 = 729 (the Factory's "patch" gives 728)."""
    parts, tok_dir = qwen_parts
    ckpt = save_factory_checkpoint(parts, tok_dir, tmp_path / "ckpt", vision_feature_select_strategy="cls_patch")
    rebuilt = from_checkpoint(ckpt)
    assert rebuilt.num_image_tokens == 729
    assert R.image_features(rebuilt, torch.zeros(1, 3, 384, 384)).shape[1] == 729
    assert parts.num_image_tokens == 728


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(connector_type="resampler"), "unsupported connector 'resampler'"),
    (lambda c: c.update(connector_type="qformer"), "unsupported connector 'qformer'"),
    (lambda c: c["text_config"].update(model_type="openelm"), "OpenELM LLM is not supported"),
    (lambda c: c["vision_config"].update(model_type="dinov2"), "unsupported vision tower model_type 'dinov2'"),
    (lambda c: c.update(model_type="tiny_llava_phi"), "legacy TinyLLaVABench checkpoint"),
    (lambda c: c.pop("text_config"), "'text_config' is missing"),
    (lambda c: c["text_config"].update(num_hidden_layers=3), "do not match its config"),
    (lambda c: c.update(image_aspect_ratio="anyres"), "image_aspect_ratio 'anyres' is not supported"),
])
def test_unsupported_or_inconsistent_checkpoints_are_refused(tmp_path, qwen_parts, change, message):
    parts, tok_dir = qwen_parts
    ckpt = save_factory_checkpoint(parts, tok_dir, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    change(cfg)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True)
    assert not (tmp_path / "pkg").exists()


def test_truncated_weights_are_refused(tmp_path, qwen_parts):
    parts, tok_dir = qwen_parts
    ckpt = save_factory_checkpoint(parts, tok_dir, tmp_path / "ckpt")
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="model.safetensors: cannot read weights"):
        run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True)


def test_missing_weights_are_refused(tmp_path, qwen_parts):
    parts, tok_dir = qwen_parts
    ckpt = save_factory_checkpoint(parts, tok_dir, tmp_path / "ckpt")
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(ExportError, match="no weights found"):
        run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True)


def test_vision_encoder_is_hidden_states_minus_2_before_post_layernorm(qwen_parts):
    parts, _ = qwen_parts
    enc = X.VisionEncoder(parts).eval()
    px = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        ours = enc(px)
        out = parts.vision(px, output_hidden_states=True)
    assert torch.allclose(ours, out.hidden_states[-2][:, 1:], atol=1e-6)
    assert not torch.allclose(ours, out.last_hidden_state[:, 1:], atol=1e-3)  # post_layernorm'd last layer
    assert len(enc.encoder.layers) == parts.vision.config.num_hidden_layers - 1
