"""What a sweep leaves in DIR beside its cells: sweep.json, the ranked table, the Pareto plot, best_sim.toml.

Ranking: cells that fit the device (RAM and flash) first, by mean average accuracy over the seeds,
higher first (ties: less RAM, then less time per step); then the cells that do not fit, the same
way; then the cells that failed. The best configuration is the first cell: it is written as a
``[simulate]`` table that ``zo-edge simulate`` and ``zo-edge export`` read with ``--config``.
A Pareto front holds the fitting cells that no other fitting cell beats in accuracy at no more RAM
(or no more time per step).
"""

from __future__ import annotations

import json
import math
import tomllib
from datetime import datetime, timezone
from pathlib import Path

from sim.grid import OPTION_KEYS
from sim.sweep import FORMAT, METRICS, cell_dir


def summarise(grid, device, runs, entries, lost: dict, out: Path) -> dict:
    """The sweep.json content: every cell in grid order with settings, metrics, budget and path."""
    import zo_edge
    from zo_edge.sweep import budget, split_instructions

    per_pass = {path: split_instructions(run, device) for path, run in runs.items()}
    budgets = {}
    cells = []
    for entry in entries:
        cell, job, config = entry["cell"], entry["job"], entry["config"]
        record = {"key": job["key"], "run": str(cell.run), "varied": cell.varied, "settings": job["settings"],
                  "seeds": list(cell.seeds), "path": str(cell_dir(out, job["key"]).relative_to(out))}
        if config is not None:
            memo = (cell.run, json.dumps(job["settings"], sort_keys=True))
            if memo not in budgets:
                budgets[memo] = budget(runs[cell.run], config, device, per_pass[cell.run])
            record["budget"] = budgets[memo]
        done = entry["done"]
        if job["key"] in lost:
            record.update(status="lost", error=lost[job["key"]])
        elif done is None:
            record.update(status="missing", error="not run")
        elif done["cell"]["status"] != "ok":
            record.update(status="failed", error=done["cell"]["error"])
        else:
            results = done["results"]
            record.update(status="ok", error=None,
                          metrics={k: {"mean": results["metrics"][k]["mean"], "std": results["metrics"][k]["std"]}
                                   for k in METRICS},
                          counters={k: results["counters"][k] for k in
                                    ("steps_per_seed", "forward_passes_per_step", "macs_per_step",
                                     "trainable_state_bytes")},
                          resolved={k: v for k, v in results["settings"].items()
                                    if k in ("epsilon", "perturbation_steps")},
                          wall_time_seconds=results["wall_time_seconds"]["total"])
        cells.append(record)
    ranked = rank(cells)
    best = ranked[0] if ranked and ranked[0]["status"] == "ok" and ranked[0]["budget"]["fits"] else None
    return {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "zo_edge": zo_edge.__version__,
        "grid": str(grid.path),
        "device": device.to_json(),
        "seeds": list(grid.seeds),
        "fixed": grid.fixed,
        "axes": grid.axes,
        "cells": cells,
        "ranking": [c["key"] for c in ranked],
        "best": None if best is None else {"key": best["key"], "run": best["run"], "config": "best_sim.toml"},
        "counts": {status: sum(c["status"] == status for c in cells) for status in ("ok", "failed", "lost", "missing")},
    }


def _accuracy(cell) -> float:
    return cell["metrics"]["average_accuracy"]["mean"]


def rank(cells: list[dict]) -> list[dict]:
    ok = [c for c in cells if c["status"] == "ok"]
    order = sorted(ok, key=lambda c: (not c["budget"]["fits"], -_accuracy(c), c["budget"]["ram_bytes"],
                                      c["budget"]["seconds_per_step"]))
    return order + [c for c in cells if c["status"] != "ok"]


def pareto(cells: list[dict], cost: str) -> list[dict]:
    """The fitting cells that no fitting cell beats in accuracy at no more ``cost`` (a budget key)."""
    front, best = [], -math.inf
    for c in sorted((c for c in cells if c["status"] == "ok" and c["budget"]["fits"]),
                    key=lambda c: (c["budget"][cost], -_accuracy(c))):
        if _accuracy(c) > best:
            front.append(c)
            best = _accuracy(c)
    return front


def _label(cell) -> str:
    run = Path(cell["run"]).name
    varied = " ".join(f"{k}={v}" for k, v in cell["varied"].items())
    return f"{run} {varied}".strip()


def format_table(summary: dict) -> str:
    """The ranked cells as aligned text (fitting cells first, best first)."""
    by_key = {c["key"]: c for c in summary["cells"]}
    axes = list(summary["axes"])
    header = ["#", "run", *axes, "avg acc", "forgetting", "RAM KiB", "flash KiB", "Minstr/step", "ms/step", "fits"]
    rows = [header]
    for n, key in enumerate(summary["ranking"], 1):
        c = by_key[key]
        b = c.get("budget")
        fits = "-" if b is None else ("yes" if b["fits"] else "NO")
        budget_cols = ["-"] * 4 if b is None else [f"{b['ram_bytes'] / 1024:.1f}", f"{b['flash_bytes'] / 1024:.1f}",
                                                   f"{b['instructions_per_step'] / 1e6:.1f}",
                                                   f"{1e3 * b['seconds_per_step']:.1f}"]
        if c["status"] == "ok":
            m = c["metrics"]
            quality = [f"{m['average_accuracy']['mean']:.1f} ± {m['average_accuracy']['std']:.1f}",
                       f"{m['forgetting']['mean']:.1f}"]
        else:
            quality = [c["status"], "-"]
        rows.append([str(n), Path(c["run"]).name, *[str(c["varied"][a]) for a in axes], *quality, *budget_cols, fits])
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    lines = ["  ".join(v.rjust(w) if k == 0 or k > 1 + len(axes) else v.ljust(w) for k, (v, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failures = [f"  {_label(by_key[k])}: {by_key[k]['error']}" for k in summary["ranking"]
                if by_key[k]["status"] != "ok"]
    device = summary["device"]
    head = (f"{summary['counts']['ok']} of {len(summary['cells'])} cells on {device['key']} "
            f"({device['sram_bytes'] // 1024} KiB SRAM, {device['flash_bytes'] // 1024} KiB flash, "
            f"{device['clock_hz'] / 1e6:g} MHz); seeds {summary['seeds']}; ms/step is a lower bound (1 instruction per cycle)")
    return "\n".join([head, *lines] + (["failed:", *failures] if failures else []))


def best_toml(summary: dict) -> str | None:
    """The best fitting cell's settings as a [simulate] table (None when no cell fits)."""
    if summary["best"] is None:
        return None
    cell = next(c for c in summary["cells"] if c["key"] == summary["best"]["key"])
    m, b = cell["metrics"], cell["budget"]
    lines = [f"# The best fitting configuration of the sweep {summary['grid']} on {summary['device']['key']}",
             f"# for the run {cell['run']}: average accuracy {m['average_accuracy']['mean']:.1f} ± "
             f"{m['average_accuracy']['std']:.1f} % over seeds {cell['seeds']},",
             f"# RAM {b['ram_bytes']:,} B, flash {b['flash_bytes']:,} B, about {b['instructions_per_step'] / 1e6:.1f} M "
             f"instructions per step (estimates). Use it with",
             f"#   zo-edge simulate {cell['run']} --config best_sim.toml",
             f"#   zo-edge export {cell['run']} --config best_sim.toml --out fw/",
             "[simulate]"]
    settings = {k: v for k, v in cell["settings"].items() if k in OPTION_KEYS and v is not None}
    for key, value in settings.items():
        lines.append(f"{key} = {_toml_value(value)}")
    lines.append(f"seeds = {_toml_value(cell['seeds'])}")
    text = "\n".join(lines) + "\n"
    assert tomllib.loads(text)["simulate"]["seeds"] == cell["seeds"]  # it reads back as written
    return text


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(ch in text for ch in ".en") else text + ".0"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def plot_pareto(summary: dict, path) -> Path:
    """Average accuracy against RAM and against time per step; fitting cells filled, the front joined."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    ok = [c for c in summary["cells"] if c["status"] == "ok"]
    device = summary["device"]
    for ax, cost, scale, xlabel in ((axes[0], "ram_bytes", 1 / 1024, "RAM (KiB, estimated)"),
                                    (axes[1], "seconds_per_step", 1e3, "time per step (ms, lower bound)")):
        for fits, marker, label in ((True, "o", "fits"), (False, "x", "does not fit")):
            pts = [c for c in ok if c["budget"]["fits"] == fits]
            if pts:
                ax.scatter([c["budget"][cost] * scale for c in pts], [_accuracy(c) for c in pts], marker=marker,
                           label=f"{label} ({len(pts)})", alpha=0.8)
        front = pareto(ok, cost)
        if front:
            ax.plot([c["budget"][cost] * scale for c in front], [_accuracy(c) for c in front], color="black",
                    linewidth=1, label="Pareto front")
            for c in front:
                ax.annotate(_label(c), (c["budget"][cost] * scale, _accuracy(c)), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
        if cost == "ram_bytes":
            ax.axvline(device["sram_bytes"] / 1024, color="red", linestyle="--", label=f"{device['key']} SRAM")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("average accuracy (%, mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"zo-edge sweep {summary['grid']} on {device['key']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def write_summary(summary: dict, out: Path) -> None:
    """sweep.json, table.txt, pareto.png and best_sim.toml (each written whole), then the folder's marker."""
    import os

    from zo_edge.outputs import write_marker

    def put(name: str, write) -> None:
        tmp = out / f".{name}.tmp-{os.getpid()}{Path(name).suffix}"
        write(tmp)
        os.replace(tmp, out / name)

    put("sweep.json", lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"))
    put("table.txt", lambda p: p.write_text(format_table(summary) + "\n"))
    if any(c["status"] == "ok" for c in summary["cells"]):
        put("pareto.png", lambda p: plot_pareto(summary, p))
    best = best_toml(summary)
    if best is not None:
        put("best_sim.toml", lambda p: p.write_text(best))
    elif (out / "best_sim.toml").exists():
        (out / "best_sim.toml").unlink()  # no longer true of this grid
    write_marker(out, "sweep")
