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
# The layout of every table the readers reach: field slot -> what the field holds. Slot k is the
# k-th field of the table in schema.fbs (vtable entry 4 + 2k). Fields of a newer schema that are
# not listed here are checked to lie inside their table, as the C++ Verifier does for unknown
# fields, and nobody reads them.


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

LAYOUTS: dict[str, dict[int, object]] = {
    "Model": {0: U32, 1: Tables("OperatorCode"), 2: Tables("SubGraph"), 3: String(), 4: Tables("Buffer"),
              5: Vector(4), 6: Tables("Metadata"), 7: Tables("SignatureDef"), 8: Tables("ExternalBufferGroup"),
              9: Tables("ExternalBuffer")},
    "OperatorCode": {0: I8, 1: String(), 2: I32, 3: I32},
    "SubGraph": {0: Tables("Tensor"), 1: Vector(4), 2: Vector(4), 3: Tables("Operator"), 4: String(), 5: I32},
    "Tensor": {0: Vector(4), 1: I8, 2: U32, 3: String(), 4: Table("QuantizationParameters"), 5: BOOL,
               6: Table("SparsityParameters"), 7: Vector(4), 8: BOOL, 9: Tables("VariantSubType"), 10: U32},
    "QuantizationParameters": {0: Vector(4), 1: Vector(4), 2: Vector(4), 3: Vector(8), 4: U8,
                               5: Union(4, "QuantizationDetails"), 6: I32},
    "CustomQuantization": {0: Vector(1)},
    "BlockwiseQuantization": {0: I32, 1: I32, 2: I32, 3: Vector(4)},
    "MultiAxisQuantization": {0: I32, 1: I32, 2: I32, 3: Vector(4)},
    "SparsityParameters": {0: Vector(4), 1: Vector(4), 2: Tables("DimensionMetadata")},
    "DimensionMetadata": {0: I8, 1: I32, 2: U8, 3: Union(2, "SparseIndexVector"), 4: U8,
                          5: Union(4, "SparseIndexVector")},
    "Int32Vector": {0: Vector(4)},
    "Uint16Vector": {0: Vector(2)},
    "Uint8Vector": {0: Vector(1)},
    "VariantSubType": {0: Vector(4), 1: I8, 2: BOOL},
    "Buffer": {0: Vector(1), 1: U64, 2: U64},
    "Operator": {0: U32, 1: Vector(4), 2: Vector(4), 3: U8, 4: Union(3, "BuiltinOptions"), 5: Vector(1), 6: I8,
                 7: Vector(1), 8: Vector(4), 9: U64, 10: U64, 11: U8, 12: Union(11, "BuiltinOptions2"), 13: I32},
    "Metadata": {0: String(), 1: U32},
    "SignatureDef": {0: Tables("TensorMap"), 1: Tables("TensorMap"), 2: String(), 4: U32},
    "TensorMap": {0: String(), 1: U32},
    "ExternalBufferGroup": {0: String()},
    "ExternalBuffer": {0: U32, 1: U32, 2: U64, 3: U64, 4: String()},
    # The options of the ops zo-edge runs (zo_edge.kernels). QGraph reads exactly these; the options
    # of other ops get the check every table gets (vtable and fields inside the file) and are not read.
    "AddOptions": {0: I8, 1: BOOL},
    "Conv2DOptions": {0: I8, 1: I32, 2: I32, 3: I8, 4: I32, 5: I32, 6: I8},
    "DepthwiseConv2DOptions": {0: I8, 1: I32, 2: I32, 3: I32, 4: I8, 5: I32, 6: I32},
    "DequantizeOptions": {},
    "FullyConnectedOptions": {0: I8, 1: I8, 2: BOOL, 3: BOOL, 4: I8, 5: Vector(1)},
    "PackOptions": {0: I32, 1: I32},
    "Pool2DOptions": {0: I8, 1: I32, 2: I32, 3: I32, 4: I32, 5: I8},
    "QuantizeOptions": {},
    "ReducerOptions": {0: BOOL},
    "ReshapeOptions": {0: Vector(4)},
    "ShapeOptions": {0: I8},
    "SoftmaxOptions": {0: F32},
    "StridedSliceOptions": {0: I32, 1: I32, 2: I32, 3: I32, 4: I32, 5: BOOL},
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
    _Walker(buf, source).table(_Walker.u32(buf, 0), "Model", "the model")


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
            kind = spec.get(slot)
            size = kind.size if isinstance(kind, Scalar) else 4 if kind is not None else 1
            name = f"field {slot} of {what}"
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
                self.table(self.offset(field, name), kind.layout, f"{kind.layout} of {what}")
            elif isinstance(kind, Tables):
                start = self.offset(field, name)
                for i in range(self.vector(start, 4, name)):
                    element = start + 4 + 4 * i
                    self.table(self.offset(element, f"element {i} of {name}"), kind.layout, f"{kind.layout} {i}")
            elif isinstance(kind, Union):
                type_offset = fields[kind.type_slot] if kind.type_slot < len(fields) else 0
                member = self.buf[pos + type_offset] if type_offset else 0
                if member:  # NONE: the value is never read
                    if kind.members not in self.members:
                        self.members[kind.members] = union_members(kind.members)
                    table = self.members[kind.members].get(member)  # unknown to this schema: never read
                    self.table(self.offset(field, name), table, f"{table or 'options'} of {what}")


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
