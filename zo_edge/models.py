"""The Keras (float) model zoo: small Cortex-M backbones with residual adapters and a logits head.

Every model has the same named parts, which the quantiser, the QGraph and the learners find by name
(and, in the int8 graph, by connectivity):

* a backbone: a stem, then a list of *blocks*, then pooling (global average pooling or a Flatten);
* one or more **adapters**, each in parallel with one block: ``block(x) + up(relu(down(x)))``, or after
  the pooling. Adapter ``i`` (numbered in graph order from 0) is the layers ``adapter{i}_down`` (a 1×1
  Conv2D to ``adapter_width`` channels), ``adapter{i}_relu`` (a ReLU), ``adapter{i}_up`` (a 1×1 Conv2D
  back to the block's channels, kernel and bias zero-initialised, so the adapter starts as the
  identity of its block) and ``adapter{i}_add`` (the sum). The adapter's input is the block's input:
  the *cut*. ``adapter_position`` is one position or a list of them: a block index, "last", or
  "after" (after the pooling, with Dense down/up layers on the pooled vector; the "block" is then the
  identity). ``zo_edge.keras_edit`` attaches the same adapters to a user's own model;
  ``adapters_of`` finds them in either;
* a ``classifier``: Dense(num_classes) producing logits (no softmax in the graph). With ``head="cosine"``
  the reference's cosine classifier instead: ``classifier_norm`` (``keras_layers.L2Normalize``) then the
  Dense ``classifier`` with a zero bias whose kernel columns all have one norm, the scale sigma.

``pretrain`` trains the backbone and the base-class rows of the classifier on the base task only; the
adapters are frozen (they stay the identity) and the rows of classes not seen yet are initialised at
the trained rows' magnitude (``init_new_rows``), so that they start neutral and no quantisation
channel is all-zero. ``fit_base_rows`` is the general form that ``keras_edit`` reuses for user models.
"""

from __future__ import annotations

import os
import re
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

DEFAULT_ARCH = {"spoken-digits": "ds-cnn", "digits": "digits-cnn", "japanese-vowels": "ds-cnn"}

# Pretraining defaults per architecture: epochs, batch size, Adam learning rate.
PRETRAIN_DEFAULTS = {
    "ds-cnn": {"epochs": 15, "batch_size": 32, "learning_rate": 3e-3},
    "digits-cnn": {"epochs": 15, "batch_size": 32, "learning_rate": 3e-3},
}

# adapter i is the layers adapter{i}_down, adapter{i}_relu, adapter{i}_up, adapter{i}_add (keras_edit adds
# adapter{i}_to4d / adapter{i}_to3d reshapes around an adapter on a [batch, steps, channels] output)
ADAPTER_PARTS = ("down", "relu", "up", "add")
_ADAPTER_LAYER = re.compile(r"adapter(\d+)_([a-z0-9]+)")

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
    """Resolve one adapter position to a block index (0-based) or ``"after"`` (or None: no adapter).

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


def parse_adapter_positions(position, num_blocks: int) -> list:
    """Resolve one position or several (a list, or a comma-separated string such as "0,2,after") to
    the list of block indices and "after", in graph order. None (or "none") is no adapter: []."""
    if isinstance(position, str) and "," in position:
        position = [p for p in position.split(",")]
    many = list(position) if isinstance(position, (list, tuple)) else [position]
    resolved = [parse_adapter_position(p, num_blocks) for p in many]
    if None in resolved and len(resolved) > 1:
        raise ZoEdgeError(f"adapter positions {list(many)} mix 'none' with positions; give positions or none")
    resolved = [r for r in resolved if r is not None]
    for r in set(resolved):
        if resolved.count(r) > 1:
            raise ZoEdgeError(f"adapter position {r} is given twice in {list(many)}; one adapter per position")
    return sorted(resolved, key=lambda r: num_blocks if r == "after" else r)


def build_model(arch: str, input_shape, num_classes: int, adapter_position="last", adapter_width: int = 8,
                seed: int = 0, head: str = "dense"):
    """Build a zoo model (float Keras) with residual adapters and a logits classifier.

    ``adapter_position``: "last" (default: the last block), an integer block index, "after" (after the
    pooling, Dense adapter on the pooled vector), a list of these (one adapter each, numbered in graph
    order) or None (no adapter, e.g. for comparisons). Each adapter's up-projection is
    zero-initialised, so the model starts exactly as the model without adapters. ``head``: "dense" or
    "cosine" (module docstring). Seeds Keras' global generator with ``seed`` (``keras.utils.set_random_seed``).
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
    if head not in HEADS:
        raise ZoEdgeError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    adapter_width = int(adapter_width)
    keras.utils.set_random_seed(int(seed))

    spec = _arch(arch, input_shape)
    positions = parse_adapter_positions(adapter_position, len(spec.blocks))

    inputs = keras.Input(shape=input_shape, name="input")
    x = spec.stem(inputs)
    index = 0  # adapters are numbered in graph order
    for i, block in enumerate(spec.blocks):
        y = block(x)
        if i in positions:
            cin, cout = x.shape[-1], y.shape[-1]
            if tuple(x.shape[1:]) != tuple(y.shape[1:]):
                raise ZoEdgeError(
                    f"block {i} of {arch} maps {tuple(x.shape[1:])} to {tuple(y.shape[1:])}; a parallel adapter "
                    f"needs the block's input and output shapes (channels {cin} vs {cout}) to match — choose "
                    "another block or 'after'"
                )
            y = residual_adapter(x, y, adapter_width, index)
            index += 1
        x = y
    x = spec.pool(x)
    if "after" in positions:
        x = residual_adapter(x, x, adapter_width, index)
    if head == "cosine":
        from zo_edge.keras_layers import L2Normalize

        x = L2Normalize(name="classifier_norm")(x)
    logits = layers.Dense(int(num_classes), name="classifier")(x)
    return keras.Model(inputs, logits, name=arch)


HEADS = ("dense", "cosine")  # zo_edge.plan.HEAD_KINDS


def head_kind(model, classifier: str = "classifier") -> str:
    """"cosine" when the Dense ``classifier`` reads an ``L2Normalize`` layer's output, else "dense"."""
    from zo_edge.keras_layers import L2Normalize

    source = model.get_layer(classifier).input._keras_history[0]
    return "cosine" if isinstance(source, L2Normalize) else "dense"


def residual_adapter(cut, base, width: int, index: int, kernel_initializer="glorot_uniform"):
    """``base + up(relu(down(cut)))`` as the layers ``adapter{index}_down/_relu/_up/_add``.

    ``cut`` [batch, H, W, C] gets 1×1 Conv2D projections, ``cut`` [batch, C] Dense ones. ``up``'s
    kernel and bias are zero, so the sum starts equal to ``base`` (the block's output for a parallel
    adapter, the cut itself for an adapter on a tensor).
    """
    from keras import layers

    channels = int(base.shape[-1])
    name = f"adapter{index}"
    if len(cut.shape) == 4:
        down = layers.Conv2D(width, 1, kernel_initializer=kernel_initializer, name=f"{name}_down")
        up = layers.Conv2D(channels, 1, kernel_initializer="zeros", bias_initializer="zeros", name=f"{name}_up")
    elif len(cut.shape) == 2:
        down = layers.Dense(width, kernel_initializer=kernel_initializer, name=f"{name}_down")
        up = layers.Dense(channels, kernel_initializer="zeros", bias_initializer="zeros", name=f"{name}_up")
    else:
        raise ZoEdgeError(f"an adapter needs a [batch, H, W, C] or [batch, C] input, not {list(cut.shape)}")
    h = layers.ReLU(name=f"{name}_relu")(down(cut))
    return layers.Add(name=f"{name}_add")([base, up(h)])


# ----------------------------------------------------------------------------------------------------
# introspection


def is_adapter_layer(name: str) -> bool:
    """Whether a layer name is one of an adapter's layers (``adapter{i}_down``, ``..._up``, ...)."""
    return _ADAPTER_LAYER.fullmatch(name) is not None


def adapters_of(model) -> list[dict]:
    """The model's adapters in graph order: ``[{"name": "adapter0", "down": ..., "relu": ..., "up": ...,
    "add": ...}, ...]`` (layer names), found by the ``adapter{i}_*`` naming."""
    names = {layer.name for layer in model.layers}
    indices = sorted({int(m.group(1)) for m in map(_ADAPTER_LAYER.fullmatch, names) if m})
    found = []
    for i in indices:
        parts = {part: f"adapter{i}_{part}" for part in ADAPTER_PARTS}
        missing = [n for n in parts.values() if n not in names]
        if missing:
            raise ZoEdgeError(f"model {model.name!r} has adapter{i} layers but not {', '.join(missing)}; "
                              "attach adapters with zo_edge.keras_edit.attach_adapters")
        found.append({"name": f"adapter{i}", **parts})
    if [a["name"] for a in found] != [f"adapter{i}" for i in range(len(found))]:
        raise ZoEdgeError(f"model {model.name!r} numbers its adapters {[a['name'] for a in found]}, not from 0 "
                          "without gaps")
    return found


def has_adapter(model) -> bool:
    return bool(adapters_of(model))


def _weight_count(layer) -> int:
    return int(sum(w.size for w in layer.get_weights()))


def adapter_info(model) -> dict:
    """Where the adapters sit and how big they are (JSON-ready): ``{"present", "count", "params",
    "adapters": [{"name", "kind", "width", "channels", "cut_shape", "params", "down", "up", "add"}, ...]}``."""
    adapters = []
    for a in adapters_of(model):
        down, up = model.get_layer(a["down"]), model.get_layer(a["up"])
        kernel = down.get_weights()[0]
        adapters.append({
            "name": a["name"],
            "kind": "conv1x1" if kernel.ndim == 4 else "dense",
            "width": int(kernel.shape[-1]),
            "channels": int(up.get_weights()[0].shape[-1]),
            "cut_shape": [int(d) for d in down.input.shape[1:]],
            "params": _weight_count(down) + _weight_count(up),
            "down": a["down"], "up": a["up"], "add": a["add"],
        })
    return {"present": bool(adapters), "count": len(adapters), "params": sum(a["params"] for a in adapters),
            "adapters": adapters}


def param_counts(model) -> dict:
    """Parameter counts: total (Keras), deployed (BatchNorm folded away), adapters, classifier."""
    total = int(model.count_params())
    bn = sum(_weight_count(layer) for layer in model.layers if layer.__class__.__name__ == "BatchNormalization")
    # folding a BN after a bias-free conv adds one bias per channel (half of gamma/beta/mean/var's 4)
    deployed = total - bn + bn // 4
    info = adapter_info(model)
    names = {layer.name for layer in model.layers}
    return {"total": total, "deployed": deployed, "adapter": info["params"],
            "adapters": [a["params"] for a in info["adapters"]],
            "classifier": _weight_count(model.get_layer("classifier")) if "classifier" in names else 0}


def without_adapter(model):
    """The same zoo model (same weights) with its adapters removed: what the adapters must start equal to."""

    if model.name not in ARCHS:
        raise ZoEdgeError(f"model {model.name!r} was not built by zo_edge.models.build_model")
    bare = build_model(model.name, model.input_shape[1:], model.get_layer("classifier").units, adapter_position=None)
    for layer in bare.layers:
        if layer.get_weights():
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return bare


def resolve_adapter_position(arch: str, position):
    """The block index (or "after", or None) that ``position`` names in ``arch``; for several positions
    (a list or "0,2,after") the list of them in graph order."""
    blocks = len(_arch(arch, None).blocks)
    if isinstance(position, (list, tuple)) or (isinstance(position, str) and "," in position):
        return parse_adapter_positions(position, blocks)
    return parse_adapter_position(position, blocks)


# ----------------------------------------------------------------------------------------------------
# pretraining


def pretrain(model, task, epochs: int | None = None, seed: int = 0, batch_size: int | None = None,
             verbose: int = 0, learning_rate: float | None = None) -> dict:
    """Train a zoo ``model`` on the base task only (float), in place; return a JSON-ready summary.

    Only the base classes' logits are used: a temporary head with one row per base class is trained on
    the classifier's input, then copied into the base rows of ``classifier``. The other rows are drawn
    at the planned magnitude (``init_new_rows``), so unseen classes start neutral and no quantisation
    channel is all-zero. The adapters are frozen (they stay the identity).
    """
    defaults = PRETRAIN_DEFAULTS.get(model.name, PRETRAIN_DEFAULTS["ds-cnn"])
    return fit_base_rows(
        model, task, seed=seed, verbose=verbose, train_backbone=True, head_init="random", redraw_other_rows=True,
        epochs=defaults["epochs"] if epochs is None else epochs,
        batch_size=defaults["batch_size"] if batch_size is None else batch_size,
        learning_rate=defaults["learning_rate"] if learning_rate is None else learning_rate,
    )


def fit_base_rows(model, task, *, epochs: int, seed: int, batch_size: int, learning_rate: float,
                  train_backbone: bool, head_init: str, redraw_other_rows: bool, classifier: str = "classifier",
                  verbose: int = 0) -> dict:
    """Fit the base classes' rows of the Dense ``classifier`` (and, with ``train_backbone``, every layer
    before it except the adapters) on the base task, in place; return a JSON-ready summary.

    A temporary head with one row per base class is trained with Adam (cosine decay to 1 %) on the
    classifier's input, so only the base classes' logits compete, then copied into the classifier's
    base rows. ``head_init``: "random" (a fresh Dense, as the zoo pretrains) or "classifier" (start
    from the classifier's current base rows: fine-tuning a trained model). Without
    ``train_backbone`` the features are computed once, in inference mode, and only the head trains.
    ``redraw_other_rows``: draw the rows of the other classes at the trained rows' magnitude
    (``init_new_rows``); otherwise they are kept.
    """
    import keras

    configure_tensorflow()
    epochs, batch_size, learning_rate = int(epochs), int(batch_size), float(learning_rate)
    if epochs < 0:
        raise ZoEdgeError(f"epochs must be >= 0 (got {epochs})")
    if batch_size < 1 or not learning_rate > 0:
        raise ZoEdgeError(f"batch size ({batch_size}) and learning rate ({learning_rate}) must be positive")
    if head_init not in ("random", "classifier"):
        raise ZoEdgeError(f"head_init must be 'random' or 'classifier' (got {head_init!r})")

    classes = [int(c) for c in task.classes]
    layer = model.get_layer(classifier)
    num_classes = int(layer.units)
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
    cosine = head_kind(model, classifier) == "cosine"
    if cosine:  # sigma times unit rows, trained as one head (the reference's CosineLinear)
        from zo_edge.keras_layers import CosineHead

        head = CosineHead(len(classes), name="base_head")
    else:
        head = keras.layers.Dense(len(classes), name="base_head")
    x_train = np.asarray(task.x_train, dtype=np.float32)
    if train_backbone:
        train_model = keras.Model(model.inputs, head(layer.input), name=f"{model.name}_pretrain")
        frozen = [other for other in model.layers if is_adapter_layer(other.name)]
    else:
        x_train = predict_logits(keras.Model(model.inputs[0], layer.input), x_train)  # the features, once
        features = keras.Input(shape=x_train.shape[1:], name="features")
        train_model = keras.Model(features, head(features), name=f"{model.name}_head")
        frozen = []
    kernel, bias = (np.array(w, dtype=np.float32) for w in layer.get_weights())
    if head_init == "classifier":
        if cosine:
            columns = kernel[:, classes]
            head.build(columns.shape[:1])
            head.set_weights([columns, np.float32(np.linalg.norm(columns, axis=0).mean())])
        else:
            head.set_weights([kernel[:, classes], bias[classes]])
    history, seconds = _fit(train_model, x_train, y_train, frozen, epochs=epochs, batch_size=batch_size,
                            learning_rate=learning_rate, verbose=verbose)

    # base rows from the trained head; the other rows at the trained rows' magnitude (or kept)
    if cosine:  # every row at norm sigma, no bias: the Dense classifier computes sigma cos(h, w_c)
        v, sigma = head.get_weights()
        w_head, b_head = float(sigma) * v / np.linalg.norm(v, axis=0, keepdims=True), np.zeros(len(classes))
    else:
        w_head, b_head = head.get_weights()  # [F, B], [B]
    kernel[:, classes] = w_head
    bias[classes] = b_head
    others = [c for c in range(num_classes) if c not in classes] if redraw_other_rows else []
    rng = np.random.default_rng([int(seed), 0x5EED])
    kernel, bias, new_rows = init_new_rows(kernel, bias, trained=classes, new=others, rng=rng)
    layer.set_weights([kernel, bias])

    summary = {
        "classes": classes,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "optimizer": "adam, cosine decay to 1% over the run",
        "trained": "backbone and base rows" if train_backbone else "base rows (features computed once)",
        "head_init": head_init,
        "head": "cosine" if cosine else "dense",
        "seed": int(seed),
        "seconds": round(seconds, 3),
        "train_samples": int(len(y_train)),
        "train_loss": float(history.history["loss"][-1]) if epochs else None,
        "train_accuracy": float(history.history["accuracy"][-1]) if epochs else None,
        "new_rows": new_rows,
    }
    summary.update(evaluate_base(model, task))
    return summary


def _fit(train_model, x, y, frozen, *, epochs: int, batch_size: int, learning_rate: float, verbose: int):
    """Adam with cosine decay to 1 % over the run, the layers ``frozen`` held fixed; (history, seconds)."""
    import keras

    was_trainable = [layer.trainable for layer in frozen]
    for layer in frozen:
        layer.trainable = False
    train_model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=max(1, epochs * -(-len(y) // batch_size)), alpha=0.01)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    try:
        history = train_model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose)
    finally:
        for layer, flag in zip(frozen, was_trainable):
            layer.trainable = flag
    return history, time.perf_counter() - start


def pretrain_backbone(model, dataset, *, epochs: int | None = None, seed: int = 0, classifier: str = "classifier",
                      verbose: int = 0) -> dict:
    """Train everything before the ``classifier`` (the adapters excepted: they stay the identity) on all of
    another ``dataset``'s classes, through a temporary head that is then dropped: a backbone pretrained
    on a broader or different task than the stream it will learn. The classifier's rows are left for
    ``fit_base_rows`` to fit on the stream's base task. Returns a JSON-ready summary."""
    import keras

    configure_tensorflow()
    if tuple(dataset.input_shape) != tuple(model.input_shape[1:]):
        raise ZoEdgeError(f"the pretraining data {dataset.name!r} has samples of shape {tuple(dataset.input_shape)}, "
                          f"the model takes {tuple(model.input_shape[1:])}; pretrain on data of the stream's shape")
    defaults = PRETRAIN_DEFAULTS.get(model.name, PRETRAIN_DEFAULTS["ds-cnn"])
    epochs = defaults["epochs"] if epochs is None else int(epochs)
    keras.utils.set_random_seed(int(seed))
    layer = model.get_layer(classifier)
    if head_kind(model, classifier) == "cosine":
        from zo_edge.keras_layers import CosineHead

        head = CosineHead(dataset.num_classes, name="pretrain_head")
    else:
        head = keras.layers.Dense(dataset.num_classes, name="pretrain_head")
    train_model = keras.Model(model.inputs, head(layer.input), name=f"{model.name}_pretrain_other")
    frozen = [other for other in model.layers if is_adapter_layer(other.name)]
    history, seconds = _fit(train_model, np.asarray(dataset.x_train, np.float32), np.asarray(dataset.y_train),
                            frozen, epochs=epochs, batch_size=defaults["batch_size"],
                            learning_rate=defaults["learning_rate"], verbose=verbose)
    logits = predict_logits(train_model, dataset.x_test)
    return {"dataset": dataset.name, "classes": int(dataset.num_classes), "epochs": epochs,
            "train_samples": int(len(dataset.y_train)), "seconds": round(seconds, 3),
            "train_accuracy": float(history.history["accuracy"][-1]) if epochs else None,
            "test_accuracy": float(np.mean(np.argmax(logits, axis=1) == dataset.y_test)),
            "trained": "backbone and a temporary head over all its classes (the head is dropped)"}


def init_new_rows(kernel: np.ndarray, bias: np.ndarray, trained, new, rng) -> tuple[np.ndarray, np.ndarray, dict]:
    """Draw the classifier rows (Keras kernel columns) of classes ``new`` at the magnitude of the rows
    ``trained``: random directions with norms drawn from the trained norms' normal fit, clipped to
    their range, and biases equal to the mean trained bias. Returns (kernel, bias, statistics)."""
    kernel, bias = np.array(kernel, dtype=np.float32), np.array(bias, dtype=np.float32)
    trained, new = [int(c) for c in trained], [int(c) for c in new]
    if not trained:
        raise ZoEdgeError("new classifier rows need trained rows to take their magnitude from; there are none")
    # (a C-ordered copy: numpy sums a strided view in another order, which moves the last bit)
    norms = np.linalg.norm(np.ascontiguousarray(kernel[:, trained]), axis=0)
    lo, hi = float(norms.min()), float(norms.max())
    mu, sd = float(norms.mean()), float(norms.std())
    mean_bias = float(bias[trained].mean())
    for c in new:
        direction = rng.standard_normal(kernel.shape[0])
        direction /= np.linalg.norm(direction)
        norm = float(np.clip(rng.normal(mu, sd), lo, hi)) if hi > 0 else 0.0
        kernel[:, c] = direction * norm
        bias[c] = mean_bias
    stats = {"count": len(new), "norm_mean": mu, "norm_std": sd, "norm_min": lo, "norm_max": hi,
             "bias": mean_bias if new else None}
    return kernel, bias, stats


def predict_logits(model, x, batch_size: int = 256) -> np.ndarray:
    """The model's outputs for ``x``, in inference mode, batch by batch (float32)."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        return np.zeros((0, *model.output_shape[1:]), dtype=np.float32)
    # direct calls, not model.predict: predict builds a new tf.function per model (retracing warnings)
    return np.concatenate([np.asarray(model(x[i : i + batch_size], training=False))
                           for i in range(0, len(x), batch_size)])


def evaluate_base(model, task) -> dict:
    """Base-task test accuracy: argmax over the base classes' outputs (logits or probabilities), and
    over all outputs."""
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
