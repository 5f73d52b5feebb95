"""``zo-edge sweep``: every cell of a grid (``sim.grid``) simulated, budgeted on a device and ranked.

A cell is one configuration on one run: ``sim.runner.simulate`` over the grid's seeds, and the
budget of that configuration on the device (``zo_edge.sweep.budget``). A cell's result is a pure
function of its settings, its seeds and the run's model, so it is kept under

    key = SHA-256 of (the resolved learner settings, the seeds, the model's SHA-256 and the run's
          scenario and plan as run.json records them, the zo-edge version)

in ``DIR/cells/<key[:16]>/`` (``cell.json``, ``results.json``; each written whole by
``zo_edge.outputs.write_folder``, so Ctrl-C never leaves half a cell). Running the sweep again on the
same ``DIR`` computes only the cells that are missing; cells of settings no longer in the grid stay
on disk but out of ``sweep.json``. The frozen prefix is computed once per run and data set for the
whole sweep: ``DIR/prefix-cache/`` (``zo_edge.prefix_cache``) is shared by every worker.

Engines run the same function, ``run_cell``, on plain-data jobs: ``local`` in a pool of worker
processes on this machine, ``ray`` as Ray tasks (a local cluster, or ``--ray-address``). Workers
return results; this process writes the cell folders, so remote workers need no shared disk (only
the prefix cache is written by the workers, each node into its own copy of the path). A cell whose settings
a learner refuses fails with that one-line message, is recorded, and the sweep goes on; a cell whose
worker is lost (killed, out of memory) is retried ``retries`` times and then recorded as lost (not
kept on disk: a rerun tries it again).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from zo_edge.errors import ZoEdgeError

FORMAT = "zo-edge/sweep@1"
CELL_FORMAT = "zo-edge/sweep-cell@1"
SUMMARY_FILES = ("sweep.json", "table.txt", "pareto.png", "best_sim.toml")
METRICS = ("average_accuracy", "last_accuracy", "forgetting", "bwt")


# -- one cell, in a worker ----------------------------------------------------------------------------
_RUNS: dict = {}
_CACHES: dict = {}


def run_cell(job: dict) -> dict:
    """Simulate one cell (a plain-data ``job``); returns {"status": "ok", "results": ...} or
    {"status": "failed", "error": one line}. Runs in a worker process; nothing here writes the cell."""
    from sim.commands import resolve_config
    from sim.runner import simulate
    from zo_edge.prefix_cache import PrefixCache
    from zo_edge.run_folder import load_run

    try:
        if job["run"] not in _RUNS:  # a worker keeps what it loaded for its next cells
            _RUNS[job["run"]] = load_run(job["run"])
        if job["cache"] not in _CACHES:
            _CACHES[job["cache"]] = PrefixCache(job["cache"])
        run, cache = _RUNS[job["run"]], _CACHES[job["cache"]]
        config, seeds = resolve_config({**job["options"], "seeds": list(job["seeds"])})
        results = simulate(run, config, seeds, prefix_cache=cache)
    except ZoEdgeError as exc:
        return {"status": "failed", "error": " ".join(str(exc).split())}
    except Exception as exc:  # noqa: BLE001 - a bug in one cell must not stop the others; it is recorded
        return {"status": "failed", "error": f"internal error {type(exc).__name__}: {' '.join(str(exc).split())} "
                                             "(please report it with this cell's settings)"}
    results.pop("_learners")
    return {"status": "ok", "results": results}


# -- keys and jobs ------------------------------------------------------------------------------------
def model_identity(run) -> dict:
    """What of a run a cell's result depends on: its model's bytes, its scenario and its plan."""
    return {"model_sha256": hashlib.sha256(run.tflite).hexdigest(), "settings": run.settings,
            "data": run.meta.get("data"), "plan": run.meta.get("plan")}


def cell_key(settings: dict, seeds, identity: dict) -> str:
    import zo_edge

    blob = json.dumps({"settings": settings, "seeds": list(seeds), "run": identity, "zo_edge": zo_edge.__version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def resolved_settings(cell):
    """(LearnerConfig, its settings as keyed, None), or (None, the raw options, the one-line refusal)
    when a learner refuses the combination."""
    from sim.commands import resolve_config

    try:
        config, _ = resolve_config(dict(cell.options))
    except ZoEdgeError as exc:
        return None, dict(cell.options), " ".join(str(exc).split())
    settings = config.to_json()
    settings.pop("seed")
    return config, settings, None


# -- the cell folders ----------------------------------------------------------------------------------
def cell_dir(out: Path, key: str) -> Path:
    return out / "cells" / key[:16]


def read_cell(out: Path, key: str) -> dict | None:
    """A finished cell ({"cell": cell.json, "results": results.json or None}), or None."""
    from zo_edge.outputs import read_marker

    folder = cell_dir(out, key)
    marker = read_marker(folder)
    if marker is None or marker.get("kind") != "sweep-cell":
        return None
    try:
        cell = json.loads((folder / "cell.json").read_text())
        results = json.loads((folder / "results.json").read_text()) if cell.get("status") == "ok" else None
    except (OSError, ValueError):
        return None
    if cell.get("format") != CELL_FORMAT or cell.get("key") != key:
        return None
    return {"cell": cell, "results": results}


def write_cell(out: Path, job: dict, outcome: dict) -> None:
    from zo_edge.outputs import write_folder

    cell = {"format": CELL_FORMAT, "key": job["key"], "run": job["run"], "settings": job["settings"],
            "seeds": list(job["seeds"]), "status": outcome["status"], "error": outcome.get("error")}
    with write_folder(cell_dir(out, job["key"]), "sweep-cell", force=True) as tmp:
        (tmp / "cell.json").write_text(json.dumps(cell, indent=1) + "\n")
        if outcome["status"] == "ok":
            (tmp / "results.json").write_text(json.dumps(outcome["results"], indent=1) + "\n")


# -- the sweep ----------------------------------------------------------------------------------------
def prepare_runs(grid, log) -> dict:
    """Every run of the grid, loaded; runs given as build settings are built first when missing."""
    from zo_edge.build import build_run
    from zo_edge.run_folder import load_run

    runs = {}
    for spec in grid.runs:
        if spec.build is not None and not spec.path.exists():
            log(f"building {spec.path} ({', '.join(f'{k}={v}' for k, v in spec.build.items()) or 'defaults'})")
            build_run(spec.path, log=None, **spec.build)
        run = load_run(spec.path)
        for key, value in (spec.build or {}).items():
            if key != "data" and run.settings.get(key) != value:
                raise ZoEdgeError(f"grid file {grid.path}: run {spec.path} exists with {key} = "
                                  f"{run.settings.get(key)!r}, not {value!r}; remove it or choose another out")
        runs[spec.path] = run
    return runs


def plan_cells(grid, runs, out: Path) -> list[dict]:
    """One entry per cell in grid order: its job (what a worker needs) and whether it is already done."""
    identities = {path: model_identity(run) for path, run in runs.items()}
    entries = []
    for cell in grid.cells():
        config, settings, refusal = resolved_settings(cell)
        key = cell_key(settings, cell.seeds, identities[cell.run])
        job = {"key": key, "run": str(Path(cell.run).resolve()), "options": dict(cell.options),
               "seeds": list(cell.seeds), "settings": settings, "cache": str((out / "prefix-cache").resolve())}
        entries.append({"cell": cell, "config": config, "refusal": refusal, "job": job, "done": read_cell(out, key)})
    return entries


def run_sweep(grid_path, out, engine: str = "local", workers: int = 1, ray_address=None, retries: int = 1,
              force: bool = False, log=print, progress=None) -> dict:
    """Run (or resume) a sweep; returns the sweep.json content. ``progress(done, total, entry)`` hears
    every finished cell; ``log`` one line per notable event."""
    from sim import sweep_engines
    from sim.grid import read_grid
    from zo_edge.devices import get_device, load_catalogue
    from zo_edge.outputs import resume_folder

    grid = read_grid(grid_path)
    device = get_device(grid.device, load_catalogue(extra=grid.devices_file))
    out = Path(out)
    inputs = (grid_path, grid.devices_file, *(spec.path for spec in grid.runs))
    resumed = resume_folder(out, "sweep", force, inputs, rewritten=SUMMARY_FILES)
    runs = prepare_runs(grid, log)
    entries = plan_cells(grid, runs, out)
    todo = [e for e in entries if e["done"] is None]
    if resumed:
        log(f"resuming {out}: {len(entries) - len(todo)} of {len(entries)} cells done, {len(todo)} to run")
    by_key = {e["job"]["key"]: e for e in entries}
    lost = {}
    started = time.perf_counter()
    finished = len(entries) - len(todo)

    def done(job: dict, outcome: dict) -> None:
        nonlocal finished
        entry = by_key[job["key"]]
        if outcome["status"] == "lost":
            lost[job["key"]] = outcome["error"]
        else:
            write_cell(out, job, outcome)
            entry["done"] = read_cell(out, job["key"])
        finished += 1
        if progress:
            progress(finished, len(entries), entry, time.perf_counter() - started)

    for entry in todo:  # settings a learner refuses fail here: no worker needed
        if entry["refusal"]:
            done(entry["job"], {"status": "failed", "error": entry["refusal"]})
    jobs = [e["job"] for e in todo if e["config"] is not None]
    if jobs:
        sweep_engines.make_engine(engine, workers, ray_address, retries).run(run_cell, jobs, done)
    from sim.sweep_report import summarise, write_summary

    summary = summarise(grid, device, runs, entries, lost, out)
    write_summary(summary, out)
    return summary

