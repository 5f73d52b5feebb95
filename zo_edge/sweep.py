"""``zo-edge profile --sweep``: ZO-FC's RAM against its work per step, over the knobs that move them.

For one or more run folders (each an adapter placement and width: build them with ``zo-edge build
--adapter-position P --adapter-width W``) and every query count q and stored precision, the zo-fc
budget (``memory.estimate``) and the instructions of one training step, estimated as

    instructions ≈ INSTRUCTIONS_PER_MAC · B · (prefix MACs + (2q+1) · suffix MACs)

INSTRUCTIONS_PER_MAC is calibrated on the exported firmware (the reference C kernels on a Cortex-M4
under QEMU: 38,276,832 instructions per inference of the default DS-CNN, 2,495,104 MACs, see the
README's firmware section); the ratio of two configurations is what the sweep is for, and
``zo-edge verify-firmware`` measures any one of them exactly. When simulate results are given, rows
whose settings match (method zo-fc, int8, same q and master, same run) carry their average accuracy.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

INSTRUCTIONS_PER_MAC = 38_276_832 / 2_495_104  # ≈ 15.3, measured (see the module docstring)
QUERIES = (1, 2, 4, 8, 16)
MASTERS = ("int8", "int16")


def _macs(run: dict) -> dict:
    from zo_edge.cost import split_macs
    from zo_edge.engine import Engine
    from zo_edge.learners.int8_learner import ADAPTER, CLASSIFIER

    return split_macs(Engine(run.graph).split_frozen([run.roles[r] for r in ADAPTER + CLASSIFIER]))


def _accuracy(results: list[dict], run: dict, config) -> float | None:
    for r in results:
        s = r["settings"]
        same_run = Path(str(r.get("run_dir"))).resolve() == run.path.resolve()
        if same_run and s.get("method") == "zo-fc" and s.get("mode") == "int8" and s.get("q") == config.q \
                and s.get("master") == config.master:
            return float(r["metrics"]["average_accuracy"]["mean"])
    return None


def sweep(runs: list[dict], config, device=None, results: list[dict] = (), queries=QUERIES, masters=MASTERS) -> list[dict]:
    """One row per (run, q, master): settings, zo-fc RAM and flash, instructions per step, fits, accuracy."""
    from zo_edge.memory import estimate

    rows = []
    for run in runs:
        macs = _macs(run)
        settings = run.settings
        for master in masters:
            for q in queries:
                cfg = replace(config, q=q, master=master).check()
                budget = estimate(run, cfg, "zo-fc")
                work = cfg.batch_size * (macs["prefix"] + (2 * q + 1) * macs["suffix"])
                row = {
                    "run": run.path.name,
                    "adapter_position": settings.get("adapter_position"),
                    "adapter_width": settings.get("adapter_width"),
                    "q": q, "master": master, "batch_size": cfg.batch_size,
                    "ram_bytes": int(budget.ram_bytes), "flash_bytes": int(budget.flash_bytes),
                    "instructions_per_step": int(round(INSTRUCTIONS_PER_MAC * work)),
                    "average_accuracy": _accuracy(list(results), run, cfg),
                }
                if device is not None:
                    row["fits"] = row["ram_bytes"] <= device.sram_bytes and row["flash_bytes"] <= device.flash_bytes
                rows.append(row)
    return rows


def format_sweep(rows: list[dict]) -> str:
    header = ["run", "position", "width", "q", "master", "RAM KiB", "flash KiB", "Minstr/step", "avg acc", "fits"]
    lines = [header]
    for r in rows:
        lines.append([r["run"], str(r["adapter_position"]), str(r["adapter_width"]), str(r["q"]), r["master"],
                      f"{r['ram_bytes'] / 1024:.1f}", f"{r['flash_bytes'] / 1024:.1f}",
                      f"{r['instructions_per_step'] / 1e6:.1f}",
                      "-" if r["average_accuracy"] is None else f"{r['average_accuracy']:.1f}",
                      {True: "yes", False: "NO"}.get(r.get("fits"), "-")])
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    text = ["  ".join(cell.rjust(w) if c >= 3 else cell.ljust(w) for c, (cell, w) in enumerate(zip(line, widths)))
            for line in lines]
    return "\n".join([text[0], "  ".join("-" * w for w in widths)] + text[1:])


def plot_sweep(rows: list[dict], path, device=None) -> Path:
    """RAM against instructions per step (and against accuracy where known), one marker per run."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with_acc = [r for r in rows if r["average_accuracy"] is not None]
    fig = Figure(figsize=(11 if with_acc else 6.5, 4.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if with_acc else 1, squeeze=False)[0]
    markers = {"int8": "o", "int16": "s"}
    for run in sorted({r["run"] for r in rows}):
        for master in MASTERS:
            pts = [r for r in rows if r["run"] == run and r["master"] == master]
            if not pts:
                continue
            label = f"{run} ({master} master)"
            axes[0].plot([p["instructions_per_step"] / 1e6 for p in pts], [p["ram_bytes"] / 1024 for p in pts],
                         marker=markers[master], label=label)
            for p in pts:
                axes[0].annotate(f"q={p['q']}", (p["instructions_per_step"] / 1e6, p["ram_bytes"] / 1024),
                                 fontsize=7, xytext=(3, 3), textcoords="offset points")
            acc = [p for p in pts if p["average_accuracy"] is not None]
            if with_acc and acc:
                axes[1].plot([p["average_accuracy"] for p in acc], [p["ram_bytes"] / 1024 for p in acc],
                             marker=markers[master], linestyle="none", label=label)
    axes[0].set_xlabel("instructions per step (millions, estimated)")
    axes[0].set_ylabel("zo-fc RAM (KiB)")
    axes[0].set_title("ZO-FC: RAM against work per step")
    if device is not None:
        axes[0].axhline(device.sram_bytes / 1024, color="red", linestyle="--", label=f"{device.key} SRAM")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    if with_acc:
        axes[1].set_xlabel("average accuracy (%)")
        axes[1].set_ylabel("zo-fc RAM (KiB)")
        axes[1].set_title("RAM against accuracy (simulate results)")
        axes[1].grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
