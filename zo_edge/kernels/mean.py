"""MEAN for int8: TFLM's ``reference_ops::QuantizedMeanOrSum`` (integer path).

TFLM runs every int8 MEAN — keep_dims or not, any axes, same or different quantisation — through
one integer path (checked against the interpreter by tests/test_engine_ops.py): the zero-point-
corrected sum over the axes is rescaled by (in_scale / out_scale) / count, with 1/count folded into
the multiplier as ``(multiplier << k) / count``, k = floor(log2 count), clamped so the final shift
stays within MultiplyByQuantizedMultiplier's range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.kernels import checks, fused
from zo_edge.kernels import fixedpoint as fp


@dataclass
class MeanParams:
    axes: tuple  # reduced axes of the batched array
    count: int  # elements reduced into each output
    input_zero_point: int
    output_zero_point: int
    multiplier: int  # (in_scale / out_scale) / count
    shift: int
    output_shape: tuple  # per sample


def prepare_mean(op, graph, batched) -> MeanParams:
    (x, axis_t), out = checks.operands(op, graph, 2)
    checks.dtype(x, "input", np.int8)
    checks.dtype(out, "output", np.int8)
    checks.min_rank(x, "input", 1)
    checks.require(axis_t.is_constant and axis_t.dtype in (np.int32, np.int64) and len(axis_t.shape) <= 1,
                   f"its axes {checks.describe(axis_t)} are not a constant integer list")
    rank = len(x.shape)
    stated = [int(a) for a in np.ravel(axis_t.data)]
    checks.require(all(-rank <= a < rank for a in stated), f"reduces axes {stated} of a rank-{rank} input")
    axes = tuple(sorted({a % rank for a in stated}))
    checks.require(0 not in axes, "MEAN over the batch axis is not supported")
    keep = op.options.get("keep_dims", False)
    checks.output_shape(out, [1 if a in axes else d for a, d in enumerate(x.shape) if keep or a not in axes])
    in_scale, in_zp = checks.per_tensor_quant(x, "input")
    out_scale, out_zp = checks.per_tensor_quant(out, "output")
    count = checks.elements(x.shape[a] for a in axes)
    multiplier, shift = fp.quantize_multiplier(float(in_scale) / float(out_scale))
    k = min(count.bit_length() - 1, 32, 31 + shift)
    return MeanParams(axes, count, in_zp, out_zp, (multiplier << k) // count, shift - k, tuple(out.shape[1:]))


def eval_mean(p: MeanParams, inputs) -> np.ndarray:
    x = inputs[0]
    if x.ndim == 4 and p.axes == (1, 2) and x.dtype == np.int8:  # global average pooling: one fused pass
        total = fused.sum_positions(np.ascontiguousarray(x))
    else:
        total = x.astype(np.int64).sum(axis=p.axes)
    shifted_sum = fp.wrap_int32(total - p.input_zero_point * p.count)
    out = fp.multiply_by_quantized_multiplier(shifted_sum, p.multiplier, p.shift) + p.output_zero_point
    return np.clip(out, -128, 127).astype(np.int8).reshape((x.shape[0],) + p.output_shape)
