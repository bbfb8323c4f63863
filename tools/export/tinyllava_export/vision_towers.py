"""Vision towers a checkpoint names: where the reference loader takes their image processor
(and, for the legacy layout, their weights and config) from, resolved from local files only.

TinyLLaVA_Factory builds a tower's processor with `SiglipImageProcessor.from_pretrained(name)` /
`CLIPImageProcessor.from_pretrained(name)`, `name` being the config's
`vision_model_name_or_path`: a hub id (downloaded at load time) or a local directory. The
exporter never downloads, so it looks, in order, at: a directory given with --vision-tower, the
name itself when it is a local directory (absolute, or relative to the checkpoint), the
checkpoint's own preprocessor_config.json, and finally the frozen settings of the published
towers below (their hub preprocessor_config.json files, which follow one pattern per family).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import CLIPImageProcessor, SiglipImageProcessor

from .model_parts import ExportError
from .preprocessing import standard_processor

PROCESSOR_CLASSES = {"siglip": SiglipImageProcessor, "clip": CLIPImageProcessor}

# Published towers: hub id -> (family, the image size their processor produces).
KNOWN_TOWERS = {
    "google/siglip-so400m-patch14-384": ("siglip", 384),
    "google/siglip-so400m-patch14-224": ("siglip", 224),
    "google/siglip-base-patch16-224": ("siglip", 224),
    "google/siglip-base-patch16-256": ("siglip", 256),
    "google/siglip-base-patch16-384": ("siglip", 384),
    "google/siglip-base-patch16-512": ("siglip", 512),
    "google/siglip-large-patch16-256": ("siglip", 256),
    "google/siglip-large-patch16-384": ("siglip", 384),
    "openai/clip-vit-large-patch14-336": ("clip", 336),
    "openai/clip-vit-large-patch14": ("clip", 224),
    "openai/clip-vit-base-patch16": ("clip", 224),
    "openai/clip-vit-base-patch32": ("clip", 224),
}

# Tower configs (transformers config kwargs) of the published towers the legacy layout names
# when the tower's own directory is not at hand: google/siglip-so400m-patch14-384 (also the
# defaults of TinyLLaVABench's own SigLipVisionConfig) and OpenAI's CLIP-L/14.
KNOWN_TOWER_CONFIGS = {
    "siglip-so400m-patch14-384": dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                                      num_hidden_layers=27, num_attention_heads=16, num_channels=3, image_size=384,
                                      patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                                      attention_dropout=0.0),
    "openai/clip-vit-large-patch14-336": dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                                              num_hidden_layers=24, num_attention_heads=16, image_size=336,
                                              patch_size=14, projection_dim=768, hidden_act="quick_gelu",
                                              layer_norm_eps=1e-5),
    "openai/clip-vit-large-patch14": dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                                          num_hidden_layers=24, num_attention_heads=16, image_size=224,
                                          patch_size=14, projection_dim=768, hidden_act="quick_gelu",
                                          layer_norm_eps=1e-5),
}


def tower_family_from_name(name: str) -> str | None:
    """TinyLLaVA_Factory's VisionTowerFactory rule: the registered name contained in the tower's
    name decides the class (siglip, clip; dinov2 and mof are not supported here)."""
    low = name.lower()
    for family in ("siglip", "clip"):  # "siglip" first: the Factory would match both otherwise
        if family in low:
            return family
    return None


def resolve_tower_dir(name: str | None, ckpt: Path, override: Path | None) -> Path | None:
    """The local directory of the tower the checkpoint names, if there is one."""
    if override is not None:
        if not (override / "config.json").exists() and not (override / "preprocessor_config.json").exists():
            raise ExportError(f"--vision-tower {override}: not a vision tower directory (no config.json or "
                              "preprocessor_config.json)")
        return override
    if not name:
        return None
    name = name.split(":")[-1]  # the Factory's "<type>:<path>" form
    for candidate in (Path(name), ckpt / name):
        if candidate.is_dir():
            return candidate
    return None


@dataclass
class TowerProcessor:
    processor: object  # an HF slow image processor instance
    origin: str  # where its settings came from, for the user


def tower_processor(family: str, image_size: int, name: str | None, tower_dir: Path | None,
                    ckpt: Path) -> TowerProcessor:
    """The image processor the reference builds for the tower `name` (see the module doc)."""
    cls = PROCESSOR_CLASSES[family]
    for directory, origin in ((tower_dir, f"the vision tower's {tower_dir}/preprocessor_config.json"),
                              (ckpt, f"the checkpoint's {ckpt}/preprocessor_config.json")):
        if directory is not None and (directory / "preprocessor_config.json").exists():
            try:
                return TowerProcessor(cls.from_pretrained(str(directory)), origin)
            except Exception as e:
                raise ExportError(f"{directory}/preprocessor_config.json: cannot be read as a {cls.__name__} "
                                  f"({type(e).__name__}: {e})") from e
    key = (name or "").split(":")[-1]
    if key in KNOWN_TOWERS:
        known_family, size = KNOWN_TOWERS[key]
        if known_family != family or size != image_size:
            raise ExportError(f"the checkpoint names vision tower {key!r}, whose processor makes {known_family} "
                              f"{size}x{size} inputs, but its vision config is {family} with image_size {image_size}")
        return TowerProcessor(standard_processor(family, size), f"the published settings of {key}")
    raise ExportError(f"the image processor of vision tower {key or '(unnamed)'!r} is not available offline: "
                      "pass its directory (with preprocessor_config.json) as --vision-tower DIR")
