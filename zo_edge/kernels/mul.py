"""MUL for int8: TFLM's ``MulElementwise`` / ``BroadcastMul4DSlow`` with ``CalculateOpDataMul``'s parameters.

(input1 + offset1) * (input2 + offset2), exact in int32, rescaled by one MultiplyByQuantizedMultiplier
(input1_scale * input2_scale / output_scale in double from the float32 scales, any shift), plus the
output zero point, clamped to the fused activation. A Keras BatchNormalization that cannot fold into
the layer before it (a ReLU in between) converts to MUL and ADD by per-channel constants.

As for ADD, the output is a pure function of the two int8 inputs: ``prepare`` evaluates the
arithmetic for all 256 x 256 pairs once and ``eval_mul`` looks them up (``add.pair_table_lookup``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.kernels import checks
from zo_edge.kernels import fixedpoint as fp
from zo_edge.kernels.add import all_pairs, check_broadcast, pair_table_lookup


@dataclass
class MulParams:
    input1_zero_point: int
    input2_zero_point: int
    output_zero_point: int
    output_multiplier: int
    output_shift: int
    act_min: int
    act_max: int
    table: np.ndarray | None = None  # int8 [65536]: output for (uint8(a) << 8) | uint8(b)


def prepare_mul(op, graph, batched) -> MulParams:
    a, b, out = check_broadcast(op, graph, batched)
    s1, z1 = checks.per_tensor_quant(a, "first input")
    s2, z2 = checks.per_tensor_quant(b, "second input")
    so, zo = checks.per_tensor_quant(out, "output")
    real = float(np.float32(s1)) * float(np.float32(s2)) / float(np.float32(so))
    multiplier, shift = fp.quantize_multiplier(real)
    act_min, act_max = fp.fused_activation_range(op.options, so, zo)
    p = MulParams(z1, z2, zo, multiplier, shift, act_min, act_max)
    p.table = mul_arithmetic(p, all_pairs())
    return p


def eval_mul(p: MulParams, inputs) -> np.ndarray:
    return pair_table_lookup(p.table, inputs)


def mul_arithmetic(p: MulParams, inputs) -> np.ndarray:
    """TFLM's arithmetic, element by element (what the table holds)."""
    product = (inputs[0].astype(np.int64) - p.input1_zero_point) * (inputs[1].astype(np.int64) - p.input2_zero_point)
    out = fp.multiply_by_quantized_multiplier(product, p.output_multiplier, p.output_shift)
    return np.clip(out + p.output_zero_point, p.act_min, p.act_max).astype(np.int8)
