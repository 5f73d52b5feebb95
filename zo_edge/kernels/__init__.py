"""The int8 kernels, one op in one place, TFLM's reference arithmetic.

Each op has a ``prepare(op, graph, batched) -> params`` run once per graph (parameters derived from
quantisation, kept in a plain dataclass) and an ``evaluate(params, inputs) -> array`` run per call.
``inputs`` lines up with the op's inputs: batched activations [N, ...], or constant tensors as stored
(which the caller may override, e.g. with perturbed weights). ``batched`` says which inputs carry a
batch axis.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from zo_edge.kernels import add, conv, fully_connected, l2norm, mean, pooling, quantize, shape_ops, softmax


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
    "FULLY_CONNECTED": Kernel(fully_connected.prepare_fully_connected, fully_connected.eval_fully_connected,
                              "FullyConnectedOptions", fully_connected.fully_connected_shared),
    "L2_NORMALIZATION": Kernel(l2norm.prepare_l2norm, l2norm.eval_l2norm, "L2NormOptions"),
    "MAX_POOL_2D": Kernel(pooling.prepare_pool, pooling.eval_max_pool, "Pool2DOptions"),
    "MEAN": Kernel(mean.prepare_mean, mean.eval_mean, "ReducerOptions"),
    "PACK": Kernel(shape_ops.prepare_pack, shape_ops.eval_pack, "PackOptions"),
    "QUANTIZE": Kernel(quantize.prepare_quantize, quantize.eval_quantize, "QuantizeOptions"),
    "RESHAPE": Kernel(shape_ops.prepare_reshape, shape_ops.eval_reshape, "ReshapeOptions"),
    "SHAPE": Kernel(shape_ops.prepare_shape, shape_ops.eval_shape, "ShapeOptions"),
    "SOFTMAX": Kernel(softmax.prepare_softmax, softmax.eval_softmax, "SoftmaxOptions"),
    "STRIDED_SLICE": Kernel(shape_ops.prepare_strided_slice, shape_ops.eval_strided_slice, "StridedSliceOptions"),
}

SUPPORTED_OPS = tuple(sorted(KERNELS))
