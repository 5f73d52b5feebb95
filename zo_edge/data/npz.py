"""A user's data set as one ``.npz`` file, read and written in exactly one format.

Required arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test``. Optional: ``class_names``,
``domain_train``, ``domain_test`` (both or neither) and ``domain_names``. The rules they must obey are
``dataset_from_arrays``'s (see ``zo_edge.data.dataset``). Files are read with ``allow_pickle=False``: an
npz may come from anywhere, and unpickling can run code.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from zo_edge.data.dataset import Dataset, dataset_from_arrays
from zo_edge.errors import ZoEdgeError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("class_names", "domain_train", "domain_test", "domain_names")
_FORMAT = ("the format: x_train, y_train, x_test, y_test (required); class_names, domain_train, "
           "domain_test, domain_names (optional)")
_ZIP_MAGIC, _NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"
# Every entry gets this timestamp so that the same dataset always gives the same bytes (and sha256).
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def load_npz(path) -> Dataset:
    """Read and check a data set file. ``meta`` records the path, the file's sha256 and size, the split
    sizes and the samples per class; the dataset is named after the file (``keywords.npz`` -> keywords)."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise ZoEdgeError(f"{path} {problem}; give the path of an .npz file ({_FORMAT})")
    with path.open("rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    sha256 = file_sha256(path)
    if not magic.startswith(_ZIP_MAGIC):
        what = ("a single .npy array, not an .npz archive of named arrays" if magic == _NPY_MAGIC
                else "not an .npz archive (no zip header)")
        raise ZoEdgeError(f"{path} is {what}; write it with numpy.savez(path, x_train=..., y_train=..., "
                          f"x_test=..., y_test=...)")
    arrays = _read_arrays(path)
    dataset = dataset_from_arrays(
        **{name: arrays[name] for name in REQUIRED}, **{name: arrays.get(name) for name in OPTIONAL},
        name=path.stem, source=str(path),
        meta={"origin": "npz", "path": str(path), "file": path.name, "sha256": sha256,
              "bytes": path.stat().st_size})
    dataset.meta.update({
        "train_size": len(dataset.y_train), "test_size": len(dataset.y_test),
        "class_counts": {"train": np.bincount(dataset.y_train, minlength=dataset.num_classes).tolist(),
                         "test": np.bincount(dataset.y_test, minlength=dataset.num_classes).tolist()}})
    if dataset.domain_names is not None:
        dataset.meta["domain_counts"] = {
            "train": np.bincount(dataset.domain_train, minlength=dataset.num_domains).tolist(),
            "test": np.bincount(dataset.domain_test, minlength=dataset.num_domains).tolist()}
    return dataset


def save_npz(dataset: Dataset, path) -> str:
    """Write ``dataset`` in the format ``load_npz`` reads and return the file's sha256.

    The bytes depend only on the arrays (fixed zip timestamps), so saving the same data twice gives the
    same file. The file appears complete or not at all.
    """
    path = Path(path)
    arrays = {"x_train": np.asarray(dataset.x_train, np.float32), "y_train": np.asarray(dataset.y_train, np.int64),
              "x_test": np.asarray(dataset.x_test, np.float32), "y_test": np.asarray(dataset.y_test, np.int64),
              "class_names": np.array(dataset.class_names, dtype=str)}
    if dataset.domain_names is not None:
        arrays.update(domain_train=np.asarray(dataset.domain_train, np.int64),
                      domain_test=np.asarray(dataset.domain_test, np.int64),
                      domain_names=np.array(dataset.domain_names, dtype=str))
    partial = path.with_name(path.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, array in arrays.items():
                entry = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_TIME)
                with archive.open(entry, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return file_sha256(path)


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ZoEdgeError(f"{path} is not a readable .npz file ({error}); write it again with numpy.savez") from None
    with npz:
        names = list(npz.files)
        missing = [n for n in REQUIRED if n not in names]
        if missing:
            raise ZoEdgeError(f"{path} lacks {', '.join(missing)}; it holds {', '.join(names) or 'no arrays'} "
                              f"({_FORMAT})")
        unknown = [n for n in names if n not in REQUIRED + OPTIONAL]
        if unknown:
            raise ZoEdgeError(f"{path} holds {', '.join(unknown)}, which the format does not know; remove or "
                              f"rename {'it' if len(unknown) == 1 else 'them'} ({_FORMAT})")
        arrays = {}
        for name in names:
            try:
                arrays[name] = npz[name]
            except ValueError as error:
                if "allow_pickle" in str(error) or "pickled" in str(error):
                    raise ZoEdgeError(f"{path}: {name} holds Python objects (pickled), which zo-edge does not "
                                      f"load; store numbers, and names as np.array(names, dtype=str)") from None
                raise ZoEdgeError(f"{path}: {name} cannot be read ({error}); write the file again") from None
            except (OSError, EOFError, zipfile.BadZipFile) as error:
                raise ZoEdgeError(f"{path}: {name} cannot be read ({error}); the file is damaged, write it "
                                  f"again") from None
    return arrays
