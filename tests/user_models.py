"""Keras models unlike the zoo's, as a user would bring them, trained briefly on the bundled data.

Each builder returns an untrained model; ``trained`` fits it for a few epochs on real samples (the
bundled handwritten or spoken digits) and caches it per process, so the tests that read it share it.
BatchNormalization uses momentum 0.9 so that its moving statistics settle within those few epochs
(with Keras' default 0.99 a briefly trained model is poor in inference mode).
"""

from __future__ import annotations

import functools

import numpy as np

from zo_edge.models import configure_tensorflow


def sequential_digits(classes: int = 6):
    """Sequential, 8x8 digits: Conv2D + BatchNormalization + ReLU, max pooling, Conv2D (ReLU), average
    pooling, Flatten, a Dense in the middle, Dropout, and a Dense with a softmax activation."""
    configure_tensorflow()
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(12, 3, padding="same", use_bias=False, name="conv1"),
        layers.BatchNormalization(momentum=0.9, name="bn1"),
        layers.ReLU(name="relu1"),
        layers.MaxPooling2D(2, name="maxpool"),
        layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        layers.AveragePooling2D(2, name="avgpool"),
        layers.Flatten(name="flatten"),
        layers.Dense(32, activation="relu", name="hidden"),
        layers.Dropout(0.1, name="dropout"),
        layers.Dense(classes, activation="softmax", name="probs"),
    ], name="user_sequential")


def residual_kws(classes: int = 10):
    """Functional, 32x13 MFCC: a strided stem, a residual block whose skip jumps over two convolutions
    (BatchNormalization throughout), max pooling, a Reshape to a vector, Dropout, a Dense in the
    middle, the logits Dense and a separate Softmax layer."""
    configure_tensorflow()
    import keras
    from keras import layers

    inputs = keras.Input((32, 13, 1), name="mfcc")
    x = layers.Conv2D(16, (5, 3), strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    y = layers.Conv2D(16, 3, padding="same", use_bias=False, name="res_conv1")(x)
    y = layers.BatchNormalization(momentum=0.9, name="res_bn1")(y)
    y = layers.ReLU(name="res_relu1")(y)
    y = layers.Conv2D(16, 3, padding="same", use_bias=False, name="res_conv2")(y)
    y = layers.BatchNormalization(momentum=0.9, name="res_bn2")(y)
    x = layers.Add(name="skip")([x, y])
    x = layers.ReLU(name="block_out")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)  # 16x7 -> 8x3
    x = layers.Reshape((8 * 3 * 16,), name="to_vector")(x)
    x = layers.Dropout(0.1, name="dropout")(x)
    x = layers.Dense(32, activation="relu", name="embed")(x)
    logits = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, layers.Softmax(name="probabilities")(logits), name="user_residual")


def conv1d_kws(classes: int = 10):
    """Functional, 32 frames x 13 MFCC as a sequence: Reshape, Conv1D + BatchNormalization + ReLU, 1-D
    max pooling, Conv1D (ReLU), global average pooling, a Dense with a softmax activation."""
    configure_tensorflow()
    import keras
    from keras import layers

    inputs = keras.Input((32, 13, 1), name="mfcc")
    x = layers.Reshape((32, 13), name="frames")(inputs)
    x = layers.Conv1D(16, 3, padding="same", use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling1D(2, name="pool1")(x)
    x = layers.Conv1D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax", name="probs")(x), name="user_conv1d")


def linear_embed_digits(classes: int = 4):
    """Sequential, 8x8 digits, as the README's example and the end-to-end tests use it: Conv2D +
    BatchNormalization + ReLU, max pooling, Conv2D (ReLU), average pooling, Flatten, a *linear* Dense in
    the middle, Dropout, and a Dense with a softmax activation."""
    configure_tensorflow()
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1"),
        layers.BatchNormalization(momentum=0.9, name="bn1"),
        layers.ReLU(name="relu1"),
        layers.MaxPooling2D(2, name="maxpool"),
        layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        layers.AveragePooling2D(2, name="avgpool"),
        layers.Flatten(name="flatten"),
        layers.Dense(32, name="embed"),
        layers.Dropout(0.1, name="dropout"),
        layers.Dense(classes, activation="softmax", name="probs"),
    ], name="user_model")


def write_user_files(folder, known_classes: int = 4, epochs: int = 8) -> None:
    """What a user brings, into ``folder``: data.npz (the bundled handwritten digits' four arrays and class
    names, saved with numpy), user.keras (``linear_embed_digits`` trained on the first ``known_classes``
    digits of those arrays) and user_int8.tflite (the same model converted to int8; the float model is not
    kept by the caller)."""
    from pathlib import Path

    configure_tensorflow()
    import keras
    import tensorflow as tf

    folder = Path(folder)
    ds = data("digits")
    np.savez(folder / "data.npz", x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test,
             class_names=np.array([f"digit {k}" for k in range(10)]))
    with np.load(folder / "data.npz") as f:  # the user trains on what they saved
        x, y = f["x_train"], f["y_train"]
    keras.utils.set_random_seed(0)
    model = linear_embed_digits(known_classes)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x[y < known_classes], y[y < known_classes], epochs=epochs, batch_size=32, verbose=0)
    model.save(folder / "user.keras")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i : i + 1]] for i in range(0, 400, 4))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    (folder / "user_int8.tflite").write_bytes(converter.convert())


BUILDERS = {"sequential_digits": (sequential_digits, "digits"), "residual_kws": (residual_kws, "spoken-digits"),
            "conv1d_kws": (conv1d_kws, "spoken-digits")}


@functools.lru_cache(maxsize=None)
def data(dataset: str):
    from zo_edge.data import load_dataset

    return load_dataset(dataset, seed=0)


@functools.lru_cache(maxsize=None)
def trained(name: str, classes: int | None = None, epochs: int = 3):
    """Model ``name`` trained for ``epochs`` on the training samples of its data set's first ``classes``
    classes (all by default); a model with fewer outputs than the data set has classes."""
    import keras

    build, dataset = BUILDERS[name]
    ds = data(dataset)
    classes = ds.num_classes if classes is None else classes
    keep = ds.y_train < classes
    keras.utils.set_random_seed(0)
    model = build(classes)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(ds.x_train[keep], ds.y_train[keep], epochs=epochs, batch_size=32, verbose=0)
    return model


def accuracy(model, x, y) -> float:
    from zo_edge.models import predict_logits

    return float(np.mean(np.argmax(predict_logits(model, x), axis=1) == y))
