"""Fixed-point arithmetic of the int8 (device-mode) learners: loss, softmax, gradient scaling, updates.

Everything here is integer arithmetic that C on a Cortex-M reproduces bit for bit (the firmware
export renders the same rules; ``prng.py`` holds the random-number contract). Tables are computed
once in float64 on the host and shipped as constants, so neither side needs libm.

Units
-----
* Loss and probabilities are Q16: 1.0 nat (or probability 1) is 65536.
* Gradients and momentum are Q20 (``GRAD_BITS``), in the parameter's *float* units, so learning
  rates mean what they mean in float mode.
* A real factor is a ``Multiplier``: ``y = (x * mult + 2^(rshift-1)) >> rshift`` with 0 < mult < 2^31,
  |x| < 2^31 and 0 <= rshift <= 62, computed in int64 (round half up; ``>>`` arithmetic).

Cross-entropy over the allowed classes A, from int8 logits l with scale s (all logits share it)::

    m = max_{j in A} l_j;  S = sum_{j in A} EXP[m - l_j]         (EXP[d] = round(2^16 exp(-s d)), S >= 2^16)
    L = ln_q16(S) + ((SCALE_Q24 * (m - l_y) + 2^7) >> 8)          (SCALE_Q24 = round(s 2^24))
    p_j = ((EXP[m - l_j] << 16) + S / 2) / S   (uint64, integer division), 0 outside A

``ln_q16(S)`` = ln(S / 2^16) in Q16: e = floor(log2 S); x = S << (31 - e) (uint32, top bit set);
i = (x >> 23) & 255; f = (x >> 7) & 65535; log2 = (e << 16) + LOG2[i] + (((LOG2[i+1] - LOG2[i]) * f) >> 16)
with LOG2[i] = round(2^16 log2(1 + i/256)); ln = ((log2 - (16 << 16)) * LN2_Q16 + 2^15) >> 16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LOSS_BITS = 16
GRAD_BITS = 20  # gradients and momentum: Q20
GRAD_LIMIT = 1 << 24  # |gradient| per element saturates at 16.0, so a norm² of MAX_VECTOR elements fits int64
MAX_VECTOR = (1 << 15) - 1  # 32767 · (2^24)² < 2^63
MOMENTUM_LIMIT = 1 << 30
SR_BITS = 16  # fractional bits an update carries into stochastic rounding
LN2_Q16 = round(math.log(2) * 65536)  # 45426
LOG2_TABLE = np.array([round(65536 * math.log2(1 + i / 256)) for i in range(257)], dtype=np.int64)
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ONE_Q16 = 1 << 16  # a learning-rate schedule's factor 1.0


@dataclass(frozen=True)
class LossTables:
    """The constants of the fixed-point loss for one logits scale (exported to C as they are)."""

    exp_q16: np.ndarray  # int64 [256]: round(2^16 exp(-scale d)), d = 0..255
    scale_q24: int

    @classmethod
    def for_scale(cls, logit_scale: float) -> "LossTables":
        d = np.arange(256, dtype=np.float64)
        return cls(np.round(65536.0 * np.exp(-float(logit_scale) * d)).astype(np.int64),
                   int(round(float(logit_scale) * (1 << 24))))


def ln_q16(s: np.ndarray) -> np.ndarray:
    """ln(S / 2^16) in Q16 for integer S >= 2^16 (see the module docstring), int64, vectorised."""
    s = np.asarray(s, dtype=np.int64)
    if s.size and (s.min() < 65536 or s.max() >= 1 << 32):
        raise ValueError("ln_q16 takes 2^16 <= S < 2^32")
    e = (s[..., None] >= (np.int64(1) << np.arange(32, dtype=np.int64))).sum(axis=-1) - 1
    x = (s << (31 - e)) & 0xFFFFFFFF
    i = (x >> 23) & 255
    f = (x >> 7) & 65535
    log2 = (e << 16) + LOG2_TABLE[i] + (((LOG2_TABLE[i + 1] - LOG2_TABLE[i]) * f) >> 16)
    return ((log2 - (16 << 16)) * LN2_Q16 + (1 << 15)) >> 16


def _exp_terms(logits: np.ndarray, allowed: np.ndarray, tables: LossTables):
    """EXP[m - l_j] for allowed classes (0 elsewhere), the sum S and the max m; logits [..., C] int8."""
    l = logits.astype(np.int64)
    m = np.where(allowed, l, -1 << 20).max(axis=-1, keepdims=True)
    terms = np.where(allowed, tables.exp_q16[np.clip(m - l, 0, 255)], 0)
    return terms, terms.sum(axis=-1), m[..., 0]


def cross_entropy_q16(logits, labels, allowed, tables: LossTables) -> np.ndarray:
    """Per-sample softmax cross-entropy in Q16 over the allowed classes; logits [..., C], labels [...]."""
    terms, s, m = _exp_terms(logits, allowed, tables)
    l_y = np.take_along_axis(logits.astype(np.int64), np.asarray(labels)[..., None], axis=-1)[..., 0]
    return ln_q16(s) + ((tables.scale_q24 * (m - l_y) + (1 << 7)) >> 8)


def softmax_q16(logits, allowed, tables: LossTables) -> np.ndarray:
    """Probabilities in Q16 over the allowed classes (0 for the others), int64 [..., C]."""
    terms, s, _ = _exp_terms(logits, allowed, tables)
    s = s[..., None]
    return ((terms << 16) + (s >> 1)) // s


@dataclass(frozen=True)
class Multiplier:
    """A positive real factor per element as (mult, rshift); see the module docstring."""

    mult: np.ndarray  # int64, 0 <= mult < 2^31
    rshift: np.ndarray  # int64, 0..62

    @classmethod
    def of(cls, real) -> "Multiplier":
        real = np.atleast_1d(np.asarray(real, dtype=np.float64))
        mult = np.zeros(real.shape, dtype=np.int64)
        rshift = np.zeros(real.shape, dtype=np.int64)
        for k, r in enumerate(real.flat):  # prepared once per run, never in the hot path
            if not 0 < r < 2.0 ** 31:
                raise ValueError(f"multiplier {r} is outside (0, 2^31)")
            shift = min(62, 30 - math.frexp(r)[1] + 1)  # r * 2^shift in [2^30, 2^31)
            m = round(r * 2.0 ** shift)
            if m >= 1 << 31:
                m, shift = m >> 1, shift - 1
            if shift < 0:  # r rounds to 2^31 or more: no (mult < 2^31, rshift >= 0) represents it
                raise ValueError(f"multiplier {r} is too large")
            mult.flat[k], rshift.flat[k] = m, shift
        return cls(mult, rshift)

    def apply(self, x) -> np.ndarray:
        """round(x · real), half up, for int |x| < 2^31 (int64 result)."""
        x = np.asarray(x, dtype=np.int64)
        half = (np.int64(1) << self.rshift) >> 1
        return (x * self.mult + half) >> self.rshift


def saturate(x, low: int, high: int):
    """Clamp to [low, high] and count how many elements had to be clamped."""
    x = np.asarray(x, dtype=np.int64)
    clipped = np.clip(x, low, high)
    return clipped, int(np.count_nonzero(clipped != x))


def clip_norm(g: np.ndarray, clip: float):
    """Scale a Q20 gradient vector to L2 norm ``clip`` when it is longer (integer sqrt and division).

    g_i <- sign(g_i) · ((|g_i| · C + n/2) / n) with C = round(clip · 2^20), n = isqrt(Σ g_i²).
    """
    g = np.asarray(g, dtype=np.int64)
    if clip <= 0:
        return g, False
    c = int(round(clip * (1 << GRAD_BITS)))
    norm2 = int(np.dot(g, g))
    if norm2 <= c * c:
        return g, False
    n = math.isqrt(norm2)
    return np.sign(g) * ((np.abs(g) * c + n // 2) // n), True


def scale_q16(x, factor_q16: int) -> np.ndarray:
    """(x · f + 2^15) >> 16 for a Q16 factor 0 <= f <= 2^16 and int32 x: exactly x when f = 2^16."""
    if not 0 <= factor_q16 <= ONE_Q16:
        raise ValueError(f"a Q16 factor must be in [0, 2^16], not {factor_q16}")
    return (np.asarray(x, dtype=np.int64) * int(factor_q16) + (1 << 15)) >> 16


def momentum_q15(momentum: float) -> int:
    return int(round(momentum * 32768))


def momentum_step(v: np.ndarray, g: np.ndarray, mu_q15: int):
    """v <- mu·v + g in Q20 (PyTorch SGD without dampening), saturating at ±2^30."""
    v = ((np.asarray(v, dtype=np.int64) * mu_q15 + (1 << 14)) >> 15) + g
    return saturate(v, -MOMENTUM_LIMIT, MOMENTUM_LIMIT)
