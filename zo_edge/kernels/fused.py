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
