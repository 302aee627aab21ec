"""Tiny pre-quantized (QDQ) ONNX models built with onnx.helper, as quantizers write them.

:func:`tiny_net` is a float net (Conv+Relu, MaxPool, Conv, residual Add+Relu, GAP, Flatten,
Gemm); :func:`to_qdq` quantizes any such float model the way ONNX Runtime's ``quantize_static``
and PyTorch QAT exports do: a QuantizeLinear/DequantizeLinear pair after the input and every
op output (MaxPool and Flatten reuse their input's parameters), int8 weights with a
DequantizeLinear (per output channel from opset 13, per tensor before), int32 biases with
scale ``s_x * s_w``; or, with ``fake_quant_weights``, float weights behind a
QuantizeLinear -> DequantizeLinear pair (the QAT form). Activation ranges are the min/max
ONNX Runtime computes on the given inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

#: Ops whose output keeps their input's quantization (as ONNX Runtime's quantizer does).
_SAME_AS_INPUT = ("MaxPool", "Flatten", "Reshape")


def tiny_net(seed: int = 0, hw: int = 16, c: int = 8) -> onnx.ModelProto:
    """Float net, input ``x`` [1, 3, hw, hw] -> logits ``y`` [1, 10] (opset 13)."""
    r = np.random.default_rng(seed)

    def w(*shape, k=1.0):
        return (r.standard_normal(shape) * k / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = {"w1": w(c, 3, 3, 3, k=2), "b1": (r.standard_normal(c) * .1).astype(np.float32),
             "w2": w(c, c, 3, 3, k=1.5), "b2": (r.standard_normal(c) * .1).astype(np.float32),
             "fw": w(10, c, k=2), "fb": (r.standard_normal(10) * .1).astype(np.float32)}
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, kernel_shape=[3, 3], name="c1"),
             n("Relu", ["c1"], ["r1"], name="r1"),
             n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="p1"),
             n("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1] * 4, kernel_shape=[3, 3], name="c2"),
             n("Add", ["c2", "p1"], ["a"], name="add"),
             n("Relu", ["a"], ["r2"], name="r2"),
             n("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             n("Flatten", ["g"], ["f"], name="flat"),
             n("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc")]
    g = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _ranges(model: onnx.ModelProto, xs: list[np.ndarray]) -> dict[str, tuple[float, float]]:
    """min/max of the input and every node output over ``xs`` (ONNX Runtime, float)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = [o for nd in m.graph.node for o in nd.output]
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                          for t in names)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = model.graph.input[0].name
    lo = {t: np.inf for t in names + [inp]}
    hi = {t: -np.inf for t in names + [inp]}
    for x in xs:
        for t, v in zip(names + [inp], s.run(names, {inp: x}) + [x]):
            lo[t], hi[t] = min(lo[t], float(v.min())), max(hi[t], float(v.max()))
    return {t: (lo[t], hi[t]) for t in lo}


def _act(lo: float, hi: float, uint8: bool) -> tuple[np.float32, np.ndarray]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = np.float32((hi - lo) / 255.0)
    z = int(np.clip(np.round(-128 - lo / float(s)), -128, 127))
    return s, (np.uint8(z + 128) if uint8 else np.int8(z))


def to_qdq(model: onnx.ModelProto, xs: list[np.ndarray], opset: int = 13,
           uint8: bool = False, per_channel: bool = True,
           fake_quant_weights: bool = False, skip: tuple[str, ...] = ()) -> onnx.ModelProto:
    """The QDQ form of a float model of Conv/Gemm/Relu/Add/pool/Flatten nodes (module doc).

    Args:
        xs: calibration inputs (NCHW float32). opset: 10..21 (per-tensor weights below 13).
        uint8: activations uint8 (zero point + 128) instead of int8.
        skip: tensors left without a Q/DQ pair (a partly quantized model).
    """
    per_channel = per_channel and opset >= 13
    rng = _ranges(model, xs)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out_inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    act: dict[str, tuple] = {}   # float tensor -> (scale, zp) ; its readers use name + "_dq"
    inp = model.graph.input[0].name
    outputs = {o.name for o in model.graph.output}

    def const(name, arr):
        out_inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def qdq(t, params, final=None):
        s, z = params
        act[t] = params
        sq, zq = const(f"{t}_s", s), const(f"{t}_z", z)
        nodes.append(helper.make_node("QuantizeLinear", [t, sq, zq], [f"{t}_q"], name=f"{t}_Q"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{t}_q", sq, zq],
                                      [final or f"{t}_dq"], name=f"{t}_DQ"))

    def reader(t):
        return f"{t}_dq" if t in act else t

    def weight(nd, wname, bname):
        wf = inits[wname].astype(np.float64)
        amax = np.abs(wf.reshape(wf.shape[0], -1)).max(axis=1) if per_channel \
            else np.array(np.abs(wf).max())
        s_w = (np.maximum(amax, 1e-8) / 127.0).astype(np.float32)
        shape = (-1,) + (1,) * (wf.ndim - 1) if per_channel else ()
        kw = {"axis": 0} if per_channel else {}
        sw = const(f"{wname}_s", s_w)
        zw = const(f"{wname}_z", np.zeros(s_w.shape, np.int8))
        if fake_quant_weights:
            const(f"{wname}_f", inits[wname])
            nodes.append(helper.make_node("QuantizeLinear", [f"{wname}_f", sw, zw],
                                          [f"{wname}_q"], name=f"{wname}_Q", **kw))
        else:
            q = np.clip(np.rint(wf / s_w.reshape(shape)), -127, 127).astype(np.int8)
            const(f"{wname}_q", q)
        nodes.append(helper.make_node("DequantizeLinear", [f"{wname}_q", sw, zw],
                                      [f"{wname}_dq"], name=f"{wname}_DQ", **kw))
        s_x = act[nd.input[0]][0]
        s_b = (np.float32(s_x) * s_w).astype(np.float32).reshape(-1)
        b = inits[bname].astype(np.float64)
        qb = np.rint(b / np.broadcast_to(s_b, b.shape)).astype(np.int32)
        const(f"{bname}_q", qb)
        sb = const(f"{bname}_s", s_b if per_channel else s_b.reshape(()))
        zb = const(f"{bname}_z", np.zeros(s_b.shape if per_channel else (), np.int32))
        nodes.append(helper.make_node("DequantizeLinear", [f"{bname}_q", sb, zb],
                                      [f"{bname}_dq"], name=f"{bname}_DQ", **kw))
        return f"{wname}_dq", f"{bname}_dq"

    if inp not in skip:
        qdq(inp, _act(*rng[inp], uint8))
    for nd in model.graph.node:
        new = helper.make_node(nd.op_type, [], [], name=nd.name)
        new.attribute.extend(nd.attribute)
        ins = [reader(i) for i in nd.input]
        if nd.op_type in ("Conv", "Gemm"):
            ins[1], ins[2] = weight(nd, nd.input[1], nd.input[2])
        new.input.extend(ins)
        t = nd.output[0]
        is_out = t in outputs
        new.output.append(f"{t}_f" if is_out else t)
        nodes.append(new)
        if t in skip:
            continue
        params = act[nd.input[0]] if nd.op_type in _SAME_AS_INPUT and nd.input[0] in act \
            else _act(*rng[t], uint8)
        if is_out:
            act_t = f"{t}_f"
            qdq(act_t, params, final=t)
        else:
            qdq(t, params)
    g = helper.make_graph(nodes, model.graph.name + "_qdq", list(model.graph.input),
                          list(model.graph.output), out_inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7 if opset < 15 else 8
    onnx.checker.check_model(m)
    return m
