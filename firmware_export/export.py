"""``zo-edge export``: one firmware folder from a run folder and a learner configuration.

The folder holds the model (``model_export``), the integer twin of the learner's arithmetic
(``fixed_export``), the train step (``train_export``), persistence (``persist``), and the example app
with its Makefile, linker script, startup and README (``board``). The app embeds test samples and a
stream of full training batches from the run's scenario; ``export.json`` records which, so that
``zo-edge verify-firmware`` can replay exactly that stream in the simulator.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from zo_edge.errors import ZoEdgeError
from zo_edge.outputs import check_output_folder, write_folder

FORMAT = "zo-edge/firmware@1"


def training_stream(run, config, steps: int, seed: int = 0):
    """Full batches from the run's first continual task, in the simulator's shuffled order: (task,
    [(sample indices, epoch)] per step). The device takes full batches only, so a partial last batch
    of an epoch is skipped."""
    task = run.scenario.tasks[0]
    n, batch = len(task.y_train), config.batch_size
    per_epoch = n // batch
    if per_epoch == 0:
        raise ZoEdgeError(f"task {task.name!r} has {n} training samples, fewer than one batch of {batch}; "
                          "export with a smaller --batch-size")
    stream = []
    epoch = 0
    while len(stream) < steps:
        order = np.random.default_rng([seed, int(task.index), epoch]).permutation(n)
        for k in range(per_epoch):
            if len(stream) < steps:
                stream.append((np.sort(order[k * batch : (k + 1) * batch]), epoch))
        epoch += 1
    return task, stream


def export_firmware(run_dir, out_dir, config, target: str = "cortex-m4", samples: int = 8, steps: int = 10,
                    every: int = 5, force: bool = False, inputs=(), log=print) -> dict:
    """Write the firmware folder (module docstring) for a run and a learner configuration; return the
    export.json content. ``inputs``: further files the command read (a config file), which ``out_dir``
    may not replace, any more than the run folder."""
    from firmware_export.board import TARGETS, render_build_files
    from firmware_export.fixed_export import render_fixed
    from firmware_export.model_export import render_model
    from firmware_export.persist import render_persist
    from firmware_export.train_export import render_train
    from zo_edge.build import load_run

    if target not in TARGETS:
        raise ZoEdgeError(f"unknown target {target!r} (--target); known: {', '.join(TARGETS)}")
    config.check()
    if config.method == "fo":
        raise ZoEdgeError("--method fo (backprop through the adapter) has no firmware: a device does not run a "
                          "backward pass; export zo-fc, zo, head or frozen (`zo-edge profile --method fo` shows "
                          "what backprop would cost)")
    if config.mode != "int8":
        raise ZoEdgeError(f"--mode {config.mode} has no firmware; the device runs int8 mode (--mode int8)")
    for name, value in (("samples", samples), ("steps", steps), ("every", every)):
        if value < (1 if name == "every" else 0):
            raise ZoEdgeError(f"--{name} must be {'>= 1' if name == 'every' else '>= 0'} (got {value})")
    inputs = (run_dir, *inputs)
    out = check_output_folder(out_dir, "firmware", force, inputs)
    run = load_run(run_dir)
    graph = run.graph
    with write_folder(out, "firmware", force, inputs) as tmp:
        model = render_model(graph, run.plan, tmp)
        render_fixed(tmp)
        train = render_train(run, config, tmp)
        render_persist(tmp, state_tag=train.state_tag)
        engine = train.learner.engine
        dataset_x, dataset_y = _test_samples(run, samples)
        x = engine.quantize_input(dataset_x)
        task, stream = training_stream(run, config, steps, seed=config.seed)
        x_train = engine.quantize_input(task.x_train)
        allowed = np.isin(np.arange(train.learner.num_classes), task.classes).astype(np.uint8)
        batches = dict(
            inputs=np.stack([x_train[idx] for idx, _ in stream]) if stream else np.zeros((0, config.batch_size) + x.shape[1:], np.int8),
            labels=np.stack([task.y_train[idx] for idx, _ in stream]) if stream else np.zeros((0, config.batch_size)),
            allowed=np.tile(allowed, (len(stream), 1)),
            classifier=np.array([int(config.trains_classifier(epoch)) for _, epoch in stream]),
            epoch=np.array([int(epoch) for _, epoch in stream]),
            every=every,
        )
        render_build_files(tmp, x, source=run.tflite_path.name, default_target=target,
                           sample_note=f"the first {len(x)} test recordings of {run.settings['dataset']}",
                           train=batches if stream else None,
                           memory=[("activation arena", model.arena.size), ("training state", train.state_bytes)])
        meta = {
            "format": FORMAT,
            "kind": "training",
            "run_dir": str(run.path.resolve()),
            # the same, from the firmware folder: found again when both are moved together
            "run_dir_relative": os.path.relpath(run.path.resolve(), Path(out).resolve()),
            "target": target,
            "learner": config.to_json(),
            "samples": {"count": int(len(x)), "labels": [int(v) for v in dataset_y]},
            "train": {"task": int(task.index), "steps": len(stream), "every": every,
                      "batches": [[int(i) for i in idx] for idx, _ in stream],
                      "epochs": [int(e) for _, e in stream]},
            "state_bytes": int(train.state_bytes),
            "arena_bytes": int(model.arena.size),
        }
        (tmp / "export.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"wrote {out}: {len(list(out.iterdir()))} files, {len(x)} samples, {len(stream)} training steps "
        f"({config.method}, batch {config.batch_size}, q {config.q})")
    return meta


def _test_samples(run, count: int):
    return run.dataset.x_test[:count], run.dataset.y_test[:count]


def read_export(fw_dir) -> dict:
    path = Path(fw_dir) / "export.json"
    if not path.is_file():
        raise ZoEdgeError(f"{fw_dir} has no export.json; create the folder with `zo-edge export RUN_DIR --out {fw_dir}`")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ZoEdgeError(f"{path} is not valid JSON ({exc.msg}); export the firmware again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ZoEdgeError(f"{path} is not a zo-edge firmware export ({FORMAT}); export the firmware again")
    meta.setdefault("kind", "training")  # exports before --tflite carry no kind
    train, samples = meta.get("train"), meta.get("samples")
    if meta["kind"] == "inference":
        checks = (
            ("model", isinstance(meta.get("model"), str)),
            ("model_sha256", isinstance(meta.get("model_sha256"), str)),
            ("samples.count", isinstance(samples, dict) and isinstance(samples.get("count"), int)),
            ("samples.file", isinstance(samples, dict) and isinstance(samples.get("file"), str)),
        )
    elif meta["kind"] == "training":
        checks = ()
    else:
        raise ZoEdgeError(f"{path}: kind {meta['kind']!r} is not inference or training; export the firmware again")
    problems = [key for key, ok in checks if not ok]
    if problems:
        raise ZoEdgeError(f"{path}: {problems[0]} is missing or malformed; export the firmware again")
    if meta["kind"] == "inference":
        return meta
    problems = [key for key, ok in (
        ("run_dir", isinstance(meta.get("run_dir"), str)),
        ("learner", isinstance(meta.get("learner"), dict)),
        ("samples.count", isinstance(samples, dict) and isinstance(samples.get("count"), int)),
        ("train.steps", isinstance(train, dict) and isinstance(train.get("steps"), int)),
        ("train.every", isinstance(train, dict) and isinstance(train.get("every"), int) and train["every"] >= 1),
        ("train.task", isinstance(train, dict) and isinstance(train.get("task"), int)),
        ("train.batches", isinstance(train, dict) and isinstance(train.get("batches"), list)
         and len(train["batches"]) == train.get("steps")),
        ("train.epochs", isinstance(train, dict) and isinstance(train.get("epochs"), list)
         and len(train["epochs"]) == train.get("steps")),
    ) if not ok]
    if problems:
        raise ZoEdgeError(f"{path}: {problems[0]} is missing or malformed; export the firmware again")
    return meta


def run_dir_of(fw_dir, meta: dict) -> Path:
    """The run folder a firmware folder was exported from: beside it as at export, else where it was."""
    relative = meta.get("run_dir_relative")
    if relative is not None and (Path(fw_dir) / relative / "run.json").is_file():
        return Path(fw_dir) / relative
    return Path(meta["run_dir"])


def learner_config(meta: dict):
    from zo_edge.learners import LearnerConfig

    names = {f.name for f in dataclasses.fields(LearnerConfig)}
    return LearnerConfig(**{k: v for k, v in meta["learner"].items() if k in names})
