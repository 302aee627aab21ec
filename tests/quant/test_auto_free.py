"""``--precision auto`` adds the promotions that cost next to nothing (quant/auto_precision.py
FREE_FRACTION): a squeeze-excitation's fc1 table output, whose worth the calibration photos
cannot show (one number per channel and photo) but darker photos do."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.driver import import_model, run_float_passes
from tcc_compiler.ir.ops import Op
from tcc_compiler.quant import auto_precision as ap
from tcc_compiler.quant.calibrate import observe
from tcc_compiler.quant.promotion_cost import network_cycles
from tcc_compiler.quant.ranges import choose_ranges
from tcc_compiler.target import load_target

N = helper.make_node


def _se_model() -> onnx.ModelProto:
    """x [1,3,8,8] -> Conv c1 -> squeeze-excitation (GlobalAveragePool, Conv fc1 1x1, SiLU,
    Conv fc2 1x1, Sigmoid, Mul with c1) -> Conv c3 -> y [1,4,8,8]."""
    r = np.random.default_rng(7)
    inits = {"w1": r.normal(0, .4, (4, 3, 3, 3)), "b1": np.zeros(4),
             "wf1": r.normal(0, .5, (4, 4, 1, 1)), "bf1": np.zeros(4),
             "wf2": r.normal(0, .5, (4, 4, 1, 1)), "bf2": np.zeros(4),
             "w3": r.normal(0, .3, (4, 4, 3, 3)), "b3": np.zeros(4)}
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="c1"),
             N("GlobalAveragePool", ["c1"], ["p"], name="gap"),
             N("Conv", ["p", "wf1", "bf1"], ["f1"], name="fc1"),
             N("Sigmoid", ["f1"], ["s1"], name="sig1"),
             N("Mul", ["f1", "s1"], ["a1"], name="silu1"),
             N("Conv", ["a1", "wf2", "bf2"], ["f2"], name="fc2"),
             N("Sigmoid", ["f2"], ["g"], name="gate"),
             N("Mul", ["c1", "g"], ["m"], name="scale"),
             N("Conv", ["m", "w3", "b3"], ["y"], pads=[1] * 4, name="c3")]
    g = helper.make_graph(
        nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_auto_adds_the_promotions_that_cost_next_to_nothing(monkeypatch):
    fg = run_float_passes(*import_model(_se_model(), "8x8x3")).graph
    r = np.random.default_rng(0)
    xs = [r.normal(0, 1, (1, 3, 8, 8)).astype(np.float32) for _ in range(4)]
    obs = observe(fg, xs, ["minmax"])["minmax"]
    ranges, _ = choose_ranges(obs, "minmax")
    mm = {k: o.range() for k, o in obs.items()}
    tgt = load_target()
    ranking = ap.rank_promotions(fg, ranges, mm, xs)
    cycles = ap.promotion_cycles(fg, ranking, tgt)
    table = next(c for c in ranking if c[1] == ap.TABLES)   # fc1's SiLU, read by fc2
    vector = next(n for n in fg.nodes if n.op is Op.LUT and n.output.shape[2:] == (1, 1))
    assert table[0] == vector.name
    cheap = cycles[table[:2]]
    assert any(v > cheap for v in cycles.values())
    # the 8x8 toy network is too small for the default share: the limit sits at the table's
    monkeypatch.setattr(ap, "FREE_FRACTION", cheap / network_cycles(fg, tgt), raising=False)
    loose = ap.auto_precision(fg, ranges, mm, xs, goal_db=100.0, target_db=math.inf, tgt=tgt)
    assert vector.name in loose.plan.layers       # nothing needed for the goal, yet taken
    free = {c[:2] for c in ranking if cycles[c[:2]] <= cheap}
    chosen = {(n, k) for n in loose.plan.layers for k in (ap.ACTIVATIONS, ap.TABLES)} | \
        {(n, ap.WEIGHTS) for n in loose.plan.weight_layers}
    assert {c for c in free} <= chosen
    assert all(cycles[c[:2]] <= cheap for c in ranking if c[:2] in chosen)
