"""sim.compare (load, tabulate) and sim.plots (PNG figures) on hand-made results.json dicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim import plots
from sim.compare import compare_rows, format_markdown, format_table, load_results
from zo_edge.errors import ZoEdgeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TASKS = [{"name": "base", "classes": [2, 4, 6, 7]}, {"name": "task 1", "classes": [3, 5]},
         {"name": "task 2", "classes": [0, 1]}]


def metric(mean, std):
    return {"mean": mean, "std": std, "per_seed": [mean]}


def fake_results(method, mode, seeds, matrices, seen, metrics, passes, state_bytes, run_dir):
    """A results dict with every field of zo-edge/results@1, numbers made up by hand."""
    return {
        "format": "zo-edge/results@1",
        "created": "2026-11-28T14:00:00Z",
        "run_dir": run_dir,
        "settings": {"method": method, "mode": mode, "q": 4, "epsilon": 0.0034, "lr": 0.01, "fc_lr": 0.01,
                     "momentum": 0.9, "clip": 1.0, "fc_epochs": 10, "epochs": 20, "batch_size": 48,
                     "master": "int16", "seeds": seeds},
        "scenario": {"name": "class-il", "dataset": "spoken-digits", "num_classes": 10, "tasks": TASKS},
        "seeds": seeds,
        "accuracy_matrices": matrices,
        "seen_accuracy": seen,
        "metrics": {name: metric(*values) for name, values in metrics.items()},
        "counters": {"forward_passes_per_step": passes, "trainable_state_bytes": state_bytes,
                     "per_seed": [[{"task": 1, "steps": 200, "forward_passes": 1800, "prefix_passes": 480,
                                    "suffix_passes": 86400, "macs": 123456789, "saturation_events": 3}]
                                  for _ in seeds]},
        "wall_time_seconds": {"total": 40.2, "per_seed": [13.0 for _ in seeds]},
    }


@pytest.fixture
def runs():
    zo = fake_results(
        "zo-fc", "int8", [0, 1, 2],
        [[[98.0, None, None], [90.0, 85.0, None], [80.0, 75.0, 88.0]],
         [[97.0, None, None], [91.0, 84.0, None], [82.0, 74.0, 86.0]],
         [[99.0, None, None], [89.0, 86.0, None], [81.0, 76.0, 87.0]]],
        [[98.0, 88.1, 80.2], [97.0, 87.5, 79.9], [99.0, 88.7, 81.0]],
        {"average_accuracy": (84.3, 1.2), "last_accuracy": (80.4, 0.6),
         "forgetting": (13.0, 2.3), "bwt": (-12.0, 1.0)},
        9.0, 5432, "runs/zo")
    fo = fake_results(
        "fo", "float", [0],
        [[[99.0, None, None], [93.0, 90.0, None], [85.0, 80.0, 91.0]]],
        [[99.0, 91.5, 85.3]],
        {"average_accuracy": (90.5, None), "last_accuracy": (85.3, None),
         "forgetting": (12.0, None), "bwt": (-12.0, None)},
        3.0, 21760, "runs/fo")
    head = fake_results(
        "zo/head", "int8", [0, 1],
        [[[98.0, None, None], [70.0, 60.0, None], [50.0, 40.0, 80.0]],
         [[98.0, None, None], [72.0, 62.0, None], [52.0, 42.0, 78.0]]],
        [[98.0, 66.0, 56.0], [98.0, 68.0, 58.0]],
        {"average_accuracy": (74.0, 1.4), "last_accuracy": (57.0, 1.4),
         "forgetting": (37.0, 0.0), "bwt": (-37.0, 0.0)},
        8.5, 650, "runs/head")
    return [zo, fo, head]


# --- compare ------------------------------------------------------------------------------------------

def test_rows_keep_order_and_fields(runs):
    rows = compare_rows(runs)
    assert [(r["method"], r["mode"]) for r in rows] == [("zo-fc", "int8"), ("fo", "float"), ("zo/head", "int8")]
    assert set(rows[0]) == {"run", "method", "mode", "average_accuracy", "last_accuracy", "forgetting", "bwt",
                            "forward_passes_per_step", "trainable_state_bytes", "seeds", "path"}
    assert rows[0]["average_accuracy"] == {"mean": 84.3, "std": 1.2}
    assert rows[1]["bwt"] == {"mean": -12.0, "std": None}
    assert [r["seeds"] for r in rows] == [3, 1, 2]
    assert rows[0]["path"] == "runs/zo"  # no _source: not loaded from disk
    assert [r["run"] for r in rows] == ["zo", "fo", "head"]  # the output folder names the run


def test_table_values_columns_and_alignment(runs):
    lines = format_table(compare_rows(runs)).splitlines()
    assert len(lines) == 2 + 3
    header = lines[0]
    order = ["run", "method", "mode", "avg acc", "last acc", "forgetting", "BWT", "passes/step", "state bytes", "seeds"]
    assert [header.index(h) for h in order] == sorted(header.index(h) for h in order)
    assert set(lines[1]) == {"-", " "}
    zo, fo, head = lines[2:]
    assert zo.split()[:3] == ["zo", "zo-fc", "int8"] and fo.split()[1] == "fo" and head.split()[1] == "zo/head"
    for text in ["84.3 ± 1.2", "80.4 ± 0.6", "13.0 ± 2.3", "-12.0 ± 1.0", "9.0", "5432"]:
        assert text in zo
    assert zo.rstrip().endswith(" 3")
    assert "±" not in fo  # one seed: std is null, no spread shown
    assert fo.split()[3:] == ["90.5", "85.3", "12.0", "-12.0", "3.0", "21760", "1"]
    # numbers are right-aligned: every row ends at the same column
    assert len({len(line) for line in lines}) == 1


def test_markdown_header_and_rows(runs):
    lines = format_markdown(compare_rows(runs)).splitlines()
    assert lines[0] == ("| run | method | mode | avg acc | last acc | forgetting | BWT | passes/step "
                        "| state bytes | seeds |")
    assert lines[1] == "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    assert lines[2] == "| zo | zo-fc | int8 | 84.3 ± 1.2 | 80.4 ± 0.6 | 13.0 ± 2.3 | -12.0 ± 1.0 | 9.0 | 5432 | 3 |"
    assert lines[3] == "| fo | fo | float | 90.5 | 85.3 | 12.0 | -12.0 | 3.0 | 21760 | 1 |"
    assert len(lines) == 5


# --- load_results ----------------------------------------------------------------------------------------

def test_load_folder_or_file(tmp_path, runs):
    (tmp_path / "results.json").write_text(json.dumps(runs[0]))
    from_dir, from_file = load_results(tmp_path), load_results(tmp_path / "results.json")
    assert from_dir == from_file
    assert from_dir["_source"] == str(tmp_path / "results.json")
    assert compare_rows([from_dir])[0]["path"] == str(tmp_path / "results.json")


def _bad_empty_folder(tmp_path):
    return tmp_path


def _bad_missing_file(tmp_path):
    return tmp_path / "nowhere" / "results.json"


def _bad_json(tmp_path):
    (tmp_path / "results.json").write_text('{"format": "zo-edge/results@1",\n "seeds": [0, 1')
    return tmp_path


def _bad_format(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"format": "zo-edge/budget@1"}))
    return tmp_path / "results.json"


def _bad_not_object(tmp_path):
    (tmp_path / "results.json").write_text("[1, 2, 3]")
    return tmp_path


def _bad_incomplete(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"format": "zo-edge/results@1", "seeds": [0]}))
    return tmp_path


@pytest.mark.parametrize("make", [_bad_empty_folder, _bad_missing_file, _bad_json, _bad_format,
                                  _bad_not_object, _bad_incomplete])
def test_load_errors_are_one_line(tmp_path, make):
    target = make(tmp_path)
    with pytest.raises(ZoEdgeError) as info:
        load_results(target)
    message = str(info.value)
    assert "\n" not in message
    assert str(target) in message
    assert "zo-edge simulate" in message


def test_load_error_messages_say_what_is_wrong(tmp_path):
    with pytest.raises(ZoEdgeError, match=r"has no results\.json; run `zo-edge simulate RUN_DIR --out "):
        load_results(_bad_empty_folder(tmp_path))
    with pytest.raises(ZoEdgeError, match="not valid JSON"):
        load_results(_bad_json(tmp_path))
    with pytest.raises(ZoEdgeError, match="'zo-edge/budget@1', expected 'zo-edge/results@1'"):
        load_results(_bad_format(tmp_path))


# --- plots -----------------------------------------------------------------------------------------------

def assert_png(path: Path):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1000


def test_each_plot_writes_a_png(tmp_path, runs):
    assert_png(plots.plot_accuracy_matrix(runs[0], tmp_path / "matrix.png"))
    assert_png(plots.plot_average_accuracy(runs, tmp_path / "avg.png"))
    assert_png(plots.plot_forgetting_vs_accuracy(runs, tmp_path / "sub" / "fva.png"))


def test_mean_matrix_masks_upper_triangle(runs):
    R = plots.mean_accuracy_matrix(runs[0])
    assert R[0, 0] == pytest.approx(98.0) and R[2, 1] == pytest.approx(75.0)
    assert all(R[t, i] != R[t, i] for t in range(3) for i in range(t + 1, 3))  # NaN above the diagonal


def test_write_plots_names(tmp_path, runs):
    twin = json.loads(json.dumps(runs[0]))
    twin["run_dir"] = "runs/zo-q1"
    paths = plots.write_plots(runs + [twin], tmp_path / "figs")
    assert [p.name for p in paths] == [
        "accuracy_matrix_zo-fc_int8.png", "accuracy_matrix_fo_float.png", "accuracy_matrix_zo_head_int8.png",
        "accuracy_matrix_zo-fc_int8_2.png", "average_accuracy.png", "forgetting_vs_accuracy.png"]
    for path in paths:
        assert path.parent == tmp_path / "figs"
        assert_png(path)


def test_plots_need_no_display(tmp_path, runs):
    """In a fresh interpreter with no DISPLAY, plotting works and never imports pyplot — the only route
    by which matplotlib would pick (and possibly need a display for) an interactive backend."""
    (tmp_path / "results.json").write_text(json.dumps(runs[0]))
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    code = ("import sys; from sim.compare import load_results; from sim.plots import write_plots; "
            f"paths = write_plots([load_results({str(tmp_path)!r})], {str(tmp_path / 'figs')!r}); "
            "assert 'matplotlib.pyplot' not in sys.modules; print(len(paths))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    assert_png(tmp_path / "figs" / "accuracy_matrix_zo-fc_int8.png")
