"""Build files of the exported firmware: Makefile, linker scripts and startup, board layer, example app.

``render_build_files`` writes them next to the model's C (``model_export.render_model``) from the
jinja2 templates in ``templates/``; ``build`` runs the Makefile for the host or a Cortex-M target and
``elf_sizes`` reads flash and static RAM off the result. ``firmware_export.qemu`` runs what was built.

The tables here (``TARGETS``, ``TARGET_ISA``, ``MEMORY_MAPS``, ``BOARDS``) are the single source of the
Makefile's: the Makefile is rendered from them, and it is the Makefile that refuses an unknown TARGET.
Each Cortex-M target links for the memory map of the QEMU board that emulates its core (an M0+ build
links for the MPS2 map; nothing runs it).

Memory maps, read off QEMU 7.2 (``info mtree``) and checked by running a calibration firmware on each:
* ``mps2`` (mps2-an385/an386/an500): code memory at 0x0 (4 MiB), SRAM at 0x20000000 (4 MiB), FPGAIO at
  0x40028000 with a 25 MHz COUNTER.
* ``mps2-an505`` (Cortex-M33, IoTKit, TrustZone): the core boots secure with VTOR at 0x10000000, the
  secure alias of SSRAM1 (4 MiB), so code links there and RAM at 0x38000000, the secure alias of
  SSRAM2/3 (4 MiB; the non-secure aliases fault from the secure state). FPGAIO at 0x50302000 (secure
  alias of 0x40302000), its COUNTER at 20 MHz (QEMU's default prescale clock for the TrustZone boards).
* ``mps3-an547`` (Cortex-M55, SSE-300): VTOR at 0x10000000, the secure alias of the 512 KiB ITCM:
  vectors and code go there; constants to the 2 MiB SRAM at 0x11000000 (secure alias of 0x01000000);
  RAM to the 512 KiB DTCM at 0x30000000 (secure alias of 0x20000000). FPGAIO at 0x59302000, 20 MHz.
Under ``-icount shift=10`` (2^10 ns per instruction) a 25 MHz counter advances 25.6 ticks per
instruction and a 20 MHz one 20.48: the app reports ticks per 100 instructions (2560, 2048).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zo_edge import kernel_spec
from zo_edge.errors import ZoEdgeError
from firmware_export.render import environment

TEMPLATES_DIR = Path(__file__).parent / "templates"
APT_LINE = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"

# compiler flags per Cortex-M target (what the Makefile calls TARGET)
TARGETS = {
    "cortex-m0plus": ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"),
    "cortex-m3": ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"),
    "cortex-m4": ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
    "cortex-m7": ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
    "cortex-m33": ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
    "cortex-m55": ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
}
# the kernels' instruction set per target (zo_edge.kernel_spec.ISAS; what the compiler's feature macros pick)
TARGET_ISA = {target: kernel_spec.CORE_ISA[target] for target in TARGETS}


@dataclass(frozen=True)
class MemoryMap:
    """Where a board's QEMU model puts code, constants and RAM, and its FPGAIO counter (see the docstring)."""

    name: str  # the linker script is <name>.ld
    boards: str  # for the script's comment
    code: int
    code_kib: int
    ram: int
    ram_kib: int
    fpgaio: int
    counter_hz: int
    const: int | None = None  # a separate region for .rodata; None: with the code
    const_kib: int = 0


MEMORY_MAPS = {
    "mps2": MemoryMap("mps2", "mps2-an385, mps2-an386, mps2-an500", 0x00000000, 4096, 0x20000000, 4096,
                      0x40028000, 25_000_000),
    "mps2-an505": MemoryMap("mps2-an505", "mps2-an505 (secure aliases)", 0x10000000, 4096, 0x38000000, 4096,
                            0x50302000, 20_000_000),
    "mps3-an547": MemoryMap("mps3-an547", "mps3-an547 (secure aliases: ITCM, SRAM, DTCM)", 0x10000000, 512,
                            0x30000000, 512, 0x59302000, 20_000_000, const=0x11000000, const_kib=2048),
}
TARGET_MEMORY = {"cortex-m0plus": "mps2", "cortex-m3": "mps2", "cortex-m4": "mps2", "cortex-m7": "mps2",
                 "cortex-m33": "mps2-an505", "cortex-m55": "mps3-an547"}


@dataclass(frozen=True)
class Board:
    name: str
    machine: str | None  # qemu-system-arm -M; None: runs natively (host)
    target: str  # a TARGETS key, or "host"
    note: str

    @property
    def cpu_flags(self) -> tuple:
        return TARGETS.get(self.target, ())


BOARDS = {
    "host": Board("host", None, "host", "this machine, gcc or clang; no instruction counter"),
    "mps2-an385": Board("mps2-an385", "mps2-an385", "cortex-m3", "Cortex-M3, soft float"),
    "mps2-an386": Board("mps2-an386", "mps2-an386", "cortex-m4", "Cortex-M4F, hard float (fpv4-sp-d16)"),
    "mps2-an500": Board("mps2-an500", "mps2-an500", "cortex-m7", "Cortex-M7, hard float (fpv5-d16)"),
    "mps2-an505": Board("mps2-an505", "mps2-an505", "cortex-m33", "Cortex-M33 (Armv8-M, DSP), hard float (fpv5-sp-d16)"),
    "mps3-an547": Board("mps3-an547", "mps3-an547", "cortex-m55", "Cortex-M55 (Armv8.1-M, MVE/Helium), hard float"),
}
QEMU_BOARDS = [b for b in BOARDS.values() if b.machine]

# the phases zoedge_train.c marks with ZOEDGE_MARK(phase), phase = the index here (zoedge_phase_t);
# ZOEDGE_PHASE_END (6), the end of a step, and any other number start time that belongs to no phase
PHASES = ("prefix", "perturb", "suffix", "loss", "classifier", "update")

BUILD_FILES = {  # template -> file in the firmware folder (and one linker script per MEMORY_MAPS entry)
    "Makefile.j2": "Makefile",
    "startup_mps2.c.j2": "startup_mps2.c",
    "zoedge_board.h.j2": "zoedge_board.h",
    "zoedge_board_mps2.c.j2": "zoedge_board_mps2.c",
    "zoedge_board_host.c.j2": "zoedge_board_host.c",
    "app_main.c.j2": "app_main.c",
    "README_firmware.md.j2": "README.md",
}
LINKER_TEMPLATE = "mps.ld.j2"
DEFAULT_STACK_BYTES = 16 * 1024
DEFAULT_QEMU_TIMEOUT_S = 60
PER_ROW = 16


def _rows(values) -> list[list[int]]:
    flat = [int(v) for v in np.ravel(values)]
    return [flat[i : i + PER_ROW] for i in range(0, len(flat), PER_ROW)]


_environment = environment  # the shared template environment (firmware_export/render.py)


def _train_context(train: dict, input_size: int) -> dict:
    """The training part of the app: ``train`` holds ``inputs`` [steps, batch, *input] int8, ``labels``
    [steps, batch], ``allowed`` [steps, n] 0/1, ``classifier`` [steps] 0/1, ``epoch`` [steps] (for the
    learning-rate schedule; default 0) and optionally ``every``
    (state dump period, default 10), ``state_buffer_bytes``, ``label_ctype`` (default uint8_t, as
    zoedge_train_step's labels). The app's state buffer is ZOEDGE_TRAIN_STATE_BYTES when zoedge_train.h
    defines it, else ``state_buffer_bytes``."""
    inputs = np.asarray(train["inputs"])
    if inputs.dtype != np.int8 or inputs.ndim < 3:
        raise ValueError(f"train inputs must be int8 [steps, batch, ...], got {inputs.dtype} {inputs.shape}")
    steps, batch = inputs.shape[:2]
    if int(np.prod(inputs.shape[2:])) != input_size:
        raise ValueError(f"train inputs hold {int(np.prod(inputs.shape[2:]))} values per sample, the model {input_size}")
    labels = np.asarray(train["labels"]).reshape(steps, batch)
    allowed = np.asarray(train["allowed"]).reshape(steps, -1)
    classifier = np.asarray(train.get("classifier", np.ones(steps))).reshape(steps)
    epoch = np.asarray(train.get("epoch", np.zeros(steps))).reshape(steps)
    return dict(
        batch=int(batch), every=int(train.get("every", 10)),
        state_buffer_bytes=int(train.get("state_buffer_bytes", 64 * 1024)),
        label_ctype=train.get("label_ctype", "uint8_t"), allowed_len=int(allowed.shape[1]),
        steps=[dict(inputs=_rows(inputs[s]), labels=[int(v) for v in labels[s]],
                    allowed=[int(v) for v in allowed[s]], classifier=int(classifier[s]), epoch=int(epoch[s]))
               for s in range(steps)],
    )


def render_build_files(out_dir, samples, *, source: str = "model", default_target: str = "cortex-m4",
                       stack_bytes: int = DEFAULT_STACK_BYTES, qemu_timeout_s: int = DEFAULT_QEMU_TIMEOUT_S,
                       sample_note: str = "", train: dict | None = None, memory=None,
                       phases=PHASES) -> list[Path]:
    """Write the Makefile, mps2.ld, startup, board layer, app_main.c and README.md into ``out_dir``.

    ``samples``: int8 array [N, *input shape], the quantised inputs app_main.c embeds and infers (the
    caller decides which; N may be 0). ``train``: batches for the training part of the app, compiled
    only when zoedge_train.c is present (see ``_train_context``). The app checks at compile time that
    the sample size equals the model's ZOEDGE_INPUT_SIZE. ``memory``: optional (label, bytes) pairs
    for the README's memory table (e.g. arena, state, flash and RAM of a build). ``phases``: the names
    of ZOEDGE_MARK's phase numbers 0, 1, ... in zoedge_train.c.
    """
    if default_target not in TARGETS:
        raise ZoEdgeError(f"unknown target {default_target!r}; known: {', '.join(TARGETS)}")
    samples = np.asarray(samples)
    if samples.dtype != np.int8 or samples.ndim < 2:
        raise ValueError(f"samples must be an int8 array [N, ...], got {samples.dtype} {samples.shape}")
    sample_size = int(np.prod(samples.shape[1:]))
    if stack_bytes % 8 or stack_bytes < 1024:
        raise ValueError(f"stack_bytes must be a multiple of 8, at least 1024; got {stack_bytes}")
    context = dict(
        source=Path(source).name, targets=list(TARGETS), target_flags=[(k, list(v)) for k, v in TARGETS.items()],
        target_memory=[(k, TARGET_MEMORY[k], board_defines(MEMORY_MAPS[TARGET_MEMORY[k]])) for k in TARGETS],
        boards=[dict(name=b.name, machine=b.machine, target=b.target, note=b.note) for b in QEMU_BOARDS],
        library_sources=list(kernel_spec.LIBRARY_SOURCES),
        default_target=default_target, qemu_timeout=int(qemu_timeout_s), stack_bytes=int(stack_bytes), phases=list(phases), sample_size=sample_size,
        samples=[_rows(s) for s in samples], sample_note=sample_note or f"{len(samples)} chosen at export",
        train=_train_context(train, sample_size) if train else None,
        memory=[(str(k), int(v)) for k, v in (dict(memory) if memory else {}).items()],
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = _environment()
    written = []
    for template, name in BUILD_FILES.items():
        path = out / name
        path.write_text(env.get_template(template).render(**context))
        written.append(path)
    for memory_map in MEMORY_MAPS.values():
        path = out / f"{memory_map.name}.ld"
        path.write_text(env.get_template(LINKER_TEMPLATE).render(map=memory_map, stack_bytes=int(stack_bytes)))
        written.append(path)
    return written


def board_defines(memory_map: MemoryMap) -> list[str]:
    """The compiler flags that tell zoedge_board_mps2.c where its board's FPGAIO counter is."""
    return [f"-DZOEDGE_MPS_FPGAIO=0x{memory_map.fpgaio:08X}u", f"-DZOEDGE_MPS_COUNTER_HZ={memory_map.counter_hz}u"]


# -- building ---------------------------------------------------------------------------------------------
def _require(tool: str, what: str) -> None:
    if shutil.which(tool) is None:
        raise ZoEdgeError(f"{tool} is not installed ({what}); install it with: {APT_LINE}")


def _make_error(output: str) -> str:
    """The one line that says why make failed: make's own *** message, else the first compiler error."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        m = re.search(r"\*\*\* (.*?)\.?\s+Stop\.$", ln)
        if m:  # a $(error ...) of the Makefile, e.g. an unknown TARGET
            return m.group(1)
    for ln in lines:
        if " error: " in ln or ln.startswith("error:") or "undefined reference" in ln or "will not fit" in ln:
            return ln
    return lines[-1] if lines else "make failed"


KERNEL_CHOICES = ("optimised", "reference")  # the Makefile's KERNELS=


def build(fw_dir, target: str = "host", log=print, compiler: str | None = None, jobs: int = 2,
          extra_cflags: str = "", timeout_s: float = 600, kernels: str = "optimised", rebuild: bool = False) -> Path:
    """Build the example app with the firmware folder's Makefile and return the executable's path.

    ``target``: "host", a board name (``BOARDS``: its core is built) or a Cortex-M target name
    (``TARGETS``). ``compiler``: the host C compiler (default gcc). ``kernels``: "optimised" (the core's
    DSP or MVE paths where it has them) or "reference" (the reference loops on any core). ``rebuild``: make
    every object again from the folder's sources (``make -B``), whatever the time stamps say. Errors are
    one-line ZoEdgeErrors: a missing toolchain (with the apt-get line), a TARGET the Makefile does not
    know, a compile error.
    """
    if kernels not in KERNEL_CHOICES:
        raise ZoEdgeError(f"unknown kernels {kernels!r}; known: {', '.join(KERNEL_CHOICES)}")
    suffix = "" if kernels == "optimised" else f"-{kernels}"
    fw = Path(fw_dir)
    log = log or (lambda *_: None)
    if not (fw / "Makefile").exists():
        raise ZoEdgeError(f"{fw} has no Makefile; export the firmware first")
    _require("make", "runs the firmware Makefile")
    args = ["make", "-C", str(fw), f"-j{jobs}", f"KERNELS={kernels}"] + (["-B"] if rebuild else [])
    if extra_cflags:
        args.append(f"EXTRA_CFLAGS={extra_cflags}")
    if target == "host":
        cc = compiler or "gcc"
        _require(cc, "the host C compiler")
        args += ["host", f"CC={cc}"]
        out = fw / "build" / f"host-{Path(cc.split()[0]).name}{suffix}" / "zoedge_app"
    else:
        _require("arm-none-eabi-gcc", "the Cortex-M cross-compiler")
        if target in BOARDS:
            args += ["arm", f"BOARD={target}"]
            core = BOARDS[target].target
        else:
            args += ["arm", f"TARGET={target}"]
            core = target
        out = fw / "build" / f"{core}{suffix}" / "zoedge_app.elf"
    log(f"make {' '.join(args[4:])} in {fw}")
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        if "newlib" in done.stderr or "nano.specs" in done.stderr:
            raise ZoEdgeError(f"newlib for arm-none-eabi is missing ({_make_error(done.stderr)}); "
                              f"install it with: {APT_LINE}")
        raise ZoEdgeError(f"firmware build for {target} failed: {_make_error(done.stderr + done.stdout)}")
    if not out.exists():
        raise ZoEdgeError(f"firmware build for {target} made no {out}")
    return out


def elf_sizes(elf) -> dict:
    """Flash and static RAM of a built app, from the section sizes (``size``; ``arm-none-eabi-size`` for
    an Arm ELF): flash_bytes = text (code, constants, vectors) + data (initial values); ram_static_bytes
    = data + bss, the stack reservation not included (stack_reserved_bytes)."""
    elf = Path(elf)
    arm = elf.read_bytes()[18:20] == (40).to_bytes(2, "little")  # e_machine EM_ARM
    tool = "arm-none-eabi-size" if arm else "size"
    _require(tool, "reads section sizes")
    berkeley = subprocess.run([tool, str(elf)], capture_output=True, text=True, check=True).stdout.splitlines()
    text, data, bss = (int(v) for v in berkeley[1].split()[:3])
    sysv = subprocess.run([tool, "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    stack = sum(int(ln.split()[1]) for ln in sysv.splitlines() if ln.split()[:1] == [".stack"])
    return dict(flash_bytes=text + data, ram_static_bytes=data + bss - stack, stack_reserved_bytes=stack)
