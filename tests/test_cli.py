"""The command line keeps its promises: clear one-line errors, exit codes, nothing overwritten."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def zo_edge(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "zo_edge.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _convert(model, representative=None):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([r[None]] for r in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("models")
    rep = np.random.default_rng(0).standard_normal((16, 8, 8, 1)).astype(np.float32)

    def small(activation):
        inp = keras.Input((8, 8, 1), batch_size=1)
        x = keras.layers.Conv2D(4, 3, activation=activation)(inp)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inp, keras.layers.Dense(3)(x))

    paths = {}
    for name, buf in {
        "int8": _convert(small("relu"), rep),
        "float": _convert(small("relu")),
        "tanh": _convert(small("tanh"), rep),
    }.items():
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(buf)
    return paths


def test_verify_random_inputs_prints_json_with_zero_differences(models):
    result = zo_edge("verify", models["int8"], "--random", 16, "--intermediates", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["differing_bytes"] == 0 and report["total_bytes"] == 16 * 3
    assert {r["kind"] for r in report["per_tensor"]} == {"output", "intermediate"}
    assert all(set(r) >= {"name", "differing_bytes", "total_bytes"} for r in report["per_tensor"])


def test_infer_writes_outputs_and_refuses_to_overwrite(models, tmp_path):
    x = np.random.default_rng(1).integers(-128, 128, (5, 8, 8, 1)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    result = zo_edge("infer", models["int8"], "--inputs", tmp_path / "x.npy", "--out", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (5, 3) and y.dtype == np.int8
    again = zo_edge("infer", models["int8"], "--inputs", tmp_path / "x.npy", "--out", tmp_path / "y.npy")
    assert_one_line_error(again, "exists", "--force")
    assert np.array_equal(np.load(tmp_path / "y.npy"), y)


def test_float_model_is_refused(models):
    assert_one_line_error(zo_edge("verify", models["float"], "--random", 2), "float model", "quantize")


def test_unsupported_op_is_named_with_the_supported_list(models):
    result = zo_edge("verify", models["tanh"], "--random", 2)
    assert_one_line_error(result, "TANH", "supported ops:", "CONV_2D", "FULLY_CONNECTED")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_tflite_is_refused(models, tmp_path, damage):
    buf = models["int8"].read_bytes()
    damaged = {
        "truncated": buf[: len(buf) // 2],
        "garbage": buf[:8] + bytes(range(256)) * 8,
        "empty": b"",
    }[damage]
    path = tmp_path / "bad.tflite"
    path.write_bytes(damaged)
    result = zo_edge("verify", path, "--random", 2)
    assert_one_line_error(result, str(path))
    assert any(w in result.stderr for w in ("corrupt", "truncated", "not a .tflite"))


@pytest.mark.parametrize(
    "x, expected",
    [
        (np.zeros((3, 8, 8), np.int8), "given int8 [3, 8, 8]"),
        (np.zeros((3, 8, 8, 1), np.float32), "given float32 [3, 8, 8, 1]"),
        (np.zeros((3, 4, 4, 1), np.int8), "expected int8 [N, 8, 8, 1]"),
    ],
)
def test_wrong_input_shape_or_dtype_names_expected_and_given(models, tmp_path, x, expected):
    np.save(tmp_path / "x.npy", x)
    result = zo_edge("infer", models["int8"], "--inputs", tmp_path / "x.npy", "--out", tmp_path / "y.npy")
    assert_one_line_error(result, expected)
    assert not (tmp_path / "y.npy").exists()


def test_missing_files_are_named(models, tmp_path):
    assert_one_line_error(zo_edge("verify", tmp_path / "nope.tflite", "--random", 1), "nope.tflite", "does not exist")
    result = zo_edge("infer", models["int8"], "--inputs", tmp_path / "nope.npy", "--out", tmp_path / "y.npy")
    assert_one_line_error(result, "nope.npy", "no such file")


def test_verify_needs_exactly_one_input_source(models):
    assert_one_line_error(zo_edge("verify", models["int8"]), "--inputs", "--random")


def test_data_list_shows_datasets_and_scenarios():
    result = zo_edge("data", "list")
    assert result.returncode == 0, result.stderr
    for word in ("spoken-digits", "digits", "class-il", "domain-il"):
        assert word in result.stdout
