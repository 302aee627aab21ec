"""Float passes: each rewrite fires on its pattern (exactly as often as expected) and not
otherwise, and the whole pipeline keeps the network's function (vs ONNX Runtime, verifier on
after every pass)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.interp.float_exec import conv2d_float
from tcc_compiler.ir.ops import ActKind, Op
from tcc_compiler.passes import PassManager, default_pipeline
from tcc_compiler.passes.affine import is_affine
from tcc_compiler.passes.canonicalize import Canonicalize
from tcc_compiler.passes.fold_affine import MergeAffines

N = helper.make_node
C = 4


def _run(model, x, ort_run):
    """Import + pipeline (verified); assert equality with ORT; return (graph, fired counts)."""
    pm = PassManager(default_pipeline(), verify_each=True)
    g = pm.run(import_onnx(model))
    ref = ort_run(model, x)
    got = run_float(g, x)
    for o, r in zip(g.outputs, ref):
        np.testing.assert_allclose(got[o.name].reshape(r.shape), r, rtol=1e-4, atol=1e-5)
    return g, pm.stats.fired


def _bn(name, x, inits, rng, c=C, gamma=None, var=None, eps=None, beta_scale=1.0):
    inits[name + "_g"] = rng.uniform(0.5, 1.5, c) if gamma is None else np.asarray(gamma, float)
    inits[name + "_b"] = rng.standard_normal(c) * beta_scale
    inits[name + "_m"] = rng.standard_normal(c) * beta_scale
    inits[name + "_v"] = rng.uniform(0.5, 1.5, c) if var is None else np.asarray(var, float)
    kw = {} if eps is None else {"epsilon": eps}
    return N("BatchNormalization", [x] + [f"{name}_{s}" for s in "gbmv"], [name], name=name,
             **kw)


def _w(rng, o=C, i=C, k=3):
    return rng.standard_normal((o, i, k, k)) * 0.3


def _x(rng, h=6, w=6):
    return rng.standard_normal((1, C, h, w)).astype(np.float32)


def _convs(g):
    return [n for n in g.nodes if n.op is Op.CONV]


# ---- BatchNorm folding -------------------------------------------------------------------

def test_conv_bn_folds_into_conv(make_model, ort_run, rng):
    inits = {"w": _w(rng), "b": rng.standard_normal(C)}
    m = make_model([N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4), _bn("y", "c", inits, rng)],
                   [1, C, 6, 6], inits)
    g, fired = _run(m, _x(rng), ort_run)
    assert [n.op for n in g.nodes] == [Op.CONV]
    assert fired["canonicalize"] == 1 and fired["fold-affine-into-producer"] == 1
    assert g.nodes[0].attrs.pads == (1, 1, 1, 1)


def test_bn_before_padded_conv_stays_affine(make_model, ort_run, rng):
    # Large beta/mean: the border pixels would be visibly wrong if the BN were folded into the
    # padded conv (its zero padding would then see -shift/scale instead of 0).
    inits = {"w": _w(rng), "b": rng.standard_normal(C)}
    m = make_model([_bn("bn", "x", inits, rng, beta_scale=3.0),
                    N("Conv", ["bn", "w", "b"], ["y"], pads=[1, 2, 1, 0])], [1, C, 6, 6], inits)
    x = _x(rng)
    g, fired = _run(m, x, ort_run)
    convs = _convs(g)
    assert len(convs) == 2 and is_affine(convs[0]) and convs[0].attrs.group == C
    assert fired.get("fold-affine-into-consumers", 0) == 0
    assert convs[1].inputs[0] is convs[0].output
    # Sensitivity check: the border of the ORT output differs from a naive fold.
    ref = ort_run(m, x)[0]
    sc, sh = convs[0].inputs[1].const.reshape(-1), convs[0].inputs[2].const.reshape(-1)
    w, b = convs[1].inputs[1].const.astype(np.float64), convs[1].inputs[2].const
    naive_b = b + (w * sh.reshape(1, -1, 1, 1)).sum(axis=(1, 2, 3))
    naive = conv2d_float(x, w * sc.reshape(1, -1, 1, 1), naive_b, (1, 1), (1, 2, 1, 0), (1, 1), 1)
    assert np.allclose(naive[:, :, 2:-2, 3:-1], ref[:, :, 2:-2, 3:-1], rtol=1e-4, atol=1e-4)
    assert not np.allclose(naive[:, :, 0], ref[:, :, 0], rtol=1e-3, atol=1e-3)


def test_bn_before_unpadded_1x1_conv_folds(make_model, ort_run, rng):
    inits = {"w": _w(rng, 6, C, 1), "b": rng.standard_normal(6)}
    m = make_model([_bn("bn", "x", inits, rng, beta_scale=3.0),
                    N("Conv", ["bn", "w", "b"], ["y"], strides=[2, 2])], [1, C, 6, 6], inits)
    g, fired = _run(m, _x(rng), ort_run)
    assert [n.op for n in g.nodes] == [Op.CONV] and not is_affine(g.nodes[0])
    assert fired["fold-affine-into-consumers"] == 1
    assert g.nodes[0].inputs[0] is g.inputs[0]


def test_bn_read_by_two_unpadded_convs_folds_into_both(make_model, ort_run, rng):
    inits = {"w1": _w(rng, 3, C, 1), "w2": _w(rng, 3, C, 1), "b": np.zeros(3)}
    m = make_model([_bn("bn", "x", inits, rng), N("Conv", ["bn", "w1", "b"], ["y1"]),
                    N("Conv", ["bn", "w2", "b"], ["y2"])], [1, C, 6, 6], inits,
                   outputs=("y1", "y2"))
    g, fired = _run(m, _x(rng), ort_run)
    assert len(_convs(g)) == 2 and not any(is_affine(n) for n in g.nodes)
    assert fired["fold-affine-into-consumers"] == 1


def test_bn_read_by_padded_and_unpadded_conv_not_folded(make_model, ort_run, rng):
    inits = {"w1": _w(rng, 3, C, 1), "w2": _w(rng, 3, C, 3), "b": np.zeros(3)}
    m = make_model([_bn("bn", "x", inits, rng, beta_scale=2.0),
                    N("Conv", ["bn", "w1", "b"], ["y1"]),
                    N("Conv", ["bn", "w2", "b"], ["y2"], pads=[1] * 4)], [1, C, 6, 6], inits,
                   outputs=("y1", "y2"))
    g, _ = _run(m, _x(rng), ort_run)
    assert sum(is_affine(n) for n in g.nodes) == 1


@pytest.mark.parametrize("case", ["gamma0", "neg_gamma", "var0_eps"])
@pytest.mark.parametrize("where", ["after_conv", "before_padded_conv"])
def test_bn_edge_values(make_model, ort_run, rng, case, where):
    gamma = {"gamma0": [0.0, 1.0, 0.0, 2.0], "neg_gamma": [-1.0, -0.5, 2.0, -3.0],
             "var0_eps": [1.0, -1.0, 0.5, 2.0]}[case]
    var = [0.0, 0.0, 1.0, 0.0] if case == "var0_eps" else None
    eps = 1e-3 if case == "var0_eps" else None
    inits = {"w": _w(rng), "b": rng.standard_normal(C)}
    if where == "after_conv":
        nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4),
                 _bn("y", "c", inits, rng, gamma=gamma, var=var, eps=eps)]
    else:
        nodes = [_bn("bn", "x", inits, rng, gamma=gamma, var=var, eps=eps),
                 N("Conv", ["bn", "w", "b"], ["y"], pads=[1] * 4)]
    m = make_model(nodes, [1, C, 6, 6], inits)
    _run(m, _x(rng), ort_run)
    if case == "var0_eps":  # epsilon from the attribute, not the 1e-5 default
        raw = import_onnx(m)
        bn = next(n for n in raw.nodes if n.op is Op.BATCHNORM)
        assert bn.attrs.epsilon == pytest.approx(1e-3)


def test_two_bns_merge(make_model, ort_run, rng):
    inits = {"w": _w(rng)}
    m = make_model([_bn("bn1", "x", inits, rng), _bn("bn2", "bn1", inits, rng),
                    N("Conv", ["bn2", "w"], ["y"], pads=[1] * 4)], [1, C, 6, 6], inits)
    x = _x(rng)
    g, fired = _run(m, x, ort_run)
    # affine -> affine is caught first by fold-affine-into-producer (an affine is a conv)
    assert fired["fold-affine-into-producer"] + fired.get("merge-affines", 0) == 1
    assert sum(is_affine(n) for n in g.nodes) == 1
    # MergeAffines on its own does the same merge
    pm = PassManager([Canonicalize(), MergeAffines()], verify_each=True)
    g2 = pm.run(import_onnx(m))
    assert pm.stats.fired["merge-affines"] == 1 and sum(is_affine(n) for n in g2.nodes) == 1
    np.testing.assert_allclose(run_float(g2, x)["y"], ort_run(m, x)[0], rtol=1e-4, atol=1e-5)


def test_mul_add_per_channel_constants_become_one_affine(make_model, ort_run, rng):
    m = make_model([N("Mul", ["x", "s"], ["m"]), N("Add", ["m", "t"], ["a"]),
                    N("Relu", ["a"], ["y"])], [1, C, 6, 6],
                   {"s": rng.standard_normal((C, 1, 1)), "t": rng.standard_normal((1, C, 1, 1))})
    g, fired = _run(m, _x(rng), ort_run)
    assert len(g.nodes) == 1 and is_affine(g.nodes[0])
    assert g.nodes[0].attrs.act.kind is ActKind.RELU
    assert fired["canonicalize"] == 2 and fired["fuse-activation"] == 1


def test_bn1d_after_gemm(make_model, ort_run, rng):
    inits = {"B": rng.standard_normal((5, C * 36)), "C": rng.standard_normal(5)}
    m = make_model([N("Flatten", ["x"], ["f"]), N("Gemm", ["f", "B", "C"], ["g"], transB=1),
                    _bn("y", "g", inits, rng, c=5)], [1, C, 6, 6], inits)
    _run(m, _x(rng), ort_run)


# ---- activation fusion -------------------------------------------------------------------

def test_conv_relu_fused(make_model, ort_run, rng):
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["y"])],
                   [1, C, 6, 6], {"w": _w(rng)})
    g, fired = _run(m, _x(rng), ort_run)
    assert [n.op for n in g.nodes] == [Op.CONV]
    assert g.nodes[0].attrs.act.kind is ActKind.RELU and fired["fuse-activation"] == 1


def test_conv_clip06_fused(make_model, ort_run, rng):
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4),
                    N("Clip", ["c", "lo", "hi"], ["y"])], [1, C, 6, 6],
                   {"w": _w(rng, k=3) * 4, "lo": np.array(0.0), "hi": np.array(6.0)})
    g, fired = _run(m, _x(rng), ort_run)
    assert [n.op for n in g.nodes] == [Op.CONV]
    act = g.nodes[0].attrs.act
    assert (act.kind, act.lo, act.hi) == (ActKind.CLIP, 0.0, 6.0)
    assert fired["fuse-activation"] == 1


def test_conv_with_two_readers_does_not_absorb_relu(make_model, ort_run, rng):
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4, name="c"),
                    N("Relu", ["c"], ["r"]), N("Conv", ["r", "w2"], ["d"], pads=[1] * 4, name="d"),
                    N("Add", ["d", "c"], ["y"])], [1, C, 6, 6], {"w": _w(rng), "w2": _w(rng)})
    g, fired = _run(m, _x(rng), ort_run)
    c = next(n for n in g.nodes if n.name == "c")
    assert c.attrs.act.kind is ActKind.NONE
    relu = [n for n in g.nodes if is_affine(n)]
    assert len(relu) == 1 and relu[0].attrs.act.kind is ActKind.RELU  # legalized relu
    d = next(n for n in g.nodes if n.name == "d")
    assert d.input(3) is c.output
    assert fired["legalize"] == 1 and fired["fuse-residual-add"] == 1


def test_graph_output_conv_does_not_absorb_relu(make_model, ort_run, rng):
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["y"])],
                   [1, C, 6, 6], {"w": _w(rng)}, outputs=("c", "y"))
    g, fired = _run(m, _x(rng), ort_run)
    assert g.nodes[0].attrs.act.kind is ActKind.NONE and len(g.nodes) == 2
    assert fired.get("fuse-activation", 0) == 0


def test_relu_then_clip_compose(make_model, ort_run, rng):
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
                    N("Clip", ["r", "lo", "hi"], ["y"])], [1, C, 6, 6],
                   {"w": _w(rng) * 4, "lo": np.array(-1.0), "hi": np.array(2.0)})
    g, fired = _run(m, _x(rng), ort_run)
    act = g.nodes[0].attrs.act
    assert len(g.nodes) == 1 and (act.kind, act.lo, act.hi) == (ActKind.CLIP, 0.0, 2.0)
    assert fired["fuse-activation"] == 2


def test_standalone_relu_legalized_to_affine(make_model, ort_run, rng):
    m = make_model([N("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                    N("Relu", ["p"], ["y"])], [1, C, 6, 6])
    g, fired = _run(m, _x(rng), ort_run)
    assert [n.op for n in g.nodes] == [Op.MAXPOOL, Op.CONV] and is_affine(g.nodes[1])
    assert fired["legalize"] == 1


# ---- residual add fusion -----------------------------------------------------------------

@pytest.mark.parametrize("conv_first", [True, False])
def test_add_with_conv_either_operand(make_model, ort_run, rng, conv_first):
    ins = ["c", "x"] if conv_first else ["x", "c"]
    m = make_model([N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4), N("Add", ins, ["a"]),
                    N("Relu", ["a"], ["y"])], [1, C, 6, 6],
                   {"w": _w(rng), "b": rng.standard_normal(C)})
    g, fired = _run(m, _x(rng), ort_run)
    assert [n.op for n in g.nodes] == [Op.CONV]
    conv = g.nodes[0]
    assert conv.input(3) is g.inputs[0] and conv.attrs.act.kind is ActKind.RELU
    assert fired["fuse-residual-add"] == 1


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_add_of_two_convs_later_conv_absorbs(make_model, ort_run, rng, order):
    m = make_model([N("Conv", ["x", "w1"], ["a"], pads=[1] * 4, name="first"),
                    N("Conv", ["x", "w2"], ["b"], name="second"),
                    N("Add", list(order), ["y"])], [1, C, 6, 6],
                   {"w1": _w(rng), "w2": _w(rng, k=1)})
    g, fired = _run(m, _x(rng), ort_run)
    first = next(n for n in g.nodes if n.name == "first")
    second = next(n for n in g.nodes if n.name == "second")
    assert second.input(3) is first.output and first.input(3) is None
    assert g.nodes.index(first) < g.nodes.index(second)
    assert [n.op for n in g.nodes] == [Op.CONV, Op.CONV]
    assert fired["fuse-residual-add"] == 1


def test_add_of_non_conv_operands_stays_add(make_model, ort_run, rng):
    m = make_model([N("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1] * 4),
                    N("Add", ["p", "x"], ["a"]), N("Relu", ["a"], ["y"])], [1, C, 6, 6])
    g, fired = _run(m, _x(rng), ort_run)
    assert [n.op for n in g.nodes] == [Op.MAXPOOL, Op.ADD]
    assert g.nodes[1].attrs.act.kind is ActKind.RELU   # relu fused into the standalone add
    assert fired.get("fuse-residual-add", 0) == 0


def test_conv_with_relu_does_not_absorb_add(make_model, ort_run, rng):
    # conv -> relu -> add(., x): the activation sits between the conv and the add.
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
                    N("Add", ["r", "x"], ["y"])], [1, C, 6, 6], {"w": _w(rng)})
    g, fired = _run(m, _x(rng), ort_run)
    assert fired.get("fuse-residual-add", 0) == 0
    assert [n.op for n in g.nodes] == [Op.CONV, Op.ADD]


# ---- whole pipeline ----------------------------------------------------------------------

def test_pipeline_on_residual_net(residual_net, ort_run, rng):
    m = residual_net()
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    g, fired = _run(m, x, ort_run)
    ops = [n.op for n in g.nodes]
    assert Op.BATCHNORM not in ops and Op.RELU not in ops and Op.ADD not in ops
    assert ops.count(Op.CONV) == 6 and ops.count(Op.FC) == 1
    assert sum(n.input(3) is not None for n in g.nodes) == 2   # both residual adds fused
    # the down block: the later conv (b2c2) absorbs the add, the 1x1 shortcut is the operand
    b2c2 = next(n for n in g.nodes if "b2c2" in n.source)
    assert "b2sc" in b2c2.input(3).producer.source
    # second run is a no-op (fixed point)
    pm = PassManager(default_pipeline(), verify_each=True)
    pm.run(g)
    assert sum(pm.stats.fired.values()) == 0
