"""What a run folder records about its data, and how to get exactly the same tasks back from it.

A spec is JSON: ``{"format": "zo-edge/data@1", "dataset": {...}, "scenario": {...}}``.

* The dataset part is a recipe for a bundled set (name, seed, test fraction, frames) or a file:
  ``{"origin": "npz", "file": "data.npz", "sha256": ...}``, relative to the run folder. A user's data is
  copied into the run folder (``data_spec(..., store_in=folder)``), so the folder is self-contained.
* The scenario part holds the settings ``make_scenario`` is re-run with, the class order, and a
  fingerprint of every task's arrays: rebuilding checks it and refuses data that has changed.

``spec_from_settings`` gives the spec of a run folder written before specs existed (its run.json
``settings``: dataset, seed, scenario, base_classes, classes_per_task).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
import numpy as np

from zo_edge.data.bundled import DATASETS, load_dataset, with_synthetic_domains
from zo_edge.data.dataset import Dataset, check_input_shape
from zo_edge.data.npz import file_sha256, load_npz, save_npz
from zo_edge.data.scenarios import Scenario, make_scenario
from zo_edge.errors import ZoEdgeError

SPEC_FORMAT = "zo-edge/data@1"
STORED_FILE = "data.npz"


def data_spec(dataset: Dataset, scenario: Scenario, store_in=None) -> dict:
    """The spec of a dataset and a scenario made from it (see ``dataset_spec``)."""
    return {"format": SPEC_FORMAT, "dataset": dataset_spec(dataset, store_in),
            "scenario": scenario_spec(scenario)}


def load_spec(spec: dict, root=None) -> tuple[Dataset, Scenario]:
    """The dataset and scenario a spec describes; files are looked up relative to ``root``."""
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise ZoEdgeError(f"the data record is not a {SPEC_FORMAT} spec; build the run again")
    dataset = dataset_from_spec(_part(spec, "dataset"), root)
    return dataset, scenario_from_spec(dataset, _part(spec, "scenario"))


def spec_from_settings(settings: dict) -> dict:
    """The spec of a run folder that recorded only its settings (bundled data, seeded class order)."""
    dataset, seed = settings["dataset"], settings["seed"]
    scenario = {"kind": settings["scenario"], "seed": seed}
    if settings["scenario"] == "class-il":
        scenario.update(base_classes=settings["base_classes"], classes_per_task=settings["classes_per_task"])
    return {"format": SPEC_FORMAT, "dataset": {"origin": "bundled", "name": dataset, "seed": seed},
            "scenario": scenario}


# ---------------------------------------------------------------------------------------------------
# Datasets


def dataset_spec(dataset: Dataset, store_in=None) -> dict:
    """How to load ``dataset`` again.

    A bundled set is a recipe. Any other dataset is a file: with ``store_in`` (a folder), the dataset is
    written there as ``data.npz`` and the spec points to that copy by its name; without it, an npz-loaded
    dataset is referred to by its absolute path. The spec records ``input_shape`` so that a reshape made
    by ``check_input_shape`` is made again.
    """
    meta = dataset.meta
    if meta.get("origin") == "bundled":
        spec = {"origin": "bundled", "name": dataset.name, "seed": meta["seed"], "test_fraction": meta["test_fraction"]}
        if "frames" in meta:
            spec["frames"] = meta["frames"]
        if "synthetic_domains" in meta:
            spec["synthetic_domains_seed"] = meta["synthetic_domains"]["seed"]
    elif store_in is not None:
        spec = {"origin": "npz", "name": dataset.name, "file": STORED_FILE,
                "sha256": save_npz(dataset, Path(store_in) / STORED_FILE)}
    elif meta.get("origin") == "npz":
        spec = {"origin": "npz", "name": dataset.name, "file": str(Path(meta["path"]).resolve()),
                "sha256": meta["sha256"]}
    else:
        raise ZoEdgeError(f"dataset {dataset.name!r} exists only in memory, so nothing could load it again; "
                          f"store it with the run (store_in=RUN_DIR) or save it with save_npz first")
    spec["input_shape"] = [int(s) for s in dataset.input_shape]
    return spec


def dataset_from_spec(spec: dict, root=None) -> Dataset:
    origin = spec.get("origin")
    if origin == "bundled":
        name = spec.get("name")
        if name not in DATASETS:
            raise ZoEdgeError(f"the run's dataset {name!r} is not a bundled one ({', '.join(DATASETS)}); build "
                              f"the run again")
        options = {key: spec[key] for key in ("test_fraction", "frames") if key in spec}
        dataset = load_dataset(name, seed=spec["seed"], **options)
        if "synthetic_domains_seed" in spec:
            dataset = with_synthetic_domains(dataset, spec["synthetic_domains_seed"])
    elif origin == "npz":
        path = Path(spec["file"])
        if root is not None and not path.is_absolute():
            path = Path(root) / path
        if not path.is_file():
            raise ZoEdgeError(f"{path}, the data this run was built from, is missing; restore it or build the "
                              f"run again")
        if "sha256" in spec and file_sha256(path) != spec["sha256"]:
            raise ZoEdgeError(f"{path} has changed since the run was built (its sha256 is no longer "
                              f"{spec['sha256'][:12]}...); restore the file or build the run again")
        dataset = load_npz(path)
        dataset = replace(dataset, name=spec.get("name", dataset.name))
    else:
        raise ZoEdgeError(f"the run's dataset origin {origin!r} is unknown (bundled or npz); build the run again")
    if "input_shape" in spec:
        dataset = check_input_shape(dataset, spec["input_shape"])
    return dataset


# ---------------------------------------------------------------------------------------------------
# Scenarios


def scenario_spec(scenario: Scenario) -> dict:
    """``make_scenario``'s settings for ``scenario``, its class order and the fingerprint of its tasks."""
    meta = scenario.meta
    spec = {"kind": scenario.name, "seed": meta["seed"]}
    if meta.get("shift_set", "mild") != "mild":  # (a mild set is the default, and older runs record none)
        spec["shifts"] = meta["shift_set"]
    if scenario.name == "class-il":
        if "explicit_tasks" in meta:
            spec["tasks"] = [list(group) for group in meta["explicit_tasks"]]
        else:
            spec.update(base_classes=meta["base_classes"], classes_per_task=meta["classes_per_task"])
    spec["class_order"] = list(scenario.class_order)
    spec["task_names"] = [task.name for task in scenario.stream]
    spec["fingerprint"] = scenario_fingerprint(scenario)
    return spec


def scenario_from_spec(dataset: Dataset, spec: dict) -> Scenario:
    """Re-run ``make_scenario`` with a spec's settings; refuse a result that differs from the recorded one."""
    if "kind" not in spec or "seed" not in spec:
        raise ZoEdgeError("the run's scenario record lacks its kind or seed; build the run again")
    scenario = make_scenario(dataset, spec["kind"], seed=spec["seed"], base_classes=spec.get("base_classes"),
                             classes_per_task=spec.get("classes_per_task"), tasks=spec.get("tasks"),
                             shifts=spec.get("shifts"))
    recorded = spec.get("fingerprint")
    if recorded is not None and scenario_fingerprint(scenario) != recorded:
        raise ZoEdgeError(f"the {spec['kind']} tasks rebuilt from {dataset.name!r} differ from those the run was "
                          f"built with (fingerprint {recorded[:12]}...); the data changed: build the run again")
    return scenario


def scenario_fingerprint(scenario: Scenario) -> str:
    """sha256 over the class order and every task's name, classes and arrays (dtype, shape, bytes)."""
    digest = hashlib.sha256(json.dumps([scenario.name, scenario.class_order, scenario.num_classes]).encode())
    for task in scenario.stream:
        digest.update(json.dumps([task.index, task.name, task.classes]).encode())
        for array in (task.x_train, task.y_train, task.x_test, task.y_test):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def _part(spec: dict, key: str) -> dict:
    part = spec.get(key)
    if not isinstance(part, dict):
        raise ZoEdgeError(f"the run's data record lacks its {key!r} part; build the run again")
    return part
