"""Random-init model presets: tiny ones for tests, real-shaped ones for benchmarks.

A preset names an LLM family, a vision tower and a connector with transformers config values.
Real-shaped presets copy the dimensions of the published checkpoints (see
../shared/reference/tinyllava.md); their weights are random, so their text is meaningless.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Vision towers (transformers config kwargs).
SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                     num_attention_heads=16, image_size=384, patch_size=14)
CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                  num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                  hidden_act="quick_gelu")
TINY_SIGLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                   num_attention_heads=2, image_size=384, patch_size=14)
TINY_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                 num_attention_heads=2, image_size=336, patch_size=14, projection_dim=32,
                 hidden_act="quick_gelu")


@dataclass
class Preset:
    name: str
    family: str  # llama | phi | stablelm | qwen2 | gemma
    vision: str  # siglip | clip
    template: str  # prompt template name (templates.py)
    tokenizer_style: str  # fixtures/tokenizers.py style for tiny presets
    text: dict  # transformers text config kwargs; vocab_size None = the tokenizer's size
    vision_cfg: dict
    connector: str = "mlp2x_gelu"
    max_context: int = 2048
    tiny: bool = True
    # Standard deviation of the random init. Tiny models use a larger one than transformers'
    # 0.02 so that logits are well separated and greedy decoding is not decided by rounding.
    init_std: float = 0.02
    source_checkpoint: str | None = None  # the published checkpoint whose shape this copies
    extra: dict = field(default_factory=dict)


_TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)

PRESETS: dict[str, Preset] = {p.name: p for p in [
    # --- tiny: a few layers, small dims, exported and checked by the test suite -------------
    Preset("tiny-llama-siglip", "llama", "siglip", "llama", "llama",
           dict(_TINY_TEXT, vocab_size=None, rms_norm_eps=1e-5, tie_word_embeddings=False),
           TINY_SIGLIP, init_std=0.1),
    Preset("tiny-phi-siglip", "phi", "siglip", "phi", "phi",
           # head_dim 20 with partial_rotary_factor 0.4: rotary on the first 8 dims, like phi-2's 32 of 80
           dict(hidden_size=80, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, partial_rotary_factor=0.4, max_position_embeddings=2048,
                vocab_size=None, hidden_act="gelu_new", layer_norm_eps=1e-5,
                tie_word_embeddings=False, pad_vocab_to=64),
           TINY_SIGLIP, max_context=2048, init_std=0.1),
    Preset("tiny-qwen2-siglip", "qwen2", "siglip", "qwen2_base", "qwen2",
           dict(_TINY_TEXT, vocab_size=None, rms_norm_eps=1e-6, rope_theta=1000000.0,
                tie_word_embeddings=True),
           TINY_SIGLIP, init_std=0.1),
    Preset("tiny-stablelm-clip", "stablelm", "clip", "phi", "stablelm",
           # stablelm-2 uses the phi template in TinyLLaVA; rotary on 25% of the head dims
           dict(_TINY_TEXT, num_key_value_heads=4, vocab_size=None, partial_rotary_factor=0.25,
                use_qkv_bias=True, layer_norm_eps=1e-5, tie_word_embeddings=False),
           TINY_CLIP, init_std=0.1),
    Preset("tiny-gemma-siglip", "gemma", "siglip", "gemma", "gemma",
           # head_dim 48 != hidden/heads and one KV head (MQA), like gemma-2b's 256 with 8/1
           dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=48, vocab_size=None, rms_norm_eps=1e-6,
                max_position_embeddings=2048, hidden_activation="gelu_pytorch_tanh",
                tie_word_embeddings=True),
           TINY_SIGLIP, init_std=0.1),
    # --- real shapes, random weights: for benchmarks ----------------------------------------
    Preset("phi2-siglip-3.1b", "phi", "siglip", "phi", "phi",
           dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, partial_rotary_factor=0.4,
                max_position_embeddings=2048, vocab_size=51200, hidden_act="gelu_new",
                layer_norm_eps=1e-5, tie_word_embeddings=False),
           SIGLIP_SO400M, max_context=3072, tiny=False,
           source_checkpoint="tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B"),
    Preset("qwen2-0.5b-siglip", "qwen2", "siglip", "qwen2_base", "qwen2",
           dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1000000.0,
                tie_word_embeddings=True),
           SIGLIP_SO400M, tiny=False, source_checkpoint="Zhang199/TinyLLaVA-Qwen2-0.5B-SigLIP"),
    Preset("tinyllama-siglip-1.5b", "llama", "siglip", "llama", "llama",
           dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                vocab_size=32000, rms_norm_eps=1e-5, tie_word_embeddings=False),
           SIGLIP_SO400M, tiny=False, source_checkpoint="bczhou/TinyLLaVA-1.5B (shape)"),
    Preset("stablelm2-siglip-2.0b", "stablelm", "siglip", "phi", "stablelm",
           dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                num_attention_heads=32, num_key_value_heads=32, partial_rotary_factor=0.25,
                use_qkv_bias=True, max_position_embeddings=4096, vocab_size=100352,
                layer_norm_eps=1e-5, tie_word_embeddings=False),
           SIGLIP_SO400M, tiny=False, source_checkpoint="bczhou/TinyLLaVA-2.0B (shape)"),
    Preset("gemma-siglip-2.4b", "gemma", "siglip", "gemma", "gemma",
           dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                num_attention_heads=8, num_key_value_heads=1, head_dim=256,
                max_position_embeddings=8192, vocab_size=256000, rms_norm_eps=1e-6,
                hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
           SIGLIP_SO400M, tiny=False, source_checkpoint="tinyllava/TinyLLaVA-Gemma-SigLIP-2.4B"),
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise SystemExit(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]
