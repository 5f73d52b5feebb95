"""Full-integer post-training quantisation with room for the training to come (DESIGN.md §3).

``quantize_model`` converts a zoo model with ``tf.lite.TFLiteConverter.from_keras_model``: int8 in
and out, per-channel int8 weights, int32 biases, asymmetric int8 activations calibrated on real
training samples. Plain post-training quantisation sizes every range to the *initial* values, which
fails for what will be trained: a zero-initialised up-projection would get a zero or denormal scale,
and the activations it feeds would get no room to grow. So the ranges of the trainable tensors are set
for the *planned* magnitudes, and the report says which:

* **adapter up-projection** (zero-initialised): calibrated with its kernel at ±``up_magnitude``
  (random signs, every entry at the planned magnitude, so every output channel gets the scale
  ``up_magnitude / 127``); after conversion its int8 weights and int32 bias are overwritten with zeros
  in the flatbuffer — symmetric int8 zero is exactly 0.0, so the int8 adapter starts as the identity
  of its block, and the adapter output, the ADD and everything after it keep ranges with room for
  an adapter at the planned magnitude.
* **adapter down-projection** and **classifier**: calibrated with their kernels multiplied by
  ``down_headroom`` / ``classifier_headroom`` (per-channel weight scale = headroom × max |w| / 127);
  after conversion their int8 weights are rewritten from the true float kernels with those scales
  (round half away from zero). Their biases need no rewrite: the converter quantises the true bias
  with the scale input scale × (headroom) weight scale. The activations they feed (the adapter's
  hidden activation, the logits) are calibrated at the enlarged magnitude too.

Everything else is ordinary post-training quantisation on the calibration samples.

The result carries the ``.tflite`` bytes, a report with one row per tensor, and the *role map*: which
tensor index is the cut, the adapter's weights, the logits, ... found by op type and connectivity
(names are only a hint).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from zo_edge.errors import ZoEdgeError
from zo_edge.tflite_edit import TYPE_NAMES as _TYPE_NAMES
from zo_edge.tflite_edit import TfliteModel as _Graph
from zo_edge.tflite_edit import pack_model as _pack
from zo_edge.kernels.fixedpoint import round_half_away
from zo_edge.kernels.quantize import affine_quantize
from zo_edge.plan import Adapter, Classifier, Plan

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass
class QuantConfig:
    """Quantisation settings. The three magnitudes are the "planned magnitude" of DESIGN.md §3.

    up_magnitude: |w| of every adapter up-projection weight during calibration. Its int8 step is
        ``up_magnitude / 127`` (0.1 → 7.9e-4, about the reference's ZO ε = 1e-3), and the adapter
        output / ADD ranges leave room for an adapter this large.
    down_headroom: the down-projection's weight scales and hidden-activation range are this many
        times what its initial weights need.
    classifier_headroom: the same for the classifier's weight scales and the logits' range.
    calibration_samples: how many training samples calibrate the activation ranges.
    """

    up_magnitude: float = 0.1
    down_headroom: float = 1.5
    classifier_headroom: float = 2.0
    calibration_samples: int = 256

    def validate(self) -> None:
        for name in ("up_magnitude", "down_headroom", "classifier_headroom"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ZoEdgeError(f"quantisation setting {name} must be a positive number (got {v!r})")
        for name in ("down_headroom", "classifier_headroom"):
            if getattr(self, name) < 1:
                raise ZoEdgeError(f"quantisation setting {name} must be >= 1 (got {getattr(self, name)!r})")
        if int(self.calibration_samples) < 1:
            raise ZoEdgeError(f"calibration_samples must be >= 1 (got {self.calibration_samples!r})")


@dataclass
class QuantizedModel:
    tflite: bytes
    report: list  # one JSON-ready dict per tensor
    plan: Plan  # which tensors train (zo_edge.plan)
    config: dict
    checks: dict = field(default_factory=dict)

    def report_text(self) -> str:
        return report_to_text(self.report)

    def to_json(self) -> dict:
        return {"config": self.config, "plan": self.plan.to_json(), "checks": self.checks, "tensors": self.report}


_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


# ----------------------------------------------------------------------------------------------------
# flatbuffer access: zo_edge.tflite_edit, the one module that writes .tflite


def _parse(buf: bytes) -> _Graph:
    return _Graph.from_bytes(buf, "the model")


# ----------------------------------------------------------------------------------------------------
# int8 cleanliness and roles


def check_int8(graph: _Graph) -> None:
    """Refuse a model that did not convert to int8 cleanly (float tensors, DEQUANTIZE, float I/O)."""
    for t in list(graph.sg.inputs) + list(graph.sg.outputs):
        if graph.tensors[t].type != 9:
            raise ZoEdgeError(
                f"the converted model's {'input' if t in graph.sg.inputs else 'output'} {graph.name(t)!r} is "
                f"{_TYPE_NAMES.get(graph.tensors[t].type, '?')}, not int8; the converter could not quantise the "
                "model fully — use layers from the zoo (zo_edge.models) or check the calibration data"
            )
    for opname, ins, outs, _ in graph.ops:
        if opname in ("DEQUANTIZE", "CUSTOM") or opname.startswith("FLEX"):
            raise ZoEdgeError(
                f"the converted model contains a {opname} op ({graph.name(outs[0])!r}): it did not convert to int8 "
                "cleanly — a layer has no int8 kernel; use layers from the zoo (zo_edge.models)"
            )
    for t, tensor in enumerate(graph.tensors):
        if tensor.type in (0, 1, 10):
            raise ZoEdgeError(
                f"tensor {t} {graph.name(t)!r} is {_TYPE_NAMES[tensor.type]} after conversion: the model did not "
                "convert to int8 cleanly — use layers from the zoo (zo_edge.models)"
            )
    for opname, ins, outs, _ in graph.ops:
        if opname in _WEIGHTED_OPS:
            w = ins[1]
            if graph.tensors[w].type != 9 or graph.quant(w) is None:
                raise ZoEdgeError(f"{opname} weights {graph.name(w)!r} are not int8-quantised; re-run the conversion")
            if len(ins) > 2 and ins[2] >= 0 and graph.tensors[ins[2]].type != 2:
                raise ZoEdgeError(f"{opname} bias {graph.name(ins[2])!r} is not int32; re-run the conversion")


def _skip_relu(graph: _Graph, t: int) -> int:
    """Step back over a standalone RELU op (the converter normally fuses it)."""
    k = graph.producer.get(t)
    if k is not None and graph.ops[k][0] in ("RELU",):
        return graph.ops[k][1][0]
    return t


def _adapter_candidates(graph: _Graph):
    """(add op, up op, down op, cut, block output) tuples that have the adapter's structure."""
    found = []
    for k, (opname, ins, outs, _) in enumerate(graph.ops):
        if opname != "ADD" or len(ins) != 2:
            continue
        for side in (0, 1):
            up_k = graph.producer.get(ins[side])
            if up_k is None or graph.ops[up_k][0] not in ("CONV_2D", "FULLY_CONNECTED"):
                continue
            hidden = _skip_relu(graph, graph.ops[up_k][1][0])
            down_k = graph.producer.get(hidden)
            if down_k is None or graph.ops[down_k][0] not in ("CONV_2D", "FULLY_CONNECTED"):
                continue
            if graph.ops[down_k][0] != graph.ops[up_k][0]:
                continue
            up_w, down_w = graph.ops[up_k][1][1], graph.ops[down_k][1][1]
            if graph.ops[up_k][0] == "CONV_2D" and (graph.shape(up_w)[1:3] != [1, 1] or graph.shape(down_w)[1:3] != [1, 1]):
                continue
            cut = graph.ops[down_k][1][0]
            block_out = ins[1 - side]
            if cut not in graph.ancestors(block_out) or graph.shape(block_out) != graph.shape(ins[side]):
                continue
            found.append((k, up_k, down_k, cut, block_out))
    return found


def _names_layer(text: str, layer: str) -> bool:
    """Whether a converter tensor name (``model/adapter0_up/BiasAdd;...``) mentions a Keras layer by name."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(layer)}(?![A-Za-z0-9_])", text) is not None


def find_classifier(graph: _Graph, head: str = "dense") -> Classifier:
    """The FULLY_CONNECTED op whose output is the graph's output, or feeds the SOFTMAX that is; ``head`` is
    its kind (``zo_edge.plan.HEAD_KINDS``)."""
    sg = graph.sg
    if len(sg.inputs) != 1 or len(sg.outputs) != 1:
        raise ZoEdgeError(f"the model has {len(sg.inputs)} inputs and {len(sg.outputs)} outputs; zo-edge trains "
                          "models with one input and one output")
    logits = int(sg.outputs[0])
    k = graph.producer.get(logits)
    if k is not None and graph.ops[k][0] == "SOFTMAX":
        logits = graph.ops[k][1][0]
        k = graph.producer.get(logits)
    if k is None or graph.ops[k][0] != "FULLY_CONNECTED":
        found = graph.ops[k][0] if k is not None else "no op"
        raise ZoEdgeError(f"the model's output is made by {found}, not by a FULLY_CONNECTED classifier (optionally "
                          "followed by a SOFTMAX); the classifier must be a Dense layer")
    ins = graph.ops[k][1]
    if len(ins) < 3 or ins[2] < 0:
        raise ZoEdgeError("the classifier has no bias tensor; give the Dense layer a bias (use_bias=True)")
    if head == "cosine":
        features = graph.producer.get(ins[0])
        if features is None or graph.ops[features][0] != "L2_NORMALIZATION":
            raise ZoEdgeError("a cosine classifier must read an L2 normalisation of the features "
                              "(zo_edge.models.L2Normalize, an L2_NORMALIZATION op in the int8 model)")
    return Classifier(input=ins[0], weights=ins[1], bias=ins[2], logits=logits, kind=head)


def find_plan(buf_or_graph, adapters=None, classifier: str | None = None, head: str = "dense") -> Plan:
    """The adaptation plan (``zo_edge.plan``) of a converted model.

    The classifier is the FULLY_CONNECTED op that makes the output (a SOFTMAX may follow it). Each
    adapter is an ADD whose one input is ``up(relu(down(cut)))`` (1x1 CONV_2D or FULLY_CONNECTED pairs)
    while its other input depends on the same cut. ``adapters``: the Keras layers behind them,
    ``[{"down": name, "up": name}, ...]``: each must match exactly one structural candidate, chosen by
    the layer name in the converter's tensor names (a match by name alone is never taken); when the
    graph carries none of the names, the candidates are taken in graph order if their number is right.
    ``adapters=None``: every structural candidate, with no Keras names. ``classifier``: the Dense layer's
    name, recorded for float mode. Adapters are numbered in graph order.
    """
    graph = buf_or_graph if isinstance(buf_or_graph, _Graph) else _parse(buf_or_graph)
    head = Classifier(**{**asdict(find_classifier(graph, head)), "keras": classifier})
    candidates = sorted(_adapter_candidates(graph))  # graph order of the ADDs
    if adapters is None:
        found = [(c, None) for c in candidates]
    else:
        adapters = list(adapters)

        def mentions(candidate, layer):
            up_k = candidate[1]
            return any(_names_layer(graph.name(t), layer) for t in graph.ops[up_k][1][1:] + graph.ops[up_k][2])

        if adapters and not any(mentions(c, a["up"]) for c in candidates for a in adapters):
            if len(candidates) != len(adapters):
                raise ZoEdgeError(f"the converted graph has {len(candidates)} adapter-shaped branches for "
                                  f"{len(adapters)} adapters; their layers must form x + up(relu(down(x))) with "
                                  "1x1 Conv2D or Dense layers")
            found = list(zip(candidates, adapters))  # no names survived the conversion: graph order
        else:
            found = []
            for layers in adapters:
                named = [c for c in candidates if mentions(c, layers["up"])]
                if len(named) != 1:
                    raise ZoEdgeError(f"the adapter {layers['up']!r} was found {len(named)} times in the converted "
                                      f"graph (of {len(candidates)} adapter-shaped branches); its layers must form "
                                      "x + up(relu(down(x))) with 1x1 Conv2D or Dense layers")
                found.append((named[0], layers))
            if len({c[0] for c, _ in found}) != len(found):
                raise ZoEdgeError("two adapters matched the same branch of the converted graph; give them "
                                  "distinct names")
    plan_adapters = []
    for i, ((add_k, up_k, down_k, cut, block_out), layers) in enumerate(sorted(found, key=lambda f: f[0][0])):
        up_ins, down_ins = graph.ops[up_k][1], graph.ops[down_k][1]
        if len(up_ins) < 3 or up_ins[2] < 0 or len(down_ins) < 3 or down_ins[2] < 0:
            raise ZoEdgeError(f"adapter {i} has no bias tensor; give its layers a bias and convert again")
        plan_adapters.append(Adapter(
            name=f"adapter{i}", kind="conv1x1" if graph.ops[up_k][0] == "CONV_2D" else "dense", cut=cut,
            down_weights=down_ins[1], down_bias=down_ins[2], hidden=up_ins[0], up_weights=up_ins[1],
            up_bias=up_ins[2], output=graph.ops[up_k][2][0], block_output=block_out,
            add_output=graph.ops[add_k][2][0],
            keras=None if layers is None else {k: layers[k] for k in ("down", "up", "add") if k in layers}))
    return Plan(input=int(graph.sg.inputs[0]), output=int(graph.sg.outputs[0]), classifier=head,
                adapters=tuple(plan_adapters))


def check_tflite(buf: bytes, adapters=None, classifier: str | None = None) -> Plan:
    """Check that a .tflite converted cleanly to int8 and return its plan (``find_plan``)."""
    graph = _parse(buf)
    check_int8(graph)
    plan = find_plan(graph, adapters, classifier)
    _check_scales(graph, plan)
    return plan
def op_list(buf: bytes) -> list:
    """The builtin op names of a .tflite, in execution order."""
    return [name for name, *_ in _parse(buf).ops]


# ----------------------------------------------------------------------------------------------------
# weight (re)quantisation helpers


def quantize_input(x, scale: float, zero_point: int) -> np.ndarray:
    """float → int8 exactly as the QUANTIZE kernel does it (AffineQuantize, float32 division)."""
    return affine_quantize(x, scale, int(zero_point))


def _keras_to_tflite_kernel(kernel: np.ndarray) -> np.ndarray:
    """Keras Conv2D [kh, kw, in, out] → TFLite [out, kh, kw, in]; Dense [in, out] → [out, in]."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim == 4:
        return np.transpose(kernel, (3, 0, 1, 2))
    if kernel.ndim == 2:
        return kernel.T
    raise ValueError(f"unexpected kernel rank {kernel.ndim}")


def _requantize_weights(kernel_tfl: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Per-channel (dimension 0) symmetric int8 of a float kernel with given scales."""
    shape = (-1,) + (1,) * (kernel_tfl.ndim - 1)
    q = round_half_away(kernel_tfl / np.asarray(scales, dtype=np.float64).reshape(shape))
    return np.clip(q, -127, 127).astype(np.int8)


def _requantize_bias(bias: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """int32 bias: round(b / (input scale × weight scale)) half away from zero, per channel."""
    q = round_half_away(np.asarray(bias, dtype=np.float64) / np.asarray(scales, dtype=np.float64))
    return np.clip(q, -(2**31) + 1, 2**31 - 1).astype(np.int32)


_own_buffer, _write_const, _read_const = _Graph.own_buffer, _Graph.write_const, _Graph.read_const


# ----------------------------------------------------------------------------------------------------
# conversion


def _calibration_samples(x, n: int, seed: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise ZoEdgeError("calibration needs at least one training sample [N, *input_shape]")
    rng = np.random.default_rng([int(seed), 0xCA1B])
    idx = np.sort(rng.permutation(len(x))[: min(int(n), len(x))])
    return x[idx]


def _convert(model, samples: np.ndarray) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([samples[i : i + 1]] for i in range(len(samples)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel = False  # per-channel weights (the default, made explicit)
    converter._experimental_disable_per_channel_quantization_for_dense_layers = False
    try:
        with _quiet():
            return bytes(converter.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ZoEdgeError(
            f"TFLite int8 conversion failed ({first[:200]}); use layers from the zoo (zo_edge.models)"
        ) from None


@contextlib.contextmanager
def _quiet():
    """Silence the converter's chatter (Keras export prints to stdout, MLIR logs to fd 2)."""
    import io
    import sys
    import tempfile
    import warnings

    saved = []
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        sink = tempfile.TemporaryFile()
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(sink.fileno(), fd)
    except (OSError, ValueError, AttributeError):  # no real file descriptors (e.g. captured streams)
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)
        saved = []
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for fd, dup in saved:
            try:
                sys.stdout.flush()
            except Exception:  # noqa: BLE001
                pass
            os.dup2(dup, fd)
            os.close(dup)


def keras_adapters(model) -> list[dict]:
    """The adapters of a Keras model by the zoo's layer names, in layer order: ``adapter{i}_down`` /
    ``adapter{i}_up`` (and the single adapter of earlier zo-edge versions, ``adapter_down`` / ``adapter_up``)."""
    names = [layer.name for layer in model.layers]
    found = []
    for name in names:
        m = re.fullmatch(r"(adapter\d*)_down", name)
        if m and f"{m.group(1)}_up" in names:
            found.append({"down": name, "up": f"{m.group(1)}_up", "add": f"{m.group(1)}_add"})
    return found


def quantize_model(model, calibration_x, config: QuantConfig | None = None, seed: int = 0,
                   verify: bool = True, adapters=None, classifier: str = "classifier",
                   head: str = "dense") -> QuantizedModel:
    """Convert a Keras model with adapters and a Dense classifier to a full-integer int8 .tflite with
    headroom for every trainable tensor; return it with its plan.

    ``calibration_x``: real training samples (float, [N, *input_shape]); up to
    ``config.calibration_samples`` of them, chosen with ``seed``, calibrate the activation ranges.
    ``adapters``: ``[{"down": layer, "up": layer}, ...]`` (default: ``keras_adapters(model)``), each with a
    zero-initialised up-projection; ``classifier``: the Dense layer that makes the logits, ``head`` its kind
    ("cosine": it reads an L2 normalisation and its bias is zero, written as zeros). ``verify``
    loads the patched model in TFLM and checks that every zeroed adapter is the identity of its block up
    to the ADD's requantisation.
    """
    config = config or QuantConfig()
    config.validate()
    samples = _calibration_samples(calibration_x, config.calibration_samples, seed)
    if tuple(samples.shape[1:]) != tuple(model.input_shape[1:]):
        raise ZoEdgeError(
            f"calibration samples have shape {tuple(samples.shape[1:])} but the model expects {tuple(model.input_shape[1:])}"
        )
    adapters = keras_adapters(model) if adapters is None else list(adapters)
    layer_names = {layer.name for layer in model.layers}
    for name in [classifier] + [a[k] for a in adapters for k in ("down", "up")]:
        if name not in layer_names:
            raise ZoEdgeError(f"the model has no layer named {name!r}")

    # 1. calibrate at the planned magnitudes
    trainable = [classifier] + [a[k] for a in adapters for k in ("down", "up")]
    true = {name: [np.array(w) for w in model.get_layer(name).get_weights()] for name in trainable}
    for name, weights in true.items():
        if len(weights) != 2:
            raise ZoEdgeError(f"layer {name!r} has no bias; trainable layers need one (use_bias=True)")
    rng = np.random.default_rng([int(seed), 0xADA])
    try:
        # A bias that is exactly zero would be dropped by the converter (FULLY_CONNECTED without bias),
        # so each trainable bias is calibrated with a negligible nudge and rewritten afterwards.
        def nudge(b):
            return (b + np.where(rng.random(b.shape) < 0.5, -1e-6, 1e-6)).astype(np.float32)

        for a in adapters:
            k_up, b_up = true[a["up"]]
            signs = np.where(rng.random(k_up.shape) < 0.5, -1.0, 1.0).astype(np.float32)
            model.get_layer(a["up"]).set_weights([signs * np.float32(config.up_magnitude), nudge(b_up)])
            k_down, b_down = true[a["down"]]
            model.get_layer(a["down"]).set_weights([k_down * np.float32(config.down_headroom), nudge(b_down)])
        k_cls, b_cls = true[classifier]
        model.get_layer(classifier).set_weights([k_cls * np.float32(config.classifier_headroom), nudge(b_cls)])
        raw = _convert(model, samples)
    finally:
        for name, weights in true.items():
            model.get_layer(name).set_weights(weights)

    # 2. check, find the plan, patch the trainable tensors to their true starting values
    graph = _parse(raw)
    check_int8(graph)
    plan = find_plan(graph, adapters, classifier, head)
    patches = [(plan.classifier.weights, plan.classifier.bias, *true[classifier])]
    for a in plan.adapters:
        patches.append((a.down_weights, a.down_bias, *true[a.keras["down"]]))
        patches.append((a.up_weights, a.up_bias, *(np.zeros_like(w) for w in true[a.keras["up"]])))
    for t, tb, kernel, bias in patches:
        kernel = _keras_to_tflite_kernel(kernel)
        scales, _, qdim = graph.quant(t)
        if qdim != 0 or len(scales) != kernel.shape[0] or list(kernel.shape) != graph.shape(t):
            raise ZoEdgeError(f"{graph.name(t)}: unexpected quantisation layout (dimension {qdim}, {len(scales)} "
                              "scales); re-run the conversion")
        _write_const(graph, t, _requantize_weights(kernel, scales))
        _write_const(graph, tb, _requantize_bias(bias, graph.quant(tb)[0]))
    for t in plan.trainable_indices():  # every trainable tensor owns its buffer, even if untouched above
        _own_buffer(graph, t)
    tflite = _pack(graph.model)

    # 3. re-read, sanity-check the scales, verify in TFLM
    graph = _parse(tflite)
    check_int8(graph)
    if find_plan(graph, adapters, classifier, head) != plan:
        raise AssertionError("the plan changed after patching the flatbuffer")
    _check_scales(graph, plan)
    for a in plan.adapters:
        if np.any(_read_const(graph, a.up_weights) != 0):
            raise AssertionError(f"{a.name} up weights are not zero after the patch")
    checks = verify_identity_adapters(tflite, plan, samples[:8]) if verify else {}
    cfg = asdict(config)
    cfg["seed"] = int(seed)
    cfg["calibration_samples_used"] = int(len(samples))
    report = build_report(graph, plan, config)
    return QuantizedModel(tflite=tflite, report=report, plan=plan, config=cfg, checks=checks)


def _check_scales(graph: _Graph, plan: Plan) -> None:
    """Trainable tensors and the activations they feed must have positive, normal, sane scales."""
    tiny = float(np.finfo(np.float32).tiny)
    for role, t in plan.roles().items():
        q = graph.quant(t)
        if q is None:
            raise ZoEdgeError(f"{role} (tensor {t}) has no quantisation parameters; re-run the conversion")
        scales = q[0]
        bad = ~np.isfinite(scales) | (scales <= max(1e-30, tiny)) | (scales > 1e6)
        if bad.any():
            raise ZoEdgeError(
                f"{role} (tensor {t}) got a degenerate scale ({float(scales[bad][0]):.3g}); its calibration saw no "
                "range — check the calibration samples and the quantisation magnitudes"
            )


def verify_identity_adapters(tflite: bytes, plan: Plan, x_float: np.ndarray) -> dict:
    """Run TFLM on a few samples: every zeroed adapter must output exactly its zero point, and its ADD must
    equal the block's output requantised to the ADD's scale (within 1 LSB)."""
    from zo_edge.tflm import TflmOracle

    graph = _parse(tflite)
    oracle = TflmOracle(tflite, intermediates=True)
    s_in, zp_in = graph.quant(plan.input)[0][0], graph.quant(plan.input)[1][0]
    xq = quantize_input(x_float, s_in, zp_in)
    wanted = [t for a in plan.adapters for t in (a.output, a.block_output, a.add_output)]
    outs, tensors = oracle.run(xq, wanted)
    checks = {"tflm_loads": True, "tflm_samples": int(len(xq)),
              "logits_range": [int(outs[0].min()), int(outs[0].max())]}
    worst = 0
    for a in plan.adapters:
        zp_a = int(graph.quant(a.output)[1][0])
        if np.any(tensors[a.output] != zp_a):
            raise AssertionError(f"the zeroed {a.name} does not output its zero point in TFLM")
        (s_b,), (zp_b,) = graph.quant(a.block_output)[:2]
        (s_o,), (zp_o,) = graph.quant(a.add_output)[:2]
        b = tensors[a.block_output].astype(np.float64)
        expected = np.clip(round_half_away((b - zp_b) * s_b / s_o) + zp_o, -128, 127)
        diff = int(np.abs(tensors[a.add_output].astype(np.float64) - expected).max())
        if diff > 1:
            raise AssertionError(f"{a.name}'s ADD differs from the requantised block output by {diff} LSB")
        worst = max(worst, diff)
    if plan.adapters:
        checks.update({"adapter_outputs_are_zero_points": True, "add_vs_requantised_block_max_lsb": worst})
    return checks


# ----------------------------------------------------------------------------------------------------
# report


def _headroom(role: str, config: QuantConfig) -> str:
    """Why a role's range was set for training (DESIGN.md §3); "" for an ordinary one."""
    a, hd, hc = config.up_magnitude, config.down_headroom, config.classifier_headroom
    suffix = role.split(".", 1)[1] if role.startswith("adapter") else role
    return {
        "up.weights": f"per-channel scales = {a:g}/127 from calibrating with the kernel at ±{a:g} (planned "
                      "magnitude); int8 values then zeroed so the adapter starts as the identity",
        "up.bias": "scale = cut-side input scale × planned-magnitude weight scale; values zeroed",
        "output": f"range calibrated with the up-projection at ±{a:g}",
        "add_output": f"range calibrated with the adapter active (up-projection at ±{a:g})",
        "down.weights": f"per-channel scales = {hd:g} × initial max|w|/127 (calibrated with the kernel ×{hd:g}, "
                        "true values written back)",
        "down.bias": f"scale = input scale × ({hd:g}× headroom) weight scale",
        "hidden": f"range calibrated with the down-projection ×{hd:g}",
        "classifier.weights": f"per-channel scales = {hc:g} × initial max|w|/127 (calibrated with the kernel ×{hc:g}, "
                              "true values written back)",
        "classifier.bias": f"scale = input scale × ({hc:g}× headroom) weight scale",
        "logits": f"range calibrated with the classifier ×{hc:g} and the adapters active",
    }.get(suffix, "")


def build_report(graph: _Graph, plan: Plan, config: QuantConfig) -> list:
    by_tensor = {}
    for role, t in plan.roles().items():
        by_tensor.setdefault(t, []).append(role)
    downstream = set().union(*(graph.descendants(a.add_output) for a in plan.adapters)) if plan.adapters else set()
    add_quant = {a.block_output: graph.quant(a.add_output) for a in plan.adapters}
    rows = []
    for t, tensor in enumerate(graph.tensors):
        q = graph.quant(t)
        role_list = by_tensor.get(t, [])
        reasons = [r for r in (_headroom(role, config) for role in role_list) if r]
        if not reasons and t in add_quant and q is not None and add_quant[t] is not None and all(
                np.array_equal(x, y) for x, y in zip(q[:2], add_quant[t][:2])):
            reasons = ["the converter gave it the ADD output's range (calibrated with the adapter active)"]
        if not reasons and t in downstream and q is not None and not graph.is_const(t):
            reasons = [f"downstream of an adapter: calibrated with the up-projection at ±{config.up_magnitude:g}"]
        rows.append({
            "index": t,
            "name": graph.name(t),
            "shape": graph.shape(t),
            "dtype": _TYPE_NAMES.get(tensor.type, str(tensor.type)),
            "const": graph.is_const(t),
            "scales": [] if q is None else [float(s) for s in q[0]],
            "zero_points": [] if q is None else [int(z) for z in q[1]],
            "quantized_dimension": None if q is None else q[2],
            "role": ", ".join(role_list),
            "headroom": bool(reasons),
            "headroom_reason": "; ".join(reasons),
        })
    return rows


def _fmt_scales(scales) -> str:
    if not scales:
        return "-"
    if len(scales) == 1:
        return f"{scales[0]:.4g}"
    return f"{min(scales):.3g}..{max(scales):.3g} (×{len(scales)})"


def report_to_text(report: list) -> str:
    """An aligned table of the quantisation report (one line per tensor, headroom notes below)."""
    header = ["idx", "dtype", "shape", "scale", "zero point", "qdim", "role", "headroom", "name"]
    lines = []
    for row in report:
        zps = row["zero_points"]
        zp = "-" if not zps else (str(zps[0]) if len(set(zps)) == 1 else f"{min(zps)}..{max(zps)}")
        name = row["name"]
        lines.append([
            str(row["index"]), row["dtype"], "x".join(str(d) for d in row["shape"]) or "scalar",
            _fmt_scales(row["scales"]), zp, "-" if row["quantized_dimension"] is None else str(row["quantized_dimension"]),
            row["role"] or "-", "yes" if row["headroom"] else "", name if len(name) <= 60 else name[:57] + "...",
        ])
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) if lines else len(header[i]) for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines]
    notes = [f"  [{row['index']}] {row['role']}: {row['headroom_reason']}" for row in report if row["headroom"]]
    if notes:
        out += ["", "ranges set with headroom for training (DESIGN.md §3):"] + notes
    return "\n".join(out) + "\n"


def report_to_json(quantized: QuantizedModel) -> str:
    return json.dumps(quantized.to_json(), indent=1)
