"""Firmware speed and memory on Cortex-M in QEMU: the reference kernels beside the optimised ones.

    python benchmarks/firmware.py [--runs DIR ...] [--tflite A.tflite B.tflite ...] [--boards B ...]
                                  [--step-boards B ...] [--samples 2] [--json] [--save results.json]
    python benchmarks/firmware.py --fit results.json    # zo_edge.kernel_spec.INSTRUCTIONS from the per-op counts

Models: the zoo's default model (DS-CNN on spoken digits, built into a temporary folder with a short
pretraining unless --runs gives run folders; --runs with no folder skips it) and every --tflite. Each is
exported as inference firmware (``zo-edge export --tflite``) and, on every board, built twice: with the
kernels its core compiles (DSP on M4F/M7/M33, MVE on M55) and with the reference loops (``KERNELS=reference``;
on the M3 they are the same build, shown once). Each build runs in QEMU under ``-icount`` (exact
instruction counts, whatever the machine's load) and is verified byte for byte against the engine, and so
against TFLM (``verify_firmware``): a figure from firmware that differs is refused, not printed.

Printed per model: instructions per inference and per MAC on each board, per op type and kernel path; the
activation arena and the kernels' scratch beside TFLM's minimum arena (the smallest ``arena_size`` with
which the TFLM Python interpreter constructs and invokes the model, bisected; x86-64, 8-byte pointers, so a
Cortex-M build of TFLM needs somewhat less). Per run folder also the zo-fc training step (batch 2, q = 2)
on --step-boards (default M4F and M55), reference and optimised, with its phases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware_export.board import BOARDS, TARGET_ISA  # noqa: E402
from firmware_export.verify import verify_firmware  # noqa: E402
from zo_edge import kernel_spec  # noqa: E402
from zo_edge.cost import op_macs  # noqa: E402

DEFAULT_BOARDS = ("mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505", "mps3-an547")  # M3, M4F, M7, M33, M55
STEP_BOARDS = ("mps2-an386", "mps3-an547")
STEP = {"batch_size": 2, "q": 2}
CORE_NAMES = {"cortex-m3": "M3", "cortex-m4": "M4F", "cortex-m7": "M7", "cortex-m33": "M33", "cortex-m55": "M55",
              "cortex-m0plus": "M0+"}


def quiet(*_args) -> None:
    pass


def slug(name: str) -> str:
    """A folder name for a model (the Makefile takes no spaces)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@contextlib.contextmanager
def stderr_silenced():
    """TFLM prints every failed allocation of the bisection to the C stderr: keep it off the terminal."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def tflm_min_arena(model_bytes: bytes, x: np.ndarray) -> int:
    """The smallest arena_size with which TFLM's Python interpreter constructs the model and invokes it on
    one sample (bisection between 0 and a size that works)."""
    from zo_edge.errors import ZoEdgeError
    from zo_edge.tflm import TflmOracle

    def works(size: int) -> bool:
        try:
            TflmOracle(model_bytes, arena_size=size).run(x[:1])
            return True
        except ZoEdgeError:
            return False

    with stderr_silenced():
        hi = 1 << 16
        while not works(hi):
            hi *= 2
        lo = 0  # fails (0 would mean "the default size" to TflmOracle, so it is never tried)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if works(mid) else (mid, hi)
    return hi


def by_op(ops: list[dict], terms: dict) -> dict:
    """Instructions and MACs per op type and kernel path (``op path``), in first-seen order, with the summed
    work terms of ``kernel_spec.layer_terms`` (``terms``: op index -> terms) that ``fit`` needs."""
    groups: dict[str, dict] = {}
    for row in ops:
        if row["instructions"] is None:
            continue
        g = groups.setdefault(f"{row['op']} {row['path']}", {"ops": 0, "macs": 0, "instructions": 0, "terms": {}})
        g["ops"] += 1
        g["macs"] += row["macs"]
        g["instructions"] += row["instructions"]
        for term, n in terms.get(row["index"], {}).items():
            g["terms"][term] = g["terms"].get(term, 0) + n
    for g in groups.values():
        g["per_mac"] = round(g["instructions"] / g["macs"], 3) if g["macs"] else None
    return groups


def measure(fw: Path, board: str, kernels: str, terms: dict) -> dict:
    """One verified run: its instruction counts, or a refusal when any byte differs."""
    report = verify_firmware(fw, board, log=quiet, kernels=kernels)
    if report["differing_bytes"] or not report["compared_bytes"]:
        raise SystemExit(f"{fw} on {board} ({kernels} kernels): {report['differing_bytes']} of "
                         f"{report['compared_bytes']} bytes differ from the engine; no figure from it")
    ins = report["instructions"]
    row = {"board": board, "core": BOARDS[board].target, "kernels": kernels,
           "isa": "ref" if kernels == "reference" else TARGET_ISA[BOARDS[board].target],
           "compared_bytes": report["compared_bytes"], "differing_bytes": 0}
    if report["kind"] == "inference":
        row.update(instructions=ins["inference"], per_mac=ins["per_mac"], by_op=by_op(report["ops"], terms))
    else:
        row.update(instructions=ins["train_step"], breakdown=ins["breakdown"], inference=ins["inference"])
    return row


def kernel_sets(board: str) -> list[str]:
    """Both kernel sets, or only one where the core's kernels are the reference loops (M3)."""
    return ["optimised"] if TARGET_ISA[BOARDS[board].target] == "ref" else ["reference", "optimised"]


def bench_inference(name: str, tflite: Path, work: Path, boards, samples: int, log) -> dict:
    from firmware_export.infer_export import export_inference, read_inference_export

    fw = work / slug(name) / "inference"
    meta = export_inference(tflite, fw, samples=samples, log=quiet)
    graph, x = read_inference_export(fw, json.loads((fw / "export.json").read_text()))
    arena, scratch = meta["arena_bytes"], meta["scratch_bytes"]
    padding = -arena % 8  # the scratch starts 8-aligned after the arena (ZOEDGE_SCRATCH_OFFSET)
    result = {"model": name, "source": str(tflite), "macs": sum(op_macs(op, graph) for op in graph.ops), "boards": [],
              "memory": {"arena_bytes": arena, "scratch_bytes": scratch,
                         "arena_plus_scratch_bytes": {isa: arena + (padding + n if n else 0)
                                                      for isa, n in scratch.items()},
                         "tflm_min_arena_bytes": tflm_min_arena(graph.model_bytes, x)}}
    terms = {index: kernel_spec.layer_terms(lay) for index, lay in kernel_spec.model_layers(graph)}
    for board in boards:
        for kernels in kernel_sets(board):
            log(f"{name}: {board} {kernels} kernels")
            result["boards"].append(measure(fw, board, kernels, terms))
    return result


def bench_step(name: str, run_dir: Path, work: Path, boards, log) -> dict:
    from firmware_export.export import export_firmware
    from zo_edge.learners import LearnerConfig

    fw = work / slug(name) / "zo-fc"
    config = LearnerConfig(method="zo-fc", mode="int8", **STEP)
    export_firmware(run_dir, fw, config, samples=2, steps=2, every=1, log=quiet)
    rows = []
    for board in boards:
        for kernels in kernel_sets(board):
            log(f"{name} zo-fc step: {board} {kernels} kernels")
            rows.append(measure(fw, board, kernels, {}))
    return {"model": name, "config": dict(method="zo-fc", **STEP), "boards": rows}


FIT_BOARDS = {"ref": "mps2-an385", "dsp": "mps2-an386", "mve": "mps3-an547"}  # M3, M4F, M55


def fit(results: dict) -> tuple[dict, list[str]]:
    """kernel_spec.INSTRUCTIONS fitted to the measured per-op counts (non-negative least squares per path and
    instruction set over the models), and per model how far the fitted estimate is from the measurement."""
    from scipy.optimize import nnls

    points: dict[tuple, list] = {}
    for r in results["inference"]:
        for isa, board in FIT_BOARDS.items():
            row = next((b for b in r["boards"] if b["board"] == board and b["kernels"] == "optimised"), None)
            for key, g in (row["by_op"] if row else {}).items():
                op, path = key.split(" ")
                if (op, path) in kernel_spec.INSTRUCTIONS:
                    points.setdefault((op, path, isa), []).append((g["terms"], g["instructions"]))
    table = {key: dict(value) for key, value in kernel_spec.INSTRUCTIONS.items()}
    for (op, path, isa), pts in sorted(points.items()):
        names = kernel_spec.CONV_TERMS if op in ("CONV_2D", "DEPTHWISE_CONV_2D") else kernel_spec.OTHER_TERMS
        a = np.array([[t.get(n, 0) for n in names] for t, _ in pts], float)
        coef, _ = nnls(a, np.array([y for _, y in pts], float))
        table[(op, path)][isa] = {n: float(f"{c:.4g}") for n, c in zip(names, coef) if c > 0}
    checks = []
    for r in results["inference"]:
        parts = []
        for isa, board in FIT_BOARDS.items():
            row = next((b for b in r["boards"] if b["board"] == board and b["kernels"] == "optimised"), None)
            if row:
                est = sum(kernel_spec.path_instructions(*key.split(" "), g["terms"], isa, table)
                          for key, g in row["by_op"].items() if tuple(key.split(" ")) in table)
                parts.append(f"{isa} {est / row['instructions'] - 1:+.1%}")
        checks.append(f"{r['model']}: fitted estimate vs measured per inference: {', '.join(parts)}")
    return table, checks


def _pair(rows, board) -> tuple[dict | None, dict]:
    """(reference row or None, optimised row) of a board."""
    mine = {r["kernels"]: r for r in rows if r["board"] == board}
    return mine.get("reference"), mine["optimised"]


def format_inference(r: dict, boards) -> list[str]:
    mem = r["memory"]
    scratch = ", ".join(f"{isa} {n:,}" for isa, n in mem["scratch_bytes"].items())
    total = ", ".join(f"{isa} {n:,}" for isa, n in mem["arena_plus_scratch_bytes"].items())
    lines = [f"{r['model']}: {r['macs']:,} MACs per inference",
             f"  memory: arena {mem['arena_bytes']:,} B, kernel scratch ({scratch}) B; arena + scratch ({total}) B "
             f"vs TFLM minimum arena {mem['tflm_min_arena_bytes']:,} B (x86-64)",
             f"  {'board':<11} {'core':<4} {'reference':>12} {'/MAC':>6} {'optimised':>12} {'/MAC':>6} {'speed-up':>8}"]
    for board in boards:
        ref, opt = _pair(r["boards"], board)
        core = CORE_NAMES[BOARDS[board].target]
        if ref is None:
            lines.append(f"  {board:<11} {core:<4} {opt['instructions']:>12,} {opt['per_mac']:>6.2f} {'(the same)':>12}")
            continue
        lines.append(f"  {board:<11} {core:<4} {ref['instructions']:>12,} {ref['per_mac']:>6.2f} "
                     f"{opt['instructions']:>12,} {opt['per_mac']:>6.2f} {ref['instructions'] / opt['instructions']:>7.1f}x")
    names = list(r["boards"][0]["by_op"])
    head = "".join(f" {CORE_NAMES[BOARDS[b].target]:>17}" for b in boards)
    lines.append(f"  per op type, instructions per MAC (per op where it has no MACs), reference -> optimised:")
    lines.append(f"  {'op path':<28} {'MACs':>10}{head}")
    for op in names:
        cells = []
        for board in boards:
            ref, opt = _pair(r["boards"], board)
            per = [row["by_op"][op] for row in (ref, opt) if row is not None]
            if per[0]["per_mac"] is None:
                vals = [f"{g['instructions'] / g['ops']:,.0f}" for g in per]
            else:
                vals = [f"{g['per_mac']:.2f}" for g in per]
            cells.append(" " + "->".join(vals).rjust(17))
        lines.append(f"  {op:<28} {per[0]['macs']:>10,}{''.join(cells)}")
    return lines


def format_step(s: dict) -> list[str]:
    c = s["config"]
    lines = [f"{s['model']}: zo-fc step, batch {c['batch_size']}, q {c['q']} (instructions per step; phases of the "
             "optimised build)"]
    boards = list(dict.fromkeys(r["board"] for r in s["boards"]))
    for board in boards:
        ref, opt = _pair(s["boards"], board)
        phases = ", ".join(f"{k} {v:,}" for k, v in opt["breakdown"].items())
        before = f"reference {ref['instructions']:,} -> " if ref else ""
        lines.append(f"  {board:<11} {CORE_NAMES[BOARDS[board].target]:<4} {before}optimised {opt['instructions']:,}"
                     f" ({phases})")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=None, help="run folders (zo-edge build); default: build the zoo's "
                    "default model; give --runs with no folder to skip it")
    ap.add_argument("--tflite", nargs="*", default=[], type=Path, help="int8 .tflite models to export and measure")
    ap.add_argument("--boards", nargs="*", default=list(DEFAULT_BOARDS), choices=[b for b in BOARDS if b != "host"])
    ap.add_argument("--step-boards", nargs="*", default=list(STEP_BOARDS), choices=[b for b in BOARDS if b != "host"])
    ap.add_argument("--samples", type=int, default=2, help="samples embedded and verified per model")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of the tables")
    ap.add_argument("--save", type=Path, help="also write the JSON to this file")
    ap.add_argument("--fit", type=Path, help="measure nothing: print zo_edge.kernel_spec.INSTRUCTIONS fitted to the "
                    "per-op counts of a --save file, and how far the fitted estimate is from each model's count")
    args = ap.parse_args()
    if args.fit:
        import pprint

        table, checks = fit(json.loads(args.fit.read_text()))
        print("INSTRUCTIONS = " + pprint.pformat(table, width=116, sort_dicts=False))
        print("\n".join(checks))
        return

    from zo_edge.build import build_run

    log = (lambda m: print(m, file=sys.stderr, flush=True))
    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    runs = [Path(r) for r in args.runs] if args.runs is not None else []
    if args.runs is None:
        out = work / "runs" / "kws"
        log("building the default model (spoken digits, DS-CNN, 2 epochs) ...")
        build_run(out, epochs=2, log=quiet)
        runs.append(out)
    results = {"inference": [], "zo_fc_step": []}
    for run_dir in runs:
        name = f"zoo default ({run_dir.name})"
        results["inference"].append(bench_inference(name, run_dir / "model_int8.tflite", work, args.boards,
                                                    args.samples, log))
        if args.step_boards:
            results["zo_fc_step"].append(bench_step(name, run_dir, work, args.step_boards, log))
    for path in args.tflite:
        results["inference"].append(bench_inference(path.stem, path, work, args.boards, args.samples, log))
    if args.save:
        args.save.write_text(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results["inference"]:
        print("\n".join(format_inference(r, args.boards)) + "\n")
    for s in results["zo_fc_step"]:
        print("\n".join(format_step(s)) + "\n")


if __name__ == "__main__":
    main()
