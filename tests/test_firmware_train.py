"""The exported C update step (firmware_export/train_export.py, zoedge_train.c) equals the simulator's
int8 mode byte for byte.

Zoo runs (digits-cnn on digits, ds-cnn on spoken digits, 2 pretraining epochs) are exported — model,
integer twin, update step — and host_train_main.c is fed full batches of the scenario's first task
(real training samples, quantised by the engine; batches drawn as ``Learner.fit_task`` draws them, the
incomplete last batch of an epoch left out: the firmware's batch size is fixed at export). Int8Learner
takes the same batches; the learned state blob (masters, velocities, step) is compared every K steps,
then the trained firmware's ``zoedge_infer`` logits with the learner's ``logits()`` on test samples.
Not one byte may differ. One build under AddressSanitizer and UndefinedBehaviorSanitizer runs 10,000
steps on random inputs; the library compiles warning-free for Cortex-M4F and Cortex-M3 and calls no
float or libm routine.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from firmware_export.fixed_export import render_fixed
from firmware_export.model_export import render_model
from firmware_export.train_export import parse_state_blob, render_train, state_blob
from tests.conftest import require_tools
from zo_edge.build import build_run, load_run
from zo_edge.errors import ZoEdgeError
from zo_edge.learners import LearnerConfig
from zo_edge.learners.int8_learner import Int8Learner
from zo_edge.kernel_spec import LIBRARY_SOURCES
from zo_edge.qgraph import QGraph

ZOO = {"digits": dict(dataset="digits"), "ds-cnn": dict(dataset="spoken-digits"),
       "digits-cosine": dict(dataset="digits", head="cosine")}
WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
MARK = ["-DZOEDGE_MARK(p)=zoedge_mark(p)"]  # the phase hooks, counted by host_train_main.c
SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
LIBRARY = [*LIBRARY_SOURCES, "zoedge_model.c", "zoedge_fixed.c"]
ARM_TARGETS = {
    "cortex-m4f": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "cortex-m3": ["-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"],
}
# what the library may call beyond itself: memcpy/memset and libgcc's integer helpers (no float, no libm)
ALLOWED_CALLS = {"memcpy", "memset", "__aeabi_memcpy", "__aeabi_memcpy4", "__aeabi_memset", "__aeabi_memclr",
                 "__aeabi_memclr4", "__aeabi_lmul", "__aeabi_llsl", "__aeabi_llsr", "__aeabi_lasr",
                 "__aeabi_uldivmod", "__aeabi_ldivmod", "__aeabi_uidiv", "__aeabi_uidivmod", "__aeabi_idiv",
                 "__aeabi_idivmod"}
BASE = dict(method="zo-fc", epochs=2, fc_epochs=1)  # fc_epochs 1: epoch 0 trains the classifier, epoch 1 not
PHASES = ["prefix", "perturb", "suffix", "loss", "classifier", "update", "end"]


def _compile(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"


@dataclass
class Zoo:
    run: dict
    root: Path
    fw: Path  # the model and the integer twin, rendered once
    objects: list  # ... compiled once (gcc -O2)
    task: object  # the scenario's first continual task
    allowed: np.ndarray
    variants: dict = field(default_factory=dict)


def _zoo(factory, name: str) -> Zoo:
    require_tools("gcc")
    root = factory.mktemp(name)
    build_run(root / "run", epochs=2, log=lambda m: None, **ZOO[name])
    run = load_run(root / "run")
    graph = run.graph
    fw = root / "fw"
    render_model(graph, run.plan, fw)
    render_fixed(fw)
    objects = []
    for source in LIBRARY:
        obj = fw / source.replace(".c", ".o")
        _compile(["gcc", *WARN, "-O2", "-c", str(fw / source), "-o", str(obj)])
        objects.append(obj)
    task = run.scenario.tasks[0]
    allowed = np.zeros(int(graph.tensors[run.plan.classifier.logits].shape[-1]), dtype=bool)
    allowed[task.classes] = True
    return Zoo(run, root, fw, objects, task, allowed)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Zoo:
    return _zoo(tmp_path_factory, "digits")


@pytest.fixture(scope="module")
def dscnn(tmp_path_factory) -> Zoo:
    return _zoo(tmp_path_factory, "ds-cnn")


@pytest.fixture(scope="module")
def digits_cosine(tmp_path_factory) -> Zoo:
    return _zoo(tmp_path_factory, "digits-cosine")


@dataclass
class Variant:
    config: LearnerConfig
    exe: Path
    dir: Path
    state_bytes: int
    ram_bytes: int


def export_variant(zoo: Zoo, name: str, sanitize: bool = False, classifier_layout: str = "auto",
                   **options) -> Variant:
    """Render zoedge_train + host_train_main for a config and build the host program."""
    config = LearnerConfig(**{**BASE, **options})
    out = zoo.root / name
    exported = render_train(zoo.run, config, out, test_main=True, classifier_layout=classifier_layout)
    exe = out / "host_train"
    train = [str(out / "zoedge_train.c"), str(out / "host_train_main.c")]
    if sanitize:  # every source under the sanitizers, not only the update step
        _compile(["gcc", *WARN, *SANITIZE, "-I", str(zoo.fw), "-o", str(exe), *train,
                  *(str(zoo.fw / s) for s in LIBRARY)])
    else:
        _compile(["gcc", *WARN, "-O2", *MARK, "-I", str(zoo.fw), "-o", str(exe), *train,
                  *(str(o) for o in zoo.objects)])
    return Variant(config, exe, out, exported.state_bytes, exported.ram_bytes)


# -- the batch stream --------------------------------------------------------------------------------
def batches(task, config: LearnerConfig, steps: int) -> list[np.ndarray]:
    """Sample indices per step, as fit_task draws them (seeded permutation per epoch), full batches only."""
    n, size, out, epoch = len(task.y_train), config.batch_size, [], 0
    while len(out) < steps:
        order = np.random.default_rng([config.seed, int(task.index), epoch]).permutation(n)
        out += [np.sort(order[s : s + size]) for s in range(0, n - size + 1, size)]
        epoch += 1
    return out[:steps]


def classifier_flags(config: LearnerConfig, steps: int) -> list[int]:
    """train_classifier per step: zo-fc the first half of the steps, head always (zo ignores it)."""
    return [int(config.method == "head" or s < steps // 2) for s in range(steps)]


def epoch_of(config: LearnerConfig, step: int, steps: int, flag: int) -> int:
    """The epoch a step belongs to: the classifier's flag decides it for zo-fc (it trains while epoch <
    fc_epochs); within that, the steps spread over the epochs, so a schedule moves through its table."""
    per = max(1, steps // max(1, config.epochs))
    epoch = min(step // per, config.epochs - 1)
    if config.method == "zo-fc":
        fc = config.fc_epochs_resolved
        epoch = min(epoch, fc - 1) if flag else max(epoch, fc)
    return epoch


def write_stream(path: Path, zoo: Zoo, x_q: np.ndarray, idx_list, flags, epochs) -> None:
    y = np.asarray(zoo.task.y_train)
    allowed = zoo.allowed.astype(np.uint8).tobytes()
    with open(path, "wb") as f:
        for idx, flag, epoch in zip(idx_list, flags, epochs):
            f.write(bytes([flag]) + int(epoch).to_bytes(2, "little") + allowed + y[idx].astype(np.uint8).tobytes()
                    + x_q[idx].tobytes())


def simulate(learner: Int8Learner, zoo: Zoo, idx_list, flags, epochs, every: int, first_step: int = 0):
    """Int8Learner on the same batches; the state blob after every ``every`` steps, and the counters."""
    y = np.asarray(zoo.task.y_train)
    counters = {"saturation_events": 0, "forward_passes": 0, "prefix_passes": 0, "suffix_passes": 0, "macs": 0}
    learner.begin_task(zoo.task)
    blobs = []
    for s, (idx, epoch) in enumerate(zip(idx_list, epochs)):
        learner.train_step(idx, y[idx], zoo.allowed, epoch, counters)
        learner.step += 1
        if (first_step + s + 1) % every == 0:
            blobs.append(state_blob(learner))
    return b"".join(blobs), counters


def start_c(variant: Variant, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(variant.exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_c(proc: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and not err.strip(), f"exit {proc.returncode}: {err}"
    values = {}
    for line in out.splitlines():
        words = line.split()
        if words and words[0] == "steps":
            values.update(steps=int(words[1]), events=int(words[3]))
        elif words and words[0] == "phases":
            values["phases"] = dict(zip(PHASES, map(int, words[1:])))
    return values


def differing(learner, got: bytes, expected: bytes, state_bytes: int) -> tuple[int, str]:
    """Differing bytes, and where the first differing dump differs (vector, element) for the message."""
    a, b = np.frombuffer(got, np.uint8), np.frombuffer(expected, np.uint8)
    if a.shape != b.shape:
        return max(len(a), len(b)), f"{len(a)} bytes written, {len(b)} expected"
    n = int(np.count_nonzero(a != b))
    if n == 0:
        return 0, ""
    dump = int(np.nonzero(a != b)[0][0]) // state_bytes
    part = slice(dump * state_bytes, (dump + 1) * state_bytes)
    c, p = parse_state_blob(learner, got[part]), parse_state_blob(learner, expected[part])
    where = [f"{k}: {int(np.count_nonzero(np.atleast_1d(c[k]) != np.atleast_1d(p[k])))} values" for k in p
             if not np.array_equal(c[k], p[k])]
    return n, f"first in dump {dump}: {', '.join(where)}"


def train_and_compare(zoo: Zoo, variant: Variant, steps: int, every: int) -> dict:
    """Run the C and the simulator (in parallel) on one stream; assert equal states and counters."""
    learner = Int8Learner(zoo.run, variant.config)
    x_q = learner.engine.quantize_input(zoo.task.x_train)
    idx_list = batches(zoo.task, variant.config, steps)
    flags = classifier_flags(variant.config, steps)
    epochs = [epoch_of(variant.config, s, steps, flag) for s, flag in enumerate(flags)]
    stream, dumps = variant.dir / "stream.bin", variant.dir / "states.bin"
    write_stream(stream, zoo, x_q, idx_list, flags, epochs)
    proc = start_c(variant, "train", str(stream), str(dumps), str(every))
    expected, counters = simulate(learner, zoo, idx_list, flags, epochs, every)
    result = finish_c(proc)
    got = dumps.read_bytes()
    n, where = differing(learner, got, expected, variant.state_bytes)
    assert len(got) == (steps // every) * variant.state_bytes
    assert n == 0, f"{n} of {len(expected)} state bytes differ; {where}"
    assert result["steps"] == steps and learner.step == steps
    assert result["events"] == counters["saturation_events"]
    return dict(learner=learner, result=result, idx=idx_list, flags=flags, epochs=epochs, x_q=x_q, dumps=got)


def compare_logits(zoo: Zoo, variant: Variant, learner, state: bytes) -> None:
    """The trained firmware's zoedge_infer logits equal the learner's on test samples."""
    x = np.concatenate([zoo.task.x_test, zoo.run.scenario.base.x_test[:100]])
    (variant.dir / "state.bin").write_bytes(state)
    (variant.dir / "samples.bin").write_bytes(learner.engine.quantize_input(x).tobytes())
    finish_c(start_c(variant, "eval", str(variant.dir / "state.bin"), str(variant.dir / "samples.bin"),
                     str(variant.dir / "logits.bin")))
    got = np.frombuffer((variant.dir / "logits.bin").read_bytes(), np.int8).reshape(len(x), -1)
    expected = learner.logits(x)
    assert not np.array_equal(expected, Int8Learner(zoo.run, variant.config).logits(x))  # training changed them
    assert int(np.count_nonzero(got != expected)) == 0


# -- the tests --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_zo_fc(digits):
    """1000 zo-fc steps on digits (classifier trained for the first 500), state every 100 steps."""
    require_tools("gcc")
    variant = export_variant(digits, "zo-fc")
    return variant, train_and_compare(digits, variant, steps=1000, every=100)


def test_digits_zo_fc_1000_steps_byte_for_byte(digits, digits_zo_fc):
    require_tools("gcc")
    variant, done = digits_zo_fc
    B, q, steps, fc_steps = variant.config.batch_size, variant.config.q, 1000, 500
    assert len(done["dumps"]) == 10 * variant.state_bytes  # compared inside train_and_compare: 0 differ
    # the device order, counted by the phase hooks: prefix once per sample, 2q probe passes, one more
    # suffix pass while the classifier trains
    assert done["result"]["phases"] == dict(prefix=steps * B, perturb=steps * B * 2 * q + fc_steps * B,
                                            suffix=steps * B * 2 * q + fc_steps * B, loss=steps * B * 2 * q,
                                            classifier=fc_steps * (B + 1), update=steps, end=steps)
    compare_logits(digits, variant, done["learner"], done["dumps"][-variant.state_bytes :])


def test_a_loaded_state_continues_exactly(digits, digits_zo_fc):
    """Resume from the blob at step 100 (a fresh process: init, then state_load) for 100 more steps:
    the state equals the uninterrupted run's at step 200. The blob right after init is the fresh
    learner's (masters from the model's flash copies, momentum 0, step 0)."""
    require_tools("gcc")
    variant, done = digits_zo_fc
    n = variant.state_bytes
    (variant.dir / "at100.bin").write_bytes(done["dumps"][:n])
    stream = variant.dir / "resume.bin"
    write_stream(stream, digits, done["x_q"], done["idx"][100:200], done["flags"][100:200],
                 done["epochs"][100:200])
    result = finish_c(start_c(variant, "train", str(stream), str(variant.dir / "resumed.bin"), "100",
                              str(variant.dir / "at100.bin")))
    assert result["steps"] == 200
    assert (variant.dir / "resumed.bin").read_bytes() == done["dumps"][n : 2 * n]

    fresh = Int8Learner(digits.run, variant.config)
    finish_c(start_c(variant, "init", str(variant.dir / "init.bin")))
    assert (variant.dir / "init.bin").read_bytes() == state_blob(fresh)
    parsed = parse_state_blob(fresh, state_blob(fresh))
    assert parsed["zo.master"].tolist() == fresh.zo.master.tolist() and int(parsed["step"]) == 0


def test_a_blob_of_another_export_or_out_of_range_is_refused(digits, digits_zo_fc):
    require_tools("gcc")
    variant, done = digits_zo_fc
    last = bytearray(done["dumps"][-variant.state_bytes :])
    empty = variant.dir / "none.bin"
    empty.write_bytes(b"")
    bad_tag = bytearray(last)
    bad_tag[0] ^= 0xFF
    bad_velocity = bytearray(last)  # the last int32 is the classifier's last velocity: beyond +-2^30
    bad_velocity[-4:] = ((1 << 30) + 1).to_bytes(4, "little")
    for blob in (bad_tag, bad_velocity):
        (variant.dir / "bad.bin").write_bytes(bytes(blob))
        proc = start_c(variant, "eval", str(variant.dir / "bad.bin"), str(empty), str(variant.dir / "l.bin"))
        proc.communicate(timeout=30)
        assert proc.returncode == 3
    with pytest.raises(ZoEdgeError, match="tag"):
        parse_state_blob(done["learner"], bytes(bad_tag))


def test_dscnn_zo_fc_byte_for_byte(dscnn):
    require_tools("gcc")
    variant = export_variant(dscnn, "zo-fc")
    done = train_and_compare(dscnn, variant, steps=30, every=10)
    compare_logits(dscnn, variant, done["learner"], done["dumps"][-variant.state_bytes :])


@pytest.mark.parametrize("name, steps, every, options", [
    ("head", 100, 10, dict(method="head")),
    ("zo", 100, 10, dict(method="zo")),
    ("zo-fc-int8-master", 40, 5, dict(master="int8")),
    ("zo-fc-no-momentum", 40, 5, dict(momentum=0.0)),
    ("head-int8-master-no-momentum", 20, 5, dict(method="head", master="int8", momentum=0.0)),
    ("zo-no-clip-q1", 20, 5, dict(method="zo", clip=0.0, q=1, lr=0.05, seed=3)),
    ("head-batch-130", 4, 1, dict(method="head", batch_size=130)),  # int64 classifier accumulators
])
def test_digits_variants_byte_for_byte(digits, name, steps, every, options):
    require_tools("gcc")
    variant = export_variant(digits, name, **options)
    done = train_and_compare(digits, variant, steps=steps, every=every)
    if name in ("head", "zo"):
        compare_logits(digits, variant, done["learner"], done["dumps"][-variant.state_bytes :])


@pytest.mark.parametrize("name, steps, every, options", [
    ("zo-fc-cosine-schedule", 200, 20, dict(lr_schedule="cosine", epochs=8, fc_epochs=4)),
    ("head-cosine-schedule", 200, 20, dict(method="head", lr_schedule="cosine", epochs=8)),
    ("head-no-momentum", 60, 10, dict(method="head", momentum=0.0, fc_lr=0.5)),  # sigma and rows move fast
    ("zo", 60, 10, dict(method="zo", lr_schedule="cosine", epochs=4)),  # the graph's weights, by zeroth order
    ("head-per-sample-batch-2", 60, 10, dict(method="head", batch_size=2)),
])
def test_cosine_classifier_byte_for_byte(digits_cosine, name, steps, every, options):
    """The cosine classifier (sigma and unit rows, re-normalised after each step) and the cosine schedule
    (a Q16 factor per epoch, set by zoedge_train_set_epoch) equal the simulator's integers."""
    require_tools("gcc")
    variant = export_variant(digits_cosine, name, **options)
    done = train_and_compare(digits_cosine, variant, steps=steps, every=every)
    learner = done["learner"]
    if learner.fc is not None:
        assert learner.fc.sigma != learner.fc.initial[1]  # sigma moved, and the rows with it
        norms = np.sqrt((learner.fc.u.astype(np.float64) ** 2).sum(axis=1)) / (1 << 14)
        assert np.abs(norms - 1).max() < 1e-3
    if len(set(done["epochs"])) > 1 and variant.config.lr_schedule == "cosine":
        assert len(set(variant.config.lr_table_q16("adapters"))) > 1  # the schedule really changed the factor
    compare_logits(digits_cosine, variant, learner, done["dumps"][-variant.state_bytes :])


@pytest.mark.parametrize("name, steps, every, options", [
    ("zo-fc", 20, 5, dict()),
    ("head-batch-130", 3, 1, dict(method="head", batch_size=130)),  # int64 sums in both layouts
])
def test_both_classifier_layouts_give_the_same_bytes(digits, name, steps, every, options):
    """accumulate (per-element batch sums) and per_sample (the batch's e and h, summed after it): each
    byte for byte with the simulator, hence with each other; auto renders the smaller."""
    require_tools("gcc")
    dumps, ram = {}, {}
    for layout in ("accumulate", "per_sample"):
        variant = export_variant(digits, f"{name}-{layout}", classifier_layout=layout, **options)
        header = (variant.dir / "zoedge_train.h").read_text()
        assert f'#define ZOEDGE_TRAIN_CLASSIFIER_LAYOUT "{layout}"' in header
        assert f"#define ZOEDGE_TRAIN_CLASSIFIER_PER_SAMPLE {int(layout == 'per_sample')}" in header
        dumps[layout] = train_and_compare(digits, variant, steps=steps, every=every)["dumps"]
        ram[layout] = variant.ram_bytes
    assert dumps["accumulate"] == dumps["per_sample"]
    auto = render_train(digits.run, LearnerConfig(**{**BASE, **options}), digits.root / f"{name}-auto")
    assert auto.classifier_layout == min(ram, key=lambda k: (ram[k], k != "accumulate"))
    assert auto.ram_bytes == min(ram.values())
    with pytest.raises(ZoEdgeError, match="layout"):
        render_train(digits.run, LearnerConfig(**BASE), digits.root / "bad-layout", classifier_layout="dense")


def test_sanitizers_see_nothing_in_10000_random_steps(digits):
    """Random features, labels, allowed sets and classifier flags (batch 1, q 2: the step's every path
    at a runtime the suite can afford), argument errors and state round trips, all under ASan/UBSan."""
    require_tools("gcc")
    variant = export_variant(digits, "sanitized", sanitize=True, batch_size=1, q=2)
    result = finish_c(start_c(variant, "random", "10000", "7"), timeout=120)
    assert result["steps"] == 10000 and result["events"] > 0  # the saturating paths ran too


def test_frozen_trains_nothing_and_fo_or_float_are_refused(digits, tmp_path):
    require_tools("gcc")
    variant = export_variant(digits, "frozen", method="frozen")
    assert variant.state_bytes == 8
    assert finish_c(start_c(variant, "random", "5", "1"))["steps"] == 0
    for options in (dict(method="fo"), dict(mode="float")):
        with pytest.raises(ZoEdgeError) as err:
            render_train(digits.run, LearnerConfig(**{**BASE, **options}), tmp_path)
        assert "\n" not in str(err.value)


@pytest.mark.toolchain
@pytest.mark.parametrize("target", list(ARM_TARGETS))
def test_compiles_for_cortex_m_without_float_or_libm(dscnn, target, tmp_path):
    """The whole library (ds-cnn, zo-fc) compiles warning-free for the target; nothing calls a float
    helper or libm; zoedge_train.o's static RAM is what the export documents."""
    require_tools("gcc", "arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size")
    exported = render_train(dscnn.run, LearnerConfig(**BASE), tmp_path)
    defined, undefined = set(), set()
    for source in [tmp_path / "zoedge_train.c", *(dscnn.fw / s for s in LIBRARY)]:
        obj = tmp_path / (source.stem + ".o")
        _compile(["arm-none-eabi-gcc", *WARN, "-O2", *ARM_TARGETS[target], "-I", str(dscnn.fw), "-c", str(source),
                  "-o", str(obj)])
        for flag, names in (("--undefined-only", undefined), ("--defined-only", defined)):
            nm = subprocess.run(["arm-none-eabi-nm", flag, str(obj)], check=True, capture_output=True, text=True)
            names |= {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
    calls = undefined - defined
    assert calls <= ALLOWED_CALLS, sorted(calls - ALLOWED_CALLS)
    size = subprocess.run(["arm-none-eabi-size", str(tmp_path / "zoedge_train.o")], check=True, capture_output=True,
                          text=True).stdout.splitlines()[1].split()
    bss = int(size[2])
    assert int(size[1]) == 0 and exported.ram_bytes <= bss <= exported.ram_bytes + 16
