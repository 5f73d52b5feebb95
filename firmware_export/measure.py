"""Measured memory of an exported firmware: what the linker kept, per object file, and the stack.

Section sizes come from the GNU ld map file of the Arm build (only input sections that survived
``--gc-sections``: the memory map after "Linker script and memory map"), grouped by object so the
zo-edge library can be told apart from the example app (its embedded samples and batches) and the
board layer. The stack high-water mark comes from running the app in QEMU: the startup code paints
the stack and the app scans it at the end (the ``S`` line).
"""

from __future__ import annotations

import re
from pathlib import Path

from zo_edge.kernel_spec import LIBRARY_SOURCES

LIBRARY = tuple(s.replace(".c", ".o") for s in LIBRARY_SOURCES) + ("zoedge_model.o", "zoedge_fixed.o", "zoedge_train.o",
                                                                  "zoedge_persist.o")
RUNTIME = ("libgcc.a", "libc_nano.a", "libc.a")  # compiler helpers and memcpy/memset the library calls

_SECTION = re.compile(r"^ (\.(?:text|rodata|data|bss)\S*|COMMON)(?:\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(\S+))?$")
_CONTINUED = re.compile(r"^\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(\S+)$")


def linked_sizes(map_path) -> dict[str, dict[str, int]]:
    """{object: {"flash": bytes, "ram": bytes}} of the input sections the linker kept."""
    lines = Path(map_path).read_text().splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.startswith("Linker script and memory map"))
    except StopIteration:
        raise ValueError(f"{map_path} is not a GNU ld map file") from None
    sizes: dict[str, dict[str, int]] = {}
    pending = None
    for line in lines[start:]:
        m = _SECTION.match(line)
        if m:
            name, _, size, obj = m.groups()
            if size is None:  # a long section name: address, size and object follow on the next line
                pending = name
                continue
        elif pending and (c := _CONTINUED.match(line)):
            name, (_, size, obj) = pending, c.groups()
        else:
            pending = None
            continue
        pending = None
        n = int(size, 16)
        if n == 0:
            continue
        entry = sizes.setdefault(_object_name(obj), {"flash": 0, "ram": 0})
        if name.startswith((".text", ".rodata")):
            entry["flash"] += n
        elif name.startswith(".data"):
            entry["flash"] += n  # initial values live in flash and are copied to RAM at boot
            entry["ram"] += n
        else:  # .bss, COMMON
            entry["ram"] += n
    return sizes


def _object_name(path: str) -> str:
    """``build/cortex-m4/zoedge_model.o`` -> ``zoedge_model.o``; ``.../libgcc.a(_udivmoddi4.o)`` -> ``libgcc.a``."""
    archive = re.match(r"(.*?\.a)\(", path)
    return Path(archive.group(1)).name if archive else Path(path).name


def measure_firmware(fw_dir, board: str = "mps2-an386", timeout_s: float = 600, log=print) -> dict:
    """Build the firmware for an mps2 board, run it once in QEMU, and measure the library's memory."""
    from firmware_export.board import BOARDS, TARGET_ISA, build
    from firmware_export.qemu import parse_output, run_qemu
    from zo_edge.errors import ZoEdgeError

    if board not in BOARDS or not BOARDS[board].machine:
        known = ", ".join(b for b, v in BOARDS.items() if v.machine)
        raise ZoEdgeError(f"measuring needs a QEMU board, not {board!r}; known: {known}")
    elf = build(fw_dir, board, log=log)
    app = parse_output(run_qemu(elf, board, timeout_s).stdout)
    if app.errors or app.status != 0:
        raise ZoEdgeError(f"the firmware on {board} failed: {app.errors[0] if app.errors else app.status}")
    parts = split_sizes(elf)
    lib_flash, lib_ram = parts["library"]["flash_bytes"], parts["library"]["ram_static_bytes"]
    infer, steps = list(app.infer_instructions.values()), list(app.step_instructions.values())
    return {
        "board": board,
        "isa": TARGET_ISA[BOARDS[board].target],
        "instructions": {"inference": int(sum(infer) / len(infer)) if infer else None,
                         "train_step": int(sum(steps) / len(steps)) if steps else None},
        "library": parts["library"],
        "stack_high_water_bytes": app.stack_bytes,
        "ram_bytes": lib_ram + app.stack_bytes,
        "flash_bytes": lib_flash,
        "app_objects": parts["app"]["objects"],
    }


def split_sizes(elf) -> dict:
    """The linked ELF's flash and static RAM in two parts, from its map: ``library`` (the zo-edge objects
    and the runtime helpers they pull in: what a user's firmware links) and ``app`` (the example app, its
    embedded samples and batches, the board layer and startup), each {flash_bytes, ram_static_bytes, objects}."""
    per_object = linked_sizes(Path(elf).with_suffix(".map"))
    library = {o: s for o, s in per_object.items() if o in LIBRARY or o in RUNTIME}
    app = {o: s for o, s in per_object.items() if o not in library}

    def total(objects: dict) -> dict:
        return {"flash_bytes": sum(s["flash"] for s in objects.values()),
                "ram_static_bytes": sum(s["ram"] for s in objects.values()), "objects": objects}

    return {"library": total(library), "app": total(app)}
