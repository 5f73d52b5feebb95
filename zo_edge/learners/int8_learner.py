"""Device-mode learners (zo-fc, zo, head, frozen): every forward pass runs the int8 graph engine.

The prefix (what no trainable tensor reaches) runs once per sample and is cached for the task; the
suffix runs once unperturbed (when the classifier trains) and 2q times perturbed per step.

One deliberate difference from the reference order: all 2q+1 passes of a step use the weights as they
were at the step's start, and both updates (classifier, adapter) follow. The reference updates the
classifier before its probes; a device cannot afford that, because it would have to hold the
batch's cut activations (or run the prefix twice) — in this order it runs, per sample, the prefix once
and the suffix 2q+1 times with one weight set, and keeps only running sums. Float mode keeps the
reference order.

In the simulator the 2q probes run as *one* engine call: each trainable tensor given as a stack of 2q
variants and the batch shared by them (``SplitEngine.run_suffix(stack=2q)``: the adapter's input is
read once for all probes). Losses, the classifier's gradient and all updates
are integer (``fixed``, ``int8_state``); perturbation signs and rounding noise come from ``prng`` at
coordinates (seed, step, query, index), so the firmware regenerates them instead of storing them.
"""

from __future__ import annotations

import numpy as np

from zo_edge import prng
from zo_edge.cost import split_macs
from zo_edge.engine import Engine
from zo_edge.errors import ZoEdgeError
from zo_edge.learners import fixed
from zo_edge.learners.base import Learner
from zo_edge.learners.config import OptionError
from zo_edge.learners.cosine import CosineHead
from zo_edge.learners.int8_state import SR_QUERY_CLASSIFIER, SR_QUERY_ZO, ParamVector
from zo_edge.prefix_cache import PrefixCache
from zo_edge.qgraph import QGraph

class Int8Learner(Learner):
    def __init__(self, run, config, graph: QGraph | None = None, prefix_cache: PrefixCache | None = None):
        super().__init__(run, config)
        cfg = self.config
        self.graph = graph or run.graph
        plan = self.plan = run.plan
        roles = plan.roles()
        if cfg.method in ("zo-fc", "zo") and not plan.adapters:
            raise ZoEdgeError(f"{run.run_dir} has no adapter for --method {cfg.method}; build it with adapters "
                              "(zo-edge build --adapter-at ...) or use --method head")
        self.engine = Engine(self.graph)
        # every method splits where the firmware does: before the first trainable tensor's op
        self.logits_index, self.features_index = plan.classifier.logits, plan.classifier.input
        self.split = self.engine.split_frozen(plan.trainable_indices(), outputs=[self.logits_index])
        self.macs = split_macs(self.split)
        logits_t = self.graph.tensors[self.logits_index]
        self.num_classes = int(logits_t.shape[-1])
        self.tables = fixed.LossTables.for_scale(logits_t.scalar_quant()[0])
        self.h_scale, self.h_zero_point = self.graph.tensors[self.features_index].scalar_quant()
        vectors = dict(plan.vectors(cfg.method))
        self.zo = ParamVector(self.graph, roles, vectors["zo"], cfg.master) if "zo" in vectors else None
        self.fc = None
        if "fc" in vectors:  # a cosine head keeps sigma and unit rows (zo_edge.learners.cosine)
            self.fc = CosineHead(self.graph, plan.classifier.weights) if plan.classifier.kind == "cosine" \
                else ParamVector(self.graph, roles, vectors["fc"], cfg.master)
        for vec in (self.zo, self.fc):
            if vec is not None and vec.n > fixed.MAX_VECTOR:
                raise ZoEdgeError(f"{vec.n} trainable values in one vector; int8 mode's integer norm handles at most "
                                  f"{fixed.MAX_VECTOR} — use a narrower adapter (zo-edge build --adapter-width)")
        self.epsilon = None
        if self.zo is not None:
            self.epsilon, self.steps_k = self._resolve_epsilon()
        self._check_multipliers()
        self.prefix_cache = prefix_cache or PrefixCache()  # shared by the seeds of a run, the cells of a sweep

    # -- configuration -------------------------------------------------------------------------
    def _resolve_epsilon(self):
        """ε in float units → k_i quantisation steps per element; ≥ 1 step for every int8 weight."""
        weights = self.zo.is_int8
        largest_step = float(self.zo.scale[weights].max())
        eps = self.config.epsilon if self.config.epsilon is not None else largest_step
        k = self.zo.perturbation_steps(eps)
        if (k[weights] < 1).any():
            worst = max((s for s in self.zo.segments if s.dtype == np.int8),
                        key=lambda s: self.zo.scale[s.start : s.start + s.size].max())
            raise ZoEdgeError(
                f"--epsilon {eps:g} is below one int8 quantisation step of {worst.role} "
                f"({largest_step:.3g}); use --epsilon >= {largest_step:.3g} in int8 mode, or --mode float")
        return eps, np.maximum(k, 1)

    def _check_multipliers(self) -> None:
        """Every integer multiplier of a full batch's step, made now: a learning rate or ε the int8
        arithmetic cannot hold is refused before training starts, naming the option."""
        cfg = self.config
        for vec, option in ((self.zo, "lr"), (self.fc, "fc_lr")):
            if vec is not None:
                lr = getattr(cfg, option)
                try:
                    vec.update_multiplier(lr)
                except ValueError:
                    raise OptionError(option, f"{lr:g} is too large for int8 mode: its update multiplier does not "
                                              "fit 32 bits for these weight scales; choose a smaller value") from None
        if self.zo is not None:
            self.zo_gradient_multiplier(cfg.batch_size)
        if self.fc is not None:
            self.classifier_gradient_multipliers(cfg.batch_size)

    def settings(self) -> dict:
        out = {"epsilon": self.epsilon}
        if self.zo is not None:
            out["perturbation_steps"] = {s.role: [int(self.steps_k[s.start:s.start + s.size].min()),
                                                  int(self.steps_k[s.start:s.start + s.size].max())]
                                         for s in self.zo.segments}
        return out

    def state_bytes(self) -> dict:
        momentum = bool(self.config.momentum)
        parts = {}
        for name, vec in (("zeroth_order", self.zo), ("classifier", self.fc)):
            if vec is not None:
                for k, v in vec.stored_bytes(momentum).items():
                    parts[k] = parts.get(k, 0) + v
        return parts

    # -- the graph's current constants ----------------------------------------------------------
    def constants(self) -> dict:
        out = {}
        for vec in (self.zo, self.fc):
            if vec is not None:
                out.update(vec.constants(vec.view()))
        return out

    def _boundary(self, x) -> dict:
        """Prefix outputs for float samples x (cached by content: the prefix is frozen)."""
        return self.prefix_cache.boundary(self.split, x)

    def logits(self, x) -> np.ndarray:
        out, _ = self.split.run_suffix(self._boundary(x), constants=self.constants())
        return out[0].reshape(len(x), -1)

    # -- training --------------------------------------------------------------------------------
    def begin_task(self, task):
        self._train_boundary = self._boundary(task.x_train)

    def train_step(self, idx, y, allowed, epoch, counters) -> None:
        cfg = self.config
        batch = {k: v[idx] for k, v in self._train_boundary.items()}
        trains_fc = cfg.trains_classifier(epoch)
        passes = 0
        # Every pass of a step sees the weights as they were at its start (see the module docstring).
        if self.zo is not None:
            losses, saturated = self.probe_losses(batch, y, allowed, self.step, self.variants_per_call)
            counters["saturation_events"] += saturated
            passes += 2 * cfg.q
        if trains_fc:
            out, cap = self.split.run_suffix(batch, capture=[self.features_index], constants=self.constants())
            counters["saturation_events"] += self.classifier_update(out[0].reshape(len(y), -1),
                                                                    cap[self.features_index].reshape(len(y), -1), y, allowed,
                                                                    cfg.lr_scale_q16("classifier", epoch))
            passes += 1
        if self.zo is not None:
            counters["saturation_events"] += self.zo_update(losses, len(y), cfg.lr_scale_q16("adapters", epoch))
        self.count(counters, len(y), passes)

    def perturbation(self, step: int) -> np.ndarray:
        """The q Rademacher sign vectors of a step, int8 [q, n]: regenerated, never stored."""
        return prng.rademacher(self.config.seed, step, np.arange(self.config.q), self.zo.n)

    def probe_losses(self, batch, y, allowed, step: int, variants_per_call: int | None = None):
        """Batch losses (Q16 sums) at the 2q probes [+z_0, −z_0, ...] and the probe count that saturated."""
        rows, saturated = self.zo.probes(self.perturbation(step), self.steps_k)
        fixed_consts = {i: v for i, v in self.constants().items() if i not in {s.index for s in self.zo.segments}}
        per_call = variants_per_call or len(rows)
        losses = []
        for start in range(0, len(rows), per_call):  # one call for all probes unless asked otherwise
            part = rows[start : start + per_call]
            out, _ = self.split.run_suffix(batch, constants={**fixed_consts, **self.zo.constants(part)},
                                           stack=len(part))
            logits = out[0].reshape(len(part), len(y), -1)
            losses.append(fixed.cross_entropy_q16(logits, y[None, :], allowed, self.tables).sum(axis=1))
        return np.concatenate(losses), saturated

    def zo_update(self, losses, batch_size: int, lr_scale_q16: int = fixed.ONE_Q16) -> int:
        """The zeroth-order update from the 2q probe losses of this step (``lr_scale_q16``: the schedule's factor)."""
        cfg = self.config
        diff = losses[0::2] - losses[1::2]  # L⁺ − L⁻ per query, Q16 summed over the batch
        z = self.perturbation(self.step)  # regenerated, as the device does, not kept from the probes
        g_sum, e1 = fixed.saturate(diff @ z.astype(np.int64), fixed.INT32_MIN, fixed.INT32_MAX)
        g = self.zo_gradient_multiplier(batch_size).apply(g_sum)
        return e1 + self.zo.update(g, cfg.lr, cfg.momentum, cfg.clip, cfg.seed, self.step, SR_QUERY_ZO, lr_scale_q16)

    def classifier_update(self, logits, h, y, allowed, lr_scale_q16: int = fixed.ONE_Q16) -> int:
        """First-order step on the classifier: e = softmax − onehot (Q16), ΔW ∝ eᵀ (h − zp) (a cosine head
        turns ΔW into its sigma and unit rows' step, ``zo_edge.learners.cosine``)."""
        cfg = self.config
        e = fixed.softmax_q16(logits, allowed, self.tables)
        e[np.arange(len(y)), y] -= 1 << fixed.LOSS_BITS
        gw, e1 = fixed.saturate(e.T @ (h.astype(np.int64) - self.h_zero_point), fixed.INT32_MIN, fixed.INT32_MAX)
        mult_w, mult_b = self.classifier_gradient_multipliers(len(y))
        if isinstance(self.fc, CosineHead):  # no bias
            g, e2 = mult_w.apply(gw.ravel()), 0
        else:
            gb, e2 = fixed.saturate(e.sum(axis=0), fixed.INT32_MIN, fixed.INT32_MAX)
            g = np.concatenate([mult_w.apply(gw.ravel()), mult_b.apply(gb)])
        return e1 + e2 + self.fc.update(g, cfg.fc_lr, cfg.momentum, 0.0, cfg.seed, self.step, SR_QUERY_CLASSIFIER,
                                        lr_scale_q16)

    def zo_gradient_multiplier(self, batch_size: int) -> fixed.Multiplier:
        """Per element: Q20 gradient = Σ_j ΔL_j z_j / (2 ε_i q B), ΔL in Q16 and ε_i = k_i · scale_i.
        The firmware export takes these very numbers (one source for both sides)."""
        real = (1 << fixed.GRAD_BITS) / ((1 << fixed.LOSS_BITS) * 2.0 * self.config.q * batch_size
                                         * self.steps_k * self.zo.scale)
        return self._multiplier(("zo", batch_size), real, f"the zeroth-order gradient scale (batch {batch_size}, "
                                                          f"q {self.config.q}, epsilon {self.epsilon:g})",
                                "epsilon")

    def classifier_gradient_multipliers(self, batch_size: int) -> tuple[fixed.Multiplier, fixed.Multiplier]:
        """Q16 sums → Q20 float-unit gradients: eᵀ(h − zp) · s_h / B for weights, Σe / B for biases."""
        to_q20 = (1 << fixed.GRAD_BITS) / ((1 << fixed.LOSS_BITS) * batch_size)
        return (self._multiplier(("fc.w", batch_size), to_q20 * self.h_scale, "the classifier gradient scale",
                                 "batch_size"),
                self._multiplier(("fc.b", batch_size), to_q20, "the classifier bias gradient scale", "batch_size"))

    def _multiplier(self, key, real, what: str, option: str) -> fixed.Multiplier:
        cache = self.__dict__.setdefault("_multipliers", {})
        if key not in cache:
            try:
                cache[key] = fixed.Multiplier.of(real)
            except ValueError as exc:
                raise OptionError(option, f"gives {what} that int8 mode cannot hold as an integer multiplier "
                                          f"({exc}); change it") from None
        return cache[key]

    def role_values(self) -> dict[str, np.ndarray]:
        """Every trainable role's float value, flat in graph layout: the masters dequantised, the graph's
        constants for a part this method does not train."""
        values = {role: _float_values(self.graph.tensors[index]) for role, index in self.plan.trainables()}
        for vec in (self.zo, self.fc):
            if isinstance(vec, CosineHead):
                values["classifier.weights"] = vec.values()
            elif vec is not None:
                flat = vec.values()
                values.update({s.role: flat[s.start : s.start + s.size] for s in vec.segments})
        return values

    def part_values(self) -> dict[str, np.ndarray]:
        """The adapters' and the classifier's float values, flat: what drift and update norms measure."""
        values, parts = self.role_values(), {"adapters": [], "classifier": []}
        for role, _ in self.plan.trainables():
            parts["classifier" if role.startswith("classifier") else "adapters"].append(values[role])
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}

    def keras_parameters(self) -> tuple[list, np.ndarray, np.ndarray]:
        """(adapter arrays, W [features, classes], b) in Keras layout, float32: the dequantised state, for a
        float flatness probe (``sim.flatness``)."""
        from zo_edge.learners.float_learner import keras_layout

        values = self.role_values()
        shaped = {role: values[role].reshape(self.graph.tensors[i].shape) for role, i in self.plan.trainables()}
        adapter = [keras_layout(role, shaped[role]).astype(np.float32) for role, _ in self.plan.trainables()
                   if role.startswith("adapter")]
        bias = self.plan.classifier.bias
        b = shaped.get("classifier.bias", _float_values(self.graph.tensors[bias]))
        return adapter, shaped["classifier.weights"].T.astype(np.float32), np.asarray(b, np.float32)

    # -- state -----------------------------------------------------------------------------------
    def state(self) -> dict:
        out = {"step": np.array(self.step)}
        for name, vec in (("zo", self.zo), ("fc", self.fc)):
            if vec is not None:
                out.update(vec.state(name))
        return out

    def load_state(self, state: dict) -> None:
        self.step = int(state["step"])
        for name, vec in (("zo", self.zo), ("fc", self.fc)):
            if vec is not None:
                vec.load(name, state)


def _float_values(tensor) -> np.ndarray:
    """A constant tensor's float values, flat (per-channel scales along axis 0)."""
    per_channel = np.broadcast_to(tensor.scale.astype(np.float64), (tensor.shape[0],))
    return (tensor.data.astype(np.float64).reshape(tensor.shape[0], -1) * per_channel[:, None]).ravel()
