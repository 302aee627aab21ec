"""Run a float graph IR in ONNX Runtime: the IR written back as a float32 ONNX model whose
outputs are every node's output, so one ``session.run`` yields each value calibration observes
(the same values :func:`tcc_compiler.interp.float_exec.run_float` visits: fused Conv+Relu
outputs, residual sums, and so on, under their IR names).

Numerics: ONNX Runtime computes in float32 (MLAS GEMMs), the numpy interpreter accumulates in
float64; the values differ by float32 rounding (relative ~1e-6), never in meaning. Each IR op
maps to the ONNX ops of its definition (ir/ops.py): conv = Conv [+ Mul(shortcut, scale) + Add]
[+ Relu | Clip]; fc = Flatten + Gemm [+ Add] [+ act] + Reshape; lut = the ONNX function or its
formula (opset 17 has no Gelu/Mish: written with Erf/Tanh/Softplus).
"""

from __future__ import annotations

import copy
import logging
import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterable, Iterator

import numpy as np

from tcc_compiler.errors import InputError, first_line
from tcc_compiler.ir.feeds import feeds
from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.ir.ops import ActKind, LutFunc, Op

log = logging.getLogger(__name__)

#: ONNX opset of the written model (HardSwish needs 14, Softmax's single axis 13).
OPSET = 17
#: Constants of at least this many bytes are handed to ONNX Runtime as in-memory external
#: initializers instead of being serialised into the model (ResNet-50: 100 MB of weights, whose
#: serialisation and parsing took longer than calibrating on 8 photos).
EXTERNAL_BYTES = 1024


#: Largest float32 bytes of all node outputs of one input for which calibration runs the graph
#: in ONNX Runtime (every value returned at once: ResNet-50 224 holds 43 MiB, ResNet-50-v2 at
#: 960x520 595 MiB); beyond it the numpy interpreter streams the values, holding only the live
#: ones, so compile memory stays bounded at any input size (interp/memory.py counts these bytes
#: in its estimate).
ORT_OUTPUT_BYTES = 768 << 20

#: Largest float32 bytes of one input's node outputs for which calibration lets ONNX Runtime
#: compute the next input while the observers work on this one (two inputs' values held at
#: once; quant/calibrate_run.py). ResNet-50 at 224x224 holds 43 MiB; above this the inputs
#: take turns (interp/memory.py counts the second input's values below it).
OVERLAP_BYTES = 96 << 20


def values_bytes(graph: Graph) -> int:
    """float32 bytes of every node output of ``graph`` (what one ONNX Runtime run returns)."""
    return sum(4 * int(np.prod(n.output.shape, dtype=np.int64)) for n in graph.nodes)


#: Float engines calibration offers (``quant.calibrate.observe``): "auto" = ONNX Runtime when
#: the graph is expressible in ONNX and its values fit :data:`ORT_OUTPUT_BYTES`, else the numpy
#: interpreter.
ENGINES = ("auto", "ort", "numpy")


class NotExpressible(Exception):
    """The graph holds something this writer does not express in ONNX (the caller falls back
    to the numpy interpreter)."""


class _Writer:
    """Builds the ONNX nodes and initializers of one graph."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.external: dict[str, np.ndarray] = {}   # name -> array ORT reads in place
        self._k = 0

    def tmp(self, base: str) -> str:
        self._k += 1
        return f"{base}__t{self._k}"

    def const(self, base: str, arr) -> str:
        from onnx import TensorProto, helper, numpy_helper

        name = self.tmp(base)
        arr = np.ascontiguousarray(arr)
        if arr.nbytes < EXTERNAL_BYTES:
            self.inits.append(numpy_helper.from_array(arr, name))
            return name
        t = TensorProto(name=name, dims=arr.shape,
                        data_type=helper.np_dtype_to_tensor_dtype(arr.dtype),
                        data_location=TensorProto.EXTERNAL)
        for k, v in (("location", "tccc-memory"), ("offset", "0"),
                     ("length", str(arr.nbytes))):
            t.external_data.add(key=k, value=v)
        self.inits.append(t)
        self.external[name] = arr
        return name

    def node(self, op: str, ins: list[str], out: str, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def arg(self, n: Node, k: int, ins: list[str | None]) -> str | None:
        """Input ``k`` of ``n``: its value name, or a new float32 initializer for a constant
        (made only where used: ORT drops unused initializers before placing external ones),
        None when absent."""
        v = n.input(k)
        if v is None:
            return None
        if v.is_const:
            return self.const(f"{n.name}_in{k}", np.asarray(v.const, np.float32))
        return ins[k]

    def act(self, act, x: str, out: str) -> str:
        """Apply an :class:`~tcc_compiler.ir.ops.Activation` (identity when none)."""
        if act.kind is ActKind.RELU:
            return self.node("Relu", [x], out)
        if act.kind is ActKind.CLIP:
            lo = self.const(out, np.float32(act.lo))
            hi = self.const(out, np.float32(act.hi))
            return self.node("Clip", [x, lo, hi], out)
        if act.kind is ActKind.LEAKY:
            return self.node("LeakyRelu", [x], out, alpha=float(act.lo))
        return self.node("Identity", [x], out)


def _channel(arr: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel constant [C] as [1, C, 1, ...] against an NCHW operand (as the
    interpreter broadcasts it); scalars and full shapes unchanged."""
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim < ndim and a.size > 1:
        a = a.reshape((1, -1) + (1,) * (ndim - 2))
    return a


def _lut(w: _Writer, n: Node, x: str, out: str) -> None:
    a, f = n.attrs, n.attrs.func
    simple = {LutFunc.SIGMOID: "Sigmoid", LutFunc.TANH: "Tanh", LutFunc.HARDSWISH: "HardSwish",
              LutFunc.SOFTPLUS: "Softplus", LutFunc.ERF: "Erf"}
    if f in simple:
        w.node(simple[f], [x], out)
    elif f is LutFunc.HARDSIGMOID:
        w.node("HardSigmoid", [x], out, alpha=float(a.alpha), beta=float(a.beta))
    elif f is LutFunc.LEAKYRELU:
        w.node("LeakyRelu", [x], out, alpha=float(a.alpha))
    elif f is LutFunc.ELU:
        w.node("Elu", [x], out, alpha=float(a.alpha))
    elif f is LutFunc.CLIP:
        w.node("Clip", [x, w.const(out, np.float32(a.alpha)), w.const(out, np.float32(a.beta))],
               out)
    elif f is LutFunc.PRELU:
        slope = _channel(n.inputs[1].const, len(n.inputs[0].shape))
        w.node("PRelu", [x, w.const(out, slope)], out)
    elif f is LutFunc.SILU:
        w.node("Mul", [x, w.node("Sigmoid", [x], w.tmp(out))], out)
    elif f is LutFunc.MISH:
        sp = w.node("Softplus", [x], w.tmp(out))
        w.node("Mul", [x, w.node("Tanh", [sp], w.tmp(out))], out)
    elif f in (LutFunc.GELU, LutFunc.GELU_TANH):
        if f is LutFunc.GELU:   # 0.5 x (1 + erf(x / sqrt 2))
            inner = w.node("Erf", [w.node("Mul", [x, w.const(out, np.float32(
                1 / math.sqrt(2.0)))], w.tmp(out))], w.tmp(out))
        else:                   # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            x3 = w.node("Mul", [x, w.node("Mul", [x, x], w.tmp(out))], w.tmp(out))
            poly = w.node("Add", [x, w.node("Mul", [x3, w.const(out, np.float32(0.044715))],
                                            w.tmp(out))], w.tmp(out))
            inner = w.node("Tanh", [w.node("Mul", [poly, w.const(out, np.float32(
                math.sqrt(2.0 / math.pi)))], w.tmp(out))], w.tmp(out))
        one = w.node("Add", [inner, w.const(out, np.float32(1.0))], w.tmp(out))
        half = w.node("Mul", [x, w.const(out, np.float32(0.5))], w.tmp(out))
        w.node("Mul", [half, one], out)
    else:
        raise NotExpressible(f"lut function {f.value}")


def _conv(w: _Writer, n: Node, ins: list[str | None], out: str) -> None:
    a = n.attrs
    t, left, b, r = a.pads
    args = [ins[0], w.arg(n, 1, ins)] + ([w.arg(n, 2, ins)] if n.input(2) is not None else [])
    y = w.node("Conv", args, w.tmp(out),
               kernel_shape=list(a.kernel), strides=list(a.strides), pads=[t, left, b, r],
               dilations=list(a.dilations), group=int(a.group))
    sc = n.input(3)
    if sc is not None:
        s = ins[3]
        if n.input(4) is not None:
            s = w.node("Mul", [s, w.const(out, _channel(n.input(4).const, 4))], w.tmp(out))
        y = w.node("Add", [y, s], w.tmp(out))
    cl = n.input(5)
    if cl is None:
        w.act(a.act, y, out)
        return
    bounds = np.asarray(cl.const, np.float32).reshape(2, -1)   # per-channel clamp after act
    y = w.node("Max", [w.act(a.act, y, w.tmp(out)), w.const(out, _channel(bounds[0], 4))],
               w.tmp(out))
    w.node("Min", [y, w.const(out, _channel(bounds[1], 4))], out)


def _fc(w: _Writer, n: Node, ins: list[str | None], out: str) -> None:
    wt = n.inputs[1].const
    flat = w.node("Flatten", [ins[0]], w.tmp(out), axis=1)
    wmat = w.const(out, np.asarray(wt, np.float32).reshape(wt.shape[0], -1))
    y = w.node("Gemm", [flat, wmat] + ([w.arg(n, 2, ins)] if n.input(2) is not None else []),
               w.tmp(out), transB=1)
    if n.input(3) is not None:
        sc = w.node("Reshape", [ins[3], w.const(out, np.array([1, -1], np.int64))], w.tmp(out))
        y = w.node("Add", [y, sc], w.tmp(out))
    y = w.act(n.attrs.act, y, w.tmp(out))
    w.node("Reshape", [y, w.const(out, np.array(n.output.shape, np.int64))], out)


def _binary(w: _Writer, n: Node, ins: list[str | None], out: str) -> None:
    bv = n.inputs[1]
    ndim = len(n.inputs[0].shape)
    if bv.is_const:
        b = w.const(out, _channel(bv.const, ndim))
    elif len(bv.shape) < ndim and int(np.prod(bv.shape)) > 1:
        b = w.node("Reshape", [ins[1], w.const(out, np.array(
            (1, -1) + (1,) * (ndim - 2), np.int64))], w.tmp(out))
    else:
        b = ins[1]
    op = {Op.ADD: "Add", Op.SUB: "Sub", Op.MUL: "Mul"}[n.op]
    w.act(n.attrs.act, w.node(op, [ins[0], b], w.tmp(out)), out)


def _pool(w: _Writer, n: Node, ins: list[str | None], out: str) -> None:
    a = n.attrs
    kw = dict(kernel_shape=list(a.kernel), strides=list(a.strides),
              pads=[a.pads[0], a.pads[1], a.pads[2], a.pads[3]])
    if n.op is Op.MAXPOOL:
        w.node("MaxPool", [ins[0]], out, **kw)
    else:
        w.node("AveragePool", [ins[0]], out, count_include_pad=int(a.count_include_pad), **kw)


def _write_node(w: _Writer, n: Node, ins: list[str | None], out: str) -> None:
    """Append the ONNX nodes computing IR node ``n`` into value ``out``."""
    a = n.attrs
    if n.op is Op.CONV:
        _conv(w, n, ins, out)
    elif n.op is Op.FC:
        _fc(w, n, ins, out)
    elif n.op in (Op.ADD, Op.SUB, Op.MUL):
        _binary(w, n, ins, out)
    elif n.op in (Op.RELU, Op.CLIP):
        w.act(a.act, ins[0], out)
    elif n.op is Op.LUT:
        _lut(w, n, ins[0], out)
    elif n.op in (Op.MAXPOOL, Op.AVGPOOL):
        _pool(w, n, ins, out)
    elif n.op is Op.GAP:
        w.node("GlobalAveragePool", [ins[0]], out)
    elif n.op is Op.BATCHNORM:
        w.node("BatchNormalization", [ins[0]] + [w.arg(n, k, ins) for k in range(1, 5)], out,
               epsilon=float(a.epsilon))
    elif n.op is Op.RESHAPE:
        w.node("Reshape", [ins[0], w.const(out, np.array(a.shape, np.int64))], out)
    elif n.op is Op.TRANSPOSE:
        w.node("Transpose", [ins[0]], out, perm=list(a.perm))
    elif n.op is Op.SHUFFLE:   # as ShuffleNet writes it: Reshape, Transpose, Reshape
        nb, c, h, wd = n.output.shape
        g = a.groups
        s5 = w.node("Reshape", [ins[0], w.const(w.tmp(out), np.array([nb, g, c // g, h, wd],
                                                                       np.int64))], w.tmp(out))
        t = w.node("Transpose", [s5], w.tmp(out), perm=[0, 2, 1, 3, 4])
        w.node("Reshape", [t, w.const(w.tmp(out), np.array(n.output.shape, np.int64))], out)
    elif n.op is Op.SOFTMAX:
        w.node("Softmax", [ins[0]], out, axis=int(a.axis))
    elif n.op is Op.GROUP_SOFTMAX:   # as the DFL rewrite writes it: Reshape, Softmax, Reshape
        nb, c, h, wd = n.output.shape
        r = w.node("Reshape", [ins[0], w.const(w.tmp(out), np.array(
            [nb, c // a.group, a.group, h * wd], np.int64))], w.tmp(out))
        sm = w.node("Softmax", [r], w.tmp(out), axis=2)
        w.node("Reshape", [sm, w.const(w.tmp(out), np.array(n.output.shape, np.int64))], out)
    elif n.op is Op.ARGMAX:
        y = w.node("ArgMax", [ins[0]], w.tmp(out), axis=int(a.axis), keepdims=1)
        w.node("Reshape", [y, w.const(out, np.array(n.output.shape, np.int64))], out)
    else:
        raise NotExpressible(f"op {n.op.value}")


def float_model(graph: Graph):
    """The float ``graph`` as an ONNX ModelProto (opset :data:`OPSET`, float32) whose outputs
    are every node output, named as in the IR, in graph order, and the arrays of its external
    initializers (constants of :data:`EXTERNAL_BYTES` or more, not stored in the proto).

    Returns:
        (ModelProto, {initializer name: float32 array}).

    Raises:
        NotExpressible: an op, function or dtype the writer does not express (or a graph
            with more than one input, or value names ONNX cannot hold apart).
    """
    from onnx import TensorProto, helper

    if not graph.inputs or any(x.dtype != "float32" for x in graph.inputs):
        raise NotExpressible("float32 graph inputs expected")
    w = _Writer()
    names = {id(x): x.name for x in graph.inputs}
    outputs = []
    for n in graph.nodes:
        ins: list[str | None] = []
        for k, v in enumerate(n.inputs):
            if v is None:
                ins.append(None)
            elif v.is_const:
                ins.append(None)           # made where used (_Writer.arg)
            else:
                ins.append(names[id(v)])
        out = n.output.name
        if out in names.values():
            raise NotExpressible(f"value name {out!r} used twice")
        _write_node(w, n, ins, out)
        names[id(n.output)] = out
        et = TensorProto.INT64 if n.op is Op.ARGMAX else TensorProto.FLOAT
        outputs.append(helper.make_tensor_value_info(out, et, None))
    gi = [helper.make_tensor_value_info(x.name, TensorProto.FLOAT, list(x.shape))
          for x in graph.inputs]
    g = helper.make_graph(w.nodes, graph.name or "tccc_float", gi, outputs, w.inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                             producer_name="tccc"), w.external


class FloatSession:
    """An ONNX Runtime session computing every node output of a float graph.

    Args:
        graph: float graph IR (after the float passes).

    Raises:
        NotExpressible: :func:`float_model` cannot write the graph, or ONNX Runtime refuses
            the written model (the message says why; callers fall back to the interpreter).
    """

    def __init__(self, graph: Graph, written: tuple | None = None):
        import onnxruntime as ort

        # ORT reads the external arrays in place: keep them (``written``: float_model(graph))
        model, self._external = written if written is not None else float_model(graph)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        # no spinning between runs: calibration's observers work on other threads while this
        # session waits for the next input (quant/calibrate_run.py); spinning threads would
        # take their cores. Only the waiting changes, never a value.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self._external:
            so.add_external_initializers(
                list(self._external),
                [ort.OrtValue.ortvalue_from_numpy(a) for a in self._external.values()])
        try:
            self.sess = ort.InferenceSession(model.SerializeToString(), so,
                                             providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 -- ORT raises its own types; we fall back
            raise NotExpressible(f"ONNX Runtime refuses the float model "
                                 f"({first_line(exc)})") from None
        self.graph = graph
        self.names = [n.output.name for n in graph.nodes]

    def run(self, x, names: list[str] | None = None) -> list[np.ndarray]:
        """The values ``names`` (default: every node output, graph order) for input ``x``
        (float32, the graph input's shape; a dict {input name: array} for a graph with
        several inputs: :func:`tcc_compiler.ir.feeds.feeds`)."""
        return self.sess.run(names or self.names, feeds(self.graph, x))


def float_engine(graph: Graph, engine: str):
    """A :class:`~tcc_compiler.interp.onnx_float.FloatSession` for ``graph``, or None for the
    numpy interpreter (``engine`` "numpy", values too large, or not expressible in ONNX).

    Raises:
        InputError: unknown ``engine``; "ort" when ONNX Runtime cannot run the graph.
    """
    if engine not in ENGINES:
        raise InputError(f"float engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine == "numpy":
        return None
    nbytes = values_bytes(graph)
    if engine == "auto" and nbytes > ORT_OUTPUT_BYTES:
        log.info("calibration: %d MB of values per input, more than %d MB: numpy interpreter",
                 nbytes >> 20, ORT_OUTPUT_BYTES >> 20)
        return None
    try:
        return _session(graph)
    except NotExpressible as exc:
        if engine == "ort":
            raise InputError(f"calibration in ONNX Runtime: {exc}") from None
        log.info("calibration: numpy interpreter (%s)", exc)
        return None


#: The sessions of :func:`shared_sessions` (None outside it): {model key: FloatSession}.
_SHARED: ContextVar[dict | None] = ContextVar("tccc_float_sessions", default=None)


@contextmanager
def shared_sessions() -> Iterator[None]:
    """Within the block, :func:`float_engine` hands out one :class:`FloatSession` per float
    model: calibration's session serves bias correction's float pass too (the driver's
    calibrate + quantize stages), instead of a second ONNX Runtime session built for the same
    graph (ResNet-50 224: about 0.1 s of CPU, 0.2-0.35 s wall, loaded). A model is the same
    when its written proto is and its external initializers are the same arrays (same memory,
    shape, strides, dtype: the float graph's constants, which a graph clone shares and nothing
    mutates in place; the cached session holds them, so their memory is not reused while it
    lives): the same session computes the same values. The sessions are dropped at the end of
    the outermost block."""
    token = _SHARED.set(_SHARED.get() if _SHARED.get() is not None else {})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _session(graph: Graph) -> FloatSession:
    """A :class:`FloatSession` for ``graph``: inside :func:`shared_sessions` the one already
    made for the same model, when there is one.

    Raises:
        NotExpressible: as :class:`FloatSession`."""
    cache = _SHARED.get()
    if cache is None:
        return FloatSession(graph)
    model, external = float_model(graph)
    key = (model.SerializeToString(), tuple(
        (k, a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str)
        for k, a in external.items()))
    if key not in cache:
        cache[key] = FloatSession(graph, (model, external))
        return cache[key]
    hit = copy.copy(cache[key])   # the same ORT session, fed through this graph's inputs
    hit.graph, hit.names = graph, [n.output.name for n in graph.nodes]
    return hit


def float_values(graph: Graph, names: list[str], inputs: Iterable):
    """Per input, {name: float32 NCHW value} of the values ``names`` (graph inputs or node
    outputs; every graph input is included), computed by ONNX Runtime as calibration does
    (:func:`float_engine` "auto", only these values returned), else by the numpy interpreter
    (:func:`tcc_compiler.interp.float_exec.run_float`, float64 accumulation).

    Args:
        graph: float graph IR. inputs: float32 NCHW arrays (or {input name: array} feeds).

    Yields:
        One dict per input, in input order.
    """
    from tcc_compiler.interp.float_exec import run_float

    srcs = {v.name for v in graph.inputs}
    inner = [n for n in dict.fromkeys(names) if n not in srcs]
    sess = float_engine(graph, "auto") if inner else None
    for x in inputs:
        x = feeds(graph, x)   # {graph input: array} (an NPU segment may take several)
        if sess is not None:
            fl = dict(zip(inner, sess.run(x, inner)))
        else:
            fl = run_float(graph, x, keep=True)
        fl.update(x)
        yield fl
