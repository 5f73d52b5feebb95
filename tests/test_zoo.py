"""Every zoo model, quantised as `zo-edge build` does it, runs in the engine exactly as in TFLM over
its whole real test split — outputs and every intermediate activation — and splits at its cut."""

from __future__ import annotations

import numpy as np
import pytest

from zo_edge.build import build_run, load_run
from zo_edge.data import load_dataset
from zo_edge.engine import Engine
from zo_edge.qgraph import QGraph
from zo_edge.verify import compare_with_tflm

ZOO_RUNS = {
    "ds-cnn, adapter beside the last block": dict(dataset="spoken-digits", adapter_position="last"),
    "ds-cnn, adapter after the backbone": dict(dataset="spoken-digits", adapter_position="after"),
    "digits-cnn, adapter beside the last block": dict(dataset="digits", adapter_position="last"),
}


@pytest.fixture(scope="module", params=list(ZOO_RUNS), ids=list(ZOO_RUNS))
def zoo_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "run"
    build_run(out, epochs=2, log=lambda msg: None, **ZOO_RUNS[request.param])
    run = load_run(out)
    graph = QGraph.load(out / "model_int8.tflite")
    dataset = run.dataset
    x = Engine(graph).quantize_input(dataset.x_test)
    return run, graph, x


def test_engine_equals_tflm_on_the_whole_test_split(zoo_run):
    run, graph, x = zoo_run
    report = compare_with_tflm(graph, [x], intermediates=True)
    assert report["samples"] == len(x) >= 360
    differing = {r["name"]: r["differing_bytes"] for r in report["per_tensor"] if r["differing_bytes"]}
    assert differing == {}
    assert report["differing_bytes"] == 0 and report["total_bytes"] == len(x) * 10


def test_suffix_after_prefix_equals_the_whole_graph(zoo_run):
    run, graph, x = zoo_run
    engine = Engine(graph)
    split = engine.split(run.roles["cut"])
    assert split.prefix and split.suffix
    whole, _ = engine.run(x[:64])
    parts, _ = split.run_suffix(split.run_prefix(x[:64]))
    assert np.array_equal(whole[0], parts[0])


def test_overridden_adapter_weights_reach_the_output(zoo_run):
    """The suffix runs with other trainable constants, as zeroth-order probes need; zeroed
    up-projection weights are the identity adapter, non-zero ones change the logits."""
    run, graph, x = zoo_run
    roles = run.roles
    up = graph.tensors[roles["adapter_up.weights"]]
    assert not up.data.any(), "the quantised up-projection starts at zero"
    split = Engine(graph).split(roles["cut"])
    boundary = split.run_prefix(x[:64])
    base, _ = split.run_suffix(boundary)
    same, _ = split.run_suffix(boundary, constants={up.index: np.zeros_like(up.data)})
    rng = np.random.default_rng(0)
    probe = rng.choice(np.array([-100, 100], np.int8), size=up.data.shape)
    moved, _ = split.run_suffix(boundary, constants={up.index: probe})
    assert np.array_equal(base[0], same[0])
    assert not np.array_equal(base[0], moved[0])


def test_frozen_split_runs_only_what_training_can_change(zoo_run):
    """Splitting at the trainable tensors keeps the frozen block in the prefix, and the suffix with
    any trainable values equals the whole graph run with those values."""
    run, graph, x = zoo_run
    roles = run.roles
    trainable = [roles[r] for r in ("adapter_down.weights", "adapter_down.bias", "adapter_up.weights",
                                    "adapter_up.bias", "classifier.weights", "classifier.bias")]
    engine = Engine(graph)
    frozen = engine.split_frozen(trainable)
    assert len(frozen.suffix) <= len(engine.split(roles["cut"]).suffix)
    assert all(s.op.opcode != "DEPTHWISE_CONV_2D" for s in frozen.suffix)
    rng = np.random.default_rng(1)
    up = graph.tensors[roles["adapter_up.weights"]]
    constants = {up.index: rng.integers(-60, 61, size=up.data.shape).astype(np.int8)}
    whole, _ = engine.run(x[:64], constants=constants)
    parts, _ = frozen.run_suffix(frozen.run_prefix(x[:64]), constants=constants)
    assert np.array_equal(whole[0], parts[0])
