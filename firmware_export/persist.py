"""Persistence of the learned state on the device: renders zoedge_persist.h/.c from jinja2 templates.

Two slots, each with a commit word, a header (version, state tag, sequence number, length, CRC-32) and
the payload; a save goes to the slot not holding the newest state and commits last, so a power cut
anywhere in a save leaves the previous state loadable. The layout and the rules are documented in
templates/zoedge_persist.h.j2. Python computes only plain values here (the CRC table, the constants);
all C lives in the templates.
"""

from __future__ import annotations

from pathlib import Path

from firmware_export.render import environment

TEMPLATES_DIR = Path(__file__).parent / "templates"
FORMAT_VERSION = 1
MAGIC_TEXT = "ZoES"  # zo-edge state; as a little-endian word, neither 0x00000000 nor 0xFFFFFFFF
MAGIC = int.from_bytes(MAGIC_TEXT.encode("ascii"), "little")
DEFAULT_WRITE_ALIGN = 8  # double-word programming of STM32L4/G4/WB flash; 1, 4, 16, 32 also common
CRC32_POLY = 0xEDB88320  # IEEE 802.3, reflected: zlib's crc32
LIBRARY_FILES = ("zoedge_persist.h", "zoedge_persist.c")
TEST_MAIN_FILE = "persist_test_main.c"


def crc32_nibble_table() -> list[int]:
    """The 16-entry table of the C code: entry i is nibble i shifted through the reflected polynomial."""
    table = []
    for i in range(16):
        c = i
        for _ in range(4):
            c = (c >> 1) ^ (CRC32_POLY if c & 1 else 0)
        table.append(c)
    return table


_TABLE = crc32_nibble_table()


def crc32(data: bytes, crc: int = 0) -> int:
    """CRC-32 the way the generated C computes it (equal to zlib.crc32, chaining included)."""
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c ^= b
        c = (c >> 4) ^ _TABLE[c & 0x0F]
        c = (c >> 4) ^ _TABLE[c & 0x0F]
    return c ^ 0xFFFFFFFF


def _round_up(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def slot_bytes(state_bytes: int, write_align: int = DEFAULT_WRITE_ALIGN) -> int:
    """Smallest slot_size holding a state of state_bytes (C: ZOEDGE_PERSIST_SLOT_BYTES); round it up to
    the flash erase sector on NOR."""
    return _round_up(4, write_align) + _round_up(20, write_align) + _round_up(state_bytes, write_align)


_environment = environment  # the shared template environment (firmware_export/render.py)


def render_persist(
    out_dir: str | Path,
    *,
    write_align: int = DEFAULT_WRITE_ALIGN,
    state_tag: int = 0,
    test_main: bool = False,
    test_state_bytes: int = 300,
    test_slot_size: int = 512,
) -> list[Path]:
    """Write zoedge_persist.h and .c into out_dir (created if needed) and return their paths.

    write_align: the flash programming unit in bytes (every write is a multiple of it, at a multiple of
    it). state_tag: a 32-bit identifier of what the state is (e.g. derived from the model), so a slot
    saved by a firmware for another model is ignored. test_main also writes persist_test_main.c, the
    host test program, with a RAM storage of two test_slot_size slots and a test_state_bytes state.
    """
    if not 1 <= write_align <= 256:
        raise ValueError(f"write_align must be 1..256 bytes, got {write_align}")
    if not 0 <= state_tag <= 0xFFFFFFFF:
        raise ValueError(f"state_tag must fit in 32 bits, got {state_tag}")
    if test_main and slot_bytes(test_state_bytes, write_align) > test_slot_size:
        need = slot_bytes(test_state_bytes, write_align)
        raise ValueError(f"a {test_state_bytes}-byte state needs slots of {need} bytes, got {test_slot_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    values = {
        "write_align": write_align,
        "state_tag": state_tag,
        "magic": MAGIC,
        "magic_text": MAGIC_TEXT,
        "format_version": FORMAT_VERSION,
        "crc_table": _TABLE,
        "test_state_bytes": test_state_bytes,
        "test_slot_size": test_slot_size,
    }
    env = _environment()
    names = list(LIBRARY_FILES) + ([TEST_MAIN_FILE] if test_main else [])
    paths = []
    for name in names:
        path = out / name
        path.write_text(env.get_template(name + ".j2").render(**values))
        paths.append(path)
    return paths
