"""CONV_CFG mode combinations that only meet on a depthwise kernel larger than the datapath's
(run as parts, the last in out_mode bit1 "accumulate", specs/isa.md CONV_CFG): its int16
output (flags bit5) and, with a table after it, the 257-knot int16-input LUT epilogue
(bits 3 + 5). The compiler emits each combination and the executor equals the golden model
byte for byte (sim/conv_tile.make_plan's views and sim/conv_exec.conv_result's choice)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tcc_compiler import api
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import (CONV_FLAG_DEPTHWISE, CONV_FLAG_LUT, CONV_FLAG_WIDE_SHIFT,
                                   OUT_MODE_ACCUMULATE, WIDE_OUT)
from tcc_compiler.quant.golden import run_golden
from tests.conftest import make_model_impl

N = helper.make_node


def _dw7_then(act: str):
    """Conv 3x3 -> depthwise 7x7 ("dw", parts of at most 5x5) -> ``act`` -> Conv 1x1."""
    r = np.random.default_rng(5)
    inits = {"w": r.normal(0, 0.4, (8, 3, 3, 3)), "b": r.normal(0, 0.2, 8),
             "d": r.normal(0, 0.15, (8, 1, 7, 7)), "db": r.normal(0, 0.1, 8),
             "w2": r.normal(0, 0.3, (4, 8, 1, 1)), "b2": r.normal(0, 0.1, 4)}
    nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, name="conv1"),
             N("Conv", ["c", "d", "db"], ["e"], pads=[3] * 4, group=8, name="dw"),
             N(act, ["e"], ["a"], name="act"),
             N("Conv", ["a", "w2", "b2"], ["y"], name="conv2")]
    return make_model_impl(nodes, [1, 3, 12, 12], inits, opset=17)


@pytest.mark.parametrize("act,lut", [("Relu", False), ("Sigmoid", True)])
def test_accumulated_parts_with_int16_output_and_int16_input_table(act, lut):
    """The last part of the int16 depthwise conv runs out_mode 2 (accumulate) with flags
    bit5 (int16 requantized value) and, for Sigmoid, bit3 (the table of 257 int16 knots whose
    int8 output the next conv reads); bit-exact with the golden model on two inputs."""
    calib = [np.random.default_rng(s).normal(0, 1, (1, 3, 12, 12)).astype(np.float32)
             for s in range(4)]
    m = api.compile(_dw7_then(act), "12x12x3", calibration=calib, precision=["dw"])
    g = m.quantized_graph
    dw = next(n for n in g.nodes if n.name == "dw")
    assert dw.output.dtype == "int16"   # with a table: the table's input
    wide = WIDE_OUT << CONV_FLAG_WIDE_SHIFT
    last = [c for c in m.program.cmd.commands if isinstance(c, C.ConvCfg)
            and c.flags & CONV_FLAG_DEPTHWISE and c.out_mode == OUT_MODE_ACCUMULATE]
    assert last and all(c.flags & wide for c in last), last
    assert all(bool(c.flags & CONV_FLAG_LUT) is lut for c in last)
    assert all(c.lut_bytes == (514 if lut else 0) for c in last)
    for x in calib[1:3]:
        res = m.program.run(x)
        gold = run_golden(g, x, keep=True)
        for o in m.program.manifest["outputs"]:
            assert res["int:" + o["name"]].tobytes() == gold["int:" + o["name"]].tobytes()
