"""The ``zo-edge`` command line: one command per user job.

Errors a user can fix arrive as ZoEdgeError and leave as one line on stderr with exit code 2;
``verify`` exits 1 when the engine and TFLM differ.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import numpy as np

from zo_edge.errors import ZoEdgeError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter is not our users' business


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


def _load_npy(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise ZoEdgeError(f"{what} {p}: no such file")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:
        raise ZoEdgeError(f"{what} {p} is not a readable .npy array ({type(exc).__name__}); save one with numpy.save") from None


def _refuse_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise ZoEdgeError(f"{path} exists; pass --force to overwrite it")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zo-edge")
def cli():
    """zo-edge: continual learning on Cortex-M with ZO-FC.

    Simulate on-device learning on the device's exact int8 arithmetic, export firmware that does the
    same, and profile RAM budgets. Start with `zo-edge demo`, or `zo-edge build` to make a run folder.
    """


@cli.command()
@click.option("--dataset", default="spoken-digits", show_default=True, help="Bundled dataset (see `zo-edge data list`).")
@click.option("--scenario", default="class-il", show_default=True, help="Continual-learning scenario: class-il or domain-il.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run folder to create.")
@click.option("--seed", default=0, show_default=True, help="Seed for the split, class order, initialisation and training.")
@click.option("--arch", default=None, help="Model from the zoo (default: the dataset's own).")
@click.option("--adapter-position", default="last", show_default=True, help="Block the adapter runs beside: last, a block index, or after.")
@click.option("--adapter-width", default=8, show_default=True, help="Adapter bottleneck channels.")
@click.option("--epochs", default=None, type=int, help="Pretraining epochs (default: the zoo model's own).")
@click.option("--force", is_flag=True, help="Replace a non-empty run folder.")
def build(dataset, scenario, out_dir, seed, arch, adapter_position, adapter_width, epochs, force):
    """Pretrain, attach adapter and classifier, quantize to int8: write a run folder.

    The folder holds model.keras, model_int8.tflite, the quantization report (text and JSON) and
    run.json with every setting, the seed and the class order.
    """
    from zo_edge.build import build_run

    position = int(adapter_position) if adapter_position.lstrip("-").isdigit() else adapter_position
    run = build_run(out_dir, dataset=dataset, scenario=scenario, seed=seed, arch=arch,
                    adapter_position=position, adapter_width=adapter_width, epochs=epochs, force=force,
                    log=lambda msg: click.echo(msg, err=True))
    click.echo(f"{out_dir}: {run['settings']['arch']} on {dataset}/{scenario}; see run.json and quantization.txt")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--inputs", "inputs_path", required=True, help="int8 batch [N, ...input shape] as .npy.")
@click.option("--out", "out_path", required=True, help="Where to save the outputs (.npy; .npz for several outputs).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def infer(model, inputs_path, out_path, force):
    """Run an int8 .tflite on a batch with the numpy engine (TFLM's arithmetic)."""
    from zo_edge.engine import Engine
    from zo_edge.qgraph import QGraph

    graph = QGraph.load(model)
    engine = Engine(graph)
    x = _load_npy(inputs_path, "--inputs")
    out = Path(out_path)
    _refuse_overwrite(out, force)
    outputs, _ = engine.run(x)
    if len(outputs) == 1 and out.suffix != ".npz":
        np.save(out, outputs[0])
    elif out.suffix == ".npz":
        np.savez(out, **{f"output_{k}": y for k, y in enumerate(outputs)})
    else:
        raise ZoEdgeError(f"{model} has {len(outputs)} outputs; give --out a .npz name to save them all")
    click.echo(f"{x.shape[0]} samples -> {out} ({', '.join(str(list(y.shape)) for y in outputs)})")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--inputs", "inputs_path", help="int8 batch [N, ...input shape] as .npy.")
@click.option("--random", "random_n", type=int, help="Use N random int8 samples instead of --inputs.")
@click.option("--seed", default=0, show_default=True, help="Seed for --random.")
@click.option("--intermediates", is_flag=True, help="Compare every intermediate tensor too.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (differing_bytes, total_bytes, per_tensor).")
def verify(model, inputs_path, random_n, seed, intermediates, as_json):
    """Check the engine against the TFLM interpreter, byte for byte.

    Exit status 0 only when no byte differs; 1 when some do.
    """
    from zo_edge.qgraph import QGraph
    from zo_edge.verify import compare_with_tflm, random_inputs

    if (inputs_path is None) == (random_n is None):
        raise ZoEdgeError("give exactly one of --inputs X.npy or --random N")
    graph = QGraph.load(model)
    if random_n is not None:
        if random_n < 1:
            raise ZoEdgeError("--random needs N >= 1")
        inputs = random_inputs(graph, random_n, seed)
    else:
        inputs = [_load_npy(inputs_path, "--inputs")]
    report = compare_with_tflm(graph, inputs, intermediates=intermediates)
    if as_json:
        _echo_json(report)
    else:
        for row in report["per_tensor"]:
            if row["kind"] == "output" or row["differing_bytes"]:
                click.echo(f"{row['kind']:12s} {row['differing_bytes']:8d} / {row['total_bytes']:<8d} {row['name']}")
        verdict = "identical" if report["differing_bytes"] == 0 else "DIFFERENT"
        click.echo(f"{report['samples']} samples: {report['differing_bytes']} of {report['total_bytes']} output bytes differ ({verdict})")
    if report["differing_bytes"] or any(r["differing_bytes"] for r in report["per_tensor"]):
        sys.exit(1)


@cli.group()
def data():
    """Bundled datasets and continual-learning scenarios (nothing is downloaded)."""


@data.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def data_list(as_json):
    """Datasets and scenarios with their sizes."""
    from zo_edge.data import catalogue

    rows = catalogue()
    if as_json:
        _echo_json(rows)
        return
    keys = list(rows[0].keys())
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    click.echo("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        click.echo("  ".join(str(r[k]).ljust(widths[k]) for k in keys))

def _learner_options(f):
    """The learner options simulate and export share (each may also come from --config)."""
    options = [
        click.option("--method", default=None, help="zo-fc (default), fo, zo, head or frozen."),
        click.option("--mode", default=None, help="int8 (default: the device's arithmetic) or float (the reference algorithm)."),
        click.option("--seed", type=int, default=None, help="Seed of the learner's randomness (default 0)."),
        click.option("--q", type=int, default=None, help="Queries (Rademacher directions) per step (default 4)."),
        click.option("--epsilon", type=float, default=None,
                     help="Perturbation size in float units (default: 1e-3 in float mode, one quantization step in int8)."),
        click.option("--lr", type=float, default=None, help="Adapter learning rate (default 0.01)."),
        click.option("--fc-lr", type=float, default=None, help="Classifier learning rate (default 0.05)."),
        click.option("--momentum", type=float, default=None, help="SGD momentum, 0 for none (default 0.9)."),
        click.option("--clip", type=float, default=None, help="Gradient-norm clip of the adapter gradient, 0 for none (default 1.0)."),
        click.option("--epochs", type=int, default=None, help="Epochs per task (default 10)."),
        click.option("--fc-epochs", type=int, default=None, help="zo-fc: epochs the classifier trains before it freezes (default epochs/2)."),
        click.option("--batch-size", type=int, default=None, help="Samples per step (default 48)."),
        click.option("--master", default=None, help="int8 mode: int16 (default) keeps a 16-bit master copy of int8 weights; int8 none."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file with any of these options; flags override it."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--seeds", type=int, default=None, help="Number of seeds, from --seed upwards (default 1).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (default RUN_DIR/METHOD-MODE).")
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--quiet", is_flag=True, help="No progress bar or per-seed lines.")
@click.option("--json", "as_json", is_flag=True, help="Print results.json to stdout.")
@_learner_options
def simulate(run_dir, config_file, out_dir, force, quiet, as_json, **flags):
    """Simulate continual learning on a run folder's scenario; write results.json, plots and the states.

    Trains task after task (task 0 is the pretraining task), evaluates every seen task after each, and
    reports the accuracy matrix, average and last accuracy, forgetting and BWT over the seeds. In int8
    mode every forward pass is the int8 graph, and the state, loss and updates are the device's integers.

    \b
    Examples:
      zo-edge simulate runs/kws --method zo-fc --mode int8 --seeds 3 --out runs/kws/zofc-int8
      zo-edge simulate runs/kws --config sim.toml --q 8      (flags override the file)
      zo-edge compare runs/kws/zofc-int8 runs/kws/fo-int8
    """
    from sim.commands import run_simulate
    from sim.compare import compare_rows, format_table

    results = run_simulate(run_dir, out_dir, flags, config_file, force=force, quiet=quiet or as_json,
                           log=lambda m: click.echo(m, err=True))
    out = results.pop("_out")
    if as_json:
        _echo_json(results)
        return
    click.echo(format_table(compare_rows([{**results, "_source": str(Path(out) / "results.json")}])))
    click.echo(f"wrote {out}/results.json, plots and learned states")


@cli.command()
@click.argument("dirs", nargs=-1, type=click.Path())
@click.option("--markdown", is_flag=True, help="Print a GitHub markdown table.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--plots", "plot_dir", type=click.Path(file_okay=False), help="Also write comparison plots here.")
def compare(dirs, markdown, as_json, plot_dir):
    """One table over several simulate outputs: accuracy, forgetting, BWT, passes per step, state bytes."""
    from sim.commands import run_compare
    from sim.compare import format_markdown, format_table, load_results

    rows = run_compare(dirs)
    if plot_dir:
        from sim.plots import write_plots

        write_plots([load_results(d) for d in dirs], plot_dir)
    if as_json:
        _echo_json(rows)
    else:
        click.echo(format_markdown(rows) if markdown else format_table(rows))


@cli.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--target", default="cortex-m4", show_default=True,
              help="Default core of the Makefile: cortex-m0plus, cortex-m3, cortex-m4 or cortex-m7.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Firmware folder to write.")
@click.option("--samples", default=8, show_default=True, help="Test samples the example app embeds and infers.")
@click.option("--steps", default=10, show_default=True, help="Training steps (full batches of the first task) the app embeds.")
@click.option("--every", default=5, show_default=True, help="The app prints its learned state every N steps.")
@click.option("--force", is_flag=True, help="Replace a non-empty firmware folder.")
@_learner_options
def export_cmd(run_dir, target, out_dir, samples, steps, every, force, config_file, **flags):
    """Write a self-contained C99 firmware folder: model arrays, kernels, the ZO-FC train step, persistence,
    and an example app with a Makefile for host and Cortex-M (QEMU mps2 boards).

    \b
    Example:
      zo-edge export runs/kws --target cortex-m4 --batch-size 8 --out fw/
      make -C fw host && fw/build/host-gcc/zoedge_app
      zo-edge verify-firmware fw/ --board mps2-an386
    """
    from firmware_export.export import export_firmware
    from sim.commands import resolve_config

    flags = {k: v for k, v in flags.items() if v is not None}
    flags.setdefault("mode", "int8")
    config, _ = resolve_config(flags, config_file)
    export_firmware(run_dir, out_dir, config, target=target, samples=samples, steps=steps, every=every,
                    force=force, log=lambda m: click.echo(m, err=True))
    click.echo(f"{out_dir}: see {Path(out_dir) / 'README.md'}; check it with `zo-edge verify-firmware {out_dir}`")


@cli.command("verify-firmware")
@click.argument("fw_dir", type=click.Path(file_okay=False))
@click.option("--board", default="mps2-an386", show_default=True,
              help="mps2-an386 (Cortex-M4F), mps2-an385 (Cortex-M3, soft float), mps2-an500 (Cortex-M7) or host.")
@click.option("--steps", type=int, default=None, help="Training steps to compare (default: all the export embeds).")
@click.option("--timeout", "timeout_s", default=900.0, show_default=True, help="Seconds before a hanging run is killed.")
@click.option("--cc", "compiler", default=None, help="Host C compiler for --board host (default gcc).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (differing_bytes, compared_bytes, steps, instructions, elf).")
def verify_firmware_cmd(fw_dir, board, steps, timeout_s, compiler, as_json):
    """Build the firmware for a board, run it (QEMU or host), and compare every inference output and the
    learned state byte for byte with the simulator; report exact instruction counts on mps2 boards.
    Exit 0 only when nothing differs."""
    from firmware_export.verify import format_report, verify_firmware

    report = verify_firmware(fw_dir, board=board, steps=steps, timeout_s=timeout_s, compiler=compiler,
                             log=(lambda m: None) if as_json else (lambda m: click.echo(m, err=True)))
    if as_json:
        _echo_json(report)
    else:
        click.echo(format_report(report))
    if report["differing_bytes"]:
        sys.exit(1)


@cli.command("profile")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--device", "device_name", default=None,
              help="Device key from the catalogue (e.g. nrf52840, stm32f746, rp2040); an unknown key lists them.")
@click.option("--method", "method", default="zo-fc", show_default=True,
              help="Configuration to check: zo-fc, fo (backprop through the adapter), inference, or all.")
@click.option("--devices", "devices_file", type=click.Path(dir_okay=False),
              help="Your own device catalogue (TOML, the format of zo_edge/devices.toml): adds or overrides devices.")
@click.option("--batch-size", type=int, default=None, help="Samples per step (default 48).")
@click.option("--q", type=int, default=None, help="Queries per step (default 4).")
@click.option("--master", default=None, help="int16 (default) keeps a 16-bit master copy of int8 weights; int8 none.")
@click.option("--momentum", type=float, default=None, help="SGD momentum, 0 for none and no momentum state (default 0.9).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: device, and per configuration ram_bytes, flash_bytes, components, fits.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also write a PNG: stacked bars per configuration, the device's SRAM and flash as lines.")
@click.option("--firmware", "fw_dir", type=click.Path(file_okay=False),
              help="An exported firmware folder (zo-edge export): build it, run it in QEMU and put the measured "
                   "library flash, static RAM and stack high-water mark beside the zo-fc estimate (its learner "
                   "settings replace the flags).")
@click.option("--sweep", is_flag=True,
              help="Instead of one budget: zo-fc RAM, flash and estimated instructions per step for q in 1..16 and "
                   "int8/int16 masters, over RUN_DIR and every --sweep-run (other adapter placements and widths).")
@click.option("--sweep-run", "sweep_runs", multiple=True, type=click.Path(file_okay=False),
              help="Another run folder for --sweep (e.g. built with --adapter-position after or --adapter-width 16).")
@click.option("--results", "results_dirs", multiple=True, type=click.Path(),
              help="simulate output folders: --sweep rows with the same run, q and master show their accuracy.")
def profile_cmd(run_dir, device_name, method, devices_file, batch_size, q, master, momentum, as_json, plot_path,
                fw_dir, sweep, sweep_runs, results_dirs):
    """Estimate RAM and flash of the run's model on a device for inference only, ZO-FC and first-order
    backprop (fo): per component, totals, headroom and a verdict. Learner options are those of
    `zo-edge simulate` (int8 mode).

    \b
    Exit codes:
      0  the selected configuration(s) fit the device's SRAM and flash
      3  a selected configuration does not fit (the verdict says by how much)
      2  an error (unknown device, malformed catalogue, run folder without a model, ...)

    \b
    Examples:
      zo-edge profile runs/kws --device nrf52840
      zo-edge profile runs/kws --device stm32l432kc --method all --plot budget.png
      zo-edge profile runs/kws --device my-board --devices my-devices.toml --json
    """
    from zo_edge.build import load_run
    from zo_edge.devices import get_device, load_catalogue
    from zo_edge.learners import LearnerConfig
    from zo_edge.profile import METHOD_CHOICES, check_plot_path, format_profile, plot_profile
    from zo_edge.profile import profile as run_profile

    if method not in METHOD_CHOICES:
        raise ZoEdgeError(f"unknown method {method!r} (--method); choose one of {', '.join(METHOD_CHOICES)}")
    if plot_path:
        check_plot_path(plot_path)
    catalogue = load_catalogue(extra=devices_file)
    if sweep:
        from sim.compare import load_results
        from zo_edge.sweep import format_sweep, plot_sweep
        from zo_edge.sweep import sweep as run_sweep

        device = get_device(device_name, catalogue) if device_name else None
        flags = {"batch_size": batch_size, "momentum": momentum}
        config = LearnerConfig(method="zo-fc", mode="int8", **{k: v for k, v in flags.items() if v is not None}).check()
        runs = [load_run(d) for d in (run_dir, *sweep_runs)]
        rows = run_sweep(runs, config, device, [load_results(d) for d in results_dirs])
        if plot_path:
            plot_sweep(rows, plot_path, device)
        if as_json:
            _echo_json({"device": device.to_json() if device else None, "rows": rows})
        else:
            click.echo(format_sweep(rows))
            if plot_path:
                click.echo(f"wrote {plot_path}")
        return
    if device_name is None:
        raise ZoEdgeError(f"give --device KEY; known devices: {', '.join(sorted(catalogue))}")
    device = get_device(device_name, catalogue)
    flags = {"batch_size": batch_size, "q": q, "master": master, "momentum": momentum}
    config = LearnerConfig(method="zo-fc", mode="int8", **{k: v for k, v in flags.items() if v is not None}).check()
    measured = None
    if fw_dir:
        from firmware_export.export import learner_config, read_export
        from firmware_export.measure import measure_firmware

        config = learner_config(read_export(fw_dir))
        measured = measure_firmware(fw_dir, log=(lambda m: None) if as_json else (lambda m: click.echo(m, err=True)))
    result = run_profile(load_run(run_dir), config, device, method)
    if measured:
        estimate = result["configurations"]["zo-fc"]
        measured["estimate"] = {"ram_bytes": estimate["ram_bytes"], "flash_bytes": estimate["flash_bytes"]}
        measured["estimate_error"] = {k: round(estimate[k] / measured[k] - 1, 4) for k in ("ram_bytes", "flash_bytes")}
        result["measured"] = measured
    if plot_path:
        plot_profile(result, plot_path)
    if as_json:
        _echo_json(result)
    else:
        click.echo(format_profile(result))
        if measured:
            e = measured["estimate_error"]
            click.echo(f"measured on {measured['board']} (zo-edge library as linked, stack painted and scanned): "
                       f"RAM {measured['ram_bytes']:,} B = static {measured['library']['ram_static_bytes']:,} + stack "
                       f"{measured['stack_high_water_bytes']:,}; flash {measured['flash_bytes']:,} B. zo-fc estimate "
                       f"{measured['estimate']['ram_bytes']:,} B RAM ({e['ram_bytes']:+.1%}), "
                       f"{measured['estimate']['flash_bytes']:,} B flash ({e['flash_bytes']:+.1%})")
        if plot_path:
            click.echo(f"wrote {plot_path}")
    if not result["fits"]:
        sys.exit(3)


@cli.command()
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the demo's run (reused when it is already complete).")
@click.option("--rebuild", is_flag=True, help="Rebuild the demo run even if it exists.")
def demo(out_dir, rebuild):
    """Run the pipeline end to end on the default data (spoken digits, class-incremental)."""
    from zo_edge.demo import run_demo

    run_demo(Path(out_dir), rebuild=rebuild, echo=click.echo)


def main(argv=None) -> None:
    try:
        cli.main(args=argv, prog_name="zo-edge", standalone_mode=False)
    except ZoEdgeError as exc:
        click.echo(f"zo-edge: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("zo-edge: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
