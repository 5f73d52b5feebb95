"""MEAN for int8, following TFLM's ``EvalMeanHelper`` and its three paths.

1. keep_dims, 4-D input, axes {1, 2}: ``reference_integer_ops::Mean`` — the zero-point-corrected sum
   is rescaled by in_scale/out_scale (MultiplyByQuantizedMultiplier), then divided by the element
   count rounding half away from zero.
2. input and output share scale and zero point: ``reference_ops::Mean`` — integer sum divided by the
   count with C's truncating division.
3. otherwise: ``reference_ops::QuantizedMeanOrSum`` — the zero-point-corrected sum rescaled by
   (s_in/s_out)/count folded into one integer multiplier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.kernels import fixedpoint as fp


@dataclass
class MeanParams:
    axes: tuple  # axes of the batched array
    keep_dims: bool
    path: str  # "spatial", "same-quant" or "general"
    count: int
    input_zero_point: int
    output_zero_point: int
    multiplier: int
    shift: int
    mean_multiplier: int  # multiplier / count (general path)
    mean_shift: int
    output_shape: tuple  # per-sample


def prepare_mean(op, graph, batched) -> MeanParams:
    x, axis_t, out = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]], graph.tensors[op.outputs[0]]
    rank = len(x.shape)
    axes = tuple(sorted({int(a) % rank for a in np.ravel(axis_t.data)}))
    if batched[0] and 0 in axes:
        raise ValueError("MEAN over the batch axis cannot be batched")
    in_scale, in_zp = x.scalar_quant()
    out_scale, out_zp = out.scalar_quant()
    keep_dims = bool(op.options.get("keep_dims", False))
    if keep_dims and rank == 4 and axes == (1, 2):
        path = "spatial"
    elif in_zp == out_zp and np.float32(in_scale) == np.float32(out_scale):
        path = "same-quant"
    else:
        path = "general"
    multiplier, shift = fp.quantize_multiplier(float(in_scale) / float(out_scale))
    count = int(np.prod([x.shape[a] for a in axes]))
    # QuantizedMeanOrSum folds 1/count into the multiplier: (m << k) / count with k = floor(log2 count),
    # clamped so the shift stays within MultiplyByQuantizedMultiplier's range.
    k = min(count.bit_length() - 1, 32, 31 + shift)
    mean_multiplier, mean_shift = (multiplier << k) // count, shift - k
    return MeanParams(
        axes=axes,
        keep_dims=keep_dims,
        path=path,
        count=count,
        input_zero_point=in_zp,
        output_zero_point=out_zp,
        multiplier=multiplier,
        shift=shift,
        mean_multiplier=mean_multiplier,
        mean_shift=mean_shift,
        output_shape=tuple(out.shape[1:]),
    )


def eval_mean(p: MeanParams, inputs) -> np.ndarray:
    x = inputs[0].astype(np.int64)
    n = x.shape[0]
    if p.path == "spatial":
        acc = fp.wrap_int32((x - p.input_zero_point).sum(axis=p.axes))
        acc = fp.multiply_by_quantized_multiplier(acc, p.multiplier, p.shift)
        magnitude = (np.abs(acc) + p.count // 2) // p.count
        out = np.where(acc > 0, magnitude, -magnitude) + p.output_zero_point
    elif p.path == "same-quant":
        total = x.sum(axis=p.axes)
        out = np.where(total >= 0, total // p.count, -((-total) // p.count))
    else:
        shifted_sum = fp.wrap_int32(x.sum(axis=p.axes) - p.input_zero_point * p.count)
        out = fp.multiply_by_quantized_multiplier(shifted_sum, p.mean_multiplier, p.mean_shift) + p.output_zero_point
    return np.clip(out, -128, 127).astype(np.int8).reshape((n,) + p.output_shape)
