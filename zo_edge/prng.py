"""Counter-based random numbers shared by the simulator and the generated C firmware.

Every random value is a pure function of integer coordinates, never of a hidden state: the device
regenerates a perturbation from its coordinates instead of storing it (MeZO's seed trick), and the
numpy simulator draws a whole tensor in one vectorised call, yet both produce the same bits.

The generator (the contract; C firmware must reproduce it bit for bit)
---------------------------------------------------------------------
All arithmetic is on unsigned 32-bit integers, modulo 2^32: xor, logical right shift and
multiplication only — no 64-bit types, no floats, so any C99 compiler for any Cortex-M gives the
same answer.

``mix`` is Chris Wellons' "lowbias32" integer hash, a bijection on 32-bit words with very low
avalanche bias::

    static uint32_t zo_mix(uint32_t x) {
        x ^= x >> 16; x *= 0x7feb352dU;
        x ^= x >> 15; x *= 0x846ca68bU;
        x ^= x >> 16;
        return x;
    }

The hash of the coordinates (seed, stream, step, query, index), each a uint32, chains ``mix``
over them, starting from the golden-ratio constant so that all-zero coordinates do not map to
mix(0) == 0::

    uint32_t key = zo_mix(zo_mix(0x9e3779b9U ^ seed) ^ stream);   /* once per (seed, stream) */
    uint32_t h   = zo_mix(zo_mix(zo_mix(key ^ step) ^ query) ^ index);

``stream`` is folded into the seed this way (it is the second link of the chain) so that
independent uses — perturbation signs, stochastic rounding, ... — never share values, whatever
the seed. Because every link is a bijection, changing any single coordinate always changes h. A
device caches ``key`` and ``mix(mix(key ^ step) ^ query)``, so a tensor costs one ``zo_mix``
per element.

Values derived from h (C for ``int32_t x``, ``uint32_t h``)::

    rademacher:       int8_t z = (int8_t)(1 - 2 * (int32_t)(h >> 31));   /* top bit: 0 -> +1, 1 -> -1 */
    uniform_bits(b):  uint32_t r = b ? h >> (32 - b) : 0u;                /* top b bits, 0 <= b <= 32 */
    stochastic_round_shift(x, s), 1 <= s <= 31, with r = uniform_bits(s):
        int32_t y = (x >> s) + (int32_t)((((uint32_t)x & ((1u << s) - 1u)) + r) >> s);

The last line is floor((x + r) / 2^s) computed without overflow: x = 2^s * floor(x / 2^s) + low, and
low + r < 2^(s+1), so the carry is 1 with probability low / 2^s: unbiased, E[y] = x / 2^s. It
needs ``>>`` on a negative int32 to be arithmetic (true for gcc and arm-none-eabi-gcc; C99 leaves it
implementation-defined). s = 0 returns x unchanged.

Coordinates are reduced modulo 2^32 on the Python side, which is what a C cast to uint32_t does.
Streams used by the toolkit are named below; a new independent use takes a new stream number.
"""

from __future__ import annotations

import numpy as np

# Named streams: one per independent use, so e.g. rounding noise never equals the perturbation signs.
STREAM_PERTURBATION = 0
STREAM_ROUNDING = 1

_GOLDEN = np.uint32(0x9E3779B9)
_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)


def _u32(value, name: str) -> np.ndarray:
    """An integer (array) as uint32, wrapping modulo 2^32 like a C cast; floats are a bug."""
    a = np.asarray(value)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer or integer array, got dtype {a.dtype}")
    return a.astype(np.uint32)


def _scalar(value, name: str) -> np.uint32:
    a = _u32(value, name)
    if a.ndim != 0:
        raise ValueError(f"{name} must be a scalar here, got shape {a.shape}")
    return a


def mix32(x) -> np.ndarray:
    """lowbias32 on a uint32 array (see the module docstring); returns a new array."""
    # ndim >= 1 so numpy wraps the multiplications silently (scalar math would warn on overflow).
    shape = np.shape(x)
    x = np.atleast_1d(_u32(x, "x"))  # astype made a copy: safe to update in place
    x ^= x >> 16
    x *= _M1
    x ^= x >> 15
    x *= _M2
    x ^= x >> 16
    return x.reshape(shape)


def hash32(seed, step, query, index, stream=0) -> np.ndarray:
    """h(seed, stream, step, query, index) as uint32, broadcasting over any array arguments.

    Scalar prefixes are hashed once and broadcast, so a long index vector costs one mix per element,
    as on the device.
    """
    coords = [_u32(v, n) for v, n in
              ((seed, "seed"), (stream, "stream"), (step, "step"), (query, "query"), (index, "index"))]
    h = np.array(_GOLDEN, ndmin=1)
    for c in coords:
        h = mix32(h ^ c)
    return h.reshape(np.broadcast_shapes(*(c.shape for c in coords)))


def _draw(seed, step, query, size: int, stream) -> np.ndarray:
    """Hashes for indices 0..size-1, shape query.shape + (size,)."""
    q = _u32(query, "query")[..., None]
    return hash32(_scalar(seed, "seed"), _scalar(step, "step"), q,
                  np.arange(size, dtype=np.uint32), _scalar(stream, "stream"))


def rademacher(seed, step, query, size: int, stream=STREAM_PERTURBATION) -> np.ndarray:
    """±1 as int8 for indices 0..size-1; shape [size], or query.shape + [size] for a query array.

    The sign is the top bit of h (the best-mixed bit of lowbias32): 0 -> +1, 1 -> -1.
    """
    h = _draw(seed, step, query, size, stream)
    return (1 - 2 * (h >> 31).astype(np.int8)).astype(np.int8)


def uniform_bits(seed, step, query, size: int, bits: int, stream) -> np.ndarray:
    """Uniform uint32 values in [0, 2^bits) for indices 0..size-1: the top ``bits`` bits of h.

    ``bits`` = 0 gives zeros (the C side must guard it: a shift by 32 is undefined in C).
    """
    if not 0 <= bits <= 32:
        raise ValueError(f"bits must be in 0..32, got {bits}")
    h = _draw(seed, step, query, size, stream)
    return h >> np.uint32(32 - bits) if bits else np.zeros_like(h)


def stochastic_round_shift(x, shift: int, seed, step, query, stream) -> np.ndarray:
    """x / 2^shift rounded stochastically and without bias, as int64 with x's shape.

    Exactly floor((x + r) / 2^shift) with r = uniform_bits(seed, step, query, x.size, shift, stream)
    drawn for index = the element's flat (C-order) position in x. Computed as in the docstring's C
    expression, so it cannot overflow; exact (no noise) when the low ``shift`` bits of x are zero.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"x must be an integer array, got dtype {x.dtype}")
    if not 0 <= shift <= 31:  # 31: the device works on int32
        raise ValueError(f"shift must be in 0..31, got {shift}")
    x = x.astype(np.int64)
    if shift == 0:
        return x
    r = uniform_bits(seed, step, query, x.size, shift, stream).reshape(x.shape).astype(np.int64)
    low = x & ((1 << shift) - 1)  # two's-complement low bits, also for negative x
    return (x >> shift) + ((low + r) >> shift)
