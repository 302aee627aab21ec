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
from collections.abc import Sequence

import numpy as np
import pytest

from tcc_compiler.errors import InputError
from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.ir.ops import ConvAttrs, Op
from tcc_compiler.quant import quantize_graph, run_golden
from tcc_compiler.quant.bias_correction import (_error_sums, apply_bias_correction,
                                                bias_correction_mode, correct_biases,
                                                gated_bias_correction)


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
    first, second = res.folds
    assert first["with_db"] < first["without_db"]
    assert second["with_db"] is None   # the first fold lost: the second was not needed
    assert res.reason.startswith("off") and "not needed" in res.reason
    # the graph is as it was: the folds' trial biases were put back
    np.testing.assert_array_equal(run_golden(g, _inputs(1.0, -1.0)[1])["y"], before)


def test_gate_refuses_when_one_fold_loses():
    """x_1 = 0.3 on the even inputs (-3 units), 1.0 on the odd ones: the even half's
    correction (+3) helps the odd half (-10 -> -7), but the odd half's (+10) takes the even
    half's -3 to +7: the second fold loses, so the correction stays off. The other way round
    the first fold loses and the second is not run: the same decision, its with_db None."""
    fg, g = _layer()
    res = gated_bias_correction(fg, g, _inputs(0.3, 1.0))
    gains = [f["with_db"] > f["without_db"] for f in res.folds]
    assert gains == [True, False]
    # report.json's record: the same keys on both folds, whichever loses
    assert [sorted(f) for f in res.folds] == [["corrections_from", "with_db", "without_db"]] * 2
    assert not res.applied and _bias(g) == [0]
    assert "both held-out halves" in res.reason
    fg, g = _layer()
    res = gated_bias_correction(fg, g, _inputs(1.0, 0.3))
    assert [sorted(f) for f in res.folds] == [["corrections_from", "with_db", "without_db"]] * 2
    assert res.folds[0]["with_db"] < res.folds[0]["without_db"]
    assert res.folds[1]["with_db"] is None and res.folds[1]["without_db"] is not None
    assert not res.applied and _bias(g) == [0]


def _fold_db(fg, g, xs, src: int) -> tuple[float, float]:
    """(without, with) output SQNR in dB on the inputs of parity 1 - src, with the correction
    from the inputs of parity src (correct_biases on a clone): the fold, computed directly."""
    from tcc_compiler.interp.onnx_float import float_values

    def db(model):
        ref = err = 0.0
        held = xs[1 - src::2]
        for x, fl in zip(held, float_values(fg, ["y"], held)):
            f = fl["y"].astype(np.float64)
            q = run_golden(model, x)["y"].astype(np.float64)
            ref, err = ref + float((f * f).sum()), err + float(((f - q) ** 2).sum())
        return 10.0 * np.log10(ref / err)
    fixed = g.clone()
    correct_biases(fg, fixed, xs[src::2])
    return db(g), db(fixed)


@pytest.mark.parametrize("x1", [(1.0, -1.0), (1.0, 0.3), (0.3, 1.0), (1.0, 1.0)])
def test_gate_runs_the_second_fold_only_when_the_first_gains(monkeypatch, x1):
    """The first fold (corrections from the even inputs) is judged before the second is run:
    when it loses, the even inputs are not run corrected by the odd half (one golden-model run
    per even input, two per odd one) and the decision is off; either way the folds' figures
    are those computed directly (:func:`_fold_db`)."""
    from tcc_compiler.quant import golden

    runs = []
    real = golden.GoldenModel.run
    monkeypatch.setattr(golden.GoldenModel, "run",
                        lambda self, *a, **k: runs.append(1) or real(self, *a, **k))
    fg, g = _layer()
    xs = _inputs(*x1, n=6)
    res = gated_bias_correction(fg, g, xs)
    runs_done = len(runs)
    fg2, g2 = _layer()
    for src, fold in enumerate(res.folds):
        without, with_ = _fold_db(fg2, g2, xs, src)
        assert fold["without_db"] == pytest.approx(without, abs=2e-3)
        if fold["with_db"] is not None:
            assert fold["with_db"] == pytest.approx(with_, abs=2e-3)
    first_gains = res.folds[0]["with_db"] > res.folds[0]["without_db"]
    assert (res.folds[1]["with_db"] is not None) == first_gains
    assert runs_done == 3 + 2 * 3 + (3 if first_gains else 0)


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


def test_bare_flag_before_the_model_is_on(tmp_path, capsys):
    """``tccc compile --bias-correction m.onnx -o out``: the bare flag before the model is on,
    not an "invalid choice: 'm.onnx'" usage error; a mode or a bad mode after it is argparse's."""
    from tcc_compiler.cli.main import bare_bias_correction, main

    assert bare_bias_correction(["compile", "--bias-correction", "m.onnx", "-o", "o"]) == \
        ["compile", "--bias-correction=on", "m.onnx", "-o", "o"]
    for mode in ("auto", "on", "off", "bogus"):
        argv = ["compile", "m.onnx", "--bias-correction", mode]
        assert bare_bias_correction(argv) == argv
    missing = tmp_path / "missing.onnx"
    assert main(["compile", "--bias-correction", str(missing), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "invalid choice" not in err and "missing.onnx" in err


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


# ---- the gate's cost: threads, compiled kernels, one decode per pass ----------------------

def _resnet(residual_net, n: int = 6, hw: int = 128):
    """(float graph, quantized graph, n inputs) of the tiny ResNet at hw x hw: its stem output
    (8 x hw/2 x hw/2) is large enough for the compiled mean-error kernel, one block input is
    read by two convs (the quantized-value cache), and it ends in an fc."""
    from tcc_compiler.driver import import_model, run_float_passes
    from tcc_compiler.quant.calibrate import observe
    from tcc_compiler.quant.ranges import choose_ranges

    fg = run_float_passes(*import_model(residual_net(seed=1, hw=hw, c=8), None)).graph
    r = np.random.default_rng(4)   # scales far apart: the sums' order of additions shows
    xs = [(r.standard_normal((1, 3, hw, hw)) * 10.0 ** r.uniform(-3, 1)).astype(np.float32)
          for _ in range(n)]
    ranges, _ = choose_ranges(observe(fg, xs, ["minmax"], 99.99)["minmax"], "minmax")
    return fg, quantize_graph(fg.clone(), ranges), xs


def _biases(g) -> dict:
    return {n.name: n.inputs[2].const.copy() for n in g.nodes if n.op in (Op.CONV, Op.FC)}


def test_gate_on_threads_with_kernels_gives_the_serial_numpy_result(monkeypatch, residual_net):
    """The gate's folds, decision and biases, and correct_biases' biases, are the same bit for
    bit with the error pass and the trial runs on worker threads and the compiled kernels
    (jit.quantize_nhwc, jit.mean_error) as one at a time in numpy (the serial loop)."""
    from tcc_compiler.numerics import jit
    from tcc_compiler.quant import bias_pass

    fg, g0, xs = _resnet(residual_net)
    results = []
    for threads, kernels in ((1, False), (3, True)):
        monkeypatch.setattr(bias_pass, "workers", lambda t=threads: t)
        old = jit.set_enabled(kernels)
        try:
            g, g2 = g0.clone(), g0.clone()
            sums = _error_sums(fg, g0, xs)    # the float64 sums themselves, bit for bit
            res = gated_bias_correction(fg, g, xs)
            changed = correct_biases(fg, g2, xs)
        finally:
            jit.set_enabled(old)
        results.append((res.applied, res.folds, res.changed, _biases(g), changed, _biases(g2),
                        [sums.total] + sums.fold))
    (a0, f0, c0, b0, ch0, bb0, s0), (a1, f1, c1, b1, ch1, bb1, s1) = results
    assert (a0, f0, c0, ch0) == (a1, f1, c1, ch1)
    assert len(ch0) > 3                       # corrections to compare
    for k in b0:
        np.testing.assert_array_equal(b0[k], b1[k])
        np.testing.assert_array_equal(bb0[k], bb1[k])
        for d0, d1 in zip(s0, s1):
            np.testing.assert_array_equal(d0[k], d1[k])


class _Counted(Sequence):
    """A sequence of inputs counting how often one is read (a decode, for image inputs)."""

    def __init__(self, xs):
        self.xs, self.reads = xs, 0

    def __len__(self):
        return len(self.xs)

    def __getitem__(self, i):
        x = self.xs[i]
        self.reads += 1
        return x


def test_gate_reads_each_input_once_or_twice_and_prepares_each_conv_once(monkeypatch,
                                                                          residual_net):
    """One read of each input for the error pass (which also runs the uncorrected golden
    model and, on the odd inputs, the first fold's trial) and one of each even input for the
    second fold's trial runs; each conv/fc's GEMM-ready weights are made once and
    shared by the error pass and the three golden models (only biases differ)."""
    from tcc_compiler.quant import golden_gemm

    fg, g, xs = _resnet(residual_net, n=4, hw=32)
    made = []
    real = golden_gemm.prepare_weights
    monkeypatch.setattr(golden_gemm, "prepare_weights",
                        lambda *a, **k: made.append(1) or real(*a, **k))
    inputs = _Counted(xs)
    res = gated_bias_correction(fg, g, inputs)
    # the second fold, when run, reads the even inputs once more
    assert inputs.reads == len(xs) + (len(xs[0::2]) if res.folds[1]["with_db"] else 0)
    assert len(made) == sum(n.op in (Op.CONV, Op.FC) for n in g.nodes)


def test_error_pass_and_in_order_keep_the_serial_order_and_errors(monkeypatch):
    """bias_pass hands back each input's job results in input and job order, and raises the
    error the serial loop would: the earliest input's, then its earliest job's."""
    from tcc_compiler.quant import bias_pass

    monkeypatch.setattr(bias_pass, "workers", lambda: 3)
    fg, _ = _layer()
    xs = _inputs(1.0, 1.0, n=7)
    for i, x in enumerate(xs):
        x[0, 0, 0, 0] = np.float32(0.01 * i)   # tells the inputs apart
    ident = [lambda fl, sh, k=k: (k, float(fl["x"][0, 0, 0, 0])) for k in range(3)]
    got = list(bias_pass.error_pass(fg, ["y"], xs, ident, extra=lambda fl: fl["y"].sum()))
    assert [i for i, *_ in got] == list(range(7))
    for i, fl, res, e in got:
        assert res == [(k, float(xs[i][0, 0, 0, 0])) for k in range(3)]
        assert e == fl["y"].sum() and fl["x"] is not None

    def failing(k, bad):
        def job(fl, shared):
            if float(fl["x"][0, 0, 0, 0]) in bad:
                raise ValueError(f"job {k}")
            return k
        return job

    bad4, bad2 = {float(xs[4][0, 0, 0, 0])}, {float(xs[2][0, 0, 0, 0])}
    with pytest.raises(ValueError, match="job 1"):   # input 2: jobs 1 and 2 fail
        list(bias_pass.error_pass(fg, ["y"], xs, [failing(0, bad4), failing(1, bad2),
                                                  failing(2, bad2)]))
    assert [i for i, _ in bias_pass.in_order(lambda i, x: i * 2, xs)] == list(range(7))
    assert [r for _, r in bias_pass.in_order(lambda i, x: i * 2, xs)] == [0, 2, 4, 6, 8, 10, 12]

    def fn(i, x):
        if i in (3, 5):
            raise ValueError(f"input {i}")
        return i
    with pytest.raises(ValueError, match="input 3"):
        list(bias_pass.in_order(fn, xs))


def test_on_with_only_a_table_is_refused_before_any_work(tmp_path, capsys):
    """``--bias-correction on --calib-table T`` has no inputs to correct with: refused by the
    options record, one line, exit 2, before the model or the table is read (it failed only
    after calibration and quantization, behind a weight-rounding warning)."""
    import onnx
    from conftest import conv_gap_fc_net_impl

    from tcc_compiler.cli.main import main
    from tcc_compiler.options import CompileOptions

    with pytest.raises(InputError, match=r"t.json: bias_correction/--bias-correction on needs"):
        CompileOptions(calib_table="t.json", bias_correction="on")
    assert CompileOptions(calib_table="t.json", bias_correction="auto").calib_table == "t.json"
    model = tmp_path / "m.onnx"
    onnx.save(conv_gap_fc_net_impl(), str(model))
    table = tmp_path / "never_read.json"   # absent: the refusal comes first
    capsys.readouterr()
    assert main(["compile", str(model), "-o", str(tmp_path / "o"), "--calib-table", str(table),
                 "--bias-correction", "on"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--bias-correction on needs calibration inputs" in err
    assert not (tmp_path / "o").exists()
