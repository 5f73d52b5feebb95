"""Folders written whole or not at all: build in a hidden sibling, swap it into place at the end.

Used by ``build`` (run folders), ``simulate`` (results) and ``export`` (firmware): an interrupted or
failing command never leaves half a folder, and the previous folder stays until the new one is in.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_folder(out, before_swap=None):
    """Yield an empty temporary sibling of ``out``; when the block succeeds it replaces ``out``.

    ``before_swap()`` runs just before the swap (e.g. to re-check that ``out`` did not appear meanwhile).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = f"{os.getpid()}-{int(time.time() * 1000)}"
    tmp = out.parent / f".{out.name}.tmp-{stamp}"
    try:
        tmp.mkdir()
        yield tmp
        if before_swap is not None:
            before_swap()
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
