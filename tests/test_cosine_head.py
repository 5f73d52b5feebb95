"""The cosine classifier (``zo-edge build --head cosine``): the reference's ``CosineLinear`` as an int8 graph
(L2_NORMALIZATION, then a fully connected layer whose rows are sigma times unit vectors), and its learners:
sigma and unit rows, re-normalised after every step, in float and in the device's integers."""

from __future__ import annotations

import numpy as np
import pytest

from zo_edge.build import load_run
from zo_edge.engine import Engine
from zo_edge.learners import LearnerConfig, make_learner
from zo_edge.learners.cosine import U_BITS, CosineHead, CosineHeadFloat, normalised_rows
from zo_edge.tflm import TflmOracle


@pytest.fixture(scope="module")
def run(digits_cosine_run_dir):
    return load_run(digits_cosine_run_dir)


def _dequantised_rows(graph, index):
    t = graph.tensors[index]
    return t.data.astype(np.float64) * np.broadcast_to(t.scale.astype(np.float64), (t.shape[0],))[:, None]


def test_the_graph_is_an_l2_normalisation_then_sigma_times_unit_rows(run):
    plan, graph = run.plan, run.graph
    assert plan.classifier.kind == "cosine" and run.settings["head"] == "cosine"
    assert graph.producer(plan.classifier.input).opcode == "L2_NORMALIZATION"
    assert graph.tensors[plan.classifier.input].scalar_quant() == (1 / 128, 0)
    assert not np.any(graph.tensors[plan.classifier.bias].data)  # no bias: it stays zero
    assert [role for role, _ in plan.trainables()][-1] == "classifier.weights"  # the bias is not trained
    norms = np.linalg.norm(_dequantised_rows(graph, plan.classifier.weights), axis=1)
    assert norms.std() / norms.mean() < 0.02  # every class at the one scale sigma (int8 rounding apart)


def test_the_engine_equals_tflm_on_the_cosine_model(run):
    x = Engine(run.graph).quantize_input(run.dataset.x_test)
    (ours,), _ = Engine(run.graph).run(x)
    (theirs,), _ = TflmOracle(run.tflite).run(x)
    assert ours.size > 1000 and ours.tobytes() == theirs.reshape(ours.shape).tobytes()


def test_the_learner_starts_from_the_trained_rows_within_one_int8_step(run):
    head = CosineHead(run.graph, run.plan.classifier.weights)
    w = run.graph.tensors[run.plan.classifier.weights].data.astype(np.int64).ravel()
    assert np.abs(head.view() - w).max() <= 1
    norms = np.sqrt((head.u.astype(np.float64) ** 2).sum(axis=1)) / (1 << U_BITS)
    assert np.abs(norms - 1).max() < 1e-3


def test_a_step_keeps_the_rows_unit_and_moves_only_the_rows_it_changes(run):
    head = CosineHead(run.graph, run.plan.classifier.weights)
    classes, features = head.shape
    g = np.zeros((classes, features), np.int64)
    g[3] = np.random.default_rng(0).integers(-(1 << 20), 1 << 20, features)  # one class's gradient (Q20)
    before = head.u.copy()
    head.update(g.ravel(), lr=0.5, momentum=0.0, clip=0.0, seed=1, step=0, query=1)
    changed = np.flatnonzero((head.u != before).any(axis=1)).tolist()
    assert changed == [3]
    norm = np.sqrt((head.u[3].astype(np.float64) ** 2).sum()) / (1 << U_BITS)
    assert abs(norm - 1) < 1e-3 and head.sigma != head.initial[1]  # g . u moved sigma too


def test_normalising_a_unit_row_changes_it_by_at_most_one_step():
    rows = normalised_rows(np.random.default_rng(2).integers(-20000, 20000, (6, 40)))
    again = normalised_rows(rows)
    assert np.abs(again - rows).max() <= 1


def test_the_integer_step_follows_the_float_step(run):
    """One step from the same gradient: the device's integers and float32 land on the same sigma and rows
    (to the resolution of Q14 rows and stochastic rounding)."""
    head8 = CosineHead(run.graph, run.plan.classifier.weights)
    headf = CosineHeadFloat((head8.u.T / (1 << U_BITS)) * (head8.sigma / 65536.0))
    classes, features = head8.shape
    g = np.random.default_rng(3).normal(0, 0.05, (classes, features))
    head8.update(np.round(g.ravel() * (1 << 20)).astype(np.int64), lr=0.05, momentum=0.0, clip=0.0, seed=0,
                 step=0, query=1)
    headf.step({}, g.T.astype(np.float32), lr=0.05, momentum=0.0)
    assert abs(head8.sigma / 65536.0 - float(headf.sigma)) < 1e-3
    assert np.abs(head8.u / (1 << U_BITS) - headf.u.T).max() < 2e-3


@pytest.mark.parametrize("method", ["head", "zo-fc", "zo", "fo"])
def test_every_method_learns_on_a_cosine_head_in_int8_and_float_alike(run, method):
    """A task of the stream in both modes: the cosine head learns it (float and int8 within a few points)."""
    task = run.scenario.tasks[0]
    accuracy = {}
    for mode in ("int8", "float"):
        learner = make_learner(run, LearnerConfig(method=method, mode=mode, epochs=3, lr_schedule="cosine"))
        before = np.mean(learner.predict(task.x_test, task.classes) == task.y_test)
        learner.fit_task(task)
        accuracy[mode] = np.mean(learner.predict(task.x_test, task.classes) == task.y_test)
        if method != "zo":
            assert accuracy[mode] > before + 0.1, (mode, before, accuracy[mode])
    assert abs(accuracy["int8"] - accuracy["float"]) < 0.1


def test_profile_budgets_a_cosine_head_with_its_l2_normalisation(run):
    from zo_edge import kernel_spec
    from zo_edge.devices import get_device, load_catalogue
    from zo_edge.profile import pass_instructions, profile

    result = profile(run, LearnerConfig(method="zo-fc", mode="int8"), get_device("nrf52840", load_catalogue()))
    assert result["time"]["instructions"]["train_step"] > result["time"]["instructions"]["inference"] > 0
    l2 = [lay for _, lay in kernel_spec.model_layers(run.graph) if lay.kernel.opcode == "L2_NORMALIZATION"]
    assert len(l2) == 1
    # the L2 normalisation runs in every suffix pass: it is part of the suffix's estimate
    cost = kernel_spec.path_instructions("L2_NORMALIZATION", "general", kernel_spec.layer_terms(l2[0]), "dsp")
    assert cost > 0 and pass_instructions(run, "dsp")["suffix"] > cost
