"""ZO-FC int8 training steps per second: our simulator against a plain TFLM loop, side by side.

    python benchmarks/simulate.py [--run runs/kws] [--q 4] [--batch 48] [--steps 30] [--tflm-steps 2] [--json]

One step of ZO-FC over a batch of B samples = one unperturbed pass (the classifier's first-order
step) + 2q passes with the adapter perturbed by ±k int8 steps (Rademacher signs).

* simulator: ``Int8Learner.train_step`` — the frozen prefix runs once per sample per task
  (``begin_task``, timed apart and also amortised over one epoch), the 2q probes run as one batched
  suffix call of the numpy engine. Includes the losses and the integer updates.
* TFLM: what one writes without this tool — for each of the 2q+1 weight settings, patch the adapter
  (and current classifier) bytes into a copy of the .tflite, create a TFLM interpreter, invoke it
  once per sample on the full model (no prefix cache), and take masked cross-entropy losses in
  numpy. Interpreter creation is included; time per invoke is reported too. The patched models use
  the simulator's own weights and signs, so the script also checks that TFLM's logits equal the
  simulator's, byte for byte. Wall-clock figures depend on the machine; the ratio is what counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zo_edge.build import load_run
from zo_edge.data import load_dataset, make_scenario
from zo_edge.learners import LearnerConfig, make_learner
from zo_edge.litert import schema
from zo_edge.qgraph import QGraph


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/kws", help="run folder made by `zo-edge build`")
    ap.add_argument("--q", type=int, default=4)
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--steps", type=int, default=30, help="simulator steps to time")
    ap.add_argument("--tflm-steps", type=int, default=2, help="TFLM-loop steps to time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from tflite_micro.python.tflite_micro import runtime

    run = load_run(args.run)
    s = run["settings"]
    ds = load_dataset(s["dataset"], seed=s["seed"])
    scen = make_scenario(ds, s["scenario"], seed=s["seed"], base_classes=s["base_classes"],
                         classes_per_task=s["classes_per_task"])
    task = scen.tasks[0]
    L = make_learner(run, LearnerConfig(method="zo-fc", mode="int8", q=args.q, batch_size=args.batch,
                                        epochs=1, fc_epochs=1))  # epoch 0 < fc_epochs: classifier trains too
    allowed = np.zeros(L.num_classes, bool)
    allowed[task.classes] = True
    y_all = np.asarray(task.y_train, np.int64)
    order = np.random.default_rng(0).permutation(len(y_all))
    n_steps = max(args.steps, args.tflm_steps)  # batches of a shuffle, cycled past one epoch if needed
    batches = np.sort(np.resize(order, n_steps * args.batch).reshape(n_steps, args.batch), axis=1)
    steps_per_epoch = -(-len(y_all) // args.batch)

    # -- simulator -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    L.begin_task(task)
    t_prefix = time.perf_counter() - t0
    counters = {"saturation_events": 0, "forward_passes": 0, "prefix_passes": 0, "suffix_passes": 0, "macs": 0}
    t0 = time.perf_counter()
    for idx in batches[: args.steps]:
        L.train_step(idx, y_all[idx], allowed, 0, counters)
        L.step += 1
    t_sim = (time.perf_counter() - t0) / args.steps
    t_sim_amortised = t_sim + t_prefix / steps_per_epoch

    # -- TFLM: 2q+1 patched models per step, one interpreter each, one invoke per sample --------
    model = run["tflite"]
    slices = buffer_slices(model, L.constants())
    logit_scale, logit_zp = L.graph.tensors[run["roles"]["logits"]].scalar_quant()
    x_all = L.engine.quantize_input(task.x_train)
    t_create = t_invoke = 0.0
    n_invokes = 0
    mismatched = 0
    t0 = time.perf_counter()
    for idx in batches[: args.tflm_steps]:
        y, x = y_all[idx], x_all[idx]
        rows, _ = L.zo.probes(L.perturbation(L.step), L.steps_k)
        settings = [L.constants()] + [{**L.constants(), **L.zo.constants(r)} for r in rows]
        losses, logits_per_setting = [], []
        for consts in settings:
            buf = patched(model, slices, consts)
            c0 = time.perf_counter()
            it = runtime.Interpreter.from_bytes(buf, arena_size=max(16 * len(buf), 1 << 20))
            c1 = time.perf_counter()
            logits = []
            for i in range(len(y)):
                it.set_input(x[i : i + 1], 0)
                it.invoke()
                logits.append(np.array(it.get_output(0)).reshape(-1))
            t_create += c1 - c0
            t_invoke += time.perf_counter() - c1
            n_invokes += len(y)
            logits_per_setting.append(np.stack(logits))
            losses.append(masked_ce(logits_per_setting[-1], y, allowed, logit_scale, logit_zp))
        _ = np.array(losses[1::2]) - np.array(losses[2::2])  # L+ − L− per query: the ZO estimate
        pause = time.perf_counter()
        # not timed: the patch reads back, and TFLM's logits equal the simulator's for every setting
        g = QGraph.from_bytes(buf)
        assert all(np.array_equal(g.tensors[t].data, consts[t]) for t in slices), "patch did not read back"
        boundary = {k: v[idx] for k, v in L._train_boundary.items()}
        for consts, got in zip(settings, logits_per_setting):
            out, _ = L.split.run_suffix(boundary, constants=consts)
            mismatched += int(np.count_nonzero(out[0].reshape(len(y), -1) != got))
        t0 += time.perf_counter() - pause
        L.step += 1
    t_tflm = (time.perf_counter() - t0) / args.tflm_steps

    passes = 2 * args.q + 1
    result = {
        "run": args.run, "model": f"{s['dataset']}/{s['arch']}", "q": args.q, "batch": args.batch,
        "forward_passes_per_step": passes, "sim_steps": args.steps, "tflm_steps": args.tflm_steps,
        "sim": {"steps_per_s": 1 / t_sim, "ms_per_step": 1e3 * t_sim},
        "sim_with_prefix": {"steps_per_s": 1 / t_sim_amortised, "ms_per_step": 1e3 * t_sim_amortised,
                            "prefix_ms": 1e3 * t_prefix, "steps_per_epoch": steps_per_epoch},
        "tflm": {"steps_per_s": 1 / t_tflm, "ms_per_step": 1e3 * t_tflm,
                 "us_per_invoke": 1e6 * t_invoke / n_invokes,
                 "ms_per_interpreter": 1e3 * t_create / (passes * args.tflm_steps)},
        "ratio_sim_over_tflm": t_tflm / t_sim, "ratio_sim_with_prefix_over_tflm": t_tflm / t_sim_amortised,
        "tflm_logit_bytes_differing": mismatched,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"\n{result['model']}  ZO-FC int8, q={args.q}, batch {args.batch}: "
          f"{passes} forward passes ({passes * args.batch} samples) per step")
    print(f"  {'':30s} {'steps/s':>10s} {'ms/step':>10s} {'vs TFLM':>9s}")
    for name, key, ratio in (("simulator", "sim", result["ratio_sim_over_tflm"]),
                             (f"simulator + prefix ({steps_per_epoch}/epoch)", "sim_with_prefix",
                              result["ratio_sim_with_prefix_over_tflm"]),
                             ("TFLM loop", "tflm", 1.0)):
        r = result[key]
        print(f"  {name:30s} {r['steps_per_s']:10.2f} {r['ms_per_step']:10.1f} {ratio:8.1f}x")
    print(f"  prefix cache for the task ({len(y_all)} samples): {result['sim_with_prefix']['prefix_ms']:.1f} ms")
    print(f"  TFLM: {result['tflm']['us_per_invoke']:.0f} us per invoke, "
          f"{result['tflm']['ms_per_interpreter']:.1f} ms per interpreter creation")
    print(f"  TFLM logits equal the simulator's: {'yes' if mismatched == 0 else f'NO ({mismatched} bytes differ)'}")


if __name__ == "__main__":
    main()
