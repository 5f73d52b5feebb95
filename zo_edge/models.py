"""The Keras (float) model zoo: small Cortex-M backbones with one residual adapter and a logits head.

Every model has the same three named parts, which the quantiser, the QGraph and the learners find by
name (and, in the int8 graph, by connectivity):

* a backbone: a stem, then a list of *blocks*, then pooling (global average pooling or a Flatten);
* one **adapter** in parallel with one block: ``block(x) + up(relu(down(x)))``. ``down`` is a 1×1
  Conv2D to ``adapter_width`` channels (layer ``adapter_down``), ``adapter_relu`` a ReLU, ``up`` a 1×1
  Conv2D back to the block's channels (layer ``adapter_up``, kernel and bias zero-initialised, so the
  adapter starts as the identity of the block) and ``adapter_add`` the sum. The adapter's input is the
  block's input: the *cut*. With ``adapter_position="after"`` the adapter sits after the pooling,
  with Dense down/up layers on the pooled vector (the "block" is then the identity);
* a ``classifier``: Dense(num_classes) producing logits (no softmax in the graph).

``pretrain`` trains the backbone and the base-class rows of the classifier on the base task only; the
adapter is frozen (it stays the identity) and the rows of classes not seen yet are initialised at the
trained rows' magnitude, so that they start neutral and no quantisation channel is all-zero.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from zo_edge.errors import ZoEdgeError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARCHS = {
    "ds-cnn": (
        "DS-CNN keyword-spotting backbone (Hello Edge style, small) for MFCC input: Conv2D 10x4 stride 2 "
        "to 64 channels + BN + ReLU, then 4 depthwise-separable blocks (DepthwiseConv2D 3x3 + BN + ReLU, "
        "Conv2D 1x1 + BN + ReLU, 64 channels), global average pooling, Dense logits"
    ),
    "digits-cnn": (
        "small CNN for 8x8 images: Conv2D 3x3 stride 2 to 32 channels + BN + ReLU, then 2 blocks "
        "(Conv2D 3x3, 32 channels + BN + ReLU), Flatten, Dense logits"
    ),
}

DEFAULT_ARCH = {"spoken-digits": "ds-cnn", "digits": "digits-cnn"}

# Pretraining defaults per architecture: epochs, batch size, Adam learning rate.
PRETRAIN_DEFAULTS = {
    "ds-cnn": {"epochs": 15, "batch_size": 32, "learning_rate": 3e-3},
    "digits-cnn": {"epochs": 15, "batch_size": 32, "learning_rate": 3e-3},
}

ADAPTER_LAYERS = ("adapter_down", "adapter_relu", "adapter_up", "adapter_add")
TRAINABLE_LAYERS = ("adapter_down", "adapter_up", "classifier")

_threads_configured = False


def import_tensorflow_quietly():
    """``import tensorflow`` with file descriptor 2 muted for the duration.

    TensorFlow's C++ start-up lines (oneDNN notices, absl's "before InitializeLog" warning) bypass
    TF_CPP_MIN_LOG_LEVEL and would break our one-line-error promise on stderr; Python exceptions
    still propagate.
    """
    import sys

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf
            import keras  # noqa: F401  (Keras' own start-up happens here too)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return tf


def configure_tensorflow(threads: int | None = None) -> None:
    """Pin TensorFlow to this machine's cores (once per process; later calls are no-ops).

    TensorFlow only accepts thread settings before its runtime starts; if something already started
    it, the settings in force stay and this is silently skipped.
    """
    global _threads_configured
    if _threads_configured:
        return
    tf = import_tensorflow_quietly()
    threads = threads or max(1, min(os.cpu_count() or 1, 8))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # runtime already initialised: keep what it has
        pass
    _threads_configured = True


def default_arch(dataset_name: str) -> str:
    """The zoo architecture made for a bundled dataset."""
    try:
        return DEFAULT_ARCH[dataset_name]
    except KeyError:
        raise ZoEdgeError(
            f"no default architecture for dataset {dataset_name!r}; pass one of {sorted(ARCHS)} explicitly"
        ) from None


# ----------------------------------------------------------------------------------------------------
# architectures


@dataclass
class _Arch:
    stem: Callable  # (x) -> x
    blocks: list  # list of (x) -> x, one per block
    pool: Callable  # (x) -> vector
    description: str


def _conv_bn_relu(layers, x, filters, kernel, strides, name):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _ds_block(layers, x, filters, name):
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_pw_bn")(x)
    return layers.ReLU(name=f"{name}_pw_relu")(x)


def _arch(name: str, input_shape) -> _Arch:
    configure_tensorflow()  # imports TensorFlow quietly before Keras does
    from keras import layers

    if name == "ds-cnn":
        filters = 64
        return _Arch(
            stem=lambda x: _conv_bn_relu(layers, x, filters, (10, 4), 2, "stem"),
            blocks=[(lambda x, i=i: _ds_block(layers, x, filters, f"ds{i}")) for i in range(4)],
            pool=lambda x: layers.GlobalAveragePooling2D(name="pool")(x),
            description=ARCHS[name],
        )
    if name == "digits-cnn":
        filters = 32
        return _Arch(
            stem=lambda x: _conv_bn_relu(layers, x, filters, 3, 2, "stem"),
            blocks=[(lambda x, i=i: _conv_bn_relu(layers, x, filters, 3, 1, f"block{i}")) for i in range(2)],
            pool=lambda x: layers.Flatten(name="flatten")(x),
            description=ARCHS[name],
        )
    raise ZoEdgeError(f"unknown architecture {name!r}; choose one of {sorted(ARCHS)}")


def parse_adapter_position(position, num_blocks: int):
    """Resolve an adapter position to a block index (0-based) or ``"after"`` (or None: no adapter).

    Accepts "last" (the last block), "after" (after the pooling), an integer block index (negative
    counts from the end) or its string form ("2", "-1").
    """
    if position is None or (isinstance(position, str) and position.lower() == "none"):
        return None
    if isinstance(position, str):
        p = position.strip().lower()
        if p == "last":
            return num_blocks - 1
        if p == "after":
            return "after"
        try:
            position = int(p)
        except ValueError:
            raise ZoEdgeError(
                f"adapter position {position!r} is not understood; use 'last', 'after' or a block index "
                f"0..{num_blocks - 1}"
            ) from None
    if isinstance(position, (bool, float)) or not isinstance(position, (int, np.integer)):
        raise ZoEdgeError(
            f"adapter position {position!r} is not understood; use 'last', 'after' or a block index "
            f"0..{num_blocks - 1}"
        )
    index = int(position)
    if not -num_blocks <= index < num_blocks:
        raise ZoEdgeError(
            f"adapter position {index} is out of range: this model has blocks 0..{num_blocks - 1} "
            "(or use 'last' / 'after')"
        )
    return index % num_blocks


def build_model(arch: str, input_shape, num_classes: int, adapter_position="last", adapter_width: int = 8,
                seed: int = 0):
    """Build a zoo model (float Keras) with one residual adapter and a logits classifier.

    ``adapter_position``: "last" (default: the last block), an integer block index, "after" (after the
    pooling, Dense adapter on the pooled vector) or None (no adapter, e.g. for comparisons). The
    adapter's up-projection is zero-initialised, so the model starts exactly as the model without it.
    Seeds Keras' global generator with ``seed`` (``keras.utils.set_random_seed``).
    """
    configure_tensorflow()  # first: it imports TensorFlow without its start-up chatter
    import keras
    from keras import layers

    if arch not in ARCHS:
        raise ZoEdgeError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ZoEdgeError(
            f"input shape {input_shape} is not (height, width, channels); the zoo models take 2-D feature maps "
            "such as MFCC frames × coefficients × 1"
        )
    if int(num_classes) < 2:
        raise ZoEdgeError(f"num_classes must be at least 2 (got {num_classes})")
    if int(adapter_width) < 1:
        raise ZoEdgeError(f"adapter width must be a positive number of channels (got {adapter_width})")
    adapter_width = int(adapter_width)
    keras.utils.set_random_seed(int(seed))

    spec = _arch(arch, input_shape)
    position = parse_adapter_position(adapter_position, len(spec.blocks))

    inputs = keras.Input(shape=input_shape, name="input")
    x = spec.stem(inputs)
    for i, block in enumerate(spec.blocks):
        y = block(x)
        if position == i:
            cin, cout = x.shape[-1], y.shape[-1]
            if tuple(x.shape[1:]) != tuple(y.shape[1:]):
                raise ZoEdgeError(
                    f"block {i} of {arch} maps {tuple(x.shape[1:])} to {tuple(y.shape[1:])}; a parallel adapter "
                    f"needs the block's input and output shapes (channels {cin} vs {cout}) to match — choose "
                    "another block or 'after'"
                )
            y = _adapter(layers, x, y, adapter_width, conv=True)
        x = y
    x = spec.pool(x)
    if position == "after":
        x = _adapter(layers, x, x, adapter_width, conv=False)
    logits = layers.Dense(int(num_classes), name="classifier")(x)
    return keras.Model(inputs, logits, name=arch)


def _adapter(layers, cut, block_out, width, conv: bool):
    """``block_out + up(relu(down(cut)))`` with a zero-initialised ``up``."""
    channels = int(block_out.shape[-1])
    if conv:
        down = layers.Conv2D(width, 1, name="adapter_down")
        up = layers.Conv2D(channels, 1, kernel_initializer="zeros", bias_initializer="zeros", name="adapter_up")
    else:
        down = layers.Dense(width, name="adapter_down")
        up = layers.Dense(channels, kernel_initializer="zeros", bias_initializer="zeros", name="adapter_up")
    h = layers.ReLU(name="adapter_relu")(down(cut))
    return layers.Add(name="adapter_add")([block_out, up(h)])


# ----------------------------------------------------------------------------------------------------
# introspection


def has_adapter(model) -> bool:
    return any(layer.name == "adapter_up" for layer in model.layers)


def adapter_info(model) -> dict:
    """Where the adapter sits and how big it is (JSON-ready)."""
    if not has_adapter(model):
        return {"present": False}
    down, up = model.get_layer("adapter_down"), model.get_layer("adapter_up")
    kind = "conv1x1" if len(down.get_weights()[0].shape) == 4 else "dense"
    cut_shape = [int(d) for d in down.input.shape[1:]]
    return {
        "present": True,
        "kind": kind,
        "width": int(down.get_weights()[0].shape[-1]),
        "channels": int(up.get_weights()[0].shape[-1]),
        "cut_shape": cut_shape,
        "params": int(sum(w.size for w in down.get_weights()) + sum(w.size for w in up.get_weights())),
    }


def param_counts(model) -> dict:
    """Parameter counts: total (Keras), deployed (BatchNorm folded away), adapter, classifier."""
    total = int(model.count_params())
    bn = sum(int(sum(w.size for w in layer.get_weights())) for layer in model.layers
             if layer.__class__.__name__ == "BatchNormalization")
    # folding a BN after a bias-free conv adds one bias per channel (half of gamma/beta/mean/var's 4)
    deployed = total - bn + bn // 4
    counts = {"total": total, "deployed": deployed}
    for name in ("adapter_down", "adapter_up", "classifier"):
        try:
            counts[name] = int(sum(w.size for w in model.get_layer(name).get_weights()))
        except ValueError:
            counts[name] = 0
    counts["adapter"] = counts["adapter_down"] + counts["adapter_up"]
    return counts


def without_adapter(model):
    """The same model (same weights) with the adapter removed: what the adapter must start equal to."""

    if model.name not in ARCHS:
        raise ZoEdgeError(f"model {model.name!r} was not built by zo_edge.models.build_model")
    bare = build_model(model.name, model.input_shape[1:], model.get_layer("classifier").units, adapter_position=None)
    for layer in bare.layers:
        if layer.get_weights():
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return bare


def resolve_adapter_position(arch: str, position):
    """The block index (or "after", or None) that ``position`` names in ``arch``."""
    return parse_adapter_position(position, len(_arch(arch, None).blocks))


# ----------------------------------------------------------------------------------------------------
# pretraining


def pretrain(model, task, epochs: int | None = None, seed: int = 0, batch_size: int | None = None,
             verbose: int = 0, learning_rate: float | None = None) -> dict:
    """Train ``model`` on the base task only (float), in place; return a JSON-ready summary.

    Only the base classes' logits are used: a temporary head with one row per base class is trained on
    the classifier's input, then copied into the base rows of ``classifier``. The other rows are drawn
    at the planned magnitude (random directions with norms drawn from the trained rows' norm
    statistics; biases equal to the mean base bias), so unseen classes start neutral and no
    quantisation channel is all-zero. The adapter is frozen (it stays the identity).
    """
    import keras

    configure_tensorflow()
    defaults = PRETRAIN_DEFAULTS.get(model.name, PRETRAIN_DEFAULTS["ds-cnn"])
    epochs = int(defaults["epochs"] if epochs is None else epochs)
    batch_size = int(defaults["batch_size"] if batch_size is None else batch_size)
    learning_rate = float(defaults["learning_rate"] if learning_rate is None else learning_rate)
    if epochs < 0:
        raise ZoEdgeError(f"epochs must be >= 0 (got {epochs})")

    classes = [int(c) for c in task.classes]
    num_classes = int(model.get_layer("classifier").units)
    if not classes or max(classes) >= num_classes or min(classes) < 0:
        raise ZoEdgeError(f"base classes {classes} do not fit a classifier with {num_classes} outputs")
    if len(task.x_train) == 0:
        raise ZoEdgeError(f"base task {task.name!r} has no training samples")
    remap = np.full(num_classes, -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    y_train = remap[np.asarray(task.y_train, dtype=np.int64)]
    if (y_train < 0).any():
        raise ZoEdgeError(f"base task {task.name!r} has training labels outside its classes {classes}")

    keras.utils.set_random_seed(int(seed))
    classifier = model.get_layer("classifier")
    features = classifier.input
    head = keras.layers.Dense(len(classes), name="base_head")
    train_model = keras.Model(model.inputs, head(features), name=f"{model.name}_pretrain")
    frozen = [layer for layer in model.layers if layer.name in ADAPTER_LAYERS]
    was_trainable = [layer.trainable for layer in frozen]
    for layer in frozen:
        layer.trainable = False
    train_model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=max(1, epochs * -(-len(y_train) // batch_size)), alpha=0.01)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    try:
        history = train_model.fit(
            np.asarray(task.x_train, dtype=np.float32), y_train, epochs=epochs, batch_size=batch_size,
            shuffle=True, verbose=verbose,
        )
    finally:
        for layer, flag in zip(frozen, was_trainable):
            layer.trainable = flag
    seconds = time.perf_counter() - start

    # base rows from the trained head; other rows at the trained rows' magnitude
    w_head, b_head = head.get_weights()  # [F, B], [B]
    kernel, bias = classifier.get_weights()
    rng = np.random.default_rng([int(seed), 0x5EED])
    norms = np.linalg.norm(w_head, axis=0)
    lo, hi = float(norms.min()), float(norms.max())
    mu, sd = float(norms.mean()), float(norms.std())
    others = [c for c in range(num_classes) if c not in classes]
    kernel = np.array(kernel, dtype=np.float32)
    bias = np.array(bias, dtype=np.float32)
    kernel[:, classes] = w_head
    bias[classes] = b_head
    for c in others:
        direction = rng.standard_normal(kernel.shape[0])
        direction /= np.linalg.norm(direction)
        norm = float(np.clip(rng.normal(mu, sd), lo, hi)) if hi > 0 else 0.0
        kernel[:, c] = direction * norm
        bias[c] = float(b_head.mean())
    classifier.set_weights([kernel, bias])

    summary = {
        "classes": classes,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "optimizer": "adam, cosine decay to 1% over the run",
        "seed": int(seed),
        "seconds": round(seconds, 3),
        "train_samples": int(len(y_train)),
        "train_loss": float(history.history["loss"][-1]) if epochs else None,
        "train_accuracy": float(history.history["accuracy"][-1]) if epochs else None,
        "new_rows": {"count": len(others), "norm_mean": mu, "norm_std": sd, "norm_min": lo, "norm_max": hi,
                     "bias": float(b_head.mean()) if len(others) else None},
    }
    summary.update(evaluate_base(model, task))
    return summary


def predict_logits(model, x, batch_size: int = 256) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    # direct calls, not model.predict: predict builds a new tf.function per model (retracing warnings)
    return np.concatenate([np.asarray(model(x[i : i + batch_size], training=False))
                           for i in range(0, len(x), batch_size)])


def evaluate_base(model, task) -> dict:
    """Base-task test accuracy: argmax over the base classes' logits, and over all logits."""
    classes = np.asarray([int(c) for c in task.classes])
    y = np.asarray(task.y_test, dtype=np.int64)
    if len(y) == 0:
        return {"base_accuracy": None, "base_accuracy_all_logits": None, "test_samples": 0}
    logits = predict_logits(model, task.x_test)
    masked = classes[np.argmax(logits[:, classes], axis=1)]
    return {
        "base_accuracy": float(np.mean(masked == y)),
        "base_accuracy_all_logits": float(np.mean(np.argmax(logits, axis=1) == y)),
        "test_samples": int(len(y)),
    }
