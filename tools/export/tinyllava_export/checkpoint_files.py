"""Reading a checkpoint directory's files: config.json, the weights (safetensors or .bin, single
or sharded) and loading a prefix of them into a transformers module with clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .model_parts import ExportError


def read_json(path: Path, what: str = "") -> dict:
    if not path.exists():
        raise ExportError(f"{path.parent}: {path.name} is missing{what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from e


def read_config(ckpt: Path) -> dict:
    return read_json(ckpt / "config.json", " (is this a checkpoint directory?)")


def read_optional_json(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None


def weight_files(ckpt: Path) -> tuple[list[Path], str] | None:
    """The weight files of a directory and their format ("st" | "pt"), or None when it has none."""
    for index_name, kind in (("model.safetensors.index.json", "st"), ("pytorch_model.bin.index.json", "pt")):
        index = ckpt / index_name
        if index.exists():
            names = sorted(set(read_json(index).get("weight_map", {}).values()))
            return [ckpt / n for n in names], kind
    if (ckpt / "model.safetensors").exists():
        return [ckpt / "model.safetensors"], "st"
    if (ckpt / "pytorch_model.bin").exists():
        return [ckpt / "pytorch_model.bin"], "pt"
    return None


def load_state_dict(ckpt: Path) -> dict:
    """All tensors of a checkpoint directory, floating point ones as float32 (the reference
    precision: the Factory's loader ignores its fp16 flags)."""
    found = weight_files(ckpt)
    if found is None:
        raise ExportError(f"{ckpt}: no weights found (expected model.safetensors, pytorch_model.bin or a sharded index)")
    files, kind = found
    sd = {}
    for path in files:
        if not path.exists():
            raise ExportError(f"{path}: listed in the checkpoint index but missing")
        try:
            if kind == "st":
                from safetensors.torch import load_file
                sd.update(load_file(str(path)))
            else:
                sd.update(torch.load(str(path), map_location="cpu"))
        except Exception as e:  # a truncated or corrupt file
            raise ExportError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from e
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def sub_dict(sd: dict, prefix: str) -> dict:
    """The tensors under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


# Buffers that transformers recomputes and that checkpoints may or may not carry.
_DERIVED = ("position_ids", "rotary_emb.inv_freq")


def load_into(module: nn.Module, sd: dict, what: str, unused: tuple[str, ...] = (),
              ignored: tuple[str, ...] = (), tied: tuple[str, ...] = ()) -> list[str]:
    """Loads `sd` into `module`, refusing missing or unexpected weights.

    `unused`: name prefixes of parameters the computation never reads (SigLIP's pooling head
    when only hidden states are used); missing ones are set to zero. `ignored`: name prefixes of
    checkpoint tensors the reference loader drops. `tied`: parameters that share another one's
    tensor and may be absent (save_pretrained drops tied copies). Returns the zero-filled names."""
    sd = {k: v for k, v in sd.items() if not k.startswith(ignored)} if ignored else sd
    try:
        missing, unexpected = module.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shapes that do not fit the config
        detail = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e)[:300])
        raise ExportError(f"{what}: checkpoint weights do not match its config: {detail}") from e
    missing = [m for m in missing if not m.endswith(_DERIVED) and m not in tied]
    zeroed = [m for m in missing if m.startswith(unused)] if unused else []
    missing = [m for m in missing if m not in zeroed]
    if missing or unexpected:
        raise ExportError(f"{what}: checkpoint weights do not match its config: "
                          f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                          f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name in zeroed:
            params[name].zero_()
    return zeroed


def load_llm(llm: nn.Module, sd: dict, what: str, unused: tuple[str, ...] = ()) -> list[str]:
    """Loads a transformers *ForCausalLM. A tied-embedding model (tie_word_embeddings) may lack
    `lm_head.weight`, as `save_pretrained` writes it (one copy of a shared tensor); the output
    projection is then the input embedding, as transformers' `tie_weights` makes it."""
    tied = bool(getattr(llm.config, "tie_word_embeddings", False))
    if "lm_head.weight" not in sd and not tied:
        raise ExportError(f"{what}: lm_head.weight is missing and the text config does not tie the word "
                          "embeddings (tie_word_embeddings is false), so the output projection is unknown")
    zeroed = load_into(llm, sd, what, unused=unused, tied=("lm_head.weight",) if tied else ())
    if tied:
        llm.tie_weights()
    return zeroed
