"""TFLite Micro's integer rescaling arithmetic, vectorised over numpy int64 arrays.

Every function here has a namesake in tensorflow/lite/kernels/internal (quantization_util.cc,
common.h) or gemmlowp's fixedpoint.h; the docstrings name it. Values travel as int64 arrays holding
int32 quantities, and ``wrap_int32`` reproduces two's-complement wrap-around where C code would wrap.
TFLM's default build uses double rounding (TFLITE_SINGLE_ROUNDING off), and so do we.
"""

from __future__ import annotations

import math

import numpy as np

from zo_edge.kernels.checks import InvalidOp

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def wrap_int32(x):
    """Two's-complement wrap of an int64 array to the int32 range (what int32 C arithmetic does)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def round_half_away(x):
    """``TfLiteRound`` / ``std::round``: halves round away from zero (numpy rounds them to even).

    Computed in float64, where ``|x| + 0.5`` is exact for every float32 ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """``QuantizeMultiplier``: a double as (Q0.31 multiplier, power-of-two exponent).

    Multipliers of 2^31 and more (and NaN) make TFLM's ``x * (1 << shift)`` meaningless: they come
    only from scales that do not belong together, and are refused."""
    if not 0.0 <= real_multiplier < 2.0**31:
        raise InvalidOp(f"a requantisation multiplier is {real_multiplier:g}, outside [0, 2^31): the scales do not fit together")
    if real_multiplier == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real_multiplier)
    q_fixed = int(round_half_away(mantissa * (1 << 31)))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:  # TFLM flushes multipliers below 2^-31 to zero
        shift, q_fixed = 0, 0
    return q_fixed, shift


def quantize_multipliers(real_multipliers) -> tuple[np.ndarray, np.ndarray]:
    """``quantize_multiplier`` for each element (per-channel parameters), as int64 arrays."""
    pairs = [quantize_multiplier(float(m)) for m in np.ravel(real_multipliers)]
    return (np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64))


def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul``: round(a*b / 2^31), saturating MIN*MIN."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    nudged = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))  # C division truncates
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT``: x / 2^exponent, rounding half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """``MultiplyByQuantizedMultiplier`` (double rounding); multiplier/shift broadcast per channel.

    Computed on magnitudes, which is the same arithmetic for a non-negative multiplier (all of
    QuantizeMultiplier's): SaturatingRoundingDoublingHighMul nudges by 2^30 (2^30 − 1 below zero)
    and truncates, RoundingDivideByPOT rounds half away from zero, so
    |result| = ((|x|·M + 2^30 − [x<0]) >> 31 + 2^(r−1)) >> r with the sign of x. Half the numpy
    passes of the literal form, and tested against it.
    """
    multiplier = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    x = np.asarray(x, dtype=np.int64)
    if (shift > 0).any():
        x = wrap_int32(x << np.maximum(shift, 0))
    right = np.maximum(-shift, 0)
    negative = x < 0
    t = np.abs(x)
    t *= multiplier
    t += (1 << 30)
    t -= negative
    t >>= 31
    t += (np.int64(1) << right) >> 1
    t >>= right
    np.negative(t, out=t, where=negative)
    return t


def multiply_by_quantized_multiplier_reference(x, multiplier, shift):
    """The literal TFLM composition of ``multiply_by_quantized_multiplier``, kept to test it against."""
    shift = np.asarray(shift, dtype=np.int64)
    shifted = wrap_int32(np.asarray(x, dtype=np.int64) << np.maximum(shift, 0))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), np.maximum(-shift, 0))


def multiply_by_quantized_multiplier_smaller_than_one_exp(x, multiplier, left_shift):
    """``MultiplyByQuantizedMultiplierSmallerThanOneExp`` (ADD): for a shift that is never positive
    this is the same composition as MultiplyByQuantizedMultiplier, so it shares the fast path."""
    assert np.all(np.asarray(left_shift) <= 0), "ADD multipliers are below one"
    return multiply_by_quantized_multiplier(x, multiplier, left_shift)


def multiply_by_quantized_multiplier_greater_than_one(x, multiplier, left_shift):
    """``MultiplyByQuantizedMultiplierGreaterThanOne`` (SOFTMAX input scaling)."""
    shifted = wrap_int32(np.asarray(x, dtype=np.int64) << np.int64(left_shift))
    return saturating_rounding_doubling_high_mul(shifted, multiplier)


def saturating_left_shift(x, exponent: int):
    """gemmlowp ``SaturatingRoundingMultiplyByPOT`` for a positive exponent on int32 values."""
    x = np.asarray(x, dtype=np.int64)
    threshold = (1 << (31 - exponent)) - 1
    out = x << exponent
    out = np.where(x > threshold, INT32_MAX, out)
    return np.where(x < -threshold, INT32_MIN, out)


# Fused activations as the schema numbers them (ActivationFunctionType).
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


def activation_range(activation: str, scale: float, zero_point: int, qmin: int = -128, qmax: int = 127):
    """``CalculateActivationRangeQuantized``: the clamp a fused activation becomes in int8.

    The real bounds are quantised as ``zero_point + TfLiteRound(f / scale)`` in float32 (a quotient
    beyond the int32 range, from a tiny scale, is clamped to it: the clamp to [qmin, qmax] follows).
    """

    def quantize(f: float) -> int:
        with np.errstate(over="ignore"):
            q = round_half_away(np.float32(f) / np.float32(scale))
        return zero_point + int(np.clip(q, INT32_MIN, INT32_MAX))

    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, quantize(0.0)), qmax
    if activation == "RELU6":
        return max(qmin, quantize(0.0)), min(qmax, quantize(6.0))
    if activation == "RELU_N1_TO_1":
        return max(qmin, quantize(-1.0)), min(qmax, quantize(1.0))
    raise InvalidOp(f"fused activation {activation} is not supported in int8 kernels")


def fused_activation_range(options: dict, scale: float, zero_point: int):
    """``activation_range`` of an op's ``fused_activation_function`` option."""
    code = options.get("fused_activation_function", 0)
    if code not in ACTIVATIONS:
        raise InvalidOp(f"has fused activation {code}, which the schema does not define")
    return activation_range(ACTIVATIONS[code], scale, zero_point)


def exact_float_dtype(max_abs_sum: float):
    """The cheapest float dtype whose matmul sums integers exactly (every partial sum < 2^mantissa)."""
    return np.float32 if max_abs_sum < 2**24 else np.float64
