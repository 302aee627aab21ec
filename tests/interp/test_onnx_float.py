"""The float graph IR written back to ONNX (tcc_compiler/interp/onnx_float.py) computes, in ONNX
Runtime, every value the numpy interpreter computes (every node output, same names), up to
float32 rounding; calibration on it gives the same ranges up to that rounding."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tcc_compiler import zoo
from tcc_compiler.driver import import_model, run_float_passes
from tcc_compiler.interp import run_float
from tcc_compiler.interp.onnx_float import FloatSession, NotExpressible, float_model
from tcc_compiler.quant.calibrate import observe


def _compare(graph, x, rtol=2e-5):
    """Every node output of ``graph`` on ``x``: ORT vs the interpreter, relative to each
    value's range (float32 vs float64 accumulation)."""
    sess = FloatSession(graph)
    want = run_float(graph, x, keep=True)
    got = dict(zip(sess.names, sess.run(x)))
    assert list(got) == [n.output.name for n in graph.nodes]
    for name, g in got.items():
        w = want[name]
        assert g.shape == w.shape, name
        if w.dtype.kind != "f":
            np.testing.assert_array_equal(g, w, err_msg=name)
            continue
        span = float(np.abs(w).max()) or 1.0
        np.testing.assert_allclose(g, w, rtol=0, atol=rtol * span, err_msg=name)
    return sess


@pytest.mark.parametrize("name, whc", [
    pytest.param("resnet50-v2", (32, 32, 3), marks=pytest.mark.slow),   # batchnorm affine ops
    ("mobilenet-v3-large", (32, 32, 3))])             # hardswish, SE multiply, residual add
def test_zoo_models_every_value(tmp_path, name, whc):
    path = tmp_path / "m.onnx"
    zoo.save(name, path, width=whc[0], height=whc[1], channels=whc[2])
    g, passes = import_model(str(path), whc)
    fg = run_float_passes(g, passes).graph
    x = np.random.default_rng(0).standard_normal(fg.inputs[0].shape).astype(np.float32)
    _compare(fg, x)


def test_lut_functions_pools_and_host_ops(make_model, rng):
    c = 4
    inits = {"w": rng.standard_normal((c, 3, 3, 3)) * 0.4, "b": rng.standard_normal(c) * 0.1,
             "slope": rng.uniform(0.05, 0.3, (c, 1, 1)), "k": rng.uniform(0.5, 2.0, (1, c, 1, 1))}
    n = helper.make_node
    nodes = [n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             n("Gelu", ["c"], ["g"], domain=""),  # opset 20
             n("Mish", ["g"], ["m"]),
             n("HardSigmoid", ["m"], ["hs"], alpha=0.3, beta=0.4),
             n("LeakyRelu", ["c"], ["lr"], alpha=0.1),
             n("PRelu", ["lr", "slope"], ["pr"]),
             n("Elu", ["pr"], ["el"], alpha=0.7),
             n("Softplus", ["el"], ["sp"]),
             n("Sub", ["sp", "hs"], ["d"]),
             n("Mul", ["d", "k"], ["mk"]),
             n("Tanh", ["mk"], ["th"]),
             n("AveragePool", ["th"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
               strides=[2, 2], count_include_pad=1),
             n("MaxPool", ["ap"], ["mp"], kernel_shape=[2, 2], strides=[1, 1]),
             n("GlobalAveragePool", ["mp"], ["gp"]),
             n("Flatten", ["gp"], ["f"]),
             n("Softmax", ["f"], ["y"])]
    model = make_model(nodes, [1, 3, 12, 12], inits, opset=20)
    g, passes = import_model(model, None)
    fg = run_float_passes(g, passes).graph
    ops = {nd.op.value for nd in fg.nodes}
    assert {"lut", "avgpool", "maxpool", "gap", "softmax"} <= ops
    _compare(fg, rng.standard_normal((1, 3, 12, 12)).astype(np.float32))


def test_calibration_ranges_agree_with_interpreter(tmp_path):
    path = tmp_path / "m.onnx"
    zoo.save("mobilenet-v2", path, width=32, height=32, channels=3)
    g, passes = import_model(str(path), (32, 32, 3))
    fg = run_float_passes(g, passes).graph
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(fg.inputs[0].shape).astype(np.float32) for _ in range(2)]
    # (not entropy: its KL argmin is discontinuous, a float32 rounding of one value can move
    # the threshold by many bins; that is the method's property, not the engine's)
    methods = ["mse", "minmax", "percentile"]
    a = observe(fg, xs, methods, engine="ort")
    b = observe(fg, xs, methods, engine="numpy")
    for m in methods:
        assert list(a[m]) == list(b[m])            # same values observed, same table order
        for k in a[m]:
            (lo1, hi1), (lo2, hi2) = a[m][k].range(), b[m][k].range()
            span = max(hi2 - lo2, 1e-12)
            assert abs(lo1 - lo2) <= 1e-4 * span and abs(hi1 - hi2) <= 1e-4 * span, (m, k)


def test_not_expressible_falls_back(monkeypatch, make_model, rng):
    import tcc_compiler.interp.onnx_float as OF
    from tcc_compiler.errors import InputError

    model = make_model([helper.make_node("Conv", ["x", "w"], ["c"]),
                        helper.make_node("Relu", ["c"], ["y"])], [1, 3, 8, 8],
                       {"w": rng.standard_normal((4, 3, 3, 3))})
    g, passes = import_model(model, None)
    fg = run_float_passes(g, passes).graph
    x = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32)]
    want = observe(fg, x, ["minmax"], engine="numpy")["minmax"]

    def refuse(*a, **k):
        raise NotExpressible("test")

    monkeypatch.setattr(OF, "_write_node", refuse)
    with pytest.raises(NotExpressible):
        float_model(fg)
    # auto falls back to the interpreter (same ranges); an explicit "ort" is an input error
    got = observe(fg, x, ["minmax"], engine="auto")["minmax"]
    assert {k: o.range() for k, o in got.items()} == {k: o.range() for k, o in want.items()}
    with pytest.raises(InputError, match="ONNX Runtime"):
        observe(fg, x, ["minmax"], engine="ort")
    with pytest.raises(InputError, match="engine"):
        observe(fg, x, ["minmax"], engine="gpu")


def test_shared_sessions_serve_a_clone_and_only_the_same_model(tmp_path):
    # within shared_sessions, the float graph and its clone (same constants: the driver's
    # calibration graph and its float_graph) get one ONNX Runtime session, fed through each
    # graph's own inputs, with the same values; a constant replaced by another array, or the
    # end of the block, gives a new session
    from tcc_compiler.interp.onnx_float import float_engine, shared_sessions

    path = tmp_path / "m.onnx"
    zoo.save("mobilenet-v3-large", path, width=32, height=32, channels=3)
    g, passes = import_model(str(path), (32, 32, 3))
    fg = run_float_passes(g, passes).graph
    x = np.random.default_rng(1).standard_normal(fg.inputs[0].shape).astype(np.float32)
    clone = fg.clone()
    with shared_sessions():
        a, b = float_engine(fg, "auto"), float_engine(clone, "auto")
        assert a.sess is b.sess and b.graph is clone and a.graph is fg
        for ga, gb in zip(a.run(x), b.run(x)):
            np.testing.assert_array_equal(ga, gb)
        other = fg.clone()
        conv = next(n for n in other.nodes if n.inputs[1] is not None
                    and n.inputs[1].is_const and n.inputs[1].const.nbytes >= 1024)
        conv.inputs[1].const = conv.inputs[1].const.copy()
        assert float_engine(other, "auto").sess is not a.sess
        with shared_sessions():   # nested: the same sessions
            assert float_engine(clone, "auto").sess is a.sess
    assert float_engine(clone, "auto").sess is not a.sess
