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


def _silu_model(second_reader: bool = False):
    """Conv -> x * Sigmoid(x) (SiLU) -> 1x1 conv; with ``second_reader`` the conv output is
    also a graph output (its table cannot read it as int16)."""
    r = np.random.default_rng(1)
    inits = {"w": r.normal(0, 0.4, (6, 3, 3, 3)), "b": r.normal(0, 0.2, 6),
             "w2": r.normal(0, 0.3, (4, 6, 1, 1)), "b2": r.normal(0, 0.1, 4)}
    nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, name="conv1"),
             N("Sigmoid", ["c"], ["s"], name="sig"), N("Mul", ["c", "s"], ["a"], name="mul"),
             N("Conv", ["a", "w2", "b2"], ["y"], name="conv2")]
    outs = ["y", "c"] if second_reader else ["y"]
    return make_model_impl(nodes, [1, 3, 12, 12], inits, opset=17, outputs=outs)


def test_int16_conv_output_runs_its_table_by_interpolated_knots():
    """A conv promoted to int16 whose output only SiLU reads: CONV_CFG sets bits 3 and 5, loads
    the 257 int16 knots (514 bytes), writes int8; the executor matches the golden model byte
    for byte, and the SiLU output is closer to float than with the int8 table."""
    from tcc_compiler.isa.spec import CONV_FLAG_WIDE_SHIFT, WIDE_OUT

    calib = [np.random.default_rng(s).normal(0, 1, (1, 3, 12, 12)).astype(np.float32)
             for s in range(4)]
    outs = {}
    for prec in ("int8", ["conv1"]):
        m = api.compile(_silu_model(), "12x12x3", calibration=calib, precision=prec)
        g = m.quantized_graph
        conv1 = next(n for n in g.nodes if n.name == "conv1")
        lut = conv1.output.uses[0][0]
        cmds = list(m.program.cmd.commands)
        (cfg,) = [c for c in cmds if isinstance(c, C.ConvCfg) and c.flags & CONV_FLAG_LUT]
        wide = prec != "int8"
        assert conv1.output.dtype == ("int16" if wide else "int8")
        assert bool(cfg.flags & (WIDE_OUT << CONV_FLAG_WIDE_SHIFT)) is wide
        assert cfg.lut_bytes == (514 if wide else 256)
        res = m.program.run(calib[1])
        gold = run_golden(g, calib[1], keep=True)
        for o in m.program.manifest["outputs"]:
            assert res["int:" + o["name"]].tobytes() == gold["int:" + o["name"]].tobytes()
        outs[wide] = (gold["int:" + lut.output.name], lut.output.quant)
        if wide:   # SiLU in float64 of the int16 conv output, rounded once to the int8 grid
            c16 = gold["int:" + conv1.output.name].astype(np.float64) \
                * float(conv1.output.quant.scale)
            qo = lut.output.quant
            ideal = np.clip(np.rint(c16 / (1 + np.exp(-c16)) / float(qo.scale))
                            + int(qo.zero_point), -128, 127)
    assert outs[True][1] == outs[False][1]   # the same output grid: compare the misses
    miss = {w: float(np.mean(outs[w][0] != ideal)) for w in (False, True)}
    assert miss[True] < 0.02 and miss[True] < 0.25 * miss[False], miss
    # a conv output the host reads too cannot feed its table as int16: it stays int8
    m = api.compile(_silu_model(second_reader=True), "12x12x3", calibration=calib[:2],
                    precision=["conv1"])
    assert "conv1" in m.report["precision"]["kept_int8"]


def test_qdq_export_of_an_int16_input_table_matches_the_golden_model():
    """The QDQ export spells the knots' interpolation in integer ONNX ops: ONNX Runtime's int8
    lut output equals the golden model's (the int16 conv output requantized by ONNX Runtime's
    float conv may differ by one int16 step on a rare element: at most 1 % differ, by 1)."""
    import onnx
    import onnxruntime as ort

    from tcc_compiler.export.qdq import export_qdq

    calib = [np.random.default_rng(s).normal(0, 1, (1, 3, 12, 12)).astype(np.float32)
             for s in range(4)]
    m = api.compile(_silu_model(), "12x12x3", calibration=calib, precision=["conv1"])
    g = m.quantized_graph
    lut = next(n for n in g.nodes if n.name == "conv1").output.uses[0][0]
    qdq = export_qdq(g)
    name = f"{lut.output.name}_quantized"
    qdq.graph.output.append(onnx.helper.make_value_info(name, onnx.TypeProto()))
    s = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in s.get_outputs()],
                   s.run(None, {s.get_inputs()[0].name: calib[1]})))[name]
    want = run_golden(g, calib[1], keep=True)["int:" + lut.output.name]
    d = np.abs(got[0].transpose(1, 2, 0).astype(int) - want.astype(int))
    assert d.max() <= 1 and np.mean(d > 0) <= 0.01, (d.max(), np.mean(d > 0))
