"""A damaged .tflite never crashes zo-edge: every seeded mutation of a real int8 model ends in a run or one line.

The mutations are the ways files get damaged and the ways fuzzers find reader bugs: bit flips; 4-byte
words overwritten with 0, 1, 2^31 - 1 or the file's length (offsets and lengths that point nowhere, or
at everything); truncation; inserted bytes. Three quarters of them land outside the constant data —
in the tables, vtables, shapes, indices and quantisation parameters, where a reader can go wrong — and
the rest anywhere in the file.

Each case reads the mutated bytes (``QGraph.from_bytes``), prepares the engine and runs it on a
batch of two samples. It passes if that runs, or if it ends in a one-line ZoEdgeError raised by a
check: an error that only the last-line-of-defence catch-all turned into one line is a failure
too, because it means a check is missing. The cases run in a child process with a timeout, so a
segfault or a hang fails the test and names the case that was running.

The models: the two zoo models (built in the test session) and a chain of the ops they lack.
By hand, over any models::

    python tests/test_tflite_fuzz.py MODEL.tflite ... [--cases 1000] [--first-seed 0] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CASES = 120  # per model: 360 in the default suite
SLOW_CASES = 1500
CASE_SECONDS = 10.0  # a case that takes longer has run away, even if it would end


# ---------------------------------------------------------------------------------------------------- mutations


def constant_data_spans(model: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the constant tensors' data in an (undamaged) model."""
    from zo_edge import litert

    m = litert.schema().Model.GetRootAs(model, 0)
    spans = []
    for i in range(m.BuffersLength()):
        b = m.Buffers(i)
        if b.DataLength():
            start = b._tab.Vector(b._tab.Offset(4))
            spans.append((start, start + b.DataLength()))
    return spans


def mutate(model: bytes, label: str, seed: int) -> tuple[str, bytes]:
    """(what was done, the damaged bytes) of case ``seed`` of a model: deterministic in all three."""
    rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
    is_data = np.zeros(len(model), bool)
    for start, stop in constant_data_spans(model):
        is_data[start:stop] = True
    structure = np.flatnonzero(~is_data)

    def position() -> int:
        return int(rng.choice(structure) if rng.random() < 0.75 else rng.integers(len(model)))

    buf = bytearray(model)
    kind = rng.choice(["bits", "word", "truncate", "insert"])
    if kind == "bits":
        flips = sorted((position(), int(rng.integers(8))) for _ in range(int(rng.integers(1, 5))))
        for pos, bit in flips:
            buf[pos] ^= 1 << bit
        return f"flip bits {', '.join(f'{p}.{b}' for p, b in flips)}", bytes(buf)
    if kind == "word":
        pos = min(position() // 4 * 4, len(model) - 4)
        value = int(rng.choice([0, 1, (1 << 31) - 1, len(model)]))
        struct.pack_into("<I", buf, pos, value)
        return f"word at {pos} := {value}", bytes(buf)
    if kind == "truncate":
        length = int(rng.integers(len(model)))
        return f"truncate to {length} bytes", bytes(buf[:length])
    pos, count = position(), int(rng.integers(1, 17))
    return f"insert {count} bytes at {pos}", bytes(buf[:pos]) + rng.bytes(count) + bytes(buf[pos:])


# ---------------------------------------------------------------------------------------------------- one case


def sample_inputs(graph) -> list[np.ndarray]:
    """Two samples per graph input, over the input dtype's whole range."""
    from zo_edge.verify import random_inputs

    return random_inputs(graph, 2)


def run_case(model: bytes, label: str, seed: int) -> dict:
    """Read, prepare and run one damaged model; the outcome says how it ended."""
    from zo_edge.engine import Engine
    from zo_edge.errors import ZoEdgeError
    from zo_edge.qgraph import QGraph
    from zo_edge.tflite_check import UNCHECKED

    mutation, damaged = mutate(model, label, seed)
    result = {"case": f"{label}#{seed}", "mutation": mutation}
    stage = "read"
    start = time.perf_counter()
    try:
        graph = QGraph.from_bytes(damaged, source=f"{label}#{seed}")
        stage = "prepare"
        engine = Engine(graph)
        stage = "run"
        engine.run(sample_inputs(graph))
        result["outcome"] = "ran"
    except ZoEdgeError as exc:
        message = str(exc)
        result["message"] = message
        result["outcome"] = ("error of several lines" if "\n" in message else
                             "refused only by the catch-all" if UNCHECKED in message else "refused")
    except Exception as exc:  # noqa: BLE001 - what the test exists to find
        result["outcome"] = f"traceback ({type(exc).__name__})"
        result["message"] = "".join(traceback.format_exception(exc)[-4:])
    result["stage"] = stage
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def _child(log: Path, models: dict[str, Path], first_seed: int, cases: int) -> None:
    """Run the cases, writing 'start' before each and the result after (so a crash names its case)."""
    warnings.simplefilter("error", RuntimeWarning)  # a numpy warning would reach the user's terminal
    with open(log, "w") as out:
        for label, path in models.items():
            model = Path(path).read_bytes()
            for seed in range(first_seed, first_seed + cases):
                out.write(json.dumps({"start": f"{label}#{seed}"}) + "\n")
                out.flush()
                out.write(json.dumps(run_case(model, label, seed)) + "\n")
                out.flush()


# ---------------------------------------------------------------------------------------------------- the batch


def fuzz(models: dict[str, Path], cases: int, first_seed: int = 0) -> tuple[list[dict], list[str]]:
    """Run ``cases`` mutations of each model in a child process: (results, problems with the child)."""
    timeout = 60 + 0.25 * cases * len(models)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "cases.jsonl"
        args = [sys.executable, __file__, "--child", str(log), "--cases", str(cases), "--first-seed", str(first_seed)]
        args += [f"{label}={path}" for label, path in models.items()]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        problems = []
        try:
            child = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            child = None
        lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        results = [line for line in lines if "outcome" in line]
        started = [line["start"] for line in lines if "start" in line]
        running = started[-1] if len(started) > len(results) else None
        if child is None:
            problems.append(f"hang: no end after {timeout:.0f} s, in case {running}")
        elif child.returncode != 0:
            how = f"signal {-child.returncode}" if child.returncode < 0 else f"exit code {child.returncode}"
            problems.append(f"the child died ({how}) in case {running}: {child.stderr[-2000:]}")
        elif len(results) != cases * len(models):
            problems.append(f"{len(results)} results for {cases * len(models)} cases")
    return results, problems


def failures(results: list[dict]) -> list[str]:
    bad = []
    for r in results:
        if r["outcome"] not in ("ran", "refused"):
            bad.append(f"{r['case']} ({r['mutation']}), at {r['stage']}: {r['outcome']}: {r.get('message', '')}")
        elif r["seconds"] > CASE_SECONDS:
            bad.append(f"{r['case']} ({r['mutation']}) took {r['seconds']} s")
    return bad


def summary(results: list[dict]) -> str:
    by_model = Counter((r["case"].split("#")[0], r["outcome"] if r["outcome"] != "refused" else f"refused at {r['stage']}")
                       for r in results)
    lines = [f"{model:28s} {outcome:32s} {count:6d}" for (model, outcome), count in sorted(by_model.items())]
    slowest = max(results, key=lambda r: r["seconds"])
    lines.append(f"{len(results)} cases; slowest {slowest['case']} {slowest['seconds']} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- tests


def _chain_of_the_other_ops() -> bytes:
    """Float input -> QUANTIZE -> CONV_2D -> MAX_POOL_2D -> DEPTHWISE_CONV_2D -> AVERAGE_POOL_2D -> QUANTIZE
    (requantise) -> RESHAPE -> FULLY_CONNECTED -> SOFTMAX -> DEQUANTIZE: the ops the zoo models lack."""
    from tflite_builder import GraphBuilder, per_channel_scales, quantize_bias

    rng = np.random.default_rng(7)
    g = GraphBuilder()
    x = g.input([1, 8, 8, 3], dtype=np.float32)
    q = g.quantize(x, out_scale=0.02, out_zp=-3)
    w = rng.integers(-127, 128, size=(4, 3, 3, 3)).astype(np.int8)
    c = g.conv2d(q, w, quantize_bias(rng, 4), activation="RELU", out_scale=0.05, out_zp=-128,
                 w_scale=per_channel_scales(rng, 4, 0.01))
    p = g.max_pool2d(c, (2, 2), stride=(2, 2))
    dw = rng.integers(-127, 128, size=(1, 3, 3, 8)).astype(np.int8)
    d = g.depthwise_conv2d(p, dw, quantize_bias(rng, 8), depth_multiplier=2, out_scale=0.08, out_zp=2,
                           w_scale=per_channel_scales(rng, 8, 0.01))
    a = g.average_pool2d(d, (2, 2), stride=(2, 2))
    r = g.reshape(g.quantize(a, out_scale=0.1, out_zp=5), [1, 32])
    fw = rng.integers(-127, 128, size=(10, 32)).astype(np.int8)
    f = g.fully_connected(r, fw, quantize_bias(rng, 10), out_scale=0.2, out_zp=0, w_scale=0.01)
    g.output(g.dequantize(g.softmax(f)))
    return g.finish()


@pytest.fixture(scope="module")
def fuzz_models(digits_run_dir, kws_run_dir, tmp_path_factory) -> dict[str, Path]:
    chain = tmp_path_factory.mktemp("fuzz") / "chain.tflite"
    chain.write_bytes(_chain_of_the_other_ops())
    return {"digits": digits_run_dir / "model_int8.tflite", "kws": kws_run_dir / "model_int8.tflite", "chain": chain}


def _assert_sound(results, problems):
    assert not problems, problems
    bad = failures(results)
    assert not bad, f"{len(bad)} of {len(results)} cases failed:\n" + "\n".join(bad[:20])
    outcomes = Counter(r["outcome"] for r in results)
    assert outcomes["ran"] and outcomes["refused"], f"a fuzz run that never ran or never refused tested little: {outcomes}"


def test_undamaged_models_run(fuzz_models):
    from zo_edge.engine import Engine
    from zo_edge.qgraph import QGraph

    for path in fuzz_models.values():
        graph = QGraph.load(path)
        outputs, _ = Engine(graph).run(sample_inputs(graph))
        assert outputs and all(y.shape[0] == 2 for y in outputs)


def test_damaged_models_run_or_fail_in_one_line(fuzz_models):
    _assert_sound(*fuzz(fuzz_models, DEFAULT_CASES))


@pytest.mark.slow
def test_many_damaged_models_run_or_fail_in_one_line(fuzz_models):
    _assert_sound(*fuzz(fuzz_models, SLOW_CASES, first_seed=100_000))


def test_cli_infer_reports_a_damaged_model_in_one_line(fuzz_models, tmp_path):
    """Through the real CLI, for the first case of each model refused on reading and the first refused
    on preparing: exit 2, exactly one stderr line, no output written."""
    from zo_edge.qgraph import QGraph

    cases = {}  # (label, stage) -> seed
    for seed in range(500):
        for label in fuzz_models:
            r = run_case(fuzz_models[label].read_bytes(), label, seed)
            if r["outcome"] == "refused" and (r["stage"] == "read" or "prepare" not in {s for _, s in cases}):
                cases.setdefault((label, r["stage"]), seed)
        if len(cases) == len(fuzz_models) + 1:
            break
    assert {stage for _, stage in cases} == {"read", "prepare"}, cases
    for (label, stage), seed in sorted(cases.items()):
        damaged = tmp_path / f"{label}-{seed}.tflite"
        damaged.write_bytes(mutate(fuzz_models[label].read_bytes(), label, seed)[1])
        inputs = tmp_path / f"{label}.npy"
        np.save(inputs, sample_inputs(QGraph.load(fuzz_models[label]))[0])
        cli = subprocess.run([sys.executable, "-m", "zo_edge.cli", "infer", str(damaged), "--inputs", str(inputs),
                              "--out", str(tmp_path / "out.npy")], capture_output=True, text=True)
        lines = cli.stderr.splitlines()
        assert cli.returncode == 2 and len(lines) == 1 and lines[0].startswith("zo-edge: error:"), \
            (label, seed, stage, cli.returncode, cli.stderr)
        assert not (tmp_path / "out.npy").exists()


def test_every_kernel_reads_options_the_structure_check_covers():
    """QGraph reads only option tables whose every field check_structure checks; a kernel whose
    options were not among them would silently get none."""
    from zo_edge.kernels import KERNELS
    from zo_edge.tflite_check import LAYOUTS, checked_options

    assert {k.options for k in KERNELS.values()} <= set(LAYOUTS) & set(checked_options().values())


# ---------------------------------------------------------------------------------------------------- on purpose


def _conv_model(damage=None) -> bytes:
    """x [1, 8, 8, 3] -> CONV_2D 3x3 (4 channels, per-channel scales) -> FULLY_CONNECTED -> y, damaged by
    ``damage(builder, tensors)`` before it is written."""
    from tflite_builder import GraphBuilder, per_channel_scales, quantize_bias

    rng = np.random.default_rng(3)
    g = GraphBuilder()
    x = g.input([1, 8, 8, 3], scale=0.02, zero_point=-3)
    w = g.const_int8(rng.integers(-127, 128, size=(4, 3, 3, 3)), per_channel_scales(rng, 4, 0.01))
    c = g.conv2d(x, w, quantize_bias(rng, 4), padding="SAME", out_scale=0.05, out_zp=-128)
    f = g.fully_connected(g.reshape(c, [1, 256]), rng.integers(-127, 128, size=(10, 256)).astype(np.int8),
                          out_scale=0.2, out_zp=0, w_scale=0.01)
    g.output(f)
    if damage:
        damage(g, {"input": x, "filter": w, "conv": c, "output": f})
    return g.finish()


def _set(obj, **fields):
    for name, value in fields.items():
        setattr(obj, name, value)


DAMAGE = {
    # the two tracebacks issue 9 saw: a filter without scales (AttributeError) and an unchecked shape (MemoryError)
    "filter without quantisation": (lambda g, t: _set(g.tensors[t["filter"]], quantization=None),
                                    "has no quantisation parameters"),
    "activation dimension 2^31-1": (lambda g, t: g.tensors[t["conv"]].shape.__setitem__(2, (1 << 31) - 1),
                                    "more than 16777216 elements"),
    "dilation 2^31-1": (lambda g, t: _set(g.operators[0].builtinOptions, dilationWFactor=(1 << 31) - 1),
                        "pads its input to"),
    "stride 0": (lambda g, t: _set(g.operators[0].builtinOptions, strideH=0), "has stride_h 0"),
    "dimension 0": (lambda g, t: g.tensors[t["input"]].shape.__setitem__(1, 0), "has dimension 0"),
    "weights of the wrong size": (lambda g, t: g.tensors[t["filter"]].shape.__setitem__(1, 4),
                                  "holds 108 bytes of data; its shape [4, 4, 3, 3] needs 144"),
    "scales for the wrong number of channels": (lambda g, t: _set(g.tensors[t["filter"]].quantization, scale=[0.1] * 3,
                                                                  zeroPoint=[0] * 3), "has 3 scales for the 4 channels"),
    "a NaN scale": (lambda g, t: _set(g.tensors[t["conv"]].quantization, scale=[float("nan")]),
                    "not a positive finite number"),
    "a zero scale": (lambda g, t: _set(g.tensors[t["input"]].quantization, scale=[0.0]), "not a positive finite number"),
    "quantised along a missing axis": (lambda g, t: _set(g.tensors[t["filter"]].quantization, quantizedDimension=7),
                                       "quantised along dimension 7"),
    "tensor index past the end": (lambda g, t: g.operators[0].inputs.__setitem__(0, 999), "refers to tensor 999"),
    "buffer index past the end": (lambda g, t: _set(g.tensors[t["filter"]], buffer=999), "refers to buffer 999"),
    "opcode index past the end": (lambda g, t: _set(g.operators[1], opcodeIndex=99), "refers to opcode 99"),
    "bias of the wrong length": (lambda g, t: g.operators[0].inputs.__setitem__(2, g.const_int32(np.zeros(3))),
                                 "should hold 4 values, one per channel"),
    "output of the wrong shape": (lambda g, t: g.tensors[t["conv"]].shape.__setitem__(3, 5),
                                  "should have shape [1, 8, 8, 4]"),
    "an input read before it is written": (lambda g, t: g.operators.reverse(), "which no earlier op writes"),
    "conv options on a fully connected op": (lambda g, t: _set(g.operators[2], builtinOptionsType=1,
                                                               builtinOptions=g.operators[0].builtinOptions),
                                             "carries Conv2DOptions, not FullyConnectedOptions"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_field_is_named_in_one_line(damage):
    from zo_edge.engine import Engine
    from zo_edge.errors import ZoEdgeError
    from zo_edge.qgraph import QGraph

    tamper, expected = DAMAGE[damage]
    Engine(QGraph.from_bytes(_conv_model(), "intact.tflite"))  # the undamaged model is fine
    with pytest.raises(ZoEdgeError) as caught:
        Engine(QGraph.from_bytes(_conv_model(tamper), "damaged.tflite"))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("damaged.tflite") and expected in message, message


@pytest.mark.parametrize("pos, value, expected", [
    (0, 1 << 20, "model lies outside the file"),  # the root offset
    (0, 2, "model is misaligned"),
])
def test_a_damaged_root_offset_is_named_in_one_line(pos, value, expected):
    from zo_edge.errors import ZoEdgeError
    from zo_edge.qgraph import QGraph

    buf = bytearray(_conv_model())
    struct.pack_into("<I", buf, pos, value)
    with pytest.raises(ZoEdgeError, match=expected):
        QGraph.from_bytes(bytes(buf), "damaged.tflite")


def test_table_layouts_match_the_generated_schema():
    """check_structure's layouts, slot by slot, against the builder functions of the generated schema
    (``TensorAddShape`` -> ``PrependUOffsetTRelativeSlot(0, ...)``, ``TensorStartShapeVector`` ->
    ``StartVector(4, ...)``): a field checked with the wrong size or kind would let damage through."""
    import inspect
    import re

    from zo_edge import litert
    from zo_edge.tflite_check import LAYOUTS, Scalar, Tables, Vector

    schema = litert.schema()
    sizes = {"Bool": 1, "Int8": 1, "Uint8": 1, "Int16": 2, "Uint16": 2, "Int32": 4, "Uint32": 4, "Float32": 4,
             "Int64": 8, "Uint64": 8, "Float64": 8}
    for table, fields in LAYOUTS.items():
        declared = {}
        for attr in dir(schema):
            field = re.fullmatch(f"{table}Add([A-Z]\\w*)", attr)
            if field:
                kind, slot = re.search(r"Prepend(\w+?)Slot\((\d+)", inspect.getsource(getattr(schema, attr))).groups()
                start = getattr(schema, f"{table}Start{field[1]}Vector", None)
                elem = int(re.search(r"StartVector\((\d+)", inspect.getsource(start))[1]) if start else None
                declared[int(slot)] = (field[1].lower(), kind, elem)
        assert sorted(declared) == sorted(fields), table
        for slot, (name, kind) in fields.items():
            schema_name, schema_kind, elem = declared[slot]
            where = f"{table}.{name}"
            assert name.replace("_", "") == schema_name, where
            if schema_kind == "UOffsetTRelative":
                assert not isinstance(kind, Scalar), where
                assert (elem is not None) == isinstance(kind, (Vector, Tables)), where
                assert elem is None or kind == (Vector(elem) if isinstance(kind, Vector) else Tables(kind.layout)), where
                assert not isinstance(kind, Tables) or elem == 4, where
            else:
                assert kind == Scalar(sizes[schema_kind]), where


# ---------------------------------------------------------------------------------------------------- by hand


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="MODEL.tflite or LABEL=MODEL.tflite")
    parser.add_argument("--cases", type=int, default=1000, help="mutations per model")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every case's result to this file")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: run the cases, log to this file
    args = parser.parse_args(argv)
    models = {}
    for spec in args.models:
        label, _, path = spec.rpartition("=")
        models[label or Path(path).stem] = Path(path)
    if args.child:
        _child(args.child, models, args.first_seed, args.cases)
        return 0
    results, problems = fuzz(models, args.cases, args.first_seed)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(summary(results) if results else "no results")
    for line in problems + failures(results):
        print("FAIL", line)
    return 1 if problems or failures(results) else 0


if __name__ == "__main__":
    sys.exit(main())
