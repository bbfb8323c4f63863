"""Fuses the projections that read one input into one MatMul followed by a Split.

Each decoder layer multiplies one normed hidden state by several weights: q, k and v (and, in
the parallel-residual families, fc1 too), then gate and up. As separate MatMuls they are separate
kernel calls, and in int4 packages separate MatMulNBits calls: 7 a layer for a Llama, of which k
and v are small (TinyLlama: 256 columns) and pay the per-call threading cost for little work
(bench/results/2026-12-03-llamacpp: 155 MatMulNBits calls a step, 65-73% of kernel time at
batch 1). One MatMul over the weights concatenated along their output columns, split afterwards,
computes every output column exactly as before (each column is its own dot product, so int4's
per-column blocks are the same too), in 4 calls a layer.

Done on the exported graph rather than in the PyTorch module, so that the pass is the same for
every family: it only looks for MatMuls sharing their first input. It runs while transformers'
model is still loaded, so it holds one group's weights at a time: each fused weight goes to
`store` as soon as it is made (the caller writes big graphs' weights straight to a file), and
the separate weights it replaces are dropped from the graph as they are read (Phi-2 fp32 would
otherwise keep another 6.6 GB beside the 11 GB model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _weight_groups(graph: onnx.GraphProto, inits: dict) -> list[list[onnx.NodeProto]]:
    """MatMul nodes by shared first input, where each second input is a 2-D weight of one dtype
    and depth, and no weight is read by anything else."""
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    by_input: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        w = inits.get(node.input[1])
        if w is None or len(w.dims) != 2 or readers[w.name] != 1:
            continue
        by_input.setdefault(node.input[0], []).append(node)
    groups = []
    for nodes in by_input.values():
        first = inits[nodes[0].input[1]]
        same = [n for n in nodes if inits[n.input[1]].dims[0] == first.dims[0]
                and inits[n.input[1]].data_type == first.data_type]
        if len(same) >= 2:
            groups.append(same)
    return groups


def fuse_projections(model: onnx.ModelProto, base: Path,
                     store: Callable[[np.ndarray, str], onnx.TensorProto] = numpy_helper.from_array) -> int:
    """Rewrites `model` in place (its external weights, if any, read from `base`); returns how
    many MatMuls it removed. Each fused weight becomes the initializer `store(array, name)`
    returns (by default inline); the caller writes the graph out."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    groups = _weight_groups(graph, inits)
    if not groups:
        return 0
    replaced: dict[str, list[onnx.NodeProto]] = {}  # first node's output -> the nodes replacing it
    dropped: set[str] = set()  # outputs of the other nodes of a group
    removed_weights: set[str] = set()
    new_inits = []
    for i, nodes in enumerate(groups):
        weights = [inits[n.input[1]] for n in nodes]
        arrays = [numpy_helper.to_array(w, str(base)) for w in weights]
        for w in weights:  # replaced: its bytes need not stay in memory until the graph is written
            w.ClearField("raw_data")
        fused = store(np.concatenate(arrays, axis=1), f"fused_projection_{i}.weight")
        sizes = numpy_helper.from_array(np.array([a.shape[1] for a in arrays], dtype=np.int64),
                                        f"fused_projection_{i}.split")
        del arrays
        new_inits += [fused, sizes]
        out = f"fused_projection_{i}.output"
        matmul = helper.make_node("MatMul", [nodes[0].input[0], fused.name], [out], name=f"fused_projection_{i}")
        # Split along the last axis gives back exactly the outputs the separate MatMuls had, so
        # every reader (bias Adds, reshapes into heads) is unchanged.
        split = helper.make_node("Split", [out, sizes.name], [n.output[0] for n in nodes], axis=-1,
                                 name=f"fused_projection_{i}.split")
        replaced[nodes[0].output[0]] = [matmul, split]
        dropped.update(n.output[0] for n in nodes[1:])
        removed_weights.update(w.name for w in weights)
    # The fused pair takes the place of the group's first node: every node of a group reads the
    # same input, so it is available there, and every reader of an output comes after its node.
    order = []
    for node in graph.node:
        if node.op_type == "MatMul" and node.output[0] in replaced:
            order += replaced[node.output[0]]
        elif not (node.op_type == "MatMul" and node.output[0] in dropped):
            order.append(node)
    del graph.node[:]
    graph.node.extend(order)
    kept = [t for t in graph.initializer if t.name not in removed_weights]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    return sum(len(n) - 1 for n in groups)
