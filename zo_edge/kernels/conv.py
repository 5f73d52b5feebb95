"""CONV_2D and DEPTHWISE_CONV_2D: TFLM's ``ConvPerChannel`` / ``DepthwiseConvPerChannel``.

acc = Σ filter · (input − input_zp) over the window (positions outside the input contribute
nothing), + bias, rescaled per output channel by MultiplyByQuantizedMultiplier, + output_zp,
clamped to the fused activation's range. Products are summed in a float dtype chosen so that every
partial sum is an exactly representable integer, which lets numpy use BLAS and stay bit-exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.kernels import checks, fused
from zo_edge.kernels import fixedpoint as fp
from zo_edge.kernels.windows import PADDING, Window, make_window, patches


@dataclass
class ConvParams:
    window: Window
    input_zero_point: int
    output_zero_point: int
    multiplier: np.ndarray  # int64 [out_channels]
    shift: np.ndarray  # int64 [out_channels]
    act_min: int
    act_max: int
    acc_dtype: type
    accumulator_bound: int  # largest |Σ filter·input| the geometry allows
    depth_multiplier: int = 1
    pointwise: bool = False  # 1x1 kernel, stride 1, no padding


def per_channel_multipliers(input_t, filter_t, output_t, channels: int):
    """``PopulateConvolutionQuantizationParams``: in_scale · filter_scale[c] / out_scale, in double."""
    in_scale, _ = input_t.scalar_quant()
    out_scale, _ = output_t.scalar_quant()
    filter_scales = filter_t.scale.astype(np.float64)
    if len(filter_scales) == 1:
        filter_scales = np.repeat(filter_scales, channels)
    real = np.float64(in_scale) * filter_scales / np.float64(out_scale)
    return fp.quantize_multipliers(real)


def _prepare(op, graph, batched, depthwise: bool) -> ConvParams:
    (x, f, bias), out = checks.operands(op, graph, (2, 3), optional=(2,))
    for t, role in ((x, "input"), (f, "filter"), (out, "output")):
        checks.dtype(t, role, np.int8)
        checks.rank(t, role, 4)
    checks.constant_operand(batched[1], "filter")
    n, in_h, in_w, in_c = x.shape
    if depthwise:
        one, kh, kw, out_c = f.shape
        checks.require(one == 1, f"its filter {checks.describe(f)} should have shape [1, height, width, channels]")
        checks.require(out_c % in_c == 0, f"its filter's {out_c} channels are not a multiple of the input's {in_c}")
        depth_multiplier = out_c // in_c
        stated = op.options.get("depth_multiplier", 0)
        checks.require(stated in (0, depth_multiplier),
                       f"has depth_multiplier {stated}, but its filter makes it {depth_multiplier}")
    else:
        out_c, kh, kw, f_c = f.shape
        checks.require(f_c == in_c, f"grouped convolution ({in_c} input channels, filter has {f_c}) is not supported")
        depth_multiplier = 1
    checks.channel_scales(f, "filter", out_c, axis=3 if depthwise else 0)
    checks.bias(bias, out_c)
    if bias is not None:
        checks.constant_operand(batched[2], "bias")
    in_scale, in_zp = checks.per_tensor_quant(x, "input")
    out_scale, out_zp = checks.per_tensor_quant(out, "output")
    o = op.options
    checks.require(o.get("padding", 0) in PADDING, f"has padding {o.get('padding')}, which the schema does not define")
    stride_h, stride_w = checks.positive(o, "stride_h", "stride_w")
    dilation_h, dilation_w = checks.positive(o, "dilation_h_factor", "dilation_w_factor", default=1)
    window = make_window(o.get("padding", 0), in_h, in_w, kh, kw, stride_h, stride_w, dilation_h, dilation_w)
    checks.output_shape(out, (n, window.out_h, window.out_w, out_c))
    taps = kh * kw * (1 if depthwise else in_c)
    checks.window(window, in_h, in_w, in_c, taps, out)
    multiplier, shift = per_channel_multipliers(x, f, out, out_c)
    act_min, act_max = fp.fused_activation_range(o, out_scale, out_zp)
    return ConvParams(
        window=window,
        input_zero_point=in_zp,
        output_zero_point=out_zp,
        multiplier=multiplier,
        shift=shift,
        act_min=act_min,
        act_max=act_max,
        acc_dtype=fp.exact_float_dtype(taps * 255 * 128),
        accumulator_bound=taps * 255 * 128,
        depth_multiplier=depth_multiplier,
        pointwise=(kh, kw, stride_h, stride_w) == (1, 1, 1, 1),
    )


def prepare_conv(op, graph, batched) -> ConvParams:
    return _prepare(op, graph, batched, depthwise=False)


def prepare_depthwise(op, graph, batched) -> ConvParams:
    return _prepare(op, graph, batched, depthwise=True)


def requantize_accumulator(acc, bias, p) -> np.ndarray:
    """bias, per-channel rescale, output zero point, activation clamp: the tail every conv-like op shares.

    ``acc`` is [..., channels] of exact integers (a float or int dtype); with per-variant weights it is
    [variants, rows, channels] and ``bias`` [variants, channels] (see ``variant_weights``). One fused
    pass (``fused.requantize_int8``); ``requantize_accumulator_numpy`` is the same in numpy.
    """
    channels = acc.shape[-1]
    bias2 = np.zeros((1, channels), np.int64) if bias is None else bias.astype(np.int64).reshape(-1, channels)
    bias_bound = int(np.abs(bias2).max(initial=0))
    wrap = p.accumulator_bound + bias_bound >= 1 << 31  # int32 wrap-around is possible: reproduce it
    multiplier = np.ascontiguousarray(np.broadcast_to(p.multiplier, channels), dtype=np.int64)
    shift = np.ascontiguousarray(np.broadcast_to(p.shift, channels), dtype=np.int64)
    out = fused.requantize_int8(np.ascontiguousarray(acc).reshape(len(bias2), -1, channels), bias2, multiplier,
                                shift, p.output_zero_point, p.act_min, p.act_max, wrap)
    return out.reshape(acc.shape)


def requantize_accumulator_numpy(acc, bias, p) -> np.ndarray:
    """The numpy composition of ``requantize_accumulator`` (kept as its reference in the tests)."""
    acc = acc.astype(np.int64)
    bias_bound = 0
    if bias is not None:
        acc += bias.astype(np.int64)[:, None, :] if bias.ndim == 2 else bias.astype(np.int64)
        bias_bound = int(np.abs(bias.astype(np.int64)).max(initial=0))
    if p.accumulator_bound + bias_bound >= 1 << 31:
        acc = fp.wrap_int32(acc)
    scaled = fp.multiply_by_quantized_multiplier(acc, p.multiplier, p.shift) + p.output_zero_point
    return np.clip(scaled, p.act_min, p.act_max).astype(np.int8)


def variant_weights(filters, rank: int, batch: int) -> int:
    """How many weight variants a call carries: 1 for plain weights, V for weights [V, *shape].

    A learner probing V perturbed copies of a trainable tensor stacks them on a new axis 0 and the
    batch on axis 0 of the input as V groups of equal size: group v runs with variant v. This lets
    2q zeroth-order probes over a batch run as one stacked matmul instead of a Python loop.
    """
    if filters.ndim == rank:
        return 1
    variants = filters.shape[0]
    if filters.ndim != rank + 1 or batch % variants:
        raise ValueError(f"weights {filters.shape} do not split a batch of {batch} into equal variant groups")
    return variants


def eval_conv(p: ConvParams, inputs) -> np.ndarray:
    x, filters, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    offset_x = x.astype(p.acc_dtype) - p.acc_dtype(p.input_zero_point)
    v = variant_weights(filters, 4, x.shape[0])
    out_c = filters.shape[-4]
    # [V, taps, out_c]: one matmul per variant (V = 1 is the plain case)
    w = filters.reshape(v, out_c, -1).transpose(0, 2, 1).astype(p.acc_dtype)
    rows = offset_x if p.pointwise else patches(offset_x, p.window, 0)  # 1x1 stride 1: no windows
    n, oh, ow = rows.shape[:3]
    acc = rows.reshape(v, n // v * oh * ow, -1) @ w
    return requantize_accumulator(acc, bias, p).reshape(n, oh, ow, out_c)


def conv_shared(p: ConvParams, inputs, shared, stack: int) -> np.ndarray:
    """CONV_2D with one input shared by V variants of the filter or bias (``SplitEngine.run_suffix``
    with a stack): the input's windows are formed and converted once, not once per variant."""
    x, filters, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    offset_x = x.astype(p.acc_dtype) - p.acc_dtype(p.input_zero_point)
    rows = offset_x if p.pointwise else patches(offset_x, p.window, 0)
    n, oh, ow = rows.shape[:3]
    w = filters if filters.ndim == 5 else filters[None]
    out_c = w.shape[1]
    acc = (rows.reshape(n * oh * ow, -1) @ w.reshape(len(w) * out_c, -1).T.astype(p.acc_dtype))
    acc = acc.reshape(n * oh * ow, len(w), out_c).transpose(1, 0, 2)  # [variants, rows, out_c]
    if len(w) == 1 and bias is not None and bias.ndim == 2:  # only the bias varies
        acc = np.broadcast_to(acc, (stack,) + acc.shape[1:])
    return requantize_accumulator(acc, bias, p).reshape(stack * n, oh, ow, out_c)


def eval_depthwise(p: ConvParams, inputs) -> np.ndarray:
    """One compiled pass over the windows (``fused.depthwise_accumulate``: a few taps per output, where
    numpy would make a pass over the whole batch per tap); ``eval_depthwise_numpy`` is the same in numpy."""
    x, filters, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    if variant_weights(filters, 4, x.shape[0]) != 1:
        raise ValueError("DEPTHWISE_CONV_2D does not take per-variant weights (adapters are 1x1 or dense)")
    w = p.window
    _, kh, kw, out_c = filters.shape
    acc = fused.depthwise_accumulate(np.ascontiguousarray(x), p.input_zero_point,
                                     np.ascontiguousarray(filters.reshape(kh, kw, out_c)), p.depth_multiplier,
                                     w.stride_h, w.stride_w, w.dilation_h, w.dilation_w, w.pad_top, w.pad_left,
                                     w.out_h, w.out_w)
    return requantize_accumulator(acc, bias, p)


def eval_depthwise_numpy(p: ConvParams, inputs) -> np.ndarray:
    """The numpy form of ``eval_depthwise`` (a vectorised pass per tap), kept as its reference in the tests."""
    x, filters, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    offset_x = x.astype(p.acc_dtype) - p.acc_dtype(p.input_zero_point)
    windows = patches(offset_x, p.window, 0)
    n, oh, ow, kh, kw, in_c = windows.shape
    m = p.depth_multiplier
    f = filters.reshape(kh, kw, in_c * m).astype(p.acc_dtype)
    acc = np.zeros((n, oh, ow, in_c * m), dtype=p.acc_dtype)
    tap = np.empty_like(acc)
    for a in range(kh):  # a handful of taps; everything else is vectorised
        for b in range(kw):
            source = windows[:, :, :, a, b, :]
            if m > 1:  # output channel c·m + j reads input channel c
                source = np.repeat(source, m, axis=-1)
            np.multiply(source, f[a, b], out=tap)
            acc += tap
    return requantize_accumulator(acc, bias, p)
