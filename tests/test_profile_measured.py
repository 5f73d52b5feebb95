"""`zo-edge profile --firmware`: the estimate of the default model's zo-fc budget is within 10% of what
the exported firmware measures on mps2-an386 (the library as linked, and the painted stack), and its exact
instruction counts replace the estimated ones in the time lower bound."""

from __future__ import annotations

import json

from tests.conftest import require_tools
from tests.test_cli import zo_edge


def test_default_model_estimate_is_within_10_percent_of_the_measured_firmware(kws_run_dir, tmp_path):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make")
    run = kws_run_dir  # the default model: DS-CNN on spoken digits
    fw = tmp_path / "fw"
    exported = zo_edge("export", run, "--out", fw, "--batch-size", 2, "--q", 2, "--steps", 2, "--every", 1)
    assert exported.returncode == 0, exported.stderr
    result = zo_edge("profile", run, "--device", "mps2-an386", "--firmware", fw, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    measured = report["measured"]
    assert measured["board"] == "mps2-an386" and measured["stack_high_water_bytes"] > 0
    assert measured["library"]["objects"]["zoedge_train.o"]["ram"] > 0  # the train step was linked and measured
    for key in ("ram_bytes", "flash_bytes"):
        assert abs(measured["estimate_error"][key]) <= 0.10, (key, measured)
    # the firmware's exact counts (the DSP kernels, as the device's M4) replace the time estimate, which the
    # kernels' measured instructions per MAC put within 10% of them for one inference
    time = report["time"]
    assert time["measured"] is True and time["instructions"] == measured["instructions"]
    assert time["seconds_at_least"]["train_step"] == measured["instructions"]["train_step"] / time["clock_hz"]
    estimated, exact = time["estimated_instructions"]["inference"], measured["instructions"]["inference"]
    assert abs(estimated / exact - 1) <= 0.10, (estimated, exact)


def test_measured_training_overhead_is_the_trainable_state_plus_at_most_1_kib(kws_run_dir, tmp_path):
    """ZO-FC firmware RAM minus inference-only firmware RAM (same model, `--method frozen`), both measured
    on mps2-an386, is at most the trainable state's bytes + 1 KiB (default model, batch 2, q = 2)."""
    require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make")
    from zo_edge.build import load_run
    from zo_edge.learners import LearnerConfig, make_learner

    run = kws_run_dir
    measured = {}
    for method in ("zo-fc", "frozen"):
        fw = tmp_path / method
        exported = zo_edge("export", run, "--out", fw, "--method", method, "--batch-size", 2, "--q", 2, "--steps", 2)
        assert exported.returncode == 0, exported.stderr
        result = zo_edge("profile", run, "--device", "mps2-an386", "--firmware", fw, "--json")
        assert result.returncode == 0, result.stderr
        measured[method] = json.loads(result.stdout)["measured"]["ram_bytes"]
    state = make_learner(load_run(run), LearnerConfig(method="zo-fc", mode="int8", batch_size=2, q=2)).state_bytes()
    overhead = measured["zo-fc"] - measured["frozen"]
    assert 0 < overhead <= sum(state.values()) + 1024, (overhead, state)
