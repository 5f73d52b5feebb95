"""The jobs of the command line as Python calls, for notebooks and scripts (``import zo_edge``).

Each call is the command of the same name, with the same checks, one-line ``ZoEdgeError`` messages
and output rules (nothing the caller had is overwritten; ``force`` replaces only what zo-edge wrote)::

    import zo_edge

    run = zo_edge.build_run("runs/mine", model="my.keras", data="my.npz", adapter_at=["conv3"],
                            tasks="0,1,2,3;4,5;6,7")                      # zo-edge build
    results = zo_edge.simulate(run, method="zo-fc", seeds=3, out="runs/mine-sim/zo-fc")   # simulate
    zo_edge.export(run, "fw", target="cortex-m4", batch_size=8, q=2, steps=100)           # export
    report = zo_edge.verify_firmware("fw", board="mps2-an386")                             # verify-firmware
    budget = zo_edge.profile(run, device="stm32l432kc")                                    # profile

Learner options (``method``, ``mode``, ``q``, ``epsilon``, ``lr``, ``fc_lr``, ``momentum``, ``clip``,
``epochs``, ``fc_epochs``, ``batch_size``, ``master``, ``seed``) are keyword arguments, as the flags of
``zo-edge simulate``; a run is a ``RunFolder`` or the path of one.
"""

from __future__ import annotations

from pathlib import Path

from zo_edge.build import build_run
from zo_edge.run_folder import RunFolder, load_run

__all__ = ["build_run", "load_run", "simulate", "export", "verify_firmware", "profile", "RunFolder"]


def _run(run) -> RunFolder:
    return run if isinstance(run, RunFolder) else load_run(run)


def _config(options: dict):
    from sim.commands import resolve_config

    config, seeds = resolve_config(options)
    return config, seeds


def simulate(run, *, seeds: int | list = 1, out=None, force: bool = False, progress=None, **options) -> dict:
    """Continual learning over the run's scenario (``zo-edge simulate``): the results.json content.

    ``out``: also write the results folder there (results.json, plots, learned states). ``progress``: a
    callable that hears one line per task."""
    from sim.commands import run_simulate
    from sim.runner import simulate as run_seeds

    run = _run(run)
    if out is not None:
        results = run_simulate(run.path, out, {**options, "seeds": seeds}, force=force, quiet=progress is None,
                               log=progress or (lambda m: None))
        results.pop("_out", None)
        return results
    config, seed_list = _config({**options, "seeds": seeds})
    results = run_seeds(run, config, seed_list, task_log=progress)
    results.pop("_learners")
    return results


def export(run, out, *, target: str = "cortex-m4", samples: int = 8, steps: int = 10, every: int = 5,
           force: bool = False, **options) -> dict:
    """The firmware folder (``zo-edge export``); returns its export.json content."""
    from firmware_export.export import export_firmware

    options.setdefault("mode", "int8")
    config, _ = _config(options)
    return export_firmware(_run(run).path, out, config, target=target, samples=samples, steps=steps, every=every,
                           force=force, log=lambda m: None)


def verify_firmware(fw_dir, *, board: str = "mps2-an386", steps: int | None = None, timeout_s: float = 900) -> dict:
    """Build, run and compare an exported firmware with the simulator (``zo-edge verify-firmware``)."""
    from firmware_export.verify import verify_firmware as verify

    return verify(Path(fw_dir), board=board, steps=steps, timeout_s=timeout_s, log=lambda m: None)


def profile(run, *, device: str, method: str = "all", devices_file=None, **options) -> dict:
    """RAM and flash budgets on a device (``zo-edge profile``); ``result["fits"]`` says whether it fits."""
    from zo_edge.devices import get_device, load_catalogue
    from zo_edge.learners import LearnerConfig
    from zo_edge.profile import profile as budget

    config = LearnerConfig(method="zo-fc", mode="int8", **options).check()
    return budget(_run(run), config, get_device(device, load_catalogue(extra=devices_file)), method)
