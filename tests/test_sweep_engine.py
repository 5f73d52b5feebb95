"""The sweep's faster engine paths give the bytes of the plain ones (which the TFLM suites check).

Stacked suffix runs (the probes share the batch) against the batch tiled; the shared-input kernels
against their plain forms on tiled inputs; the compiled depthwise pass and the right-shift
requantisation against their numpy references, on random shapes and extreme values."""

from __future__ import annotations

import numpy as np
import pytest

from zo_edge.kernels import fixedpoint as fp


def test_a_stacked_suffix_run_equals_the_tiled_run(digits_run_dir):
    from zo_edge.learners import LearnerConfig, make_learner
    from zo_edge.run_folder import load_run

    run = load_run(digits_run_dir)
    for method in ("zo-fc", "zo"):  # zo perturbs the classifier too: its FC reads a stacked input
        learner = make_learner(run, LearnerConfig(method=method, q=3))
        task = run.scenario.tasks[0]
        learner.begin_task(task)
        batch = {k: v[:37] for k, v in learner._train_boundary.items()}
        rows, _ = learner.zo.probes(learner.perturbation(5), learner.steps_k)
        constants = {**learner.constants(), **learner.zo.constants(rows)}
        tiled = {k: np.concatenate([v] * len(rows)) for k, v in batch.items()}
        capture = [learner.features_index]
        plain, plain_cap = learner.split.run_suffix(tiled, capture=capture, constants=constants)
        stacked, stacked_cap = learner.split.run_suffix(batch, capture=capture, constants=constants, stack=len(rows))
        assert plain[0].shape == stacked[0].shape == (len(rows) * 37, learner.num_classes)
        assert np.array_equal(plain[0], stacked[0])
        assert np.array_equal(plain_cap[learner.features_index], stacked_cap[learner.features_index])
        assert len(np.unique(plain[0].reshape(len(rows), -1), axis=0)) > 1  # the probes differ


def _conv_params(rng, kh, kw, in_c, out_c, stride, shape, depthwise=False, m=1):
    from zo_edge.kernels.conv import ConvParams
    from zo_edge.kernels.windows import make_window

    window = make_window(int(rng.integers(0, 2)), shape[1], shape[2], kh, kw, stride, stride,
                         int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    taps = kh * kw * (1 if depthwise else in_c)
    multiplier, shift = fp.quantize_multipliers(10.0 ** rng.uniform(-6, -1, out_c))
    return ConvParams(window=window, input_zero_point=int(rng.integers(-128, 128)),
                      output_zero_point=int(rng.integers(-128, 128)), multiplier=multiplier, shift=shift,
                      act_min=-128, act_max=int(rng.integers(0, 128)), acc_dtype=fp.exact_float_dtype(taps * 255 * 128),
                      accumulator_bound=taps * 255 * 128, depth_multiplier=m,
                      pointwise=(kh, kw, stride) == (1, 1, 1) and window.dilation_h == window.dilation_w == 1
                      and window.pad_top == window.pad_left == 0)


def test_shared_input_kernels_equal_the_plain_kernels_on_tiled_inputs():
    from zo_edge.kernels import add, conv, fully_connected
    from zo_edge.kernels.fully_connected import FullyConnectedParams

    rng = np.random.default_rng(11)
    for trial in range(40):
        v, n = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        kh, kw = (1, 1) if trial % 2 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        in_c, out_c = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        x = rng.integers(-128, 128, (n, int(rng.integers(kh, 9)), int(rng.integers(kw, 9)), in_c)).astype(np.int8)
        p = _conv_params(rng, kh, kw, in_c, out_c, int(rng.integers(1, 3)), x.shape)
        if min(p.window.out_h, p.window.out_w) < 1:
            continue  # no output (prepare refuses such an op)
        only_bias = trial % 5 == 0
        filters = rng.integers(-127, 128, (out_c, kh, kw, in_c) if only_bias else (v, out_c, kh, kw, in_c)).astype(np.int8)
        bias = rng.integers(-40000, 40000, (v, out_c)).astype(np.int32)
        tiled = np.concatenate([x] * v)
        expected = conv.eval_conv(p, [tiled, filters, bias]) if not only_bias else np.concatenate(
            [conv.eval_conv(p, [x, filters, bias[k]]) for k in range(v)])
        got = conv.conv_shared(p, [x, filters, bias], [True, False, False], v)
        assert np.array_equal(got, expected), trial

        units, depth = out_c, in_c * 3
        fc = FullyConnectedParams(int(rng.integers(-128, 128)), 0, int(rng.integers(-128, 128)), p.multiplier, p.shift,
                                  -128, 127, np.float32, depth * 255 * 255, (units,))
        xf = rng.integers(-128, 128, (n, depth)).astype(np.int8)
        wf = rng.integers(-127, 128, (v, units, depth)).astype(np.int8)
        got = fully_connected.fully_connected_shared(fc, [xf, wf, bias], [True, False, False], v)
        assert np.array_equal(got, fully_connected.eval_fully_connected(fc, [np.concatenate([xf] * v), wf, bias]))

    table = rng.integers(-128, 128, 1 << 16).astype(np.int8)
    ap = add.AddParams(0, 0, 0, 0, 0, 0, 0, 0, 0, -128, 127, table)
    shared, stacked = (rng.integers(-128, 128, s).astype(np.int8) for s in ((3, 4, 5, 2), (12, 4, 5, 2)))
    for flags, pair in (([False, True], [stacked, shared]), ([True, False], [shared, stacked])):
        tiled = [np.concatenate([a] * 4) if f else a for a, f in zip(pair, flags)]
        assert np.array_equal(add.add_shared(ap, pair, flags, 4), add.eval_add(ap, tiled))


def test_the_compiled_depthwise_pass_equals_numpy():
    from zo_edge.kernels import conv

    rng = np.random.default_rng(12)
    for trial in range(80):
        in_c, m = int(rng.integers(1, 7)), int(rng.integers(1, 4))
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        x = rng.integers(-128, 128, (int(rng.integers(1, 4)), int(rng.integers(1, 10)), int(rng.integers(1, 10)),
                                     in_c)).astype(np.int8)
        if trial % 7 == 0:
            x[...] = rng.choice([-128, 127])  # extreme inputs
        p = _conv_params(rng, kh, kw, in_c, in_c * m, int(rng.integers(1, 3)), x.shape, depthwise=True, m=m)
        if min(p.window.out_h, p.window.out_w) < 1:
            continue  # no output (prepare refuses such an op)
        filters = rng.integers(-127, 128, (1, kh, kw, in_c * m)).astype(np.int8)
        bias = rng.integers(-100000, 100000, in_c * m).astype(np.int32)
        assert np.array_equal(conv.eval_depthwise(p, [x, filters, bias]),
                              conv.eval_depthwise_numpy(p, [x, filters, bias])), trial


@pytest.mark.parametrize("seed", range(3))
def test_right_shift_requantisation_equals_the_literal_tflm_composition(seed):
    from zo_edge.kernels import fused

    rng = np.random.default_rng(seed)
    channels = int(rng.integers(1, 70))
    multiplier, shift = fp.quantize_multipliers(10.0 ** rng.uniform(-9, -0.01, channels))
    assert shift.max() <= 0  # the fast path
    acc = rng.integers(-(1 << 30), 1 << 30, (2, 300, channels))
    acc[0, :4] = [[-(1 << 30)], [(1 << 30) - 1], [0], [-1]]
    bias = rng.integers(-(1 << 30), 1 << 30, (2, channels))
    zero_point = int(rng.integers(-128, 128))
    got = fused.requantize_int8(acc.astype(np.float64), bias, multiplier, shift, zero_point, -128, 127, False)
    literal = fp.multiply_by_quantized_multiplier_reference(acc + bias[:, None, :], multiplier, shift) + zero_point
    assert np.array_equal(got, np.clip(literal, -128, 127).astype(np.int8))
