"""What a kernel's ``prepare`` checks before it trusts an op: operands, dtypes, quantisation, shapes.

A model can be a well-formed flatbuffer (``zo_edge.tflite_check``) and still describe an op no
kernel can run: a filter without scales, a bias of the wrong length, an output shape that is not the
one the op computes. Each kernel refuses those in its own ``prepare`` with ``InvalidOp``, whose
message the engine prints after the op's name and index. After ``prepare`` succeeds, ``evaluate``
cannot fail on inputs of the declared shapes.
"""

from __future__ import annotations

import math

import numpy as np

from zo_edge.tflite_check import MAX_TENSOR_ELEMENTS

# At most 2^28 multiply-accumulates per sample in one op: ten times the largest layer of MobileNet-v1
# at 224x224 (51 M), hundreds of times any layer of the MLPerf Tiny models. A corrupt stride,
# dilation or pool window beyond it is refused instead of computing for hours.
MAX_MACS_PER_SAMPLE = 1 << 28


class InvalidOp(ValueError):
    """An op its kernel cannot run as the model describes it; the message says why."""


def require(condition, message: str) -> None:
    if not condition:
        raise InvalidOp(message)


def describe(t) -> str:
    return f"tensor {t.index} ({t.name!r}, {np.dtype(t.dtype).name} {list(t.shape)})"


def operands(op, graph, count: int | tuple[int, int], optional: tuple[int, ...] = ()):
    """(input tensors, the one output tensor), ``high`` inputs long: an omitted optional input (index -1,
    or absent from the end of the list) is None."""
    low, high = (count, count) if isinstance(count, int) else count
    require(low <= len(op.inputs) <= high,
            f"has {len(op.inputs)} inputs, expected {low if low == high else f'{low} to {high}'}")
    require(len(op.outputs) == 1, f"has {len(op.outputs)} outputs, expected 1")
    tensors = []
    for position, index in enumerate(op.inputs):
        require(index >= 0 or position in optional, f"input {position} is missing (tensor index {index})")
        tensors.append(graph.tensors[index] if index >= 0 else None)
    return tensors + [None] * (high - len(tensors)), graph.tensors[op.outputs[0]]


def dtype(t, role: str, *allowed) -> None:
    require(t.dtype in allowed, f"its {role} is {describe(t)}; expected {' or '.join(np.dtype(a).name for a in allowed)}")


def rank(t, role: str, *ranks: int) -> None:
    require(len(t.shape) in ranks, f"its {role} is {describe(t)}; expected rank {' or '.join(map(str, ranks))}")


def min_rank(t, role: str, lowest: int) -> None:
    require(len(t.shape) >= lowest, f"its {role} is {describe(t)}; expected rank {lowest} or more")


def per_tensor_quant(t, role: str) -> tuple[float, int]:
    """(scale, zero point) of a tensor that must carry exactly one of each."""
    require(t.is_quantized and len(t.scale) == 1,
            f"its {role} {describe(t)} is not quantised per tensor" if t.is_quantized else
            f"its {role} {describe(t)} has no quantisation parameters")
    return t.scalar_quant()


def channel_scales(t, role: str, channels: int, axis: int) -> None:
    """A weight tensor quantised per tensor, or per channel along ``axis`` with one scale per channel."""
    require(t.is_quantized, f"its {role} {describe(t)} has no quantisation parameters")
    if len(t.scale) > 1:
        require(len(t.scale) == channels and t.quantized_dimension == axis,
                f"its {role} {describe(t)} has {len(t.scale)} scales along dimension {t.quantized_dimension}; "
                f"expected one, or {channels} along dimension {axis}")


def constant_operand(batched: bool, role: str) -> None:
    require(not batched, f"its {role} is computed from the graph input; it must be a constant")


def elements(shape) -> int:
    return math.prod(shape)


def output_shape(out, expected, what: str = "") -> None:
    expected = tuple(int(d) for d in expected)
    require(tuple(out.shape) == expected,
            f"its output {describe(out)} should have shape {list(expected)}{what}")


def bias(t, channels: int) -> None:
    if t is not None:
        dtype(t, "bias", np.int32)
        require(elements(t.shape) == channels, f"its bias {describe(t)} should hold {channels} values, one per channel")


def positive(options: dict, *names: str, default: int = 0) -> list[int]:
    values = [int(options.get(name, default)) for name in names]
    for name, value in zip(names, values):
        require(value >= 1, f"has {name} {value}; it must be at least 1")
    return values


def window(w, in_h: int, in_w: int, channels: int, taps_per_output: int, out) -> None:
    """A sliding window the engine can afford: padded input and work within the limits above."""
    padded_h, padded_w = w.padded_size(in_h, in_w)
    require(padded_h * padded_w * channels <= MAX_TENSOR_ELEMENTS,
            f"pads its input to {padded_h}x{padded_w}x{channels}, more than {MAX_TENSOR_ELEMENTS} elements: "
            "the window, stride or dilation is corrupt")
    macs(elements(out.shape[1:]) * taps_per_output)


def macs(count: int) -> None:
    require(count <= MAX_MACS_PER_SAMPLE,
            f"needs {count} multiply-accumulates per sample, more than {MAX_MACS_PER_SAMPLE}: no microcontroller model "
            "does that in one op, so its shapes or options are corrupt")
