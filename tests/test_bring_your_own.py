"""Your own model and your own data (issue 10), end to end through the command line.

A user arrives with recordings saved as an npz and a model of their own — a trained Keras model, or only
the deployed int8 .tflite (its float original thrown away). zo-edge builds a run folder from either,
simulates zo-fc against the frozen floor in int8, exports the firmware and checks it byte for byte on
the host and on a Cortex-M4F in QEMU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import require_tools
from tests.test_cli import assert_one_line_error, zo_edge

TASKS = "0,1,2,3;4,5;6,7;8,9"  # the base task, then three tasks of new digits


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """What a user brings: data.npz (the four arrays and class names, saved with numpy), a Keras model unlike
    the zoo's trained briefly on it (Conv2D+BN+ReLU, max and average pooling, Flatten, a linear Dense in the
    middle, Dropout, a softmax Dense; it knows digits 0-3 only), and the same model deployed as int8 .tflite.

    (The middle Dense is linear: after a ReLU bottleneck the masked class-incremental stream gives the
    newest classes' rows the upper hand over everything, and no method beats the frozen floor — README,
    "your own model and data".)"""
    from tests.user_models import write_user_files

    folder = tmp_path_factory.mktemp("user")
    write_user_files(folder)
    return folder


def _simulate(run, method, out):
    result = zo_edge("simulate", run, "--method", method, "--epochs", 5, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _export_and_verify(run, fw, boards=("host", "mps2-an386"), steps=20, every=5):
    result = zo_edge("export", run, "--out", fw, "--batch-size", 8, "--q", 2, "--steps", steps, "--every", every,
                     "--samples", 8)
    assert result.returncode == 0, result.stderr
    for board in boards:
        require_tools("gcc", "make", *(("arm-none-eabi-gcc", "qemu-system-arm") if board != "host" else ()))
        done = zo_edge("verify-firmware", fw, "--board", board, "--json")
        assert done.returncode == 0, done.stderr + done.stdout
        report = json.loads(done.stdout)
        assert report["differing_bytes"] == 0, report
        assert report["compared"]["logits"]["compared_bytes"] > 0
        assert report["compared"]["state"]["compared_bytes"] > 0 and report["states_compared"] == steps // every


@pytest.fixture(scope="module")
def keras_run(user, tmp_path_factory):
    out = tmp_path_factory.mktemp("keras") / "run"
    result = zo_edge("build", "--model", user / "user.keras", "--data", user / "data.npz", "--out", out,
                     "--adapter-at", "relu1,embed", "--tasks", TASKS)
    assert result.returncode == 0, result.stderr
    return out


def test_a_keras_model_of_ones_own_learns_above_frozen_and_its_firmware_equals_the_simulator(keras_run, tmp_path):
    meta = json.loads((keras_run / "run.json").read_text())
    assert [a["keras"]["up"] for a in meta["plan"]["adapters"]] == ["adapter0_up", "adapter1_up"]
    assert meta["model"]["classifier"]["old_units"] == 4 and meta["scenario"]["num_classes"] == 10
    assert "SOFTMAX" in meta["quantization"]["ops"]  # the user's softmax stays in the graph
    assert (keras_run / "data.npz").is_file()  # the data travels with the run
    zofc = _simulate(keras_run, "zo-fc", tmp_path / "zofc")
    frozen = _simulate(keras_run, "frozen", tmp_path / "frozen")
    assert zofc["metrics"]["average_accuracy"]["mean"] > frozen["metrics"]["average_accuracy"]["mean"]
    _export_and_verify(keras_run, tmp_path / "fw")


@pytest.fixture(scope="module")
def tflite_run(user, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite") / "run"
    result = zo_edge("build", "--tflite", user / "user_int8.tflite", "--data", user / "data.npz", "--out", out,
                     "--tasks", TASKS)  # adapter on the classifier's input by default
    assert result.returncode == 0, result.stderr
    return out


def test_a_deployed_tflite_keeps_its_outputs_then_learns_above_frozen_and_runs_exactly_in_qemu(user, tflite_run,
                                                                                                tmp_path):
    from zo_edge.build import load_run
    from zo_edge.kernels.quantize import affine_quantize
    from zo_edge.qgraph import QGraph
    from zo_edge.tflm import TflmOracle

    run = load_run(tflite_run)
    assert not run.has_keras and not (tflite_run / "model.keras").exists()
    identity = run.meta["quantization"]["checks"]["adapters_change_nothing"]
    assert identity["differing_bytes"] == 0 and identity["compared_bytes"] >= 10 * 360  # the whole test split
    # independently: the features the classifier reads equal the original model's, byte for byte
    original = (user / "user_int8.tflite").read_bytes()
    graph = QGraph.from_bytes(original)
    x = affine_quantize(run.dataset.x_test, *graph.tensors[graph.inputs[0]].scalar_quant())
    (adapter,) = run.plan.adapters
    _, before = TflmOracle(original, intermediates=True).run(x, [adapter.cut])
    # the trained classifier changed the logits; the features are untouched until training
    _, after = TflmOracle(run.tflite, intermediates=True).run(x, [run.plan.classifier.input])
    assert before[adapter.cut].size > 0
    assert np.count_nonzero(before[adapter.cut] != after[run.plan.classifier.input]) == 0
    zofc = _simulate(tflite_run, "zo-fc", tmp_path / "zofc")
    frozen = _simulate(tflite_run, "frozen", tmp_path / "frozen")
    assert zofc["metrics"]["average_accuracy"]["mean"] > frozen["metrics"]["average_accuracy"]["mean"]
    assert_one_line_error(zo_edge("simulate", tflite_run, "--mode", "float", "--out", tmp_path / "f"),
                          "no float original", "--mode int8")
    _export_and_verify(tflite_run, tmp_path / "fw", boards=("mps2-an386",))


def test_three_adapters_in_different_blocks_equal_the_firmware_after_200_steps(tmp_path):
    out = tmp_path / "run"
    result = zo_edge("build", "--dataset", "digits", "--adapter-position", "0,1,after", "--epochs", 2, "--out", out)
    assert result.returncode == 0, result.stderr
    plan = json.loads((out / "run.json").read_text())["plan"]
    assert [a["kind"] for a in plan["adapters"]] == ["conv1x1", "conv1x1", "dense"]
    _export_and_verify(out, tmp_path / "fw", steps=200, every=50)


# -- one line for every bad input ------------------------------------------------------------------------
@pytest.mark.parametrize("damage, fragment", [
    (lambda a: a.update(x_train=a["x_train"][:, :5]), "x_train holds samples of shape"),
    (lambda a: a["x_test"].__setitem__((0, 0, 0, 0), np.nan), "NaN"),
    (lambda a: a.update(y_train=np.where(a["y_train"] == 9, 12, a["y_train"])), "y_train"),
    (lambda a: a.update(y_test=a["y_test"][:-1]), "y_test"),
    (lambda a: a.update(x_test=a["x_test"][a["y_test"] != 7], y_test=a["y_test"][a["y_test"] != 7]), "7"),
])
def test_bad_data_is_one_line_naming_the_array(user, tmp_path, damage, fragment):
    with np.load(user / "data.npz") as f:
        arrays = {k: f[k].copy() for k in f.files}
    damage(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    result = zo_edge("build", "--model", user / "user.keras", "--data", tmp_path / "bad.npz", "--out", tmp_path / "o")
    assert_one_line_error(result, "bad.npz", fragment)


def test_a_missing_class_in_a_task_is_named(user, tmp_path):
    result = zo_edge("build", "--model", user / "user.keras", "--data", user / "data.npz", "--out", tmp_path / "o",
                     "--tasks", "0,1,2,3;4,5;6,11")
    assert_one_line_error(result, "11")


def test_adapter_places_and_classifiers_that_do_not_exist_list_the_candidates(user, tmp_path):
    result = zo_edge("build", "--model", user / "user.keras", "--data", user / "data.npz", "--out", tmp_path / "a",
                     "--adapter-at", "conv7")
    assert_one_line_error(result, "conv7", "embed")  # the candidates are listed
    result = zo_edge("build", "--model", user / "user.keras", "--data", user / "data.npz", "--out", tmp_path / "b",
                     "--classifier", "conv1")
    assert_one_line_error(result, "conv1", "Dense")
    result = zo_edge("build", "--tflite", user / "user_int8.tflite", "--data", user / "data.npz", "--out",
                     tmp_path / "c", "--adapter-at", "no_such_tensor")
    assert_one_line_error(result, "no_such_tensor", "candidates")
    result = zo_edge("build", "--tflite", user / "user_int8.tflite", "--data", user / "data.npz", "--out",
                     tmp_path / "d", "--classifier", "0")
    assert_one_line_error(result, "FULLY_CONNECTED")


def test_an_unsupported_op_in_a_users_model_is_named(user, tmp_path):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="tanh")(inp)
    model = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(x)))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rep = np.random.default_rng(0).standard_normal((16, 8, 8, 1)).astype(np.float32)
    converter.representative_dataset = lambda: ([r[None]] for r in rep)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    (tmp_path / "tanh.tflite").write_bytes(converter.convert())
    result = zo_edge("build", "--tflite", tmp_path / "tanh.tflite", "--data", user / "data.npz", "--out", tmp_path / "o")
    assert_one_line_error(result, "TANH")
    model.save(tmp_path / "tanh.keras")
    result = zo_edge("build", "--model", tmp_path / "tanh.keras", "--data", user / "data.npz", "--out", tmp_path / "p")
    assert_one_line_error(result, "TANH")


def test_the_python_api_does_the_same_jobs(keras_run, tmp_path):
    import zo_edge

    run = zo_edge.load_run(keras_run)
    results = zo_edge.simulate(run, method="head", epochs=1)
    assert results["settings"]["method"] == "head" and len(results["accuracy_matrices"]) == 1
    budget = zo_edge.profile(run, device="stm32l432kc", batch_size=8, q=2)
    assert set(budget["configurations"]) == {"inference", "zo-fc", "fo"}
    meta = zo_edge.export(run, tmp_path / "fw", batch_size=8, q=2, steps=2, every=1)
    assert meta["train"]["steps"] == 2 and (tmp_path / "fw" / "export.json").is_file()
