"""ADD for int8: TFLM's ``AddElementwise`` / ``BroadcastAdd4DSlow`` with ``PrepareGeneralSubOp``-style parameters.

Both inputs are shifted left by 20 bits, each scaled down to the common scale 2·max(s1, s2), summed,
and the sum rescaled to the output: three MultiplyByQuantizedMultiplierSmallerThanOneExp calls.
Broadcasting follows numpy's rules, which for ADD's shapes are TFLM's.

The output is a pure function of the two int8 inputs, so ``prepare`` evaluates that arithmetic once
for all 256 × 256 input pairs and ``eval_add`` is a table look-up: bit-identical by construction
(the table *is* the arithmetic) and an order of magnitude faster on the 2q-probe batches the
zeroth-order learners run through an adapter's ADD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zo_edge.kernels import checks, fused
from zo_edge.kernels import fixedpoint as fp

LEFT_SHIFT = 20  # int8 ADD; int16 would use 15


@dataclass
class AddParams:
    input1_zero_point: int
    input2_zero_point: int
    output_zero_point: int
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int
    act_min: int
    act_max: int
    table: np.ndarray | None = None  # int8 [65536]: output for (uint8(a) << 8) | uint8(b)


def prepare_add(op, graph, batched) -> AddParams:
    a, b, out = check_broadcast(op, graph, batched)
    s1, z1 = checks.per_tensor_quant(a, "first input")
    s2, z2 = checks.per_tensor_quant(b, "second input")
    so, zo = checks.per_tensor_quant(out, "output")
    twice_max_input_scale = 2.0 * float(max(np.float32(s1), np.float32(s2)))
    m1 = fp.quantize_multiplier(float(s1) / twice_max_input_scale)
    m2 = fp.quantize_multiplier(float(s2) / twice_max_input_scale)
    mo = fp.quantize_multiplier(twice_max_input_scale / ((1 << LEFT_SHIFT) * float(so)))
    # TFLM's QuantizeMultiplierSmallerThanOneExp refuses multipliers of 1 and more (it aborts)
    checks.require(mo[1] <= 0, f"its output scale {so:g} is too small for input scales {s1:g} and {s2:g}")
    act_min, act_max = fp.fused_activation_range(op.options, so, zo)
    p = AddParams(z1, z2, zo, m1[0], m1[1], m2[0], m2[1], mo[0], mo[1], act_min, act_max)
    p.table = add_arithmetic(p, all_pairs())
    return p


def pair_table_lookup(table: np.ndarray, inputs) -> np.ndarray:
    """table[(uint8(a) << 8) | uint8(b)] for int8 a and b, broadcasting (ADD's and MUL's evaluation)."""
    if inputs[0].shape == inputs[1].shape:  # no broadcasting: one fused pass
        return fused.table_lookup_pairs(np.ascontiguousarray(inputs[0]), np.ascontiguousarray(inputs[1]), table)
    index = (inputs[0].view(np.uint8).astype(np.uint16) << 8) | inputs[1].view(np.uint8)  # broadcasts
    return table[index]


def all_pairs() -> list[np.ndarray]:
    """Every (a, b) of int8 values, in the order pair_table_lookup indexes them."""
    pairs = np.arange(1 << 16, dtype=np.uint16)
    return [(pairs >> 8).astype(np.uint8).view(np.int8), (pairs & 0xFF).astype(np.uint8).view(np.int8)]


def check_broadcast(op, graph, batched) -> tuple:
    """The two int8 inputs and the output of a binary elementwise op whose inputs broadcast (numpy's
    rules, which for these ops are TFLM's) to the output's shape, the engine's batch axis only against a 1."""
    (a, b), out = checks.operands(op, graph, 2)
    for t, role in ((a, "first input"), (b, "second input"), (out, "output")):
        checks.dtype(t, role, np.int8)
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise checks.InvalidOp(f"its inputs {checks.describe(a)} and {checks.describe(b)} do not broadcast") from None
    checks.output_shape(out, shape, " (its inputs broadcast)")
    for t, is_batched in zip((a, b), batched):  # the engine's batch axis N broadcasts only against a 1
        checks.require(not is_batched or (len(t.shape) == len(shape) and shape[0] == 1),
                       f"its input {checks.describe(t)} cannot carry the batch on axis 0 of {list(shape)}")
    return a, b, out


def eval_add(p: AddParams, inputs) -> np.ndarray:
    return pair_table_lookup(p.table, inputs)


def add_shared(p: AddParams, inputs, shared, stack: int) -> np.ndarray:
    """ADD of a stacked input (V·N rows, variant-major) and one shared by the variants (N rows):
    the shared one is read V times in place, never tiled."""
    a, b = inputs
    if a.shape[1:] != b.shape[1:] or shared[0] == shared[1]:  # broadcasting ADDs tile their shared input
        return eval_add(p, [np.concatenate([x] * stack) if s else x for x, s in zip(inputs, shared)])
    per_variant = b.size if shared[1] else a.size
    stacked, single = (a, b) if shared[1] else (b, a)
    out = fused.table_lookup_shared(np.ascontiguousarray(stacked).reshape(stack, per_variant),
                                    np.ascontiguousarray(single).reshape(per_variant), p.table, bool(shared[1]))
    return out.reshape(stacked.shape)


def add_arithmetic(p: AddParams, inputs) -> np.ndarray:
    """TFLM's arithmetic, element by element (what the table holds)."""
    a = (inputs[0].astype(np.int64) - p.input1_zero_point) << LEFT_SHIFT
    b = (inputs[1].astype(np.int64) - p.input2_zero_point) << LEFT_SHIFT
    scaled_a = fp.multiply_by_quantized_multiplier_smaller_than_one_exp(a, p.input1_multiplier, p.input1_shift)
    scaled_b = fp.multiply_by_quantized_multiplier_smaller_than_one_exp(b, p.input2_multiplier, p.input2_shift)
    raw_sum = fp.wrap_int32(scaled_a + scaled_b)
    out = fp.multiply_by_quantized_multiplier_smaller_than_one_exp(raw_sum, p.output_multiplier, p.output_shift)
    return np.clip(out + p.output_zero_point, p.act_min, p.act_max).astype(np.int8)
