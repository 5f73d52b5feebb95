"""SOFTMAX int8 → int8: TFLM's reference ``Softmax`` on gemmlowp fixed point.

Differences to the row maximum are scaled to Q5.26 (``PreprocessSoftmaxScaling``), exponentiated by
gemmlowp's ``exp_on_negative_values``, summed in Q12.19, inverted by ``GetReciprocal`` (a
Newton-Raphson ``one_over_one_plus_x_for_x_in_0_1``) and written as probabilities with scale 1/256,
zero point -128. Differences below ``diff_min`` give exactly -128.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zo_edge.kernels import checks
from zo_edge.kernels import fixedpoint as fp

SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12


@dataclass
class SoftmaxParams:
    input_multiplier: int
    input_left_shift: int
    diff_min: int


def prepare_softmax(op, graph, batched) -> SoftmaxParams:
    (x,), out = checks.operands(op, graph, 1)
    checks.dtype(x, "input", np.int8)
    checks.dtype(out, "output", np.int8)
    checks.min_rank(x, "input", 1)
    checks.output_shape(out, x.shape, " (its input's)")
    in_scale, _ = checks.per_tensor_quant(x, "input")
    # the kernel writes probabilities in steps of 1/256 from -128, the quantisation TFLM requires
    out_scale, out_zp = checks.per_tensor_quant(out, "output")
    checks.require(abs(out_scale - 1.0 / 256) <= 0.001 / 256 and out_zp == -128,
                   f"its output {checks.describe(out)} is not quantised with scale 1/256 and zero point -128")
    beta = float(np.float32(op.options.get("beta", 1.0)))
    real = min(beta * float(in_scale) * (1 << (31 - SCALED_DIFF_INTEGER_BITS)), (1 << 31) - 1.0)
    # PreprocessSoftmaxScaling's QuantizeMultiplierGreaterThanOne refuses (aborts on) anything else
    checks.require(real > 1.0, f"has beta {beta:g} and input scale {in_scale:g}, whose product is below 2^-26")
    multiplier, left_shift = fp.quantize_multiplier(real)
    radius = math.floor(
        1.0 * ((1 << SCALED_DIFF_INTEGER_BITS) - 1) * (1 << (31 - SCALED_DIFF_INTEGER_BITS)) / (1 << left_shift)
    )
    return SoftmaxParams(multiplier, left_shift, -radius)


def _mul(a, b):
    return fp.saturating_rounding_doubling_high_mul(a, b)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """e^a for a in [-1/4, 0), Q0.31 in and out: a Taylor series around -1/8."""
    constant_term = 1895147668  # e^(-1/8)
    constant_1_over_3 = 715827883
    x = a + (1 << 28)  # a + 1/8
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    x4_over_4 = fp.rounding_divide_by_pot(x4, 2)
    poly = fp.rounding_divide_by_pot(_mul(x4_over_4 + x3, constant_1_over_3) + x2, 1)
    return constant_term + _mul(constant_term, x + poly)


_BARREL_SHIFTER = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                   (2, 39332535), (3, 720401), (4, 242))  # e^(-2^k) in Q0.31


def exp_on_negative_values(a):
    """gemmlowp ``exp_on_negative_values`` for Q5.26 input, Q0.31 output."""
    fractional_bits = 31 - SCALED_DIFF_INTEGER_BITS
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        fp.saturating_left_shift(a_mod_quarter_minus_one_quarter, SCALED_DIFF_INTEGER_BITS)
    )
    remainder = a_mod_quarter_minus_one_quarter - a
    for exponent, multiplier in _BARREL_SHIFTER:
        if SCALED_DIFF_INTEGER_BITS > exponent:
            bit = (remainder >> (fractional_bits + exponent)) & 1
            result = np.where(bit != 0, _mul(result, multiplier), result)
    return np.where(a == 0, fp.INT32_MAX, result)


def _one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp's Newton-Raphson 1/(1+x), Q0.31 in and out, iterating in Q2.29."""
    total = a + fp.INT32_MAX
    half_denominator = np.where(total >= 0, (total + 1) // 2, -((-total + 1) // 2))  # RoundingHalfSum
    x = 1515870810 + _mul(half_denominator, -1010580540)  # 48/17 - 32/17 · d
    one_q2 = 1 << 29
    for _ in range(3):
        half_denominator_times_x = _mul(half_denominator, x)
        one_minus = one_q2 - half_denominator_times_x
        x = x + fp.saturating_left_shift(_mul(x, one_minus), 2)
    return fp.saturating_left_shift(x, 1)


def get_reciprocal(x, integer_digits: int):
    """``GetReciprocal``: (Q0.31 mantissa of 1/x, number of bits of x above 1.0)."""
    x = np.asarray(x, dtype=np.int64)
    headroom_plus_one = 32 - np.frexp(x.astype(np.float64))[1].astype(np.int64)  # CountLeadingZeros(x > 0)
    num_bits_over_unit = integer_digits - headroom_plus_one
    shifted_sum_minus_one = fp.wrap_int32(((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
    return _one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


def eval_softmax(p: SoftmaxParams, inputs) -> np.ndarray:
    x = inputs[0].astype(np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    used = diff >= p.diff_min
    scaled = fp.multiply_by_quantized_multiplier_greater_than_one(diff, p.input_multiplier, p.input_left_shift)
    exps = exp_on_negative_values(scaled)
    rescaled = fp.rounding_divide_by_pot(exps, ACCUMULATION_INTEGER_BITS)
    sum_of_exps = np.where(used, rescaled, 0).sum(axis=-1, keepdims=True)
    shifted_scale, num_bits_over_unit = get_reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS)
    unsat = fp.rounding_divide_by_pot(_mul(shifted_scale, exps), num_bits_over_unit + 31 - 8)
    out = np.clip(unsat - 128, -128, 127)
    return np.where(used, out, -128).astype(np.int8)
