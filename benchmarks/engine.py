"""Engine speed against the TFLM interpreter and LiteRT, side by side in one run.

    python benchmarks/engine.py [--runs DIR ...] [--samples 512] [--json]

For each zoo model (built into a temporary folder with a short pretraining when no --runs are
given) it times, on the same int8 test samples: the numpy engine batched and one sample at a time,
the TFLM Python interpreter (one sample per invoke, as it runs), and LiteRT without its default
XNNPACK delegate (batch 1 and batched). It prints microseconds per sample and the ratios to the
engine. Wall-clock figures depend on the machine; the ratios are what the README quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zo_edge.engine import Engine  # noqa: E402
from zo_edge.qgraph import QGraph  # noqa: E402
from zo_edge.tflm import TflmOracle  # noqa: E402


def best_of(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def litert_interpreter(model_bytes: bytes, batch: int):
    from zo_edge.litert import interpreter_module

    lite = interpreter_module()
    it = lite.Interpreter(model_content=model_bytes,
                     experimental_op_resolver_type=lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                     num_threads=1)
    detail = it.get_input_details()[0]
    if batch != 1:
        it.resize_tensor_input(detail["index"], [batch] + list(detail["shape"][1:]))
    it.allocate_tensors()
    return it, detail["index"], it.get_output_details()[0]["index"]


def bench_model(name: str, model_path: Path, x: np.ndarray) -> dict:
    graph = QGraph.load(model_path)
    engine = Engine(graph)
    n = len(x)
    few = x[: min(n, 64)]
    rows = {}
    rows["engine_batched"] = best_of(lambda: engine.run(x)) / n
    rows["engine_per_sample"] = best_of(lambda: [engine.run(x[i : i + 1]) for i in range(len(few))]) / len(few)
    oracle = TflmOracle(graph.model_bytes)
    rows["tflm_per_sample"] = best_of(lambda: oracle.run(few), repeats=2) / len(few)

    it1, i1, o1 = litert_interpreter(graph.model_bytes, 1)

    def litert_single():
        for i in range(len(few)):
            it1.set_tensor(i1, few[i : i + 1])
            it1.invoke()
            it1.get_tensor(o1)

    rows["litert_per_sample"] = best_of(litert_single) / len(few)
    itn, i_n, o_n = litert_interpreter(graph.model_bytes, n)

    def litert_batched():
        itn.set_tensor(i_n, x)
        itn.invoke()
        itn.get_tensor(o_n)

    rows["litert_batched"] = best_of(litert_batched) / n
    us = {k: v * 1e6 for k, v in rows.items()}
    ratios = {
        "tflm_per_sample / engine_batched": rows["tflm_per_sample"] / rows["engine_batched"],
        "tflm_per_sample / engine_per_sample": rows["tflm_per_sample"] / rows["engine_per_sample"],
        "litert_per_sample / engine_batched": rows["litert_per_sample"] / rows["engine_batched"],
        "litert_batched / engine_batched": rows["litert_batched"] / rows["engine_batched"],
    }
    return {"model": name, "samples": n, "us_per_sample": us, "ratios": ratios}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=None, help="run folders made by `zo-edge build` (default: build the zoo)")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from zo_edge.build import build_run, load_run
    from zo_edge.data import load_dataset

    tmp = tempfile.TemporaryDirectory()
    runs = [Path(r) for r in args.runs] if args.runs else []
    if not runs:
        for dataset in ("spoken-digits", "digits"):
            out = Path(tmp.name) / dataset
            print(f"building {dataset} (short pretraining) ...", file=sys.stderr)
            build_run(out, dataset=dataset, epochs=2, log=lambda m: None)
            runs.append(out)
    results = []
    for run_dir in runs:
        run = load_run(run_dir)
        settings = run["settings"]
        dataset = load_dataset(settings["dataset"], seed=settings["seed"])
        graph = QGraph.load(run_dir / "model_int8.tflite")
        x = Engine(graph).quantize_input(np.resize(dataset.x_test, (args.samples,) + dataset.x_test.shape[1:]))
        results.append(bench_model(f"{settings['dataset']}/{settings['arch']}", run_dir / "model_int8.tflite", x))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"\n{r['model']}  ({r['samples']} samples)")
        for k, v in r["us_per_sample"].items():
            print(f"  {k:20s} {v:10.1f} us/sample")
        for k, v in r["ratios"].items():
            print(f"  {k:38s} {v:8.1f}x")


if __name__ == "__main__":
    main()
