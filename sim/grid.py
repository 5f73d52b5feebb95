"""The grid file of ``zo-edge sweep``: which runs, which device, which seeds, which settings to cross.

    runs = ["runs/kws", { out = "runs/kws-w16", adapter_width = 16 }]
    device = "stm32l432kc"          # a key of the device catalogue
    devices = "my-parts.toml"       # optional: your own catalogue entries (as `profile --devices`)
    seeds = 3                       # a count from 0, or a list [0, 1, 2]

    [fixed]                         # learner options every cell shares (the keys of simulate --config)
    mode = "int8"
    epochs = 10

    [grid]                          # lists of values; the sweep runs their product, for every run
    method = ["zo-fc", "head"]
    q = [1, 4, 16]
    master = ["int8", "int16"]

A run is a run folder, or a table of ``zo-edge build`` settings with the folder as ``out``: built
first when it does not exist, used when it does and was built with those settings. Paths are
relative to the grid file. Everything is checked before any cell runs; a key no learner has, an
empty list or an option both fixed and crossed is a one-line error naming the file and the key.
A combination of valid values that a learner refuses (``fc_epochs`` over ``epochs``) is not: that
cell fails with its message and the others run.
"""

from __future__ import annotations

import itertools
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from zo_edge.errors import ZoEdgeError
from zo_edge.learners import LearnerConfig

BUILD_KEYS = ("dataset", "scenario", "seed", "arch", "adapter_position", "adapter_width", "epochs",
              "base_classes", "classes_per_task", "tasks", "data")
OPTION_KEYS = tuple(f.name for f in fields(LearnerConfig) if f.name != "seed")  # seeds are the grid's own
TOP_KEYS = ("runs", "device", "devices", "seeds", "fixed", "grid")


@dataclass(frozen=True)
class RunSpec:
    path: Path
    build: dict | None = None  # zo-edge build settings, or None for an existing folder


@dataclass(frozen=True)
class Cell:
    """One configuration on one run: a simulate over every seed, and its budget."""
    run: Path
    options: dict  # learner options: fixed, then this cell's grid values
    varied: dict  # the grid values alone (what tells cells apart in a table)
    seeds: tuple


@dataclass(frozen=True)
class Grid:
    path: Path
    runs: tuple
    device: str
    devices_file: Path | None
    seeds: tuple
    fixed: dict
    axes: dict = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        names = list(self.axes)
        out = []
        for run in self.runs:
            for values in itertools.product(*(self.axes[n] for n in names)):
                varied = dict(zip(names, values))
                out.append(Cell(run.path, {**self.fixed, **varied}, varied, self.seeds))
        return out


def _error(path, detail: str) -> ZoEdgeError:
    return ZoEdgeError(f"grid file {path}: {detail}")


def _options(path, table, name: str) -> dict:
    if not isinstance(table, dict):
        raise _error(path, f"[{name}] must be a table of learner options")
    out = {}
    for key, value in table.items():
        option = key.replace("-", "_")
        if option == "seed":
            raise _error(path, f"[{name}] key seed: give the seeds as the top-level key seeds = N or [list]")
        if option not in OPTION_KEYS:
            raise _error(path, f"[{name}] has unknown option {key!r}; known: {', '.join(sorted(OPTION_KEYS))}")
        out[option] = value
    return out


def _seeds(path, seeds) -> tuple:
    if isinstance(seeds, int) and not isinstance(seeds, bool) and 1 <= seeds <= 1000:
        return tuple(range(seeds))
    if isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32
                                                  for s in seeds) and len(set(seeds)) == len(seeds):
        return tuple(seeds)
    raise _error(path, f"seeds must be a count 1..1000 or a list of distinct seeds 0..2^32-1 (got {seeds!r})")


def _beside(base: Path, relative: str) -> Path:
    """A path of the grid file, as seen from here ("benchmarks/../runs/kws" is "runs/kws")."""
    return Path(os.path.normpath(base / relative))


def _run(path, base: Path, entry, k: int) -> RunSpec:
    if isinstance(entry, str):
        return RunSpec(_beside(base, entry))
    if isinstance(entry, dict):
        if not isinstance(entry.get("out"), str):
            raise _error(path, f"runs[{k}] is a table of build settings and needs out = \"FOLDER\"")
        unknown = sorted(set(entry) - {"out", *BUILD_KEYS})
        if unknown:
            raise _error(path, f"runs[{k}] has unknown build setting {unknown[0]!r}; known: {', '.join(BUILD_KEYS)}")
        build = {key: value for key, value in entry.items() if key != "out"}
        if isinstance(build.get("data"), str):
            build["data"] = str(_beside(base, build["data"]))
        return RunSpec(_beside(base, entry["out"]), build)
    raise _error(path, f"runs[{k}] must be a run folder or a table of build settings (got {entry!r})")


def read_grid(path) -> Grid:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ZoEdgeError(f"grid file {path} does not exist") from None
    except IsADirectoryError:
        raise ZoEdgeError(f"grid file {path} is a folder; give a .toml file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ZoEdgeError(f"grid file {path} is not valid TOML: {' '.join(str(exc).split())}") from None
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise _error(path, f"unknown key {unknown[0]!r}; a grid has {', '.join(TOP_KEYS)}")
    base = path.parent
    runs = data.get("runs")
    if isinstance(runs, str):
        runs = [runs]
    if not isinstance(runs, list) or not runs:
        raise _error(path, "give runs = [\"RUN_DIR\", ...]: the run folders (or build settings) to sweep")
    specs = tuple(_run(path, base, entry, k) for k, entry in enumerate(runs))
    if len({s.path.resolve() for s in specs}) != len(specs):
        raise _error(path, "runs names one folder twice")
    device = data.get("device")
    if not isinstance(device, str):
        raise _error(path, "give device = \"KEY\", a key of the device catalogue (zo-edge profile lists them)")
    devices = data.get("devices")
    if devices is not None and not isinstance(devices, str):
        raise _error(path, "devices must be the path of a device catalogue file")
    fixed = _options(path, data.get("fixed", {}), "fixed")
    axes = _options(path, data.get("grid", {}), "grid")
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise _error(path, f"[grid] {name} must be a non-empty list of values (got {values!r})")
        if len({repr(v) for v in values}) != len(values):
            raise _error(path, f"[grid] {name} lists a value twice")
        if name in fixed:
            raise _error(path, f"{name} is both in [fixed] and in [grid]; keep one")
    return Grid(path, specs, device, _beside(base, devices) if devices else None, _seeds(path, data.get("seeds", 1)),
                fixed, axes)
