"""Promises of the learners: float mode is the reference algorithm, the ZO estimator is unbiased, int8
mode is deterministic to the byte, and the perturbation is regenerated rather than stored."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from zo_edge import prng
from zo_edge.learners import LearnerConfig, make_learner
from zo_edge.learners import fixed
from zo_edge.learners.float_step import FloatState, float_step, zo_gradient


# ----------------------------------------------------------------------------------------------------
# float mode against a plain step-by-step implementation


class TinySuffix:
    """h = x + relu(x D + bd) U + bu: a residual adapter on a 6-dim feature, in float32 numpy."""

    def features(self, boundary, params):
        (x,) = boundary
        D, bd, U, bu = params
        return x + np.maximum(x @ D + bd, 0) @ U + bu

    def features_many(self, boundary, params_list):
        return np.stack([self.features(boundary, p) for p in params_list])


def _plain_reference(params, W, b, x, y, allowed, zs, eps, lr, fc_lr, mu, clip, fc_steps):
    """The reference ZO-FC loop written out with nothing shared with the code under test (float32
    throughout, as the learner keeps float32 masters)."""
    params = [p.copy() for p in params]
    eps, lr, fc_lr, mu = np.float32(eps), np.float32(lr), np.float32(fc_lr), np.float32(mu)
    vel = {}

    def loss(ps, W, b):
        D, bd, U, bu = ps
        h = x + np.maximum(x @ D + bd, 0) @ U + bu
        logits = np.where(allowed, h @ W + b, -np.inf)
        m = logits.max(1, keepdims=True)
        p = np.exp(logits - m) / np.exp(logits - m).sum(1, keepdims=True)
        return -np.mean(np.log(p[np.arange(len(y)), y])), h, p

    def momentum(name, g):
        vel[name] = g if name not in vel else mu * vel[name] + g
        return vel[name]

    for step, z in enumerate(zs):
        if step < fc_steps:  # classifier: one first-order step
            _, h, p = loss(params, W, b)
            e = p.copy()
            e[np.arange(len(y)), y] -= 1
            gW, gb = h.T @ e / len(y), e.mean(0)
            W = W - fc_lr * momentum("W", gW)
            b = b - fc_lr * momentum("b", gb)
        g = [np.zeros_like(p) for p in params]
        for zq in z:  # each query: +eps z, -eps z
            split = np.split(zq, np.cumsum([p.size for p in params])[:-1])
            zs_q = [s.reshape(p.shape) for s, p in zip(split, params)]
            lp = loss([p + eps * d for p, d in zip(params, zs_q)], W, b)[0]
            lm = loss([p - eps * d for p, d in zip(params, zs_q)], W, b)[0]
            for gi, d in zip(g, zs_q):
                gi += (lp - lm) / (2 * eps * len(z)) * d
        norm = np.sqrt(sum(np.sum(gi ** 2) for gi in g))
        if norm * 1 > clip:
            g = [gi * np.float32(clip / (norm + 1e-6)) for gi in g]
        flat = momentum("zo", np.concatenate([gi.ravel() for gi in g]))
        at = 0
        for i, p in enumerate(params):
            params[i] = p - lr * flat[at : at + p.size].reshape(p.shape)
            at += p.size
    return params, W, b


def test_float_zo_fc_equals_the_reference_step_by_step():
    rng = np.random.default_rng(3)
    d, r, c, n = 6, 3, 5, 16
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.choice([1, 3, 4], size=n)
    allowed = np.isin(np.arange(c), [1, 3, 4])  # classes 0 and 2 are "old": masked
    params = [rng.normal(0, 0.5, (d, r)), rng.normal(0, 0.1, r), rng.normal(0, 0.3, (r, d)), rng.normal(0, 0.1, d)]
    params = [p.astype(np.float32) for p in params]
    W, b = rng.normal(0, 0.5, (d, c)).astype(np.float32), np.zeros(c, np.float32)
    q, steps, fc_steps, eps = 3, 8, 4, 5e-2
    zs = [rng.choice([-1.0, 1.0], size=(q, sum(p.size for p in params))).astype(np.float32) for _ in range(steps)]
    settings = dict(q=q, eps=eps, lr=0.05, fc_lr=0.1, momentum=0.9, clip=0.5)

    state = FloatState([p.copy() for p in params], W.copy(), b.copy())
    for step, z in enumerate(zs):
        float_step(state, TinySuffix(), [x], y, allowed, method="zo-fc", train_classifier=step < fc_steps, z=z, **settings)

    ref_params, ref_W, ref_b = _plain_reference(params, W, b, x, y, allowed, zs, eps, 0.05, 0.1, 0.9, 0.5, fc_steps)
    for got, want, start in zip(state.adapter + [state.W, state.b], ref_params + [ref_W, ref_b], params + [W, b]):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert np.abs(want - start).max() > 1e-3  # every tensor did train


def test_zo_estimator_averaged_over_all_directions_is_the_gradient_of_a_quadratic():
    rng = np.random.default_rng(0)
    n = 5
    A = rng.normal(size=(n, n))
    A = (A @ A.T).astype(np.float32)
    bvec = rng.normal(size=n).astype(np.float32)
    theta = rng.normal(size=n).astype(np.float32)

    def losses(rows):
        rows = rows.astype(np.float64)
        return 0.5 * np.einsum("vi,ij,vj->v", rows, A, rows) + rows @ bvec

    directions = [np.array(s, dtype=np.float32) for s in itertools.product([-1.0, 1.0], repeat=n)]
    estimate = np.mean([zo_gradient(losses, theta, z[None, :], eps=0.1) for z in directions], axis=0)
    np.testing.assert_allclose(estimate, A @ theta + bvec, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------
# int8 mode on a real (small) run


@pytest.fixture(scope="module")
def digits_run(digits_run_dir):
    from zo_edge.build import load_run

    return load_run(digits_run_dir)


@pytest.fixture(scope="module")
def digits_task(digits_run):
    return digits_run.scenario.tasks[0]


def _train(run, task, steps, variants_per_call=None, chunk=None, **options):
    import zo_edge.engine as engine

    learner = make_learner(run, LearnerConfig(mode="int8", **options))
    learner.variants_per_call = variants_per_call
    allowed = np.zeros(learner.num_classes, bool)
    allowed[list(task.classes)] = True
    counters = dict(forward_passes=0, prefix_passes=0, suffix_passes=0, macs=0, saturation_events=0)
    old_chunk = engine.CHUNK
    engine.CHUNK = chunk or old_chunk
    try:
        learner.begin_task(task)
        order = np.random.default_rng(0).permutation(np.tile(np.arange(len(task.y_train)), 40))
        for step in range(steps):
            idx = np.sort(order[(step * 24) % (len(order) - 24):][:24])
            learner.train_step(idx, task.y_train[idx], allowed, epoch=0 if step < steps // 2 else 99, counters=counters)
            learner.step += 1
    finally:
        engine.CHUNK = old_chunk
    return learner


def _state_bytes(learner) -> bytes:
    return b"".join(v.tobytes() for _, v in sorted(learner.state().items()))


def test_int8_zo_fc_is_byte_identical_after_1000_steps_across_runs_and_vectorisation(digits_run, digits_task):
    options = dict(method="zo-fc", q=2, batch_size=24, fc_epochs=1)
    a = _train(digits_run, digits_task, 1000, **options)
    b = _train(digits_run, digits_task, 1000, **options)
    c = _train(digits_run, digits_task, 1000, variants_per_call=1, chunk=7, **options)
    assert _state_bytes(a) == _state_bytes(b) == _state_bytes(c)
    start = make_learner(digits_run, LearnerConfig(mode="int8", **options))
    assert _state_bytes(a) != _state_bytes(start)  # 1000 steps did move the state
    d = _train(digits_run, digits_task, 1000, seed=1, **options)
    assert _state_bytes(a) != _state_bytes(d)  # and the seed matters


def test_the_update_regenerates_the_perturbation_the_probes_used(digits_run, digits_task, monkeypatch):
    learner = make_learner(digits_run, LearnerConfig(method="zo", mode="int8", q=3))
    learner.begin_task(digits_task)
    learner.step = 17
    calls = []
    real = prng.rademacher

    def recording(seed, step, query, size, stream=prng.STREAM_PERTURBATION):
        out = real(seed, step, query, size, stream)
        calls.append(((int(seed), int(step), tuple(np.atleast_1d(query)), size), out.copy()))
        return out

    monkeypatch.setattr(prng, "rademacher", recording)
    probes_seen = []
    real_probes = learner.zo.probes
    learner.zo.probes = lambda z, k: (probes_seen.append((z.copy(), k.copy())), real_probes(z, k))[1]
    idx = np.arange(24)
    allowed = np.isin(np.arange(learner.num_classes), digits_task.classes)
    learner.train_step(idx, digits_task.y_train[idx], allowed, 0, dict(forward_passes=0, prefix_passes=0,
                                                                       suffix_passes=0, macs=0, saturation_events=0))
    assert len(calls) == 2, "drawn once for the probes and once, regenerated, for the update"
    (coords_probe, z_probe), (coords_update, z_update) = calls
    assert coords_probe == coords_update == ((0, 17, (0, 1, 2), learner.zo.n))
    assert np.array_equal(z_probe, z_update)
    z, k = probes_seen[0]
    assert np.array_equal(z, z_probe)  # the probes ran with exactly these signs


def test_probes_are_the_view_plus_and_minus_k_steps(digits_run):
    learner = make_learner(digits_run, LearnerConfig(method="zo-fc", mode="int8", q=2))
    z = learner.perturbation(5)
    rows, _ = learner.zo.probes(z, learner.steps_k)
    view = learner.zo.view()
    lo, hi = learner.zo.view_low, learner.zo.view_high
    for j in range(2):
        assert np.array_equal(rows[2 * j], np.clip(view + learner.steps_k * z[j], lo, hi))
        assert np.array_equal(rows[2 * j + 1], np.clip(view - learner.steps_k * z[j], lo, hi))


def test_int8_classifier_step_follows_the_float_gradient(digits_run, digits_task):
    """One head step in int8 moves the classifier like a float SGD step of the same size (to 1 LSB)."""
    learner = make_learner(digits_run, LearnerConfig(method="head", mode="int8", momentum=0.0, fc_lr=0.5))
    learner.begin_task(digits_task)
    before = learner.fc.view().copy()
    idx = np.arange(48)
    allowed = np.isin(np.arange(learner.num_classes), digits_task.classes)
    batch = {k: v[idx] for k, v in learner._train_boundary.items()}
    out, cap = learner.split.run_suffix(batch, capture=[learner.features_index], constants=learner.constants())
    logits, h = out[0].reshape(48, -1), cap[learner.features_index].reshape(48, -1)
    learner.classifier_update(logits, h, digits_task.y_train[idx], allowed)
    after = learner.fc.view()
    # float reference from the same int8 logits and features
    s_l = learner.graph.tensors[learner.logits_index].scalar_quant()[0]
    z = np.where(allowed, s_l * logits.astype(np.float64), -np.inf)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(48), digits_task.y_train[idx]] -= 1
    hf = learner.h_scale * (h.astype(np.float64) - learner.h_zero_point)
    gW = p.T @ hf / 48
    seg = learner.fc.segments[0]
    want = -0.5 * gW.ravel() / learner.fc.scale[seg.start : seg.start + seg.size]
    got = (after - before)[seg.start : seg.start + seg.size]
    assert np.abs(got - want).max() <= 1.0  # stochastic rounding: within one int8 step
    assert np.abs(got).sum() > 0


def test_fixed_point_loss_matches_float_cross_entropy():
    rng = np.random.default_rng(1)
    for scale in (0.02, 0.1, 0.25):
        tables = fixed.LossTables.for_scale(scale)
        logits = rng.integers(-128, 128, (200, 10)).astype(np.int8)
        allowed = rng.random(10) < 0.6
        allowed[3] = True
        y = np.full(200, 3)
        z = np.where(allowed, scale * logits.astype(np.float64), -np.inf)
        lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
        want = lse - z[:, 3]
        got = fixed.cross_entropy_q16(logits, y, allowed, tables) / 65536
        assert np.abs(got - want).max() < 2e-4
        p = fixed.softmax_q16(logits, allowed, tables) / 65536
        assert np.abs(p.sum(1) - 1).max() < 1e-3 and (p[:, ~allowed] == 0).all()


def test_saved_state_restores_the_learner_exactly(digits_run, digits_task, tmp_path):
    trained = _train(digits_run, digits_task, 30, method="zo-fc", q=2, batch_size=24, fc_epochs=1)
    path = trained.save(tmp_path / "state.npz")
    fresh = make_learner(digits_run, LearnerConfig(mode="int8", method="zo-fc", q=2, batch_size=24, fc_epochs=1))
    fresh.load(path)
    assert _state_bytes(fresh) == _state_bytes(trained)
    x = digits_task.x_test
    assert np.array_equal(fresh.logits(x), trained.logits(x))
