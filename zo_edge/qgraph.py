"""QGraph: a typed, read-only view of an int8 .tflite flatbuffer.

It keeps what the int8 kernels need — tensors with their quantisation parameters and constant data,
operators with their options as plain Python values — and nothing of the flatbuffer's machinery.
Nothing is read before ``zo_edge.tflite_check`` has checked the file's structure and contents, so a
damaged or contradictory model ends in a one-line ZoEdgeError; what each op needs of its operands
is checked by its kernel when the engine prepares it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zo_edge import litert
from zo_edge.errors import ZoEdgeError
from zo_edge.tflite_check import TFLITE_DTYPES, check_model, check_structure, checked_options, unchecked_failure


def _schema():
    return litert.schema()


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def builtin_op_names() -> dict[int, str]:
    """Schema BuiltinOperator number -> name ("CONV_2D"), shared by everything that reads opcodes."""
    return _enum_names(_schema().BuiltinOperator)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass
class QTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: type
    scale: np.ndarray | None = None  # float32, one per channel (or one)
    zero_point: np.ndarray | None = None  # int64, same length as scale
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # constant tensors only, already shaped

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def is_quantized(self) -> bool:
        return self.scale is not None and len(self.scale) > 0

    @property
    def size_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def scalar_quant(self) -> tuple[float, int]:
        """(scale, zero point) of a per-tensor quantised tensor."""
        return float(self.scale[0]), int(self.zero_point[0])


@dataclass
class QOp:
    index: int
    opcode: str
    inputs: list[int]  # -1 marks an omitted optional input
    outputs: list[int]
    options: dict = field(default_factory=dict)
    options_table: str | None = None  # the schema table the options came from ("Conv2DOptions"), None if absent


@dataclass
class QGraph:
    tensors: list[QTensor]
    ops: list[QOp]
    inputs: list[int]
    outputs: list[int]
    model_bytes: bytes = b""
    source: str = "<bytes>"

    @classmethod
    def load(cls, path) -> "QGraph":
        path = Path(path)
        if not path.exists():
            raise ZoEdgeError(f"{path}: no such file; pass the path of an int8 .tflite model")
        if path.is_dir():
            raise ZoEdgeError(f"{path} is a folder; pass the path of an int8 .tflite model inside it")
        return cls.from_bytes(path.read_bytes(), source=str(path))

    @classmethod
    def from_bytes(cls, buf: bytes, source: str = "<bytes>") -> "QGraph":
        buf = bytes(buf)
        check_structure(buf, source)
        model = _schema().Model.GetRootAs(buf, 0)
        try:
            check_model(model, buf, source)
            graph = _parse(model, buf)
        except ZoEdgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - check_structure lets nothing through that fails here
            raise unchecked_failure(source, "reading the model", exc) from None
        graph.model_bytes = buf
        graph.source = source
        _check_integer(graph)
        return graph

    def producer(self, tensor: int) -> QOp | None:
        for op in self.ops:
            if tensor in op.outputs:
                return op
        return None

    def consumers(self, tensor: int) -> list[QOp]:
        return [op for op in self.ops if tensor in op.inputs]

    def tensor_named(self, name: str) -> QTensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def opcodes(self) -> list[str]:
        return sorted({op.opcode for op in self.ops})


def _parse(model, buf: bytes) -> QGraph:
    """The QGraph of a model that passed ``check_structure`` and ``check_model``."""
    schema = _schema()
    op_names = builtin_op_names()
    opcodes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{(code.CustomCode() or b'').decode(errors='replace')}"
        opcodes.append(name)

    sub = model.Subgraphs(0)
    tensors = []
    for i in range(sub.TensorsLength()):
        t = sub.Tensors(i)
        dtype = TFLITE_DTYPES[t.Type()]
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        tensor = QTensor(index=i, name=(t.Name() or b"").decode(errors="replace"), shape=shape, dtype=dtype)
        q = t.Quantization()
        if q is not None and q.ScaleLength():
            tensor.scale = q.ScaleAsNumpy().astype(np.float32)
            tensor.zero_point = q.ZeroPointAsNumpy().astype(np.int64)
            tensor.quantized_dimension = q.QuantizedDimension()
        b = model.Buffers(t.Buffer())
        raw = buf[b.Offset() : b.Offset() + b.Size()] if b.Offset() > 1 else b.DataAsNumpy().tobytes() if b.DataLength() else b""
        if raw:
            tensor.data = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        tensors.append(tensor)

    options_tables = checked_options()
    ops = []
    for i in range(sub.OperatorsLength()):
        o = sub.Operators(i)
        table = options_tables.get(o.BuiltinOptionsType())  # other ops' options are not read: no kernel uses them
        options = {}
        if table is not None and o.BuiltinOptions() is not None:
            values = schema.BuiltinOptionsCreator(o.BuiltinOptionsType(), o.BuiltinOptions())
            options = {_snake(k): v.tolist() if isinstance(v, np.ndarray) else v for k, v in vars(values).items()}
        ops.append(
            QOp(
                index=i,
                opcode=opcodes[o.OpcodeIndex()],
                inputs=[int(v) for v in o.InputsAsNumpy()] if o.InputsLength() else [],
                outputs=[int(v) for v in o.OutputsAsNumpy()] if o.OutputsLength() else [],
                options=options,
                options_table=table,
            )
        )
    inputs = [int(v) for v in sub.InputsAsNumpy()] if sub.InputsLength() else []
    outputs = [int(v) for v in sub.OutputsAsNumpy()] if sub.OutputsLength() else []
    return QGraph(tensors=tensors, ops=ops, inputs=inputs, outputs=outputs)


# Ops whose float tensors belong to an int8 model: the converter's float-interface wrappers and the
# int32 shape plumbing of a Keras Flatten.
_FLOAT_INTERFACE_OPS = {"QUANTIZE", "DEQUANTIZE"}


def _check_integer(graph: QGraph) -> None:
    """Refuse a float model: the engine is an int8 engine, and saying so beats a shape error later."""
    for op in graph.ops:
        if op.opcode in _FLOAT_INTERFACE_OPS:
            continue
        for index in op.inputs + op.outputs:
            if index >= 0 and graph.tensors[index].dtype in (np.float32, np.float16, np.float64):
                raise ZoEdgeError(
                    f"{graph.source} is a float model ({op.opcode} computes in float); zo-edge runs full-integer int8 "
                    "models: quantize it first (`zo-edge build`, or TFLiteConverter with a representative dataset and "
                    "TFLITE_BUILTINS_INT8)"
                )
