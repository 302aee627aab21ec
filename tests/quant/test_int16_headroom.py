"""An int16 activation's range is twice its observed one (quant/quantize.py INT16_HEADROOM),
capped at the fused activation's bounds: room for inputs beyond the calibration's at a
rounding noise still far below an int8 step."""

from __future__ import annotations

import numpy as np

from tcc_compiler.quant.quantize import activation_params_int16


def test_range_is_doubled_and_capped_at_the_activation_bounds():
    p = activation_params_int16(-1.5, 3.0)
    assert int(p.zero_point) == 0 and np.isclose(float(p.scale), 6.0 / 32767)
    relu6 = activation_params_int16(0.0, 5.0, (0.0, 6.0))   # a Relu6 output never passes 6
    assert np.isclose(float(relu6.scale), 6.0 / 32767)
    assert float(activation_params_int16(0.0, 0.0).scale) == 1.0


def _silu_into_conv():
    """x [1,3,8,8] -> Conv c1 (3x3) -> SiLU (``x * Sigmoid(x)``, one table in c1's
    epilogue) -> Conv c2 (3x3) -> y: the table's output is read by a conv, so it can be int16
    (CONV_CFG out_mode bit3, specs/quantization.md "int16 table outputs")."""
    from onnx import TensorProto, helper, numpy_helper
    r = np.random.default_rng(5)
    inits = {"w1": r.normal(0, .4, (4, 3, 3, 3)), "b1": np.zeros(4),
             "w2": r.normal(0, .3, (4, 4, 3, 3)), "b2": np.zeros(4)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="c1"),
             helper.make_node("Sigmoid", ["c1"], ["s"], name="sig"),
             helper.make_node("Mul", ["c1", "s"], ["a"], name="silu"),
             helper.make_node("Conv", ["a", "w2", "b2"], ["y"], pads=[1] * 4, name="c2")]
    g = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_an_int16_table_output_keeps_the_headroom_for_inputs_past_the_calibration():
    """A lookup table has no fused activation bounds: its int16 output gets twice its
    observed range like any int16 tensor (it was capped at the observed range itself, so an
    input 1.5x brighter than the calibration's clipped the table's output: EfficientNetV2-S's
    squeeze-excitation SiLUs on the dark Hubble photos)."""
    from tcc_compiler.driver import import_model, run_float_passes
    from tcc_compiler.interp import run_float
    from tcc_compiler.ir.ops import Op
    from tcc_compiler.quant.calibrate import observe
    from tcc_compiler.quant.golden import GoldenModel
    from tcc_compiler.quant.params import dequantize_output
    from tcc_compiler.quant.precision import plan_int16
    from tcc_compiler.quant.quantize import quantize_graph
    from tcc_compiler.quant.ranges import choose_ranges

    fg = run_float_passes(*import_model(_silu_into_conv(), "8x8x3")).graph
    lut = next(n for n in fg.nodes if n.op is Op.LUT)
    r = np.random.default_rng(0)
    xs = [r.normal(0, 1, (1, 3, 8, 8)).astype(np.float32) for _ in range(4)]
    obs = observe(fg, xs, ["minmax"])["minmax"]
    ranges, _ = choose_ranges(obs, "minmax")
    mm = {k: o.range() for k, o in obs.items()}
    plan = plan_int16(fg, [lut.name])
    assert lut.name in plan.layers and not plan.kept_int8
    int16 = {n.output.name: mm[n.output.name] for n in fg.nodes if n.name in plan.layers}
    qg = quantize_graph(fg.clone(), ranges, int16)
    out = next(n for n in qg.nodes if n.op is Op.LUT).output
    assert out.dtype == "int16"
    lo, hi = mm[out.name]
    assert np.isclose(float(out.quant.scale), 2 * max(abs(lo), abs(hi)) / 32767)
    # an input 1.5x the calibration's: the table's output passes its observed maximum and
    # is not clipped there (the int16 output agrees with the float SiLU to a few steps)
    x = 1.5 * xs[0]
    f = run_float(fg, x, keep=True)[out.name].astype(np.float64)
    assert f.max() > 1.2 * hi
    q = dequantize_output(GoldenModel(qg).run(x, keep=True)["int:" + out.name], out)
    assert np.abs(q.reshape(f.shape) - f).max() < 0.02 * hi
