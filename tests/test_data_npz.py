"""Promises of zo_edge.data for a user's own data: the npz format, checked on the way in with one-line
errors; scenarios cut from it exactly as from the bundled sets; specs that rebuild the same tasks; and
the bundled sets' scenarios unchanged by all of this (pinned against the code before the change)."""

import hashlib
import json

import numpy as np
import pytest

from zo_edge import ZoEdgeError, data


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


@pytest.fixture(scope="module")
def spoken():
    return data.load_dataset("spoken-digits")


def arrays_of(dataset) -> dict:
    return {"x_train": dataset.x_train, "y_train": dataset.y_train, "x_test": dataset.x_test,
            "y_test": dataset.y_test}


def fingerprint(*arrays) -> str:
    """A digest of arrays' dtypes, shapes and bytes (the same function made the pins below)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def scenario_fingerprint(scenario) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([scenario.name, scenario.class_order, scenario.num_classes]).encode())
    for t in [scenario.base] + scenario.tasks:
        h.update(json.dumps([t.index, t.name, t.classes]).encode())
        h.update(fingerprint(t.x_train, t.y_train, t.x_test, t.y_test).encode())
    return h.hexdigest()[:16]


def one_line_error(call, *fragments):
    """``call`` raises a ZoEdgeError on one line holding every fragment; returns the message."""
    with pytest.raises(ZoEdgeError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# --- the bundled sets are unchanged -----------------------------------------------------------------

# sha256 prefixes of every array, class order and task name, computed with zo_edge/data.py as it was
# before the npz work (commit 79e77a9). Run folders built then must rebuild exactly the same tasks.
PINNED_DATASETS = {
    ("spoken-digits", 0): "5a04dce5a16b5148", ("spoken-digits", 1): "4e91ef5dbb9e812e",
    ("digits", 0): "5d6daab7aa136158", ("digits", 1): "c48301e7b8fb3157",
}
PINNED_SCENARIOS = {  # (dataset, dataset seed, kind, scenario seed, settings): fingerprint
    ("spoken-digits", 0, "class-il", 0, ()): "3f7945f8d08986da",
    ("spoken-digits", 0, "class-il", 3, ()): "8f5716b7f023c21a",
    ("spoken-digits", 0, "class-il", 0, (4, 4)): "1976661965e08dab",
    ("spoken-digits", 0, "class-il", 3, (2, 3)): "56041d733e38628e",
    ("spoken-digits", 0, "domain-il", 0, ()): "06924e705b48c790",
    ("spoken-digits", 0, "domain-il", 3, ()): "a891be5f9309975d",
    ("spoken-digits", 1, "class-il", 0, ()): "759607ed5b801b1c",
    ("spoken-digits", 1, "domain-il", 0, ()): "26cd4725694f97da",
    ("digits", 0, "class-il", 0, ()): "b25c44f9996c81aa",
    ("digits", 0, "class-il", 3, ()): "7a7386d3d574bb96",
    ("digits", 0, "class-il", 0, (4, 4)): "9bca7258e6bba075",
    ("digits", 0, "class-il", 0, (2, 3)): "a39669bb9e40bd6f",
    ("digits", 0, "domain-il", 0, ()): "25cb61303b7ea094",
    ("digits", 0, "domain-il", 3, ()): "3a7f139a58ce07e2",
    ("digits", 1, "class-il", 3, (2, 3)): "165fb7378410e036",
    ("digits", 1, "domain-il", 0, ()): "f27263c1037ca5a9",
    ("digits", 1, "domain-il", 3, ()): "e06baae90dc49198",
}
# json.dumps(meta, sort_keys=True) digests of the old metadata, minus the keys added since.
PINNED_DATASET_META = {"spoken-digits": "c53b4aece2d16d47", "digits": "cd7db52c6b2ae5ad"}
PINNED_SCENARIO_META = {("spoken-digits", "domain-il"): ("071a174d507871b9", {"domains", "shift_set"}),
                        ("digits", "class-il"): ("7502122909fbe27c", set())}


def meta_digest(meta: dict, added: set) -> str:
    old = {k: v for k, v in meta.items() if k not in added}
    return hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name, seed", list(PINNED_DATASETS))
def test_bundled_datasets_keep_their_arrays(name, seed):
    dataset = data.load_dataset(name, seed=seed)
    assert fingerprint(dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test) == PINNED_DATASETS[name, seed]


@pytest.mark.parametrize("name, dataset_seed, kind, seed, settings", list(PINNED_SCENARIOS))
def test_bundled_scenarios_keep_their_class_orders_splits_and_shifted_arrays(name, dataset_seed, kind, seed,
                                                                               settings):
    options = dict(zip(("base_classes", "classes_per_task"), settings))
    scenario = data.make_scenario(data.load_dataset(name, seed=dataset_seed), kind, seed=seed, **options)
    assert scenario_fingerprint(scenario) == PINNED_SCENARIOS[name, dataset_seed, kind, seed, settings]


def test_a_non_default_spoken_split_keeps_its_domain_il_stream():
    dataset = data.load_dataset("spoken-digits", seed=2, frames=20, test_fraction=0.25)
    assert fingerprint(dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test) == "67494f509e84c893"
    assert scenario_fingerprint(data.make_scenario(dataset, "domain-il", seed=2)) == "6c85c76ef1892c62"


def test_bundled_metadata_only_gains_keys(spoken, digits):
    for dataset in (spoken, digits):
        assert dataset.meta["origin"] == "bundled"
        assert meta_digest(dataset.meta, {"origin"}) == PINNED_DATASET_META[dataset.name]
    for (name, kind), (digest, added) in PINNED_SCENARIO_META.items():
        scenario = data.make_scenario(spoken if name == "spoken-digits" else digits, kind)
        assert meta_digest(scenario.meta, added) == digest


def test_bundled_domain_il_is_the_domain_array_mechanism(digits):
    """The synthetic shifts make domain arrays; domain-il from them is the bundled stream."""
    shifted = data.with_synthetic_domains(digits, seed=3)
    assert shifted.domain_names[0] == "clean" and shifted.num_domains == 4
    assert np.bincount(shifted.domain_test).tolist() == [len(digits.y_test)] * 4
    half_of_each_class = sum(n // 2 for n in np.bincount(digits.y_train))
    assert np.bincount(shifted.domain_train)[0] == half_of_each_class
    assert len(shifted.y_train) == len(digits.y_train)  # a partition: no training sample twice
    from_arrays = data.make_scenario(shifted, "domain-il", seed=3)
    assert scenario_fingerprint(from_arrays) == PINNED_SCENARIOS["digits", 0, "domain-il", 3, ()]


# --- the npz format, round trip ---------------------------------------------------------------------


def test_a_bundled_set_saved_as_npz_loads_back_identically(digits, tmp_path):
    path = tmp_path / "handwritten.npz"
    sha256 = data.save_npz(digits, path)
    loaded = data.load_npz(path)
    for key, array in arrays_of(digits).items():
        np.testing.assert_array_equal(getattr(loaded, key), array)
        assert getattr(loaded, key).dtype == array.dtype
    assert loaded.name == "handwritten" and loaded.class_names == digits.class_names
    assert loaded.input_shape == (8, 8, 1) and loaded.num_classes == 10 and loaded.domain_names is None
    assert loaded.meta["origin"] == "npz" and loaded.meta["sha256"] == sha256
    assert sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.meta["bytes"] == path.stat().st_size
    assert loaded.meta["train_size"] == len(digits.y_train)
    assert loaded.meta["class_counts"]["test"] == np.bincount(digits.y_test).tolist()
    json.dumps(loaded.meta)


def test_saving_the_same_data_twice_gives_the_same_bytes(digits, tmp_path):
    assert data.save_npz(digits, tmp_path / "a.npz") == data.save_npz(digits, tmp_path / "b.npz")
    assert not list(tmp_path.glob("*.partial"))


def test_a_file_written_by_numpy_savez_is_read(digits, tmp_path):
    np.savez(tmp_path / "mine.npz", **arrays_of(digits), class_names=np.array(data.DIGIT_NAMES))
    loaded = data.load_npz(tmp_path / "mine.npz")
    assert loaded.class_names == data.DIGIT_NAMES and "conversions" not in loaded.meta


@pytest.mark.parametrize("kind, settings", [("class-il", {}), ("class-il", {"seed": 5, "base_classes": 2,
                                                                                   "classes_per_task": 3})])
def test_class_il_from_the_npz_equals_the_bundled_stream(digits, tmp_path, kind, settings):
    data.save_npz(digits, tmp_path / "digits-copy.npz")
    from_file = data.make_scenario(data.load_npz(tmp_path / "digits-copy.npz"), kind, **settings)
    bundled = data.make_scenario(digits, kind, **settings)
    assert scenario_fingerprint(from_file) == scenario_fingerprint(bundled)
    assert from_file.class_order == bundled.class_order


def test_spoken_domain_il_from_the_npz_equals_the_bundled_stream(spoken, tmp_path):
    data.save_npz(data.with_synthetic_domains(spoken, seed=0), tmp_path / "spoken-shifted.npz")
    loaded = data.load_npz(tmp_path / "spoken-shifted.npz")
    assert loaded.domain_names == ["clean", "gain -20 dB", "muffled mic 20 dB tilt", "noise sd 0.75"]
    from_file = data.make_scenario(loaded, "domain-il", seed=0)
    assert scenario_fingerprint(from_file) == PINNED_SCENARIOS["spoken-digits", 0, "domain-il", 0, ()]
    assert from_file.meta["domains"] == loaded.domain_names


def test_whole_number_float_labels_and_integer_features_are_accepted_and_noted(digits, tmp_path):
    np.savez(tmp_path / "ints.npz", x_train=(digits.x_train * 16).astype(np.uint8),
             y_train=digits.y_train.astype(float),
             x_test=(digits.x_test * 16).astype(np.uint8), y_test=digits.y_test.astype(np.int32))
    loaded = data.load_npz(tmp_path / "ints.npz")
    assert loaded.x_train.dtype == np.float32 and loaded.y_train.dtype == np.int64 and loaded.y_test.dtype == np.int64
    np.testing.assert_array_equal(loaded.x_train, np.round(digits.x_train * 16))
    assert loaded.meta["conversions"] == ["x_train: uint8 converted to float32", "x_test: uint8 converted to float32",
                                          "y_train: whole-number float labels taken as integers"]


# --- bad data: one line naming the file, the array and the problem ----------------------------------


def nan_at(x, sample):
    x = x.copy()
    x[sample, 0, 0, 0] = np.nan
    x[sample + 2] = np.inf
    return x


def without_class(x, y, c):
    keep = y != c
    return x[keep], y[keep]


BAD_DATA = {  # case: (change to the arrays, fragments of the one-line error)
    "missing array": (lambda d: {"y_test": None}, ["lacks y_test", "it holds x_train, y_train, x_test"]),
    "unknown array": (lambda d: {"mean": np.zeros(3)}, ["holds mean, which the format does not know"]),
    "pickled names": (lambda d: {"class_names": np.array(list("abcdefghij"), dtype=object)},
                      ["class_names holds Python objects (pickled)"]),
    "text features": (lambda d: {"x_train": d.x_train.astype(str)}, ["x_train holds text, not numbers"]),
    "complex features": (lambda d: {"x_test": d.x_test + 1j}, ["x_test holds complex numbers"]),
    "NaN and inf": (lambda d: {"x_train": nan_at(d.x_train, 5)},
                    ["x_train holds 65 NaN/inf values in 2 samples (first: sample 5)"]),
    "beyond float32": (lambda d: {"x_test": d.x_test.astype(np.float64) * 1e300 + 1e300},
                       ["x_test holds", "values beyond float32's range", "first: sample 0"]),
    "per-sample shapes differ": (lambda d: {"x_test": d.x_test[..., 0]},
                                 ["x_train holds samples of shape (8, 8, 1) but x_test of shape (8, 8)"]),
    "one number per sample": (lambda d: {"x_train": d.x_train[:, 0, 0, 0]}, ["x_train has shape (1437,)"]),
    "fewer labels than samples": (lambda d: {"y_train": d.y_train[:-1]},
                                  ["x_train holds 1437 samples but y_train holds 1436 labels"]),
    "one-hot labels": (lambda d: {"y_test": np.eye(10)[d.y_test]}, ["y_test has shape (360, 10)", "argmax"]),
    "fractional labels": (lambda d: {"y_train": d.y_train + 0.5},
                          ["y_train holds labels that are not whole numbers (first: sample 0, 3.5)",
                           "whole-number floats such as 3.0 are accepted"]),
    "text labels": (lambda d: {"y_train": d.y_train.astype(str)}, ["y_train holds text ('3', ...)", "class_names"]),
    "boolean labels": (lambda d: {"y_test": d.y_test > 4}, ["y_test holds bool values"]),
    "negative labels": (lambda d: {"y_train": d.y_train - 1}, ["y_train holds negative labels (first: sample 33, -1)"]),
    "class without test samples": (lambda d: dict(zip(("x_test", "y_test"), without_class(d.x_test, d.y_test, 3))),
                                   ["class 3 has no samples in y_test", "every class 0..9"]),
    "class without training samples": (
        lambda d: dict(zip(("x_train", "y_train"), without_class(d.x_train, d.y_train, 9))),
        ["class 9 has no samples in y_train"]),
    "label beyond class_names": (lambda d: {"class_names": np.array(list("abcdefghi"))},
                                 ["y_train holds label 9", "class_names names only 9 classes (0..8)"]),
    "more names than classes": (lambda d: {"class_names": np.array(list("abcdefghijk"))},
                                ["class 10 ('k') has no samples in y_train", "C = 11: the length of class_names"]),
    "names not strings": (lambda d: {"class_names": np.arange(10)}, ["class_names holds int64 values, not strings"]),
    "names twice": (lambda d: {"class_names": np.array(list("abcdefghia"))}, ["class_names holds 'a' twice (0 and 9)"]),
    "stray huge label": (lambda d: {"y_train": np.r_[d.y_train[:-1], 10**9]},
                         ["y_train holds label 1000000000 (first: sample 1436)", "y_test has only 360 samples"]),
    "only one domain array": (lambda d: {"domain_train": np.zeros(len(d.y_train), int)},
                              ["domain_train is given but domain_test is not"]),
    "domain names without domains": (lambda d: {"domain_names": np.array(["a", "b"])},
                                     ["domain_names is given but domain_train and domain_test are not"]),
    "domain length": (lambda d: {"domain_train": np.zeros(len(d.y_train) - 1, int),
                                 "domain_test": np.zeros(len(d.y_test), int)},
                      ["x_train holds 1437 samples but domain_train holds 1436 domain indices"]),
    "negative domain": (lambda d: {"domain_train": np.full(len(d.y_train), -1),
                                   "domain_test": np.zeros(len(d.y_test), int)},
                        ["domain_train holds negative domain indices"]),
    "domain without samples": (lambda d: {"domain_train": np.arange(len(d.y_train)) % 3,
                                          "domain_test": np.arange(len(d.y_test)) % 2},
                               ["domain 2 has no samples in domain_test", "every domain 0..2"]),
    "fractional domains": (lambda d: {"domain_train": np.full(len(d.y_train), 0.5),
                                      "domain_test": np.zeros(len(d.y_test))},
                           ["domain_train holds domain indices that are not whole numbers"]),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_gives_one_line_naming_the_file_and_the_array(digits, tmp_path, case):
    change, fragments = BAD_DATA[case]
    arrays = {**arrays_of(digits), **change(digits)}
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    one_line_error(lambda: data.load_npz(path), str(path), *fragments)


def test_files_that_are_not_npz_archives_are_refused_in_one_line(digits, tmp_path):
    (tmp_path / "notes.npz").write_text("x_train = ...")
    one_line_error(lambda: data.load_npz(tmp_path / "notes.npz"), "notes.npz is not an .npz archive")
    np.save(tmp_path / "features.npy", digits.x_train)
    one_line_error(lambda: data.load_npz(tmp_path / "features.npy"), "a single .npy array, not an .npz archive")
    data.save_npz(digits, tmp_path / "whole.npz")
    raw = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    one_line_error(lambda: data.load_npz(tmp_path / "cut.npz"), "cut.npz is not a readable .npz file")
    one_line_error(lambda: data.load_npz(tmp_path / "absent.npz"), "absent.npz does not exist")
    one_line_error(lambda: data.load_npz(tmp_path), "is a folder")


def test_arrays_from_python_obey_the_same_rules(digits):
    one_line_error(lambda: data.dataset_from_arrays(digits.x_train, digits.y_train, [[1.0, 2.0], [3.0]],
                                                    digits.y_test, name="mine"),
                   "dataset 'mine': x_test is not a rectangular array")
    one_line_error(lambda: data.dataset_from_arrays(digits.x_train, np.zeros(len(digits.y_train), int),
                                                    digits.x_test, np.zeros(len(digits.y_test), int), name="mine"),
                   "hold only class 0")


# --- the model's input shape ------------------------------------------------------------------------


def test_a_missing_trailing_channel_is_added_and_recorded(spoken):
    frames = data.dataset_from_arrays(spoken.x_train[..., 0], spoken.y_train, spoken.x_test[..., 0], spoken.y_test,
                                      name="mfcc")
    fitted = data.check_input_shape(frames, (32, 13, 1))
    assert fitted.input_shape == (32, 13, 1) and fitted.x_train.shape[1:] == (32, 13, 1)
    assert np.shares_memory(fitted.x_train, frames.x_train)  # the same numbers in the same order
    np.testing.assert_array_equal(fitted.x_test, spoken.x_test)
    assert fitted.meta["reshaped"]["from"] == [32, 13] and fitted.meta["reshaped"]["to"] == [32, 13, 1]
    assert "reshaped" not in frames.meta
    assert data.check_input_shape(spoken, (32, 13)).input_shape == (32, 13)  # and removed
    assert data.check_input_shape(spoken, (None, 13, 1)) is spoken  # None matches any size


@pytest.mark.parametrize("shape, hint", [
    ((32, 12, 1), "crop, pad or resample"),
    ((416,), "x.reshape(len(x), *(416,))"),
    ((1, 32, 13), "transpose"),
])
def test_a_shape_the_model_cannot_take_is_one_line_with_a_hint(spoken, shape, hint):
    one_line_error(lambda: data.check_input_shape(spoken, shape),
                   "dataset 'spoken-digits': x_train holds samples of shape (32, 13, 1); the model takes", hint)


# --- explicit class-incremental tasks ---------------------------------------------------------------


def test_parse_tasks_reads_groups_and_classes():
    assert data.parse_tasks("0,1,2,3;4,5;6,7") == [[0, 1, 2, 3], [4, 5], [6, 7]]
    assert data.parse_tasks(" 9, 0 ; 3 ") == [[9, 0], [3]]
    assert data.tasks_text([[0, 1, 2, 3], [4, 5]]) == "0,1,2,3;4,5"


@pytest.mark.parametrize("text, fragment", [
    ("", "is empty"),
    ("0,1;;2", "group 2 is empty"),
    ("0,1;2;", "group 3 is empty"),
    ("0,1;a", "'a' in group 2 is not a class index"),
    ("0,1;-2", "'-2' in group 2 is not a class index"),
    ("0 1;2", "'0 1' in group 1"),
])
def test_malformed_task_strings_are_one_line(text, fragment):
    one_line_error(lambda: data.parse_tasks(text), fragment)


def test_explicit_tasks_cut_the_stream_in_the_given_order(digits):
    scenario = data.make_scenario(digits, "class-il", tasks="7,1,2,3;4,5;0,6,8,9")
    assert scenario.base.classes == [1, 2, 3, 7] and [t.classes for t in scenario.tasks] == [[4, 5], [0, 6, 8, 9]]
    assert scenario.class_order == [7, 1, 2, 3, 4, 5, 0, 6, 8, 9]
    assert scenario.meta["explicit_tasks"] == [[7, 1, 2, 3], [4, 5], [0, 6, 8, 9]]
    for task in scenario.stream:
        assert set(np.unique(task.y_train)) == set(task.classes) == set(np.unique(task.y_test))
    assert data.make_scenario(digits, "class-il", tasks=[[7, 1, 2, 3], [4, 5], [0, 6, 8, 9]]).meta == scenario.meta


def test_the_seeded_order_written_as_tasks_gives_the_same_stream(digits):
    seeded = data.make_scenario(digits, "class-il", seed=4)
    groups = [seeded.class_order[:4]] + [seeded.class_order[i : i + 2] for i in range(4, 10, 2)]
    explicit = data.make_scenario(digits, "class-il", seed=4, tasks=groups)
    assert scenario_fingerprint(explicit) == scenario_fingerprint(seeded)


def test_classes_left_out_of_the_tasks_never_arrive_and_are_recorded(digits):
    scenario = data.make_scenario(digits, "class-il", tasks="0,1;2")
    assert scenario.num_classes == 10 and scenario.meta["unused_classes"] == [3, 4, 5, 6, 7, 8, 9]
    assert len(scenario.base.y_train) + len(scenario.tasks[0].y_train) == int(np.isin(digits.y_train, [0, 1, 2]).sum())


@pytest.mark.parametrize("tasks, fragment", [
    ("0,1,2,3;4,12", "class 12 in group 2 is not a class of 'digits', which has classes 0..9"),
    ("0,1,2,3;4,5;5,6", "class 5 is in group 2 and in group 3; each class arrives once"),
    ("0,1,2,3;4,0", "class 0 is in the base task (group 1) and in group 2"),
    ("3;4,5", "the base task (group 1) holds one class; pretraining needs at least two"),
    ("0,1,2,3", "only a base task"),
    ([[0, 1], []], "group 2 is empty"),
    ([[0, 1], [2.5]], "2.5 in group 2 is not a class index"),
    (42, "must be class lists"),
    ([], "tasks is empty"),
])
def test_impossible_tasks_are_one_line(digits, tasks, fragment):
    one_line_error(lambda: data.make_scenario(digits, "class-il", tasks=tasks), fragment)


def test_tasks_exclude_seeded_settings_and_domain_il(digits):
    one_line_error(lambda: data.make_scenario(digits, "class-il", tasks="0,1;2", base_classes=4), "not both")
    one_line_error(lambda: data.make_scenario(digits, "domain-il", tasks="0,1;2"), "class-il only")


def test_a_task_class_without_samples_is_named(digits):
    # A Dataset built around the checks (not through dataset_from_arrays) is still checked when cut.
    from dataclasses import replace

    x_test, y_test = without_class(digits.x_test, digits.y_test, 5)
    unchecked = replace(digits, x_test=x_test, y_test=y_test)
    one_line_error(lambda: data.make_scenario(unchecked, "class-il", tasks="0,1;5,6"),
                   "class 5 of task group 2 has no samples in y_test")


# --- domain-incremental from a user's domain arrays -------------------------------------------------


@pytest.fixture(scope="module")
def inked(digits):
    """Handwritten digits split into domains by how much ink a sample carries (a real property of each
    image): light writers are the base, then medium, then heavy."""
    def domain(x):
        ink = x.reshape(len(x), -1).mean(axis=1)
        return np.digitize(ink, np.quantile(digits.x_train.reshape(len(digits.x_train), -1).mean(axis=1), [0.5, 0.75]))

    return data.dataset_from_arrays(*arrays_of(digits).values(), name="inked", class_names=digits.class_names,
                                    domain_train=domain(digits.x_train), domain_test=domain(digits.x_test),
                                    domain_names=["light", "medium", "heavy"])


def test_domain_il_cuts_one_task_per_domain_with_every_class(inked):
    scenario = data.make_scenario(inked, "domain-il")
    assert [t.name for t in scenario.stream] == ["base: light", "medium", "heavy"]
    assert [t.index for t in scenario.stream] == [-1, 0, 1]
    for d, task in enumerate(scenario.stream):
        assert task.classes == list(range(10))
        np.testing.assert_array_equal(task.x_train, inked.x_train[inked.domain_train == d])
        np.testing.assert_array_equal(task.y_test, inked.y_test[inked.domain_test == d])
    assert sum(len(t.y_train) for t in scenario.stream) == len(inked.y_train)
    assert scenario.meta["domains"] == ["light", "medium", "heavy"] and "shifts" not in scenario.meta


def test_domains_survive_the_npz_round_trip(inked, tmp_path):
    data.save_npz(inked, tmp_path / "inked.npz")
    loaded = data.load_npz(tmp_path / "inked.npz")
    np.testing.assert_array_equal(loaded.domain_train, inked.domain_train)
    assert loaded.meta["domain_counts"]["test"] == np.bincount(inked.domain_test).tolist()
    assert scenario_fingerprint(data.make_scenario(loaded, "domain-il")) == \
        scenario_fingerprint(data.make_scenario(inked, "domain-il"))


def test_domain_il_without_domain_arrays_names_the_way_out(digits, tmp_path):
    data.save_npz(digits, tmp_path / "plain.npz")
    plain = data.load_npz(tmp_path / "plain.npz")
    one_line_error(lambda: data.make_scenario(plain, "domain-il"), "plain.npz has no domain arrays",
                   "add domain_train and domain_test", "class-il", "spoken-digits, digits")
    single = data.dataset_from_arrays(*arrays_of(digits).values(), name="one", domain_train=np.zeros(1437, int),
                                      domain_test=np.zeros(360, int))
    one_line_error(lambda: data.make_scenario(single, "domain-il"), "hold only domain 0")
    one_line_error(lambda: data.with_synthetic_domains(plain), "synthetic domain shifts exist only for the bundled")


# --- specs: what a run folder records, and the same tasks back ---------------------------------------


def test_a_bundled_spec_rebuilds_the_same_tasks(spoken):
    for kind in ("class-il", "domain-il"):
        scenario = data.make_scenario(spoken, kind, seed=0)
        spec = json.loads(json.dumps(data.data_spec(spoken, scenario)))  # as run.json stores it
        assert spec["dataset"] == {"origin": "bundled", "name": "spoken-digits", "seed": 0, "test_fraction": 0.2,
                                   "frames": 32, "input_shape": [32, 13, 1]}
        again_dataset, again = data.load_spec(spec)
        assert again.meta == scenario.meta
        assert scenario_fingerprint(again) == scenario_fingerprint(scenario)


def test_a_spec_from_old_run_settings_rebuilds_their_scenario(digits):
    settings = {"dataset": "digits", "scenario": "class-il", "seed": 0, "base_classes": 4, "classes_per_task": 4}
    _, scenario = data.load_spec(data.spec_from_settings(settings))
    assert scenario_fingerprint(scenario) == PINNED_SCENARIOS["digits", 0, "class-il", 0, (4, 4)]
    _, domain = data.load_spec(data.spec_from_settings({**settings, "scenario": "domain-il"}))
    assert scenario_fingerprint(domain) == PINNED_SCENARIOS["digits", 0, "domain-il", 0, ()]


def test_users_data_is_stored_in_the_run_folder_and_rebuilt_from_there(inked, tmp_path):
    source = tmp_path / "mine.npz"
    data.save_npz(inked, source)
    dataset = data.check_input_shape(data.load_npz(source), (8, 8, 1))
    scenario = data.make_scenario(dataset, "class-il", tasks="0,1,2;3,4;5,6,7,8,9")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec = json.loads(json.dumps(data.data_spec(dataset, scenario, store_in=run_dir)))
    assert spec["dataset"]["file"] == "data.npz" and spec["dataset"]["name"] == "mine"
    assert spec["scenario"]["tasks"] == [[0, 1, 2], [3, 4], [5, 6, 7, 8, 9]]
    moved = tmp_path / "moved-run"
    run_dir.rename(moved)  # a run folder can be moved or copied: the spec is relative to it
    source.unlink()
    again_dataset, again = data.load_spec(spec, moved)
    assert again_dataset.name == "mine" and again.dataset == "mine"
    assert scenario_fingerprint(again) == scenario_fingerprint(scenario) and again.meta == scenario.meta
    _, domains = data.load_spec({**spec, "scenario": data.scenario_spec(data.make_scenario(dataset, "domain-il"))},
                                moved)
    assert [t.name for t in domains.stream] == ["base: light", "medium", "heavy"]


def test_a_reshape_is_recorded_and_made_again(spoken, tmp_path):
    frames = data.dataset_from_arrays(spoken.x_train[..., 0], spoken.y_train, spoken.x_test[..., 0], spoken.y_test,
                                      name="mfcc")
    data.save_npz(frames, tmp_path / "mfcc.npz")
    fitted = data.check_input_shape(data.load_npz(tmp_path / "mfcc.npz"), (32, 13, 1))
    spec = data.dataset_spec(fitted)
    assert spec["file"] == str((tmp_path / "mfcc.npz").resolve()) and spec["input_shape"] == [32, 13, 1]
    assert data.dataset_from_spec(spec).input_shape == (32, 13, 1)


def test_changed_or_missing_data_is_refused_when_rebuilding(digits, tmp_path):
    dataset = data.dataset_from_arrays(*arrays_of(digits).values(), name="copy")
    scenario = data.make_scenario(dataset, "class-il")
    spec = data.data_spec(dataset, scenario, store_in=tmp_path)
    other = data.dataset_from_arrays(digits.x_train[::-1], digits.y_train[::-1], digits.x_test, digits.y_test,
                                     name="copy")
    data.save_npz(other, tmp_path / "data.npz")
    one_line_error(lambda: data.load_spec(spec, tmp_path), "data.npz has changed since the run was built")
    del spec["dataset"]["sha256"]  # even without the file check, the tasks themselves are compared
    one_line_error(lambda: data.load_spec(spec, tmp_path), "differ from those the run was built with")
    (tmp_path / "data.npz").unlink()
    one_line_error(lambda: data.load_spec(spec, tmp_path), "data.npz, the data this run was built from, is missing")
    one_line_error(lambda: data.dataset_spec(dataset), "exists only in memory")
    one_line_error(lambda: data.load_spec({"format": "other"}), "is not a zo-edge/data@1 spec")


# --- the summary users see --------------------------------------------------------------------------


def test_describe_dataset_counts_classes_and_domains(inked, tmp_path):
    data.save_npz(inked, tmp_path / "inked.npz")
    summary = data.describe_dataset(data.load_npz(tmp_path / "inked.npz"))
    json.dumps(summary)
    assert summary["input_shape"] == [8, 8, 1] and summary["num_classes"] == 10
    assert sum(c["train"] for c in summary["classes"]) == summary["train_samples"] == 1437
    assert summary["classes"][3] == {"label": 3, "name": "3", "train": int((inked.y_train == 3).sum()),
                                     "test": int((inked.y_test == 3).sum())}
    assert [d["name"] for d in summary["domains"]] == ["light", "medium", "heavy"]
    assert summary["domains"][0]["train"] == int((inked.domain_train == 0).sum())
    assert summary["sha256"] == data.load_npz(tmp_path / "inked.npz").meta["sha256"]
    assert summary["x_train_range"]["min"] == 0.0 and summary["x_train_range"]["max"] == 1.0
    text = data.format_description(summary)
    assert text.splitlines()[0].startswith(f"inked ({tmp_path / 'inked.npz'}): 1437 train and 360 test samples")
    assert "domain  0 light" in text and "(base)" in text
