"""The device catalogue: the parts a memory budget is checked against.

The bundled catalogue is ``zo_edge/devices.toml`` (its header documents the format). A user file in the
same format adds devices, or overrides fields of bundled ones, with ``--devices FILE``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from zo_edge.errors import ZoEdgeError

BUNDLED = Path(__file__).with_name("devices.toml")

CORES = ("cortex-m0", "cortex-m0plus", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m23", "cortex-m33",
         "cortex-m35p", "cortex-m55", "cortex-m85")
INTEGER_FIELDS = ("sram_bytes", "flash_bytes", "clock_hz")
STRING_FIELDS = ("name", "core", "source")
OPTIONAL_STRING_FIELDS = ("sram_note", "note")
FIELDS = ("name", "core", "fpu", *INTEGER_FIELDS, "source", *OPTIONAL_STRING_FIELDS)
_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Device:
    key: str
    name: str
    core: str
    fpu: bool
    sram_bytes: int
    flash_bytes: int
    clock_hz: int
    source: str
    sram_note: str = ""
    note: str = ""
    catalogue: str = ""  # the file the entry (or its last override) came from

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("catalogue")
        return out

    def describe(self) -> str:
        """One line: 'nrf52840 (Nordic Semiconductor nRF52840): cortex-m4 with FPU, 64 MHz, 256 KiB SRAM, ...'."""
        fpu = "with FPU" if self.fpu else "no FPU"
        return (f"{self.key} ({self.name}): {self.core} {fpu}, {_mhz(self.clock_hz)}, "
                f"{_size(self.sram_bytes)} SRAM, {_size(self.flash_bytes)} flash")


def _mhz(hz: int) -> str:
    mhz = hz / 1e6
    return f"{mhz:.0f} MHz" if mhz == int(mhz) else f"{mhz:g} MHz"


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n / 1024:.1f} KiB"


def _read(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ZoEdgeError(f"device catalogue {path} does not exist") from None
    except IsADirectoryError:
        raise ZoEdgeError(f"device catalogue {path} is a folder; give a .toml file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ZoEdgeError(f"device catalogue {path} is not valid TOML: {detail}") from None
    devices = data.get("devices")
    unknown = sorted(set(data) - {"devices"})
    if unknown:
        raise ZoEdgeError(f"device catalogue {path}: unknown top-level key {unknown[0]!r}; "
                          f"put each device in a [devices.KEY] table")
    if devices is None:
        raise ZoEdgeError(f"device catalogue {path} has no [devices.KEY] tables")
    if not isinstance(devices, dict):
        raise ZoEdgeError(f"device catalogue {path}: 'devices' must be tables, [devices.KEY]")
    for key, entry in devices.items():
        if not isinstance(entry, dict):
            raise ZoEdgeError(f"device catalogue {path}: devices.{key} must be a table, [devices.{key}]")
    return devices


def _check(key: str, entry: dict, path: Path) -> Device:
    where = f"device catalogue {path}: device {key!r}"
    if not _KEY.match(key):
        raise ZoEdgeError(f"{where}: the key may hold only lower-case letters, digits, '.', '-' and '_'")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise ZoEdgeError(f"{where}: unknown field {unknown[0]!r}; fields: {', '.join(FIELDS)}")
    for field in (*STRING_FIELDS, "fpu", *INTEGER_FIELDS):
        if field not in entry:
            raise ZoEdgeError(f"{where}: missing field {field!r}")
    for field in INTEGER_FIELDS:
        value = entry[field]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ZoEdgeError(f"{where}: field {field!r} must be an integer (got {value!r})")
        if value <= 0:
            raise ZoEdgeError(f"{where}: field {field!r} must be a positive integer (got {value})")
    for field in (*STRING_FIELDS, *OPTIONAL_STRING_FIELDS):
        if field in entry and not isinstance(entry[field], str):
            raise ZoEdgeError(f"{where}: field {field!r} must be a string (got {entry[field]!r})")
    for field in STRING_FIELDS:
        if not entry[field].strip():
            raise ZoEdgeError(f"{where}: field {field!r} is empty")
    if not isinstance(entry["fpu"], bool):
        raise ZoEdgeError(f"{where}: field 'fpu' must be true or false (got {entry['fpu']!r})")
    if entry["core"] not in CORES:
        raise ZoEdgeError(f"{where}: field 'core' is {entry['core']!r}; choose one of {', '.join(CORES)}")
    return Device(key=key, catalogue=str(path), **{f: entry[f] for f in FIELDS if f in entry})


def load_catalogue(path=None, extra=None) -> dict[str, Device]:
    """Devices by key: the catalogue at ``path`` (default: the bundled one), then ``extra`` (a user file)
    whose entries add devices or override the fields they set. Raises a one-line ZoEdgeError naming the
    file, the device and the field of a malformed entry."""
    entries: dict[str, tuple[dict, Path]] = {}
    for source in [Path(path) if path else BUNDLED] + ([Path(extra)] if extra else []):
        for key, entry in _read(source).items():
            norm = key.lower()
            base = entries.get(norm, ({}, source))[0]
            entries[norm] = ({**base, **entry}, source)
    return {key: _check(key, entry, source) for key, (entry, source) in entries.items()}


def get_device(name: str, catalogue: dict[str, Device]) -> Device:
    device = catalogue.get(str(name).strip().lower())
    if device is None:
        raise ZoEdgeError(f"unknown device {name!r}; known devices: {', '.join(sorted(catalogue))} "
                          f"(add your own with --devices FILE)")
    return device
