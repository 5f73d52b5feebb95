"""Fused loops for the engine's hottest paths, compiled with numba.

The arithmetic is exactly ``fixedpoint.multiply_by_quantized_multiplier`` (TFLM's double rounding on
magnitudes) and the kernels' own tails; what changes is that one compiled pass replaces numpy's eight
passes over int64 temporaries. ``tests/test_fixedpoint.py`` checks every function here against its
numpy reference on random and extreme values, and the TFLM tests run through these paths.

Serial on purpose: numba's parallel loops share an OpenMP runtime with scikit-learn's and ran 4×
slower than one thread in the simulator (measured); one core per process also suits pytest-xdist.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_INT32_OFFSET = np.int64(1 << 31)
_LOW32 = np.int64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def _wrap(x):
    return ((x + _INT32_OFFSET) & _LOW32) - _INT32_OFFSET


@njit(cache=True, inline="always")
def _mbqm(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier on an int64 holding an int32 (see fixedpoint's docstring)."""
    right = np.int64(0)
    if shift > 0:
        x = _wrap(x << shift)
    else:
        right = -shift
    negative = x < 0
    t = -x if negative else x
    t = (t * multiplier + (np.int64(1) << 30) - (np.int64(1) if negative else np.int64(0))) >> 31
    t = (t + ((np.int64(1) << right) >> 1)) >> right
    return -t if negative else t


@njit(cache=True)
def requantize_int8(acc, bias, multiplier, shift, zero_point, act_min, act_max, wrap):
    """acc [V, R, C] (exact integers, any numeric dtype) + bias [1 or V, C] → int8 [V, R, C]."""
    if not wrap and shift.max() <= 0:
        return _requantize_right_shifts(acc, bias, multiplier, -shift, zero_point, act_min, act_max)
    V, R, C = acc.shape
    out = np.empty((V, R, C), dtype=np.int8)
    per_variant_bias = bias.shape[0] > 1
    for i in range(V * R):
        v = i // R
        r = i - v * R
        b = v if per_variant_bias else 0
        for c in range(C):
            x = np.int64(acc[v, r, c]) + bias[b, c]
            if wrap:
                x = _wrap(x)
            y = _mbqm(x, multiplier[c], shift[c]) + zero_point
            out[v, r, c] = min(max(y, act_min), act_max)
    return out


@njit(cache=True)
def _requantize_right_shifts(acc, bias, multiplier, right, zero_point, act_min, act_max):
    """``requantize_int8`` when no sum can wrap and every shift is to the right (most layers): the same
    arithmetic on unsigned magnitudes, branch-free per element, which the compiler vectorises
    (|x| <= 2^31 and M < 2^31, so |x|·M fits 63 bits; unsigned shifts are the magnitudes' shifts)."""
    V, R, C = acc.shape
    out = np.empty((V, R, C), dtype=np.int8)
    per_variant_bias = bias.shape[0] > 1
    m = multiplier.astype(np.uint64)
    r = right.astype(np.uint64)
    half = np.empty(C, np.uint64)
    for c in range(C):
        half[c] = (np.uint64(1) << r[c]) >> np.uint64(1)
    nudge = np.uint64(1 << 30)
    for v in range(V):
        b = bias[v if per_variant_bias else 0]
        for row in range(R):
            a = acc[v, row]
            o = out[v, row]
            for c in range(C):
                x = np.int64(a[c]) + b[c]
                negative = x < 0
                t = np.uint64(-x if negative else x)
                t = (t * m[c] + nudge - np.uint64(1 if negative else 0)) >> np.uint64(31)
                t = (t + half[c]) >> r[c]
                y = (-np.int64(t) if negative else np.int64(t)) + zero_point
                o[c] = min(max(y, act_min), act_max)
    return out


@njit(cache=True)
def sum_positions(x):
    """Σ over axes 1 and 2 of an int8 [N, H, W, C] array, as int64 [N, C]."""
    N, H, W, C = x.shape
    out = np.zeros((N, C), dtype=np.int64)
    for n in range(N):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    out[n, c] += x[n, h, w, c]
    return out


@njit(cache=True)
def table_lookup_pairs(a, b, table):
    """table[(uint8(a) << 8) | uint8(b)] for two int8 arrays of one shape (flattened)."""
    n = a.size
    fa, fb = a.reshape(n), b.reshape(n)
    out = np.empty(n, dtype=table.dtype)
    for i in range(n):
        out[i] = table[((np.int64(fa[i]) & 255) << 8) | (np.int64(fb[i]) & 255)]
    return out.reshape(a.shape)


@njit(cache=True)
def table_lookup_shared(stacked, single, table, stacked_first):
    """``table_lookup_pairs`` of stacked [V, M] against single [M] shared by every row v (the pair is
    (stacked, single) when ``stacked_first``, else (single, stacked))."""
    V, M = stacked.shape
    out = np.empty((V, M), dtype=table.dtype)
    high = np.empty(M, np.int64)  # the shared byte's part of the index, made once for all V rows
    for i in range(M):
        high[i] = np.int64(single[i]) & 255 if stacked_first else (np.int64(single[i]) & 255) << 8
    shift = 8 if stacked_first else 0
    for v in range(V):
        row, o = stacked[v], out[v]
        for i in range(M):
            o[i] = table[((np.int64(row[i]) & 255) << shift) | high[i]]
    return out


@njit(cache=True)
def depthwise_accumulate(x, input_zero_point, filters, depth_multiplier, stride_h, stride_w, dilation_h, dilation_w,
                         pad_top, pad_left, out_h, out_w):
    """DEPTHWISE_CONV_2D's Σ filter · (input − zp) over each window, exact in int64 [N, out_h, out_w, C·m];
    positions outside the input contribute nothing (TFLM skips them). filters [kh, kw, C·m]."""
    N, H, W, C = x.shape
    kh, kw, out_c = filters.shape
    acc = np.zeros((N, out_h, out_w, out_c), dtype=np.int64)
    f = filters.astype(np.int64)
    for n in range(N):
        for oy in range(out_h):
            for ox in range(out_w):
                a = acc[n, oy, ox]
                for ky in range(kh):
                    iy = oy * stride_h - pad_top + ky * dilation_h
                    if iy < 0 or iy >= H:
                        continue
                    for kx in range(kw):
                        ix = ox * stride_w - pad_left + kx * dilation_w
                        if ix < 0 or ix >= W:
                            continue
                        row = x[n, iy, ix]
                        tap = f[ky, kx]
                        if depth_multiplier == 1:
                            for c in range(C):
                                a[c] += (np.int64(row[c]) - input_zero_point) * tap[c]
                        else:  # output channel c·m + j reads input channel c
                            for c in range(C):
                                v = np.int64(row[c]) - input_zero_point
                                for j in range(depth_multiplier):
                                    a[c * depth_multiplier + j] += v * tap[c * depth_multiplier + j]
    return acc
