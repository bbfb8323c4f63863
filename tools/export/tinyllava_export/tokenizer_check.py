"""Does the tokenizer the server runs (tokenizer.json, called as tokenizer_settings.ServerTokenizer
describes) tokenize prompts exactly as the reference tokenizer (usually the slow one)?

TinyLLaVA_Factory loads the LLM tokenizer with `use_fast=False`, so the slow (Python /
SentencePiece) tokenizer defines the reference ids. The server can only run the fast
`tokenizer.json`. The two are known to disagree in places, e.g. a Llama tokenizer_config that
says `legacy: false` next to a tokenizer.json converted in legacy mode tokenizes the text after
`</s>` differently (with or without the "▁" dummy prefix), which a multi-turn prompt hits at
every "</s>USER:"; tokenizer_settings.py says how the server closes that gap. The exporter runs
this check on the template prompts and refuses to export on a disagreement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import templates


@dataclass
class Mismatch:
    prompt: str
    slow_ids: list[int]
    fast_ids: list[int]
    # First index where the id lists differ (len of the shorter one if one is a prefix).
    first_difference: int


@dataclass
class SlowFastReport:
    # True when every prompt agrees; also True (vacuously) when no slow tokenizer exists,
    # which callers can tell apart through `slow_available`.
    agree: bool
    slow_available: bool
    checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    slow_class: str | None = None
    fast_class: str | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "agree": self.agree,
            "slow_available": self.slow_available,
            "checked": self.checked,
            "slow_class": self.slow_class,
            "fast_class": self.fast_class,
            "note": self.note,
            "mismatches": [m.__dict__ for m in self.mismatches],
        }


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def load_slow(tokenizer_dir: str | Path) -> tuple[Any | None, str]:
    """The slow tokenizer of a directory, or (None, why not)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), use_fast=False)
    except Exception as exc:  # missing vocab files, unknown class, missing sentencepiece ...
        return None, f"no slow tokenizer available: {type(exc).__name__}: {exc}"
    if getattr(tok, "is_fast", False):
        # The config names a fast-only class (stablelm-2: GPT2TokenizerFast).
        return None, f"no slow tokenizer available: the config names {type(tok).__name__}"
    return tok, ""


def compare_tokenizers(reference: Any, candidate: Any, prompts: Sequence[str],
                       placeholder: str = templates.DEFAULT_IMAGE_PLACEHOLDER, mode: str = "splice",
                       image_token_id: int | None = None) -> SlowFastReport:
    """Tokenize each prompt with `templates.tokenize_prompt` through both tokenizers and compare
    the id lists (-200 included). `candidate` is what the server will run."""
    report = SlowFastReport(agree=True, slow_available=True, slow_class=type(reference).__name__,
                            fast_class=type(candidate).__name__)
    for prompt in prompts:
        s = templates.tokenize_prompt(prompt, reference, placeholder, mode, image_token_id)
        f = templates.tokenize_prompt(prompt, candidate, placeholder, mode, image_token_id)
        report.checked += 1
        if s != f:
            report.agree = False
            report.mismatches.append(Mismatch(prompt, s, f, _first_difference(s, f)))
    return report


def check_slow_fast(
    tokenizer_dir: str | Path,
    prompts: Sequence[str],
    placeholder: str = templates.DEFAULT_IMAGE_PLACEHOLDER,
    mode: str = "splice",
    image_token_id: int | None = None,
    fast: Any | None = None,
) -> SlowFastReport:
    """Tokenize each prompt through the slow and the fast tokenizer of `tokenizer_dir` and
    compare (see compare_tokenizers). `fast` may be passed to check a fast tokenizer that is not
    (yet) the one in the directory, or the server's tokenizer (tokenizer_settings.ServerTokenizer)."""
    from transformers import AutoTokenizer

    if fast is None:
        fast = AutoTokenizer.from_pretrained(str(tokenizer_dir), use_fast=True)
    slow, why = load_slow(tokenizer_dir)
    if slow is None:
        return SlowFastReport(agree=True, slow_available=False, fast_class=type(fast).__name__,
                              note=why)
    return compare_tokenizers(slow, fast, prompts, placeholder, mode, image_token_id)


# Messages that exercise the template's joints: image at the front, multi-turn with EOS text
# followed directly by "USER:", a custom system message, several images, non-ASCII text.
def default_check_messages() -> list[tuple[list[dict], str | None]]:
    img = {"type": "image"}

    def user(text, images=0):
        return {"role": "user", "content": [img] * images + [{"type": "text", "text": text}]}

    return [
        ([user("What are these?", 1)], None),
        ([user("Describe the image in detail.", 1), {"role": "assistant", "content": "A cat."},
          user("What color is it?")], None),
        ([user("What is in the picture?", 1)], "You are a terse assistant."),
        ([user("Compare the two pictures.", 2)], None),
        ([user("")], None),
        ([user("", 1)], None),
        ([user("Café, naïve, 你好，世界 😀 12345  two  spaces\tand a tab", 1)], None),
        ([user("Hi"), {"role": "assistant", "content": "Hello! How can I help?"},
          user("Look:", 1), {"role": "assistant", "content": "It is a dog."},
          user("And now?")], None),
    ]


def template_prompts(template_fields: dict) -> list[str]:
    """Prompts rendered with `template_fields` for check_slow_fast."""
    return [templates.render_prompt(template_fields, msgs, system)
            for msgs, system in default_check_messages()]
