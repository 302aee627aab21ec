"""Import coverage across opsets 7..21: each op in the form that opset's exporters write.

Every case is a tiny model built with onnx.helper for the given opset (attributes and inputs as
that opset's schema defines them: Clip min/max attributes before 11, BatchNormalization
``spatial`` before 9 and ``training_mode`` from 14, ReduceMean ``axes`` as an input from 18,
Unsqueeze ``axes`` as an input from 13, Pad ``pads`` as an input from 11, Dropout ``ratio`` as an
input from 12, ...). The ONNX checker validates each model against that opset; the imported
graph is run by the float IR interpreter, right after import and after the float pipeline, and
compared with ONNX Runtime. Opset 6 (``is_test``/``consumed_inputs``, older than ONNX Runtime
accepts) is compared with ``onnx.reference``. Refused forms give exit code 2 and one line
naming the file, the node and the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from tcc_compiler.cli.main import main
from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import ActKind, Op

N = helper.make_node
OPSETS = list(range(7, 22))
C, H, W = 4, 6, 6


def _r(seed: int, *shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _bn_case(opset: int):
    inits = {"s": np.linspace(0.5, 1.5, C), "b": np.linspace(-0.2, 0.3, C),
             "m": np.linspace(-0.1, 0.1, C), "v": np.linspace(0.5, 2.0, C),
             "w": _r(1, C, C, 3, 3)}
    kw = {"epsilon": 1e-3}
    if opset < 9:
        kw["spatial"] = 1
    if opset >= 14:
        kw["training_mode"] = 0
    return [N("Conv", ["x", "w"], ["c"], pads=[1] * 4),
            N("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn", **kw)], inits


def _clip_case(lo, hi):
    def case(opset: int):
        if opset < 11:
            kw = {"min": lo} if hi is None else {"min": lo, "max": hi}
            return [N("Clip", ["x"], ["y"], name="clip", **kw)], {}
        ins = ["x", "lo"] + (["hi"] if hi is not None else [])
        inits = {"lo": np.array(lo, np.float32)}
        if hi is not None:
            inits["hi"] = np.array(hi, np.float32)
        return [N("Clip", ins, ["y"], name="clip")], inits
    return case


def _conv(opset: int, **kw):
    inits = {"w": _r(2, 6, C // kw.get("group", 1), 3, 3)}
    ins = ["x", "w"]
    if kw.pop("bias", True):
        inits["b"] = _r(3, 6)
        ins.append("b")
    return [N("Conv", ins, ["y"], name="conv", **kw)], inits


def _pool(op: str, **kw):
    def case(opset: int):
        if kw.get("ceil_mode") and opset < 10:
            return None
        return [N(op, ["x"], ["y"], name="pool", **kw)], {}
    return case


def _reduce_mean(opset: int):
    if opset < 18:
        return [N("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0, name="rm")], {}
    return [N("ReduceMean", ["x", "axes"], ["y"], keepdims=0, name="rm")], \
        {"axes": np.array([-2, -1], np.int64)}


def _reshape(opset: int):
    return [N("GlobalAveragePool", ["x"], ["p"]),
            N("Reshape", ["p", "shape"], ["y"], name="reshape")], \
        {"shape": np.array([0, -1], np.int64)}


def _flatten(axis: int):
    def case(opset: int):
        if axis < 0 and opset < 11:
            return None
        return [N("GlobalAveragePool", ["x"], ["p"]),
                N("Flatten", ["p"], ["y"], axis=axis, name="flat")], {}
    return case


def _gemm(trans_b: int, alpha: float, beta: float, bias: bool = True):
    def case(opset: int):
        if not bias and opset < 11:
            return None  # C became optional in opset 11
        k = C
        w = _r(4, 5, k) if trans_b else _r(4, k, 5)
        inits = {"w": w * 0.1}
        ins = ["f", "w"]
        if bias:
            inits["c"] = _r(5, 5)
            ins.append("c")
        return [N("GlobalAveragePool", ["x"], ["p"]), N("Flatten", ["p"], ["f"]),
                N("Gemm", ins, ["y"], transB=trans_b, alpha=alpha, beta=beta, name="gemm")], \
            inits
    return case


def _matmul_add(opset: int):
    k = C
    return [N("GlobalAveragePool", ["x"], ["p"]), N("Flatten", ["p"], ["f"]),
            N("MatMul", ["f", "w"], ["mm"], name="mm"),
            N("Add", ["mm", "b"], ["y"], name="add")], {"w": _r(6, k, 5) * 0.1, "b": _r(7, 5)}


def _pad_conv(opset: int):
    pads = [0, 0, 1, 2, 0, 0, 2, 1]
    conv = N("Conv", ["p", "w"], ["y"], name="conv")
    inits = {"w": _r(8, 6, C, 3, 3)}
    if opset < 11:
        return [N("Pad", ["x"], ["p"], pads=pads, mode="constant", value=0.0, name="pad"),
                conv], inits
    inits["pads"] = np.array(pads, np.int64)
    return [N("Pad", ["x", "pads"], ["p"], mode="constant", name="pad"), conv], inits


def _eltwise(opset: int):
    """Add of two activations, n-ary Sum, Mul and Add by per-channel constants, Relu."""
    return [N("Relu", ["x"], ["r"], name="relu"),
            N("Mul", ["x", "k"], ["m"], name="mul"),
            N("Add", ["m", "o"], ["a"], name="addc"),
            N("Add", ["a", "r"], ["s"], name="add"),
            N("Sum", ["s", "r", "x"], ["y"], name="sum")], \
        {"k": _r(9, C, 1, 1), "o": _r(10, C, 1, 1)}


def _identity_dropout(opset: int):
    if opset < 12:
        drop = N("Dropout", ["i"], ["d"], ratio=0.3, name="drop")
        inits = {}
    else:
        drop = N("Dropout", ["i", "ratio"], ["d"], name="drop")
        inits = {"ratio": np.array(0.3, np.float32)}
    return [N("Identity", ["x"], ["i"], name="id"), drop, N("Relu", ["d"], ["y"])], inits


def _constant(opset: int):
    """A Constant node holding the per-channel scale, and ConstantOfShape (opset 9+) its bias."""
    nodes = [N("Constant", [], ["k"], value=helper.make_tensor(
        "k", onnx.TensorProto.FLOAT, [C, 1, 1], np.linspace(0.5, 2, C).tolist()), name="const"),
        N("Mul", ["x", "k"], ["y0"], name="mul")]
    if opset < 9:
        nodes.append(N("Identity", ["y0"], ["y"]))
        return nodes, {}
    nodes += [N("ConstantOfShape", ["shp"], ["b"], value=helper.make_tensor(
        "v", onnx.TensorProto.FLOAT, [1], [0.25]), name="cos"),
        N("Add", ["y0", "b"], ["y"], name="add")]
    return nodes, {"shp": np.array([C, 1, 1], np.int64)}


def _dynamic_batch_reshape(opset: int):
    """What torch.onnx writes for x.view(x.size(0), -1): Shape->Gather->Unsqueeze->Concat."""
    if opset < 13:
        unsq = N("Unsqueeze", ["n"], ["n1"], axes=[0], name="unsq")
        inits = {}
    else:
        unsq = N("Unsqueeze", ["n", "ax0"], ["n1"], name="unsq")
        inits = {"ax0": np.array([0], np.int64)}
    inits.update({"idx": np.array(0, np.int64), "m1": np.array([-1], np.int64)})
    return [N("GlobalAveragePool", ["x"], ["r"]), N("Shape", ["r"], ["s"], name="shape"),
            N("Gather", ["s", "idx"], ["n"], axis=0, name="gather"), unsq,
            N("Concat", ["n1", "m1"], ["target"], axis=0, name="concat"),
            N("Reshape", ["r", "target"], ["y"], name="reshape")], inits


def _softmax_argmax_end(opset: int):
    inits = {"w": _r(11, C, 5)}
    return [N("GlobalAveragePool", ["x"], ["p"]), N("Flatten", ["p"], ["f"]),
            N("MatMul", ["f", "w"], ["l"]),
            N("Softmax", ["l"], ["y"], axis=1, name="softmax"),
            N("ArgMax", ["l"], ["am"], axis=1, keepdims=1, name="argmax")], inits


def _unary(op: str, since: int = 1, **attrs):
    """One unary activation (a lookup table on the NPU); None before the op exists."""
    def build(opset: int):
        if opset < since:
            return None
        return [N(op, ["x"], ["y"], name=op.lower(), **attrs)], {}
    return build


def _prelu(per_channel: bool):
    def build(opset: int):
        slope = (np.linspace(0.05, 0.4, C).reshape(C, 1, 1) if per_channel
                 else np.array([0.2]))
        return [N("PRelu", ["x", "s"], ["y"], name="prelu")], {"s": slope}
    return build


def _clip_upper_only(opset: int):
    if opset < 11:
        return [N("Clip", ["x"], ["y"], max=0.7, name="clip")], {}
    return [N("Clip", ["x", "", "hi"], ["y"], name="clip")], {"hi": np.array(0.7, np.float32)}


def _silu(opset: int):
    """SiLU as torch.onnx writes nn.SiLU before opset 14: x * Sigmoid(x)."""
    return [N("Sigmoid", ["x"], ["s"], name="sig"), N("Mul", ["x", "s"], ["y"], name="mul")], {}


def _se_gate(opset: int):
    """Squeeze-excitation: GAP -> Sigmoid gate [N,C,1,1] times the map, both operand orders,
    and Sub of two activations."""
    return [N("GlobalAveragePool", ["x"], ["g"]), N("Sigmoid", ["g"], ["s"]),
            N("Mul", ["s", "x"], ["m"], name="gate"), N("Relu", ["x"], ["r"]),
            N("Sub", ["m", "r"], ["d"], name="sub"), N("Sub", ["d", "g"], ["y"], name="subb")], {}


def _const_arith(opset: int):
    """Sub/Div by constants and constant minus activation (folded into affines)."""
    return [N("Sub", ["x", "k"], ["a"]), N("Div", ["a", "d"], ["b"]),
            N("Sub", ["o", "b"], ["y"])], {"k": _r(11, C, 1, 1), "d": np.full((1,), 2.5),
                                           "o": np.array(0.5)}


def _concat(opset: int):
    """Concat of the map and its Relu along the channel axis (axis -3 from opset 11)."""
    return [N("Relu", ["x"], ["r"]),
            N("Concat", ["x", "r"], ["y"], axis=-3 if opset >= 11 else 1, name="cat")], {}


def _split(opset: int):
    """Split into 1 + 3 channels in each opset's form, re-concatenated in reverse order."""
    if opset < 13:
        sp, inits = N("Split", ["x"], ["a", "b"], axis=1, split=[1, 3], name="split"), {}
    elif opset < 18:
        sp = N("Split", ["x", "s"], ["a", "b"], axis=1, name="split")
        inits = {"s": np.array([1, 3], np.int64)}
    else:   # num_outputs: equal parts
        sp, inits = N("Split", ["x"], ["a", "b"], axis=1, num_outputs=2, name="split"), {}
    return [sp, N("Relu", ["b"], ["rb"]), N("Concat", ["rb", "a"], ["y"], axis=1)], inits


def _slice(opset: int):
    """Channels [1, 3) by a negative end, plus a no-op full range on W."""
    if opset < 10:
        return [N("Slice", ["x"], ["y"], starts=[1, 0], ends=[-1, 1000], axes=[1, 3],
                  name="slice")], {}
    return [N("Slice", ["x", "st", "en", "ax", "sp"], ["y"], name="slice")], {
        "st": np.array([1, 0], np.int64), "en": np.array([-1, 1000], np.int64),
        "ax": np.array([1, -1], np.int64) if opset >= 11 else np.array([1, 3], np.int64),
        "sp": np.array([1, 1], np.int64)}


def _resize(opset: int):
    """Nearest upsampling x2 (H) x3 (W): Upsample before opset 10, then Resize (asymmetric
    + floor as torch writes it on odd opsets, ONNX's default half_pixel on even ones)."""
    scales = np.array([1, 1, 2, 3], np.float32)
    if opset < 9:
        return [N("Upsample", ["x"], ["y"], mode="nearest", scales=[1.0, 1.0, 2.0, 3.0])], {}
    if opset == 9:
        return [N("Upsample", ["x", "s"], ["y"], mode="nearest")], {"s": scales}
    if opset == 10:
        return [N("Resize", ["x", "s"], ["y"], mode="nearest")], {"s": scales}
    kw = ({"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
          if opset % 2 else {})
    roi = np.zeros(0, np.float32)
    return [N("Resize", ["x", "roi", "s"], ["y"], mode="nearest", **kw)], {
        "roi": roi, "s": scales}


def _conv_transpose(k: int, p: int, out_pad: int):
    """ConvTranspose stride 2 (phases interleaved), weights [C_in, C_out, k, k] and a bias."""
    def build(opset: int):
        inits = {"wt": _r(21, C, 3, k, k), "bt": _r(22, 3)}
        return [N("ConvTranspose", ["x", "wt", "bt"], ["y"], strides=[2, 2], pads=[p] * 4,
                  output_padding=[out_pad, out_pad], name="deconv")], inits
    return build


def _reduce(op: str, since: int, keep: int):
    """ReduceSum / ReduceMax over H, W (axes an input from opset ``since``) then a conv."""
    def build(opset: int):
        nodes, inits = [], {"w": _r(23, 3, C, 1, 1)}
        if opset >= since:
            inits["ax"] = np.array([2, 3], np.int64)
            nodes.append(N(op, ["x", "ax"], ["r"], keepdims=keep, name="reduce"))
        else:
            nodes.append(N(op, ["x"], ["r"], axes=[2, 3], keepdims=keep, name="reduce"))
        if keep:
            return nodes + [N("Conv", ["r", "w"], ["y"])], inits
        inits["w2"] = _r(24, C, 3)
        return nodes + [N("MatMul", ["r", "w2"], ["y"])], inits
    return build


CASES = {
    "reduce_sum_hw": (_reduce("ReduceSum", 13, 1), Op.GAP),
    "reduce_sum_hw_flat": (_reduce("ReduceSum", 13, 0), Op.GAP),
    "reduce_max_hw": (_reduce("ReduceMax", 18, 1), Op.MAXPOOL),
    "conv_transpose_k4": (_conv_transpose(4, 1, 0), Op.INTERLEAVE),
    "conv_transpose_k3_outpad": (_conv_transpose(3, 1, 1), Op.INTERLEAVE),
    "concat_channels": (_concat, Op.CONCAT),
    "split_channels": (_split, Op.SLICE),
    "slice_channels": (_slice, Op.SLICE),
    "resize_nearest": (_resize, Op.RESIZE),
    "sigmoid": (_unary("Sigmoid"), Op.LUT),
    "tanh": (_unary("Tanh"), Op.LUT),
    "hardsigmoid": (_unary("HardSigmoid", alpha=0.3, beta=0.4), Op.LUT),
    "hardswish": (_unary("HardSwish", 14), Op.LUT),
    "leakyrelu": (_unary("LeakyRelu", alpha=0.1), Op.LUT),
    "elu": (_unary("Elu", alpha=0.7), Op.LUT),
    "softplus": (_unary("Softplus"), Op.LUT),
    "mish": (_unary("Mish", 18), Op.LUT),
    "gelu": (_unary("Gelu", 20), Op.LUT),
    "erf": (_unary("Erf", 9), Op.LUT),
    "gelu_tanh": (_unary("Gelu", 20, approximate="tanh"), Op.LUT),
    "prelu_channel": (_prelu(True), Op.LUT),
    "prelu_scalar": (_prelu(False), Op.LUT),
    "lut_clip_upper_only": (_clip_upper_only, Op.LUT),
    "silu_mul_sigmoid": (_silu, Op.MUL),
    "se_gate_sub": (_se_gate, Op.SUB),
    "const_sub_div": (_const_arith, Op.ADD),
    "batchnorm": (_bn_case, Op.CONV),
    "clip_relu6": (_clip_case(0.0, 6.0), Op.CLIP),
    "clip_relu": (_clip_case(0.0, None), Op.CLIP),
    "eltwise": (_eltwise, Op.ADD),
    "conv_same_upper": (lambda o: _conv(o, auto_pad="SAME_UPPER", strides=[2, 2]), Op.CONV),
    "conv_same_lower": (lambda o: _conv(o, auto_pad="SAME_LOWER", strides=[2, 2]), Op.CONV),
    "conv_valid": (lambda o: _conv(o, auto_pad="VALID"), Op.CONV),
    "conv_asym_nobias_dil_group": (lambda o: _conv(o, pads=[0, 1, 2, 1], dilations=[2, 1],
                                                   group=2, bias=False), Op.CONV),
    "maxpool_pads": (_pool("MaxPool", kernel_shape=[3, 3], strides=[2, 2],
                           pads=[1, 1, 1, 1]), Op.MAXPOOL),
    "maxpool_ceil": (_pool("MaxPool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
                     Op.MAXPOOL),
    "maxpool_same": (_pool("MaxPool", kernel_shape=[2, 2], strides=[2, 2],
                           auto_pad="SAME_UPPER"), Op.MAXPOOL),
    "avgpool_cip": (_pool("AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                          count_include_pad=1), Op.AVGPOOL),
    "avgpool_global_window": (_pool("AveragePool", kernel_shape=[H, W]), Op.GAP),
    "global_avgpool": (_pool("GlobalAveragePool"), Op.GAP),
    "reduce_mean_hw": (_reduce_mean, Op.GAP),
    "flatten_axis1": (_flatten(1), Op.RESHAPE),
    "flatten_axis_neg3": (_flatten(-3), Op.RESHAPE),
    "reshape_0_minus1": (_reshape, Op.RESHAPE),
    "gemm_transb_alpha_beta": (_gemm(1, 0.5, 2.0), Op.FC),
    "gemm_no_transb": (_gemm(0, 1.0, 1.0), Op.FC),
    "gemm_no_bias": (_gemm(1, 1.0, 1.0, bias=False), Op.FC),
    "matmul_add": (_matmul_add, Op.FC),
    "pad_conv": (_pad_conv, Op.CONV),
    "identity_dropout": (_identity_dropout, Op.RELU),
    "constant_constantofshape": (_constant, Op.MUL),
    "dynamic_batch_reshape": (_dynamic_batch_reshape, Op.RESHAPE),
    "softmax_argmax_end": (_softmax_argmax_end, Op.SOFTMAX),
}


def _model(make_model, nodes, inits, opset: int, outputs=("y",), shape=(1, C, H, W)):
    """make_model, except that output element types come from shape inference (ArgMax gives
    int64) and an output whose shape inference cannot know (a Reshape to a computed shape)
    is declared with its rank only."""
    try:
        return make_model(nodes, list(shape), inits, opset=opset, outputs=outputs)
    except onnx.checker.ValidationError:
        pass
    init_protos = [onnx.numpy_helper.from_array(
        v.astype(np.float32) if v.dtype.kind == "f" else v, k) for k, v in inits.items()]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, list(shape))], [], init_protos)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = max(3, min(m.ir_version, 8))
    inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(m).graph.value_info}
    for o in outputs:
        vi = inferred.get(o)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            vi = helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, ["n", "k"])
        m.graph.output.append(vi)
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_across_opsets(make_model, check_vs_ort, case, opset):
    build, expect_op = CASES[case]
    built = build(opset)
    if built is None:
        pytest.skip(f"{case} does not exist in opset {opset}")
    nodes, inits = built
    outs = ("y", "am") if case == "softmax_argmax_end" else ("y",)
    m = _model(make_model, nodes, inits, opset, outs)
    g = check_vs_ort(m, _r(100 + opset, 1, C, H, W), passes=False)
    assert expect_op in [n.op for n in g.nodes], [n.op for n in g.nodes]
    if case.startswith("clip_"):  # Clip(0, 6) -> Relu6, Clip(0, +inf) -> Relu
        (clip,) = [n for n in g.nodes if n.op is Op.CLIP]
        assert clip.attrs.act.kind is (ActKind.RELU if case == "clip_relu" else ActKind.CLIP)
    check_vs_ort(m, _r(200 + opset, 1, C, H, W))  # and after the float pipeline
    if case == "pad_conv":  # the Pad is folded into the conv's padding (t, l, b, r)
        (conv,) = [n for n in g.nodes if n.op is Op.CONV]
        assert conv.attrs.pads == (1, 2, 2, 1)
    if case == "dynamic_batch_reshape":  # the shape chain folded away: one view is left
        assert [n.op for n in g.nodes] == [Op.GAP, Op.RESHAPE]


def test_nhwc_input_across_opsets(make_model, ort_run):
    for opset in (7, 13, 21):
        m = make_model([N("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
                        N("Conv", ["t", "w"], ["y"], pads=[1] * 4)], [1, H, W, C],
                       {"w": _r(12, 6, C, 3, 3)}, opset=opset)
        x = _r(13, 1, H, W, C)
        g = import_onnx(m)
        assert g.meta["input_layout"] == "NHWC" and g.inputs[0].shape == (1, H, W, C)
        got = run_float(g, x)[g.outputs[0].name]
        np.testing.assert_allclose(got, ort_run(m, x)[0], rtol=1e-4, atol=1e-5)


def test_opset6_batchnorm_is_test_consumed_inputs(make_model):
    """Opset 6 BatchNormalization (is_test, spatial, consumed_inputs) vs onnx.reference."""
    nodes, inits = _bn_case(7)
    nodes[1] = N("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn",
                 epsilon=1e-3, is_test=1, spatial=1)
    m = make_model(nodes, [1, C, H, W], inits, opset=6)
    x = _r(14, 1, C, H, W)
    ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
    g = import_onnx(m)
    np.testing.assert_allclose(run_float(g, x)["y"], ref, rtol=1e-4, atol=1e-5)


# ---- refused forms: exit code 2, one line naming file, node and reason ------------------------

REFUSED = {
    "resize_cubic": (lambda: ([N("Resize", ["x", "", "s"], ["y"], mode="cubic",
                                 name="rs_cub")], {"s": np.array([1, 1, 2, 2], np.float32)},
                              13), "rs_cub", "only nearest and (bi)linear"),
    "resize_linear_tf_crop": (lambda: ([N("Resize", ["x", "roi", "s"], ["y"], mode="linear",
                                          coordinate_transformation_mode="tf_crop_and_resize",
                                          name="rs_crop")],
                                       {"roi": np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32),
                                        "s": np.array([1, 1, 2, 2], np.float32)}, 13),
                              "rs_crop", "tf_crop_and_resize"),
    "resize_round_3x": (lambda: ([N("Resize", ["x", "", "s"], ["y"], mode="nearest",
                                    coordinate_transformation_mode="asymmetric",
                                    name="rs_r")], {"s": np.array([1, 1, 3, 3], np.float32)},
                                 13), "rs_r", "does not repeat pixels"),
    "concat_w": (lambda: ([N("Concat", ["x", "x"], ["y"], axis=3, name="cat_w")], {}, 13),
                 "cat_w", "only the channel axis"),
    "bn_training_mode": (lambda: ([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                                     training_mode=1, name="bn_train")],
                                  {k: np.ones(C) for k in "sbmv"}, 15),
                         "bn_train", "training_mode=1"),
    "gemm_transa": (lambda: ([N("Flatten", ["x"], ["f"]),
                              N("Gemm", ["w", "f"], ["y"], transB=1, name="gemm_ta")],
                             {"w": np.ones((5, C * H * W))}, 13),
                    "gemm_ta", "constant initializer"),
    "pad_reflect": (lambda: ([N("Pad", ["x", "p"], ["q"], mode="reflect", name="pad_r"),
                              N("Conv", ["q", "w"], ["y"])],
                             {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                              "w": np.ones((2, C, 3, 3))}, 13),
                    "pad_r", "zero-valued constant"),
    "reduce_mean_c": (lambda: ([N("ReduceMean", ["x"], ["y"], axes=[1], name="rm_c")], {}, 13),
                      "rm_c", "only over H and W"),
    # count_include_pad=0 with pads runs on the NPU (a divisor per pixel); with 1, a ceil_mode
    # window overhanging the padding has ONNX Runtime's clipped divisor: refused
    "avgpool_ceil_overhang_cip": (lambda: ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                              strides=[2, 2], ceil_mode=1, count_include_pad=1,
                                              name="ap")], {}, 11),
                                  "ap", "count_include_pad=1"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_forms_exit_2_one_line(make_model, tmp_path, capsys, case):
    build, node, reason = REFUSED[case]
    nodes, inits, opset = build()
    path = tmp_path / f"{case}.onnx"
    onnx.save(_model(make_model, nodes, inits, opset), path)
    code = main(["compile", str(path), "-o", str(tmp_path / "o"), "--strict"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert str(path) in err and f"'{node}'" in err and reason in err, err


def test_constant_value_float_form(make_model, check_vs_ort):
    """Constant's value_float / value_floats attributes (opset 12+) are folded before import."""
    m = make_model([N("Constant", [], ["k"], value_floats=[0.5, 1.0, 1.5, 2.0]),
                    N("Constant", [], ["shp"], value_ints=[C, 1, 1]),
                    N("Reshape", ["k", "shp"], ["k4"]),
                    N("Constant", [], ["o"], value_float=0.25),
                    N("Mul", ["x", "k4"], ["m"], name="mul"),
                    N("Add", ["m", "o"], ["y"], name="add")], [1, C, H, W], {}, opset=13)
    check_vs_ort(m, _r(15, 1, C, H, W))


# ---- SUPPORTED_OPS.md is generated from the converter table --------------------------------

def test_support_records_match_converters():
    from tcc_compiler.frontend.converters import CONVERTERS, REFUSED_OPS
    from tcc_compiler.frontend.support import SUPPORT

    assert sorted(SUPPORT) == sorted(CONVERTERS)
    assert not set(REFUSED_OPS) & set(CONVERTERS)


def test_supported_ops_md_up_to_date():
    from pathlib import Path

    from tcc_compiler.frontend.support import render_markdown

    path = Path(__file__).resolve().parents[2] / "SUPPORTED_OPS.md"
    assert path.read_text() == render_markdown(), \
        "SUPPORTED_OPS.md is stale: run python3 tools/gen_supported_ops.py"


# ---- the onnx wheel's pytorch-converted / pytorch-operator cases --------------------------

_TORCH_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data"
_TORCH_CASES = sorted(str(p.relative_to(_TORCH_DIR)) for kind in ("pytorch-converted",
                                                                   "pytorch-operator")
                      for p in (_TORCH_DIR / kind).glob("test_*") if p.is_dir())
#: Cases whose every op is one tccc accepts, on a 4-D image input (hand-picked from the case
#: names): these must import and match their stored outputs.
_TORCH_MUST_ACCEPT = {
    "pytorch-converted/" + n for n in (
        "test_AvgPool2d", "test_AvgPool2d_stride", "test_BatchNorm2d_eval",
        "test_BatchNorm2d_momentum_eval", "test_Conv2d", "test_Conv2d_depthwise",
        "test_Conv2d_depthwise_padded", "test_Conv2d_depthwise_strided",
        "test_Conv2d_depthwise_with_multiplier", "test_Conv2d_dilated", "test_Conv2d_groups",
        "test_Conv2d_groups_thnn", "test_Conv2d_no_bias", "test_Conv2d_padding",
        "test_Conv2d_strided", "test_MaxPool2d", "test_ReLU", "test_softmax_functional_dim3")
} | {"pytorch-operator/test_operator_conv", "pytorch-operator/test_operator_flatten"}


@pytest.mark.parametrize("case", _TORCH_CASES)
def test_pytorch_case_float_interpreter(case):
    """Accepted cases: the float IR interpreter reproduces the stored output. Refused cases:
    a TccError with exit code 2 and a one-line message."""
    from tcc_compiler.errors import TccError

    d = _TORCH_DIR / case
    try:
        g = import_onnx(d / "model.onnx")
    except TccError as exc:
        assert case not in _TORCH_MUST_ACCEPT, str(exc)
        assert exc.exit_code == 2 and "\n" not in str(exc)
        return
    x = onnx.numpy_helper.to_array(onnx.load_tensor(str(d / "test_data_set_0/input_0.pb")))
    y = onnx.numpy_helper.to_array(onnx.load_tensor(str(d / "test_data_set_0/output_0.pb")))
    got = run_float(g, x)[g.outputs[0].name]
    np.testing.assert_allclose(got.reshape(y.shape), y, rtol=1e-4, atol=1e-5)


def test_pytorch_must_accept_cases_exist():
    assert _TORCH_MUST_ACCEPT <= set(_TORCH_CASES)


# The before (ONNX) / expected (IR text) case for each import rule:
# tests/frontend/test_import_rules.py
