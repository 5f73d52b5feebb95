"""The run folder, the one contract between ``build`` and everything downstream (DESIGN.md §8).

``load_run(path)`` reads a folder ``zo-edge build`` wrote and returns a ``RunFolder``: run.json checked
against a schema (every key the downstream commands read, with its type), then against its own model —
the model file's SHA-256 as recorded at build, every role's tensor index in range and of the right
kind (weights and biases constant, activations computed), the shapes the learners rely on (logits
[.., classes], the classifier [classes, features] on its input, the input shape). A folder that fails
gets one line naming the key or the tensor and saying how to make a good one; nothing downstream
meets a KeyError or an IndexError.

The graph, the scenario and the Keras path are attributes, made once and cached.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zo_edge.errors import ZoEdgeError

RUN_FORMAT = "zo-edge-run/2"
OLD_FORMATS = ("zo-edge-run/1",)  # one adapter under fixed role names; read by converting them to a plan
MODEL_FILE = "model_int8.tflite"
KERAS_FILE = "model.keras"
META_FILE = "run.json"

# run.json keys downstream code reads: key -> type, or a nested schema
SCHEMA = {
    "format": str,
    "settings": {"dataset": str, "scenario": str, "seed": int},
    "scenario": {"num_classes": int, "class_order": list},
    "model": {"num_classes": int, "input_shape": list},
    "plan": dict,
}
V1_SCHEMA = {**{k: v for k, v in SCHEMA.items() if k != "plan"}, "roles": dict,
             "settings": {"dataset": str, "scenario": str, "seed": int, "base_classes": int, "classes_per_task": int}}


def _rebuild(path) -> str:
    return f"re-create it with `zo-edge build --out NEW_DIR` (the folder {path} is left as it is)"


def _check_schema(meta, schema: dict, where: str, path) -> None:
    for key, kind in schema.items():
        if key not in meta:
            raise ZoEdgeError(f"{path / META_FILE} lacks the key {where}{key}; {_rebuild(path)}")
        value = meta[key]
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise ZoEdgeError(f"{path / META_FILE}: {where}{key} must be an object; {_rebuild(path)}")
            _check_schema(value, kind, f"{where}{key}.", path)
        elif isinstance(value, bool) or not isinstance(value, kind):
            raise ZoEdgeError(f"{path / META_FILE}: {where}{key} must be {kind.__name__}, not "
                              f"{type(value).__name__}; {_rebuild(path)}")


@dataclass
class RunFolder:
    """A run folder as downstream code reads it (see the module docstring)."""

    path: Path
    meta: dict  # run.json as written by build
    tflite: bytes = field(repr=False)

    @property
    def run_dir(self) -> str:
        return str(self.path)

    @property
    def tflite_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def keras_path(self) -> Path:
        return self.path / KERAS_FILE

    @property
    def settings(self) -> dict:
        return self.meta["settings"]

    @functools.cached_property
    def plan(self):
        """The adaptation plan (``zo_edge.plan``): which tensors train and how the graph splits."""
        from zo_edge.plan import Plan

        return Plan.from_json(self.meta["plan"], where=f"{self.path / META_FILE} plan")

    @property
    def roles(self) -> dict[str, int]:
        """role -> tensor index (``Plan.roles``)."""
        return self.plan.roles()

    @property
    def has_keras(self) -> bool:
        """Whether the run has a float original (float mode and fo need it; a .tflite-only run has none)."""
        return self.keras_path.is_file() and self.plan.has_keras

    @property
    def num_classes(self) -> int:
        return int(self.meta["model"]["num_classes"])

    @functools.cached_property
    def graph(self):
        from zo_edge.qgraph import QGraph

        return QGraph.from_bytes(self.tflite, source=str(self.tflite_path))

    @functools.cached_property
    def _data(self):
        from zo_edge.data import load_spec, spec_from_settings

        return load_spec(self.meta.get("data") or spec_from_settings(self.settings), self.path)

    @property
    def dataset(self):
        """The run's dataset: bundled, or the data.npz the build copied into the folder."""
        return self._data[0]

    @property
    def scenario(self):
        """The run's scenario, rebuilt from its recorded settings and checked against its fingerprint."""
        return self._data[1]

    # -- checks against the model -------------------------------------------------------------
    def validate(self) -> "RunFolder":
        """Check run.json against its model (module docstring); return self."""
        path = self.path
        recorded = self.meta.get("files", {}).get(MODEL_FILE)
        if isinstance(recorded, dict) and "sha256" in recorded:
            if hashlib.sha256(self.tflite).hexdigest() != recorded["sha256"]:
                raise ZoEdgeError(f"{self.tflite_path} is not the model {path / META_FILE} was built with (its "
                                  f"SHA-256 differs); {_rebuild(path)}")
        try:
            self.plan.check(self.graph, where=f"{path / META_FILE}")
        except ZoEdgeError as exc:
            raise ZoEdgeError(f"{exc}; the model and run.json do not belong together — {_rebuild(path)}") from None
        problems = []
        classes = self.num_classes
        logits = self.graph.tensors[self.plan.classifier.logits]
        if logits.shape[-1] != classes:
            problems.append(f"the logits {list(logits.shape)} do not hold the {classes} classes of run.json")
        shape = list(self.graph.tensors[self.plan.input].shape[1:])
        if [int(d) for d in self.meta["model"]["input_shape"]] != shape:
            problems.append(f"the model takes inputs {shape}, run.json says {self.meta['model']['input_shape']}")
        if self.meta["scenario"]["num_classes"] > classes:
            problems.append(f"the scenario has {self.meta['scenario']['num_classes']} classes, the classifier {classes}")
        if problems:
            raise ZoEdgeError(f"{path}: {problems[0]}; the model and run.json do not belong together — {_rebuild(path)}")
        return self


def _plan_of_v1(meta: dict, path) -> dict:
    """A zo-edge-run/1 role map (one adapter, fixed role names) as a plan."""
    from zo_edge.plan import Adapter, Classifier, Plan

    roles = meta["roles"]
    try:
        classifier = Classifier(input=roles["classifier.input"], weights=roles["classifier.weights"],
                                bias=roles["classifier.bias"], logits=roles["logits"], keras="classifier")
        adapters = ()
        if "adapter_up.weights" in roles:
            adapters = (Adapter(name="adapter0", kind=meta["model"]["adapter"].get("kind", "conv1x1"),
                                cut=roles["cut"], down_weights=roles["adapter_down.weights"],
                                down_bias=roles["adapter_down.bias"], hidden=roles["adapter_down.output"],
                                up_weights=roles["adapter_up.weights"], up_bias=roles["adapter_up.bias"],
                                output=roles["adapter.output"], block_output=roles["block.output"],
                                add_output=roles["adapter_add.output"],
                                keras={"down": "adapter_down", "up": "adapter_up"}),)
        return Plan(input=roles["input"], output=roles["logits"], classifier=classifier, adapters=adapters).to_json()
    except (KeyError, TypeError, AttributeError) as exc:
        raise ZoEdgeError(f"{Path(path) / META_FILE} (zo-edge-run/1) lacks the role {exc}; {_rebuild(path)}") from None


def load_run(run_dir) -> RunFolder:
    """Read and check a run folder (module docstring); every problem is a one-line ZoEdgeError."""
    path = Path(run_dir)
    if not path.exists():
        raise ZoEdgeError(f"run folder {path} does not exist; create one with `zo-edge build --out {path}`")
    if not path.is_dir():
        raise ZoEdgeError(f"{path} is a file, not a run folder; give the folder `zo-edge build` wrote")
    tflite = path / MODEL_FILE
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise ZoEdgeError(f"{path} has no {META_FILE}: it is not a run folder; create one with "
                          f"`zo-edge build --out NEW_DIR`")
    if not tflite.is_file():
        raise ZoEdgeError(f"{path} has no {MODEL_FILE}; {_rebuild(path)}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ZoEdgeError(f"{meta_path} is not valid JSON ({exc.__class__.__name__}); {_rebuild(path)}") from None
    found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    if found in OLD_FORMATS:
        _check_schema(meta, V1_SCHEMA, "", path)
        meta = {**meta, "format": RUN_FORMAT, "plan": _plan_of_v1(meta, path)}
    elif found != RUN_FORMAT:
        raise ZoEdgeError(f"{meta_path} is not a zo-edge run ({RUN_FORMAT}; found {found!r}); {_rebuild(path)}")
    _check_schema(meta, SCHEMA, "", path)
    return RunFolder(path=path, meta=meta, tflite=tflite.read_bytes()).validate()
