"""The reference's flatness measure: how much the loss on old tasks rises under random perturbations of the
trainable weights.

The public ZO-FC reference (``models/newlae.py``, ``_zero_order_unified``) measures, after each task, the
cross-entropy on the old classes' test data at the learned weights θ and at θ + δ for ``directions``
random δ on the sphere of radius ρ: L2 (a Gaussian direction scaled to norm ρ) or L∞ (ρ times the signs of
a Gaussian draw: a vertex of the L∞ ball). It reports the mean, spread and maximum of L(θ + δ) − L(θ); its
configurations use ρ = 0.005 and 100 directions. A flat minimum shows a small rise.

Here θ is every adapter's weights and biases and the classifier's weights (and bias, for a dense head),
in float: the float model (``KerasSplit``) evaluates the loss at the learner's values, dequantised for an
int8 learner (at ρ = 0.005 an L2 step moves each of a thousand weights by about 1e-4, far below one int8
step, so the int8 graph could not see it). The loss is over every class seen so far, as the reference's
``logits[:, :total_classes]``; the old tasks' test samples are pooled and at most ``samples`` of them
drawn, seeded. The directions come from ``numpy.random.default_rng([seed, task])``: the same for every
method of one seed.

The one-sided rise mixes a first-order term (the gradient along δ: zero on average, but with a spread
of ρ‖∇L‖ per direction that 100 directions do not average away when ρ is small) with the second-order
term that is the flatness. So the loss is also taken at θ − δ, and ``symmetric_mean`` is the mean of
(L(θ + δ) + L(θ − δ)) / 2 − L(θ): the first-order terms cancel exactly, leaving about ρ² δᵀHδ / 2.
"""

from __future__ import annotations

import numpy as np

RHO = 0.005
DIRECTIONS = 100
NORMS = ("l2", "linf")
SAMPLES = 256  # old-task test samples per measurement (the suffix runs directions x samples times)
CHUNK = 10  # directions per features_many call


def directions(rng: np.random.Generator, n: int, count: int, rho: float, norm: str) -> np.ndarray:
    """[count, n] perturbations of size rho in the given norm (module docstring)."""
    draws = rng.standard_normal((count, n))
    if norm == "linf":
        return rho * np.sign(draws)
    if norm == "l2":
        return draws * (rho / np.linalg.norm(draws, axis=1, keepdims=True))
    raise ValueError(f"unknown norm {norm!r}; one of {', '.join(NORMS)}")


def _flat(params) -> np.ndarray:
    return np.concatenate([np.asarray(p, np.float64).ravel() for p in params])


def _unflat(theta: np.ndarray, like) -> list:
    out, at = [], 0
    for p in like:
        out.append(theta[at : at + p.size].reshape(p.shape).astype(np.float32))
        at += p.size
    return out


def losses(split, boundary, y, classes, like, thetas, adapters: int, bias=None) -> np.ndarray:
    """Mean cross-entropy over ``classes`` for each row of ``thetas`` ([V, n]), laid out as ``like``: the
    ``adapters`` adapter arrays, W, and b unless ``bias`` (fixed) is given."""
    allowed = np.zeros(split.num_classes, dtype=bool)
    allowed[np.asarray(classes)] = True
    out = []
    for start in range(0, len(thetas), CHUNK):
        rows = [_unflat(t, like) for t in thetas[start : start + CHUNK]]
        h = split.features_many(boundary, [r[:adapters] for r in rows])
        for hv, r in zip(h, rows):
            W, b = r[adapters], r[adapters + 1] if bias is None else bias
            logits = np.where(allowed, hv.astype(np.float64) @ W + b, -np.inf)
            m = logits.max(axis=1, keepdims=True)
            lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
            out.append(float(np.mean(lse - logits[np.arange(len(y)), y])))
    return np.array(out)


def loss_rise(split, params, x, y, classes, *, rho: float = RHO, count: int = DIRECTIONS, norms=NORMS,
              rng: np.random.Generator, train_bias: bool = True) -> dict:
    """{norm: {L0, mean, std, max, abs_mean, mean_over_L0, symmetric_mean, symmetric_std}} for the float
    values ``params`` = (adapter
    arrays, W [features, classes], b) on samples x, y over ``classes``. ``train_bias``: whether the
    classifier's bias is a trainable weight (not for a cosine head, whose bias stays 0)."""
    adapter, W, b = params
    like = list(adapter) + [W] + ([b] if train_bias else [])
    theta = _flat(like)
    boundary = split.prefix(x)
    y = np.asarray(y, dtype=np.int64)
    fixed_bias = None if train_bias else np.asarray(b, np.float64)
    base = float(losses(split, boundary, y, classes, like, theta[None], len(adapter), fixed_bias)[0])
    out = {}
    for norm in norms:
        delta = directions(rng, theta.size, count, rho, norm)
        both = losses(split, boundary, y, classes, like, np.concatenate([theta + delta, theta - delta]),
                      len(adapter), fixed_bias) - base
        rises, symmetric = both[:count], (both[:count] + both[count:]) / 2
        out[norm] = {"L0": base, "mean": float(rises.mean()), "std": float(rises.std(ddof=1)),
                     "max": float(rises.max()), "abs_mean": float(np.abs(rises).mean()),
                     "mean_over_L0": float(rises.mean() / (base + 1e-12)),
                     "symmetric_mean": float(symmetric.mean()), "symmetric_std": float(symmetric.std(ddof=1))}
    return out
