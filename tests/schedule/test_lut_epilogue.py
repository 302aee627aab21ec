"""The lookup-table activation runs in the producing conv's epilogue (CONV_CFG flags bit3)
exactly when no one else needs the conv's own output: fires on Conv -> Sigmoid, not when the
conv output has a second reader or the table is per channel; bit-exact either way."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tcc_compiler import api
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import CONV_FLAG_LUT
from tcc_compiler.quant.golden import run_golden
from tests.conftest import make_model_impl

N = helper.make_node


def _model(kind: str):
    r = np.random.default_rng(0)
    inits = {"w": r.normal(0, 0.3, (6, 3, 3, 3)), "b": r.normal(0, 0.1, 6),
             "w2": r.normal(0, 0.3, (4, 6, 1, 1)), "b2": r.normal(0, 0.1, 4)}
    nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4)]
    if kind == "prelu":
        inits["sl"] = np.linspace(0.1, 0.6, 6).reshape(6, 1, 1)
        nodes.append(N("PRelu", ["c", "sl"], ["a"]))
    else:
        nodes.append(N("Sigmoid", ["c"], ["a"]))
    src = "a"
    if kind == "two_readers":   # the conv output is also added to the activation
        nodes.append(N("Add", ["a", "c"], ["s"]))
        src = "s"
    nodes.append(N("Conv", [src, "w2", "b2"], ["y"]))
    return make_model_impl(nodes, [1, 3, 8, 8], inits, opset=17)


@pytest.mark.parametrize("kind,fused", [("plain", True), ("two_readers", False),
                                        pytest.param("prelu", False, marks=pytest.mark.slow)])
def test_epilogue_fires_only_when_the_conv_output_is_private(kind, fused):
    calib = [np.random.default_rng(s).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
             for s in range(4)]
    m = api.compile(_model(kind), "8x8x3", calibration=calib)
    prog = m.program   # the saved folder, decoded
    cmds = list(prog.cmd.commands)
    cfgs = [c for c in cmds if isinstance(c, C.ConvCfg)]
    assert any(c.flags & CONV_FLAG_LUT for c in cfgs) is fused
    assert ("lut" in m.report["npu_ops"]) is not fused, m.report["npu_ops"]
    if fused:   # one load of the 256-entry table, to the address CONV_CFG names
        (cfg,) = [c for c in cfgs if c.flags & CONV_FLAG_LUT]
        loads = [c for c in cmds if isinstance(c, (C.DmaLoad, C.DmaLoadZ))
                 and c.sram == cfg.lut_sram]
        assert len(loads) == 1
    gold = run_golden(m.quantized_graph, calib[0])
    res = prog.run(calib[0])
    for o in prog.manifest["outputs"]:
        assert res["int:" + o["name"]].tobytes() == gold["int:" + o["name"]].tobytes()
