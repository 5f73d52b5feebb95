"""``zo-edge demo``: the main job end to end on the default data, printing what it did.

Every run writes into a fresh folder (``runs/demo``, ``runs/demo-2``, ...), so an earlier demo's outputs are
never touched. When the Arm toolchain is missing, the QEMU stage is skipped and the demo ends by saying
so and how to enable it.

The stages: the bundled spoken digits, a class-incremental scenario, a DS-CNN pretrained and quantised
with an identity-initialised adapter, the int8 engine checked against TFLM on the whole test split,
ZO-FC against its baselines in int8 mode, and the exported firmware checked byte for byte against
the simulator on the host and in QEMU, and the RAM/flash budget of inference, ZO-FC and backprop on a
64 KiB part.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from zo_edge.errors import ZoEdgeError


def firmware_tools_missing() -> list[str]:
    """What the QEMU stage needs and this machine lacks."""
    return [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(t) is None]


def run_demo(out_dir: Path, force: bool = False, echo=print) -> dict:
    """Every stage into ``out_dir`` (a fresh folder, or with ``force`` one an earlier demo wrote): the run
    in ``kws/``, simulate results in ``sim/``, plots in ``plots/``, firmware in ``fw/``."""
    from zo_edge.build import build_run
    from zo_edge.outputs import fill_folder
    from zo_edge.verify import compare_with_tflm

    with fill_folder(out_dir, "demo", force) as out:
        echo(f"zo-edge demo: everything goes into {out}")
        run_dir = out / "kws"
        echo("== 1. build: spoken digits (FSDD MFCCs), class-incremental, DS-CNN + adapter, int8")
        t0 = time.perf_counter()
        run = build_run(run_dir, dataset="spoken-digits", scenario="class-il", seed=0, log=lambda m: echo("   " + m))
        echo(f"   built in {time.perf_counter() - t0:.1f} s")
        graph = run.graph
        echo(f"   {run.tflite_path}: {len(graph.model_bytes)} bytes, ops {', '.join(graph.opcodes)}")
        pre = run.meta["pretrain"]
        echo(f"   pretrained {pre['epochs']} epochs on classes {pre['classes']} in {pre['seconds']:.1f} s: "
             f"float base accuracy {100 * pre['base_accuracy']:.1f}%")
        echo(f"   quantization report: {run_dir / 'quantization.txt'}")

        echo("== 2. int8 engine vs the TFLM interpreter on the whole test split")
        from zo_edge.engine import Engine

        dataset = run.dataset
        engine = Engine(graph)
        x = engine.quantize_input(dataset.x_test)
        t0 = time.perf_counter()
        report = compare_with_tflm(graph, [x])
        echo(f"   {report['samples']} samples: {report['differing_bytes']} of {report['total_bytes']} output bytes "
             f"differ ({time.perf_counter() - t0:.1f} s for both)")
        logits, _ = engine.run(x)
        base = np.array(run.meta["scenario"]["base"]["classes"])
        mask = np.isin(dataset.y_test, base)
        pred = base[np.argmax(logits[0][mask][:, base], axis=1)]
        echo(f"   int8 engine accuracy on the {len(base)} pretraining classes: "
             f"{100 * np.mean(pred == dataset.y_test[mask]):.1f}%")
        if report["differing_bytes"] or not report["total_bytes"]:
            raise ZoEdgeError("the engine and TFLM differ on the demo model; this is a bug, please report it")
        comparison = _simulate_methods(run_dir, out, echo)
        missing = firmware_tools_missing()
        firmware = _firmware(run_dir, out / "fw", echo, boards=("host",) if missing else ("host", "mps2-an386"))
        budget = _budget(run, echo)
        if missing:
            echo(f"skipped: the firmware run in QEMU on mps2-an386 ({', '.join(missing)} not installed); enable it "
                 f"with `sudo apt-get install {' '.join(TOOLCHAIN_PACKAGES)}` (or `make toolchain` as root)")
        else:
            echo(f"done: everything is in {out}")
    return {"out": str(out_dir), "run": str(run_dir), "verify": report, "simulate": comparison,
            "firmware": firmware, "budget": budget, "skipped": ["qemu"] if missing else []}


TOOLCHAIN_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "qemu-system-arm")


DEMO_DEVICE = "stm32l432kc"  # 64 KiB SRAM, 256 KiB flash: the smallest part the default model should learn on


def _budget(run: dict, echo) -> dict:
    """Stage 5: RAM and flash of inference, zo-fc and backprop for the default model on a small part."""
    from zo_edge.devices import get_device, load_catalogue
    from zo_edge.learners import LearnerConfig
    from zo_edge.profile import format_profile, profile

    echo(f"== 5. budget on {DEMO_DEVICE} (estimate; `zo-edge profile {run.run_dir} --device {DEMO_DEVICE} --method all`)")
    result = profile(run, LearnerConfig(method="zo-fc", mode="int8"), get_device(DEMO_DEVICE, load_catalogue()), "all")
    text = format_profile(result)
    for line in text[: text.find("\nnotes")].splitlines():  # the table and verdicts; the notes stay in --help's command
        echo("   " + line)
    return {name: {k: c[k] for k in ("ram_bytes", "flash_bytes", "fits")} for name, c in result["configurations"].items()}


def _firmware(run_dir: Path, fw_dir: Path, echo, boards=("host", "mps2-an386")) -> dict:
    """Stage 4: export the default model's firmware and check it on the host and in QEMU (Cortex-M4F)."""
    from firmware_export.export import export_firmware
    from firmware_export.verify import format_report, verify_firmware
    from zo_edge.learners import LearnerConfig

    where = " and ".join("the host" if b == "host" else f"{b} (QEMU)" for b in boards)
    echo(f"== 4. firmware: export zo-fc (batch 2, q 2, 100 steps), run on {where}")
    config = LearnerConfig(method="zo-fc", mode="int8", batch_size=2, q=2)
    export_firmware(run_dir, fw_dir, config, steps=100, every=25, log=lambda m: echo("   " + m))
    reports = {}
    for board in boards:
        report = verify_firmware(fw_dir, board=board, log=lambda m: None)
        echo("   " + format_report(report).replace("\n", "\n   "))
        if report["differing_bytes"]:
            raise ZoEdgeError(f"the firmware on {board} differs from the simulator; this is a bug, please report it")
        reports[board] = report
    return reports


DEMO_METHODS = ("zo-fc", "fo", "zo", "head")


def _simulate_methods(run_dir: Path, out: Path, echo) -> dict:
    """Stage 3: the default comparison in int8 mode, one seed (the README's table uses three)."""
    from sim.commands import run_simulate
    from sim.compare import compare_rows, format_table, load_results
    from sim.plots import write_plots
    from zo_edge.outputs import write_folder

    echo(f"== 3. continual learning in int8 mode: {', '.join(DEMO_METHODS)} (1 seed, 10 epochs per task)")
    outs = []
    for method in DEMO_METHODS:
        t0 = time.perf_counter()
        sim_out = out / "sim" / f"{method}-int8"
        run_simulate(run_dir, sim_out, {"method": method, "mode": "int8", "epochs": 10}, quiet=True)
        echo(f"   {method}: {time.perf_counter() - t0:.0f} s -> {sim_out}/results.json")
        outs.append(sim_out)
    results = [load_results(o) for o in outs]
    echo(format_table(compare_rows(results)))
    with write_folder(out / "plots", "plots") as tmp:
        names = [p.name for p in write_plots(results, tmp)]
    plots = [out / "plots" / n for n in names]
    echo(f"   plots: {', '.join(str(p) for p in plots[-2:])}")
    return {"results": [str(o / "results.json") for o in outs], "plots": [str(p) for p in plots]}
