"""The C twin of the int8 learner's integer arithmetic (firmware_export/fixed_export.py, zoedge_fixed.c)
equals the Python contract byte for byte.

fixed_test_main.c reads little-endian int64 streams, calls one zoedge_fixed function per item and
writes int64 results; every test here feeds it random and extreme inputs and compares the bytes with
what zo_edge.prng, zo_edge.learners.fixed, ParamVector and Int8Learner compute. The program is built
with gcc -O2 and with gcc -fsanitize=address,undefined (and clang -O2 where installed); every build
must give the same bytes. The library must also compile warning-free for Cortex-M4F and Cortex-M0+.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from firmware_export import fixed_export
from tests.conftest import IN_CI, require_tools
from zo_edge import prng
from zo_edge.learners import fixed
from zo_edge.learners.int8_state import SR_QUERY_ZO

WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
ARM_TARGETS = {
    "cortex-m4": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "cortex-m0plus": ["-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"],
}
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
U32_MAX = (1 << 32) - 1
CLIP_OFF = fixed_export.CLIP_OFF


# --- building and driving the test program -------------------------------------------------------------

@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> list[Path]:
    require_tools("gcc")
    src = tmp_path_factory.mktemp("fixed_src")
    fixed_export.render_fixed(src, test_main=True)
    builds = [("gcc-O2", "gcc", ["-O2"]), ("gcc-asan-ubsan", "gcc", SANITIZE)]
    if shutil.which("clang") or IN_CI:  # under CI=true a missing clang fails the build below
        builds.append(("clang-O2", "clang", ["-O2"]))
    exes = []
    for name, cc, flags in builds:
        exe = src / f"fixed_test_{name}"
        cmd = [cc, *WARN, *flags, "-o", str(exe), str(src / "zoedge_fixed.c"), str(src / "fixed_test_main.c")]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
        exes.append(exe)
    return exes


def pack(*parts) -> np.ndarray:
    """Scalars and arrays as one flat little-endian int64 stream (Python ints wrap modulo 2^64)."""
    flat = []
    for p in parts:
        a = np.asarray(p)
        if a.dtype == object or (a.dtype.kind in "iu" and a.size and (a.max() > np.iinfo(np.int64).max)):
            a = np.array([int(v) & ((1 << 64) - 1) for v in np.ravel(a)], dtype=np.uint64).view(np.int64)
        flat.append(np.ravel(a).astype(np.int64))
    return np.concatenate(flat) if flat else np.zeros(0, np.int64)


def run_c(programs, tmp_path: Path, mode: str, *parts) -> Reader:
    data = pack(*parts).astype("<i8").tobytes()
    inp = tmp_path / f"{mode}.in"
    inp.write_bytes(data)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="print_stacktrace=1")
    outputs = []
    for exe in programs:
        out = tmp_path / f"{mode}.{exe.name}.out"
        proc = subprocess.run([str(exe), mode, str(inp), str(out)], check=False, capture_output=True, text=True,
                              timeout=60, env=env)
        assert proc.returncode == 0 and not proc.stderr.strip(), f"{exe.name} {mode}: {proc.returncode}\n{proc.stderr}"
        outputs.append(out.read_bytes())
    for exe, o in zip(programs[1:], outputs[1:]):
        assert o == outputs[0], f"{exe.name} differs from {programs[0].name} in mode {mode}"
    return Reader(np.frombuffer(outputs[0], dtype="<i8").astype(np.int64))


class Reader:
    def __init__(self, values: np.ndarray):
        self.values, self.pos = values, 0

    def take(self, n: int = 1) -> np.ndarray:
        assert self.pos + n <= len(self.values), "the C program wrote fewer values than expected"
        out = self.values[self.pos : self.pos + n]
        self.pos += n
        return out

    def one(self) -> int:
        return int(self.take(1)[0])

    def done(self) -> None:
        assert self.pos == len(self.values), "the C program wrote more values than expected"


def assert_bytes_equal(got, expected, what: str) -> None:
    got = np.asarray(got, dtype=np.int64)
    expected = np.asarray(expected, dtype=np.int64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    if got.tobytes() != expected.tobytes():
        bad = np.flatnonzero(got.ravel() != expected.ravel())
        i = int(bad[0])
        pytest.fail(f"{what}: {len(bad)} of {got.size} values differ; first at {i}: C {got.ravel()[i]} "
                    f"!= Python {expected.ravel()[i]}")


def sat32(x) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.int64), I32_MIN, I32_MAX)


# --- generator --------------------------------------------------------------------------------------------

EXTREME_U32 = [0, 1, 2, 0x7FFFFFFF, 0x80000000, U32_MAX - 1, U32_MAX]


def _coords(rng, count):
    pick = rng.integers(0, 4, count)
    random = rng.integers(0, 1 << 32, count, dtype=np.uint64).astype(np.int64)
    small = rng.integers(0, 100, count)
    extreme = np.array(EXTREME_U32)[rng.integers(0, len(EXTREME_U32), count)]
    return np.where(pick == 0, extreme, np.where(pick == 1, small, random))


def test_hash_rademacher_and_uniform_bits_equal_prng(programs, tmp_path):
    require_tools("gcc")
    rng = np.random.default_rng(1)
    rows, expected = [], []
    # groups with index 0..n-1, so prng.rademacher and prng.uniform_bits themselves give the answer
    for g in range(40):
        seed, step, query, stream = (int(v) for v in _coords(rng, 4))
        stream = stream if g % 3 else g % 2
        bits = g % 33 if g < 33 else int(rng.integers(0, 33))
        n = 64
        idx = np.arange(n)
        rows.append(np.stack([np.full(n, seed), np.full(n, step), np.full(n, query), idx, np.full(n, stream),
                              np.full(n, bits)], axis=1))
        h = prng.hash32(seed, step, query, idx, stream).astype(np.int64)
        z = prng.rademacher(seed, step, query, n, stream).astype(np.int64)
        u = prng.uniform_bits(seed, step, query, n, bits, stream).astype(np.int64)
        expected.append(np.stack([h, z, u], axis=1))
    # and arbitrary coordinates (large indices too) against hash32, with the bits taken by the contract
    count = 4000
    c = np.stack([_coords(rng, count) for _ in range(5)], axis=1)
    bits = rng.integers(0, 33, count)
    rows.append(np.concatenate([c, bits[:, None]], axis=1))
    h = prng.hash32(c[:, 0], c[:, 1], c[:, 2], c[:, 3], c[:, 4]).astype(np.int64)
    u = np.where(bits > 0, h >> np.clip(32 - bits, 0, 31), 0)
    expected.append(np.stack([h, 1 - 2 * (h >> 31), u], axis=1))
    rows, expected = np.concatenate(rows), np.concatenate(expected)
    out = run_c(programs, tmp_path, "hash", len(rows), rows)
    assert_bytes_equal(out.take(3 * len(rows)).reshape(-1, 3), expected, "hash / rademacher / uniform_bits")
    out.done()


def test_rademacher_fill_equals_prng(programs, tmp_path):
    require_tools("gcc")
    for seed, step, query, n in [(0, 0, 0, 1000), (U32_MAX, 123456, 3, 777), (42, U32_MAX, U32_MAX, 5682)]:
        out = run_c(programs, tmp_path, "fill", seed, step, query, n)
        assert_bytes_equal(out.take(n), prng.rademacher(seed, step, query, n), f"rademacher_fill {seed, step, query}")
        out.done()


def test_stochastic_round_shift_equals_prng_for_every_shift(programs, tmp_path):
    require_tools("gcc")
    rng = np.random.default_rng(2)
    special = np.array([0, 1, -1, 2, -2, I32_MIN, I32_MIN + 1, I32_MAX, I32_MAX - 1, 1 << 16, -(1 << 16),
                        (1 << 16) - 1, -(1 << 16) + 1, 1 << 30, -(1 << 30), 32767, -32768])
    for shift in range(32):
        for stream in (prng.STREAM_ROUNDING, prng.STREAM_PERTURBATION):
            seed, step, query = (int(v) for v in _coords(rng, 3))
            x = np.concatenate([special, rng.integers(I32_MIN, I32_MAX, 400, endpoint=True),
                                rng.integers(-(1 << 20), 1 << 20, 200), rng.integers(-300, 300, 100)])
            expected = prng.stochastic_round_shift(x, shift, seed, step, query, stream)
            out = run_c(programs, tmp_path, "sr", seed, step, query, stream, shift, len(x), x)
            assert_bytes_equal(out.take(len(x)), expected, f"stochastic_round_shift shift={shift} stream={stream}")
            out.done()


# --- loss and softmax -------------------------------------------------------------------------------------

def test_ln_q16_equals_python_over_the_whole_range(programs, tmp_path):
    require_tools("gcc")
    rng = np.random.default_rng(3)
    powers = np.array([1 << e for e in range(16, 32)], dtype=np.int64)
    s = [powers, powers - 1, powers + 1, np.array([(1 << 32) - 1, (1 << 32) - 2, 65536, 65537])]
    for e in range(16, 32):  # the last table interval of each octave and its neighbours: x >> 23 == 511
        base = 1 << e
        top = base + base * 255 // 256
        s.append(np.array([top - 1, top, top + 1, 2 * base - 2]))
        s.append(base + (base * rng.integers(0, 256, 20)) // 256)  # table knots
    s.append(np.exp(rng.uniform(math.log(65536), math.log(2.0 ** 32 - 1), 20000)).astype(np.int64))
    s.append(rng.integers(65536, 1 << 32, 20000))
    s.append(rng.integers(65536, 1 << 20, 20000))
    s = np.clip(np.concatenate(s), 65536, (1 << 32) - 1)
    out = run_c(programs, tmp_path, "ln", len(s), s)
    assert_bytes_equal(out.take(len(s)), fixed.ln_q16(s), "ln_q16")
    out.done()


@pytest.mark.parametrize("scale", [0.02, 0.05, 0.1, 0.1713, 0.3])
@pytest.mark.parametrize("classes", [10, 3, 100])
def test_cross_entropy_and_softmax_equal_python(programs, tmp_path, scale, classes):
    require_tools("gcc")
    rng = np.random.default_rng(int(scale * 1000) + classes)
    tables = fixed.LossTables.for_scale(scale)
    batch = 300
    logits = rng.integers(-128, 128, (batch, classes))
    logits[0] = 127
    logits[1] = -128
    logits[2, :] = -128
    logits[2, 0] = 127  # the largest spread: EXP[255]
    logits[3:20] = rng.integers(-5, 5, (17, classes))  # near ties
    allowed = rng.random((batch, classes)) < rng.uniform(0.1, 1.0, (batch, 1))
    allowed[:40] = True
    allowed[np.arange(batch), rng.integers(0, classes, batch)] = True  # at least one allowed class
    labels = np.array([rng.choice(np.flatnonzero(a)) for a in allowed])
    labels[-10:] = rng.integers(0, classes, 10)  # a label outside the allowed set: same arithmetic
    use_mask = ~allowed.all(axis=1) | (np.arange(batch) % 2 == 0)  # all allowed: sometimes as NULL
    samples = np.concatenate([labels[:, None], use_mask[:, None], allowed, logits], axis=1)
    out = run_c(programs, tmp_path, "loss", batch, classes, tables.scale_q24, tables.exp_q16, samples)
    got = out.take(batch * (classes + 1)).reshape(batch, classes + 1)
    out.done()
    l8 = logits.astype(np.int8)
    assert_bytes_equal(got[:, 0], fixed.cross_entropy_q16(l8, labels, allowed, tables), "cross_entropy_q16")
    assert_bytes_equal(got[:, 1:], fixed.softmax_q16(l8, allowed, tables), "softmax_q16")


# --- multipliers, saturation, isqrt, clip, momentum ---------------------------------------------------------

def test_multiplier_apply_equals_python(programs, tmp_path):
    require_tools("gcc")
    rng = np.random.default_rng(4)
    reals = np.concatenate([10.0 ** rng.uniform(-9, 6, 3000), [1e-9, 1e6, 1.0, 0.5, 2.0, 2.0 ** -30, 2.0 ** -31.5,
                                                               1.0 - 2.0 ** -40, 3.0, 2.0 ** 20, 1e-12, 2.0 ** 30]])
    m = fixed.Multiplier.of(reals)
    assert m.rshift.min() >= 0 and m.rshift.max() <= 62
    special = np.array([0, 1, -1, I32_MAX, I32_MIN, I32_MIN + 1, 1 << 24, -(1 << 24), 12345, -12345])
    rows, expected = [], []
    for k in range(len(reals)):
        x = np.concatenate([special, rng.integers(I32_MIN, I32_MAX, 6, endpoint=True), rng.integers(-4096, 4096, 4)])
        one = fixed.Multiplier(np.full(len(x), m.mult[k]), np.full(len(x), m.rshift[k]))
        rows.append(np.stack([x, one.mult, one.rshift], axis=1))
        expected.append(one.apply(x))
    rows = np.concatenate(rows)
    out = run_c(programs, tmp_path, "mult", len(rows), rows)
    assert_bytes_equal(out.take(len(rows)), np.concatenate(expected), "Multiplier.apply")
    out.done()


def test_saturate_equals_python(programs, tmp_path):
    require_tools("gcc")
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.integers(-(1 << 40), 1 << 40, 2000), [I32_MIN, I32_MAX, -(1 << 62), 1 << 62, 0]])
    bounds = [(-128, 127), (-32768, 32767), (I32_MIN, I32_MAX), (-fixed.GRAD_LIMIT, fixed.GRAD_LIMIT), (0, 0)]
    lo_hi = np.array([bounds[i] for i in rng.integers(0, len(bounds), len(x))])
    out = run_c(programs, tmp_path, "sat", len(x), np.concatenate([x[:, None], lo_hi], axis=1))
    expected, events = zip(*(fixed.saturate(v, lo, hi) for v, (lo, hi) in zip(x, lo_hi)))
    assert_bytes_equal(out.take(len(x)), np.array(expected), "saturate")
    assert out.one() == sum(events)
    out.done()


def test_isqrt64_is_floor_sqrt(programs, tmp_path):
    require_tools("gcc")
    rng = np.random.default_rng(6)
    roots = [int(r) for r in rng.integers(0, 1 << 32, 3000, dtype=np.uint64)] + [0, 1, 2, 3, (1 << 32) - 1, 1 << 31]
    xs = [0, 1, 2, 3, 4, 5, (1 << 64) - 1, 1 << 63, (1 << 63) - 1, 1 << 62]
    for r in roots:
        xs += [r * r, max(r * r - 1, 0), min(r * r + 1, (1 << 64) - 1), min(r * r + 2 * r, (1 << 64) - 1)]
    xs += [int(v) for v in rng.integers(0, 1 << 64, 3000, dtype=np.uint64)]
    out = run_c(programs, tmp_path, "isqrt", len(xs), np.array(xs, dtype=object))
    assert_bytes_equal(out.take(len(xs)), np.array([math.isqrt(x) for x in xs]), "isqrt64")
    out.done()


@pytest.mark.parametrize("clip", [0.0, 1e-7, 1e-3, 0.5, 1.0, 4.0, 1000.0, 2500.0, 5000.0])
def test_clip_norm_equals_python(programs, tmp_path, clip):
    require_tools("gcc")
    rng = np.random.default_rng(int(clip * 1e7) % 1000)
    cases = [np.zeros(17, np.int64), np.array([fixed.GRAD_LIMIT]), np.array([-fixed.GRAD_LIMIT] * 32768)]
    for n, mag in [(1, 20), (5, 10), (552, 14), (552, 22), (5682, 16), (5682, 24), (300, 0), (9000, 24)]:
        cases.append(rng.integers(-(1 << mag), (1 << mag) + 1, n))
    cases.append(np.array([1 << 20]))  # norm exactly 1.0: not clipped (norm² <= C²)
    cases.append(np.array([(1 << 20) + 1]))
    cases.append(np.array([3 << 18, 1 << 20]))  # norm 1.25
    # outside the contract (|g| > GRAD_LIMIT): the int64 sum of squares wraps, as numpy's dot does
    cases.append(np.array([I32_MAX, I32_MIN, I32_MAX]))  # wraps negative: no clip
    cases.append(np.array([I32_MIN] * 5))  # wraps to a positive 2^62
    for g in cases:
        c = fixed_export.clip_q20(clip)
        out = run_c(programs, tmp_path, "clip", len(g), c, g)
        with np.errstate(over="ignore"):
            expected, clipped = fixed.clip_norm(g, clip)
        assert out.one() == int(clipped), f"clip={clip} n={len(g)}: clipped flag"
        assert_bytes_equal(out.take(len(g)), expected, f"clip_norm clip={clip} n={len(g)}")
        out.done()


@pytest.mark.parametrize("momentum", [0.0, 1e-6, 0.5, 0.9, 0.99, 0.999999])
def test_momentum_step_equals_python(programs, tmp_path, momentum):
    require_tools("gcc")
    rng = np.random.default_rng(int(momentum * 1000))
    mu = fixed.momentum_q15(momentum)
    n = 4000
    v = np.concatenate([rng.integers(-fixed.MOMENTUM_LIMIT, fixed.MOMENTUM_LIMIT + 1, n - 8),
                        [fixed.MOMENTUM_LIMIT] * 4 + [-fixed.MOMENTUM_LIMIT] * 4])
    g = np.concatenate([rng.integers(-fixed.GRAD_LIMIT, fixed.GRAD_LIMIT + 1, n - 8),
                        [fixed.GRAD_LIMIT, 0, I32_MAX, I32_MIN, -fixed.GRAD_LIMIT, 0, I32_MIN, I32_MAX]])
    for vv, gg in [(v, g), (np.zeros(n, np.int64), g), (v, np.zeros(n, np.int64))]:
        out = run_c(programs, tmp_path, "momentum", n, mu, vv, gg)
        expected, events = fixed.momentum_step(vv, gg, mu)
        assert out.one() == events
        assert_bytes_equal(out.take(n), expected, f"momentum_step mu={mu}")
        out.done()


# --- ParamVector on a real run ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_run(digits_run_dir):
    require_tools("gcc")
    from zo_edge.build import load_run

    return load_run(digits_run_dir)


def _param_vector(run, names, master):
    from zo_edge.learners.int8_state import ParamVector
    from zo_edge.qgraph import QGraph

    return ParamVector(run.graph, run.roles, names, master)


def _vector_header(pv, update_mult, steps_k, grad_mult, seed, mu_q15, clip_q20) -> list:
    layout = fixed_export.vector_layout(pv)
    parts = [len(layout)]
    for s in layout:
        parts += [s["kind"], s["start"], s["size"], s["inner"], s["chan_start"]]
    parts += [sum(s["channels"] for s in layout), pv.n, pv.view()]  # initial graph values
    return parts + [update_mult, steps_k, grad_mult, seed, mu_q15, clip_q20]


def _unit_multipliers(pv):
    return fixed_export.per_channel_multipliers(pv, fixed.Multiplier.of(np.ones(pv.n)))


def _cfg_values(momentum: float, clip: float):
    return fixed.momentum_q15(momentum) if momentum else -1, fixed_export.clip_q20(clip)


def _read_state(out: Reader, n: int):
    return out.take(n), out.take(n), out.take(n)  # master, velocity, view


def _random_gradient(rng, n: int, k: int) -> np.ndarray:
    kind = k % 6
    if kind == 0:
        return np.zeros(n, np.int64)
    if kind == 1:  # beyond GRAD_LIMIT: saturates
        return rng.integers(I32_MIN, I32_MAX, n, endpoint=True)
    if kind == 2:  # sparse spikes
        g = np.zeros(n, np.int64)
        hit = rng.integers(0, n, 20)
        g[hit] = rng.choice([I32_MAX, I32_MIN, fixed.GRAD_LIMIT, -fixed.GRAD_LIMIT, 1 << 20], 20)
        return g
    return np.round(rng.normal(0, 2.0 ** rng.uniform(6, 26), n)).astype(np.int64).clip(I32_MIN, I32_MAX)


def _random_master(rng, pv) -> np.ndarray:
    m = rng.integers(pv.low, pv.high, endpoint=True)
    edge = rng.random(pv.n) < 0.2
    m[edge] = np.where(rng.random(pv.n) < 0.5, pv.low, pv.high)[edge]
    near = rng.random(pv.n) < 0.2
    m[near] = np.clip(np.where(rng.random(pv.n) < 0.5, pv.low + 3, pv.high - 3), pv.low, pv.high)[near]
    return m


@pytest.mark.parametrize("master", ["int16", "int8"])
@pytest.mark.parametrize("lr,momentum,clip", [(0.01, 0.9, 1.0), (0.05, 0.0, 0.0), (30.0, 0.9, 0.0), (2.0, 0.5, 0.25)])
def test_param_vector_update_sequence_is_byte_identical(programs, tmp_path, digits_run, master, lr, momentum, clip):
    """50 updates of the adapter + classifier vector of a real run: master, velocity, view after each."""
    require_tools("gcc")
    rng = np.random.default_rng(int(lr * 100) + (master == "int8"))
    pv = _param_vector(digits_run, [role for role, _ in digits_run.plan.trainables()], master)
    assert {s["kind"] for s in fixed_export.vector_layout(pv)} == (
        {fixed_export.SEG_INT8_M16, fixed_export.SEG_INT32} if master == "int16"
        else {fixed_export.SEG_INT8, fixed_export.SEG_INT32})
    seed = int(rng.integers(0, 1 << 32))
    mu_q15, clip_q20 = _cfg_values(momentum, clip)
    update_mult = fixed_export.per_channel_multipliers(pv, pv.update_multiplier(lr))
    steps_k = np.ones(len(update_mult), np.int64)
    parts = _vector_header(pv, update_mult, steps_k, _unit_multipliers(pv), seed, mu_q15, clip_q20)
    ops, expected = [], []
    snapshot = lambda: (pv.master.copy(), None if pv.velocity is None else pv.velocity.copy(), pv.view())
    expected.append(("init", snapshot()))
    for k in range(50):
        if k == 25:  # masters at and near their limits
            m = _random_master(rng, pv)
            pv.master = m.copy()
            ops += [4, m]
            expected.append(("view", pv.view()))
        step = int(_coords(rng, 1)[0])
        query = k % 2
        g = _random_gradient(rng, pv.n, k)
        g_after, _ = fixed.saturate(g, -fixed.GRAD_LIMIT, fixed.GRAD_LIMIT)
        g_after, _ = fixed.clip_norm(g_after, clip)
        events = pv.update(g, lr, momentum, clip, seed, step, query)
        ops += [0, step, query, g]
        expected.append(("update", (events, g_after, *snapshot())))
    assert sum(e[1][0] for e in expected if e[0] == "update") > 0, "no saturation exercised"
    out = run_c(programs, tmp_path, "vector", *parts, len(expected) - 1, *ops)  # one op per expected result
    for kind, value in expected:
        if kind == "init":
            master_v, velocity_v, view_v = value
            got = _read_state(out, pv.n)
            assert_bytes_equal(got[0], master_v, "init master")
            assert_bytes_equal(got[2], view_v, "init view")
        elif kind == "view":
            assert_bytes_equal(out.take(pv.n), value, "view after setting extreme masters")
        else:
            events, g_after, master_v, velocity_v, view_v = value
            c_events = out.one()
            assert_bytes_equal(out.take(pv.n), g_after, "gradient after saturation and clip")
            got = _read_state(out, pv.n)
            assert_bytes_equal(got[0], master_v, "master")
            assert_bytes_equal(got[1], velocity_v if velocity_v is not None else np.zeros(pv.n), "velocity")
            assert_bytes_equal(got[2], view_v, "view")
            assert c_events == events, "saturation events"
    out.done()


@pytest.mark.parametrize("master", ["int16", "int8"])
@pytest.mark.parametrize("eps_steps", [1.0, 3.0, 60.0])
def test_probes_equal_param_vector_probes(programs, tmp_path, digits_run, master, eps_steps):
    require_tools("gcc")
    rng = np.random.default_rng(int(eps_steps) + (master == "int8"))
    pv = _param_vector(digits_run, [role for role, _ in digits_run.plan.trainables()], master)
    pv.master = _random_master(rng, pv) if eps_steps > 1 else pv.master
    largest = float(pv.scale[pv.is_int8].max())
    k = np.maximum(pv.perturbation_steps(eps_steps * largest), 1)  # as Int8Learner._resolve_epsilon
    steps_k = fixed_export.per_channel(pv, k)
    seed, step, q = int(rng.integers(0, 1 << 32)), U32_MAX - 3, 4
    z = prng.rademacher(seed, step, np.arange(q), pv.n)
    rows, saturated = pv.probes(z, k)
    ops = [4, pv.master]
    for j in range(q):
        for sign in (1, -1):
            ops += [1, step, j, sign]
    parts = _vector_header(pv, _unit_multipliers(pv), steps_k, _unit_multipliers(pv), seed, -1, CLIP_OFF)
    out = run_c(programs, tmp_path, "vector", *parts, 1 + 2 * q, *ops)
    _read_state(out, pv.n)
    assert_bytes_equal(out.take(pv.n), pv.view(), "view")
    total = 0
    for r in range(2 * q):
        total += out.one()
        assert_bytes_equal(out.take(pv.n), rows[r], f"probe {r}")
    assert total == saturated
    out.done()


@pytest.mark.parametrize("q", [1, 4, 64, 65, 100])
def test_zo_gradient_for_any_query_count_and_extreme_losses(programs, tmp_path, digits_run, q):
    """The zeroth-order gradient as Int8Learner.zo_update forms it, beyond the cached-row limit
    (ZOEDGE_MAX_Q = 64) and with loss differences that saturate the int32 sum."""
    require_tools("gcc")
    rng = np.random.default_rng(q)
    pv = _param_vector(digits_run, dict(digits_run.plan.vectors("zo-fc"))["zo"], "int16")
    batch, lr, momentum, clip = 24, 0.01, 0.9, 1.0
    k = np.maximum(pv.perturbation_steps(float(pv.scale[pv.is_int8].max())), 1)
    real = (1 << fixed.GRAD_BITS) / ((1 << fixed.LOSS_BITS) * 2.0 * q * batch * k * pv.scale)
    grad_mult = fixed.Multiplier.of(real)
    seed = int(rng.integers(0, 1 << 32))
    mu_q15, clip_q20 = _cfg_values(momentum, clip)
    parts = _vector_header(pv, fixed_export.per_channel_multipliers(pv, pv.update_multiplier(lr)),
                           fixed_export.per_channel(pv, k), fixed_export.per_channel_multipliers(pv, grad_mult),
                           seed, mu_q15, clip_q20)
    ops, expected = [], []
    for t, magnitude in enumerate([1 << 12, 1 << 20, 1 << 33, 1 << 40]):
        step = int(rng.integers(0, 1 << 32))
        diff = rng.integers(-magnitude, magnitude + 1, q)
        z = prng.rademacher(seed, step, np.arange(q), pv.n).astype(np.int64)
        g_sum, e1 = fixed.saturate(diff @ z, I32_MIN, I32_MAX)
        g = grad_mult.apply(g_sum)
        ops += [2, step, q, diff, 3, step, q, diff]
        events = pv.update(g, lr, momentum, clip, seed, step, SR_QUERY_ZO)
        expected.append((e1, sat32(g), events, pv.master.copy(), pv.velocity.copy()))
    out = run_c(programs, tmp_path, "vector", *parts, 2 * len(expected), *ops)
    _read_state(out, pv.n)
    saturated_sums = 0
    for e1, g, events, master_v, velocity_v in expected:
        assert out.one() == e1
        assert_bytes_equal(out.take(pv.n), g, "zo gradient")
        assert out.one() == e1 + events
        got = _read_state(out, pv.n)
        assert_bytes_equal(got[0], master_v, "master after zoedge_zo_update")
        assert_bytes_equal(got[1], velocity_v, "velocity after zoedge_zo_update")
        saturated_sums += e1
    out.done()
    if q >= 4:
        assert saturated_sums > 0, "no loss difference saturated the int32 sum"


# --- the learner's gradients and updates, captured from Int8Learner steps -------------------------------------

def _capture_steps(run, master: str, steps: int):
    """Run zo-fc int8 steps (classifier and ZO both training) and record every input and result."""
    from zo_edge.learners import LearnerConfig, make_learner

    task = run.scenario.tasks[0]
    cfg = LearnerConfig(mode="int8", method="zo-fc", q=3, batch_size=24, master=master, seed=7, fc_epochs=1)
    learner = make_learner(run, cfg)
    log = {"zo": [], "fc": [], "zo_total": [], "probe": [], "fc_total": [], "fc_args": []}

    def watch_update(vec, key):
        real = vec.update

        def update(g, lr, momentum, clip, seed, step, query, *schedule):  # (a constant schedule: factor 1.0)
            before = (vec.master.copy(), None if vec.velocity is None else vec.velocity.copy())
            events = real(g, lr, momentum, clip, seed, step, query, *schedule)
            log[key].append({"g": np.asarray(g, dtype=np.int64).copy(), "lr": lr, "momentum": momentum, "clip": clip,
                             "seed": seed, "step": step, "query": query, "before": before, "events": events,
                             "after": (vec.master.copy(), vec.velocity.copy())})
            return events
        vec.update = update

    watch_update(learner.zo, "zo")
    watch_update(learner.fc, "fc")
    real_probe, real_zo, real_fc = learner.probe_losses, learner.zo_update, learner.classifier_update
    def recorded(real, key):
        def call(*args, **kwargs):
            result = real(*args, **kwargs)
            log[key].append(result)
            return result
        return call

    learner.probe_losses = recorded(real_probe, "probe")
    learner.zo_update = recorded(real_zo, "zo_total")

    def classifier_update(logits, h, y, allowed, *schedule):
        log["fc_args"].append((logits.copy(), h.copy(), np.asarray(y).copy(), np.asarray(allowed).copy()))
        total = real_fc(logits, h, y, allowed, *schedule)
        log["fc_total"].append(total)
        return total
    learner.classifier_update = classifier_update

    allowed = np.isin(np.arange(learner.num_classes), task.classes)
    counters = {"forward_passes": 0, "prefix_passes": 0, "suffix_passes": 0, "macs": 0, "saturation_events": 0}
    learner.begin_task(task)
    order = np.random.default_rng(0).permutation(np.tile(np.arange(len(task.y_train)), 4))
    for s in range(steps):
        idx = np.sort(order[s * 24 : (s + 1) * 24])
        learner.train_step(idx, task.y_train[idx], allowed, epoch=0, counters=counters)
        learner.step += 1
    return learner, log


def _set_state(master, velocity, n):
    return [4, master, 5, velocity if velocity is not None else np.zeros(n, np.int64)]


@pytest.mark.parametrize("master", ["int16", "int8"])
def test_learner_zo_gradient_and_update_are_byte_identical(programs, tmp_path, digits_run, master):
    require_tools("gcc")
    steps = 6
    learner, log = _capture_steps(digits_run, master, steps)
    cfg, zo = learner.config, learner.zo
    assert len(log["zo"]) == steps
    grad_mult = fixed_export.per_channel_multipliers(zo, learner._multipliers[("zo", 24)])
    update_mult = fixed_export.per_channel_multipliers(zo, zo.update_multiplier(cfg.lr))
    steps_k = fixed_export.per_channel(zo, learner.steps_k)
    mu_q15, clip_q20 = _cfg_values(cfg.momentum, cfg.clip)
    ops, count = [], 0
    for rec, (losses, _) in zip(log["zo"], log["probe"]):
        diff = losses[0::2] - losses[1::2]
        ops += _set_state(*rec["before"], zo.n) + [2, rec["step"], cfg.q, diff]  # zoedge_zo_gradient
        ops += _set_state(*rec["before"], zo.n) + [3, rec["step"], cfg.q, diff]  # zoedge_zo_update (fused)
        ops += _set_state(*rec["before"], zo.n) + [0, rec["step"], rec["query"], sat32(rec["g"])]  # zoedge_update
        count += 9
    parts = _vector_header(zo, update_mult, steps_k, grad_mult, cfg.seed, mu_q15, clip_q20)
    out = run_c(programs, tmp_path, "vector", *parts, count, *ops)
    _read_state(out, zo.n)
    moved = False
    for rec, total, (_, probe_saturated) in zip(log["zo"], log["zo_total"], log["probe"]):
        sum_saturations = total - probe_saturated - rec["events"]
        out.take(zo.n)  # view after setting the master
        assert out.one() == sum_saturations
        assert_bytes_equal(out.take(zo.n), sat32(rec["g"]), f"zo gradient at step {rec['step']}")
        for what, extra in (("zo_update", sum_saturations), ("update", 0)):
            out.take(zo.n)
            assert out.one() == rec["events"] + extra, f"{what} events"
            if what == "update":
                out.take(zo.n)  # the gradient after saturation and clip
            master_v, velocity_v, _ = _read_state(out, zo.n)
            assert_bytes_equal(master_v, rec["after"][0], f"{what}: master after step {rec['step']}")
            assert_bytes_equal(velocity_v, rec["after"][1], f"{what}: velocity after step {rec['step']}")
        moved |= not np.array_equal(rec["after"][0], rec["before"][0])
    out.done()
    assert moved, "the captured steps never changed the master: the comparison would prove little"


@pytest.mark.parametrize("master", ["int16", "int8"])
def test_learner_classifier_gradient_and_update_are_byte_identical(programs, tmp_path, digits_run, master):
    require_tools("gcc")
    steps = 4
    learner, log = _capture_steps(digits_run, master, steps)
    cfg, fc = learner.config, learner.fc
    assert len(log["fc"]) == steps
    mw, mb = learner._multipliers[("fc.w", 24)], learner._multipliers[("fc.b", 24)]
    for (logits, h, y, allowed), rec, total in zip(log["fc_args"], log["fc"], log["fc_total"]):
        classes, features = logits.shape[1], h.shape[1]
        out = run_c(programs, tmp_path, "classifier", len(y), classes, features, learner.h_zero_point,
                    mw.mult[0], mw.rshift[0], mb.mult[0], mb.rshift[0], learner.tables.exp_q16, 1, allowed, y,
                    logits, h)
        assert out.one() == total - rec["events"], "gradient saturation events"
        assert_bytes_equal(out.take(classes * features + classes), sat32(rec["g"]), "classifier gradient")
        out.done()
    update_mult = fixed_export.per_channel_multipliers(fc, fc.update_multiplier(cfg.fc_lr))
    mu_q15, clip_q20 = _cfg_values(cfg.momentum, 0.0)
    ops = []
    for rec in log["fc"]:
        assert rec["clip"] == 0.0 and rec["query"] == 1
        ops += _set_state(*rec["before"], fc.n) + [0, rec["step"], rec["query"], sat32(rec["g"])]
    parts = _vector_header(fc, update_mult, np.ones(len(update_mult), np.int64), _unit_multipliers(fc), cfg.seed,
                           mu_q15, clip_q20)
    assert any(not np.array_equal(r["after"][0], r["before"][0]) for r in log["fc"]), "the classifier never moved"
    out = run_c(programs, tmp_path, "vector", *parts, 3 * len(log["fc"]), *ops)
    _read_state(out, fc.n)
    for rec in log["fc"]:
        out.take(fc.n)
        assert out.one() == rec["events"]
        out.take(fc.n)
        master_v, velocity_v, _ = _read_state(out, fc.n)
        assert_bytes_equal(master_v, rec["after"][0], "classifier master")
        assert_bytes_equal(velocity_v, rec["after"][1], "classifier velocity")
    out.done()


# --- cross-compilation ---------------------------------------------------------------------------------------

@pytest.mark.toolchain
@pytest.mark.parametrize("target", sorted(ARM_TARGETS))
def test_library_compiles_for_cortex_m(tmp_path, target):
    require_tools("arm-none-eabi-gcc")
    fixed_export.render_fixed(tmp_path)
    for opt in ("-O2", "-Os"):
        cmd = ["arm-none-eabi-gcc", *ARM_TARGETS[target], *WARN, opt, "-c", str(tmp_path / "zoedge_fixed.c"),
               "-o", str(tmp_path / f"zoedge_fixed{opt}.o")]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and not proc.stderr.strip(), f"{' '.join(cmd)}\n{proc.stderr}"


def test_render_writes_plain_c_with_the_contract_constants(tmp_path):
    paths = fixed_export.render_fixed(tmp_path)
    assert [p.name for p in paths] == ["zoedge_fixed.h", "zoedge_fixed.c"]
    header = (tmp_path / "zoedge_fixed.h").read_text()
    source = (tmp_path / "zoedge_fixed.c").read_text()
    assert f"#define ZOEDGE_GRAD_LIMIT INT32_C({fixed.GRAD_LIMIT})" in header
    assert f"#define ZOEDGE_LN2_Q16 INT32_C({fixed.LN2_Q16})" in header
    assert "{{" not in header + source and "malloc" not in source and "float" not in source.replace("no float", "")
    assert "double" not in source and "math.h" not in source
