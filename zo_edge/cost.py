"""Work per op, counted from the graph: multiply-accumulates of the ops that have them.

Convolutions and fully connected layers dominate a Cortex-M model's time; elementwise ops (ADD,
MEAN, activations) are counted as 0 MACs here and show up in measured instruction counts instead.
"""

from __future__ import annotations

import numpy as np


def op_macs(op, graph) -> int:
    """Multiply-accumulates of one op for one sample."""
    t = graph.tensors
    if op.opcode == "CONV_2D":
        out, f = t[op.outputs[0]], t[op.inputs[1]]
        return int(np.prod(out.shape[1:]) * np.prod(f.shape[1:]))
    if op.opcode == "DEPTHWISE_CONV_2D":
        out, f = t[op.outputs[0]], t[op.inputs[1]]
        return int(np.prod(out.shape[1:]) * f.shape[1] * f.shape[2])
    if op.opcode == "FULLY_CONNECTED":
        f = t[op.inputs[1]]
        rows = int(np.prod(t[op.inputs[0]].shape)) // f.shape[1]
        return int(rows * f.shape[0] * f.shape[1])
    return 0


def split_macs(split) -> dict:
    """MACs per sample of a SplitEngine's prefix and of one suffix pass."""
    graph = split.engine.graph
    return {"prefix": sum(op_macs(s.op, graph) for s in split.prefix),
            "suffix": sum(op_macs(s.op, graph) for s in split.suffix)}
