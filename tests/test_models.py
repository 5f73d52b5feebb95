"""The Keras model zoo: architectures, the identity-initialised adapter, base-task pretraining."""

from __future__ import annotations

import numpy as np
import pytest

from zo_edge import ZoEdgeError
from zo_edge import models


def _x(shape, n=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def test_zoo_lists_architectures_and_defaults():
    assert set(models.ARCHS) == {"ds-cnn", "digits-cnn"}
    assert models.default_arch("spoken-digits") == "ds-cnn"
    assert models.default_arch("digits") == "digits-cnn"
    with pytest.raises(ZoEdgeError, match="pass one of"):
        models.default_arch("imagenet")
    with pytest.raises(ZoEdgeError, match="unknown architecture"):
        models.build_model("resnet", (8, 8, 1), 10)


def test_ds_cnn_fits_the_device_budget():
    model = models.build_model("ds-cnn", (32, 13, 1), 10)
    counts = models.param_counts(model)
    assert counts["deployed"] <= 40_000
    assert counts["classifier"] == 64 * 10 + 10
    # int8 activations: the largest tensor and its successor must fit 20 KiB together
    sizes = [int(np.prod(layer.output.shape[1:])) for layer in model.layers[1:]]
    assert 2 * max(sizes) <= 20 * 1024
    names = [layer.name for layer in model.layers]
    assert "classifier" in names and "adapter0_up" in names
    assert model.layers[-1].name == "classifier" and model.layers[-1].get_config()["activation"] == "linear"


@pytest.mark.parametrize("arch, shape", [("digits-cnn", (8, 8, 1)), ("ds-cnn", (32, 13, 1))])
@pytest.mark.parametrize("position", ["last", 0, "after"])
def test_adapter_starts_as_the_identity(arch, shape, position):
    model = models.build_model(arch, shape, 10, adapter_position=position, seed=3)
    x = _x(shape)
    bare = models.without_adapter(model)
    assert not models.has_adapter(bare)
    np.testing.assert_array_equal(model(x, training=False).numpy(), bare(x, training=False).numpy())
    up = model.get_layer("adapter0_up")
    assert all(not np.any(w) for w in up.get_weights())
    # the adapter is a real parallel branch: a non-zero up-projection changes the output
    kernel, bias = up.get_weights()
    up.set_weights([np.full_like(kernel, 10.0), bias])
    changed, unchanged = model(x, training=False).numpy(), bare(x, training=False).numpy()
    assert np.abs(changed - unchanged).max() > 0.05 * np.abs(unchanged).max()


def test_adapter_shapes_and_positions():
    model = models.build_model("digits-cnn", (8, 8, 1), 10, adapter_position="last", adapter_width=4)
    info = models.adapter_info(model)
    assert info == {"present": True, "count": 1, "params": 32 * 4 + 4 + 4 * 32 + 32, "adapters": [
        {"name": "adapter0", "kind": "conv1x1", "width": 4, "channels": 32, "cut_shape": [4, 4, 32],
         "params": 32 * 4 + 4 + 4 * 32 + 32, "down": "adapter0_down", "up": "adapter0_up", "add": "adapter0_add"}]}
    after = models.build_model("ds-cnn", (32, 13, 1), 10, adapter_position="after")
    (only,) = models.adapter_info(after)["adapters"]
    assert only["kind"] == "dense" and only["cut_shape"] == [64]
    assert models.resolve_adapter_position("ds-cnn", "last") == 3
    assert models.resolve_adapter_position("ds-cnn", "-2") == 2
    assert models.resolve_adapter_position("digits-cnn", "after") == "after"
    assert models.resolve_adapter_position("ds-cnn", "after,0,-2") == [0, 2, "after"]
    assert models.resolve_adapter_position("ds-cnn", [3, 1]) == [1, 3]
    for bad in ("middle", 7, -5, 1.5, [0, "0"], [1, None]):
        with pytest.raises(ZoEdgeError, match="adapter position"):
            models.build_model("digits-cnn", (8, 8, 1), 10, adapter_position=bad)
    with pytest.raises(ZoEdgeError, match="width"):
        models.build_model("digits-cnn", (8, 8, 1), 10, adapter_width=0)


def test_several_adapters_are_numbered_in_graph_order_and_start_as_the_identity():
    shape = (32, 13, 1)
    model = models.build_model("ds-cnn", shape, 10, adapter_position=[3, "after", 0], adapter_width=4, seed=2)
    found = models.adapters_of(model)
    assert [a["name"] for a in found] == ["adapter0", "adapter1", "adapter2"]
    cuts = [model.get_layer(a["down"]).input for a in found]
    assert [tuple(c.shape[1:]) for c in cuts] == [(16, 7, 64), (16, 7, 64), (64,)]
    # adapter0 sits beside block 0 (its cut is the stem's output), adapter1 beside block 3
    assert cuts[0] is model.get_layer("stem_relu").output and cuts[1] is model.get_layer("ds2_pw_relu").output
    counts = models.param_counts(model)
    assert counts["adapters"] == [64 * 4 + 4 + 4 * 64 + 64] * 3 and counts["adapter"] == sum(counts["adapters"])
    bare = models.without_adapter(model)
    assert not models.has_adapter(bare) and models.adapter_info(bare) == {"present": False, "count": 0, "params": 0,
                                                                            "adapters": []}
    x = _x(shape)
    np.testing.assert_array_equal(model(x, training=False).numpy(), bare(x, training=False).numpy())
    # the single-adapter default is the same model (same weights, same seed) with or without the list form
    one = models.build_model("ds-cnn", shape, 10, adapter_position=[3], adapter_width=4, seed=2)
    default = models.build_model("ds-cnn", shape, 10, adapter_width=4, seed=2)
    assert [w.path for w in one.weights] == [w.path for w in default.weights]
    for a, b in zip(one.get_weights(), default.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_pretrain_uses_base_classes_only_and_keeps_the_adapter():
    from zo_edge.data import load_dataset, make_scenario

    sc = make_scenario(load_dataset("digits", seed=0), "class-il", seed=0)
    model = models.build_model("digits-cnn", (8, 8, 1), 10, seed=0)
    down_before = [w.copy() for w in model.get_layer("adapter0_down").get_weights()]
    summary = models.pretrain(model, sc.base, epochs=4, seed=0)

    base = list(sc.base.classes)
    assert summary["classes"] == base and summary["epochs"] == 4
    assert summary["base_accuracy"] > 0.9, summary
    for before, after in zip(down_before, model.get_layer("adapter0_down").get_weights()):
        np.testing.assert_array_equal(before, after)  # adapter frozen
    assert all(not np.any(w) for w in model.get_layer("adapter0_up").get_weights())  # still the identity
    assert all(layer.trainable for layer in model.layers if layer.name.startswith("adapter"))

    kernel, bias = model.get_layer("classifier").get_weights()
    norms = np.linalg.norm(kernel, axis=0)
    others = [c for c in range(10) if c not in base]
    assert norms[others].min() >= norms[base].min() - 1e-6 and norms[others].max() <= norms[base].max() + 1e-6
    np.testing.assert_allclose(bias[others], bias[base].mean(), rtol=1e-6, atol=1e-7)
    assert (np.abs(kernel) > 0).all(axis=0).all()  # no all-zero quantisation channel


def test_pretrain_is_reproducible():
    from zo_edge.data import load_dataset, make_scenario

    sc = make_scenario(load_dataset("digits", seed=1), "class-il", seed=1)
    weights = []
    for _ in range(2):
        model = models.build_model("digits-cnn", (8, 8, 1), 10, seed=1)
        models.pretrain(model, sc.base, epochs=1, seed=1)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
