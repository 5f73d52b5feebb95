"""Persistence of the learned state (firmware_export/persist.py and its C templates).

The host test program (persist_test_main.c) runs the C library on a RAM array whose write and erase
callbacks stop after a byte budget: a simulated power cut. Its loop over every cut offset is in C; these
tests build it with gcc (and with AddressSanitizer/UBSan, and clang when installed), run its scenarios and
check its summary lines. The library must also compile warning-free for a Cortex-M4F.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import zlib
from pathlib import Path

import pytest

from firmware_export import persist
from tests.conftest import require_tools

WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
STATE_BYTES = 300  # "a few hundred bytes": every cut offset of its save is tried
SLOT_SIZE = 512


def _build(tmp: Path, compiler: str, flags: list[str], write_align: int = persist.DEFAULT_WRITE_ALIGN) -> Path:
    src = tmp / f"src_align{write_align}"
    persist.render_persist(
        src, write_align=write_align, test_main=True, test_state_bytes=STATE_BYTES, test_slot_size=SLOT_SIZE
    )
    exe = tmp / f"persist_test_{compiler}_{write_align}_{len(flags)}"
    cmd = [compiler, *WARN, *flags, "-o", str(exe), str(src / "zoedge_persist.c"), str(src / "persist_test_main.c")]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
    return exe


@pytest.fixture(scope="module", params=["gcc", "gcc-asan-ubsan", "clang"])
def program(request, tmp_path_factory) -> Path:
    """The host test program, built by gcc -O2, gcc with sanitizers, and clang -O2 where installed."""
    require_tools("gcc")
    if request.param == "clang":
        require_tools("clang")  # skips here without clang; fails under CI=true
    compiler = "clang" if request.param == "clang" else "gcc"
    flags = SANITIZE if request.param.endswith("asan-ubsan") else ["-O2"]
    return _build(tmp_path_factory.mktemp(request.param), compiler, flags)


def _run(exe: Path, *args: str) -> str:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    proc = subprocess.run([str(exe), *args], check=False, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and "FAIL" not in proc.stdout and not proc.stderr.strip(), (
        f"{exe.name} {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def _fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", line))


def _save_bytes(mode: str, write_align: int = persist.DEFAULT_WRITE_ALIGN) -> int:
    """Bytes one save writes or erases: erase of the slot (nor) or invalidating the commit unit (ram),
    then payload, header and commit unit. The cut loop must cover all of them."""
    commit = -(-4 // write_align) * write_align
    body = persist.slot_bytes(STATE_BYTES, write_align) - commit  # header + padded payload
    return (SLOT_SIZE if mode == "nor" else commit) + body + commit


def _check_cut(exe: Path, mode: str, prior: int, start: int, write_align: int = persist.DEFAULT_WRITE_ALIGN) -> None:
    out = _run(exe, "cut", mode, str(prior), str(start))
    f = _fields(out.strip().splitlines()[-1])
    assert int(f["offsets"]) == _save_bytes(mode, write_align) + 1, out  # cut before byte 0 .. after the last
    assert f["torn"] == "0" and f["wrong"] == "0" and f["newest_slot_touched"] == "0", out
    assert f["early_ok"] == "0" and f["misuse"] == "0", out


@pytest.mark.parametrize("mode", ["ram", "nor"])
def test_round_trip(program, mode):
    require_tools("gcc")
    out = _run(program, "roundtrip", mode)
    assert "saves=3 misuse=0" in out


@pytest.mark.parametrize("mode", ["ram", "nor"])
@pytest.mark.parametrize("prior", [0, 1, 2, 3])
def test_power_cut_at_every_byte_offset_loads_last_complete_state(program, mode, prior):
    """After 0-3 complete saves (with 1 and 2, one and then both slots hold data), cut the power at every
    byte offset of one more save: load returns the last complete state byte for byte (or no state), the
    slot holding it is never written, and the next save works."""
    require_tools("gcc")
    _check_cut(program, mode, prior, 1)


@pytest.mark.parametrize("mode", ["ram", "nor"])
def test_corrupted_slot_falls_back_to_the_other(program, mode):
    require_tools("gcc")
    assert "positions=8 fallback ok" in _run(program, "corrupt", mode)


@pytest.mark.parametrize("mode", ["ram", "nor"])
def test_empty_storage_reports_no_state(program, mode):
    require_tools("gcc")
    assert "no_state ok" in _run(program, "empty", mode)


@pytest.mark.parametrize("mode", ["ram", "nor"])
def test_sequence_numbers_wrap_around(program, mode):
    """Saves numbered 0xFFFFFFFE, 0xFFFFFFFF, 0, 1, 2 each load as newest; and power cuts across the wrap."""
    require_tools("gcc")
    assert "sequences=0xfffffffe..2 ok" in _run(program, "wrap", mode)
    _check_cut(program, mode, 2, 0xFFFFFFFF)  # slots hold 0xFFFFFFFF and 0; the cut save is 1
    _check_cut(program, mode, 1, 0xFFFFFFFF)  # slot 0 holds 0xFFFFFFFF; the cut save is 0


@pytest.mark.parametrize("mode", ["ram", "nor"])
def test_errors(program, mode):
    """Too big, wrong size, bad arguments, failing reads, a write that lies (caught by the read-back)."""
    require_tools("gcc")
    assert "ok (largest state" in _run(program, "errors", mode)


def test_crc_matches_zlib(program):
    require_tools("gcc")
    rng = random.Random(4)
    blobs = [b"", b"123456789", bytes([0xFF] * 7)] + [rng.randbytes(rng.randrange(1, 3000)) for _ in range(20)]
    out = _run(program, "crc", *(b.hex() for b in blobs)).split("\n")
    for blob, line in zip(blobs, out):
        n, value = line.split()[1:]
        assert (int(n), int(value, 16)) == (len(blob), zlib.crc32(blob))


def test_python_crc_and_table():
    rng = random.Random(5)
    for blob in [b"", b"123456789"] + [rng.randbytes(rng.randrange(1, 500)) for _ in range(30)]:
        assert persist.crc32(blob) == zlib.crc32(blob)
        assert persist.crc32(blob[7:], persist.crc32(blob[:7])) == zlib.crc32(blob)
    assert persist.crc32_nibble_table()[8] == persist.CRC32_POLY


@pytest.mark.parametrize("write_align", [1, 4, 32])
def test_other_write_units(tmp_path, write_align):
    """Byte-, word- and 32-byte (STM32H7) programming units: same guarantees, every write aligned."""
    require_tools("gcc")
    exe = _build(tmp_path, "gcc", ["-O2"], write_align)
    f = _fields(_run(exe, "layout"))
    assert int(f["slot_bytes"]) == persist.slot_bytes(STATE_BYTES, write_align)
    assert int(f["commit"]) % write_align == 0 and int(f["header"]) % write_align == 0
    for mode in ("ram", "nor"):
        _check_cut(exe, mode, 2, 1, write_align)
        assert "fallback ok" in _run(exe, "corrupt", mode)
        assert "ok (largest state" in _run(exe, "errors", mode)


def test_layout_matches_python(program):
    require_tools("gcc")
    f = _fields(_run(program, "layout"))
    assert int(f["slot_bytes"]) == persist.slot_bytes(STATE_BYTES) == 8 + 24 + 304


@pytest.mark.parametrize(
    "cpu_flags",
    [
        ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
        ["-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"],
    ],
    ids=["cortex-m4f", "cortex-m0plus"],
)
def test_compiles_for_cortex_m(tmp_path, cpu_flags):
    """Warning-free for the device, and the only library calls are memcpy/memset: no malloc, no libm."""
    require_tools("arm-none-eabi-gcc", "arm-none-eabi-nm")
    persist.render_persist(tmp_path, state_tag=0xC0FFEE01)
    obj = tmp_path / "zoedge_persist.o"
    cmd = ["arm-none-eabi-gcc", *cpu_flags, *WARN, "-O2", "-c", str(tmp_path / "zoedge_persist.c"), "-o", str(obj)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], check=False, capture_output=True, text=True).stdout.split()
    assert set(undefined) - {"U"} <= {"memcpy", "memset"}, undefined


def test_render_values_and_errors(tmp_path):
    paths = persist.render_persist(tmp_path, write_align=16, state_tag=0xABCD1234)
    assert [p.name for p in paths] == ["zoedge_persist.h", "zoedge_persist.c"]
    header = paths[0].read_text()
    assert "#define ZOEDGE_PERSIST_WRITE_ALIGN 16u" in header
    assert "#define ZOEDGE_PERSIST_STATE_TAG 0xABCD1234u" in header
    assert f"#define ZOEDGE_PERSIST_MAGIC 0x{persist.MAGIC:08X}u" in header
    for p in paths:
        assert "{{" not in p.read_text() and "{%" not in p.read_text()
    with pytest.raises(ValueError):
        persist.render_persist(tmp_path, write_align=0)
    with pytest.raises(ValueError):
        persist.render_persist(tmp_path, state_tag=1 << 32)
    with pytest.raises(ValueError):
        persist.render_persist(tmp_path, test_main=True, test_state_bytes=600, test_slot_size=512)
