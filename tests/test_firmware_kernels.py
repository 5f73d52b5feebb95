"""Every C kernel path, on every instruction set, computes exactly what the int8 engine computes.

The random single-op cases of ``kernel_cases`` (the ones ``test_engine_ops.py`` proves equal to TFLM, and
wider ones for the SIMD paths: channel counts past groups of four, odd tails, pairs of positions) are
exported as the firmware exports a layer (``zo_edge.kernel_spec``: the path, the parameter struct), compiled
into one program per kernel variant and run: on the host and, in QEMU, on Cortex-M3 (reference loops),
M4F, M7 and M33 (DSP) and M55 (MVE). Each program runs all cases; every output byte is compared with
``Engine.run`` and not one may differ. The program also checks that no kernel writes past the scratch
bytes kernel_spec gives for its instruction set, or past its output.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import pytest

import c_harness
import kernel_cases as kc
from zo_edge import kernel_spec
from zo_edge.engine import Engine
from zo_edge.qgraph import QGraph

CASES_PER_OP = 40  # per generator and width: several hundred cases in all
TEMPLATE_DIR = Path(__file__).parent / "c"
PER_ROW = 24
C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t"}


@dataclass
class Case:
    name: str
    graph: QGraph
    inputs: list
    expected: np.ndarray  # [samples, output bytes] int8
    layer: kernel_spec.Layer
    context: dict = field(default_factory=dict)


def _generators():
    """(name, rng seed base, function of rng) for every op and regime."""
    gens = []
    for wide in (False, True):
        w = "wide " if wide else ""
        gens += [
            (f"{w}conv2d", 31000 + wide, functools.partial(kc.conv2d_case, wide=wide)),
            (f"{w}depthwise", 32000 + wide, functools.partial(kc.depthwise_conv2d_case, wide=wide)),
            (f"{w}fully_connected", 33000 + wide, functools.partial(kc.fully_connected_case, wide=wide)),
            (f"{w}pointwise", 34000 + wide, functools.partial(kc.pointwise_case, wide=wide)),
            (f"{w}softmax", 35000 + wide, lambda rng, wide=wide: kc.softmax_case(rng, int(rng.integers(3)), wide)),
            (f"{w}l2norm", 35500 + wide, lambda rng, wide=wide: kc.l2norm_case(rng, int(rng.integers(3)), wide)),
            (f"{w}mean", 36000 + wide, lambda rng, wide=wide: kc.mean_case(
                rng, kc.MEAN_CASES[int(rng.integers(len(kc.MEAN_CASES)))], wide)),
            (f"{w}average_pool", 37000 + wide, lambda rng, wide=wide: kc.pool2d_case(
                rng, "average_pool2d", rng.random() < 0.2, wide)),
            (f"{w}max_pool", 38000 + wide, lambda rng, wide=wide: kc.pool2d_case(
                rng, "max_pool2d", rng.random() < 0.2, wide)),
            (f"{w}add", 39000 + wide, lambda rng, wide=wide: _binary_case(rng, kc.add_case, wide)),
            (f"{w}mul", 40000 + wide, lambda rng, wide=wide: _binary_case(rng, kc.mul_case, wide)),
        ]
    return gens


def _binary_case(rng, make, wide: bool):
    """ADD or MUL on shapes that broadcast (an unfolded BatchNormalization's among them); wide: maps of
    hundreds to thousands of elements, past ZOEDGE_ADD_TABLES_FROM, and vector tails."""
    shapes = kc.WIDE_ADD_SHAPES if wide else kc.ADD_SHAPES + kc.BN_SHAPES
    sa, sb = shapes[int(rng.integers(len(shapes)))]
    variant = None if len(sa) == len(sb) else "const"  # a graph input carries the batch axis
    return make(rng, (sa, sb), variant=variant)


def _fixed_cases():
    """The named edge cases of the engine suite: extreme scales, the left-shift overflow, an ADD operand
    flushed to zero."""
    out = []
    for op in kc.EXTREME_OPS:
        for regimes in kc.EXTREME:
            rng = np.random.default_rng(18000 + 10 * kc.EXTREME.index(regimes) + kc.EXTREME_OPS.index(op))
            out.append((f"extreme {op} {'-'.join(regimes)}", kc.extreme_scales_case(rng, op, regimes)))
    for seed in range(6):
        out.append((f"left shift overflow {seed}", kc.conv_left_shift_overflow_case(np.random.default_rng(16000 + seed))))
    for regimes in kc.EXTREME:
        out.append((f"mul extreme {'-'.join(regimes)}",
                    kc.mul_extreme_case(np.random.default_rng(27000 + kc.EXTREME.index(regimes)), regimes)))
    for seed in range(8):
        out.append((f"add extreme ratio {seed}",
                    kc.add_extreme_input_ratio_case(np.random.default_rng(15000 + seed), flip=bool(seed % 2))))
    return out


def _rows(values):
    flat = [int(v) for v in np.ravel(values)]
    return [flat[i : i + PER_ROW] for i in range(0, len(flat), PER_ROW)]


def _case(name: str, built) -> Case:
    g, inputs = built
    graph = QGraph.from_bytes(g.finish(), source=name)
    engine = Engine(graph)
    (out,), _ = engine.run(inputs if len(inputs) > 1 else inputs[0])
    kernels = [s for s in engine.steps if s.op.opcode in kernel_spec.KERNELS]
    assert len(kernels) == 1, name
    step = kernels[0]
    layer = kernel_spec.layer(step.op, graph, step.params)
    return Case(name, graph, inputs, np.ascontiguousarray(out).reshape(len(inputs[0]), -1).view(np.int8), layer)


@functools.lru_cache(maxsize=1)
def all_cases() -> tuple:
    cases = []
    for name, base, make in _generators():
        for k in range(CASES_PER_OP):
            cases.append(_case(f"{name} {k}", make(np.random.default_rng(base * 100 + k))))
    cases += [_case(name, built) for name, built in _fixed_cases()]
    return tuple(cases)


def _context(case: Case, cid: int) -> dict:
    graph, layer = case.graph, case.layer
    op = next(o for o in graph.ops if o.opcode in kernel_spec.KERNELS)
    arrays, args, struct_arrays = [], [], []
    step = next(s for s in Engine(graph).steps if s.op.index == op.index)
    if layer.kernel.weighted:
        operands = (op.inputs + [-1])[:3]
        for name in ("multiplier", "shift"):
            arrays.append(dict(name=name, ctype="int32_t", rows=_rows(getattr(step.params, name))))
            struct_arrays.append(name)
    else:
        operands = op.inputs[: layer.kernel.inputs]
    samples = len(case.inputs[0])
    for k, t in enumerate(operands):
        if t < 0:
            args.append("NULL")
        elif t in graph.inputs:
            x = case.inputs[graph.inputs.index(t)]
            size = int(np.prod(x.shape[1:]))
            arrays.append(dict(name=f"in{k}", ctype="int8_t", rows=_rows(x)))
            args.append(f"c{cid}_in{k} + s * {size}")
        else:
            tensor = graph.tensors[t]
            arrays.append(dict(name=f"const{k}", ctype=C_TYPES[np.dtype(tensor.dtype)], rows=_rows(tensor.data)))
            args.append(f"c{cid}_const{k}")
    return dict(id=cid, name=case.name, path=layer.path, struct=layer.kernel.struct,
                fields={k: kernel_spec.c_initializer(v) for k, v in layer.fields.items()},
                arrays=arrays, struct_arrays=struct_arrays, function=layer.function, args=args,
                takes_scratch=layer.kernel.takes_scratch, samples=samples, output_bytes=case.expected.shape[1],
                scratch=[layer.scratch_bytes(isa) for isa in kernel_spec.ISAS])


# The cases are built as PARTS programs (case i in part i % PARTS): together their constants outgrow the
# 2 MiB the Cortex-M55 board (mps3-an547) has for them.
PARTS = 2


@functools.lru_cache(maxsize=PARTS)
def _rendered_main(part: int) -> str:
    cases = all_cases()
    contexts = [_context(c, i) for i, c in enumerate(cases) if i % PARTS == part]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.get_template("kernel_cases_main.c.j2").render(
        cases=contexts, max_scratch=max(max(c["scratch"]) for c in contexts),
        max_output=max(c["output_bytes"] for c in contexts))


@pytest.fixture(scope="module")
def program_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("kernel_cases")
    for part in range(PARTS):
        (out / f"kernel_cases_main{part}.c").write_text(_rendered_main(part))
    return out


def _parse(stdout: str) -> tuple[dict, list, int | None]:
    results, errors, status = {}, [], None
    for line in stdout.splitlines():
        tag, *rest = line.split(" ")
        if tag == "R":
            results[(int(rest[0]), int(rest[1]))] = bytes.fromhex(rest[2]) if len(rest) > 2 else b""
        elif tag == "E":
            errors.append(line)
        elif tag == "X":
            status = int(rest[0])
    return results, errors, status


@pytest.mark.toolchain
@pytest.mark.parametrize("variant", list(c_harness.VARIANTS))
def test_every_kernel_path_equals_the_engine_byte_for_byte(variant, program_dir):
    v = c_harness.VARIANTS[variant]
    v.require()
    results = {}
    for part in range(PARTS):
        sources = [program_dir / f"kernel_cases_main{part}.c", *c_harness.library_sources()]
        exe = c_harness.build(v, sources, program_dir / variant / str(part), "kernel_cases",
                              include=(c_harness.LIBRARY_DIR,))
        result = c_harness.run(v, exe, timeout_s=600)
        part_results, errors, status = _parse(result.stdout)
        assert errors == [] and status == 0 and result.status == 0, (errors[:5], result.stderr[-2000:])
        results.update(part_results)
    cases = all_cases()
    compared = differing = 0
    paths, failures = {}, []
    for cid, case in enumerate(cases):
        for s, want in enumerate(case.expected):
            got = np.frombuffer(results.get((cid, s), b""), np.int8)
            n = int(np.count_nonzero(got != want)) if got.shape == want.shape else len(want)
            compared += len(want)
            differing += n
            if n and len(failures) < 8:
                failures.append(f"{case.name} sample {s}: {n} of {len(want)} bytes differ")
        key = f"{case.layer.kernel.opcode} {case.layer.path}"
        paths[key] = paths.get(key, 0) + case.expected.size
    print(f"{variant} ({v.isa}): {differing} of {compared} bytes differ over {len(cases)} cases; per path: {paths}")
    assert compared > 100_000
    assert {"CONV_2D general", "CONV_2D 1x1", "DEPTHWISE_CONV_2D general", "DEPTHWISE_CONV_2D 3x3",
            "FULLY_CONNECTED general", "ADD general", "MEAN general", "AVERAGE_POOL_2D general",
            "MAX_POOL_2D general", "SOFTMAX general", "L2_NORMALIZATION general",
            "MUL general"} <= set(paths)
    assert differing == 0, failures
