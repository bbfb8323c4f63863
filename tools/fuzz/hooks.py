"""Schemathesis hooks for test/api/fuzz.test.ts (loaded through SCHEMATHESIS_HOOKS).

Generated image URLs and files are random text or bytes, which never get past the first check
of an image, so valid chat completion cases get real images: their image parts' URLs become
data URLs, and a simple form gets `image` files, drawn in turn from PNG and JPEG images of
varied sizes and modes, the same images cut short or with a byte flipped, and junk. The
decoder, the vision encoder and every way an image fails are reached.
"""

import base64
import io
import itertools

import schemathesis
from hypothesis import strategies as st
from PIL import Image


def _image(fmt: str, size: tuple[int, int], mode: str) -> bytes:
    img = Image.new(mode, size)
    # A gradient, so that encoders have something to encode.
    img.putdata([tuple((x * 37 + y * 11 + c * 50) % 256 for c in range(len(mode))) if len(mode) > 1 else (x * 7 + y) % 256 for y in range(size[1]) for x in range(size[0])])
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


_VALID = {
    "image/png": [_image("PNG", s, m) for s, m in [((1, 1), "RGB"), ((17, 9), "RGBA"), ((40, 30), "L"), ((64, 8), "P")]],
    "image/jpeg": [_image("JPEG", s, m) for s, m in [((1, 1), "RGB"), ((33, 21), "RGB"), ((24, 24), "L")]],
}


_ALL_VALID = [(m, b) for m, images in _VALID.items() for b in images]


def _variants():
    """Valid images mostly, then each kind of damage, in a fixed rotation."""
    for i in itertools.count():
        media_type, data = _ALL_VALID[i % len(_ALL_VALID)]
        kind = i % 7
        if kind == 4:
            data = data[: max(1, len(data) // 2)]  # cut short
        elif kind == 5:
            data = data[:20] + bytes([data[20] ^ 0x5A]) + data[21:] if len(data) > 21 else data  # one byte flipped
        elif kind == 6:
            data = b"\x89PNG junk that is no image"
        yield media_type, data


_NEXT = _variants()


@schemathesis.hook
def map_case(context, case):
    if case.operation.path != "/v1/chat/completions" or case.meta is None or case.meta.generation.mode.name != "POSITIVE":
        return case
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        for message in body["messages"]:
            content = message.get("content") if isinstance(message, dict) else None
            for part in content if isinstance(content, list) else []:
                if isinstance(part, dict) and isinstance(part.get("image_url"), dict):
                    media_type, data = next(_NEXT)
                    part["image_url"]["url"] = f"data:{media_type};base64,{base64.b64encode(data).decode()}"
    elif isinstance(body, dict) and "prompt" in body and "request" not in body:
        body["image"] = [next(_NEXT)[1] for _ in range(1 + len(body) % 2)]
    return case


def _damaged(valid: list[bytes]) -> st.SearchStrategy[bytes]:
    base = st.sampled_from(valid)
    truncated = st.tuples(base, st.floats(0.05, 0.95)).map(lambda t: t[0][: max(1, int(len(t[0]) * t[1]))])
    flipped = st.tuples(base, st.integers(0, 10_000), st.integers(1, 255)).map(
        lambda t: t[0][: t[1] % len(t[0])] + bytes([t[0][t[1] % len(t[0])] ^ t[2]]) + t[0][t[1] % len(t[0]) + 1 :]
    )
    return st.one_of(truncated, flipped)


for media_type, valid in _VALID.items():
    schemathesis.openapi.media_type(
        media_type,
        st.one_of(st.sampled_from(valid), st.sampled_from(valid), _damaged(valid), st.binary(min_size=0, max_size=256)),
    )


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Form fields are text on the wire: a negative case whose only flaw is a JSON type (a
    boolean `user`, an array `stream`) reaches the server as valid text, or not at all, so
    its acceptance is not a failure. Every other flaw of a form must still be refused."""
    if str(getattr(case, "media_type", "") or "").startswith("multipart/") and "Schema-violating request accepted" in failure.title:
        flaws = [line for line in failure.message.splitlines() if "violates `" in line]
        if flaws and all("violates `type`" in line for line in flaws):
            return False
    return True
