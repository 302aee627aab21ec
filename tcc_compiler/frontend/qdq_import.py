"""Pre-quantized ONNX (QDQ and QOperator forms) -> float ONNX plus fixed quantization params.

A model quantized by ONNX Runtime's ``quantize_static``, NNCF, AIMET or a PyTorch QAT export
carries its quantization as ``QuantizeLinear``/``DequantizeLinear`` (QDQ) pairs, or as
QOperator nodes (``QLinearConv``, ``QLinearMatMul``, com.microsoft ``QLinearAdd`` ...). This
step, run first by :func:`tcc_compiler.frontend.import_onnx`, rewrites such a model into the
float model the rest of the import understands and returns the parameters the quantize stage
must honour (:class:`FixedQuant`, specs/quantization.md "Pre-quantized models"):

1. QOperator nodes are expanded to ``DequantizeLinear -> float op -> QuantizeLinear``;
2. a ``DequantizeLinear`` (or a weight-only ``QuantizeLinear -> DequantizeLinear`` fake-quant
   pair, as PyTorch QAT exports write) of a constant becomes the float constant
   ``(q - zp) * scale`` (exact in float64, stored as float32); its per-output-channel scales
   are recorded for the Conv/Gemm/MatMul reading it;
3. an activation ``X -> QuantizeLinear(s, zp) -> DequantizeLinear(s, zp) -> Y`` becomes ``X``
   itself (readers of ``Y`` read ``X``; a graph output ``Y`` keeps its name), and ``(s, zp)``
   is recorded for ``X``. In QOperator models, the int8 tensor may flow through MaxPool and
   shape ops first: they run on ``X`` and their outputs keep ``(s, zp)``.

uint8 tensors become int8 exactly: ``q8 = q - 128`` and ``zp8 = zp - 128`` give the same real
values ``s * (q - zp)``. Supported element types: int8 and uint8 (opsets 10-21; blocked
quantization, int16/int4 and float8 raise :class:`~tcc_compiler.errors.UnsupportedError`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.errors import UnsupportedError
from tcc_compiler.ir.graph import Graph, QuantParams
from tcc_compiler.ir.ops import Op
from tcc_compiler.frontend.qdq_tccc import drop_tccc_rounding

log = logging.getLogger(__name__)

#: Quantized element types the NPU datapath can represent exactly (as int8).
_INT_TYPES = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8}
#: Ops that move int8 values without arithmetic (QOperator models run them on the int8
#: tensor); in the float graph they run on the dequantized tensor and keep its parameters.
_PASSTHROUGH = frozenset({"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze",
                          "Unsqueeze", "Identity"})
#: Ops whose weight (input 1) may carry per-output-channel parameters, with the weight axis
#: that indexes the output channel (Gemm: depends on transB, see _weight_out_axis).
_WEIGHT_OPS = frozenset({"Conv", "Gemm", "MatMul"})


@dataclass(frozen=True)
class ActParams:
    """Per-tensor int8 activation parameters: ``real = scale * (q - zero_point)``, q int8."""

    scale: float
    zero_point: int


@dataclass
class FixedQuant:
    """What a pre-quantized model fixes, keyed by names in the float model.

    Attributes:
        activations: float tensor name -> :class:`ActParams` (int8).
        weights: ONNX node name (Conv, Gemm, MatMul) -> float64 scales [O] of its int8 weight
            per output channel (zero point 0). A weight with a non-zero zero point is not
            listed (the NPU has no weight zero points; tccc quantizes it, see ``notes``).
        notes: what could not be honoured, one line each (logged as warnings).
    """

    activations: dict[str, ActParams] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def is_prequantized(model: onnx.ModelProto) -> bool:
    """True when the model has QuantizeLinear/DequantizeLinear or QLinear* nodes."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type in _QLINEAR
               for n in model.graph.node)


class _Model:
    """Constants and helpers over one ModelProto being rewritten."""

    def __init__(self, model: onnx.ModelProto, where: str):
        self.m = model
        self.where = where
        self.consts: dict[str, np.ndarray] = {
            i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for n in model.graph.node:  # Constant nodes, and Identity of a constant (exporters
            # share one zero point between quantizers that way)
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
            elif n.op_type == "Identity" and n.input and n.input[0] in self.consts:
                self.consts[n.output[0]] = self.consts[n.input[0]]
        self._k = 0
        if model.producer_name == "tccc":  # tccc's own export: its exact float64 scales
            for p in model.metadata_props:
                if p.key == "tccc.scales_f64":
                    for name, hexes in json.loads(p.value).items():
                        if name in self.consts:
                            self.consts[name] = np.array(
                                [float.fromhex(h) for h in hexes]).reshape(
                                self.consts[name].shape)

    def fail(self, node: onnx.NodeProto, reason: str) -> UnsupportedError:
        return UnsupportedError(self.where, [f"{node.op_type} '{node.name}': {reason}"])

    def const(self, base: str, arr: np.ndarray) -> str:
        self._k += 1
        name = f"{base}__tccc{self._k}"
        self.m.graph.initializer.append(numpy_helper.from_array(np.asarray(arr), name))
        self.consts[name] = np.asarray(arr)
        return name

    def qparams(self, node: onnx.NodeProto,
                int_dtype=np.uint8) -> tuple[np.ndarray, np.ndarray, int]:
        """(float64 scale, zero point in its integer dtype, axis) of a Q/DQ node; an omitted
        zero point is 0 of ``int_dtype`` (the quantized tensor's type). Checks the types."""
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        if int(a.get("block_size", 0)):
            raise self.fail(node, "blocked quantization (block_size) is not supported")
        if len(node.input) < 2 or node.input[1] not in self.consts:
            raise self.fail(node, "scale must be a constant")
        s = self.consts[node.input[1]].astype(np.float64)
        zname = node.input[2] if len(node.input) > 2 else ""
        z = self.consts[zname] if zname in self.consts else np.zeros(s.shape, int_dtype)
        if zname and zname not in self.consts:
            raise self.fail(node, "zero point must be a constant")
        if not zname and node.op_type == "QuantizeLinear" and "output_dtype" in a:
            z = np.zeros(s.shape, helper.tensor_dtype_to_np_dtype(a["output_dtype"]))
        if z.dtype not in (np.int8, np.uint8, np.int32):
            raise self.fail(node, f"{z.dtype} quantization is not supported (int8 and uint8 "
                                  "are: the NPU computes in int8)")
        if not (np.all(np.isfinite(s)) and np.all(s > 0)):
            raise self.fail(node, "scale must be finite and > 0")
        return s, z, int(a.get("axis", 1))


def _dequantize(q: np.ndarray, s: np.ndarray, z: np.ndarray, axis: int) -> np.ndarray:
    """``(q - z) * s`` in float64, per-axis when ``s`` is a vector (ONNX DequantizeLinear)."""
    if s.ndim == 1 and s.size > 1 or (s.ndim == 1 and q.ndim > 1):
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    return (q.astype(np.float64) - z.astype(np.float64)) * s


def _quantize(x: np.ndarray, s: np.ndarray, z: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear on a constant: ``saturate(rint(x / s) + z)`` (x / s in float32,
    ties to even), in ``z``'s integer type."""
    if s.ndim == 1 and x.ndim > 1:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    info = np.iinfo(z.dtype)
    q = np.rint(x.astype(np.float32) / s.astype(np.float32)).astype(np.float64) + z
    return np.clip(q, info.min, info.max).astype(z.dtype)


def _act_params(mdl: _Model, node: onnx.NodeProto, s: np.ndarray, z: np.ndarray) -> ActParams:
    if s.size != 1:
        raise mdl.fail(node, "per-channel activation quantization is not supported (the NPU "
                             "quantizes activations per tensor)")
    zp = int(z.reshape(-1)[0]) - (128 if z.dtype == np.uint8 else 0)
    if z.dtype == np.int32:
        raise mdl.fail(node, "int32 activation quantization is not supported")
    return ActParams(float(s.reshape(-1)[0]), zp)


# ---- QOperator forms -> QDQ ------------------------------------------------------------------

#: QLinear op -> (float op, [(q, scale, zero point) input indices per operand], (scale, zero
#: point) indices of the output, index of an int32 bias or None). Opset: ONNX QLinearConv /
#: QLinearMatMul (10+); the others are com.microsoft contrib ops ONNX Runtime writes (QGemm
#: without an output scale writes float).
_QLINEAR = {
    "QLinearConv": ("Conv", [(0, 1, 2), (3, 4, 5)], (6, 7), 8),
    "QLinearMatMul": ("MatMul", [(0, 1, 2), (3, 4, 5)], (6, 7), None),
    "QGemm": ("Gemm", [(0, 1, 2), (3, 4, 5)], (7, 8), 6),
    "QLinearAdd": ("Add", [(0, 1, 2), (3, 4, 5)], (6, 7), None),
    "QLinearMul": ("Mul", [(0, 1, 2), (3, 4, 5)], (6, 7), None),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", [(0, 1, 2)], (3, 4), None),
    "QLinearAveragePool": ("AveragePool", [(0, 1, 2)], (3, 4), None),
    "QLinearSigmoid": ("Sigmoid", [(0, 1, 2)], (3, 4), None),
    "QLinearLeakyRelu": ("LeakyRelu", [(0, 1, 2)], (3, 4), None),
}


def _inp(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if i < len(node.input) else ""


def _expand_qlinear(mdl: _Model) -> None:
    """Rewrite every QLinear* node as ``DequantizeLinear -> float op -> QuantizeLinear``."""
    out: list[onnx.NodeProto] = []
    for node in mdl.m.graph.node:
        spec = _QLINEAR.get(node.op_type)
        out.extend([node] if spec is None else _expand_one(mdl, node, spec))
    del mdl.m.graph.node[:]
    mdl.m.graph.node.extend(out)


def _expand_one(mdl: _Model, node: onnx.NodeProto, spec) -> list[onnx.NodeProto]:
    """The QDQ form of one QLinear node (see :data:`_QLINEAR`)."""
    fop, operands, (ys, yz), bias = spec
    if any(a.name == "channels_last" and a.i for a in node.attribute):
        raise mdl.fail(node, "channels_last=1 is not supported")
    attrs = [a for a in node.attribute if a.name != "channels_last"]
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    out, floats = [], []
    for k, (q, s, z) in enumerate(operands):
        # a QLinearConv weight is per output channel (axis 0), as a transposed Gemm's; a
        # MatMul right operand per column (axis 1); activations are per tensor
        axis = 0 if k == 1 and (fop == "Conv" or (fop == "Gemm" and trans_b)) else 1
        f = f"{node.output[0]}__in{k}"
        args = [node.input[q], node.input[s]] + ([_inp(node, z)] if _inp(node, z) else [])
        out.append(helper.make_node("DequantizeLinear", args, [f],
                                    name=f"{node.name}_DQ{k}", axis=axis))
        floats.append(f)
    if bias is not None and _inp(node, bias):
        sx = mdl.consts[node.input[1]].astype(np.float32)
        sw = mdl.consts[node.input[4]].astype(np.float32).reshape(-1)
        bs = mdl.const(f"{node.name}_bias_scale", (sx * sw).astype(np.float32))
        f = f"{node.output[0]}__bias"
        out.append(helper.make_node("DequantizeLinear", [node.input[bias], bs], [f],
                                    name=f"{node.name}_DQb", axis=0))
        floats.append(f)
    quantized_out = bool(_inp(node, ys))  # QGemm without y_scale writes float
    yf = f"{node.output[0]}__float" if quantized_out else node.output[0]
    fnode = helper.make_node(fop, floats, [yf], name=node.name)
    fnode.attribute.extend(attrs)
    out.append(fnode)
    if quantized_out:
        args = [yf, node.input[ys]] + ([_inp(node, yz)] if _inp(node, yz) else [])
        out.append(helper.make_node("QuantizeLinear", args, [node.output[0]],
                                    name=f"{node.name}_Q"))
    return out


# ---- the strip ------------------------------------------------------------------------------

def strip_qdq(model: onnx.ModelProto, where: str) -> tuple[onnx.ModelProto, FixedQuant | None]:
    """Rewrite a pre-quantized model (in place) into its float form; see the module docs.

    Args:
        model: the ONNX model (changed in place and returned). where: file name for errors.

    Returns:
        (model, fixed): ``fixed`` is None when the model has no Q/DQ or QLinear nodes (it is
        returned unchanged then).

    Raises:
        UnsupportedError: naming the node: a quantized type other than int8/uint8, per-channel
            or blocked activation quantization, a DequantizeLinear whose parameters differ
            from its QuantizeLinear's, an int8 tensor read by an op other than a
            DequantizeLinear or a shape/max-pool op, an int8 graph input or output.
    """
    if not is_prequantized(model):
        return model, None
    mdl = _Model(model, where)
    for i, n in enumerate(model.graph.node):  # stable keys for the weight table
        if not n.name:
            n.name = n.output[0] if n.output else f"node_{i}"
    _expand_qlinear(mdl)
    drop_tccc_rounding(mdl.m, mdl.consts)
    fixed = FixedQuant()
    st = _Strip(mdl, fixed)
    for node in list(model.graph.node):
        st.visit(node)
    st.finish_outputs()
    st.fold_output_identities()
    del model.graph.node[:]
    model.graph.node.extend(st.kept)
    del model.graph.value_info[:]  # int8 tensor types are stale; inference runs again
    st.record_weights()
    for note in fixed.notes:
        log.warning("%s: %s", where, note)
    log.info("%s: pre-quantized model: %d activation and %d weight quantizations taken as "
             "given", where, len(fixed.activations), len(fixed.weights))
    return model, fixed


class _Strip:
    """One walk over the nodes in order (see :func:`strip_qdq`)."""

    def __init__(self, mdl: _Model, fixed: FixedQuant):
        self.mdl = mdl
        self.fixed = fixed
        self.kept: list[onnx.NodeProto] = []
        self.int_of: dict[str, tuple[str, ActParams, type]] = {}  # int8 tensor -> float
        self.alias: dict[str, str] = {}  # DQ output -> the float tensor it stands for
        self.wq: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}  # weight -> its DQ params

    def fix(self, name: str, p: ActParams, node: onnx.NodeProto) -> None:
        old = self.fixed.activations.setdefault(name, p)
        if old != p:
            self.fixed.notes.append(
                f"{node.op_type} '{node.name}': tensor '{name}' is quantized twice with "
                f"different parameters; using the first (scale {old.scale:.6g}, zero point "
                f"{old.zero_point})")

    def visit(self, node: onnx.NodeProto) -> None:
        ins = [self.alias.get(i, i) for i in node.input]
        if node.op_type == "QuantizeLinear":
            self.quantize(node, ins)
            return
        if node.op_type == "DequantizeLinear":
            self.dequantize(node, ins)
            return
        if node.op_type in _PASSTHROUGH and ins and ins[0] in self.int_of:
            src, p, dt = self.int_of[ins[0]]
            ins[0] = src
            out_f = f"{node.output[0]}__float"  # the op now runs on floats
            self.int_of[node.output[0]] = (out_f, p, dt)
            node.output[0] = out_f
            self.fix(out_f, p, node)
        bad = [i for i in ins if i in self.int_of]
        if bad:
            raise self.mdl.fail(node, f"reads the quantized tensor '{bad[0]}' directly (only "
                                      "DequantizeLinear, MaxPool and shape ops may)")
        del node.input[:]
        node.input.extend(ins)
        self.kept.append(node)

    def quantize(self, node: onnx.NodeProto, ins: list[str]) -> None:
        s, z, axis = self.mdl.qparams(node)
        if ins[0] in self.mdl.consts:  # weight-only fake quant (QAT): evaluate it
            self.mdl.consts[node.output[0]] = _quantize(self.mdl.consts[ins[0]], s, z, axis)
            return
        p = _act_params(self.mdl, node, s, z)
        self.int_of[node.output[0]] = (ins[0], p, z.dtype.type)
        self.fix(ins[0], p, node)

    def dequantize(self, node: onnx.NodeProto, ins: list[str]) -> None:
        x = ins[0]
        if x in self.mdl.consts:
            q = self.mdl.consts[x]
            if q.dtype not in (np.int8, np.uint8, np.int32):
                raise self.mdl.fail(node, f"{q.dtype} constant: only int8/uint8 weights and "
                                          "int32 biases are supported")
            s, z, axis = self.mdl.qparams(node, q.dtype.type)
            w = _dequantize(q, s, z, axis).astype(np.float32)
            self.mdl.m.graph.initializer.append(numpy_helper.from_array(w, node.output[0]))
            self.mdl.consts[node.output[0]] = w
            self.wq[node.output[0]] = (s, z, axis)
            return
        if x not in self.int_of:
            raise self.mdl.fail(node, f"input '{x}' is neither a constant nor a "
                                      "QuantizeLinear output (tccc compiles float-input "
                                      "models; an int8 graph input is not supported)")
        src, p, dt = self.int_of[x]
        s, z, _ = self.mdl.qparams(node, dt)
        if _act_params(self.mdl, node, s, z) != p:
            raise self.mdl.fail(node, "dequantizes with parameters that differ from its "
                                      "QuantizeLinear's (a requantization tccc cannot express)")
        self.alias[node.output[0]] = src

    def finish_outputs(self) -> None:
        """Graph outputs that were DequantizeLinear outputs: rename the float tensor they
        stand for to the output's name (an Identity when it is the input or already taken)."""
        g = self.mdl.m.graph
        inputs = {i.name for i in g.input}
        outs = {o.name for o in g.output}
        for o in g.output:
            if o.name in self.int_of:
                raise UnsupportedError(self.mdl.where, [
                    f"output '{o.name}': an int8 graph output is not supported (end the "
                    "model with a DequantizeLinear)"])
            src = self.alias.get(o.name)
            if src is None:
                continue
            if src in inputs or src in outs or src in self.mdl.consts:
                self.kept.append(helper.make_node("Identity", [src], [o.name],
                                                  name=f"{o.name}_Identity"))
                continue
            self._rename(src, o.name)
            outs.add(o.name)

    def fold_output_identities(self) -> None:
        """``x -> Identity -> output``, x read by nothing else: rename x to the output (the
        graph output keeps its name through the import, as when its producer wrote it)."""
        g = self.mdl.m.graph
        taken = {i.name for i in g.input} | {o.name for o in g.output} | set(self.mdl.consts)
        for o in g.output:
            ident = next((n for n in self.kept if n.op_type == "Identity"
                          and list(n.output) == [o.name]), None)
            if ident is None or ident.input[0] in taken:
                continue
            src = ident.input[0]
            if sum(src in n.input for n in self.kept) != 1:
                continue
            self.kept.remove(ident)
            self._rename(src, o.name)

    def _rename(self, src: str, dst: str) -> None:
        for n in self.kept:
            for lst in (n.input, n.output):
                for i, t in enumerate(lst):
                    if t == src:
                        lst[i] = dst
        if src in self.fixed.activations:
            self.fixed.activations[dst] = self.fixed.activations.pop(src)

    def record_weights(self) -> None:
        """Per-output-channel weight scales of Conv/Gemm/MatMul nodes (``fixed.weights``)."""
        for n in self.kept:
            if n.op_type not in _WEIGHT_OPS or len(n.input) < 2 or n.input[1] not in self.wq:
                continue
            s, z, axis = self.wq[n.input[1]]
            w = self.mdl.consts[n.input[1]]
            a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
            out_axis = 0 if n.op_type == "Conv" or (n.op_type == "Gemm" and a.get("transB")) \
                else 1
            z8 = z.astype(np.int64) - (128 if z.dtype == np.uint8 else 0)
            why = None
            if np.any(z8 != 0):
                why = "asymmetric weights (non-zero zero point)"
            elif s.size != 1 and axis % w.ndim != out_axis:
                why = f"weight quantized along axis {axis}, not its output channels"
            elif float(a.get("alpha", 1.0)) != 1.0:
                why = "Gemm alpha != 1 rescales the weights"
            if why:
                self.fixed.notes.append(f"{n.op_type} '{n.name}': {why}; tccc quantizes this "
                                        "weight itself (symmetric, per output channel)")
                continue
            self.fixed.weights[n.name] = np.broadcast_to(
                s.reshape(-1), (w.shape[out_axis],)).astype(np.float64).copy()


def attach_fixed(graph: Graph, fixed: FixedQuant) -> int:
    """Put the fixed parameters on the imported float graph's values (``Value.quant`` on a
    float32 value = "quantize with exactly these"; the quantize stage honours it).

    Activations match by value name; weights by the CONV/FC node converted from the ONNX
    node (``node.source[0]``), as per-channel ``QuantParams`` (axis 0) on its weight value.

    Returns:
        The number of values that got parameters.
    """
    count = 0
    for v in graph.values():
        p = fixed.activations.get(v.name)
        if p is not None and v.const is None:
            v.quant = QuantParams(np.float64(p.scale), np.int64(p.zero_point))
            count += 1
    for n in graph.nodes:
        s = fixed.weights.get(n.source[0]) if n.source and n.op in (Op.CONV, Op.FC) else None
        if s is not None and len(s) == n.inputs[1].shape[0]:
            n.inputs[1].quant = QuantParams(s, np.zeros(len(s), np.int64), axis=0)
            count += 1
    return count
