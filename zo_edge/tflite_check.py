"""Is a .tflite file sound? Checked before any reader trusts a byte of it.

Two passes, both ending in a one-line ZoEdgeError that names the file, the place and the problem:

``check_structure(buf, source)``: the flatbuffer itself, as the C++ flatbuffers ``Verifier`` checks it
(the Python flatbuffers package has none). From the root offset it walks every table the readers
reach (zo-edge's ``QGraph`` and the object API's ``ModelT`` behind ``zo-edge build``): each table's
vtable, each field inside its table, each offset, vector and string inside the file and aligned.

``check_model(model, buf, source)``: what the verified tables say. Every opcode, tensor and buffer
index in range; every shape made of dimensions >= 1 with at most ``MAX_TENSOR_ELEMENTS`` elements;
constant data exactly shape × dtype bytes; quantisation with as many zero points as scales, one
scale or one per channel of ``quantized_dimension``, every scale finite and positive.

What an op needs of its operands (counts, dtypes, shapes, options) is checked by that op's kernel
(``zo_edge.kernels``) when the engine prepares it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from zo_edge.errors import ZoEdgeError

TFLITE_DTYPES = {
    0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64,
    6: np.bool_, 7: np.int16, 9: np.int8, 10: np.float64,
}  # schema TensorType values zo-edge reads

# A tensor of more than 2^24 elements (16 MiB as int8) is refused. The largest part in devices.toml
# has 992 KiB of RAM, so no model that fits a microcontroller comes near it, while a corrupt
# dimension (2^31 - 1, say) is refused instead of asking numpy for terabytes.
MAX_TENSOR_ELEMENTS = 1 << 24

_MAX_TABLES = 1 << 20  # the C++ Verifier's default bound on the tables one buffer may hold


# ----------------------------------------------------------------------------------------------------
# The layout of every table the readers reach, as schema.fbs declares it: field slot -> (name, what
# the field holds). Slot k is the table's k-th field (vtable entry 4 + 2k). Fields of a newer schema
# that are not listed are checked to lie inside their table, as the C++ Verifier does for unknown
# fields, and nobody reads them. (tests/test_tflite_fuzz.py checks these against the generated schema.)


@dataclass(frozen=True)
class Scalar:
    size: int


@dataclass(frozen=True)
class Vector:  # of scalars
    elem_size: int


@dataclass(frozen=True)
class String:
    pass


@dataclass(frozen=True)
class Table:
    layout: str


@dataclass(frozen=True)
class Tables:  # a vector of tables
    layout: str


@dataclass(frozen=True)
class Union:
    type_slot: int  # the slot of the uint8 that says which table this is
    members: str  # the union's name in the schema


U8 = I8 = BOOL = Scalar(1)
I32 = U32 = F32 = Scalar(4)
U64 = Scalar(8)
STRING = String()


def _fields(*fields) -> dict[int, tuple[str, object]]:
    """Fields in slot order; a None stands for a deprecated slot."""
    return {slot: field for slot, field in enumerate(fields) if field is not None}


LAYOUTS: dict[str, dict[int, tuple[str, object]]] = {
    "Model": _fields(("version", U32), ("operator_codes", Tables("OperatorCode")), ("subgraphs", Tables("SubGraph")),
                     ("description", STRING), ("buffers", Tables("Buffer")), ("metadata_buffer", Vector(4)),
                     ("metadata", Tables("Metadata")), ("signature_defs", Tables("SignatureDef")),
                     ("external_buffer_groups", Tables("ExternalBufferGroup")),
                     ("external_buffers", Tables("ExternalBuffer"))),
    "OperatorCode": _fields(("deprecated_builtin_code", I8), ("custom_code", STRING), ("version", I32),
                            ("builtin_code", I32)),
    "SubGraph": _fields(("tensors", Tables("Tensor")), ("inputs", Vector(4)), ("outputs", Vector(4)),
                        ("operators", Tables("Operator")), ("name", STRING), ("debug_metadata_index", I32)),
    "Tensor": _fields(("shape", Vector(4)), ("type", I8), ("buffer", U32), ("name", STRING),
                      ("quantization", Table("QuantizationParameters")), ("is_variable", BOOL),
                      ("sparsity", Table("SparsityParameters")), ("shape_signature", Vector(4)), ("has_rank", BOOL),
                      ("variant_tensors", Tables("VariantSubType")), ("external_buffer", U32)),
    "QuantizationParameters": _fields(("min", Vector(4)), ("max", Vector(4)), ("scale", Vector(4)),
                                      ("zero_point", Vector(8)), ("details_type", U8),
                                      ("details", Union(4, "QuantizationDetails")), ("quantized_dimension", I32)),
    "CustomQuantization": _fields(("custom", Vector(1))),
    "BlockwiseQuantization": _fields(("scales", I32), ("zero_points", I32), ("block_size", I32),
                                     ("block_shape", Vector(4))),
    "MultiAxisQuantization": _fields(("scales", I32), ("zero_points", I32), ("block_size", I32),
                                     ("quantized_dimensions", Vector(4))),
    "SparsityParameters": _fields(("traversal_order", Vector(4)), ("block_map", Vector(4)),
                                  ("dim_metadata", Tables("DimensionMetadata"))),
    "DimensionMetadata": _fields(("format", I8), ("dense_size", I32), ("array_segments_type", U8),
                                 ("array_segments", Union(2, "SparseIndexVector")), ("array_indices_type", U8),
                                 ("array_indices", Union(4, "SparseIndexVector"))),
    "Int32Vector": _fields(("values", Vector(4))),
    "Uint16Vector": _fields(("values", Vector(2))),
    "Uint8Vector": _fields(("values", Vector(1))),
    "VariantSubType": _fields(("shape", Vector(4)), ("type", I8), ("has_rank", BOOL)),
    "Buffer": _fields(("data", Vector(1)), ("offset", U64), ("size", U64)),
    "Operator": _fields(("opcode_index", U32), ("inputs", Vector(4)), ("outputs", Vector(4)),
                        ("builtin_options_type", U8), ("builtin_options", Union(3, "BuiltinOptions")),
                        ("custom_options", Vector(1)), ("custom_options_format", I8),
                        ("mutating_variable_inputs", Vector(1)), ("intermediates", Vector(4)),
                        ("large_custom_options_offset", U64), ("large_custom_options_size", U64),
                        ("builtin_options_2_type", U8), ("builtin_options_2", Union(11, "BuiltinOptions2")),
                        ("debug_metadata_index", I32)),
    "Metadata": _fields(("name", STRING), ("buffer", U32)),
    "SignatureDef": _fields(("inputs", Tables("TensorMap")), ("outputs", Tables("TensorMap")),
                            ("signature_key", STRING), None, ("subgraph_index", U32)),
    "TensorMap": _fields(("name", STRING), ("tensor_index", U32)),
    "ExternalBufferGroup": _fields(("name", STRING)),
    "ExternalBuffer": _fields(("id", U32), ("group", U32), ("offset", U64), ("length", U64), ("packing", STRING)),
    # The options of the ops zo-edge runs (zo_edge.kernels). QGraph reads exactly these; the options
    # of other ops get the check every table gets (vtable and fields inside the file) and are not read.
    "AddOptions": _fields(("fused_activation_function", I8), ("pot_scale_int16", BOOL)),
    "Conv2DOptions": _fields(("padding", I8), ("stride_w", I32), ("stride_h", I32), ("fused_activation_function", I8),
                             ("dilation_w_factor", I32), ("dilation_h_factor", I32), ("quantized_bias_type", I8)),
    "DepthwiseConv2DOptions": _fields(("padding", I8), ("stride_w", I32), ("stride_h", I32), ("depth_multiplier", I32),
                                      ("fused_activation_function", I8), ("dilation_w_factor", I32),
                                      ("dilation_h_factor", I32)),
    "DequantizeOptions": _fields(),
    "ExpandDimsOptions": _fields(),
    "FullyConnectedOptions": _fields(("fused_activation_function", I8), ("weights_format", I8),
                                     ("keep_num_dims", BOOL), ("asymmetric_quantize_inputs", BOOL),
                                     ("quantized_bias_type", I8), ("quant_spec", Vector(1))),
    "L2NormOptions": _fields(("fused_activation_function", I8)),
    "MulOptions": _fields(("fused_activation_function", I8)),
    "PackOptions": _fields(("values_count", I32), ("axis", I32)),
    "Pool2DOptions": _fields(("padding", I8), ("stride_w", I32), ("stride_h", I32), ("filter_width", I32),
                             ("filter_height", I32), ("fused_activation_function", I8)),
    "QuantizeOptions": _fields(),
    "ReducerOptions": _fields(("keep_dims", BOOL)),
    "ReshapeOptions": _fields(("new_shape", Vector(4))),
    "ShapeOptions": _fields(("out_type", I8)),
    "SoftmaxOptions": _fields(("beta", F32)),
    "StridedSliceOptions": _fields(("begin_mask", I32), ("end_mask", I32), ("ellipsis_mask", I32),
                                   ("new_axis_mask", I32), ("shrink_axis_mask", I32), ("offset", BOOL)),
}


def _schema():
    from zo_edge import litert

    return litert.schema()


def union_members(union: str) -> dict[int, str]:
    """Type number -> table name of a schema union ("BuiltinOptions": {1: "Conv2DOptions", ...})."""
    enum = getattr(_schema(), union)
    return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int) and v != 0}


def checked_options() -> dict[int, str]:
    """BuiltinOptions type -> table name, for the option tables whose every field is checked."""
    return {code: name for code, name in union_members("BuiltinOptions").items() if name in LAYOUTS}


# ----------------------------------------------------------------------------------------------------
# Structure


def check_structure(buf: bytes, source: str) -> None:
    """Refuse, with one line, a buffer that is not a well-formed TFL3 flatbuffer."""
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ZoEdgeError(f"{source} is not a readable .tflite flatbuffer (no TFL3 identifier); is it truncated or another format?")
    if len(buf) >= 1 << 31:
        raise ZoEdgeError(f"{source} is {len(buf)} bytes; a flatbuffer is at most 2 GiB")
    _Walker(buf, source).table(_Walker.u32(buf, 0), "Model", "model")


class _Walker:
    def __init__(self, buf: bytes, source: str):
        self.buf = buf
        self.source = source
        self.seen: set[tuple[int, str]] = set()  # a table reached twice is checked once
        self.members = {}

    @staticmethod
    def u32(buf, pos) -> int:
        return struct.unpack_from("<I", buf, pos)[0]

    def fail(self, what: str, problem: str):
        raise ZoEdgeError(f"{self.source} is corrupt or truncated: {what} {problem}; re-export the model from its source")

    def inside(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or pos + size > len(self.buf):
            self.fail(what, f"lies outside the file (bytes {pos}..{pos + size} of {len(self.buf)})")

    def aligned(self, pos: int, alignment: int, what: str) -> None:
        if pos % alignment:
            self.fail(what, f"is misaligned (byte {pos} is not a multiple of {alignment})")

    def offset(self, field: int, what: str) -> int:
        """The position a uoffset field points to, after checking the field and the target."""
        self.aligned(field, 4, what)
        target = field + self.u32(self.buf, field)
        if target == field:
            self.fail(what, "is a zero offset")
        self.inside(target, 1, what)
        return target

    def vector(self, pos: int, elem_size: int, what: str) -> int:
        """Length of the vector at pos, after checking that all of it lies inside the file."""
        self.aligned(pos, 4, what)
        self.inside(pos, 4, what)
        length = self.u32(self.buf, pos)
        self.inside(pos + 4, length * elem_size, f"{what} ({length} elements)")
        return length

    def table(self, pos: int, layout: str | None, what: str) -> None:
        """Check the table at pos and, if its layout is known, every field in it (recursively)."""
        if (pos, layout) in self.seen:
            return
        self.seen.add((pos, layout))
        if len(self.seen) > _MAX_TABLES:
            self.fail("the model", f"has more than {_MAX_TABLES} tables")
        self.aligned(pos, 4, what)
        self.inside(pos, 4, what)
        vtable = pos - struct.unpack_from("<i", self.buf, pos)[0]
        self.aligned(vtable, 2, f"the vtable of {what}")
        self.inside(vtable, 4, f"the vtable of {what}")
        vtable_size, table_size = struct.unpack_from("<HH", self.buf, vtable)
        if vtable_size < 4 or vtable_size % 2 or table_size < 4:
            self.fail(f"the vtable of {what}", f"has impossible sizes ({vtable_size}, {table_size})")
        self.inside(vtable, vtable_size, f"the vtable of {what}")
        self.inside(pos, table_size, what)
        fields = struct.unpack_from(f"<{(vtable_size - 4) // 2}H", self.buf, vtable + 4)
        spec = LAYOUTS.get(layout, {})
        for slot, field_offset in enumerate(fields):
            if field_offset == 0:
                continue  # absent: the reader sees the default
            name, kind = spec.get(slot, (f"field {slot}", None))
            size = kind.size if isinstance(kind, Scalar) else 4 if kind is not None else 1
            name = f"{what}.{name}"
            if field_offset + size > table_size:
                self.fail(name, f"lies outside its table ({field_offset} + {size} > {table_size} bytes)")
            field = pos + field_offset
            if isinstance(kind, Scalar):
                self.aligned(field, kind.size, name)
            elif isinstance(kind, Vector):
                self.vector(self.offset(field, name), kind.elem_size, name)
            elif isinstance(kind, String):
                start = self.offset(field, name)
                length = self.vector(start, 1, name)
                self.inside(start + 4 + length, 1, f"the terminator of {name}")
                if self.buf[start + 4 + length] != 0:
                    self.fail(name, "has no terminating zero byte")
            elif isinstance(kind, Table):
                self.table(self.offset(field, name), kind.layout, name)
            elif isinstance(kind, Tables):
                start = self.offset(field, name)
                for i in range(self.vector(start, 4, name)):
                    element = start + 4 + 4 * i
                    self.table(self.offset(element, f"{name}[{i}]"), kind.layout, f"{name}[{i}]")
            elif isinstance(kind, Union):
                type_offset = fields[kind.type_slot] if kind.type_slot < len(fields) else 0
                member = self.buf[pos + type_offset] if type_offset else 0
                if member:  # NONE: the value is never read
                    if kind.members not in self.members:
                        self.members[kind.members] = union_members(kind.members)
                    table = self.members[kind.members].get(member)  # unknown to this schema: never read
                    self.table(self.offset(field, name), table, f"{name} ({table or f'type {member}'})")


# ----------------------------------------------------------------------------------------------------
# Meaning


def _shape_problem(shape) -> str | None:
    elements = 1
    for d in shape:
        if d < 1:
            return f"has dimension {d} (shape {list(shape)}); every dimension must be at least 1"
        elements *= d
        if elements > MAX_TENSOR_ELEMENTS:
            return (f"has shape {list(shape)}, more than {MAX_TENSOR_ELEMENTS} elements; no microcontroller "
                    "model is that large, so the shape is corrupt")
    return None


def _quantization_problem(q, shape, dtype) -> str | None:
    scales = q.ScaleAsNumpy() if q.ScaleLength() else np.zeros(0, np.float32)
    if not len(scales):
        return None  # not quantised
    if q.DetailsType() != 0:
        return "uses a quantisation scheme other than scale and zero point, which zo-edge does not handle"
    zero_points = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(0, np.int64)
    if len(zero_points) != len(scales):
        return f"has {len(scales)} quantisation scales and {len(zero_points)} zero points; they must pair up"
    if not np.all(np.isfinite(scales) & (scales > 0)):
        return f"has a quantisation scale that is not a positive finite number ({scales.min():g}..{scales.max():g})"
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if zero_points.min() < info.min or zero_points.max() > info.max:
            return f"has a zero point outside the range of {np.dtype(dtype).name}"
    if len(scales) > 1:
        axis = q.QuantizedDimension()
        if not 0 <= axis < len(shape):
            return f"is quantised along dimension {axis}, which its shape {list(shape)} does not have"
        if shape[axis] != len(scales):
            return f"has {len(scales)} scales for the {shape[axis]} channels of dimension {axis}"
    return None


def check_model(model, buf: bytes, source: str) -> None:
    """Refuse a structurally sound model whose contents contradict each other (one line)."""
    if model.SubgraphsLength() < 1:
        raise ZoEdgeError(f"{source} has no subgraph; it is not a usable model")
    if model.SubgraphsLength() > 1:
        raise ZoEdgeError(f"{source} has {model.SubgraphsLength()} subgraphs; zo-edge runs single-subgraph models")

    def corrupt(what, problem):
        raise ZoEdgeError(f"{source} is corrupt: {what} {problem}")

    sub = model.Subgraphs(0)
    n_tensors, n_buffers = sub.TensorsLength(), model.BuffersLength()
    for i in range(n_tensors):
        t = sub.Tensors(i)
        what = f"tensor {i} ({(t.Name() or b'').decode(errors='replace')!r})"
        if t.Type() not in TFLITE_DTYPES:
            raise ZoEdgeError(f"{source}: {what} has type {t.Type()}, which zo-edge does not handle")
        dtype = TFLITE_DTYPES[t.Type()]
        shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
        problem = _shape_problem(shape)
        if problem:
            corrupt(what, problem)
        if t.Sparsity() is not None or t.ExternalBuffer():
            raise ZoEdgeError(f"{source}: {what} is stored sparse or in an external buffer, which zo-edge does not read")
        if t.Quantization() is not None:
            problem = _quantization_problem(t.Quantization(), shape, dtype)
            if problem:
                corrupt(what, problem)
        if t.Buffer() >= n_buffers:
            corrupt(what, f"refers to buffer {t.Buffer()} of {n_buffers}")
        b = model.Buffers(t.Buffer())
        stored = b.Size() if b.Offset() > 1 else b.DataLength()  # large models keep data after the flatbuffer
        if b.Offset() > 1 and b.Offset() + b.Size() > len(buf):
            corrupt(what, f"has its data at bytes {b.Offset()}..{b.Offset() + b.Size()}, past the end of the file")
        needed = math.prod(shape) * np.dtype(dtype).itemsize
        if stored and stored != needed:
            corrupt(what, f"holds {stored} bytes of data; its shape {shape} needs {needed}")

    def check_indices(indices, what, optional=False):
        for index in indices:
            if not (-1 if optional else 0) <= index < n_tensors:
                corrupt(what, f"refers to tensor {index} of {n_tensors}")

    check_indices(sub.InputsAsNumpy() if sub.InputsLength() else [], "the graph's input list")
    check_indices(sub.OutputsAsNumpy() if sub.OutputsLength() else [], "the graph's output list")
    n_codes = model.OperatorCodesLength()
    for k in range(sub.OperatorsLength()):
        o = sub.Operators(k)
        if o.OpcodeIndex() >= n_codes:
            corrupt(f"operator {k}", f"refers to opcode {o.OpcodeIndex()} of {n_codes}")
        check_indices(o.InputsAsNumpy() if o.InputsLength() else [], f"operator {k}", optional=True)  # -1: omitted
        check_indices(o.OutputsAsNumpy() if o.OutputsLength() else [], f"operator {k}")


UNCHECKED = "where a check should have refused the model first"


def unchecked_failure(source: str, stage: str, exc: Exception) -> ZoEdgeError:
    """The last line of defence: an exception that a check above should have prevented, as one line."""
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    return ZoEdgeError(f"{source}: {stage} failed ({type(exc).__name__}: {detail}) {UNCHECKED}; the file is "
                       "probably corrupt — please report this with the file")
