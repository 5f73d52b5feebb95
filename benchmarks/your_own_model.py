"""The README's "your own model and data" example, end to end, with every figure it quotes.

A user's recordings (here: scikit-learn's handwritten digits, saved with numpy as data.npz) and a Keras
model of their own, trained on digits 0-3 only, also deployed as an int8 .tflite whose float original is
then thrown away. Both go through `zo-edge build` (--model and --tflite), `simulate` (zo-fc, head and
frozen, 3 seeds, int8), `export`, `verify-firmware` on mps2-an386 (Cortex-M4F in QEMU) and `profile`.

    python benchmarks/your_own_model.py --out runs/byom        # about 10 minutes on 2 cores

Prints one summary table (markdown) and writes everything under --out (a new folder).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TASKS = "0,1,2,3;4,5;6,7;8,9"


def zo_edge(*args) -> str:
    done = subprocess.run([sys.executable, "-m", "zo_edge.cli", *map(str, args)], capture_output=True, text=True)
    if done.returncode not in (0, 3):
        sys.exit(f"zo-edge {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/byom"))
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    out = args.out
    if out.exists():
        sys.exit(f"{out} exists; choose a new --out")
    out.mkdir(parents=True)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: its tests/ helpers
    from tests.user_models import write_user_files

    write_user_files(out)  # the same user files the end-to-end tests make
    runs = {
        "keras": ["--model", out / "user.keras", "--adapter-at", "relu1,embed"],
        "tflite": ["--tflite", out / "user_int8.tflite"],
    }
    rows = []
    for name, source in runs.items():
        run = out / f"run-{name}"
        zo_edge("build", *source, "--data", out / "data.npz", "--tasks", TASKS, "--out", run)
        meta = json.loads((run / "run.json").read_text())
        accuracy = {}
        for method in ("zo-fc", "head", "frozen"):
            results = json.loads(zo_edge("simulate", run, "--method", method, "--seeds", args.seeds,
                                         "--out", out / f"sim-{name}" / method, "--json"))
            m = results["metrics"]
            accuracy[method] = (m["average_accuracy"], m["forgetting"])
        fw = out / f"fw-{name}"
        zo_edge("export", run, "--out", fw, "--batch-size", 8, "--q", 2, "--steps", 20, "--every", 5)
        report = json.loads(zo_edge("verify-firmware", fw, "--board", "mps2-an386", "--json"))
        budget = json.loads(zo_edge("profile", run, "--device", "stm32l432kc", "--method", "all", "--batch-size", 8,
                                    "--q", 2, "--json"))
        measured = json.loads(zo_edge("profile", run, "--device", "stm32l432kc", "--firmware", fw, "--json"))["measured"]
        zofc = budget["configurations"]["zo-fc"]
        rows.append({
            "run": name, "adapters": len(meta["plan"]["adapters"]),
            "adapter places": ", ".join(str(a.get("at", a.get("tensor_name", a.get("tensor"))))
                                        for a in meta["model"]["adapter"]["adapters"]),
            "int8 base accuracy": meta["quantization"]["int8_base_test"]["accuracy"],
            **{f"{k} avg acc": f"{v[0]['mean']:.1f} ± {v[0]['std']:.1f}" for k, v in accuracy.items()},
            **{f"{k} forgetting": f"{v[1]['mean']:.1f} ± {v[1]['std']:.1f}" for k, v in accuracy.items()},
            "firmware differing bytes": f"{report['differing_bytes']} of {report['compared_bytes']}",
            "instructions per inference": report["instructions"]["inference"],
            "instructions per step (B=8, q=2)": report["instructions"]["train_step"],
            "zo-fc RAM / flash estimate (B=8, q=2)": f"{zofc['ram_bytes']:,} / {zofc['flash_bytes']:,} B",
            "measured RAM / flash": f"{measured['ram_bytes']:,} / {measured['flash_bytes']:,} B",
        })
    keys = list(rows[0])
    print("| " + " | ".join(["", *[r["run"] for r in rows]]) + " |")
    print("| --- |" + " ---: |" * len(rows))
    for key in keys[1:]:
        print(f"| {key} | " + " | ".join(str(r[key]) for r in rows) + " |")


if __name__ == "__main__":
    main()
