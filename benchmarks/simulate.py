"""ZO-FC int8 training: the simulator against the loops one would write without it, side by side.

    python benchmarks/simulate.py [--run runs/kws] [--q 4] [--batch 48] [--seeds 3] [--steps 30]
                                  [--tflm-steps 2] [--litert-steps 4] [--json]

One step of ZO-FC over a batch of B samples = one unperturbed pass (the classifier's first-order
step) + 2q passes with the adapter perturbed by ±k int8 steps (Rademacher signs).

* simulator, per step: ``Int8Learner.train_step`` (the 2q probes as one stacked suffix call of the
  engine, the losses and the integer updates); the frozen prefix of the task's samples is timed
  apart (it runs once per sample, ``zo_edge.prefix_cache``).
* simulator, whole run: ``sim.runner.simulate`` of the run's scenario over ``--seeds`` seeds (every
  task, every epoch, every evaluation), timed end to end with an empty prefix cache: the prefix of
  every training and test set is paid once inside the timing.
* TFLM loop: for each of the 2q+1 weight settings of a step, patch the adapter (and classifier)
  bytes into the .tflite, create a TFLM interpreter, invoke it once per sample on the whole model.
  Its logits are checked equal to the simulator's, byte for byte (not timed).
* LiteRT loops (XNNPACK, and without a delegate): for each setting, patch the bytes, create a LiteRT
  interpreter for a batch of B, invoke it once on the whole batch and the whole model. Not bit-exact
  with TFLM (the count of differing logit bytes is printed).
* the whole-run ratio: the loops doing the same steps (steps of the whole run × their time per step;
  their evaluations are not charged to them) against the simulator's whole run.
* the suffix profile: milliseconds per op of one stacked probe call, what bounds the simulator.

Every interpreter runs on one thread, as the simulator does. Times are this process's CPU time by
default (``--clock wall`` for elapsed time): on a machine shared with other work, elapsed times move
with its load several-fold, CPU times much less. The ratios, measured side by side in one run, are
what the README quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zo_edge.learners import LearnerConfig, make_learner  # noqa: E402
from zo_edge.litert import schema  # noqa: E402
from zo_edge.qgraph import QGraph  # noqa: E402
from zo_edge.run_folder import load_run  # noqa: E402


def buffer_slices(model: bytes, tensor_indices) -> dict[int, tuple[int, int]]:
    """{tensor index: (byte offset, byte count)} of each constant tensor's data in the flatbuffer."""
    m = schema().Model.GetRootAs(model, 0)
    base = np.frombuffer(model, np.uint8).ctypes.data
    out = {}
    for t in tensor_indices:
        b = m.Buffers(m.Subgraphs(0).Tensors(t).Buffer())
        if b.Offset() > 1:  # data stored after the flatbuffer
            out[t] = (b.Offset(), b.Size())
        else:  # an inline vector: DataAsNumpy is a view into `model`
            out[t] = (b.DataAsNumpy().ctypes.data - base, b.DataLength())
    return out


def patched(model: bytes, slices: dict, constants: dict) -> bytes:
    buf = bytearray(model)
    for t, (off, n) in slices.items():
        raw = np.ascontiguousarray(constants[t]).tobytes()
        assert len(raw) == n, (t, len(raw), n)
        buf[off : off + n] = raw
    return bytes(buf)


def masked_ce(logits_q, y, allowed, scale, zero_point) -> float:
    z = (logits_q.astype(np.float64) - zero_point) * scale
    z = np.where(allowed, z, -np.inf)
    zmax = z.max(axis=1, keepdims=True)
    lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
    return float((lse - z[np.arange(len(y)), y]).mean())


def now() -> float:
    """The benchmark's clock: CPU time of this process (``--clock cpu``, default) or wall time."""
    return CLOCK()


CLOCK = time.process_time


class Bench:
    """One learner on the run's first continual task, and the weight settings of its steps."""

    def __init__(self, run, q: int, batch: int, steps: int):
        self.run = run
        self.L = make_learner(run, LearnerConfig(method="zo-fc", mode="int8", q=q, batch_size=batch, epochs=1,
                                                 fc_epochs=1))  # epoch 0 < fc_epochs: the classifier trains too
        self.task = run.scenario.tasks[0]
        self.allowed = np.zeros(self.L.num_classes, bool)
        self.allowed[self.task.classes] = True
        self.y_all = np.asarray(self.task.y_train, np.int64)
        order = np.random.default_rng(0).permutation(len(self.y_all))
        self.batches = np.sort(np.resize(order, steps * batch).reshape(steps, batch), axis=1)
        self.steps_per_epoch = -(-len(self.y_all) // batch)
        self.slices = buffer_slices(run.tflite, self.L.constants())
        self.logit_quant = self.L.graph.tensors[run.plan.classifier.logits].scalar_quant()

    def settings(self) -> list[dict]:
        """The 2q+1 constant sets of the current step: unperturbed, then +z_0, -z_0, ..."""
        L = self.L
        rows, _ = L.zo.probes(L.perturbation(L.step), L.steps_k)
        return [L.constants()] + [{**L.constants(), **L.zo.constants(r)} for r in rows]

    def mismatched(self, idx, settings, logits) -> int:
        """Logit bytes in which a loop differs from the simulator at these settings (not timed)."""
        if not hasattr(self.L, "_train_boundary"):
            self.L.begin_task(self.task)
        boundary = {k: v[idx] for k, v in self.L._train_boundary.items()}
        return sum(int(np.count_nonzero(self.L.split.run_suffix(boundary, constants=c)[0][0].reshape(len(idx), -1) != got))
                   for c, got in zip(settings, logits))


def time_simulator_steps(b: Bench, steps: int) -> dict:
    t0 = now()
    b.L.begin_task(b.task)
    prefix = now() - t0
    counters = {"saturation_events": 0, "forward_passes": 0, "prefix_passes": 0, "suffix_passes": 0, "macs": 0}
    t0 = now()
    for idx in b.batches[:steps]:
        b.L.train_step(idx, b.y_all[idx], b.allowed, 0, counters)
        b.L.step += 1
    return {"ms_per_step": 1e3 * (now() - t0) / steps, "prefix_ms": 1e3 * prefix}


def time_tflm_loop(b: Bench, steps: int) -> dict:
    from tflite_micro.python.tflite_micro import runtime

    x_all = b.L.engine.quantize_input(b.task.x_train)
    spent = invoke = create = 0.0
    invokes = mismatched = 0
    for idx in b.batches[:steps]:
        y, x = b.y_all[idx], x_all[idx]
        settings, logits = b.settings(), []
        t0 = now()
        for consts in settings:
            buf = patched(b.run.tflite, b.slices, consts)
            c0 = now()
            it = runtime.Interpreter.from_bytes(buf, arena_size=max(16 * len(buf), 1 << 20))
            c1 = now()
            out = []
            for i in range(len(y)):
                it.set_input(x[i : i + 1], 0)
                it.invoke()
                out.append(np.array(it.get_output(0)).reshape(-1))
            create += c1 - c0
            invoke += now() - c1
            invokes += len(y)
            logits.append(np.stack(out))
            masked_ce(logits[-1], y, b.allowed, *b.logit_quant)
        spent += now() - t0
        g = QGraph.from_bytes(buf)  # not timed: the patch reads back, and the logits are the simulator's
        assert all(np.array_equal(g.tensors[t].data, consts[t]) for t in b.slices), "patch did not read back"
        mismatched += b.mismatched(idx, settings, logits)
        b.L.step += 1
    return {"ms_per_step": 1e3 * spent / steps, "us_per_invoke": 1e6 * invoke / invokes,
            "ms_per_interpreter": 1e3 * create / (len(settings) * steps), "logit_bytes_differing": mismatched}


def time_litert_loop(b: Bench, steps: int, delegate: bool) -> dict:
    from zo_edge.litert import interpreter_module

    lite = interpreter_module()
    options = {} if delegate else {"experimental_op_resolver_type": lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    x_all = b.L.engine.quantize_input(b.task.x_train)
    spent = create = 0.0
    mismatched = compared = 0
    for idx in b.batches[:steps]:
        y, x = b.y_all[idx], x_all[idx]
        settings, logits = b.settings(), []
        t0 = now()
        for consts in settings:
            c0 = now()
            it = lite.Interpreter(model_content=patched(b.run.tflite, b.slices, consts), num_threads=1, **options)
            detail = it.get_input_details()[0]
            it.resize_tensor_input(detail["index"], [len(y)] + list(detail["shape"][1:]))
            it.allocate_tensors()
            create += now() - c0
            it.set_tensor(detail["index"], x)
            it.invoke()
            logits.append(it.get_tensor(it.get_output_details()[0]["index"]).reshape(len(y), -1))
            masked_ce(logits[-1], y, b.allowed, *b.logit_quant)
        spent += now() - t0
        mismatched += b.mismatched(idx, settings, logits)
        compared += sum(v.size for v in logits)
        b.L.step += 1
    return {"ms_per_step": 1e3 * spent / steps, "ms_per_interpreter": 1e3 * create / (len(settings) * steps),
            "logit_bytes_differing": mismatched, "logit_bytes_compared": compared}


def suffix_profile(b: Bench, repeats: int = 10) -> list[dict]:
    """Milliseconds per op (median) of one stacked call of the 2q probes over a batch, as
    ``SplitEngine.run_suffix(stack=2q)`` runs them (``Engine._execute_stacked``, one op at a time)."""
    L = b.L
    if not hasattr(L, "_train_boundary"):
        L.begin_task(b.task)
    batch = {k: v[b.batches[0]] for k, v in L._train_boundary.items()}
    rows, _ = L.zo.probes(L.perturbation(L.step), L.steps_k)
    variants = L.zo.constants(rows)
    times = {}
    for _ in range(repeats):
        values, stacked, constants = dict(batch), set(), {**L.constants(), **variants}
        for step in L.split.suffix:
            t0 = now()
            L.engine._execute_stacked([step], values, constants, len(rows), stacked)
            times.setdefault((step.op.index, step.op.opcode), []).append(now() - t0)
    return [{"op": index, "opcode": opcode, "ms": 1e3 * float(np.median(t))} for (index, opcode), t in times.items()]


def time_whole_run(run, q: int, batch: int, seeds: int) -> dict:
    from sim.runner import simulate, total_steps
    from zo_edge.prefix_cache import PrefixCache

    config = LearnerConfig(method="zo-fc", mode="int8", q=q, batch_size=batch)
    t0 = now()
    results = simulate(run, config, list(range(seeds)), prefix_cache=PrefixCache())  # an empty cache: prefix included
    seconds = now() - t0
    return {"seconds": seconds, "steps": total_steps(run, config, run.scenario, range(seeds)), "seeds": seeds,
            "average_accuracy": results["metrics"]["average_accuracy"]["mean"]}


def main() -> None:
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/kws", help="run folder made by `zo-edge build`")
    ap.add_argument("--q", type=int, default=4)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the whole-run simulate")
    ap.add_argument("--steps", type=int, default=30, help="simulator steps to time")
    ap.add_argument("--tflm-steps", type=int, default=2, help="TFLM-loop steps to time")
    ap.add_argument("--litert-steps", type=int, default=4, help="LiteRT-loop steps to time (each loop)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="cpu: this process's CPU time (steady on a shared machine); wall: elapsed time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    run = load_run(args.run)
    make_learner(run, LearnerConfig(epochs=1)).fit_task(run.scenario.tasks[0])  # compiled kernels loaded, not timed
    whole = time_whole_run(run, args.q, args.batch, args.seeds)
    loops = {}
    with threadpool_limits(1, user_api="blas"):
        steps = max(args.steps, args.tflm_steps, args.litert_steps)
        loops["simulator"] = time_simulator_steps(bench := Bench(run, args.q, args.batch, steps), args.steps)
        profile = suffix_profile(bench)
        loops["litert_xnnpack"] = time_litert_loop(Bench(run, args.q, args.batch, steps), args.litert_steps, True)
        loops["litert_no_delegate"] = time_litert_loop(Bench(run, args.q, args.batch, steps), args.litert_steps, False)
        loops["tflm"] = time_tflm_loop(Bench(run, args.q, args.batch, steps), args.tflm_steps)
    sim_ms = loops["simulator"]["ms_per_step"]
    for name, loop in loops.items():
        loop["step_ratio"] = loop["ms_per_step"] / sim_ms  # the loop's time per step over the simulator's
        loop["whole_run_seconds"] = loop["ms_per_step"] * whole["steps"] / 1e3
        loop["whole_run_ratio"] = loop["whole_run_seconds"] / whole["seconds"]
    s = run.settings
    result = {"run": args.run, "model": f"{s.get('dataset')}/{s.get('arch')}", "q": args.q, "batch": args.batch,
              "clock": args.clock,
              "forward_passes_per_step": 2 * args.q + 1, "whole_run": whole, "loops": loops, "suffix_profile": profile}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    passes = 2 * args.q + 1
    print(f"\n{result['model']}  ZO-FC int8, q={args.q}, batch {args.batch}: {passes} forward passes "
          f"({passes * args.batch} samples) per step")
    print(f"({args.clock} time) whole run: simulate, {args.seeds} seeds of the {run.scenario.name} scenario, {whole['steps']} steps, "
          f"prefix and evaluations included: {whole['seconds']:.2f} s")
    print(f"  {'':22s} {'ms/step':>9s} {'vs simulator step':>18s} {'same steps, s':>14s} {'whole run ratio':>16s}")
    names = {"simulator": "simulator (step only)", "litert_xnnpack": "LiteRT loop, XNNPACK",
             "litert_no_delegate": "LiteRT loop, no deleg.", "tflm": "TFLM loop"}
    for key, name in names.items():
        r = loops[key]
        print(f"  {name:22s} {r['ms_per_step']:9.1f} {r['step_ratio']:17.1f}x {r['whole_run_seconds']:14.1f} "
              f"{r['whole_run_ratio']:15.1f}x")
    print(f"  prefix of one task ({len(bench.y_all)} samples): {loops['simulator']['prefix_ms']:.0f} ms")
    print("  logit bytes differing from the simulator: "
          f"TFLM {loops['tflm']['logit_bytes_differing']}, LiteRT XNNPACK {loops['litert_xnnpack']['logit_bytes_differing']}"
          f" and no delegate {loops['litert_no_delegate']['logit_bytes_differing']} of "
          f"{loops['litert_xnnpack']['logit_bytes_compared']}")
    print("  suffix of one stacked probe call (2q probes × batch), ms per op: " +
          ", ".join(f"{p['opcode']} {p['ms']:.2f}" for p in profile) + f" (sum {sum(p['ms'] for p in profile):.2f})")


if __name__ == "__main__":
    main()
