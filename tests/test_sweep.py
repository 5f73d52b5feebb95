"""`zo-edge sweep`: a grid of simulations, each budgeted on a device, resumable, identical on every engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.test_cli import assert_one_line_error, zo_edge

GRID = """runs = ["{run}"]
device = "nrf52840"  # Cortex-M4F, 256 KiB: the digits run at batch 48 needs 64.5 KiB with the DSP kernels' scratch
seeds = 2

[fixed]
epochs = 1

[grid]
{axes}
"""
FOUR_CELLS = 'method = ["zo-fc", "head"]\nq = [1, 2]'


def write_grid(folder: Path, run, axes=FOUR_CELLS, name="grid.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(GRID.format(run=Path(run).resolve(), axes=axes))
    return path


def require_ray():
    try:
        import ray  # noqa: F401
    except ImportError:
        message = "ray is not installed (pip install 'zo-edge[ray]'; make test installs it)"
        if IN_CI:
            pytest.fail(message + " — required under CI=true")
        pytest.skip(message)


def outcomes(summary: dict) -> dict:
    """What a cell computed, by key: everything but wall times and paths."""
    return {c["key"]: (c["status"], c.get("metrics"), c.get("counters"), c.get("budget")) for c in summary["cells"]}


@pytest.fixture(scope="module")
def local_sweep(digits_run_dir, tmp_path_factory):
    """Four cells on the digits run through the command line, in two local worker processes."""
    folder = tmp_path_factory.mktemp("sweep")
    grid = write_grid(folder, digits_run_dir)
    result = zo_edge("sweep", grid, "--out", folder / "local", "--workers", "2", "--json")
    assert result.returncode == 0, result.stderr
    return grid, folder / "local", json.loads(result.stdout)


def test_local_and_ray_engines_give_identical_cells(local_sweep, tmp_path):
    """The same four cells as Ray tasks on a local cluster of 2 CPUs: the same numbers, cell by cell."""
    require_ray()
    from sim.sweep import run_sweep

    grid, local_dir, local = local_sweep
    ray = run_sweep(grid, tmp_path / "ray", engine="ray", workers=2, log=lambda m: None)
    assert local["counts"] == ray["counts"] == {"ok": 4, "failed": 0, "lost": 0, "missing": 0}
    assert outcomes(local) == outcomes(ray)
    assert len({c["key"] for c in local["cells"]}) == 4
    accuracies = {c["metrics"]["average_accuracy"]["mean"] for c in local["cells"]}
    assert len(accuracies) > 1  # the cells are different simulations, not one repeated
    for c in local["cells"]:  # each cell's folder holds simulate's own results for its settings
        results = json.loads((local_dir / c["path"] / "results.json").read_text())
        assert results["settings"]["method"] == c["varied"]["method"] and results["seeds"] == [0, 1]
        assert results["metrics"]["average_accuracy"]["mean"] == c["metrics"]["average_accuracy"]["mean"]


def test_the_table_ranks_fitting_cells_by_accuracy_and_the_best_is_a_ready_config(local_sweep, digits_run_dir,
                                                                                  tmp_path):
    from sim.commands import resolve_config

    _, out, summary = local_sweep
    assert json.loads((out / "sweep.json").read_text())["cells"] == summary["cells"]
    by_key = {c["key"]: c for c in summary["cells"]}
    ranked = [by_key[k] for k in summary["ranking"]]
    fitting = [c for c in ranked if c["budget"]["fits"]]
    assert fitting, "the digits run fits an nrf52840"
    accuracy = [c["metrics"]["average_accuracy"]["mean"] for c in fitting]
    assert accuracy == sorted(accuracy, reverse=True)
    for c in summary["cells"]:
        b = c["budget"]
        assert b["ram_bytes"] > 0 and b["flash_bytes"] > 0 and b["instructions_per_step"] > 0
        assert b["seconds_per_step"] == pytest.approx(b["instructions_per_step"] / summary["device"]["clock_hz"])
    q = {c["varied"]["q"]: c["budget"]["instructions_per_step"] for c in summary["cells"] if c["varied"]["method"] == "zo-fc"}
    assert q[2] > q[1]  # two more suffix passes per sample
    best = ranked[0]
    assert summary["best"]["key"] == best["key"]
    config, seeds = resolve_config({}, out / "best_sim.toml")
    assert (config.method, config.q, config.epochs, seeds) == (best["varied"]["method"], best["varied"]["q"], 1, [0, 1])
    export = zo_edge("export", digits_run_dir, "--config", out / "best_sim.toml", "--steps", "1", "--out", tmp_path / "fw")
    assert export.returncode == 0, export.stderr
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "table.txt").read_text()
    assert "avg acc" in table and "RAM KiB" in table and "ms/step" in table


def test_an_interrupted_sweep_finishes_the_rest_without_recomputing(digits_run_dir, tmp_path):
    """Ctrl-C after the first cells leaves only whole cells; the rerun computes just the missing ones."""
    grid = write_grid(tmp_path, digits_run_dir, axes="q = [1, 2, 3, 4]")
    out = tmp_path / "out"
    cells = out / "cells"
    command = [sys.executable, "-m", "zo_edge.cli", "sweep", str(grid), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its own process group, as a terminal's Ctrl-C reaches
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (cells.is_dir() and any(not p.name.startswith(".") for p in cells.iterdir())):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    first = {p.name: (p / "cell.json").stat().st_mtime_ns for p in cells.iterdir()}
    assert 1 <= len(first) < 4, "interrupted after some cells, before all"
    assert all((cells / name / ".zo-edge-output.json").is_file() for name in first)  # whole cells only
    rerun = zo_edge("sweep", grid, "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming {out}: {len(first)} of 4 cells done, {4 - len(first)} to run" in rerun.stderr
    now = {p.name: (p / "cell.json").stat().st_mtime_ns for p in cells.iterdir()}
    assert len(now) == 4 and all(now[name] == first[name] for name in first)  # the done cells were not redone
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["counts"]["ok"] == 4
    again = zo_edge("sweep", grid, "--out", out)
    assert "4 of 4 cells done, 0 to run" in again.stderr


def test_a_cell_the_learner_refuses_is_recorded_and_the_others_run(digits_run_dir, tmp_path):
    grid = write_grid(tmp_path, digits_run_dir, axes="fc_epochs = [1, 3]")  # 3 > epochs = 1
    result = zo_edge("sweep", grid, "--out", tmp_path / "out", "--json")
    assert result.returncode == 0, result.stderr
    cells = {c["varied"]["fc_epochs"]: c for c in json.loads(result.stdout)["cells"]}
    assert cells[1]["status"] == "ok"
    assert cells[3]["status"] == "failed" and "--fc-epochs 3 exceeds the 1 epochs" in cells[3]["error"]
    assert "\n" not in cells[3]["error"]


def _dies_the_first_time(job):
    flag = Path(job["flag"])
    if not flag.exists():
        flag.write_text("died once")
        os._exit(9)
    return {"status": "ok", "n": job["n"]}


def _always_dies(job):
    os._exit(9)


def test_a_lost_worker_is_retried_and_then_recorded_as_lost(tmp_path):
    from sim.sweep_engines import LocalEngine

    got = {}
    jobs = [{"key": f"k{n}", "n": n, "flag": str(tmp_path / "flag")} for n in range(3)]
    LocalEngine(workers=1, retries=1).run(_dies_the_first_time, jobs, lambda job, out: got.update({job["key"]: out}))
    assert got == {f"k{n}": {"status": "ok", "n": n} for n in range(3)}
    got.clear()
    LocalEngine(workers=1, retries=2).run(_always_dies, jobs[:1], lambda job, out: got.update({job["key"]: out}))
    assert got["k0"]["status"] == "lost" and "3 attempts" in got["k0"]["error"]


def test_grid_mistakes_are_one_line_errors(digits_run_dir, tmp_path):
    cases = {
        'q = [1, 2]\nbogus = [1]': "unknown option 'bogus'",
        "q = []": "q must be a non-empty list",
        "epochs = [1, 2]": "epochs is both in [fixed] and in [grid]",
        "seed = [1, 2]": "give the seeds as the top-level key seeds",
    }
    for k, (axes, fragment) in enumerate(cases.items()):
        grid = write_grid(tmp_path, digits_run_dir, axes=axes, name=f"g{k}.toml")
        assert_one_line_error(zo_edge("sweep", grid, "--out", tmp_path / f"o{k}"), fragment)
    grid = write_grid(tmp_path, digits_run_dir)
    bad_device = tmp_path / "device.toml"
    bad_device.write_text(grid.read_text().replace("nrf52840", "no-such-part"))
    assert_one_line_error(zo_edge("sweep", bad_device, "--out", tmp_path / "o"), "no-such-part")
    assert_one_line_error(zo_edge("sweep", grid, "--out", tmp_path / "o", "--engine", "local", "--ray-address", "x:1"),
                          "--ray-address needs --engine ray")


def test_the_sweep_folder_is_never_a_foreign_folder_nor_inside_a_run(digits_run_dir, tmp_path):
    grid = write_grid(tmp_path, digits_run_dir)
    assert_one_line_error(zo_edge("sweep", grid, "--out", digits_run_dir / "sweep"), "inside the input folder")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert_one_line_error(zo_edge("sweep", grid, "--out", foreign), "was not written by zo-edge")
    assert_one_line_error(zo_edge("sweep", grid, "--out", foreign, "--force"), "was not written by zo-edge")
    assert (foreign / "notes.txt").read_text() == "mine"
    assert_one_line_error(zo_edge("sweep", grid, "--out", digits_run_dir), "is the input")
