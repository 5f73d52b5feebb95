"""Engine against the TFLM interpreter, byte for byte: the check behind ``zo-edge verify``."""

from __future__ import annotations

import numpy as np

from zo_edge.engine import Engine
from zo_edge.qgraph import QGraph
from zo_edge.tflm import TflmOracle


def random_inputs(graph: QGraph, n: int, seed: int = 0) -> list[np.ndarray]:
    """n samples per graph input, uniform over the input dtype's whole range (both ends included)."""
    rng = np.random.default_rng(seed)
    out = []
    for index in graph.inputs:
        t = graph.tensors[index]
        shape = (n,) + tuple(t.shape[1:])
        if np.issubdtype(t.dtype, np.integer):
            info = np.iinfo(t.dtype)
            out.append(rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=t.dtype))
        else:
            out.append(rng.standard_normal(shape).astype(t.dtype))
    return out


def _diff(a: np.ndarray, b: np.ndarray) -> int:
    if a.shape != b.shape or a.dtype != b.dtype:
        return max(a.nbytes, b.nbytes)  # a shape or type mismatch differs everywhere
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return int(np.count_nonzero(a.view(np.uint8) != b.view(np.uint8)))


def compare_with_tflm(graph: QGraph, inputs, intermediates: bool = False) -> dict:
    """Run both on the same inputs; count differing bytes over the outputs (and every activation).

    Returns the JSON object ``zo-edge verify --json`` prints: ``differing_bytes`` and ``total_bytes``
    over the graph outputs, and ``per_tensor`` rows (name, index, kind, differing_bytes, total_bytes).
    """
    engine = Engine(graph)
    inputs = engine.check_inputs(inputs)
    watched = []
    if intermediates:
        watched = [
            t.index for t in graph.tensors
            if not t.is_constant and t.index not in graph.outputs and t.index not in graph.inputs
            and graph.producer(t.index) is not None
        ]
    ours, ours_captured = engine.run(inputs, capture=watched)
    theirs, theirs_captured = TflmOracle(graph.model_bytes, intermediates=intermediates).run(inputs, tensor_indices=watched)
    rows = []
    for index, a, b in zip(graph.outputs, ours, theirs):
        rows.append(_row(graph, index, "output", a, b))
    for index in watched:
        a = ours_captured[index]
        b = theirs_captured[index]
        if index not in engine.batched:  # shape tensors describe one sample; TFLM gives one per sample
            a = np.broadcast_to(a, b.shape)
        elif b.size == a.size and b.shape != a.shape:  # TFLM's per-sample [1, ...] stacked to [N, 1, ...]
            b = b.reshape(a.shape)
        rows.append(_row(graph, index, "intermediate", a, b))
    outputs = [r for r in rows if r["kind"] == "output"]
    return {
        "model": graph.source,
        "samples": int(inputs[0].shape[0]),
        "differing_bytes": sum(r["differing_bytes"] for r in outputs),
        "total_bytes": sum(r["total_bytes"] for r in outputs),
        "per_tensor": rows,
    }


def _row(graph, index, kind, a, b) -> dict:
    return {
        "name": graph.tensors[index].name,
        "index": index,
        "kind": kind,
        "differing_bytes": _diff(a, b),
        "total_bytes": int(a.nbytes),
    }
