"""``zo-edge simulate`` and ``zo-edge compare``: the commands of the simulation package."""

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
