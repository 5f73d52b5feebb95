"""`zo-edge export --tflite` + `zo-edge verify-firmware` on MLPerf Tiny's reference models: third-party int8
graphs nobody on this project wrote run as firmware on Cortex-M4F (mps2-an386, the DSP kernels) and
Cortex-M55 (mps3-an547, the MVE kernels) in QEMU, every output byte equal to the engine's, and the
engine's equal to TFLM's.

The models are copied unchanged from mlcommons/tiny into ``tests/models/mlperf_tiny/`` (Apache-2.0, see its
README and LICENSE.md); ``$ZOEDGE_MLPERF_TINY`` points the tests at another folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_tools
from tests.test_cli import assert_one_line_error, zo_edge

MLPERF_TINY = Path(os.environ.get("ZOEDGE_MLPERF_TINY", Path(__file__).parent / "models" / "mlperf_tiny"))
MODELS = {  # file -> (task, MACs per inference: CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED)
    "kws_ref_model.tflite": ("keyword spotting, DS-CNN", 2_656_768),
    "ad01_int8.tflite": ("anomaly detection, FC autoencoder", 264_192),
    "pretrainedResnet_quant.tflite": ("image classification, ResNet-8", 12_501_632),
    "vww_96_int8.tflite": ("visual wake words, MobileNet", 7_489_664),
    "str_ww_ref_model.tflite": ("streaming wake word", 826_368),
}
BOARDS = ("mps2-an386", "mps3-an547")  # Cortex-M4F (DSP), Cortex-M55 (MVE)
SAMPLES = 8


def mlperf_model(name: str) -> Path:
    """The model's path; skip (or, under CI=true, fail) when it is not there."""
    path = MLPERF_TINY / name
    if not path.is_file():
        message = f"{path} is missing (set ZOEDGE_MLPERF_TINY to a folder with MLPerf Tiny's reference models)"
        if IN_CI:
            pytest.fail(message + " — required under CI=true")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module", params=list(MODELS))
def mlperf_firmware(request, tmp_path_factory):
    model = mlperf_model(request.param)
    fw = tmp_path_factory.mktemp("mlperf") / "fw"
    result = zo_edge("export", "--tflite", model, "--out", fw, "--samples", SAMPLES)
    assert result.returncode == 0, result.stderr
    return request.param, fw


@pytest.mark.parametrize("board", BOARDS)
def test_mlperf_tiny_model_runs_exactly_as_firmware_in_qemu(mlperf_firmware, board):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make")
    name, fw = mlperf_firmware
    result = zo_edge("verify-firmware", fw, "--board", board, "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["kind"] == "inference" and report["samples"] == SAMPLES
    assert report["differing_bytes"] == 0 and report["compared_bytes"] > 0
    outputs, oracle = report["compared"]["outputs"], report["compared"]["engine_vs_tflm"]
    assert outputs["compared_bytes"] == oracle["compared_bytes"] > 0  # every output of every sample
    assert outputs["differing_bytes"] == 0 and oracle["differing_bytes"] == 0
    macs = MODELS[name][1]
    assert report["macs"]["inference"] == macs
    ins = report["instructions"]
    assert ins["inference"] > 0 and ins["per_mac"] == round(ins["inference"] / macs, 3)
    # the per-op list accounts for the whole graph's MACs, and each op with C was counted
    assert sum(row["macs"] for row in report["ops"]) == macs
    assert all(row["instructions"] for row in report["ops"] if row["path"] not in ("alias", "folded"))
    # zo-edge profile's estimate for this core (kernel_spec.INSTRUCTIONS) is within 10% of the exact count
    from firmware_export.board import BOARDS, TARGET_ISA
    from zo_edge import kernel_spec
    from zo_edge.qgraph import QGraph

    layers = kernel_spec.model_layers(QGraph.load(mlperf_model(name)))
    estimate = kernel_spec.estimated_instructions(layers, TARGET_ISA[BOARDS[board].target])
    assert abs(estimate / ins["inference"] - 1) <= 0.10, (estimate, ins["inference"])


def test_export_tflite_refuses_a_file_that_is_not_a_model(tmp_path):
    bogus = tmp_path / "notes.tflite"
    bogus.write_bytes(b"not a flatbuffer at all")
    result = zo_edge("export", "--tflite", bogus, "--out", tmp_path / "fw")
    assert_one_line_error(result, "notes.tflite")
    assert not (tmp_path / "fw").exists()
