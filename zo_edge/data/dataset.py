"""The one form every data set takes: arrays plus metadata, checked once on the way in.

``dataset_from_arrays`` is the single door. The bundled loaders, ``load_npz`` and a notebook's own
arrays all pass through it, so everything downstream can rely on the same promises:

* ``x_train``/``x_test``: finite float32, ``[samples, *input_shape]``, the same per-sample shape;
* ``y_train``/``y_test``: int64 class indices 0..C-1, every class with training and test samples
  (C = ``len(class_names)`` when names are given, else the largest label + 1);
* optionally ``domain_train``/``domain_test``: int64 domain indices 0..D-1 (0 = the base domain), both or
  neither, every domain with training and test samples, and ``domain_names`` (D strings).

Anything else is refused with one line that names the source, the array and the problem, and says how
to fix it. Harmless conversions (integer features to float32, whole-number float labels to integers) are
made and listed in ``meta["conversions"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from zo_edge.errors import ZoEdgeError


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # float32 [N, *input_shape]
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple
    num_classes: int
    class_names: list[str]
    meta: dict  # JSON-serialisable record of the source and every preprocessing choice
    domain_train: Optional[np.ndarray] = None  # int64 [N]: the domain of each sample, 0 = base
    domain_test: Optional[np.ndarray] = None
    domain_names: Optional[list[str]] = None  # one per domain when the domain arrays are there

    @property
    def num_domains(self) -> int:
        return 0 if self.domain_names is None else len(self.domain_names)


def dataset_from_arrays(x_train, y_train, x_test, y_test, *, name: str, class_names=None, domain_train=None,
                        domain_test=None, domain_names=None, meta: Optional[dict] = None,
                        source: Optional[str] = None) -> Dataset:
    """Check the arrays (see the module docstring) and wrap them as a Dataset.

    ``source`` starts every error message (a file path, say); it defaults to ``dataset 'NAME'``.
    Arrays that already have the right dtype are used as they are, not copied.
    """
    where = source or f"dataset {name!r}"
    notes: list[str] = []
    x_train = _features(where, "x_train", x_train, notes)
    x_test = _features(where, "x_test", x_test, notes)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ZoEdgeError(f"{where}: x_train holds samples of shape {x_train.shape[1:]} but x_test of shape "
                          f"{x_test.shape[1:]}; both splits need the same per-sample shape")
    splits = {"train": len(x_train), "test": len(x_test)}

    y = {split: _indices(where, f"y_{split}", values, splits[split], _CLASSES, notes)
         for split, values in (("train", y_train), ("test", y_test))}
    names = None if class_names is None else _names(where, _CLASSES, class_names)
    num_classes = _count(where, _CLASSES, y, names)
    if names is None:
        names = [str(k) for k in range(num_classes)]

    domains = {"train": domain_train, "test": domain_test}
    given = [f"domain_{split}" for split, values in domains.items() if values is not None]
    if len(given) == 1:
        other = "domain_test" if given[0] == "domain_train" else "domain_train"
        raise ZoEdgeError(f"{where}: {given[0]} is given but {other} is not; give both (the domain index of "
                          f"each sample, 0 = base) or neither")
    if given:
        d = {split: _indices(where, f"domain_{split}", values, splits[split], _DOMAINS, notes)
             for split, values in domains.items()}
        d_names = None if domain_names is None else _names(where, _DOMAINS, domain_names)
        num_domains = _count(where, _DOMAINS, d, d_names)
        d_names = d_names or [f"domain {k}" for k in range(num_domains)]
    elif domain_names is not None:
        raise ZoEdgeError(f"{where}: domain_names is given but domain_train and domain_test are not; add them "
                          f"(the domain index of each sample) or drop domain_names")
    else:
        d, d_names = {"train": None, "test": None}, None

    meta = dict(meta or {})
    if notes:
        meta["conversions"] = notes
    return Dataset(name=name, x_train=x_train, y_train=y["train"], x_test=x_test, y_test=y["test"],
                   input_shape=tuple(int(s) for s in x_train.shape[1:]), num_classes=num_classes,
                   class_names=names, meta=meta, domain_train=d["train"], domain_test=d["test"],
                   domain_names=d_names)


def check_input_shape(dataset: Dataset, shape) -> Dataset:
    """The dataset in the model's per-sample input ``shape`` (no batch axis; ``None`` matches any size).

    Shapes that differ only in trailing axes of size 1 — MFCC frames ``(32, 13)`` for a model taking
    ``(32, 13, 1)`` — describe the same numbers in the same memory order, so the arrays are reshaped
    (a view, no copy) and ``meta["reshaped"]`` records it. Any other mismatch is an error with a hint.
    """
    want = tuple(None if s is None else int(s) for s in shape)
    have = tuple(dataset.input_shape)
    if _fits(have, want):
        return dataset
    core, want_core = _without_trailing_ones(have), _without_trailing_ones(want)
    if _fits(core, want_core):
        shape = core + want[len(want_core):]  # the model's trailing ones on the data's own sizes
        note = {"from": list(have), "to": list(shape),
                "why": "the data and the model differ only in trailing axes of size 1"}
        return replace(dataset, x_train=dataset.x_train.reshape(-1, *shape),
                       x_test=dataset.x_test.reshape(-1, *shape), input_shape=shape,
                       meta={**dataset.meta, "reshaped": note})
    raise ZoEdgeError(f"{source_of(dataset)}: x_train holds samples of shape {have}; the model takes "
                      f"{_shape_text(want)}: {_reshape_hint(have, want)}")


def describe_dataset(dataset: Dataset) -> dict:
    """A JSON-ready summary for users: sizes, classes with counts, domains, input shape, value range."""
    def counts(labels, n):
        return np.bincount(labels, minlength=n).tolist()

    train, test = counts(dataset.y_train, dataset.num_classes), counts(dataset.y_test, dataset.num_classes)
    summary = {
        "name": dataset.name,
        "origin": dataset.meta.get("origin", "arrays"),
        "input_shape": list(dataset.input_shape),
        "train_samples": len(dataset.y_train),
        "test_samples": len(dataset.y_test),
        "num_classes": dataset.num_classes,
        "classes": [{"label": k, "name": dataset.class_names[k], "train": train[k], "test": test[k]}
                    for k in range(dataset.num_classes)],
        "x_train_range": {"min": float(dataset.x_train.min()), "max": float(dataset.x_train.max()),
                          "mean": float(dataset.x_train.mean()), "std": float(dataset.x_train.std())},
        "domains": None,
    }
    for key in ("path", "sha256", "bytes", "conversions", "reshaped"):
        if key in dataset.meta:
            summary[key] = dataset.meta[key]
    if dataset.domain_names is not None:
        d_train = counts(dataset.domain_train, dataset.num_domains)
        d_test = counts(dataset.domain_test, dataset.num_domains)
        summary["domains"] = [
            {"index": k, "name": dataset.domain_names[k], "train": d_train[k], "test": d_test[k],
             "classes": sorted({int(c) for c in dataset.y_train[dataset.domain_train == k]})}
            for k in range(dataset.num_domains)]
    return summary


def format_description(summary: dict) -> str:
    """``describe_dataset``'s summary as the lines ``zo-edge data check`` prints."""
    lines = [f"{summary['name']} ({summary.get('path', summary['origin'])}): "
             f"{summary['train_samples']} train and {summary['test_samples']} test samples of shape "
             f"{tuple(summary['input_shape'])}, {summary['num_classes']} classes"]
    if "sha256" in summary:
        lines.append(f"  sha256 {summary['sha256']}")
    r = summary["x_train_range"]
    lines.append(f"  x_train values {r['min']:.4g} .. {r['max']:.4g} (mean {r['mean']:.4g}, sd {r['std']:.4g})")
    width = max(len(c["name"]) for c in summary["classes"])
    for c in summary["classes"]:
        lines.append(f"  class {c['label']:>3} {c['name']:<{width}}  train {c['train']:>6}  test {c['test']:>6}")
    for d in summary["domains"] or []:
        lines.append(f"  domain {d['index']:>2} {d['name']}: train {d['train']}, test {d['test']}"
                     f"{' (base)' if d['index'] == 0 else ''}")
    for note in summary.get("conversions", []):
        lines.append(f"  note: {note}")
    if "reshaped" in summary:
        lines.append(f"  note: reshaped {tuple(summary['reshaped']['from'])} -> {tuple(summary['reshaped']['to'])}")
    return "\n".join(lines)


def check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ZoEdgeError(f"seed={seed!r} must be a non-negative whole number (e.g. 0)")


def source_of(dataset: Dataset) -> str:
    """How error messages name a dataset: its file when it came from one."""
    return dataset.meta.get("path") or f"dataset {dataset.name!r}"


# ---------------------------------------------------------------------------------------------------
# Checks, one kind of array each


@dataclass(frozen=True)
class _Groups:
    """Labels and domains obey the same rules; this names them in messages."""
    what: str  # "class" | "domain"
    plural: str
    entry: str  # what one entry of the index array is called
    entries: str
    prefix: str  # the index arrays are PREFIX_train and PREFIX_test
    names: str  # the array of names
    letter: str  # how the docs call their number


_CLASSES = _Groups("class", "classes", "label", "labels", "y", "class_names", "C")
_DOMAINS = _Groups("domain", "domains", "domain index", "domain indices", "domain", "domain_names", "D")


def _features(where: str, name: str, values, notes: list[str]) -> np.ndarray:
    try:
        values = np.asarray(values)
    except (ValueError, TypeError):
        raise ZoEdgeError(f"{where}: {name} is not a rectangular array (samples of different shapes?); "
                          f"pad or crop every sample to one shape") from None
    kind = values.dtype.kind
    if kind == "O":
        try:
            values = values.astype(np.float64)
        except (ValueError, TypeError):
            raise ZoEdgeError(f"{where}: {name} holds Python objects that are not numbers; store the "
                              f"features as a float32 array") from None
        kind = "f"
    if kind in "US":
        raise ZoEdgeError(f"{where}: {name} holds text, not numbers; store the features as float32")
    if kind == "c":
        raise ZoEdgeError(f"{where}: {name} holds complex numbers; store real features (e.g. np.abs(x), or the "
                          f"real and imaginary parts as two channels)")
    if kind not in "biuf":
        raise ZoEdgeError(f"{where}: {name} holds {values.dtype} values, not numbers; store the features as "
                          f"float32")
    if values.ndim < 2:
        raise ZoEdgeError(f"{where}: {name} has shape {values.shape}, not [samples, ...]; give each sample at "
                          f"least one axis (x[:, None] for one number per sample)")
    if len(values) == 0 or values.size == 0:
        raise ZoEdgeError(f"{where}: {name} has shape {values.shape} and holds no values; give it samples")
    if kind == "f":
        _check_finite(where, name, values, "NaN/inf values", "replace them or drop those samples")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported just below
        converted = values.astype(np.float32, copy=False)
    if kind == "f" and values.dtype != np.float32:
        _check_finite(where, name, converted, "values beyond float32's range (|x| > 3.4e38)",
                      "rescale the features")
    if values.dtype != np.float32:
        notes.append(f"{name}: {values.dtype} converted to float32")
    return converted


def _check_finite(where: str, name: str, values: np.ndarray, problem: str, fix: str) -> None:
    bad = ~np.isfinite(values.reshape(len(values), -1))
    if bad.any():
        samples = np.flatnonzero(bad.any(axis=1))
        raise ZoEdgeError(f"{where}: {name} holds {int(bad.sum())} {problem} in {len(samples)} samples "
                          f"(first: sample {samples[0]}); {fix}")


def _indices(where: str, name: str, values, samples: int, groups: _Groups, notes: list[str]) -> np.ndarray:
    values = np.asarray(values)
    x_name = "x_" + name.rsplit("_", 1)[1]
    if values.ndim != 1:
        hint = (f"; one-hot {groups.entries} become indices with y.argmax(axis=1)"
                if values.ndim == 2 and values.shape[1] > 1 else " (y.ravel())")
        raise ZoEdgeError(f"{where}: {name} has shape {values.shape}; give one {groups.entry} per sample, "
                          f"a 1-D array{hint}")
    if len(values) != samples:
        raise ZoEdgeError(f"{where}: {x_name} holds {samples} samples but {name} holds {len(values)} "
                          f"{groups.entries}; give one {groups.entry} per sample")
    kind = values.dtype.kind
    if kind in "US":
        raise ZoEdgeError(f"{where}: {name} holds text ({str(values[0])!r}, ...); store integer {groups.what} "
                          f"indices 0..{groups.letter}-1 and put the names in {groups.names}")
    if kind == "f":
        whole = np.isfinite(values) & (values == np.round(values))
        if not whole.all():
            first = int(np.flatnonzero(~whole)[0])
            raise ZoEdgeError(f"{where}: {name} holds {groups.entries} that are not whole numbers (first: "
                              f"sample {first}, {values[first]}); store integer {groups.what} indices "
                              f"(whole-number floats such as 3.0 are accepted)")
        notes.append(f"{name}: whole-number float {groups.entries} taken as integers")
    elif kind not in "iu":
        raise ZoEdgeError(f"{where}: {name} holds {values.dtype} values; store integer {groups.what} indices "
                          f"({name}.astype(int))")
    if kind == "u" and values.max() > np.iinfo(np.int64).max:
        values = np.minimum(values, np.iinfo(np.int64).max)  # too large for any class; reported by _count
    values = values.astype(np.int64, copy=False)
    if values.min() < 0:
        first = int(np.flatnonzero(values < 0)[0])
        raise ZoEdgeError(f"{where}: {name} holds negative {groups.entries} (first: sample {first}, "
                          f"{values[first]}); {groups.what} indices count from 0")
    return values


def _names(where: str, groups: _Groups, values) -> list[str]:
    name = groups.names
    values = np.asarray(values)
    if values.ndim != 1:
        raise ZoEdgeError(f"{where}: {name} has shape {values.shape}; give a 1-D array of one name per "
                          f"{groups.what}")
    if values.dtype.kind == "S":
        try:
            values = np.array([v.decode("utf-8") for v in values])
        except UnicodeDecodeError:
            raise ZoEdgeError(f"{where}: {name} holds bytes that are not UTF-8 text; store "
                              f"np.array(names, dtype=str)") from None
    elif not (values.dtype.kind == "U" or (values.dtype.kind == "O" and all(isinstance(v, str) for v in values))):
        raise ZoEdgeError(f"{where}: {name} holds {values.dtype} values, not strings; store "
                          f"np.array(names, dtype=str)")
    names = [str(v) for v in values]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if not n.strip():
            raise ZoEdgeError(f"{where}: {name}[{i}] is empty; give every {groups.what} a name")
        if n in seen:
            raise ZoEdgeError(f"{where}: {name} holds {n!r} twice ({seen[n]} and {i}); names must be distinct")
        seen[n] = i
    return names


def _count(where: str, groups: _Groups, indices: dict[str, np.ndarray], names: Optional[list[str]]) -> int:
    """The number of classes (or domains); every one must occur in both splits."""
    top_split = max(indices, key=lambda split: indices[split].max())
    top = int(indices[top_split].max())
    top_at = f"{groups.prefix}_{top_split} holds {groups.entry} {top} (first: sample " \
             f"{int(np.flatnonzero(indices[top_split] == top)[0])})"
    if names is not None and top >= len(names):
        raise ZoEdgeError(f"{where}: {top_at} but {groups.names} names only {len(names)} {groups.plural} "
                          f"(0..{len(names) - 1}); give one name per {groups.what}")
    count = len(names) if names is not None else top + 1
    if count < 2 and groups is _CLASSES:
        raise ZoEdgeError(f"{where}: y_train and y_test hold only class 0; a classifier needs at least two classes")
    fewest = min(indices, key=lambda split: len(indices[split]))
    if count > len(indices[fewest]):  # checked first so that a stray huge label cannot make bincount huge
        raise ZoEdgeError(f"{where}: {top_at} but {groups.prefix}_{fewest} has only {len(indices[fewest])} "
                          f"samples, so some of {groups.plural} 0..{top} have none; number the {groups.plural} "
                          f"0..{groups.letter}-1 (np.unique(y, return_inverse=True))")
    why = f"the length of {groups.names}" if names is not None else f"the largest {groups.entry} + 1"
    for split, values in indices.items():
        missing = np.flatnonzero(np.bincount(values, minlength=count) == 0)
        if missing.size:
            listed = ", ".join(f"{k}" + (f" ({names[k]!r})" if names is not None else "") for k in missing[:5])
            more = f" and {missing.size - 5} more" if missing.size > 5 else ""
            subject = f"{groups.what} {listed} has" if missing.size == 1 else f"{groups.plural} {listed}{more} have"
            raise ZoEdgeError(f"{where}: {subject} no samples in {groups.prefix}_{split}; every {groups.what} "
                              f"0..{count - 1} ({groups.letter} = {count}: {why}) needs training and test "
                              f"samples: add samples or drop the {groups.what} and renumber")
    return count


# ---------------------------------------------------------------------------------------------------
# Shapes


def _fits(have: tuple, want: tuple) -> bool:
    return len(have) == len(want) and all(w is None or h == w for h, w in zip(have, want))


def _without_trailing_ones(shape: tuple) -> tuple:
    shape = tuple(shape)
    while len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _reshape_hint(have: tuple, want: tuple) -> str:
    if None not in want and int(np.prod(have)) == int(np.prod(want)):
        if sorted(have) == sorted(want):
            return ("the axes may be in another order: transpose the arrays (channels last, e.g. "
                    "x.transpose(0, 2, 3, 1)) or, if the layout is right, reshape them")
        return f"the same number of values: if their order is the model's, x.reshape(len(x), *{tuple(want)})"
    return "crop, pad or resample the features to the model's input, or give the model this input shape"
