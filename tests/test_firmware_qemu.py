"""The exported firmware builds for the host and for Cortex-M, runs in QEMU and counts instructions exactly.

A digits run (and the ds-cnn spoken-digits run, with fewer samples) is exported with the build files of
firmware_export/board.py; the example app embeds quantised test samples and prints their logits,
which must equal ``Engine.run`` byte for byte: on the host (gcc, clang), on mps2-an386 (Cortex-M4F,
hard float) and on mps2-an385 (Cortex-M3, soft float), plus mps2-an500 (Cortex-M7) and a link-only
Cortex-M0+. Instruction counts come from the FPGAIO counter under -icount: the calibration loop gives
exactly 2 instructions per iteration, two runs give identical counts. Errors are one line: an unknown
TARGET, a missing toolchain, a firmware that hangs (the QEMU timeout fires).

The training part of the app is exercised with a stub zoedge_train.c (the real one is exported
elsewhere): it checks that batches, labels, masks, phase marks and state dumps go through the harness.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import require_tools

from firmware_export import board as board_mod
from firmware_export.board import BOARDS, PHASES, TARGETS, build, elf_sizes, render_build_files
from firmware_export.model_export import LIBRARY_FILES, render_model
from firmware_export.qemu import parse_output, run_host, run_qemu
from zo_edge.build import build_run, load_run
from zo_edge.data import load_dataset
from zo_edge.engine import Engine
from zo_edge.errors import ZoEdgeError
from zo_edge.qgraph import QGraph

DIGITS_SAMPLES = 16
DS_CNN_SAMPLES = 3
STACK_BYTES = 16 * 1024
QEMU_TIMEOUT_S = 60
ARM = ("make", "arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")


def _macs(graph) -> int:
    total = 0
    for op in graph.ops:
        out = graph.tensors[op.outputs[0]].shape
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = graph.tensors[op.inputs[1]].shape
            if op.opcode == "DEPTHWISE_CONV_2D":
                per_output = w[1] * w[2]  # [1, kh, kw, channels]
            else:
                per_output = int(np.prod(w[1:]))  # conv [out, kh, kw, in]; fully connected [units, depth]
            total += int(np.prod(out)) * per_output
    return total


def _export(root, count: int, **build_kwargs) -> SimpleNamespace:
    """A zoo run built with 2 epochs, exported with the build files; ``count`` test samples embedded,
    evenly spread over the test split, with the engine's logits for them."""
    build_run(root / "run", epochs=2, log=lambda m: None, **build_kwargs)
    run = load_run(root / "run")
    graph = run.graph
    fw = root / "fw"
    model = render_model(graph, run.plan, fw)
    dataset = run.dataset
    engine = Engine(graph)
    picked = np.linspace(0, len(dataset.x_test) - 1, count).astype(int)
    x = engine.quantize_input(dataset.x_test[picked])
    (logits,), _ = engine.run(x)
    state_bytes = sum(graph.tensors[run.roles[r]].size_bytes for r in
                      ("adapter0.down.weights", "adapter0.down.bias", "adapter0.up.weights", "adapter0.up.bias",
                       "classifier.weights", "classifier.bias"))
    render_build_files(fw, x, source=graph.source, stack_bytes=STACK_BYTES, qemu_timeout_s=QEMU_TIMEOUT_S,
                       sample_note=f"test samples {', '.join(map(str, picked))}",
                       memory={"activation arena": model.arena.size, "trainable state (RAM)": state_bytes})
    constants = sum(t.size_bytes for t in graph.tensors if t.is_constant)
    return SimpleNamespace(fw=fw, graph=graph, model=model, x=x, logits=logits.reshape(len(x), -1).astype(np.int8),
                           macs=_macs(graph), state_bytes=state_bytes, constants=constants)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("digits"), DIGITS_SAMPLES, dataset="digits")


@pytest.fixture(scope="module")
def ds_cnn(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("ds_cnn"), DS_CNN_SAMPLES)  # the default: spoken digits, ds-cnn


def _assert_logits_equal(out, exported, count=None):
    count = len(exported.x) if count is None else count
    assert out.num_samples == count and sorted(out.logits) == list(range(count))
    differing = sum(int(np.count_nonzero(np.frombuffer(out.logits[i], np.int8) != exported.logits[i]))
                    for i in range(count))
    assert differing == 0


def _run_board(exported, board_name: str):
    elf = build(exported.fw, board_name, log=lambda m: None)
    result = run_qemu(elf, board_name, timeout_s=QEMU_TIMEOUT_S)
    assert result.status == 0, result.stderr
    out = parse_output(result.stdout)
    assert out.status == 0 and not out.errors
    return elf, out


# -- host -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_host_build_prints_the_engine_logits(digits, compiler):
    require_tools("make", compiler)
    exe = build(digits.fw, "host", compiler=compiler, log=lambda m: None)
    assert exe.parent.name == f"host-{compiler}"
    result = run_host(exe, timeout_s=30)
    assert result.status == 0, result.stderr
    out = parse_output(result.stdout)
    assert (out.board, out.ticks_per_100, out.num_steps, out.status) == ("host", 0, 0, 0)
    _assert_logits_equal(out, digits)
    assert elf_sizes(exe)["flash_bytes"] > 0
    with pytest.raises(ZoEdgeError, match="no instruction counter"):
        out.infer_instructions


# -- QEMU -----------------------------------------------------------------------------------------------
@pytest.mark.toolchain
@pytest.mark.parametrize("board_name", ["mps2-an386", "mps2-an385"])
def test_qemu_logits_are_the_engines_and_instruction_counts_are_exact(digits, board_name):
    require_tools(*ARM)
    elf, first = _run_board(digits, board_name)
    _, second = _run_board(digits, board_name)
    assert first.board == "mps2" and first.cpu == BOARDS[board_name].target and first.ticks_per_100 == 2560
    _assert_logits_equal(first, digits)
    _assert_logits_equal(second, digits)

    # the counter counts instructions: the 2-instruction loop, run 1000 more times, costs exactly 2000 more
    assert first.calibration_instructions() == 2000
    counts = first.infer_instructions
    assert counts == second.infer_instructions  # deterministic (raw ticks may differ by one; counts do not)
    per_mac = [c / digits.macs for c in counts.values()]
    # reference loops (Cortex-M3) take a few instructions per MAC, the DSP kernels (M4F) under two
    assert all((2 if board_name == "mps2-an385" else 0.5) < r < 30 for r in per_mac), per_mac
    assert max(counts.values()) - min(counts.values()) < 0.01 * min(counts.values())

    assert 64 < first.stack_bytes < STACK_BYTES
    sizes = elf_sizes(elf)
    assert sizes["flash_bytes"] > digits.constants - len(digits.graph.model_bytes)  # weights live in flash
    assert sizes["ram_static_bytes"] >= digits.model.arena.size + digits.state_bytes
    assert sizes["stack_reserved_bytes"] == STACK_BYTES


@pytest.mark.toolchain
def test_cortex_m7_runs_and_cortex_m0plus_links(digits):
    require_tools(*ARM)
    _, out = _run_board(digits, "mps2-an500")
    assert out.cpu == "cortex-m7" and out.calibration_instructions() == 2000
    _assert_logits_equal(out, digits)
    elf = build(digits.fw, "cortex-m0plus", log=lambda m: None)  # no QEMU board: build and link only
    assert elf.name == "zoedge_app.elf" and elf_sizes(elf)["flash_bytes"] > 0


@pytest.mark.toolchain
def test_ds_cnn_on_cortex_m4(ds_cnn):
    require_tools(*ARM)
    elf, first = _run_board(ds_cnn, "mps2-an386")
    _, second = _run_board(ds_cnn, "mps2-an386")
    _assert_logits_equal(first, ds_cnn)
    assert first.calibration_instructions() == 2000
    assert first.infer_instructions == second.infer_instructions
    assert all(0.5 < c / ds_cnn.macs < 30 for c in first.infer_instructions.values())
    sizes = elf_sizes(elf)
    assert sizes["flash_bytes"] > 0 and sizes["ram_static_bytes"] >= ds_cnn.model.arena.size


# -- errors ---------------------------------------------------------------------------------------------
def test_unknown_target_is_a_one_line_error(digits):
    require_tools("make")
    done = subprocess.run(["make", "-C", str(digits.fw), "arm", "TARGET=cortex-m99"], capture_output=True, text=True)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1
    known = " ".join(TARGETS)
    assert f"unknown TARGET 'cortex-m99'; known: {known}" in done.stderr
    require_tools("arm-none-eabi-gcc")  # build() looks for the cross-compiler before it runs make
    with pytest.raises(ZoEdgeError) as caught:
        build(digits.fw, "cortex-m99", log=lambda m: None)
    message = str(caught.value)
    assert "\n" not in message and f"unknown TARGET 'cortex-m99'; known: {known}" in message


def test_missing_toolchain_names_the_apt_line(digits, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(board_mod.shutil, "which",
                        lambda name, *a, **k: None if name.startswith(("arm-none-eabi", "qemu")) else real_which(name))
    with pytest.raises(ZoEdgeError, match="arm-none-eabi-gcc is not installed.*apt-get install gcc-arm-none-eabi "
                                          "libnewlib-arm-none-eabi qemu-system-arm"):
        build(digits.fw, "mps2-an386", log=lambda m: None)
    with pytest.raises(ZoEdgeError, match="qemu-system-arm is not installed.*apt-get install"):
        run_qemu(digits.fw / "none.elf", "mps2-an386")


def _small_firmware(fw, tmp_path, name: str, main_source: str):
    """An mps2 ELF of one main file with the exported startup, board layer and linker script."""
    (tmp_path / f"{name}.c").write_text(main_source)
    elf = tmp_path / f"{name}.elf"
    sources = [str(tmp_path / f"{name}.c"), str(fw / "startup_mps2.c"), str(fw / "zoedge_board_mps2.c")]
    subprocess.run(["arm-none-eabi-gcc", *TARGETS["cortex-m4"], "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2",
                    "-fno-tree-loop-distribute-patterns", f"-I{fw}", "-nostartfiles", "--specs=nano.specs",
                    "--specs=nosys.specs", "-T", str(fw / "mps2.ld"), "-o", str(elf), *sources],
                   check=True, capture_output=True, text=True)
    return elf


HANG_MAIN = "int main(void)\n{\n    for (;;) {\n    }\n}\n"  # a firmware that never exits

# a 2-instruction loop run once and 100,000,001 times: 200 million more instructions, 5.12e9 ticks (> 2^32)
WIDE_MAIN = r"""
#include "zoedge_board.h"
static void loop(uint32_t n)
{
    __asm volatile(".syntax unified\n1:\n\tsubs %0, %0, #1\n\tbne 1b" : "+l"(n) : : "cc");
}
static void put_u64(uint64_t v)
{
    char text[24];
    int i = 23;
    text[i] = '\n';
    do {
        text[--i] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v != 0u);
    board_write(text + i, (size_t)(24 - i));
}
int main(void)
{
    const uint64_t a = board_counter64();
    loop(1u);
    const uint64_t b = board_counter64();
    loop(100000001u);
    const uint64_t c = board_counter64();
    put_u64(b - a);
    put_u64(c - b);
    return 0;
}
"""


@pytest.mark.toolchain
def test_the_64_bit_counter_measures_past_the_32_bit_wrap(digits, tmp_path):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm")
    result = run_qemu(_small_firmware(digits.fw, tmp_path, "wide", WIDE_MAIN), "mps2-an386", QEMU_TIMEOUT_S)
    assert result.status == 0, result.stderr
    short, long = (int(v) for v in result.stdout.split())
    assert long > 1 << 32  # the 32-bit COUNTER alone would have wrapped
    assert round(long / 25.6) - round(short / 25.6) == 200_000_000
    assert abs(long / 25.6 - round(long / 25.6)) < 1 / 25.6


@pytest.mark.toolchain
def test_a_hanging_firmware_ends_with_the_timeout_error(digits, tmp_path):
    require_tools("arm-none-eabi-gcc", "qemu-system-arm")
    elf = _small_firmware(digits.fw, tmp_path, "hang", HANG_MAIN)
    started = time.monotonic()
    with pytest.raises(ZoEdgeError) as caught:
        run_qemu(elf, "mps2-an386", timeout_s=1.5)
    assert time.monotonic() - started < 10
    assert str(caught.value) == "QEMU did not finish within 1.5 s (the firmware may hang: stack outside RAM?)"


def test_parse_output_refuses_what_is_not_a_record():
    with pytest.raises(ZoEdgeError, match="line 2 of the firmware output is not a record"):
        parse_output("H host host 0 0 0\nsegmentation fault\n")
    out = parse_output("H mps2 cortex-m4 2560 0 0\nI empty 128\nI infer 0 2688\nX 0\n")
    assert out.infer_instructions == {0: 100}  # 2688 / 25.6 = 105, minus the 5 of the empty measurement
    with pytest.raises(ZoEdgeError, match="not a whole number of instructions"):
        parse_output("H mps2 cortex-m4 2560 0 0\nI empty 128\nI infer 0 2700\n").infer_instructions


# -- the training part of the app, with a stub step -----------------------------------------------------
STUB_TRAIN_H = """\
/* test stub of zoedge_train.h: the API the example app calls */
#ifndef ZOEDGE_TRAIN_H
#define ZOEDGE_TRAIN_H
#include <stdint.h>
#include "zoedge_model.h"
#ifndef ZOEDGE_MARK
#define ZOEDGE_MARK(phase) ((void)0)
#endif
#define ZOEDGE_BATCH 2u
#define ZOEDGE_TRAIN_STATE_BYTES (5u * 4u + ZOEDGE_LOGITS_SIZE)
enum { ZOEDGE_PHASE_PREFIX, ZOEDGE_PHASE_PERTURB, ZOEDGE_PHASE_SUFFIX, ZOEDGE_PHASE_LOSS, ZOEDGE_PHASE_CLASSIFIER,
       ZOEDGE_PHASE_UPDATE, ZOEDGE_PHASE_END };
void zoedge_mark(int phase);
void zoedge_train_init(void);
int zoedge_train_step(const int8_t *inputs, const uint8_t *labels, uint32_t batch, const uint8_t *allowed,
                      int train_classifier);
void zoedge_train_set_epoch(uint32_t epoch);
uint32_t zoedge_train_state_size(void);
void zoedge_train_state_save(uint8_t *dst);
#endif
"""

# state: steps, label sum, allowed count, classifier flags, input byte sum, then the last sample's logits
STUB_TRAIN_C = """\
#include <string.h>
#include "zoedge_model.h"
#include "zoedge_train.h"
static uint32_t counters[5];
static int8_t last_logits[ZOEDGE_LOGITS_SIZE];
void zoedge_train_init(void)
{
    zoedge_reset_state();
    memset(counters, 0, sizeof(counters));
}
int zoedge_train_step(const int8_t *inputs, const uint8_t *labels, uint32_t batch, const uint8_t *allowed,
                      int train_classifier)
{
    if (batch != ZOEDGE_BATCH) {
        return -2;
    }
    counters[0] += 1u;
    for (uint32_t b = 0; b < batch; ++b) {
        ZOEDGE_MARK(ZOEDGE_PHASE_PREFIX);
        memcpy(zoedge_tensor(ZOEDGE_INPUT_TENSOR), inputs + b * ZOEDGE_INPUT_SIZE, ZOEDGE_INPUT_SIZE);
        zoedge_run_prefix();
        ZOEDGE_MARK(ZOEDGE_PHASE_SUFFIX);
        for (int r = 0; r < 3; ++r) {
            zoedge_run_suffix();
        }
        ZOEDGE_MARK(ZOEDGE_PHASE_LOSS);
        memcpy(last_logits, zoedge_tensor(ZOEDGE_LOGITS_TENSOR), ZOEDGE_LOGITS_SIZE);
        counters[1] += labels[b];
        for (uint32_t i = 0; i < ZOEDGE_INPUT_SIZE; ++i) {
            counters[4] += (uint32_t)(int32_t)inputs[b * ZOEDGE_INPUT_SIZE + i];
        }
    }
    ZOEDGE_MARK(ZOEDGE_PHASE_UPDATE);
    for (int c = 0; c < ZOEDGE_LOGITS_SIZE; ++c) {
        counters[2] += allowed[c] != 0;
    }
    counters[3] += (uint32_t)train_classifier;
    ZOEDGE_MARK(ZOEDGE_PHASE_END);
    return 0;
}
void zoedge_train_set_epoch(uint32_t epoch)
{
    (void)epoch; /* the stub has no learning-rate schedule */
}
uint32_t zoedge_train_state_size(void)
{
    return sizeof(counters) + sizeof(last_logits);
}
void zoedge_train_state_save(uint8_t *dst)
{
    memcpy(dst, counters, sizeof(counters));
    memcpy(dst + sizeof(counters), last_logits, sizeof(last_logits));
}
"""


def _stub_expected(train, logits_of, upto: int) -> bytes:
    inputs = train["inputs"][: upto + 1]
    counters = [upto + 1, int(train["labels"][: upto + 1].sum()), int(train["allowed"][: upto + 1].sum()),
                int(train["classifier"][: upto + 1].sum()), int(inputs.astype(np.int64).sum()) % (1 << 32)]
    return np.array(counters, "<u4").tobytes() + logits_of(inputs[upto, -1]).tobytes()


@pytest.mark.parametrize("board_name", ["host", "mps2-an386"])
def test_training_harness_runs_steps_marks_phases_and_dumps_state(digits, tmp_path, board_name):
    require_tools("make", "gcc", *(ARM if board_name != "host" else ()))
    fw = tmp_path / "fw"
    fw.mkdir()
    for name in ("zoedge_model.h", "zoedge_model.c") + LIBRARY_FILES:
        shutil.copy(digits.fw / name, fw / name)
    (fw / "zoedge_train.h").write_text(STUB_TRAIN_H)
    (fw / "zoedge_train.c").write_text(STUB_TRAIN_C)
    rng = np.random.default_rng(5)
    steps, batch = 5, 2
    picks = rng.integers(0, len(digits.x), size=(steps, batch))
    train = dict(inputs=digits.x[picks], labels=rng.integers(0, 10, size=(steps, batch)),
                 allowed=rng.integers(0, 2, size=(steps, 10)), classifier=np.array([1, 0, 1, 1, 0]), every=2)
    render_build_files(fw, digits.x[:2], source="stub", train=train)

    exe = build(fw, board_name, log=lambda m: None)
    result = run_host(exe, 30) if board_name == "host" else run_qemu(exe, board_name, QEMU_TIMEOUT_S)
    assert result.status == 0, result.stdout + result.stderr
    out = parse_output(result.stdout)
    assert out.num_steps == steps and sorted(out.step_ticks) == list(range(steps))
    _assert_logits_equal(out, digits, count=2)

    engine = Engine(digits.graph)
    logits_of = lambda x: engine.run(x[None])[0][0].reshape(-1).astype(np.int8)  # noqa: E731
    assert sorted(out.states) == [1, 3, 4]  # every 2 steps, and after the last
    for step, blob in out.states.items():
        assert blob == _stub_expected(train, logits_of, step), step
    if board_name == "host":
        # zoedge_train.c present but no batches exported: the app builds (zoedge_mark exists) and trains nothing
        render_build_files(fw, digits.x[:2], source="stub")
        out = parse_output(run_host(build(fw, "host", log=lambda m: None), 30).stdout)
        assert (out.num_steps, out.status, out.states) == (0, 0, {})
        return
    for step, phases in out.phase_instructions.items():
        assert set(phases) == {"prefix", "suffix", "loss", "update"} <= set(PHASES)  # no "end": not a phase
        assert phases["suffix"] > 0 and phases["prefix"] > 0
        assert sum(phases.values()) <= out.step_instructions[step]
