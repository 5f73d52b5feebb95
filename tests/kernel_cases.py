"""Random single-op cases, one generator per op: the engine-vs-TFLM suite and the C-kernels-vs-engine suite share them.

``tests/test_engine_ops.py`` proves the engine equal to TFLM on these cases; ``tests/test_firmware_kernels.py``
runs the same cases (and wider ones) through every C kernel path on every instruction set and compares
with the engine. Each ``*_case(rng, ...)`` returns ``(graph builder, inputs)``: a model of one op with
random quantisation (scales around 1e-6, 1e-2 and 1e3, zero points at -128 and 127, per-channel weight
scales spanning up to four decades, requantisation multipliers on both sides of 1 and some flushed to
zero), and ``BATCH`` random int8 samples per graph input (-128 and 127 always present).

``wide=True`` draws larger channel counts and maps (up to 24 channels, 12x12), which the SIMD paths of
the firmware need to see (groups of four channels, pairs of output positions, odd tails).
"""

from __future__ import annotations

import math

import numpy as np

from tflite_builder import ACTIVATIONS, GraphBuilder, log_uniform, per_channel_scales, rand_int8

BATCH = 8
ACTS = list(ACTIVATIONS)


def pick_scale(rng, regime=None) -> float:
    """A scale from one of three regimes: tiny (~1e-6), normal (1e-3..1e-1), large (~1e3)."""
    if regime is None:
        regime = rng.choice(["tiny", "normal", "normal", "large"])
    if regime == "tiny":
        return float(log_uniform(rng, 3e-7, 3e-6))
    if regime == "large":
        return float(log_uniform(rng, 3e2, 3e3))
    return float(log_uniform(rng, 1e-3, 1e-1))


def pick_zp(rng) -> int:
    r = rng.random()
    if r < 0.2:
        return -128
    if r < 0.35:
        return 127
    return int(rng.integers(-128, 128))


def pick_act(rng, out_scale: float, out_zp: int | None = None) -> str:
    """A fused activation TFLM accepts for ``out_scale``: it quantises the clamp bounds (6 for
    RELU6, 1 for RELU_N1_TO_1) and refuses models where that overflows int32. Given ``out_zp``,
    combinations whose clamp range is a single value (RELU with zero point 127, ...) are drawn
    only rarely."""
    ok = [a for a, bound in (("NONE", 0), ("RELU", 0), ("RELU6", 6.0), ("RELU_N1_TO_1", 1.0))
          if bound / out_scale < 2.0e9]
    if out_zp is not None and rng.random() < 0.9:
        def span(a):
            lo, hi = {"NONE": (None, None), "RELU": (0.0, None), "RELU6": (0.0, 6.0),
                      "RELU_N1_TO_1": (-1.0, 1.0)}[a]
            qlo = -128 if lo is None else max(-128, out_zp + round(lo / out_scale))
            qhi = 127 if hi is None else min(127, out_zp + round(hi / out_scale))
            return qhi - qlo
        ok = [a for a in ok if span(a) >= 2] or ok
    return str(rng.choice(ok))


def _left_shift(m: float) -> int:
    """TFLM QuantizeMultiplier's exponent for a positive multiplier (frexp, q rounded to 2^31)."""
    if m <= 0:
        return 0
    q, e = math.frexp(m)
    if round(q * (1 << 31)) == (1 << 31):
        e += 1
    return max(e, 0)


def safe_out_scale(out_scale: float, in_scale: float, w_scales, acc_bound: int) -> float:
    """Raises ``out_scale`` (by powers of two) until TFLM's ``acc * (1 << left_shift)`` cannot
    overflow int32 for any channel: keeps the ordinary tests clear of C undefined behaviour."""
    w_max = float(np.max(w_scales))
    while (acc_bound << _left_shift(np.float64(np.float32(in_scale)) * np.float64(np.float32(w_max))
                                   / np.float64(np.float32(out_scale)))) >= (1 << 31) - 1:
        out_scale *= 2.0
    return out_scale


def conv_scales(rng, n_out: int, k_elems: int, per_channel=True):
    """(in_scale, in_zp, w_scales, out_scale, out_zp, bias) for a conv-like op with ``k_elems``
    products per output. Multipliers mostly put the median channel's output spread near 64 LSB;
    in a fifth of the draws the largest multiplier is 1..200, in a tenth one channel's is flushed
    to zero by TFLM (< 2^-32); the per-channel spread (up to four decades) does the rest."""
    s_in = pick_scale(rng)
    zp_in = pick_zp(rng)
    w_base = pick_scale(rng)
    spread = float(rng.uniform(0.0, 4.0)) if per_channel else 0.0
    w_scales = per_channel_scales(rng, n_out if per_channel else 1, w_base, spread)
    typical = math.sqrt(k_elems) * 74.0 * 74.0
    # output spread ~64 LSB for the median channel, sometimes far off (saturating / collapsing);
    # the per-channel spread puts other channels' multipliers decades away on both sides
    shift = rng.uniform(-1.0, 1.0) if rng.random() < 0.75 else rng.uniform(-3.0, 2.0)
    s_out = s_in * w_base * typical / 64.0 * 10.0 ** shift
    r = rng.random()
    if r < 0.2:  # the largest channel multiplier in 1..200
        s_out = s_in * float(np.max(w_scales)) / 10.0 ** rng.uniform(0.0, 2.3)
    elif r < 0.3:  # one channel's multiplier below 2^-32: TFLM flushes it to zero
        w_scales[int(rng.integers(len(w_scales)))] = s_out / s_in * 10.0 ** rng.uniform(-13, -10)
    bias = rng.integers(-int(2 * typical), int(2 * typical) + 1, size=n_out).astype(np.int32)
    if rng.random() < 0.15:
        bias[:] = 0
    acc_bound = k_elems * 255 * 128 + int(np.max(np.abs(bias.astype(np.int64))))
    s_out = safe_out_scale(s_out, s_in, w_scales, acc_bound)
    return s_in, zp_in, w_scales, s_out, pick_zp(rng), bias


def rand_weights(rng, shape):
    """Full-range int8 weights with a random fraction zeroed (sparser accumulators)."""
    w = rand_int8(rng, shape)
    if rng.random() < 0.3:
        w[rng.random(shape) < 0.5] = 0
    return w


def spatial_case(rng, max_hw=9, max_k=3, max_stride=3, dilation=False):
    h, w = (int(v) for v in rng.integers(1, max_hw + 1, size=2))
    kh, kw = (int(v) for v in rng.integers(1, max_k + 1, size=2))
    stride = tuple(int(v) for v in rng.integers(1, max_stride + 1, size=2))
    dil = tuple(int(v) for v in rng.integers(1, 3, size=2)) if dilation and rng.random() < 0.5 else (1, 1)
    padding = str(rng.choice(["SAME", "VALID"]))
    if padding == "VALID":  # output must be non-empty
        kh = min(kh, h)
        kw = min(kw, w)
        dil = tuple(d if (k - 1) * d + 1 <= s else 1 for d, k, s in zip(dil, (kh, kw), (h, w)))
    return h, w, kh, kw, stride, dil, padding


# ---------------------------------------------------------------------------- single-op cases


def conv2d_case(rng, wide: bool = False):
    h, w, kh, kw, stride, dil, padding = spatial_case(rng, max_hw=12 if wide else 9, max_k=5 if wide else 3,
                                                      dilation=True)
    cin, cout = (int(rng.integers(1, 25)), int(rng.integers(1, 21))) if wide else (int(rng.integers(1, 5)),
                                                                                   int(rng.integers(1, 6)))
    per_channel = rng.random() < 0.8
    s_in, zp_in, w_scales, s_out, zp_out, bias = conv_scales(rng, cout, kh * kw * cin, per_channel)
    g = GraphBuilder()
    x = g.input([1, h, w, cin], scale=s_in, zero_point=zp_in)
    y = g.conv2d(x, rand_weights(rng, [cout, kh, kw, cin]), bias, w_scale=w_scales, stride=stride,
                 padding=padding, dilation=dil, activation=pick_act(rng, s_out, zp_out),
                 out_scale=s_out, out_zp=zp_out)
    g.output(y)
    return g, [rand_int8(rng, [BATCH, h, w, cin])]


def pointwise_case(rng, wide: bool = True):
    """A 1x1, stride-1 CONV_2D (the firmware's 1x1 path), as MobileNets and DS-CNNs use it."""
    h, w = (int(v) for v in rng.integers(1, 10, size=2))
    cin, cout = int(rng.integers(1, 33 if wide else 5)), int(rng.integers(1, 33 if wide else 6))
    s_in, zp_in, w_scales, s_out, zp_out, bias = conv_scales(rng, cout, cin, rng.random() < 0.8)
    g = GraphBuilder()
    x = g.input([1, h, w, cin], scale=s_in, zero_point=zp_in)
    g.output(g.conv2d(x, rand_weights(rng, [cout, 1, 1, cin]), bias if rng.random() < 0.9 else None,
                      w_scale=w_scales, padding=str(rng.choice(["SAME", "VALID"])),
                      activation=pick_act(rng, s_out, zp_out), out_scale=s_out, out_zp=zp_out))
    return g, [rand_int8(rng, [BATCH, h, w, cin])]


def depthwise_conv2d_case(rng, wide: bool = False):
    h, w, kh, kw, stride, dil, padding = spatial_case(rng, max_hw=12 if wide else 9, dilation=True)
    if wide and rng.random() < 0.6:  # the 3x3 path: 3x3 kernel, multiplier 1, no dilation
        kh = kw = min(3, h, w) if padding == "VALID" else 3
        dil = (1, 1)
    cin, mult = (int(rng.integers(1, 25)), 1 if rng.random() < 0.7 else int(rng.integers(2, 4))) if wide else (
        int(rng.integers(1, 5)), int(rng.integers(1, 4)))
    cout = cin * mult
    s_in, zp_in, w_scales, s_out, zp_out, bias = conv_scales(rng, cout, kh * kw, rng.random() < 0.8)
    g = GraphBuilder()
    x = g.input([1, h, w, cin], scale=s_in, zero_point=zp_in)
    y = g.depthwise_conv2d(x, rand_weights(rng, [1, kh, kw, cout]), bias, w_scale=w_scales,
                           stride=stride, padding=padding, dilation=dil, depth_multiplier=mult,
                           activation=pick_act(rng, s_out, zp_out), out_scale=s_out, out_zp=zp_out)
    g.output(y)
    return g, [rand_int8(rng, [BATCH, h, w, cin])]


def fully_connected_case(rng, wide: bool = False):
    keep = rng.random() < 0.3
    n_out = int(rng.integers(1, 40 if wide else 12))
    if keep:
        rows, n_in = int(rng.integers(1, 4)), int(rng.integers(1, 80 if wide else 24))
        in_shape = [1, rows, n_in]
    else:
        in_shape = [1] + [int(v) for v in rng.integers(1, 9 if wide else 5, size=int(rng.integers(1, 4)))]
        n_in = int(np.prod(in_shape))  # FC flattens the input to [1, n_in]
    per_channel = rng.random() < 0.5
    s_in, zp_in, w_scales, s_out, zp_out, bias = conv_scales(rng, n_out, n_in, per_channel)
    use_bias = rng.random() < 0.85
    g = GraphBuilder()
    x = g.input(in_shape, scale=s_in, zero_point=zp_in)
    wt = g.const_int8(rand_weights(rng, [n_out, n_in]), w_scales, 0, quantized_dimension=0)
    y = g.fully_connected(x, wt, bias if use_bias else None, keep_num_dims=keep,
                          activation=pick_act(rng, s_out, zp_out), out_scale=s_out, out_zp=zp_out)
    g.output(y)
    return g, [rand_int8(rng, [BATCH] + in_shape[1:])]


def _add_scales(rng):
    s1, s2 = pick_scale(rng), pick_scale(rng)
    big = max(s1, s2)
    # TFLM needs 2*max(s1, s2) / (2^20 * s_out) < 1
    s_out = big * 10.0 ** (rng.uniform(-1.0, 1.0) if rng.random() < 0.75 else rng.uniform(-4.5, 1.5))
    s_out = max(s_out, 2.0 * big / (1 << 20) * 1.01)
    return s1, s2, s_out


ADD_SHAPES = [
    ([1, 4, 5, 3], [1, 4, 5, 3]),
    ([1, 4, 5, 3], [1, 1, 1, 3]),
    ([1, 1, 1, 3], [1, 4, 5, 3]),
    ([1, 4, 1, 3], [1, 1, 5, 1]),
    ([1, 4, 5, 1], [1, 4, 5, 3]),
    ([1, 7], [1, 7]),
    ([1, 7], [1, 1]),
    ([1, 3, 6], [1, 3, 1]),
]
EQUAL_ADD_SHAPES = [s for s in ADD_SHAPES if s[0] == s[1]]
# an unfolded BatchNormalization: a per-channel constant against a feature map (and its 1-D and dense forms)
BN_SHAPES = [([1, 4, 5, 6], [6]), ([1, 4, 5, 6], [1, 1, 1, 6]), ([1, 7, 9], [9]), ([1, 11], [11]),
             ([1, 3, 4, 5], [1, 3, 1, 5])]
WIDE_ADD_SHAPES = [([1, 9, 7, 24], [1, 9, 7, 24]), ([1, 12, 7, 16], [16]), ([1, 40, 13], [13]), ([1, 300], [1, 300])]


def add_case(rng, shapes, variant=None):
    """``variant``: inputs (two graph inputs), swapped (declared in the other order), const (the second
    operand a constant), self (x + x); drawn when None."""
    sa, sb = shapes
    s1, s2, s_out = _add_scales(rng)
    variant = variant or rng.choice(["inputs", "inputs", "swapped", "const", "self"])
    g = GraphBuilder()
    if variant == "swapped":  # graph inputs declared in the other order than ADD reads them
        b = g.input(sb, scale=s2, zero_point=pick_zp(rng))
        a = g.input(sa, scale=s1, zero_point=pick_zp(rng))
    else:
        a = g.input(sa, scale=s1, zero_point=pick_zp(rng))
        if variant == "const":
            b = g.const_int8(rand_int8(rng, sb), s2, pick_zp(rng))
        elif variant == "self":  # x + x
            b = a
        else:
            b = g.input(sb, scale=s2, zero_point=pick_zp(rng))
    zp_out = pick_zp(rng)
    y = g.add(a, b, activation=pick_act(rng, s_out, zp_out), out_scale=s_out, out_zp=zp_out)
    g.output(y)
    xa, xb = rand_int8(rng, [BATCH] + sa[1:]), rand_int8(rng, [BATCH] + sb[1:])
    return g, {"inputs": [xa, xb], "swapped": [xb, xa], "const": [xa], "self": [xa]}[variant]


def _mul_scales(rng):
    s1, s2 = pick_scale(rng), pick_scale(rng)
    typical = s1 * s2 * 74.0 * 74.0 / 64.0  # the median product ~64 LSB of the output
    s_out = typical * 10.0 ** (rng.uniform(-1.0, 1.0) if rng.random() < 0.75 else rng.uniform(-4.0, 3.0))
    # QuantizeMultiplier's left shift may not overflow 255 * 255 in int32, nor the multiplier reach 2^31
    s_out = max(s_out, s1 * s2 * 2.0 ** -14, s1 * s2 / 2.0 ** 30)
    return s1, s2, s_out


def mul_case(rng, shapes, variant=None):
    """MUL with broadcasting; ``variant`` as for add_case (const: the second operand a constant, as an
    unfolded BatchNormalization's scale)."""
    sa, sb = shapes
    s1, s2, s_out = _mul_scales(rng)
    if variant is None:
        batched = len(sb) == len(sa)  # a graph input carries the batch axis
        variant = rng.choice(["inputs", "const", "const", "self"] if sa == sb else
                             ["inputs", "const", "const"] if batched else ["const"])
    g = GraphBuilder()
    a = g.input(sa, scale=s1, zero_point=pick_zp(rng))
    if variant == "const":
        b = g.const_int8(rand_int8(rng, sb), s2, pick_zp(rng))
    elif variant == "self":
        b = a
    else:
        b = g.input(sb, scale=s2, zero_point=pick_zp(rng))
    zp_out = pick_zp(rng)
    g.output(g.mul(a, b, activation=pick_act(rng, s_out, zp_out), out_scale=s_out, out_zp=zp_out))
    xa, xb = rand_int8(rng, [BATCH] + sa[1:]), rand_int8(rng, [BATCH] + sb[1:])
    return g, {"inputs": [xa, xb], "const": [xa], "self": [xa]}[variant]


def unfolded_batchnorm_case(rng, wide: bool = False):
    """MUL then ADD by per-channel constants after a ReLU'd map, as the converter writes a Keras
    BatchNormalization it cannot fold into the convolution before it."""
    shape = [1, int(rng.integers(1, 9 if wide else 5)), int(rng.integers(1, 9 if wide else 5)),
             int(rng.integers(1, 33 if wide else 7))]
    channels = [shape[-1]] if rng.random() < 0.7 else [1, 1, 1, shape[-1]]
    s_in = pick_scale(rng, "normal")
    g = GraphBuilder()
    x = g.input(shape, scale=s_in, zero_point=-128)  # a ReLU's output
    s_gamma = float(log_uniform(rng, 1e-3, 3e-2))
    s_mul = s_in * s_gamma * 128.0 * 10.0 ** rng.uniform(-1.0, 0.5) / 64.0
    m = g.mul(x, g.const_int8(rand_int8(rng, channels), s_gamma, 0), out_scale=s_mul, out_zp=pick_zp(rng))
    s_beta = float(log_uniform(rng, 1e-3, 1e-1))
    s_out = max(s_mul, s_beta) * 10.0 ** rng.uniform(-0.5, 1.0)
    s_out = max(s_out, 2.0 * max(s_mul, s_beta) / (1 << 20) * 1.01)
    zp_out = pick_zp(rng)
    g.output(g.add(m, g.const_int8(rand_int8(rng, channels), s_beta, pick_zp(rng)),
                   activation=pick_act(rng, s_out, zp_out), out_scale=s_out, out_zp=zp_out))
    return g, [rand_int8(rng, [BATCH] + shape[1:])]


def expand_dims_case(rng):
    """EXPAND_DIMS between 1-D layers, as Keras Conv1D converts: a 3-D sequence, an axis inserted (often
    at 1 or 2), and when the new axis leads, a 1 x k CONV_2D over it and a RESHAPE back to 3-D."""
    steps, features = int(rng.integers(2, 12)), int(rng.integers(1, 6))
    axis = int(rng.choice([1, 2, -2, -3]))
    convolve = axis in (1, -3) and rng.random() < 0.6
    k, cout = int(rng.integers(1, min(steps, 3) + 1)), int(rng.integers(1, 5))
    s_in, zp_in, w_scales, s_out, zp_out, bias = conv_scales(rng, cout, k * features)
    g = GraphBuilder()
    x = g.input([1, steps, features], scale=s_in, zero_point=zp_in)
    y = g.expand_dims(x, axis)
    if convolve:  # [1, 1, steps, features]: a 1 x k convolution over time
        y = g.conv2d(y, rand_weights(rng, [cout, 1, k, features]), bias, w_scale=w_scales, padding="VALID",
                     activation=pick_act(rng, s_out, zp_out), out_scale=s_out, out_zp=zp_out)
        y = g.reshape(y, [1, g.shape_of(y)[2], cout])
    g.output(y)
    return g, [rand_int8(rng, [BATCH, steps, features])]


def mul_extreme_case(rng, regimes):
    """Both input scales and the output scale each ~1e-6 or ~1e3; the output scale raised where the
    multiplier would pass 2^14 (TFLM's left shift of 255 * 255 must stay in int32)."""
    s1, s2, s_out = (pick_scale(rng, r) for r in regimes)
    s_out = max(s_out, s1 * s2 * 2.0 ** -14)
    g = GraphBuilder()
    a = g.input([1, 3, 5], scale=s1, zero_point=pick_zp(rng))
    b = g.const_int8(rand_int8(rng, [5]), s2, pick_zp(rng))
    g.output(g.mul(a, b, out_scale=s_out, out_zp=pick_zp(rng), activation=pick_act(rng, s_out)))
    return g, [rand_int8(rng, [BATCH, 3, 5])]


def add_extreme_input_ratio_case(rng, flip: bool):
    """One ADD operand's scale ~1e9 times the other's: its TFLM multiplier is flushed to zero."""
    s1, s2 = (pick_scale(rng, "tiny"), pick_scale(rng, "large"))[:: 1 if flip else -1]
    s_out = max(s1, s2) * 10.0 ** rng.uniform(-4, 1)
    g = GraphBuilder()
    a = g.input([1, 3, 4], scale=s1, zero_point=pick_zp(rng))
    b = g.input([1, 3, 4], scale=s2, zero_point=pick_zp(rng))
    g.output(g.add(a, b, out_scale=s_out, out_zp=pick_zp(rng), activation=pick_act(rng, s_out)))
    return g, [rand_int8(rng, [BATCH, 3, 4]), rand_int8(rng, [BATCH, 3, 4])]


MEAN_CASES = [
    ([1, 4, 5, 3], [1, 2], True),
    ([1, 4, 5, 3], [1, 2], False),
    ([1, 4, 5, 3], [2, 1], True),
    ([1, 4, 5, 3], [-1], False),
    ([1, 4, 5, 3], [1], True),
    ([1, 4, 5, 3], [3], True),
    ([1, 4, 5, 3], [1, 2, 3], False),
    ([1, 6, 4], [1], False),
    ([1, 6, 4], [2], True),
    ([1, 9], [1], True),
]


def mean_case(rng, layout, wide: bool = False):
    shape, axes, keep = layout
    shape = [1] + [int(rng.integers(1, 13 if wide else 8)) for _ in shape[1:]]
    s_in, zp_in = pick_scale(rng), pick_zp(rng)
    mode = rng.choice(["same", "zp", "scale"])
    if mode == "same":
        s_out, zp_out = s_in, zp_in
    elif mode == "zp":
        s_out, zp_out = s_in, int(np.clip(zp_in + rng.integers(-40, 41), -128, 127))
    else:
        s_out, zp_out = s_in * 10.0 ** rng.uniform(-1, 1), pick_zp(rng)
    g = GraphBuilder()
    x = g.input(shape, scale=s_in, zero_point=zp_in)
    g.output(g.mean(x, axes, keep_dims=keep, out_scale=s_out, out_zp=zp_out))
    return g, [rand_int8(rng, [BATCH] + shape[1:])]


def pool2d_case(rng, kind: str, global_pool: bool, wide: bool = False):
    """``kind``: average_pool2d or max_pool2d; ``global_pool``: one window over the whole map."""
    h, w, kh, kw, stride, _, padding = spatial_case(rng, max_hw=12 if wide else 9, max_k=4)
    if global_pool:  # global pooling, as a classifier head uses it
        kh, kw, stride, padding = h, w, (1, 1), "VALID"
    c = int(rng.integers(1, 25 if wide else 5))
    s, zp = pick_scale(rng), pick_zp(rng)
    g = GraphBuilder()
    x = g.input([1, h, w, c], scale=s, zero_point=zp)
    g.output(getattr(g, kind)(x, (kh, kw), stride=stride, padding=padding, activation=pick_act(rng, s, zp)))
    return g, [rand_int8(rng, [BATCH, h, w, c])]


def softmax_case(rng, layout: int, wide: bool = False):
    top = 40 if wide else 20
    shape = [[1, int(rng.integers(1, top))],
             [1, int(rng.integers(1, 4)), int(rng.integers(1, 12))],
             [1, 2, 3, int(rng.integers(1, 10))]][layout % 3]
    s_in = pick_scale(rng, rng.choice(["normal"] * 8 + ["tiny", "large"]))
    beta = 1.0 if rng.random() < 0.5 else float(log_uniform(rng, 0.05, 5.0))
    g = GraphBuilder()
    x = g.input(shape, scale=s_in, zero_point=pick_zp(rng))
    g.output(g.softmax(x, beta=beta))
    return g, [rand_int8(rng, [BATCH] + shape[1:])]


def l2norm_case(rng, layout: int, wide: bool = False):
    """L2_NORMALIZATION over the last axis of rank 2 to 4 inputs; a row at the zero point (TFLM's special case),
    a row at an extreme, and depths up to 300 (sums of squares past 2^24) appear."""
    top = 300 if wide else 40
    shape = [[1, int(rng.integers(1, top))],
             [1, int(rng.integers(1, 4)), int(rng.integers(1, top))],
             [1, 2, int(rng.integers(1, 3)), int(rng.integers(1, top))]][layout % 3]
    zero_point = pick_zp(rng)
    g = GraphBuilder()
    x = g.input(shape, scale=pick_scale(rng), zero_point=zero_point)
    g.output(g.l2_normalization(x))
    data = rand_int8(rng, [BATCH] + shape[1:])
    rows = data.reshape(-1, shape[-1])
    rows[0] = zero_point
    rows[1] = -128 if zero_point >= 0 else 127
    return g, [data]


EXTREME = [(a, b, c) for a in ("tiny", "large") for b in ("tiny", "large") for c in ("tiny", "large")]
EXTREME_OPS = ["conv2d", "depthwise_conv2d", "fully_connected"]


def extreme_scales_case(rng, op: str, regimes):
    """Input, weight and output scales each ~1e-6 or ~1e3: multipliers from ~1e-15 (flushed to zero
    by TFLM) up to the largest whose left shift cannot overflow int32 (the output scale is raised
    until then)."""
    s_in, w_base, s_out = (pick_scale(rng, r) for r in regimes)
    cin, n_out, k = 3, 4, 2
    zp_in = pick_zp(rng)
    w_scales = per_channel_scales(rng, n_out if op != "depthwise_conv2d" else cin, w_base, 2.0)
    bias = rng.integers(-5000, 5001, size=len(w_scales)).astype(np.int32)
    g = GraphBuilder()
    if op == "fully_connected":
        x = g.input([1, 12], scale=s_in, zero_point=zp_in)
        s_out = safe_out_scale(s_out, s_in, w_scales, 12 * 255 * 128 + 5000)
        y = g.fully_connected(x, rand_int8(rng, [n_out, 12]), bias, w_scale=w_scales,
                              out_scale=s_out, out_zp=pick_zp(rng), activation=pick_act(rng, s_out))
        shape = [12]
    elif op == "conv2d":
        x = g.input([1, 5, 5, cin], scale=s_in, zero_point=zp_in)
        s_out = safe_out_scale(s_out, s_in, w_scales, k * k * cin * 255 * 128 + 5000)
        y = g.conv2d(x, rand_int8(rng, [n_out, k, k, cin]), bias, w_scale=w_scales, padding="SAME",
                     out_scale=s_out, out_zp=pick_zp(rng), activation=pick_act(rng, s_out))
        shape = [5, 5, cin]
    else:
        x = g.input([1, 5, 5, cin], scale=s_in, zero_point=zp_in)
        s_out = safe_out_scale(s_out, s_in, w_scales, k * k * 255 * 128 + 5000)
        y = g.depthwise_conv2d(x, rand_int8(rng, [1, k, k, cin]), bias, w_scale=w_scales,
                               padding="VALID", out_scale=s_out, out_zp=pick_zp(rng),
                               activation=pick_act(rng, s_out))
        shape = [5, 5, cin]
    g.output(y)
    return g, [rand_int8(rng, [BATCH] + shape)]


def conv_left_shift_overflow_case(rng):
    """Multiplier 2^k (k = 8..30) with |acc| << (k + 1) overflowing int32: TFLM's
    MultiplyByQuantizedMultiplier computes ``x * (1 << left_shift)`` in int32, which wraps on every
    target we build for."""
    s_in, w = 1.0, 1.0
    s_out = 2.0 ** -int(rng.integers(8, 31))
    g = GraphBuilder()
    x = g.input([1, 4, 4, 2], scale=s_in, zero_point=pick_zp(rng))
    g.output(g.conv2d(x, rand_int8(rng, [3, 3, 3, 2]), rng.integers(-1000, 1000, 3).astype(np.int32),
                      w_scale=np.full(3, w), padding="SAME", out_scale=s_out, out_zp=pick_zp(rng)))
    return g, [rand_int8(rng, [BATCH, 4, 4, 2])]
