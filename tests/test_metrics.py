"""Promises of sim/metrics.py, checked against numbers worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sim import metrics

# Task 0 RISES after it was learned (80 -> 85) and then drops to 75, so its best accuracy (85) is
# not R[0][0] (80). Task 1 rises from 70 to 72 by the end.
R = [
    [80.0, None, None],
    [85.0, 70.0, None],
    [75.0, 72.0, 60.0],
]
SEEN = [80.0, 77.0, 69.0]  # accuracy on all seen classes after each task


def test_average_and_last_accuracy():
    assert metrics.average_accuracy(SEEN) == pytest.approx((80 + 77 + 69) / 3)  # 75.333...
    assert metrics.last_accuracy(SEEN) == 69.0


def test_forgetting_uses_the_best_accuracy_ever_not_the_one_just_after_learning():
    # task 0: max(80, 85, 75) - 75 = 10;  task 1: max(70, 72) - 72 = 0;  the last task is excluded.
    assert metrics.forgetting(R) == pytest.approx((10 + 0) / 2)  # 5.0, not (5 + 0) / 2 from R[i][i]


def test_bwt_compares_the_end_with_just_after_learning():
    # task 0: 75 - 80 = -5;  task 1: 72 - 70 = +2
    assert metrics.bwt(R) == pytest.approx((-5 + 2) / 2)  # -1.5


def test_forgetting_is_never_negative_while_bwt_can_be_positive():
    improving = [[50.0], [60.0, 70.0], [65.0, 75.0, 80.0]]  # every old task keeps getting better
    assert metrics.forgetting(improving) == 0.0
    assert metrics.bwt(improving) == pytest.approx(((65 - 50) + (75 - 70)) / 2)  # +10
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert metrics.forgetting(np.tril(rng.uniform(0, 100, (5, 5)))) >= 0.0


def test_single_task_has_no_forgetting_and_no_backward_transfer():
    assert metrics.forgetting([[91.0]]) == 0.0
    assert metrics.bwt([[91.0]]) == 0.0
    assert metrics.average_accuracy([91.0]) == metrics.last_accuracy([91.0]) == 91.0


def test_upper_triangle_may_be_none_nan_numbers_or_missing():
    as_nan = np.array([[80, np.nan, np.nan], [85, 70, np.nan], [75, 72, 60]], dtype=float)
    with_junk = [[80, 1e9, -3], [85, 70, 42], [75, 72, 60]]  # e.g. zero-shot scores: ignored
    ragged = [[80], [85, 70], [75, 72, 60]]
    for variant in (as_nan, with_junk, ragged):
        assert metrics.forgetting(variant) == pytest.approx(5.0)
        assert metrics.bwt(variant) == pytest.approx(-1.5)
        assert metrics.accuracy_matrix_to_json(variant) == metrics.accuracy_matrix_to_json(R)


def test_missing_lower_triangle_entry_is_an_error():
    with pytest.raises(ValueError):
        metrics.forgetting([[80.0, None], [None, 70.0]])
    with pytest.raises(ValueError):
        metrics.bwt(np.array([[80.0, np.nan], [85.0, np.nan]]))


def test_accuracy_matrix_to_json_has_none_above_the_diagonal():
    out = metrics.accuracy_matrix_to_json(np.array([[80, 0, 0], [85, 70, 0], [75, 72, 60]]))
    assert out == [[80.0, None, None], [85.0, 70.0, None], [75.0, 72.0, 60.0]]
    assert all(type(v) is float for row in out for v in row if v is not None)
    assert json.loads(json.dumps(out)) == out  # valid JSON: no NaN


def test_summarize_one_seed():
    assert metrics.summarize([72.5]) == {"mean": 72.5, "std": None, "per_seed": [72.5]}  # no spread measured


def test_summarize_three_seeds_uses_the_sample_std():
    s = metrics.summarize([70.0, 72.0, 77.0])
    assert s["mean"] == pytest.approx(73.0)
    # deviations -3, -1, 4: squares sum to 26; sample variance 26 / (3 - 1) = 13
    assert s["std"] == pytest.approx(math.sqrt(13))
    assert s["per_seed"] == [70.0, 72.0, 77.0]
    assert all(type(v) is float for v in [s["mean"], s["std"], *s["per_seed"]])
