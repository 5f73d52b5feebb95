"""Float-mode learners (all methods), and ``fo`` in int8 mode.

Float mode is the reference algorithm on float32 master weights (``float_step``), on the Keras model
split at the adapter (``KerasSplit``): the frozen prefix runs once per sample, the adapter suffix
2q+1 times per step. ``fo`` backpropagates through the adapter and the classifier.

``fo`` in int8 mode is not what a device would run (it has no backward pass in int8): it keeps float
masters, takes float gradients at the *int8* weights (dequantised), re-quantises after every step
with the graph's scales, and predicts with the int8 engine. The RAM budget shows what a real device
backward pass would cost.
"""

from __future__ import annotations

import numpy as np

from zo_edge.cost import split_macs
from zo_edge.engine import Engine
from zo_edge.errors import ZoEdgeError
from zo_edge.learners.base import Learner
from zo_edge.learners.cosine import CosineHeadFloat
from zo_edge.learners.float_step import FloatState, clip_grad, flatten, float_step, perturbation, sgd, unflatten

# the Keras layout of each adapter parameter, in the plan's trainable order (down w, down b, up w, up b)
_KINDS = ("kernel", "bias", "kernel", "bias")


def _to_graph_layout(kernel: np.ndarray) -> np.ndarray:
    """Keras Conv2D [1,1,in,out] or Dense [in,out] kernel -> TFLite [out,1,1,in] / [out,in]."""
    if kernel.ndim == 4:
        return kernel.transpose(3, 0, 1, 2)
    return kernel.T


def keras_split_of(run):
    """The run's float model split before its first adapter (``KerasSplit``), adapters in the plan's order."""
    from zo_edge.models import configure_tensorflow

    configure_tensorflow()  # first: it imports TensorFlow without its start-up chatter
    import keras

    import zo_edge.keras_layers  # noqa: F401 - registers the zoo's own layers before loading
    from zo_edge.learners.keras_split import KerasSplit

    plan = run.plan
    adapters = [{"add": a.keras["down"].rsplit("_", 1)[0] + "_add", **a.keras} for a in plan.adapters]
    # the plan's order (graph order of the int8 ADDs) is the order of the flat vector
    return KerasSplit(keras.saving.load_model(run.keras_path, compile=False), adapters=adapters,
                      classifier=plan.classifier.keras or "classifier")


def keras_layout(role: str, value: np.ndarray) -> np.ndarray:
    """A graph-layout trainable (TFLite [out, 1, 1, in] / [out, in] kernels) in Keras layout."""
    if role.endswith("weights"):
        return value.transpose(1, 2, 3, 0) if value.ndim == 4 else value.T
    return value


class FloatLearner(Learner):
    def __init__(self, run: dict, config):
        super().__init__(run, config)
        if not run.has_keras:
            raise ZoEdgeError(f"{run.run_dir} has no float original (it was built from a .tflite), so --mode float "
                              f"and --method fo cannot run on it; use --mode int8 with zo-fc, zo, head or frozen")
        plan = run.plan
        self.split = keras_split_of(run)
        W, b = self.split.classifier_params()
        self.params = FloatState(self.split.adapter_params(), W, b)
        self.cosine = plan.classifier.kind == "cosine"
        if self.cosine and self.config.method != "zo":  # a first-order step keeps sigma and unit columns
            self.params.head = CosineHeadFloat(W)
            self.params.W = self.params.head.W
        self.num_classes = int(W.shape[1])
        self.epsilon = self.config.epsilon if self.config.epsilon is not None else 1e-3
        self.graph = run.graph
        self.engine = Engine(self.graph)
        self._roles = [role for role, _ in plan.trainables()]  # adapters' four each, then the classifier's two
        self.engine_split = self.engine.split_frozen(plan.trainable_indices(), outputs=[plan.classifier.logits])
        self.macs = split_macs(self.engine_split)
        self._cache = {}

    def settings(self) -> dict:
        return {"epsilon": self.epsilon if self.config.method in ("zo-fc", "zo") else None}

    def state_bytes(self) -> dict:
        cfg = self.config
        n_adapter = sum(p.size for p in self.params.adapter)
        n_fc = self.params.W.size + self.params.b.size
        trained = {"zo-fc": n_adapter + n_fc, "zo": n_adapter + n_fc, "fo": n_adapter + n_fc,
                   "head": n_fc, "frozen": 0}[cfg.method]
        out = {"float32_weights": 4 * trained, "momentum": 4 * trained if cfg.momentum else 0}
        if cfg.mode == "int8":
            out["int8_weights"] = trained  # the int8 view the engine runs, beside the float masters
        return out

    # -- forward -------------------------------------------------------------------------------
    def _boundary(self, x, engine: bool = False):
        key = (id(x), x.shape, engine)
        if key not in self._cache:
            value = self.engine_split.run_prefix([self.engine.quantize_input(x)]) if engine else self.split.prefix(x)
            self._cache[key] = (x, value)
        return self._cache[key][1]

    def logits(self, x) -> np.ndarray:
        if self.config.mode == "int8":
            out, _ = self.engine_split.run_suffix(self._boundary(x, engine=True), constants=self.int8_constants())
            return out[0].reshape(len(x), -1)
        h = self.split.features(self._boundary(x), self.params.adapter)
        return h @ self.params.W + self.params.b

    # -- int8 view (fo in int8 mode) -----------------------------------------------------------
    def _quantize(self, role: str, value: np.ndarray) -> np.ndarray:
        t = self.graph.tensors[self.run.roles[role]]
        scale = t.scale.astype(np.float64).reshape((-1,) + (1,) * (value.ndim - 1))
        q = np.floor(value.astype(np.float64) / scale + 0.5)
        if t.dtype == np.int8:
            return np.clip(q, -127, 127).astype(np.int8)
        return np.clip(q, -(1 << 31), (1 << 31) - 1).astype(np.int32)

    def int8_constants(self) -> dict:
        roles = self.run.roles
        kinds = _KINDS * len(self.run.plan.adapters)
        values = [(_to_graph_layout(p) if kind == "kernel" else p) for p, kind in zip(self.params.adapter, kinds)]
        values += [self.params.W.T] + ([] if self.cosine else [self.params.b])  # a cosine head's bias stays 0
        return {roles[n]: self._quantize(n, v) for n, v in zip(self._roles, values, strict=True)}

    def _dequantized(self) -> tuple[list, np.ndarray, np.ndarray]:
        """The float values of the int8 weights (what the device holds), back in Keras layout."""
        consts, roles = self.int8_constants(), self.run.roles

        def value(name):
            t = self.graph.tensors[roles[name]]
            q = consts[roles[name]]
            return q.astype(np.float32) * t.scale.astype(np.float32).reshape((-1,) + (1,) * (q.ndim - 1))

        adapter = [keras_layout(name, value(name)) for name in self._roles if name.startswith("adapter")]
        bias = np.zeros(self.num_classes, np.float32) if self.cosine else value("classifier.bias")
        return adapter, value("classifier.weights").T.copy(), bias

    # -- training ------------------------------------------------------------------------------
    def begin_task(self, task):
        self._train_boundary = self._boundary(task.x_train)

    def train_step(self, idx, y, allowed, epoch, counters) -> None:
        cfg, p = self.config, self.params
        batch = [b[idx] for b in self._train_boundary]
        lr = cfg.lr * cfg.lr_factor("adapters", epoch)  # the schedule's rates for this epoch
        fc_lr = cfg.fc_lr * cfg.lr_factor("classifier", epoch)
        if cfg.method == "fo":
            adapter, W, b = self._dequantized() if cfg.mode == "int8" else (p.adapter, p.W, p.b)
            _, grads, gW, gb = self.split.loss_and_grads(batch, adapter, W, b, y, np.flatnonzero(allowed))
            g = clip_grad(flatten(grads), cfg.clip)
            p.adapter = unflatten(sgd(p, "adapter", flatten(p.adapter), g, lr, cfg.momentum), p.adapter)
            p.step_classifier(gW, gb, fc_lr, cfg.momentum)
            passes = 1
        else:
            trains_fc = cfg.trains_classifier(epoch)
            head = p.W.size + (0 if self.cosine else p.b.size)
            n = sum(a.size for a in p.adapter) + (head if cfg.method == "zo" else 0)
            z = perturbation(cfg.seed, self.step, cfg.q, n) if cfg.method in ("zo-fc", "zo") else None
            passes = float_step(p, self.split, batch, y, allowed, method=cfg.method, train_classifier=trains_fc,
                                q=cfg.q, eps=self.epsilon, lr=lr, fc_lr=fc_lr, momentum=cfg.momentum,
                                clip=cfg.clip, z=z, train_bias=not self.cosine)
        self.count(counters, len(y), passes)

    def keras_parameters(self) -> tuple[list, np.ndarray, np.ndarray]:
        """(adapter arrays, W [features, classes], b) in Keras layout: the float values a flatness probe perturbs."""
        return list(self.params.adapter), self.params.W, self.params.b

    def part_values(self) -> dict[str, np.ndarray]:
        """The adapters' and the classifier's float values, flat (drift and update norms)."""
        p = self.params
        classifier = [p.W] + ([] if self.cosine else [p.b])
        return {"adapters": flatten(p.adapter) if p.adapter else np.zeros(0, np.float32),
                "classifier": flatten(classifier)}

    # -- state -----------------------------------------------------------------------------------
    def state(self) -> dict:
        p = self.params
        out = {"step": np.array(self.step), "W": p.W, "b": p.b}
        if p.head is not None:
            out.update({"cosine.u": p.head.u, "cosine.sigma": np.array(p.head.sigma)})
        out.update({f"adapter.{i}": a for i, a in enumerate(p.adapter)})
        out.update({f"velocity.{k}": v for k, v in p.velocity.items()})
        return out

    def load_state(self, state: dict) -> None:
        p = self.params
        self.step = int(state["step"])
        p.W, p.b = np.asarray(state["W"], np.float32), np.asarray(state["b"], np.float32)
        p.adapter = [np.asarray(state[f"adapter.{i}"], np.float32) for i in range(len(p.adapter))]
        if p.head is not None:
            p.head.u, p.head.sigma = np.asarray(state["cosine.u"], np.float32), np.float32(state["cosine.sigma"])
        p.velocity = {k[len("velocity."):]: np.asarray(v, np.float32) for k, v in state.items() if k.startswith("velocity.")}
