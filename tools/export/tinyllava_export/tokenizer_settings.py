"""Which tokenizer is the reference, how the server must call the package's tokenizer.json to
tokenize exactly like it, and how the reference turns generated ids back into the answer text.

The reference is the tokenizer the original code runs: TinyLLaVA_Factory and TinyLLaVABench load
the LLM's *slow* tokenizer (`use_fast=False`, unless the Factory config says
`tokenizer_use_fast`; stablelm-2 has only a fast one), transformers' Llava processor the fast
one. The server can only run `tokenizer.json` (HF tokenizers), so the manifest's `tokenizer`
object records what differs:

- `prefix_space` (encoding): a slow Llama tokenizer with `legacy: false` (TinyLlama-Chat's
  setting) puts "▁" before every text it is given, also before a leading space ("▁▁ASSISTANT"),
  and never after a special token. No tokenizer.json pre-tokenizer can say "prefix the start of
  the text always": its Metaspace(prepend_scheme "first") skips a text that already starts with
  a space. So the server prepends one space to each non-empty text it encodes and drops a lone
  "▁" token right before a leading special token, which is exactly what the slow tokenizer does.
- decoding: the reference's answer is `tokenizer.batch_decode(ids, skip_special_tokens=True)[0]`,
  then `.strip()` (the Factory's and TinyLLaVABench's CLIs and evals; the Llava processor does not
  strip). A slow tokenizer decodes differently from tokenizer.json in ways the manifest spells out:
  SentencePiece decodes byte-fallback runs byte by byte (`<0x45><0x95>` is "E\ufffd", HF's
  ByteFallback makes it "\ufffd\ufffd"); non-special added tokens split the text into runs that
  are decoded separately and joined with a separator (a space for most slow classes: phi-2's
  whitespace tokens gain spaces around them); `clean_up_tokenization_spaces` removes the space
  before punctuation and contractions.

The exporter writes `tokenizer_check.json` with what the reference does on the template's prompt
chunks and on adversarial id sequences; the server verifies its own tokenizer against it when it
loads the package, so a difference this module did not foresee stops the server, not the answer.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer, LlamaTokenizer

from .model_parts import ExportError

SPIECE = "\u2581"
BYTE_PIECE = "<0x{:02X}>"


@dataclass
class Tokenizers:
    fast: object  # transformers fast tokenizer: the package's tokenizer.json
    reference: object  # the tokenizer the original code runs
    reference_kind: str  # "slow" | "fast"
    note: str = ""


def load_tokenizers(src: Path, out: Path, added: list[str], reference_fast: bool) -> Tokenizers:
    """The checkpoint's fast tokenizer (converted from the slow files when it has no
    tokenizer.json, or when prefix_space applies) saved to `out`, and the reference tokenizer."""
    from .tokenizer_check import load_slow
    slow, why = (None, "the reference runs the fast tokenizer") if reference_fast else load_slow(src)
    try:
        # A legacy=false Llama tokenizer.json shipped with a checkpoint is usually the legacy
        # conversion (a Prepend normalizer): convert from the slow files instead.
        from_slow = needs_prefix_space(slow) if slow is not None else False
        fast = AutoTokenizer.from_pretrained(str(src), use_fast=True, **({"from_slow": True} if from_slow else {}))
    except Exception as e:
        raise ExportError(f"{src}: cannot load the tokenizer ({type(e).__name__}: {e}); "
                          "the checkpoint must contain its tokenizer files") from e
    if not getattr(fast, "is_fast", False):
        raise ExportError(f"{src}: the tokenizer has no fast (tokenizer.json) form")
    for tok in (fast, slow):
        if tok is not None and added:
            tok.add_tokens(list(added), special_tokens=True)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    if slow is None:
        return Tokenizers(fast, fast, "fast", why)
    return Tokenizers(fast, slow, "slow")


def needs_prefix_space(tok) -> bool:
    """A slow Llama tokenizer in non-legacy mode that adds its "▁" prefix itself."""
    return isinstance(tok, LlamaTokenizer) and getattr(tok, "legacy", True) is False and bool(
        getattr(tok, "add_prefix_space", True))


class ServerTokenizer:
    """What the server's TextTokenizer.encode does (src/model/tokenizer.ts), in Python, on the
    package's tokenizer.json: for the exporter's agreement check. Callable like a transformers
    tokenizer (`tok(text).input_ids`, `bos_token_id`) so templates.tokenize_prompt can drive it."""

    def __init__(self, tokenizer_json: Path, prefix_space: bool, bos_token_id: int | None):
        from tokenizers import Tokenizer
        import json
        self.tok = Tokenizer.from_file(str(tokenizer_json))
        self.prefix_space = prefix_space
        self.bos_token_id = bos_token_id
        added = json.loads(Path(tokenizer_json).read_text()).get("added_tokens", [])
        self.special_ids = {t["id"] for t in added if t.get("special")}
        self.space_id = self.tok.token_to_id(SPIECE)
        self.prefix_len = len(self.tok.encode("").ids)

    def encode(self, text: str) -> list[int]:
        if not (self.prefix_space and text):
            return self.tok.encode(text).ids
        ids = self.tok.encode(" " + text).ids
        k = self.prefix_len
        if len(ids) > k + 1 and ids[k] == self.space_id and ids[k + 1] in self.special_ids:
            del ids[k]
        return ids

    def __call__(self, text: str):
        class Encoding:  # the one attribute templates.tokenize_prompt reads
            input_ids = self.encode(text)
        return Encoding()


# ---------------------------------------------------------------------------------------------
# Decoding


def _plain_piece(tok, vocab: dict) -> tuple[int, str] | None:
    """A vocabulary piece of plain letters with a SentencePiece word-start mark, for probing."""
    for piece, i in sorted(vocab.items(), key=lambda kv: kv[1]):
        if piece.startswith(SPIECE) and len(piece) > 2 and piece[1:].isalpha() and piece[1:].isascii():
            return i, piece
    return None


def decode_settings(toks: Tokenizers, strip_answer: bool) -> dict:
    """The manifest's `tokenizer` object (see the module doc and docs/model-package.md)."""
    ref = toks.reference
    probe = ref("x . y , z", add_special_tokens=False).input_ids
    clean = ref.decode(probe, skip_special_tokens=True) != ref.decode(
        probe, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    settings = {
        "reference": type(ref).__name__ + (" (slow)" if toks.reference_kind == "slow" else " (fast)"),
        "prefix_space": needs_prefix_space(ref),
        "decode": "tokenizer_json",
        "byte_fallback": "hf",
        "run_leading_space": "tokenizer_json",
        "added_token_ids": [],
        "added_token_separator": "",
        "added_token_metaspace": False,
        "clean_up_tokenization_spaces": bool(clean),
        "strip_answer": strip_answer,
    }
    if toks.reference_kind == "fast":
        return settings
    sp = hasattr(ref, "sp_model")
    vocab = ref.get_vocab()
    added = sorted(i for i, t in ref.added_tokens_decoder.items() if not t.special)
    settings.update(decode="slow", byte_fallback="sentencepiece" if sp else "hf",
                    run_leading_space="keep", added_token_ids=added,
                    added_token_metaspace=type(ref).__name__.startswith("Gemma"))
    if sp:
        settings["run_leading_space"] = _run_leading_space(ref, vocab)
    if added:
        settings["added_token_separator"] = _added_separator(ref, added[0], vocab)
    return settings


def _run_leading_space(ref, vocab: dict) -> str:
    """How a slow SentencePiece tokenizer treats the space at the start of a run (see
    src/model/decode-stream.ts RunLeadingSpace): probed with "▁" + "▁word"."""
    plain = _plain_piece(ref, vocab)
    if plain is None or SPIECE not in vocab:
        raise ExportError(f"{type(ref).__name__}: no plain '▁word' piece to probe how it decodes leading spaces")
    word = plain[1][1:]
    got = ref.decode([vocab[SPIECE], plain[0]])
    found = {"  " + word: "keep", " " + word: "strip", word: "strip_sentencepiece"}.get(got)
    if found is None:
        raise ExportError(f"{type(ref).__name__} decodes leading spaces in a way the server does not reproduce: "
                          f"'▁' {plain[1]!r} -> {got!r}")
    return found


def _added_separator(ref, added_id: int, vocab: dict) -> str:
    """How the reference joins a non-special added token with the text around it."""
    content = ref.added_tokens_decoder[added_id].content
    letter = next((p for p in ("a", "x", "e", "t") if p in vocab), None)
    if letter is None:
        raise ExportError(f"{type(ref).__name__}: no single-letter token to probe how added tokens decode")
    got = ref.decode([vocab[letter], added_id, vocab[letter]], skip_special_tokens=True)
    for sep in (" ", ""):
        if got == f"{letter}{sep}{content}{sep}{letter}":
            return sep
    raise ExportError(f"{type(ref).__name__} decodes an added token in a way the server does not reproduce: "
                      f"{letter!r} {content!r} {letter!r} -> {got!r}")


def reference_answer(ref, ids: list[int], strip_answer: bool) -> str:
    """The answer text the original code prints for generated `ids`."""
    text = ref.batch_decode([ids], skip_special_tokens=True)[0]
    return text.strip() if strip_answer else text


def adversarial_id_sequences(ref, seed: int = 0, count: int = 160) -> list[list[int]]:
    """Id sequences that take the decoder's branches: byte-fallback runs (valid, truncated and
    invalid UTF-8, mixed with text pieces), whitespace pieces at both ends, added and special
    tokens mid-text, the punctuation clean-up patterns, and random ids."""
    rng = random.Random(seed)
    vocab = ref.get_vocab()
    n = len(ref)
    ids_of = {tok: i for tok, i in vocab.items()}
    specials = sorted(set(ref.all_special_ids))
    added = sorted(i for i, t in ref.added_tokens_decoder.items() if not t.special)
    byte_ids = [ids_of[BYTE_PIECE.format(b)] for b in range(256) if BYTE_PIECE.format(b) in ids_of]
    space_like = sorted(i for tok, i in ids_of.items() if tok and all(c in f" {SPIECE}\u0120\u010a\n\t" for c in tok))
    seqs: list[list[int]] = []

    def enc(text: str) -> list[int]:
        return list(ref(text, add_special_tokens=False).input_ids)

    for text in ["Hello , world . Is n't it ? Yes ! I 'm sure 's 've 're", " ' quoted ' and  two  spaces ",
                 "end .", "a ,b", "x n't", " 's", "Café 你好 😀 👍🏽", "  leading and trailing  ",
                 "line\nbreak\n\n tab\t", "\u3000ideographic\u3000space", "\x1cfile\x1dsep\x85nel\ufeffbom"]:
        e = enc(text)
        seqs.append(e)
        for _ in range(3):  # every prefix cut is a point where a stream may be asked for text
            a, b = sorted(rng.sample(range(len(e) + 1), 2)) if len(e) > 1 else (0, len(e))
            seqs.append(e[a:b])
    if byte_ids:
        byte_of = {b: ids_of[BYTE_PIECE.format(b)] for b in range(256) if BYTE_PIECE.format(b) in ids_of}
        runs = [b"\x45\x95", b"\xe4\xbd", b"\xe4\xbd\xa0", b"\xf0\x9f\x98", b"\xf0\x9f\x98\x80", b"\xc3", b"\xc3\xa9\xc3",
                b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe4\x41", b"\x20\x20", b"\xef\xbb\xbf"]
        for run in runs:
            if all(b in byte_of for b in run):
                seqs.append([byte_of[b] for b in run])
        for _ in range(30):
            seq = []
            for _ in range(rng.randint(1, 8)):
                seq.append(rng.choice(byte_ids) if rng.random() < 0.6 else rng.randrange(n))
            seqs.append(seq)
    for _ in range(30):  # added, special and whitespace tokens mid-text
        pool = [rng.randrange(n) for _ in range(4)] + rng.sample(space_like, min(2, len(space_like)))
        pool += rng.sample(added, min(2, len(added))) + rng.sample(specials, min(1, len(specials)))
        seqs.append([rng.choice(pool) for _ in range(rng.randint(1, 10))])
    while len(seqs) < count:
        seqs.append([rng.randrange(n) for _ in range(rng.randint(1, 16))])
    return [s for s in seqs if s]


def encode_check_texts(prompts: list[str], placeholder: str) -> list[str]:
    """Texts the server encodes: the template prompts' chunks, and strings that stress prefix
    and special-token handling."""
    texts = [chunk for p in prompts for chunk in p.split(placeholder)]
    texts += ["", " ", "  two", "▁literal", "\n", "x", " x"]
    return list(dict.fromkeys(texts))


def tokenizer_check(toks: Tokenizers, settings: dict, prompts: list[str], placeholder: str) -> dict:
    """tokenizer_check.json: what the reference does, for the server to verify at load."""
    ref = toks.reference
    encode = [{"text": t, "ids": list(ref(t).input_ids)} for t in encode_check_texts(prompts, placeholder)]
    specials = [t for t in ref.all_special_tokens if t]
    for s in specials[:4]:  # a special token at the start, inside and at the end of a text
        for t in (f"{s}USER: hi", f"hi{s}USER:", f"hi {s}", f"{s} x"):
            encode.append({"text": t, "ids": list(ref(t).input_ids)})
    decode = [{"ids": ids, "text": reference_answer(ref, ids, settings["strip_answer"])}
              for ids in adversarial_id_sequences(ref)]
    return {"reference": settings["reference"], "encode": encode, "decode": decode}
