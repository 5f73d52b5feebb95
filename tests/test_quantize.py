"""int8 post-training quantisation with headroom, the role map, and run folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zo_edge import ZoEdgeError
from zo_edge import models
from zo_edge import quantize as Q
from zo_edge.outputs import MARKER


@pytest.fixture(scope="module")
def scenario():
    from zo_edge.data import load_dataset, make_scenario

    return make_scenario(load_dataset("digits", seed=0), "class-il", seed=0)


@pytest.fixture(scope="module", params=["last", "after"])
def quantized(request, scenario):
    model = models.build_model("digits-cnn", (8, 8, 1), 10, adapter_position=request.param, seed=0)
    models.pretrain(model, scenario.base, epochs=3, seed=0)
    return model, Q.quantize_model(model, scenario.base.x_train, seed=0)


def _schema_model(buf):
    from ai_edge_litert import schema_py_generated as schema

    return schema.Model.GetRootAs(buf, 0)


def test_model_is_int8_in_and_out_and_runs_in_tflm(quantized, scenario):
    from tflite_micro.python.tflite_micro import runtime

    model, qm = quantized
    sg = _schema_model(qm.tflite).Subgraphs(0)
    assert sg.Tensors(sg.Inputs(0)).Type() == 9 and sg.Tensors(sg.Outputs(0)).Type() == 9  # INT8
    assert {row["dtype"] for row in qm.report} <= {"int8", "int32"}
    interpreter = runtime.Interpreter.from_bytes(qm.tflite)
    inp = qm.report[qm.plan.input]
    x = Q.quantize_input(scenario.base.x_test[:1], inp["scales"][0], inp["zero_points"][0])
    interpreter.set_input(x, 0)
    interpreter.invoke()
    assert interpreter.get_output(0).shape == (1, 10)


def test_trainable_tensors_have_sane_normal_scales(quantized):
    _, qm = quantized
    tiny = float(np.finfo(np.float32).tiny)
    roles = qm.plan.roles()
    trainable = [role for role, _ in qm.plan.trainables()]
    for role in trainable + ["adapter0.cut", "adapter0.hidden", "adapter0.output", "adapter0.add_output", "logits"]:
        scales = np.asarray(qm.report[roles[role]]["scales"])
        assert len(scales) and np.all(np.isfinite(scales)), role
        assert np.all(scales > max(1e-30, tiny)) and np.all(scales < 1e3), (role, scales.min(), scales.max())
    up = qm.report[roles["adapter0.up.weights"]]
    np.testing.assert_allclose(up["scales"], Q.QuantConfig().up_magnitude / 127, rtol=1e-5)
    assert up["quantized_dimension"] == 0 and len(up["scales"]) == up["shape"][0]  # per-channel


def test_up_projection_is_zero_and_adapter_is_identity(quantized, scenario):
    model, qm = quantized
    graph = Q._parse(qm.tflite)
    roles = qm.plan.roles()
    assert not np.any(Q._read_const(graph, roles["adapter0.up.weights"]))
    assert not np.any(Q._read_const(graph, roles["adapter0.up.bias"]))
    assert not np.any(Q._read_const(graph, roles["adapter0.down.bias"]))
    # the trainable tensors own their buffers (the device updates them in place)
    buffers = [graph.tensors[t].buffer for t in qm.plan.trainable_indices()]
    assert len(set(buffers)) == len(buffers)
    users = [t.buffer for t in graph.tensors]
    assert all(users.count(b) == 1 for b in buffers)
    # down / classifier int8 weights are the true float values at the headroom scales
    true = Q._keras_to_tflite_kernel(model.get_layer("classifier").get_weights()[0])
    q = Q._read_const(graph, roles["classifier.weights"]).astype(np.float64)
    scales = np.asarray(qm.report[roles["classifier.weights"]]["scales"])[:, None]
    np.testing.assert_allclose(q * scales, true, atol=scales.max() / 2 + 1e-9)
    assert np.abs(q).max() <= 127 / Q.QuantConfig().classifier_headroom + 1
    assert qm.checks["adapter_outputs_are_zero_points"] and qm.checks["add_vs_requantised_block_max_lsb"] <= 1
    # the int8 model agrees with the float model on the base task
    from zo_edge.build import int8_accuracy

    acc = int8_accuracy(qm.tflite, qm.plan, scenario.base.x_test, scenario.base.y_test, scenario.base.classes)
    float_acc = models.evaluate_base(model, scenario.base)["base_accuracy"]
    assert acc["accuracy"] >= float_acc - 0.03


def test_the_plan_points_at_the_right_tensors(quantized):
    model, qm = quantized
    shapes = {role: qm.report[t]["shape"] for role, t in qm.plan.roles().items()}
    (info,) = models.adapter_info(model)["adapters"]
    width, channels = info["width"], info["channels"]
    assert shapes["logits"] == [1, 10] and shapes["input"] == [1, 8, 8, 1]
    assert shapes["classifier.weights"] == [10, model.get_layer("classifier").input.shape[-1]]
    assert shapes["classifier.bias"] == [10]
    assert shapes["adapter0.down.weights"][0] == width and shapes["adapter0.down.weights"][-1] == channels
    assert shapes["adapter0.up.weights"][0] == channels and shapes["adapter0.up.weights"][-1] == width
    assert shapes["adapter0.down.bias"] == [width] and shapes["adapter0.up.bias"] == [channels]
    assert shapes["adapter0.cut"][1:] == info["cut_shape"]
    assert shapes["adapter0.output"] == shapes["adapter0.add_output"] == shapes["adapter0.block_output"] \
        == shapes["adapter0.cut"]
    assert shapes["adapter0.hidden"][-1] == width
    # names are only hints: the same plan comes out of a model whose tensor names are scrambled
    graph = Q._parse(qm.tflite)
    for i, tensor in enumerate(graph.tensors):
        tensor.name = f"t{i}".encode()
    keras = [a.keras for a in qm.plan.adapters]
    assert Q.find_plan(Q._pack(graph.model), keras, "classifier") == qm.plan


def test_report_marks_headroom_rows(quantized):
    _, qm = quantized
    rows = {row["index"]: row for row in qm.report}
    roles = qm.plan.roles()
    for role in ("adapter0.up.weights", "adapter0.output", "adapter0.add_output", "adapter0.down.weights",
                 "classifier.weights", "logits"):
        row = rows[roles[role]]
        assert row["headroom"] and row["headroom_reason"], role
        assert role in row["role"]
    assert not rows[roles["input"]]["headroom"]
    text = Q.report_to_text(qm.report)
    assert "adapter0.up.weights" in text and "headroom" in text and len(text.splitlines()) > len(qm.report)
    json.dumps(qm.to_json())  # JSON-ready
    assert Q.check_tflite(qm.tflite, [a.keras for a in qm.plan.adapters], "classifier") == qm.plan


def test_a_float_model_is_refused(quantized):
    import tensorflow as tf

    model, _ = quantized
    buf = tf.lite.TFLiteConverter.from_keras_model(model)
    with Q._quiet():
        buf = buf.convert()
    with pytest.raises(ZoEdgeError, match="not int8"):
        Q.check_tflite(buf)
    with pytest.raises(ZoEdgeError, match="not a readable"):
        Q.check_tflite(b"nonsense" * 10)


def test_build_run_writes_a_run_and_refuses_to_overwrite(tmp_path):
    from zo_edge.build import build_run, load_run

    out = tmp_path / "run"
    lines = []
    run = build_run(out, seed=0, log=lines.append)  # the default spoken-digits run
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.keras", "model_int8.tflite", "quantization.txt", "quantization.json", "run.json", MARKER])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    assert run.settings["arch"] == "ds-cnn" and run.meta["pretrain"]["base_accuracy"] > 0.8
    assert run.meta["quantization"]["int8_base_test"]["accuracy"] > 0.8
    assert lines and run.meta["build_seconds"] > 0  # recorded; speed belongs in benchmarks/, not in a timed test
    loaded = load_run(out)
    assert loaded.plan == Q.check_tflite(loaded.tflite, [a.keras for a in loaded.plan.adapters], "classifier")
    assert loaded.meta["scenario"]["class_order"] == run.meta["scenario"]["class_order"]
    for key in ("tensorflow", "numpy"):
        assert loaded.meta["versions"][key]
    assert isinstance(loaded.meta["pretrain"]["base_accuracy"], float)

    with pytest.raises(ZoEdgeError, match="--force"):
        build_run(out, dataset="digits", epochs=1, log=None)
    assert load_run(out).settings["dataset"] == "spoken-digits"  # untouched
    run = build_run(out, dataset="digits", epochs=1, force=True, log=None)  # a run folder zo-edge wrote
    assert load_run(out).settings["dataset"] == "digits" and run.settings["epochs"] == 1


def test_load_run_errors_clearly(tmp_path):
    from zo_edge.build import load_run

    with pytest.raises(ZoEdgeError, match="does not exist"):
        load_run(tmp_path / "missing")
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ZoEdgeError, match="has no model_int8.tflite; re-create it with `zo-edge build"):
        load_run(tmp_path)
