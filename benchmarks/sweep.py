"""Wall time of one sweep grid with 1 worker and with 2: how a sweep scales over the cores it is given.

    python benchmarks/sweep.py [--run runs/digits] [--seeds 3] [--epochs 10] [--engine local] [--json]

Runs the same 8-cell grid (method zo-fc and head × q 1, 2 × master int8, int16 on ``--run``, device
stm32l432kc) into two fresh temporary sweep folders, ``--workers 1`` and then ``--workers 2``, each
with an empty prefix cache, and prints both wall times and their ratio. Both sweeps must give the
same cells (checked). Wall time includes starting the workers (and, for ``--engine ray``, the local
cluster). The ratio, not a timed test, is what the README quotes; on a machine whose cores are busy
with other work it falls short of the core count.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GRID = """runs = ["{run}"]
device = "stm32l432kc"
seeds = {seeds}

[fixed]
epochs = {epochs}

[grid]
method = ["zo-fc", "head"]
q = [1, 2]
master = ["int8", "int16"]
"""


def main() -> None:
    from sim.sweep import run_sweep

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/digits", help="run folder made by `zo-edge build`")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--engine", choices=["local", "ray"], default="local")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        grid = Path(tmp) / "grid.toml"
        grid.write_text(GRID.format(run=Path(args.run).resolve(), seeds=args.seeds, epochs=args.epochs))
        seconds, cells = {}, {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            summary = run_sweep(grid, Path(tmp) / f"workers{workers}", engine=args.engine, workers=workers,
                                log=lambda m: None)
            seconds[workers] = time.perf_counter() - t0
            cells[workers] = [(c["key"], c["status"], c.get("metrics")) for c in summary["cells"]]
    assert cells[1] == cells[2], "the two sweeps computed different cells"
    result = {"run": args.run, "engine": args.engine, "cells": len(cells[1]), "seeds": args.seeds,
              "epochs": args.epochs, "seconds": seconds, "ratio_1_over_2_workers": seconds[1] / seconds[2]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['cells']}-cell grid on {args.run} ({args.seeds} seeds, {args.epochs} epochs per task, "
          f"--engine {args.engine}): 1 worker {seconds[1]:.1f} s, 2 workers {seconds[2]:.1f} s, "
          f"ratio {result['ratio_1_over_2_workers']:.2f}x")


if __name__ == "__main__":
    main()
