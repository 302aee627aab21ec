"""Textual IR: print -> parse round trips (float, fused, quantized, imported), files, errors."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.errors import FormatError
from tcc_compiler.ir import ops
from tcc_compiler.ir.graph import Graph, QuantParams, Value
from tcc_compiler.ir.ops import ActKind, Activation, Op
from tcc_compiler.ir.text import (ConstTable, graphs_equal, load_ir, parse_graph, print_graph,
                                  save_ir)
from tcc_compiler.ir.verify import verify

RNG = np.random.default_rng(7)


def _f32(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _roundtrip(g: Graph, inline_limit: int = 16) -> Graph:
    """print -> parse -> print; the texts must match and the graphs be structurally equal."""
    table = ConstTable()
    text = print_graph(g, table, inline_limit=inline_limit)
    g2 = parse_graph(text, table.arrays)
    table2 = ConstTable()
    assert print_graph(g2, table2, inline_limit=inline_limit) == text
    assert list(table2.keys()) == list(table.keys())
    assert graphs_equal(g, g2) is None, graphs_equal(g, g2)
    return g2


def _every_op_graph() -> Graph:
    """A float graph using every Op, non-default attrs, odd names and an absent input."""
    g = Graph("every op")
    g.meta.update({"source": "hand \"made\".onnx", "opset": 13, "input_layout": "NCHW",
                   "quantized": False, "ratio": 0.1, "tiny": 5e-324, "neg": -0.0,
                   "skipped": [1, 2]})
    x = Value("input.1", (1, 4, 9, 9))
    g.inputs.append(x)

    def val(name, shape):
        return Value(name, shape)

    def const(name, arr):
        return Value(name, arr.shape, str(arr.dtype), const=arr)

    w = const("onnx::Conv_1", _f32(8, 4, 3, 3))
    b = const("conv.bias", _f32(8))
    c1 = val("/conv/Conv_output_0", (1, 8, 5, 5))
    g.add_node(Op.CONV, "/conv/Conv", [x, w, b], [c1],
               ops.ConvAttrs((3, 3), (2, 2), (1, 1, 2, 2), (1, 1), 1,
                             Activation(ActKind.CLIP, 0.0, 6.0)), ["/conv/Conv", "/clip/Clip"])
    gamma, beta = const("bn.g", _f32(8)), const("bn.b", _f32(8))
    mean, var = const("bn.m", _f32(8)), const("bn.v", np.abs(_f32(8)) + 0.5)
    bn = val("bn_out", (1, 8, 5, 5))
    g.add_node(Op.BATCHNORM, "bn", [c1, gamma, beta, mean, var], [bn],
               ops.BatchNormAttrs(1.0000000000000002e-05))
    m = val("mul_out", (1, 8, 5, 5))
    g.add_node(Op.MUL, "mul", [bn, const("mul_c", _f32(8, 1, 1))], [m], ops.EltwiseAttrs())
    r = val("relu_out", (1, 8, 5, 5))
    g.add_node(Op.RELU, "relu", [m], [r], ops.ActAttrs(ops.RELU))
    cl = val("clip_out", (1, 8, 5, 5))
    g.add_node(Op.CLIP, "clip", [r], [cl], ops.ActAttrs(Activation(ActKind.CLIP, -1.5, 1e30)))
    mp = val("mp", (1, 8, 3, 3))
    g.add_node(Op.MAXPOOL, "mp", [cl], [mp], ops.PoolAttrs((3, 3), (2, 2), (1, 1, 1, 1)))
    ap = val("ap", (1, 8, 3, 3))
    g.add_node(Op.AVGPOOL, "ap", [mp], [ap],
               ops.PoolAttrs((3, 3), (1, 1), (1, 1, 1, 1), count_include_pad=True))
    # fused conv: act + shortcut as input 3, no bias (absent input 2)
    w2 = const("w2", _f32(8, 4, 1, 1))
    c2 = val("c2", (1, 8, 3, 3))
    g.add_node(Op.CONV, "c2", [ap, w2, None, mp], [c2],
               ops.ConvAttrs((1, 1), group=2, dilations=(2, 2), act=ops.RELU))
    add = val("add", (1, 8, 3, 3))
    g.add_node(Op.ADD, "add", [c2, ap], [add], ops.EltwiseAttrs(Activation(ActKind.RELU, 0.0,
                                                                            -0.0)))
    sb = val("sub", (1, 8, 3, 3))
    g.add_node(Op.SUB, "sub", [add, ap], [sb], ops.EltwiseAttrs())
    lu = val("lut", (1, 8, 3, 3))
    g.add_node(Op.LUT, "lut", [sb, const("slope", _f32(8))], [lu],
               ops.LutAttrs(ops.LutFunc.PRELU))
    lc = val("lutc", (1, 8, 3, 3))
    g.add_node(Op.LUT, "lutc", [lu], [lc], ops.LutAttrs(ops.LutFunc.CLIP, float("-inf"), 2.5))
    s0, s1 = val("s0", (1, 4, 3, 3)), val("s1", (1, 4, 3, 3))
    g.add_node(Op.SLICE, "s0", [lc], [s0], ops.SliceAttrs(0, 4))
    g.add_node(Op.SLICE, "s1", [lc], [s1], ops.SliceAttrs(4, 8, axis=1))
    cat = val("cat", (1, 8, 3, 3))
    g.add_node(Op.CONCAT, "cat", [s1, s0], [cat], ops.ConcatAttrs(1))
    phases = [val(f"ph{k}", (1, 8, 3, 3)) for k in range(2)]
    for k, ph in enumerate(phases):
        g.add_node(Op.SLICE, f"ph{k}", [cat], [ph], ops.SliceAttrs(0, 8))
    il = val("il", (1, 8, 3, 6))
    g.add_node(Op.INTERLEAVE, "il", phases, [il], ops.InterleaveAttrs(1, 2))
    rz = val("rz", (1, 8, 6, 18))
    g.add_node(Op.RESIZE, "rz", [il], [rz], ops.ResizeAttrs(2, 3))
    bl = val("bl", (1, 8, 12, 36))
    g.add_node(Op.RESIZE, "bl", [rz], [bl], ops.ResizeAttrs(
        2, 2, ops.ResizeMode.BILINEAR, ops.ResizeCoord.ALIGN_CORNERS))
    sh = val("shuf", (1, 8, 12, 36))
    g.add_node(Op.SHUFFLE, "shuf", [bl], [sh], ops.ShuffleAttrs(2))
    gs = val("gsoft", (1, 8, 12, 36))
    g.add_node(Op.GROUP_SOFTMAX, "gsoft", [sh], [gs], ops.GroupSoftmaxAttrs(4))
    gp = val("gap", (1, 8, 1, 1))
    g.add_node(Op.GAP, "gap", [gs], [gp], ops.NoAttrs())
    tr = val("tr", (1, 1, 8, 1))
    g.add_node(Op.TRANSPOSE, "tr", [gp], [tr], ops.TransposeAttrs((0, 3, 1, 2)))
    rs = val("rs", (1, 8, 1, 1))
    g.add_node(Op.RESHAPE, "rs", [tr], [rs], ops.ReshapeAttrs((1, 8, 1, 1)))
    fw, fb = const("fc.w", _f32(5, 8, 1, 1)), const("fc.b", _f32(5))
    fc = val("logits", (1, 5))
    g.add_node(Op.FC, "fc", [rs, fw, fb], [fc], ops.FcAttrs(ops.RELU), ["/fc/Gemm"])
    sm = val("prob", (1, 5))
    g.add_node(Op.SOFTMAX, "softmax", [fc], [sm], ops.AxisAttrs(axis=1))
    am = Value("label", (1,), "int64")
    g.add_node(Op.ARGMAX, "argmax", [sm], [am], ops.AxisAttrs(axis=-1, keepdims=False))
    g.outputs += [sm, am]
    return g


def test_every_op_roundtrip_and_verify():
    g = _every_op_graph()
    verify(g)
    g2 = _roundtrip(g)
    verify(g2)
    assert "skipped" not in g2.meta and g2.meta["ratio"] == 0.1
    assert np.signbit(g2.meta["neg"])
    act = g2.nodes[0].attrs.act
    assert act.kind is ActKind.CLIP and (act.lo, act.hi) == (0.0, 6.0)
    assert g2.nodes[7].inputs[2] is None and g2.nodes[7].inputs[3].name == "mp"
    assert isinstance(g2.nodes[5].attrs.kernel, tuple)
    # every op and every attrs field appears in the text
    text = print_graph(g, ConstTable())
    for op in Op:
        assert f"= {op.value} \"" in text


@pytest.mark.parametrize("inline_limit", [0, 4, 1000])
def test_inline_limits(inline_limit):
    g = _every_op_graph()
    table = ConstTable()
    text = print_graph(g, table, inline_limit=inline_limit)
    assert ("@" in text) == (inline_limit < 288)
    _roundtrip(g, inline_limit)


def test_special_floats_and_dtypes_exact():
    g = Graph("floats")
    x = Value("x", (1, 2, 2, 2))
    g.inputs.append(x)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4028235e38, 0.1, 1 / 3],
                       dtype=np.float32)
    w = Value("w", (2, 2, 1, 1), "float32", const=special[:4].reshape(2, 2, 1, 1))
    b = Value("b", (2,), "float32", const=np.array([0.1, 1 / 3]))            # dtype override
    s = Value("s", (8,), "float32", const=special)
    y = Value("y", (1, 2, 2, 2))
    g.add_node(Op.CONV, "c", [x, w, b, None], [y], ops.ConvAttrs((1, 1)))
    z = Value("z", (1, 2, 2, 2))
    g.add_node(Op.MUL, "m", [y, s], [z], ops.EltwiseAttrs())
    g.outputs.append(z)
    g2 = _roundtrip(g)
    got = g2.values().__next__()
    assert got.name == "x"
    for name, arr in (("w", w.const), ("b", b.const), ("s", special)):
        v = next(v for v in g2.values() if v.name == name)
        assert v.const.dtype == arr.dtype and v.const.tobytes() == arr.tobytes()
    assert "dense<[0.1, 0.3333333333333333]> : f64" in print_graph(g)


def _quantized_by_hand() -> Graph:
    g = Graph("q")
    g.meta["quantized"] = True
    x = Value("x", (1, 3, 4, 4), "int8", quant=QuantParams(0.0123, -3))
    g.inputs.append(x)
    wq = RNG.integers(-127, 128, (40, 3, 1, 1), dtype=np.int8)
    s_w = RNG.uniform(1e-4, 1e-2, 40)
    w = Value("w", wq.shape, "int8", const=wq,
              quant=QuantParams(s_w, np.zeros(40, np.int64), axis=0))
    b = Value("b", (40,), "int32", const=RNG.integers(-5000, 5000, 40).astype(np.int32),
              quant=QuantParams(0.0123 * s_w, np.zeros(40, np.int64), axis=0))
    y = Value("y", (1, 40, 4, 4), "int8", quant=QuantParams(0.05, -128))
    g.add_node(Op.CONV, "conv", [x, w, b], [y], ops.ConvAttrs((1, 1), act=ops.RELU))
    w2q = RNG.integers(-127, 128, (4, 40, 1, 1), dtype=np.int8)
    s2 = RNG.uniform(1e-4, 1e-2, 4)
    w2 = Value("w2", w2q.shape, "int8", const=w2q,
               quant=QuantParams(s2, np.array([0, 1, -2, 3]), axis=0))
    b2 = Value("b2", (4,), "int32", const=np.array([1, -2, 3, 2 ** 31 - 1], np.int32),
               quant=QuantParams(0.05 * s2, np.zeros(4, np.int64), axis=0))
    o = Value("o", (1, 4, 4, 4), "int32", quant=QuantParams(0.05 * s2, np.zeros(4), axis=1))
    g.add_node(Op.CONV, "head", [y, w2, b2], [o], ops.ConvAttrs((1, 1)))
    g.outputs.append(o)
    return g


def test_quantized_by_hand():
    g = _quantized_by_hand()
    verify(g, quantized=True)
    table = ConstTable()
    text = print_graph(g, table)
    assert "input %x : i8[1,3,4,4] quant(scale=0.0123, zp=-3)" in text
    assert "quant(scale=@w.scale, zp=@w.zp, axis=0) = @w" in text
    assert "zp=[0, 1, -2, 3], axis=0" in text
    assert "dense<[1, -2, 3, 2147483647]>" in text
    g2 = _roundtrip(g)
    verify(g2, quantized=True)
    assert g2.inputs[0].quant.scale.shape == () and g2.inputs[0].quant.axis is None


def _small_onnx() -> onnx.ModelProto:
    """Conv-BN-Relu -> MaxPool -> residual block -> GAP -> Flatten -> Gemm -> Softmax."""
    def init(name, arr):
        return numpy_helper.from_array(arr.astype(np.float32), name)

    inits = [init("w1", _f32(8, 3, 3, 3) * 0.3), init("b1", _f32(8) * 0.1),
             init("g", np.abs(_f32(8)) + 0.5), init("be", _f32(8) * 0.1),
             init("mu", _f32(8) * 0.1), init("var", np.abs(_f32(8)) + 0.5),
             init("w2", _f32(8, 8, 3, 3) * 0.2), init("b2", _f32(8) * 0.1),
             init("fw", _f32(10, 8) * 0.3), init("fb", _f32(10) * 0.1)]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="/conv1/Conv",
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "be", "mu", "var"], ["bn1"],
                         name="/bn1/BatchNormalization"),
        helper.make_node("Relu", ["bn1"], ["r1"], name="/relu/Relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="/maxpool/MaxPool",
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="/conv2/Conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "p1"], ["a"], name="/Add"),
        helper.make_node("Relu", ["a"], ["r2"], name="/relu_1/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gp"], name="/avgpool/GlobalAveragePool"),
        helper.make_node("Flatten", ["gp"], ["fl"], name="/Flatten", axis=1),
        helper.make_node("Gemm", ["fl", "fw", "fb"], ["logits"], name="/fc/Gemm", transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], name="/Softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_resnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _imported() -> Graph:
    from tcc_compiler.frontend import import_onnx
    from tcc_compiler.passes import PassManager, default_pipeline

    g = import_onnx(_small_onnx())
    return PassManager(default_pipeline(), verify_each=True).run(g)


def test_imported_and_passes_roundtrip():
    g = _imported()
    text = print_graph(g, ConstTable())
    assert 'meta opset : int = 17' in text and "act=relu" in text
    assert any(n.input(3) is not None for n in g.nodes), "residual add was not fused"
    verify(_roundtrip(g))


def test_quantized_import_roundtrip(tmp_path):
    from tcc_compiler.quant import collect_ranges, quantize_graph

    g = _imported()
    calib = [RNG.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(3)]
    quantize_graph(g, collect_ranges(g, calib))
    verify(g, quantized=True)
    g2 = _roundtrip(g)
    verify(g2, quantized=True)
    assert g2.meta["quantized"] is True
    npz = save_ir(g, tmp_path / "q.tir")
    assert npz is not None and npz.exists()
    assert graphs_equal(g, load_ir(tmp_path / "q.tir")) is None


def test_save_load_files(tmp_path):
    g = _every_op_graph()
    path = tmp_path / "g.tir"
    npz = save_ir(g, path)
    assert npz == tmp_path / "g.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz", "g.tir"]
    g2 = load_ir(path)
    assert graphs_equal(g, g2) is None
    # all inline: no sidecar
    small = Graph("s")
    x = Value("x", (1, 2))
    small.inputs.append(x)
    small.outputs.append(x)
    assert save_ir(small, tmp_path / "s.tir") is None
    assert not (tmp_path / "s.npz").exists()
    assert graphs_equal(small, load_ir(tmp_path / "s.tir")) is None


def test_dump_without_table_and_comments():
    g = _every_op_graph()
    text = print_graph(g)                      # no table: references only (a dump)
    assert "@onnx__Conv_1" in text
    with pytest.raises(FormatError, match="no sidecar"):
        parse_graph(text)
    table = ConstTable()
    text = "# after pass fuse-activation\n" + print_graph(g, table).replace(
        "\n  output", "  # trailing comment\n  output")
    assert graphs_equal(g, parse_graph(text, table.arrays)) is None


def test_forward_references_allowed():
    text = """graph "fw" {
      input %x : f32[1,2,4,4]
      %z : f32[1,2,4,4] = relu "r2" (%y) {act=relu}
      %y : f32[1,2,4,4] = relu "r1" (%x) {act=relu}
      output %z
    }"""
    g = parse_graph(text)
    assert [n.name for n in g.nodes] == ["r2", "r1"]
    assert g.nodes[0].inputs[0].producer is g.nodes[1]
    g.toposort()
    verify(g)


GOOD = """graph "g" {
  input %x : f32[1,2,4,4]
  const %w : f32[2,2,1,1] = dense<[1.0, 0.0, 0.0, 1.0]>
  %y : f32[1,2,4,4] = conv "c" (%x, %w) {kernel=[1,1], act=relu}
  output %y
}
"""


def test_defaults_filled_in():
    g = parse_graph(GOOD)
    assert g.nodes[0].attrs == ops.ConvAttrs((1, 1), act=ops.RELU)
    assert g.nodes[0].inputs[0].uses == [(g.nodes[0], 0)]


@pytest.mark.parametrize("old,new,match", [
    ("conv \"c\"", "convolve \"c\"", r"<ir>:4:\d+: unknown op 'convolve'"),
    ("act=relu", "act=relu, foo=1", r"4:\d+: .*unknown attribute 'foo' for op conv"),
    ("act=relu", "act=gelu", r"4:\d+: .*'gelu' is not one of none, relu, clip"),
    ("act=relu", "act=clip(1.0)", "takes 2 values"),
    ("kernel=[1,1]", "kernel=[1,1,1]", "expected 2 elements"),
    ("kernel=[1,1]", "kernel=[1,1.5]", "expected an integer"),
    ("kernel=[1,1], ", "", "missing attribute 'kernel'"),
    ("act=relu", "act=relu, act=none", "given twice"),
    ("(%x, %w)", "(%x, %v)", r"4:\d+: node \"c\": undefined value %v"),
    ("output %y", "output %q", "output: undefined value %q"),
    ("%y : f32", "%x : f32", "value %x defined twice"),
    ("1.0, 0.0, 0.0, 1.0", "1.0, 0.0", "2 elements, the type needs 4"),
    ("1.0, 0.0, 0.0, 1.0", "1.0, x, 0.0, 1.0", "bad float32 element"),
    ("f32[2,2,1,1]", "q7[2,2,1,1]", "unknown element type 'q7'"),
    ("output %y", "output %y }", r"6:\d+: syntax error"),
    ("= conv", "conv", r"4:\d+: syntax error: unexpected"),
    ("%x : f32[1,2,4,4]", "%x : f32[1,2,4,4] quant(scale=0.5)", "misses 'zp'"),
    ("%x : f32[1,2,4,4]", "%x : f32[1,2,4,4] quant(scale=0.5, zp=1.5)", "must be an integer"),
    ("%x : f32[1,2,4,4]", "%x : f32[1,2,4,4] quant(scale=0.5, zp=1, ax=0)",
     "unknown quant field 'ax'"),
    ("dense<[1.0, 0.0, 0.0, 1.0]>", "@w", "no sidecar"),
    ("input %x", "input %x\u00e9", "syntax error"),
    ('graph "g"', 'graph "g\\q"', "bad string escape"),
])
def test_parse_errors(old, new, match):
    assert old in GOOD
    with pytest.raises(FormatError, match=match):
        parse_graph(GOOD.replace(old, new, 1))


def test_meta_type_errors():
    for line, match in (('meta a : int = "x"', "not a int"), ("meta a : f = 1", "unknown type"),
                        ("meta a : int = 1\n meta a : int = 2", "given twice")):
        with pytest.raises(FormatError, match=match):
            parse_graph(GOOD.replace('{\n', "{\n" + line + "\n", 1))
    g = parse_graph(GOOD.replace('{\n', '{\n meta "odd key" : float = 3\n', 1))
    assert g.meta["odd key"] == 3.0 and isinstance(g.meta["odd key"], float)


def test_sidecar_mismatch_errors(tmp_path):
    text = GOOD.replace("dense<[1.0, 0.0, 0.0, 1.0]>", "@w")
    ok = np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1)
    assert parse_graph(text, {"w": ok}).nodes[0].inputs[1].const is not None
    with pytest.raises(FormatError, match=r"3:\d+: const %w: sidecar array @w not found"):
        parse_graph(text, {"v": ok})
    with pytest.raises(FormatError, match="dtype float64, the IR says float32"):
        parse_graph(text, {"w": ok.astype(np.float64)})
    with pytest.raises(FormatError, match=r"shape \(4,\), the IR says \(2, 2, 1, 1\)"):
        parse_graph(text, {"w": ok.reshape(4)})


def test_load_ir_only_format_errors(tmp_path):
    g = _quantized_by_hand()
    path = tmp_path / "q.tir"
    save_ir(g, path)
    npz = tmp_path / "q.npz"
    good_npz = npz.read_bytes()
    with pytest.raises(FormatError, match="missing.tir: cannot read IR"):
        load_ir(tmp_path / "missing.tir")
    npz.write_bytes(good_npz[: len(good_npz) // 2])                 # truncated sidecar
    with pytest.raises(FormatError, match="q.npz|q.tir"):
        load_ir(path)
    npz.write_bytes(b"not a zip at all")
    with pytest.raises(FormatError, match="q.npz"):
        load_ir(path)
    npz.unlink()
    with pytest.raises(FormatError, match=r"q.tir:\d+:\d+: .*no sidecar"):
        load_ir(path)
    np.savez(npz, other=np.zeros(3))
    with pytest.raises(FormatError, match="not found"):
        load_ir(path)
    path.write_bytes(b"\xff\xfe graph")
    with pytest.raises(FormatError, match="not UTF-8"):
        load_ir(path)
    # random corruption of the text never raises anything but FormatError
    save_ir(g, path)
    text = path.read_text()
    rng = np.random.default_rng(0)
    for _ in range(200):
        i = int(rng.integers(len(text)))
        bad = text[:i] + "".join(rng.choice(list("%@[]{}(),=:\"#x0 -."), 2)) + text[i + 1:]
        path.write_text(bad)
        try:
            load_ir(path)
        except FormatError:
            pass


def test_graphs_equal_reports_first_difference():
    a = _every_op_graph()
    b = _roundtrip(a)
    assert graphs_equal(a, b) is None
    b.nodes[0].attrs = ops.ConvAttrs((3, 3))
    assert "node '/conv/Conv': attrs differ" in graphs_equal(a, b)
    b = _roundtrip(a)
    next(v for v in b.values() if v.name == "conv.bias").const[0] += 1
    assert graphs_equal(a, b) == "value 'conv.bias': constant payload differs"


def _resnet50_sized() -> Graph:
    """~60 nodes with ResNet-50's 25.5M float32 weights (bottleneck widths, 1x1 maps)."""
    g = Graph("r50-sized")
    x = Value("input", (1, 64, 1, 1))
    g.inputs.append(x)
    cur, n = x, 0
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for _ in range(blocks):
            for cin, cout in ((cur.shape[1], width), (width, width * 4)):
                k = 3 if cout == width else 1
                w = Value(f"w{n}", (cout, cin, k, k), const=np.full((cout, cin, k, k), 0.5,
                                                                   np.float32))
                b = Value(f"b{n}", (cout,), const=np.zeros(cout, np.float32))
                out = Value(f"c{n}", (1, cout, 1, 1))
                g.add_node(Op.CONV, f"conv{n}", [cur, w, b], [out],
                           ops.ConvAttrs((k, k), pads=(k // 2,) * 4, act=ops.RELU))
                cur, n = out, n + 1
    g.outputs.append(cur)
    return g


def test_large_graph_parse_speed(tmp_path):
    g = _resnet50_sized()
    table = ConstTable()
    print_graph(g, table)
    assert table.total_elems() > 20_000_000
    save_ir(g, tmp_path / "big.tir")
    t0 = time.perf_counter()
    g2 = load_ir(tmp_path / "big.tir")
    seconds = time.perf_counter() - t0
    assert len(g2.nodes) == len(g.nodes)
    assert seconds < 4.0, f"load_ir took {seconds:.2f} s"


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.text(min_size=0, max_size=12), min_size=3, max_size=3, unique=True),
       node_name=st.text(max_size=12), meta_val=st.one_of(st.text(max_size=8), st.integers(),
                                                          st.floats(), st.booleans()),
       data=st.lists(st.floats(width=32), min_size=6, max_size=6),
       scale=st.floats(min_value=1e-30, max_value=1e30), zp=st.integers(-128, 127),
       inline_limit=st.sampled_from([0, 6, 16]))
def test_roundtrip_property(names, node_name, meta_val, data, scale, zp, inline_limit):
    g = Graph(node_name + "_g")
    g.meta[node_name] = meta_val
    x = Value(names[0], (1, 2, 3, 1), "int8", quant=QuantParams(scale, zp))
    g.inputs.append(x)
    c = Value(names[1], (1, 2, 3, 1), "float32", const=np.array(data, np.float32).reshape(
        1, 2, 3, 1), quant=QuantParams([scale, 1.0], [zp, 0], axis=1))
    y = Value(names[2], (1, 2, 3, 1), "int8", quant=QuantParams(scale, zp))
    g.add_node(Op.ADD, node_name, [x, c], [y], ops.EltwiseAttrs(
        Activation(ActKind.CLIP, data[0], data[1])), [node_name, names[0]])
    g.outputs.append(y)
    _roundtrip(g, inline_limit)
