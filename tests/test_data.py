"""Promises of zo_edge.data: real bundled data, honest splits, well-formed continual-learning streams."""

import json

import numpy as np
import pytest

from zo_edge import ZoEdgeError, data
from zo_edge.data import bundled


@pytest.fixture(scope="module")
def spoken():
    return data.load_dataset("spoken-digits")


@pytest.fixture(scope="module")
def handwritten():
    return data.load_dataset("digits")


@pytest.fixture(scope="module")
def spoken_class_il(spoken):
    return data.make_scenario(spoken, "class-il")


@pytest.fixture(scope="module")
def spoken_domain_il(spoken):
    return data.make_scenario(spoken, "domain-il")


def real_frames(x: np.ndarray) -> np.ndarray:
    """The MFCC frames that hold speech: padding frames are exactly zero in every coefficient."""
    frames = x[..., 0].reshape(-1, data.MFCC_COEFFICIENTS)
    return frames[np.any(frames != 0, axis=1)]


def clean_origin(rows: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """For each (possibly shifted) row, the index of the nearest clean training sample.

    The shifts are small next to the distance between two different recordings, so the nearest clean
    sample is the one the row was made from.
    """
    a, b = rows.reshape(len(rows), -1), clean.reshape(len(clean), -1)
    squared = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None, :]
    return squared.argmin(axis=1)


# --- datasets ---------------------------------------------------------------------------------------


def test_spoken_digits_are_the_3000_fsdd_recordings_as_13_mfccs(spoken):
    assert len(spoken.y_train) + len(spoken.y_test) == 3000
    assert spoken.input_shape == (32, 13, 1)
    assert spoken.x_train.shape == (len(spoken.y_train), 32, 13, 1)
    assert spoken.x_test.shape == (len(spoken.y_test), 32, 13, 1)
    assert spoken.num_classes == 10 and len(spoken.class_names) == 10
    all_labels = np.concatenate([spoken.y_train, spoken.y_test])
    assert np.bincount(all_labels).tolist() == [300] * 10
    assert spoken.meta["recording_frames"] == {"min": 6, "median": 17.0, "max": 92}


def test_handwritten_digits_are_the_1797_sklearn_images_in_unit_range(handwritten):
    assert len(handwritten.y_train) + len(handwritten.y_test) == 1797
    assert handwritten.input_shape == (8, 8, 1)
    assert handwritten.x_train.shape[1:] == (8, 8, 1)
    assert handwritten.num_classes == 10 and len(handwritten.class_names) == 10
    assert handwritten.x_train.min() == 0.0 and handwritten.x_train.max() == 1.0


CLASSES = {"spoken-digits": 10, "digits": 10, "japanese-vowels": 9}


@pytest.mark.parametrize("name", list(data.DATASETS))
def test_arrays_are_float32_features_and_int64_labels(name):
    dataset = data.load_dataset(name)
    for x, y in [(dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)]:
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape[1:] == dataset.input_shape
        assert set(np.unique(y)) == set(range(CLASSES[name]))
    json.dumps(dataset.meta)  # meta goes straight into reports


def test_japanese_vowels_are_the_640_uci_utterances_laid_out_like_the_spoken_digits():
    vowels, spoken = data.load_dataset("japanese-vowels"), data.load_dataset("spoken-digits")
    assert len(vowels.y_train) + len(vowels.y_test) == 640 and vowels.num_classes == 9
    assert vowels.input_shape == spoken.input_shape  # one keyword model can take both
    assert np.all(vowels.x_train[..., 0, 0] == 0)  # no energy term: LPC cepstra of orders 1-12 in columns 1-12
    lengths = (np.abs(vowels.x_train[:, :, 1:, 0]).sum(axis=2) > 0).sum(axis=1)
    assert 7 <= lengths.min() and lengths.max() <= 29  # utterances of 7 to 29 frames, padded after
    speaking = np.arange(32)[None, :] < lengths[:, None]
    frames = vowels.x_train[..., 1:, 0][speaking]  # standardised with the training frames' statistics
    assert np.all(np.abs(frames.mean(axis=0)) < 0.05) and np.all(np.abs(frames.std(axis=0) - 1) < 0.05)


def test_frames_sets_the_time_axis_by_padding_and_centre_cropping():
    short = data.load_dataset("spoken-digits", frames=12)
    assert short.input_shape == (12, 13, 1) and short.x_train.shape[1:] == (12, 13, 1)
    assert short.meta["cropped_recordings"] > data.load_dataset("spoken-digits").meta["cropped_recordings"]


def test_short_recordings_are_padded_with_zeros_after_the_speech(spoken):
    speech = np.any(spoken.x_train[..., 0] != 0, axis=2)  # [recording, frame]
    first_padding = speech.argmin(axis=1)
    padded = ~speech[:, -1]
    assert padded.mean() > 0.9  # the median recording has 17 frames
    for row in np.flatnonzero(padded)[:50]:
        assert speech[row, : first_padding[row]].all() and not speech[row, first_padding[row] :].any()


def test_spoken_features_are_clipped_to_four_standard_deviations(spoken):
    assert spoken.x_train.min() == -4.0 and spoken.x_train.max() == 4.0
    assert np.abs(spoken.x_test).max() <= 4.0
    assert spoken.meta["normalisation"]["clip"] == [-4.0, 4.0]
    assert 0 < spoken.meta["normalisation"]["clipped_train_fraction"] < 1e-3


def test_normalisation_statistics_come_from_the_train_split_only(spoken):
    train = real_frames(spoken.x_train)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-3)
    # The test split was standardised with the train statistics, not its own.
    assert np.abs(real_frames(spoken.x_test).mean(axis=0)).max() > 0.01
    recordings, _ = bundled._spoken_digit_recordings()
    mean_of_everything = np.concatenate(recordings).mean(axis=0)
    assert not np.allclose(spoken.meta["normalisation"]["mean"], mean_of_everything)
    assert len(spoken.meta["normalisation"]["std"]) == 13


@pytest.mark.parametrize("name", list(data.DATASETS))
def test_split_is_stratified(name):
    dataset = data.load_dataset(name, test_fraction=0.25)
    train_share = np.bincount(dataset.y_train) / len(dataset.y_train)
    test_share = np.bincount(dataset.y_test) / len(dataset.y_test)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)
    assert abs(len(dataset.y_test) / (len(dataset.y_train) + len(dataset.y_test)) - 0.25) < 0.01


@pytest.mark.parametrize("name", list(data.DATASETS))
def test_a_seed_gives_the_same_split_and_another_seed_a_different_one(name):
    first, again, other = (data.load_dataset(name, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert first.meta == again.meta
    assert not np.array_equal(first.y_train, other.y_train)


# --- class-incremental ------------------------------------------------------------------------------


def test_class_il_base_and_tasks_partition_the_classes(spoken_class_il):
    scenario = spoken_class_il
    groups = [scenario.base.classes] + [task.classes for task in scenario.tasks]
    assert [len(g) for g in groups] == [4, 2, 2, 2]
    every_class = [c for g in groups for c in g]
    assert sorted(every_class) == list(range(10))  # each class exactly once
    assert scenario.num_classes == 10
    assert sorted(scenario.class_order) == list(range(10))
    assert sorted(scenario.class_order[:4]) == scenario.base.classes
    assert [sorted(scenario.class_order[4 + 2 * i : 6 + 2 * i]) for i in range(3)] == groups[1:]
    assert scenario.base.index == -1 and [t.index for t in scenario.tasks] == [0, 1, 2]


def test_class_il_tasks_hold_only_their_own_classes_in_the_original_label_space(spoken, spoken_class_il):
    for task in [spoken_class_il.base] + spoken_class_il.tasks:
        assert set(np.unique(task.y_train)) == set(task.classes)
        assert set(np.unique(task.y_test)) == set(task.classes)
        # Digit k keeps label k: the samples are the dataset's own, unrelabelled.
        k = task.classes[0]
        np.testing.assert_array_equal(task.x_test[task.y_test == k], spoken.x_test[spoken.y_test == k])


def test_class_il_sizes_add_up_to_the_dataset(spoken, spoken_class_il):
    parts = [spoken_class_il.base] + spoken_class_il.tasks
    assert sum(len(t.y_train) for t in parts) == len(spoken.y_train)
    assert sum(len(t.y_test) for t in parts) == len(spoken.y_test)
    assert spoken_class_il.meta["tasks"][0]["train"] == len(spoken_class_il.tasks[0].y_train)
    json.dumps(spoken_class_il.meta)


def test_class_il_allows_a_shorter_last_task(handwritten):
    scenario = data.make_scenario(handwritten, "class-il", base_classes=4, classes_per_task=4)
    assert [len(t.classes) for t in scenario.tasks] == [4, 2]


def test_class_il_order_follows_the_seed(handwritten):
    orders = [data.make_scenario(handwritten, "class-il", seed=s).class_order for s in (0, 0, 1)]
    assert orders[0] == orders[1] != orders[2]


def test_seen_classes_grow_from_the_base_to_every_class(spoken_class_il):
    assert data.seen_classes(spoken_class_il, -1) == spoken_class_il.base.classes
    assert data.seen_classes(spoken_class_il, 0) == sorted(
        spoken_class_il.base.classes + spoken_class_il.tasks[0].classes)
    assert data.seen_classes(spoken_class_il, 2) == list(range(10))


# --- domain-incremental -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(data.DOMAIN_SHIFT_DATASETS))
def test_domain_il_keeps_every_class_and_shifts_each_task(name):
    dataset = data.load_dataset(name)
    scenario = data.make_scenario(dataset, "domain-il")
    assert len(scenario.tasks) == 3 and scenario.num_classes == 10
    np.testing.assert_array_equal(scenario.base.x_test, dataset.x_test)  # the base is clean
    for task in [scenario.base] + scenario.tasks:
        assert task.classes == list(range(10))
        assert set(np.unique(task.y_train)) == set(range(10))
    for task in scenario.tasks:
        np.testing.assert_array_equal(task.y_test, dataset.y_test)  # the whole test set, shifted
        assert np.abs(task.x_test - dataset.x_test).mean() > 0.05, task.name
        assert task.x_test.dtype == np.float32 and task.x_train.dtype == np.float32
    json.dumps(scenario.meta)


def test_spoken_domain_shifts_are_gain_channel_and_noise(spoken_domain_il):
    gain, channel, noise = spoken_domain_il.tasks
    base = spoken_domain_il.base.x_test
    change = lambda task: (task.x_test - base).mean(axis=(0, 1, 3))  # mean change per coefficient
    # A gain moves only c0 (log energy); a frequency response mostly the low coefficients.
    assert change(gain)[0] < -0.5 and np.abs(change(gain)[1:]).max() < 0.01
    assert change(channel)[1] > 0.5 and abs(change(channel)[0]) < 0.01
    assert np.abs(change(channel)[1:4]).mean() > np.abs(change(channel)[8:]).mean()
    assert np.abs(change(noise)).max() < 0.05 and (noise.x_test - base).std() > 0.5
    assert np.abs(np.concatenate([t.x_test for t in spoken_domain_il.tasks])).max() <= 4.0


def test_strong_spoken_shifts_are_named_recorded_and_rebuilt_from_the_spec(spoken):
    scenario = data.make_scenario(spoken, "domain-il", shifts="strong")
    kinds = [s["kind"] for s in scenario.meta["shifts"]]
    assert kinds == ["noisy environment", "telephone channel", "reverberant room", "another talker (vocal tract length)"]
    assert scenario.meta["shift_set"] == "strong" and len(scenario.tasks) == 4
    for task in scenario.tasks:
        assert np.abs(task.x_test - spoken.x_test).mean() > 0.1, task.name
        assert np.abs(task.x_test).max() <= 4.0
    spec = data.scenario_spec(scenario)
    assert spec["shifts"] == "strong"
    assert data.scenario_fingerprint(data.scenario_from_spec(spoken, spec)) == spec["fingerprint"]


def test_a_telephone_band_attenuates_the_envelope_outside_300_to_3400_hz(spoken):
    """The shift acts on the log-mel envelope the 13 coefficients describe: after it, that envelope is lower
    below 300 Hz and between 3.4 and 4 kHz, and nearly unchanged at 1 kHz (above 4 kHz, where nothing was recorded
    at 8 kHz) is left as it was."""
    scenario = data.make_scenario(spoken, "domain-il", shifts="strong")
    band = next(t for t in scenario.tasks if t.name.startswith("telephone"))
    norm = spoken.meta["normalisation"]
    envelope = bundled._Envelope(np.asarray(norm["mean"]), np.asarray(norm["std"]))
    inside = np.all(np.abs(band.x_test) < 3.9, axis=(2, 3)) & np.all(np.abs(spoken.x_test) < 3.9, axis=(2, 3))
    change = (envelope.db(band.x_test) - envelope.db(spoken.x_test))[inside]  # [frames, bands], dB
    at = lambda hz: int(np.argmin(np.abs(envelope.centres - hz)))  # noqa: E731
    assert np.median(change[:, at(150)]) < -10 and np.median(change[:, at(3800)]) < -3
    assert abs(np.median(change[:, at(1000)])) < 3


def test_strong_shifts_are_for_the_spoken_digits_and_the_bundled_sets(handwritten):
    with pytest.raises(ZoEdgeError, match="made for spoken-digits"):
        data.make_scenario(handwritten, "domain-il", shifts="strong")
    with pytest.raises(ZoEdgeError, match="synthetic domains"):
        data.make_scenario(handwritten, "class-il", shifts="strong")


def test_domain_il_train_samples_are_disjoint_between_base_and_tasks(spoken, spoken_domain_il):
    origins = [clean_origin(t.x_train, spoken.x_train) for t in [spoken_domain_il.base] + spoken_domain_il.tasks]
    every_origin = np.concatenate(origins)
    assert len(every_origin) == len(set(every_origin.tolist()))  # no clean sample is used twice
    assert len(origins[0]) == len(spoken.y_train) // 2
    assert len(every_origin) == len(spoken.y_train)
    for task, origin in zip([spoken_domain_il.base] + spoken_domain_il.tasks, origins):
        np.testing.assert_array_equal(task.y_train, spoken.y_train[origin])


def test_domain_il_is_deterministic_for_a_seed(handwritten):
    first, again, other = (data.make_scenario(handwritten, "domain-il", seed=s) for s in (0, 0, 1))
    for a, b in zip(first.tasks, again.tasks):
        np.testing.assert_array_equal(a.x_train, b.x_train)
        np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(first.base.y_train, other.base.y_train)


# --- clear errors -----------------------------------------------------------------------------------


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ZoEdgeError, match="unknown dataset 'mnist'.*spoken-digits, digits"):
        data.load_dataset("mnist")


def test_unknown_scenario_lists_the_known_ones(handwritten):
    with pytest.raises(ZoEdgeError, match="unknown scenario 'task-il'.*class-il, domain-il"):
        data.make_scenario(handwritten, "task-il")


@pytest.mark.parametrize("settings, option", [
    ({"base_classes": 10}, "base_classes=10"),
    ({"base_classes": 1}, "base_classes=1"),
    ({"base_classes": 4, "classes_per_task": 7}, "classes_per_task=7"),
    ({"classes_per_task": 0}, "classes_per_task=0"),
    ({"seed": -1}, "seed=-1"),
])
def test_impossible_class_il_settings_name_the_option(handwritten, settings, option):
    with pytest.raises(ZoEdgeError, match=option):
        data.make_scenario(handwritten, "class-il", **settings)


@pytest.mark.parametrize("settings, option", [
    ({"test_fraction": 0.0}, "test_fraction=0.0"),
    ({"test_fraction": 1.5}, "test_fraction=1.5"),
    ({"test_fraction": 0.001}, "test_fraction=0.001"),  # too few test samples to hold every class
    ({"frames": 0}, "frames=0"),
    ({"seed": -3}, "seed=-3"),
])
def test_impossible_dataset_settings_name_the_option(settings, option):
    with pytest.raises(ZoEdgeError, match=option):
        data.load_dataset("spoken-digits", **settings)


def test_seen_classes_rejects_a_task_outside_the_stream(spoken_class_il):
    with pytest.raises(ZoEdgeError, match="t=3"):
        data.seen_classes(spoken_class_il, 3)


# --- catalogue --------------------------------------------------------------------------------------


def test_catalogue_has_one_row_per_dataset_and_scenario_with_sizes():
    rows = data.catalogue()
    assert [(r["dataset"], r["scenario"]) for r in rows] == [
        (d, s) for d in data.DATASETS for s in data.SCENARIOS
        if s == "class-il" or d in data.DOMAIN_SHIFT_DATASETS]
    for row in rows:
        assert row["num_classes"] == CLASSES[row["dataset"]] and row["tasks"] == 3
        assert row["train"] + row["test"] == {"spoken-digits": 3000, "digits": 1797,
                                              "japanese-vowels": 640}[row["dataset"]]
        assert row["base_train"] + sum(row["task_train"]) == row["train"]
        assert len(row["task_names"]) == len(row["task_test"]) == 3
    json.dumps(rows)


def test_catalogue_rows_are_copies_so_callers_cannot_corrupt_the_cache():
    data.catalogue()[0]["train"] = -1
    assert data.catalogue()[0]["train"] > 0
