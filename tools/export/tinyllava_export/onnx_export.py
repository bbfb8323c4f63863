"""Writes the four ONNX graphs of a package (see docs/model-package.md) and converts precision."""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import onnx
from onnx import numpy_helper
import torch
from torch import nn

from .decoder import ExportDecoder, build_export_decoder, is_shared_kv
from .fuse_projections import fuse_projections
from .model_parts import ModelParts

OPSET = 17


class VisionEncoder(nn.Module):
    """pixel_values -> hidden states after layer `feature_layer`, with the feature selection.

    The encoder is cut after the layer whose output is used, so the graph never computes the
    layers, post_layernorm or pooling head whose results the model throws away.
    """

    def __init__(self, parts: ModelParts):
        super().__init__()
        vm = copy.deepcopy(parts.vision.vision_model)
        n = len(vm.encoder.layers)
        keep = parts.feature_layer + n + 1 if parts.feature_layer < 0 else parts.feature_layer
        if not 0 <= keep <= n:
            raise ValueError(f"vision_feature_layer {parts.feature_layer} is out of range for {n} layers")
        vm.encoder.layers = vm.encoder.layers[:keep]
        _numeric_conv_padding(vm.embeddings.patch_embedding)
        self.embeddings = vm.embeddings
        self.pre_layrnorm = getattr(vm, "pre_layrnorm", None)  # CLIP only, and kept by the reference
        self.encoder = vm.encoder
        self.drop_first = parts.feature_select == "patch"

    def forward(self, pixel_values):
        h = self.embeddings(pixel_values)
        if self.pre_layrnorm is not None:
            h = self.pre_layrnorm(h)
        h = self.encoder(inputs_embeds=h, return_dict=True).last_hidden_state
        return h[:, 1:] if self.drop_first else h


def _numeric_conv_padding(conv: nn.Conv2d) -> None:
    """SigLIP's patch embedding says padding="valid", which torch 1.13 cannot export; it means 0."""
    if conv.padding == "valid":
        conv.padding = (0, 0)
        conv._reversed_padding_repeated_twice = [0, 0, 0, 0]


class EmbedTokens(nn.Module):
    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        self.embedding = embedding

    def forward(self, input_ids):
        return self.embedding(input_ids)


# Protobuf cannot serialise a message over 2 GiB: bigger graphs keep their weights in one
# external file beside them, `<graph>.onnx_data` (onnxruntime finds it from the graph's path).
INLINE_LIMIT = 1_800_000_000


def _tensor_bytes(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def _weight_bytes(model: onnx.ModelProto) -> int:
    return sum(_tensor_bytes(t) for t in model.graph.initializer)


def save_graph(model: onnx.ModelProto, path: Path) -> None:
    """Writes `model` inline, or with its weights in `<name>_data` when it is too big for protobuf."""
    data = path.with_name(path.name + "_data")
    if data.exists():
        data.unlink()
    if _weight_bytes(model) > INLINE_LIMIT:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def _external_location(t: onnx.TensorProto) -> str | None:
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return {e.key: e.value for e in t.external_data}["location"]


def set_external(t: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Points `t` at `length` bytes of file `location` (beside the graph) from `offset`."""
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        t.ClearField(field)
    del t.external_data[:]
    t.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value


def read_external(t: onnx.TensorProto, base: Path) -> bytes:
    info = {e.key: e.value for e in t.external_data}
    with open(base / info["location"], "rb") as f:
        f.seek(int(info.get("offset", 0)))
        return f.read(int(info["length"])) if "length" in info else f.read()


def repack_weights(model: onnx.ModelProto, path: Path, base: Path, keep: frozenset | set = frozenset()) -> None:
    """Writes `model` to `path`: inline when its weights fit protobuf, otherwise every tensor of
    1 KiB or more goes into one `<name>_data` file, one tensor at a time (loading a real-size
    graph whole to re-save it would need another copy in memory). Tensors already external in a
    file named in `keep` stay where they are (a table another graph shares); other external
    tensors are read from `base`."""
    data = path.with_name(path.name + "_data")
    movable = [t for t in model.graph.initializer if _external_location(t) not in keep]
    if sum(_tensor_bytes(t) for t in movable) <= INLINE_LIMIT:
        for t in movable:
            if _external_location(t) is not None:
                blob = read_external(t, base)
                del t.external_data[:]
                t.data_location = onnx.TensorProto.DEFAULT
                t.raw_data = blob
        if data.exists() and data.name not in keep:
            data.unlink()
        onnx.save_model(model, str(path))
        return
    partial = data.with_name(data.name + ".partial")  # `data` may be what is being read
    with open(partial, "wb") as out:
        for t in movable:
            if _external_location(t) is not None:
                blob = read_external(t, base)
            elif len(t.raw_data) >= 1024:
                blob = t.raw_data
            else:
                continue  # small tensors stay inline
            offset = out.tell()
            out.write(blob)
            set_external(t, data.name, offset, len(blob))
    os.replace(partial, data)
    onnx.save_model(model, str(path))


def _external_constants_to_initializers(model: onnx.ModelProto) -> None:
    """torch writes a large Constant (a table it folded at export time: the shared_kv decoder's
    rotary cos/sin caches) of a model over 2 GiB as external data of the node's attribute, in a
    file of its own that repack_weights does not gather; such a Constant becomes an initializer
    of the same name, which it does gather."""
    for node in list(model.graph.node):
        if node.op_type != "Constant" or [a.name for a in node.attribute] != ["value"]:
            continue
        if node.attribute[0].t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        model.graph.initializer.append(tensor)
        model.graph.node.remove(node)


def _gather_weights(raw: Path, path: Path) -> None:
    """Moves torch's export to `path`, its weights repacked when it has external ones: torch
    writes one file per tensor for models over 2 GiB."""
    model = onnx.load(str(raw), load_external_data=False)
    _external_constants_to_initializers(model)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    if not external and _weight_bytes(model) <= INLINE_LIMIT:
        shutil.move(str(raw), str(path))
        return
    repack_weights(model, path, raw.parent)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict,
            custom_opsets: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp, torch.no_grad():
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(module, args, str(raw), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True,
                          custom_opsets=custom_opsets)
        _gather_weights(raw, path)
    onnx.checker.check_model(str(path))


def decoder_io_names(num_layers: int, form: str = "standard", rotary_in_op: bool = False) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    if form == "shared_kv":
        positions = [] if rotary_in_op else ["position_ids"]
        return ["inputs_embeds", *positions, "seqlens_k", "total_sequence_length", *past], ["logits", *present]
    return ["inputs_embeds", "attention_mask", "position_ids", *past], ["logits", *present]


def export_vision(parts: ModelParts, path: Path) -> None:
    cfg = parts.vision.config
    pixels = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
    _export(VisionEncoder(parts).eval(), (pixels,), path, ["pixel_values"], ["image_features"],
            {"pixel_values": {0: "batch"}, "image_features": {0: "batch"}})


def export_connector(parts: ModelParts, path: Path) -> None:
    feats = torch.zeros(1, parts.num_image_tokens, parts.vision.config.hidden_size)
    _export(parts.connector, (feats,), path, ["image_features"], ["image_embeds"],
            {"image_features": {0: "batch", 1: "image_tokens"}, "image_embeds": {0: "batch", 1: "image_tokens"}})


def export_embed_tokens(parts: ModelParts, path: Path) -> None:
    ids = torch.zeros(1, 3, dtype=torch.long)
    _export(EmbedTokens(parts.llm.get_input_embeddings()).eval(), (ids,), path, ["input_ids"], ["inputs_embeds"],
            {"input_ids": {0: "batch", 1: "sequence"}, "inputs_embeds": {0: "batch", 1: "sequence"}})


def export_decoder(parts: ModelParts, path: Path, progress=None, form: str = "standard") -> ExportDecoder:
    dec = build_export_decoder(parts.family, parts.llm, form)
    s = dec.spec
    inputs, outputs = decoder_io_names(s.num_layers, form, dec.rotary_in_op)
    if form == "shared_kv":
        # One row (the op's PyTorch stand-in loops over rows), 3 new positions after 4 cached,
        # in a buffer of 8; the buffers' length stays symbolic ("capacity": the runtime's).
        b, t, p, capacity = 1, 3, 4, 8
        past = [torch.zeros(b, s.num_kv_heads, capacity, s.head_dim)] * (2 * s.num_layers)
        positions = () if dec.rotary_in_op else (torch.arange(p, p + t)[None],)
        args = (torch.zeros(b, t, s.hidden_size), *positions,
                torch.tensor([p + t - 1], dtype=torch.int32), torch.tensor(p + t, dtype=torch.int32), *past)
        axes = {"inputs_embeds": {0: "batch", 1: "sequence"}, "seqlens_k": {0: "batch"}, "logits": {0: "batch"}}
        if positions:
            axes["position_ids"] = {0: "batch", 1: "sequence"}
        for name in inputs[inputs.index("total_sequence_length") + 1:] + outputs[1:]:
            axes[name] = {0: "batch", 2: "capacity"}
    else:
        b, t, p = 2, 3, 4  # traced with a past so every shape stays symbolic
        past = [torch.zeros(b, s.num_kv_heads, p, s.head_dim)] * (2 * s.num_layers)
        args = (torch.zeros(b, t, s.hidden_size), torch.ones(b, p + t, dtype=torch.long),
                torch.zeros(b, t, dtype=torch.long), *past)
        axes = {"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
                "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}
        for name in inputs[3:]:
            axes[name] = {0: "batch", 2: "past_sequence"}
        for name in outputs[1:]:
            axes[name] = {0: "batch", 2: "sequence"}
    opsets = {"com.microsoft": 1} if form == "shared_kv" else None
    if progress is None:
        _export(dec, args, path, inputs, outputs, axes, opsets)
    else:
        with progress.layers(dec.layers, "tracing the decoder"):
            _export(dec, args, path, inputs, outputs, axes, opsets)
    fuse_decoder_projections(path)
    return dec


def fuse_decoder_projections(path: Path) -> None:
    """q/k/v (and fc1 where it reads the same input) and gate/up become one MatMul + Split each
    (fuse_projections.py says why), and the graph is written back the way save_graph would write
    it. A graph with external weights gets its fused weights written to a side file as they are
    made, so that none is held in memory beside the PyTorch model; repack_weights then gathers
    both files into one `<graph>_data`, a tensor at a time."""
    model = onnx.load(str(path), load_external_data=False)
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        if fuse_projections(model, path.parent):
            repack_weights(model, path, path.parent)
            onnx.checker.check_model(str(path))
        return
    side = path.with_name(path.name + "_fused")
    try:
        with open(side, "wb") as out:
            def store(array, name):
                t = numpy_helper.from_array(array, name)
                offset = out.tell()
                out.write(t.raw_data)
                set_external(t, side.name, offset, out.tell() - offset)
                return t
            fused = fuse_projections(model, path.parent, store)
        if fused:
            repack_weights(model, path, path.parent)
            onnx.checker.check_model(str(path))
    finally:
        side.unlink(missing_ok=True)


def to_fp16(path: Path) -> None:
    """fp16 weights and compute; inputs and outputs stay float32 (casts inside the graph), but
    for the KV buffers of a shared_kv decoder, which are fp16 at the graph boundary: the runtime
    binds one buffer as both past and present of GroupQueryAttention, and a Cast on either side
    would put a copy of the whole cache between them (and the CUDA kernel is fp16 only)."""
    from onnxconverter_common import float16
    model = onnx.load(str(path))
    model = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    if is_shared_kv([i.name for i in model.graph.input]):
        _kv_buffers_in_fp16(model)
    save_graph(model, path)


def _kv_buffers_in_fp16(model: onnx.ModelProto) -> None:
    """Drops the boundary Casts of the past/present tensors that keep_io_types added: they become
    fp16 inputs and outputs, read and written by GroupQueryAttention directly."""
    g = model.graph
    fp16 = onnx.TensorProto.FLOAT16
    kv_in = {i.name for i in g.input if i.name.startswith("past_key_values.")}
    kv_out = {o.name for o in g.output if o.name.startswith("present.")}
    renames, dropped = {}, []
    for node in g.node:
        if node.op_type != "Cast":
            continue
        if node.input[0] in kv_in:  # input (fp32) -> Cast -> fp16 tensor: read the input itself
            renames[node.output[0]] = node.input[0]
            dropped.append(node)
        elif node.output[0] in kv_out:  # fp16 tensor -> Cast -> output: the producer writes the output
            renames[node.input[0]] = node.output[0]
            dropped.append(node)
    if len(dropped) != len(kv_in) + len(kv_out):
        raise ValueError(f"fp16 conversion: expected one boundary Cast per KV tensor, found {len(dropped)} "
                         f"for {len(kv_in) + len(kv_out)}")
    for node in dropped:
        g.node.remove(node)
    for node in g.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
    for value in list(g.input) + list(g.output):
        if value.name in kv_in or value.name in kv_out:
            value.type.tensor_type.elem_type = fp16
    stale = [v for v in g.value_info if v.name in renames]
    for v in stale:
        g.value_info.remove(v)


ACCURACY_LEVEL = 4


def quantize_int4(path: Path, block_size: int = 32) -> None:
    """int4 weights for every MatMul with a constant weight (MatMulNBits, run by ORT's CPU provider)."""
    from onnxruntime.quantization.matmul_4bits_quantizer import MatMul4BitsQuantizer
    model = onnx.load(str(path))
    # accuracy_level 4: onnxruntime's CPU kernel quantises activations to int8 and uses integer
    # dot products (as llama.cpp's Q4_0 x Q8_0 does) instead of dequantising weights to fp32.
    quant = MatMul4BitsQuantizer(model, block_size=block_size, is_symmetric=True, accuracy_level=ACCURACY_LEVEL)
    quant.process()
    save_graph(quant.model.model, path)
