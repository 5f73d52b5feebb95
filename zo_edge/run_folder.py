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

RUN_FORMAT = "zo-edge-run/1"
MODEL_FILE = "model_int8.tflite"
KERAS_FILE = "model.keras"
META_FILE = "run.json"

# run.json keys downstream code reads: key -> type, or a nested schema
SCHEMA = {
    "format": str,
    "settings": {"dataset": str, "scenario": str, "seed": int, "base_classes": int, "classes_per_task": int},
    "scenario": {"num_classes": int, "class_order": list},
    "model": {"num_classes": int, "input_shape": list},
    "roles": dict,
}
# role -> (must be constant, expected dtype)
ROLE_KINDS = {
    "input": (False, np.int8), "logits": (False, np.int8), "classifier.input": (False, np.int8),
    "classifier.weights": (True, np.int8), "classifier.bias": (True, np.int32),
    "cut": (False, np.int8), "adapter_down.weights": (True, np.int8), "adapter_down.bias": (True, np.int32),
    "adapter_down.output": (False, np.int8), "adapter_up.weights": (True, np.int8),
    "adapter_up.bias": (True, np.int32), "adapter.output": (False, np.int8), "block.output": (False, np.int8),
    "adapter_add.output": (False, np.int8),
}
REQUIRED_ROLES = ("input", "logits", "classifier.input", "classifier.weights")


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

    @property
    def roles(self) -> dict[str, int]:
        return self.meta["roles"]

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
        graph = self.graph
        roles = self.roles
        for role in REQUIRED_ROLES:
            if role not in roles:
                raise ZoEdgeError(f"{path / META_FILE} has no role {role!r}; {_rebuild(path)}")
        for role, index in roles.items():
            if role not in ROLE_KINDS:
                raise ZoEdgeError(f"{path / META_FILE} names an unknown role {role!r}; {_rebuild(path)}")
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(graph.tensors):
                raise ZoEdgeError(f"{path / META_FILE}: role {role} points at tensor {index!r}, but the model has "
                                  f"tensors 0..{len(graph.tensors) - 1}; {_rebuild(path)}")
            constant, dtype = ROLE_KINDS[role]
            t = graph.tensors[index]
            if t.is_constant != constant or t.dtype != dtype:
                kind = f"a constant {np.dtype(dtype).name} tensor" if constant else f"an {np.dtype(dtype).name} activation"
                raise ZoEdgeError(f"{path / META_FILE}: role {role} should be {kind}, but tensor {index} "
                                  f"({t.name}) is not; the model and run.json do not belong together — {_rebuild(path)}")
        self._check_shapes()
        return self

    def _check_shapes(self) -> None:
        graph, roles, path = self.graph, self.roles, self.path
        logits, w = graph.tensors[roles["logits"]], graph.tensors[roles["classifier.weights"]]
        features = graph.tensors[roles["classifier.input"]]
        classes = self.num_classes
        problems = []
        if roles["input"] not in graph.inputs:
            problems.append(f"the input role (tensor {roles['input']}) is not the model's input")
        if not logits.shape or logits.shape[-1] != classes:
            problems.append(f"the logits {list(logits.shape)} do not hold the {classes} classes of run.json")
        if len(w.shape) != 2 or w.shape[0] != classes or int(np.prod(features.shape[1:])) != w.shape[1]:
            problems.append(f"the classifier {list(w.shape)} does not map the features {list(features.shape)} to "
                            f"{classes} classes")
        if "classifier.bias" in roles and graph.tensors[roles["classifier.bias"]].shape != (classes,):
            problems.append(f"the classifier bias is not [{classes}]")
        shape = list(graph.tensors[graph.inputs[0]].shape[1:]) if graph.inputs else []
        if [int(d) for d in self.meta["model"]["input_shape"]] != shape:
            problems.append(f"the model takes inputs {shape}, run.json says {self.meta['model']['input_shape']}")
        if self.meta["scenario"]["num_classes"] > classes:
            problems.append(f"the scenario has {self.meta['scenario']['num_classes']} classes, the classifier {classes}")
        if problems:
            raise ZoEdgeError(f"{path}: {problems[0]}; the model and run.json do not belong together — {_rebuild(path)}")


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
    if not isinstance(meta, dict) or meta.get("format") != RUN_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ZoEdgeError(f"{meta_path} is not a zo-edge run ({RUN_FORMAT}; found {found!r}); {_rebuild(path)}")
    _check_schema(meta, SCHEMA, "", path)
    return RunFolder(path=path, meta=meta, tflite=tflite.read_bytes()).validate()
