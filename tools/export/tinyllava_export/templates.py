"""Prompt templates, prompt rendering and chunk-wise tokenization.

TinyLLaVA checkpoints carry no chat template: TinyLLaVA_Factory picks a Python template class
from the LLM family. This module holds those templates as plain data (the manifest's `prompt`
fields, see docs/model-package.md) so that the exporter can freeze them into a package and the
TypeScript server can render them without Python.

Everything here mirrors TinyLLaVA_Factory's *main* branch (tinyllava/data/template/*.py):

- `system` is an EmptyFormatter with slot `SYSTEM + " "`, emitted once before the first turn.
- `format_user` is "USER: {content} " and `format_assistant` is "ASSISTANT: {content}<eos>",
  so a finished turn ends with the EOS *text* and the next "USER:" follows with no space.
- The generation prompt is what StringFormatter.apply(content=None) returns for the assistant
  slot: `slot.split(':')[0] + ':'`, i.e. "ASSISTANT:" with no trailing space.
- A question containing "<image>" has the placeholders removed, is stripped, and is passed
  through `format_image_token` ("<image>\\n{content}") and stripped again, so the image always
  ends up at the front of the user message.
- `tokenizer_image_token` splits the prompt on "<image>", tokenizes each chunk separately and
  splices IMAGE_TOKEN_INDEX (-200) between chunks, keeping a BOS only on the first chunk.

The manifest formats use single-brace fields ({system}, {content}, {eos}) instead of the
Factory's "{{content}}" so they read naturally; the text produced is identical.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

# Factory's IMAGE_TOKEN_INDEX: the id written in place of each image before splicing.
IMAGE_TOKEN_INDEX = -200
DEFAULT_IMAGE_PLACEHOLDER = "<image>"

DEFAULT_SYSTEM_MESSAGE = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# The fields a manifest `prompt` object carries about the text (the exporter adds
# image_token_id and stop_token_ids, which depend on the tokenizer).
PROMPT_TEXT_FIELDS = (
    "system_message",
    "system_format",
    "user_format",
    "assistant_format",
    "generation_prompt",
    "image_format",
    "image_placeholder",
    "eos_text",
)


def _factory_template(name: str, eos_text: str) -> dict:
    """The shared shape of every Factory main-branch template: only the EOS text differs."""
    return {
        "template": name,
        "system_message": DEFAULT_SYSTEM_MESSAGE,
        "system_format": "{system} ",
        "user_format": "USER: {content} ",
        "assistant_format": "ASSISTANT: {content}{eos}",
        "generation_prompt": "ASSISTANT:",
        "image_format": DEFAULT_IMAGE_PLACEHOLDER + "\n{content}",
        "image_placeholder": DEFAULT_IMAGE_PLACEHOLDER,
        "eos_text": eos_text,
        # The Factory never adds "<image>" to the vocabulary: the prompt is split on it.
        "image_token_mode": "splice",
    }


_TEMPLATES = {
    # EOS texts read from tinyllava/data/template/<name>_template.py (main branch).
    "phi": _factory_template("phi", "<|endoftext|>"),
    "llama": _factory_template("llama", "</s>"),
    "gemma": _factory_template("gemma", "<eos>"),
    "qwen2_base": _factory_template("qwen2_base", "<|endoftext|>"),
    "qwen2_instruct": _factory_template("qwen2_instruct", "<|im_end|>"),
    # transformers' LlavaForConditionalGeneration checkpoints (bczhou/tiny-llava-v1-hf):
    # "USER: <image>\n{q}\nASSISTANT:" with no system text. "<image>" is a real vocabulary
    # token there, so the whole prompt is tokenized at once ("token" mode).
    "llava_hf": {
        "template": "llava_hf",
        "system_message": "",
        "system_format": "",
        "user_format": "USER: {content}\n",
        "assistant_format": "ASSISTANT: {content}{eos}",
        "generation_prompt": "ASSISTANT:",
        "image_format": DEFAULT_IMAGE_PLACEHOLDER + "\n{content}",
        "image_placeholder": DEFAULT_IMAGE_PLACEHOLDER,
        "eos_text": "</s>",
        "image_token_mode": "token",
    },
}

TEMPLATE_NAMES = tuple(_TEMPLATES)


def template_fields(name: str) -> dict:
    """The manifest `prompt` fields of template `name` (a fresh copy, safe to modify).

    Includes `template` (the name) and `image_token_mode`; `image_token_id` and
    `stop_token_ids` depend on the tokenizer and are left to the exporter.
    """
    try:
        return dict(_TEMPLATES[name])
    except KeyError:
        raise ValueError(f"unknown template {name!r}; known: {', '.join(TEMPLATE_NAMES)}") from None


# --------------------------------------------------------------------------------------------
# Rendering

_FIELD = re.compile(r"\{(system|content|eos)\}")


def _fill(fmt: str, **values: str) -> str:
    """Substitute {system}/{content}/{eos} in one pass.

    One pass (not chained str.replace) so that user text containing "{eos}" or "{content}" is
    never itself substituted; str.format is avoided because user text may hold braces.
    """

    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in values:
            raise ValueError(f"format {fmt!r} uses {{{key}}} but no value was given")
        return values[key]

    return _FIELD.sub(sub, fmt)


def _message_text_and_images(message: Mapping[str, Any]) -> tuple[str, int]:
    """Return (text, number of images) of an OpenAI-style message.

    Text parts are joined with "\\n" (their order relative to images does not matter: the
    Factory moves every image to the front of the message).
    """
    content = message.get("content")
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    texts: list[str] = []
    images = 0
    for part in content:
        kind = part.get("type")
        if kind == "text":
            texts.append(part.get("text", ""))
        elif kind in ("image", "image_url"):
            images += 1
        else:
            raise ValueError(f"unsupported content part type {kind!r}")
    return "\n".join(texts), images


def _user_text(fields: Mapping[str, str], text: str, num_images: int) -> str:
    """The Factory's image rewrite of one user message.

    A placeholder typed in the text is never an image (images come from image parts), so it is
    always removed. With images, the text is stripped and `image_format` is applied once per
    image, stripping after each application exactly as the Factory does for its single image.
    """
    placeholder = fields["image_placeholder"]
    if num_images == 0:
        return text.replace(placeholder, "")
    text = text.replace(placeholder, "").strip()
    for _ in range(num_images):
        text = _fill(fields["image_format"], content=text).strip()
    return text


def render_prompt(
    template_fields: Mapping[str, str],
    messages: Sequence[Mapping[str, Any]],
    system: str | None = None,
) -> str:
    """Render OpenAI-style `messages` into one prompt string (docs/model-package.md).

    `messages`: dicts with role "system" | "user" | "assistant" and content either a string or
    a list of parts ({"type": "text", "text": ...} or {"type": "image", ...} /
    {"type": "image_url", ...}). At most one system message, and only as the first message;
    then user and assistant alternate, starting with a user. If the last message is from the
    user the generation prompt is appended; if it is from the assistant the turn is closed with
    the EOS text (training-style rendering).

    The system text is, in order of precedence: `system`, the request's system message, the
    template's `system_message`. Only user messages may carry images.
    """
    fields = template_fields
    placeholder = fields["image_placeholder"]
    msgs = list(messages)

    request_system = None
    if msgs and msgs[0].get("role") == "system":
        request_system, n = _message_text_and_images(msgs[0])
        if n:
            raise ValueError("a system message cannot carry images")
        msgs = msgs[1:]
    if system is None:
        system = request_system if request_system is not None else fields["system_message"]
    # A placeholder in the system text would be spliced as an image position: drop it.
    system = system.replace(placeholder, "")

    if not msgs:
        raise ValueError("no user message to render")

    out = [_fill(fields["system_format"], system=system)]
    for i, msg in enumerate(msgs):
        role = msg.get("role")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(
                f"message {i} has role {role!r}, expected {expected!r} "
                "(one optional leading system message, then user/assistant alternating)"
            )
        text, images = _message_text_and_images(msg)
        if role == "user":
            out.append(_fill(fields["user_format"], content=_user_text(fields, text, images)))
        else:
            if images:
                raise ValueError("an assistant message cannot carry images")
            out.append(
                _fill(
                    fields["assistant_format"],
                    content=text.replace(placeholder, ""),
                    eos=fields["eos_text"],
                )
            )
    if msgs[-1].get("role") == "user":
        out.append(fields["generation_prompt"])
    return "".join(out)


def count_images(messages: Iterable[Mapping[str, Any]]) -> int:
    """Number of image parts in `messages`, i.e. the number of placeholders render_prompt emits."""
    return sum(_message_text_and_images(m)[1] for m in messages)


# --------------------------------------------------------------------------------------------
# Tokenizing

def tokenize_prompt(
    prompt: str,
    tokenizer: Any,
    placeholder: str = DEFAULT_IMAGE_PLACEHOLDER,
    mode: str = "splice",
    image_token_id: int | None = None,
) -> list[int]:
    """Token ids of `prompt`, with IMAGE_TOKEN_INDEX (-200) once at each image position.

    `tokenizer` is a transformers tokenizer (slow or fast); it is called as `tokenizer(text)`
    with its default special-token handling, as the reference does.

    mode "splice" reproduces TinyLLaVA_Factory's `Template.tokenizer_image_token`: the prompt is
    split on `placeholder` and every chunk is tokenized on its own. If the first chunk starts
    with BOS, that BOS is kept once and the first id of every later chunk is dropped (the
    Factory assumes it is the BOS the tokenizer added there too). Tokenizing chunks separately
    is what makes e.g. phi-2 emit a lone " " token before the image: it is NOT equivalent to
    tokenizing the whole string.

    mode "token" reproduces transformers' Llava: the whole prompt is tokenized at once and the
    placeholder is the vocabulary token `image_token_id`; each occurrence becomes -200.
    """
    if mode == "splice":
        chunks = [list(tokenizer(chunk).input_ids) for chunk in prompt.split(placeholder)]
        bos = tokenizer.bos_token_id
        # Factory: offset = 1 iff the first chunk starts with the BOS.
        offset = 1 if chunks and chunks[0] and bos is not None and chunks[0][0] == bos else 0
        ids: list[int] = [chunks[0][0]] if offset else []
        for i, chunk in enumerate(chunks):
            if i > 0:
                ids.append(IMAGE_TOKEN_INDEX)
            # x[offset:] for every chunk, the first included (its BOS was appended above).
            ids.extend(chunk[offset:])
        return ids
    if mode == "token":
        if image_token_id is None:
            raise ValueError('mode "token" needs image_token_id')
        ids = list(tokenizer(prompt).input_ids)
        return [IMAGE_TOKEN_INDEX if t == image_token_id else t for t in ids]
    raise ValueError(f"unknown image_token_mode {mode!r} (splice | token)")


def splice_layout(ids: Sequence[int], num_image_tokens: int) -> tuple[int, list[list[int]]]:
    """Length of the input after each -200 is expanded to `num_image_tokens` embeddings, and
    the [start, length] span of every image in that expanded input."""
    spans: list[list[int]] = []
    pos = 0
    for t in ids:
        if t == IMAGE_TOKEN_INDEX:
            spans.append([pos, num_image_tokens])
            pos += num_image_tokens
        else:
            pos += 1
    return pos, spans
