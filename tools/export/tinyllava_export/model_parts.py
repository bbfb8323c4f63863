"""The PyTorch model to export, as transformers' own classes plus the TinyLLaVA glue's facts.

Three sources: a random-init preset, a TinyLLaVA_Factory checkpoint directory (`model_type:
tinyllava`, built from its stored text/vision configs and state dict, no remote code), and a
transformers Llava checkpoint (bczhou/tiny-llava-v1-hf layout). Everything serving needs later
(template, preprocessing, image token count) is decided here, from local files only.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
import transformers
from transformers import (CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig,
                          SiglipVisionModel)

from .presets import Preset

LLM_CLASSES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "phi": ("PhiConfig", "PhiForCausalLM"),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "gemma": ("GemmaConfig", "GemmaForCausalLM"),
}
VISION_CLASSES = {"siglip": (SiglipVisionConfig, SiglipVisionModel),
                  "clip": (CLIPVisionConfig, CLIPVisionModel)}
# transformers model_type of a text config -> our family name
MODEL_TYPE_TO_FAMILY = {"llama": "llama", "phi": "phi", "stablelm": "stablelm", "qwen2": "qwen2",
                        "gemma": "gemma"}
VISION_MODEL_TYPES = {"siglip_vision_model": "siglip", "siglip": "siglip",
                      "clip_vision_model": "clip", "clip": "clip"}
# Which template TinyLLaVA_Factory uses for each LLM family (conv_version in its training scripts).
DEFAULT_TEMPLATE = {"phi": "phi", "stablelm": "phi", "llama": "llama", "gemma": "gemma",
                    "qwen2": "qwen2_base"}


class ExportError(Exception):
    """A clear, user-facing reason why an export cannot go on."""


@dataclass
class ModelParts:
    family: str
    vision_family: str
    vision: nn.Module  # transformers SiglipVisionModel / CLIPVisionModel
    connector: nn.Module
    llm: nn.Module  # transformers *ForCausalLM
    connector_type: str
    feature_layer: int
    feature_select: str  # patch | cls_patch
    template: str
    max_context: int
    pad_to_square: bool = False
    image_token_mode: str = "splice"
    image_token_id: int | None = None
    source: dict = field(default_factory=dict)
    preprocessor_config: dict | None = None  # a checkpoint's own preprocessor_config.json

    @property
    def num_image_tokens(self) -> int:
        cfg = self.vision.config
        n = (cfg.image_size // cfg.patch_size) ** 2 + (1 if self.vision_family == "clip" else 0)
        return n - 1 if self.feature_select == "patch" else n

    def eval(self) -> "ModelParts":
        for m in (self.vision, self.connector, self.llm):
            m.eval()
        return self


def build_connector(kind: str, vision_hidden: int, hidden: int) -> nn.Module:
    """TinyLLaVA_Factory connectors: mlpNx_gelu (Linear, then N-1 x [exact GELU, Linear]), linear, identity."""
    if kind == "identity":
        if vision_hidden != hidden:
            raise ExportError(f"connector 'identity' needs equal sizes, got vision {vision_hidden} and LLM {hidden}")
        return nn.Identity()
    if kind == "linear":
        return nn.Sequential(nn.Linear(vision_hidden, hidden))
    if kind.startswith("mlp") and kind.endswith("x_gelu"):
        try:
            depth = int(kind[3:-6])
        except ValueError:
            depth = 0
        if depth >= 1:
            layers: list[nn.Module] = [nn.Linear(vision_hidden, hidden)]
            for _ in range(depth - 1):
                layers += [nn.GELU(), nn.Linear(hidden, hidden)]
            return nn.Sequential(*layers)
    raise ExportError(f"unsupported connector {kind!r}: supported are mlpNx_gelu (e.g. mlp2x_gelu), linear, identity "
                      "(resampler and qformer connectors are not supported)")


def _init_(module: nn.Module, std: float, gen: torch.Generator) -> None:
    """Deterministic random init (independent of transformers' init order)."""
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        with torch.no_grad():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif "norm" in name:  # norm weights around their neutral value (gemma's (1+w): around 0)
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (0.0 if p.mean().abs() < 0.5 else 1.0))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def from_preset(preset: Preset, tokenizer_size: int, seed: int) -> ModelParts:
    """A random-init model of the preset's shape; vocabulary rows past the tokenizer are zero.

    Zero rows give logit 0 (or the bias), far below the top of the real rows, so random models
    never emit ids the tokenizer cannot decode, as trained models with padded vocabularies don't.
    """
    text = dict(preset.text)
    pad_to = text.pop("pad_vocab_to", None)
    if text.get("vocab_size") is None:
        v = tokenizer_size
        text["vocab_size"] = (v + pad_to - 1) // pad_to * pad_to if pad_to else v
    if text["vocab_size"] < tokenizer_size:
        raise ExportError(f"preset {preset.name}: vocab_size {text['vocab_size']} < tokenizer size {tokenizer_size}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    llm = _build_llm(preset.family, text)
    vision = _build_vision(preset.vision, preset.vision_cfg)
    connector = build_connector(preset.connector, vision.config.hidden_size, text["hidden_size"])
    if preset.tiny:
        for m in (vision, connector, llm):
            _init_(m, preset.init_std, gen)
    with torch.no_grad():
        emb = llm.get_input_embeddings().weight
        emb[tokenizer_size:] = 0
        head = llm.get_output_embeddings()
        head.weight[tokenizer_size:] = 0
        if getattr(head, "bias", None) is not None:
            head.bias[tokenizer_size:] = 0
    return ModelParts(
        family=preset.family, vision_family=preset.vision, vision=vision, connector=connector,
        llm=llm, connector_type=preset.connector, feature_layer=-2, feature_select="patch",
        template=preset.template, max_context=preset.max_context,
        source={"kind": "random-init", "checkpoint": preset.source_checkpoint,
                "preset": preset.name, "seed": seed},
    ).eval()


# ----------------------------------------------------------------------------------------------
# Checkpoints

def _load_state_dict(ckpt: Path) -> dict:
    """All tensors of a checkpoint: safetensors or .bin, single file or sharded with an index."""
    for index_name, loader in (("model.safetensors.index.json", "st"), ("pytorch_model.bin.index.json", "pt")):
        index = ckpt / index_name
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            break
    else:
        if (ckpt / "model.safetensors").exists():
            files, loader = ["model.safetensors"], "st"
        elif (ckpt / "pytorch_model.bin").exists():
            files, loader = ["pytorch_model.bin"], "pt"
        else:
            raise ExportError(f"{ckpt}: no weights found (expected model.safetensors, pytorch_model.bin or a sharded index)")
    sd = {}
    for name in files:
        path = ckpt / name
        if not path.exists():
            raise ExportError(f"{path}: listed in the checkpoint index but missing")
        try:
            if loader == "st":
                from safetensors.torch import load_file
                sd.update(load_file(str(path)))
            else:
                sd.update(torch.load(str(path), map_location="cpu"))
        except Exception as e:  # a truncated or corrupt file
            raise ExportError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from e
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def _load_into(module: nn.Module, sd: dict, what: str) -> None:
    missing, unexpected = module.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith(("position_ids", "rotary_emb.inv_freq"))]
    if missing or unexpected:
        raise ExportError(f"{what}: checkpoint weights do not match its config: "
                          f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                          f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")


def _sub(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _text_family(text_cfg: dict, where: str) -> str:
    mt = text_cfg.get("model_type")
    if mt == "openelm" or "OpenELM" in str(text_cfg.get("architectures", "")):
        raise ExportError(f"{where}: the OpenELM LLM is not supported (supported: llama, phi, stablelm, qwen2, gemma)")
    if mt not in MODEL_TYPE_TO_FAMILY:
        raise ExportError(f"{where}: unsupported LLM model_type {mt!r} (supported: llama, phi, stablelm, qwen2, gemma)")
    return MODEL_TYPE_TO_FAMILY[mt]


def _vision_family(vision_cfg: dict, where: str) -> str:
    mt = vision_cfg.get("model_type")
    if mt not in VISION_MODEL_TYPES:
        raise ExportError(f"{where}: unsupported vision tower model_type {mt!r} (supported: siglip, clip)")
    return VISION_MODEL_TYPES[mt]


# Keys a stored config dict carries about itself, not about the model's shape.
_CONFIG_META_KEYS = ("model_type", "architectures", "_name_or_path", "transformers_version", "auto_map", "torch_dtype")


def _config_kwargs(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in _CONFIG_META_KEYS}


def _build_llm(family: str, text_cfg: dict):
    """A transformers *ForCausalLM (eager attention) from config values: preset or checkpoint."""
    cfg_name, cls_name = LLM_CLASSES[family]
    cfg = getattr(transformers, cfg_name)(**_config_kwargs(text_cfg))
    cfg._attn_implementation = "eager"
    return getattr(transformers, cls_name)(cfg)


def _build_vision(family: str, vision_cfg: dict):
    """A transformers SigLIP/CLIP vision model (eager attention) from config values."""
    cfg_cls, model_cls = VISION_CLASSES[family]
    cfg = cfg_cls(**_config_kwargs(vision_cfg))
    cfg._attn_implementation = "eager"
    return model_cls(cfg)


def read_config(ckpt: Path) -> dict:
    path = ckpt / "config.json"
    if not path.exists():
        raise ExportError(f"{ckpt}: config.json is missing (is this a checkpoint directory?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from e


def from_checkpoint(ckpt: Path) -> ModelParts:
    cfg = read_config(ckpt)
    mt = cfg.get("model_type")
    if mt == "tinyllava":
        return _from_factory(ckpt, cfg)
    if mt == "llava":
        return _from_llava_hf(ckpt, cfg)
    if mt in ("tiny_llava_phi", "tiny_llava_stablelm", "tiny_llava_llama") or "TinyLlava" in str(cfg.get("architectures")):
        raise ExportError(
            f"{ckpt}: this is a legacy TinyLLaVABench checkpoint (model_type {mt!r}), which is not supported. "
            "Convert it with TinyLLaVA_Factory (load it there and save it in the Factory format, "
            "model_type 'tinyllava'), or use the transformers Llava conversion of the same model "
            "(e.g. bczhou/tiny-llava-v1-hf), then export that directory.")
    raise ExportError(f"{ckpt}: unsupported model_type {mt!r} (supported: 'tinyllava' from TinyLLaVA_Factory, 'llava' from transformers)")


def _from_factory(ckpt: Path, cfg: dict) -> ModelParts:
    where = str(ckpt / "config.json")
    for key in ("text_config", "vision_config"):
        if not isinstance(cfg.get(key), dict):
            raise ExportError(f"{where}: '{key}' is missing; it is needed to build the model without remote code")
    family = _text_family(cfg["text_config"], where)
    vfam = _vision_family(cfg["vision_config"], where)
    connector_type = cfg.get("connector_type", "mlp2x_gelu")
    strategy = cfg.get("vision_feature_select_strategy", "patch")
    if strategy not in ("patch", "cls_patch"):
        raise ExportError(f"{where}: vision_feature_select_strategy {strategy!r} is not supported (patch, cls_patch)")
    aspect = cfg.get("image_aspect_ratio", "square")
    if aspect not in ("square", "pad"):
        raise ExportError(f"{where}: image_aspect_ratio {aspect!r} is not supported (square, pad)")
    llm = _build_llm(family, cfg["text_config"])
    vision = _build_vision(vfam, cfg["vision_config"])
    connector = build_connector(connector_type, vision.config.hidden_size, llm.config.hidden_size)
    sd = _load_state_dict(ckpt)
    _load_into(llm, _sub(sd, "language_model."), "language_model")
    _load_into(vision, _sub(sd, "vision_tower._vision_tower."), "vision_tower")
    _load_into(connector, _sub(sd, "connector._connector."), "connector")
    if llm.config.tie_word_embeddings:
        llm.tie_weights()
    return ModelParts(
        family=family, vision_family=vfam, vision=vision, connector=connector, llm=llm,
        connector_type=connector_type, feature_layer=int(cfg.get("vision_feature_layer", -2)),
        feature_select=strategy, template=cfg.get("conv_version") or DEFAULT_TEMPLATE[family],
        max_context=int(cfg.get("tokenizer_model_max_length") or llm.config.max_position_embeddings),
        pad_to_square=aspect == "pad",
        source={"kind": "tinyllava-factory", "checkpoint": cfg.get("_name_or_path") or ckpt.name},
        preprocessor_config=_read_optional_json(ckpt / "preprocessor_config.json"),
    ).eval()


def _from_llava_hf(ckpt: Path, cfg: dict) -> ModelParts:
    where = str(ckpt / "config.json")
    text_cfg, vision_cfg = cfg.get("text_config") or {}, cfg.get("vision_config") or {}
    text_cfg.setdefault("model_type", "llama")
    vision_cfg.setdefault("model_type", "clip_vision_model")
    family = _text_family(text_cfg, where)
    vfam = _vision_family(vision_cfg, where)
    if cfg.get("projector_hidden_act", "gelu") != "gelu":
        raise ExportError(f"{where}: projector_hidden_act {cfg.get('projector_hidden_act')!r} is not supported (gelu)")
    strategy = {"default": "patch", "full": "cls_patch"}.get(cfg.get("vision_feature_select_strategy", "default"))
    if strategy is None:
        raise ExportError(f"{where}: vision_feature_select_strategy {cfg.get('vision_feature_select_strategy')!r} is not supported")
    layer = cfg.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise ExportError(f"{where}: vision_feature_layer must be one integer, got {layer!r}")
    text_cfg.setdefault("vocab_size", cfg.get("vocab_size", 32000))
    llm = _build_llm(family, text_cfg)
    vision = _build_vision(vfam, vision_cfg)
    connector = build_connector("mlp2x_gelu", vision.config.hidden_size, llm.config.hidden_size)
    sd = _load_state_dict(ckpt)
    _load_into(llm, _sub(sd, "language_model."), "language_model")
    _load_into(vision, _sub(sd, "vision_tower."), "vision_tower")
    proj = _sub(sd, "multi_modal_projector.")
    _load_into(connector, {k.replace("linear_1", "0").replace("linear_2", "2"): v for k, v in proj.items()},
               "multi_modal_projector")
    if llm.config.tie_word_embeddings:
        llm.tie_weights()
    return ModelParts(
        family=family, vision_family=vfam, vision=vision, connector=connector, llm=llm,
        connector_type="mlp2x_gelu", feature_layer=layer, feature_select=strategy,
        template="llava_hf", max_context=llm.config.max_position_embeddings,
        image_token_mode="token", image_token_id=int(cfg.get("image_token_index", 32000)),
        source={"kind": "llava-hf", "checkpoint": cfg.get("_name_or_path") or ckpt.name},
        preprocessor_config=_read_optional_json(ckpt / "preprocessor_config.json"),
    ).eval()


def _read_optional_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None
