"""An int16 *output* from a conv's LUT epilogue (CONV_CFG out_mode bit3 with flags bits 3 + 5:
the 257 knots are int16 outputs, numerics/lut.py apply_lut_wide with ``wide_out``): promoting
the lut layer promotes its conv with it, the executor matches the golden model byte for byte,
the QDQ export matches too, and a table whose output an int8-only op reads stays int8
(specs/quantization.md "int16-input lookup tables", "int16 table outputs")."""

from __future__ import annotations

import dataclasses

import numpy as np
from onnx import helper

from tcc_compiler import api
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import CONV_FLAG_LUT, CONV_FLAG_WIDE_SHIFT, OUT_MODE_LUT16, WIDE_OUT
from tcc_compiler.quant.golden import run_golden
from tcc_compiler.sim.conv_params import conv_flags_problem
from tests.conftest import make_model_impl

N = helper.make_node
LUT = "mul_silu"   # the SiLU's layer name (x * Sigmoid(x) folded to one lut)


def _model(se: bool = False):
    """Conv -> x * Sigmoid(x) (SiLU) -> 1x1 conv; with ``se`` the SiLU output is also scaled
    by a squeeze-excitation-like Mul (GlobalAveragePool -> Sigmoid -> Mul), an int8-only
    reader."""
    r = np.random.default_rng(1)
    inits = {"w": r.normal(0, 0.4, (6, 3, 3, 3)), "b": r.normal(0, 0.2, 6),
             "w2": r.normal(0, 0.3, (4, 6, 1, 1)), "b2": r.normal(0, 0.1, 4)}
    nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, name="conv1"),
             N("Sigmoid", ["c"], ["s"], name="sig"), N("Mul", ["c", "s"], ["a"], name="mul")]
    if se:
        nodes += [N("GlobalAveragePool", ["a"], ["p"], name="gap"),
                  N("Sigmoid", ["p"], ["g"], name="gate"),
                  N("Mul", ["a", "g"], ["e"], name="scale")]
    nodes.append(N("Conv", ["e" if se else "a", "w2", "b2"], ["y"], name="conv2"))
    return make_model_impl(nodes, [1, 3, 12, 12], inits, opset=17)


def _calib(n: int = 4) -> list[np.ndarray]:
    return [np.random.default_rng(s).normal(0, 1, (1, 3, 12, 12)).astype(np.float32)
            for s in range(n)]


def _lut_cfg(m) -> C.ConvCfg:
    (cfg,) = [c for c in m.program.cmd.commands
              if isinstance(c, C.ConvCfg) and c.flags & CONV_FLAG_LUT]
    return cfg


def test_promoted_table_writes_int16_bit_exact_and_closer_to_float():
    """precision {"int16": [the lut]}: the conv and the lut are int16, CONV_CFG sets out_mode
    bit3 and writes 2-byte elements, the executor equals the golden model on every output, and
    the SiLU output is nearer float SiLU of the same int16 conv output than with an int8
    table output."""
    calib = _calib()
    got = {}
    for prec in (["conv1"], {"int16": [LUT]}):
        m = api.compile(_model(), "12x12x3", calibration=calib, precision=prec)
        g = m.quantized_graph
        conv1 = next(n for n in g.nodes if n.name == "conv1")
        lut = conv1.output.uses[0][0]
        cfg = _lut_cfg(m)
        wide_out = isinstance(prec, dict)
        assert conv1.output.dtype == "int16"
        assert lut.output.dtype == ("int16" if wide_out else "int8")
        assert bool(cfg.out_mode & OUT_MODE_LUT16) is wide_out
        assert cfg.out_bytes == (2 if wide_out else 1) and cfg.lut_bytes == 514
        if wide_out:
            assert m.report["precision"]["int16_layers"] == ["conv1", LUT]
        res = m.program.run(calib[1])
        gold = run_golden(g, calib[1], keep=True)
        for o in m.program.manifest["outputs"]:
            assert res["int:" + o["name"]].tobytes() == gold["int:" + o["name"]].tobytes()
        c16 = gold["int:" + conv1.output.name].astype(np.float64) * float(conv1.output.quant.scale)
        q = lut.output.quant
        a = (gold["int:" + lut.output.name].astype(np.float64) - int(q.zero_point)) \
            * float(q.scale)
        got[wide_out] = float(np.sqrt(np.mean((a - c16 / (1 + np.exp(-c16))) ** 2)))
    assert got[True] < 0.1 * got[False], got


def test_int16_table_output_matches_in_the_qdq_export():
    """ONNX Runtime's int16 lut output of the QDQ export equals the golden model's (the int16
    conv output requantized by ONNX Runtime's float conv may differ by one int16 step on a
    rare element, moving the table's output by at most a step or two of its own)."""
    import onnx
    import onnxruntime as ort

    from tcc_compiler.export.qdq import export_qdq

    calib = _calib()
    m = api.compile(_model(), "12x12x3", calibration=calib, precision=[LUT])
    g = m.quantized_graph
    lut = next(n for n in g.nodes if n.name == LUT)
    assert lut.output.dtype == "int16"
    qdq = export_qdq(g)
    name = f"{lut.output.name}_quantized"
    qdq.graph.output.append(onnx.helper.make_value_info(name, onnx.TypeProto()))
    s = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in s.get_outputs()],
                   s.run(None, {s.get_inputs()[0].name: calib[1]})))[name]
    assert got.dtype == np.int16
    want = run_golden(g, calib[1], keep=True)["int:" + lut.output.name]
    d = np.abs(got[0].transpose(1, 2, 0).astype(int) - want.astype(int))
    assert d.max() <= 2 and np.mean(d > 0) <= 0.01, (d.max(), np.mean(d > 0))


def test_a_table_read_by_an_int8_only_op_keeps_an_int8_output():
    """A SiLU whose output a squeeze-excitation Mul reads cannot be int16: the layer is kept
    int8 with the reason, and its conv is not promoted for it."""
    m = api.compile(_model(se=True), "12x12x3", calibration=_calib(2), precision=[LUT])
    p = m.report["precision"]
    assert p["int16_layers"] == [] and "mul" in p["kept_int8"][LUT], p


def test_auto_ranks_the_int16_table_output_after_the_other_promotions():
    """``--precision auto`` may choose the promotion: the lut layer is in its ranking, of kind
    "table outputs", after every other kind (quant/auto_precision.py)."""
    m = api.compile(_model(), "12x12x3", calibration=_calib(), precision="auto")
    ranked = [tuple(r[:2]) for r in m.report["precision"]["ranking"]]
    assert (LUT, "table outputs") in ranked, ranked
    kinds = [k for _, k in ranked]
    assert kinds.index("table outputs") == len(kinds) - kinds.count("table outputs") > 0, kinds


def test_executor_refuses_an_int16_table_output_without_an_int16_input():
    """out_mode bit3 needs flags bits 3 and 5 (the knots read an int16 requantized value)."""
    m = api.compile(_model(), "12x12x3", calibration=_calib(2), precision=[LUT])
    cfg = _lut_cfg(m)
    tile = next(c for c in m.program.cmd.commands if isinstance(c, C.ConvTile))
    assert conv_flags_problem(cfg, tile, 64) is None
    bad = dataclasses.replace(cfg, flags=cfg.flags & ~(WIDE_OUT << CONV_FLAG_WIDE_SHIFT))
    assert "int16 table output" in conv_flags_problem(bad, tile, 64)


def test_int16_table_output_with_int16_weights_runs_bit_exact():
    """A conv with int16 weights (flags bit7) and an int16 table output (out_mode 8) is a valid
    CONV_CFG: the executor runs it and matches the golden model."""
    calib = _calib(2)
    m = api.compile(_model(), "12x12x3", calibration=calib,
                    precision={"int16": [LUT], "int16_weights": ["conv1"]})
    cfg = _lut_cfg(m)
    assert cfg.wide_weights and cfg.out_mode == OUT_MODE_LUT16
    res = m.program.run(calib[1])
    gold = run_golden(m.quantized_graph, calib[1], keep=True)
    for o in m.program.manifest["outputs"]:
        assert res["int:" + o["name"]].tobytes() == gold["int:" + o["name"]].tobytes()


def test_auto_without_a_target_leaves_table_outputs_out_of_the_search(monkeypatch):
    """Without ``--precision-target``, ``auto`` measures its goal from all-int16 without the
    table outputs and its search never tries one (each doubles its conv's cost for tenths of a
    dB: yolov8n's auto cost tripled when they counted); the report still ranks them. With a
    target they are candidates: the search tries them. (Free promotions off: they may take a
    table that costs next to nothing, quant/auto_precision.FREE_FRACTION.)"""
    from tcc_compiler.quant import auto_precision as ap
    monkeypatch.setattr(ap, "FREE_FRACTION", 0.0)
    tried = []
    real = ap._promoted_copy

    def spy(graph, ranges, minmax, promotions):
        tried.append({c[1] for c in promotions})
        return real(graph, ranges, minmax, promotions)
    monkeypatch.setattr(ap, "_promoted_copy", spy)
    m = api.compile(_model(), "12x12x3", calibration=_calib(), precision="auto")
    assert tried and not any("table outputs" in k for k in tried), tried
    assert LUT not in m.report["precision"]["int16_layers"], m.report["precision"]
    assert (LUT, "table outputs") in [tuple(r[:2]) for r in m.report["precision"]["ranking"]]
    tried.clear()
    api.compile(_model(), "12x12x3", calibration=_calib(), precision="auto",
                precision_target_db=60.0)
    assert any("table outputs" in k for k in tried), tried
