"""Test images and the HF slow-processor reference pixels."""

import numpy as np
import pytest
from PIL import Image

from tinyllava_export import preprocessing as P
from tinyllava_export.fixtures import images as I


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("images")
    I.make_images(out)
    return out


def test_images_are_deterministic(image_dir, tmp_path):
    I.make_images(tmp_path)
    for image in I.IMAGES:
        assert (image_dir / image.name).read_bytes() == (tmp_path / image.name).read_bytes(), image.name
    assert (image_dir / "README.md").read_text() == (tmp_path / "README.md").read_text()


def test_image_set_covers_the_decoding_cases(image_dir):
    seen = {}
    for image in I.IMAGES:
        path = image_dir / image.name
        assert path.stat().st_size < 150_000, image.name
        with Image.open(path) as im:
            seen[image.name] = (im.format, im.mode, im.size)
            if image.name.endswith(".gif"):
                assert im.n_frames == 2
    assert seen["photo-640x480.jpg"] == ("JPEG", "RGB", (640, 480))
    assert seen["portrait-300x500.png"] == ("PNG", "RGB", (300, 500))
    assert seen["small-100x80.png"] == ("PNG", "RGB", (100, 80))
    assert seen["wide-1024x768.jpg"] == ("JPEG", "RGB", (1024, 768))
    assert seen["rgba-320x240.png"][1] == "RGBA"
    assert seen["grey-200x150.png"][1] == "L"
    assert seen["palette-256x192.png"][1] == "P"
    assert seen["anim-160x120.gif"][0] == "GIF"
    assert seen["photo-320x240.webp"][0] == "WEBP"
    readme = (image_dir / "README.md").read_text()
    assert all(f"`{image.name}`" in readme for image in I.IMAGES)


def test_rgba_keeps_colour_under_transparent_pixels(image_dir):
    with Image.open(image_dir / "rgba-320x240.png") as im:
        rgba = np.array(im)
    rgb = np.array(I.load_rgb(image_dir / "rgba-320x240.png"))
    transparent = rgba[..., 3] == 0
    assert transparent.sum() > 1000
    # convert('RGB') drops alpha: the colour underneath survives (no white/black compositing)
    assert np.array_equal(rgb, rgba[..., :3])
    assert rgb[transparent].std() > 10


def test_exif_orientation_is_ignored_and_gif_uses_first_frame(image_dir):
    with Image.open(image_dir / "exif-orientation-6-160x120.jpg") as im:
        assert im.getexif()[0x0112] == 6
    assert I.load_rgb(image_dir / "exif-orientation-6-160x120.jpg").size == (160, 120)
    with Image.open(image_dir / "anim-160x120.gif") as im:
        first = np.array(im.convert("RGB"))
    assert np.array_equal(np.array(I.load_rgb(image_dir / "anim-160x120.gif")), first)


@pytest.mark.parametrize("tower,pad", [("siglip", False), ("clip", False), ("siglip", True), ("clip", True)])
def test_reference_pixels_integral_and_consistent(image_dir, tower, pad):
    side = {"siglip": 384, "clip": 336}[tower]
    fields = I.image_preprocessing_fields(tower, pad)
    for image in I.IMAGES:
        ref = I.reference_pixels(image_dir / image.name, tower, pad)
        assert ref.pixels.dtype == np.uint8 and ref.pixels.shape == (side, side, 3)
        assert ref.pixel_values.dtype == np.float32 and ref.pixel_values.shape == (1, 3, side, side)
        # uint8 pixels -> x*(1/255) -> (x-mean)/std reproduces HF's float32 output exactly
        again = I.normalize_like_hf(ref.pixels, fields["image_mean"], fields["image_std"])
        assert np.array_equal(again, ref.pixel_values), image.name


def test_siglip_is_a_plain_pil_bicubic_squash(image_dir):
    for name in ("photo-640x480.jpg", "small-100x80.png", "portrait-300x500.png"):
        img = I.load_rgb(image_dir / name)
        expected = np.array(img.resize((384, 384), Image.BICUBIC))
        assert np.array_equal(I.reference_pixels(image_dir / name, "siglip").pixels, expected), name


def test_clip_geometry_truncates_the_long_side_and_floors_the_crop(image_dir):
    img = I.load_rgb(image_dir / "panorama-1001x299.png")
    long_side = int(336 * 1001 / 299)
    assert long_side == 1124
    resized = np.array(img.resize((long_side, 336), Image.BICUBIC))
    left = (long_side - 336) // 2
    expected = resized[:, left:left + 336]
    assert np.array_equal(I.reference_pixels(image_dir / "panorama-1001x299.png", "clip").pixels, expected)


def test_pad_to_square_centres_on_mean_colour(image_dir):
    img = I.load_rgb(image_dir / "small-100x80.png")
    padded = P.expand_to_square(img, (127, 127, 127))
    arr = np.array(padded)
    assert padded.size == (100, 100)
    assert (arr[:10] == 127).all() and (arr[90:] == 127).all()  # (100-80)//2 = 10 rows each side
    assert np.array_equal(arr[10:90], np.array(img))


def test_image_preprocessing_fields():
    assert I.image_preprocessing_fields("siglip") == {
        "pad_to_square": False, "pad_color": None, "resize_mode": "squash",
        "size": {"height": 384, "width": 384}, "shortest_edge": None, "resize_size": None, "resample": "bicubic",
        "rescale_factor": 0.00392156862745098, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }
    assert I.image_preprocessing_fields("clip") == {
        "pad_to_square": False, "pad_color": None, "resize_mode": "shortest_edge_center_crop",
        "size": {"height": 336, "width": 336}, "shortest_edge": 336, "resize_size": None, "resample": "bicubic",
        "rescale_factor": 0.00392156862745098,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    assert I.image_preprocessing_fields("siglip", pad=True)["pad_color"] == [127, 127, 127]
    clip_pad = I.image_preprocessing_fields("clip", pad=True)
    assert clip_pad["pad_to_square"] is True and clip_pad["pad_color"] == [122, 116, 104]
    assert I.preprocessing_id("siglip") == "siglip-384-squash"
    assert I.preprocessing_id("clip", pad=True) == "clip-336-crop-pad"
    with pytest.raises(ValueError):
        I.image_preprocessing_fields("dino")


def test_write_golden_pixels(image_dir, tmp_path):
    written = I.write_golden_pixels(image_dir, tmp_path, "clip")
    assert len(written) == len(I.IMAGES)
    png = tmp_path / "clip-336-crop" / "photo-640x480.png"
    with Image.open(png) as im:
        assert im.mode == "RGB" and im.size == (336, 336)
        assert np.array_equal(np.array(im), I.reference_pixels(image_dir / "photo-640x480.jpg", "clip").pixels)


# Processor settings a checkpoint's tower may carry: each must be expressed by the manifest so
# that its meaning (manifest_pixels, the server's algorithm) gives HF's pixels bit for bit.
SETTINGS = [
    ("siglip", dict(size={"height": 224, "width": 224}, resample=2, image_mean=[0.4, 0.45, 0.5], image_std=[0.25, 0.3, 0.35])),
    ("siglip", dict(size={"height": 160, "width": 96}, resample=0)),  # nearest, non-square
    ("siglip", dict(size={"height": 64, "width": 64}, resample=4, do_normalize=False)),  # box
    ("siglip", dict(size={"height": 64, "width": 80}, resample=5, do_rescale=False)),  # hamming
    ("clip", dict(size={"shortest_edge": 200}, crop_size={"height": 180, "width": 190}, resample=1)),  # lanczos
    ("clip", dict(size={"height": 240, "width": 260}, crop_size={"height": 196, "width": 196}, resample=3)),
    ("clip", dict(size={"shortest_edge": 90}, crop_size={"height": 128, "width": 128}, resample=2)),  # crop > image
    ("clip", dict(size={"height": 50, "width": 300}, do_center_crop=False, resample=3)),  # no crop: a squash
]


@pytest.mark.parametrize("tower,kw", SETTINGS)
@pytest.mark.parametrize("pad", [False, True])
def test_manifest_fields_reproduce_the_processor_bit_for_bit(tower, kw, pad):
    from transformers import CLIPImageProcessor, SiglipImageProcessor
    proc = {"siglip": SiglipImageProcessor, "clip": CLIPImageProcessor}[tower](**kw)
    fields = P.manifest_fields(proc, pad)
    P.check_manifest_pixels(proc, fields, pad)  # raises on any differing pixel
    from tinyllava_export import manifest as M
    assert fields["resample"] in ("bicubic", "bilinear", "nearest", "box", "hamming", "lanczos")
    full = __import__("json").loads(M.SCHEMA_PATH.read_text())
    import jsonschema
    jsonschema.validate(fields, {**full["properties"]["image_preprocessing"], "$defs": full["$defs"]})


@pytest.mark.parametrize("tower,kw,message", [
    ("siglip", dict(do_resize=False), "do_resize=False"),
    ("clip", dict(size={"shortest_edge": 224}, do_center_crop=False), "without do_center_crop"),
    ("clip", dict(size={"longest_edge": 224}), "size {'longest_edge': 224}"),
    ("siglip", dict(image_mean=[0.5, 0.5]), "image_mean"),
])
def test_settings_the_server_cannot_reproduce_are_refused_by_name(tower, kw, message):
    from transformers import CLIPImageProcessor, SiglipImageProcessor
    proc = {"siglip": SiglipImageProcessor, "clip": CLIPImageProcessor}[tower](**kw)
    with pytest.raises(P.UnsupportedPreprocessing, match=message.replace("{", r"\{").replace("}", r"\}")):
        P.manifest_fields(proc, False)


def test_a_processor_that_differs_from_its_description_fails_the_check():
    from transformers import SiglipImageProcessor
    proc = SiglipImageProcessor(size={"height": 64, "width": 64})
    fields = P.manifest_fields(proc, False)
    with pytest.raises(P.UnsupportedPreprocessing, match="cannot reproduce"):
        P.check_manifest_pixels(proc, {**fields, "resample": "bilinear"}, False)
