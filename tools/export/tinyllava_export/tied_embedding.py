"""A tied LM head stored once.

Qwen2 and Gemma (and so the published TinyLLaVA-Qwen2-0.5B and Gemma-2.4B) tie the LM head to
the token embedding: logits = h @ E^T. Exported as is, the package holds E twice, once in
embed_tokens.onnx (the Gather's table) and once, transposed, in the decoder (the head's MatMul):
545 MB of a Qwen2-0.5B fp32 package.

After precision conversion, when the decoder's head weight is bit for bit E^T, the table moves
into one external-data file beside the embedding graph, `<embed graph>_data`, and the decoder's
head becomes Gemm(h, E, transB=1) over an initializer that points at the same bytes of that file
(onnxruntime resolves external data from each graph's own directory, and both graphs lie in
`onnx/`). The head's input is the last position only ([B, D]), which Gemm requires.

int4 packages keep both: the head is a MatMulNBits there, no longer E^T.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .onnx_export import read_external, repack_weights, set_external

SHARED_NAME = "lm_head.tied_embedding"


def _external_info(t: onnx.TensorProto) -> dict:
    return {e.key: e.value for e in t.external_data}


def _tensor_array(t: onnx.TensorProto, base: Path) -> np.ndarray:
    """The tensor's values, read from its external file when it has one (no other tensor loaded)."""
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return numpy_helper.to_array(t)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
    return np.frombuffer(read_external(t, base), dtype=dtype).reshape(tuple(t.dims))


def _embedding_table(model: onnx.ModelProto) -> onnx.TensorProto:
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[0] in inits:
            return inits[node.input[0]]
    raise ValueError("embed_tokens graph: no Gather over an initializer")


def _head_matmul(model: onnx.ModelProto, vocab: int, hidden: int):
    """The decoder's LM head: the MatMul by a constant [hidden, vocab] weight."""
    inits = {t.name: t for t in model.graph.initializer}
    found = [(n, inits[n.input[1]]) for n in model.graph.node
             if n.op_type == "MatMul" and n.input[1] in inits and tuple(inits[n.input[1]].dims) == (hidden, vocab)]
    return found[0] if len(found) == 1 else (None, None)


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def share_tied_embedding(onnx_dir: Path, embed_file: str, decoder_file: str) -> bool:
    """Stores a tied head's table once (see the module's doc). Returns whether it did."""
    embed_path, dec_path = onnx_dir / embed_file, onnx_dir / decoder_file
    embed = onnx.load(str(embed_path), load_external_data=False)
    table = _embedding_table(embed)
    vocab, hidden = (int(d) for d in table.dims)
    dec = onnx.load(str(dec_path), load_external_data=False)
    node, head = _head_matmul(dec, vocab, hidden)
    if node is None or head.data_type != table.data_type:
        return False
    e = _tensor_array(table, onnx_dir)
    if not np.array_equal(_bits(np.ascontiguousarray(_tensor_array(head, onnx_dir).T)), _bits(e)):
        return False  # an untied head (or one quantised differently): both stay

    # The table goes to the embedding graph's own data file (written anew: the graph is small
    # enough to be inline otherwise, and any other large tensor of it follows into the file).
    data_name = embed_path.name + "_data"
    if table.data_location == onnx.TensorProto.EXTERNAL:
        info = _external_info(table)
        data_name, offset, length = info["location"], int(info.get("offset", 0)), int(info["length"])
    else:
        blob = e.tobytes()
        with open(onnx_dir / data_name, "wb") as f:
            f.write(blob)
        offset, length = 0, len(blob)
        set_external(table, data_name, offset, length)
        onnx.save_model(embed, str(embed_path))

    # The decoder: Gemm(h, E, transB=1) over an initializer pointing at those bytes.
    shared = onnx.TensorProto(name=SHARED_NAME, data_type=table.data_type, dims=table.dims)
    set_external(shared, data_name, offset, length)
    gemm = onnx.helper.make_node("Gemm", [node.input[0], SHARED_NAME], list(node.output), name=node.name or "lm_head",
                                 transB=1)
    nodes = list(dec.graph.node)
    nodes[nodes.index(node)] = gemm
    del dec.graph.node[:]
    dec.graph.node.extend(nodes)
    dec.graph.initializer.remove(head)
    dec.graph.initializer.append(shared)
    repack_weights(dec, dec_path, onnx_dir, keep={data_name})
    onnx.checker.check_model(str(dec_path))
    return True


def stored_bytes(onnx_dir: Path) -> int:
    """Bytes of every graph and data file of a package's onnx/ folder."""
    return sum(os.path.getsize(p) for p in onnx_dir.iterdir() if p.is_file())
