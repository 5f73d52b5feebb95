"""The one module that writes .tflite flatbuffers: a small editable model over the schema's object API.

``TfliteModel`` wraps one ``ModelT`` (``litert.schema()``, the generated object API) with a single
subgraph, and keeps its producer/consumer links current while it is edited:

* queries: ``name``/``short_name``, ``shape``, ``dtype``, ``quant`` (scales, zero points, dimension),
  ``is_const``, ``producer``/``consumers``, ``ancestors``/``descendants``;
* constants: ``read_const``, ``write_const`` (after ``own_buffer``: a converter may share one buffer
  between equal constants, and a tensor about to be rewritten must not drag its twins along);
* building: ``add_tensor``, ``add_op`` (anywhere in the op list; the opcode table is handled: an
  existing entry for the builtin is reused, else one is appended), ``set_quantization``,
  ``set_shape``, ``rewire`` (every reader of a tensor, the graph outputs and the signatures, to
  another), and ``pack``;
* look-up: ``find_tensor`` / ``find_op`` by index or name (the full name, or the short name the
  converter's first ``;``-separated part gives), with a one-line ``ZoEdgeError`` listing the
  candidates when the reference names nothing.

Adding never renumbers: new tensors and buffers are appended, so every tensor index handed out before an
edit still means the same tensor after it (the adaptation plan stores indices). Ops may be inserted
anywhere; op indices are therefore only valid until the next ``add_op``.

Everything that changes a .tflite goes through here: ``zo_edge.quantize`` patches its trainable
tensors with it, ``zo_edge.surgery`` inserts adapters and replaces the classifier of a deployed int8
model with it, and the tests' ``tflite_builder.GraphBuilder`` writes its random models with it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from zo_edge import litert
from zo_edge.errors import ZoEdgeError

TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16",
              9: "int8", 10: "float64"}  # schema TensorType -> numpy dtype name
_NP_TYPES = {np.dtype(name): code for code, name in TYPE_NAMES.items()}

ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6")  # the fused activations zo-edge writes
PADDINGS = ("SAME", "VALID")


def schema():
    return litert.schema()


@lru_cache(maxsize=None)
def builtin_codes() -> dict[str, int]:
    """Builtin op name ("CONV_2D") -> schema BuiltinOperator number."""
    return {k: v for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


@lru_cache(maxsize=None)
def builtin_names() -> dict[int, str]:
    return {v: k for k, v in builtin_codes().items()}


class OpView(NamedTuple):
    """One operator as the graph queries see it: its builtin name, input and output tensor indices, the
    ``OperatorT`` itself. A tuple, so ``name, ins, outs, op = model.ops[k]`` reads it."""

    name: str
    inputs: list
    outputs: list
    op: object


def short_name(name: str) -> str:
    """The converter joins every name a fused tensor had with ';' — the first is the one to show."""
    return name.split(";")[0]


class TfliteModel:
    """The first (only) subgraph of a ModelT, editable, with producer/consumer links."""

    def __init__(self, model_t, source: str = "the model"):
        if not model_t.subgraphs or len(model_t.subgraphs) != 1:
            raise ZoEdgeError(f"{source} has {len(model_t.subgraphs or [])} subgraphs; zo-edge handles "
                              "single-subgraph models only")
        self.model = model_t
        self.sg = model_t.subgraphs[0]
        self.source = source
        self._index()  # reading changes nothing: an unedited model packs to the bytes it came from

    @classmethod
    def from_bytes(cls, buf: bytes, source: str = "the model",
                   hint: str = "re-create it with `zo-edge build`") -> "TfliteModel":
        from zo_edge.tflite_check import check_structure

        s = schema()
        check_structure(bytes(buf), source)  # every offset inside the file before the object API reads it
        try:
            model_t = s.ModelT.InitFromObj(s.Model.GetRootAs(bytes(buf), 0))
        except Exception as exc:  # noqa: BLE001 - any parse failure is a damaged file
            raise ZoEdgeError(f"{source} is not a readable .tflite flatbuffer ({exc.__class__.__name__}); {hint}") from None
        return cls(model_t, source)

    @classmethod
    def empty(cls, name: str = "main", description: str = "zo-edge") -> "TfliteModel":
        """A model with one empty subgraph and buffer 0 (empty, by convention)."""
        s = schema()
        sg = s.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = [], [], [], [], name.encode()
        model = s.ModelT()
        model.version = 3
        model.operatorCodes = []
        model.subgraphs = [sg]
        model.buffers = [s.BufferT()]
        model.description = description.encode()
        return cls(model)

    def pack(self) -> bytes:
        return pack_model(self.model)

    # -- links --------------------------------------------------------------------------------------
    def _index(self) -> None:
        names = builtin_names()
        self.ops: list[OpView] = []
        for op in self.sg.operators or []:
            code = self.model.operatorCodes[op.opcodeIndex]
            opname = names.get(max(int(code.builtinCode), int(code.deprecatedBuiltinCode)), "CUSTOM")
            ins = [] if op.inputs is None else [int(i) for i in op.inputs]
            outs = [] if op.outputs is None else [int(i) for i in op.outputs]
            self.ops.append(OpView(opname, ins, outs, op))
        self.producer, self.consumers = {}, {}
        for k, (_, ins, outs, _) in enumerate(self.ops):
            for t in outs:
                self.producer[t] = k
            for t in ins:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(k)

    # -- queries ------------------------------------------------------------------------------------
    @property
    def tensors(self) -> list:
        if self.sg.tensors is None:
            self.sg.tensors = []
        return self.sg.tensors

    @property
    def inputs(self) -> list[int]:
        return [int(i) for i in self.sg.inputs] if self.sg.inputs is not None else []

    @property
    def outputs(self) -> list[int]:
        return [int(i) for i in self.sg.outputs] if self.sg.outputs is not None else []

    def name(self, t: int) -> str:
        n = self.sg.tensors[t].name
        return n.decode(errors="replace") if isinstance(n, bytes) else str(n or "")

    def short_name(self, t: int) -> str:
        return short_name(self.name(t))

    def shape(self, t: int) -> list:
        s = self.sg.tensors[t].shape
        return [] if s is None else [int(d) for d in s]

    def dtype_name(self, t: int) -> str:
        return TYPE_NAMES.get(int(self.sg.tensors[t].type), str(self.sg.tensors[t].type))

    def is_const(self, t: int) -> bool:
        buf = self.model.buffers[self.sg.tensors[t].buffer]
        return buf is not None and buf.data is not None and len(buf.data) > 0

    def quant(self, t: int):
        """(scales float64, zero points int64, quantized dimension), or None for an unquantised tensor."""
        q = self.sg.tensors[t].quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        return (np.asarray(q.scale, dtype=np.float64), np.asarray(q.zeroPoint, dtype=np.int64), int(q.quantizedDimension))

    def scalar_quant(self, t: int) -> tuple[float, int]:
        """(scale, zero point) of a per-tensor quantised tensor."""
        scales, zero_points, _ = self.quant(t)
        return float(scales[0]), int(zero_points[0])

    def ancestors(self, t: int) -> set:
        seen, stack = set(), [t]
        while stack:
            x = stack.pop()
            if x in seen:
                continue
            seen.add(x)
            k = self.producer.get(x)
            if k is not None:
                stack.extend(i for i in self.ops[k][1] if i >= 0)
        return seen

    def descendants(self, t: int) -> set:
        seen, stack = set(), [t]
        while stack:
            x = stack.pop()
            if x in seen:
                continue
            seen.add(x)
            for k in self.consumers.get(x, []):
                stack.extend(self.ops[k][2])
        return seen

    # -- constants ----------------------------------------------------------------------------------
    def own_buffer(self, t: int) -> int:
        """Give tensor ``t`` a buffer no other tensor shares (the converter may deduplicate constants)."""
        b = self.tensors[t].buffer
        users = [i for i, tensor in enumerate(self.tensors) if tensor.buffer == b]
        if len(users) > 1:
            new = schema().BufferT()
            new.data = np.array(self.model.buffers[b].data, dtype=np.uint8, copy=True)
            self.model.buffers.append(new)
            self.tensors[t].buffer = len(self.model.buffers) - 1
        buf = self.model.buffers[self.tensors[t].buffer]
        if getattr(buf, "offset", 0) and buf.offset > 1:
            raise ZoEdgeError(f"{self.source} stores buffers outside the flatbuffer (a >2 GB model?); not supported")
        return self.tensors[t].buffer

    def write_const(self, t: int, values: np.ndarray) -> None:
        """Overwrite constant ``t`` with ``values`` (its own buffer; shape and type as the tensor says)."""
        b = self.own_buffer(t)
        expected = int(np.prod(self.shape(t))) if self.shape(t) else 1
        values = np.ascontiguousarray(values).reshape(-1)
        if values.size != expected:
            raise AssertionError(f"tensor {t}: writing {values.size} values into {expected}")
        want = {9: np.int8, 2: np.int32}[self.tensors[t].type]
        self.model.buffers[b].data = np.frombuffer(values.astype(want).tobytes(), dtype=np.uint8).copy()

    def read_const(self, t: int) -> np.ndarray:
        dtype = {9: np.int8, 2: np.int32, 3: np.uint8, 7: np.int16, 4: np.int64}[self.tensors[t].type]
        data = np.asarray(self.model.buffers[self.tensors[t].buffer].data, dtype=np.uint8)
        return np.frombuffer(data.tobytes(), dtype=dtype).reshape(self.shape(t))

    # -- building -----------------------------------------------------------------------------------
    def add_buffer(self, data: np.ndarray | None = None) -> int:
        buf = schema().BufferT()
        if data is not None:
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8).copy()
        self.model.buffers.append(buf)
        return len(self.model.buffers) - 1

    def add_tensor(self, shape, dtype, *, scale=None, zero_point=None, quantized_dimension=0, data=None,
                   name=None) -> int:
        """Append a tensor (constant when ``data`` is given, else an activation); returns its index."""
        t = schema().TensorT()
        t.shape = [int(d) for d in shape]
        t.type = _NP_TYPES[np.dtype(dtype)]
        t.name = (name or f"t{len(self.tensors)}").encode()
        if data is not None:
            arr = np.array(data, dtype=dtype, order="C")
            if list(arr.shape) != t.shape:
                raise AssertionError(f"constant {name!r}: data {arr.shape} for shape {t.shape}")
            t.buffer = self.add_buffer(arr)
        else:
            t.buffer = 0
        self.tensors.append(t)
        index = len(self.tensors) - 1
        if scale is not None:
            self.set_quantization(index, scale, 0 if zero_point is None else zero_point, quantized_dimension)
        return index

    def set_quantization(self, t: int, scale, zero_point, quantized_dimension: int = 0) -> None:
        """Per-tensor (one scale) or per-channel (one scale per slice of ``quantized_dimension``)."""
        q = schema().QuantizationParametersT()
        q.scale = [float(s) for s in np.atleast_1d(np.asarray(scale, dtype=np.float64))]
        zp = np.atleast_1d(np.asarray(zero_point, dtype=np.int64))
        if zp.size == 1 and len(q.scale) > 1:
            zp = np.repeat(zp, len(q.scale))
        q.zeroPoint = [int(z) for z in zp]
        q.quantizedDimension = int(quantized_dimension)
        self.tensors[t].quantization = q

    def set_shape(self, t: int, shape) -> None:
        tensor = self.tensors[t]
        tensor.shape = [int(d) for d in shape]
        if tensor.shapeSignature is not None and len(tensor.shapeSignature):
            old = [int(d) for d in tensor.shapeSignature]  # keep the dynamic (-1) dimensions it had
            tensor.shapeSignature = [-1 if i < len(old) and old[i] < 0 else int(d) for i, d in enumerate(shape)]

    def opcode_index(self, opname: str) -> int:
        """The opcode-table entry for a builtin op, appended (version 1) when the model has none."""
        code = builtin_codes()[opname]
        if self.model.operatorCodes is None:
            self.model.operatorCodes = []
        for k, oc in enumerate(self.model.operatorCodes):
            if max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode)) == code:
                return k
        oc = schema().OperatorCodeT()
        oc.builtinCode = int(code)
        oc.deprecatedBuiltinCode = min(int(code), 127)  # 127: PLACEHOLDER_FOR_GREATER_OP_CODES
        oc.version = 1
        self.model.operatorCodes.append(oc)
        return len(self.model.operatorCodes) - 1

    def add_op(self, opname: str, inputs, outputs, options=None, at: int | None = None) -> int:
        """Insert a builtin op at position ``at`` of the op list (default: the end); returns its index.
        ``options`` is an ``*OptionsT`` object (see ``options``) or None."""
        op = schema().OperatorT()
        op.opcodeIndex = self.opcode_index(opname)
        op.inputs = [int(i) for i in inputs]
        op.outputs = [int(i) for i in outputs]
        op.builtinOptionsType = _options_type(options)
        op.builtinOptions = options
        if self.sg.operators is None:
            self.sg.operators = []
        at = len(self.sg.operators) if at is None else int(at)
        self.sg.operators.insert(at, op)
        self._index()
        return at

    def set_op_input(self, k: int, position: int, t: int) -> None:
        """Op ``k`` reads tensor ``t`` as its input ``position`` (omitted inputs before it become -1)."""
        op = self.sg.operators[k]
        ins = [int(i) for i in op.inputs]
        ins += [-1] * (position + 1 - len(ins))
        ins[position] = int(t)
        op.inputs = ins
        self._index()

    def set_op_options(self, k: int, options) -> None:
        """Op ``k`` gets ``options`` (an ``*OptionsT`` object, or None) as its builtin options."""
        op = self.sg.operators[k]
        op.builtinOptionsType = _options_type(options)
        op.builtinOptions = options

    def rewire(self, old: int, new: int, skip_ops=()) -> None:
        """Every op that reads ``old`` (except ``skip_ops``), the graph outputs and the signature outputs
        read ``new`` instead."""
        for k, op in enumerate(self.sg.operators or []):
            if k in skip_ops or op.inputs is None:
                continue
            op.inputs = [int(new) if int(i) == old else int(i) for i in op.inputs]
        self.sg.outputs = [int(new) if i == old else i for i in self.outputs]
        for sig in self.model.signatureDefs or []:
            for tmap in sig.outputs or []:
                if tmap.tensorIndex == old:
                    tmap.tensorIndex = int(new)
        self._index()

    # -- look-up ------------------------------------------------------------------------------------
    def find_tensor(self, ref, what: str = "tensor", candidates=None) -> int:
        """A tensor by index (int or digits) or name (full, or short when that is unique). ``candidates``
        (indices) decide between tensors of one name and are what the error lists when ``ref`` names nothing."""
        n = len(self.tensors)
        if isinstance(ref, (int, np.integer)) or (isinstance(ref, str) and ref.strip().isdigit()):
            t = int(ref)
            if 0 <= t < n:
                return t
            raise ZoEdgeError(f"{what} {ref!r}: {self.source} has tensors 0..{n - 1}; {self._listing(candidates)}")
        ref = str(ref).strip()
        exact = [t for t in range(n) if self.name(t) == ref]
        short = [t for t in range(n) if self.short_name(t) == ref]
        found = exact or short
        if len(found) > 1 and candidates is not None:  # a converter names a conv's bias after its output too
            found = [t for t in found if t in set(candidates)] or found
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ZoEdgeError(f"{what} {ref!r} is the name of tensors {', '.join(map(str, found))} of {self.source}; "
                              "name one by its index")
        raise ZoEdgeError(f"{what} {ref!r} names no tensor of {self.source}; {self._listing(candidates)}")

    def _listing(self, candidates) -> str:
        if candidates is None:
            candidates = range(len(self.tensors))
        candidates = list(candidates)
        if not candidates:
            return "it has no tensor that qualifies (see `zo-edge inspect`)"
        return "candidates (index: name): " + ", ".join(f"{t}: {self.short_name(t)}" for t in candidates)

    def find_op(self, ref, what: str = "op") -> int:
        """An op by index (int or digits) or by the name of its output tensor."""
        if isinstance(ref, (int, np.integer)) or (isinstance(ref, str) and ref.strip().isdigit()):
            k = int(ref)
            if 0 <= k < len(self.ops):
                return k
            raise ZoEdgeError(f"{what} {ref!r}: {self.source} has ops 0..{len(self.ops) - 1} (see `zo-edge inspect`)")
        t = self.find_tensor(ref, what, candidates=sorted(self.producer))
        if t not in self.producer:
            raise ZoEdgeError(f"{what} {ref!r}: tensor {t} is made by no op of {self.source} (a constant or the input)")
        return self.producer[t]


def _options_type(options) -> int:
    """The BuiltinOptions union tag of an ``*OptionsT`` object (0: none)."""
    return 0 if options is None else getattr(schema().BuiltinOptions, type(options).__name__[:-1])


def pack_model(model_t) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# ------------------------------------------------------------------------------------------------------
# builtin options (the ones zo-edge writes)


def _activation(name: str) -> int:
    return getattr(schema().ActivationFunctionType, name)


def conv2d_options(stride=(1, 1), padding="SAME", dilation=(1, 1), activation="NONE"):
    opt = schema().Conv2DOptionsT()
    opt.padding = getattr(schema().Padding, padding)
    opt.strideH, opt.strideW = int(stride[0]), int(stride[1])
    opt.dilationHFactor, opt.dilationWFactor = int(dilation[0]), int(dilation[1])
    opt.fusedActivationFunction = _activation(activation)
    return opt


def depthwise_conv2d_options(stride=(1, 1), padding="SAME", dilation=(1, 1), depth_multiplier=1, activation="NONE"):
    opt = schema().DepthwiseConv2DOptionsT()
    opt.padding = getattr(schema().Padding, padding)
    opt.strideH, opt.strideW = int(stride[0]), int(stride[1])
    opt.dilationHFactor, opt.dilationWFactor = int(dilation[0]), int(dilation[1])
    opt.depthMultiplier = int(depth_multiplier)
    opt.fusedActivationFunction = _activation(activation)
    return opt


def fully_connected_options(activation="NONE", keep_num_dims=False):
    opt = schema().FullyConnectedOptionsT()
    opt.fusedActivationFunction = _activation(activation)
    opt.keepNumDims = bool(keep_num_dims)
    return opt


def add_options(activation="NONE"):
    opt = schema().AddOptionsT()
    opt.fusedActivationFunction = _activation(activation)
    return opt


def softmax_options(beta=1.0):
    opt = schema().SoftmaxOptionsT()
    opt.beta = float(beta)
    return opt


def activation_quantization(lo: float, hi: float) -> tuple[float, int]:
    """int8 (scale, zero point) for a float range, as TFLite's calibration nudges it: the range is widened to
    hold 0, scale = (hi − lo) / 255, zero point = round(−128 − lo / scale) clamped to int8."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not hi > lo:
        raise ValueError("an empty range")
    scale = (hi - lo) / 255.0
    zero_point = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return float(np.float32(scale)), zero_point
