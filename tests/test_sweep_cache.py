"""The prefix cache: keyed by the frozen part and the samples, shared on disk, never changing a result."""

from __future__ import annotations

import copy

import numpy as np


def _split(graph, run):
    from zo_edge.engine import Engine

    return Engine(graph).split_frozen(run.plan.trainable_indices(), outputs=[run.plan.classifier.logits])


def test_an_entry_is_the_prefix_computed_once_and_read_back_from_disk(digits_run_dir, tmp_path):
    from zo_edge.prefix_cache import PrefixCache
    from zo_edge.run_folder import load_run

    run = load_run(digits_run_dir)
    split = _split(run.graph, run)
    x = run.scenario.tasks[0].x_train
    expected = split.run_prefix([split.engine.quantize_input(x)])
    cache = PrefixCache(tmp_path / "cache")
    first = cache.boundary(split, x)
    again = cache.boundary(split, x.copy())  # another array, the same samples: the same entry
    assert (cache.misses, cache.hits) == (1, 1)
    assert list(first) == split.boundary and all(np.array_equal(first[i], expected[i]) for i in split.boundary)
    other = PrefixCache(tmp_path / "cache")  # another process: reads the file
    from_disk = other.boundary(_split(run.graph, run), x)
    assert (other.misses, other.hits) == (0, 1)
    for i in split.boundary:
        assert from_disk[i].dtype == np.int8 and np.array_equal(from_disk[i], expected[i])
        assert np.array_equal(again[i], expected[i])
    cache.boundary(split, x[:-1])
    assert cache.misses == 2  # other samples, another entry


def test_the_key_is_the_frozen_part_whatever_follows_the_cut(digits_run_dir):
    from zo_edge.prefix_cache import frozen_digest
    from zo_edge.run_folder import load_run

    run = load_run(digits_run_dir)
    digest = frozen_digest(_split(run.graph, run))
    after = copy.deepcopy(run.graph)  # a retrained classifier: the prefix is the same
    weights = after.tensors[run.plan.classifier.weights]
    weights.data = np.ascontiguousarray(weights.data[::-1])
    assert frozen_digest(_split(after, run)) == digest
    before = copy.deepcopy(run.graph)  # one weight of the first conv changed: another prefix
    first_conv = before.tensors[before.ops[0].inputs[1]]
    first_conv.data = first_conv.data.copy()
    first_conv.data.flat[0] = first_conv.data.flat[0] ^ 1
    assert frozen_digest(_split(before, run)) != digest


def test_a_shared_cache_changes_no_result(digits_run_dir, tmp_path):
    from sim.runner import simulate
    from zo_edge.learners import LearnerConfig
    from zo_edge.prefix_cache import PrefixCache
    from zo_edge.run_folder import load_run

    run = load_run(digits_run_dir)
    config = LearnerConfig(epochs=1, q=2)
    shared = PrefixCache(tmp_path / "cache")
    simulate(run, LearnerConfig(method="head", epochs=1), [5], prefix_cache=shared)  # fills it
    cached = simulate(run, config, [0, 1], prefix_cache=PrefixCache(tmp_path / "cache"))
    fresh = simulate(run, config, [0, 1])
    assert cached["accuracy_matrices"] == fresh["accuracy_matrices"]
    assert cached["counters"] == fresh["counters"]
    for a, b in zip(cached["_learners"], fresh["_learners"]):
        sa, sb = a.state(), b.state()
        assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
