"""L2_NORMALIZATION int8 → int8: TFLM's ``reference_integer_ops::L2Normalization``.

Per row of the last axis: the sum of squares of (x − zero point) in int32, its inverse square root as a
(Q0.31 multiplier, shift) pair from ``GetInvSqrtQuantizedMultiplierExp`` (five gemmlowp Newton-Raphson
steps on a Q3.28 value, starting from 1), then each element ``MultiplyByQuantizedMultiplier(x − zp,
multiplier, shift + 7)`` clamped to int8. The output is fixed at scale 1/128, zero point 0 (TFLM's
Prepare refuses anything else), so 1.0 reads as 127/128. A row of zeros (sum ≤ 1) gets the multiplier
2^31 − 1 with shift 0, as TFLM treats it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.kernels import checks
from zo_edge.kernels import fixedpoint as fp

OUTPUT_SCALE_BITS = 7  # the output is in steps of 1/128
MAX_RANK = 4  # TFLM's Prepare
HALF_SQRT_2_Q31 = 1518500250  # sqrt(2)/2 in Q0.31
HALF_THREE_Q28 = (1 << 28) + (1 << 27)  # 1.5 in Q3.28
ONE_Q28 = 1 << 28  # 1.0 in Q3.28


@dataclass
class L2NormParams:
    input_zero_point: int


def prepare_l2norm(op, graph, batched) -> L2NormParams:
    (x,), out = checks.operands(op, graph, 1)
    checks.dtype(x, "input", np.int8)
    checks.dtype(out, "output", np.int8)
    checks.require(1 <= len(x.shape) <= MAX_RANK, f"its input {checks.describe(x)} has rank {len(x.shape)}; TFLM "
                                                  f"normalises ranks 1 to {MAX_RANK}")
    checks.output_shape(out, x.shape, " (its input's)")
    checks.require(op.options.get("fused_activation_function", 0) == 0, "has a fused activation; TFLM allows none")
    _, zero_point = checks.per_tensor_quant(x, "input")
    scale, out_zp = checks.per_tensor_quant(out, "output")
    checks.require(float(scale) == 1.0 / 128 and out_zp == 0,
                   f"its output {checks.describe(out)} is not quantised with scale 1/128 and zero point 0")
    return L2NormParams(zero_point)


def _mul(a, b):
    return fp.saturating_rounding_doubling_high_mul(a, b)


def inv_sqrt_multiplier(sum_of_squares) -> tuple[np.ndarray, np.ndarray]:
    """``GetInvSqrtQuantizedMultiplierExp(input, kReverseShift = -1)``: (multiplier, shift) per value,
    vectorised over int64 arrays holding non-negative int32 sums."""
    x = np.asarray(sum_of_squares, dtype=np.int64).copy()
    small = x <= 1
    x = np.where(small, 2, x)  # any value > 1: the small ones are replaced below
    shift = np.full(x.shape, 11, dtype=np.int64)
    while (x >= 1 << 29).any():  # input /= 4 until below 2^29 (C division of a positive value)
        big = x >= 1 << 29
        x = np.where(big, x // 4, x)
        shift += big
    bits = np.frexp(x.astype(np.float64))[1].astype(np.int64)  # x < 2^29: exact
    max_left_shift_bits = (32 - bits) - 1  # CountLeadingZeros(x) - 1
    left_shift_bit_pairs = max_left_shift_bits // 2 - 1
    shift -= left_shift_bit_pairs
    x <<= 2 * left_shift_bit_pairs  # now in [2^27, 2^29)
    half_input = fp.rounding_divide_by_pot(x >> 1, 1)  # F3 from raw input >> 1, times 2^-1
    r = np.full(x.shape, ONE_Q28, dtype=np.int64)
    for _ in range(5):  # x <- 1.5 x - (input / 2) x^3, all F3 (Q3.28)
        x3 = fp.saturating_left_shift(_mul(_mul(r, r), r), 6)  # F9 -> F3
        r = fp.saturating_left_shift(_mul(HALF_THREE_Q28, r) - _mul(half_input, x3), 3)  # F6 -> F3
    multiplier = _mul(r, HALF_SQRT_2_Q31)  # F3 * F0 -> F3
    negative = shift < 0
    multiplier = np.where(negative, multiplier << np.where(negative, -shift, 0), multiplier)
    shift = np.where(negative, 0, shift)
    multiplier = np.where(small, fp.INT32_MAX, multiplier)
    shift = np.where(small, 0, shift)
    return multiplier, -shift  # kReverseShift: a right shift becomes a negative (left) exponent


def eval_l2norm(p: L2NormParams, inputs) -> np.ndarray:
    x = inputs[0].astype(np.int64) - p.input_zero_point
    total = fp.wrap_int32((x * x).sum(axis=-1, keepdims=True))  # int32 accumulation, as TFLM's
    multiplier, shift = inv_sqrt_multiplier(total)
    out = fp.multiply_by_quantized_multiplier(x, multiplier, shift + OUTPUT_SCALE_BITS)
    return np.clip(out, -128, 127).astype(np.int8)
