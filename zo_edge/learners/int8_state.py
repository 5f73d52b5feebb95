"""Trainable state of the int8 learners, stored as the device stores it, and its integer update.

A ``ParamVector`` is a group of trainable graph tensors updated together (the zeroth-order vector:
the adapter, plus the classifier for ``zo``; or the classifier for its first-order step), laid out
flat in a fixed order: tensor by tensor in the order given, each in C order. That flat index is the
``index`` coordinate of the random generator, on the device as here.

Storage per element (``master`` is the configured precision of int8 weights):
* int8 weights, master "int8": the int8 value itself; update units = one quantisation step.
* int8 weights, master "int16": a 16-bit master m with 256 sub-steps per int8 step; the int8 weight
  the graph uses is ``clamp((m + 128) >> 8, -128, 127)``.
* int32 biases: the bias itself (already fine-grained: its scale is input scale × weight scale).

Update (module docstring of ``fixed`` for the units): Q20 gradient g → (clip) → momentum v →
``Δ = SR16(f · sat32(U_i · v_i))`` with U_i = lr · units_i · 2^16 / (scale_i · 2^20) and f the learning-rate
schedule's Q16 factor of the epoch (``fixed.scale_q16``; 1.0 changes nothing) → ``m ← sat(m − Δ)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge import prng
from zo_edge.learners import fixed

SR_QUERY_ZO = 0  # rounding-stream query coordinate of the zeroth-order update
SR_QUERY_CLASSIFIER = 1  # ... and of the classifier's first-order update


@dataclass
class Segment:
    role: str
    index: int  # graph tensor index
    shape: tuple
    dtype: type  # np.int8 or np.int32 (what the graph reads)
    start: int
    size: int


class ParamVector:
    def __init__(self, graph, roles: dict, names: list[str], master: str):
        self.segments, scales, units, low, high, init = [], [], [], [], [], []
        start = 0
        for name in names:
            t = graph.tensors[roles[name]]
            n = int(np.prod(t.shape))
            self.segments.append(Segment(name, t.index, tuple(t.shape), t.dtype, start, n))
            per_channel = np.broadcast_to(t.scale.astype(np.float64), (t.shape[0],)) if len(t.scale) > 1 \
                else np.full(t.shape[0], float(t.scale[0]))
            scales.append(np.repeat(per_channel, n // t.shape[0]))  # axis 0 is the channel axis of all four
            data = t.data.astype(np.int64).ravel()
            if t.dtype == np.int8 and master == "int16":
                units.append(np.full(n, 256)); low.append(np.full(n, -32768)); high.append(np.full(n, 32767))
                init.append(data << 8)
            elif t.dtype == np.int8:
                units.append(np.full(n, 1)); low.append(np.full(n, -128)); high.append(np.full(n, 127))
                init.append(data)
            else:
                units.append(np.full(n, 1)); low.append(np.full(n, fixed.INT32_MIN)); high.append(np.full(n, fixed.INT32_MAX))
                init.append(data)
            start += n
        self.n = start
        self.scale = np.concatenate(scales)  # float units per stored step of the graph's value
        self.units = np.concatenate(units).astype(np.int64)  # master steps per graph step
        self.low, self.high = np.concatenate(low).astype(np.int64), np.concatenate(high).astype(np.int64)
        self.master = np.concatenate(init).astype(np.int64)
        self.velocity = None  # Q20 momentum buffer, allocated on the first update that uses it
        self.is_int8 = np.concatenate([np.full(s.size, s.dtype == np.int8) for s in self.segments])
        self.view_low = np.where(self.is_int8, -128, fixed.INT32_MIN)
        self.view_high = np.where(self.is_int8, 127, fixed.INT32_MAX)

    # -- the values the graph reads ------------------------------------------------------------
    def view(self) -> np.ndarray:
        """The graph's values (int8 weights, int32 biases) from the master copy, flat int64."""
        v = (self.master + (self.units >> 1)) >> np.log2(self.units).astype(np.int64)
        return np.clip(v, self.view_low, self.view_high)

    def constants(self, flat: np.ndarray) -> dict[int, np.ndarray]:
        """Flat values [..., n] as graph constants {tensor index: array [..., *shape]}."""
        lead = flat.shape[:-1]
        return {s.index: flat[..., s.start : s.start + s.size].reshape(lead + s.shape).astype(s.dtype)
                for s in self.segments}

    # -- zeroth order ------------------------------------------------------------------------
    def perturbation_steps(self, epsilon: float) -> np.ndarray:
        """Steps k_i = round(ε / scale_i) of the graph value per element (≥ 1 for int8 weights)."""
        return np.maximum(np.floor(epsilon / self.scale + 0.5), 0).astype(np.int64)

    def probes(self, z: np.ndarray, k: np.ndarray):
        """The 2q perturbed views [+z_0, −z_0, +z_1, ...] as int64 [2q, n], and how many saturated."""
        base = self.view()
        delta = z.astype(np.int64) * k
        rows = np.stack([base + s * d for d in delta for s in (1, -1)])
        return fixed.saturate(rows, self.view_low, self.view_high) if rows.size else (rows, 0)

    # -- the update --------------------------------------------------------------------------
    def update(self, g: np.ndarray, lr: float, momentum: float, clip: float, seed: int, step: int, query: int,
               lr_scale_q16: int = fixed.ONE_Q16) -> int:
        """Apply a Q20 gradient (``lr_scale_q16``: the schedule's factor); returns the number of saturation events."""
        g, events = fixed.saturate(g, -fixed.GRAD_LIMIT, fixed.GRAD_LIMIT)
        g, _ = fixed.clip_norm(g, clip)
        if momentum:
            if self.velocity is None:
                self.velocity = np.zeros(self.n, dtype=np.int64)
            self.velocity, e = fixed.momentum_step(self.velocity, g, fixed.momentum_q15(momentum))
            events += e
            g = self.velocity
        mult = self.update_multiplier(lr)
        delta16, e = fixed.saturate(mult.apply(g), fixed.INT32_MIN, fixed.INT32_MAX)
        events += e
        delta16 = fixed.scale_q16(delta16, lr_scale_q16)
        delta = prng.stochastic_round_shift(delta16, fixed.SR_BITS, seed, step, query, prng.STREAM_ROUNDING)
        self.master, e = fixed.saturate(self.master - delta, self.low, self.high)
        return events + e

    def update_multiplier(self, lr: float) -> fixed.Multiplier:
        cache = self.__dict__.setdefault("_multipliers", {})
        if lr not in cache:
            cache[lr] = fixed.Multiplier.of(lr * self.units * (1 << fixed.SR_BITS) / (self.scale * (1 << fixed.GRAD_BITS)))
        return cache[lr]

    # -- bookkeeping -------------------------------------------------------------------------
    def state(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.master": self.master.copy()}
        if self.velocity is not None:
            out[f"{prefix}.velocity"] = self.velocity.copy()
        return out

    def load(self, prefix: str, state: dict) -> None:
        master = np.asarray(state[f"{prefix}.master"], dtype=np.int64)
        if master.shape != (self.n,):
            raise ValueError(f"{prefix}.master has shape {master.shape}, expected ({self.n},)")
        self.master = master.copy()
        v = state.get(f"{prefix}.velocity")
        self.velocity = None if v is None else np.asarray(v, dtype=np.int64).copy()

    def values(self) -> np.ndarray:
        """The float values the masters stand for (graph layout, flat): what drift and update norms measure."""
        return self.master / self.units * self.scale

    def stored_bytes(self, momentum: bool) -> dict[str, int]:
        """Bytes the device keeps for this vector: graph values, master copies, momentum."""
        int8 = int(self.is_int8.sum())
        wide_master = int(np.count_nonzero(self.is_int8 & (self.units > 1)))
        return {"int8_weights": int8, "int16_master": 2 * wide_master, "int32_biases": 4 * (self.n - int8),
                "momentum": 4 * self.n if momentum else 0}
