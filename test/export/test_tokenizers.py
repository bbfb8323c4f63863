"""Fixture tokenizers (trained offline) and chunk-wise prompt tokenization."""

import json

import pytest
from transformers import AutoTokenizer

from tinyllava_export import templates as T
from tinyllava_export import tokenizer_check as C
from tinyllava_export.fixtures import tokenizers as K

IMG = T.IMAGE_TOKEN_INDEX
# The template(s) each tokenizer style is paired with in TinyLLaVA (stablelm-2 uses phi's).
TEMPLATES_OF = {
    "phi": ["phi"],
    "qwen2": ["qwen2_base", "qwen2_instruct"],
    "stablelm": ["phi"],
    "llama": ["llama", "llava_hf"],
    "gemma": ["gemma"],
}
SLOW_CLASS = {"phi": "CodeGenTokenizer", "qwen2": "Qwen2Tokenizer", "llama": "LlamaTokenizer",
              "gemma": "GemmaTokenizer", "stablelm": None}
ADDS_BOS = {"phi": False, "qwen2": False, "stablelm": False, "llama": True, "gemma": True}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    return {style: (root / style, K.train_tokenizer(style, root / style)) for style in K.STYLES}


def image_message(text, images=1):
    return [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}]


def test_training_is_deterministic(trained, tmp_path):
    for style in K.STYLES:
        first_dir, _ = trained[style]
        K.train_tokenizer(style, tmp_path / style)
        names = sorted(p.name for p in first_dir.iterdir())
        assert names == sorted(p.name for p in (tmp_path / style).iterdir()), style
        for name in names:
            assert (first_dir / name).read_bytes() == (tmp_path / style / name).read_bytes(), (style, name)


@pytest.mark.parametrize("style", K.STYLES)
def test_files_vocab_and_sizes(trained, style):
    out, tok = trained[style]
    files = {p.name for p in out.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= files
    slow_files = {"phi": {"vocab.json", "merges.txt"}, "qwen2": {"vocab.json", "merges.txt"},
                  "llama": {"tokenizer.model"}, "gemma": {"tokenizer.model"}, "stablelm": set()}[style]
    assert slow_files <= files
    assert (out / "tokenizer.json").stat().st_size < 100_000
    assert len(tok) == K.DEFAULT_VOCAB_SIZE[style]
    # The trainer really learned merges (not just the byte alphabet).
    assert len(tok("The assistant gives helpful answers.").input_ids) < 12


def test_special_token_ids(trained):
    phi, qwen, neox, llama, gemma = (trained[s][1] for s in ("phi", "qwen2", "stablelm", "llama", "gemma"))
    # GPT-2/CodeGen: <|endoftext|> is the last id and serves as bos/eos/unk.
    assert phi.convert_tokens_to_ids("<|endoftext|>") == len(phi) - 1 == phi.eos_token_id == phi.bos_token_id
    # Qwen2: specials after the learned vocabulary, no BOS.
    n = len(qwen)
    assert [qwen.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [
        n - 3, n - 2, n - 1]
    assert qwen.bos_token_id is None and qwen.eos_token_id == n - 3
    # GPT-NeoX: <|endoftext|> is id 0.
    assert neox.convert_tokens_to_ids("<|endoftext|>") == 0 == neox.eos_token_id
    assert llama.convert_ids_to_tokens([0, 1, 2]) == ["<unk>", "<s>", "</s>"]
    assert (llama.bos_token_id, llama.eos_token_id) == (1, 2)
    assert gemma.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<eos>", "<bos>", "<unk>"]
    assert (gemma.bos_token_id, gemma.eos_token_id) == (2, 1)
    # Byte fallback: SentencePiece styles carry the 256 byte pieces.
    assert llama.convert_tokens_to_ids("<0x0A>") == 13  # as in Llama: 3 specials + 0x0A
    assert gemma.convert_tokens_to_ids("<0xF0>") != gemma.unk_token_id


@pytest.mark.parametrize("style", K.STYLES)
def test_bos_added_only_where_the_family_adds_it(trained, style):
    _, tok = trained[style]
    ids = tok("Hello").input_ids
    assert (ids[0] == tok.bos_token_id) == ADDS_BOS[style]
    assert ids[-1] != tok.eos_token_id  # no EOS appended


@pytest.mark.parametrize("style", K.STYLES)
def test_multibyte_text_round_trips(trained, style):
    _, tok = trained[style]
    text = "Café 你好，世界 😀 👍🏽 ±20°C"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text
    # At least one token is a lone byte, so decoding token by token would split a character.
    pieces = [tok.decode([i]) for i in ids]
    assert any("\ufffd" in p for p in pieces)


@pytest.mark.parametrize("style", ["phi", "qwen2", "llama", "gemma"])
def test_slow_tokenizer_class_loads(trained, style):
    out, _ = trained[style]
    slow, why = C.load_slow(out)
    assert slow is not None, why
    assert type(slow).__name__ == SLOW_CLASS[style]


def test_stablelm_has_no_slow_tokenizer(trained):
    out, _ = trained["stablelm"]
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "GPT2TokenizerFast"
    report = C.check_slow_fast(out, C.template_prompts(T.template_fields("phi")))
    assert report.agree and not report.slow_available and report.checked == 0
    assert "no slow tokenizer available" in report.note


@pytest.mark.parametrize("style,template", [(s, t) for s, ts in TEMPLATES_OF.items() for t in ts])
def test_slow_equals_fast_on_template_prompts(trained, style, template):
    out, tok = trained[style]
    fields = T.template_fields(template)
    mode, image_id = fields["image_token_mode"], None
    if mode == "token":
        # llava_hf in token mode needs "<image>" in the vocabulary (checked separately below);
        # here: the same prompts through the splice path.
        mode = "splice"
    report = C.check_slow_fast(out, C.template_prompts(fields), fields["image_placeholder"], mode, image_id)
    assert report.slow_available == (style != "stablelm")
    assert report.agree, report.to_dict()["mismatches"][:1]


def test_slow_equals_fast_on_corpus_lines(trained):
    lines = K.corpus_lines()
    for style in ("phi", "qwen2", "llama", "gemma"):
        out, fast = trained[style]
        slow, _ = C.load_slow(out)
        for line in lines:
            assert slow(line).input_ids == fast(line).input_ids, (style, line)


def test_check_catches_llama_legacy_false_disagreement(tmp_path):
    # legacy=False Llama tokenizers (TinyLlama-Chat's config) cannot be expressed by a
    # tokenizer.json: the slow one always prepends "▁", the fast Metaspace("first") not when the
    # text already starts with a space, as the chunk " ASSISTANT:" after an image-only turn does.
    K.train_tokenizer("llama", tmp_path, llama_legacy=False)
    fields = T.template_fields("llama")
    report = C.check_slow_fast(tmp_path, C.template_prompts(fields))
    assert report.slow_available and not report.agree
    bad = {m.prompt for m in report.mismatches}
    assert T.render_prompt(fields, image_message("")) in bad
    m = report.mismatches[0]
    assert m.slow_ids[:m.first_difference] == m.fast_ids[:m.first_difference]
    assert m.slow_ids[m.first_difference] != m.fast_ids[m.first_difference]


# An independent re-statement of the Factory's tokenizer_image_token, used as an oracle.
def _factory_ids(prompt, tok):
    chunks = [tok(c).input_ids for c in prompt.split("<image>")]
    out, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tok.bos_token_id:
        offset = 1
        out.append(chunks[0][0])
    seq = []
    for c in chunks:
        seq += [c, [IMG] * (offset + 1)]
    for x in seq[:-1]:
        out.extend(x[offset:])
    return out


@pytest.mark.parametrize("style", K.STYLES)
def test_splice_tokenization_matches_factory(trained, style):
    _, tok = trained[style]
    for template in TEMPLATES_OF[style]:
        for prompt in C.template_prompts(T.template_fields(template)):
            assert T.tokenize_prompt(prompt, tok, "<image>", "splice") == _factory_ids(prompt, tok)


@pytest.mark.parametrize("style", ["llama", "gemma"])
def test_splice_keeps_bos_once_and_places_images(trained, style):
    _, tok = trained[style]
    fields = T.template_fields(style)
    prompt = T.render_prompt(fields, image_message("Compare them.", images=2))
    ids = T.tokenize_prompt(prompt, tok, "<image>", "splice")
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids.count(IMG) == 2
    before, between, after = prompt.split("<image>")
    first = tok(before).input_ids
    # chunk 0 keeps its BOS, later chunks lose theirs
    assert ids[:len(first)] == first and ids[len(first)] == IMG
    mid = tok(between).input_ids[1:]
    assert ids[len(first) + 1:len(first) + 1 + len(mid)] == mid
    assert ids[len(first) + 1 + len(mid)] == IMG
    assert ids[len(first) + 2 + len(mid):] == tok(after).input_ids[1:]
    n, spans = T.splice_layout(ids, 728)
    assert spans == [[len(first), 728], [len(first) + 728 + len(mid), 728]]
    assert n == len(ids) - 2 + 2 * 728


def test_splice_is_not_whole_string_tokenization(trained):
    # phi-2's verified ids end chunk 0 with a lone " " token (220) before the image: the
    # trailing space of "USER: " cannot merge with the newline of the next chunk.
    _, tok = trained["phi"]
    prompt = T.render_prompt(T.template_fields("phi"), image_message("What are these?"))
    ids = T.tokenize_prompt(prompt, tok, "<image>", "splice")
    i = ids.index(IMG)
    assert tok.convert_ids_to_tokens(ids[i - 1]) == "Ġ"
    assert tok.convert_ids_to_tokens(ids[i - 3:i - 1]) == ["ĠUSER", ":"]
    assert tok.convert_ids_to_tokens(ids[i + 1]) == "Ċ"
    assert ids[0] != tok.bos_token_id  # phi adds no BOS
    # the llama chunk after an image starts with the "▁" dummy prefix, as TinyLlama's does
    _, llama = trained["llama"]
    lids = T.tokenize_prompt(T.render_prompt(T.template_fields("llama"), image_message("Hi")), llama)
    j = lids.index(IMG)
    assert llama.convert_ids_to_tokens(lids[j + 1:j + 3]) == ["▁", "<0x0A>"]


def test_token_mode_with_image_in_vocabulary(tmp_path):
    tok = K.train_tokenizer("llama", tmp_path, image_token=True)
    image_id = tok.convert_tokens_to_ids("<image>")
    assert image_id == K.DEFAULT_VOCAB_SIZE["llama"]
    fields = T.template_fields("llava_hf")
    prompt = T.render_prompt(fields, image_message("What are these?", images=2))
    ids = T.tokenize_prompt(prompt, tok, "<image>", "token", image_id)
    assert ids.count(IMG) == 2 and image_id not in ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    report = C.check_slow_fast(tmp_path, C.template_prompts(fields), "<image>", "token", image_id)
    assert report.agree, report.to_dict()["mismatches"][:1]
    with pytest.raises(ValueError):
        T.tokenize_prompt(prompt, tok, "<image>", "token", None)


def test_fast_tokenizer_file_is_self_contained(trained):
    # What the server loads: tokenizer.json alone, through the `tokenizers` library.
    from tokenizers import Tokenizer

    for style in K.STYLES:
        out, tok = trained[style]
        raw = Tokenizer.from_file(str(out / "tokenizer.json"))
        text = "USER: What are these? ASSISTANT: Two cats.</s><|endoftext|><eos>"
        assert raw.encode(text).ids == tok(text).input_ids, style


def _server(tok_dir, toks):
    from tinyllava_export import tokenizer_settings as S
    settings = S.decode_settings(toks, True)
    return settings, S.ServerTokenizer(tok_dir / "tokenizer.json", settings["prefix_space"], toks.fast.bos_token_id)


@pytest.mark.parametrize("template", ["llama", "llava_hf"])
def test_legacy_false_llama_is_served_exactly_with_prefix_space(tmp_path, template):
    """TinyLlama-Chat's legacy:false: the server prepends one space per text and drops a lone
    "▁" before a leading special token; every template prompt then tokenizes as the slow one."""
    from tinyllava_export import tokenizer_settings as S
    K.train_tokenizer("llama", tmp_path / "src", llama_legacy=False)
    toks = S.load_tokenizers(tmp_path / "src", tmp_path / "out", [], reference_fast=False)
    settings, server = _server(tmp_path / "out", toks)
    assert settings["prefix_space"] is True and toks.reference_kind == "slow"
    fields = T.template_fields(template)
    report = C.compare_tokenizers(toks.reference, server, C.template_prompts(fields), fields["image_placeholder"], "splice")
    assert report.agree and report.checked == 8, report.to_dict()["mismatches"][:1]
    for text in ["", " x", "</s>USER: hi", "hi</s>", "  two", "▁literal"]:
        assert server(text).input_ids == toks.reference(text).input_ids, text
    if template == "llama":  # its chunk " ASSISTANT:" after an image-only turn: tokenizer.json alone disagrees
        plain = S.ServerTokenizer(tmp_path / "out" / "tokenizer.json", False, toks.fast.bos_token_id)
        assert not C.compare_tokenizers(toks.reference, plain, C.template_prompts(fields), "<image>", "splice").agree


@pytest.mark.parametrize("style,expect", [
    ("llama", dict(decode="slow", byte_fallback="sentencepiece", run_leading_space="strip_sentencepiece")),
    ("gemma", dict(decode="slow", byte_fallback="sentencepiece", run_leading_space="keep")),
    ("qwen2", dict(decode="slow", byte_fallback="hf", clean_up_tokenization_spaces=False)),
    ("phi", dict(decode="slow", byte_fallback="hf")),
    ("stablelm", dict(decode="tokenizer_json", reference="GPT2TokenizerFast (fast)")),
])
def test_decode_settings_describe_the_reference(trained, style, expect):
    from tinyllava_export import tokenizer_settings as S
    out, fast = trained[style]
    slow, why = C.load_slow(out)
    toks = S.Tokenizers(fast, slow or fast, "slow" if slow is not None else "fast", why)
    settings = S.decode_settings(toks, True)
    for key, value in expect.items():
        assert settings[key] == value, (key, settings)


def test_phi2_style_added_tokens_and_clean_up(tmp_path):
    from tinyllava_export import tokenizer_settings as S
    K.train_tokenizer("phi", tmp_path / "src", phi2_extras=True)
    toks = S.load_tokenizers(tmp_path / "src", tmp_path / "out", [], reference_fast=False)
    s = S.decode_settings(toks, True)
    assert s["added_token_separator"] == " " and s["clean_up_tokenization_spaces"] is True
    assert [toks.reference.convert_ids_to_tokens(i) for i in s["added_token_ids"]] == K.PHI2_WHITESPACE_TOKENS


def test_reference_answers_of_the_issue(tmp_path, trained):
    """<0x45><0x95>: the slow SentencePiece tokenizer's 'E\\ufffd' is the reference answer."""
    from tinyllava_export import tokenizer_settings as S
    out, _ = trained["llama"]
    slow, _ = C.load_slow(out)
    ids = slow.convert_tokens_to_ids(["<0x45>", "<0x95>"])
    assert S.reference_answer(slow, ids, True) == "E\ufffd"
    cases = S.adversarial_id_sequences(slow)
    assert ids in cases and len(cases) >= 160
