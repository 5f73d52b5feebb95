"""One ZO-FC training step in float32: the reference algorithm (DESIGN.md §4), written once.

``float_step`` works on any *suffix*: an object with ``features(boundary, adapter_params)`` -> h [N, F]
and ``features_many(boundary, list_of_adapter_params)`` -> [V, N, F]. The learners pass the Keras
model's suffix (``KerasSplit``); the tests pass a tiny numpy network and check this step against a
plain re-implementation.

Per batch, as the reference does it:
1. while the classifier trains (zo-fc: epoch < fc_epochs; head: always): one first-order SGD step on
   the classifier, logits of classes outside ``allowed`` masked to -inf;
2. zeroth-order (zo-fc, zo): q Rademacher directions z (from ``prng``, never stored), losses at
   θ+εz and θ−εz with the *updated* classifier, g = Σ (L⁺−L⁻) z / (2εq), clipped to norm ``clip``
   (``clip_grad_norm_``: factor clip / (norm + 1e-6) when below 1), SGD with momentum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zo_edge import prng


@dataclass
class FloatState:
    adapter: list  # float32 arrays
    W: np.ndarray  # [features, classes]
    b: np.ndarray
    velocity: dict = field(default_factory=dict)  # name -> momentum buffer
    head: object = None  # a cosine classifier's sigma and unit columns (CosineHeadFloat); W is their product

    def step_classifier(self, gW, gb, lr: float, momentum: float) -> None:
        """SGD on the classifier from dL/dW and dL/db (a cosine head: its own step, no bias)."""
        if self.head is not None:
            self.head.step(self.velocity, gW, lr, momentum)
            self.W = self.head.W
        else:
            self.W = sgd(self, "W", self.W, gW, lr, momentum)
            self.b = sgd(self, "b", self.b, gb, lr, momentum)


def perturbation(seed: int, step: int, q: int, n: int) -> np.ndarray:
    """The q Rademacher directions of a step, float32 [q, n] (the int8 mode draws the same signs)."""
    return prng.rademacher(seed, step, np.arange(q), n).astype(np.float32)


def flatten(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays])


def unflatten(theta: np.ndarray, like) -> list:
    out, at = [], 0
    for a in like:
        out.append(theta[at : at + a.size].reshape(a.shape).astype(np.float32))
        at += a.size
    return out


def masked_logits(h, W, b, allowed) -> np.ndarray:
    logits = h @ W + b
    return np.where(allowed, logits, -np.inf).astype(np.float32)


def cross_entropy(logits, y) -> float:
    """Mean softmax cross-entropy (logits already masked)."""
    m = logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=-1)) + m[..., 0]
    return float(np.mean(lse - np.take_along_axis(logits, y[:, None], axis=-1)[:, 0]))


def softmax(logits) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def clip_grad(g: np.ndarray, clip: float) -> np.ndarray:
    if clip <= 0:
        return g
    coef = clip / (float(np.sqrt(np.sum(g.astype(np.float64) ** 2))) + 1e-6)
    return g * np.float32(coef) if coef < 1 else g


def sgd(state: FloatState, name: str, value: np.ndarray, g: np.ndarray, lr: float, momentum: float) -> np.ndarray:
    """PyTorch SGD: v = μ v + g; value -= lr v (v = g without momentum)."""
    if momentum:
        v = state.velocity.get(name)
        v = g if v is None else np.float32(momentum) * v + g
        state.velocity[name] = v
        g = v
    return (value - np.float32(lr) * g).astype(np.float32)


def classifier_step(state: FloatState, h, y, allowed, lr: float, momentum: float) -> float:
    """First-order step on the classifier only; returns the loss before it."""
    logits = masked_logits(h, state.W, state.b, allowed)
    e = softmax(logits)
    e[np.arange(len(y)), y] -= 1.0
    e /= len(y)
    loss = cross_entropy(logits, y)
    state.step_classifier((h.T @ e).astype(np.float32), e.sum(axis=0).astype(np.float32), lr, momentum)
    return loss


def zo_gradient(losses_of, theta: np.ndarray, z: np.ndarray, eps: float) -> np.ndarray:
    """Σ_j (L(θ+εz_j) − L(θ−εz_j)) z_j / (2εq); ``losses_of`` maps [V, n] parameter rows to V losses."""
    eps = np.float32(eps)
    rows = np.stack([theta + s * eps * zj for zj in z for s in (1, -1)])
    losses = np.asarray(losses_of(rows), dtype=np.float32)
    diff = losses[0::2] - losses[1::2]
    return (diff / (2 * eps * len(z))) @ z


def float_step(state: FloatState, suffix, boundary, y, allowed, *, method: str, train_classifier: bool,
               q: int, eps: float, lr: float, fc_lr: float, momentum: float, clip: float,
               z: np.ndarray, train_bias: bool = True) -> int:
    """One step of zo-fc / zo / head on a batch; ``z`` [q, n] are the step's directions (the learning rates
    already scaled by the epoch's schedule). ``train_bias``: whether zo's vector holds the classifier's
    bias (not for a cosine head). Returns the number of suffix passes it ran."""
    passes = 0
    if train_classifier and method in ("zo-fc", "head"):
        h = suffix.features(boundary, state.adapter)
        classifier_step(state, h, y, allowed, fc_lr, momentum)
        passes += 1
    if method in ("zo-fc", "zo"):
        with_classifier = method == "zo"
        head = [state.W, state.b] if train_bias else [state.W]
        like = state.adapter + (head if with_classifier else [])
        theta = flatten(like)

        def losses_of(rows):
            params = [unflatten(r, like) for r in rows]
            h = suffix.features_many(boundary, [p[: len(state.adapter)] for p in params])
            def classifier(p):
                if not with_classifier:
                    return state.W, state.b
                return (p[-2], p[-1]) if train_bias else (p[-1], state.b)

            return [cross_entropy(masked_logits(hv, *classifier(p), allowed), y) for hv, p in zip(h, params)]

        g = clip_grad(zo_gradient(losses_of, theta, z[:, : theta.size], eps), clip)
        theta = sgd(state, "zo", theta, g, lr, momentum)
        new = unflatten(theta, like)
        state.adapter = new[: len(state.adapter)]
        if with_classifier:
            state.W, state.b = (new[-2], new[-1]) if train_bias else (new[-1], state.b)
        passes += 2 * q
    return passes
