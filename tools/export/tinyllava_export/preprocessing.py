"""Image preprocessing: the reference's HF slow (PIL) image processor, its description in the
manifest's `image_preprocessing` fields, and the proof that the two agree.

The server implements the manifest's fields (src/model/image/: PIL's resampling ported bit for
bit, HF's crop geometry and float arithmetic). `manifest_fields` refuses every processor setting
those fields cannot express, naming it; `check_manifest_pixels` then runs the reference
processor and `manifest_pixels` (a plain statement of what the fields mean, in PIL and numpy) on
probe images of several shapes and refuses the export unless they agree bit for bit.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
import torch
from transformers import CLIPImageProcessor, SiglipImageProcessor

SIGLIP_MEAN = [0.5, 0.5, 0.5]
SIGLIP_STD = [0.5, 0.5, 0.5]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# PIL's filter ids (Image.Resampling) -> manifest names; the server ports each of them.
RESAMPLE_NAMES = {Image.NEAREST: "nearest", Image.BILINEAR: "bilinear", Image.BICUBIC: "bicubic",
                  Image.BOX: "box", Image.HAMMING: "hamming", Image.LANCZOS: "lanczos"}
RESAMPLE_FILTERS = {name: f for f, name in RESAMPLE_NAMES.items()}


class UnsupportedPreprocessing(ValueError):
    """A processor setting the manifest (and so the server) cannot reproduce."""


def standard_processor(tower: str, size: int | None = None):
    """The slow (PIL) HF image processor of a tower family, built offline from the hub configs
    of google/siglip-so400m-patch14-384 (squash to 384, mean/std 0.5) and
    openai/clip-vit-large-patch14-336 (shortest edge 336, centre crop, CLIP mean/std), at `size`
    when the tower's image size differs (the other published towers follow the same pattern)."""
    if tower == "siglip":
        size = size or 384
        return SiglipImageProcessor(do_resize=True, size={"height": size, "width": size}, resample=Image.BICUBIC,
                                    do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                    image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD)
    if tower == "clip":
        size = size or 336
        return CLIPImageProcessor(do_resize=True, size={"shortest_edge": size},
                                  crop_size={"height": size, "width": size}, resample=Image.BICUBIC,
                                  do_center_crop=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                  image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)
    raise ValueError(f"unknown vision tower {tower!r} (siglip | clip)")


def _rgb(values, what: str) -> list[float]:
    vals = [float(values)] * 3 if isinstance(values, (int, float)) else [float(x) for x in values]
    if len(vals) != 3:
        raise UnsupportedPreprocessing(f"{what} {values!r} is not one value per RGB channel")
    return vals


def manifest_fields(proc, pad_to_square: bool) -> dict:
    """The manifest `image_preprocessing` object describing `proc`, an HF SigLIP/CLIP slow
    image processor. Raises UnsupportedPreprocessing naming a setting it cannot express."""
    name = type(proc).__name__
    if not isinstance(proc, (SiglipImageProcessor, CLIPImageProcessor)):
        raise UnsupportedPreprocessing(f"image processor {name} is not supported (SiglipImageProcessor, CLIPImageProcessor)")
    if not getattr(proc, "do_resize", True):
        raise UnsupportedPreprocessing(f"{name} do_resize=False: the vision encoder needs a fixed input size")
    resample = RESAMPLE_NAMES.get(int(proc.resample))
    if resample is None:
        raise UnsupportedPreprocessing(f"{name} resample={proc.resample!r} is not a PIL filter the server ports "
                                       f"({', '.join(RESAMPLE_FILTERS)})")
    rescale = float(proc.rescale_factor) if getattr(proc, "do_rescale", True) else 1.0
    if getattr(proc, "do_normalize", True):
        mean, std = _rgb(proc.image_mean, "image_mean"), _rgb(proc.image_std, "image_std")
    else:  # no normalisation: (x - 0) / 1 gives the same float32 values
        mean, std = [0.0] * 3, [1.0] * 3
    if any(s <= 0 for s in std):
        raise UnsupportedPreprocessing(f"{name} image_std {std} must be positive")
    if rescale <= 0:
        raise UnsupportedPreprocessing(f"{name} rescale_factor {rescale} must be positive")
    fields = {
        "pad_to_square": pad_to_square,
        # The Factory pads with the processor's image_mean (even when do_normalize is off).
        "pad_color": pad_color(_rgb(proc.image_mean, "image_mean")) if pad_to_square else None,
        "resample": resample,
        "rescale_factor": rescale,
        "image_mean": mean,
        "image_std": std,
        "resize_size": None,
    }
    size = dict(proc.size)
    crop = isinstance(proc, CLIPImageProcessor) and bool(getattr(proc, "do_center_crop", False))
    if isinstance(proc, SiglipImageProcessor):
        if "height" not in size or "width" not in size:
            raise UnsupportedPreprocessing(f"{name} size {size!r}: SigLIP resizes to height x width only")
        fields.update(resize_mode="squash", size={"height": int(size["height"]), "width": int(size["width"])},
                      shortest_edge=None)
        return fields
    if set(size) == {"shortest_edge"}:
        if not crop:
            raise UnsupportedPreprocessing(f"{name} size {size!r} without do_center_crop: the output size would "
                                           "depend on the image's aspect ratio")
        fields.update(resize_mode="shortest_edge_center_crop", shortest_edge=int(size["shortest_edge"]))
    elif set(size) == {"height", "width"}:
        target = {"height": int(size["height"]), "width": int(size["width"])}
        if not crop:
            fields.update(resize_mode="squash", size=target, shortest_edge=None)
            return fields
        fields.update(resize_mode="squash_center_crop", resize_size=target, shortest_edge=None)
    else:
        raise UnsupportedPreprocessing(f"{name} size {size!r} is not supported (shortest_edge, or height and width)")
    crop_size = dict(proc.crop_size)
    if set(crop_size) != {"height", "width"}:
        raise UnsupportedPreprocessing(f"{name} crop_size {crop_size!r} is not supported (height and width)")
    fields["size"] = {"height": int(crop_size["height"]), "width": int(crop_size["width"])}
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
        img = expand_to_square(img, tuple(pad_color(_rgb(proc.image_mean, "image_mean"))))
    return proc(img, return_tensors="pt")["pixel_values"]


def manifest_pixels(fields: dict, img: Image.Image) -> np.ndarray:
    """[1,3,H,W] float32: what the manifest's `image_preprocessing` fields mean, stated directly
    (this is the server's algorithm, src/model/image/preprocess.ts, in PIL and numpy)."""
    img = img.convert("RGB")
    if fields["pad_to_square"]:
        img = expand_to_square(img, tuple(fields["pad_color"]))
    w, h = img.size
    out_w, out_h = fields["size"]["width"], fields["size"]["height"]
    mode = fields["resize_mode"]
    if mode == "squash":
        target = (out_w, out_h)
    elif mode == "squash_center_crop":
        target = (fields["resize_size"]["width"], fields["resize_size"]["height"])
    else:  # shortest_edge_center_crop: the long side truncated, as HF computes it
        se = fields["shortest_edge"]
        target = (se, int(se * h / w)) if w <= h else (int(se * w / h), se)
    arr = np.asarray(img.resize(target, RESAMPLE_FILTERS[fields["resample"]]))
    if mode != "squash":  # centre crop with floored offsets; a too-small image is padded with 0
        top, left = (target[1] - out_h) // 2, (target[0] - out_w) // 2
        canvas = np.zeros((out_h, out_w, 3), np.uint8)
        ys, xs = max(0, -top), max(0, -left)
        src = arr[max(0, top):max(0, top) + out_h - ys, max(0, left):max(0, left) + out_w - xs]
        canvas[ys:ys + src.shape[0], xs:xs + src.shape[1]] = src
        arr = canvas
    x = (arr.astype(np.float64) * fields["rescale_factor"]).astype(np.float32)
    mean = np.asarray(fields["image_mean"], np.float32)
    std = np.asarray(fields["image_std"], np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(np.float32)


def probe_images() -> list[Image.Image]:
    """Deterministic images that take every branch of the geometry: shrinking and enlarging,
    landscape and portrait, odd sizes, a square."""
    out = []
    for i, (w, h) in enumerate([(320, 240), (61, 97), (1001, 299), (128, 128), (17, 9)]):
        rng = np.random.default_rng(i)
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x * 7 + y * 3) % 256)], axis=-1)
        noise = rng.integers(-40, 40, size=(h, w, 3))
        out.append(Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB"))
    return out


def check_manifest_pixels(proc, fields: dict, pad_to_square: bool) -> None:
    """Raises UnsupportedPreprocessing unless the manifest fields give the reference
    processor's pixel_values bit for bit on every probe image."""
    for img in probe_images():
        ref = pixel_values(proc, img, pad_to_square).numpy()
        ours = manifest_pixels(fields, img)
        if ref.shape != ours.shape or not np.array_equal(ref, ours):
            diff = float(np.abs(ref - ours).max()) if ref.shape == ours.shape else float("inf")
            raise UnsupportedPreprocessing(
                f"{type(proc).__name__} makes pixels the manifest's image_preprocessing cannot reproduce on a "
                f"{img.width}x{img.height} image (shapes {tuple(ref.shape)} vs {tuple(ours.shape)}, max |diff| "
                f"{diff:.3g}); settings: {proc.to_dict()}")


def parity_image() -> Image.Image:
    """A deterministic non-square test picture for the exporter's parity check."""
    y, x = np.mgrid[0:240, 0:320]
    rgb = np.stack([(x * 255 // 319), (y * 255 // 239), ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    rgb[60:180, 100:220] = [200, 40, 40]
    return Image.fromarray(rgb, "RGB")
