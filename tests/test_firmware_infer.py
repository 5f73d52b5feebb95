"""The exported C model computes exactly what the int8 engine computes.

Zoo runs (digits-cnn, ds-cnn on spoken digits) are exported, compiled for the host with gcc (and
clang where installed) and fed their real test split: the logits of every sample and every
intermediate tensor of the first samples are compared byte for byte with ``Engine.run``, the
prefix/suffix schedule is run with repeated suffixes, and a RAM state other than the initial one
reaches the logits as the engine's constants override does. The same sources compile for Cortex-M
with arm-none-eabi-gcc and call nothing beyond memcpy and the compiler's integer helpers.
"""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import require_tools
from tflite_builder import GraphBuilder, per_channel_scales, quantize_bias, rand_int8

from firmware_export.model_export import render_model
from zo_edge.build import build_run, load_run
from zo_edge.data import load_dataset
from zo_edge.engine import Engine
from zo_edge.errors import ZoEdgeError
from zo_edge.kernel_spec import LIBRARY_SOURCES
from zo_edge.plan import Classifier, Plan
from zo_edge.qgraph import QGraph

ZOO_RUNS = {"digits-cnn": dict(dataset="digits"), "ds-cnn": dict(dataset="spoken-digits")}
TRACE_SAMPLES = 128  # samples whose every intermediate tensor is compared
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]
LIBRARY = [*LIBRARY_SOURCES, "zoedge_model.c"]  # the firmware sources (the host program aside)
ARM_TARGETS = {
    "cortex-m4f": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "cortex-m3": ["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"],
    "cortex-m0plus": ["-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"],
}
from c_harness import ALLOWED_CALLS  # memcpy/memset and libgcc's integer helpers: no float, no libm


def compile_host(fw, compiler: str = "gcc", extra=(), suffix: str = ""):
    exe = fw / f"host_infer_{compiler}{suffix}"
    if not exe.exists():
        sources = [str(fw / f) for f in LIBRARY + ["host_infer_main.c"]]
        subprocess.run([compiler, *CFLAGS, *extra, "-o", str(exe), *sources], check=True, capture_output=True,
                       text=True)
    return exe


def run_host(exe, mode: str, x: np.ndarray, state: bytes | None = None) -> np.ndarray:
    fw = exe.parent
    (fw / "input.bin").write_bytes(np.ascontiguousarray(x).tobytes())
    args = [str(exe), mode, str(fw / "input.bin"), str(fw / "output.bin")]
    if state is not None:
        (fw / "state.bin").write_bytes(state)
        args.append(str(fw / "state.bin"))
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return np.frombuffer((fw / "output.bin").read_bytes(), np.int8)


@pytest.fixture(scope="module", params=list(ZOO_RUNS))
def exported(request, tmp_path_factory):
    """A zoo run built with 2 epochs, exported, with its test split quantised."""
    root = tmp_path_factory.mktemp(request.param)
    build_run(root / "run", epochs=2, log=lambda m: None, **ZOO_RUNS[request.param])
    run = load_run(root / "run")
    graph = run.graph
    model = render_model(graph, run.plan, root / "fw")
    dataset = run.dataset
    engine = Engine(graph)
    x = engine.quantize_input(dataset.x_test)
    (logits,), _ = engine.run(x)  # what every C schedule must reproduce
    return SimpleNamespace(name=request.param, run=run, graph=graph, model=model, fw=root / "fw", x=x,
                           logits=logits.reshape(len(x), -1))


@pytest.fixture(params=["gcc", "clang"])
def host_exe(request, exported):
    if request.param == "clang":
        require_tools("clang")  # skips here without clang; fails under CI=true
    require_tools(request.param)
    return compile_host(exported.fw, request.param)


def test_logits_equal_the_engine_on_the_whole_test_split(exported, host_exe):
    got = run_host(host_exe, "infer", exported.x).reshape(exported.logits.shape)
    assert len(got) >= 100
    assert int(np.count_nonzero(got != exported.logits)) == 0


def test_every_intermediate_tensor_equals_the_engine(exported, host_exe):
    x = exported.x[:TRACE_SAMPLES]
    traced = exported.model.traced
    _, captured = Engine(exported.graph).run(x, capture=[t for _, t in traced])
    per_sample = [captured[t].reshape(len(x), -1) for _, t in traced]
    got = run_host(host_exe, "trace", x).reshape(len(x), -1)
    assert got.shape[1] == sum(p.shape[1] for p in per_sample)
    differing, start = {}, 0
    for (op, t), expected in zip(traced, per_sample):
        n = int(np.count_nonzero(got[:, start : start + expected.shape[1]] != expected))
        start += expected.shape[1]
        if n:
            differing[f"op {op} {exported.graph.ops[op].opcode} -> tensor {t}"] = n
    assert differing == {}


def test_suffix_reruns_after_one_prefix_give_the_same_logits(exported, host_exe):
    x = exported.x
    got = run_host(host_exe, "split", x).reshape(len(x), 3, -1)
    assert 0 < len(exported.model.prefix_ops) < len(exported.graph.ops)
    for repeat in range(3):
        assert int(np.count_nonzero(got[:, repeat] != exported.logits)) == 0


@pytest.fixture(scope="module")
def other_state(exported):
    """Random adapter and classifier values, as the C state file and as the engine's constants."""
    graph, roles = exported.graph, exported.run.roles
    rng = np.random.default_rng(1)
    values = {}
    for role in ("adapter0.down.weights", "adapter0.down.bias", "adapter0.up.weights", "adapter0.up.bias",
                 "classifier.weights", "classifier.bias"):
        t = graph.tensors[roles[role]]
        limit = 127 if t.dtype == np.int8 else 1 << 12
        values[t.index] = rng.integers(-limit, limit + 1, size=t.shape).astype(t.dtype)
    blob = b"".join(values[i].tobytes() for i in _state_order(exported.fw))
    x = exported.x[:200]
    (logits,), _ = Engine(graph).run(x, constants=values)
    return SimpleNamespace(blob=blob, x=x, logits=logits.reshape(len(x), -1))


def test_the_kernels_read_the_trainable_state_from_ram(exported, other_state, host_exe):
    """Other values loaded into the RAM state change the logits exactly as the engine's constants
    override says (the initial copy in flash is read only by zoedge_reset_state)."""
    got = run_host(host_exe, "infer", other_state.x, state=other_state.blob).reshape(other_state.logits.shape)
    assert not np.array_equal(other_state.logits, exported.logits[: len(other_state.x)])
    assert int(np.count_nonzero(got != other_state.logits)) == 0


def test_no_sanitizer_report_on_random_inputs_and_state(exported, other_state):
    """Every schedule under AddressSanitizer and UndefinedBehaviorSanitizer: no out-of-bounds
    access, no signed overflow or bad shift, with random int8 inputs and random trainable state."""
    require_tools("gcc")
    exe = compile_host(exported.fw, "gcc", ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
                       suffix="_sanitized")
    x = rand_int8(np.random.default_rng(3), (16,) + exported.x.shape[1:])
    for mode in ("infer", "split", "trace"):
        run_host(exe, mode, x, state=other_state.blob)


def _state_order(fw) -> list[int]:
    """zoedge_state_tensors[] as the generated C lists it."""
    text = (fw / "zoedge_model.c").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("const int16_t zoedge_state_tensors"))
    return [int(v) for v in line.split("{")[1].split("}")[0].split(",")]


def test_arena_plan_never_overlaps_tensors_alive_together(exported):
    """Two buffers may share bytes only if no schedule (graph order, prefix then suffix) has them
    alive at once; the suffix's boundary tensors and the logits live to the end of both."""
    plan, graph = exported.model.arena, exported.graph
    keep = set(exported.model.boundary) | set(graph.outputs)
    roots = sorted(set(plan.root.values()))
    for spans in plan.lifetimes:
        end = max(last for _, last in spans.values())
        assert all(spans[plan.root[t]][1] == end for t in keep)
        for i, a in enumerate(roots):
            for b in roots[i + 1 :]:
                alive_together = spans[a][0] <= spans[b][1] and spans[b][0] <= spans[a][1]
                apart = (plan.offsets[a] + plan.nbytes[a] <= plan.offsets[b]
                         or plan.offsets[b] + plan.nbytes[b] <= plan.offsets[a])
                assert apart or not alive_together, (a, b)
    assert plan.size >= max(plan.offsets[t] + plan.nbytes[t] for t in roots)
    assert plan.size < sum(plan.nbytes[t] for t in roots)  # memory is actually reused


@pytest.mark.toolchain
@pytest.mark.parametrize("target", list(ARM_TARGETS))
def test_library_compiles_for_cortex_m_calling_no_float_or_libc_beyond_memcpy(exported, target, tmp_path):
    require_tools("arm-none-eabi-gcc", "arm-none-eabi-nm")
    defined, undefined = set(), set()
    for source in LIBRARY:
        obj = tmp_path / source.replace(".c", ".o")
        subprocess.run(["arm-none-eabi-gcc", *CFLAGS, *ARM_TARGETS[target], "-c", str(exported.fw / source),
                        "-o", str(obj)], check=True, capture_output=True, text=True)
        for flag, names in (("--undefined-only", undefined), ("--defined-only", defined)):
            nm = subprocess.run(["arm-none-eabi-nm", flag, str(obj)], check=True, capture_output=True, text=True)
            names |= {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
    calls = undefined - defined
    assert calls <= ALLOWED_CALLS, sorted(calls - ALLOWED_CALLS)


# -- kernel coverage beyond the zoo: strides, dilation, VALID padding, depth multiplier, per-tensor FC ---
def _coverage_graph(rng) -> bytes:
    g = GraphBuilder()
    x = g.input([1, 11, 9, 3], scale=0.05, zero_point=-7)
    w0 = rand_int8(rng, [6, 3, 3, 3])
    y = g.conv2d(x, w0, quantize_bias(rng, 6), w_scale=per_channel_scales(rng, 6, 0.01), stride=(2, 1),
                 padding="SAME", dilation=(1, 2), activation="RELU6", out_scale=0.04, out_zp=-100)
    y = g.depthwise_conv2d(y, rand_int8(rng, [1, 3, 2, 12]), None, w_scale=per_channel_scales(rng, 12, 0.02),
                           stride=(1, 2), padding="VALID", depth_multiplier=2, activation="RELU",
                           out_scale=0.05, out_zp=-128)
    z = g.conv2d(y, rand_int8(rng, [12, 1, 1, 12]), quantize_bias(rng, 12), w_scale=per_channel_scales(rng, 12, 0.01),
                 out_scale=0.06, out_zp=5)
    y = g.add(y, z, out_scale=0.08, out_zp=-3)
    pooled = g.mean(y, [1, 2], keep_dims=True, out_scale=0.03, out_zp=2)
    flat = g.flatten(pooled)
    wfc = g.const_int8(rand_int8(rng, [5, 12]), 0.02, 0)  # one scale: the per-tensor FC path
    logits = g.fully_connected(flat, wfc, quantize_bias(rng, 5), out_scale=0.1, out_zp=1)
    g.output(logits)
    return g.finish()


def test_kernels_beyond_the_zoo_equal_the_engine(tmp_path):
    require_tools("gcc")
    rng = np.random.default_rng(7)
    graph = QGraph.from_bytes(_coverage_graph(rng), source="coverage.tflite")
    model = render_model(graph, None, tmp_path)  # inference only
    x = rand_int8(rng, [64, 11, 9, 3])
    traced = model.traced
    _, captured = Engine(graph).run(x, capture=[t for _, t in traced])
    expected = np.concatenate([captured[t].reshape(len(x), -1) for _, t in traced], axis=1)
    got = run_host(compile_host(tmp_path), "trace", x).reshape(expected.shape)
    assert {graph.ops[op].opcode for op, _ in traced} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN",
                                                          "RESHAPE", "FULLY_CONNECTED"}
    assert int(np.count_nonzero(got != expected)) == 0


def test_export_refuses_what_the_firmware_cannot_run(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 4], scale=0.1, zero_point=0)
    g.output(g.dequantize(x))
    dequantize = QGraph.from_bytes(g.finish(), source="dequantize.tflite")
    with pytest.raises(ZoEdgeError, match="DEQUANTIZE, which the firmware export does not support"):
        render_model(dequantize, None, tmp_path)

    g = GraphBuilder()
    x = g.input([1, 4], scale=0.1, zero_point=0)
    out = g.fully_connected(x, rand_int8(np.random.default_rng(0), [3, 4]), w_scale=0.01, out_scale=0.1, out_zp=0)
    g.output(out)
    dense = QGraph.from_bytes(g.finish(), source="dense.tflite")
    with pytest.raises(ZoEdgeError, match="the plan has no classifier.weights"):
        render_model(dense, None, tmp_path, trainable_roles=("classifier.weights",))
    wrong = Plan(input=x, output=out, classifier=Classifier(input=x, weights=x, bias=x, logits=out))
    with pytest.raises(ZoEdgeError, match="not a constant"):
        render_model(dense, wrong, tmp_path, trainable_roles=("classifier.weights",))
