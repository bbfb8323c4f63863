"""Checkpoint directories the exporter reads, one module per layout, each loaded the way its
original code loads it (without that code, which needs the network and remote code):

- TinyLLaVA_Factory (`model_type: tinyllava`): layout_factory.py
- TinyLLaVABench, the paper's own releases (bczhou/TinyLLaVA-3.1B / -2.0B / -1.5B;
  `model_type: tiny_llava_phi | tiny_llava_stablelm | tiny_llava`): layout_legacy.py
- transformers' LlavaForConditionalGeneration (`model_type: llava`, e.g.
  bczhou/tiny-llava-v1-hf): layout_llava.py
"""
from __future__ import annotations

from pathlib import Path

from .checkpoint_files import read_config
from .model_parts import ExportError, ModelParts

LAYOUTS = ("tinyllava (TinyLLaVA_Factory)", "tiny_llava_phi / tiny_llava_stablelm / tiny_llava (TinyLLaVABench)",
           "llava (transformers)")


def from_checkpoint(ckpt: Path, vision_tower: Path | None = None, template: str | None = None) -> ModelParts:
    """The model of checkpoint directory `ckpt`. `vision_tower`: the local directory of the
    vision tower the checkpoint names (its processor, and for TinyLLaVABench its weights).
    `template`: the prompt template, when it is not the one the LLM family implies."""
    ckpt = Path(ckpt)
    cfg = read_config(ckpt)
    mt = cfg.get("model_type")
    if mt == "tinyllava":
        from .layout_factory import from_factory
        parts = from_factory(ckpt, cfg, vision_tower)
    elif mt == "llava":
        from .layout_llava import from_llava_hf
        parts = from_llava_hf(ckpt, cfg)
    else:
        from .layout_legacy import from_legacy, is_legacy
        if not is_legacy(cfg):
            raise ExportError(f"{ckpt}: unsupported model_type {mt!r}; supported layouts: {'; '.join(LAYOUTS)}")
        parts = from_legacy(ckpt, cfg, vision_tower)
    if template is not None:
        parts.template = template
    return parts.eval()
