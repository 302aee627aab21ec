"""Lookup-table inputs get the range that serves the table's output (quant/lut_ranges.py):
measured by quantizing the calibration values with each range and applying the float
function, the table outputs' error is lower than with the MSE range of the input itself; a
tensor another op also reads keeps its MSE range."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tcc_compiler import driver
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import Op
from tcc_compiler.numerics.lut import lut_function
from tcc_compiler.options import make_options
from tcc_compiler.passes import fuse
from tcc_compiler.quant.calibrate import observe
from tcc_compiler.quant.lut_ranges import lut_input_ranges, table_error
from tcc_compiler.quant.quantize import activation_params
from tcc_compiler.quant.ranges import choose_ranges


def _model():
    """x -> conv a -> HardSwish; a' = conv b -> LeakyRelu(0.1); conv c -> Sigmoid and Add.
    (The LeakyRelu stays a table only with the two-slope fusion off: :func:`calibrated`.)"""
    rng = np.random.default_rng(0)
    inits, nodes = [], []
    for name, src, dst in (("ca", "x", "a"), ("cb", "ha", "b"), ("cc", "lb", "c")):
        inits += [nh.from_array((rng.standard_normal((8, 8 if src != "x" else 4, 3, 3))
                                 * 0.4).astype(np.float32), name + "_w"),
                  nh.from_array(np.zeros(8, np.float32), name + "_b")]
        nodes.append(h.make_node("Conv", [src, name + "_w", name + "_b"], [dst], name=name,
                                 pads=[1] * 4))
        if dst == "a":
            nodes.append(h.make_node("HardSwish", ["a"], ["ha"], name="hs"))
        if dst == "b":
            nodes.append(h.make_node("LeakyRelu", ["b"], ["lb"], name="lr", alpha=0.1))
    nodes += [h.make_node("Sigmoid", ["c"], ["sc"], name="sg"),
              h.make_node("Add", ["c", "sc"], ["y"], name="add")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 4, 16, 16])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 8, 16, 16])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _xs(n=6):
    return [np.random.default_rng(s).standard_normal((1, 4, 16, 16)).astype(np.float32)
            for s in range(n)]


def _table_mse(f, values, rng_):
    """Measured mean squared error of f(dequantize(quantize(x))) against f(x)."""
    p = activation_params(*rng_)
    s, zp = float(p.scale), int(p.zero_point)
    q = np.clip(np.rint(values / s) + zp, -128, 127)
    return float(np.mean((f((q - zp) * s) - f(values)) ** 2))


@pytest.fixture(scope="module")
def calibrated():
    """The model's float graph with its LeakyRelu kept a table (passes/fuse.py's two-slope
    fusion declines it, as where no conv produces the input), calibrated."""
    model = _model()
    graph, passes = driver.import_model(model)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fuse, "leaky_slope", lambda node: None)
        graph = driver.run_float_passes(graph, passes).graph
    xs = _xs()
    obs = observe(graph, xs, ["mse"])["mse"]
    mse, _ = choose_ranges(obs, "mse")
    new = dict(mse)
    changed = lut_input_ranges(graph, obs, new)
    cal = driver.calibrate(graph, make_options(None, calibration=xs),
                           driver.preprocess_for(graph, make_options(None)), model=model)
    return graph, xs, mse, new, changed, cal


def test_table_inputs_get_ranges_with_lower_table_output_error(calibrated):
    graph, xs, mse, new, changed, cal = calibrated
    luts = {n.attrs.func.value: n for n in graph.nodes if n.op is Op.LUT}
    assert {"hardswish", "leakyrelu"} <= set(luts) and changed == 2
    vals = [run_float(graph, x, keep=True) for x in xs]
    for func in ("hardswish", "leakyrelu"):
        n = luts[func]
        name = n.inputs[0].name
        v = np.concatenate([d[name].reshape(-1) for d in vals]).astype(np.float64)
        f = lambda t, a=n.attrs: lut_function(a.func, t, a.alpha, a.beta)  # noqa: E731
        assert new[name] != mse[name]
        assert new[name][0] > mse[name][0]          # the flattened negative side is clipped
        assert _table_mse(f, v, new[name]) < 0.8 * _table_mse(f, v, mse[name])
        assert cal.ranges[name] == new[name]        # what the driver calibrates
        assert cal.table["tensors"][name]           # and records


def test_tensor_another_op_reads_keeps_its_mse_range(calibrated):
    graph, _, mse, new, _, cal = calibrated
    sig = next(n for n in graph.nodes if n.op is Op.LUT and n.attrs.func.value == "sigmoid")
    name = sig.inputs[0].name                       # read by the Sigmoid and the Add
    assert new[name] == mse[name] == cal.ranges[name]


def test_table_error_matches_brute_force_sum():
    c = np.linspace(-4, 4, 81)
    n = np.exp(-c * c / 4)
    width = c[1] - c[0]

    def f(x):
        return np.where(x >= 0, x, 0.1 * x)
    los, his = np.array([-4.0, -1.0]), np.array([2.0, 4.0])
    got = table_error([f], c, n, width, los, his)
    for i, lo in enumerate(los):
        for j, hi in enumerate(his):
            step2 = ((hi - lo) / 255) ** 2 / 12
            slope2 = ((f(c + width / 2) - f(c - width / 2)) / width) ** 2
            inside = (c >= lo) & (c <= hi)
            want = (n * np.where(inside, slope2 * step2,
                                 (f(c) - f(np.clip(c, lo, hi))) ** 2)).sum()
            assert got[i, j] == pytest.approx(want, rel=1e-9)
