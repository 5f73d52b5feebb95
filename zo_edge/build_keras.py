"""``zo-edge build --model FILE.keras --data FILE.npz``: a user's trained Keras model as a run folder.

The model gets the zoo's residual adapters on the named layers' outputs and a classifier resized to
the scenario (``zo_edge.keras_edit``); ``--epochs N`` fine-tunes the whole model on the base task first,
``--epochs 0`` (the default) takes it as given and fits only the classifier's base rows. Then the zoo's
path: int8 with headroom for every trainable tensor (``zo_edge.quantize``), the plan, the report, the
run folder (``zo_edge.build``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from zo_edge.errors import ZoEdgeError
from zo_edge.outputs import check_output_folder

CLASSIFIER_FIT_EPOCHS = 30  # --epochs 0: the resized classifier's base rows, on features computed once


def load_keras_model(path):
    """A user's .keras file, or a one-line error saying why it cannot be read."""
    from zo_edge.models import configure_tensorflow

    configure_tensorflow()
    import keras

    path = Path(path)
    if path.suffix != ".keras":
        raise ZoEdgeError(f"--model {path}: give a Keras 3 .keras file (model.save('my.keras')); for a .tflite "
                          "use --tflite")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises anything for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZoEdgeError(f"--model {path} cannot be loaded by Keras ({first[:160]}); save it again with "
                          "model.save('my.keras'), and register custom layers or use built-in ones") from None


def check_int8_ops(model, x, source: str) -> None:
    """Convert with a few samples and refuse, naming it, an op the int8 engine has no kernel for: a quick
    look before minutes of fine-tuning (the real conversion, with headroom, comes after)."""
    from zo_edge.engine import Engine
    from zo_edge.qgraph import QGraph
    from zo_edge.quantize import _convert

    Engine(QGraph.from_bytes(_convert(model, np.asarray(x[:8], dtype=np.float32)), source=source))


def build_from_keras(out_dir, model_path, data, *, scenario: str = "class-il", base_classes=None,
                     classes_per_task=None, tasks=None, adapter_at=None, adapter_width: int = 8, classifier=None,
                     epochs: int = 0, seed: int = 0, force: bool = False, log=print, quant_config=None):
    """Build a run folder from a Keras model and an npz (module docstring); return the ``RunFolder``."""
    from zo_edge import keras_edit, models
    from zo_edge.build import int8_accuracy, load_data, make_stream, run_meta, write_run
    from zo_edge.quantize import QuantConfig, quantize_model

    log = log or (lambda *_: None)
    inputs = (model_path, data)
    out = check_output_folder(out_dir, "run", force, inputs)  # before any training, not after
    started = time.perf_counter()
    user = load_keras_model(model_path)
    if len(user.inputs) != 1:
        raise ZoEdgeError(f"--model {model_path} has {len(user.inputs)} inputs; zo-edge trains one-input models")
    input_shape = tuple(int(d) for d in user.inputs[0].shape[1:])
    # everything a user can get wrong is checked before the first progress line and before any training:
    # the data, the stream, the adapter places and the classifier, and whether every op has an int8 kernel
    ds = load_data(None, data, seed, input_shape=input_shape)
    sc = make_stream(ds, scenario, seed, base_classes, classes_per_task, tasks)
    model, info = keras_edit.attach_adapters(user, at=adapter_at, width=adapter_width, classifier=classifier,
                                             num_classes=sc.num_classes, seed=seed)
    check_int8_ops(model, sc.base.x_train, f"{model_path} as int8")
    log(f"{data}: {len(ds.y_train)} training and {len(ds.y_test)} test samples of {list(input_shape)}, "
        f"{ds.num_classes} classes; {sc.name} stream of {len(sc.tasks)} tasks after the base task")
    log(f"{len(info['adapters'])} adapter(s) on {', '.join(a['at'] for a in info['adapters'])} "
        f"(width {adapter_width}); classifier {info['classifier']['replaces']!r} -> {sc.num_classes} classes")
    if epochs:
        log(f"fine-tuning the whole model on the base task {sc.base.name!r} for {epochs} epochs")
        fit = keras_edit.fine_tune(model, sc.base, epochs=epochs, seed=seed)
    else:
        log(f"fitting the classifier on the base task {sc.base.name!r} (the backbone as given)")
        fit = keras_edit.fit_classifier(model, sc.base, epochs=CLASSIFIER_FIT_EPOCHS, seed=seed)
    fit = {**fit, "mode": "fine-tune" if epochs else "classifier only", **models.evaluate_base(model, sc.base)}
    log(f"base-class test accuracy {fit['base_accuracy']:.3f} (float)")

    adapters = [{"down": a["down"], "up": a["up"], "add": a["add"]} for a in info["adapters"]]
    quantized = quantize_model(model, sc.base.x_train, config=quant_config or QuantConfig(), seed=seed,
                               adapters=adapters, classifier="classifier")
    acc8 = int8_accuracy(quantized.tflite, quantized.plan, sc.base.x_test, sc.base.y_test, sc.base.classes)
    log(f"int8 model: {len(quantized.tflite)} bytes, base-class test accuracy in TFLM {acc8['accuracy']:.3f}")
    settings = {
        "source": "keras", "dataset": ds.name, "scenario": scenario, "seed": int(seed),
        "model_file": str(Path(model_path).resolve()), "adapter_at": [a["at"] for a in info["adapters"]],
        "adapter_width": int(adapter_width), "classifier": info["classifier"]["replaces"], "epochs": int(epochs),
        "base_classes": len(sc.base.classes), "classes_per_task": sc.meta.get("classes_per_task"),
    }
    model_meta = {"arch": f"user: {Path(model_path).name}", "params": info["params"], "adapter": {
                      "present": bool(info["adapters"]), "count": len(info["adapters"]), "adapters": info["adapters"]},
                  "classifier": info["classifier"], "input_shape": list(input_shape),
                  "num_classes": int(sc.num_classes)}
    meta = run_meta(settings=settings, ds=ds, sc=sc, model=model_meta, plan=quantized.plan, quantized=quantized,
                    pretrain=fit, acc8=acc8)
    return write_run(out, force, inputs, meta, quantized, ds, sc, keras_model=model, log=log, started=started)
