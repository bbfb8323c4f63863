"""An export-friendly decoder that computes what transformers' causal LMs compute.

Why not trace transformers' own modules? Their KV-cache objects and mask builders change from
release to release and do not trace cleanly on torch 1.13, and the package format needs two
things they do not offer: logits of the last position only, and `present` holding only the new
positions (see docs/model-package.md). So this module re-states each supported family's forward
pass in plain tensor ops, loads the transformers state dict unchanged, and the exporter's
parity check proves it against the transformers model itself.

Two forms of the same computation (docs/model-package.md, "Decoder forms"):
- `standard`: attention_mask and position_ids in, the past as [B,Hkv,P,Dh] tensors, presents of
  the new positions only; attention as grouped MatMuls (the fastest form on onnxruntime's CPU).
- `shared_kv`: onnxruntime's `com.microsoft.GroupQueryAttention` per layer over one buffer
  [B,Hkv,capacity,Dh] that is both past and present (written in place when the runtime binds
  the same memory to both), `seqlens_k` and `total_sequence_length` instead of a mask, rotary
  outside the op on position_ids (so partial rotary and every family's rotary stay as they are).
  The form the CUDA provider needs to keep the KV cache on the device.

Shapes: B batch, T new positions, P past positions, K = P + T, H heads, Hkv KV heads, Dh head dim.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

FAMILIES = ("llama", "phi", "stablelm", "qwen2", "gemma")
FORMS = ("standard", "shared_kv")


@dataclass
class DecoderSpec:
    """The per-family facts the forward pass needs, read from a transformers text config."""

    family: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rope_theta: float
    rotary_dim: int  # rotary applies to the first rotary_dim dims of each head (partial for phi/stablelm)
    norm_eps: float
    norm: str  # "rms" | "rms_plus_one" (gemma: x * (1 + w)) | "layer"
    act: str  # "silu" | "gelu_tanh"
    mlp: str  # "gated" (gate/up/down) | "fc" (fc1/act/fc2, phi)
    parallel_residual: bool  # attention and MLP both read one normed input (phi; stablelm option)
    qkv_bias: bool
    o_bias: bool
    lm_head_bias: bool
    tie_embeddings: bool
    embed_scale: float | None  # gemma multiplies inputs_embeds by sqrt(hidden)
    max_position_embeddings: int

    @staticmethod
    def from_hf_config(family: str, cfg) -> "DecoderSpec":
        if family not in FAMILIES:
            raise ValueError(f"unsupported LLM family {family!r}: supported are {', '.join(FAMILIES)}")
        heads = cfg.num_attention_heads
        kv = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        rope_scaling = getattr(cfg, "rope_scaling", None)
        if rope_scaling:
            raise ValueError(f"{family}: rope_scaling {rope_scaling!r} is not supported yet")
        common = dict(
            family=family,
            num_layers=cfg.num_hidden_layers,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=head_dim,
            vocab_size=cfg.vocab_size,
            rope_theta=float(getattr(cfg, "rope_theta", 10000.0)),
            max_position_embeddings=cfg.max_position_embeddings,
            tie_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
            embed_scale=None,
        )
        if family in ("llama", "qwen2"):
            act = getattr(cfg, "hidden_act", "silu")
            if act != "silu":
                raise ValueError(f"{family}: hidden_act {act!r} is not supported (expected silu)")
            bias = family == "qwen2" or bool(getattr(cfg, "attention_bias", False))
            if getattr(cfg, "mlp_bias", False):
                raise ValueError("llama: mlp_bias is not supported")
            return DecoderSpec(**common, rotary_dim=head_dim, norm_eps=cfg.rms_norm_eps, norm="rms",
                               act="silu", mlp="gated", parallel_residual=False, qkv_bias=bias,
                               o_bias=family == "llama" and bias, lm_head_bias=False)
        if family == "gemma":
            act = getattr(cfg, "hidden_activation", None) or "gelu_pytorch_tanh"
            if act not in ("gelu_pytorch_tanh", "gelu"):
                raise ValueError(f"gemma: hidden_activation {act!r} is not supported")
            common["embed_scale"] = cfg.hidden_size ** 0.5
            # transformers' Gemma maps a legacy hidden_act "gelu" to the tanh approximation too.
            return DecoderSpec(**common, rotary_dim=head_dim, norm_eps=cfg.rms_norm_eps,
                               norm="rms_plus_one", act="gelu_tanh", mlp="gated",
                               parallel_residual=False, qkv_bias=bool(cfg.attention_bias),
                               o_bias=bool(cfg.attention_bias), lm_head_bias=False)
        if family == "phi":
            if getattr(cfg, "qk_layernorm", False):
                raise ValueError("phi: qk_layernorm=True is not supported")
            if cfg.hidden_act not in ("gelu_new", "gelu_pytorch_tanh"):
                raise ValueError(f"phi: hidden_act {cfg.hidden_act!r} is not supported (expected gelu_new)")
            return DecoderSpec(**common, rotary_dim=int(head_dim * cfg.partial_rotary_factor),
                               norm_eps=cfg.layer_norm_eps, norm="layer", act="gelu_tanh", mlp="fc",
                               parallel_residual=True, qkv_bias=True, o_bias=True, lm_head_bias=True)
        # stablelm
        if getattr(cfg, "qk_layernorm", False):
            raise ValueError("stablelm: qk_layernorm=True is not supported")
        if cfg.hidden_act != "silu":
            raise ValueError(f"stablelm: hidden_act {cfg.hidden_act!r} is not supported (expected silu)")
        return DecoderSpec(**common, rotary_dim=int(head_dim * cfg.partial_rotary_factor),
                           norm_eps=cfg.layer_norm_eps, norm="layer", act="silu", mlp="gated",
                           parallel_residual=bool(cfg.use_parallel_residual),
                           qkv_bias=bool(cfg.use_qkv_bias), o_bias=False, lm_head_bias=False)


class _Norm(nn.Module):
    def __init__(self, kind: str, dim: int, eps: float, device=None):
        super().__init__()
        self.kind, self.eps, self.dim = kind, eps, dim
        self.weight = nn.Parameter(torch.ones(dim, device=device))
        self.bias = nn.Parameter(torch.zeros(dim, device=device)) if kind == "layer" else None

    def forward(self, x):
        if self.kind == "layer":
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        weight = 1.0 + self.weight if self.kind == "rms_plus_one" else self.weight
        return normed * weight


def _act(kind: str, x):
    return F.silu(x) if kind == "silu" else F.gelu(x, approximate="tanh")


def _rotate_half(x, half: int):
    # `half` is a Python int (not x.shape[-1] // 2) so that the exported slices are constants
    # instead of a Shape/Gather/Div chain per call.
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _Reshape(torch.autograd.Function):
    """x.reshape(shape) where 0 keeps x's dimension at that index (ONNX Reshape's rule); a
    shape with a 0 must have a -1 too (torch 1.13's ONNX shape inference asserts it).

    torch.onnx.export writes `x.view(b, t, ...)` as a Shape -> Gather -> Unsqueeze -> Concat chain
    per reshape, since b and t are dynamic: a handful of tiny kernels each, five reshapes a layer.
    Exported through `symbolic`, the shape is one constant and onnxruntime runs the Reshape alone.
    """

    @staticmethod
    def forward(ctx, x, shape):
        return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(shape)])

    @staticmethod
    def symbolic(g, x, shape):
        return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))


def _reshape(x, *shape: int):
    return _Reshape.apply(x, tuple(shape))


class _GroupQueryAttention(torch.autograd.Function):
    """onnxruntime's com.microsoft.GroupQueryAttention: q [B,T,H*Dh], k and v [B,T,Hkv*Dh],
    past_k / past_v [B,Hkv,C,Dh], seqlens_k [B] (a row's total length - 1), total_sequence_length
    -> attention output [B,T,H*Dh] and the buffers with the T new positions written at
    total - T .. total - 1 of each row. With cos_cache / sin_cache ([max positions, rotary_dim/2])
    the op rotates the first rotary_dim dims of q and k itself (do_rotary, rotate-half layout) at
    those positions; without them (None), q and k come rotated.

    Exported through `symbolic` as the op itself; `forward` restates what the op computes so that
    the module also runs in PyTorch (the export traces it once, on a batch of one row).
    """

    @staticmethod
    def forward(ctx, q, k, v, past_k, past_v, seqlens_k, total_sequence_length, cos_cache, sin_cache,
                num_heads, kv_heads, scale):
        b, t, _ = q.shape
        dh = past_k.shape[3]
        present_k, present_v = past_k.clone(), past_v.clone()
        out = torch.zeros_like(q)
        for row in range(b):
            total = int(seqlens_k[row]) + 1
            start = total - t
            qr, kr = q[row].reshape(t, num_heads, dh), k[row].reshape(t, kv_heads, dh)
            if cos_cache is not None:
                cos = torch.cat((cos_cache[start:total], cos_cache[start:total]), dim=-1)[:, None]  # [T,1,r]
                sin = torch.cat((sin_cache[start:total], sin_cache[start:total]), dim=-1)[:, None]
                qr, kr = (_rotate(x, cos, sin, cos.shape[-1]) for x in (qr, kr))
            present_k[row, :, start:total] = kr.transpose(0, 1)
            present_v[row, :, start:total] = v[row].reshape(t, kv_heads, dh).transpose(0, 1)
            rep = num_heads // kv_heads
            keys = present_k[row, :, :total].repeat_interleave(rep, dim=0)  # [H,total,Dh]
            values = present_v[row, :, :total].repeat_interleave(rep, dim=0)
            scores = torch.matmul(qr.transpose(0, 1), keys.transpose(1, 2)) * scale
            visible = torch.arange(total)[None, :] <= (torch.arange(t) + start)[:, None]  # [T,total]
            probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
            out[row] = torch.matmul(probs, values).transpose(0, 1).reshape(t, num_heads * dh)
        return out, present_k, present_v

    @staticmethod
    def symbolic(g, q, k, v, past_k, past_v, seqlens_k, total_sequence_length, cos_cache, sin_cache,
                 num_heads, kv_heads, scale):
        rotary = cos_cache is not None
        inputs = [q, k, v, past_k, past_v, seqlens_k, total_sequence_length] + ([cos_cache, sin_cache] if rotary else [])
        out, present_k, present_v = g.op(
            "com.microsoft::GroupQueryAttention", *inputs, num_heads_i=num_heads, kv_num_heads_i=kv_heads,
            scale_f=scale, do_rotary_i=int(rotary), rotary_interleaved_i=0, outputs=3)
        out.setType(q.type())
        present_k.setType(past_k.type())
        present_v.setType(past_v.type())
        return out, present_k, present_v


def _rotate(x, cos, sin, r: int):
    """Rotary on the first r (= cos.shape[-1]) dims of x (rotate-half layout, transformers'), the
    rest passed through. r is a Python int so that the exported slices are constants."""
    if r == x.shape[-1]:
        return x * cos + _rotate_half(x, r // 2) * sin
    x_rot, x_pass = x[..., :r], x[..., r:]
    return torch.cat((x_rot * cos + _rotate_half(x_rot, r // 2) * sin, x_pass), dim=-1)


def is_shared_kv(input_names) -> bool:
    """A shared_kv decoder declares seqlens_k (as src/runtime/graph-io.ts reads the form)."""
    return "seqlens_k" in input_names


def rotary_inside_attention(spec: "DecoderSpec") -> bool:
    """Whether the shared_kv form hands rotary to GroupQueryAttention: its kernel needs
    rotary_dim / 2 to be a multiple of 8 (every released checkpoint's: TinyLlama, Qwen2 and Gemma
    64 / 128 / 256, Phi-2 32, StableLM-2 16); otherwise rotary stays outside on position_ids."""
    return (spec.rotary_dim // 2) % 8 == 0


class _Linear(nn.Module):
    """y = x @ W^T + b with W^T kept as the parameter (`weight_t`, [in, out]).

    nn.Linear exports as MatMul over a transposed copy of W that torch's constant folding makes
    at export time: one more copy of every weight in memory, which a 3B model cannot afford on a
    24 GB machine. Here `weight_t` is a transposed *view* of transformers' weight, written out
    one tensor at a time, and the graph multiplies by it directly.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, device=None):
        super().__init__()
        self.weight_t = nn.Parameter(torch.empty(in_features, out_features, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device)) if bias else None

    def forward(self, x):
        y = torch.matmul(x, self.weight_t)
        return y + self.bias if self.bias is not None else y


class _Layer(nn.Module):
    def __init__(self, s: DecoderSpec, device=None):
        super().__init__()
        self.s = s
        lin = lambda i, o, bias: _Linear(i, o, bias, device)  # noqa: E731
        self.input_norm = _Norm(s.norm, s.hidden_size, s.norm_eps, device)
        self.post_norm = None if s.parallel_residual else _Norm(s.norm, s.hidden_size, s.norm_eps, device)
        self.q = lin(s.hidden_size, s.num_heads * s.head_dim, s.qkv_bias)
        self.k = lin(s.hidden_size, s.num_kv_heads * s.head_dim, s.qkv_bias)
        self.v = lin(s.hidden_size, s.num_kv_heads * s.head_dim, s.qkv_bias)
        self.o = lin(s.num_heads * s.head_dim, s.hidden_size, s.o_bias)
        if s.mlp == "gated":
            self.gate = lin(s.hidden_size, s.intermediate_size, False)
            self.up = lin(s.hidden_size, s.intermediate_size, False)
            self.down = lin(s.intermediate_size, s.hidden_size, False)
        else:
            self.fc1 = lin(s.hidden_size, s.intermediate_size, True)
            self.fc2 = lin(s.intermediate_size, s.hidden_size, True)

    def mlp(self, x):
        if self.s.mlp == "gated":
            return self.down(_act(self.s.act, self.gate(x)) * self.up(x))
        return self.fc2(_act(self.s.act, self.fc1(x)))

    def rotary(self, x, cos, sin):
        # x [B,heads,T,Dh] with cos/sin [B,1,T,rotary_dim], or x [B,T,heads,Dh] with [B,T,1,rotary_dim]
        return _rotate(x, cos, sin, self.s.rotary_dim)

    def attention(self, x, cos, sin, bias, past_k, past_v):
        s = self.s
        hkv, rep, dh = s.num_kv_heads, s.num_heads // s.num_kv_heads, s.head_dim
        q = _reshape(self.q(x), 0, -1, s.num_heads, dh).transpose(1, 2)  # [B,H,T,Dh]
        k = _reshape(self.k(x), 0, -1, hkv, dh).transpose(1, 2)
        v = _reshape(self.v(x), 0, -1, hkv, dh).transpose(1, 2)
        q, k = self.rotary(q, cos, sin), self.rotary(k, cos, sin)
        # Grouped-query attention without copying K/V per query head: query head h = j*rep + r
        # (transformers' repeat_kv order) is stacked under its KV head j as [B,Hkv,rep*T,Dh].
        # Materialising the repeated K/V instead costs rep x the whole cache in memory traffic
        # per step, more than the weights themselves at batch 8.
        # The softmax scale goes on the queries (rep*T x Dh numbers) rather than on the scores
        # (rep*T x K); onnxruntime folds a constant scale of a MatMul input into the MatMul.
        qg = _reshape(q, 0, hkv, -1, dh) * (1.0 / math.sqrt(dh))
        # The past and the new positions are attended as two blocks of one softmax, so that the
        # past is read where it lies instead of being concatenated with the new keys first (a
        # copy of the whole cache per layer per step; in an int4 TinyLlama batch-8 step at 832
        # positions, Concat took 22 of 157 ms, the split attention as a whole saves about 3).
        p = past_k.shape[2]
        scores = torch.cat((torch.matmul(qg, past_k.transpose(2, 3)), torch.matmul(qg, k.transpose(2, 3))), dim=-1)
        probs = torch.softmax(scores + bias, dim=-1)  # [B,Hkv,rep*T,P+T]; bias [B,1,rep*T,P+T]
        out = torch.matmul(probs[..., :p], past_v) + torch.matmul(probs[..., p:], v)  # [B,Hkv,rep*T,Dh]
        out = _reshape(_reshape(out, 0, s.num_heads, -1, dh).transpose(1, 2), 0, -1, s.num_heads * dh)
        return self.o(out), k, v

    def shared_kv_attention(self, x, cos, sin, shared, past_k, past_v):
        """The shared_kv form: attention and the cache write in GroupQueryAttention. `shared` is
        (seqlens_k, total, cos_cache, sin_cache); with the caches the op rotates q and k itself,
        without them (None) rotary is applied here on [B,T,heads,Dh] with cos/sin [B,T,1,rotary_dim].
        Returns the output and the whole buffers (past and present in one)."""
        s = self.s
        hq, hkv, dh = s.num_heads, s.num_kv_heads, s.head_dim
        seqlens_k, total, cos_cache, sin_cache = shared
        q, k = self.q(x), self.k(x)
        if cos_cache is None:
            q = _reshape(self.rotary(_reshape(q, 0, -1, hq, dh), cos, sin), 0, -1, hq * dh)
            k = _reshape(self.rotary(_reshape(k, 0, -1, hkv, dh), cos, sin), 0, -1, hkv * dh)
        out, present_k, present_v = _GroupQueryAttention.apply(
            q, k, self.v(x), past_k, past_v, seqlens_k, total, cos_cache, sin_cache, hq, hkv, 1.0 / math.sqrt(dh))
        return self.o(out), present_k, present_v

    def forward(self, x, cos, sin, bias, past_k, past_v, shared=None):
        """`bias` is the standard form's mask; `shared` the shared_kv form's (shared_kv_attention)."""
        h = self.input_norm(x)
        if shared is None:
            attn, k, v = self.attention(h, cos, sin, bias, past_k, past_v)
        else:
            attn, k, v = self.shared_kv_attention(h, cos, sin, shared, past_k, past_v)
        if self.s.parallel_residual:
            return x + attn + self.mlp(h), k, v
        x = x + attn
        return x + self.mlp(self.post_norm(x)), k, v


class ExportDecoder(nn.Module):
    """standard: inputs_embeds, attention_mask [B,K], position_ids [B,T], past k/v per layer
    -> logits of the last position [B,V], and k/v of the T new positions per layer.
    shared_kv: inputs_embeds, [position_ids [B,T] when rotary stays outside the op,] seqlens_k [B]
    int32, total_sequence_length int32, k/v buffers [B,Hkv,C,Dh] per layer -> logits [B,V] and the
    buffers with the new positions."""

    def __init__(self, spec: DecoderSpec, device=None, form: str = "standard"):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"unknown decoder form {form!r}: known are {', '.join(FORMS)}")
        self.spec, self.form = spec, form
        self.layers = nn.ModuleList(_Layer(spec, device) for _ in range(spec.num_layers))
        self.final_norm = _Norm(spec.norm, spec.hidden_size, spec.norm_eps, device)
        self.lm_head = _Linear(spec.hidden_size, spec.vocab_size, spec.lm_head_bias, device)
        self.register_buffer("inv_freq", _inv_freq(spec), persistent=False)
        self.rotary_in_op = form == "shared_kv" and rotary_inside_attention(spec)
        if self.rotary_in_op:  # GroupQueryAttention's tables: [max positions, rotary_dim / 2]
            angles = torch.arange(spec.max_position_embeddings, device="cpu").float()[:, None] * self.inv_freq[None, :]
            self.register_buffer("cos_cache", angles.cos(), persistent=False)
            self.register_buffer("sin_cache", angles.sin(), persistent=False)

    def forward(self, *inputs):
        if self.form == "shared_kv":
            return self.shared_kv_forward(*inputs)
        return self.standard_forward(*inputs)

    def _embeds(self, inputs_embeds):
        s = self.spec
        if s.embed_scale is not None:
            return inputs_embeds * torch.tensor(s.embed_scale, dtype=inputs_embeds.dtype)
        return inputs_embeds

    def _rotary_angles(self, position_ids):
        # From the real positions of each token (padding does not shift them): [B,T,rotary_dim].
        freqs = position_ids[:, :, None].float() * self.inv_freq[None, None, :]
        return torch.cat((freqs, freqs), dim=-1)

    def shared_kv_forward(self, inputs_embeds, *inputs):
        """inputs: [position_ids,] seqlens_k, total_sequence_length, then the buffers; position_ids
        only when rotary stays outside the op."""
        x = self._embeds(inputs_embeds)
        cos = sin = cos_cache = sin_cache = None
        if self.rotary_in_op:
            cos_cache, sin_cache = self.cos_cache, self.sin_cache
        else:
            position_ids, *inputs = inputs
            emb = self._rotary_angles(position_ids)[:, :, None]  # [B,T,1,rotary_dim]
            cos, sin = emb.cos(), emb.sin()
        seqlens_k, total_sequence_length, *buffers = inputs
        shared = (seqlens_k, total_sequence_length, cos_cache, sin_cache)
        presents = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, cos, sin, None, buffers[2 * i], buffers[2 * i + 1], shared)
            presents += [k, v]
        logits = self.lm_head(self.final_norm(x[:, -1, :]))
        return (logits, *presents)

    def standard_forward(self, inputs_embeds, attention_mask, position_ids, *past):
        s = self.spec
        x = self._embeds(inputs_embeds)
        t = x.shape[1]
        k_len = attention_mask.shape[1]
        emb = self._rotary_angles(position_ids)[:, None]  # [B,1,T,rotary_dim]
        cos, sin = emb.cos(), emb.sin()
        # Key slot j is visible to new position i iff it is real (mask 1) and j <= P + i.
        q_slot = torch.arange(t, device=x.device) + (k_len - t)
        k_slot = torch.arange(k_len, device=x.device)
        allowed = (k_slot[None, :] <= q_slot[:, None])[None, None] & (attention_mask[:, None, None, :] > 0)
        bias = (1.0 - allowed.to(x.dtype)) * torch.finfo(x.dtype).min  # [B,1,T,K]
        # Repeated once per query head of a KV group, in the row order of the grouped queries
        # (r*T + t), so that every layer adds it to its [B,Hkv,rep*T,K] scores as they are.
        bias = bias.repeat(1, 1, s.num_heads // s.num_kv_heads, 1)  # [B,1,rep*T,K]
        presents = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, cos, sin, bias, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        logits = self.lm_head(self.final_norm(x[:, -1, :]))
        return (logits, *presents)


def _inv_freq(spec: DecoderSpec) -> torch.Tensor:
    """transformers' rotary frequencies (computed the same way, so positions rotate identically)."""
    exponent = torch.arange(0, spec.rotary_dim, 2, dtype=torch.int64, device="cpu").float() / spec.rotary_dim
    return 1.0 / (spec.rope_theta ** exponent)


def _map_state_dict(spec: DecoderSpec, sd: dict) -> dict:
    """transformers' parameter names -> ExportDecoder's."""
    out = {}
    prefix = "model."
    attn_o = "dense" if spec.family == "phi" else "o_proj"
    final = "final_layernorm" if spec.family == "phi" else "norm"
    for i in range(spec.num_layers):
        src, dst = f"{prefix}layers.{i}.", f"layers.{i}."
        names = {"input_layernorm": "input_norm", "self_attn.q_proj": "q", "self_attn.k_proj": "k",
                 "self_attn.v_proj": "v", f"self_attn.{attn_o}": "o"}
        if not spec.parallel_residual:
            names["post_attention_layernorm"] = "post_norm"
        if spec.mlp == "gated":
            names.update({"mlp.gate_proj": "gate", "mlp.up_proj": "up", "mlp.down_proj": "down"})
        else:
            names.update({"mlp.fc1": "fc1", "mlp.fc2": "fc2"})
        for a, b in names.items():
            for leaf in ("weight", "bias"):
                if src + a + "." + leaf in sd:
                    t = sd[src + a + "." + leaf]
                    is_linear = leaf == "weight" and not a.endswith("layernorm")
                    out[dst + b + "." + ("weight_t" if is_linear else leaf)] = t.t() if is_linear else t
    for leaf in ("weight", "bias"):
        if f"{prefix}{final}.{leaf}" in sd:
            out[f"final_norm.{leaf}"] = sd[f"{prefix}{final}.{leaf}"]
    if spec.tie_embeddings or "lm_head.weight" not in sd:
        out["lm_head.weight_t"] = sd[f"{prefix}embed_tokens.weight"].t()
    else:
        out["lm_head.weight_t"] = sd["lm_head.weight"].t()
    if spec.lm_head_bias:
        out["lm_head.bias"] = sd["lm_head.bias"]
    return out


def build_export_decoder(family: str, hf_causal_lm, form: str = "standard") -> ExportDecoder:
    """An ExportDecoder that shares (does not copy) the weights of a transformers *ForCausalLM.

    Built on the meta device and then pointed at the transformers tensors, so exporting a
    real-size model needs no second copy of its weights in memory.
    """
    spec = DecoderSpec.from_hf_config(family, hf_causal_lm.config)
    dec = ExportDecoder(spec, device="meta", form=form)
    mapped = _map_state_dict(spec, hf_causal_lm.state_dict(keep_vars=True))
    expected = {name for name, _ in dec.named_parameters()}
    missing, unexpected = sorted(expected - set(mapped)), sorted(set(mapped) - expected)
    if missing or unexpected:
        raise ValueError(f"{family}: weights do not match the decoder layout: missing {missing}, unexpected {unexpected}")
    for name, tensor in mapped.items():
        owner, leaf = dec.get_submodule(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1]
        expect = getattr(owner, leaf).shape
        if tuple(tensor.shape) != tuple(expect):
            raise ValueError(f"{family}: {name} has shape {tuple(tensor.shape)}, expected {tuple(expect)}")
        # A view (weight_t) or the tensor itself: either way no copy of the weights.
        setattr(owner, leaf, nn.Parameter(tensor.detach(), requires_grad=False))
    return dec.eval()
