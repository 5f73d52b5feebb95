"""keras_edit: a user's Keras model (unlike the zoo's) with adapters attached and its classifier resized.

The models (tests/user_models.py) are trained briefly on the bundled data: Sequential and functional,
Conv2D and Conv1D stacks with BatchNormalization, max and average pooling, Flatten, Reshape, Dropout,
Dense layers in the middle, a residual skip, and a final softmax (as an activation or as a layer).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import user_models  # noqa: E402
from zo_edge import keras_edit, models  # noqa: E402
from zo_edge import quantize as Q  # noqa: E402
from zo_edge.errors import ZoEdgeError  # noqa: E402

# (model, classes it was trained on, adapter positions): several blocks, every kind of output
CASES = [
    ("sequential_digits", 6, ["relu1", "conv2", "hidden"]),  # [8,8,12], [4,4,16] maps, a [32] vector
    ("sequential_digits", 6, None),  # default: on the classifier's input (the Dropout's output)
    ("residual_kws", 10, ["stem_relu", "res_relu1", "embed"]),  # before the skip, inside it, after it
    ("conv1d_kws", 10, ["relu1", "conv2", "gap"]),  # [32,16] and [16,16] sequences, a [16] vector
]
IDS = [f"{name}-{'-'.join(at) if at else 'default'}" for name, _, at in CASES]


def _x(dataset, n=64):
    return user_models.data(dataset).x_test[:n]


def _features_model(model, layer):
    import keras

    return keras.Model(model.inputs[0], model.get_layer(layer).input)


@pytest.mark.parametrize("name, classes, at", CASES, ids=IDS)
def test_attached_adapters_start_as_the_identity(name, classes, at):
    import keras

    original = user_models.trained(name, classes)
    data = user_models.data(user_models.BUILDERS[name][1])
    known = data.y_test < classes
    assert user_models.accuracy(original, data.x_test[known], data.y_test[known]) > 0.8  # a real, trained model
    before = [w.copy() for w in original.get_weights()]
    model, info = keras_edit.attach_adapters(original, at=at, width=4, seed=0)
    x = _x(user_models.BUILDERS[name][1])

    # same outputs (here the classifier keeps its size), and the user's model was not touched
    np.testing.assert_allclose(model.predict_on_batch(x), original.predict_on_batch(x), rtol=0, atol=1e-6)
    for w0, w1 in zip(before, original.get_weights()):
        np.testing.assert_array_equal(w0, w1)

    # the adapters, numbered in graph order, each on its layer's output; the zoo's finder sees them too
    at = at or [original.layers[-2].name]
    assert [a["name"] for a in info["adapters"]] == [f"adapter{i}" for i in range(len(at))]
    assert [a["at"] for a in info["adapters"]] == at
    assert [a["name"] for a in models.adapters_of(model)] == [a["name"] for a in info["adapters"]]
    for a in info["adapters"]:
        assert a["kind"] == ("dense" if len(a["at_shape"]) == 1 else "conv1x1")
        assert a["cut_shape"] == (a["at_shape"][:1] + [1] + a["at_shape"][1:] if len(a["at_shape"]) == 2
                                  else a["at_shape"])
        assert a["width"] == 4 and a["channels"] == a["at_shape"][-1]
        up = model.get_layer(a["up"])
        assert all(not np.any(w) for w in up.get_weights())
    # the classifier is its own linear Dense; the probabilities are a separate Softmax after it
    head = model.get_layer("classifier")
    assert head.get_config()["activation"] == "linear" and info["classifier"]["softmax"] == model.layers[-1].name
    assert model.layers[-1].__class__.__name__ == "Softmax"
    old = original.get_layer(info["classifier"]["replaces"])
    np.testing.assert_allclose(keras.Model(model.inputs[0], head.output).predict_on_batch(x),
                               _features_model(original, old.name).predict_on_batch(x) @ old.get_weights()[0]
                               + old.get_weights()[1], rtol=0, atol=1e-5)

    # each adapter is a real branch: a non-zero up-projection changes the output
    for a in info["adapters"]:
        up = model.get_layer(a["up"])
        kernel, bias = up.get_weights()
        up.set_weights([np.full_like(kernel, 0.5), bias])
        assert np.abs(model.predict_on_batch(x) - original.predict_on_batch(x)).max() > 1e-3, a["name"]
        up.set_weights([kernel, bias])


def test_the_resized_classifier_keeps_the_rows_it_knows():
    import keras

    original = user_models.trained("sequential_digits", 6)  # knows digits 0..5
    old_kernel, old_bias = original.get_layer("probs").get_weights()
    model, info = keras_edit.attach_adapters(original, num_classes=10, seed=3)
    kernel, bias = model.get_layer("classifier").get_weights()
    assert kernel.shape == (32, 10) and info["classifier"]["kept_rows"] == 6
    np.testing.assert_array_equal(kernel[:, :6], old_kernel)
    np.testing.assert_array_equal(bias[:6], old_bias)
    # new rows at the trained rows' magnitude (as pretraining draws them), no all-zero channel
    norms, old_norms = np.linalg.norm(kernel, axis=0), np.linalg.norm(old_kernel, axis=0)
    assert old_norms.min() - 1e-6 <= norms[6:].min() and norms[6:].max() <= old_norms.max() + 1e-6
    np.testing.assert_allclose(bias[6:], old_bias.mean(), rtol=1e-6)
    assert info["classifier"]["new_rows"]["count"] == 4 and (np.abs(kernel[:, 6:]) > 0).all()
    # the known classes' logits are unchanged; seeded: the same seed draws the same rows, another not
    x = _x("digits")
    logits = keras.Model(model.inputs[0], model.get_layer("classifier").output).predict_on_batch(x)
    reference = _features_model(original, "probs").predict_on_batch(x) @ old_kernel + old_bias
    np.testing.assert_allclose(logits[:, :6], reference, rtol=0, atol=1e-5)
    again = keras_edit.attach_adapters(original, num_classes=10, seed=3)[0].get_layer("classifier").get_weights()[0]
    other = keras_edit.attach_adapters(original, num_classes=10, seed=4)[0].get_layer("classifier").get_weights()[0]
    np.testing.assert_array_equal(again, kernel)
    assert not np.array_equal(other[:, 6:], kernel[:, 6:]) and np.array_equal(other[:, :6], kernel[:, :6])
    # fewer classes than the model knows: the first ones are kept
    small, small_info = keras_edit.attach_adapters(original, num_classes=4)
    np.testing.assert_array_equal(small.get_layer("classifier").get_weights()[0], old_kernel[:, :4])
    assert small_info["classifier"]["new_rows"]["count"] == 0


def _one_line(exc_info, *fragments):
    message = str(exc_info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_requests_are_one_line_errors():
    import keras
    from keras import layers

    seq = user_models.trained("sequential_digits", 6)
    res = user_models.trained("residual_kws", 10)
    with pytest.raises(ZoEdgeError) as e:  # a name that is no layer: the candidates are listed
        keras_edit.attach_adapters(seq, at=["conv3"])
    _one_line(e, "'conv3' names no layer", "relu1", "maxpool", "hidden", "dropout")
    assert "probs" not in str(e.value) and "flatten, hidden" in str(e.value)
    assert keras_edit.adapter_candidates(res)[:3] == ["stem", "stem_bn", "stem_relu"]
    with pytest.raises(ZoEdgeError) as e:
        keras_edit.attach_adapters(seq, classifier="conv2")
    _one_line(e, "'conv2' is a Conv2D, not a Dense", "hidden", "probs")
    with pytest.raises(ZoEdgeError) as e:  # a Dense that does not make the output is no classifier
        keras_edit.attach_adapters(res, classifier="embed")
    _one_line(e, "does not make the model's output", "--classifier")
    with pytest.raises(ZoEdgeError) as e:
        keras_edit.attach_adapters(res, at=["mfcc"])
    _one_line(e, "'mfcc' is the model's input", "stem_relu")
    for output in ("logits", "probabilities"):
        with pytest.raises(ZoEdgeError) as e:
            keras_edit.attach_adapters(res, at=["embed", output])
        _one_line(e, f"'{output}' makes the model's output")
    with pytest.raises(ZoEdgeError) as e:
        keras_edit.attach_adapters(res, at=["embed", "embed"])
    _one_line(e, "named twice")
    with pytest.raises(ZoEdgeError) as e:
        keras_edit.attach_adapters(res, width=0)
    _one_line(e, "adapter width")

    # a layer inside a nested model
    inputs = keras.Input((8, 8, 1))
    backbone = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(4, 3, name="inner_conv"),
                                 layers.Flatten(name="inner_flat")], name="backbone")
    nested = keras.Model(inputs, layers.Dense(3, name="head")(backbone(inputs)))
    with pytest.raises(ZoEdgeError) as e:
        keras_edit.attach_adapters(nested, at=["inner_conv"])
    _one_line(e, "inside the nested model 'backbone'")
    # ... while the nested model's own output can take one
    edited, info = keras_edit.attach_adapters(nested, at=["backbone"], width=2)
    assert info["adapters"][0]["at"] == "backbone" and info["adapters"][0]["kind"] == "dense"

    # several inputs, several outputs
    a, b = keras.Input((4,)), keras.Input((4,))
    two_in = keras.Model([a, b], layers.Dense(2)(layers.Add()([a, b])))
    with pytest.raises(ZoEdgeError) as e:
        keras_edit.attach_adapters(two_in)
    _one_line(e, "2 inputs and 1 outputs")
    h = layers.Dense(4, name="h")(a)
    two_out = keras.Model(a, [layers.Dense(2, name="o1")(h), layers.Dense(3, name="o2")(h)])
    with pytest.raises(ZoEdgeError) as e:
        keras_edit.attach_adapters(two_out)
    _one_line(e, "1 inputs and 2 outputs")
    # a classifier with a non-linear activation, one on a sequence, one reading the input directly
    for activation in ("relu", "sigmoid"):
        with pytest.raises(ZoEdgeError) as e:
            keras_edit.attach_adapters(keras.Sequential([keras.Input((4,)), layers.Dense(3, activation=activation)]))
        _one_line(e, f"a {activation} activation")
    seq3d = keras.Model(a, layers.Dense(3)(layers.Reshape((2, 2))(a)))
    with pytest.raises(ZoEdgeError) as e:
        keras_edit.attach_adapters(seq3d)
    _one_line(e, "reads a [None, 2, 2] tensor")
    with pytest.raises(ZoEdgeError) as e:
        keras_edit.attach_adapters(keras.Model(a, layers.Dense(3)(a)))
    _one_line(e, "reads the model's input directly")


def _planned_magnitudes(model, info, seed=0):
    """Give every adapter the weights quantisation calibrates with: up at ±0.1 (zero-initialised up
    would give degenerate scales) and biases nudged off zero (an exact-zero bias is dropped)."""
    rng = np.random.default_rng(seed)
    for a in info["adapters"]:
        for name in (a["down"], a["up"]):
            layer = model.get_layer(name)
            kernel, bias = layer.get_weights()
            if name == a["up"]:
                kernel = np.where(rng.random(kernel.shape) < 0.5, -0.1, 0.1).astype(np.float32)
            layer.set_weights([kernel, (bias + rng.choice([-1e-6, 1e-6], bias.shape)).astype(np.float32)])


@pytest.mark.parametrize("name, classes, at", CASES, ids=IDS)
def test_the_edited_model_converts_to_int8_with_every_adapter_found(name, classes, at):
    original = user_models.trained(name, classes)
    model, info = keras_edit.attach_adapters(original, at=at, width=4, num_classes=10, seed=0)
    _planned_magnitudes(model, info)
    samples = user_models.data(user_models.BUILDERS[name][1]).x_train[:64]
    graph = Q._parse(Q._convert(model, samples))
    Q.check_int8(graph)
    ops = [op for op, *_ in graph.ops]
    assert ops[-2:] == ["FULLY_CONNECTED", "SOFTMAX"]

    # one adapter-shaped branch per adapter: (down, up) 1x1 CONV_2D or FULLY_CONNECTED pairs and the ADD
    found = Q._adapter_candidates(graph)
    assert len(found) == len(info["adapters"]), ops
    shapes = sorted((tuple(graph.shape(graph.ops[down][1][1])), tuple(graph.shape(graph.ops[up][1][1])),
                     tuple(graph.shape(cut)[1:])) for _, up, down, cut, _ in found)
    want = sorted(((4, 1, 1, a["channels"]) if a["kind"] == "conv1x1" else (4, a["channels"]),
                   (a["channels"], 1, 1, 4) if a["kind"] == "conv1x1" else (a["channels"], 4),
                   tuple(a["cut_shape"])) for a in info["adapters"])
    assert shapes == want
    for add, up, down, cut, block in found:
        assert cut == block  # an adapter on a tensor: the ADD's other input is the cut itself
        assert graph.ops[up][0] == graph.ops[down][0] == ("CONV_2D" if len(graph.shape(cut)) == 4
                                                          else "FULLY_CONNECTED")


def test_fit_classifier_fits_only_the_base_rows_on_frozen_features():
    from zo_edge.data import make_scenario

    original = user_models.trained("sequential_digits", 6)  # knows digits 0..5
    scenario = make_scenario(user_models.data("digits"), "class-il", tasks="0,1,2,6,7;3,4,5;8,9")
    model, _ = keras_edit.attach_adapters(original, num_classes=10, seed=0)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    accuracy_before = models.evaluate_base(model, scenario.base)["base_accuracy"]
    summary = keras_edit.fit_classifier(model, scenario.base, epochs=20, seed=0)

    base = scenario.base.classes
    assert summary["trained"].startswith("base rows") and summary["classes"] == base
    # 6 and 7 were never seen by the user's model: their new rows learn them on the frozen features
    assert summary["base_accuracy"] > max(0.9, accuracy_before + 0.1), (accuracy_before, summary)
    kernel, bias = model.get_layer("classifier").get_weights()
    old_kernel, old_bias = before["classifier"]
    others = [c for c in range(10) if c not in base]
    np.testing.assert_array_equal(kernel[:, others], old_kernel[:, others])  # other rows kept
    np.testing.assert_array_equal(bias[others], old_bias[others])
    assert not np.array_equal(kernel[:, base], old_kernel[:, base])
    for layer in model.layers:  # everything but the classifier untouched (BatchNorm statistics too)
        if layer.name != "classifier":
            for w0, w1 in zip(before[layer.name], layer.get_weights()):
                np.testing.assert_array_equal(w0, w1)


def test_fine_tune_trains_the_backbone_with_the_adapters_frozen():
    from zo_edge.data import make_scenario

    original = user_models.trained("residual_kws", 10, epochs=1)
    scenario = make_scenario(user_models.data("spoken-digits"), "class-il", seed=0)
    model, info = keras_edit.attach_adapters(original, at=["res_relu1", "embed"], num_classes=10, seed=0)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    accuracy_before = models.evaluate_base(model, scenario.base)["base_accuracy"]
    summary = keras_edit.fine_tune(model, scenario.base, epochs=2, seed=0)

    assert summary["trained"] == "backbone and base rows" and summary["epochs"] == 2
    assert summary["base_accuracy"] >= accuracy_before - 0.02, (accuracy_before, summary)
    assert summary["base_accuracy"] > 0.85, summary
    for a in info["adapters"]:  # frozen: the down-projection as drawn, the up-projection still zero
        for part in ("down", "up"):
            for w0, w1 in zip(before[a[part]], model.get_layer(a[part]).get_weights()):
                np.testing.assert_array_equal(w0, w1)
        assert all(layer.trainable for layer in model.layers)
    assert not np.array_equal(before["res_conv1"][0], model.get_layer("res_conv1").get_weights()[0])
    kernel = model.get_layer("classifier").get_weights()[0]
    others = [c for c in range(10) if c not in scenario.base.classes]
    np.testing.assert_array_equal(kernel[:, others], before["classifier"][0][:, others])
