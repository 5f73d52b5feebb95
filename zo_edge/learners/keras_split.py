"""The float learners' view of a zoo Keras model: frozen prefix | adapter + frozen rest | classifier.

Why this exists: float-mode ZO-FC evaluates the same batch 2q+1 times per step with different adapter
values, and the first-order baselines need gradients with respect to the adapter and the classifier.
Running the whole model each time (and writing perturbed values into its variables) would be slow and
would mutate the model. So the model is split once at the adapter:

* ``prefix(x)``: everything that does not depend on the adapter, run once per sample. It returns the
  *boundary*: ``[cut, block_out]`` (the adapter's input and the output of the block it sits beside),
  or ``[cut]`` for ``adapter_position="after"`` where the two are the same tensor. ``boundary[0]`` is
  always the cut.
* ``features(boundary, params)``: ``rest(block_out + up(relu(down(cut))))``, the classifier's input,
  with the adapter's weights given as arguments. ``rest`` is the frozen part between ``adapter_add``
  and ``classifier`` (pooling, and for earlier positions the following blocks, BatchNorm in inference
  mode). The adapter itself is plain TF math on the given tensors, so the model's own variables are
  never written and GradientTape can differentiate with respect to the given values.
* the classifier ``h @ W + b`` is left to the caller (its weights are the learner's state), except in
  ``loss_and_grads``, which takes W and b explicitly.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from zo_edge.errors import ZoEdgeError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ADAPTER_NAMES = ["adapter_down.kernel", "adapter_down.bias", "adapter_up.kernel", "adapter_up.bias"]


class KerasSplit:
    """A zoo model split at its adapter, for float learners (see the module docstring).

    All inputs and outputs are float32 numpy arrays. Nothing here changes the model's weights.
    """

    def __init__(self, model):
        import keras
        import tensorflow as tf

        names = {layer.name for layer in model.layers}
        if "adapter_up" not in names or "adapter_down" not in names or "adapter_add" not in names:
            raise ZoEdgeError(
                f"model {model.name!r} has no adapter (layers adapter_down/adapter_up/adapter_add); "
                "build it with an adapter_position other than None"
            )
        self.model = model
        self.adapter_names = list(ADAPTER_NAMES)
        down, up, add = (model.get_layer(n) for n in ("adapter_down", "adapter_up", "adapter_add"))
        classifier = model.get_layer("classifier")
        # adapter_add = Add([block_out, up(...)]): find block_out as the input that is not up's output
        add_inputs = list(add.input)
        block_out = next(t for t in add_inputs if t is not up.output)
        cut = down.input
        self.after = block_out is cut  # "after" position: the adapter runs on the pooled vector

        # Keras 3 builds sub-models from intermediate KerasTensors (it clones them into new inputs)
        outputs = [cut] if self.after else [cut, block_out]
        self._prefix_model = keras.Model(model.input, outputs, name=f"{model.name}_prefix")
        if add.output is classifier.input:
            # nothing between the adapter and the classifier; keras.Model(t, t) is refused anyway
            self._rest = None
        else:
            self._rest = keras.Model(add.output, classifier.input, name=f"{model.name}_rest")
        self.feature_dim = int(classifier.input.shape[-1])
        self.num_classes = int(classifier.units)

        boundary_spec = [tf.TensorSpec([None, *t.shape[1:]], tf.float32) for t in outputs]
        param_shapes = [tuple(int(d) for d in v.shape) for v in (down.kernel, down.bias, up.kernel, up.bias)]
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

    # ------------------------------------------------------------------------------------------------
    # values

    def adapter_params(self) -> list[np.ndarray]:
        """The adapter's current weights in the model, as float32 copies, in ``adapter_names`` order."""
        down, up = self.model.get_layer("adapter_down"), self.model.get_layer("adapter_up")
        return [np.array(v, dtype=np.float32) for v in (*down.get_weights(), *up.get_weights())]

    def classifier_params(self) -> tuple[np.ndarray, np.ndarray]:
        """The classifier's (W [features, classes], b [classes]) as float32 copies."""
        kernel, bias = self.model.get_layer("classifier").get_weights()
        return np.array(kernel, dtype=np.float32), np.array(bias, dtype=np.float32)

    # ------------------------------------------------------------------------------------------------
    # forward passes

    def prefix(self, x: np.ndarray, batch_size: int = 256) -> list[np.ndarray]:
        """The boundary activations for samples ``x`` [N, ...]: ``[cut, block_out]`` (``[cut]`` for "after")."""
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
        """The classifier's input h [N, F] with the adapter set to ``adapter_params``."""
        return self.features_many(boundary, [adapter_params])[0]

    def features_many(self, boundary: list[np.ndarray], params_list: list[list[np.ndarray]]) -> np.ndarray:
        """h [V, N, F] for V adapter variants, in one call (the variants are stacked into the batch)."""
        stacked = [np.stack([np.asarray(p[j], dtype=np.float32) for p in params_list]) for j in range(4)]
        return np.asarray(self._features_many_fn(self._boundary(boundary), stacked))

    def loss_and_grads(self, boundary, adapter_params, W, b, y, allowed_classes, train_adapter: bool = True):
        """Mean softmax cross-entropy of ``h @ W + b`` over the allowed classes, and its gradients.

        Logits of classes not in ``allowed_classes`` are set to -inf (probability 0, zero gradient), as
        the reference does for old classes. ``y`` are global labels, all allowed. Returns
        ``(loss, adapter grads in adapter_names order or None, dL/dW, dL/db)``.
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

        cut = boundary[0]
        block_out = cut if self.after else boundary[1]
        wd, bd, wu, bu = params
        v, n = tf.shape(wd)[0], tf.shape(cut)[0]
        # a 1x1 convolution is a matmul over the channel axis: pixels become rows [N*H*W, Cin] and the
        # kernels [V, Cin, Cout]; a broadcast batched matmul is faster here than einsum with "..."
        rows = tf.reshape(cut, [1, -1, cut.shape[-1]])
        wd = tf.reshape(wd, [v, wd.shape[-2], wd.shape[-1]])
        wu = tf.reshape(wu, [v, wu.shape[-2], wu.shape[-1]])
        hidden = tf.nn.relu(tf.matmul(rows, wd) + bd[:, None, :])
        delta = tf.matmul(hidden, wu) + bu[:, None, :]  # [V, N*H*W, Cout]
        added = block_out[None] + tf.reshape(delta, [v, n, *block_out.shape[1:]])
        if self._rest is None:
            return added
        # run the frozen rest once on all variants: fold V into the batch axis and back
        # (static trailing dims: Keras layers need to know the channel count when traced)
        flat = tf.reshape(added, [-1, *added.shape[2:]])
        h = self._rest(flat, training=False)
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
