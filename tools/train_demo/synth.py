"""Synthetic visual QA: coloured shapes on a coloured background, with questions whose answers
are known exactly (numpy only, deterministic given a seed).

A scene is one kind of shape (circle, square, triangle, diamond) in one colour, 1-3 times, on a
background of another colour. A single shape is small or large and sits in one of nine places
(a 3x3 grid: "top left" ... "bottom right"); several shapes are small and scattered. Images are
drawn at twice the size and averaged 2x2 down to IMAGE_SIZE, so edges are anti-aliased.

Questions: colour, shape, count, background colour, position and size (one shape only), yes/no
("Is there a red circle?") and a short caption ("Describe the image briefly.").

    python tools/train_demo/synth.py --seed 7 --count 50 --out DIR
writes DIR/<i>.png and DIR/questions.json (a list of {"image", "question", "answer", "kind"}).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SIZE = 48
_SCALE = 2  # drawn at IMAGE_SIZE * _SCALE, then averaged down

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOUR_NAMES = tuple(COLOURS)
SHAPES = ("circle", "square", "triangle", "cross")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
COUNT_WORDS = {1: "One", 2: "Two", 3: "Three"}
# Geometry as fractions of the image side.
SIZES = {"small": IMAGE_SIZE * 0.15, "large": IMAGE_SIZE * 0.24}  # half-extent in output pixels
# 3x3 grid of places, centres in output pixels
_ROWS = (("top", IMAGE_SIZE * 0.22), ("", IMAGE_SIZE * 0.5), ("bottom", IMAGE_SIZE * 0.78))
_COLS = (("left", IMAGE_SIZE * 0.22), ("", IMAGE_SIZE * 0.5), ("right", IMAGE_SIZE * 0.78))
POSITIONS = {}
for _r, _y in _ROWS:
    for _c, _x in _COLS:
        POSITIONS[(f"{_r} {_c}".strip() or "center")] = (_x, _y)
POSITION_NAMES = tuple(POSITIONS)

# Question templates per kind: (singular form, plural form). {c} colour, {s} shape, {p} shapes.
QUESTIONS = {
    "colour": [("What colour is the shape?", "What colour are the shapes?"),
               ("What color is the shape?", "What color are the shapes?")],
    "shape": [("What shape is it?", "What shape are they?"),
              ("Which shape is in the image?", "Which shape is in the image?")],
    "count": [("How many shapes are there?", "How many shapes are there?"),
              ("How many shapes are in the image?", "How many shapes are in the image?")],
    "background": [("What colour is the background?", "What colour is the background?"),
                   ("What color is the background?", "What color is the background?")],
    "position": [("Where is the shape?", None), ("Where is the shape in the image?", None)],
    "size": [("Is the shape small or large?", None), ("Is the shape large or small?", None)],
    "yesno": [("Is there a {c} {s}?", "Are there {c} {p}?"),
              ("Is there a {c} {s} in the image?", "Are there {c} {p} in the image?")],
    "caption": [("Describe the image briefly.", "Describe the image briefly."),
                ("What is in the image?", "What is in the image?")],
}
KINDS = tuple(QUESTIONS)
CAPTION_QUESTION = "Describe the image briefly."


@dataclass
class Scene:
    shape: str
    colour: str
    background: str
    count: int
    size: str  # small | large
    position: str | None  # one shape: its place; several: None
    centres: list  # [(x, y)] in output pixels

    def caption(self) -> str:
        if self.count == 1:
            return (f"A {self.size} {self.colour} {self.shape} {place_phrase(self.position)} "
                    f"on {article(self.background)} {self.background} background.")
        return (f"{COUNT_WORDS[self.count]} {self.size} {self.colour} {PLURAL[self.shape]} "
                f"on {article(self.background)} {self.background} background.")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def place_phrase(position: str) -> str:
    """"at the top left", "on the left", "in the center"."""
    if position == "center":
        return "in the center"
    if position in ("left", "right"):
        return f"on the {position}"
    return f"at the {position}"


def random_scene(rng: np.random.Generator) -> Scene:
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    background = colour
    while background == colour:
        background = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.25, 0.25]))
    if count == 1:
        size = "small" if rng.random() < 0.5 else "large"
        position = POSITION_NAMES[rng.integers(len(POSITION_NAMES))]
        x, y = POSITIONS[position]
        j = IMAGE_SIZE * (0.03 if size == "large" else 0.045)
        centres = [(x + rng.uniform(-j, j), y + rng.uniform(-j, j))]
        return Scene(shape, colour, background, 1, size, position, centres)
    centres: list = []
    r = SIZES["small"]
    while len(centres) < count:  # scattered, never touching
        c = (rng.uniform(r + 1.5, IMAGE_SIZE - r - 1.5), rng.uniform(r + 1.5, IMAGE_SIZE - r - 1.5))
        if all((c[0] - o[0]) ** 2 + (c[1] - o[1]) ** 2 > (2 * r + 3) ** 2 for o in centres):
            centres.append(c)
    return Scene(shape, colour, background, count, "small", None, centres)


_GRIDS: dict = {}


def _grid(n: int):
    if n not in _GRIDS:
        _GRIDS[n] = tuple(np.mgrid[0:n, 0:n].astype(np.float32) + 0.5)
    return _GRIDS[n]


def _mask(shape: str, cx: float, cy: float, r: float, n: int) -> np.ndarray:
    _YY, _XX = _grid(n)
    dx, dy = _XX - cx, _YY - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        s = r * 0.88  # same area feel as the circle
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "cross":  # a plus sign: two bars a third of its width thick
        a, b = np.abs(dx), np.abs(dy)
        return ((a <= r) & (b <= r * 0.34)) | ((b <= r) & (a <= r * 0.34))
    if shape == "triangle":  # pointing up, base at the bottom
        top, bottom = cy - r, cy + r * 0.8
        half = (_YY - top) / (bottom - top) * r * 1.1
        return (_YY >= top) & (_YY <= bottom) & (np.abs(dx) <= half)
    raise ValueError(shape)


def render(scene: Scene, rng: np.random.Generator, scale: int = _SCALE, jitter_colours: bool = True) -> np.ndarray:
    """[IMAGE_SIZE, IMAGE_SIZE, 3] uint8 (drawn at `scale` times, averaged 2x2 down); colours
    jittered a little so that no exact value is learnt."""
    def jitter(rgb):
        return np.clip(np.array(rgb, np.float32) + (rng.uniform(-12, 12, 3) if jitter_colours else 0), 0, 255)

    n = IMAGE_SIZE * scale
    img = np.empty((n, n, 3), np.float32)
    img[:] = jitter(COLOURS[scene.background])
    fg = jitter(COLOURS[scene.colour])
    r = SIZES[scene.size] * scale
    for cx, cy in scene.centres:
        img[_mask(scene.shape, cx * scale, cy * scale, r, n)] = fg
    out = n // 2
    small = img.reshape(out, 2, out, 2, 3).mean(axis=(1, 3))
    return np.round(small).astype(np.uint8)


def _pick(rng, kind: str, plural: bool) -> str:
    options = [q[1] if plural else q[0] for q in QUESTIONS[kind]]
    options = [q for q in options if q is not None]
    return options[rng.integers(len(options))]


def question_kinds(scene: Scene) -> tuple[str, ...]:
    return KINDS if scene.count == 1 else tuple(k for k in KINDS if k not in ("position", "size"))


def ask(scene: Scene, kind: str, rng: np.random.Generator) -> tuple[str, str]:
    """One (question, answer) of `kind` about `scene`."""
    plural = scene.count > 1
    q = _pick(rng, kind, plural)
    if kind == "colour":
        return q, scene.colour
    if kind == "shape":
        return q, scene.shape
    if kind == "count":
        return q, str(scene.count)
    if kind == "background":
        return q, scene.background
    if kind == "position":
        return q, scene.position
    if kind == "size":
        return q, scene.size
    if kind == "yesno":
        yes = rng.random() < 0.5
        colour, shape = scene.colour, scene.shape
        if not yes:  # change the colour, the shape or both
            which = rng.integers(3)
            if which in (0, 2):
                colour = [c for c in COLOUR_NAMES if c != scene.colour][rng.integers(len(COLOUR_NAMES) - 1)]
            if which in (1, 2):
                shape = [s for s in SHAPES if s != scene.shape][rng.integers(len(SHAPES) - 1)]
        return q.format(c=colour, s=shape, p=PLURAL[shape]), "Yes" if yes else "No"
    if kind == "caption":
        return q, scene.caption()
    raise ValueError(kind)


def asked(question: str) -> tuple[str, str]:
    """The colour and the shape a yes/no question names ("Are there green crosses?": green,
    cross): each template names one of each and no other colour or shape word."""
    words = question.rstrip("?").split()
    colour = next(w for w in words if w in COLOURS)
    shape = next(s for w in words for s in SHAPES if w in (s, PLURAL[s]))
    return colour, shape


def all_texts() -> list[str]:
    """Every question template filled every way and every answer: the tokenizer's corpus."""
    lines: list[str] = []
    for kind, forms in QUESTIONS.items():
        for pair in forms:
            for q in pair:
                if q is None:
                    continue
                if "{c}" in q:
                    lines += [q.format(c=c, s=s, p=PLURAL[s]) for c in COLOUR_NAMES for s in SHAPES]
                else:
                    lines.append(q)
    lines += list(COLOUR_NAMES) + list(SHAPES) + list(POSITION_NAMES) + list(SIZES) + ["1", "2", "3", "Yes", "No"]
    for shape in SHAPES:
        for colour in COLOUR_NAMES:
            for bg in COLOUR_NAMES:
                if bg == colour:
                    continue
                for pos in POSITION_NAMES:
                    for size in SIZES:
                        lines.append(Scene(shape, colour, bg, 1, size, pos, []).caption())
                for n in (2, 3):
                    lines.append(Scene(shape, colour, bg, n, "small", None, []).caption())
    return lines


def held_out(seed: int, count: int):
    """`count` (image array, question, answer, kind) items: one question per image, the kinds in
    turn so that every kind is asked about equally often."""
    rng = np.random.default_rng([seed, 7])
    items = []
    i = 0
    while len(items) < count:
        scene = random_scene(rng)
        kinds = question_kinds(scene)
        kind = KINDS[i % len(KINDS)]
        if kind not in kinds:
            continue
        q, a = ask(scene, kind, rng)
        items.append((render(scene, rng), q, a, kind))
        i += 1
    return items


# The bundled example (README, chat page): drawn at EXAMPLE_SCALE times the model's input size
# (the server scales it down, as it does any upload).
EXAMPLE = Scene("triangle", "yellow", "blue", 1, "large", "top right", [POSITIONS["top right"]])
EXAMPLE_SCALE = 4
EXAMPLE_QUESTIONS = ("What colour is the shape?", "Where is the shape?", "Describe the image briefly.")


def write_examples(out: Path) -> None:
    """out/shapes.png and out/examples.json ([{"image", "question", "answer"}])."""
    from PIL import Image
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    img = render(EXAMPLE, rng, scale=EXAMPLE_SCALE * _SCALE, jitter_colours=False)
    Image.fromarray(img, "RGB").save(out / "shapes.png")
    kinds = {"What colour is the shape?": "colour", "Where is the shape?": "position",
             "Describe the image briefly.": "caption"}
    records = [{"image": "shapes.png", "question": q, "answer": ask_fixed(EXAMPLE, kinds[q])} for q in EXAMPLE_QUESTIONS]
    (out / "examples.json").write_text(json.dumps(records, indent=1) + "\n")


def ask_fixed(scene: Scene, kind: str) -> str:
    return {"colour": scene.colour, "position": scene.position, "caption": scene.caption()}[kind]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int)
    ap.add_argument("--count", type=int, default=80)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--examples", action="store_true", help="write the bundled example instead")
    args = ap.parse_args()
    if args.examples:
        write_examples(args.out)
        return
    if args.seed is None:
        ap.error("--seed is required")
    from PIL import Image
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (img, q, a, kind) in enumerate(held_out(args.seed, args.count)):
        name = f"{i:03d}.png"
        Image.fromarray(img, "RGB").save(args.out / name)
        records.append({"image": name, "question": q, "answer": a, "kind": kind})
    (args.out / "questions.json").write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
