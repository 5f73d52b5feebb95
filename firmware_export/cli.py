"""``zo-edge export`` and ``zo-edge verify-firmware``: the commands of the firmware package."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from zo_edge.cli_options import echo_json, existing_folder, force_option, learner_options, progress_log


def _targets():
    from firmware_export.board import TARGETS

    return list(TARGETS)


def _boards():
    from firmware_export.board import BOARDS

    return list(BOARDS)


@click.command("export")
@click.argument("run_dir", type=existing_folder(), required=False)
@click.option("--tflite", "tflite_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Inference firmware for this int8 .tflite instead of a run folder (no train step).")
@click.option("--target", type=click.Choice(_targets()), default="cortex-m4", show_default=True,
              help="Default core of the Makefile.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Firmware folder to write.")
@click.option("--samples", default=8, show_default=True, type=click.IntRange(0, 100000),
              help="Samples the example app embeds and infers: the run's first test samples, or random int8 "
                   "samples with --tflite.")
@click.option("--inputs", "inputs_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --tflite: the samples to embed, an .npy of int8 samples (or float features, quantised "
                   "with the model's input scale) instead of random ones.")
@click.option("--steps", default=10, show_default=True, type=click.IntRange(0, 1000000),
              help="Training steps (full batches of the first task) the app embeds.")
@click.option("--every", default=5, show_default=True, type=click.IntRange(1, 1000000),
              help="The app prints its learned state every N steps (and after the last).")
@force_option("firmware folder")
@learner_options
@click.pass_context
def export_cmd(ctx, run_dir, tflite_file, target, out_dir, samples, inputs_file, steps, every, force, config_file,
               **flags):
    """Write a self-contained C99 firmware folder: model arrays, kernels, the ZO-FC train step, persistence,
    and an example app with a Makefile for host and Cortex-M (QEMU mps2/mps3 boards). With --tflite instead
    of RUN_DIR: the same folder for any supported int8 .tflite, inference only.

    \b
    Examples:
      zo-edge export runs/kws --target cortex-m4 --batch-size 8 --out fw/
      zo-edge export --tflite model.tflite --target cortex-m55 --inputs x.npy --out fw/
      make -C fw host && fw/build/host-gcc/zoedge_app
      zo-edge verify-firmware fw/ --board mps2-an386
    """
    from zo_edge.errors import ZoEdgeError

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    if (run_dir is None) == (tflite_file is None):
        raise ZoEdgeError("give a run folder (RUN_DIR) or --tflite MODEL.tflite, not both and not neither")
    if tflite_file is not None:
        given = [f"--{name}" for name in ("steps", "every") if ctx.get_parameter_source(name).name == "COMMANDLINE"]
        given += [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None]
        given += ["--config"] if config_file is not None else []
        if given:
            raise ZoEdgeError(f"{', '.join(given)} need a run folder: --tflite firmware infers only (build a run with "
                              f"`zo-edge build --tflite {tflite_file} --data DATA.npz` to train)")
        if inputs_file is None and samples == 0:
            raise ZoEdgeError("--samples 0 leaves verify-firmware nothing to compare; embed at least one sample")
        from firmware_export.infer_export import export_inference

        export_inference(tflite_file, out_dir, target=target, samples=samples, inputs_path=inputs_file, force=force,
                         log=log)
    else:
        if inputs_file is not None:
            raise ZoEdgeError("--inputs goes with --tflite; a run folder's firmware embeds its own test samples "
                              "(--samples N)")
        from firmware_export.export import export_firmware
        from sim.commands import resolve_config

        flags = {k: v for k, v in flags.items() if v is not None}
        flags.setdefault("mode", "int8")
        config, _ = resolve_config(flags, config_file)
        export_firmware(run_dir, out_dir, config, target=target, samples=samples, steps=steps, every=every,
                        force=force, inputs=(config_file,), log=log)
    click.echo(f"{out_dir}: see {Path(out_dir) / 'README.md'}; check it with `zo-edge verify-firmware {out_dir}`")


@click.command("verify-firmware")
@click.argument("fw_dir", type=existing_folder("FW_DIR"))
@click.option("--board", type=click.Choice(_boards()), default="mps2-an386", show_default=True,
              help="mps2-an386 (Cortex-M4F), mps2-an385 (Cortex-M3, soft float), mps2-an500 (Cortex-M7) or host.")
@click.option("--steps", type=click.IntRange(0, None), default=None,
              help="Training steps to compare (default: all the export embeds); the state is compared where the "
                   "app prints it (every N steps and after the last).")
@click.option("--timeout", "timeout_s", default=900.0, show_default=True, type=click.FloatRange(1, 86400),
              help="Seconds before a hanging run is killed.")
@click.option("--cc", "compiler", default=None, help="Host C compiler for --board host (default gcc).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (differing_bytes, compared_bytes, steps, instructions, memory).")
def verify_firmware_cmd(fw_dir, board, steps, timeout_s, compiler, as_json):
    """Rebuild the firmware from its sources for a board, run it (QEMU or host), and compare every
    inference output and the learned state byte for byte with the simulator; report exact instruction
    counts on mps2 boards.

    Exit 0 only when bytes were compared and none differ; 1 when some differ; 2 when nothing could be
    compared (e.g. --steps ends before the first state the app prints).
    """
    from firmware_export.verify import format_report, verify_firmware

    report = verify_firmware(fw_dir, board=board, steps=steps, timeout_s=timeout_s, compiler=compiler,
                             log=progress_log(as_json))
    if as_json:
        echo_json(report)
    else:
        click.echo(format_report(report))
    if report["differing_bytes"]:
        sys.exit(1)
