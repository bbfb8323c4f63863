"""The committed fixtures are what `npm run fixtures` makes: regenerate pieces and compare."""
import filecmp
import json

import numpy as np
import pytest
from PIL import Image

from tinyllava_export import preprocessing as P, reference as R, templates as T
from tinyllava_export.export import run_export
from tinyllava_export.fixtures import make

from conftest import ROOT

FIX = ROOT / "test" / "fixtures"
ALL_PACKAGES = [*make.FACTORY_PACKAGES, *make.SHARED_KV_PACKAGES, make.LLAVA_PACKAGE]


@pytest.mark.parametrize("name", ALL_PACKAGES)
def test_every_fixture_package_has_a_golden_file(name):
    assert (FIX / "packages" / name / "manifest.json").exists()
    golden = json.loads((FIX / "golden" / f"{name}.json").read_text())
    assert golden["package"] == name
    assert {c["name"] for c in golden["cases"]} == {c[0] for c in make.CASES}
    for case in golden["cases"]:
        assert len(case["greedy_ids"]) == 32 and len(case["first_step_top5"]["ids"]) == 5
        n_images = sum(1 for t in case["prompt_ids"] if t == T.IMAGE_TOKEN_INDEX)
        assert len(case["image_spans"]) == n_images
    pixels = FIX / "golden" / "pixels" / golden["preprocessing_id"]
    assert sorted(p.stem for p in pixels.iterdir()) == sorted(
        p.stem for p in (FIX / "images").iterdir() if p.suffix != ".md")


def test_default_model_is_the_qwen2_fixture():
    default = ROOT / "models" / make.DEFAULT_MODEL
    fixture = FIX / "packages" / make.DEFAULT_MODEL
    cmp = filecmp.dircmp(default, fixture)
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files
    assert not filecmp.dircmp(default / "onnx", fixture / "onnx").diff_files


def test_fixture_package_and_golden_are_reproducible(tmp_path):
    """Re-export one fixture and recompute one golden case: same bytes, same tokens."""
    name = "tiny-random-phi-siglip"
    result = run_export(tmp_path / name, preset=make.FACTORY_PACKAGES[name], seed=0, quiet=True, name=name)
    committed = FIX / "packages" / name
    for f in ("manifest.json", "tokenizer.json", "tokenizer_config.json"):
        assert (result.out_dir / f).read_bytes() == (committed / f).read_bytes(), f
    for f in result.manifest["files"].values():
        assert (result.out_dir / f).read_bytes() == (committed / f).read_bytes(), f
    golden = json.loads((FIX / "golden" / f"{name}.json").read_text())
    case = next(c for c in golden["cases"] if c["name"] == "single-turn-photo")
    fields = result.manifest["prompt"]
    ids = T.tokenize_prompt(T.render_prompt(fields, case["messages"], case["system"]), result.tokenizer)
    assert ids == case["prompt_ids"]
    proc = result.parts.processor
    embeds = R.image_embeds(result.parts, P.pixel_values(proc, Image.open(FIX / "images" / "photo-640x480.jpg"), False))
    greedy = R.greedy(result.parts, R.splice(result.parts, ids, [embeds]), 32)
    assert greedy.tokens == case["greedy_ids"]


@pytest.mark.parametrize("tower, pre_id", [("siglip", "siglip-384-squash"), ("clip", "clip-336-crop")])
def test_golden_pixels_are_the_slow_processors(tower, pre_id):
    from tinyllava_export.fixtures.images import reference_pixels
    for stem in ("photo-640x480.jpg", "small-100x80.png", "rgba-320x240.png", "panorama-1001x299.png"):
        ref = reference_pixels(FIX / "images" / stem, tower)
        committed = np.asarray(Image.open(FIX / "golden" / "pixels" / pre_id / (stem.rsplit(".", 1)[0] + ".png")))
        assert np.array_equal(ref.pixels, committed), stem


def test_shared_kv_fixture_package_is_reproducible(tmp_path):
    """The shared_kv fixture is what `npm run fixtures` makes, byte for byte."""
    name, preset = next(iter(make.SHARED_KV_PACKAGES.items()))
    result = run_export(tmp_path / name, preset=preset, seed=0, quiet=True, name=name, decoder_form="shared_kv")
    for f in ["manifest.json", *result.manifest["files"].values()]:
        assert (result.out_dir / f).read_bytes() == (FIX / "packages" / name / f).read_bytes(), f
