"""Outputs never destroy inputs: the one home of "may this command write here?".

Every folder zo-edge writes (a run, simulate results, firmware, plots, a demo) carries a marker file,
``.zo-edge-output.json``, with its kind and the SHA-256 of every file zo-edge put there. Every single
file zo-edge writes into a user's folder (a plot, an .npy) is recorded the same way in that folder's
``.zo-edge-files.json``. The rules, checked before any work starts and again just before the result
is swapped into place:

* an output may not be, contain or lie inside one of the command's inputs (a run folder, a model, a
  data file, a firmware folder): ``export RUN --out RUN --force`` is refused, whatever ``--force`` says;
* an existing, non-empty output is replaced only with ``--force``, and only when zo-edge wrote it: a
  folder must carry a marker of the same kind and hold nothing but the files the marker lists,
  unchanged (sub-folders that carry their own marker are judged by it, and the folders a kind declares
  as generated, such as a firmware folder's ``build/``, are the build's); a file must be recorded with
  its current content. A user's ``notes.txt`` inside, or an edited ``app_main.c``, stops ``--force``;
* no part of the output's path may be an existing file (``--out FILE/sub``).

Folders are written whole or not at all: ``write_folder`` yields an empty hidden sibling, marks it,
and renames it into place at the end; an interrupted or failing command leaves the old folder as it
was. Files are written to a hidden sibling and renamed over the target.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from zo_edge.errors import ZoEdgeError

MARKER = ".zo-edge-output.json"
FILE_RECORD = ".zo-edge-files.json"
MARKER_FORMAT = "zo-edge/output@1"

# kind -> folders inside it that the kind's own tools write later (not listed in the marker)
KINDS = {
    "run": (),
    "simulate": (),
    "firmware": ("build",),
    "plots": (),
    "demo": (),
    "sweep": ("prefix-cache",),  # zo-edge sweep: cells/<key>/ are sweep-cell folders; the cache is rebuilt at will
    "sweep-cell": (),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _resolved(path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


# -- checks ----------------------------------------------------------------------------------------
def _check_path_prefix(out: Path, option: str) -> None:
    """No existing file along the way: ``--out FILE/sub`` fails now, not after the work."""
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            if parent == out:
                return  # judged by the caller (a file where a folder is wanted, or a file output)
            raise ZoEdgeError(f"{option} {out}: {parent} is a file, so nothing can be written below it; "
                              "choose another path")


def _check_inputs(out: Path, inputs, option: str) -> None:
    target = _resolved(out)
    for given in inputs:
        if given is None:
            continue
        inp = _resolved(given)
        if _is_within(inp, target):
            what = "is" if inp == target else "contains"
            raise ZoEdgeError(f"{option} {out} {what} the input {given}; writing there would destroy it — "
                              "choose an output outside the inputs")
        if _is_within(target, inp) and inp.is_dir():
            raise ZoEdgeError(f"{option} {out} lies inside the input folder {given}; outputs go outside the "
                              f"inputs — choose e.g. {inp.parent / (inp.name + '-out')}")


def read_marker(folder) -> dict | None:
    """The marker of a folder zo-edge wrote, or None."""
    path = Path(folder) / MARKER
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        return None
    return marker


def foreign_entries(folder) -> list[str]:
    """What in ``folder`` zo-edge did not write as it is (relative paths); empty for a folder that is
    wholly zo-edge's. A folder without a marker is foreign as a whole ("." in the list)."""
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is None:
        return ["."]
    files = marker.get("files", {})
    generated = set(KINDS.get(marker.get("kind"), ()))
    foreign = []

    def walk(directory: Path, rel: str) -> None:
        for entry in sorted(directory.iterdir()):
            name = f"{rel}{entry.name}"
            if name == MARKER:
                continue
            if entry.is_dir() and not entry.is_symlink():
                if name in generated:
                    continue
                if read_marker(entry) is not None:  # a nested output judged by its own marker
                    foreign.extend(f"{name}/{f}" for f in foreign_entries(entry) if f != ".")
                    continue
                walk(entry, name + "/")
            elif name not in files or entry.is_symlink() or _sha256(entry) != files[name]:
                foreign.append(name)

    walk(folder, "")
    return foreign


def check_output_folder(out, kind: str, force: bool = False, inputs=(), option: str = "--out") -> Path:
    """Raise a one-line ZoEdgeError unless ``out`` may become a new ``kind`` folder; return it as a Path."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    out = Path(out)
    _check_path_prefix(out, option)
    _check_inputs(out, inputs, option)
    if out.exists() and not out.is_dir():
        raise ZoEdgeError(f"{option} {out} is a file; give a folder name")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ZoEdgeError(f"{option} {out} exists and is not empty; choose another folder, or pass --force "
                              f"to replace it (only a {kind} folder zo-edge wrote is replaced)")
        marker = read_marker(out)
        if marker is None:
            raise ZoEdgeError(f"{option} {out} was not written by zo-edge (no {MARKER}); --force replaces only "
                              "zo-edge's own folders — choose another folder")
        if marker.get("kind") != kind:
            raise ZoEdgeError(f"{option} {out} is a zo-edge {marker.get('kind')} folder, not {kind} output; "
                              "--force will not replace it — choose another folder")
        foreign = foreign_entries(out)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ZoEdgeError(f"{option} {out} holds files zo-edge did not write (or that changed since): {shown}; "
                              "--force will not delete them — move them or choose another folder")
    return out


def check_output_file(path, force: bool = False, inputs=(), option: str = "--out", suffixes=()) -> Path:
    """Raise a one-line ZoEdgeError unless ``path`` may be written as a file; return it as a Path."""
    path = Path(path)
    _check_path_prefix(path, option)
    _check_inputs(path, inputs, option)
    if suffixes and path.suffix.lower() not in suffixes:
        raise ZoEdgeError(f"{option} {path}: give a file name ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise ZoEdgeError(f"{option} {path} is a folder; give a file name")
    if path.exists():
        if not force:
            raise ZoEdgeError(f"{option} {path} exists; pass --force to replace it (only a file zo-edge wrote)")
        if _recorded(path) != _sha256(path):
            raise ZoEdgeError(f"{option} {path} was not written by zo-edge (or changed since); --force replaces "
                              "only zo-edge's own files — choose another name")
    return path


# -- writing ---------------------------------------------------------------------------------------
def _stamp() -> str:
    return f"{os.getpid()}-{int(time.time() * 1000)}"


def write_marker(folder, kind: str) -> dict:
    """Record every file now in ``folder`` (nested marked folders and generated folders aside) as zo-edge's."""
    folder = Path(folder)
    generated = set(KINDS[kind])
    files = {}

    def walk(directory: Path, rel: str) -> None:
        for entry in sorted(directory.iterdir()):
            name = f"{rel}{entry.name}"
            if name == MARKER or (entry.is_dir() and name in generated):
                continue
            if entry.is_dir():
                if read_marker(entry) is None:
                    walk(entry, name + "/")
            else:
                files[name] = _sha256(entry)

    walk(folder, "")
    import zo_edge

    marker = {"format": MARKER_FORMAT, "kind": kind, "zo_edge": zo_edge.__version__,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "files": files}
    (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
    return marker


@contextmanager
def write_folder(out, kind: str, force: bool = False, inputs=(), option: str = "--out"):
    """Yield an empty hidden sibling of ``out``; when the block succeeds it is marked as a ``kind`` folder
    and replaces ``out``. The rules above are checked before and again just before the swap."""
    out = check_output_folder(out, kind, force, inputs, option)
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = _stamp()
    tmp = out.parent / f".{out.name}.tmp-{stamp}"
    try:
        tmp.mkdir()
        yield tmp
        write_marker(tmp, kind)
        check_output_folder(out, kind, force, inputs, option)  # nothing foreign appeared meanwhile
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{stamp}"
            out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            if old is not None:
                old.rename(out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def fill_folder(out, kind: str, force: bool = False, inputs=(), option: str = "--out"):
    """Like ``write_folder``, for a folder whose parts are written (each whole) by other commands while it
    runs, and must keep their paths: ``out`` itself is yielded. A folder being replaced (``--force``) is
    moved aside first and restored if the block fails; the marker is written when it succeeds."""
    out = check_output_folder(out, kind, force, inputs, option)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{_stamp()}"
        out.rename(old)
    out.mkdir(parents=True)
    try:
        yield out
        write_marker(out, kind)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def resume_folder(out, kind: str, force: bool = False, inputs=(), option: str = "--out", rewritten=()) -> bool:
    """Make ``out`` a ``kind`` folder that a command fills over several runs, each part written whole
    (``write_folder`` per part: a sweep's cells). Returns True when an existing folder is resumed.

    A missing or empty folder is created and marked now, so an interrupted run leaves a folder that the
    next run recognises. An existing one is resumed only when zo-edge wrote it as this kind and it holds
    nothing foreign besides ``rewritten`` (files the command rewrites at its end); ``force`` replaces it
    instead, under check_output_folder's rules. Temporary folders an interrupted part left are removed."""
    out = Path(out)
    _check_path_prefix(out, option)
    _check_inputs(out, inputs, option)
    if out.is_dir() and any(out.iterdir()) and not force:
        marker = read_marker(out)
        if marker is None or marker.get("kind") != kind:
            what = "was not written by zo-edge" if marker is None else f"is a zo-edge {marker.get('kind')} folder"
            raise ZoEdgeError(f"{option} {out} exists and {what}, not {kind} output to resume; choose another folder")
        for stale in sorted(out.rglob(".*.tmp-*")) + sorted(out.rglob(".*.old-*")):  # zo-edge's temporary names
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            elif stale.is_file():
                stale.unlink()
        foreign = [f for f in foreign_entries(out) if f not in rewritten]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ZoEdgeError(f"{option} {out} holds files zo-edge did not write (or that changed since): {shown}; "
                              "move them or choose another folder")
        return True
    check_output_folder(out, kind, force, inputs, option)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_marker(out, kind)
    return False


def _record_path(path: Path) -> Path:
    return path.parent / FILE_RECORD


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return {}
    return record.get("files", {}) if isinstance(record, dict) else {}


def _recorded(path: Path) -> str | None:
    return _read_record(path).get(path.name)


@contextmanager
def write_file(path, force: bool = False, inputs=(), option: str = "--out", suffixes=()):
    """Yield a temporary path next to ``path`` to write; when the block succeeds it replaces ``path``
    and is recorded as zo-edge's. The rules above are checked before and again before the rename."""
    path = check_output_file(path, force, inputs, option, suffixes)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.tmp-{_stamp()}{path.suffix}"
    try:
        yield tmp
        check_output_file(path, force, inputs, option, suffixes)
        os.replace(tmp, path)
        record_file(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def record_file(path) -> None:
    """Note ``path`` (as it is now) as a file zo-edge wrote, in its folder's record."""
    path = Path(path)
    files = _read_record(path)
    files[path.name] = _sha256(path)
    record = {"format": MARKER_FORMAT, "note": "files zo-edge wrote here; --force replaces only these",
              "files": dict(sorted(files.items()))}
    tmp = path.parent / f".{FILE_RECORD}.tmp-{_stamp()}"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, _record_path(path))


def first_free(base) -> Path:
    """``base`` if it does not exist, else ``base-2``, ``base-3``, ...: a fresh folder per run."""
    base = Path(base)
    if not base.exists():
        return base
    n = 2
    while (candidate := base.with_name(f"{base.name}-{n}")).exists():
        n += 1
    return candidate
