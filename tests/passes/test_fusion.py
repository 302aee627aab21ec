"""Epilogue fusion (activations, residual adds) and the whole float pipeline on real ResNets.

Per rewrite: a before/expected IR-text test (hand-written expected text, compared
structurally), a does-not-fire test, and numeric tests against ONNX Runtime. Then the issue's
"done means" checks on the zoo ResNets and onnx's light_resnet50.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import helper

from tcc_compiler import zoo
from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import ActKind, Op
from tcc_compiler.ir.text import graphs_equal, parse_graph, print_graph
from tcc_compiler.passes import PassManager, default_pipeline
from tcc_compiler.passes.affine import is_affine
from tcc_compiler.passes.fuse import FuseActivation, FuseResidualAdd
from tcc_compiler.passes.legalize import Legalize

N = helper.make_node
C = 4
ATTR1 = "{kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], group=1, act=%s}"
DW1 = "{kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], group=2, act=%s}"
HEAD = 'graph "t" {\n  input %x : f32[1,2,3,3]\n'
CONSTS = ("  const %w : f32[2,2,1,1] = dense<[1.0, 2.0, 3.0, 4.0]>\n"
          "  const %b : f32[2] = dense<[0.5, -1.0]>\n")


def _apply(pass_, before: str):
    """Parse ``before``, run one pass to its fixed point (verifier on); (graph, times fired)."""
    pm = PassManager([pass_], verify_each=True)
    g = pm.run(parse_graph(before))
    return g, pm.stats.fired[pass_.name]


def _assert_ir(g, expected: str) -> None:
    diff = graphs_equal(g, parse_graph(expected))
    assert diff is None, f"{diff}\n--- got:\n{print_graph(g)}"


def _conv1(out, name, ins, act="none", src=None):
    src = src or [name]
    srcs = ", ".join(f'"{s}"' for s in src)
    return (f'  %{out} : f32[1,2,3,3] = conv "{name}" ({", ".join("%" + i for i in ins)})\n'
            f"      {ATTR1 % act} src=[{srcs}]\n")


# ---- fuse-activation: IR text ------------------------------------------------------------

@pytest.mark.parametrize("act_text, op", [("relu", "relu"), ("clip(0.0, 6.0)", "clip")])
def test_fuse_activation_ir(act_text, op):
    before = (HEAD + CONSTS + _conv1("c", "conv", ["x", "w", "b"])
              + f'  %y : f32[1,2,3,3] = {op} "act" (%c) {{act={act_text}}} src=["act"]\n'
              + "  output %y\n}\n")
    expected = (HEAD + CONSTS + _conv1("y", "conv", ["x", "w", "b"], act_text, ["conv", "act"])
                + "  output %y\n}\n")
    g, fired = _apply(FuseActivation(), before)
    assert fired == 1
    _assert_ir(g, expected)


def test_fuse_activation_ir_does_not_fire_on_shared_producer():
    # The conv output is also a graph output: the pre-activation value must stay visible.
    before = (HEAD + CONSTS + _conv1("c", "conv", ["x", "w", "b"])
              + '  %y : f32[1,2,3,3] = relu "act" (%c) {act=relu} src=["act"]\n'
              + "  output %c\n  output %y\n}\n")
    g, fired = _apply(FuseActivation(), before)
    assert fired == 0
    _assert_ir(g, before)


# ---- fuse-residual-add: IR text ----------------------------------------------------------

@pytest.mark.parametrize("conv_first", [True, False])
def test_fuse_residual_add_identity_ir(conv_first):
    ins = "%c, %x" if conv_first else "%x, %c"
    before = (HEAD + CONSTS + _conv1("c", "conv", ["x", "w", "b"])
              + f'  %y : f32[1,2,3,3] = add "add" ({ins}) {{act=relu}} src=["add"]\n'
              + "  output %y\n}\n")
    expected = (HEAD + CONSTS + _conv1("y", "conv", ["x", "w", "b", "x"], "relu", ["conv", "add"])
                + "  output %y\n}\n")
    g, fired = _apply(FuseResidualAdd(), before)
    assert fired == 1
    _assert_ir(g, expected)


def test_fuse_residual_add_projection_ir_later_conv_absorbs():
    # main branch "m" is first in node order, projection shortcut "p" second: "p" absorbs the
    # add (documented rule: the later conv, so the other operand is already computed).
    consts = CONSTS + "  const %w2 : f32[2,2,1,1] = dense<[0.0, 1.0, 1.0, 0.0]>\n"
    before = (HEAD + consts + _conv1("m", "main", ["x", "w", "b"])
              + _conv1("p", "proj", ["x", "w2", "b"])
              + '  %y : f32[1,2,3,3] = add "add" (%m, %p) {act=none} src=["add"]\n'
              + "  output %y\n}\n")
    expected = (HEAD + consts + _conv1("m", "main", ["x", "w", "b"])
                + _conv1("y", "proj", ["x", "w2", "b", "m"], src=["proj", "add"])
                + "  output %y\n}\n")
    g, fired = _apply(FuseResidualAdd(), before)
    assert fired == 1
    _assert_ir(g, expected)


def test_fuse_residual_add_does_not_fire_when_conv_has_relu():
    # conv -> relu (already fused) -> add: the add must not move before the activation.
    before = (HEAD + CONSTS + _conv1("c", "conv", ["x", "w", "b"], "relu")
              + '  %y : f32[1,2,3,3] = add "add" (%c, %x) {act=none} src=["add"]\n'
              + "  output %y\n}\n")
    g, fired = _apply(FuseResidualAdd(), before)
    assert fired == 0
    _assert_ir(g, before)


# ---- legalize: IR text -------------------------------------------------------------------

def test_legalize_standalone_relu_ir():
    before = (HEAD + '  %y : f32[1,2,3,3] = relu "r" (%x) {act=relu} src=["r"]\n'
              + "  output %y\n}\n")
    expected = (HEAD + "  const %r_affine_w : f32[2,1,1,1] = dense<[1.0, 1.0]>\n"
                "  const %r_affine_b : f32[2] = dense<[0.0, 0.0]>\n"
                '  %y : f32[1,2,3,3] = conv "r_affine" (%x, %r_affine_w, %r_affine_b)\n'
                f'      {DW1 % "relu"} src=["r"]\n'
                "  output %y\n}\n")   # a graph output keeps its ONNX name
    g, fired = _apply(Legalize(), before)
    assert fired == 1
    _assert_ir(g, expected)


def test_legalize_does_not_fire_on_npu_ops():
    before = HEAD + CONSTS + _conv1("y", "conv", ["x", "w", "b"], "relu") + "  output %y\n}\n"
    g, fired = _apply(Legalize(), before)
    assert fired == 0
    _assert_ir(g, before)


# ---- numerics against ONNX Runtime -------------------------------------------------------

def _w(rng, o=C, i=C, k=3):
    return rng.standard_normal((o, i, k, k)) * 0.4


def _pipeline(model, x, ort_run, rtol=1e-4, atol=1e-5):
    pm = PassManager(default_pipeline(), verify_each=True)
    g = pm.run(import_onnx(model))
    ref = ort_run(model, x)
    got = run_float(g, x)
    for o, r in zip(g.outputs, ref):
        np.testing.assert_allclose(got[o.name].reshape(r.shape), r, rtol=rtol, atol=atol)
    return g, pm.stats.fired


@pytest.mark.parametrize("opset", [6, 13])
def test_conv_clip06_numeric(make_model, ort_run, rng, opset):
    # Clip bounds as attributes (opset 6) and as inputs (opset 11+); values both sides of 0, 6.
    if opset == 6:
        clip = N("Clip", ["c"], ["y"], min=0.0, max=6.0)
        inits = {"w": _w(rng) * 5}
    else:
        clip = N("Clip", ["c", "lo", "hi"], ["y"])
        inits = {"w": _w(rng) * 5, "lo": np.array(0.0), "hi": np.array(6.0)}
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4), clip], [1, C, 6, 6], inits,
                   opset=opset)
    x = rng.standard_normal((1, C, 6, 6)).astype(np.float32)
    g, fired = _pipeline(m, x, ort_run)
    assert [n.op for n in g.nodes] == [Op.CONV] and fired["fuse-activation"] == 1
    y = ort_run(m, x)[0]
    assert (y == 0).any() and (y == 6).any()   # both clamps are exercised


@pytest.mark.parametrize("conv_first", [True, False])
@pytest.mark.parametrize("shortcut", ["identity", "projection"])
@pytest.mark.parametrize("relu", [True, False])
def test_conv_add_relu_numeric(make_model, ort_run, rng, conv_first, shortcut, relu):
    inits = {"w": _w(rng), "b": rng.standard_normal(C), "ws": _w(rng, k=1)}
    nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, name="main")]
    s = "x"
    if shortcut == "projection":
        nodes.append(N("Conv", ["x", "ws"], ["s"], name="proj"))
        s = "s"
    nodes.append(N("Add", ["c", s] if conv_first else [s, "c"], ["a"], name="add"))
    if relu:
        nodes.append(N("Relu", ["a"], ["y"], name="relu"))
    else:
        nodes[-1].output[0] = "y"
    m = make_model(nodes, [1, C, 6, 6], inits)
    g, fired = _pipeline(m, rng.standard_normal((1, C, 6, 6)).astype(np.float32), ort_run)
    assert all(n.op is Op.CONV for n in g.nodes)
    assert len(g.nodes) == (2 if shortcut == "projection" else 1)
    fused = g.nodes[-1]
    assert fused.input(3) is not None and fired["fuse-residual-add"] == 1
    assert fused.attrs.act.kind is (ActKind.RELU if relu else ActKind.NONE)
    # the absorbing conv runs after the producer of its shortcut (rule: the later conv)
    prod = fused.input(3).producer
    assert prod is None or g.nodes.index(prod) < g.nodes.index(fused)


@pytest.mark.parametrize("after", ["conv", "input"])
def test_add_per_channel_constant_broadcast(make_model, ort_run, rng, after):
    # Add of a [C,1,1] constant broadcasts over H, W: folds into the conv bias, or becomes one
    # depthwise affine op (with the Relu fused) when there is no conv to absorb it.
    inits = {"w": _w(rng), "k": rng.standard_normal((C, 1, 1)) * 2}
    nodes = [N("Conv", ["x", "w"], ["c"], pads=[1] * 4)] if after == "conv" else []
    nodes += [N("Add", ["c" if after == "conv" else "x", "k"], ["a"]), N("Relu", ["a"], ["y"])]
    m = make_model(nodes, [1, C, 6, 6], inits)
    g, _ = _pipeline(m, rng.standard_normal((1, C, 6, 6)).astype(np.float32), ort_run)
    assert len(g.nodes) == 1 and g.nodes[0].attrs.act.kind is ActKind.RELU
    assert is_affine(g.nodes[0]) == (after == "input")


def test_add_not_fused_when_both_operands_are_shared(make_model, ort_run, rng):
    # Both convs' outputs have a second reader: neither can absorb the add (numerics still OK).
    m = make_model([N("Conv", ["x", "w1"], ["a"], pads=[1] * 4),
                    N("Conv", ["x", "w2"], ["b"], pads=[1] * 4),
                    N("Add", ["a", "b"], ["y"])], [1, C, 6, 6],
                   {"w1": _w(rng), "w2": _w(rng)}, outputs=("y", "a", "b"))
    g, fired = _pipeline(m, rng.standard_normal((1, C, 6, 6)).astype(np.float32), ort_run)
    assert fired.get("fuse-residual-add", 0) == 0
    assert [n.op for n in g.nodes] == [Op.CONV, Op.CONV, Op.ADD]


# ---- real ResNets: every Relu/Add fused, float IR == ONNX Runtime -------------------------

LIGHT_RESNET50 = os.path.join(os.path.dirname(onnx.__file__),
                              "backend", "test", "data", "light", "light_resnet50.onnx")


def _done_means(model, ort_run, rng):
    """Pipeline on ``model``: max |err| / max |ref| on a random and a photo-like input."""
    pm = PassManager(default_pipeline(), verify_each=True)
    g = pm.run(import_onnx(model))
    shape = g.inputs[0].shape
    left = [n.name for n in g.nodes if n.op in (Op.RELU, Op.CLIP, Op.ADD, Op.BATCHNORM)]
    assert not left, f"unfused: {left}"
    for x in (rng.standard_normal(shape), rng.uniform(-2.1, 2.6, shape)):
        x = x.astype(np.float32)
        ref = ort_run(model, x)[0]
        got = run_float(g, x)[g.outputs[0].name].reshape(ref.shape)
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    return g


def _ops(g):
    return [(n.op, n.attrs, n.inputs[1].shape if n.op in (Op.CONV, Op.FC) else None,
             n.input(3) is not None) for n in g.nodes]


def test_resnet18_all_fused(ort_run, rng):
    g = _done_means(zoo.build("resnet18", 64, 64), ort_run, rng)
    assert sum(n.input(3) is not None for n in g.nodes) == 8       # 8 residual adds


@pytest.mark.slow
def test_resnet50_and_resnet50_bn_same_npu_ops(ort_run, rng):
    a = _done_means(zoo.build("resnet50", 64, 64), ort_run, rng)
    b = _done_means(zoo.build("resnet50-bn", 64, 64), ort_run, rng)
    assert _ops(a) == _ops(b) and len(a.nodes) == 56


@pytest.mark.slow
def test_resnet50_v2_one_affine_per_block(ort_run, rng):
    # 16 bottleneck blocks: a pre-activation BN+Relu whose block input is also the next
    # identity shortcut stays one depthwise affine op (12 blocks); where the sum feeds only
    # the BN (the 3 stage transitions, whose shortcut is a projection of the pre-activated
    # tensor, and the final BN+Relu before GAP) it folds into the residual conv
    # (fold-affine-into-residual); plus the raw-image BN before the padded 7x7 conv.
    g = _done_means(zoo.build("resnet50-v2", 64, 64), ort_run, rng)
    affines = [n for n in g.nodes if is_affine(n)]
    assert len(affines) == 14 and len(g.nodes) == 56 + 14
    assert affines[0].inputs[0] is g.inputs[0]                      # the input BN


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(LIGHT_RESNET50), reason="onnx wheel without light models")
def test_light_resnet50_all_fused(ort_run, rng):
    g = _done_means(onnx.load(LIGHT_RESNET50), ort_run, rng)
    assert sum(n.op is Op.CONV for n in g.nodes) == 53
