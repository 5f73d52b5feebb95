"""``zo-edge simulate``, ``zo-edge compare`` and ``zo-edge sweep``: the commands of the simulation package."""

from __future__ import annotations

from pathlib import Path

import click

from zo_edge.cli_options import echo_json, existing_folder, force_option, learner_options, progress_log


@click.command()
@click.argument("run_dir", type=existing_folder())
@click.option("--seeds", type=int, default=None, help="Number of seeds, from --seed upwards (default 1).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Output folder (default: RUN_DIR-sim/METHOD-MODE beside the run folder).")
@force_option("output folder")
@click.option("--quiet", is_flag=True, help="No progress bar or progress lines.")
@click.option("--json", "as_json", is_flag=True, help="Print results.json to stdout.")
@click.option("--flatness", is_flag=True,
              help="After each task, the reference's flatness measure: the loss rise on old tasks under random "
                   "perturbations of the trainable weights (L2 and L-inf, float model).")
@click.option("--flatness-rho", type=click.FloatRange(0, 1, min_open=True), default=0.005, show_default=True,
              help="Perturbation size of --flatness.")
@click.option("--flatness-directions", type=click.IntRange(2, 10000), default=100, show_default=True,
              help="Random directions of --flatness.")
@learner_options
def simulate(run_dir, config_file, out_dir, force, quiet, as_json, flatness, flatness_rho, flatness_directions,
             **flags):
    """Simulate continual learning on a run folder's scenario; write results.json, plots and the states.

    Trains task after task (task 0 is the pretraining task), evaluates every seen task after each, and
    reports the accuracy matrix, average and last accuracy, forgetting and BWT over the seeds. In int8
    mode every forward pass is the int8 graph, and the state, loss and updates are the device's integers.
    On a terminal a progress bar shows the steps; otherwise one line per task goes to stderr.

    \b
    Examples:
      zo-edge simulate runs/kws --method zo-fc --mode int8 --seeds 3 --out runs/kws-sim/zofc-int8
      zo-edge simulate runs/kws --config sim.toml --q 8      (flags override the file)
      zo-edge compare runs/kws-sim/zofc-int8 runs/kws-sim/fo-int8
    """
    from sim.commands import run_simulate
    from sim.compare import compare_rows, format_table

    from sim.runner import Flatness

    flat = Flatness(rho=flatness_rho, directions=flatness_directions) if flatness else None
    results = run_simulate(run_dir, out_dir, flags, config_file, force=force, quiet=quiet or as_json,
                           log=progress_log(quiet or as_json), flat=flat)
    out = results.pop("_out")
    if as_json:
        echo_json(results)
        return
    click.echo(format_table(compare_rows([{**results, "_source": str(Path(out) / "results.json")}])))
    click.echo(f"wrote {out}/results.json, plots and learned states")


@click.command()
@click.argument("dirs", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--markdown", is_flag=True, help="Print a GitHub markdown table.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--plots", "plot_dir", type=click.Path(path_type=Path), help="Also write comparison plots into this new folder.")
@force_option("--plots folder")
def compare(dirs, markdown, as_json, plot_dir, force):
    """One table over several simulate outputs: accuracy, forgetting, BWT, passes per step, state bytes.

    \b
    Example:
      zo-edge compare runs/kws-sim/zo-fc-int8 runs/kws-sim/head-int8 --markdown --plots runs/kws-plots
    """
    from sim.commands import run_compare
    from sim.compare import format_markdown, format_table, load_results
    from zo_edge.outputs import check_output_folder, write_folder

    if plot_dir:
        check_output_folder(plot_dir, "plots", force, dirs, option="--plots")
    rows = run_compare(dirs)
    if plot_dir:
        from sim.plots import write_plots

        with write_folder(plot_dir, "plots", force, dirs, option="--plots") as tmp:
            write_plots([load_results(d) for d in dirs], tmp)
    if as_json:
        echo_json(rows)
    else:
        click.echo(format_markdown(rows) if markdown else format_table(rows))


@click.command()
@click.argument("grid_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Sweep folder: cells/, sweep.json, table.txt, pareto.png, best_sim.toml. An existing sweep "
                   "folder is resumed: only missing cells run.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a pool of worker processes; ray: Ray tasks (pip install 'zo-edge[ray]').")
@click.option("--workers", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Worker processes (local) or CPUs of the local Ray cluster; one core each.")
@click.option("--ray-address", default=None, help="Connect to this Ray cluster instead of starting a local one.")
@click.option("--retries", type=click.IntRange(0, 100), default=1, show_default=True,
              help="How many times a cell whose worker was lost (killed, out of memory) is run again.")
@force_option("sweep folder (start again instead of resuming)")
@click.option("--json", "as_json", is_flag=True, help="Print sweep.json to stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar or progress lines.")
def sweep(grid_file, out_dir, engine, workers, ray_address, retries, force, as_json, quiet):
    """Simulate every cell of a grid, budget it on a device, rank the cells that fit.

    GRID_FILE (TOML) names the runs, the device, the seeds, a [fixed] table of learner options and a
    [grid] table of lists whose product the sweep runs (the README shows one). Each cell is a
    simulate over the seeds plus its RAM, flash and instructions per step on the device; cells are
    kept by a hash of their settings, the run's model and the zo-edge version, so an interrupted or
    repeated sweep runs only the missing ones. A cell that fails is recorded with its error.

    \b
    Examples:
      zo-edge sweep grid.toml --out runs/kws-grid --workers 2
      zo-edge sweep grid.toml --out runs/kws-grid --engine ray --workers 8
      zo-edge simulate runs/kws --config runs/kws-grid/best_sim.toml
    """
    from sim.sweep import run_sweep
    from sim.sweep_report import format_table

    log = progress_log(quiet or as_json)
    bar, first = [None], [None]

    def progress(done, total, entry, elapsed):
        import sys

        if quiet or as_json:
            return
        if first[0] is None:
            first[0] = done - 1  # cells done before this run
        if sys.stderr.isatty():
            if bar[0] is None:  # cells done before this run are not in the bar (nor in its time left)
                label = "cells" if done == 1 else f"cells ({done - 1} of {total} done before)"
                bar[0] = click.progressbar(length=total - done + 1, label=label, file=sys.stderr, show_eta=True)
                bar[0].__enter__()
            bar[0].update(1)
            return
        key = entry["job"]["key"][:16]
        outcome = entry["done"]["cell"]["status"] if entry["done"] else "lost"
        varied = " ".join(f"{k}={v}" for k, v in entry["cell"].varied.items())
        left = elapsed / max(done - first[0], 1) * (total - done)
        log(f"cell {done}/{total} {key} ({Path(entry['cell'].run).name} {varied}): {outcome}; "
            f"{elapsed:.0f} s elapsed, about {left:.0f} s left")

    try:
        summary = run_sweep(grid_file, out_dir, engine=engine, workers=workers, ray_address=ray_address,
                            retries=retries, force=force, log=log, progress=progress)
    finally:
        if bar[0] is not None:
            bar[0].__exit__(None, None, None)
    if as_json:
        echo_json(summary)
        return
    click.echo(format_table(summary))
    best = f"; best fitting configuration: {out_dir}/best_sim.toml" if summary["best"] else "; no cell fits the device"
    click.echo(f"wrote {out_dir}/sweep.json, table.txt, pareto.png{best}")
