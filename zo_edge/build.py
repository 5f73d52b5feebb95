"""Make a run folder: data → scenario → zoo model → pretrain (float, base task) → int8 .tflite.

A run folder holds everything later steps (simulation, firmware export, RAM profile) start from:

    model.keras          the pretrained float model (adapter at identity)
    model_int8.tflite    the int8 model (TFLM-ready; adapter_up zeroed, headroom ranges)
    quantization.txt     the per-tensor quantisation table, headroom rows marked
    quantization.json    the same as JSON, with the role map and the quantisation settings
    run.json             every setting, seed, class order, scenario and dataset meta, the architecture,
                         adapter settings, pretraining accuracy, the role → tensor index map, versions

The folder is built in a hidden temporary sibling and renamed into place at the end, so a failure
never leaves half a run behind (``zo_edge.outputs``: it is marked as zo-edge's, and ``--force`` replaces
only such a folder). ``zo_edge.run_folder.load_run`` reads it back, checked.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np

from zo_edge.errors import ZoEdgeError
from zo_edge.outputs import check_output_folder, write_folder
from zo_edge.run_folder import RUN_FORMAT, RunFolder, load_run

RUN_FILES = ("model.keras", "model_int8.tflite", "quantization.txt", "quantization.json", "run.json")


def _jsonable(obj):
    """numpy scalars/arrays, tuples and paths → plain JSON types (recursively)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.decode(errors="replace")
    return obj


def _versions() -> dict:
    import importlib.metadata as md

    import keras
    import tensorflow as tf

    import zo_edge

    out = {"zo_edge": zo_edge.__version__, "python": platform.python_version(), "tensorflow": tf.__version__,
           "keras": keras.__version__, "numpy": np.__version__}
    for dist in ("ai-edge-litert", "tflite-micro"):
        try:
            out[dist.replace("-", "_")] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist.replace("-", "_")] = None
    return out


def _task_summary(task) -> dict:
    return {"index": int(task.index), "name": task.name, "classes": [int(c) for c in task.classes],
            "train_samples": int(len(task.y_train)), "test_samples": int(len(task.y_test))}


def int8_accuracy(tflite: bytes, roles: dict, report: list, x, y, classes) -> dict:
    """Accuracy of the int8 model in TFLM (argmax over ``classes``' logits, and over all logits)."""
    from zo_edge.quantize import quantize_input
    from zo_edge.tflm import TflmOracle

    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return {"accuracy": None, "accuracy_all_logits": None, "samples": 0}
    row = report[roles["input"]]
    xq = quantize_input(x, row["scales"][0], row["zero_points"][0])
    (logits,), _ = TflmOracle(tflite).run(xq)
    logits = logits.reshape(len(y), -1).astype(np.int32)
    classes = np.asarray(classes)
    masked = classes[np.argmax(logits[:, classes], axis=1)]
    return {"accuracy": float(np.mean(masked == y)),
            "accuracy_all_logits": float(np.mean(np.argmax(logits, axis=1) == y)), "samples": int(len(y))}


def build_run(out_dir, dataset: str = "spoken-digits", scenario: str = "class-il", seed: int = 0, arch=None,
              adapter_position="last", adapter_width: int = 8, epochs=None, force: bool = False, log=print,
              base_classes: int = 4, classes_per_task: int = 2, quant_config=None) -> RunFolder:
    """Build a run folder (see the module docstring) and return it, read back with ``load_run``.

    Refuses a non-empty ``out_dir`` unless ``force`` and it is a run folder zo-edge wrote; the old
    folder is replaced only once the new one is complete.
    """
    from zo_edge import models
    from zo_edge.data import load_dataset, make_scenario
    from zo_edge.quantize import QuantConfig, op_list, quantize_model, report_to_text

    log = log or (lambda *_: None)
    out = check_output_folder(out_dir, "run", force)  # before minutes of pretraining, not after
    if isinstance(adapter_position, str) and adapter_position.strip().lstrip("-").isdigit():
        adapter_position = int(adapter_position)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ZoEdgeError(f"seed must be a non-negative integer (got {seed!r})")
    seed = int(seed)
    started = time.perf_counter()

    log(f"loading {dataset} and making the {scenario} scenario (seed {seed})")
    ds = load_dataset(dataset, seed=seed)
    sc = make_scenario(ds, scenario, seed=seed, base_classes=base_classes, classes_per_task=classes_per_task)
    arch = arch or models.default_arch(ds.name)
    position = models.resolve_adapter_position(arch, adapter_position)
    model = models.build_model(arch, ds.input_shape, ds.num_classes, adapter_position=adapter_position,
                               adapter_width=adapter_width, seed=seed)
    counts = models.param_counts(model)
    log(f"model {arch}: {counts['deployed']} parameters deployed, adapter at {position} "
        f"({counts['adapter']} parameters, width {adapter_width})")

    log(f"pretraining on the base task {sc.base.name!r} (classes {list(sc.base.classes)})")
    pre = models.pretrain(model, sc.base, epochs=epochs, seed=seed)
    log(f"pretrained in {pre['seconds']:.1f} s: base-class test accuracy {pre['base_accuracy']:.3f}")

    config = quant_config or QuantConfig()
    quantized = quantize_model(model, sc.base.x_train, config=config, seed=seed)
    acc8 = int8_accuracy(quantized.tflite, quantized.roles, quantized.report, sc.base.x_test, sc.base.y_test,
                         sc.base.classes)
    log(f"int8 model: {len(quantized.tflite)} bytes, base-class test accuracy in TFLM {acc8['accuracy']:.3f}")

    ops = op_list(quantized.tflite)
    run = {
        "format": RUN_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "dataset": ds.name, "scenario": scenario, "seed": seed, "arch": arch,
            "adapter_position": adapter_position if isinstance(adapter_position, (str, type(None)))
            else int(adapter_position),
            "adapter_width": int(adapter_width), "epochs": pre["epochs"], "base_classes": int(base_classes),
            "classes_per_task": int(classes_per_task),
        },
        "dataset": {
            "name": ds.name, "input_shape": [int(d) for d in ds.input_shape], "num_classes": int(ds.num_classes),
            "class_names": list(ds.class_names), "train_samples": int(len(ds.y_train)),
            "test_samples": int(len(ds.y_test)), "meta": ds.meta,
        },
        "scenario": {
            "name": sc.name, "kind": scenario, "class_order": [int(c) for c in sc.class_order],
            "num_classes": int(sc.num_classes), "base": _task_summary(sc.base),
            "tasks": [_task_summary(t) for t in sc.tasks], "meta": sc.meta,
        },
        "model": {
            "arch": arch, "description": models.ARCHS[arch], "params": counts,
            "adapter": {"position": position, "requested_position": adapter_position, "width": int(adapter_width),
                        **models.adapter_info(model)},
            "input_shape": [int(d) for d in model.input_shape[1:]], "num_classes": int(ds.num_classes),
        },
        "pretrain": pre,
        "quantization": {
            "config": quantized.config, "checks": quantized.checks, "int8_base_test": acc8,
            "tflite_bytes": len(quantized.tflite), "ops": ops,
        },
        "roles": quantized.roles,
        "files": {"model_int8.tflite": {"sha256": hashlib.sha256(quantized.tflite).hexdigest(),
                                        "bytes": len(quantized.tflite)}},
        "versions": _versions(),
    }
    run = _jsonable(run)

    with write_folder(out, "run", force) as tmp:
        model.save(tmp / "model.keras")
        (tmp / "model_int8.tflite").write_bytes(quantized.tflite)
        (tmp / "quantization.txt").write_text(report_to_text(quantized.report))
        (tmp / "quantization.json").write_text(json.dumps(_jsonable(quantized.to_json()), indent=1) + "\n")
        run["build_seconds"] = round(time.perf_counter() - started, 2)
        (tmp / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    log(f"wrote {out} in {run['build_seconds']:.1f} s")
    return load_run(out)
