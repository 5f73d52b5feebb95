"""Compare simulate runs: load their results.json files and tabulate the headline metrics.

Each `zo-edge simulate` run writes one results.json (format "zo-edge/results@1"); this module turns a
handful of them into one row per run, as an aligned text table for the terminal or a GitHub markdown
table for the README. Metric conventions (PILOT) are in DESIGN.md §4; values are percent.
"""

from __future__ import annotations

import json
from pathlib import Path

from zo_edge.errors import ZoEdgeError

FORMAT = "zo-edge/results@1"
RESULTS_NAME = "results.json"
METRICS = ("average_accuracy", "last_accuracy", "forgetting", "bwt")
# Top-level keys the report reads; checked on load so a truncated file is a user error, not a KeyError.
REQUIRED = ("settings", "scenario", "seeds", "accuracy_matrices", "seen_accuracy", "metrics", "counters")
# (header, row key) in display order; shared by the text and the markdown table so they cannot drift.
COLUMNS = (
    ("run", "run"),
    ("method", "method"),
    ("mode", "mode"),
    ("avg acc", "average_accuracy"),
    ("last acc", "last_accuracy"),
    ("forgetting", "forgetting"),
    ("BWT", "bwt"),
    ("passes/step", "forward_passes_per_step"),
    ("state bytes", "trainable_state_bytes"),
    ("seeds", "seeds"),
)
TEXT_COLUMNS = {"run", "method", "mode"}  # left-aligned; every other column is a number and right-aligned


def load_results(path) -> dict:
    """Read one run's results.json, given the file or the run folder holding it.

    Every failure is a ZoEdgeError with a one-line message naming the path and how to get a good file,
    because the usual cause is pointing at the wrong folder or at a run that never finished. The
    returned dict is the file's content plus "_source" (the file read), which the table reports.
    """
    path = Path(path)
    file = path / RESULTS_NAME if path.is_dir() else path
    folder = file.parent if file.name == RESULTS_NAME else path
    rerun = f"run `zo-edge simulate RUN_DIR --out {folder}` to write it"
    if path.is_dir() and not file.is_file():
        if (path / "run.json").is_file():  # a run folder: its results are somewhere else
            raise ZoEdgeError(f"{path} is a run folder, not simulate output; run `zo-edge simulate {path}` "
                              f"and compare the folder it writes ({path.parent / (path.name + '-sim')}/METHOD-MODE)")
        raise ZoEdgeError(f"{path} has no {RESULTS_NAME}; run `zo-edge simulate RUN_DIR --out {path}` first")
    if not file.is_file():
        raise ZoEdgeError(f"{file} does not exist; pass a run folder or its {RESULTS_NAME}, or {rerun}")
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZoEdgeError(f"{file} is not valid JSON ({_one_line(e)}); {rerun} again") from None
    found = results.get("format") if isinstance(results, dict) else type(results).__name__
    if found != FORMAT:
        raise ZoEdgeError(
            f"{file} has format {found!r}, expected {FORMAT!r}; point at a results.json written by "
            f"`zo-edge simulate`, or {rerun} again")
    missing = [k for k in REQUIRED if k not in results]
    if missing:
        raise ZoEdgeError(f"{file} lacks {', '.join(missing)}; it is incomplete — {rerun} again")
    results["_source"] = str(file)
    return results


def _one_line(error: Exception) -> str:
    """An exception's text squeezed onto one line, since ZoEdgeError messages are printed as one."""
    return " ".join(str(error).split())


def compare_rows(results_list: list[dict]) -> list[dict]:
    """One row per run, in the order given (the caller decides the ranking).

    Metrics keep only {mean, std} — per-seed values belong to the plots. "path" is the file the run
    was loaded from, or its run_dir for a dict that did not come through load_results.
    """
    rows = []
    for results in results_list:
        settings, counters = results["settings"], results["counters"]
        row = {"method": settings["method"], "mode": settings["mode"]}
        for name in METRICS:
            metric = results["metrics"][name]
            row[name] = {"mean": metric.get("mean"), "std": metric.get("std")}
        row["forward_passes_per_step"] = counters.get("forward_passes_per_step")
        row["trainable_state_bytes"] = counters.get("trainable_state_bytes")
        row["seeds"] = len(results["seeds"])
        row["path"] = results.get("_source") or results.get("run_dir")
        source = Path(str(row["path"] or "-"))
        row["run"] = source.parent.name if source.name == RESULTS_NAME else source.name  # the output folder
        rows.append(row)
    return rows


def format_metric(metric: dict | None) -> str:
    """"84.3 ± 1.2", or "84.3" when std is null (a one-seed run has no spread to show); "-" if absent."""
    if not metric or metric.get("mean") is None:
        return "-"
    text = f"{metric['mean']:.1f}"
    return text if metric.get("std") is None else f"{text} ± {metric['std']:.1f}"


def _cell(row: dict, key: str) -> str:
    """One cell's display text; numbers get one fixed style so runs line up digit for digit."""
    value = row.get(key)
    if key in METRICS:
        return format_metric(value)
    if value is None:
        return "-"
    if key == "forward_passes_per_step":
        return f"{value:.1f}"
    return str(value)


def _cells(rows: list[dict]) -> list[list[str]]:
    """The header row followed by one row of display strings per run."""
    return [[header for header, _ in COLUMNS]] + [[_cell(row, key) for _, key in COLUMNS] for row in rows]


def format_table(rows: list[dict]) -> str:
    """A plain aligned text table: text columns left-aligned, numbers right-aligned, a dashed rule."""
    table = _cells(rows)
    widths = [max(len(line[c]) for line in table) for c in range(len(COLUMNS))]

    def render(line: list[str]) -> str:
        cells = [text.ljust(w) if key in TEXT_COLUMNS else text.rjust(w)
                 for text, w, (_, key) in zip(line, widths, COLUMNS)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(table[0]), rule] + [render(line) for line in table[1:]])


def format_markdown(rows: list[dict]) -> str:
    """The same table as GitHub markdown, numbers right-aligned, for pasting into the README."""
    table = [[text.replace("|", "\\|") for text in line] for line in _cells(rows)]
    align = ["---" if key in TEXT_COLUMNS else "---:" for _, key in COLUMNS]
    lines = [table[0], align] + table[1:]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)
