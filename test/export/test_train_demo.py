"""`npm run train-demo` in miniature: a few steps of each stage write a TinyLLaVA_Factory
checkpoint that the exporter reads and parity-checks; the same seed gives the same weights; the
synthetic set is deterministic and its answers follow from the scene."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "train_demo"))

import synth as S  # noqa: E402
import train as T  # noqa: E402
from tinyllava_export.export import run_export  # noqa: E402

FEW = ["--stage0-steps", "3", "--stage1-steps", "3", "--stage2-steps", "3", "--batch", "4", "--pool", "16", "--eval-count", "8"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    import torch
    root = tmp_path_factory.mktemp("train-demo")
    threads = torch.get_num_threads()
    try:
        for name in ("a", "b"):
            assert T.main(["--out", str(root / name), *FEW]) == 0
    finally:
        torch.set_num_threads(threads)  # main() fixes its own thread count
    return root


def test_the_checkpoint_is_a_factory_checkpoint_the_exporter_passes(two_runs, tmp_path):
    ckpt = two_runs / "a" / "checkpoint"
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["model_type"] == "tinyllava" and cfg["connector_type"] == "mlp2x_gelu"
    assert cfg["text_config"]["model_type"] == "qwen2" and cfg["vision_config"]["model_type"] == "siglip_vision_model"
    result = run_export(tmp_path / "pkg", checkpoint=ckpt, quiet=True, name="tinyllava-demo")
    assert result.parity.passed
    m = result.manifest
    assert m["source"]["kind"] == "tinyllava-factory" and m["prompt"]["template"] == "qwen2_base"
    assert m["vision"]["num_image_tokens"] == (S.IMAGE_SIZE // T.TOWER["patch_size"]) ** 2 - 1
    assert m["image_preprocessing"]["size"] == {"height": S.IMAGE_SIZE, "width": S.IMAGE_SIZE}
    report = json.loads((ckpt / "train_report.json").read_text())
    assert report["stage0"]["steps"] == report["stage1"]["steps"] == report["stage2"]["steps"] == 3 and 0 <= report["held_out"]["accuracy"] <= 1


def test_the_same_seed_trains_the_same_weights(two_runs):
    a = (two_runs / "a" / "checkpoint" / "model.safetensors").read_bytes()
    b = (two_runs / "b" / "checkpoint" / "model.safetensors").read_bytes()
    assert a == b


def test_the_held_out_set_is_deterministic_and_its_answers_follow_the_scene():
    one, two = S.held_out(5, 24), S.held_out(5, 24)
    assert all(np.array_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(one, two))
    assert not np.array_equal(S.held_out(6, 1)[0][0], one[0][0])
    assert {kind for *_, kind in one} == set(S.KINDS)
    rng = np.random.default_rng(0)
    scene = S.Scene("circle", "red", "orange", 1, "large", "top left", [S.POSITIONS["top left"]])
    img = S.render(scene, rng, jitter_colours=False)
    assert img.shape == (S.IMAGE_SIZE, S.IMAGE_SIZE, 3)
    x, y = (int(v) for v in S.POSITIONS["top left"])
    assert tuple(img[y, x]) == S.COLOURS["red"] and tuple(img[-2, -2]) == S.COLOURS["orange"]
    assert S.ask(scene, "position", rng)[1] == "top left" and S.ask(scene, "count", rng)[1] == "1"
    assert scene.caption() == "A large red circle at the top left on an orange background."


def test_pieces_tokenize_as_the_whole_prompt(two_runs):
    """The training's cached pieces are the server's tokenization of the whole rendered text."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(two_runs / "a" / "checkpoint"), use_fast=True)
    T.Tokens(tok).check(np.random.default_rng(3), n=200)


def test_asked_names_what_a_yes_no_question_asks_for_and_the_answer_follows_from_it():
    """The answer probe's targets: the asked colour and shape are read back from the question, and
    "Yes" is the answer exactly when both are the scene's."""
    rng = np.random.default_rng(1)
    answers = set()
    for _ in range(500):
        scene = S.random_scene(rng)
        q, a = S.ask(scene, "yesno", rng)
        colour, shape = S.asked(q)
        assert colour in S.COLOUR_NAMES and shape in S.SHAPES and colour in q
        assert (a == "Yes") == (colour == scene.colour and shape == scene.shape), (q, a, scene)
        answers.add(a)
    assert answers == {"Yes", "No"}


def test_the_answer_probe_reads_the_yes_no_answer_positions(tmp_path):
    """batch() gives one probe target per yes/no answer, at the position that predicts the answer's
    first token, and the probe's loss is the same with and without the shared prefix cache."""
    import torch
    model, tok = T.build(tmp_path, 0)
    tokens = T.Tokens(tok)
    pool = T.Pool(7, 2, 0, 32)
    px, ids, labels, targets = T.batch(pool, tokens, 16, 2, {"yesno": 4.0})
    assert targets
    yes, no = tokens(" Yes")[0], tokens(" No")[0]
    for row, pos, *_ in targets:
        assert labels[row, pos] == -100 and int(ids[row, pos + 1]) in (yes, no)
    n_answers = sum(int(((labels[r, 1:] != -100) & (labels[r, :-1] == -100)).sum()) for r in range(16))
    assert len(targets) <= n_answers
    probe = T.AnswerProbe(T.TEXT["hidden_size"], 2)
    with torch.no_grad():
        a = T.loss_of(model, tokens, px, ids, labels, False, prefix_cache=True, probe=probe, probe_targets=targets)
        b = T.loss_of(model, tokens, px, ids, labels, False, prefix_cache=False, probe=probe, probe_targets=targets)
    assert float(a[1]) > 0 and all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b))
