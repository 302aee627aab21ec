"""``--bias-correction auto``: bias correction kept only when corrections estimated on one half
of the calibration inputs raise the output SQNR on the other half, both ways
(quant/bias_correction.py; specs/quantization.md, "Empirical bias correction").

The layer is one 1x1 conv with weights (1.0, 0.3): s_w = 1/127, 0.3 * 127 = 38.1 -> 38, so its
output is low by 0.1/127 * x_1, i.e. -10 bias units (s_b = 0.01/127) when x_1 = 1.0 (exact on
the input grid, s_x = 0.01). Whether the correction carries over from one half to the other
is set by x_1 on the even and odd inputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tcc_compiler.errors import InputError
from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.ir.ops import ConvAttrs, Op
from tcc_compiler.quant import quantize_graph, run_golden
from tcc_compiler.quant.bias_correction import (apply_bias_correction, bias_correction_mode,
                                                correct_biases, gated_bias_correction)


def _layer():
    """(float graph, quantized graph): x [1, 2, 4, 4] -> 1x1 conv (1.0, 0.3), bias 0 -> y."""
    g = Graph()
    x = Value("x", (1, 2, 4, 4))
    g.inputs.append(x)
    w = Value("w", (1, 2, 1, 1), const=np.array([1.0, 0.3], np.float32).reshape(1, 2, 1, 1))
    b = Value("b", (1,), const=np.zeros(1, np.float32))
    y = Value("y", (1, 1, 4, 4))
    g.add_node(Op.CONV, "conv", [x, w, b], [y], ConvAttrs(kernel=(1, 1)))
    g.outputs.append(y)
    fg = g.clone()
    quantize_graph(g, {"x": (-1.0, 1.55), "y": (-2.0, 2.0)})
    assert g.nodes[0].inputs[1].const.reshape(-1).tolist() == [127, 38]
    return fg, g


def _inputs(x1_even: float, x1_odd: float, n: int = 6):
    """n inputs: channel 0 random on the 0.01 grid, channel 1 constant, x1_even on the inputs
    at even positions and x1_odd on the odd ones."""
    r = np.random.default_rng(0)
    xs = []
    for i in range(n):
        x = np.full((1, 2, 4, 4), x1_even if i % 2 == 0 else x1_odd, np.float32)
        x[0, 0] = np.round(r.uniform(-1, 1.5, (4, 4)) / 0.01) * 0.01
        xs.append(x)
    return xs


def _bias(g) -> list:
    return g.nodes[0].inputs[2].const.tolist()


def test_gate_keeps_a_correction_that_holds_on_both_halves():
    """x_1 = 1.0 everywhere: each half's correction (+10) fixes the other half too, so both
    folds gain and the correction from all inputs (+10, as correct_biases) is applied."""
    fg, g = _layer()
    res = gated_bias_correction(fg, g, _inputs(1.0, 1.0))
    assert res.applied and _bias(g) == [10]
    assert [f["corrections_from"] for f in res.folds] == ["even", "odd"]
    assert all(f["with_db"] > f["without_db"] for f in res.folds)
    assert res.changed == {"conv": 10}
    fg2, g2 = _layer()
    correct_biases(fg2, g2, _inputs(1.0, 1.0))
    assert _bias(g2) == _bias(g)


def test_gate_refuses_a_correction_that_does_not_carry_over():
    """x_1 = 1.0 on the even inputs, -1.0 on the odd ones: the even half's correction is +10,
    the odd half's -10; each doubles the other half's error, so neither fold gains and the
    bias stays 0 (on, the mean over all inputs would also be 0: the check is what decides
    here, not the rounding)."""
    fg, g = _layer()
    before = run_golden(g, _inputs(1.0, -1.0)[1])["y"]
    res = gated_bias_correction(fg, g, _inputs(1.0, -1.0))
    assert not res.applied and _bias(g) == [0]
    assert all(f["with_db"] < f["without_db"] for f in res.folds)
    assert res.reason.startswith("off")
    # the graph is as it was: the folds' trial biases were put back
    np.testing.assert_array_equal(run_golden(g, _inputs(1.0, -1.0)[1])["y"], before)


def test_gate_refuses_when_one_fold_loses():
    """x_1 = 1.0 on the even inputs, 0.3 on the odd ones (-3 units): the odd half's correction
    (+3) helps the even half (-10 -> -7), but the even half's (+10) takes the odd half's -3 to
    +7: one fold loses, so the correction stays off."""
    fg, g = _layer()
    res = gated_bias_correction(fg, g, _inputs(1.0, 0.3))
    gains = [f["with_db"] > f["without_db"] for f in res.folds]
    assert gains == [False, True]
    assert not res.applied and _bias(g) == [0]


def test_modes_and_old_spellings():
    """auto/on/off, True/False (the old boolean option) as on/off; anything else refused."""
    assert [bias_correction_mode(v) for v in ("auto", "on", "off", True, False)] == \
        ["auto", "on", "off", "on", "off"]
    with pytest.raises(InputError, match="choose one of auto, on, off"):
        bias_correction_mode("yes")
    from tcc_compiler.options import DEFAULTS, CompileOptions

    assert DEFAULTS.bias_correction == "auto"
    assert CompileOptions(bias_correction=True).bias_correction == "on"
    assert CompileOptions(bias_correction=False).bias_correction == "off"
    with pytest.raises(InputError):
        CompileOptions(bias_correction="maybe")


def test_apply_modes_without_inputs():
    """Without calibration inputs (a calib table) auto is off, saying why; on is refused."""
    fg, g = _layer()
    res = apply_bias_correction("auto", fg, g, [])
    assert not res.applied and "no calibration inputs" in res.reason
    with pytest.raises(InputError, match="needs calibration inputs"):
        apply_bias_correction("on", fg, g, [])
    res = apply_bias_correction("off", fg, g, _inputs(1.0, 1.0))
    assert not res.applied and _bias(g) == [0]
    res = apply_bias_correction(True, fg, g, _inputs(1.0, 1.0))
    assert res.applied and res.mode == "on" and _bias(g) == [10]


def test_cli_flag_spellings():
    """``--bias-correction`` alone is on (the old flag); the default is auto."""
    import argparse

    from tcc_compiler.cli.commands import compile as cmd

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    base = ["m.onnx", "-o", "out"]
    assert p.parse_args(base).bias_correction == "auto"
    assert p.parse_args(base + ["--bias-correction"]).bias_correction == "on"
    assert p.parse_args(base + ["--bias-correction", "off"]).bias_correction == "off"


def test_compile_records_the_choice(tmp_path, gap_fc_model):
    """report.json's bias_correction (mode, applied, both folds' SQNRs) and the manifest's
    calibration.bias_correction say what the default did; --bias-correction off says off."""
    from tcc_compiler import api

    api.compile(str(gap_fc_model), "16x16x3").save(tmp_path / "a")
    rep = json.loads((tmp_path / "a" / "report.json").read_text())["bias_correction"]
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())["calibration"]
    assert rep["mode"] == "auto" and len(rep["folds"]) == 2
    assert man["bias_correction"] is rep["applied"]
    api.compile(str(gap_fc_model), "16x16x3", bias_correction="off").save(tmp_path / "b")
    rep = json.loads((tmp_path / "b" / "report.json").read_text())["bias_correction"]
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())["calibration"]
    assert rep == {"mode": "off", "applied": False, "reason": "off: asked for", "folds": [],
                   "layers_changed": 0, "seconds": rep["seconds"]}
    assert man["bias_correction"] is False
