"""Figures for simulate runs, one PNG per function, from results.json dicts (see sim/compare.py).

Figures are built as bare `matplotlib.figure.Figure` objects drawn by the Agg canvas, never through
pyplot: no GUI backend is chosen, no display is needed (CI, ssh), and no global figure list leaks
memory when many plots are written in one process. Accuracies are percent.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    """A figure bound to the Agg canvas, so savefig never consults the configured backend."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path) -> Path:
    """Write the figure as PNG (creating the folder) and return the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


def run_label(results: dict) -> str:
    """"method (mode)" — how runs are told apart in legends and tables."""
    settings = results["settings"]
    return f"{settings['method']} ({settings['mode']})"


def _labels(results_list: list[dict]) -> list[str]:
    """run_label for each run, with the run folder appended where two runs would share a label."""
    labels = [run_label(r) for r in results_list]
    return [f"{label} [{r.get('run_dir', i)}]" if labels.count(label) > 1 else label
            for i, (label, r) in enumerate(zip(labels, results_list))]


def _task_names(results: dict, count: int) -> list[str]:
    """Task names from the scenario, falling back to "task i" when the scenario lists fewer."""
    tasks = results.get("scenario", {}).get("tasks", [])
    return [tasks[i].get("name", f"task {i}") if i < len(tasks) else f"task {i}" for i in range(count)]


def mean_accuracy_matrix(results: dict) -> np.ndarray:
    """Seed-mean R as a T x T float array, NaN above the diagonal (null or missing in the file)."""
    mats = results["accuracy_matrices"]
    T = max(len(m) for m in mats)
    stack = np.full((len(mats), T, T), np.nan)
    for s, matrix in enumerate(mats):
        for t, row in enumerate(matrix):
            for i, value in enumerate(row[: t + 1]):  # the upper triangle is ignored, as in sim.metrics
                stack[s, t, i] = np.nan if value is None else float(value)
    counts = np.isfinite(stack).sum(axis=0)  # by hand: np.nanmean warns on the all-NaN upper triangle
    return np.where(counts > 0, np.nansum(stack, axis=0) / np.maximum(counts, 1), np.nan)


def plot_accuracy_matrix(results: dict, path) -> Path:
    """Heatmap of the seed-mean accuracy matrix R, lower triangle annotated with its values."""
    R = mean_accuracy_matrix(results)
    T = len(R)
    names = _task_names(results, T)
    fig = _figure(1.6 + 0.75 * T, 1.2 + 0.65 * T)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(R), cmap="viridis", vmin=0, vmax=100)
    for t in range(T):
        for i in range(t + 1):
            if np.isfinite(R[t, i]):
                ax.text(i, t, f"{R[t, i]:.1f}", ha="center", va="center", fontsize=8,
                        color="black" if R[t, i] > 60 else "white")
    ax.set_xticks(range(T), names, rotation=45, ha="right")
    ax.set_yticks(range(T), names)
    ax.set_xlabel("evaluated on task i")
    ax.set_ylabel("after training task t")
    seeds = len(results["accuracy_matrices"])
    ax.set_title(f"{run_label(results)}: accuracy (%), mean of {seeds} seed{'s' * (seeds != 1)}")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    return _save(fig, path)


def plot_average_accuracy(results_list: list[dict], path) -> Path:
    """Seen-class accuracy after each task: seed mean with a ±std band (ddof=1, as sim.metrics)."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    longest = max(results_list, key=lambda r: max(len(s) for s in r["seen_accuracy"]))
    for results, label in zip(results_list, _labels(results_list)):
        seen = np.array(results["seen_accuracy"], dtype=float)  # seeds x T
        x = np.arange(seen.shape[1])
        mean = seen.mean(axis=0)
        (line,) = ax.plot(x, mean, marker="o", label=label)
        if len(seen) > 1:
            std = seen.std(axis=0, ddof=1)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    T = max(len(s) for s in longest["seen_accuracy"])
    ax.set_xticks(range(T), _task_names(longest, T))
    ax.set_xlabel("after training task")
    ax.set_ylabel("accuracy on seen classes (%)")
    ax.set_title("Seen-class accuracy (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_forgetting_vs_accuracy(results_list: list[dict], path) -> Path:
    """Forgetting (x) against average accuracy (y), one labelled point per run, std error bars.

    The trade-off at a glance: the best methods sit top-left (accurate and not forgetting).
    """
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    for results, label in zip(results_list, _labels(results_list)):
        forget, acc = results["metrics"]["forgetting"], results["metrics"]["average_accuracy"]
        x, y = forget["mean"], acc["mean"]
        ax.errorbar(x, y, xerr=forget.get("std") or 0.0, yerr=acc.get("std") or 0.0,
                    fmt="o", capsize=3, label=label)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("forgetting (percentage points, lower is better)")
    ax.set_ylabel("average accuracy (%)")
    ax.set_title("Forgetting vs average accuracy (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.margins(x=0.3, y=0.2)  # room for the point labels
    return _save(fig, path)


MEASURES = (("update_norm", "adapters", "mean adapter step (L2 norm)"),
            ("drift", "adapters", "adapter drift over the task (L2 norm)"),
            ("flatness", "l2", "loss rise on old tasks, L2 ball (antithetic)"),
            ("flatness", "linf", "loss rise on old tasks, L∞ ball (antithetic)"))


def _per_task(results: dict, kind: str, key: str) -> np.ndarray:
    """[seeds, tasks] of one measurement (NaN where it was not measured)."""
    rows = []
    for tasks in (results.get("measurements") or {}).get("per_seed", []):
        row = []
        for t in tasks:
            if kind == "update_norm":
                value = t.get("update_norms", {}).get(key, {}).get("mean")
            elif kind == "drift":
                value = t.get("drift", {}).get(key)
            else:
                value = t.get("flatness", {}).get(key, {}).get("symmetric_mean")
            row.append(np.nan if value is None else float(value))
        rows.append(row)
    return np.array(rows, dtype=float) if rows else np.zeros((0, 0))


def plot_measurements(results_list: list[dict], path) -> Path | None:
    """Per task, the seed mean of what explains forgetting: the adapters' step length and drift, and the
    flatness measure's loss rise (``sim.flatness``); None when no run measured anything."""
    shown = [m for m in MEASURES if any(np.isfinite(_per_task(r, m[0], m[1])).any() for r in results_list)]
    if not shown:
        return None
    fig = _figure(4.2 * len(shown), 3.6)
    for k, (kind, key, title) in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), k + 1)
        for results, label in zip(results_list, _labels(results_list)):
            values = _per_task(results, kind, key)
            if values.size and np.isfinite(values).any():
                ax.plot(np.arange(1, values.shape[1] + 1), np.nanmean(values, axis=0), marker="o", label=label)
        ax.set_xlabel("after task")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if kind in ("update_norm", "drift"):
            ax.set_yscale("log")
    fig.axes[0].legend(fontsize=7)
    return _save(fig, path)


def _slug(text: str) -> str:
    """A file-name-safe form of a method or mode ("zo/head" -> "zo_head")."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(text)).strip("_") or "run"


def write_plots(results_list: list[dict], out_dir) -> list[Path]:
    """All figures for these runs: one accuracy-matrix heatmap per run, then the two comparisons, and the
    measurements per task (update norms, drift, flatness) when the runs have them.

    Heatmaps are named accuracy_matrix_<method>_<mode>.png; a second run with the same method and
    mode gets a _2, _3, ... suffix rather than overwriting the first.
    """
    out_dir = Path(out_dir)
    paths, used = [], set()
    for results in results_list:
        settings = results["settings"]
        stem = f"accuracy_matrix_{_slug(settings['method'])}_{_slug(settings['mode'])}"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name)
        paths.append(plot_accuracy_matrix(results, out_dir / f"{name}.png"))
    paths.append(plot_average_accuracy(results_list, out_dir / "average_accuracy.png"))
    paths.append(plot_forgetting_vs_accuracy(results_list, out_dir / "forgetting_vs_accuracy.png"))
    measured = plot_measurements(results_list, out_dir / "measurements.png")
    return paths + ([measured] if measured else [])
