"""transformers' LlavaForConditionalGeneration checkpoints (`model_type: llava`, e.g.
bczhou/tiny-llava-v1-hf), read as `from_pretrained` + `AutoProcessor.from_pretrained` read them:
`language_model.*` (lm_head absent when the text config ties embeddings), `vision_tower.*`,
`multi_modal_projector.linear_1 / linear_2`, the processor's preprocessor_config.json and the
(fast, by default) tokenizer beside them."""
from __future__ import annotations

from pathlib import Path

from transformers import CLIPImageProcessor, SiglipImageProcessor

from .checkpoint_files import load_into, load_llm, load_state_dict, sub_dict
from .model_parts import ExportError, ModelParts, build_connector, build_llm, build_vision
from .layout_factory import SUPPORTED_LLMS
from .model_parts import MODEL_TYPE_TO_FAMILY, VISION_MODEL_TYPES
from .preprocessing import standard_processor


def from_llava_hf(ckpt: Path, cfg: dict) -> ModelParts:
    where = str(ckpt / "config.json")
    text_cfg, vision_cfg = dict(cfg.get("text_config") or {}), dict(cfg.get("vision_config") or {})
    text_cfg.setdefault("model_type", "llama")  # LlavaConfig's defaults
    vision_cfg.setdefault("model_type", "clip_vision_model")
    family = MODEL_TYPE_TO_FAMILY.get(text_cfg["model_type"])
    if family is None:
        raise ExportError(f"{where}: unsupported LLM model_type {text_cfg['model_type']!r} (supported: {SUPPORTED_LLMS})")
    vfam = VISION_MODEL_TYPES.get(vision_cfg["model_type"])
    if vfam is None:
        raise ExportError(f"{where}: unsupported vision tower model_type {vision_cfg['model_type']!r} (supported: siglip, clip)")
    if cfg.get("projector_hidden_act", "gelu") != "gelu":
        raise ExportError(f"{where}: projector_hidden_act {cfg.get('projector_hidden_act')!r} is not supported (gelu)")
    if cfg.get("multimodal_projector_bias", True) is not True:
        raise ExportError(f"{where}: multimodal_projector_bias false is not supported")
    strategy = {"default": "patch", "full": "cls_patch"}.get(cfg.get("vision_feature_select_strategy", "default"))
    if strategy is None:
        raise ExportError(f"{where}: vision_feature_select_strategy {cfg.get('vision_feature_select_strategy')!r} is not supported")
    layer = cfg.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise ExportError(f"{where}: vision_feature_layer must be one integer, got {layer!r}")
    text_cfg.setdefault("vocab_size", cfg.get("vocab_size", 32000))
    llm = build_llm(family, text_cfg, empty=True)
    vision = build_vision(vfam, vision_cfg, empty=True)
    connector = build_connector("mlp2x_gelu", vision.config.hidden_size, llm.config.hidden_size)
    sd = load_state_dict(ckpt)
    load_llm(llm, sub_dict(sd, "language_model."), "language_model")
    load_into(vision, sub_dict(sd, "vision_tower."), "vision_tower", unused=("vision_model.head.",))
    proj = sub_dict(sd, "multi_modal_projector.")
    load_into(connector, {k.replace("linear_1", "0").replace("linear_2", "2"): v for k, v in proj.items()},
              "multi_modal_projector")
    del sd
    return ModelParts(
        family=family, vision_family=vfam, vision=vision, connector=connector, llm=llm,
        connector_type="mlp2x_gelu", feature_layer=layer, feature_select=strategy,
        template="llava_hf", max_context=llm.config.max_position_embeddings,
        image_token_mode="token", image_token_id=int(cfg.get("image_token_index", 32000)),
        source={"kind": "llava-hf", "checkpoint": cfg.get("_name_or_path") or ckpt.name},
        processor=_processor(ckpt, vfam, vision.config.image_size), tokenizer_dir=ckpt,
        # LlavaProcessor loads AutoTokenizer's default, the fast one, and decodes without strip.
        reference_tokenizer_fast=True, strip_answer=False,
    )


def _processor(ckpt: Path, vfam: str, image_size: int):
    """AutoProcessor's image processor: the checkpoint's preprocessor_config.json, in the slow
    class (transformers' default for these processors)."""
    if not (ckpt / "preprocessor_config.json").exists():
        return standard_processor(vfam, image_size)
    cls = {"siglip": SiglipImageProcessor, "clip": CLIPImageProcessor}[vfam]
    try:
        return cls.from_pretrained(str(ckpt))
    except Exception as e:
        raise ExportError(f"{ckpt}/preprocessor_config.json: cannot be read as a {cls.__name__} ({type(e).__name__}: {e})") from e
