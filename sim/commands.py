"""What ``zo-edge simulate`` and ``zo-edge compare`` do, apart from parsing flags (that is cli.py's)."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

from zo_edge.errors import ZoEdgeError
from zo_edge.learners import LearnerConfig
from zo_edge.learners.config import read_toml
from zo_edge.staging import staged_folder


def resolve_config(flags: dict, config_file=None) -> tuple[LearnerConfig, list[int]]:
    """Defaults < TOML file < flags given on the command line (None means not given)."""
    options = read_toml(config_file) if config_file else {}
    options.update({k: v for k, v in flags.items() if v is not None})
    seeds = options.pop("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, (int, list)) or \
            (isinstance(seeds, int) and seeds < 1) or (isinstance(seeds, list) and not seeds):
        raise ZoEdgeError(f"--seeds must be a count >= 1 or a list of seeds (got {seeds!r})")
    known = {f.name for f in fields(LearnerConfig)}
    config = LearnerConfig(**{k: v for k, v in options.items() if k in known}).check()
    first = config.seed
    seed_list = [first + k for k in range(seeds)] if isinstance(seeds, int) else [int(s) for s in seeds]
    return config, seed_list


def _progress(total: int, quiet: bool):
    """A click progress bar on a terminal; nothing otherwise."""
    import click

    if quiet or total == 0 or not sys.stderr.isatty():
        return None, None
    bar = click.progressbar(length=total, label="training steps", file=sys.stderr)
    bar.__enter__()
    return bar, lambda: bar.update(1)


def run_simulate(run_dir, out_dir, flags: dict, config_file=None, force=False, quiet=False, log=print) -> dict:
    from sim.plots import write_plots
    from sim.runner import load_scenario, simulate, total_steps
    from zo_edge.build import load_run

    run = load_run(run_dir)
    config, seeds = resolve_config(flags, config_file)
    out = Path(out_dir) if out_dir else Path(run_dir) / f"{config.method}-{config.mode}"
    if out.exists() and any(out.iterdir()) and not force:
        raise ZoEdgeError(f"{out} is not empty; pass --force to replace it or choose another --out")
    num_classes = run["model"]["num_classes"]
    scenario_classes = run["scenario"]["num_classes"]
    if scenario_classes > num_classes:
        raise ZoEdgeError(f"the scenario has {scenario_classes} classes but the classifier holds {num_classes}; "
                          f"rebuild the run with `zo-edge build --out {run_dir} --force`")
    bar, tick = _progress(total_steps(run, config, load_scenario(run), seeds), quiet)
    try:
        results = simulate(run, config, seeds, progress=tick, log=None if quiet else log)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    learners = results.pop("_learners")
    with staged_folder(out) as tmp:  # an interrupted run never leaves half a folder
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
