"""One C test harness: compile, link and run C on the host and on the QEMU boards, and check what it calls.

Every C test builds through here, so the flags, the targets and the list of allowed calls exist once:
the Cortex-M targets and their QEMU boards are ``firmware_export.board``'s (``TARGETS``, ``BOARDS``,
``TARGET_ISA``, ``MEMORY_MAPS``), the product's own tables. ``VARIANTS`` names the kernel builds the
suites run, one per instruction set and core: ``ref-host``, ``ref-m3``, ``dsp-m4f``, ``dsp-m7``,
``dsp-m33``, ``mve-m55``.

A missing toolchain skips a test, except under CI=true, where it fails (``conftest.require_tools``).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conftest import require_tools
from firmware_export import board
from firmware_export.qemu import run_host, run_qemu
from zo_edge.kernel_spec import LIBRARY_HEADERS, LIBRARY_SOURCES

LIBRARY_DIR = Path(board.__file__).parent / "c"  # the kernels' C as shipped
WARN = ("-std=c99", "-Wall", "-Wextra", "-Werror")
OPT = ("-O2",)
SANITIZE = ("-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all")
ARM_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "qemu-system-arm")
# what the library may call beyond itself: memcpy/memset and libgcc's integer helpers (no float, no libm)
ALLOWED_CALLS = frozenset({
    "memcpy", "memset", "__aeabi_memcpy", "__aeabi_memcpy4", "__aeabi_memcpy8", "__aeabi_memset",
    "__aeabi_memset4", "__aeabi_memclr", "__aeabi_memclr4", "__aeabi_memclr8", "__aeabi_lmul", "__aeabi_llsl",
    "__aeabi_llsr", "__aeabi_lasr", "__aeabi_uldivmod", "__aeabi_ldivmod", "__aeabi_uidiv", "__aeabi_uidivmod",
    "__aeabi_idiv", "__aeabi_idivmod"})
# the cores' QEMU boards (one per target; cortex-m0plus has none)
TARGET_BOARD = {b.target: b.name for b in board.QEMU_BOARDS}


@dataclass(frozen=True)
class Variant:
    """One build of the kernels: a core (or the host) and the instruction set its compiler selects."""

    name: str
    target: str  # "host" or a board.TARGETS key

    @property
    def isa(self) -> str:
        return "ref" if self.target == "host" else board.TARGET_ISA[self.target]

    @property
    def board(self) -> str | None:
        return None if self.target == "host" else TARGET_BOARD[self.target]

    def require(self) -> None:
        require_tools("gcc") if self.target == "host" else require_tools(*ARM_TOOLS)


VARIANTS = {v.name: v for v in (Variant("ref-host", "host"), Variant("ref-m3", "cortex-m3"),
                                Variant("dsp-m4f", "cortex-m4"), Variant("dsp-m7", "cortex-m7"),
                                Variant("dsp-m33", "cortex-m33"), Variant("mve-m55", "cortex-m55"))}


def _run(cmd: list, timeout: float = 300) -> None:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))}\n{done.stderr[-4000:]}"


def library_sources(directory=LIBRARY_DIR) -> list[Path]:
    return [Path(directory) / s for s in LIBRARY_SOURCES]


def board_files(directory) -> Path:
    """Render the startup, board layers and linker scripts (``board.render_build_files``) into ``directory``."""
    directory = Path(directory)
    if not (directory / "startup_mps2.c").exists():
        board.render_build_files(directory, np.zeros((0, 1), np.int8), source="c_harness")
    return directory


def compile_host(sources, exe, compiler: str = "gcc", flags=OPT, include=()) -> Path:
    """One host executable from C sources (warnings are errors)."""
    exe = Path(exe)
    _run([compiler, *WARN, *flags, *(f"-I{d}" for d in include), "-o", exe, *sources])
    return exe


def compile_arm(target: str, sources, elf, flags=OPT, include=(), support_dir=None) -> Path:
    """A Cortex-M ELF for ``target``'s QEMU board: ``sources`` plus the rendered startup and board layer
    (``board_files(support_dir)``), linked with the board's memory map as the exported Makefile links."""
    support = board_files(support_dir or Path(elf).parent / "board")
    memory = board.MEMORY_MAPS[board.TARGET_MEMORY[target]]
    cpu = [*board.TARGETS[target], *board.board_defines(memory)]
    _run(["arm-none-eabi-gcc", *cpu, *WARN, *flags, "-fno-tree-loop-distribute-patterns",
          *(f"-I{d}" for d in (*include, support)), "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
          "-Wl,--gc-sections", "-T", support / f"{memory.name}.ld", "-o", elf,
          *sources, support / "startup_mps2.c", support / "zoedge_board_mps2.c"])
    return Path(elf)


def build(variant: Variant, sources, out_dir, name: str, flags=OPT, include=()) -> Path:
    """``sources`` (a main among them) built for a variant: a host executable, or an ELF for its board."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if variant.target == "host":
        support = board_files(out_dir / "board")
        return compile_host([*sources, support / "zoedge_board_host.c"], out_dir / name, flags=flags,
                            include=(*include, support))
    return compile_arm(variant.target, sources, out_dir / f"{name}.elf", flags=flags, include=include,
                       support_dir=out_dir / "board")


def run(variant: Variant, exe, timeout_s: float = 300):
    """Run a build of ``build``; returns ``firmware_export.qemu.RunResult`` (stdout: the program's output)."""
    if variant.target == "host":
        return run_host(exe, timeout_s)
    return run_qemu(exe, variant.board, timeout_s)


def calls_outside(target: str, sources, out_dir, include=(), flags=OPT) -> set[str]:
    """The symbols the compiled ``sources`` (for a Cortex-M ``target``) call but do not define."""
    require_tools("arm-none-eabi-gcc", "arm-none-eabi-nm")
    defined, undefined = set(), set()
    for source in sources:
        obj = Path(out_dir) / (Path(source).stem + f".{target}.o")
        _run(["arm-none-eabi-gcc", *board.TARGETS[target], *WARN, *flags, *(f"-I{d}" for d in include), "-c",
              source, "-o", obj])
        for flag, names in (("--undefined-only", undefined), ("--defined-only", defined)):
            nm = subprocess.run(["arm-none-eabi-nm", flag, str(obj)], check=True, capture_output=True, text=True)
            names |= {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
    return undefined - defined


__all__ = ["ALLOWED_CALLS", "LIBRARY_HEADERS", "LIBRARY_SOURCES", "SANITIZE", "VARIANTS", "WARN", "Variant",
           "board_files", "build", "calls_outside", "compile_arm", "compile_host", "library_sources", "run"]
