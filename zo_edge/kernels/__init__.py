"""The int8 kernels, one op in one place, TFLM's reference arithmetic.

Each op has a ``prepare(op, graph, batched) -> params`` run once per graph (parameters derived from
quantisation, kept in a plain dataclass) and an ``evaluate(params, inputs) -> array`` run per call.
``inputs`` lines up with the op's inputs: batched activations [N, ...], or constant tensors as stored
(which the caller may override, e.g. with perturbed weights). ``batched`` says which inputs carry a
batch axis.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from zo_edge.kernels import add, conv, fully_connected, mean, pooling, quantize, shape_ops, softmax


class Kernel(NamedTuple):
    prepare: Callable
    evaluate: Callable


KERNELS: dict[str, Kernel] = {
    "ADD": Kernel(add.prepare_add, add.eval_add),
    "AVERAGE_POOL_2D": Kernel(pooling.prepare_pool, pooling.eval_average_pool),
    "CONV_2D": Kernel(conv.prepare_conv, conv.eval_conv),
    "DEPTHWISE_CONV_2D": Kernel(conv.prepare_depthwise, conv.eval_depthwise),
    "DEQUANTIZE": Kernel(quantize.prepare_dequantize, quantize.eval_dequantize),
    "FULLY_CONNECTED": Kernel(fully_connected.prepare_fully_connected, fully_connected.eval_fully_connected),
    "MAX_POOL_2D": Kernel(pooling.prepare_pool, pooling.eval_max_pool),
    "MEAN": Kernel(mean.prepare_mean, mean.eval_mean),
    "PACK": Kernel(shape_ops.prepare_pack, shape_ops.eval_pack),
    "QUANTIZE": Kernel(quantize.prepare_quantize, quantize.eval_quantize),
    "RESHAPE": Kernel(shape_ops.prepare_reshape, shape_ops.eval_reshape),
    "SHAPE": Kernel(shape_ops.prepare_shape, shape_ops.eval_shape),
    "SOFTMAX": Kernel(softmax.prepare_softmax, softmax.eval_softmax),
    "STRIDED_SLICE": Kernel(shape_ops.prepare_strided_slice, shape_ops.eval_strided_slice),
}

SUPPORTED_OPS = tuple(sorted(KERNELS))
