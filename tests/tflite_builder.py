"""Writes int8 .tflite flatbuffers directly, with full control over every quantisation parameter.

Test-only front end of ``zo_edge.tflite_edit`` (the one .tflite writer): the randomized engine-vs-TFLM
tests need models whose scales, zero points, per-channel weight scales, strides, paddings and fused
activations are chosen freely (including values no converter would produce). ``GraphBuilder`` adds
what a test wants to say in one line — an op with its output shape worked out — on top of
``TfliteModel``'s tensors, ops and packing.

Usage::

    g = GraphBuilder()
    x = g.input([1, 8, 8, 3], scale=0.02, zero_point=-5)
    w = g.const_int8(weights, scale=w_scales, zero_point=0, quantized_dimension=0)
    b = g.const_int32(bias, scale=0.02 * w_scales)
    y = g.conv2d(x, w, b, stride=(2, 2), padding="SAME", activation="RELU", out_scale=0.1, out_zp=3)
    g.output(y)
    buf = g.finish()

Every graph tensor carries batch dimension 1; the test runners batch on dimension 0. Methods that
take weights/bias accept either a tensor index already made with ``const_*`` or a numpy array
(int8 weights get per-channel symmetric quantisation parameters from ``w_scale``; int32 bias
gets ``input_scale * w_scale``, zero point 0).
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from zo_edge import tflite_edit
from zo_edge.tflite_edit import ACTIVATIONS, TfliteModel  # noqa: F401 - ACTIVATIONS: the names tests draw from

BuiltinOperator = schema.BuiltinOperator
TensorType = schema.TensorType

_TFL_TO_NP = {code: np.dtype(name) for code, name in tflite_edit.TYPE_NAMES.items()}


def same_padding_out(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    del kernel, dilation
    return (size + stride - 1) // stride


def valid_padding_out(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    eff = (kernel - 1) * dilation + 1
    return (size - eff + stride) // stride


def conv_out(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    if padding == "SAME":
        return same_padding_out(size, kernel, stride, dilation)
    return valid_padding_out(size, kernel, stride, dilation)


class GraphBuilder:
    """Builds one subgraph op by op on a ``TfliteModel``; ``finish`` packs the model."""

    def __init__(self, name: str = "main"):
        self.model = TfliteModel.empty(name, description="zo-edge test model")

    @property
    def tensors(self) -> list:
        return self.model.tensors

    @property
    def operators(self) -> list:
        """The subgraph's OperatorT objects (tests damage them on purpose)."""
        return self.model.sg.operators

    @property
    def inputs(self) -> list[int]:
        return self.model.sg.inputs

    @property
    def outputs(self) -> list[int]:
        return self.model.sg.outputs

    # ------------------------------------------------------------------ tensors

    def tensor(self, shape, dtype, scale=None, zero_point=None, quantized_dimension=0, data=None,
               name=None) -> int:
        """Adds a tensor; ``data`` (a numpy array) makes it constant. Returns its index."""
        return self.model.add_tensor(shape, dtype, scale=scale, zero_point=zero_point,
                                     quantized_dimension=quantized_dimension, data=data, name=name)

    def shape_of(self, idx: int) -> list[int]:
        return list(self.tensors[idx].shape)

    def quant_of(self, idx: int):
        """(scales as float64 array, zero points as int64 array) of a tensor."""
        q = self.tensors[idx].quantization
        return np.asarray(q.scale, dtype=np.float64), np.asarray(q.zeroPoint, dtype=np.int64)

    def scale_of(self, idx: int) -> float:
        return float(self.tensors[idx].quantization.scale[0])

    def zp_of(self, idx: int) -> int:
        return int(self.tensors[idx].quantization.zeroPoint[0])

    def dtype_of(self, idx: int):
        return _TFL_TO_NP[self.tensors[idx].type]

    def input(self, shape, scale=None, zero_point=0, dtype=np.int8, name=None) -> int:
        """A graph input (int8 activations need scale/zero_point; float32 inputs don't)."""
        if dtype == np.int8 and scale is None:
            raise ValueError("int8 input needs a scale")
        idx = self.tensor(shape, dtype, scale, zero_point if scale is not None else None, name=name)
        self.inputs.append(idx)
        return idx

    def output(self, *idx: int) -> None:
        self.outputs.extend(int(i) for i in idx)

    def const_int8(self, data, scale, zero_point=0, quantized_dimension=0, name=None) -> int:
        data = np.asarray(data, dtype=np.int8)
        return self.tensor(data.shape, np.int8, scale, zero_point, quantized_dimension, data, name)

    def const_int32(self, data, scale=None, zero_point=0, quantized_dimension=0, name=None) -> int:
        data = np.asarray(data, dtype=np.int32)
        return self.tensor(data.shape, np.int32, scale, zero_point if scale is not None else None,
                           quantized_dimension, data, name)

    def activation(self, shape, scale, zero_point, dtype=np.int8, name=None) -> int:
        return self.tensor(shape, dtype, scale, zero_point, name=name)

    # ------------------------------------------------------------------ operators

    def op(self, code: int, inputs, outputs, options=None) -> None:
        """Appends builtin op ``code`` (a schema BuiltinOperator number) with its ``*OptionsT``."""
        self.model.add_op(tflite_edit.builtin_names()[code], inputs, outputs, options)

    def _weights(self, w, w_scale, qdim):
        if isinstance(w, (int, np.integer)):
            return int(w)
        if w_scale is None:
            raise ValueError("a weights array needs w_scale")
        return self.const_int8(w, w_scale, 0, qdim)

    def _bias(self, bias, x, w):
        if bias is None or isinstance(bias, (int, np.integer)):
            return -1 if bias is None else int(bias)
        w_scales, _ = self.quant_of(w)
        return self.const_int32(bias, self.scale_of(x) * w_scales, 0)

    def conv2d(self, x, w, bias=None, *, stride=(1, 1), padding="SAME", dilation=(1, 1),
               activation="NONE", out_scale, out_zp, w_scale=None) -> int:
        """CONV_2D. ``w`` [O, KH, KW, I] int8 (per-channel scales on dim 0); ``bias`` [O] int32."""
        w = self._weights(w, w_scale, 0)
        b = self._bias(bias, x, w)
        n, h, wd, _ = self.shape_of(x)
        o, kh, kw, _ = self.shape_of(w)
        oh = conv_out(h, kh, stride[0], dilation[0], padding)
        ow = conv_out(wd, kw, stride[1], dilation[1], padding)
        y = self.activation([n, oh, ow, o], out_scale, out_zp)
        self.op(BuiltinOperator.CONV_2D, [x, w, b], [y], tflite_edit.conv2d_options(stride, padding, dilation, activation))
        return y

    def depthwise_conv2d(self, x, w, bias=None, *, stride=(1, 1), padding="SAME", dilation=(1, 1),
                         depth_multiplier=1, activation="NONE", out_scale, out_zp, w_scale=None) -> int:
        """DEPTHWISE_CONV_2D. ``w`` [1, KH, KW, I*M] int8 (per-channel scales on dim 3)."""
        w = self._weights(w, w_scale, 3)
        b = self._bias(bias, x, w)
        n, h, wd, c = self.shape_of(x)
        _, kh, kw, oc = self.shape_of(w)
        assert oc == c * depth_multiplier, (oc, c, depth_multiplier)
        oh = conv_out(h, kh, stride[0], dilation[0], padding)
        ow = conv_out(wd, kw, stride[1], dilation[1], padding)
        y = self.activation([n, oh, ow, oc], out_scale, out_zp)
        self.op(BuiltinOperator.DEPTHWISE_CONV_2D, [x, w, b], [y],
                tflite_edit.depthwise_conv2d_options(stride, padding, dilation, depth_multiplier, activation))
        return y

    def fully_connected(self, x, w, bias=None, *, activation="NONE", keep_num_dims=False,
                        out_scale, out_zp, w_scale=None) -> int:
        """FULLY_CONNECTED. ``w`` [O, I] int8 (per-tensor: one scale; per-channel: O scales)."""
        w = self._weights(w, w_scale, 0)
        b = self._bias(bias, x, w)
        xs = self.shape_of(x)
        o, i = self.shape_of(w)
        assert int(np.prod(xs)) % i == 0
        if keep_num_dims:
            assert xs[-1] == i
            ys = xs[:-1] + [o]
        else:
            ys = [int(np.prod(xs)) // i, o]
        y = self.activation(ys, out_scale, out_zp)
        self.op(BuiltinOperator.FULLY_CONNECTED, [x, w, b], [y],
                tflite_edit.fully_connected_options(activation, keep_num_dims))
        return y

    def add(self, a, b, *, activation="NONE", out_scale, out_zp) -> int:
        """ADD with numpy broadcasting of the two operands."""
        ys = list(np.broadcast_shapes(tuple(self.shape_of(a)), tuple(self.shape_of(b))))
        y = self.activation(ys, out_scale, out_zp)
        self.op(BuiltinOperator.ADD, [a, b], [y], tflite_edit.add_options(activation))
        return y

    def mul(self, a, b, *, activation="NONE", out_scale, out_zp) -> int:
        """MUL with numpy broadcasting of the two operands."""
        ys = list(np.broadcast_shapes(tuple(self.shape_of(a)), tuple(self.shape_of(b))))
        y = self.activation(ys, out_scale, out_zp)
        opt = schema.MulOptionsT()
        opt.fusedActivationFunction = tflite_edit.add_options(activation).fusedActivationFunction
        self.op(BuiltinOperator.MUL, [a, b], [y], opt)
        return y

    def expand_dims(self, x, axis: int) -> int:
        """EXPAND_DIMS at ``axis`` (a const int32 scalar axis input), the quantisation kept."""
        xs = self.shape_of(x)
        at = axis % (len(xs) + 1)
        q = self.tensors[x].quantization
        ys = xs[:at] + [1] + xs[at:]
        y = self.tensor(ys, self.dtype_of(x), list(q.scale), list(q.zeroPoint)) if q is not None else \
            self.tensor(ys, self.dtype_of(x))
        self.op(BuiltinOperator.EXPAND_DIMS, [x, self.const_int32(np.asarray(axis, dtype=np.int32))], [y],
                schema.ExpandDimsOptionsT())
        return y

    def mean(self, x, axes, *, keep_dims=False, out_scale=None, out_zp=None) -> int:
        """MEAN over ``axes`` (a const int32 tensor is made); output quant defaults to the input's."""
        xs = self.shape_of(x)
        rank = len(xs)
        ax = sorted({a % rank for a in axes})
        if keep_dims:
            ys = [1 if d in ax else s for d, s in enumerate(xs)]
        else:
            ys = [s for d, s in enumerate(xs) if d not in ax]
        axes_t = self.const_int32(np.asarray(list(axes), dtype=np.int32))
        y = self.activation(ys, self.scale_of(x) if out_scale is None else out_scale,
                            self.zp_of(x) if out_zp is None else out_zp)
        opt = schema.ReducerOptionsT()
        opt.keepDims = bool(keep_dims)
        self.op(BuiltinOperator.MEAN, [x, axes_t], [y], opt)
        return y

    def _pool(self, code, x, filter_size, stride, padding, activation):
        n, h, w, c = self.shape_of(x)
        oh = conv_out(h, filter_size[0], stride[0], 1, padding)
        ow = conv_out(w, filter_size[1], stride[1], 1, padding)
        y = self.activation([n, oh, ow, c], self.scale_of(x), self.zp_of(x))
        opt = schema.Pool2DOptionsT()
        opt.padding = getattr(schema.Padding, padding)
        opt.strideH, opt.strideW = int(stride[0]), int(stride[1])
        opt.filterHeight, opt.filterWidth = int(filter_size[0]), int(filter_size[1])
        opt.fusedActivationFunction = getattr(schema.ActivationFunctionType, activation)
        self.op(code, [x], [y], opt)
        return y

    def average_pool2d(self, x, filter_size, *, stride=(1, 1), padding="VALID", activation="NONE") -> int:
        """AVERAGE_POOL_2D (output quantisation = input's, as TFLM requires)."""
        return self._pool(BuiltinOperator.AVERAGE_POOL_2D, x, filter_size, stride, padding, activation)

    def max_pool2d(self, x, filter_size, *, stride=(1, 1), padding="VALID", activation="NONE") -> int:
        """MAX_POOL_2D (output quantisation = input's)."""
        return self._pool(BuiltinOperator.MAX_POOL_2D, x, filter_size, stride, padding, activation)

    def reshape(self, x, new_shape, *, shape_tensor="const", options=True) -> int:
        """RESHAPE to ``new_shape`` (may contain one -1).

        ``shape_tensor``: "const" adds a const int32 shape input, None uses only the options'
        new_shape, or a tensor index (e.g. the output of ``pack``) is used as the shape input.
        ``options`` writes ReshapeOptions.new_shape as well.
        """
        xs = self.shape_of(x)
        ns = [int(d) for d in new_shape]
        ys = list(ns)
        if -1 in ys:
            known = int(np.prod([d for d in ys if d != -1]))
            ys[ys.index(-1)] = int(np.prod(xs)) // known
        assert int(np.prod(ys)) == int(np.prod(xs)), (xs, ns)
        inputs = [x]
        if shape_tensor == "const":
            inputs.append(self.const_int32(np.asarray(ns, dtype=np.int32)))
        elif shape_tensor is not None:
            inputs.append(int(shape_tensor))
        dt = self.dtype_of(x)
        q = self.tensors[x].quantization
        if q is not None:
            y = self.tensor(ys, dt, list(q.scale), list(q.zeroPoint))
        else:
            y = self.tensor(ys, dt)
        opt = None
        if options:
            opt = schema.ReshapeOptionsT()
            opt.newShape = ns
        self.op(BuiltinOperator.RESHAPE, inputs, [y], opt)
        return y

    def softmax(self, x, *, beta=1.0, out_scale=1.0 / 256, out_zp=-128) -> int:
        """SOFTMAX on the last axis (TFLM needs int8 output scale 1/256, zero point -128)."""
        y = self.activation(self.shape_of(x), out_scale, out_zp)
        self.op(BuiltinOperator.SOFTMAX, [x], [y], tflite_edit.softmax_options(beta))
        return y

    def l2_normalization(self, x) -> int:
        """L2_NORMALIZATION on the last axis (TFLM needs int8 output scale 1/128, zero point 0)."""
        y = self.activation(self.shape_of(x), 1.0 / 128, 0)
        self.op(BuiltinOperator.L2_NORMALIZATION, [x], [y], schema.L2NormOptionsT())
        return y

    def quantize(self, x, *, out_scale, out_zp) -> int:
        """QUANTIZE float32->int8 or int8->int8 (requantise)."""
        y = self.activation(self.shape_of(x), out_scale, out_zp)
        self.op(BuiltinOperator.QUANTIZE, [x], [y],
                schema.QuantizeOptionsT())
        return y

    def dequantize(self, x) -> int:
        """DEQUANTIZE int8->float32."""
        y = self.tensor(self.shape_of(x), np.float32)
        self.op(BuiltinOperator.DEQUANTIZE, [x], [y],
                schema.DequantizeOptionsT())
        return y

    def shape(self, x) -> int:
        """SHAPE (int32 output)."""
        y = self.tensor([len(self.shape_of(x))], np.int32)
        opt = schema.ShapeOptionsT()
        opt.outType = TensorType.INT32
        self.op(BuiltinOperator.SHAPE, [x], [y], opt)
        return y

    def strided_slice(self, x, begin, end, strides, *, begin_mask=0, end_mask=0,
                      shrink_axis_mask=0) -> int:
        """STRIDED_SLICE with const int32 begin/end/strides; output shape computed like TFLite."""
        xs = self.shape_of(x)
        ys = []
        for d, size in enumerate(xs):
            st = int(strides[d])
            if shrink_axis_mask >> d & 1:
                continue  # shrunk axes contribute no dimension
            b = int(begin[d])
            e = int(end[d])
            b = b + size if b < 0 else b
            e = e + size if e < 0 else e
            if st > 0:
                b = 0 if begin_mask >> d & 1 else min(max(b, 0), size)
                e = size if end_mask >> d & 1 else min(max(e, 0), size)
                n = max(0, (e - b + st - 1) // st)
            else:
                b = size - 1 if begin_mask >> d & 1 else min(max(b, -1), size - 1)
                e = -1 if end_mask >> d & 1 else min(max(e, -1), size - 1)
                n = max(0, (b - e + (-st) - 1) // (-st))
            ys.append(n)
        bt = self.const_int32(np.asarray(begin, dtype=np.int32))
        et = self.const_int32(np.asarray(end, dtype=np.int32))
        st_t = self.const_int32(np.asarray(strides, dtype=np.int32))
        dt = self.dtype_of(x)
        q = self.tensors[x].quantization
        y = self.tensor(ys, dt, list(q.scale), list(q.zeroPoint)) if q is not None else self.tensor(ys, dt)
        opt = schema.StridedSliceOptionsT()
        opt.beginMask, opt.endMask, opt.shrinkAxisMask = int(begin_mask), int(end_mask), int(shrink_axis_mask)
        self.op(BuiltinOperator.STRIDED_SLICE, [x, bt, et, st_t], [y], opt)
        return y

    def pack(self, xs, *, axis=0) -> int:
        """PACK of same-shape tensors along ``axis`` (output quantisation = first input's)."""
        s = self.shape_of(xs[0])
        ax = axis % (len(s) + 1)
        ys = s[:ax] + [len(xs)] + s[ax:]
        dt = self.dtype_of(xs[0])
        q = self.tensors[xs[0]].quantization
        y = self.tensor(ys, dt, list(q.scale), list(q.zeroPoint)) if q is not None else self.tensor(ys, dt)
        opt = schema.PackOptionsT()
        opt.valuesCount, opt.axis = len(xs), int(axis)
        self.op(BuiltinOperator.PACK, list(xs), [y], opt)
        return y

    def flatten(self, x, *, out_shape=None) -> int:
        """Keras Flatten as the converter emits it: SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE."""
        xs = self.shape_of(x)
        shp = self.shape(x)
        batch = self.strided_slice(shp, [0], [1], [1], shrink_axis_mask=1)
        minus1 = self.const_int32(np.asarray(-1, dtype=np.int32))
        new_shape = self.pack([batch, minus1], axis=0)
        y = self.reshape(x, out_shape or [xs[0], int(np.prod(xs[1:]))], shape_tensor=new_shape,
                         options=False)
        return y

    # ------------------------------------------------------------------ packing

    def finish(self) -> bytes:
        """Serialises the model (schema version 3, identifier TFL3)."""
        return self.model.pack()


# ---------------------------------------------------------------------- random helpers


def rand_int8(rng: np.random.Generator, shape) -> np.ndarray:
    """Uniform over the full int8 range, with -128 and 127 forced in when there is room."""
    x = rng.integers(-128, 128, size=shape, dtype=np.int16).astype(np.int8)
    flat = x.reshape(-1)
    if flat.size >= 2:
        pos = rng.choice(flat.size, size=2, replace=False)
        flat[pos[0]] = -128
        flat[pos[1]] = 127
    return x


def log_uniform(rng: np.random.Generator, lo: float, hi: float, size=None):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size=size))


def per_channel_scales(rng: np.random.Generator, n: int, base: float, spread_decades: float = 3.0):
    """``n`` weight scales around ``base`` spanning ``spread_decades`` orders of magnitude."""
    return base * 10.0 ** rng.uniform(-spread_decades / 2, spread_decades / 2, size=n)


def quantize_bias(rng: np.random.Generator, n: int, limit: int = 1 << 16) -> np.ndarray:
    return rng.integers(-limit, limit + 1, size=n).astype(np.int32)
