"""The fast rescaling path is the same arithmetic as TFLM's literal composition."""

import numpy as np

from zo_edge.kernels import fixedpoint as fp


def test_fast_multiply_by_quantized_multiplier_equals_the_literal_composition():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.integers(fp.INT32_MIN, fp.INT32_MAX, 200_000, endpoint=True),
        rng.integers(-5000, 5000, 200_000),
        np.array([0, 1, -1, fp.INT32_MIN, fp.INT32_MAX, 1 << 30, -(1 << 30)]),
    ])
    for _ in range(200):
        m, shift = fp.quantize_multiplier(float(10.0 ** rng.uniform(-9, 3)))
        assert np.array_equal(fp.multiply_by_quantized_multiplier(x, m, shift),
                              fp.multiply_by_quantized_multiplier_reference(x, m, shift)), (m, shift)
    per_channel = fp.quantize_multipliers(10.0 ** rng.uniform(-6, 1, 16))
    xs = rng.integers(-(1 << 24), 1 << 24, (1000, 16))
    assert np.array_equal(fp.multiply_by_quantized_multiplier(xs, *per_channel),
                          fp.multiply_by_quantized_multiplier_reference(xs, *per_channel))


def test_quantize_multiplier_edge_cases():
    assert fp.quantize_multiplier(0.0) == (0, 0)
    assert fp.quantize_multiplier(1.0) == (1 << 30, 1)
    assert fp.quantize_multiplier(0.5) == (1 << 30, 0)
    assert fp.quantize_multiplier(2.0 ** -40) == (0, 0)  # flushed to zero below 2^-31
    m, shift = fp.quantize_multiplier(1.0 - 2.0 ** -40)  # rounds up to 2^31: renormalised
    assert (m, shift) == (1 << 30, 1)


def test_round_half_away_from_zero():
    assert fp.round_half_away(np.array([0.5, -0.5, 1.5, -2.5, 0.49999997])).tolist() == [1, -1, 2, -3, 0]
