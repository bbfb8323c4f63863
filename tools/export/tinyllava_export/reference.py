"""The PyTorch reference: transformers' own vision tower and causal LM, joined by the TinyLLaVA
glue (TinyLLaVA_Factory main branch): feature selection, connector, splice, greedy generate.

This is what every export and every golden file is measured against; it never uses the
export-friendly decoder of decoder.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from .model_parts import ModelParts

IMAGE = -200  # the Factory's IMAGE_TOKEN_INDEX: an image position in a prompt id list


@torch.no_grad()
def image_features(parts: ModelParts, pixel_values: torch.Tensor) -> torch.Tensor:
    """hidden_states[feature_layer] (before post_layernorm / pooling head), then selection."""
    out = parts.vision(pixel_values, output_hidden_states=True)
    feats = out.hidden_states[parts.feature_layer]
    # "patch" drops token 0 for SigLIP too (no CLS there): 729 -> 728, as the Factory trained it.
    return feats[:, 1:] if parts.feature_select == "patch" else feats


@torch.no_grad()
def image_embeds(parts: ModelParts, pixel_values: torch.Tensor) -> torch.Tensor:
    return parts.connector(image_features(parts, pixel_values))


def segments(prompt_ids: list[int]) -> list[list[int] | None]:
    """Prompt ids split into runs of text ids, with None where an image goes."""
    out: list[list[int] | None] = []
    for tok in prompt_ids:
        if tok == IMAGE:
            out.append(None)
        elif out and out[-1] is not None:
            out[-1].append(tok)
        else:
            out.append([tok])
    return out


@torch.no_grad()
def splice(parts: ModelParts, prompt_ids: list[int], embeds: list[torch.Tensor]) -> torch.Tensor:
    """Text embeddings with each IMAGE position replaced by one image's embeddings [1, L, D]."""
    embed = parts.llm.get_input_embeddings()
    images = iter(embeds)
    pieces = [next(images) if run is None else embed(torch.tensor([run])) for run in segments(prompt_ids)]
    return torch.cat(pieces, dim=1)


@dataclass
class GreedyResult:
    tokens: list[int]
    logits: list[torch.Tensor]  # raw logits [V] of each step, the first is after the prompt


class _StepCallback(StoppingCriteria):
    """Never stops generation; reports each generated token (for progress lines)."""

    def __init__(self, start: int, on_step):
        self.start, self.on_step = start, on_step

    def __call__(self, input_ids, scores, **kwargs):
        self.on_step(input_ids.shape[1] - self.start)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


@torch.no_grad()
def greedy(parts: ModelParts, inputs_embeds: torch.Tensor, steps: int, on_step=None) -> GreedyResult:
    """transformers' generate() as the Factory calls it (inputs_embeds, greedy), never stopping
    early at EOS, so that exactly `steps` tokens come back. `on_step(i)` after the i-th token."""
    cfg = GenerationConfig(max_new_tokens=steps, min_new_tokens=0, do_sample=False, num_beams=1,
                           eos_token_id=None, pad_token_id=0, output_logits=True,
                           return_dict_in_generate=True)
    mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long)
    # synced_gpus=False: single process; asking transformers to probe for FSDP imports
    # torch.distributed.fsdp, which Debian's torch 1.13 cannot import on Python 3.11.
    extra = {"stopping_criteria": StoppingCriteriaList([_StepCallback(0, on_step)])} if on_step else {}
    out = parts.llm.generate(inputs_embeds=inputs_embeds, attention_mask=mask, generation_config=cfg,
                             synced_gpus=False, **extra)
    tokens = out.sequences[0, -steps:].tolist()
    return GreedyResult(tokens=tokens, logits=[step[0].float() for step in out.logits])
