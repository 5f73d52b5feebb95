"""The frozen prefix's outputs, computed once: a content-addressed cache shared by seeds, methods and cells.

An int8 learner runs the prefix (every op no trainable tensor reaches, ``Engine.split_frozen``) once
per sample and the suffix many times. The prefix's outputs are a pure function of two things, so
they are cached under the digest of both:

* **the frozen part**: the prefix ops in order, each with its opcode, options and, per operand, the
  shape, dtype and quantisation (constants also their bytes), operands named by the order in which
  the prefix makes them rather than by tensor index; and the boundary tensors the suffix reads. Two
  run folders whose models differ only after the cut (another adapter width, another classifier)
  share one entry;
* **the samples**: the float array's dtype, shape and bytes (quantised to the graph's input inside
  the prefix: its input quantisation is part of the frozen part).

Every method splits where the firmware does (before the first trainable op of the plan), so seeds and
methods of one run share entries, and so do the cells of a sweep. With a ``directory`` the entries
also live on disk (``<digest>.npz``, written to a temporary name and renamed: a reader never sees
half a file; two workers that compute one entry write the same bytes), so other processes and later
runs read them instead of recomputing. A value read back is the value computed: the boundary is
int8 and stored as is.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path

import numpy as np


def frozen_digest(split) -> str:
    """SHA-256 of the prefix ``split`` runs (see the module docstring), independent of tensor numbering."""
    graph = split.engine.graph
    digest = hashlib.sha256(b"zo-edge prefix v1\n")
    names = {index: f"in{k}" for k, index in enumerate(graph.inputs)}

    def operand(index: int) -> str:
        if index < 0:
            return "none"
        if index in names:
            return names[index]
        t = graph.tensors[index]
        if t.is_constant:
            digest.update(np.ascontiguousarray(t.data).tobytes())
            return f"const{t.shape}{np.dtype(t.dtype).str}"
        raise ValueError(f"prefix reads tensor {index} before it is made")

    def quant(index: int) -> str:
        t = graph.tensors[index]
        scale = None if t.scale is None else np.asarray(t.scale, np.float64).tolist()
        zero = None if t.zero_point is None else np.asarray(t.zero_point, np.int64).tolist()
        return f"{tuple(t.shape)}{np.dtype(t.dtype).str}{scale}{zero}@{t.quantized_dimension}"

    for index in graph.inputs:
        digest.update(f"input {quant(index)}\n".encode())
    for step in split.prefix:
        op = step.op
        reads = [operand(i) + (quant(i) if i >= 0 else "") for i in op.inputs]
        for out in op.outputs:
            names[out] = f"t{len(names)}"
        writes = [names[o] + quant(o) for o in op.outputs]
        digest.update(f"{op.opcode} {sorted(op.options.items())!r} {reads} -> {writes}\n".encode())
    digest.update(f"boundary {[names[i] for i in split.boundary]}\n".encode())
    return digest.hexdigest()


def samples_digest(x: np.ndarray) -> str:
    x = np.ascontiguousarray(x)
    digest = hashlib.sha256(f"{x.dtype.str}{x.shape}\n".encode())
    digest.update(memoryview(x).cast("B"))
    return digest.hexdigest()


class PrefixCache:
    """``boundary(split, x)``: the prefix outputs {tensor index: int8 array} for float samples x."""

    def __init__(self, directory=None):
        self.directory = None if directory is None else Path(directory)
        self._memory: dict[str, list[np.ndarray]] = {}
        self._frozen = weakref.WeakKeyDictionary()  # split -> its digest (a split's prefix never changes)
        self.hits = self.misses = 0

    def _frozen_key(self, split) -> str:
        key = self._frozen.get(split)
        if key is None:
            key = self._frozen[split] = frozen_digest(split)
        return key

    def key(self, split, x) -> str:
        return hashlib.sha256(f"{self._frozen_key(split)} {samples_digest(x)}".encode()).hexdigest()

    def boundary(self, split, x) -> dict[int, np.ndarray]:
        key = self.key(split, x)
        arrays = self._memory.get(key)
        if arrays is None:
            arrays = self._read(key)
        if arrays is None:
            self.misses += 1
            values = split.run_prefix([split.engine.quantize_input(x)])
            arrays = [values[i] for i in split.boundary]
            self._write(key, arrays)
        else:
            self.hits += 1
        self._memory[key] = arrays
        return dict(zip(split.boundary, arrays))

    # -- disk -------------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def _read(self, key: str):
        if self.directory is None:
            return None
        try:
            with np.load(self._path(key)) as data:
                return [data[f"b{k}"] for k in range(len(data.files))]
        except (OSError, ValueError, KeyError):  # absent, or unreadable: recompute (and rewrite)
            return None

    def _write(self, key: str, arrays) -> None:
        if self.directory is None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{key}.tmp-{os.getpid()}.npz"
            np.savez(tmp, **{f"b{k}": a for k, a in enumerate(arrays)})
            os.replace(tmp, self._path(key))
        except OSError:  # a full or read-only disk costs speed, not results
            pass
