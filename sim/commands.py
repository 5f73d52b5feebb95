"""What ``zo-edge simulate`` and ``zo-edge compare`` do, apart from parsing flags (that is sim/cli.py's)."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

from zo_edge.errors import ZoEdgeError
from zo_edge.learners import LearnerConfig
from zo_edge.learners.config import OptionError, read_toml


def resolve_config(flags: dict, config_file=None) -> tuple[LearnerConfig, list[int]]:
    """Defaults < TOML file < flags given on the command line (None means not given).

    An error in a value names where the value came from: the flag, or the file and its key."""
    from_file = read_toml(config_file) if config_file else {}
    given = {k: v for k, v in flags.items() if v is not None}
    options = {**from_file, **given}
    seeds = options.pop("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, (int, list)) or \
            (isinstance(seeds, int) and not 1 <= seeds <= 1000) or (isinstance(seeds, list) and not seeds) or \
            (isinstance(seeds, list) and not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32
                                                  for s in seeds)):
        where = f"{config_file}: key seeds" if "seeds" in from_file and "seeds" not in given else "--seeds"
        raise ZoEdgeError(f"{where} must be a count 1..1000 or a list of seeds 0..2^32-1 (got {seeds!r})")
    known = {f.name for f in fields(LearnerConfig)}
    try:
        config = LearnerConfig(**{k: v for k, v in options.items() if k in known}).check()
    except OptionError as exc:
        if exc.option in from_file and exc.option not in given:
            raise ZoEdgeError(f"{config_file}: key {exc.option}: {exc.detail}") from None
        raise
    first = config.seed
    seed_list = [first + k for k in range(seeds)] if isinstance(seeds, int) else [int(s) for s in seeds]
    return config, seed_list


def default_out(run_dir, config: LearnerConfig) -> Path:
    """Where simulate writes by default: beside the run folder, never inside it (it is an input)."""
    run_dir = Path(run_dir)
    return run_dir.parent / f"{run_dir.name}-sim" / f"{config.method}-{config.mode}"


def _progress(total: int, quiet: bool):
    """A click progress bar on a terminal; nothing otherwise (per-task lines take its place)."""
    import click

    if quiet or total == 0 or not sys.stderr.isatty():
        return None, None
    bar = click.progressbar(length=total, label="training steps", file=sys.stderr)
    bar.__enter__()
    return bar, lambda: bar.update(1)


def run_simulate(run_dir, out_dir, flags: dict, config_file=None, force=False, quiet=False, log=print,
                 flat=None) -> dict:
    from sim.plots import write_plots
    from sim.runner import simulate, total_steps
    from zo_edge.build import load_run
    from zo_edge.outputs import check_output_folder, write_folder

    run = load_run(run_dir)
    config, seeds = resolve_config(flags, config_file)
    out = Path(out_dir) if out_dir else default_out(run_dir, config)
    inputs = (run_dir, config_file)
    check_output_folder(out, "simulate", force, inputs)  # before minutes of work, not after
    bar, tick = _progress(total_steps(run, config, run.scenario, seeds), quiet)
    task_log = None if quiet or bar is not None else log  # no terminal: one line per task instead of a bar
    try:
        results = simulate(run, config, seeds, progress=tick, log=None if quiet else log, task_log=task_log,
                           flat=flat)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    learners = results.pop("_learners")
    with write_folder(out, "simulate", force, inputs) as tmp:  # an interrupted run never leaves half a folder
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        for seed, learner in zip(seeds, learners):
            learner.save(tmp / f"state_seed{seed}.npz")
        write_plots([results], tmp)
    results["_out"] = str(out)
    return results


def run_compare(paths) -> list[dict]:
    from sim.compare import compare_rows, load_results

    if not paths:
        raise ZoEdgeError("give at least one simulate output folder (or results.json) to compare")
    return compare_rows([load_results(p) for p in paths])
