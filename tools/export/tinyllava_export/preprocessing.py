"""Image preprocessing: the HF slow (PIL) image processor a model was trained with, built
offline, and its description in the manifest's `image_preprocessing` fields."""
from __future__ import annotations

from PIL import Image
import torch
from transformers import CLIPImageProcessor, SiglipImageProcessor

from .model_parts import ModelParts

SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
RESAMPLE_NAMES = {Image.BICUBIC: "bicubic", Image.BILINEAR: "bilinear", Image.NEAREST: "nearest"}


def standard_processor(tower: str, size: int | None = None, overrides: dict | None = None):
    """The slow (PIL) HF image processor of a tower, built offline from the hub configs of
    google/siglip-so400m-patch14-384 (squash to 384, mean/std 0.5) and
    openai/clip-vit-large-patch14-336 (shortest edge 336, centre crop, CLIP mean/std),
    at `size` when the tower's image size differs, with a checkpoint's own settings on top."""
    own = {k: v for k, v in (overrides or {}).items() if k not in ("image_processor_type", "processor_class")}
    if tower == "siglip":
        size = size or 384
        kw = dict(do_resize=True, size={"height": size, "width": size}, resample=Image.BICUBIC, do_rescale=True,
                  rescale_factor=1 / 255, do_normalize=True, image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD)
        return SiglipImageProcessor(**{**kw, **own})
    if tower == "clip":
        size = size or 336
        kw = dict(do_resize=True, size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                  resample=Image.BICUBIC, do_center_crop=True, do_rescale=True, rescale_factor=1 / 255,
                  do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)
        return CLIPImageProcessor(**{**kw, **own})
    raise ValueError(f"unknown vision tower {tower!r} (siglip | clip)")


def image_processor(parts: ModelParts):
    """The checkpoint's own preprocessor_config.json when it has one, else the tower's standard
    processor at the tower's image size (what TinyLLaVA_Factory downloads by name)."""
    return standard_processor(parts.vision_family, parts.vision.config.image_size, parts.preprocessor_config)


def manifest_fields(proc, pad_to_square: bool) -> dict:
    """The manifest `image_preprocessing` object describing `proc`."""
    resample = RESAMPLE_NAMES.get(int(proc.resample))
    if resample is None:
        raise ValueError(f"unsupported resample filter {proc.resample!r}")
    mean, std = [float(x) for x in proc.image_mean], [float(x) for x in proc.image_std]
    fields = {
        "pad_to_square": pad_to_square,
        "pad_color": pad_color(mean) if pad_to_square else None,
        "resample": resample,
        "rescale_factor": float(proc.rescale_factor),
        "image_mean": mean,
        "image_std": std,
    }
    if isinstance(proc, SiglipImageProcessor) or not getattr(proc, "do_center_crop", False):
        size = proc.size
        if "height" not in size:
            raise ValueError(f"unsupported image processor size {size!r}")
        fields.update(resize_mode="squash", size={"height": size["height"], "width": size["width"]},
                      shortest_edge=None)
    else:
        if "shortest_edge" not in proc.size:
            raise ValueError(f"unsupported image processor size {proc.size!r}")
        crop = proc.crop_size
        fields.update(resize_mode="shortest_edge_center_crop",
                      size={"height": crop["height"], "width": crop["width"]},
                      shortest_edge=int(proc.size["shortest_edge"]))
    return fields


def pad_color(mean) -> list[int]:
    """The Factory's background for pad-to-square: int(x * 255), truncated, per channel."""
    return [int(m * 255) for m in mean]


def expand_to_square(img: Image.Image, color: tuple[int, ...]) -> Image.Image:
    """TinyLLaVA's expand2square for image_aspect_ratio "pad": centred, floor offsets."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), color)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def pixel_values(proc, img: Image.Image, pad_to_square: bool) -> torch.Tensor:
    """[1,3,H,W] float32 exactly as the reference computes it (PIL convert('RGB') first)."""
    img = img.convert("RGB")
    if pad_to_square:
        img = expand_to_square(img, tuple(pad_color(proc.image_mean)))
    return proc(img, return_tensors="pt")["pixel_values"]


def parity_image() -> Image.Image:
    """A deterministic non-square test picture for the exporter's parity check."""
    import numpy as np
    y, x = np.mgrid[0:240, 0:320]
    rgb = np.stack([(x * 255 // 319), (y * 255 // 239), ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    rgb[60:180, 100:220] = [200, 40, 40]
    return Image.fromarray(rgb, "RGB")
