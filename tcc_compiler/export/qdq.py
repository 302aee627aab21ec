"""The compiled network as a standard QDQ ONNX model (QuantizeLinear/DequantizeLinear pairs).

What a reader sees in Netron is what the NPU runs: one ONNX op per *fused* NPU op (a conv with
its residual add and activation is ``DQ -> Conv -> Add -> Relu -> Q``), with tccc's exact
quantization parameters:

* activations: int8 per tensor, ``QuantizeLinear(y, s, zp)`` then ``DequantizeLinear`` with the
  same ``(s, zp)`` for every consumer (the scale as float32, the zero point as int8); an int16
  activation (mixed precision) has an int16 zero point, and the model then uses opset
  :data:`OPSET_INT16` (int16 QuantizeLinear/DequantizeLinear need opset 21), with a Q/DQ
  pair after each data-movement op that ONNX Runtime would otherwise add itself and then
  fail to load (:meth:`~tcc_compiler.export.qdq_builder.QdqBuilder.settle_views`);
* weights: the int8 tensor tccc stores (OIHW), ``DequantizeLinear`` per output channel
  (``axis=0``, zero point 0); int16 weights (mixed precision) are an int16 tensor with an
  int16 zero point (opset :data:`OPSET_INT16`);
* biases: the int32 tensor tccc stores, ``DequantizeLinear`` with ``s_x * s_w[o]`` per channel;
* an output tccc keeps as raw int32 ``acc + bias`` (logits before a host softmax/argmax, or the
  graph's last FC) stays float after the Conv/Gemm (no QuantizeLinear), as the host dequantizes
  it with ``s_x * s_w[o]``;
* host ops (Softmax, ArgMax) follow on the dequantized output, as in the manifest.

Rounding. tccc requantizes with a 31-bit fixed-point multiplier and rounds half up
(``(x * M + 2**(S-1)) >> S``, specs/quantization.md); ``QuantizeLinear`` rescales in float32
and rounds half to even. Two consequences:

* exact ties (a real value ``k + 1/2`` on tccc's grid) would round differently. They are
  frequent where the multipliers are short binary fractions: an average over a power-of-two
  window (``M / 2**S = 1/4`` for a 2x2 global pool: a quarter of the outputs are ties) or an
  add of two equal scales. For such an op the export inserts an ``Add`` of a constant
  ``delta * s_y`` just before the ``QuantizeLinear`` (node ``<op>_RoundHalfUp``), with
  ``delta`` half the distance from ``1/2`` to the nearest value below it that the op can
  produce (computed exactly from its integer multipliers over every reachable input), so
  round-half-even of ``t + delta`` equals round-half-up of ``t`` on every reachable ``t``.
  When no offset is safe (the nearest value below a tie is closer than float32 error, e.g.
  a GAP over 32x32 = 1024 values, whose sums are 1/1024 LSB apart), the pool is exported
  on the integer side instead: ``ReduceSum`` (or a ones-kernel depthwise ``Conv``) of the
  int8 input minus its zero point, then tccc's ``(sum * M + 2**(S-1)) >> S`` in int64,
  ``Clip`` and ``Cast`` to int8 (nodes ``<op>_RoundHalfUp`` ... ``<op>_ToInt8``): bit-exact.
  Conv epilogues get none: ``acc * M / 2**S`` is a tie only when ``acc`` is an odd multiple
  of ``2**(S-1-v2(M))``, with ``v2(M)`` the trailing zero bits of a 31-bit multiplier and
  ``S`` above 31 for real layers, i.e. beyond any accumulator (the test below counts exact
  ties separately from near-ties and finds none).
* values within float32 rounding error (about ``1e-5`` LSB) of ``k + 1/2`` may still round
  the other way: ONNX Runtime's multiplier ``s_x * s_w / s_y`` has 24 bits, tccc's 31.
  Layer by layer that is 1 LSB on about 2 in a million elements (ResNet-50 at 224x224 on the
  bundled photos); ``tests/export/test_export_qdq.py`` proves each such difference is a near-tie.
  Run end to end, such a 1-LSB difference propagates and is amplified by later layers.

Scales: ONNX stores them as float32; the model's metadata ``tccc.scales_f64`` keeps tccc's
float64 values, which ``tccc compile`` of this file uses (the round trip gives the same
binaries; other tools use the float32 initializers, which is the precision ONNX Runtime
computes in anyway).

Layouts: the exported input is float32 in the original ONNX model's layout: NCHW
``[1, C, H, W]``, or NHWC ``[1, H, W, C]`` with a Transpose(0, 3, 1, 2) to the IR's NCHW when
the model took NHWC (so the export takes the same arrays as the model it came from); outputs
keep their ONNX names and shapes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tcc_compiler.version import __version__
from tcc_compiler.errors import InputError, InternalError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.export.layout import register as _register_layout_ops
from tcc_compiler.export.qdq_builder import QdqBuilder
from tcc_compiler.export.ties import add_tie_offset, pool_tie_offset
from tcc_compiler.ir.ops import Op

log = logging.getLogger(__name__)

#: Model metadata key: {scale initializer: [float64 values as float.hex]}. ONNX scales are
#: float32; tccc's are float64, and ``tccc compile`` of the export reads these so the round
#: trip gives the same binaries (tcc_compiler/frontend/qdq_import.py).
EXACT_SCALES_KEY = "tccc.scales_f64"

#: ONNX opset of the export (per-axis DequantizeLinear, Clip with min/max inputs).
OPSET = 17
#: ONNX opset of an export with int16 activations (int16 Q/DQ), and its IR version.
OPSET_INT16, IR_VERSION_INT16 = 21, 10


def _export_matmul(b: QdqBuilder, n, xf: str) -> None:
    """conv / fc (+ residual add) (+ activation), requantized to int8 or left int32."""
    out = n.output
    if n.op is Op.CONV:
        a = n.attrs
        wf, bf = b.weights(n)
        y = b.node("Conv", [xf, wf, bf], b.uniq(f"{n.name}_acc"), n.name,
                   kernel_shape=list(a.kernel), strides=list(a.strides),
                   pads=list(a.pads), dilations=list(a.dilations), group=a.group)
    else:
        m = n.inputs[1].const.shape[0]
        wf, bf = b.weights(n, (m, -1))
        flat = b.node("Flatten", [xf], b.uniq(f"{n.name}_flat"), f"{n.name}_Flatten", axis=1)
        y = b.node("Gemm", [flat, wf, bf], b.uniq(f"{n.name}_acc"), n.name, transB=1)
        if len(out.shape) != 2:
            shp = b.const(b.uniq(f"{n.name}_shape"), np.asarray(out.shape, np.int64))
            y = b.node("Reshape", [y, shp], b.uniq(f"{n.name}_view"), f"{n.name}_Reshape")
    sc = n.input(3)
    if sc is not None:
        y = b.node("Add", [y, b.float_of[id(sc)]], b.uniq(f"{n.name}_sum"), f"{n.name}_Add")
    y = b.act(n.attrs.act, y, n.name)
    if n.input(5) is not None:   # per-channel clamp: the integer bounds the NPU applies
        y = _channel_clamp(b, n, y)
    if out.dtype == "int32":
        b.finish_float(out, y, n.name)
    else:
        b.qdq(out, y, n.name)


def _channel_clamp(b: QdqBuilder, n, y: str) -> str:
    """Max/Min of ``y`` with the dequantized per-channel bounds of the parameter records'
    clamp bytes (quant/params.channel_clamps): grid points, so QuantizeLinear after them
    gives the NPU's ``min(max(q, lo_q), hi_q)`` (rounding is monotone)."""
    from tcc_compiler.quant.params import channel_clamps

    c_lo, c_hi = channel_clamps(n)
    s = float(np.asarray(n.output.quant.scale).reshape(-1)[0])
    zp = int(np.asarray(n.output.quant.zero_point).reshape(-1)[0])
    shape = (1, -1, 1, 1) if len(n.output.shape) == 4 else (1, -1)
    lo = ((c_lo - 128 - zp) * s).astype(np.float32).reshape(shape)
    hi = ((127 - c_hi - zp) * s).astype(np.float32).reshape(shape)
    y = b.node("Max", [y, b.const(b.uniq(f"{n.name}_clamp_lo"), lo)],
               b.uniq(f"{n.name}_cmax"), f"{n.name}_ClampLo")
    return b.node("Min", [y, b.const(b.uniq(f"{n.name}_clamp_hi"), hi)],
                  b.uniq(f"{n.name}_cmin"), f"{n.name}_ClampHi")


def _export_add(b: QdqBuilder, n, xf: str) -> None:
    y = b.node("Add", [xf, b.float_of[id(n.inputs[1])]], b.uniq(f"{n.name}_sum"), n.name)
    y = b.act(n.attrs.act, y, n.name)
    b.qdq(n.output, b.round_half_up(y, add_tie_offset(n), n.output, n.name), n.name)


def _export_pool(b: QdqBuilder, n, xf: str) -> None:
    """max/average pool; an average with no safe rounding offset goes through exact ops."""
    from tcc_compiler.quant.params import pool_divisors

    # a divisor per pixel (count_include_pad=0) has no one tie offset: integer ops, exact
    if n.op is Op.AVGPOOL and (pool_divisors(n) is not None or pool_tie_offset(n) is None):
        b.exact_pool(n)
        return
    a = n.attrs
    kw = dict(kernel_shape=list(a.kernel), strides=list(a.strides), pads=list(a.pads))
    if n.op is Op.AVGPOOL:  # tccc divides by the kernel area (pads count as zeros)
        kw["count_include_pad"] = 1
    y = b.node("MaxPool" if n.op is Op.MAXPOOL else "AveragePool", [xf],
               b.uniq(f"{n.name}_pool"), n.name, **kw)
    if n.op is Op.AVGPOOL:
        y = b.round_half_up(y, pool_tie_offset(n), n.output, n.name)
    b.qdq(n.output, y, n.name)


def _export_gap(b: QdqBuilder, n, xf: str) -> None:
    if pool_tie_offset(n) is None:
        b.exact_pool(n)
        return
    y = b.node("GlobalAveragePool", [xf], b.uniq(f"{n.name}_pool"), n.name)
    b.qdq(n.output, b.round_half_up(y, pool_tie_offset(n), n.output, n.name), n.name)


def _export_reshape(b: QdqBuilder, n, xf: str) -> None:
    """A view: same bytes, same quantization as its input."""
    shp = b.const(b.uniq(f"{n.name}_shape"), np.asarray(n.output.shape, np.int64))
    y = b.node("Reshape", [xf, shp], b.uniq(f"{n.name}_view"), n.name)
    b.finish_float(n.output, y, n.name)


def _export_softmax(b: QdqBuilder, n, xf: str) -> None:
    y = b.node("Softmax", [xf], b.uniq(f"{n.name}_out"), n.name, axis=n.attrs.axis)
    b.finish_float(n.output, y, n.name)


def _export_group_softmax(b: QdqBuilder, n, xf: str) -> None:
    """Softmax over channel groups: Reshape [N, C/g, g, H*W], float Softmax over axis 2,
    Reshape back, then QuantizeLinear to the fixed 1/256, -128 (the NPU's integer softmax
    differs by its exp table's and reciprocal's rounding: within one output step)."""
    nb, c, h, w = n.output.shape
    g = n.attrs.group
    r = b.node("Reshape", [xf, b.const(b.uniq(f"{n.name}_s4"), np.array(
        [nb, c // g, g, h * w], np.int64))], b.uniq(f"{n.name}_r"), f"{n.name}_Reshape")
    y = b.node("Softmax", [r], b.uniq(f"{n.name}_sm"), n.name, axis=2)
    y = b.node("Reshape", [y, b.const(b.uniq(f"{n.name}_sb"), np.array(
        [nb, c, h, w], np.int64))], b.uniq(f"{n.name}_p"), f"{n.name}_Reshape_1")
    b.qdq(n.output, y, n.name)


def _export_argmax(b: QdqBuilder, n, xf: str) -> None:
    y = b.node("ArgMax", [xf], b.uniq(f"{n.name}_out"), n.name, axis=n.attrs.axis,
               keepdims=int(n.attrs.keepdims))
    b.finish_float(n.output, y, n.name)


def _export_lut(b: QdqBuilder, n, xf: str) -> None:
    """Lookup-table activation, bit-exact: the table itself as an int8 ``Gather`` on the int8
    input (index ``q + 128``, plus ``256 * c`` with one table per channel), then DQ."""
    from tcc_compiler.quant.params import lut_quant

    lq = lut_quant(n)
    if lq.wide:
        _export_lut_wide(b, n, lq.tables[0], lq.wide_out)
        return
    tables = lq.tables
    t = tables.shape[0]
    src = f"{n.name}_{n.attrs.func.value}"
    idx = b.node("Cast", [b.int8(n.inputs[0], n.name)], b.uniq(f"{n.name}_q64"),
                 f"{src}_Cast", to=TensorProto.INT64)
    off = np.int64(128) if t == 1 else (128 + 256 * np.arange(t, dtype=np.int64)).reshape(
        (1, t) + (1,) * (len(n.output.shape) - 2))
    idx = b.node("Add", [idx, b.const(b.uniq(f"{n.name}_offset"), off)],
                 b.uniq(f"{n.name}_index"), f"{src}_Index")
    tab = b.const(b.uniq(f"{n.name}_table"), tables.reshape(-1).astype(np.int8))
    q = b.node("Gather", [tab, idx], f"{n.output.name}_quantized", src, axis=0)
    b.dq(n.output, q, n.name)


def _export_lut_wide(b: QdqBuilder, n, knots: np.ndarray, wide_out: bool = False) -> None:
    """An int16-input table, bit-exact (numerics/lut.py apply_lut_wide) in int64 ONNX ops:
    ``u = q + 32768``, ``i = u / 256`` (non-negative: ``Div`` truncates = floors),
    ``f = u - 256 i``, the two knots gathered, and the rounding shift by ``S`` (15 for an
    int8 output, 8 for an int16 one: ``wide_out``) as a ``Div`` of a numerator made
    non-negative by ``2**23`` (``|K| * 256 <= 2**23``), taken off after."""
    src = f"{n.name}_{n.attrs.func.value}"
    sh = 8 if wide_out else 15
    lo, hi, to = ((-32768, 32767, TensorProto.INT16) if wide_out
                  else (-128, 127, TensorProto.INT8))

    def op(kind: str, ins: list[str], tag: str, **attrs) -> str:
        return b.node(kind, ins, b.uniq(f"{n.name}_{tag}"), f"{src}_{tag}", **attrs)

    def c(tag: str, v: int) -> str:
        return b.const(b.uniq(f"{n.name}_{tag}"), np.int64(v))

    q16 = op("Cast", [b.int8(n.inputs[0], n.name)], "q64", to=TensorProto.INT64)   # int16
    u = op("Add", [q16, c("half", 32768)], "u")
    i = op("Div", [u, c("step", 256)], "knot")
    f = op("Sub", [u, op("Mul", [i, c("step", 256)], "base")], "frac")
    tab = b.const(b.uniq(f"{n.name}_knots"), knots.astype(np.int64))
    k0 = op("Gather", [tab, i], "k0")
    k1 = op("Gather", [tab, op("Add", [i, c("one", 1)], "next")], "k1")
    acc = op("Add", [op("Mul", [k0, op("Sub", [c("step", 256), f], "rest")], "w0"),
                     op("Mul", [k1, f], "w1")], "acc")
    y = op("Div", [op("Add", [acc, c("bias", (1 << 23) + (1 << (sh - 1)))], "num"),
                   c("den", 1 << sh)], "shift")
    y = op("Sub", [y, c("unbias", 1 << (23 - sh))], "y")
    y = op("Clip", [y, c("lo", lo), c("hi", hi)], "clip")
    q = b.node("Cast", [y], f"{n.output.name}_quantized", f"{src}_Cast8", to=to)
    b.dq(n.output, q, n.name)


def _export_eltwise(b: QdqBuilder, n, xf: str) -> None:
    """Sub/Mul of two activations, or an add with an [N,C,1,1] operand (ONNX broadcasts it):
    the float op then QuantizeLinear (ties may round differently, see the module docs)."""
    kind = {Op.ADD: "Add", Op.SUB: "Sub", Op.MUL: "Mul"}[n.op]
    y = b.node(kind, [xf, b.float_of[id(n.inputs[1])]], b.uniq(f"{n.name}_{kind.lower()}"),
               n.name)
    y = b.act(n.attrs.act, y, n.name)
    b.qdq(n.output, y, n.name)


def _export_add_any(b: QdqBuilder, n, xf: str) -> None:
    if n.inputs[1].shape != n.inputs[0].shape:
        _export_eltwise(b, n, xf)
    else:
        _export_add(b, n, xf)


#: Op -> exporter (builder, node, float input name): appends the node's ONNX form.
_EXPORT_RULES = {
    Op.CONV: _export_matmul, Op.FC: _export_matmul, Op.ADD: _export_add_any,
    Op.SUB: _export_eltwise, Op.MUL: _export_eltwise, Op.LUT: _export_lut,
    Op.GROUP_SOFTMAX: _export_group_softmax,
    Op.MAXPOOL: _export_pool, Op.AVGPOOL: _export_pool, Op.GAP: _export_gap,
    Op.RESHAPE: _export_reshape, Op.SOFTMAX: _export_softmax, Op.ARGMAX: _export_argmax,
}
_register_layout_ops(_EXPORT_RULES)   # concat, slice, resize (export/layout.py)


def _export_inputs(b: QdqBuilder, graph: Graph) -> tuple[list[onnx.ValueInfoProto], bool]:
    """The exported model's float32 inputs, each quantized and dequantized with its IR
    input's parameters: the first in the original model's layout (NCHW ``[1, C, H, W]``, or
    NHWC ``[1, H, W, C]`` followed by a Transpose to NCHW); the further inputs of a program
    with several (an NPU segment's, specs/manifest.md) NCHW under their own names.

    Returns:
        (input ValueInfos in the IR's input order, whether the first input is NHWC).
    """
    inp = graph.inputs[0]
    in_name = str(graph.meta.get("onnx_input", inp.name))
    in_shape = list(inp.shape)
    nhwc = graph.meta.get("input_layout") == "NHWC" and len(in_shape) == 4
    x = in_name
    if nhwc:   # the model took NHWC: so does its export, transposed to the IR's NCHW
        n_, c_, h_, w_ = in_shape
        in_shape = [n_, h_, w_, c_]
        x = b.node("Transpose", [in_name], b.uniq(f"{in_name}_nchw"), "input_nchw",
                   perm=[0, 3, 1, 2])
    b.qdq(inp, x, "input")
    vis = [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape)]
    for k, extra in enumerate(graph.inputs[1:], 1):
        b.qdq(extra, extra.name, f"input{k}")
        vis.append(helper.make_tensor_value_info(extra.name, TensorProto.FLOAT,
                                                 list(extra.shape)))
    return vis, nhwc


def export_qdq(graph: Graph) -> onnx.ModelProto:
    """Build the QDQ ONNX model of a quantized graph IR.

    Args:
        graph: the quantized graph (``CompiledModel.quantized_graph`` or ``load_ir`` of an
            output folder's ``quantized.tir``).

    Returns:
        A checked ``onnx.ModelProto`` (opset :data:`OPSET`), input float32 in the original
        model's layout: NCHW ``[1, C, H, W]``, or NHWC ``[1, H, W, C]`` followed by a
        Transpose to NCHW when the model took NHWC (``graph.meta["input_layout"]``).

    Raises:
        InputError: the graph is not quantized. InternalError: an op without a QDQ form.
    """
    if not graph.meta.get("quantized"):
        raise InputError(f"graph '{graph.name}': not quantized (export a compiled model)")
    b = QdqBuilder(graph)
    in_vis, nhwc = _export_inputs(b, graph)
    for n in graph.nodes:
        rule = _EXPORT_RULES.get(n.op)
        if rule is None:
            raise InternalError(f"QDQ export: no ONNX form for {n.op.value} '{n.name}'")
        rule(b, n, b.float_of[id(n.inputs[0])])
    outs = []
    for o in graph.outputs:
        et = TensorProto.INT64 if o.producer is not None and o.producer.op is Op.ARGMAX \
            else TensorProto.FLOAT
        outs.append(helper.make_tensor_value_info(o.name, et, list(o.shape)))
    wide = any(v.dtype == "int16" for v in graph.values())
    if wide:   # opset 21: ONNX Runtime's own pairs there would not load (settle_views)
        log.debug("QDQ export: %d Q/DQ pair(s) after data-movement ops", b.settle_views())
    g = helper.make_graph(b.nodes, f"{graph.name}_qdq", in_vis, outs, b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid(
        "", OPSET_INT16 if wide else OPSET)], producer_name="tccc", producer_version=__version__)
    model.ir_version = IR_VERSION_INT16 if wide else 8
    acts = "int8/int16" if wide else "int8"
    helper.set_model_props(model, {"tccc.layout": f"{'NHWC' if nhwc else 'NCHW'} input; "
                                                  f"{acts} QDQ activations, "
                                                  f"per-channel {acts} weights, int32 bias",
                                   EXACT_SCALES_KEY: json.dumps(b.exact, sort_keys=True)})
    onnx.checker.check_model(model, full_check=True)
    return model


def save_qdq(folder: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Export a compiled output folder (its ``quantized.tir`` + ``.npz``) to a QDQ ``.onnx``.

    The folder is validated first as ``tccc run`` does (manifest fields, both binaries' sizes
    and CRC-32s), so a corrupted output folder is refused rather than exported.

    Raises:
        InputError, FormatError: the folder or its IR is missing or invalid (the message names
        the file); the output file cannot be written.
    """
    from tcc_compiler.fsutil import check_output_file, write_output_file
    from tcc_compiler.ir.text import load_ir
    from tcc_compiler.runtime import load_program

    check_output_file(path, "-o", reads=folder)
    load_program(folder)

    tir = Path(folder) / "quantized.tir"
    if not tir.is_file():
        raise InputError(f"{tir}: missing (is {folder} a tccc output folder?)")
    model = export_qdq(load_ir(tir))
    path = write_output_file(path, model.SerializeToString(), "-o")
    log.info("wrote %s (%d nodes)", path, len(model.graph.node))
    return path
