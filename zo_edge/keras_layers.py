"""The zoo's own Keras layers: the L2 normalisation before a cosine classifier, and the cosine head used
while pretraining one.

A cosine classifier (the public ZO-FC reference's ``CosineLinear``) computes ``sigma * cos(h, w_c)``. In a
zoo model it is two layers the int8 converter understands: ``L2Normalize`` (``tf.math.l2_normalize``,
which the converter turns into one L2_NORMALIZATION op, int8 output at scale 1/128) and a Dense
``classifier`` whose kernel columns all have the norm sigma and whose bias is zero. The learners keep
sigma and the unit columns apart (``zo_edge.learners.cosine``); the graph holds their product.

``CosineHead`` is the trainable form with sigma as a weight, used only by ``models.fit_base_rows`` to
pretrain the base classes' rows; its result is written into the Dense classifier. Importing this module
registers both layers with Keras, so a saved zoo model loads with them.
"""

from __future__ import annotations

from zo_edge.models import configure_tensorflow

configure_tensorflow()  # TensorFlow first, quietly

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

SIGMA_INIT = 10.0  # the pretraining head's starting scale: softmax over cosines in [-1, 1] needs a larger one


@keras.saving.register_keras_serializable(package="zo_edge")
class L2Normalize(keras.layers.Layer):
    """x / max(||x||, 1e-6) over the last axis; one L2_NORMALIZATION op in TFLite."""

    def call(self, x):
        return tf.math.l2_normalize(x, axis=-1, epsilon=1e-12)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="zo_edge")
class CosineHead(keras.layers.Layer):
    """sigma * (x / ||x||) . (v_c / ||v_c||) for ``units`` classes, sigma a trained scalar (PILOT's CosineLinear)."""

    def __init__(self, units: int, sigma: float = SIGMA_INIT, **kwargs):
        super().__init__(**kwargs)
        self.units, self.sigma_init = int(units), float(sigma)

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(int(input_shape[-1]), self.units), initializer="glorot_uniform",
                                      name="kernel")
        self.sigma = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.sigma_init), name="sigma")

    def call(self, x):
        return self.sigma * tf.matmul(tf.math.l2_normalize(x, axis=-1, epsilon=1e-12),
                                      tf.math.l2_normalize(self.kernel, axis=0, epsilon=1e-12))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "sigma": self.sigma_init}
