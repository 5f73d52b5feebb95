"""AVERAGE_POOL_2D and MAX_POOL_2D for int8: TFLM's ``reference_integer_ops::AveragePool`` / ``MaxPool``.

Pooling does not rescale: the output shares the input's quantisation. The average divides the sum
of the window's in-bounds values by their count, rounding half away from zero; the maximum starts
from -128. Both clamp to the fused activation's range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.kernels import fixedpoint as fp
from zo_edge.kernels.windows import Window, make_window, patches, valid_counts


@dataclass
class PoolParams:
    window: Window
    counts: np.ndarray  # [out_h, out_w] in-bounds positions per window
    act_min: int
    act_max: int


def prepare_pool(op, graph, batched) -> PoolParams:
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    _, in_h, in_w, _ = x.shape
    o = op.options
    window = make_window(o["padding"], in_h, in_w, o["filter_height"], o["filter_width"], o["stride_h"], o["stride_w"])
    out_scale, out_zp = out.scalar_quant()
    act_min, act_max = fp.activation_range(fp.ACTIVATIONS[o["fused_activation_function"]], out_scale, out_zp)
    return PoolParams(window, valid_counts(window, in_h, in_w), act_min, act_max)


def eval_average_pool(p: PoolParams, inputs) -> np.ndarray:
    acc = patches(inputs[0].astype(np.int64), p.window, 0).sum(axis=(3, 4))
    count = p.counts[None, :, :, None]
    magnitude = (np.abs(acc) + count // 2) // count  # C's (acc ± count/2) / count, truncating
    mean = np.where(acc > 0, magnitude, -magnitude)
    return np.clip(mean, p.act_min, p.act_max).astype(np.int8)


def eval_max_pool(p: PoolParams, inputs) -> np.ndarray:
    best = patches(inputs[0], p.window, -128).max(axis=(3, 4))
    return np.clip(best, p.act_min, p.act_max).astype(np.int8)
