"""The core's commands: data, build, inspect, profile, demo, and the engine tools infer and verify.

Each is a thin layer: parse, check the outputs may be written (``zo_edge.outputs``), call the module
that does the job, print. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from zo_edge.cli_options import echo_json, existing_folder, force_option, load_npy, progress_log
from zo_edge.errors import ZoEdgeError


# -- data -----------------------------------------------------------------------------------------
@click.group()
def data():
    """Bundled datasets and continual-learning scenarios (nothing is downloaded)."""


@data.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def data_list(as_json):
    """Datasets and scenarios with their sizes."""
    from zo_edge.data import catalogue

    rows = catalogue()
    if as_json:
        echo_json(rows)
        return
    keys = list(rows[0].keys())
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    click.echo("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        click.echo("  ".join(str(r[k]).ljust(widths[k]) for k in keys))


# -- build ----------------------------------------------------------------------------------------
@data.command("check")
@click.argument("npz", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def data_check(npz, as_json):
    """Check a data file for `zo-edge build --data` and summarise it: sizes, classes, domains, value range.

    Exit 0 when the file is usable; a problem is one line naming the array and the fix.
    """
    from zo_edge.data import describe_dataset, format_description, load_npz

    summary = describe_dataset(load_npz(npz))
    if as_json:
        echo_json(summary)
    else:
        click.echo(format_description(summary))


def _csv(value):
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.command()
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Run folder to create.")
@click.option("--dataset", default=None, help="Bundled dataset (see `zo-edge data list`; default spoken-digits).")
@click.option("--data", "data_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your data as .npz (x_train, y_train, x_test, y_test[, class_names, domain_train, domain_test]); "
                   "check it with `zo-edge data check`.")
@click.option("--model", "model_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your trained Keras model (.keras): adapters and a resized classifier are attached, then int8.")
@click.option("--tflite", "tflite_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your deployed int8 .tflite (no float original): adapters inserted as int8 ops, the classifier "
                   "replaced; see `zo-edge inspect`.")
@click.option("--arch", default=None, help="Zoo model to train from scratch (default: the bundled dataset's own).")
@click.option("--scenario", type=click.Choice(["class-il", "domain-il"]), default="class-il", show_default=True,
              help="Continual-learning scenario (domain-il needs domain arrays in your data).")
@click.option("--base-classes", type=click.IntRange(2, None), default=None,
              help="class-il: classes of the pretraining task (default 4).")
@click.option("--task-classes", type=click.IntRange(1, None), default=None,
              help="class-il: new classes per task (default 2).")
@click.option("--tasks", default=None, help='class-il: explicit tasks, e.g. "0,1,2,3;4,5;6,7" (the first group is the base).')
@click.option("--adapter-at", default=None,
              help="--model: layer names, --tflite: tensor names or indices, comma-separated (default: the "
                   "classifier's input).")
@click.option("--adapter-position", default=None,
              help="Zoo: the block(s) an adapter runs beside: last (default), after, or block indices '0,2,3'.")
@click.option("--adapter-width", default=8, show_default=True, type=click.IntRange(1, 4096),
              help="Adapter bottleneck channels.")
@click.option("--classifier", default=None,
              help="--model: the Dense layer (default the last); --tflite: the FULLY_CONNECTED op, by index or "
                   "output tensor name (default the last).")
@click.option("--epochs", default=None, type=click.IntRange(0, 100000),
              help="Zoo: pretraining epochs (default the model's own); --model: fine-tune the whole model on the "
                   "base task first (default 0: take it as given and fit only the classifier).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Seed for the split, class order, initialisation and training.")
@force_option("run folder")
def build(out_dir, dataset, data_file, model_file, tflite_file, arch, scenario, base_classes, task_classes, tasks,
          adapter_at, adapter_position, adapter_width, classifier, epochs, seed, force):
    """Make a run folder: a model with adapters and a classifier, quantised to int8, on a data stream.

    Three sources of the model: the zoo (trained here), your Keras model (--model) or your deployed int8
    .tflite (--tflite); two of the data: a bundled set (--dataset) or your npz (--data). The folder holds the
    int8 model, the float one when there is one, the quantisation report, your data as validated and
    run.json with every setting and the adaptation plan.

    \b
    Examples:
      zo-edge build --out runs/kws                                   (the default: DS-CNN, spoken digits)
      zo-edge build --model my.keras --data my.npz --out runs/mine --adapter-at conv3,pool --tasks "0,1,2;3,4"
      zo-edge inspect my_int8.tflite                                 (choose tensors for --adapter-at)
      zo-edge build --tflite my_int8.tflite --data my.npz --out runs/mine8 --adapter-at 12,20
    """
    from zo_edge.build import build_run

    position = _csv(adapter_position) if adapter_position and "," in adapter_position else adapter_position
    at = _csv(adapter_at)
    run = build_run(out_dir, dataset=dataset, data=data_file, model=model_file, tflite=tflite_file, arch=arch,
                    scenario=scenario, base_classes=base_classes, classes_per_task=task_classes, tasks=tasks,
                    adapter_position=position, adapter_at=at, adapter_width=adapter_width, classifier=classifier,
                    epochs=epochs, seed=seed, force=force, log=lambda msg: click.echo(msg, err=True))
    plan = run.plan
    click.echo(f"{out_dir}: {run.settings.get('arch') or run.settings.get('source')} on {run.settings['dataset']}/"
               f"{run.settings['scenario']}, {len(plan.adapters)} adapter(s), {run.num_classes} classes; see "
               "run.json and quantization.txt")


# -- inspect --------------------------------------------------------------------------------------
@click.command("inspect")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (ops, tensors, candidates).")
def inspect_cmd(model, as_json):
    """List an int8 .tflite's ops and tensors, the tensors that can take an adapter and the classifier.

    \b
    Choose for `zo-edge build --tflite MODEL`:
      --adapter-at TENSOR[,TENSOR...]   by index or name (the "adapter" column)
      --classifier OP                   a FULLY_CONNECTED op (default: the last one)
    """
    from zo_edge.inspect import format_inspection, inspect_model

    info = inspect_model(model.read_bytes(), source=str(model))
    if as_json:
        echo_json(info)
    else:
        click.echo(format_inspection(info), nl=False)


# -- engine tools ---------------------------------------------------------------------------------
@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--inputs", "inputs_path", required=True, type=click.Path(path_type=Path),
              help="int8 batch [N, ...input shape] as .npy.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              help="Where to save the outputs (.npy; .npz for several outputs).")
@force_option("output file")
def infer(model, inputs_path, out_path, force):
    """Run an int8 .tflite on a batch with the numpy engine (TFLM's arithmetic)."""
    import numpy as np

    from zo_edge.engine import Engine
    from zo_edge.outputs import check_output_file, write_file
    from zo_edge.qgraph import QGraph

    inputs = (model, inputs_path)
    check_output_file(out_path, force, inputs, suffixes=(".npy", ".npz"))
    graph = QGraph.load(model)
    engine = Engine(graph)
    x = load_npy(inputs_path, "--inputs")
    outputs, _ = engine.run(x)
    if len(outputs) > 1 and out_path.suffix != ".npz":
        raise ZoEdgeError(f"{model} has {len(outputs)} outputs; give --out a .npz name to save them all")
    with write_file(out_path, force, inputs, suffixes=(".npy", ".npz")) as tmp:
        with open(tmp, "wb") as f:
            if out_path.suffix == ".npz":
                np.savez(f, **{f"output_{k}": y for k, y in enumerate(outputs)})
            else:
                np.save(f, outputs[0])
    click.echo(f"{x.shape[0]} samples -> {out_path} ({', '.join(str(list(y.shape)) for y in outputs)})")


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--inputs", "inputs_path", type=click.Path(path_type=Path), help="int8 batch [N, ...input shape] as .npy.")
@click.option("--random", "random_n", type=click.IntRange(1, 100000), help="Use N random int8 samples instead of --inputs.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1), help="Seed for --random.")
@click.option("--intermediates", is_flag=True, help="Compare every intermediate tensor too.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (differing_bytes, total_bytes, per_tensor).")
def verify(model, inputs_path, random_n, seed, intermediates, as_json):
    """Check the engine against the TFLM interpreter, byte for byte.

    Exit status 0 only when no byte differs (and some were compared); 1 when some differ.
    """
    from zo_edge.qgraph import QGraph
    from zo_edge.verify import compare_with_tflm, random_inputs

    if (inputs_path is None) == (random_n is None):
        raise ZoEdgeError("give exactly one of --inputs X.npy or --random N")
    graph = QGraph.load(model)
    inputs = random_inputs(graph, random_n, seed) if random_n is not None else [load_npy(inputs_path, "--inputs")]
    report = compare_with_tflm(graph, inputs, intermediates=intermediates)
    if report["total_bytes"] == 0:
        raise ZoEdgeError(f"nothing was compared ({report['samples']} samples, 0 output bytes); give at least one sample")
    if as_json:
        echo_json(report)
    else:
        for row in report["per_tensor"]:
            if row["kind"] == "output" or row["differing_bytes"]:
                click.echo(f"{row['kind']:12s} {row['differing_bytes']:8d} / {row['total_bytes']:<8d} {row['name']}")
        verdict = "identical" if report["differing_bytes"] == 0 else "DIFFERENT"
        click.echo(f"{report['samples']} samples: {report['differing_bytes']} of {report['total_bytes']} output bytes differ ({verdict})")
    if report["differing_bytes"] or any(r["differing_bytes"] for r in report["per_tensor"]):
        sys.exit(1)


# -- profile --------------------------------------------------------------------------------------
@click.command("profile")
@click.argument("run_dir", type=existing_folder())
@click.option("--device", "device_name", default=None,
              help="Device key from the catalogue (e.g. nrf52840, stm32f746, rp2040); an unknown key lists them.")
@click.option("--method", "method", type=click.Choice(["zo-fc", "fo", "inference", "all"]), default="zo-fc",
              show_default=True, help="Configuration to check: fo is backprop through the adapter.")
@click.option("--devices", "devices_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your own device catalogue (TOML, the format of zo_edge/devices.toml): adds or overrides devices.")
@click.option("--batch-size", type=click.IntRange(1, 65536), default=None, help="Samples per step (default 48).")
@click.option("--q", type=click.IntRange(1, 1024), default=None, help="Queries per step (default 4).")
@click.option("--master", type=click.Choice(["int16", "int8"]), default=None,
              help="int16 (default) keeps a 16-bit master copy of int8 weights; int8 none.")
@click.option("--momentum", type=float, default=None, help="SGD momentum, 0 for none and no momentum state (default 0.9).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: device, and per configuration ram_bytes, flash_bytes, components, fits.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path),
              help="Also write a PNG: stacked bars per configuration, the device's SRAM and flash as lines.")
@force_option("--plot file")
@click.option("--firmware", "fw_dir", type=existing_folder("FW_DIR"),
              help="An exported firmware folder (zo-edge export): build it, run it in QEMU and put the measured "
                   "library flash, static RAM and stack high-water mark beside the zo-fc estimate (its learner "
                   "settings replace the flags).")
@click.option("--sweep", is_flag=True,
              help="Instead of one budget: zo-fc RAM, flash and estimated instructions per step for q in 1..16 and "
                   "int8/int16 masters, over RUN_DIR and every --sweep-run (other adapter placements and widths).")
@click.option("--sweep-run", "sweep_runs", multiple=True, type=existing_folder(),
              help="Another run folder for --sweep (e.g. built with --adapter-position after or --adapter-width 16).")
@click.option("--results", "results_dirs", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="simulate output folders: --sweep rows with the same run, q and master show their accuracy.")
def profile_cmd(run_dir, device_name, method, devices_file, batch_size, q, master, momentum, as_json, plot_path,
                force, fw_dir, sweep, sweep_runs, results_dirs):
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
    from zo_edge.outputs import check_output_file, write_file

    inputs = (run_dir, fw_dir, devices_file, *sweep_runs, *results_dirs)
    if plot_path:
        check_output_file(plot_path, force, inputs, option="--plot", suffixes=(".png",))
    catalogue = load_catalogue(extra=devices_file)
    flags = {"batch_size": batch_size, "q": q, "master": master, "momentum": momentum}
    config = LearnerConfig(method="zo-fc", mode="int8", **{k: v for k, v in flags.items() if v is not None}).check()
    if sweep:
        from sim.compare import load_results
        from zo_edge.sweep import format_sweep, plot_sweep
        from zo_edge.sweep import sweep as run_sweep

        device = get_device(device_name, catalogue) if device_name else None
        runs = [load_run(d) for d in (run_dir, *sweep_runs)]
        rows = run_sweep(runs, config, device, [load_results(d) for d in results_dirs])
        if plot_path:
            with write_file(plot_path, force, inputs, option="--plot", suffixes=(".png",)) as tmp:
                plot_sweep(rows, tmp, device)
        if as_json:
            echo_json({"device": device.to_json() if device else None, "rows": rows})
        else:
            click.echo(format_sweep(rows))
            if plot_path:
                click.echo(f"wrote {plot_path}")
        return
    if device_name is None:
        raise ZoEdgeError(f"give --device KEY; known devices: {', '.join(sorted(catalogue))}")
    device = get_device(device_name, catalogue)
    from zo_edge.profile import attach_measured, format_measured, format_profile, plot_profile
    from zo_edge.profile import profile as run_profile

    measured = None
    if fw_dir:
        from firmware_export.export import learner_config, read_export
        from firmware_export.measure import measure_firmware

        config = learner_config(read_export(fw_dir))
        measured = measure_firmware(fw_dir, log=progress_log(as_json))
    result = run_profile(load_run(run_dir), config, device, method)
    if measured:
        attach_measured(result, measured)
    if plot_path:
        with write_file(plot_path, force, inputs, option="--plot", suffixes=(".png",)) as tmp:
            plot_profile(result, tmp)
    if as_json:
        echo_json(result)
    else:
        click.echo(format_profile(result))
        if measured:
            click.echo(format_measured(result["measured"]))
        if plot_path:
            click.echo(f"wrote {plot_path}")
    if not result["fits"]:
        sys.exit(3)


# -- demo -----------------------------------------------------------------------------------------
@click.command()
@click.option("--out", "out_dir", default=None, type=click.Path(path_type=Path),
              help="Folder for everything the demo writes (default: runs/demo, or runs/demo-2, -3, ... when "
                   "that exists: a fresh folder per run).")
@force_option("demo folder (one an earlier demo wrote)")
def demo(out_dir, force):
    """Run the pipeline end to end on the default data (spoken digits, class-incremental).

    Builds the default model, checks the engine against TFLM, simulates ZO-FC and its baselines,
    exports the firmware and checks it on the host and, when the Arm toolchain is installed, in QEMU,
    and prints the RAM/flash budget on a 64 KiB part.
    """
    from zo_edge.demo import run_demo
    from zo_edge.outputs import first_free

    run_demo(Path(out_dir) if out_dir else first_free(Path("runs") / "demo"), force=force, echo=click.echo)
