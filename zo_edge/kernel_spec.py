"""The firmware kernels as data: per op, its paths, the C function of each, its parameter struct and its scratch.

One home for what the exported C (``firmware_export/c/zoedge_kernels.h``, the specification) and the
Python that plans for it must agree on: ``firmware_export.model_export`` renders each layer's struct and
its call from here, ``zo_edge.memory`` adds the scratch of the target's instruction set, and the tests run
every path through every instruction set. It lives in ``zo_edge`` so the memory model reads it without
importing ``firmware_export`` (as ``zo_edge.planner``).

A layer's **path** is chosen once, at export, by a predicate on the engine's prepared parameters (the
same parameters the simulator uses), and the export writes that path's function into ``run_op``: no
dispatch at run time, and unused paths are not linked. The **instruction set** is chosen by the
compiler (``__ARM_FEATURE_MVE``, ``__ARM_FEATURE_DSP``; ``ZOEDGE_KERNELS_REFERENCE`` forces the
reference loops), so one exported folder builds for every core; what differs per instruction set is
the scratch, which ``scratch_bytes`` gives for each (CMSIS-NN's ``*_get_buffer_size_dsp/_mve``).

The trainable-weights rule: a path may not prepare anything from a filter at export when that filter
is RAM state (training rewrites it). No path here prepares from weights (``weight_dependent_prepare``
is False for all: the MVE paths sum filter rows inside the kernel), and ``model_export`` refuses one
that would, should it be added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from zo_edge.errors import ZoEdgeError

ISAS = ("ref", "dsp", "mve")  # ZOEDGE_ISA_REF, _DSP, _MVE in zoedge_kernels.h
# The instruction set the kernels compile for on each core (zo_edge.devices.CORES): what the compiler's
# __ARM_FEATURE_DSP / __ARM_FEATURE_MVE select (the M33 and M35P with their DSP extension, as shipped).
CORE_ISA = {"cortex-m0": "ref", "cortex-m0plus": "ref", "cortex-m3": "ref", "cortex-m23": "ref", "cortex-m4": "dsp",
            "cortex-m7": "dsp", "cortex-m33": "dsp", "cortex-m35p": "dsp", "cortex-m55": "mve", "cortex-m85": "mve"}
ADD_LEFT_SHIFT = 20  # int8 ADD (zo_edge.kernels.add.LEFT_SHIFT)

# The library's C, copied verbatim into every export (firmware_export/c/).
LIBRARY_HEADERS = ("zoedge_kernels.h", "zoedge_kernels_internal.h", "zoedge_l2norm.h")
LIBRARY_SOURCES = ("zoedge_kernels_ref.c", "zoedge_conv.c", "zoedge_depthwise_conv.c", "zoedge_fully_connected.c",
                   "zoedge_add.c", "zoedge_mul.c", "zoedge_pool.c", "zoedge_l2norm.c")


def _round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple


# -- parameter structs: the fields of zoedge_<struct>_params, from the engine's prepared parameters ------
def conv_fields(op, graph, p) -> dict:
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    w = p.window
    if (w.out_h, w.out_w) != tuple(out.shape[1:3]):
        raise ZoEdgeError(f"{op.opcode} (op {op.index}): output {out.shape} does not match its window")
    return dict(in_h=x.shape[1], in_w=x.shape[2], in_c=x.shape[3], out_h=out.shape[1], out_w=out.shape[2],
                out_c=out.shape[3], kernel_h=w.kernel_h, kernel_w=w.kernel_w, stride_h=w.stride_h,
                stride_w=w.stride_w, dilation_h=w.dilation_h, dilation_w=w.dilation_w, pad_top=w.pad_top,
                pad_left=w.pad_left, depth_multiplier=p.depth_multiplier, input_offset=-p.input_zero_point,
                output_offset=p.output_zero_point, act_min=p.act_min, act_max=p.act_max)


def fully_connected_fields(op, graph, p) -> dict:
    x, f = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    units, depth = f.shape
    return dict(rows=int(np.prod(x.shape)) // depth, depth=depth, units=units, input_offset=-p.input_zero_point,
                filter_offset=-p.filter_zero_point, output_offset=p.output_zero_point, act_min=p.act_min,
                act_max=p.act_max, per_channel=int(len(p.multiplier) > 1))


def broadcast_fields(op, graph) -> dict:
    """The output shape of a binary elementwise op with broadcast dimensions merged, and each input's
    element strides along it (0 where it broadcasts), right-aligned to four dimensions (TFLM's
    NdArrayDescsForElementwiseBroadcast, 4D as BroadcastAdd4DSlow takes it)."""
    out = [int(d) for d in graph.tensors[op.outputs[0]].shape]
    shapes = []
    for i in op.inputs[:2]:
        shape = [int(d) for d in graph.tensors[i].shape]
        shapes.append([1] * (len(out) - len(shape)) + shape)
    dims = []  # (size, stride of input 1, stride of input 2), innermost last
    strides = [1, 1]
    for axis in reversed(range(len(out))):
        if out[axis] == 1:
            continue
        step = []
        for k, shape in enumerate(shapes):
            step.append(strides[k] if shape[axis] == out[axis] else 0)
            strides[k] *= shape[axis]
        if dims and all((s == 0) == (d == 0) and (s == 0 or s == d * dims[0][0])
                        for s, d in zip(step, dims[0][1:])):
            dims[0] = (dims[0][0] * out[axis], dims[0][1], dims[0][2])  # the same pattern: one dimension
        else:
            dims.insert(0, (out[axis], step[0], step[1]))
    if len(dims) > 4:
        raise ZoEdgeError(f"{op.opcode} (op {op.index}) broadcasts over {len(dims)} dimensions "
                          f"({[graph.tensors[i].shape for i in op.inputs[:2]]}); the firmware takes at most 4")
    dims = [(1, 0, 0)] * (4 - len(dims)) + dims
    return dict(size=int(np.prod(out)), shape=tuple(d[0] for d in dims), input1_strides=tuple(d[1] for d in dims),
                input2_strides=tuple(d[2] for d in dims))


def add_fields(op, graph, p) -> dict:
    return dict(**broadcast_fields(op, graph), input1_offset=-p.input1_zero_point,
                input2_offset=-p.input2_zero_point, output_offset=p.output_zero_point, left_shift=ADD_LEFT_SHIFT,
                input1_multiplier=p.input1_multiplier, input1_shift=p.input1_shift,
                input2_multiplier=p.input2_multiplier, input2_shift=p.input2_shift,
                output_multiplier=p.output_multiplier, output_shift=p.output_shift, act_min=p.act_min,
                act_max=p.act_max)


def mul_fields(op, graph, p) -> dict:
    return dict(**broadcast_fields(op, graph), input1_offset=-p.input1_zero_point,
                input2_offset=-p.input2_zero_point, output_offset=p.output_zero_point,
                output_multiplier=p.output_multiplier, output_shift=p.output_shift, act_min=p.act_min,
                act_max=p.act_max)


def mean_fields(op, graph, p) -> dict:
    shape = graph.tensors[op.inputs[0]].shape
    axes = list(p.axes)
    if axes != list(range(axes[0], axes[-1] + 1)):
        raise ZoEdgeError(f"MEAN (op {op.index}) reduces axes {axes}; the firmware MEAN reduces contiguous axes")
    return dict(outer=int(np.prod(shape[: axes[0]])), count=p.count, inner=int(np.prod(shape[axes[-1] + 1 :])),
                input_zero_point=p.input_zero_point, output_zero_point=p.output_zero_point,
                multiplier=p.multiplier, shift=p.shift)


def pool_fields(op, graph, p) -> dict:
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    w = p.window
    if (w.out_h, w.out_w) != tuple(out.shape[1:3]):
        raise ZoEdgeError(f"{op.opcode} (op {op.index}): output {out.shape} does not match its window")
    if int(np.min(p.counts, initial=1)) < 1:
        raise ZoEdgeError(f"{op.opcode} (op {op.index}) has a window with no input position in it")
    return dict(in_h=x.shape[1], in_w=x.shape[2], channels=x.shape[3], out_h=w.out_h, out_w=w.out_w,
                filter_h=w.kernel_h, filter_w=w.kernel_w, stride_h=w.stride_h, stride_w=w.stride_w,
                pad_top=w.pad_top, pad_left=w.pad_left, act_min=p.act_min, act_max=p.act_max)


def softmax_fields(op, graph, p) -> dict:
    x = graph.tensors[op.inputs[0]]
    depth = int(x.shape[-1])
    return dict(rows=int(np.prod(x.shape)) // depth, depth=depth, input_multiplier=p.input_multiplier,
                input_left_shift=p.input_left_shift, diff_min=p.diff_min)


def l2norm_fields(op, graph, p) -> dict:
    x = graph.tensors[op.inputs[0]]
    depth = int(x.shape[-1])
    return dict(rows=int(np.prod(x.shape)) // depth, depth=depth, input_zero_point=p.input_zero_point)


# -- paths --------------------------------------------------------------------------------------------
def conv_path(f: dict) -> str:
    """CONV_2D: "1x1" for a 1x1 kernel with stride 1 (no padding, every input pixel one output), else general."""
    return "1x1" if (f["kernel_h"], f["kernel_w"], f["stride_h"], f["stride_w"]) == (1, 1, 1, 1) else "general"


def depthwise_path(f: dict) -> str:
    """DEPTHWISE_CONV_2D: "3x3" for a 3x3 kernel, depth multiplier 1 and no dilation, else general."""
    shape = (f["kernel_h"], f["kernel_w"], f["depth_multiplier"], f["dilation_h"], f["dilation_w"])
    return "3x3" if shape == (3, 3, 1, 1, 1) else "general"


def _conv_scratch(f: dict, path: str, isa: str) -> int:
    size = f["kernel_h"] * f["kernel_w"] * f["in_c"]
    if isa == "dsp":  # four int16 im2col columns of `size`, each rounded up to 4 elements
        return 8 * _round_up(size, 4)
    if isa == "mve":  # per output channel 3 int32 (bias, multiplier, shift), four int8 columns rounded up to 16
        band = 0  # general: the output row's padded input rows, and the window's copies (3 int32 each)
        if path != "1x1":
            width = (f["out_w"] - 1) * f["stride_w"] + (f["kernel_w"] - 1) * f["dilation_w"] + 1
            band = _round_up(((f["kernel_h"] - 1) * f["dilation_h"] + 1) * width * f["in_c"], 4)
            contiguous = f["dilation_w"] == 1 or f["kernel_w"] == 1
            run, runs = (f["kernel_w"] * f["in_c"], 1) if contiguous else (f["in_c"], f["kernel_w"])
            band += 12 * f["kernel_h"] * runs * (run // 16 + 2)
        return _round_up(12 * f["out_c"], 16) + 4 * _round_up(size, 16) + band
    return 0


def _depthwise_scratch(f: dict, path: str, isa: str) -> int:
    if isa == "dsp":  # one channel plane of int16 (width even, two spare elements), the filter's tap pairs
        plane_h = (f["out_h"] - 1) * f["stride_h"] + (f["kernel_h"] - 1) * f["dilation_h"] + 1
        plane_w = _round_up((f["out_w"] - 1) * f["stride_w"] + (f["kernel_w"] - 1) * f["dilation_w"] + 1, 2)
        return 2 * _round_up(plane_h * plane_w + 2, 2) + 4 * f["kernel_h"] * ((f["kernel_w"] + 1) // 2)
    if isa == "mve" and f["depth_multiplier"] == 1:
        # any geometry: one channel's phase planes (int8), four-position blocks, 8 spare bytes
        plane_h = (f["out_h"] - 1) * f["stride_h"] + (f["kernel_h"] - 1) * f["dilation_h"] + 1
        width = _round_up(f["out_w"], 4) + (f["kernel_w"] - 1) * f["dilation_w"] // f["stride_w"]
        general = f["stride_w"] * plane_h * width + 8
        # 3x3, stride 1, no dilation: the padded plane (out_w + 2 columns, out_h + 2 rows, 8 spare bytes)
        # and the outputs in plane order (out_h rows of out_w + 2, 4 spare)
        linear = (f["out_h"] + 2) * (f["out_w"] + 2) + 8 + f["out_h"] * (f["out_w"] + 2) + 4
        return max(general, linear)
    return 0


ADD_TABLES_FROM = 512  # ZOEDGE_ADD_TABLES_FROM in zoedge_kernels.h


def _add_scratch(f: dict, path: str, isa: str) -> int:
    """DSP: both inputs' rescaled values for the 256 int8 values (int32), for outputs enough to pay for them."""
    return 2 * 256 * 4 if isa == "dsp" and f["size"] >= ADD_TABLES_FROM else 0


def _no_scratch(f: dict, path: str, isa: str) -> int:
    return 0


@dataclass(frozen=True)
class OpKernel:
    """One op of the firmware: its parameter struct, the C function per path and what each needs."""

    opcode: str
    struct: str  # zoedge_<struct>_params
    fields: Callable  # (op, graph, prepared params) -> {field: int}
    functions: dict  # path -> C function
    path: Callable = lambda fields: "general"
    scratch: Callable = _no_scratch  # (fields, path, isa) -> bytes
    weighted: bool = False  # takes filter and bias (and per-channel multiplier/shift arrays)
    takes_scratch: bool = False  # its C function takes the scratch pointer (for some instruction set)
    inputs: int = 1  # activation (or constant) operands before the output: 2 for ADD and MUL
    weight_dependent_prepare: bool = False  # would prepare from the filter at export (trainable-weights rule)


KERNELS = {
    "CONV_2D": OpKernel("CONV_2D", "conv", conv_fields, {"general": "zoedge_conv_2d", "1x1": "zoedge_conv_2d_1x1"},
                        path=conv_path, scratch=_conv_scratch, weighted=True, takes_scratch=True),
    "DEPTHWISE_CONV_2D": OpKernel("DEPTHWISE_CONV_2D", "conv", conv_fields,
                                  {"general": "zoedge_depthwise_conv_2d", "3x3": "zoedge_depthwise_conv_2d_3x3"},
                                  path=depthwise_path, scratch=_depthwise_scratch, weighted=True, takes_scratch=True),
    "FULLY_CONNECTED": OpKernel("FULLY_CONNECTED", "fully_connected", fully_connected_fields,
                                {"general": "zoedge_fully_connected"}, weighted=True, takes_scratch=True),
    "ADD": OpKernel("ADD", "add", add_fields, {"general": "zoedge_add"}, scratch=_add_scratch, takes_scratch=True,
                    inputs=2),
    "MUL": OpKernel("MUL", "mul", mul_fields, {"general": "zoedge_mul"}, takes_scratch=True, inputs=2),
    "MEAN": OpKernel("MEAN", "mean", mean_fields, {"general": "zoedge_mean"}),
    "AVERAGE_POOL_2D": OpKernel("AVERAGE_POOL_2D", "pool", pool_fields, {"general": "zoedge_average_pool_2d"}),
    "MAX_POOL_2D": OpKernel("MAX_POOL_2D", "pool", pool_fields, {"general": "zoedge_max_pool_2d"}),
    "SOFTMAX": OpKernel("SOFTMAX", "softmax", softmax_fields, {"general": "zoedge_softmax"}),
    "L2_NORMALIZATION": OpKernel("L2_NORMALIZATION", "l2norm", l2norm_fields, {"general": "zoedge_l2_normalization"}),
}


@dataclass(frozen=True)
class Layer:
    """One layer as the firmware runs it."""

    kernel: OpKernel
    fields: dict
    path: str

    @property
    def function(self) -> str:
        return self.kernel.functions[self.path]

    @property
    def struct_bytes(self) -> int:
        """Bytes of the int32 fields of its zoedge_<struct>_params (an array field counts each element),
        without the weighted kernels' two pointers."""
        return 4 * sum(len(v) if isinstance(v, tuple) else 1 for v in self.fields.values())

    def scratch_bytes(self, isa: str) -> int:
        if isa not in ISAS:
            raise ValueError(f"unknown instruction set {isa!r}; known: {', '.join(ISAS)}")
        return int(self.kernel.scratch(self.fields, self.path, isa))


def layer(op, graph, params) -> Layer:
    """The kernel, struct fields and path of one op (``params``: the engine's prepared parameters)."""
    kernel = KERNELS.get(op.opcode)
    if kernel is None:
        raise ZoEdgeError(f"{op.opcode} (op {op.index}) has no firmware kernel; supported: {', '.join(sorted(KERNELS))}")
    fields = {k: tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else int(v)
              for k, v in kernel.fields(op, graph, params).items()}
    return Layer(kernel, fields, kernel.path(fields))


def c_initializer(value) -> str:
    """A field value as C: an int, or a brace list for an array field."""
    if isinstance(value, tuple):
        return "{" + ", ".join(str(v) for v in value) + "}"
    return str(value)


def model_layers(graph, engine=None) -> list:
    """(op index, Layer) of every op of the graph with a kernel, from the engine's prepared parameters."""
    from zo_edge.engine import Engine

    engine = engine or Engine(graph)
    return [(step.op.index, layer(step.op, graph, step.params)) for step in engine.steps
            if step.op.opcode in KERNELS]


def scratch_bytes(layers, isa: str) -> int:
    """The scratch region of a model on an instruction set: the largest any one layer needs (one op runs at
    a time), rounded up to 8 bytes."""
    return _round_up(max((lay.scratch_bytes(isa) for lay in layers), default=0), 8)


# -- instructions: the estimate when no firmware is measured -------------------------------------------
# A path's instructions on an instruction set are a sum of per-unit costs over the layer's work terms
# (``layer_terms``): per multiply-accumulate (per element read, for ops without MACs), per output element, per
# im2col entry (a conv's input-window elements: MACs / out_c, what the SIMD paths copy), per kernel tap of an
# output (MACs / in_c: the reference loops' per-tap overhead), per input element of a conv-like layer (the
# bands and channel planes the SIMD paths fill) and per call. Fitted (non-negative least squares)
# by ``python benchmarks/firmware.py --fit docs/firmware_benchmark.json`` to the per-op counts measured in QEMU
# (-icount: exact) on the default DS-CNN and five MLPerf Tiny models: Cortex-M3 for "ref", M4F for "dsp", M55
# for "mve". MUL and MAX_POOL_2D are in none of those models: rough per-element figures, not measured.
# L2_NORMALIZATION is one measurement (the digits model's cosine head: one row of 512 features; 24,074 /
# 24,079 / 25,164 instructions on M3 / M4F / M55), per element with the call's inverse square root folded in.
TERMS = ("macs", "outputs", "columns", "taps", "inputs", "calls")
CONV_TERMS = ("macs", "outputs", "columns", "taps", "inputs")  # what the fit uses for the conv-like paths
OTHER_TERMS = ("macs", "calls")  # and for the others
INSTRUCTIONS = {('CONV_2D', '1x1'): {'ref': {'macs': 5.978, 'outputs': 71.11},
                      'dsp': {'macs': 0.4226, 'outputs': 58.78},
                      'mve': {'macs': 0.07378, 'outputs': 13.68}},
 ('CONV_2D', 'general'): {'ref': {'macs': 5.636, 'taps': 26.63, 'inputs': 79.2},
                          'dsp': {'macs': 0.7312, 'taps': 1.152, 'inputs': 66.49},
                          'mve': {'macs': 0.1526, 'taps': 0.2974, 'inputs': 12.59}},
 ('DEPTHWISE_CONV_2D', '3x3'): {'ref': {'macs': 34.83, 'inputs': 2.604},
                                'dsp': {'macs': 4.375},
                                'mve': {'inputs': 17.61}},
 ('DEPTHWISE_CONV_2D', 'general'): {'ref': {'macs': 58.86}, 'dsp': {'macs': 45.81}, 'mve': {'macs': 49.59}},
 ('FULLY_CONNECTED', 'general'): {'ref': {'macs': 7.443, 'calls': 366.7},
                                  'dsp': {'macs': 7.447, 'calls': 371.5},
                                  'mve': {'macs': 6.462, 'calls': 380.0}},
 ('ADD', 'general'): {'ref': {'macs': 128.7},
                      'dsp': {'macs': 13.0, 'calls': 6329.0},
                      'mve': {'macs': 6.75, 'calls': 196.0}},
 ('MUL', 'general'): {'ref': {'macs': 20.0}, 'dsp': {'macs': 10.0}, 'mve': {'macs': 4.0}},
 ('MEAN', 'general'): {'ref': {'macs': 6.525}, 'dsp': {'macs': 2.237}, 'mve': {'macs': 1.067}},
 ('AVERAGE_POOL_2D', 'general'): {'ref': {'macs': 6.772, 'calls': 10100.0},
                                  'dsp': {'macs': 0.8108, 'calls': 8887.0},
                                  'mve': {'calls': 6877.0}},
 ('MAX_POOL_2D', 'general'): {'ref': {'macs': 8.0}, 'dsp': {'macs': 8.0}, 'mve': {'macs': 8.0}},
 ('L2_NORMALIZATION', 'general'): {'ref': {'macs': 47.02}, 'dsp': {'macs': 47.03}, 'mve': {'macs': 49.15}},
 ('SOFTMAX', 'general'): {'ref': {'macs': 109.7, 'calls': 1288.0},
                          'dsp': {'macs': 109.0, 'calls': 1281.0},
                          'mve': {'macs': 111.3, 'calls': 1353.0}}}


def layer_terms(lay: Layer) -> dict[str, int]:
    """The work terms INSTRUCTIONS' costs multiply, per sample (the comment above INSTRUCTIONS)."""
    f = lay.fields
    op = lay.kernel.opcode
    terms = dict.fromkeys(TERMS, 0)
    terms["calls"] = 1
    if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        outputs = f["out_h"] * f["out_w"] * f["out_c"]
        taps = outputs * f["kernel_h"] * f["kernel_w"]
        macs = taps * (f["in_c"] if op == "CONV_2D" else 1)
        columns = macs // f["out_c"] if op == "CONV_2D" else 0
        terms.update(macs=macs, outputs=outputs, columns=columns, taps=taps, inputs=f["in_h"] * f["in_w"] * f["in_c"])
    elif op == "FULLY_CONNECTED":
        terms.update(macs=f["rows"] * f["units"] * f["depth"], outputs=f["rows"] * f["units"])
    elif op in ("ADD", "MUL"):
        terms.update(macs=f["size"], outputs=f["size"])
    elif op == "MEAN":
        terms.update(macs=f["outer"] * f["count"] * f["inner"], outputs=f["outer"] * f["inner"])
    elif op in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        outputs = f["out_h"] * f["out_w"] * f["channels"]
        terms.update(macs=outputs * f["filter_h"] * f["filter_w"], outputs=outputs)
    else:  # SOFTMAX, L2_NORMALIZATION
        terms.update(macs=f["rows"] * f["depth"], outputs=f["rows"] * f["depth"])
    return terms


def path_instructions(opcode: str, path: str, terms: dict, isa: str, table: dict | None = None) -> float:
    """Instructions of one path for the given work terms (of one layer, or summed over several: the costs
    are linear) by ``table`` (default INSTRUCTIONS)."""
    costs = (table or INSTRUCTIONS)[(opcode, path)][isa]
    return sum(cost * terms.get(term, 0) for term, cost in costs.items())


def estimated_instructions(layers, isa: str) -> int:
    """Instructions the layers ((op index, Layer) pairs) take on an instruction set, by INSTRUCTIONS."""
    if isa not in ISAS:
        raise ValueError(f"unknown instruction set {isa!r}; known: {', '.join(ISAS)}")
    return int(round(sum(path_instructions(lay.kernel.opcode, lay.path, layer_terms(lay), isa) for _, lay in layers)))
