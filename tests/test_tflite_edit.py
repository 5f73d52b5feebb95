"""Graph surgery on deployed int8 models (zo_edge.surgery through zo_edge.tflite_edit) and `zo-edge inspect`.

The models are made here the way a user's deployed model is made: a small Keras model trained briefly on
real data (scikit-learn's handwritten digits), converted by TFLiteConverter to full int8, and the float
original thrown away — only the .tflite bytes reach zo-edge. Two shapes: a CNN ending in a SOFTMAX that
knows 6 of the 10 classes, and an MLP of Dense layers that ends in logits.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from zo_edge import ZoEdgeError
from zo_edge.engine import Engine
from zo_edge.inspect import format_inspection, inspect_model
from zo_edge.qgraph import QGraph
from zo_edge.surgery import adapt_tflite, adapter_candidates, find_classifier, insert_adapters, replace_classifier
from zo_edge.tflite_edit import TfliteModel
from zo_edge.tflm import TflmOracle

KNOWN = 6  # the CNN is trained on classes 0..5


def one_line_error(call, *fragments) -> str:
    with pytest.raises(ZoEdgeError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# -- the deployed models ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    from zo_edge.data import load_dataset

    return load_dataset("digits", seed=0)


def _deploy(model, x_train) -> bytes:
    """TFLiteConverter full int8, as a user would; the float model is not kept."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x_train[i : i + 1]] for i in range(0, 400, 4))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return bytes(converter.convert())


@pytest.fixture(scope="module")
def cnn(digits) -> bytes:
    """Conv → max-pool → conv → global average → Dense(24, relu) → Dense(6) → softmax, on classes 0..5."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    inp = keras.Input((8, 8, 1), batch_size=1)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inp)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_b")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(24, activation="relu", name="hidden")(x)
    out = layers.Softmax(name="probabilities")(layers.Dense(KNOWN, name="head")(x))
    model = keras.Model(inp, out)
    known = digits.y_train < KNOWN
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(digits.x_train[known], digits.y_train[known], epochs=8, batch_size=32, verbose=0)
    return _deploy(model, digits.x_train[known])


@pytest.fixture(scope="module")
def mlp(digits) -> bytes:
    """Flatten → Dense(32, relu) → Dense(16, relu) → Dense(10) logits, on all ten classes."""
    import keras

    keras.utils.set_random_seed(1)
    layers = keras.layers
    inp = keras.Input((8, 8, 1), batch_size=1)
    x = layers.Dense(32, activation="relu", name="fc1")(layers.Flatten(name="flat")(inp))
    x = layers.Dense(16, activation="relu", name="fc2")(x)
    model = keras.Model(inp, layers.Dense(10, name="head")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=6, batch_size=32, verbose=0)
    return _deploy(model, digits.x_train)


def int8_inputs(buf: bytes, x) -> np.ndarray:
    return Engine(QGraph.from_bytes(buf)).quantize_input(x)


def named(buf: bytes, layer: str) -> int:
    """The one activation made by Keras layer ``layer`` (the converter names it ".../layer_1/Relu")."""
    model = TfliteModel.from_bytes(buf)
    pattern = re.compile(rf"/{layer}(_\d+)?/")
    found = [t for t in adapter_candidates(model) if pattern.search(model.short_name(t))]
    assert len(found) == 1, (layer, [model.short_name(t) for t in adapter_candidates(model)])
    return found[0]


def assert_same_bytes(what: str, got: list, want: list) -> int:
    """Every array of ``got`` equals ``want`` byte for byte; returns how many bytes were compared."""
    compared = 0
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.dtype == b.dtype and a.shape == b.shape, (what, k, a.shape, b.shape)
        differing = int(np.count_nonzero(a.view(np.uint8) != b.view(np.uint8)))
        assert differing == 0, f"{what}: {differing} of {a.nbytes} bytes differ in array {k}"
        compared += a.nbytes
    assert compared > 0, f"{what}: nothing was compared"
    return compared


def engine_equals_tflm_everywhere(buf: bytes, x: np.ndarray) -> int:
    """Engine and TFLM agree on every activation of the model (intermediates preserved); bytes compared."""
    graph = QGraph.from_bytes(buf)
    activations = [t.index for t in graph.tensors if not t.is_constant]
    engine_out, engine_t = Engine(graph).run(x, capture=activations)
    tflm_out, tflm_t = TflmOracle(buf, intermediates=True).run(x, activations)
    compared = assert_same_bytes("outputs", engine_out, tflm_out)
    return compared + assert_same_bytes("activations", [engine_t[t] for t in activations],
                                        [tflm_t[t].reshape(engine_t[t].shape) for t in activations])


# -- adapters: the outputs do not move --------------------------------------------------------------------

CNN_PLACES = {  # the Keras layers whose outputs take the adapters (the converter keeps the layer names)
    "first conv (4-D, conv1x1)": ["conv_a"],
    "pooled features (2-D, dense)": ["gap"],
    "three at once, named out of order": ["hidden", "conv_b", "pool"],
}


@pytest.mark.parametrize("where", list(CNN_PLACES))
def test_inserted_adapters_leave_every_output_byte_unchanged(cnn, digits, where, capsys):
    at = [named(cnn, f) for f in CNN_PLACES[where]]
    x_cal = int8_inputs(cnn, digits.x_train[:128])
    edited, adapters = insert_adapters(cnn, at, 8, x_cal, seed=0)
    assert sorted(a.cut for a in adapters) == sorted(at)
    x = int8_inputs(cnn, digits.x_test)
    tflm = assert_same_bytes("TFLM outputs, edited vs original", TflmOracle(edited).run(x)[0], TflmOracle(cnn).run(x)[0])
    engine = assert_same_bytes("engine outputs, edited vs original",
                               Engine(QGraph.from_bytes(edited)).run(x)[0], Engine(QGraph.from_bytes(cnn)).run(x)[0])
    with capsys.disabled():
        print(f"\n  {where}: {tflm} output bytes (TFLM) and {engine} (engine) compared on {len(x)} test samples, 0 differ")


def test_the_engine_equals_tflm_on_every_tensor_of_the_edited_model(cnn, mlp, digits):
    x_cal = int8_inputs(cnn, digits.x_train[:128])
    edited, _ = insert_adapters(cnn, [named(cnn, f) for f in CNN_PLACES["three at once, named out of order"]], 8, x_cal)
    assert engine_equals_tflm_everywhere(edited, int8_inputs(cnn, digits.x_test[:64])) > 64 * 1000
    edited, _ = insert_adapters(mlp, [named(mlp, "fc2"), named(mlp, "fc1")], 4, int8_inputs(mlp, digits.x_train[:128]))
    assert engine_equals_tflm_everywhere(edited, int8_inputs(mlp, digits.x_test[:64])) > 64 * 50


def test_fully_connected_adapters_on_an_mlp_leave_its_logits_unchanged(mlp, digits):
    at = [named(mlp, "fc1"), named(mlp, "fc2")]
    edited, adapters = insert_adapters(mlp, at, 4, int8_inputs(mlp, digits.x_train[:128]))
    assert [a.kind for a in adapters] == ["dense", "dense"]
    x = int8_inputs(mlp, digits.x_test)
    assert_same_bytes("TFLM logits", TflmOracle(edited).run(x)[0], TflmOracle(mlp).run(x)[0])
    graph = QGraph.from_bytes(edited)
    assert [op.opcode for op in graph.ops].count("FULLY_CONNECTED") == 3 + 2 * 2


def test_a_trained_up_projection_changes_the_outputs_and_the_engine_still_equals_tflm(cnn, digits):
    """The unchanged bytes above are not an adapter that nobody reads: give up nonzero weights and the
    outputs move — in TFLM and the engine alike."""
    edited, (adapter,) = insert_adapters(cnn, [named(cnn, "conv_b")], 8, int8_inputs(cnn, digits.x_train[:128]))
    model = TfliteModel.from_bytes(edited)
    rng = np.random.default_rng(0)
    model.write_const(adapter.up_weights, rng.integers(-127, 128, size=model.shape(adapter.up_weights)))
    trained = model.pack()
    x = int8_inputs(cnn, digits.x_test[:64])
    moved = np.count_nonzero(TflmOracle(trained).run(x)[0][0] != TflmOracle(cnn).run(x)[0][0])
    assert moved > 0
    engine_equals_tflm_everywhere(trained, x)


def test_adapters_come_back_in_graph_order_with_the_quantisation_the_design_asks_for(cnn, digits):
    at = [named(cnn, f) for f in ("hidden", "conv_a", "gap")]  # out of graph order on purpose
    x_cal = int8_inputs(cnn, digits.x_train[:128])
    edited, adapters = insert_adapters(cnn, at, 8, x_cal, up_magnitude=0.1, down_headroom=1.5)
    original = TfliteModel.from_bytes(cnn)
    assert [a.name for a in adapters] == ["adapter0", "adapter1", "adapter2"]
    assert [a.cut for a in adapters] == sorted(at, key=lambda t: original.producer[t])
    assert [a.kind for a in adapters] == ["conv1x1", "dense", "dense"]
    model = TfliteModel.from_bytes(edited)
    graph = QGraph.from_bytes(edited)
    engine = Engine(graph)
    _, values = engine.run(x_cal, capture=[a.hidden for a in adapters])
    for a in adapters:
        cut_scale, cut_zp = model.scalar_quant(a.cut)
        channels = model.shape(a.cut)[-1]
        assert model.quant(a.add_output)[0].tolist() == model.quant(a.cut)[0].tolist()  # T' has T's scale exactly
        assert model.scalar_quant(a.add_output)[1] == cut_zp
        assert np.float32(model.scalar_quant(a.output)[0]) <= np.float32(cut_scale)
        assert not model.read_const(a.up_weights).any() and not model.read_const(a.up_bias).any()
        np.testing.assert_allclose(model.quant(a.up_weights)[0], np.full(channels, 0.1 / 127), rtol=1e-6)
        down = model.read_const(a.down_weights).reshape(8, -1)
        assert np.abs(down).max(axis=1).tolist() == [85] * 8  # round(127 / 1.5): the headroom, every channel
        assert model.scalar_quant(a.hidden)[1] == -128  # relu: the range starts at 0
        # the hidden range is the calibration's maximum × 1.5, so on those samples the int8 peak is 255/1.5 - 128
        assert abs(int(values[a.hidden].max()) - (round(255 / 1.5) - 128)) <= 2, a.name
        consumers = {tuple(op.inputs) for op in graph.ops if a.cut in op.inputs}
        assert len(consumers) == 2  # only down and ADD read T now; everything else reads T'
    assert set(graph.outputs) == set(original.outputs)


def test_an_adapter_on_the_graph_output_rewires_the_output(mlp, digits):
    out = TfliteModel.from_bytes(mlp).outputs[0]
    edited, (adapter,) = insert_adapters(mlp, [out], 4, int8_inputs(mlp, digits.x_train[:64]))
    model = TfliteModel.from_bytes(edited)
    assert model.outputs == [adapter.add_output]
    signature_outputs = [m.tensorIndex for sig in model.model.signatureDefs for m in sig.outputs]
    assert signature_outputs == [adapter.add_output]  # what LiteRT's signature runner reads follows too
    x = int8_inputs(mlp, digits.x_test[:64])
    assert_same_bytes("logits", TflmOracle(edited).run(x)[0], TflmOracle(mlp).run(x)[0])


def test_tensors_are_named_by_index_name_or_short_name(cnn, digits):
    model = TfliteModel.from_bytes(cnn)
    t = named(cnn, "conv_b")
    x_cal = int8_inputs(cnn, digits.x_train[:32])
    by_index = insert_adapters(cnn, [str(t)], 4, x_cal)[0]
    assert insert_adapters(cnn, [model.name(t)], 4, x_cal)[0] == by_index
    assert insert_adapters(cnn, [model.short_name(t)], 4, x_cal)[0] == by_index


def test_bad_adapter_places_are_one_line_naming_the_candidates(cnn, digits):
    model = TfliteModel.from_bytes(cnn)
    x_cal = int8_inputs(cnn, digits.x_train[:32])
    some = model.short_name(named(cnn, "conv_b"))
    one_line_error(lambda: insert_adapters(cnn, ["no_such_layer/Relu"], 8, x_cal), "'no_such_layer/Relu' names no tensor",
                   "candidates (index: name)", some)
    one_line_error(lambda: insert_adapters(cnn, [9999], 8, x_cal), "has tensors 0..", some)
    const = next(t for t in range(len(model.tensors)) if model.is_const(t))
    one_line_error(lambda: insert_adapters(cnn, [const], 8, x_cal), "cannot take an adapter: it is a constant", some)
    one_line_error(lambda: insert_adapters(cnn, [model.inputs[0]], 8, x_cal), "graph input")
    t = named(cnn, "conv_b")
    one_line_error(lambda: insert_adapters(cnn, [t, str(t)], 8, x_cal), "named twice")
    one_line_error(lambda: insert_adapters(cnn, [t], 0, x_cal), "adapter width")
    one_line_error(lambda: insert_adapters(cnn, [t], 8, digits.x_train[:8]), "must be int8 [N, 8, 8, 1]")
    logits = find_classifier(model)["logits"]
    one_line_error(lambda: insert_adapters(cnn, [logits], 8, x_cal, before=find_classifier(model)["input"]),
                   "not before the classifier's input")


# -- the classifier -----------------------------------------------------------------------------------


def test_the_default_classifier_is_the_last_fully_connected_with_its_softmax(cnn, mlp):
    model = TfliteModel.from_bytes(cnn)
    row = find_classifier(model)
    assert model.ops[row["op"]].name == "FULLY_CONNECTED" and row["softmax"] is not None
    assert row["output"] == model.outputs[0] and model.shape(row["weights"]) == [KNOWN, 24]
    row = find_classifier(TfliteModel.from_bytes(mlp))
    assert row["softmax"] is None and row["logits"] == TfliteModel.from_bytes(mlp).outputs[0]


def test_a_classifier_that_is_not_fully_connected_is_refused_naming_what_it_is(cnn, digits):
    model = TfliteModel.from_bytes(cnn)
    conv = next(k for k, op in enumerate(model.ops) if op.name == "CONV_2D")
    x, y = int8_inputs(cnn, digits.x_train[:32]), digits.y_train[:32]
    one_line_error(lambda: replace_classifier(cnn, 10, x, y, op=conv), f"op {conv}, a CONV_2D, not a FULLY_CONNECTED",
                   "candidates: op")
    softmax_out = model.name(model.outputs[0])
    one_line_error(lambda: replace_classifier(cnn, 10, x, y, op=softmax_out), "a SOFTMAX, not a FULLY_CONNECTED")
    hidden_fc = next(k for k, op in enumerate(model.ops) if op.name == "FULLY_CONNECTED")
    one_line_error(lambda: replace_classifier(cnn, 10, x, y, op=hidden_fc), "cannot be replaced as the classifier",
                   "feeds FULLY_CONNECTED")
    one_line_error(lambda: replace_classifier(cnn, 10, x, y, op=999), "has ops 0..")
    one_line_error(lambda: replace_classifier(cnn, 10, x, np.full(32, 10)), "labels must be 32 integers in 0..9")
    one_line_error(lambda: replace_classifier(cnn, 10, x, np.zeros(32, int)), "only class 0")


@pytest.fixture(scope="module")
def resized(cnn, digits):
    """The CNN (6 classes, softmax) made a 10-class trainable classifier fitted on base classes 0..3."""
    base = digits.y_train < 4
    x = int8_inputs(cnn, digits.x_train[base])
    return replace_classifier(cnn, 10, x, digits.y_train[base], seed=0)


def test_the_new_classifier_keeps_the_softmax_and_the_graph_output(cnn, resized):
    edited, classifier, report = resized
    before, after = TfliteModel.from_bytes(cnn), TfliteModel.from_bytes(edited)
    assert after.outputs == before.outputs and [op.name for op in after.ops] == [op.name for op in before.ops]
    assert after.shape(after.outputs[0]) == [1, 10]
    assert after.scalar_quant(after.outputs[0]) == (1 / 256, -128)
    assert after.ops[-1].name == "SOFTMAX" and after.ops[-1].inputs == [classifier.logits]
    assert after.shape(classifier.weights) == [10, 24] and after.dtype_name(classifier.weights) == "int8"
    scales, zps, dim = after.quant(classifier.weights)
    assert len(scales) == 10 and dim == 0 and not zps.any()  # per-channel symmetric
    assert after.shape(classifier.bias) == [10] and after.dtype_name(classifier.bias) == "int32"
    assert report["kept_rows"] == list(range(KNOWN)) and report["base_classes"] == [0, 1, 2, 3]
    assert report["softmax_kept"]


def test_rows_of_known_classes_outside_the_base_task_are_kept(cnn, resized):
    edited, classifier, _ = resized
    old, new = TfliteModel.from_bytes(cnn), TfliteModel.from_bytes(edited)
    w_old = old.read_const(find_classifier(old)["weights"]) * old.quant(find_classifier(old)["weights"])[0][:, None]
    w_new = new.read_const(classifier.weights) * new.quant(classifier.weights)[0][:, None]
    step = new.quant(classifier.weights)[0]
    for c in (4, 5):  # known to the old model, not in the base task: unchanged up to one new quantisation step
        assert np.abs(w_new[c] - w_old[c]).max() <= step[c] / 2 + 1e-9
    norms = np.linalg.norm(w_new, axis=1)
    assert norms[6:].min() >= norms[:4].min() * 0.999 and norms[6:].max() <= norms[:4].max() * 1.001  # new rows


def test_the_fitted_classifier_classifies_the_base_task_in_int8(resized, digits):
    edited, classifier, report = resized
    test = digits.y_test < 4
    x = int8_inputs(edited, digits.x_test[test])
    probabilities = TflmOracle(edited).run(x)[0][0]
    accuracy = float(np.mean(probabilities[:, :4].argmax(axis=1) == digits.y_test[test]))
    assert report["fit"]["float_train_accuracy"] >= 0.95 and report["int8_train_accuracy"] >= 0.9
    assert accuracy >= 0.9, accuracy
    engine_equals_tflm_everywhere(edited, x[:64])


def test_an_mlp_without_softmax_gets_a_resized_logits_output(mlp, digits):
    base = digits.y_train < 5
    edited, classifier, report = replace_classifier(mlp, 12, int8_inputs(mlp, digits.x_train[base]),
                                                    digits.y_train[base])
    model = TfliteModel.from_bytes(edited)
    assert model.outputs == [classifier.logits] and model.shape(classifier.logits) == [1, 12]
    assert not report["softmax_kept"] and report["kept_rows"] == list(range(10))
    engine_equals_tflm_everywhere(edited, int8_inputs(mlp, digits.x_test[:64]))


# -- both, and the plan ---------------------------------------------------------------------------------


def test_adapt_tflite_makes_a_plan_the_graph_satisfies_and_its_adapters_change_nothing(cnn, digits):
    base = digits.y_train < 4
    x_base, y_base = int8_inputs(cnn, digits.x_train[base]), digits.y_train[base]
    at = [named(cnn, "conv_b"), named(cnn, "hidden")]
    common = dict(num_classes=10, x_base_int8=x_base, y_base=y_base, x_calibration_int8=x_base[:128], seed=0)
    adapted = adapt_tflite(cnn, at=at, **common)
    edited, plan, report = adapted.model, adapted.plan, adapted.report
    head_only, _, _ = replace_classifier(cnn, 10, x_base, y_base, seed=0)
    assert head_only == adapted.without_adapters  # what the build compares the adapted model against
    graph = QGraph.from_bytes(edited)
    plan.check(graph)
    assert [a.cut for a in plan.adapters] == at
    assert plan.classifier.input == plan.adapters[-1].add_output  # the head reads the adapted features
    assert len(plan.trainables()) == 4 * 2 + 2
    x = int8_inputs(cnn, digits.x_test)
    assert_same_bytes("outputs with vs without the adapters", TflmOracle(edited).run(x)[0], TflmOracle(head_only).run(x)[0])
    engine_equals_tflm_everywhere(edited, x[:64])
    # the default adapter place is the classifier's input
    plan = adapt_tflite(cnn, **common).plan
    assert [a.cut for a in plan.adapters] == [find_classifier(TfliteModel.from_bytes(cnn))["input"]]


# -- inspect --------------------------------------------------------------------------------------------


def test_inspect_lists_what_a_user_chooses_from(cnn):
    info = inspect_model(cnn, "cnn.tflite")
    model = TfliteModel.from_bytes(cnn)
    assert len(info["ops"]) == len(model.ops) and len(info["tensors"]) == len(model.tensors)
    assert json.loads(json.dumps(info)) == info
    row = find_classifier(model)
    default = [c for c in info["classifier_candidates"] if c["default"]]
    assert len(default) == 1 and default[0]["op"] == row["op"]
    cands = [c["tensor"] for c in info["adapter_candidates"]]
    assert cands == sorted(adapter_candidates(model, before=row["input"]))
    assert row["input"] in cands and row["logits"] not in cands and model.inputs[0] not in cands
    conv = info["tensors"][named(cnn, "conv_a")]
    assert conv["adapter"] == "conv1x1" and conv["kind"] == "activation" and len(conv["scales"]) == 1
    text = format_inspection(info)
    assert f"--classifier: default op {row['op']}" in text
    assert "--adapter-at: " + ", ".join(map(str, cands)) in text
    assert info["unsupported_ops"] == []


def test_the_inspect_command_prints_the_tables_and_json(cnn, tmp_path):
    path = tmp_path / "deployed.tflite"
    path.write_bytes(cnn)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "zo_edge.cli", "inspect", *map(str, args)], capture_output=True,
                              text=True)

    text = run(path)
    assert text.returncode == 0 and "--adapter-at:" in text.stdout and "classifier candidates" in text.stdout
    as_json = run(path, "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == inspect_model(cnn, str(path))
    (tmp_path / "broken.tflite").write_bytes(cnn[:100])
    broken = run(tmp_path / "broken.tflite")
    assert broken.returncode == 2 and len(broken.stderr.strip().splitlines()) == 1 and "Traceback" not in broken.stderr
