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


# --- the numba-fused paths equal their numpy references ------------------------------------------


def _conv_params(rng, channels, bound, act=(-128, 127)):
    from zo_edge.kernels.conv import ConvParams

    m, s = fp.quantize_multipliers(10.0 ** rng.uniform(-7, 1.5, channels))  # includes left shifts
    return ConvParams(window=None, input_zero_point=0, output_zero_point=int(rng.integers(-128, 128)),
                      multiplier=m, shift=s, act_min=act[0], act_max=act[1], acc_dtype=np.float64,
                      accumulator_bound=bound)


def test_fused_requantize_equals_numpy_including_wraparound_and_per_variant_bias():
    from zo_edge.kernels.conv import requantize_accumulator, requantize_accumulator_numpy

    rng = np.random.default_rng(7)
    for trial in range(60):
        channels = int(rng.integers(1, 20))
        big = trial % 3 == 0  # accumulators near the int32 limits: the wrap-around path
        bound = (1 << 31) if big else 1 << 20
        p = _conv_params(rng, channels, bound, act=(int(rng.integers(-128, 0)), int(rng.integers(0, 128))))
        variants = int(rng.integers(1, 4))
        acc = rng.integers(-bound, bound, (variants, int(rng.integers(1, 50)), channels))
        acc = acc.astype(np.int64 if big else rng.choice([np.float32, np.float64, np.int64]))
        bias = None if trial % 4 == 0 else rng.integers(fp.INT32_MIN // (1 if big else 4096),
                                                          fp.INT32_MAX // (1 if big else 4096),
                                                          (variants, channels) if variants > 1 else channels)
        assert np.array_equal(requantize_accumulator(acc, bias, p), requantize_accumulator_numpy(acc, bias, p))


def test_fused_sum_and_table_lookup_equal_numpy():
    from zo_edge.kernels import fused

    rng = np.random.default_rng(8)
    x = rng.integers(-128, 128, (5, 6, 7, 9)).astype(np.int8)
    assert np.array_equal(fused.sum_positions(x), x.astype(np.int64).sum(axis=(1, 2)))
    a, b = (rng.integers(-128, 128, (3, 4, 5)).astype(np.int8) for _ in range(2))
    table = rng.integers(-128, 128, 1 << 16).astype(np.int8)
    index = (a.view(np.uint8).astype(np.int64) << 8) | b.view(np.uint8)
    assert np.array_equal(fused.table_lookup_pairs(a, b, table), table[index])
