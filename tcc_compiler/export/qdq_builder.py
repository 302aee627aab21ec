"""The graph builder of the QDQ export (:mod:`tcc_compiler.export.qdq`): ONNX nodes and
initializers accumulated in order, each IR value mapped to its float (dequantized) and int8
tensors, the Quantize/DequantizeLinear pairs, per-channel weight and bias DequantizeLinear
(OIHW, ``axis=0``), the round-half-up offsets and the integer-side average pool, and the
Q/DQ pairs an opset-21 export writes after its data-movement ops (:meth:`QdqBuilder.settle_views`).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.errors import InternalError
from tcc_compiler.export.ties import pool_multipliers, qrange
from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.ir.ops import ActKind, Op

log = logging.getLogger(__name__)

#: ONNX ops that ONNX Runtime's QDQPropagationTransformer moves a DequantizeLinear past,
#: inserting a Q/DQ pair after them (onnxruntime/core/optimizer/qdq_transformer/
#: qdq_propagation.cc, ``CanNodePropagate``).
PROPAGATED_OPS = frozenset({"Slice", "Reshape", "Transpose", "MaxPool", "Squeeze",
                            "Unsqueeze"})


class QdqBuilder:
    """Accumulates nodes/initializers; maps IR values to their float (dequantized) tensors.

    Attributes:
        nodes, inits: the ONNX nodes and initializers, in the order built.
        float_of, int8_of: ``id(value)`` -> name of its float (dequantized) / int8 tensor.
        out_names: ``id(value)`` -> graph output name, for the graph's outputs.
        exact: scale initializer -> its float64 values (``float.hex``), the export's metadata.
    """

    def __init__(self, graph: Graph):
        self.g = graph
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.float_of: dict[int, str] = {}
        self.int8_of: dict[int, str] = {}
        self.out_names = {id(v): v.name for v in graph.outputs}
        self.exact: dict[str, list[str]] = {}
        self._n = 0

    def uniq(self, base: str) -> str:
        """A tensor name from ``base`` made unique by a counter (``base__N``)."""
        self._n += 1
        return f"{base}__{self._n}"

    def const(self, name: str, arr: np.ndarray) -> str:
        """Add initializer ``name`` holding ``arr`` (its dtype kept); returns ``name``."""
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        """Add one ONNX node ``op`` (default domain) with one output; returns ``output``."""
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def qparams(self, v: Value) -> tuple[str, str]:
        """(scale, zero point) initializers of a per-tensor int8 activation value."""
        q = v.quant
        if q is None or q.per_channel:
            raise InternalError(f"QDQ export: value '{v.name}' has no per-tensor quantization")
        s = self.scale(self.uniq(f"{v.name}_scale"), q.scale)
        zt = np.int16 if v.dtype == "int16" else np.int8
        z = self.const(self.uniq(f"{v.name}_zero_point"), zt(q.zero_point))
        return s, z

    def scale(self, name: str, s: np.ndarray, shape: tuple[int, ...] | None = None) -> str:
        """A float32 scale initializer; its float64 value is kept in
        :data:`tcc_compiler.export.qdq.EXACT_SCALES_KEY` so that ``tccc compile`` of the export
        re-imports tccc's exact scales."""
        s64 = np.asarray(s, np.float64) if shape is None else \
            np.asarray(s, np.float64).reshape(shape)
        self.exact[name] = [float(x).hex() for x in s64.reshape(-1)]
        return self.const(name, s64.astype(np.float32))

    def qdq(self, v: Value, real: str, src: str) -> None:
        """Quantize float tensor ``real`` with ``v``'s parameters, then dequantize it into the
        float tensor that stands for ``v`` (named as the graph output when it is one)."""
        s, z = self.qparams(v)
        qname = self.node("QuantizeLinear", [real, s, z], f"{v.name}_quantized", f"{src}_Q")
        self.dq(v, qname, src)

    def dq(self, v: Value, qname: str, src: str) -> None:
        """Dequantize the int8 tensor ``qname`` holding ``v`` into the float tensor for ``v``."""
        s, z = self.qparams(v)
        self.int8_of[id(v)] = qname
        out = self.out_names.get(id(v), f"{v.name}_dequantized")
        self.float_of[id(v)] = self.node("DequantizeLinear", [qname, s, z], out, f"{src}_DQ")

    def int8(self, v: Value, src: str) -> str:
        """The int8 tensor of activation ``v`` (re-quantized from its float form when ``v`` was
        not produced by a QuantizeLinear, e.g. a reshape view: an exact round trip)."""
        if id(v) not in self.int8_of:
            s, z = self.qparams(v)
            self.int8_of[id(v)] = self.node("QuantizeLinear", [self.float_of[id(v)], s, z],
                                            self.uniq(f"{v.name}_requantized"), f"{src}_Q_in")
        return self.int8_of[id(v)]

    def exact_pool(self, n) -> None:
        """Average pool / GAP computed on the integer side, bit-exact with tccc.

        ``y = clamp(zp_y + floor((sum_window(x - zp_x) * M + 2**(S-1)) / 2**S))``
        (numerics/kernels.avgpool_int8): the window sum of the int8 input (minus ``zp_x``) in
        float32 (exact: integers below ``2**24``), then int64 ``Mul``/``Add``/``Div`` (``Div``
        truncates toward zero, so a multiple ``C * 2**S`` keeps the numerator non-negative and
        is subtracted after), ``Clip`` and ``Cast`` to int8, then the usual DequantizeLinear.
        Used when no constant offset before QuantizeLinear is safe (see :func:`~.ties.tie_offset`),
        and for a pool whose divisor varies per pixel (count_include_pad=0 at the borders: M,
        S and the offsets become [1, 1, OH, OW] constants, :func:`~.ties.pool_multipliers`).

        Raises:
            InternalError: a window sum could reach ``2**24`` (not exact in float32).
        """
        from tcc_compiler.quant.params import pool_quant

        p = pool_quant(n)
        x, out = n.inputs[0], n.output
        c = x.shape[1]
        area = x.shape[2] * x.shape[3] if n.op is Op.GAP else \
            n.attrs.kernel[0] * n.attrs.kernel[1]
        qmin, qmax = qrange(x)
        lo, hi = area * (qmin - p.zp_in), area * (qmax - p.zp_in)
        if max(-lo, hi) >= 1 << 24:
            raise InternalError(f"QDQ export: {n.op.value} '{n.name}': window sums up to "
                                f"{max(-lo, hi)} are not exact in float32")
        one = self.const(self.uniq(f"{n.name}_one"), np.float32(1.0))
        zx = self.const(self.uniq(f"{n.name}_zp_in"),
                        (np.int16 if x.dtype == "int16" else np.int8)(p.zp_in))
        d = self.node("DequantizeLinear", [self.int8(x, n.name), one, zx],
                      self.uniq(f"{n.name}_centred"), f"{n.name}_Centre")
        if n.op is Op.GAP:
            axes = self.const(self.uniq(f"{n.name}_axes"), np.asarray([2, 3], np.int64))
            tot = self.node("ReduceSum", [d, axes], self.uniq(f"{n.name}_sum"), n.name,
                            keepdims=1)
        else:  # depthwise conv with a kernel of ones: the window sum, pads as zeros
            a = n.attrs
            ones = self.const(self.uniq(f"{n.name}_ones"),
                              np.ones((c, 1, a.kernel[0], a.kernel[1]), np.float32))
            tot = self.node("Conv", [d, ones], self.uniq(f"{n.name}_sum"), n.name,
                            kernel_shape=list(a.kernel), strides=list(a.strides),
                            pads=list(a.pads), group=c)
        mult, shift = pool_multipliers(n)
        big = (-lo * mult >> shift) + 1  # C: lo * M + C * 2**S >= 0

        def i64(name: str, val) -> str:
            return self.const(self.uniq(f"{n.name}_{name}"), np.asarray(val, np.int64))

        t = self.node("Cast", [tot], self.uniq(f"{n.name}_sum_i64"), f"{n.name}_Cast",
                      to=TensorProto.INT64)
        t = self.node("Mul", [t, i64("mult", mult)], self.uniq(f"{n.name}_prod"),
                      f"{n.name}_Mul")
        t = self.node("Add", [t, i64("round", (1 << (shift - 1)) + (big << shift))],
                      self.uniq(f"{n.name}_rounded"), f"{n.name}_RoundHalfUp")
        t = self.node("Div", [t, i64("div", 1 << shift)], self.uniq(f"{n.name}_shifted"),
                      f"{n.name}_Shift")
        t = self.node("Add", [t, i64("zp_out", p.zp_out - big)], self.uniq(f"{n.name}_q64"),
                      f"{n.name}_ZeroPoint")
        t = self.node("Clip", [t, i64("min", qmin), i64("max", qmax)],
                      self.uniq(f"{n.name}_clamped"), f"{n.name}_Clamp")
        q = self.node("Cast", [t], f"{out.name}_quantized", f"{n.name}_ToInt8",
                      to=TensorProto.INT16 if out.dtype == "int16" else TensorProto.INT8)
        self.dq(out, q, n.name)

    def round_half_up(self, real: str, delta: float, v: Value, src: str) -> str:
        """``real + delta * s_v``: makes QuantizeLinear's ties-to-even match tccc's half-up."""
        if delta == 0.0:
            return real
        c = self.const(self.uniq(f"{src}_half_up"), np.float32(delta * v.quant.scale))
        log.debug("QDQ export: %s: ties possible, +%.4g LSB before QuantizeLinear", src, delta)
        return self.node("Add", [real, c], self.uniq(f"{src}_rhu"), f"{src}_RoundHalfUp")

    def finish_float(self, v: Value, real: str, src: str) -> None:
        """``v`` stays float (raw int32 conv output or a host op result)."""
        if id(v) in self.out_names:
            real = self.node("Identity", [real], self.out_names[id(v)], f"{src}_out")
        self.float_of[id(v)] = real

    def act(self, act, real: str, src: str) -> str:
        """``real`` through the fused activation ``act`` (Relu, Clip at its float bounds,
        LeakyRelu at its slope; other kinds unchanged); returns the resulting tensor name."""
        if act.kind is ActKind.RELU:
            return self.node("Relu", [real], self.uniq(f"{src}_relu"), f"{src}_Relu")
        if act.kind is ActKind.CLIP:
            lo = self.const(self.uniq(f"{src}_min"), np.float32(act.lo))
            hi = self.const(self.uniq(f"{src}_max"), np.float32(act.hi))
            return self.node("Clip", [real, lo, hi], self.uniq(f"{src}_clip"), f"{src}_Clip")
        if act.kind is ActKind.LEAKY:
            return self.node("LeakyRelu", [real], self.uniq(f"{src}_leaky"), f"{src}_LeakyRelu",
                             alpha=float(act.lo))
        return real

    def weights(self, node, w_shape: tuple[int, ...] | None = None) -> tuple[str, str]:
        """DequantizeLinear of the int8 (or int16) weights (per output channel) and int32
        bias."""
        w, b = node.inputs[1], node.inputs[2]
        wq = w.const if w_shape is None else w.const.reshape(w_shape)
        o = wq.shape[0]
        wt = np.int16 if w.dtype == "int16" else np.int8
        wi = self.const(f"{w.name}_quantized", wq.astype(wt))
        ws = self.scale(f"{w.name}_scale", w.quant.scale, (o,))
        wz = self.const(f"{w.name}_zero_point", np.zeros(o, wt))
        wf = self.node("DequantizeLinear", [wi, ws, wz], f"{w.name}_dequantized",
                       f"{node.name}_W_DQ", axis=0)
        bi = self.const(f"{b.name}_quantized", b.const.astype(np.int32).reshape(o))
        bs = self.scale(f"{b.name}_scale", b.quant.scale, (o,))
        bz = self.const(f"{b.name}_zero_point", np.zeros(o, np.int32))
        bf = self.node("DequantizeLinear", [bi, bs, bz], f"{b.name}_dequantized",
                       f"{node.name}_B_DQ", axis=0)
        return wf, bf

    def settle_views(self) -> int:
        """Write the Q/DQ pair after every data-movement op (:data:`PROPAGATED_OPS`) that
        reads a per-tensor dequantized value and feeds anything but QuantizeLinear nodes,
        with that value's scale and zero point, so ONNX Runtime's graph optimizations have no
        pair to insert there. Called for an opset-21 export (int16 values): ONNX Runtime 1.32
        at its default optimization level inserts such a pair itself with ``output_dtype``
        INT8, then ``QDQS8ToU8Transformer`` turns its zero point uint8 and the session fails
        to load ("output_dtype INT8 does not match y_zero_point type UINT8"); a pair already
        present is left as the model wrote it (its Q has no ``output_dtype``).

        Exact: the op only moves (or, MaxPool, selects) grid values ``s * (q - zp)``, and
        QuantizeLinear of a float32 ``s * k`` gives ``k`` back (relative error a few float32
        ulps, below 0.02 LSB for ``|k| <= 65535``). Names are kept: the op's output is
        renamed and the DequantizeLinear writes the original name (graph outputs too).

        Returns:
            The number of pairs written.
        """
        scalar = {i.name for i in self.inits if len(i.dims) == 0}
        users: dict[str, list[onnx.NodeProto]] = {}
        for nd in self.nodes:
            for name in nd.input:
                users.setdefault(name, []).append(nd)
        outputs = set(self.out_names.values())
        grid: dict[str, tuple[str, str]] = {}   # tensor -> (scale, zero point) it lies on
        nodes: list[onnx.NodeProto] = []
        for nd in self.nodes:
            nodes.append(nd)
            if nd.op_type == "DequantizeLinear" and len(nd.input) == 3 \
                    and nd.input[1] in scalar and nd.input[2] in scalar:
                grid[nd.output[0]] = (nd.input[1], nd.input[2])
                continue
            if nd.op_type not in PROPAGATED_OPS or nd.input[0] not in grid:
                continue
            out = nd.output[0]
            readers = users.get(out, [])
            if readers and out not in outputs and \
                    all(r.op_type == "QuantizeLinear" for r in readers):
                continue
            s, z = grid[out] = grid[nd.input[0]]
            nd.output[0] = self.uniq(f"{out}_moved")
            q = self.uniq(f"{out}_quantized")
            nodes.append(helper.make_node("QuantizeLinear", [nd.output[0], s, z], [q],
                                          name=self.uniq(f"{nd.name}_Q")))
            nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [out],
                                          name=self.uniq(f"{nd.name}_DQ")))
        added = (len(nodes) - len(self.nodes)) // 2
        self.nodes = nodes
        return added
