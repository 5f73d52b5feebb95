"""``zo-edge verify-firmware``: build an exported folder, run it, and compare it with the simulator.

The app (``templates/app_main.c.j2``) infers its embedded test samples, then runs the embedded
training batches and dumps its learned state every few steps. The simulator replays the same
samples and batches (``export.json``) with an ``Int8Learner`` of the same configuration; every logits
byte and every state byte must be equal. On an mps2 board the app also reports exact instruction
counts (QEMU ``-icount``, FPGAIO counter) per inference, per step and per phase of a step.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from zo_edge.errors import ZoEdgeError


def _differing(a: bytes, b: bytes) -> int:
    if len(a) != len(b):
        return max(len(a), len(b))
    return int(np.count_nonzero(np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8)))


def _graph_outputs(learner, x) -> np.ndarray:
    """The whole graph's output for float samples x with the learner's current trainable values."""
    (out,), _ = learner.engine.run(learner.engine.quantize_input(x), constants=learner.constants())
    return out.reshape(len(x), -1)


def _observed_states(meta: dict, steps: int) -> list[int]:
    """The steps k (0-based) after which the app prints its state, among the first ``steps``."""
    exported, every = meta["train"]["steps"], meta["train"]["every"]
    return [k for k in range(steps) if (k + 1) % every == 0 or k + 1 == exported]


def _check_sources(fw_dir: Path) -> None:
    """Every C source and header the export wrote is still there (the build is from the folder's sources:
    a deleted file must not be stood in for by an old object)."""
    from zo_edge.outputs import read_marker

    marker = read_marker(fw_dir) or {}
    missing = sorted(f for f in marker.get("files", {}) if f.endswith((".c", ".h", "Makefile", ".ld"))
                     and not (fw_dir / f).is_file())
    if missing:
        raise ZoEdgeError(f"{fw_dir} lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}, which the "
                          "export wrote; export the firmware again")


def _run_app(fw_dir: Path, board: str, timeout_s: float, compiler, kernels, log):
    """Rebuild the app from the folder's sources, run it, parse its records: (elf, AppOutput, seconds)."""
    from firmware_export.board import BOARDS, build
    from firmware_export.qemu import parse_output, run_host, run_qemu

    _check_sources(fw_dir)
    # always from the folder's sources
    exe = build(fw_dir, board, log=log, compiler=compiler, kernels=kernels, rebuild=True)
    log(f"running {exe.name} on {board}" + (" in QEMU" if BOARDS[board].machine else ""))
    t0 = time.perf_counter()
    result = run_qemu(exe, board, timeout_s) if BOARDS[board].machine else run_host(exe, timeout_s)
    seconds = time.perf_counter() - t0
    app = parse_output(result.stdout)
    if app.errors or app.status != 0 or result.status != 0:
        detail = app.errors[0] if app.errors else f"exit status {result.status}"
        raise ZoEdgeError(f"the firmware on {board} failed: {detail}")
    return exe, app, seconds


def _compare_outputs(app, want: np.ndarray) -> list[int]:
    """[differing, compared] bytes of the app's L records against the expected outputs [N, bytes]."""
    part = [0, 0]
    for i, row in enumerate(want):
        part[0] += _differing(app.logits.get(i, b""), row.astype(np.int8).tobytes())
        part[1] += len(row)
    return part


def verify_firmware(fw_dir, board: str = "mps2-an386", steps: int | None = None, timeout_s: float = 600,
                    compiler: str | None = None, log=print, kernels: str = "optimised") -> dict:
    """Rebuild, run and compare (module docstring). Raises a one-line ZoEdgeError when nothing could be
    compared or the app did not show what was asked; returns the report (``differing_bytes`` > 0 when
    the firmware and the simulator differ). ``kernels``: "optimised" (the board core's DSP or MVE paths)
    or "reference" (the reference loops on any core: ``board.build``)."""
    from firmware_export.board import BOARDS
    from firmware_export.export import read_export

    fw_dir = Path(fw_dir)
    if board not in BOARDS:
        raise ZoEdgeError(f"unknown board {board!r} (--board); known: {', '.join(BOARDS)}")
    meta = read_export(fw_dir)
    verify = _verify_inference if meta["kind"] == "inference" else _verify_training
    report = verify(fw_dir, meta, board, steps, timeout_s, compiler, kernels, log)
    report["kernels"] = kernels
    return report


def _verify_inference(fw_dir, meta, board, steps, timeout_s, compiler, kernels, log) -> dict:
    """An inference export: the app's output for every embedded sample against the engine's, and the
    engine's against TFLM's on the same samples."""
    from firmware_export.infer_export import read_inference_export
    from zo_edge.engine import Engine
    from zo_edge.tflm import TflmOracle

    if steps:
        raise ZoEdgeError(f"{fw_dir} is inference firmware (exported with --tflite): it has no training steps to "
                          "verify; leave out --steps")
    graph, x = read_inference_export(fw_dir, meta)
    exe, app, seconds = _run_app(fw_dir, board, timeout_s, compiler, kernels, log)
    (want,), _ = Engine(graph).run(x)
    want = np.ascontiguousarray(want).reshape(len(x), -1)
    (tflm,), _ = TflmOracle(graph.model_bytes).run([x])
    tflm = np.ascontiguousarray(tflm).reshape(want.shape).astype(want.dtype)
    per_part = {"outputs": _compare_outputs(app, want),
                "engine_vs_tflm": [int(np.count_nonzero(want.view(np.uint8) != tflm.view(np.uint8))), want.size]}
    report = _report(fw_dir, board, per_part, samples=len(want), steps=0, states=0, seconds=seconds, app=app,
                     kind="inference")
    _add_counts(report, app, graph, exe, board)
    return report


def _verify_training(fw_dir, meta, board, steps, timeout_s, compiler, kernels, log) -> dict:
    """A training export: every inference output and the learned state where the app prints it, against an
    Int8Learner of the same configuration replaying the same batches."""
    from firmware_export.export import learner_config, run_dir_of
    from firmware_export.train_export import state_blob
    from zo_edge.build import load_run
    from zo_edge.learners import make_learner

    exported, every = meta["train"]["steps"], meta["train"]["every"]
    steps = exported if steps is None else steps
    if not 0 <= steps <= exported:
        raise ZoEdgeError(f"{fw_dir} embeds {exported} training steps; --steps {steps} needs a new export "
                          f"(`zo-edge export ... --steps {steps}`)")
    observed = _observed_states(meta, steps)
    if steps and not observed:
        raise ZoEdgeError(f"--steps {steps} ends before the first state the app prints (after step {min(every, exported)}:"
                          f" it prints every {every} steps); use --steps {min(every, exported)} or more, or export "
                          f"with --every {steps}")
    if steps == 0 and meta["samples"]["count"] == 0:
        raise ZoEdgeError(f"{fw_dir} embeds no test samples and --steps 0 compares no state: nothing to compare; "
                          "export with --samples N or verify some steps")
    run = load_run(run_dir_of(fw_dir, meta))
    config = learner_config(meta)
    exe, app, seconds = _run_app(fw_dir, board, timeout_s, compiler, kernels, log)

    # the simulator, on the same samples and batches
    learner = make_learner(run, config)
    x_test = run.dataset.x_test[: meta["samples"]["count"]]
    # the app prints the graph's output (the logits, or the SOFTMAX after them), as zoedge_infer returns it
    want_logits = _graph_outputs(learner, x_test) if len(x_test) else np.zeros((0, 0), np.int8)
    per_part = {"logits": _compare_outputs(app, want_logits), "state": [0, 0]}
    task = next(t for t in run.scenario.tasks if int(t.index) == meta["train"]["task"])
    if steps:
        learner.begin_task(task)
        allowed = np.isin(np.arange(learner.num_classes), task.classes)
        counters = dict(forward_passes=0, prefix_passes=0, suffix_passes=0, macs=0, saturation_events=0)
        for k in range(steps):
            idx = np.asarray(meta["train"]["batches"][k])
            learner.train_step(idx, task.y_train[idx], allowed, meta["train"]["epochs"][k], counters)
            learner.step += 1
            if k in observed:
                got = app.states.get(k)
                if got is None:
                    raise ZoEdgeError(f"the firmware printed no state after step {k + 1}; it stopped early or was "
                                      "built from other sources — export it again")
                want = state_blob(learner)
                per_part["state"][0] += _differing(got, want)
                per_part["state"][1] += len(want)
    report = _report(fw_dir, board, per_part, samples=len(want_logits), steps=steps, states=len(observed),
                     seconds=seconds, app=app)
    _add_counts(report, app, run.graph, exe, board, meta=meta, config=config, steps=steps, split_macs=learner.macs)
    return report


def _report(fw_dir, board, per_part, samples, steps, states, seconds, app, kind="training") -> dict:
    differing = sum(v[0] for v in per_part.values())
    compared = sum(v[1] for k, v in per_part.items() if k != "engine_vs_tflm")
    if compared == 0:
        raise ZoEdgeError(f"nothing was compared on {board} (0 bytes): the app printed no outputs or state; "
                          "export the firmware again")
    return {
        "board": board,
        "fw_dir": str(fw_dir),
        "kind": kind,
        "differing_bytes": differing,
        "compared_bytes": compared,
        "compared": {k: {"differing_bytes": v[0], "compared_bytes": v[1]} for k, v in per_part.items()},
        "samples": samples,
        "steps": steps,
        "states_compared": states,
        "seconds": round(seconds, 2),
        "stack_bytes": app.stack_bytes,
    }


def op_rows(graph, op_instructions: dict) -> list[dict]:
    """One row per op of the graph: index, op type, kernel path (``zo_edge.kernel_spec``; "alias" or "folded"
    for ops without C), MACs per sample (``zo_edge.cost.op_macs``) and the instructions the app measured for
    it (None where it measured none)."""
    from firmware_export.model_export import FOLDED_OPS
    from zo_edge import kernel_spec
    from zo_edge.cost import op_macs
    from zo_edge.engine import Engine
    from zo_edge.planner import ALIAS_OPS

    rows = []
    for step in Engine(graph).steps:
        op = step.op
        if op.opcode in ALIAS_OPS or op.opcode in FOLDED_OPS:
            path = "alias" if op.opcode in ALIAS_OPS else "folded"
        else:
            path = kernel_spec.layer(op, graph, step.params).path
        n = op_instructions.get(op.index)
        rows.append({"index": op.index, "op": op.opcode, "path": path, "macs": op_macs(op, graph),
                     "instructions": None if n is None else int(n)})
    return rows


def _add_counts(report, app, graph, exe, board, meta=None, config=None, steps=0, split_macs=None) -> None:
    """Instructions (per inference, per step and phase, per op) and MACs beside them, and the ELF's memory."""
    from firmware_export.board import BOARDS
    from firmware_export.measure import split_sizes
    from zo_edge.cost import op_macs

    inference_macs = sum(op_macs(op, graph) for op in graph.ops)
    report["macs"] = {"inference": inference_macs}
    if split_macs is not None and steps:
        passes = _suffix_passes(meta, config, steps)
        prefix = config.batch_size * split_macs["prefix"]
        suffix = int(np.mean(passes)) * split_macs["suffix"]
        report["macs"].update(train_step=prefix + suffix, breakdown={"prefix": prefix, "suffix": suffix})
    if app.counts_instructions:
        infer = list(app.infer_instructions.values())
        step_counts = [v for k, v in app.step_instructions.items() if k < steps]
        phases = {}
        for k, by_phase in app.phase_instructions.items():
            if k < steps:
                for name, v in by_phase.items():
                    phases.setdefault(name, []).append(v)
        report["instructions"] = {
            "inference": int(np.mean(infer)) if infer else None,
            "train_step": int(np.mean(step_counts)) if step_counts else None,
            "breakdown": {name: int(np.mean(v)) for name, v in phases.items()},
        }
        if infer and inference_macs:
            report["instructions"]["per_mac"] = round(float(np.mean(infer)) / inference_macs, 3)
        if step_counts and "suffix" in phases:
            report["instructions"]["cost"] = _step_cost(meta, config, steps, phases, step_counts)
        report["ops"] = op_rows(graph, app.op_instructions)
    if BOARDS[board].machine:
        parts = split_sizes(exe)
        report["memory"] = {
            "library": {k: parts["library"][k] for k in ("flash_bytes", "ram_static_bytes")},
            "app": {k: parts["app"][k] for k in ("flash_bytes", "ram_static_bytes")},
            "stack_high_water_bytes": app.stack_bytes,
            "note": "library = the zo-edge objects and the runtime helpers they use (what your firmware links); "
                    "app = the example app with its embedded samples and batches, the board layer and startup",
        }


def _suffix_passes(meta, config, steps) -> list[int]:
    """Suffix passes of each of the first ``steps`` steps: 2q probes per sample (zeroth order) and one
    more where the classifier trains."""
    probes = 2 * config.q if config.method in ("zo-fc", "zo") else 0
    return [config.batch_size * (probes + int(config.trains_classifier(e))) for e in meta["train"]["epochs"][:steps]]


STEP_COST_BOUND = 1.15  # what perturbing, the loss and the classifier step may add over the suffix passes


def _step_cost(meta, config, steps, phases, step_counts) -> dict:
    """A step against its floor: B prefix passes + (2q+1)·B suffix passes + the update. ``ratio`` =
    (step − prefix) / ((2q+1)·B·suffix pass + update): what perturbing, the loss and the classifier
    step add on top of the suffix passes themselves (the issue's bound is 1.15)."""
    passes = _suffix_passes(meta, config, steps)
    suffix_pass = sum(phases["suffix"]) / max(sum(passes), 1)
    prefix = float(np.mean(phases.get("prefix", [0])))
    update = float(np.mean(phases.get("update", [0])))
    step = float(np.mean(step_counts))
    floor = (2 * config.q + 1) * config.batch_size * suffix_pass + update
    ratio = round((step - prefix) / floor, 4) if floor else None
    return {"suffix_pass": int(round(suffix_pass)), "prefix_per_sample": int(round(prefix / config.batch_size)),
            "update": int(round(update)), "ratio": ratio, "bound": STEP_COST_BOUND,
            "within_bound": None if ratio is None else ratio <= STEP_COST_BOUND}


def format_report(report: dict) -> str:
    verdict = "identical" if report["differing_bytes"] == 0 else "DIFFERENT"
    what = (f"{report['samples']} inferences against the engine, the engine against TFLM"
            if report.get("kind") == "inference" else
            f"{report['samples']} inferences, the state at {report['states_compared']} points of "
            f"{report['steps']} training steps")
    lines = [f"{report['board']}: {report['differing_bytes']} of {report['compared_bytes']} bytes differ ({verdict}; "
             f"{what})"]
    for part, c in report["compared"].items():
        lines.append(f"  {part.replace('_', ' '):14s} {c['differing_bytes']} of {c['compared_bytes']} bytes differ")
    ins = report.get("instructions")
    if ins:
        per_mac = f" ({ins['per_mac']:.2f} per MAC of {report['macs']['inference']:,})" if ins.get("per_mac") else ""
        lines.append(f"  instructions per inference {ins['inference']:,}{per_mac}"
                     + (f", per training step {ins['train_step']:,}" if ins["train_step"] else ""))
        by_type = {}
        for row in report.get("ops", []):
            if row["instructions"]:
                entry = by_type.setdefault(f"{row['op']} {row['path']}", [0, 0])
                entry[0] += row["instructions"]
                entry[1] += row["macs"]
        for name, (n, macs) in sorted(by_type.items(), key=lambda kv: -kv[1][0]):
            lines.append(f"    {name:32s} {n:>12,}" + (f"  {n / macs:5.2f} per MAC" if macs else ""))
        if ins["breakdown"]:
            lines.append("  per phase of a training step:")
        for name, v in ins["breakdown"].items():
            lines.append(f"    {name:10s} {v:>14,}")
        cost = ins.get("cost")
        if cost and cost["ratio"] is not None:
            verdict = "within" if cost["within_bound"] else "ABOVE"
            lines.append(f"  one suffix pass {cost['suffix_pass']:,}, prefix {cost['prefix_per_sample']:,} per sample; "
                         f"(step - prefix) / ((2q+1)·B·suffix + update) = {cost['ratio']:.3f}, {verdict} the bound "
                         f"{cost['bound']:g}")
    mem = report.get("memory")
    if mem:
        lib, app = mem["library"], mem["app"]
        lines.append(f"  zo-edge library: {lib['flash_bytes']:,} bytes flash, {lib['ram_static_bytes']:,} bytes static RAM, "
                     f"stack used {mem['stack_high_water_bytes']:,}; the example app adds {app['flash_bytes']:,} flash "
                     f"and {app['ram_static_bytes']:,} RAM (its embedded samples and batches: not part of your firmware)")
    return "\n".join(lines)
