"""Shape plumbing: RESHAPE, SHAPE, STRIDED_SLICE, PACK — no arithmetic, only data movement.

A Keras ``Flatten`` becomes SHAPE → STRIDED_SLICE → PACK → RESHAPE. Shape tensors describe one
sample (the flatbuffer's batch of 1), as in TFLM; batched activations keep their batch on axis 0 and
RESHAPE takes its per-sample output shape from the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.kernels import checks


@dataclass
class ReshapeParams:
    batched: bool
    output_shape: tuple  # full static shape


def _same_dtype(x, out) -> None:
    checks.require(out.dtype == x.dtype, f"its output {checks.describe(out)} does not have its input's type")


def prepare_reshape(op, graph, batched) -> ReshapeParams:
    (x, _), out = checks.operands(op, graph, (1, 2), optional=(1,))  # the shape input repeats the output's shape
    _same_dtype(x, out)
    checks.require(checks.elements(out.shape) == checks.elements(x.shape),
                   f"its output {checks.describe(out)} does not hold the {checks.elements(x.shape)} elements of its input")
    if batched[0] and (not out.shape or out.shape[0] != 1):
        raise checks.InvalidOp(f"RESHAPE to {out.shape} moves the batch dimension; only batch-1 reshapes can be batched")
    return ReshapeParams(batched[0], tuple(out.shape))


def eval_reshape(p: ReshapeParams, inputs) -> np.ndarray:
    x = inputs[0]
    if p.batched:
        return x.reshape((x.shape[0],) + p.output_shape[1:])
    return x.reshape(p.output_shape)


def prepare_expand_dims(op, graph, batched) -> ReshapeParams:
    """EXPAND_DIMS (Keras Conv1D and 1-D pooling insert an axis before a 2-D op): the input's bytes under
    the output's shape, which is the input's with a 1 inserted, as RESHAPE."""
    (x, axis), out = checks.operands(op, graph, 2)
    checks.require(axis.is_constant and axis.data.size == 1, f"its axis {checks.describe(axis)} is not one constant")
    rank = len(x.shape) + 1
    at = int(axis.data.reshape(-1)[0])
    checks.require(-rank <= at < rank, f"inserts axis {at} into a rank-{rank} output")
    at %= rank
    checks.output_shape(out, x.shape[:at] + (1,) + x.shape[at:], f" (its input's with axis {at} inserted)")
    _same_dtype(x, out)
    return ReshapeParams(batched[0], tuple(out.shape))


@dataclass
class ShapeParams:
    shape: np.ndarray


def prepare_shape(op, graph, batched) -> ShapeParams:
    (x,), out = checks.operands(op, graph, 1)
    checks.dtype(out, "output", np.int32, np.int64)
    checks.output_shape(out, (len(x.shape),), " (its input's rank)")
    return ShapeParams(np.array(x.shape, dtype=out.dtype))


def eval_shape(p: ShapeParams, inputs) -> np.ndarray:
    return p.shape.copy()


@dataclass
class StridedSliceParams:
    index: tuple  # python slices / ints over the static shape
    batched: bool


def prepare_strided_slice(op, graph, batched) -> StridedSliceParams:
    (x, *bounds), out = checks.operands(op, graph, 4)
    _same_dtype(x, out)
    for t, role in zip(bounds, ("begin", "end", "strides")):
        checks.require(t.is_constant, "STRIDED_SLICE with computed begin/end/strides is not supported")
        checks.require(t.dtype in (np.int32, np.int64) and t.shape == bounds[0].shape and len(t.shape) == 1
                       and t.shape[0] <= len(x.shape),
                       f"its {role} {checks.describe(t)} is not one integer per axis of its input {checks.describe(x)}")
    begin, end, strides = (t.data for t in bounds)
    o = op.options
    if o.get("ellipsis_mask", 0) or o.get("new_axis_mask", 0) or o.get("offset", False):
        raise checks.InvalidOp("STRIDED_SLICE with ellipsis_mask, new_axis_mask or offset is not supported")
    checks.require(np.all(strides != 0), f"has a stride of 0 ({strides.tolist()})")
    index, kept_shape = [], []
    for axis, size in enumerate(x.shape):
        bit = 1 << axis
        if axis >= len(begin):
            kept_shape.append(size)
        elif o.get("shrink_axis_mask", 0) & bit:
            checks.require(-size <= begin[axis] < size, f"takes element {begin[axis]} of axis {axis}, which has {size}")
            index.append(int(begin[axis]))
        else:
            start = None if o.get("begin_mask", 0) & bit else int(begin[axis])
            stop = None if o.get("end_mask", 0) & bit else int(end[axis])
            index.append(slice(start, stop, int(strides[axis])))
            kept_shape.append(len(range(size)[index[-1]]))
    checks.output_shape(out, kept_shape, " (the slice's)")
    if batched[0]:
        kept = range(x.shape[0])[index[0]] if index else range(1)
        if isinstance(kept, int) or len(kept) != 1:
            raise checks.InvalidOp("STRIDED_SLICE that reshapes the batch axis cannot be batched")
        index[0] = slice(None)
    return StridedSliceParams(tuple(index), batched[0])


def eval_strided_slice(p: StridedSliceParams, inputs) -> np.ndarray:
    return np.array(inputs[0][p.index])  # a copy; keeps 0-d results 0-d


@dataclass
class PackParams:
    axis: int  # axis of the static shape
    batched: bool


def prepare_pack(op, graph, batched) -> PackParams:
    values, out = checks.operands(op, graph, (1, max(1, len(op.inputs))))
    first = values[0]
    for t in values:
        checks.require(t.shape == first.shape and t.dtype == first.dtype,
                       f"packs {checks.describe(t)} with {checks.describe(first)}; they must match")
    _same_dtype(first, out)
    checks.require(op.options.get("values_count", len(values)) == len(values),
                   f"says it packs {op.options.get('values_count')} values, but has {len(values)} inputs")
    rank = len(first.shape)
    stated = int(op.options.get("axis", 0))
    checks.require(-rank - 1 <= stated <= rank, f"packs along axis {stated} of a rank-{rank + 1} output")
    axis = stated % (rank + 1)
    checks.output_shape(out, first.shape[:axis] + (len(values),) + first.shape[axis:])
    if any(batched) and axis == 0:
        raise checks.InvalidOp("PACK on axis 0 of batched activations moves the batch dimension")
    return PackParams(axis, any(batched))


def eval_pack(p: PackParams, inputs) -> np.ndarray:
    if p.batched:  # constant operands join every sample's stack
        n = max(x.shape[0] for x in inputs)
        inputs = [np.broadcast_to(x, (n,) + x.shape[1:]) for x in inputs]
    return np.stack(inputs, axis=p.axis)
