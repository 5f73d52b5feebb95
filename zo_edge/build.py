"""Make a run folder: data → scenario → model with adapters → int8 .tflite and its adaptation plan.

A run folder holds everything later steps (simulation, firmware export, RAM profile) start from
(``zo_edge.run_folder`` reads it back, checked):

    model.keras          the float model (adapters at identity); absent for a run made from a .tflite
    model_int8.tflite    the int8 model (TFLM-ready; up-projections zeroed, headroom ranges)
    quantization.txt     the per-tensor quantisation table, headroom rows marked
    quantization.json    the same as JSON, with the plan and the quantisation settings
    data.npz             the user's data, as validated (absent for the bundled sets, rebuilt by recipe)
    run.json             every setting, the seed, the data and scenario record (``zo_edge.data`` spec),
                         the adaptation plan (``zo_edge.plan``), pretraining and int8 accuracy, versions

This module builds the zoo's models on a bundled dataset or the user's npz (``build_run``); the two
bring-your-own-model paths share its data handling and folder writing. The folder is built in a hidden
temporary sibling and renamed into place at the end, so a failure never leaves half a run behind
(``zo_edge.outputs``: it is marked as zo-edge's, and ``--force`` replaces only such a folder).
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

__all__ = ["build_run", "load_run", "RunFolder"]


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

    import zo_edge
    from zo_edge.models import import_tensorflow_quietly

    tf = import_tensorflow_quietly()  # its C++ start-up lines would break the one-line-error promise
    import keras

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


def int8_accuracy(tflite: bytes, plan, x, y, classes) -> dict:
    """Accuracy of the int8 model in TFLM (argmax of the logits over ``classes``, and over all logits)."""
    from zo_edge.qgraph import QGraph
    from zo_edge.tflm import TflmOracle

    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return {"accuracy": None, "accuracy_all_logits": None, "samples": 0}
    graph = QGraph.from_bytes(tflite)
    scale, zero_point = graph.tensors[plan.input].scalar_quant()
    from zo_edge.kernels.quantize import affine_quantize

    xq = affine_quantize(x, scale, zero_point)
    logits_index = plan.classifier.logits
    intermediate = logits_index != plan.output
    (out,), captured = TflmOracle(tflite, intermediates=intermediate).run(xq, [logits_index] if intermediate else [])
    logits = (captured[logits_index] if intermediate else out).reshape(len(y), -1).astype(np.int32)
    classes = np.asarray(classes)
    masked = classes[np.argmax(logits[:, classes], axis=1)]
    return {"accuracy": float(np.mean(masked == y)),
            "accuracy_all_logits": float(np.mean(np.argmax(logits, axis=1) == y)), "samples": int(len(y))}


# -- data ---------------------------------------------------------------------------------------------
def load_data(dataset: str | None, data, seed: int, input_shape=None):
    """The bundled ``dataset``, or the user's npz at ``data`` checked against ``input_shape``."""
    from zo_edge.data import check_input_shape, load_dataset, load_npz

    if data is not None:
        ds = load_npz(data)
        return check_input_shape(ds, input_shape) if input_shape is not None else ds
    return load_dataset(dataset, seed=seed)


def make_stream(ds, scenario: str, seed: int, base_classes=None, classes_per_task=None, tasks=None):
    from zo_edge.data import make_scenario

    return make_scenario(ds, scenario, seed=seed, base_classes=base_classes, classes_per_task=classes_per_task,
                         tasks=tasks)


def run_meta(*, settings: dict, ds, sc, model: dict, plan, quantized, pretrain: dict, acc8: dict) -> dict:
    """run.json's content (``zo_edge.run_folder`` documents what downstream code reads); ``write_run``
    adds the data record."""
    from zo_edge.quantize import op_list

    return _jsonable({
        "format": RUN_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "dataset": {
            "name": ds.name, "input_shape": [int(d) for d in ds.input_shape], "num_classes": int(ds.num_classes),
            "class_names": list(ds.class_names), "train_samples": int(len(ds.y_train)),
            "test_samples": int(len(ds.y_test)), "meta": ds.meta,
        },
        "scenario": {
            "name": sc.name, "kind": sc.name, "class_order": [int(c) for c in sc.class_order],
            "num_classes": int(sc.num_classes), "base": _task_summary(sc.base),
            "tasks": [_task_summary(t) for t in sc.tasks], "meta": sc.meta,
        },
        "model": model,
        "pretrain": pretrain,
        "quantization": {
            "config": quantized.config, "checks": quantized.checks, "int8_base_test": acc8,
            "tflite_bytes": len(quantized.tflite), "ops": op_list(quantized.tflite),
        },
        "plan": plan.to_json(),
        "files": {"model_int8.tflite": {"sha256": hashlib.sha256(quantized.tflite).hexdigest(),
                                        "bytes": len(quantized.tflite)}},
        "versions": _versions(),
    })


def write_run(out: Path, force: bool, inputs, meta: dict, quantized, ds, sc, keras_model=None, log=print,
              started: float | None = None) -> RunFolder:
    """Write the run folder whole (module docstring) and read it back checked."""
    from zo_edge.data import data_spec
    from zo_edge.quantize import report_to_text

    with write_folder(out, "run", force, inputs) as tmp:
        if keras_model is not None:
            keras_model.save(tmp / "model.keras")
        (tmp / "model_int8.tflite").write_bytes(quantized.tflite)
        (tmp / "quantization.txt").write_text(report_to_text(quantized.report))
        (tmp / "quantization.json").write_text(json.dumps(_jsonable(quantized.to_json()), indent=1) + "\n")
        stored = ds.meta.get("origin") != "bundled"  # a user's data travels with the run
        meta["data"] = _jsonable(data_spec(ds, sc, store_in=tmp if stored else None))
        if started is not None:
            meta["build_seconds"] = round(time.perf_counter() - started, 2)
        (tmp / "run.json").write_text(json.dumps(meta, indent=1) + "\n")
    log(f"wrote {out}" + (f" in {meta['build_seconds']:.1f} s" if "build_seconds" in meta else ""))
    return load_run(out)


# -- the zoo -----------------------------------------------------------------------------------------
def build_run(out_dir, dataset: str | None = None, scenario: str = "class-il", seed: int = 0, arch=None,
              adapter_position=None, adapter_width: int = 8, epochs=None, force: bool = False, log=print,
              base_classes=None, classes_per_task=None, tasks=None, data=None, model=None, tflite=None,
              adapter_at=None, classifier=None, quant_config=None) -> RunFolder:
    """Build a run folder (module docstring) and return it, read back with ``load_run``: what
    ``zo-edge build`` does, and the Python entry point for notebooks.

    The model: a zoo architecture trained here (``arch``, default the bundled dataset's own; adapters
    beside blocks at ``adapter_position``: "last", "after", an index or a list), your Keras model
    (``model``: a .keras path; ``adapter_at``: layer names; ``classifier``: a Dense layer; ``epochs``:
    fine-tune first, 0 fits only the classifier) or your deployed int8 .tflite (``tflite``; ``adapter_at``:
    tensor names or indices; ``classifier``: an op index or output tensor name). The data: a bundled
    ``dataset`` (default spoken-digits) or ``data``, the path of your npz (``zo_edge.data`` documents the
    format; your own model needs your own data). ``tasks`` ("0,1,2,3;4,5" or lists) or
    ``base_classes``/``classes_per_task`` shape a class-il stream. Refuses a non-empty ``out_dir`` unless
    ``force`` and it is a run folder zo-edge wrote; the old folder is replaced only once the new one is
    complete.
    """
    if sum(s is not None for s in (model, tflite, arch)) > 1:
        raise ZoEdgeError("give one model source: --model FILE.keras, --tflite FILE.tflite, or --arch ZOO_MODEL")
    if dataset is not None and data is not None:
        raise ZoEdgeError("give --dataset NAME (bundled) or --data FILE.npz (yours), not both")
    stream = dict(scenario=scenario, base_classes=base_classes, classes_per_task=classes_per_task, tasks=tasks)
    if model is not None or tflite is not None:
        if data is None:
            raise ZoEdgeError("your own model needs your own data: add --data FILE.npz (`zo-edge data check` "
                              "shows the format)")
        if adapter_position is not None:
            raise ZoEdgeError("--adapter-position places zoo adapters beside blocks; for your model use --adapter-at")
        if model is not None:
            from zo_edge.build_keras import build_from_keras

            return build_from_keras(out_dir, model, data, adapter_at=adapter_at, adapter_width=adapter_width,
                                    classifier=classifier, epochs=epochs or 0, seed=seed, force=force, log=log,
                                    quant_config=quant_config, **stream)
        if epochs:
            raise ZoEdgeError("--epochs fine-tunes a float model; a .tflite has none (its classifier is fitted on "
                              "the base task in int8)")
        from zo_edge.build_tflite import build_from_tflite

        return build_from_tflite(out_dir, tflite, data, adapter_at=adapter_at, adapter_width=adapter_width,
                                 classifier=classifier, seed=seed, force=force, log=log, quant_config=quant_config,
                                 **stream)
    if adapter_at is not None or classifier is not None:
        raise ZoEdgeError("--adapter-at and --classifier name parts of your model (--model or --tflite); the zoo "
                          "takes --adapter-position")
    return _build_zoo(out_dir, dataset=dataset or "spoken-digits", seed=seed, arch=arch,
                      adapter_position="last" if adapter_position is None else adapter_position,
                      adapter_width=adapter_width, epochs=epochs, force=force, log=log, data=data,
                      quant_config=quant_config, **stream)


def _build_zoo(out_dir, dataset: str, scenario: str, seed: int, arch, adapter_position, adapter_width: int, epochs,
               force: bool, log, base_classes, classes_per_task, tasks, data, quant_config) -> RunFolder:
    """A zoo model trained here on a bundled dataset or the user's npz (``build_run``)."""
    from zo_edge import models
    from zo_edge.quantize import QuantConfig, quantize_model

    log = log or (lambda *_: None)
    inputs = (data,)
    out = check_output_folder(out_dir, "run", force, inputs)  # before minutes of pretraining, not after
    if isinstance(adapter_position, str) and adapter_position.strip().lstrip("-").isdigit():
        adapter_position = int(adapter_position)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ZoEdgeError(f"seed must be a non-negative integer (got {seed!r})")
    seed = int(seed)
    started = time.perf_counter()

    ds = load_data(dataset, data, seed)
    sc = make_stream(ds, scenario, seed, base_classes, classes_per_task, tasks)
    log(f"{data or dataset}: the {scenario} scenario (seed {seed}), {len(sc.tasks)} tasks after the base task")
    arch = arch or (models.default_arch(ds.name) if data is None else None)
    if arch is None:
        raise ZoEdgeError("give --arch for the zoo model to train on your data (one of "
                          f"{', '.join(sorted(models.ARCHS))}), or bring your own with --model / --tflite")
    position = models.resolve_adapter_position(arch, adapter_position)
    model = models.build_model(arch, ds.input_shape, ds.num_classes, adapter_position=adapter_position,
                               adapter_width=adapter_width, seed=seed)
    counts = models.param_counts(model)
    log(f"model {arch}: {counts['deployed']} parameters deployed, adapters at {position} "
        f"({counts['adapter']} parameters, width {adapter_width})")

    log(f"pretraining on the base task {sc.base.name!r} (classes {list(sc.base.classes)})")
    pre = models.pretrain(model, sc.base, epochs=epochs, seed=seed)
    log(f"pretrained in {pre['seconds']:.1f} s: base-class test accuracy {pre['base_accuracy']:.3f}")

    quantized = quantize_model(model, sc.base.x_train, config=quant_config or QuantConfig(), seed=seed)
    plan = quantized.plan
    acc8 = int8_accuracy(quantized.tflite, plan, sc.base.x_test, sc.base.y_test, sc.base.classes)
    log(f"int8 model: {len(quantized.tflite)} bytes, base-class test accuracy in TFLM {acc8['accuracy']:.3f}")

    settings = {
        "source": "zoo", "dataset": ds.name, "scenario": scenario, "seed": seed, "arch": arch,
        "adapter_position": adapter_position,
        "adapter_width": int(adapter_width), "epochs": pre["epochs"],
        "base_classes": len(sc.base.classes), "classes_per_task": sc.meta.get("classes_per_task"),
    }
    model_meta = {
        "arch": arch, "description": models.ARCHS[arch], "params": counts,
        "adapter": {"position": position, "requested_position": adapter_position, "width": int(adapter_width),
                    **models.adapter_info(model)},
        "input_shape": [int(d) for d in model.input_shape[1:]], "num_classes": int(ds.num_classes),
    }
    meta = run_meta(settings=settings, ds=ds, sc=sc, model=model_meta, plan=plan, quantized=quantized,
                    pretrain=pre, acc8=acc8)
    return write_run(out, force, inputs, meta, quantized, ds, sc, keras_model=model, log=log, started=started)
