"""The float learners' view of a Keras model with N adapters: frozen prefix | adapters + frozen rest | classifier.

Why this exists: float-mode ZO-FC evaluates the same batch 2q+1 times per step with different adapter
values, and the first-order baselines need gradients with respect to the adapters and the classifier.
Running the whole model each time (and writing perturbed values into its variables) would be slow and
would mutate the model. So the model is split once, before its first adapter:

* ``prefix(x)``: everything that does not depend on any adapter, run once per sample. It returns the
  *boundary*: every tensor the rest reads that is computed before the adapters. ``boundary[0]`` is
  the first adapter's cut (the input of its ``down``); the others follow in graph order: the output
  of the block the first adapter sits beside (zoo models), a skip connection that jumps over an
  adapter, ... A zoo adapter after the pooling, or an adapter on a tensor, reads one tensor: ``[cut]``.
* ``features(boundary, params)``: the classifier's input h, computed by a *replay* of the Keras graph
  from the boundary to the classifier (``Functional._run_through_graph`` on the sub-model between
  them): frozen layers are called as they are, in inference mode (BatchNorm on its moving
  statistics, Dropout off), and each adapter's ``down`` and ``up`` layer is replaced by the same
  pointwise projection with weight tensors given as arguments. The model's own variables are never
  written, and GradientTape can differentiate with respect to the given values.
* ``features_many(boundary, params_list)``: V variants at once, V folded into the batch axis, so every
  frozen layer runs once on [V·N, ...]; each adapter projection uses its own variant's weights on its
  slice of the batch. A boundary tensor is tiled V times when a frozen layer first reads it; an
  adapter projection reading it broadcasts its N samples to the V kernels instead (no copy).
* the classifier ``h @ W + b`` is left to the caller (its weights are the learner's state), except in
  ``loss_and_grads``, which takes W and b explicitly.

Adapters are given as ``[{"down": layer name, "up": layer name, "add": layer name}, ...]`` in graph
order (``zo_edge.models.adapters_of`` finds the zoo's and ``keras_edit.attach_adapters``'s by their
``adapter{i}_*`` names when none are given). ``down`` and ``up`` must be linear 1×1 Conv2D or Dense
layers with a bias; their parameters are the 4N arrays of ``adapter_params()``: down kernel, down
bias, up kernel, up bias, adapter by adapter, in Keras layout.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from zo_edge.errors import ZoEdgeError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PARAMS_PER_ADAPTER = ("down.kernel", "down.bias", "up.kernel", "up.bias")


class KerasSplit:
    """A Keras model split before its first adapter, for float learners (see the module docstring).

    All inputs and outputs are float32 numpy arrays. Nothing here changes the model's weights.
    """

    def __init__(self, model, adapters: list[dict] | None = None, classifier: str = "classifier"):
        from zo_edge.models import adapters_of, configure_tensorflow

        configure_tensorflow()
        import keras
        import tensorflow as tf

        if adapters is None:
            adapters = adapters_of(model)
        if not adapters:
            raise ZoEdgeError(
                f"model {model.name!r} has no adapter (layers adapter0_down/adapter0_up/adapter0_add); build it "
                "with an adapter_position other than None or attach adapters with zo_edge.keras_edit"
            )
        if len(model.inputs) != 1:
            raise ZoEdgeError(f"model {model.name!r} has {len(model.inputs)} inputs; the float learners need one")
        self.model = model
        self.adapters = [{key: _layer(model, a, key).name for key in ("down", "up", "add")} for a in adapters]
        self._downs = [_projection(model, a["down"]) for a in self.adapters]
        self._ups = [_projection(model, a["up"]) for a in self.adapters]
        for a, up in zip(self.adapters, self._ups):
            if not any(t is up.output for t in _as_list(model.get_layer(a["add"]).input)):
                raise ZoEdgeError(f"adapter layer {a['add']!r} does not add {a['up']!r}'s output")
        self.adapter_names = [f"{layer.name}.{kind}" for down, up in zip(self._downs, self._ups)
                              for layer in (down, up) for kind in ("kernel", "bias")]
        head = _layer(model, {"classifier": classifier}, "classifier")
        if head.__class__.__name__ != "Dense":
            raise ZoEdgeError(f"classifier {classifier!r} is a {head.__class__.__name__}, not a Dense layer")

        boundary = self._boundary_tensors(head.input)
        # Keras 3 builds sub-models from intermediate KerasTensors (it clones them into new inputs)
        self._prefix_model = keras.Model(model.inputs[0], boundary, name=f"{model.name}_prefix")
        self._rest = keras.Model(boundary, head.input, name=f"{model.name}_rest")
        self.feature_dim = int(head.input.shape[-1])
        self.num_classes = int(head.units)
        self._classifier = head

        boundary_spec = [tf.TensorSpec([None, *t.shape[1:]], tf.float32) for t in boundary]
        param_shapes = [tuple(int(d) for d in v.shape) for layer in _pairs(self._downs, self._ups)
                        for v in (layer.kernel, layer.bias)]
        single_spec = [tf.TensorSpec(s, tf.float32) for s in param_shapes]
        stacked_spec = [tf.TensorSpec([None, *s], tf.float32) for s in param_shapes]

        # input signatures: one trace per function, whatever the batch size or number of variants
        self._prefix_fn = tf.function(
            lambda x: self._prefix_model(x, training=False),
            input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)],
        )
        self._features_many_fn = tf.function(self._suffix, input_signature=[boundary_spec, stacked_spec])
        head_spec = [
            tf.TensorSpec([self.feature_dim, self.num_classes], tf.float32),
            tf.TensorSpec([self.num_classes], tf.float32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([self.num_classes], tf.bool),
        ]
        # one traced function per value of train_adapter (a Python flag, not a tensor)
        self._grads_fn = {
            flag: tf.function(functools.partial(self._loss_grads, train_adapter=flag),
                              input_signature=[boundary_spec, single_spec, *head_spec])
            for flag in (True, False)
        }

    def _boundary_tensors(self, features) -> list:
        """The tensors computed before every adapter that the rest (adapters to ``features``) reads.

        A node belongs to the rest if it is an adapter's ``down`` or reads a tensor the rest computes;
        everything the rest reads from outside it is the boundary. Walks the graph back from
        ``features`` through each tensor's ``_keras_history`` (shared layers are separate nodes there).
        """
        downs = {id(layer) for layer in self._downs}
        in_rest: dict[int, bool] = {}
        order: dict[int, int] = {}  # tensor id -> position in a post-order walk (producers first)
        tensors: dict[int, object] = {}
        reads: set[int] = set()  # tensors read by rest nodes

        def visit(t) -> bool:
            if id(t) in in_rest:
                return in_rest[id(t)]
            operation, node_index, _ = t._keras_history
            node = operation._inbound_nodes[node_index]
            inputs = list(node.input_tensors)
            rest = any([visit(x) for x in inputs]) or id(operation) in downs
            if rest:
                reads.update(id(x) for x in inputs)
                tensors.update((id(x), x) for x in inputs)
            in_rest[id(t)] = rest
            order[id(t)] = len(order)
            return rest

        if not visit(features):
            raise ZoEdgeError(f"the classifier's input does not depend on the adapters {self.adapters}")
        first_cut = self._downs[0].input
        boundary = sorted((i for i in reads if not in_rest[i] and i != id(first_cut)), key=order.__getitem__)
        if in_rest.get(id(first_cut), True):
            raise ZoEdgeError(f"adapter layer {self.adapters[0]['down']!r} is not the first adapter before the "
                              "classifier; list the adapters in graph order")
        return [first_cut] + [tensors[i] for i in boundary]

    # ------------------------------------------------------------------------------------------------
    # values

    def adapter_params(self) -> list[np.ndarray]:
        """The adapters' current weights in the model, as float32 copies, in ``adapter_names`` order."""
        return [np.array(w, dtype=np.float32) for layer in _pairs(self._downs, self._ups)
                for w in layer.get_weights()]

    def classifier_params(self) -> tuple[np.ndarray, np.ndarray]:
        """The classifier's (W [features, classes], b [classes]) as float32 copies."""
        kernel, bias = self._classifier.get_weights()
        return np.array(kernel, dtype=np.float32), np.array(bias, dtype=np.float32)

    # ------------------------------------------------------------------------------------------------
    # forward passes

    def prefix(self, x: np.ndarray, batch_size: int = 256) -> list[np.ndarray]:
        """The boundary activations for samples ``x`` [N, ...] (see the module docstring)."""
        x = np.asarray(x, dtype=np.float32)
        parts = [[] for _ in self._prefix_model.outputs]
        for i in range(0, len(x), batch_size):
            out = self._prefix_fn(x[i : i + batch_size])
            out = out if isinstance(out, (list, tuple)) else [out]
            for acc, o in zip(parts, out):
                acc.append(np.asarray(o))
        shapes = [(0, *t.shape[1:]) for t in self._prefix_model.outputs]
        return [np.concatenate(acc) if acc else np.zeros(s, np.float32) for acc, s in zip(parts, shapes)]

    def features(self, boundary: list[np.ndarray], adapter_params: list[np.ndarray]) -> np.ndarray:
        """The classifier's input h [N, F] with the adapters set to ``adapter_params`` (4N arrays)."""
        return self.features_many(boundary, [adapter_params])[0]

    def features_many(self, boundary: list[np.ndarray], params_list: list[list[np.ndarray]]) -> np.ndarray:
        """h [V, N, F] for V adapter variants (each 4N arrays), in one call (stacked into the batch)."""
        count = len(self.adapter_names)
        if any(len(p) != count for p in params_list):
            raise ZoEdgeError(f"each adapter variant needs {count} arrays ({', '.join(self.adapter_names)})")
        stacked = [np.stack([np.asarray(p[j], dtype=np.float32) for p in params_list]) for j in range(count)]
        return np.asarray(self._features_many_fn(self._boundary(boundary), stacked))

    def loss_and_grads(self, boundary, adapter_params, W, b, y, allowed_classes, train_adapter: bool = True):
        """Mean softmax cross-entropy of ``h @ W + b`` over the allowed classes, and its gradients.

        Logits of classes not in ``allowed_classes`` are set to -inf (probability 0, zero gradient), as
        the reference does for old classes. ``y`` are global labels, all allowed. Returns
        ``(loss, adapter grads in adapter_names order (4N arrays) or None, dL/dW, dL/db)``.
        """
        y = np.asarray(y, dtype=np.int32).reshape(-1)
        allowed = np.zeros(self.num_classes, dtype=bool)
        allowed[np.asarray(allowed_classes, dtype=np.int64)] = True
        if not allowed[y].all():
            bad = sorted({int(c) for c in y[~allowed[y]]})
            raise ZoEdgeError(f"labels {bad} are not among the allowed classes: their loss would be infinite")
        params = [np.asarray(p, dtype=np.float32) for p in adapter_params]
        loss, grads, dW, db = self._grads_fn[bool(train_adapter)](
            self._boundary(boundary), params, np.asarray(W, np.float32), np.asarray(b, np.float32), y, allowed)
        grads = [np.asarray(g) for g in grads] if train_adapter else None
        return float(loss), grads, np.asarray(dW), np.asarray(db)

    # ------------------------------------------------------------------------------------------------
    # TF core (traced once by tf.function)

    def _boundary(self, boundary):
        import tensorflow as tf

        # tf tensors pass through: a caller reusing one batch many times can convert it once
        boundary = [t if isinstance(t, tf.Tensor) else np.asarray(t, dtype=np.float32) for t in boundary]
        if len(boundary) != len(self._prefix_model.outputs):
            raise ZoEdgeError(
                f"boundary has {len(boundary)} arrays; prefix() returns {len(self._prefix_model.outputs)}")
        return boundary

    def _suffix(self, boundary, params):
        """h [V, N, F] for stacked adapter params (leading axis V) on one boundary batch of N samples."""
        import tensorflow as tf
        from keras.src.models.functional import operation_fn as keras_operation_fn

        v, n = tf.shape(params[0])[0], tf.shape(boundary[0])[0]
        given = {}
        for i, (down, up) in enumerate(zip(self._downs, self._ups)):
            given[id(down)] = params[4 * i : 4 * i + 2]
            given[id(up)] = params[4 * i + 2 : 4 * i + 4]
        # The rest runs once on all variants, V folded into the batch ([V*N, ...], variant-major).
        # Boundary tensors are N samples; each is tiled V times when a frozen layer first reads it
        # (an adapter projection broadcasts over them instead, without the copy).
        single = {id(b): b for b in boundary}
        tiled = {}

        def folded(t):
            if id(t) not in single:
                return t
            if id(t) not in tiled:
                tiled[id(t)] = tf.tile(t, [v] + [1] * (len(t.shape) - 1))
            return tiled[id(t)]

        def operation(op):
            if id(op) in given:
                kernel, bias = given[id(op)]
                return lambda x, *_, **__: _pointwise(kernel, bias, x, variants=v, shared=id(x) in single)
            # what Functional.call(training=False) does for every other layer
            call = keras_operation_fn(op, training=False)
            return lambda *args, **kwargs: call(*tf.nest.map_structure(folded, args), **kwargs)

        h = self._rest._run_through_graph(boundary, operation_fn=operation)
        h = h[0] if isinstance(h, (list, tuple)) else h
        return tf.reshape(h, [v, n, self.feature_dim])

    def _loss_grads(self, boundary, params, W, b, y, allowed, train_adapter):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch([*params, W, b])
            h = self._suffix(boundary, [p[None] for p in params])[0]
            if not train_adapter:
                h = tf.stop_gradient(h)
            logits = tf.matmul(h, W) + b
            # -inf, not a large negative number: masked classes get exactly probability 0 and gradient 0
            logits = tf.where(allowed[None, :], logits, tf.constant(-np.inf, tf.float32))
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        if train_adapter:
            *grads, dW, db = tape.gradient(loss, [*params, W, b])
        else:
            dW, db = tape.gradient(loss, [W, b])
            grads = []
        return loss, grads, dW, db


def _pointwise(kernel, bias, x, variants, shared: bool):
    """A 1×1 Conv2D or Dense on the last axis of ``x`` with V stacked kernels [V, 1, 1, Cin, Cout] or
    [V, Cin, Cout] and biases [V, Cout]: a batched matmul over the pixels. ``x`` is [V*N, ..., Cin]
    (variant v's slice of the batch meets kernel v) or, ``shared``, [N, ..., Cin] for every variant.
    Returns [V*N, ..., Cout]."""
    import tensorflow as tf

    cin, cout = int(kernel.shape[-2]), int(kernel.shape[-1])
    # static trailing dims: the layers after this one need to know the channel count when traced
    rows = tf.reshape(x, [1 if shared else variants, -1, cin])
    out = tf.matmul(rows, tf.reshape(kernel, [variants, cin, cout])) + bias[:, None, :]
    return tf.reshape(out, [-1, *x.shape[1:-1], cout])


def _pairs(downs, ups):
    return [layer for pair in zip(downs, ups) for layer in pair]


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _layer(model, spec: dict, key: str):
    if key not in spec:
        raise ZoEdgeError(f"adapter {spec} names no {key!r} layer")
    try:
        return model.get_layer(spec[key])
    except ValueError:
        raise ZoEdgeError(f"model {model.name!r} has no layer {spec[key]!r} ({key})") from None


def _projection(model, name: str):
    """An adapter's down or up layer: a linear 1×1 Conv2D or Dense with a bias."""
    layer = model.get_layer(name)
    kind = layer.__class__.__name__
    config = layer.get_config()
    pointwise = kind == "Dense" or (kind == "Conv2D" and tuple(config["kernel_size"]) == (1, 1)
                                    and tuple(config["strides"]) == (1, 1) and tuple(config["dilation_rate"]) == (1, 1))
    if not pointwise or config.get("activation") != "linear" or not config.get("use_bias"):
        raise ZoEdgeError(f"adapter layer {name!r} is a {kind} ({config.get('activation')}); an adapter projection is "
                          "a linear 1x1 Conv2D or Dense with a bias")
    return layer
