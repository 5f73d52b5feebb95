"""Promises of the counter-based generator (zo_edge/prng.py): a pure, well-mixed function of its
coordinates that a plain integer re-implementation — and the C firmware — reproduce bit for bit."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from zo_edge import prng

M32 = 0xFFFFFFFF


# --- an independent re-implementation from the docstring, in plain Python ints --------------------

def ref_mix(x: int) -> int:
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def ref_hash(seed: int, step: int, query: int, index: int, stream: int = 0) -> int:
    h = 0x9E3779B9
    for c in (seed, stream, step, query, index):
        h = ref_mix(h ^ (c & M32))
    return h


# (seed, step, query, index, stream) -> h, computed once with ref_hash and frozen here.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0, 0), 0x0EAA7511),
    ((1, 0, 0, 0, 0), 0x62181B8D),
    ((0, 1, 0, 0, 0), 0x7D2B5EA8),
    ((0, 0, 1, 0, 0), 0xF3AA8044),
    ((0, 0, 0, 1, 0), 0x6078A4C7),
    ((0, 0, 0, 0, 1), 0x1FDB3517),
    ((42, 1000, 3, 12345, 1), 0x7B929E88),
    ((M32, M32, M32, M32, M32), 0x8CBF1C0F),
]


@pytest.mark.parametrize("coords,expected", KNOWN_ANSWERS)
def test_known_answers_match_plain_integer_reference(coords, expected):
    seed, step, query, index, stream = coords
    assert ref_hash(*coords[:4], stream=stream) == expected
    assert int(prng.hash32(seed, step, query, index, stream=stream)) == expected


def test_numpy_equals_reference_on_random_coordinates():
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 2**32, size=(200, 5), dtype=np.uint64)
    got = prng.hash32(coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3], stream=coords[:, 4])
    want = [ref_hash(*map(int, c[:4]), stream=int(c[4])) for c in coords]
    assert got.dtype == np.uint32
    assert got.tolist() == want


def test_coordinates_wrap_modulo_2_32_like_a_c_cast():
    assert int(prng.hash32(-1, 2**32 + 5, 0, 0)) == ref_hash(M32, 5, 0, 0)


def test_floats_are_rejected():
    with pytest.raises(TypeError):
        prng.hash32(0, 0, 0, np.arange(3.0))


# --- determinism, independence, vectorisation -------------------------------------------------------

def test_deterministic():
    a = prng.rademacher(7, 3, 2, 1000)
    b = prng.rademacher(7, 3, 2, 1000)
    assert np.array_equal(a, b)
    assert np.array_equal(prng.uniform_bits(7, 3, 2, 100, 12, 1), prng.uniform_bits(7, 3, 2, 100, 12, 1))


@pytest.mark.parametrize("which", ["seed", "step", "query", "stream"])
def test_changing_any_one_coordinate_changes_the_stream(which):
    base = dict(seed=5, step=9, query=2, stream=0)
    other = dict(base, **{which: base[which] + 1})
    a = prng.hash32(base["seed"], base["step"], base["query"], np.arange(4096), stream=base["stream"])
    b = prng.hash32(other["seed"], other["step"], other["query"], np.arange(4096), stream=other["stream"])
    # Each link of the chain is a bijection, so every single element differs, not just most.
    assert np.all(a != b)


def test_changing_the_index_changes_the_value():
    h = prng.hash32(5, 9, 2, np.arange(1 << 16))
    assert len(np.unique(h)) == 1 << 16  # mix is a bijection of the index


def test_hash_broadcasts_and_equals_scalar_calls():
    seeds, steps = np.arange(3)[:, None, None], np.arange(4)[None, :, None]
    idx = np.arange(5)[None, None, :]
    h = prng.hash32(seeds, steps, 7, idx, stream=1)
    assert h.shape == (3, 4, 5)
    for s in range(3):
        for t in range(4):
            for i in range(5):
                assert h[s, t, i] == ref_hash(s, t, 7, i, stream=1)
    assert prng.hash32(1, 2, 3, 4).shape == ()


def test_rademacher_over_a_query_array_equals_one_call_per_query():
    queries = np.array([0, 1, 5, 31])
    z = prng.rademacher(11, 4, queries, 257, stream=2)
    assert z.shape == (4, 257) and z.dtype == np.int8
    for row, q in zip(z, queries):
        assert np.array_equal(row, prng.rademacher(11, 4, int(q), 257, stream=2))
    # and each value is the top bit of the reference hash
    assert [int(v) for v in z[2, :20]] == [1 - 2 * (ref_hash(11, 4, 5, i, 2) >> 31) for i in range(20)]


def test_uniform_bits_are_the_top_bits_and_in_range():
    for bits in (1, 7, 16, 31, 32):
        r = prng.uniform_bits(3, 1, 0, 1000, bits, prng.STREAM_ROUNDING)
        assert r.dtype == np.uint32 and int(r.max()) < 2**bits
        assert [int(v) for v in r[:10]] == [ref_hash(3, 1, 0, i, 1) >> (32 - bits) for i in range(10)]
    assert not prng.uniform_bits(3, 1, 0, 10, 0, 1).any()


def test_streams_are_distinct():
    a = prng.rademacher(1, 1, 0, 100_000, stream=prng.STREAM_PERTURBATION)
    b = prng.rademacher(1, 1, 0, 100_000, stream=prng.STREAM_ROUNDING)
    assert abs(np.mean(a.astype(np.int64) * b)) < 5 / np.sqrt(a.size)


# --- statistical quality (bounds at 5 sigma: a correct generator fails about once in 10^6 runs) ---

N = 1_000_000


def test_rademacher_is_balanced():
    z = prng.rademacher(0, 0, 0, N)
    assert set(np.unique(z).tolist()) == {-1, 1}
    assert abs(z.astype(np.int64).mean()) < 5 / np.sqrt(N)


@pytest.mark.parametrize("axis", ["index", "step", "query", "seed"])
def test_every_bit_is_balanced_along_every_axis(axis):
    n = np.arange(N // 4, dtype=np.uint32)  # a quarter: 32 bits x 4 axes stay fast
    args = dict(seed=0, step=0, query=0, index=0)
    args[axis] = n
    h = prng.hash32(**args)
    ones = ((h[:, None] >> np.arange(32, dtype=np.uint32)) & 1).mean(axis=0)
    assert np.all(np.abs(ones - 0.5) < 5 * 0.5 / np.sqrt(n.size)), ones


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.astype(np.int64) * b))  # ±1 values: mean product is the correlation


def test_no_correlation_between_adjacent_queries_steps_seeds_and_indices():
    n = 200_000
    bound = 5 / np.sqrt(n)
    z = prng.rademacher(0, 0, np.arange(8), n)
    for q in range(7):
        assert abs(_corr(z[q], z[q + 1])) < bound
    for step in range(4):
        assert abs(_corr(prng.rademacher(0, step, 0, n), prng.rademacher(0, step + 1, 0, n))) < bound
    for seed in range(4):
        assert abs(_corr(prng.rademacher(seed, 0, 0, n), prng.rademacher(seed + 1, 0, 0, n))) < bound
    assert abs(_corr(z[0][:-1], z[0][1:])) < 5 / np.sqrt(n - 1)


# --- stochastic rounding ----------------------------------------------------------------------------

@pytest.mark.parametrize("x", [37, -37, 5, -1, 1023])
def test_stochastic_rounding_is_unbiased(x):
    shift, n = 4, 200_000
    y = prng.stochastic_round_shift(np.full(n, x), shift, 0, 0, 0, prng.STREAM_ROUNDING)
    exact = x / 2**shift
    assert set(np.unique(y).tolist()) <= {np.floor(exact), np.floor(exact) + 1}
    p = exact - np.floor(exact)
    assert abs(y.mean() - exact) < 5 * np.sqrt(p * (1 - p) / n) + 1e-12


def test_stochastic_rounding_is_exact_when_low_bits_are_zero():
    k = np.arange(-1000, 1000)
    for shift in (1, 5, 12, 31):
        assert np.array_equal(prng.stochastic_round_shift(k << shift, shift, 9, 9, 9, 1), k)
    x = np.array([-3, 0, 7, 2**40])
    assert np.array_equal(prng.stochastic_round_shift(x, 0, 1, 2, 3, 1), x)


def test_stochastic_rounding_is_floor_of_x_plus_r_elementwise():
    rng = np.random.default_rng(1)
    x = rng.integers(-(2**31), 2**31, size=(6, 7))
    shift = 9
    y = prng.stochastic_round_shift(x, shift, 4, 8, 2, 1)
    assert y.shape == x.shape and y.dtype == np.int64
    for flat, xv in enumerate(x.ravel()):
        r = ref_hash(4, 8, 2, flat, 1) >> (32 - shift)
        assert y.ravel()[flat] == (int(xv) + r) // 2**shift  # Python // is floor division


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        prng.stochastic_round_shift(np.array([1]), 32, 0, 0, 0, 1)
    with pytest.raises(TypeError):
        prng.stochastic_round_shift(np.array([1.5]), 3, 0, 0, 0, 1)
    with pytest.raises(ValueError):
        prng.uniform_bits(0, 0, 0, 4, 33, 1)


# --- the C expressions written in the module docstring ---------------------------------------------

C_PROGRAM = r"""
#include <stdint.h>
#include <stdio.h>
static uint32_t zo_mix(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352dU;
    x ^= x >> 15; x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}
int main(void) {
    uint32_t key = zo_mix(zo_mix(0x9e3779b9U ^ 42u) ^ 1u);
    uint32_t pre = zo_mix(zo_mix(key ^ 1000u) ^ 3u);
    for (uint32_t index = 0; index < 8; ++index) {
        uint32_t h = zo_mix(pre ^ index);
        int8_t z = (int8_t)(1 - 2 * (int32_t)(h >> 31));
        int32_t x = -1000 + 377 * (int32_t)index, s = 5;
        uint32_t r = h >> (32 - s);
        int32_t y = (x >> s) + (int32_t)((((uint32_t)x & ((1u << s) - 1u)) + r) >> s);
        printf("%u %d %d\n", h, z, y);
    }
    return 0;
}
"""


def test_docstring_c_expressions_reproduce_numpy(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    src, exe = tmp_path / "prng.c", tmp_path / "prng"
    src.write_text(C_PROGRAM)
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(src)], check=True)
    rows = [line.split() for line in subprocess.run([str(exe)], capture_output=True, text=True,
                                                    check=True).stdout.splitlines()]
    h = prng.hash32(42, 1000, 3, np.arange(8), stream=1)
    x = -1000 + 377 * np.arange(8)
    assert [int(r[0]) for r in rows] == h.tolist()
    assert [int(r[1]) for r in rows] == prng.rademacher(42, 1000, 3, 8, stream=1).tolist()
    assert [int(r[2]) for r in rows] == prng.stochastic_round_shift(x, 5, 42, 1000, 3, 1).tolist()
