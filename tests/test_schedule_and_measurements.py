"""The cosine learning-rate schedule, and what simulate measures to explain forgetting: every step's update
norm, each task's drift, and the reference's flatness measure (``sim.flatness``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sim import flatness
from sim.runner import Flatness, simulate
from zo_edge.build import load_run
from zo_edge.learners import LearnerConfig, make_learner
from zo_edge.learners import fixed


def test_the_cosine_schedule_is_pytorchs_cosine_annealing_stepped_per_epoch():
    cfg = LearnerConfig(method="zo-fc", epochs=20, fc_epochs=10, lr_schedule="cosine")
    assert [cfg.lr_factor("adapters", e) for e in (0, 10)] == [1.0, pytest.approx(0.5)]
    assert cfg.lr_factor("adapters", 19) == pytest.approx((1 + math.cos(math.pi * 19 / 20)) / 2)
    assert cfg.lr_factor("classifier", 5) == pytest.approx(0.5)  # zo-fc's classifier: over its fc_epochs
    table = cfg.lr_table_q16("adapters")
    assert len(table) == 20 and table[0] == 1 << 16 and all(a > b for a, b in zip(table, table[1:]))
    assert LearnerConfig(lr_schedule="constant").lr_table_q16("adapters") == [1 << 16] * 10
    with pytest.raises(Exception, match="lr-schedule"):
        LearnerConfig(lr_schedule="linear").check()


def test_a_q16_factor_of_one_changes_nothing_and_scales_otherwise():
    x = np.array([-(1 << 31), -3, -1, 0, 1, 7, (1 << 31) - 1])
    assert fixed.scale_q16(x, 1 << 16).tolist() == x.tolist()
    assert fixed.scale_q16(np.array([1000, -1000]), 1 << 15).tolist() == [500, -500]


def test_the_schedule_shrinks_late_steps_in_int8(digits_run_dir):
    run = load_run(digits_run_dir)
    task = run.scenario.tasks[0]
    norms = {}
    for schedule in ("constant", "cosine"):
        learner = make_learner(run, LearnerConfig(method="zo-fc", epochs=4, lr_schedule=schedule))
        norms[schedule] = learner.fit_task(task)["update_norms"]["adapters"]
    # the first epoch's steps are the same; the cosine's later ones shorter, so its mean step is too
    assert norms["cosine"]["mean"] < 0.9 * norms["constant"]["mean"]


def test_directions_have_the_size_of_their_ball():
    rng = np.random.default_rng(0)
    l2 = flatness.directions(rng, 500, 7, 0.005, "l2")
    linf = flatness.directions(rng, 500, 7, 0.005, "linf")
    assert np.allclose(np.linalg.norm(l2, axis=1), 0.005)
    assert np.all(np.abs(linf) == 0.005)


@pytest.fixture(scope="module")
def measured(digits_run_dir):
    run = load_run(digits_run_dir)
    spec = Flatness(directions=6, samples=64)
    out = {"zo-fc": simulate(run, LearnerConfig(method="zo-fc", epochs=2), [0, 1], flat=spec),
           "head": simulate(run, LearnerConfig(method="head", epochs=1), [0]),
           "frozen": simulate(run, LearnerConfig(method="frozen"), [0], flat=spec)}
    for results in out.values():
        results.pop("_learners")
    return out


def test_results_hold_update_norms_drift_and_flatness_per_task(measured):
    results = measured["zo-fc"]
    json.dumps(results)  # results.json as written
    per_seed = results["measurements"]["per_seed"]
    assert len(per_seed) == 2 and [t["task"] for t in per_seed[0]] == [1, 2, 3]
    first = per_seed[0][0]
    assert first["update_norms"]["adapters"]["mean"] > 0 and first["drift"]["adapters"] > 0
    assert first["update_norms"]["adapters"]["steps"] == first["update_norms"]["classifier"]["steps"] > 0
    for norm in flatness.NORMS:
        assert set(first["flatness"][norm]) >= {"L0", "mean", "max", "symmetric_mean"}
    summary = results["measurements"]["summary"]
    assert set(summary) >= {"update_norm_adapters", "drift_adapters", "loss_rise_l2", "loss_rise_symmetric_linf"}
    assert len(summary["drift_adapters"]["per_seed"]) == 2


def test_head_only_leaves_the_adapters_where_they_were(measured):
    tasks = measured["head"]["measurements"]["per_seed"][0]
    assert all(t["drift"]["adapters"] == 0 and t["drift"]["classifier"] > 0 for t in tasks)


def test_frozen_measures_the_pretrained_models_flatness(measured):
    frozen = measured["frozen"]["measurements"]["per_seed"][0]
    assert all("drift" not in t and "flatness" in t for t in frozen)  # nothing trained, flatness measured
    assert "update_norm_adapters" not in measured["frozen"]["measurements"]["summary"]
