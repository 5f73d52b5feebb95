"""``zo-edge build --tflite FILE.tflite --data FILE.npz``: a deployed int8 model, no float original, as a run.

Graph surgery on the flatbuffer (``zo_edge.surgery``): the classifier (default: the last
FULLY_CONNECTED, with any SOFTMAX after it) is replaced by a trainable one sized for the scenario and
fitted on the base task — a float fit on the int8 features sets its starting point and scales, then the
int8 head learner (``Int8Learner``, method head: the device's own arithmetic) trains it on the base task
and its integers are written into the model — and the adapters go in as int8 ops on the named tensors.

Before training, the adapted model's outputs equal those of the same model without adapters byte for
byte, in TFLM, on the whole test split: the build checks it and records the count in run.json
(``quantization.checks.adapters_change_nothing``). The run folder has no model.keras, so float mode and
``fo`` are refused on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from zo_edge.errors import ZoEdgeError
from zo_edge.outputs import check_output_folder

HEAD_EPOCHS = 10  # the int8 head learner on the base task, after the float fit


def _tensor_ref(ref: str):
    """A --adapter-at/--classifier item: an index ("12") or a name."""
    return int(ref) if isinstance(ref, str) and ref.strip().isdigit() else ref


def _calibration(x, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([int(seed), 0xCA1B])
    return x[np.sort(rng.permutation(len(x))[: min(n, len(x))])]


def fit_head_int8(tflite: bytes, plan, task, epochs: int, seed: int, source: str) -> tuple[bytes, dict]:
    """Train the classifier on ``task`` with the int8 head learner and write its integers into the model."""
    from zo_edge.learners import LearnerConfig
    from zo_edge.learners.int8_learner import Int8Learner
    from zo_edge.qgraph import QGraph
    from zo_edge.tflite_edit import TfliteModel

    graph = QGraph.from_bytes(tflite, source=source)
    run = SimpleNamespace(graph=graph, plan=plan, run_dir=source)  # what Int8Learner reads of a run
    config = LearnerConfig(method="head", mode="int8", epochs=epochs, seed=seed,
                           batch_size=min(48, len(task.y_train))).check()
    learner = Int8Learner(run, config)
    counters = learner.fit_task(dataclasses.replace(task, index=0))  # the base task, as the first to learn
    model = TfliteModel.from_bytes(tflite, source)
    for index, values in learner.constants().items():
        model.write_const(index, values)
    accuracy = float(np.mean(learner.predict(task.x_test, task.classes) == task.y_test)) if len(task.y_test) else None
    return model.pack(), {"learner": "Int8Learner head (device arithmetic)", "epochs": epochs,
                          "steps": counters["steps"], "base_test_accuracy": accuracy,
                          "settings": config.to_json()}


def _outputs_equal(a: bytes, b: bytes, x) -> dict:
    """Every output byte of two models on ``x`` in TFLM: the adapters' promise before training."""
    from zo_edge.tflm import TflmOracle

    (ya,), _ = TflmOracle(a).run(x)
    (yb,), _ = TflmOracle(b).run(x)
    differing = int(np.count_nonzero(ya != yb))
    if differing or ya.size == 0:
        raise AssertionError(f"the inserted adapters changed {differing} of {ya.size} output bytes")
    return {"compared_bytes": int(ya.size), "differing_bytes": differing, "samples": int(len(x)), "oracle": "TFLM"}


def build_from_tflite(out_dir, tflite_path, data, *, scenario: str = "class-il", base_classes=None,
                      classes_per_task=None, tasks=None, adapter_at=None, adapter_width: int = 8, classifier=None,
                      seed: int = 0, force: bool = False, log=print, head_epochs: int = HEAD_EPOCHS,
                      quant_config=None):
    """Build a run folder from a deployed int8 .tflite and an npz (module docstring); return the RunFolder."""
    from zo_edge.build import int8_accuracy, load_data, make_stream, run_meta, write_run
    from zo_edge.engine import Engine
    from zo_edge.qgraph import QGraph
    from zo_edge.quantize import QuantConfig, QuantizedModel, build_report
    from zo_edge.surgery import adapt_tflite
    from zo_edge.tflite_edit import TfliteModel

    log = log or (lambda *_: None)
    inputs = (tflite_path, data)
    out = check_output_folder(out_dir, "run", force, inputs)
    started = time.perf_counter()
    config = quant_config or QuantConfig()
    config.validate()
    source = str(tflite_path)
    original = Path(tflite_path).read_bytes()
    graph = QGraph.from_bytes(original, source=source)
    engine = Engine(graph)  # refuses unsupported ops, naming them
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ZoEdgeError(f"{source} has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; zo-edge "
                          "trains models with one of each")
    input_shape = tuple(int(d) for d in graph.tensors[graph.inputs[0]].shape[1:])
    ds = load_data(None, data, seed, input_shape=input_shape)  # bad input: one line, before any progress line
    sc = make_stream(ds, scenario, seed, base_classes, classes_per_task, tasks)

    x_base = engine.quantize_input(sc.base.x_train)
    at = None if adapter_at is None else [_tensor_ref(r) for r in adapter_at]
    adapted = adapt_tflite(original, num_classes=sc.num_classes, x_base_int8=x_base, y_base=sc.base.y_train,
                           x_calibration_int8=_calibration(x_base, config.calibration_samples, seed), at=at,
                           width=adapter_width, classifier=_tensor_ref(classifier) if classifier else None,
                           up_magnitude=config.up_magnitude, down_headroom=config.down_headroom,
                           classifier_headroom=config.classifier_headroom, seed=seed, source=source)
    plan = adapted.plan
    log(f"{data}: {len(ds.y_train)} training and {len(ds.y_test)} test samples of {list(input_shape)}, "
        f"{ds.num_classes} classes; {sc.name} stream of {len(sc.tasks)} tasks after the base task")
    where = ", ".join(f"{a['tensor']} ({a['tensor_name']})" for a in adapted.report["adapters"])
    log(f"{len(plan.adapters)} adapter(s) on {where}; classifier -> {sc.num_classes} classes")
    x_test = engine.quantize_input(np.concatenate([t.x_test for t in sc.stream]))
    identity = _outputs_equal(adapted.model, adapted.without_adapters, x_test)
    log(f"adapters change nothing before training: 0 of {identity['compared_bytes']} output bytes differ (TFLM)")

    log(f"training the classifier on the base task {sc.base.name!r} with the int8 head learner ({head_epochs} epochs)")
    tflite, head = fit_head_int8(adapted.model, plan, sc.base, head_epochs, seed, source)
    plan.check(QGraph.from_bytes(tflite, source=source))
    acc8 = int8_accuracy(tflite, plan, sc.base.x_test, sc.base.y_test, sc.base.classes)
    log(f"int8 model: {len(tflite)} bytes, base-class test accuracy in TFLM {acc8['accuracy']:.3f}")

    checks = {"adapters_change_nothing": identity}
    quantized = QuantizedModel(tflite=tflite, report=build_report(TfliteModel.from_bytes(tflite, source), plan, config),
                               plan=plan, config={**asdict(config), "seed": int(seed), "source": "graph surgery"},
                               checks=checks)
    settings = {
        "source": "tflite", "dataset": ds.name, "scenario": scenario, "seed": int(seed),
        "tflite_file": str(Path(tflite_path).resolve()), "tflite_sha256": hashlib.sha256(original).hexdigest(),
        "adapter_at": [a["tensor"] for a in adapted.report["adapters"]], "adapter_width": int(adapter_width),
        "classifier": classifier, "base_classes": len(sc.base.classes),
        "classes_per_task": sc.meta.get("classes_per_task"),
    }
    model_meta = {"arch": f"user: {Path(tflite_path).name}", "adapter": {"present": bool(plan.adapters),
                  "count": len(plan.adapters), "adapters": adapted.report["adapters"]},
                  "input_shape": list(input_shape), "num_classes": int(sc.num_classes)}
    pretrain = {"classifier_fit": adapted.report["classifier"], "int8_head": head}
    meta = run_meta(settings=settings, ds=ds, sc=sc, model=model_meta, plan=plan, quantized=quantized,
                    pretrain=pretrain, acc8=acc8)
    return write_run(out, force, inputs, meta, quantized, ds, sc, keras_model=None, log=log, started=started)
