"""AVERAGE_POOL_2D and MAX_POOL_2D for int8: TFLM's ``reference_integer_ops::AveragePool`` / ``MaxPool``.

Pooling does not rescale: the output shares the input's quantisation. The average divides the sum
of the window's in-bounds values by their count, rounding half away from zero; the maximum starts
from -128. Both clamp to the fused activation's range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.kernels import checks
from zo_edge.kernels import fixedpoint as fp
from zo_edge.kernels.windows import PADDING, Window, make_window, patches, valid_counts


@dataclass
class PoolParams:
    window: Window
    counts: np.ndarray  # [out_h, out_w] in-bounds positions per window
    act_min: int
    act_max: int


def prepare_pool(op, graph, batched) -> PoolParams:
    (x,), out = checks.operands(op, graph, 1)
    for t, role in ((x, "input"), (out, "output")):
        checks.dtype(t, role, np.int8)
        checks.rank(t, role, 4)
    n, in_h, in_w, channels = x.shape
    o = op.options
    checks.require(o.get("padding", 0) in PADDING, f"has padding {o.get('padding')}, which the schema does not define")
    filter_h, filter_w, stride_h, stride_w = checks.positive(o, "filter_height", "filter_width", "stride_h", "stride_w")
    window = make_window(o.get("padding", 0), in_h, in_w, filter_h, filter_w, stride_h, stride_w)
    checks.output_shape(out, (n, window.out_h, window.out_w, channels))
    checks.window(window, in_h, in_w, channels, filter_h * filter_w, out)
    counts = valid_counts(window, in_h, in_w)
    checks.require(counts.min() >= 1, "has a window that covers no input")
    out_scale, out_zp = checks.per_tensor_quant(out, "output")
    act_min, act_max = fp.fused_activation_range(o, out_scale, out_zp)
    return PoolParams(window, counts, act_min, act_max)


def eval_average_pool(p: PoolParams, inputs) -> np.ndarray:
    acc = patches(inputs[0].astype(np.int64), p.window, 0).sum(axis=(3, 4))
    count = p.counts[None, :, :, None]
    magnitude = (np.abs(acc) + count // 2) // count  # C's (acc ± count/2) / count, truncating
    mean = np.where(acc > 0, magnitude, -magnitude)
    return np.clip(mean, p.act_min, p.act_max).astype(np.int8)


def eval_max_pool(p: PoolParams, inputs) -> np.ndarray:
    best = patches(inputs[0], p.window, -128).max(axis=(3, 4))
    return np.clip(best, p.act_min, p.act_max).astype(np.int8)
