"""The PyTorch model to export, as transformers' own classes plus the TinyLLaVA glue's facts.

Sources: a random-init preset (here) or a checkpoint directory in one of the layouts of
checkpoints.py. Everything serving needs later (template, preprocessing, image token count,
which tokenizer is the reference) is decided when the parts are built, from local files only.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
import transformers
from transformers import (CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig,
                          SiglipVisionModel)

from .preprocessing import standard_processor
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
    # The reference's own image processor (an HF slow, PIL-based processor instance): what the
    # original loader builds for this vision tower.
    processor: Any = None
    # Where the reference loads its tokenizer from (None: a preset's trained tokenizer), the
    # tokens its loader adds to it, and whether the reference runs the fast tokenizer.
    tokenizer_dir: Path | None = None
    added_tokens: list[str] = field(default_factory=list)
    reference_tokenizer_fast: bool = False
    # The reference strips the decoded answer (TinyLLaVA_Factory and TinyLLaVABench do:
    # `batch_decode(...)[0].strip()`; transformers' Llava processor does not).
    strip_answer: bool = True
    notes: list[str] = field(default_factory=list)  # what the exporter should tell the user

    @property
    def num_image_tokens(self) -> int:
        cfg = self.vision.config
        n = (cfg.image_size // cfg.patch_size) ** 2 + (1 if self.vision_family == "clip" else 0)
        return n - 1 if self.feature_select == "patch" else n

    def eval(self) -> "ModelParts":
        for m in (self.vision, self.connector, self.llm):
            m.eval()
        return self


CONNECTOR_TYPES = "mlpNx_gelu (any N >= 1, e.g. mlp2x_gelu), linear, identity"
_MLP_GELU = re.compile(r"^mlp([1-9][0-9]*)x_gelu$")


def build_connector(kind: str, vision_hidden: int, hidden: int) -> nn.Module:
    """TinyLLaVA_Factory's weight-only connectors, as its own module trees (so that its state
    dict names load unchanged under `connector._connector.`):
    mlpNx_gelu: Sequential(Linear, N-1 x [exact GELU, Linear]) -> keys 0.*, 2.*, ...;
    linear: a bare Linear -> keys weight, bias; identity: no weights."""
    if kind == "identity":
        if vision_hidden != hidden:
            raise ExportError(f"connector 'identity' needs equal sizes, got vision {vision_hidden} and LLM {hidden}")
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(vision_hidden, hidden)
    m = _MLP_GELU.match(kind)
    if m:
        layers: list[nn.Module] = [nn.Linear(vision_hidden, hidden)]
        for _ in range(int(m.group(1)) - 1):
            layers += [nn.GELU(), nn.Linear(hidden, hidden)]
        return nn.Sequential(*layers)
    raise ExportError(f"unsupported connector {kind!r}: supported are {CONNECTOR_TYPES} "
                      "(resampler, qformer and mof_mlp connectors are not supported)")


# Keys a stored config dict carries about itself, not about the model's shape.
_CONFIG_META_KEYS = ("model_type", "architectures", "_name_or_path", "transformers_version", "auto_map", "torch_dtype")


def _config_kwargs(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in _CONFIG_META_KEYS}


@contextmanager
def uninitialised_weights():
    """Build modules without initialising their weights (a checkpoint overwrites them anyway):
    a real-size model's random init costs more than loading it. Every parameter must then be
    loaded or set explicitly (checkpoint_files.load_into does)."""
    from transformers.modeling_utils import no_init_weights
    classes = (nn.Linear, nn.Embedding, nn.LayerNorm, nn.Conv2d)
    saved = [c.reset_parameters for c in classes]
    for c in classes:
        c.reset_parameters = lambda self: None
    try:
        with no_init_weights():
            yield
    finally:
        for c, f in zip(classes, saved):
            c.reset_parameters = f


def build_llm(family: str, text_cfg: dict, empty: bool = False):
    """A transformers *ForCausalLM (eager attention) from config values: preset or checkpoint.
    The config class supplies every value the dict leaves out, as transformers' from_dict does."""
    cfg_name, cls_name = LLM_CLASSES[family]
    cfg = getattr(transformers, cfg_name)(**_config_kwargs(text_cfg))
    cfg._attn_implementation = "eager"
    if not empty:
        return getattr(transformers, cls_name)(cfg)
    with uninitialised_weights():
        return getattr(transformers, cls_name)(cfg)


def build_vision(family: str, vision_cfg: dict, empty: bool = False):
    """A transformers SigLIP/CLIP vision model (eager attention) from config values."""
    cfg_cls, model_cls = VISION_CLASSES[family]
    cfg = cfg_cls(**_config_kwargs(vision_cfg))
    cfg._attn_implementation = "eager"
    if not empty:
        return model_cls(cfg)
    with uninitialised_weights():
        return model_cls(cfg)


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
    llm = build_llm(preset.family, text)
    vision = build_vision(preset.vision, preset.vision_cfg)
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
        processor=standard_processor(preset.vision, vision.config.image_size),
    ).eval()
