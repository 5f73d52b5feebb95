"""KerasSplit: the float learners' prefix / adapter-suffix split of a model with adapters, and its gradients:
one adapter in the zoo models, three in a zoo model and in a user's model with a residual skip."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zo_edge import models  # noqa: E402
from zo_edge.errors import ZoEdgeError  # noqa: E402
from zo_edge.learners.keras_split import KerasSplit  # noqa: E402

CONFIGS = [
    ("ds-cnn", (32, 13, 1), "last"),
    ("ds-cnn", (32, 13, 1), 1),
    ("ds-cnn", (32, 13, 1), "after"),
    ("digits-cnn", (8, 8, 1), "last"),
    ("digits-cnn", (8, 8, 1), "after"),
]
IDS = [f"{arch}-{pos}" for arch, _, pos in CONFIGS]
_cache: dict = {}


def _setup(arch, shape, position):
    """A small zoo model whose zero-initialised adapter0_up got random weights (so the adapter matters)."""
    key = (arch, position)
    if key not in _cache:
        model = models.build_model(arch, shape, 10, adapter_position=position)
        rng = np.random.default_rng(1)
        up = model.get_layer("adapter0_up")
        up.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) for w in up.get_weights()])
        x = rng.normal(size=(12, *shape)).astype(np.float32)
        _cache[key] = (model, KerasSplit(model), x)
    return _cache[key]


def _perturbed(params, seed, scale=0.1):
    rng = np.random.default_rng(seed)
    return [(p + rng.normal(0, scale, p.shape)).astype(np.float32) for p in params]


@pytest.mark.parametrize("arch, shape, position", CONFIGS, ids=IDS)
def test_features_with_current_params_reproduce_the_model(arch, shape, position):
    model, split, x = _setup(arch, shape, position)
    assert split.adapter_names == ["adapter0_down.kernel", "adapter0_down.bias", "adapter0_up.kernel",
                                   "adapter0_up.bias"]
    boundary = split.prefix(x, batch_size=5)  # several batches
    assert boundary[0].shape[0] == len(x) and len(boundary) == (1 if position == "after" else 2)
    W, b = split.classifier_params()
    h = split.features(boundary, split.adapter_params())
    assert h.dtype == np.float32 and h.shape == (len(x), W.shape[0])
    np.testing.assert_allclose(h @ W + b, np.asarray(model(x, training=False)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch, shape, position", CONFIGS, ids=IDS)
def test_features_with_given_params_match_the_model_with_those_weights(arch, shape, position):
    import keras

    model, split, x = _setup(arch, shape, position)
    before = [w.copy() for w in model.get_weights()]
    boundary = split.prefix(x)
    variants = [_perturbed(split.adapter_params(), seed) for seed in range(3)]
    many = split.features_many(boundary, variants)
    assert many.shape == (3, len(x), split.feature_dim)
    W, b = split.classifier_params()
    split.loss_and_grads(boundary, variants[0], W, b, np.zeros(len(x), int), [0, 1])
    for w0, w1 in zip(before, model.get_weights()):  # nothing above wrote to the model
        np.testing.assert_array_equal(w0, w1)

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    features_of = keras.Model(clone.input, clone.get_layer("classifier").input)
    for params, h_many in zip(variants, many):
        h = split.features(boundary, params)
        np.testing.assert_allclose(h, h_many, atol=1e-5, rtol=1e-5)
        clone.get_layer("adapter0_down").set_weights(params[:2])
        clone.get_layer("adapter0_up").set_weights(params[2:])
        np.testing.assert_allclose(h, np.asarray(features_of(x, training=False)), atol=1e-5, rtol=1e-5)


def _masked_problem(split, x, seed, allowed):
    """A loss to differentiate: the boundary of ``x``, perturbed adapter params, the classifier, the
    allowed classes (and their mask over 10) and labels cycling through them."""
    params = _perturbed(split.adapter_params(), seed, scale=0.05)
    W, b = split.classifier_params()
    allowed = np.array(allowed)
    y = allowed[np.arange(len(x)) % len(allowed)]
    return split.prefix(x), params, W, b, allowed, np.isin(np.arange(10), allowed), y


def _masked_ce64(h, W, b, y, allowed):
    """Float64 reference: loss and (dW, db) of the masked softmax cross-entropy."""
    logits = h.astype(np.float64) @ W.astype(np.float64) + b
    logits[:, ~allowed] = -np.inf
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.mean(np.log(p[np.arange(n), y]))
    e = p.copy()
    e[np.arange(n), y] -= 1
    e /= n
    return loss, h.astype(np.float64).T @ e, e.sum(axis=0)


@pytest.mark.parametrize("arch, shape, position", [CONFIGS[0], CONFIGS[2], CONFIGS[3]], ids=[IDS[0], IDS[2], IDS[3]])
def test_loss_and_grads_match_finite_differences_and_mask_classes(arch, shape, position):
    model, split, x = _setup(arch, shape, position)
    boundary, params, W, b, allowed, mask, y = _masked_problem(split, x, 7, [2, 3, 5, 7])
    params[1][::2] += 3.0  # half the adapter units always active: smooth points for the differences below

    loss, grads, dW, db = split.loss_and_grads(boundary, params, W, b, y, allowed)
    assert [g.shape for g in grads] == [p.shape for p in params]
    assert all(g.dtype == np.float32 for g in (*grads, dW, db))
    h = split.features(boundary, params)
    ref_loss, ref_dW, ref_db = _masked_ce64(h, W, b, y, mask)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(dW, ref_dW, atol=1e-6, rtol=1e-4)
    np.testing.assert_allclose(db, ref_db, atol=1e-6, rtol=1e-4)
    assert not dW[:, ~mask].any() and not db[~mask].any()  # masked classes: exactly zero

    # adapter gradients, all coordinates: TensorFlow's own gradient through the whole model's layers
    import keras
    import tensorflow as tf

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.get_layer("adapter0_down").set_weights(params[:2])
    clone.get_layer("adapter0_up").set_weights(params[2:])
    variables = [*clone.get_layer("adapter0_down").weights, *clone.get_layer("adapter0_up").weights]
    with tf.GradientTape() as tape:
        logits = tf.where(mask[None], clone(x, training=False), -np.inf)
        ref = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    for g, r in zip(grads, tape.gradient(ref, variables)):
        np.testing.assert_allclose(g, np.asarray(r), atol=1e-6, rtol=1e-3)

    # ... and central differences (float64 loss of float32 features) on the largest coordinates, with a
    # step small enough not to move any adapter ReLU input across its kink at 0 (a kink spoils the difference)
    cut = boundary[0].reshape(-1, boundary[0].shape[-1]).astype(np.float64)
    pre = np.abs(cut @ params[0].reshape(cut.shape[1], -1) + params[1])  # |adapter ReLU inputs| [pixels, width]
    with np.errstate(divide="ignore"):
        margins = [(pre[:, None, :] / np.abs(cut)[:, :, None]).min(axis=0).reshape(params[0].shape),  # step * cut
                   pre.min(axis=0), np.inf, np.inf]
    for j, g in enumerate(grads):
        steps = np.minimum(1e-2, np.broadcast_to(margins[j], g.shape) / 2)
        order = [i for i in np.argsort(-np.abs(g).ravel()) if steps.ravel()[i] >= 1e-3]
        assert order, split.adapter_names[j]
        for flat in order[:2]:
            idx = np.unravel_index(flat, g.shape)
            eps = float(steps[idx])
            plus, minus = [p.copy() for p in params], [p.copy() for p in params]
            plus[j][idx] += eps
            minus[j][idx] -= eps
            fd = (_masked_ce64(split.features(boundary, plus), W, b, y, mask)[0]
                  - _masked_ce64(split.features(boundary, minus), W, b, y, mask)[0]) / (2 * eps)
            assert g[idx] == pytest.approx(fd, rel=1e-2, abs=1e-4), (split.adapter_names[j], idx, eps)

    # head only: no adapter gradients, same head gradients
    loss2, none, dW2, db2 = split.loss_and_grads(boundary, params, W, b, y, allowed, train_adapter=False)
    assert none is None and loss2 == pytest.approx(loss)
    np.testing.assert_allclose(dW2, dW, atol=1e-7)
    np.testing.assert_allclose(db2, db, atol=1e-7)

    with pytest.raises(ZoEdgeError, match="allowed"):
        split.loss_and_grads(boundary, params, W, b, np.full(len(x), 4), allowed)


def test_a_model_without_adapter_is_refused():
    model = models.build_model("digits-cnn", (8, 8, 1), 10, adapter_position=None)
    with pytest.raises(ZoEdgeError, match="no adapter"):
        KerasSplit(model)


# ----------------------------------------------------------------------------------------------------
# three adapters: in different blocks of a zoo model, and around a residual skip in a user's model


def _three_adapters(which):
    """(model, split, x): three adapters whose up-projections got random weights, and real samples."""
    key = ("three", which)
    if key not in _cache:
        import user_models
        from zo_edge import keras_edit

        if which == "zoo":
            model = models.build_model("ds-cnn", (32, 13, 1), 10, adapter_position=[0, 2, 3], adapter_width=4, seed=5)
        else:  # trained (BatchNorm statistics of its own); the first adapter sits inside the residual branch
            model, _ = keras_edit.attach_adapters(user_models.trained("residual_kws", 10, epochs=1),
                                                  at=["res_relu1", "block_out", "embed"], width=4, seed=5)
        rng = np.random.default_rng(2)
        for a in models.adapters_of(model):
            up = model.get_layer(a["up"])
            up.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) for w in up.get_weights()])
        x = user_models.data("spoken-digits").x_test[:10]
        _cache[key] = (model, KerasSplit(model), x)
    return _cache[key]


def _features_of(model):
    import keras

    return keras.Model(model.inputs[0], model.get_layer("classifier").input)


def _with_params(model, split, params):
    """A copy of ``model`` whose adapters hold ``params`` (4 arrays per adapter, in adapter_names order)."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for i, a in enumerate(split.adapters):
        clone.get_layer(a["down"]).set_weights(params[4 * i : 4 * i + 2])
        clone.get_layer(a["up"]).set_weights(params[4 * i + 2 : 4 * i + 4])
    return clone


@pytest.mark.parametrize("which", ["zoo", "user"])
def test_three_adapters_features_equal_the_models_own_forward_pass(which):
    model, split, x = _three_adapters(which)
    assert split.adapters == [{"down": f"adapter{i}_down", "up": f"adapter{i}_up", "add": f"adapter{i}_add"}
                              for i in range(3)]
    assert len(split.adapter_names) == 12 and split.adapter_names[4:6] == ["adapter1_down.kernel", "adapter1_down.bias"]
    boundary = split.prefix(x, batch_size=4)
    # the boundary: the first cut, then whatever else the rest reads from before it
    first_cut = model.get_layer("adapter0_down").input
    if which == "zoo":  # beside block 0: the stem's output (the cut) and block 0's output
        want = [first_cut, model.get_layer("ds0_pw_relu").output]
    else:  # inside the residual branch: its cut, and the skip that jumps over it (the stem's output)
        want = [first_cut, model.get_layer("stem_relu").output]
    assert [b.shape[1:] for b in boundary] == [tuple(t.shape[1:]) for t in want]
    assert split.feature_dim == model.get_layer("classifier").input.shape[-1]
    h = split.features(boundary, split.adapter_params())
    np.testing.assert_allclose(h, np.asarray(_features_of(model)(x, training=False)), atol=1e-5, rtol=1e-5)
    W, b = split.classifier_params()
    out = h @ W + b
    if which == "user":  # the user's model outputs probabilities: a Softmax layer after the classifier
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out, np.asarray(model(x, training=False)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", ["zoo", "user"])
def test_three_adapters_variants_stacked_equal_one_by_one_and_the_model_with_those_weights(which):
    model, split, x = _three_adapters(which)
    before = [w.copy() for w in model.get_weights()]
    boundary = split.prefix(x)
    variants = [_perturbed(split.adapter_params(), seed) for seed in range(3)]
    many = split.features_many(boundary, variants)
    assert many.shape == (3, len(x), split.feature_dim)
    for w0, w1 in zip(before, model.get_weights()):  # nothing above wrote to the model
        np.testing.assert_array_equal(w0, w1)
    for params, h_many in zip(variants, many):
        h = split.features(boundary, params)
        np.testing.assert_allclose(h_many, h, atol=1e-5, rtol=1e-5)
        clone = _with_params(model, split, params)
        np.testing.assert_allclose(h, np.asarray(_features_of(clone)(x, training=False)), atol=1e-5, rtol=1e-5)
    assert np.abs(many[0] - many[1]).max() > 1e-3  # the variants really differ
    with pytest.raises(ZoEdgeError, match="12 arrays"):
        split.features_many(boundary, [variants[0][:4]])


@pytest.mark.parametrize("which", ["zoo", "user"])
def test_three_adapters_gradients_equal_gradient_tape_on_the_full_model(which):
    import tensorflow as tf

    model, split, x = _three_adapters(which)
    boundary, params, W, b, allowed, mask, y = _masked_problem(split, x, 11, [1, 4, 6, 9])
    loss, grads, dW, db = split.loss_and_grads(boundary, params, W, b, y, allowed)
    assert [g.shape for g in grads] == [p.shape for p in params]

    clone = _with_params(model, split, params)
    features = _features_of(clone)
    variables = [v for a in split.adapters for part in ("down", "up") for v in clone.get_layer(a[part]).weights]
    assert [v.path.split("/")[0] + "." + v.path.split("/")[1] for v in variables] == split.adapter_names
    head = clone.get_layer("classifier")
    with tf.GradientTape() as tape:
        logits = tf.matmul(features(x, training=False), head.kernel) + head.bias
        logits = tf.where(mask[None], logits, -np.inf)
        ref = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    *ref_grads, ref_dW, ref_db = tape.gradient(ref, [*variables, head.kernel, head.bias])
    assert loss == pytest.approx(float(ref), rel=1e-5)
    for name, g, r in zip(split.adapter_names, grads, ref_grads):
        r = np.asarray(r)
        assert np.abs(r).max() > 0, name  # every adapter takes part
        np.testing.assert_allclose(g, r, atol=1e-6, rtol=1e-3, err_msg=name)
    np.testing.assert_allclose(dW, np.asarray(ref_dW), atol=1e-6, rtol=1e-4)
    np.testing.assert_allclose(db, np.asarray(ref_db), atol=1e-6, rtol=1e-4)


def test_adapters_out_of_graph_order_or_of_the_wrong_kind_are_refused():
    model, split, _ = _three_adapters("zoo")
    with pytest.raises(ZoEdgeError, match="graph order"):
        KerasSplit(model, adapters=split.adapters[::-1])
    with pytest.raises(ZoEdgeError, match="1x1 Conv2D or Dense"):
        KerasSplit(model, adapters=[{"down": "ds1_pw", "up": "adapter1_up", "add": "adapter1_add"}])
    with pytest.raises(ZoEdgeError, match="no layer 'adapter7_down'"):
        KerasSplit(model, adapters=[{"down": "adapter7_down", "up": "adapter0_up", "add": "adapter0_add"}])
