"""FULLY_CONNECTED: TFLM's ``FullyConnected`` / ``FullyConnectedPerChannel`` for int8.

acc = Σ (filter − filter_zp) · (input − input_zp) + bias, rescaled per tensor or per channel. An
input of rank > 2 is read as rows of the filter's depth (TFLM's ``batches = size / accum_depth``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.kernels import checks
from zo_edge.kernels import fixedpoint as fp
from zo_edge.kernels.conv import per_channel_multipliers, requantize_accumulator, variant_weights


@dataclass
class FullyConnectedParams:
    input_zero_point: int
    filter_zero_point: int
    output_zero_point: int
    multiplier: np.ndarray
    shift: np.ndarray
    act_min: int
    act_max: int
    acc_dtype: type
    accumulator_bound: int
    output_shape: tuple  # per-sample shape, batch dimension excluded


def prepare_fully_connected(op, graph, batched) -> FullyConnectedParams:
    (x, f, bias), out = checks.operands(op, graph, (2, 3), optional=(2,))
    for t, role in ((x, "input"), (f, "filter"), (out, "output")):
        checks.dtype(t, role, np.int8)
        checks.min_rank(t, role, 1)
    checks.rank(f, "filter", 2)
    checks.constant_operand(batched[1], "filter")
    units, depth = f.shape
    checks.channel_scales(f, "filter", units, axis=0)
    checks.bias(bias, units)
    if bias is not None:
        checks.constant_operand(batched[2], "bias")
    _, in_zp = checks.per_tensor_quant(x, "input")
    out_scale, out_zp = checks.per_tensor_quant(out, "output")
    checks.require(op.options.get("weights_format", 0) == 0, "has shuffled weights, which zo-edge does not read")
    # TFLM reads the input as rows of the filter's depth; the engine keeps the batch on axis 0
    rows, remainder = divmod(checks.elements(x.shape), depth)
    checks.require(remainder == 0, f"its input {checks.describe(x)} is not made of rows of the filter's depth {depth}")
    checks.require(checks.elements(out.shape) == rows * units and out.shape[0] == x.shape[0],
                   f"its output {checks.describe(out)} is not {rows} rows of {units} units on the input's batch axis")
    checks.macs(rows * units * depth)
    if bias is not None and len(f.scale) == 1:
        # GetQuantizedConvolutionMultipler: TFLM refuses a per-tensor bias scale far from in_scale · filter_scale
        product = float(np.float32(x.scale[0]) * np.float32(f.scale[0]))
        bias_scale = float(bias.scale[0]) if bias.is_quantized else 0.0
        checks.require(abs(product - bias_scale) / out_scale <= 0.02,
                       f"its bias scale {bias_scale:g} is not input scale × filter scale ({product:g}), as TFLM requires")
    if batched[0] and (len(out.shape) < 2 or out.shape[0] != 1):
        raise checks.InvalidOp(f"FULLY_CONNECTED output {out.shape} has no batch dimension of 1 to batch over")
    multiplier, shift = per_channel_multipliers(x, f, out, units if len(f.scale) > 1 else 1)
    act_min, act_max = fp.fused_activation_range(op.options, out_scale, out_zp)
    return FullyConnectedParams(
        input_zero_point=in_zp,
        filter_zero_point=int(f.zero_point[0]),
        output_zero_point=out_zp,
        multiplier=multiplier,
        shift=shift,
        act_min=act_min,
        act_max=act_max,
        acc_dtype=fp.exact_float_dtype(depth * 255 * 255),
        accumulator_bound=depth * 255 * 255,
        output_shape=tuple(out.shape[1:]),
    )


def eval_fully_connected(p: FullyConnectedParams, inputs) -> np.ndarray:
    x, filters, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    n = x.shape[0]
    v = variant_weights(filters, 2, n)  # per-variant weights: see conv.variant_weights
    units, depth = filters.shape[-2:]
    rows = x.reshape(v, -1, depth).astype(p.acc_dtype) - p.acc_dtype(p.input_zero_point)
    w = filters.reshape(v, units, depth).astype(p.acc_dtype) - p.acc_dtype(p.filter_zero_point)
    acc = rows @ w.transpose(0, 2, 1)
    return requantize_accumulator(acc, bias, p).reshape((n,) + p.output_shape)


def fully_connected_shared(p: FullyConnectedParams, inputs, shared, stack: int) -> np.ndarray:
    """FULLY_CONNECTED with its input shared by V variants of the filter or bias (see
    ``conv.conv_shared``): one matmul against every variant side by side."""
    x, filters, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    n = x.shape[0]
    w = filters if filters.ndim == 3 else filters[None]
    units, depth = w.shape[-2:]
    rows = x.reshape(-1, depth).astype(p.acc_dtype) - p.acc_dtype(p.input_zero_point)
    acc = rows @ (w.reshape(len(w) * units, depth).astype(p.acc_dtype) - p.acc_dtype(p.filter_zero_point)).T
    acc = acc.reshape(len(rows), len(w), units).transpose(1, 0, 2)  # [variants, rows, units]
    if len(w) == 1 and bias is not None and bias.ndim == 2:  # only the bias varies
        acc = np.broadcast_to(acc, (stack,) + acc.shape[1:])
    return requantize_accumulator(acc, bias, p).reshape((stack * n,) + p.output_shape)
