"""Randomized proof that the numpy int8 engine equals TFLite Micro byte for byte (DESIGN.md §3).

Every test builds small random models directly as flatbuffers (``tflite_builder``), runs the same
random int8 batch (full range, -128 and 127 always present) through ``zo_edge.engine.Engine`` and
through the TFLM interpreter (``zo_edge.tflm.TflmOracle``), and requires zero differing bytes and
equal dtypes. Nothing here is loosened when it fails: a difference is an engine bug (builder bugs
are ruled out separately: every model runs in TFLM, and ``test_builder_shapes_agree_with_litert``
checks the builder's shapes against LiteRT's own shape inference).

The single-op cases come from ``kernel_cases`` (shared with the C kernels' suite,
``test_firmware_kernels.py``). Quantisation parameters are drawn to hit the edges: input/weight/output scales around 1e-6, 1e-2
and 1e3, zero points at -128 and 127, per-channel weight scales spanning up to four decades,
requantisation multipliers on both sides of 1 (including multipliers TFLM flushes to zero).
Multipliers > 1 are kept small enough that TFLM's ``x * (1 << left_shift)`` cannot overflow int32,
except in the tests named ``*_left_shift_overflow`` which pin that behaviour down separately.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernel_cases import (
    ACTS,
    ADD_SHAPES,
    BATCH,
    EXTREME,
    EXTREME_OPS,
    MEAN_CASES,
    _left_shift,
    BN_SHAPES,
    add_case,
    add_extreme_input_ratio_case,
    conv2d_case,
    conv_left_shift_overflow_case,
    depthwise_conv2d_case,
    expand_dims_case,
    extreme_scales_case,
    fully_connected_case,
    l2norm_case,
    mean_case,
    mul_case,
    mul_extreme_case,
    pick_scale,
    pick_zp,
    pool2d_case,
    rand_weights,
    softmax_case,
    unfolded_batchnorm_case,
)
from tflite_builder import GraphBuilder, per_channel_scales, rand_int8

SEEDS = range(80)
FEW_SEEDS = range(24)

# ---------------------------------------------------------------------------- running both sides


def _expected_batched(arr: np.ndarray, declared: list[int], n: int) -> np.ndarray:
    """TFLM results for one sample at a time, stacked as the engine batches them: a declared
    batch dimension of 1 becomes N; a tensor without one (e.g. SHAPE's output) gets N prepended."""
    per_sample = declared[1:] if declared and declared[0] == 1 else declared
    return arr.reshape([n] + list(per_sample))


def _diff_report(name, got: np.ndarray, want: np.ndarray) -> str:
    """Lists the differing elements (compared by their bytes, so -0.0 != 0.0 and NaNs count)."""
    item = want.dtype.itemsize
    g = np.frombuffer(got.tobytes(), np.uint8).reshape(-1, item)
    w = np.frombuffer(want.tobytes(), np.uint8).reshape(-1, item)
    bad = np.flatnonzero((g != w).any(axis=1))
    lines = [f"{name}: {bad.size} of {want.size} elements differ (shape {want.shape}, {want.dtype})"]
    for i in bad[:8]:
        idx = tuple(int(j) for j in np.unravel_index(i, want.shape))
        lines.append(f"  at {idx}: engine {got.reshape(-1)[i]!r} tflm {want.reshape(-1)[i]!r}")
    return "\n".join(lines)


def assert_bytes_equal(name, got, want):
    got = np.asarray(got)
    assert got.dtype == want.dtype, f"{name}: engine dtype {got.dtype}, TFLM dtype {want.dtype}"
    assert got.shape == want.shape, f"{name}: engine shape {got.shape}, TFLM shape {want.shape}"
    if got.tobytes() != want.tobytes():
        pytest.fail(_diff_report(name, got, want), pytrace=False)


def run_both(g: GraphBuilder, inputs, capture=()):
    """Runs the finished model through the engine and TFLM; asserts identical outputs (and
    captured intermediates). Returns (engine outputs, TFLM outputs) for further checks."""
    from zo_edge.engine import Engine
    from zo_edge.qgraph import QGraph
    from zo_edge.tflm import TflmOracle

    buf = g.finish()
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    n = inputs[0].shape[0]
    capture = tuple(int(i) for i in capture)

    graph = QGraph.from_bytes(buf)
    eng_out, eng_cap = Engine(graph).run(inputs if len(inputs) > 1 else inputs[0], capture=capture)
    ref_out, ref_cap = TflmOracle(buf, intermediates=bool(capture)).run(inputs, tensor_indices=capture)

    # captured tensors first, in graph order: the first one reported is where the engine diverges
    for t in sorted(capture):
        assert t in eng_cap, f"engine did not capture tensor {t}"
        want = _expected_batched(ref_cap[t], g.shape_of(t), n)
        assert_bytes_equal(f"captured tensor {t}", eng_cap[t], want)
    assert len(eng_out) == len(ref_out) == len(g.outputs)
    want_all = []
    for k, (got, want) in enumerate(zip(eng_out, ref_out)):
        want = _expected_batched(want, g.shape_of(g.outputs[k]), n)
        assert_bytes_equal(f"output {k} (tensor {g.outputs[k]})", got, want)
        want_all.append(want)
    return eng_out, want_all


# ---------------------------------------------------------------------------- single ops


@pytest.mark.parametrize("seed", SEEDS)
def test_conv2d(seed):
    g, inputs = conv2d_case(np.random.default_rng(1000 + seed))
    run_both(g, inputs)


@pytest.mark.parametrize("seed", SEEDS)
def test_depthwise_conv2d(seed):
    g, inputs = depthwise_conv2d_case(np.random.default_rng(2000 + seed))
    run_both(g, inputs)


@pytest.mark.parametrize("seed", SEEDS)
def test_fully_connected(seed):
    g, inputs = fully_connected_case(np.random.default_rng(3000 + seed))
    run_both(g, inputs)


@pytest.mark.parametrize("seed", SEEDS)
def test_add(seed):
    g, inputs = add_case(np.random.default_rng(4000 + seed), ADD_SHAPES[seed % len(ADD_SHAPES)])
    run_both(g, inputs)


@pytest.mark.parametrize("seed", range(24))
def test_add_broadcast_as_an_unfolded_batchnorm(seed):
    """ADD of a per-channel constant against a feature map ([C], [1, 1, 1, C], ...)."""
    rng = np.random.default_rng(4500 + seed)
    shapes = BN_SHAPES[seed % len(BN_SHAPES)]
    as_input = seed % 3 == 0 and len(shapes[1]) == len(shapes[0])  # a graph input needs the batch axis
    run_both(*add_case(rng, shapes, variant="inputs" if as_input else "const"))


@pytest.mark.parametrize("seed", SEEDS)
def test_mul(seed):
    shapes = (ADD_SHAPES + BN_SHAPES)[seed % (len(ADD_SHAPES) + len(BN_SHAPES))]
    run_both(*mul_case(np.random.default_rng(25000 + seed), shapes))


@pytest.mark.parametrize("seed", range(24))
def test_unfolded_batchnorm_mul_then_add(seed):
    """What the converter writes for Conv2D(activation="relu") followed by BatchNormalization."""
    run_both(*unfolded_batchnorm_case(np.random.default_rng(26000 + seed), wide=bool(seed % 2)))


@pytest.mark.parametrize("regimes", EXTREME, ids=["-".join(r) for r in EXTREME])
def test_mul_extreme_scales(regimes):
    run_both(*mul_extreme_case(np.random.default_rng(27000 + EXTREME.index(regimes)), regimes))


@pytest.mark.parametrize("seed", FEW_SEEDS)
def test_expand_dims(seed):
    """EXPAND_DIMS, alone and between 1-D layers as Keras Conv1D converts."""
    run_both(*expand_dims_case(np.random.default_rng(28000 + seed)))


@pytest.mark.parametrize("seed", SEEDS)
def test_mean(seed):
    g, inputs = mean_case(np.random.default_rng(5000 + seed), MEAN_CASES[seed % len(MEAN_CASES)])
    run_both(g, inputs)


@pytest.mark.parametrize("kind", ["average_pool2d", "max_pool2d"])
@pytest.mark.parametrize("seed", SEEDS)
def test_pool2d(kind, seed):
    rng = np.random.default_rng(6000 + seed + (0 if kind == "max_pool2d" else 500))
    g, inputs = pool2d_case(rng, kind, global_pool=seed % 5 == 0)
    run_both(g, inputs)


@pytest.mark.parametrize("seed", FEW_SEEDS)
def test_reshape(seed):
    rng = np.random.default_rng(7000 + seed)
    dims = [int(v) for v in rng.integers(1, 5, size=int(rng.integers(1, 4)))]
    total = int(np.prod(dims))
    new = [int(v) for v in rng.permutation(dims)] + ([1] if rng.random() < 0.3 else [])
    new = [1] + new
    if rng.random() < 0.5:
        new[int(rng.integers(1, len(new)))] = -1
    mode = seed % 3
    g = GraphBuilder()
    x = g.input([1] + dims, scale=pick_scale(rng), zero_point=pick_zp(rng))
    y = g.reshape(x, new, shape_tensor="const" if mode < 2 else None, options=mode != 1)
    g.output(y)
    assert int(np.prod(g.shape_of(y))) == total
    run_both(g, rand_int8(rng, [BATCH] + dims))


@pytest.mark.parametrize("seed", SEEDS)
def test_softmax(seed):
    g, inputs = softmax_case(np.random.default_rng(8000 + seed), seed)
    run_both(g, inputs)


@pytest.mark.parametrize("seed", SEEDS)
def test_l2_normalization(seed):
    g, inputs = l2norm_case(np.random.default_rng(8500 + seed), seed, wide=seed % 4 == 0)
    run_both(g, inputs)


@pytest.mark.parametrize("seed", SEEDS)
def test_quantize_float_to_int8(seed):
    rng = np.random.default_rng(9000 + seed)
    shape = [1, int(rng.integers(1, 6)), int(rng.integers(1, 9))]
    s, zp = pick_scale(rng), pick_zp(rng)
    size = BATCH * int(np.prod(shape[1:]))
    # values near every rounding tie (k + 0.5) * s, exact ties, zeros, and clamping values
    k = rng.integers(-400, 400, size=size).astype(np.float64)
    frac = rng.choice([0.5, -0.5, 0.0], size=size) + rng.choice([0.0, 1e-7, -1e-7], size=size)
    vals = ((k + frac) * s).astype(np.float32)
    vals[rng.random(size) < 0.1] = 0.0
    vals[rng.random(size) < 0.05] = -0.0
    g = GraphBuilder()
    x = g.input(shape, dtype=np.float32)
    g.output(g.quantize(x, out_scale=s, out_zp=zp))
    run_both(g, vals.reshape([BATCH] + shape[1:]))


def _requant_scales(rng, max_shift=22):
    s_in = pick_scale(rng)
    s_out = s_in * 10.0 ** (rng.uniform(-1.5, 1.5) if rng.random() < 0.7 else rng.uniform(-6, 6))
    while _left_shift(np.float64(np.float32(s_in)) / np.float64(np.float32(s_out))) > max_shift:
        s_out *= 2.0  # 255 << 23 would overflow int32 in TFLM's Requantize
    return s_in, s_out


@pytest.mark.parametrize("seed", SEEDS)
def test_quantize_int8_requantize(seed):
    rng = np.random.default_rng(10000 + seed)
    shape = [1, int(rng.integers(1, 5)), int(rng.integers(1, 9))]
    s_in, s_out = _requant_scales(rng)
    if seed % 5 == 0:
        s_out = s_in  # same scale, zero point shift only
    g = GraphBuilder()
    x = g.input(shape, scale=s_in, zero_point=pick_zp(rng))
    g.output(g.quantize(x, out_scale=s_out, out_zp=pick_zp(rng)))
    run_both(g, rand_int8(rng, [BATCH] + shape[1:]))


@pytest.mark.parametrize("seed", FEW_SEEDS)
def test_dequantize(seed):
    rng = np.random.default_rng(11000 + seed)
    shape = [1, int(rng.integers(1, 5)), int(rng.integers(1, 9))]
    g = GraphBuilder()
    x = g.input(shape, scale=pick_scale(rng), zero_point=pick_zp(rng))
    g.output(g.dequantize(x))
    run_both(g, rand_int8(rng, [BATCH] + shape[1:]))


@pytest.mark.parametrize("seed", range(4))
def test_shape(seed):
    rng = np.random.default_rng(12000 + seed)
    shape = [1] + [int(v) for v in rng.integers(1, 6, size=seed % 3 + 1)]
    g = GraphBuilder()
    x = g.input(shape, scale=pick_scale(rng), zero_point=pick_zp(rng))
    g.output(g.shape(x), g.reshape(x, shape))
    out, _ = run_both(g, rand_int8(rng, [BATCH] + shape[1:]))
    assert out[0].dtype == np.int32


def _random_slice(rng, shape):
    begin, end, strides = [0], [1], [1]
    bmask = emask = shrink = 0
    if rng.random() < 0.5:
        bmask |= 1
    if rng.random() < 0.5:
        emask |= 1
        end[0] = int(rng.integers(-3, 4))
    for d, size in enumerate(shape[1:], start=1):
        r = rng.random()
        if r < 0.15 and len(shape) - bin(shrink).count("1") > 2:
            shrink |= 1 << d
            b = int(rng.integers(-size, size))
            begin.append(b)
            end.append(b + 1 if b != -1 else 0)
            strides.append(1)
            continue
        st = int(rng.choice([1, 1, 2, 3, -1, -2]))
        b = int(rng.integers(-size - 1, size + 2))
        e = int(rng.integers(-size - 1, size + 2))
        begin.append(b)
        end.append(e)
        strides.append(st)
        if rng.random() < 0.25:
            bmask |= 1 << d
        if rng.random() < 0.25:
            emask |= 1 << d
    return begin, end, strides, bmask, emask, shrink


@pytest.mark.parametrize("seed", SEEDS)
def test_strided_slice(seed):
    rng = np.random.default_rng(13000 + seed)
    for _ in range(1000):  # redraw until the slice is non-empty
        shape = [1] + [int(v) for v in rng.integers(1, 7, size=int(rng.integers(1, 4)))]
        begin, end, strides, bmask, emask, shrink = _random_slice(rng, shape)
        g = GraphBuilder()
        x = g.input(shape, scale=pick_scale(rng), zero_point=pick_zp(rng))
        y = g.strided_slice(x, begin, end, strides, begin_mask=bmask, end_mask=emask,
                            shrink_axis_mask=shrink)
        if min(g.shape_of(y), default=1) > 0 and g.shape_of(y)[:1] == [1]:
            break
    g.output(y)
    run_both(g, rand_int8(rng, [BATCH] + shape[1:]))


@pytest.mark.parametrize("seed", FEW_SEEDS)
def test_pack(seed):
    rng = np.random.default_rng(14000 + seed)
    shape = [1] + [int(v) for v in rng.integers(1, 5, size=int(rng.integers(1, 4)))]
    count = int(rng.integers(1, 5))
    axis = int(rng.integers(1, len(shape) + 1))
    if rng.random() < 0.3:
        axis = axis - len(shape) - 1  # negative axis
    s, zp = pick_scale(rng), pick_zp(rng)
    g = GraphBuilder()
    xs = [g.input(shape, scale=s, zero_point=zp) for _ in range(count)]
    g.output(g.pack(xs, axis=axis))
    run_both(g, [rand_int8(rng, [BATCH] + shape[1:]) for _ in range(count)])


# ---------------------------------------------------------------------------- extreme multipliers


@pytest.mark.parametrize("regimes", EXTREME, ids=["-".join(r) for r in EXTREME])
@pytest.mark.parametrize("op", EXTREME_OPS)
def test_extreme_scales(op, regimes):
    """Input, weight and output scales each ~1e-6 or ~1e3 (``kernel_cases.extreme_scales_case``)."""
    rng = np.random.default_rng(18000 + 10 * EXTREME.index(regimes) + EXTREME_OPS.index(op))
    run_both(*extreme_scales_case(rng, op, regimes))


@pytest.mark.parametrize("seed", range(8))
def test_add_extreme_input_ratio(seed):
    """One ADD operand's scale ~1e9 times the other's: its TFLM multiplier is flushed to zero."""
    run_both(*add_extreme_input_ratio_case(np.random.default_rng(15000 + seed), flip=bool(seed % 2)))


@pytest.mark.parametrize("seed", range(6))
def test_conv_left_shift_overflow(seed):
    """Multiplier 2^k (k = 8..30) with |acc| << (k + 1) overflowing int32, which TFLM wraps. (Multipliers
    >= 2^31 give left shifts >= 32, whose result differs between x86, where TFLM's wheel runs, and
    Cortex-M: not tested.)"""
    run_both(*conv_left_shift_overflow_case(np.random.default_rng(16000 + seed)))


@pytest.mark.parametrize("seed", range(4))
def test_requantize_left_shift_overflow(seed):
    """int8->int8 QUANTIZE with in/out scale ratio 3e6..1e9 (< 2^30, left shift <= 30):
    overflowing ``(x - zp) << shift`` wraps in TFLM."""
    rng = np.random.default_rng(17000 + seed)
    s_in = pick_scale(rng, "large")
    s_out = s_in / 10.0 ** rng.uniform(6.5, 9.0)
    g = GraphBuilder()
    x = g.input([1, 16], scale=s_in, zero_point=pick_zp(rng))
    g.output(g.quantize(x, out_scale=s_out, out_zp=pick_zp(rng)))
    run_both(g, rand_int8(rng, [BATCH, 16]))


# ---------------------------------------------------------------------------- chains


def _relu_act(rng, s_out, choices=("RELU", "RELU6")) -> str:
    act = str(rng.choice(list(choices)))
    return "RELU" if act == "RELU6" and 6.0 / s_out < 64 else act


def _chain_zp_act(rng, s_out, kw):
    """Output zero point and fused activation for a chain layer, as calibration would give them:
    RELU-family outputs get a zero point near -128, linear ones one near 0."""
    act = kw.pop("activation", "NONE")
    if act == "random":
        act = str(rng.choice(ACTS))
    if act == "RELU_N1_TO_1" and 1.0 / s_out < 32:
        act = "NONE"
    if act in ("RELU", "RELU6"):
        act = _relu_act(rng, s_out, (act,))
        zp = int(rng.integers(-128, -110))
    else:
        zp = int(rng.integers(-24, 25))
    return zp, act


def _range(g, t):
    """Real-valued range [lo, hi] that int8 tensor ``t`` can represent."""
    s, zp = g.scale_of(t), g.zp_of(t)
    return s * (-128 - zp), s * (127 - zp)


def _covering_quant(lo, hi, shrink):
    """(scale, zero point) covering [lo, hi] shrunk by ``shrink`` (extremes are rare)."""
    lo, hi = min(lo, 0.0) * shrink, max(hi, 0.0) * shrink
    scale = (hi - lo) / 255.0
    return scale, int(np.clip(round(-128 - lo / scale), -128, 127))


def _conv_params(rng, g, x, cout, k, **kw):
    cin = g.shape_of(x)[-1]
    w_scales = per_channel_scales(rng, cout, pick_scale(rng, "normal"), 2.0)
    s_in = g.scale_of(x)
    typical = math.sqrt(k * k * cin) * 74.0 * 74.0
    s_out = s_in * float(np.median(w_scales)) * typical / 64.0 * 10.0 ** rng.uniform(-0.5, 0.5)
    bias = rng.integers(-int(typical), int(typical), size=cout).astype(np.int32)
    zp, act = _chain_zp_act(rng, s_out, kw)
    return g.conv2d(x, rand_weights(rng, [cout, k, k, cin]), bias, w_scale=w_scales,
                    out_scale=s_out, out_zp=zp, activation=act, **kw)


def _fc_params(rng, g, x, n_out, **kw):
    n_in = int(np.prod(g.shape_of(x)))
    w_scales = per_channel_scales(rng, n_out if rng.random() < 0.5 else 1, 0.01, 2.0)
    typical = math.sqrt(n_in) * 74.0 * 74.0
    s_out = g.scale_of(x) * float(np.median(w_scales)) * typical / 64.0 * 10.0 ** rng.uniform(-0.5, 0.5)
    bias = rng.integers(-int(typical), int(typical), size=n_out).astype(np.int32)
    zp, act = _chain_zp_act(rng, s_out, kw)
    return g.fully_connected(x, rand_weights(rng, [n_out, n_in]), bias, w_scale=w_scales,
                             out_scale=s_out, out_zp=zp, activation=act, **kw)


def _residual_chain(rng):
    """conv -> depthwise -> add(residual) -> mean -> fc -> softmax; returns (graph, input, acts)."""
    h, w, c = int(rng.integers(4, 9)), int(rng.integers(4, 9)), int(rng.integers(1, 4))
    g = GraphBuilder()
    x = g.input([1, h, w, c], scale=pick_scale(rng, "normal"), zero_point=pick_zp(rng))
    c1 = _conv_params(rng, g, x, int(rng.integers(2, 6)), 3, stride=(2, 2), padding="SAME",
                      activation=str(rng.choice(["RELU", "RELU6", "NONE"])))
    ch = g.shape_of(c1)[-1]
    dw_scales = per_channel_scales(rng, ch, 0.02, 2.0)
    s_d = g.scale_of(c1) * 0.02 * 3 * 74 * 74 / 64.0 * 10.0 ** rng.uniform(-0.5, 0.5)
    d1 = g.depthwise_conv2d(c1, rand_weights(rng, [1, 3, 3, ch]),
                            rng.integers(-3000, 3000, ch).astype(np.int32), w_scale=dw_scales,
                            padding="SAME", activation=_relu_act(rng, s_d), out_scale=s_d,
                            out_zp=int(rng.integers(-128, -110)))
    (lo1, hi1), (lo2, hi2) = _range(g, c1), _range(g, d1)
    s_r, zp_r = _covering_quant(lo1 + lo2, hi1 + hi2, rng.uniform(0.6, 1.0))
    r = g.add(c1, d1, out_scale=s_r, out_zp=zp_r)
    s_m, zp_m = _covering_quant(*_range(g, r), rng.uniform(0.5, 1.0))
    m = g.mean(r, [1, 2], keep_dims=bool(rng.random() < 0.5), out_scale=s_m, out_zp=zp_m)
    if len(g.shape_of(m)) == 4:
        m = g.reshape(m, [1, ch])
    f = _fc_params(rng, g, m, int(rng.integers(2, 7)))
    s = g.softmax(f, beta=10.0 ** rng.uniform(-0.5, 0.5) / (32.0 * g.scale_of(f)))
    g.output(s)
    return g, rand_int8(rng, [BATCH, h, w, c]), [c1, d1, r, m, f, s]


@pytest.mark.parametrize("seed", SEEDS)
def test_chain_residual_mean_fc_softmax(seed):
    g, x, _ = _residual_chain(np.random.default_rng(20000 + seed))
    run_both(g, x)


def _pool_chain(rng):
    """conv -> maxpool -> reshape -> fc; returns (graph, input, acts)."""
    h, w, c = int(rng.integers(4, 10)), int(rng.integers(4, 10)), int(rng.integers(1, 4))
    g = GraphBuilder()
    x = g.input([1, h, w, c], scale=pick_scale(rng), zero_point=pick_zp(rng))
    c1 = _conv_params(rng, g, x, int(rng.integers(1, 6)), int(rng.integers(1, 4)), padding="SAME",
                      activation="random")
    p = g.max_pool2d(c1, (2, 2), stride=(2, 2), padding=str(rng.choice(["SAME", "VALID"])))
    flat = g.reshape(p, [1, -1], shape_tensor="const" if rng.random() < 0.5 else None)
    f = _fc_params(rng, g, flat, int(rng.integers(1, 10)), activation="random")
    g.output(f)
    return g, rand_int8(rng, [BATCH, h, w, c]), [c1, p, flat, f]


@pytest.mark.parametrize("seed", FEW_SEEDS)
def test_chain_conv_maxpool_reshape_fc(seed):
    g, x, _ = _pool_chain(np.random.default_rng(21000 + seed))
    run_both(g, x)


@pytest.mark.parametrize("seed", FEW_SEEDS)
def test_chain_quantize_conv_dequantize(seed):
    rng = np.random.default_rng(22000 + seed)
    h, w, c = int(rng.integers(2, 8)), int(rng.integers(2, 8)), int(rng.integers(1, 4))
    s_q = pick_scale(rng, "normal")
    g = GraphBuilder()
    x = g.input([1, h, w, c], dtype=np.float32)
    q = g.quantize(x, out_scale=s_q, out_zp=pick_zp(rng))
    c1 = _conv_params(rng, g, q, int(rng.integers(1, 5)), int(rng.integers(1, 4)),
                      padding=str(rng.choice(["SAME", "VALID"])) if min(h, w) >= 3 else "SAME",
                      activation="random")
    g.output(g.dequantize(c1))
    vals = (rng.normal(size=[BATCH, h, w, c]) * s_q * 100).astype(np.float32)
    vals.reshape(-1)[:4] = np.float32([s_q * 200, -s_q * 200, 0.0, s_q * 0.5])
    run_both(g, vals)


@pytest.mark.parametrize("seed", FEW_SEEDS)
def test_chain_keras_flatten(seed):
    """conv -> SHAPE -> STRIDED_SLICE(shrink) -> PACK([batch, -1]) -> RESHAPE -> fc, as Keras'
    Flatten layer converts."""
    rng = np.random.default_rng(23000 + seed)
    h, w, c = int(rng.integers(2, 7)), int(rng.integers(2, 7)), int(rng.integers(1, 4))
    g = GraphBuilder()
    x = g.input([1, h, w, c], scale=pick_scale(rng), zero_point=pick_zp(rng))
    c1 = _conv_params(rng, g, x, int(rng.integers(1, 5)), 3, padding="SAME",
                      activation="random")
    flat = g.flatten(c1)
    g.output(_fc_params(rng, g, flat, int(rng.integers(1, 8))))
    if seed % 2:
        g.output(flat)
    run_both(g, rand_int8(rng, [BATCH, h, w, c]))


@pytest.mark.parametrize("chain", ["residual", "pool"])
@pytest.mark.parametrize("seed", range(6))
def test_captured_intermediates(chain, seed):
    """Every non-constant tensor of a chain, captured, equals TFLM's (checked in graph order, so
    a failure names the first tensor where the engine diverges)."""
    build = {"residual": _residual_chain, "pool": _pool_chain}[chain]
    g, x, acts = build(np.random.default_rng(24000 + seed))
    inter = [i for i, t in enumerate(g.tensors) if t.buffer == 0 and i not in g.inputs]
    assert set(acts) <= set(inter)
    run_both(g, x, capture=inter)


# ---------------------------------------------------------------------------- the builder itself

_SINGLE_OP_TESTS = [
    (test_conv2d, {}), (test_depthwise_conv2d, {}), (test_fully_connected, {}), (test_add, {}),
    (test_mean, {}), (test_pool2d, {"kind": "average_pool2d"}), (test_pool2d, {"kind": "max_pool2d"}),
    (test_reshape, {}), (test_softmax, {}), (test_quantize_float_to_int8, {}),
    (test_quantize_int8_requantize, {}), (test_dequantize, {}), (test_strided_slice, {}),
    (test_pack, {}), (test_chain_keras_flatten, {}), (test_mul, {}), (test_expand_dims, {}),
    (test_unfolded_batchnorm_mul_then_add, {}),
]


def test_builder_shapes_agree_with_litert(monkeypatch):
    """The builder computes every output shape itself (TFLM trusts the declared ones): LiteRT's
    reference interpreter recomputes them, and they must agree for the models the tests build."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    graphs = []
    monkeypatch.setitem(globals(), "run_both", lambda g, inputs, capture=(): graphs.append(g))
    for fn, kwargs in _SINGLE_OP_TESTS:
        for seed in range(12):
            fn(seed=seed, **kwargs)
    assert len(graphs) == 12 * len(_SINGLE_OP_TESTS)
    for g in graphs:
        it = Interpreter(model_content=g.finish(),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        it.allocate_tensors()
        for d in it.get_input_details():
            it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        it.invoke()
        for d in it.get_tensor_details():
            if d["index"] < len(g.tensors):
                assert list(d["shape"]) == g.shape_of(d["index"]), (d["name"], d["shape"])
