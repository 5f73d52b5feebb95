"""`zo-edge profile --sweep`: RAM and work per step over q and stored precision, per run folder."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import assert_one_line_error, zo_edge


@pytest.fixture(scope="module")
def digits_run(digits_run_dir):
    return digits_run_dir


def test_sweep_rows_move_the_way_the_knobs_say(digits_run, tmp_path):
    from zo_edge.build import load_run
    from zo_edge.learners import LearnerConfig
    from zo_edge.sweep import QUERIES, sweep

    run = load_run(digits_run)
    results = [{"run_dir": str(digits_run), "metrics": {"average_accuracy": {"mean": 61.5}},
                "settings": {"method": "zo-fc", "mode": "int8", "q": 4, "master": "int16"}}]
    rows = sweep([run], LearnerConfig(), results=results)
    assert len(rows) == 2 * len(QUERIES)
    by = {(r["master"], r["q"]): r for r in rows}
    for q in QUERIES:
        assert by["int16", q]["ram_bytes"] > by["int8", q]["ram_bytes"]  # the master copy costs RAM
    work = [by["int16", q]["instructions_per_step"] for q in QUERIES]
    assert work == sorted(work) and work[0] < work[-1]  # more queries, more suffix passes
    assert by["int16", 4]["average_accuracy"] == 61.5 and by["int8", 4]["average_accuracy"] is None


def test_sweep_command_prints_json_and_writes_the_plot(digits_run, tmp_path):
    plot = tmp_path / "sweep.png"
    result = zo_edge("profile", digits_run, "--sweep", "--device", "nrf52840", "--json", "--plot", plot)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["device"]["key"] == "nrf52840" and all(r["fits"] for r in out["rows"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_one_line_error(zo_edge("profile", digits_run, "--sweep", "--sweep-run", tmp_path / "none"),
                          "'--sweep-run'", "does not exist")
