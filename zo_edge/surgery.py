"""Graph surgery on a deployed int8 .tflite with no float original (issue 10, item 3).

Two edits, both through ``zo_edge.tflite_edit`` (the one .tflite writer); both only append tensors, so
every tensor index of the input model still means the same tensor in the output.

``insert_adapters(model_bytes, at, width, x_calibration_int8)`` puts the zoo's residual bottleneck on
each named int8 activation T (4-D NHWC: 1×1 CONV_2D; 2-D [1, D]: FULLY_CONNECTED)::

    T ─┬──────────────────────────────────────────┐
       └─ down (fused ReLU) ─► hidden ─ up ─► a ─ ADD(T, a) ─► T'  (every former reader of T reads T')

* down: random weights (seeded, glorot-uniform in the dequantised feature space, as Keras initialises a
  Dense/Conv2D kernel), per-channel symmetric int8 with scale ``down_headroom × max|w| / 127``, int32
  bias 0 (scale T's scale × weight scale);
* hidden: its range is calibrated on the real samples — the engine runs the model to T exactly, then
  relu(down(T)) is computed in float with the int8 weights as stored — and widened by ``down_headroom``;
* up: int8 zeros with per-channel scale ``up_magnitude / 127``, int32 bias zeros (scale hidden scale ×
  up scale); the adapter output a's range is what up at ±``up_magnitude`` gives on the same samples,
  with its scale capped at T's;
* T' gets exactly T's scale and zero point.

**The outputs are unchanged byte for byte.** With up = 0 the adapter outputs exactly its zero point, so
ADD's second operand is 0 after the offset. TFLM's int8 ADD (``micro/kernels/add_common.cc``,
``reference/integer_ops/add.h``) with s₁ = s_T ≥ s₂ = s_a and s_out = s_T has input-1 multiplier
s_T / (2·s_T) = 1/2 (Q31 2³⁰, shift 0) and output multiplier 2·s_T / (2²⁰·s_T) = 2⁻¹⁹ (2³⁰, shift
−18), both exact powers of two: (T − z)·2²⁰ halves exactly to (T − z)·2¹⁹, the sum is that plus 0, and
2⁻¹⁹ of it is T − z exactly, so T' = T. (s_a ≤ s_T is what makes s_T the larger input scale; with s_a >
s_T the multiplier would be s_T / (2·s_a), not a power of two.) ``insert_adapters`` checks this on its
calibration samples with the engine before it returns; the tests check it in TFLM on every output byte.

``replace_classifier(model_bytes, num_classes, x_int8, y)`` replaces the classifier — a FULLY_CONNECTED
op (default: the last one) whose output is the graph's output, directly or through one SOFTMAX — by a
trainable one with ``num_classes`` rows: per-channel int8 weights, int32 bias, written into the old
classifier's tensors (same indices). Initial rows: the old classifier's rows for the classes it already
had (label c is row c), new rows at the old rows' magnitude (``zo_edge.models.pretrain``'s rule); then a
float softmax-regression fit of the base task (the classes in ``y``) on the int8 features (the engine's
values of the classifier input, dequantised), warm-started from those rows; afterwards rows of classes
neither kept nor fitted are redrawn at the fitted rows' magnitude. Weight scales are
``classifier_headroom × max|w| / 127`` per row and the logits' range is calibrated with the weights ×
``classifier_headroom`` (``zo_edge.quantize``'s rule). A SOFTMAX after it stays, with TFLite's fixed
output quantisation (1/256, −128), so the graph output is still what the application reads.

The int8 fine-tuning of that head on the base task is the int8 head learner's job, run afterwards on
the edited model: ``Int8Learner`` with method "head" over the plan's classifier (the float fit here
sets the starting point and the scales, which the learner keeps).

``adapt_tflite(...)`` does both in the order that keeps the user's references valid — the classifier
first (an op index read from ``zo-edge inspect`` names an op of the original file; inserting adapters
shifts op indices, never tensor indices), then the adapters (default: on the classifier's input,
and only before it) — and returns the edited model with its checked ``plan.Plan``, whose classifier
reads the adapted features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.errors import ZoEdgeError
from zo_edge.kernels.fixedpoint import round_half_away
from zo_edge.plan import Adapter, Classifier
from zo_edge.tflite_edit import (TfliteModel, activation_quantization, conv2d_options, fully_connected_options,
                                 add_options)

_HINT = "pass an int8 .tflite model (see `zo-edge inspect`)"


# ------------------------------------------------------------------------------------------------------
# where an adapter can go


def why_not_adapter(model: TfliteModel, t: int) -> str | None:
    """None when tensor ``t`` can take an adapter, else the reason (a phrase)."""
    shape = model.shape(t)
    if model.is_const(t):
        return "it is a constant"
    if t in model.inputs:
        return "it is the graph input (an adapter goes on a computed activation)"
    if t not in model.producer:
        return "no op computes it"
    if model.tensors[t].type != 9:
        return f"it is {model.dtype_name(t)}, not int8"
    q = model.quant(t)
    if q is None or len(q[0]) != 1:
        return "it is not quantised per tensor"
    if not model.consumers.get(t) and t not in model.outputs:
        return "nothing reads it"
    if len(shape) not in (2, 4) or shape[0] != 1:
        return f"its shape is {shape}; adapters go on 2-D [1, D] or 4-D [1, H, W, C] activations"
    return None


def adapter_candidates(model: TfliteModel, before: int | None = None) -> dict[int, str]:
    """Tensor index -> adapter kind ("conv1x1" or "dense") for every activation that can take one; with
    ``before`` (the classifier's input) only that tensor and those it depends on."""
    allowed = model.ancestors(before) if before is not None else range(len(model.tensors))
    return {t: "conv1x1" if len(model.shape(t)) == 4 else "dense"
            for t in sorted(allowed) if why_not_adapter(model, t) is None}


def _check_calibration(model: TfliteModel, x, what: str) -> np.ndarray:
    if len(model.inputs) != 1:
        raise ZoEdgeError(f"{model.source} has {len(model.inputs)} inputs; zo-edge adapts single-input models")
    expected = model.shape(model.inputs[0])[1:]
    if not isinstance(x, np.ndarray) or x.dtype != np.int8 or list(x.shape[1:]) != expected or len(x) == 0:
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ZoEdgeError(f"{what} must be int8 [N, {', '.join(map(str, expected))}] (the model's input, quantised "
                          f"with its scale and zero point), N >= 1; got {got}")
    return x


def _engine(buf: bytes, source: str):
    from zo_edge.engine import Engine
    from zo_edge.qgraph import QGraph

    return Engine(QGraph.from_bytes(buf, source=source))


def _dequantize(model: TfliteModel, t: int, values: np.ndarray) -> np.ndarray:
    scale, zero_point = model.scalar_quant(t)
    return (values.astype(np.float64) - zero_point) * scale


# ------------------------------------------------------------------------------------------------------
# adapters


def insert_adapters(model_bytes: bytes, at, width: int, x_calibration_int8: np.ndarray, *, up_magnitude: float = 0.1,
                    down_headroom: float = 1.5, seed: int = 0, before: int | None = None, source: str = "the model"):
    """Insert one adapter on each tensor named in ``at`` (indices or names, any order).

    ``x_calibration_int8``: real samples [N, *input shape], int8 as the model's input quantises them.
    ``before``: a tensor index (the classifier's input); when given, only it and the tensors it depends on
    can take an adapter. Returns ``(new model bytes, [plan.Adapter, ...])``, the adapters in graph order
    (named adapter0, adapter1, ...). The edited model's outputs equal the original's byte for byte
    (module docstring); this is checked on the calibration samples before returning.
    """
    model = TfliteModel.from_bytes(model_bytes, source, hint=_HINT)
    width = int(width)
    if width < 1:
        raise ZoEdgeError(f"adapter width must be a positive number of channels (got {width})")
    if not (np.isfinite(up_magnitude) and up_magnitude > 0):
        raise ZoEdgeError(f"up_magnitude must be a positive number (got {up_magnitude!r})")
    if not (np.isfinite(down_headroom) and down_headroom >= 1):
        raise ZoEdgeError(f"down_headroom must be a number >= 1 (got {down_headroom!r})")
    x = _check_calibration(model, x_calibration_int8, "the calibration samples")
    refs = [at] if isinstance(at, (str, int, np.integer)) else list(at)
    if not refs:
        raise ZoEdgeError("no tensor named for an adapter; name one or more (see `zo-edge inspect`)")
    candidates = adapter_candidates(model, before)
    cuts = []
    for ref in refs:
        t = model.find_tensor(ref, "adapter tensor", candidates=sorted(candidates))
        reason = why_not_adapter(model, t)
        if reason is None and t not in candidates:
            reason = f"it is not before the classifier's input (tensor {before})"
        if reason:
            raise ZoEdgeError(f"tensor {t} ({model.short_name(t)}) cannot take an adapter: {reason}; candidates "
                              f"(index: name): {', '.join(f'{c}: {model.short_name(c)}' for c in sorted(candidates))}")
        if t in cuts:
            raise ZoEdgeError(f"tensor {t} ({model.short_name(t)}) is named twice for an adapter; one adapter per tensor")
        cuts.append(t)
    cuts.sort(key=lambda t: model.producer[t])  # graph order

    engine = _engine(model_bytes, source)
    original_outputs, values = engine.run(x, capture=cuts)
    adapters = []
    for i, cut in enumerate(cuts):
        rng = np.random.default_rng([int(seed), 0xADA, i])
        adapters.append(_insert_adapter(model, f"adapter{i}", candidates[cut], cut, values[cut], width,
                                        up_magnitude, down_headroom, rng))
    edited = model.pack()

    outputs, _ = _engine(edited, source).run(x)
    if any(not np.array_equal(a, b) for a, b in zip(outputs, original_outputs)):
        raise AssertionError("the inserted zero adapters changed the model's outputs")
    return edited, adapters


def _insert_adapter(model: TfliteModel, name: str, kind: str, cut: int, cut_values: np.ndarray, width: int,
                    up_magnitude: float, down_headroom: float, rng) -> Adapter:
    shape = model.shape(cut)
    channels = shape[-1]
    cut_scale = model.scalar_quant(cut)[0]
    features = _dequantize(model, cut, cut_values).reshape(-1, channels)

    # down: glorot-uniform in float, per-channel symmetric int8 with headroom
    limit = np.sqrt(6.0 / (channels + width))
    w = rng.uniform(-limit, limit, size=(width, channels))
    down_scale = (down_headroom * np.abs(w).max(axis=1) / 127).astype(np.float32)
    down_q = np.clip(round_half_away(w / down_scale[:, None]), -127, 127).astype(np.int8)
    hidden_float = np.maximum(features @ (down_q * down_scale[:, None].astype(np.float64)).T, 0.0)
    hidden_max = float(hidden_float.max())
    if not hidden_max > 0:
        raise ZoEdgeError(f"tensor {cut} ({model.short_name(cut)}) gives the adapter's hidden activation no range on "
                          "the calibration samples (is it constant?); put the adapter on another tensor")
    hidden_scale, hidden_zero_point = activation_quantization(0.0, down_headroom * hidden_max)

    # up: zero, with the scale of the planned magnitude; the adapter output's range from up at that magnitude
    up_scale = np.full(channels, up_magnitude / 127, dtype=np.float32)
    planned = np.where(rng.random((channels, width)) < 0.5, -up_magnitude, up_magnitude)
    a = hidden_float @ planned.T
    out_scale, out_zero_point = activation_quantization(a.min(), a.max())
    out_scale = min(out_scale, float(np.float32(cut_scale)))  # s_a <= s_T keeps the ADD exact (module docstring)

    conv = kind == "conv1x1"
    down_shape = [width, 1, 1, channels] if conv else [width, channels]
    up_shape = [channels, 1, 1, width] if conv else [channels, width]
    opname = "CONV_2D" if conv else "FULLY_CONNECTED"
    down_w = model.add_tensor(down_shape, np.int8, scale=down_scale, zero_point=0, data=down_q.reshape(down_shape),
                              name=f"{name}/down/weights")
    down_b = model.add_tensor([width], np.int32, scale=np.float32(cut_scale) * down_scale.astype(np.float64),
                              zero_point=0, data=np.zeros(width, np.int32), name=f"{name}/down/bias")
    hidden = model.add_tensor(shape[:-1] + [width], np.int8, scale=hidden_scale, zero_point=hidden_zero_point,
                              name=f"{name}/hidden")
    up_w = model.add_tensor(up_shape, np.int8, scale=up_scale, zero_point=0, data=np.zeros(up_shape, np.int8),
                            name=f"{name}/up/weights")
    up_b = model.add_tensor([channels], np.int32, scale=np.float32(hidden_scale) * up_scale.astype(np.float64),
                            zero_point=0, data=np.zeros(channels, np.int32), name=f"{name}/up/bias")
    output = model.add_tensor(shape, np.int8, scale=out_scale, zero_point=out_zero_point, name=f"{name}/output")
    cut_scales, cut_zero_points, _ = model.quant(cut)  # T' gets T's float32 scale and zero point exactly
    added = model.add_tensor(shape, np.int8, scale=cut_scales, zero_point=cut_zero_points,
                             name=f"{model.short_name(cut)}+{name}")
    if model.tensors[cut].shapeSignature is not None:
        model.tensors[added].shapeSignature = list(model.tensors[cut].shapeSignature)

    def options(activation):
        return conv2d_options(padding="VALID", activation=activation) if conv else fully_connected_options(activation)

    k = model.producer[cut] + 1
    model.add_op(opname, [cut, down_w, down_b], [hidden], options("RELU"), at=k)
    model.add_op(opname, [hidden, up_w, up_b], [output], options("NONE"), at=k + 1)
    model.add_op("ADD", [cut, output], [added], add_options(), at=k + 2)
    model.rewire(cut, added, skip_ops={k, k + 2})
    return Adapter(name=name, kind=kind, cut=cut, down_weights=down_w, down_bias=down_b, hidden=hidden, up_weights=up_w,
                   up_bias=up_b, output=output, block_output=cut, add_output=added)


# ------------------------------------------------------------------------------------------------------
# the classifier


def classifier_candidates(model: TfliteModel) -> list[dict]:
    """Every FULLY_CONNECTED op with where its output goes: {"op", "input", "weights", "bias", "logits",
    "softmax" (op index or None), "output", "problem" (None when it can be the classifier)}."""
    out = []
    for k, (opname, ins, outs, _) in enumerate(model.ops):
        if opname != "FULLY_CONNECTED":
            continue
        logits = outs[0]
        row = {"op": k, "input": ins[0], "weights": ins[1], "bias": ins[2] if len(ins) > 2 and ins[2] >= 0 else None,
               "logits": logits, "softmax": None, "output": logits, "problem": None}
        readers = model.consumers.get(logits, [])
        if not readers and logits in model.outputs:
            pass
        elif (len(readers) == 1 and model.ops[readers[0]].name == "SOFTMAX" and logits not in model.outputs
              and model.ops[readers[0]].outputs[0] in model.outputs
              and not model.consumers.get(model.ops[readers[0]].outputs[0])):
            row["softmax"], row["output"] = readers[0], model.ops[readers[0]].outputs[0]
        else:
            row["problem"] = ("its output feeds " + ", ".join(f"{model.ops[r].name} (op {r})" for r in readers)
                              if readers else "its output is not a graph output")
        if row["problem"] is None and (model.tensors[ins[1]].type != 9 or model.tensors[ins[0]].type != 9):
            row["problem"] = "it is not an int8 FULLY_CONNECTED"
        out.append(row)
    return out


def find_classifier(model: TfliteModel, op=None) -> dict:
    """The classifier candidate ``op`` names (op index, or the name of its output tensor); default the last
    FULLY_CONNECTED. A one-line ZoEdgeError when it is not a FULLY_CONNECTED or cannot be replaced."""
    rows = classifier_candidates(model)
    listing = ", ".join(f"op {r['op']} ({model.short_name(r['logits'])})" for r in rows) or "none"
    if op is None:
        if not rows:
            raise ZoEdgeError(f"{model.source} has no FULLY_CONNECTED op to use as the classifier")
        row = rows[-1]
    else:
        k = model.find_op(op, "classifier op")
        match = [r for r in rows if r["op"] == k]
        if not match:
            raise ZoEdgeError(f"classifier op {op!r} is op {k}, a {model.ops[k].name}, not a FULLY_CONNECTED; the "
                              f"classifier must be a FULLY_CONNECTED op — candidates: {listing}")
        row = match[0]
    if row["problem"]:
        raise ZoEdgeError(f"op {row['op']} (FULLY_CONNECTED) cannot be replaced as the classifier: {row['problem']}; "
                          "the classifier's output must be the graph output, directly or through one SOFTMAX")
    return row


def replace_classifier(model_bytes: bytes, num_classes: int, x_int8: np.ndarray, y, *, op=None,
                       classifier_headroom: float = 2.0, l2: float = 1e-3, seed: int = 0, source: str = "the model"):
    """Replace the classifier by a trainable FULLY_CONNECTED [num_classes, features] fitted on the base task.

    ``x_int8``, ``y``: the base task's training samples (int8, quantised as the model's input) and labels
    (0..num_classes-1); the classes present in ``y`` are the base classes. Returns ``(new model bytes,
    plan.Classifier, report)`` where the report (JSON-ready) says what was kept, fitted and measured.
    """
    model = TfliteModel.from_bytes(model_bytes, source, hint=_HINT)
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ZoEdgeError(f"the classifier needs at least 2 classes (got {num_classes})")
    if not (np.isfinite(classifier_headroom) and classifier_headroom >= 1):
        raise ZoEdgeError(f"classifier_headroom must be a number >= 1 (got {classifier_headroom!r})")
    x = _check_calibration(model, x_int8, "the base task's samples")
    y = np.asarray(y)
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        raise ZoEdgeError(f"the base task's labels must be {len(x)} integers in 0..{num_classes - 1}")
    row = find_classifier(model, op)
    features_t, weights_t, bias_t, logits_t = row["input"], row["weights"], row["bias"], row["logits"]
    old_classes, depth = model.shape(weights_t)
    if int(np.prod(model.shape(features_t)[1:])) != depth:
        raise ZoEdgeError(f"the classifier's input {model.shape(features_t)} is not one row of {depth} features per "
                          "sample; zo-edge replaces a classifier that reads one feature vector")

    # the features the classifier sees, and the old classifier in float
    _, captured = _engine(model_bytes, source).run(x, capture=[features_t])
    h = _dequantize(model, features_t, captured[features_t]).reshape(len(x), depth)
    h_scale = float(np.float32(model.scalar_quant(features_t)[0]))
    w_scales, w_zero_points, _ = model.quant(weights_t)  # per channel (one per row) or per tensor
    per_row = len(w_scales) > 1
    w_old = ((model.read_const(weights_t).astype(np.float64) - (w_zero_points[:, None] if per_row else w_zero_points[0]))
             * (w_scales[:, None] if per_row else w_scales[0]))
    b_old = np.zeros(old_classes)
    if bias_t is not None:
        b_old = model.read_const(bias_t).astype(np.float64) * h_scale * (w_scales if per_row else w_scales[0])

    rng = np.random.default_rng([int(seed), 0xC1A5])
    kept = list(range(min(old_classes, num_classes)))
    weights, bias = np.zeros((num_classes, depth)), np.zeros(num_classes)
    weights[kept], bias[kept] = w_old[kept], b_old[kept]
    _draw_rows(weights, bias, [c for c in range(num_classes) if c not in kept], w_old, b_old, rng)

    base = sorted(int(c) for c in np.unique(y))
    if len(base) < 2:
        raise ZoEdgeError(f"the base task has only class {base[0]}; fitting a classifier needs samples of two or more")
    remap = np.full(num_classes, -1)
    remap[base] = np.arange(len(base))
    w_fit, b_fit, fit = _fit_softmax_regression(h, remap[y], weights[base], bias[base], l2)
    weights[base], bias[base] = w_fit, b_fit
    _draw_rows(weights, bias, [c for c in range(num_classes) if c not in kept and c not in base], w_fit, b_fit, rng)

    # int8: per-row weight scales with headroom, bias at input × weight scale, logits' range with the headroom
    row_max = np.abs(weights).max(axis=1)
    row_max[row_max == 0] = row_max.max() if row_max.max() > 0 else 1.0
    w_scale = (classifier_headroom * row_max / 127).astype(np.float32)
    w_q = np.clip(round_half_away(weights / w_scale[:, None]), -127, 127).astype(np.int8)
    b_scale = np.float32(h_scale) * w_scale.astype(np.float64)
    b_q = np.clip(round_half_away(bias / b_scale), -(2**31) + 1, 2**31 - 1).astype(np.int32)
    logits_float = h @ (classifier_headroom * weights).T + bias
    logits_scale, logits_zero_point = activation_quantization(logits_float.min(), logits_float.max())

    _write(model, weights_t, [num_classes, depth], np.int8, w_q, w_scale)
    if bias_t is None:
        bias_t = model.add_tensor([num_classes], np.int32, scale=b_scale, data=b_q, name="classifier/bias")
        model.set_op_input(row["op"], 2, bias_t)
    else:
        _write(model, bias_t, [num_classes], np.int32, b_q, b_scale)
    logits_shape = model.shape(logits_t)[:-1] + [num_classes]
    model.set_shape(logits_t, logits_shape)
    model.set_quantization(logits_t, logits_scale, logits_zero_point)
    fc = model.ops[row["op"]].op
    if fc.builtinOptions is None:  # logits: no fused activation, whatever the old head had
        model.set_op_options(row["op"], fully_connected_options("NONE"))
    else:
        fc.builtinOptions.fusedActivationFunction = 0
    if row["softmax"] is not None:
        model.set_shape(row["output"], logits_shape)
        model.set_quantization(row["output"], 1.0 / 256, -128)  # what TFLite's int8 SOFTMAX requires
    edited = model.pack()

    _, captured = _engine(edited, source).run(x, capture=[logits_t])
    predicted = captured[logits_t].reshape(len(x), num_classes).argmax(axis=1)
    report = {
        "op": row["op"], "softmax_kept": row["softmax"] is not None, "features": depth,
        "old_classes": old_classes, "classes": num_classes, "kept_rows": kept, "base_classes": base,
        "fit": fit, "int8_train_accuracy": float(np.mean(predicted == y)),
        "weight_scales": [float(w_scale.min()), float(w_scale.max())],
        "logits_quantization": [logits_scale, logits_zero_point], "classifier_headroom": float(classifier_headroom),
    }
    return edited, Classifier(input=features_t, weights=weights_t, bias=bias_t, logits=logits_t), report


def _write(model: TfliteModel, t: int, shape, dtype, values, scales) -> None:
    """Rewrite constant ``t`` with a new shape, type, per-channel (dimension 0) scales and values."""
    model.own_buffer(t)
    model.set_shape(t, shape)
    model.tensors[t].type = {np.int8: 9, np.int32: 2}[dtype]
    model.set_quantization(t, scales, 0, 0)
    model.write_const(t, values)


def _draw_rows(weights, bias, rows, w_ref, b_ref, rng) -> None:
    """Rows at the reference rows' magnitude: random directions, norms drawn from the reference norms'
    statistics (clipped to their range), bias the reference mean (``zo_edge.models.pretrain``'s rule)."""
    norms = np.linalg.norm(w_ref, axis=1)
    lo, hi, mu, sd = float(norms.min()), float(norms.max()), float(norms.mean()), float(norms.std())
    for c in rows:
        direction = rng.standard_normal(weights.shape[1])
        direction /= np.linalg.norm(direction)
        weights[c] = direction * (float(np.clip(rng.normal(mu, sd), lo, hi)) if hi > 0 else 0.0)
        bias[c] = float(np.mean(b_ref))


def _fit_softmax_regression(h, labels, w0, b0, l2: float, max_iterations: int = 500):
    """Multinomial logistic regression (mean cross-entropy + l2/2·|W|²) by L-BFGS from (w0, b0)."""
    from scipy.optimize import minimize

    n, depth = h.shape
    classes = w0.shape[0]
    onehot = np.eye(classes)[labels]

    def loss_and_gradient(theta):
        w, b = theta[: classes * depth].reshape(classes, depth), theta[classes * depth:]
        z = h @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(n), labels] + 1e-300)) + 0.5 * l2 * np.sum(w * w)
        e = (p - onehot) / n
        return loss, np.concatenate([(e.T @ h + l2 * w).ravel(), e.sum(axis=0)])

    theta0 = np.concatenate([w0.ravel(), b0])
    start_loss = float(loss_and_gradient(theta0)[0])
    result = minimize(loss_and_gradient, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iterations})
    w, b = result.x[: classes * depth].reshape(classes, depth), result.x[classes * depth:]
    accuracy = float(np.mean((h @ w.T + b).argmax(axis=1) == labels))
    return w, b, {"loss_start": start_loss, "loss": float(result.fun), "iterations": int(result.nit),
                  "float_train_accuracy": accuracy, "l2": float(l2)}


# ------------------------------------------------------------------------------------------------------
# both, in the order that keeps every reference valid


@dataclass(frozen=True)
class Adapted:
    model: bytes  # the adapted model: new classifier, adapters inserted
    plan: object  # its zo_edge.plan.Plan
    report: dict  # JSON-ready: the classifier fit, the adapters' places
    without_adapters: bytes  # the same model before the adapters went in


def adapt_tflite(model_bytes: bytes, *, num_classes: int, x_base_int8: np.ndarray, y_base, x_calibration_int8: np.ndarray,
                 at=None, width: int = 8, classifier=None, up_magnitude: float = 0.1, down_headroom: float = 1.5,
                 classifier_headroom: float = 2.0, seed: int = 0, source: str = "the model"):
    """A deployed int8 model made trainable: the classifier replaced, adapters inserted, the plan.

    ``classifier``: an op index or the name of its output tensor in the *original* file (default: the last
    FULLY_CONNECTED); ``at``: tensors (indices or names) for adapters, default the classifier's input.
    The classifier is replaced first, so an op index the user read from ``zo-edge inspect`` still means
    that op; tensor indices do not change in either step. Returns an ``Adapted``: the model, its
    ``plan.Plan``, a JSON-ready report, and the model with the new classifier but no adapters yet (what
    the adapted model must equal byte for byte before training).
    """
    from zo_edge.plan import Plan
    from zo_edge.qgraph import QGraph

    model = TfliteModel.from_bytes(model_bytes, source, hint=_HINT)
    row = find_classifier(model, classifier)
    edited, head, fit = replace_classifier(model_bytes, num_classes, x_base_int8, y_base, op=row["op"],
                                           classifier_headroom=classifier_headroom, seed=seed, source=source)
    at = [row["input"]] if at is None else at
    head_only = edited
    edited, adapters = insert_adapters(edited, at, width, x_calibration_int8, up_magnitude=up_magnitude,
                                       down_headroom=down_headroom, seed=seed, before=row["input"], source=source)
    model = TfliteModel.from_bytes(edited, source, hint=_HINT)
    fc = model.ops[model.producer[head.logits]]
    head = Classifier(input=fc.inputs[0], weights=head.weights, bias=head.bias, logits=head.logits)
    plan = Plan(input=model.inputs[0], output=model.outputs[0], classifier=head, adapters=tuple(adapters))
    plan.check(QGraph.from_bytes(edited, source=source), where=f"the plan for {source}")
    report = {"classifier": fit, "adapters": [{"name": a.name, "kind": a.kind, "tensor": a.cut,
                                                "tensor_name": model.short_name(a.cut), "width": int(width)}
                                               for a in adapters]}
    return Adapted(edited, plan, report, head_only)
