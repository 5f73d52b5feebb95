"""Shape plumbing: RESHAPE, SHAPE, STRIDED_SLICE, PACK — no arithmetic, only data movement.

A Keras ``Flatten`` becomes SHAPE → STRIDED_SLICE → PACK → RESHAPE. Shape tensors describe one
sample (the flatbuffer's batch of 1), as in TFLM; batched activations keep their batch on axis 0 and
RESHAPE takes its per-sample output shape from the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ReshapeParams:
    batched: bool
    output_shape: tuple  # full static shape


def prepare_reshape(op, graph, batched) -> ReshapeParams:
    out = graph.tensors[op.outputs[0]]
    if batched[0] and (not out.shape or out.shape[0] != 1):
        raise ValueError(f"RESHAPE to {out.shape} moves the batch dimension; only batch-1 reshapes can be batched")
    return ReshapeParams(batched[0], tuple(out.shape))


def eval_reshape(p: ReshapeParams, inputs) -> np.ndarray:
    x = inputs[0]
    if p.batched:
        return x.reshape((x.shape[0],) + p.output_shape[1:])
    return x.reshape(p.output_shape)


@dataclass
class ShapeParams:
    shape: np.ndarray


def prepare_shape(op, graph, batched) -> ShapeParams:
    out = graph.tensors[op.outputs[0]]
    return ShapeParams(np.array(graph.tensors[op.inputs[0]].shape, dtype=out.dtype))


def eval_shape(p: ShapeParams, inputs) -> np.ndarray:
    return p.shape.copy()


@dataclass
class StridedSliceParams:
    index: tuple  # python slices / ints over the static shape
    batched: bool


def prepare_strided_slice(op, graph, batched) -> StridedSliceParams:
    x = graph.tensors[op.inputs[0]]
    begin, end, strides = (graph.tensors[i].data for i in op.inputs[1:4])
    if begin is None or end is None or strides is None:
        raise ValueError("STRIDED_SLICE with computed begin/end/strides is not supported")
    o = op.options
    if o.get("ellipsis_mask", 0) or o.get("new_axis_mask", 0):
        raise ValueError("STRIDED_SLICE with ellipsis_mask or new_axis_mask is not supported")
    index = []
    for axis in range(len(begin)):
        bit = 1 << axis
        if o.get("shrink_axis_mask", 0) & bit:
            index.append(int(begin[axis]))
        else:
            start = None if o.get("begin_mask", 0) & bit else int(begin[axis])
            stop = None if o.get("end_mask", 0) & bit else int(end[axis])
            index.append(slice(start, stop, int(strides[axis])))
    if batched[0]:
        kept = range(x.shape[0])[index[0]] if index else range(1)
        if isinstance(kept, int) or len(kept) != 1:
            raise ValueError("STRIDED_SLICE that reshapes the batch axis cannot be batched")
        index[0] = slice(None)
    return StridedSliceParams(tuple(index), batched[0])


def eval_strided_slice(p: StridedSliceParams, inputs) -> np.ndarray:
    return np.array(inputs[0][p.index])  # a copy; keeps 0-d results 0-d


@dataclass
class PackParams:
    axis: int  # axis of the static shape
    batched: bool


def prepare_pack(op, graph, batched) -> PackParams:
    rank = len(graph.tensors[op.inputs[0]].shape)
    axis = int(op.options.get("axis", 0)) % (rank + 1)
    if any(batched) and axis == 0:
        raise ValueError("PACK on axis 0 of batched activations moves the batch dimension")
    return PackParams(axis, any(batched))


def eval_pack(p: PackParams, inputs) -> np.ndarray:
    if p.batched:  # constant operands join every sample's stack
        n = max(x.shape[0] for x in inputs)
        inputs = [np.broadcast_to(x, (n,) + x.shape[1:]) for x in inputs]
    return np.stack(inputs, axis=p.axis)
