"""TinyLLaVABench checkpoints: the paper's own releases (bczhou/TinyLLaVA-3.1B, -2.0B, -1.5B),
read as that repository's `load_pretrained_model` (tinyllava/model/builder.py) reads them:

- config.json is the LLM's own config class (PhiConfig, StableLMEpochConfig, LlamaConfig) under
  `model_type` tiny_llava_phi / tiny_llava_stablelm / tiny_llava, plus LLaVA's `mm_*` keys.
- The weights are LLaVA-style: the LLM under `model.*` and `lm_head.*` (the phi variant's
  lm_head has no bias), the connector under `model.mm_projector.*` (`mm_projector_type`: a bare
  Linear for `linear`, a Sequential for mlpNx_gelu), the vision tower under
  `model.vision_tower.vision_tower.*`.
- The loader builds the vision tower lazily and then loads it from `mm_vision_tower` (a hub id
  such as bczhou/TinyLLaVA-3.1B-SigLIP, or a local path), not from the checkpoint: pass that
  directory as --vision-tower to follow it exactly; without it the tower weights stored in the
  checkpoint are used (the same tensors for the released models) with the tower config of
  the published tower (google/siglip-so400m-patch14-384 shape; OpenAI CLIP-L/14).
- Its SigLIP tower is not transformers' SiglipVisionModel as used by the Factory: the last
  encoder layer is deleted, the pooling head replaced by Identity, and the image features are
  `hidden_states[-1]` of what is left, every token kept (729 for 384/14; `mm_vision_select_layer`
  and `mm_vision_select_feature` are ignored). Its image processor is hard-coded: squash to
  384x384, bicubic, mean/std 0.5. A CLIP tower uses mm_vision_select_layer/-feature and the
  tower's CLIPImageProcessor.
- The tokenizer is the slow one (`use_fast=False`), `<im_patch>` added when
  `mm_use_im_patch_token` (default true), and then `resize_token_embeddings(len(tokenizer))`
  runs unconditionally: phi-2's 51200 logit rows become len(tokenizer).
"""
from __future__ import annotations

from pathlib import Path

import transformers

from .checkpoint_files import load_into, load_llm, load_state_dict, read_optional_json, sub_dict, weight_files
from .model_parts import ExportError, ModelParts, build_connector, build_llm, build_vision
from .preprocessing import SIGLIP_MEAN, SIGLIP_STD
from .vision_towers import KNOWN_TOWER_CONFIGS, resolve_tower_dir, tower_processor

LEGACY_MODEL_TYPES = {"tiny_llava_phi": "phi", "tiny_llava_stablelm": "stablelm", "tiny_llava": "llama"}
LEGACY_ARCHITECTURES = {"TinyLlavaPhiForCausalLM": "phi", "TinyLlavaStablelmForCausalLM": "stablelm",
                        "TinyLlavaLlamaForCausalLM": "llama"}
# TinyLLaVABench's conv modes for its releases: phi (3.1B), phi-style stablelm (2.0B), v1 (1.5B);
# their prompt text is that of the Factory templates of the same name.
LEGACY_TEMPLATES = {"phi": "phi", "stablelm": "phi", "llama": "llama"}
# StableLMEpochConfig's defaults (TinyLLaVABench's copy of stabilityai's remote code) and the
# names transformers' StableLmConfig gives the same settings.
STABLELM_EPOCH_DEFAULTS = dict(vocab_size=50304, intermediate_size=6912, hidden_size=2560, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=32, hidden_act="silu", rope_pct=0.25,
                               rope_theta=10000, max_position_embeddings=4096, norm_eps=1e-5, use_qkv_bias=True,
                               bos_token_id=0, eos_token_id=2, tie_word_embeddings=False)
IM_PATCH = "<im_patch>"
MM_KEYS_PREFIX = "mm_"


def is_legacy(cfg: dict) -> bool:
    archs = cfg.get("architectures") or []
    return (cfg.get("model_type") in LEGACY_MODEL_TYPES or cfg.get("model_type") == "tiny_llava_qwen"
            or any(a in LEGACY_ARCHITECTURES or a == "TinyLlavaQwen2ForCausalLM" for a in archs))


def _family(cfg: dict, where: str) -> str:
    if cfg.get("model_type") == "tiny_llava_qwen" or "TinyLlavaQwen2ForCausalLM" in (cfg.get("architectures") or []):
        raise ExportError(f"{where}: TinyLLaVABench's Qwen variant is not supported (none was released; its "
                          "conversation template is not a TinyLLaVA one); use TinyLLaVA_Factory for Qwen2 models")
    fam = LEGACY_MODEL_TYPES.get(cfg.get("model_type"))
    if fam is None:
        fam = next(LEGACY_ARCHITECTURES[a] for a in cfg["architectures"] if a in LEGACY_ARCHITECTURES)
    return fam


def _text_config(family: str, cfg: dict) -> dict:
    text = {k: v for k, v in cfg.items() if not k.startswith(MM_KEYS_PREFIX)}
    if family != "stablelm":
        return text
    epoch = {**STABLELM_EPOCH_DEFAULTS, **text}
    out = {k: v for k, v in epoch.items() if k not in ("rope_pct", "norm_eps")}
    out.update(partial_rotary_factor=epoch["rope_pct"], layer_norm_eps=epoch["norm_eps"],
               use_parallel_residual=False, qk_layernorm=False)
    return out


def _check_options(cfg: dict, where: str) -> None:
    if cfg.get("mm_use_im_start_end"):
        raise ExportError(f"{where}: mm_use_im_start_end true is not supported (the released models do not use it)")
    if cfg.get("mm_patch_merge_type", "flat") != "flat":
        raise ExportError(f"{where}: mm_patch_merge_type {cfg.get('mm_patch_merge_type')!r} is not supported (flat)")
    if cfg.get("image_aspect_ratio", "square") not in ("square", "pad"):
        raise ExportError(f"{where}: image_aspect_ratio {cfg.get('image_aspect_ratio')!r} is not supported (square, pad)")


def _tower_config(name: str, family: str, tower_dir: Path | None, where: str) -> tuple[dict, str]:
    """The tower's config dict and where it came from."""
    if tower_dir is not None and (tower_dir / "config.json").exists():
        tcfg = read_optional_json(tower_dir / "config.json")
        if tcfg.get("model_type") in ("siglip", "clip") and isinstance(tcfg.get("vision_config"), dict):
            tcfg = tcfg["vision_config"]  # a full SigLIP/CLIP repo: its vision half
        tcfg = dict(tcfg)
        tcfg.setdefault("model_type", f"{family}_vision_model")
        return tcfg, f"{tower_dir}/config.json"
    if family == "siglip":  # TinyLLaVABench's SigLipVisionConfig defaults: the so400m tower
        return dict(KNOWN_TOWER_CONFIGS["siglip-so400m-patch14-384"]), "TinyLLaVABench's SigLIP defaults (so400m/14@384)"
    key = name.split(":")[-1]
    if key in KNOWN_TOWER_CONFIGS:
        return dict(KNOWN_TOWER_CONFIGS[key]), f"the published config of {key}"
    raise ExportError(f"{where}: the config of vision tower {name!r} is not available offline: pass its directory "
                      "as --vision-tower DIR")


def _tower_weights(ckpt_sd: dict, tower_dir: Path | None, name: str, notes: list[str]) -> dict:
    if tower_dir is not None and weight_files(tower_dir) is not None:
        sd = load_state_dict(tower_dir)
        notes.append(f"vision tower weights from {tower_dir} (mm_vision_tower {name!r}), as TinyLLaVABench loads them")
        return {k: v for k, v in sd.items() if k.startswith("vision_model.")}
    sd = sub_dict(ckpt_sd, "model.vision_tower.vision_tower.")
    if not sd:
        raise ExportError(f"the checkpoint stores no vision tower weights and mm_vision_tower {name!r} is not a local "
                          "directory: pass the tower's directory as --vision-tower DIR")
    notes.append(f"vision tower weights from the checkpoint (TinyLLaVABench itself loads them from {name!r}; "
                 "pass --vision-tower DIR to use that directory)")
    return sd


def _check_tower_shape(tcfg: dict, tower_sd: dict, origin: str) -> None:
    """The stored tower must have the config's width and patch size (before building it)."""
    w = tower_sd.get("vision_model.embeddings.patch_embedding.weight")
    want = (tcfg.get("hidden_size"), tcfg.get("num_channels", 3), tcfg.get("patch_size"), tcfg.get("patch_size"))
    if w is not None and tuple(w.shape) != want:
        raise ExportError(f"vision tower: checkpoint weights do not match its config ({origin}): the patch embedding "
                          f"is {tuple(w.shape)}, the config says {want}")


def reference_tokenizer_length(ckpt: Path, family: str, added: list[str]) -> int:
    """len(tokenizer) after the legacy loader's additions: the vocabulary rows it resizes to."""
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(str(ckpt), use_fast=family == "stablelm")
    except Exception as e:
        raise ExportError(f"{ckpt}: cannot load the tokenizer ({type(e).__name__}: {e})"
                          + ("; TinyLLaVABench's stablelm models use the remote-code Arcade100kTokenizer, so the "
                             "checkpoint needs a tokenizer.json" if family == "stablelm" else "")) from e
    tok.add_tokens(list(added), special_tokens=True)
    return len(tok)


def from_legacy(ckpt: Path, cfg: dict, vision_tower: Path | None = None) -> ModelParts:
    where = str(ckpt / "config.json")
    family = _family(cfg, where)
    _check_options(cfg, where)
    name = cfg.get("mm_vision_tower") or cfg.get("vision_tower")
    if not name:
        raise ExportError(f"{where}: mm_vision_tower is missing")
    vfam = "siglip" if "siglip" in name.lower() else "clip"
    notes: list[str] = []
    tower_dir = resolve_tower_dir(name, ckpt, vision_tower)

    sd = load_state_dict(ckpt)
    if "model.image_newline" in sd:
        raise ExportError(f"{ckpt}: model.image_newline is present (an 'unpad' patch merge), which is not supported")
    tower_sd = _tower_weights(sd, tower_dir, name, notes)
    tcfg, tcfg_origin = _tower_config(name, vfam, tower_dir, where)
    notes.append(f"vision tower config from {tcfg_origin}")
    _check_tower_shape(tcfg, tower_sd, tcfg_origin)
    kept = int(tcfg.get("num_hidden_layers", 27))
    if vfam == "siglip":
        kept -= 1  # TinyLLaVABench deletes the SigLIP tower's last layer
        tcfg["num_hidden_layers"] = kept
    llm = build_llm(family, _text_config(family, cfg), empty=True)
    vision = build_vision(vfam, tcfg, empty=True)
    mm_type = cfg.get("mm_projector_type", "linear")  # the legacy builder's default
    connector = build_connector(mm_type, vision.config.hidden_size, llm.config.hidden_size)
    llm_sd = {k: v for k, v in sd.items() if not k.startswith(("model.vision_tower.", "model.mm_projector."))}
    # TinyLLaVABench's phi variant has lm_head = Linear(bias=False): transformers' PhiForCausalLM's
    # bias becomes zero, which adds nothing.
    load_llm(llm, llm_sd, "the language model (model.*, lm_head.*)",
             unused=("lm_head.bias",) if family == "phi" else ())
    dropped = tuple(f"vision_model.encoder.layers.{i}." for i in range(kept, kept + 8))
    load_into(vision, tower_sd, "vision tower", unused=("vision_model.head.",),
              ignored=(*dropped, "vision_model.head.", "text_model.", "logit_", "visual_projection.",
                       "text_projection."))
    load_into(connector, sub_dict(sd, "model.mm_projector."), f"mm_projector ({mm_type})")
    del sd, tower_sd, llm_sd

    added = [IM_PATCH] if cfg.get("mm_use_im_patch_token", True) else []
    rows = reference_tokenizer_length(ckpt, family, added)
    vocab = llm.get_input_embeddings().weight.shape[0]
    if rows > vocab:
        raise ExportError(f"{ckpt}: TinyLLaVABench's loader would grow the vocabulary from {vocab} to {rows} rows "
                          "with randomly initialised embeddings; such a model cannot be reproduced")
    if rows < vocab:
        llm.resize_token_embeddings(rows)
        notes.append(f"vocabulary resized from {vocab} to {rows} rows (len(tokenizer)), as TinyLLaVABench's loader does")

    if vfam == "siglip":
        feature_layer, strategy = -1, "cls_patch"
        if vision.config.image_size != 384:
            raise ExportError(f"vision tower {name!r} has image_size {vision.config.image_size}, but TinyLLaVABench's "
                              "SigLIP image processor always makes 384x384 inputs")
        processor = transformers.SiglipImageProcessor(
            do_resize=True, size={"height": 384, "width": 384}, resample=3, do_rescale=True,
            rescale_factor=1 / 255, do_normalize=True, image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD)
        notes.append("image preprocessing: TinyLLaVABench's built-in SigLIP processor (384x384, bicubic, mean/std 0.5)")
    else:
        feature_layer = int(cfg.get("mm_vision_select_layer", -1))
        strategy = cfg.get("mm_vision_select_feature", "patch")
        if strategy not in ("patch", "cls_patch"):
            raise ExportError(f"{where}: mm_vision_select_feature {strategy!r} is not supported (patch, cls_patch)")
        tp = tower_processor("clip", vision.config.image_size, name, tower_dir, ckpt)
        processor = tp.processor
        notes.append(f"image preprocessing from {tp.origin}")
    return ModelParts(
        family=family, vision_family=vfam, vision=vision, connector=connector, llm=llm,
        connector_type=mm_type, feature_layer=feature_layer, feature_select=strategy,
        template=LEGACY_TEMPLATES[family],
        max_context=int(cfg.get("tokenizer_model_max_length") or llm.config.max_position_embeddings),
        pad_to_square=cfg.get("image_aspect_ratio", "square") == "pad",
        source={"kind": "tinyllava-bench", "checkpoint": cfg.get("_name_or_path") or ckpt.name},
        processor=processor, tokenizer_dir=ckpt, added_tokens=added,
        reference_tokenizer_fast=family == "stablelm", notes=notes,
    )
