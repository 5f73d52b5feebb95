"""QUANTIZE and DEQUANTIZE: the converter's float interface and int8 → int8 requantisation.

float → int8: ``AffineQuantize`` — round(x / scale) in float32, half away from zero, + zero point.
int8 → int8: ``Requantize`` — MultiplyByQuantizedMultiplier by in_scale/out_scale.
int8 → float: ``Dequantize`` — (x − zero point) · scale in double, stored as float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.kernels import checks
from zo_edge.kernels import fixedpoint as fp

_LIMITS = {np.int8: (-128, 127), np.int16: (-32768, 32767), np.uint8: (0, 255)}


@dataclass
class QuantizeParams:
    input_is_float: bool
    input_zero_point: int
    output_zero_point: int
    scale: float  # output scale as a double (float input)
    multiplier: int
    shift: int
    out_dtype: type


def prepare_quantize(op, graph, batched) -> QuantizeParams:
    (x,), out = checks.operands(op, graph, 1)
    checks.dtype(out, "output", *_LIMITS)
    checks.dtype(x, "input", np.float32, *_LIMITS)
    checks.output_shape(out, x.shape, " (its input's)")
    out_scale, out_zp = checks.per_tensor_quant(out, "output")
    if x.dtype == np.float32:
        return QuantizeParams(True, 0, out_zp, float(out_scale), 0, 0, out.dtype)
    in_scale, in_zp = checks.per_tensor_quant(x, "input")
    multiplier, shift = fp.quantize_multiplier(float(in_scale) / float(out_scale))
    return QuantizeParams(False, in_zp, out_zp, float(out_scale), multiplier, shift, out.dtype)


def affine_quantize(x, scale: float, zero_point: int, dtype=np.int8) -> np.ndarray:
    """``AffineQuantize``: float32 values to integers, as the QUANTIZE op and a device's input stage do."""
    lo, hi = _LIMITS[dtype]
    with np.errstate(over="ignore"):  # a quotient beyond float32 clamps like any other out-of-range value
        q = fp.round_half_away(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point  # float32 divide
    return np.clip(q, lo, hi).astype(dtype)


def eval_quantize(p: QuantizeParams, inputs) -> np.ndarray:
    x = inputs[0]
    if p.input_is_float:
        return affine_quantize(x, p.scale, p.output_zero_point, p.out_dtype)
    lo, hi = _LIMITS[p.out_dtype]
    q = fp.multiply_by_quantized_multiplier(x.astype(np.int64) - p.input_zero_point, p.multiplier, p.shift)
    return np.clip(q + p.output_zero_point, lo, hi).astype(p.out_dtype)


@dataclass
class DequantizeParams:
    scale: float
    zero_point: int


def prepare_dequantize(op, graph, batched) -> DequantizeParams:
    (x,), out = checks.operands(op, graph, 1)
    checks.dtype(x, "input", *_LIMITS)
    checks.dtype(out, "output", np.float32)
    checks.output_shape(out, x.shape, " (its input's)")
    scale, zero_point = checks.per_tensor_quant(x, "input")
    return DequantizeParams(float(scale), zero_point)


def eval_dequantize(p: DequantizeParams, inputs) -> np.ndarray:
    return (p.scale * (inputs[0].astype(np.int64) - p.zero_point)).astype(np.float32)
