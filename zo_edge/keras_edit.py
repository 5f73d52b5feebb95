"""A user's Keras model, made trainable the zoo's way: residual adapters attached, the classifier resized.

``attach_adapters(model, at, width, classifier, num_classes, seed)`` returns a new functional model
(the user's model is not touched) and a JSON-ready description of what changed:

* **adapters**: on the output ``y`` of each layer named in ``at`` (default: the layer that makes the
  classifier's input), ``y + up(relu(down(y)))`` is inserted, as the zoo's layers
  ``adapter{i}_down``, ``adapter{i}_relu``, ``adapter{i}_up``, ``adapter{i}_add`` with ``i`` in graph
  order (``zo_edge.models.residual_adapter``). Every consumer of ``y`` then reads the sum. ``down``
  and ``up`` are 1×1 Conv2D for a feature map [batch, H, W, C] and Dense for a vector [batch, C].
  A sequence [batch, T, C] (Conv1D stacks) is viewed as the feature map [batch, T, 1, C]: the
  layers ``adapter{i}_to4d`` and ``adapter{i}_to3d`` (Reshape) go around the adapter, so the int8
  converter makes the same CONV_2D pair and ADD as for a 2-D map (a Dense on a 3-D tensor would
  become reshapes around each FULLY_CONNECTED, which no adapter finder can follow). ``up``'s
  kernel and bias are zero, so the model starts equal to the original; ``down``'s kernel is Glorot
  uniform, seeded by ``seed`` and the adapter's index.
* **classifier**: the Dense layer named ``classifier`` (default: the last Dense) is replaced by a
  linear ``Dense(num_classes)`` named ``classifier``. Its rows (Keras kernel columns) for classes the
  old layer knew (index < its unit count) are kept; new rows are drawn at the old rows' magnitude
  (``models.init_new_rows``, as pretraining does). If the old Dense had a softmax activation, or a
  Softmax layer followed it, a Softmax layer follows the new one: the model still outputs
  probabilities and the logits are their own tensor.

Refused, each with one line naming the way out: a model that is not Sequential/functional, that has
several inputs or outputs; an ``at`` that names no layer (the message lists the layers that can take
an adapter), the model's input, the classifier or what follows it (the model's output), a layer inside
a nested model, a layer called more than once, or a tensor of another rank; a classifier that is not
a Dense (the message says what it is) or that does not make the model's output.

``fine_tune`` (``build --epochs N``) trains the whole model on the base task, adapters frozen at the
identity; ``fit_classifier`` (``--epochs 0``) fits only the classifier's base rows on features
computed once. Both are ``zo_edge.models.fit_base_rows``, the zoo's pretraining, started from the
classifier's current rows instead of a fresh head.
"""

from __future__ import annotations

import numpy as np

from zo_edge import models
from zo_edge.errors import ZoEdgeError

FINE_TUNE_DEFAULTS = {"batch_size": 32, "learning_rate": 1e-3}
FIT_CLASSIFIER_DEFAULTS = {"batch_size": 32, "learning_rate": 3e-3}
_LISTED = 12  # candidates named in an error message before "... and N more"


def attach_adapters(model, at: list[str] | None = None, width: int = 8, classifier: str | None = None,
                    num_classes: int | None = None, seed: int = 0):
    """A new model with adapters on the outputs of the layers ``at`` and the classifier resized to
    ``num_classes`` (default: unchanged); returns ``(new_model, info)``. See the module docstring."""
    models.configure_tensorflow()
    import keras

    graph = _functional_copy(model)
    head, softmax = _find_classifier(graph, classifier)
    num_classes = int(head.units if num_classes is None else num_classes)
    if num_classes < 2:
        raise ZoEdgeError(f"the classifier needs at least 2 classes (got {num_classes})")
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ZoEdgeError(f"adapter width must be a positive number of channels (got {width!r})")
    targets = _find_targets(graph, at, head, softmax)
    taken = [layer.name for layer in graph.layers if layer is not head
             and (layer.name == "classifier" or models.is_adapter_layer(layer.name))]
    if taken:
        raise ZoEdgeError(f"model {model.name!r} already has a layer named {taken[0]!r}, a name zo-edge gives its own "
                          "layers; rename it (or start from the model without zo-edge's adapters)")

    new_head = keras.layers.Dense(num_classes, name="classifier")
    index = {id(layer): i for i, layer in enumerate(targets)}

    def operation(op):
        if op is head:
            def classify(x, *_, **__):
                logits = new_head(x)
                if softmax is None and head.get_config()["activation"] == "softmax":
                    return keras.layers.Softmax(name=_free_name(graph, "softmax"))(logits)
                return logits
            return classify
        if id(op) in index:
            return lambda *args, **kwargs: _adapter(op(*args, **kwargs), width, index[id(op)], seed)
        return op

    source = graph.inputs[0]
    inputs = keras.Input(batch_shape=source.shape, dtype=source.dtype, name=source._keras_history.operation.name)
    # Keras 3's own walk of a functional graph (what Functional.call runs), each layer's call wrapped
    # by ``operation``: here on symbolic tensors, so it builds the edited graph (KerasSplit replays the
    # same way on real tensors)
    outputs = graph._run_through_graph(inputs, operation_fn=operation)
    edited = keras.Model(inputs, outputs[0] if isinstance(outputs, (list, tuple)) else outputs, name=model.name)
    kernel, bias, rows = _resized_rows(head, num_classes, seed)
    new_head.set_weights([kernel, bias])
    # a copy with layers of its own: the layers above also carry the first copy's graph
    result = keras.models.clone_model(edited)
    result.set_weights(edited.get_weights())

    adapters = models.adapter_info(result)["adapters"]
    for a, layer in zip(adapters, targets):
        a["at"] = layer.name
        a["at_shape"] = [int(d) for d in layer.output.shape[1:]]
    info = {
        "adapters": adapters,
        "classifier": {"name": "classifier", "replaces": head.name, "features": int(head.input.shape[-1]),
                       "old_units": int(head.units), "units": num_classes, **rows,
                       "softmax": _softmax_name(result)},
        "params": models.param_counts(result),
    }
    return result, info


def adapter_candidates(model) -> list[str]:
    """The layers of ``model`` whose output can take an adapter (in graph order)."""
    models.configure_tensorflow()
    graph = _functional_copy(model)
    return _candidates(graph, *_find_classifier(graph, None))


def fine_tune(model, task, epochs: int, seed: int = 0, batch_size: int | None = None,
              learning_rate: float | None = None, verbose: int = 0) -> dict:
    """Train the whole model (adapters frozen at the identity) on the base task, starting from the
    classifier's current base rows; the other rows are kept. In place; returns a JSON-ready summary."""
    return models.fit_base_rows(
        model, task, epochs=epochs, seed=seed, verbose=verbose, train_backbone=True, head_init="classifier",
        redraw_other_rows=False,
        batch_size=FINE_TUNE_DEFAULTS["batch_size"] if batch_size is None else batch_size,
        learning_rate=FINE_TUNE_DEFAULTS["learning_rate"] if learning_rate is None else learning_rate)


def fit_classifier(model, task, epochs: int, seed: int = 0, batch_size: int | None = None,
                   learning_rate: float | None = None, verbose: int = 0) -> dict:
    """Fit only the classifier's base rows on the base task (backbone frozen, features computed once),
    starting from its current rows; the other rows are kept. In place; returns a JSON-ready summary."""
    return models.fit_base_rows(
        model, task, epochs=epochs, seed=seed, verbose=verbose, train_backbone=False, head_init="classifier",
        redraw_other_rows=False,
        batch_size=FIT_CLASSIFIER_DEFAULTS["batch_size"] if batch_size is None else batch_size,
        learning_rate=FIT_CLASSIFIER_DEFAULTS["learning_rate"] if learning_rate is None else learning_rate)


# ----------------------------------------------------------------------------------------------------
# the model's graph


def _functional_copy(model):
    """A functional copy of a Sequential or functional model (own layers, same weights)."""
    import keras

    if not isinstance(model, keras.Model):
        raise ZoEdgeError(f"expected a Keras model, got {type(model).__name__}")
    if not isinstance(model, keras.Sequential) and not hasattr(model, "_run_through_graph"):
        raise ZoEdgeError(f"model {model.name!r} is a subclassed Keras model ({type(model).__name__}) without a "
                          "layer graph; zo-edge edits Sequential and functional models — rebuild it with "
                          "keras.Model(inputs, outputs)")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ZoEdgeError(f"model {model.name!r} has no defined input shape; build it (model.build) or start it with "
                          "keras.Input")
    if len(inputs) != 1 or len(outputs) != 1:
        raise ZoEdgeError(f"model {model.name!r} has {len(inputs)} inputs and {len(outputs)} outputs; zo-edge "
                          "takes models with one input and one output")
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    if isinstance(copy, keras.Sequential):
        copy = keras.Model(copy.inputs, copy.outputs, name=copy.name)
    return copy


def _layers(graph) -> list:
    """The graph's own layers in graph order, without its input layer."""
    return [layer for layer in graph.layers if layer.__class__.__name__ != "InputLayer"]


def _nested_owner(graph, name: str):
    """The nested model (a layer of ``graph``) that holds a layer called ``name``, or None."""
    for layer in graph.layers:
        inner = getattr(layer, "layers", None)
        if inner and (any(x.name == name for x in inner) or _nested_owner(layer, name) is not None):
            return layer
    return None


def _get(graph, name: str, what: str, choices: list[str]):
    names = {layer.name: layer for layer in graph.layers}
    if name in names:
        return names[name]
    owner = _nested_owner(graph, name)
    if owner is not None:
        raise ZoEdgeError(f"{what} {name!r} is inside the nested model {owner.name!r}; zo-edge edits the top-level "
                          f"graph only — name {owner.name!r} itself, or flatten the model")
    raise ZoEdgeError(f"{what} {name!r} names no layer of model {graph.name!r}; choose one of {_listed(choices)}")


def _listed(names: list[str]) -> str:
    if not names:
        return "(none)"
    shown = ", ".join(names[:_LISTED])
    return shown + (f" ... and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _is_softmax(layer) -> bool:
    kind, config = layer.__class__.__name__, layer.get_config()
    if kind == "Softmax":
        return config.get("axis", -1) in (-1, 1)
    return kind == "Activation" and config.get("activation") == "softmax"


def _find_classifier(graph, name: str | None):
    """The classifier Dense and the Softmax layer after it (or None), checked."""
    dense = [layer.name for layer in _layers(graph) if layer.__class__.__name__ == "Dense"]
    if name is None:
        if not dense:
            raise ZoEdgeError(f"model {graph.name!r} has no Dense layer to use as the classifier (at the top level); "
                              "add one, or name the classifier's Dense with --classifier")
        name = dense[-1]
    head = _get(graph, name, "classifier", dense)
    kind = head.__class__.__name__
    if kind != "Dense":
        raise ZoEdgeError(f"classifier {name!r} is a {kind}, not a Dense layer; name a Dense layer "
                          f"({_listed(dense)})")
    if len(head._inbound_nodes) != 1:
        raise ZoEdgeError(f"classifier {name!r} is called {len(head._inbound_nodes)} times; the classifier must be "
                          "called once")
    if len(head.input.shape) != 2:
        raise ZoEdgeError(f"classifier {name!r} reads a {list(head.input.shape)} tensor; the classifier must map a "
                          "vector [batch, features] to logits (add a Flatten or pooling layer before it)")
    softmax = _softmax_after(graph, head)
    activation = head.get_config()["activation"]
    if activation not in ("linear", "softmax"):
        raise ZoEdgeError(f"classifier {name!r} has a {activation} activation; zo-edge trains a linear classifier "
                          "(logits, optionally followed by a softmax)")
    return head, softmax


def _softmax_after(graph, head):
    """The Softmax layer between the classifier and the model's output, None if there is none.
    Refuses a classifier that does not make the model's output."""
    last = graph.outputs[0]._keras_history.operation
    if last is head:
        return None
    if _is_softmax(last) and last.input._keras_history.operation is head:
        return last
    raise ZoEdgeError(f"the classifier {head.name!r} does not make the model's output ({last.__class__.__name__} "
                      f"{last.name!r} does); the classifier must be the last layer, optionally followed by a "
                      "softmax — name it with --classifier")


def _candidates(graph, head, softmax) -> list[str]:
    return [layer.name for layer in _layers(graph) if layer is not head and layer is not softmax
            and _target_problem(layer) is None]


def _target_problem(layer) -> str | None:
    """Why ``layer``'s output cannot take an adapter (None: it can)."""
    if len(layer._inbound_nodes) != 1:
        return f"is called {len(layer._inbound_nodes)} times (a shared layer); put the adapter on a layer called once"
    out = layer.output
    if isinstance(out, (list, tuple, dict)):
        return "has several outputs"
    if "float" not in str(out.dtype):
        return f"outputs {out.dtype}, not float"
    if len(out.shape) not in (2, 3, 4) or any(d is None for d in out.shape[1:]):
        return (f"outputs {list(out.shape)}; an adapter needs [batch, features], [batch, steps, channels] or "
                "[batch, height, width, channels] with known sizes")
    return None


def _find_targets(graph, at, head, softmax) -> list:
    """The layers whose outputs get an adapter, in graph order."""
    candidates = _candidates(graph, head, softmax)
    if at is None:
        producer = head.input._keras_history.operation
        if producer.__class__.__name__ == "InputLayer":
            raise ZoEdgeError(f"the classifier {head.name!r} reads the model's input directly: there is no layer "
                              "to put an adapter on")
        at = [producer.name]
    if isinstance(at, str):
        at = [a for a in at.split(",")]
    at = [str(a).strip() for a in at]
    if not at:
        raise ZoEdgeError(f"no layer named for the adapters; choose from {_listed(candidates)}")
    targets = []
    for name in at:
        if at.count(name) > 1:
            raise ZoEdgeError(f"layer {name!r} is named twice for an adapter; one adapter per layer")
        layer = _get(graph, name, "--adapter-at", candidates)
        if layer.__class__.__name__ == "InputLayer":
            raise ZoEdgeError(f"{name!r} is the model's input; an adapter goes on the output of a layer: "
                              f"{_listed(candidates)}")
        if layer is head or layer is softmax:
            raise ZoEdgeError(f"{name!r} makes the model's output; an adapter goes on a layer before the classifier: "
                              f"{_listed(candidates)}")
        problem = _target_problem(layer)
        if problem:
            raise ZoEdgeError(f"layer {name!r} {problem}; layers that can take an adapter: {_listed(candidates)}")
        targets.append(layer)
    order = {id(layer): i for i, layer in enumerate(graph.layers)}
    return sorted(targets, key=lambda layer: order[id(layer)])


def _free_name(graph, name: str) -> str:
    names = {layer.name for layer in graph.layers}
    return name if name not in names else next(f"{name}_{i}" for i in range(1, len(names) + 2)
                                               if f"{name}_{i}" not in names)


def _softmax_name(model) -> str | None:
    last = model.outputs[0]._keras_history.operation
    return last.name if _is_softmax(last) else None


# ----------------------------------------------------------------------------------------------------
# the edits


def _adapter(y, width: int, index: int, seed: int):
    """``y + up(relu(down(y)))`` on the tensor ``y`` (a sequence through a [T, 1, C] view)."""
    import keras

    draw = int(np.random.default_rng([int(seed), 0xADA7, int(index)]).integers(2**31 - 1))
    init = keras.initializers.GlorotUniform(seed=draw)
    if len(y.shape) != 3:
        return models.residual_adapter(y, y, int(width), index, kernel_initializer=init)
    steps, channels = int(y.shape[1]), int(y.shape[2])
    x = keras.layers.Reshape((steps, 1, channels), name=f"adapter{index}_to4d")(y)
    x = models.residual_adapter(x, x, int(width), index, kernel_initializer=init)
    return keras.layers.Reshape((steps, channels), name=f"adapter{index}_to3d")(x)


def _resized_rows(head, num_classes: int, seed: int):
    """The new classifier's kernel [F, num_classes] and bias: the old rows kept, new ones at their magnitude."""
    weights = head.get_weights()
    old_kernel = np.asarray(weights[0], dtype=np.float32)
    old_bias = np.asarray(weights[1], dtype=np.float32) if len(weights) > 1 else np.zeros(head.units, np.float32)
    kept = min(int(head.units), num_classes)
    kernel = np.zeros((old_kernel.shape[0], num_classes), dtype=np.float32)
    bias = np.zeros(num_classes, dtype=np.float32)
    kernel[:, :kept], bias[:kept] = old_kernel[:, :kept], old_bias[:kept]
    rng = np.random.default_rng([int(seed), 0x5EED])
    kernel, bias, stats = models.init_new_rows(kernel, bias, trained=range(kept), new=range(kept, num_classes),
                                               rng=rng)
    return kernel, bias, {"kept_rows": kept, "new_rows": stats}
