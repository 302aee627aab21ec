"""BatchNormalization wherever exporters put it, checked against ONNX Runtime, border included.

Placements: Conv->BN, Gemm->BN, MatMul(+Add)->BN, BN->Conv without padding (folds into the
conv) and with zero padding (stays a per-channel affine op: folding would change the border),
BN->Relu->Conv, Add->BN->Relu (ResNet-50-v2 pre-activation), the input BN on raw 0..255
pixels. Edge values: gamma 0, negative gamma, variance 0 with epsilon from the attribute,
training-mode exports. Plus before/expected IR-text tests of each BN rewrite (hand-computed
folded constants) and does-not-fire tests.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tcc_compiler.errors import UnsupportedError
from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import ActKind, Op
from tcc_compiler.ir.text import graphs_equal, parse_graph, print_graph
from tcc_compiler.passes import PassManager, default_pipeline
from tcc_compiler.passes.affine import is_affine
from tcc_compiler.passes.canonicalize import Canonicalize
from tcc_compiler.passes.fold_affine import (FoldAffineIntoConsumers, FoldAffineIntoProducer,
                                             MergeAffines)

N = helper.make_node
C = 4
EDGE = {  # per-channel gamma, var, epsilon attribute (None = ONNX default 1e-5)
    "plain": (None, None, None),
    "gamma0": ([0.0, 1.3, 0.0, 0.7], None, None),
    "neg_gamma": ([-1.0, -0.5, 2.0, -3.0], None, None),
    "var0_eps": ([1.0, -1.0, 0.5, 2.0], [0.0, 0.0, 1.0, 0.0], 1e-2),
}


def _bn(name, x, inits, rng, c=C, edge="plain", beta_scale=2.0):
    gamma, var, eps = EDGE[edge]
    inits[name + "_g"] = rng.uniform(0.5, 1.5, c) if gamma is None else np.asarray(gamma)
    inits[name + "_b"] = rng.standard_normal(c) * beta_scale
    inits[name + "_m"] = rng.standard_normal(c) * beta_scale
    inits[name + "_v"] = rng.uniform(0.5, 1.5, c) if var is None else np.asarray(var)
    kw = {} if eps is None else {"epsilon": eps}
    return N("BatchNormalization", [x] + [f"{name}_{s}" for s in "gbmv"], [name], name=name,
             **kw)


def _check(model, x, ort_run, rtol=1e-4, atol=1e-5):
    """Pipeline (verified) vs ORT on every output, the border rows/columns asserted on their
    own first so a border-only error is reported as such. Returns (graph, fired)."""
    pm = PassManager(default_pipeline(), verify_each=True)
    g = pm.run(import_onnx(model))
    got = run_float(g, x)
    for o, ref in zip(g.outputs, ort_run(model, x)):
        y = got[o.name].reshape(ref.shape)
        if ref.ndim == 4:
            for name, sl in (("top", np.s_[:, :, 0]), ("bottom", np.s_[:, :, -1]),
                             ("left", np.s_[:, :, :, 0]), ("right", np.s_[:, :, :, -1])):
                np.testing.assert_allclose(y[sl], ref[sl], rtol=rtol, atol=atol,
                                           err_msg=f"{o.name}: {name} border")
        np.testing.assert_allclose(y, ref, rtol=rtol, atol=atol, err_msg=o.name)
    return g, pm.stats.fired


def _w(rng, o=C, i=C, k=3):
    return rng.standard_normal((o, i, k, k)) * 0.3


def _x(rng, h=6, w=6):
    return rng.standard_normal((1, C, h, w)).astype(np.float32)


def _affines(g):
    return [n for n in g.nodes if is_affine(n)]


# ---- placements x edge values ------------------------------------------------------------

@pytest.mark.parametrize("edge", list(EDGE))
def test_conv_bn(make_model, ort_run, rng, edge):
    inits = {"w": _w(rng), "b": rng.standard_normal(C)}
    m = make_model([N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4),
                    _bn("y", "c", inits, rng, edge=edge)], [1, C, 6, 6], inits)
    g, fired = _check(m, _x(rng), ort_run)
    assert [n.op for n in g.nodes] == [Op.CONV] and fired["fold-affine-into-producer"] == 1


@pytest.mark.parametrize("edge", list(EDGE))
@pytest.mark.parametrize("form", ["gemm", "matmul", "matmul_add"])
def test_fc_bn(make_model, ort_run, rng, edge, form):
    k, mm = C * 9, C   # the edge-value arrays hold C entries
    inits = {"B": rng.standard_normal((k, mm)) * 0.3, "bias": rng.standard_normal(mm)}
    nodes = [N("Flatten", ["x"], ["f"])]
    if form == "gemm":
        nodes.append(N("Gemm", ["f", "B", "bias"], ["g"]))
    elif form == "matmul":
        nodes.append(N("MatMul", ["f", "B"], ["g"]))
    else:
        nodes += [N("MatMul", ["f", "B"], ["mm"]), N("Add", ["mm", "bias"], ["g"])]
    nodes.append(_bn("y", "g", inits, rng, c=mm, edge=edge))
    m = make_model(nodes, [1, C, 3, 3], inits)
    g, _ = _check(m, _x(rng, 3, 3), ort_run)
    assert [n.op for n in g.nodes if n.op is not Op.RESHAPE] == [Op.FC]


@pytest.mark.parametrize("edge", list(EDGE))
@pytest.mark.parametrize("kernel, stride", [(1, 1), (1, 2), (3, 1)])
def test_bn_conv_unpadded_folds(make_model, ort_run, rng, edge, kernel, stride):
    inits = {"w": _w(rng, 6, C, kernel), "b": rng.standard_normal(6)}
    m = make_model([_bn("bn", "x", inits, rng, edge=edge),
                    N("Conv", ["bn", "w", "b"], ["y"], strides=[stride] * 2)], [1, C, 7, 7],
                   inits)
    g, fired = _check(m, _x(rng, 7, 7), ort_run)
    assert [n.op for n in g.nodes] == [Op.CONV] and not _affines(g)
    assert fired["fold-affine-into-consumers"] == 1


@pytest.mark.parametrize("edge", list(EDGE))
@pytest.mark.parametrize("pads", [[1, 1, 1, 1], [0, 2, 1, 0]])
def test_bn_conv_padded_stays_affine(make_model, ort_run, rng, edge, pads):
    inits = {"w": _w(rng), "b": rng.standard_normal(C)}
    m = make_model([_bn("bn", "x", inits, rng, edge=edge, beta_scale=3.0),
                    N("Conv", ["bn", "w", "b"], ["y"], pads=pads)], [1, C, 6, 6], inits)
    g, fired = _check(m, _x(rng), ort_run)
    assert len(_affines(g)) == 1 and len(g.nodes) == 2
    assert fired.get("fold-affine-into-consumers", 0) == 0


@pytest.mark.parametrize("edge", list(EDGE))
@pytest.mark.parametrize("producer", ["conv", "input"])
def test_bn_relu_conv(make_model, ort_run, rng, edge, producer):
    # After a single-reader conv the BN+Relu folds into its epilogue; on the graph input it is
    # one affine op with the Relu (the Relu blocks folding into the following conv).
    inits = {"w0": _w(rng), "w": _w(rng, k=1), "b": rng.standard_normal(C)}
    nodes = [N("Conv", ["x", "w0"], ["c0"], pads=[1] * 4)] if producer == "conv" else []
    nodes += [_bn("bn", "c0" if producer == "conv" else "x", inits, rng, edge=edge),
              N("Relu", ["bn"], ["r"]), N("Conv", ["r", "w", "b"], ["y"])]
    m = make_model(nodes, [1, C, 6, 6], inits)
    g, _ = _check(m, _x(rng), ort_run)
    assert len(g.nodes) == 2 and g.nodes[0].attrs.act.kind is ActKind.RELU
    assert is_affine(g.nodes[0]) == (producer == "input")


@pytest.mark.parametrize("edge", list(EDGE))
def test_add_bn_relu_preactivation(make_model, ort_run, rng, edge):
    # ResNet-50-v2 block: s = conv(x) + x; t = relu(bn(s)); y = conv1x1(t) + s. s has two
    # readers (the BN and the next add), so the BN+Relu stays one affine op.
    inits = {"w1": _w(rng), "w2": _w(rng, k=1), "b": rng.standard_normal(C)}
    m = make_model([N("Conv", ["x", "w1", "b"], ["c1"], pads=[1] * 4),
                    N("Add", ["c1", "x"], ["s"]), _bn("bn", "s", inits, rng, edge=edge),
                    N("Relu", ["bn"], ["t"]), N("Conv", ["t", "w2", "b"], ["c2"]),
                    N("Add", ["c2", "s"], ["y"])], [1, C, 6, 6], inits)
    g, fired = _check(m, _x(rng), ort_run)
    assert len(g.nodes) == 3 and is_affine(g.nodes[1])
    assert g.nodes[1].attrs.act.kind is ActKind.RELU
    assert g.nodes[0].input(3) is g.inputs[0] and g.nodes[2].input(3) is g.nodes[0].output
    assert fired["fuse-residual-add"] == 2


def test_input_bn_on_raw_pixels(make_model, ort_run, rng):
    # ResNet-50-v2's bn_data: per-channel normalisation of 0..255 pixels, then the 7x7/s2/p3
    # stem conv. Folding would make the zero padding read as -mean/std: kept as an affine.
    inits = {"bn_g": np.ones(3), "bn_b": np.zeros(3), "bn_m": np.array([123.7, 116.3, 103.5]),
             "bn_v": np.array([58.4, 57.1, 57.4]) ** 2, "w": rng.standard_normal((8, 3, 7, 7))
             * 0.05, "b": rng.standard_normal(8)}
    bn = N("BatchNormalization", ["x", "bn_g", "bn_b", "bn_m", "bn_v"], ["n"], epsilon=2e-5)
    m = make_model([bn, N("Conv", ["n", "w", "b"], ["y"], kernel_shape=[7, 7], strides=[2, 2],
                          pads=[3] * 4)], [1, 3, 16, 16], inits)
    x = rng.integers(0, 256, (1, 3, 16, 16)).astype(np.float32)
    g, _ = _check(m, x, ort_run, rtol=1e-4, atol=1e-4)
    assert is_affine(g.nodes[0]) and g.nodes[0].inputs[0] is g.inputs[0]


# ---- training-mode exports ---------------------------------------------------------------

def _bn_model(opset, outputs, rng, **attrs):
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [C], rng.uniform(0.5, 1.5, C))
             for n in ("g", "b", "m", "v")]
    node = N("BatchNormalization", ["x", "g", "b", "m", "v"], outputs, name="bn", **attrs)
    vi = helper.make_tensor_value_info
    graph = helper.make_graph([node], "g", [vi("x", TensorProto.FLOAT, [1, C, 5, 5])],
                              [vi("y", TensorProto.FLOAT, [1, C, 5, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_training_mode_attribute_refused(rng):
    with pytest.raises(UnsupportedError, match="training_mode"):
        import_onnx(_bn_model(14, ["y", "rm", "rv"], rng, training_mode=1))


def test_eval_mode_opset15_accepted(ort_run, rng):
    m = _bn_model(15, ["y"], rng, training_mode=0)
    x = _x(rng, 5, 5)
    np.testing.assert_allclose(run_float(import_onnx(m), x)["y"], ort_run(m, x)[0],
                               rtol=1e-5, atol=1e-6)


def test_training_export_with_unused_extra_outputs(ort_run, rng):
    m = _bn_model(9, ["y", "rm", "rv", "sm", "sv"], rng)
    x = _x(rng, 5, 5)
    try:
        g = import_onnx(m)
    except UnsupportedError:
        return   # refusing is correct: the NPU has no batch statistics
    np.testing.assert_allclose(run_float(g, x)["y"], ort_run(m, x)[0], rtol=1e-4, atol=1e-5)


# ---- BN rewrites as IR text (expected constants computed by hand) -------------------------

HEAD = 'graph "t" {\n  input %x : f32[1,2,3,3]\n'
CONV = "{kernel=[1,1], strides=[1,1], pads=[%s], dilations=[1,1], group=%d, act=%s}"
W = ("  const %w : f32[2,2,1,1] = dense<[1.0, 2.0, 3.0, 4.0]>\n"
     "  const %b : f32[2] = dense<[0.5, -1.0]>\n")
AFF = ("  const %s : f32[2,1,1,1] = dense<[2.0, -1.0]>\n"
       "  const %t : f32[2] = dense<[1.0, 0.5]>\n")


def _node(out, name, ins, group, src, pads="0,0,0,0", act="none", shape="1,2,3,3"):
    srcs = ", ".join(f'"{s}"' for s in src)
    return (f'  %{out} : f32[{shape}] = conv "{name}" ({", ".join("%" + i for i in ins)})\n'
            f"      {CONV % (pads, group, act)} src=[{srcs}]\n")


def _apply(pass_, before):
    pm = PassManager([pass_], verify_each=True)
    return pm.run(parse_graph(before)), pm.stats.fired[pass_.name]


def _assert_ir(g, expected):
    diff = graphs_equal(g, parse_graph(expected))
    assert diff is None, f"{diff}\n--- got:\n{print_graph(g)}"


def test_canonicalize_bn_ir():
    # a = gamma / sqrt(var + eps) = [1/sqrt(4), 2/sqrt(1)] = [0.5, 2]; shift = beta - mean a
    # = [0 - 0.5, 1 + 2] = [-0.5, 3]. eps = 1.0 from the attribute, var 0 in channel 1.
    before = HEAD + (
        "  const %g : f32[2] = dense<[1.0, 2.0]>\n  const %be : f32[2] = dense<[0.0, 1.0]>\n"
        "  const %m : f32[2] = dense<[1.0, -1.0]>\n  const %v : f32[2] = dense<[3.0, 0.0]>\n"
        '  %y : f32[1,2,3,3] = batchnorm "bn" (%x, %g, %be, %m, %v) {epsilon=1.0} src=["bn"]\n'
        "  output %y\n}\n")
    expected = HEAD + (
        "  const %bn_affine_w : f32[2,1,1,1] = dense<[0.5, 2.0]>\n"
        "  const %bn_affine_b : f32[2] = dense<[-0.5, 3.0]>\n"
        + _node("y", "bn_affine", ["x", "bn_affine_w", "bn_affine_b"], 2, ["bn"])
        + "  output %y\n}\n")
    g, fired = _apply(Canonicalize(), before)
    assert fired == 1
    _assert_ir(g, expected)


def test_fold_into_producer_ir():
    # W' = a[o] W[o] = [[2, 4], [-3, -4]]; b' = a b + t = [2*0.5 + 1, -1*-1 + 0.5] = [2, 1.5]
    before = HEAD + W + AFF + _node("c", "conv", ["x", "w", "b"], 1, ["conv"]) \
        + _node("y", "bn", ["c", "s", "t"], 2, ["bn"]) + "  output %y\n}\n"
    expected = HEAD + ("  const %w_1 : f32[2,2,1,1] = dense<[2.0, 4.0, -3.0, -4.0]>\n"
                       "  const %b_1 : f32[2] = dense<[2.0, 1.5]>\n") \
        + _node("y", "conv", ["x", "w_1", "b_1"], 1, ["conv", "bn"]) + "  output %y\n}\n"
    g, fired = _apply(FoldAffineIntoProducer(), before)
    assert fired == 1
    _assert_ir(g, expected)


def test_fold_into_producer_does_not_fire_on_shared_conv():
    before = HEAD + W + AFF + _node("c", "conv", ["x", "w", "b"], 1, ["conv"]) \
        + _node("y", "bn", ["c", "s", "t"], 2, ["bn"]) + "  output %c\n  output %y\n}\n"
    g, fired = _apply(FoldAffineIntoProducer(), before)
    assert fired == 0
    _assert_ir(g, before)


def test_fold_into_consumer_ir():
    # W'[o, i] = W[o, i] s[i] = [[2, -2], [6, -4]]; b' = b + sum_i W[o, i] t[i]
    # = [0.5 + 1 + 1, -1 + 3 + 2] = [2.5, 4]
    before = HEAD + W + AFF + _node("a", "bn", ["x", "s", "t"], 2, ["bn"]) \
        + _node("y", "conv", ["a", "w", "b"], 1, ["conv"]) + "  output %y\n}\n"
    expected = HEAD + ("  const %w_1 : f32[2,2,1,1] = dense<[2.0, -2.0, 6.0, -4.0]>\n"
                       "  const %b_1 : f32[2] = dense<[2.5, 4.0]>\n") \
        + _node("y", "conv", ["x", "w_1", "b_1"], 1, ["bn", "conv"]) + "  output %y\n}\n"
    g, fired = _apply(FoldAffineIntoConsumers(), before)
    assert fired == 1
    _assert_ir(g, expected)


def test_fold_into_consumer_does_not_fire_on_padded_conv():
    before = HEAD + W + AFF + _node("a", "bn", ["x", "s", "t"], 2, ["bn"]) \
        + _node("y", "conv", ["a", "w", "b"], 1, ["conv"], pads="1,1,1,1", shape="1,2,5,5") \
        + "  output %y\n}\n"
    g, fired = _apply(FoldAffineIntoConsumers(), before)
    assert fired == 0
    _assert_ir(g, before)


def test_merge_affines_ir():
    # s = s1 s2 = [2*3, -1*4] = [6, -4]; t = s2 t1 + t2 = [3*1 + 0, 4*0.5 + 1] = [3, 3]
    second = ("  const %s2 : f32[2,1,1,1] = dense<[3.0, 4.0]>\n"
              "  const %t2 : f32[2] = dense<[0.0, 1.0]>\n")
    before = HEAD + AFF + second + _node("a", "bn1", ["x", "s", "t"], 2, ["bn1"]) \
        + _node("y", "bn2", ["a", "s2", "t2"], 2, ["bn2"]) + "  output %y\n}\n"
    expected = HEAD + ("  const %s2_1 : f32[2,1,1,1] = dense<[6.0, -4.0]>\n"
                       "  const %t2_1 : f32[2] = dense<[3.0, 3.0]>\n") \
        + _node("y", "bn2", ["x", "s2_1", "t2_1"], 2, ["bn1", "bn2"]) + "  output %y\n}\n"
    g, fired = _apply(MergeAffines(), before)
    assert fired == 1
    _assert_ir(g, expected)


def test_merge_affines_does_not_fire_after_relu():
    second = ("  const %s2 : f32[2,1,1,1] = dense<[3.0, 4.0]>\n"
              "  const %t2 : f32[2] = dense<[0.0, 1.0]>\n")
    before = HEAD + AFF + second + _node("a", "bn1", ["x", "s", "t"], 2, ["bn1"], act="relu") \
        + _node("y", "bn2", ["a", "s2", "t2"], 2, ["bn2"]) + "  output %y\n}\n"
    g, fired = _apply(MergeAffines(), before)
    assert fired == 0
    _assert_ir(g, before)
