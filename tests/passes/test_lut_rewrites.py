"""fuse-silu and fuse-gelu: ``x * Sigmoid(x)`` (either operand order) becomes one silu table; a
product of
a sigmoid of some OTHER tensor (a squeeze-excitation gate) or of a shared sigmoid is left alone.
Numerics against ONNX Runtime, verifier after every pass."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import LutFunc, Op
from tcc_compiler.passes import PassManager, default_pipeline

N = helper.make_node
C = 4


def _run(model, x, ort_run):
    pm = PassManager(default_pipeline(), verify_each=True)
    g = pm.run(import_onnx(model))
    for o, r in zip(g.outputs, ort_run(model, x)):
        np.testing.assert_allclose(run_float(g, x)[o.name].reshape(r.shape), r, rtol=1e-4,
                                   atol=1e-5)
    return g, pm.stats.fired


def _luts(g):
    return [n.attrs.func for n in g.nodes if n.op is Op.LUT]


@pytest.mark.parametrize("order", [("c", "s"), ("s", "c")])
def test_fires_once_on_x_times_sigmoid_x(make_model, ort_run, rng, order):
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4), N("Sigmoid", ["c"], ["s"]),
                    N("Mul", list(order), ["y"])], [1, C, 6, 6],
                   {"w": rng.standard_normal((C, C, 3, 3))})
    g, fired = _run(m, rng.standard_normal((1, C, 6, 6)).astype(np.float32), ort_run)
    assert fired["fuse-silu"] == 1
    assert _luts(g) == [LutFunc.SILU] and not any(n.op is Op.MUL for n in g.nodes)


def test_not_fired_on_gate_of_another_tensor(make_model, ort_run, rng):
    """Sigmoid(GAP(x)) * x is a squeeze-excitation gate, not SiLU."""
    m = make_model([N("Relu", ["x"], ["r"]), N("GlobalAveragePool", ["r"], ["p"]),
                    N("Sigmoid", ["p"], ["s"]), N("Mul", ["r", "s"], ["y"])], [1, C, 6, 6])
    g, fired = _run(m, rng.standard_normal((1, C, 6, 6)).astype(np.float32), ort_run)
    assert fired["fuse-silu"] == 0
    assert _luts(g) == [LutFunc.SIGMOID] and any(n.op is Op.MUL for n in g.nodes)


def test_shared_sigmoid_kept_for_its_other_reader(make_model, ort_run, rng):
    """x * Sigmoid(x) fires; the sigmoid also feeds the output, so it stays (one each)."""
    m = make_model([N("Relu", ["x"], ["r"]), N("Sigmoid", ["r"], ["s"]),
                    N("Mul", ["r", "s"], ["m"]), N("Add", ["m", "s"], ["y"])], [1, C, 6, 6])
    g, fired = _run(m, rng.standard_normal((1, C, 6, 6)).astype(np.float32), ort_run)
    assert fired["fuse-silu"] == 1
    assert sorted(f.value for f in _luts(g)) == ["sigmoid", "silu"]


# ---- fuse-gelu: the erf form as exporters write it ---------------------------------------

def _gelu_nodes(half_first: bool):
    erf = [N("Div", ["c", "sq"], ["d"]), N("Erf", ["d"], ["e"]), N("Add", ["e", "one"], ["a"])]
    if half_first:   # 0.5 * x first, then times (1 + erf)
        return erf + [N("Mul", ["c", "half"], ["h"]), N("Mul", ["h", "a"], ["y"])]
    return erf + [N("Mul", ["c", "a"], ["m"]), N("Mul", ["m", "half"], ["y"])]   # torch.onnx


@pytest.mark.parametrize("half_first", [False, True])
def test_gelu_erf_form_fires_once(make_model, ort_run, rng, half_first):
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4)] + _gelu_nodes(half_first),
                   [1, C, 6, 6], {"w": rng.standard_normal((C, C, 3, 3)),
                                  "sq": np.float32(np.sqrt(2.0)), "one": np.float32(1.0),
                                  "half": np.float32(0.5)})
    g, fired = _run(m, rng.standard_normal((1, C, 6, 6)).astype(np.float32), ort_run)
    assert fired["fuse-gelu"] == 1
    assert [n.op for n in g.nodes] == [Op.CONV, Op.LUT] and _luts(g) == [LutFunc.GELU]


def test_gelu_not_fired_with_other_constant(make_model, ort_run, rng):
    """x * (1 + erf(x / 2)) * 0.5 is not GELU: the erf stays a table, the product a mul."""
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4)] + _gelu_nodes(False),
                   [1, C, 6, 6], {"w": rng.standard_normal((C, C, 3, 3)),
                                  "sq": np.float32(2.0), "one": np.float32(1.0),
                                  "half": np.float32(0.5)})
    g, fired = _run(m, rng.standard_normal((1, C, 6, 6)).astype(np.float32), ort_run)
    assert fired["fuse-gelu"] == 0
    assert LutFunc.ERF in _luts(g) and any(n.op is Op.MUL for n in g.nodes)


def _gelu_tanh_nodes(consts_first: bool):
    """What torch.onnx (opset 17) writes for nn.GELU(approximate="tanh"), constants first as
    torch puts them (or last, as other exporters do)."""
    def mul(a, k, y):
        return N("Mul", [k, a] if consts_first else [a, k], [y])
    return [N("Mul", ["c", "c"], ["x2"]), N("Mul", ["c", "x2"], ["x3"]), mul("x3", "k0", "t"),
            N("Add", ["c", "t"], ["in"]), mul("in", "k1", "u"), N("Tanh", ["u"], ["th"]),
            N("Add", ["one", "th"] if consts_first else ["th", "one"], ["b"]),
            N("Mul", ["c", "b"], ["m"]), mul("m", "half", "y")]


@pytest.mark.parametrize("consts_first", [True, False])
def test_gelu_tanh_form_fires_once(make_model, ort_run, rng, consts_first):
    consts = {"k0": np.float32(0.044715), "k1": np.float32(np.sqrt(2.0 / np.pi)),
              "one": np.float32(1.0), "half": np.float32(0.5)}
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4)] + _gelu_tanh_nodes(consts_first),
                   [1, C, 6, 6], {"w": rng.standard_normal((C, C, 3, 3)), **consts}, opset=17)
    g, fired = _run(m, rng.standard_normal((1, C, 6, 6)).astype(np.float32), ort_run)
    assert fired["fuse-gelu"] == 1
    assert [n.op for n in g.nodes] == [Op.CONV, Op.LUT] and _luts(g) == [LutFunc.GELU_TANH]


def test_gelu_tanh_not_fired_with_other_cubic_coefficient(make_model, ort_run, rng):
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4)] + _gelu_tanh_nodes(True),
                   [1, C, 6, 6], {"w": rng.standard_normal((C, C, 3, 3)),
                                  "k0": np.float32(0.05), "k1": np.float32(np.sqrt(2 / np.pi)),
                                  "one": np.float32(1.0), "half": np.float32(0.5)}, opset=17)
    g, fired = _run(m, rng.standard_normal((1, C, 6, 6)).astype(np.float32), ort_run)
    assert fired["fuse-gelu"] == 0
    assert LutFunc.TANH in _luts(g)
