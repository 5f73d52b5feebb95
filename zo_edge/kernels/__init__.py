"""The int8 kernels, one op in one place, TFLM's reference arithmetic.

Each op has a ``prepare(op, graph, batched) -> params`` run once per graph (parameters derived from
quantisation, kept in a plain dataclass) and an ``evaluate(params, inputs) -> array`` run per call.
``inputs`` lines up with the op's inputs: batched activations [N, ...], or constant tensors as stored
(which the caller may override, e.g. with perturbed weights). ``batched`` says which inputs carry a
batch axis.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from zo_edge.kernels import add, conv, fully_connected, l2norm, mean, mul, pooling, quantize, shape_ops, softmax


class Kernel(NamedTuple):
    prepare: Callable
    evaluate: Callable
    options: str  # the schema table of the op's options (the engine refuses an op that carries another)
    # shared(params, inputs, shared, stack): the op on V stacked variants when the inputs flagged in
    # ``shared`` are one N-row batch for all of them (``SplitEngine.run_suffix(stack=V)``); None: tiled
    shared: Callable | None = None


KERNELS: dict[str, Kernel] = {
    "ADD": Kernel(add.prepare_add, add.eval_add, "AddOptions", add.add_shared),
    "AVERAGE_POOL_2D": Kernel(pooling.prepare_pool, pooling.eval_average_pool, "Pool2DOptions"),
    "CONV_2D": Kernel(conv.prepare_conv, conv.eval_conv, "Conv2DOptions", conv.conv_shared),
    "DEPTHWISE_CONV_2D": Kernel(conv.prepare_depthwise, conv.eval_depthwise, "DepthwiseConv2DOptions"),
    "DEQUANTIZE": Kernel(quantize.prepare_dequantize, quantize.eval_dequantize, "DequantizeOptions"),
    "EXPAND_DIMS": Kernel(shape_ops.prepare_expand_dims, shape_ops.eval_reshape, "ExpandDimsOptions"),
    "FULLY_CONNECTED": Kernel(fully_connected.prepare_fully_connected, fully_connected.eval_fully_connected,
                              "FullyConnectedOptions", fully_connected.fully_connected_shared),
    "L2_NORMALIZATION": Kernel(l2norm.prepare_l2norm, l2norm.eval_l2norm, "L2NormOptions"),
    "MAX_POOL_2D": Kernel(pooling.prepare_pool, pooling.eval_max_pool, "Pool2DOptions"),
    "MEAN": Kernel(mean.prepare_mean, mean.eval_mean, "ReducerOptions"),
    "MUL": Kernel(mul.prepare_mul, mul.eval_mul, "MulOptions"),
    "PACK": Kernel(shape_ops.prepare_pack, shape_ops.eval_pack, "PackOptions"),
    "QUANTIZE": Kernel(quantize.prepare_quantize, quantize.eval_quantize, "QuantizeOptions"),
    "RESHAPE": Kernel(shape_ops.prepare_reshape, shape_ops.eval_reshape, "ReshapeOptions"),
    "SHAPE": Kernel(shape_ops.prepare_shape, shape_ops.eval_shape, "ShapeOptions"),
    "SOFTMAX": Kernel(softmax.prepare_softmax, softmax.eval_softmax, "SoftmaxOptions"),
    "STRIDED_SLICE": Kernel(shape_ops.prepare_strided_slice, shape_ops.eval_strided_slice, "StridedSliceOptions"),
}

SUPPORTED_OPS = tuple(sorted(KERNELS))

# What common Keras layers convert to that the engine (and TFLM's int8 kernels, or the firmware) does not
# run, and the way out; a model that uses one is refused with this line.
KERAS_ORIGINS = {
    "GATHER": "a Dense on a 3-D input with an unknown batch size computes its shape at run time (GATHER, "
              "REDUCE_PROD, CONCATENATION; TFLM cannot run it): use Conv1D(units, 1), the same layer",
    "REDUCE_PROD": "a Dense on a 3-D input with an unknown batch size computes its shape at run time (TFLM cannot "
                   "run it): use Conv1D(units, 1), the same layer",
    "CONCATENATION": "Concatenate (or a Dense on a 3-D input, whose shape is computed at run time: use Conv1D(units, "
                     "1) for that)",
    "LOGISTIC": "a sigmoid activation: use relu, or a softmax on the output",
    "TANH": "a tanh activation: use relu",
    "LEAKY_RELU": "LeakyReLU: use ReLU",
    "REDUCE_MAX": "GlobalMaxPooling: use GlobalAveragePooling, or MaxPooling with the whole map as its window",
    "TRANSPOSE": "Permute: reorder the data before the model",
    "TRANSPOSE_CONV": "Conv2DTranspose",
    "TILE": "UpSampling",
    "RESIZE_NEAREST_NEIGHBOR": "UpSampling",
    "RSQRT": "LayerNormalization: use BatchNormalization",
    "SQUARED_DIFFERENCE": "LayerNormalization: use BatchNormalization",
    "PAD": "ZeroPadding that cannot fold into the next convolution: use padding='same' on it",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "an LSTM: use Conv1D",
    "WHILE": "a recurrent layer: use Conv1D",
}


def unsupported_note(opcodes) -> str:
    """The Keras layers behind unsupported ops, for the one-line refusal ("" when none is known)."""
    notes = [f"{op} comes from {KERAS_ORIGINS[op]}" for op in sorted(opcodes) if op in KERAS_ORIGINS]
    return "; ".join(notes)
