"""TinyLLaVA_Factory checkpoints (`model_type: tinyllava`), read as
`TinyLlavaForConditionalGeneration.from_pretrained` reads them (main branch):

- config.json is `TinyLlavaConfig.save_pretrained`'s output: `text_config` and `vision_config`
  hold only what differs from the defaults (transformers' `to_diff_dict`), and the Factory
  rebuilds them with `<ConfigClass>.from_dict(...)`, so the class defaults fill the rest. The
  classes come from `llm_model_name_or_path` / `vision_model_name_or_path` by name (its
  LLMFactory / VisionTowerFactory); the sub-configs' `model_type` names the same classes.
- model.safetensors (or shards) is `save_pretrained`'s: `language_model.*` (the HF causal LM;
  `language_model.lm_head.weight` is absent when the LLM ties its embeddings, because
  save_pretrained drops the second name of a shared tensor), `vision_tower._vision_tower.*`
  (the HF vision model), `connector._connector.*` (the connector's own module tree).
- The tokenizer files are the Factory's (slow, unless `tokenizer_use_fast`) tokenizer, saved
  beside the weights; the image processor is the vision tower's (vision_towers.py).
"""
from __future__ import annotations

from pathlib import Path

from .checkpoint_files import load_into, load_llm, load_state_dict, sub_dict
from .model_parts import (DEFAULT_TEMPLATE, MODEL_TYPE_TO_FAMILY, VISION_MODEL_TYPES, ExportError, ModelParts,
                          build_connector, build_llm, build_vision)
from .vision_towers import resolve_tower_dir, tower_family_from_name, tower_processor

SUPPORTED_LLMS = "llama, phi, stablelm, qwen2, gemma"
# TinyLLaVA_Factory's LLMFactory: a registered name contained in llm_model_name_or_path picks
# the causal LM class (and so the config class whose defaults complete text_config).
FACTORY_LLM_NAMES = {"tinyllama": "llama", "phi": "phi", "stablelm": "stablelm", "qwen2": "qwen2", "gemma": "gemma"}
PREFIXES = ("language_model.", "vision_tower._vision_tower.", "connector._connector.")


def _family_by_name(name: str) -> str | None:
    found = {fam for key, fam in FACTORY_LLM_NAMES.items() if key in name.lower()}
    return found.pop() if len(found) == 1 else None


def text_family(cfg: dict, where: str) -> str:
    text_cfg = cfg["text_config"]
    mt = text_cfg.get("model_type")
    name = str(cfg.get("llm_model_name_or_path") or "")
    if mt == "openelm" or "openelm" in name.lower():
        raise ExportError(f"{where}: the OpenELM LLM is not supported (supported: {SUPPORTED_LLMS})")
    if mt is None:
        fam = _family_by_name(name)
        if fam is None:
            raise ExportError(f"{where}: text_config has no model_type and llm_model_name_or_path {name!r} names "
                              f"no supported LLM (supported: {SUPPORTED_LLMS})")
        return fam
    if mt not in MODEL_TYPE_TO_FAMILY:
        raise ExportError(f"{where}: unsupported LLM model_type {mt!r} (supported: {SUPPORTED_LLMS})")
    return MODEL_TYPE_TO_FAMILY[mt]


def vision_family(cfg: dict, where: str) -> str:
    mt = cfg["vision_config"].get("model_type")
    if mt is None:
        name = str(cfg.get("vision_model_name_or_path") or "")
        fam = tower_family_from_name(name)
        if fam is None:
            raise ExportError(f"{where}: vision_config has no model_type and vision_model_name_or_path {name!r} "
                              "names no supported tower (siglip, clip)")
        return fam
    if mt not in VISION_MODEL_TYPES:
        raise ExportError(f"{where}: unsupported vision tower model_type {mt!r} (supported: siglip, clip)")
    return VISION_MODEL_TYPES[mt]


def default_template(family: str, llm_name: str) -> str:
    """The Factory's conv_version for the LLM: its training scripts pair qwen2 base models with
    qwen2_base and instruct models with qwen2_instruct."""
    if family == "qwen2" and "instruct" in llm_name.lower():
        return "qwen2_instruct"
    return DEFAULT_TEMPLATE[family]


def from_factory(ckpt: Path, cfg: dict, vision_tower: Path | None = None) -> ModelParts:
    where = str(ckpt / "config.json")
    for key in ("text_config", "vision_config"):
        if not isinstance(cfg.get(key), dict):
            raise ExportError(f"{where}: '{key}' is missing; it is needed to build the model without remote code")
    family = text_family(cfg, where)
    vfam = vision_family(cfg, where)
    connector_type = cfg.get("connector_type") or "mlp2x_gelu"
    strategy = cfg.get("vision_feature_select_strategy", "patch")
    if strategy not in ("patch", "cls_patch"):
        raise ExportError(f"{where}: vision_feature_select_strategy {strategy!r} is not supported (patch, cls_patch)")
    aspect = cfg.get("image_aspect_ratio", "square")
    if aspect not in ("square", "pad"):
        raise ExportError(f"{where}: image_aspect_ratio {aspect!r} is not supported (square, pad)")
    llm = build_llm(family, cfg["text_config"], empty=True)
    vision = build_vision(vfam, cfg["vision_config"], empty=True)
    connector = build_connector(connector_type, vision.config.hidden_size, llm.config.hidden_size)
    sd = load_state_dict(ckpt)
    stray = sorted(k for k in sd if not k.startswith(PREFIXES))
    if stray:
        raise ExportError(f"{ckpt}: weights outside the Factory's language_model / vision_tower / connector: "
                          f"{stray[:6]}{'...' if len(stray) > 6 else ''}")
    load_llm(llm, sub_dict(sd, "language_model."), "language_model")
    # The pooling head of SigLIP is never run by TinyLLaVA (it uses hidden states).
    load_into(vision, sub_dict(sd, "vision_tower._vision_tower."), "vision_tower", unused=("vision_model.head.",))
    load_into(connector, sub_dict(sd, "connector._connector."), f"connector ({connector_type})")
    del sd
    tower_name = cfg.get("vision_model_name_or_path")
    tower_dir = resolve_tower_dir(tower_name, ckpt, vision_tower)
    proc = tower_processor(vfam, vision.config.image_size, tower_name, tower_dir, ckpt)
    llm_name = str(cfg.get("llm_model_name_or_path") or "")
    return ModelParts(
        family=family, vision_family=vfam, vision=vision, connector=connector, llm=llm,
        connector_type=connector_type, feature_layer=int(cfg.get("vision_feature_layer", -2)),
        feature_select=strategy, template=default_template(family, llm_name),
        max_context=int(cfg.get("tokenizer_model_max_length") or llm.config.max_position_embeddings),
        pad_to_square=aspect == "pad",
        source={"kind": "tinyllava-factory", "checkpoint": cfg.get("_name_or_path") or ckpt.name},
        processor=proc.processor, tokenizer_dir=ckpt,
        reference_tokenizer_fast=bool(cfg.get("tokenizer_use_fast", False)),
        notes=[f"image preprocessing from {proc.origin}"],
    )
