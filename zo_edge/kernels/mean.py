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

from zo_edge.kernels import fixedpoint as fp
from zo_edge.kernels import fused


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
    x, axis_t, out = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]], graph.tensors[op.outputs[0]]
    rank = len(x.shape)
    axes = tuple(sorted({int(a) % rank for a in np.ravel(axis_t.data)}))
    if batched[0] and 0 in axes:
        raise ValueError("MEAN over the batch axis cannot be batched")
    in_scale, in_zp = x.scalar_quant()
    out_scale, out_zp = out.scalar_quant()
    count = int(np.prod([x.shape[a] for a in axes]))
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
