"""The cosine classifier's trainable state: a scale sigma and one unit row per class (the reference's
``CosineLinear``: logits = sigma cos(h, w_c), no bias).

The graph holds the product: its features are L2-normalised (an L2_NORMALIZATION op) and its Dense
weights are ``sigma * u_c``. The learners keep sigma and the unit rows apart, take a first-order step
on both, and re-normalise every row the step changed, so the rows stay unit vectors and sigma alone sets
the logits' scale. With g = dL/dW (the gradient of the graph's weights, as for a dense head):

    dL/du_c = sigma g_c,   dL/dsigma = sum_c g_c . u_c,
    v <- mu v + grad;  u <- u - lr f v_u;  sigma <- sigma - lr f v_sigma;  u_c <- u_c / ||u_c|| if it moved

(momentum as PyTorch's SGD, f the learning-rate schedule's factor). ``CosineHeadFloat`` is that in
float32; ``CosineHead`` is the device's integers, which the firmware repeats bit for bit:

* u: int16 in Q14 (a unit row's entries are at most 1.0 = 16384); sigma: int32 in Q16, kept in
  [1/16, 1024] (so that sigma u and sigma g stay far inside int64); momentum Q20 (``fixed``), one per
  element of u and one for sigma;
* gradients, Q20: g saturated to +-GRAD_LIMIT; g_u = sat((sigma g + 2^15) >> 16);
  g_sigma = sat((sum_i g_i u_i + 2^13) >> 14), the sum in int64;
* step: Δ = SR16(f · sat32(U · v)) with U = lr 2^10 for u (Q14 from Q20 through SR16) and lr 2^12 for
  sigma (Q16), stochastic rounding at (seed, step, SR_QUERY_CLASSIFIER, index): index i for u's
  element i in C order, index C·D for sigma; u <- sat16(u - Δ); sigma <- clamp(sigma - Δ);
* re-normalisation of each row with a nonzero Δ: n = isqrt(sum u^2), u_i <- sign(u_i) ((|u_i| 2^14 +
  n / 2) / n) (integer division; a row of zeros stays);
* the graph's int8 weights: w_ci = sat8(M_c((sigma u_ci + 2^13) >> 14)), M_c = 1 / (s_c 2^16) a
  ``fixed.Multiplier`` per row (s_c the weights' per-channel scale).

The state starts from the graph: sigma_0 = the mean row norm of the dequantised weights, u_0 the rows
divided by their norms (in float64, once, in Python; the firmware gets both as constants), and the
graph's weights are then rewritten from them (within one int8 step of the trained ones).
"""

from __future__ import annotations

import math

import numpy as np

from zo_edge import prng
from zo_edge.learners import fixed

U_BITS = 14
SIGMA_BITS = 16
SIGMA_MIN = 1 << (SIGMA_BITS - 4)  # 1/16
SIGMA_MAX = 1 << (SIGMA_BITS + 10)  # 1024
U_MIN, U_MAX = -(1 << 15), (1 << 15) - 1


def initial_rows(weights: np.ndarray) -> tuple[np.ndarray, float]:
    """(unit rows, sigma) of a float weight matrix [C, D]: sigma the mean row norm (a zero row stays zero)."""
    w = np.asarray(weights, dtype=np.float64)
    norms = np.linalg.norm(w, axis=1)
    sigma = float(norms.mean())
    return np.where(norms[:, None] > 0, w / np.maximum(norms[:, None], 1e-300), 0.0), sigma


class CosineHead:
    """int8 mode (module docstring). Has the ParamVector methods the learner and the firmware export use."""

    def __init__(self, graph, weights_index: int):
        t = graph.tensors[weights_index]
        self.index, self.shape = int(weights_index), tuple(int(d) for d in t.shape)
        classes, features = self.shape
        self.n = classes * features + 1  # u, then sigma: the rounding stream's indices
        self.scale = np.broadcast_to(t.scale.astype(np.float64), (classes,)).copy()
        rows, sigma = initial_rows(t.data.astype(np.float64) * self.scale[:, None])
        self.u = np.floor(rows * (1 << U_BITS) + 0.5).astype(np.int64)
        self.sigma = int(np.clip(math.floor(sigma * (1 << SIGMA_BITS) + 0.5), SIGMA_MIN, SIGMA_MAX))
        self.view_multiplier = fixed.Multiplier.of(np.repeat(1.0 / (self.scale * (1 << SIGMA_BITS)), features))
        self.velocity = None  # Q20 [C*D + 1] (u, then sigma), allocated by the first update with momentum
        self.initial = (self.u.copy(), self.sigma)

    # -- the values the graph reads ------------------------------------------------------------------
    def view(self) -> np.ndarray:
        """The graph's int8 weights sigma u, flat int64 [C*D]."""
        product = (self.sigma * self.u.ravel() + (1 << (U_BITS - 1))) >> U_BITS  # sigma u in Q16
        return np.clip(self.view_multiplier.apply(product), -128, 127)

    def constants(self, flat: np.ndarray) -> dict[int, np.ndarray]:
        return {self.index: np.asarray(flat).reshape(self.shape).astype(np.int8)}

    def values(self) -> np.ndarray:
        """sigma u in float (graph layout, flat)."""
        return (self.sigma / (1 << SIGMA_BITS)) * self.u.ravel() / (1 << U_BITS)

    # -- the first-order step ------------------------------------------------------------------------
    def update_multiplier(self, lr: float) -> fixed.Multiplier:
        """U for u (n - 1 elements) then sigma, as one Multiplier over the rounding stream's indices."""
        cache = self.__dict__.setdefault("_multipliers", {})
        if lr not in cache:
            per = np.full(self.n, lr * (1 << U_BITS) * (1 << fixed.SR_BITS) / (1 << fixed.GRAD_BITS))
            per[-1] = lr * (1 << SIGMA_BITS) * (1 << fixed.SR_BITS) / (1 << fixed.GRAD_BITS)
            cache[lr] = fixed.Multiplier.of(per)
        return cache[lr]

    def gradients(self, g: np.ndarray) -> tuple[np.ndarray, int]:
        """Q20 [dL/du (C*D), dL/dsigma] from dL/dW (Q20, C*D) and the saturation count."""
        g, events = fixed.saturate(g, -fixed.GRAD_LIMIT, fixed.GRAD_LIMIT)
        u = self.u.ravel()
        g_u, e1 = fixed.saturate((self.sigma * g + (1 << (SIGMA_BITS - 1))) >> SIGMA_BITS,
                                 -fixed.GRAD_LIMIT, fixed.GRAD_LIMIT)
        g_sigma, e2 = fixed.saturate((int(np.dot(g, u)) + (1 << (U_BITS - 1))) >> U_BITS,
                                     -fixed.GRAD_LIMIT, fixed.GRAD_LIMIT)
        return np.concatenate([g_u, np.atleast_1d(g_sigma)]), events + e1 + e2

    def update(self, g: np.ndarray, lr: float, momentum: float, clip: float, seed: int, step: int, query: int,
               lr_scale_q16: int = fixed.ONE_Q16) -> int:
        """One step from dL/dW (Q20, C*D elements; ``clip`` is not used: the classifier's step is never
        clipped); returns the saturation events."""
        grad, events = self.gradients(np.asarray(g, dtype=np.int64))
        if momentum:
            if self.velocity is None:
                self.velocity = np.zeros(self.n, dtype=np.int64)
            self.velocity, e = fixed.momentum_step(self.velocity, grad, fixed.momentum_q15(momentum))
            events += e
            grad = self.velocity
        delta16, e = fixed.saturate(self.update_multiplier(lr).apply(grad), fixed.INT32_MIN, fixed.INT32_MAX)
        events += e
        delta = prng.stochastic_round_shift(fixed.scale_q16(delta16, lr_scale_q16), fixed.SR_BITS, seed, step, query,
                                            prng.STREAM_ROUNDING)
        rows = delta[:-1].reshape(self.shape)
        u, e = fixed.saturate(self.u - rows, U_MIN, U_MAX)
        events += e
        moved = (rows != 0).any(axis=1)
        self.u = np.where(moved[:, None], normalised_rows(u), u)
        sigma, e = fixed.saturate(self.sigma - int(delta[-1]), SIGMA_MIN, SIGMA_MAX)
        self.sigma = int(sigma)
        return events + e

    # -- bookkeeping ---------------------------------------------------------------------------------
    def state(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.u": self.u.ravel().copy(), f"{prefix}.sigma": np.array(self.sigma)}
        if self.velocity is not None:
            out[f"{prefix}.velocity"] = self.velocity.copy()
        return out

    def load(self, prefix: str, state: dict) -> None:
        u = np.asarray(state[f"{prefix}.u"], dtype=np.int64)
        if u.shape != (self.n - 1,):
            raise ValueError(f"{prefix}.u has shape {u.shape}, expected ({self.n - 1},)")
        self.u, self.sigma = u.reshape(self.shape).copy(), int(state[f"{prefix}.sigma"])
        v = state.get(f"{prefix}.velocity")
        self.velocity = None if v is None else np.asarray(v, dtype=np.int64).copy()

    def stored_bytes(self, momentum: bool) -> dict[str, int]:
        """The device keeps u (int16), sigma (int32), the graph's int8 weights, and momentum."""
        return {"int8_weights": self.n - 1, "int16_master": 2 * (self.n - 1), "int32_biases": 4,
                "momentum": 4 * self.n if momentum else 0}


def normalised_rows(u: np.ndarray) -> np.ndarray:
    """Each row of Q14 integers scaled to norm 2^14 (module docstring); a zero row stays zero."""
    u = np.asarray(u, dtype=np.int64)
    norms = np.array([math.isqrt(int(v)) for v in (u * u).sum(axis=1)], dtype=np.int64)[:, None]
    scaled = (np.abs(u) * (1 << U_BITS) + norms // 2) // np.maximum(norms, 1)
    return np.where(norms > 0, np.sign(u) * scaled, u)


class CosineHeadFloat:
    """float mode (and fo in int8 mode): sigma and unit columns in float32, Keras layout W [features, classes]."""

    def __init__(self, kernel: np.ndarray):
        rows, sigma = initial_rows(np.asarray(kernel, dtype=np.float64).T)
        self.u = rows.T.astype(np.float32)  # [features, classes], unit columns
        self.sigma = np.float32(sigma)

    @property
    def W(self) -> np.ndarray:
        return (self.sigma * self.u).astype(np.float32)

    def step(self, velocity: dict, gW: np.ndarray, lr: float, momentum: float, factor: float = 1.0) -> None:
        """One SGD step from dL/dW (module docstring); ``velocity`` holds the momentum buffers."""
        grads = {"cosine.u": np.float32(self.sigma) * gW, "cosine.sigma": np.float32(np.sum(gW * self.u))}
        for name, grad in grads.items():
            if momentum:
                v = velocity.get(name)
                grad = grad if v is None else np.float32(momentum) * v + grad
                velocity[name] = grad
            step = np.float32(lr * factor) * grad
            if name == "cosine.u":
                u = self.u - step
                norms = np.linalg.norm(u, axis=0, keepdims=True)
                moved = np.any(step != 0, axis=0, keepdims=True) & (norms > 0)
                self.u = np.where(moved, u / np.where(norms > 0, norms, 1), u).astype(np.float32)
            else:
                self.sigma = np.float32(np.clip(self.sigma - step, SIGMA_MIN / (1 << SIGMA_BITS),
                                                SIGMA_MAX / (1 << SIGMA_BITS)))
