"""Calibration methods on synthetic distributions whose right answer is known in closed form or
by an independent computation (numpy's histogram, numerical integration), never tccc's output."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tcc_compiler.errors import InputError
from tcc_compiler.numerics import jit
from tcc_compiler.quant.calibrate import (EntropyObserver, Histogram, MSEObserver,
                                          PercentileObserver, collect_ranges, make_observer)


def _feed(obs, x, parts=4, seed=0):
    """Feed ``x`` in shuffled batches (the range grows between batches)."""
    r = np.random.default_rng(seed)
    for chunk in np.array_split(r.permutation(x), parts):
        obs.update(chunk)
    return obs


@pytest.fixture(scope="module")
def spikes():
    """A bulk uniform on [0, 1] (10**6 values) with 10 rare spikes at 50."""
    r = np.random.default_rng(1)
    return np.concatenate([r.uniform(0.0, 1.0, 1_000_000), np.full(10, 50.0)])


# ---- exact histogram merging --------------------------------------------------------------

@pytest.mark.parametrize("fixed_lo", [None, 0.0])
def test_histogram_merge_is_exact(fixed_lo):
    """Merged across batches whose ranges grow (both sides in one batch too), the counts equal
    numpy's histogram of all values on the final edges."""
    r = np.random.default_rng(0)
    parts = [r.uniform(0.2, 1.0, 5000), r.uniform(-0.3, 3.7, 5000), r.normal(0, 2, 5000),
             r.uniform(-9.0, 12.0, 300), r.uniform(0.0, 1.0, 10)]
    if fixed_lo is not None:
        parts = [np.abs(p) for p in parts]
    h = Histogram(2048, fixed_lo=fixed_lo)
    for p in parts:
        h.add(p)
    allv = np.concatenate(parts)
    ref, _ = np.histogram(allv, bins=h.edges())
    assert h.counts.sum() == allv.size
    np.testing.assert_array_equal(h.counts, ref)
    assert h.edges()[0] <= allv.min() and h.edges()[-1] > allv.max()


def test_histogram_constant_first_batch():
    """A constant first batch is kept and lands in the bin holding its value."""
    h = Histogram(2048)
    h.add(np.zeros(7))
    h.add(np.array([0.0, 1.0]))
    assert h.counts.sum() == 9 and h.counts[0] == 8


# ---- percentile ---------------------------------------------------------------------------

def test_percentile_ignores_rare_spikes(spikes):
    """99.99 %: 0.01 % of 1,000,010 values = 100 lie above hi; 10 are spikes, so hi is the
    1 - 90 / 10**6 quantile of the uniform bulk, 0.99991 (to one bin: 50 / 2047.5)."""
    lo, hi = _feed(PercentileObserver(99.99), spikes).range()
    bin_w = 50.0 / 2047.5
    assert abs(hi - 0.99991) <= bin_w
    assert 0.0 <= lo <= 1e-4 + bin_w


def test_percentile_is_configurable():
    """p = 99 on U(-1, 1): the 1st and 99th percentiles are -0.98 and 0.98."""
    x = np.random.default_rng(2).uniform(-1.0, 1.0, 400_000)
    lo, hi = _feed(PercentileObserver(99.0), x).range()
    assert lo == pytest.approx(-0.98, abs=2e-3) and hi == pytest.approx(0.98, abs=2e-3)


@pytest.mark.parametrize("p", [50.0, 100.5, float("nan")])
def test_percentile_rejects_bad_value(p):
    with pytest.raises(InputError, match="percentile"):
        make_observer("percentile", p)


# ---- entropy (KL) -------------------------------------------------------------------------

def test_entropy_threshold_lands_on_the_bulk(spikes):
    """A half-normal bulk (sigma 0.2: all but ~1e-6 of it below 1) with spikes at 50: the KL
    threshold lands at the end of the bulk, far below the min-max 50."""
    r = np.random.default_rng(3)
    x = np.concatenate([np.abs(r.normal(0.0, 0.2, 1_000_000)), np.full(10, 50.0)])
    obs = _feed(EntropyObserver(), x)
    lo, hi = obs.range()
    assert lo == pytest.approx(x.min()) and 0.5 <= hi <= 1.5
    assert obs.hist.bins >= 2048


def test_entropy_relu_zeros_do_not_collapse_the_range():
    """Half of the values exactly 0 (a ReLU output): the zeros are exact in int8, so the
    threshold still covers the bulk of the positive half-normal (sigma 1): > 2.5 sigma."""
    r = np.random.default_rng(4)
    x = np.maximum(r.normal(0.0, 1.0, 400_000), 0.0)
    _, hi = _feed(EntropyObserver(), x).range()
    assert 2.5 <= hi <= x.max()


def test_entropy_needs_fine_histogram():
    with pytest.raises(InputError, match="2048"):
        EntropyObserver(bins=1024)


# ---- mse ----------------------------------------------------------------------------------

def _gauss_mse_optimum() -> float:
    """argmin_a of the expected error for x ~ N(0, 1) clipped to [-a, a] with 255 steps:
    E(a) = 2 int_a^inf (x - a)^2 phi(x) dx + (2a / 255)^2 / 12 * P(|x| < a), where the tail
    integral is (1 + a^2) Q(a) - a phi(a) in closed form (Q the normal upper tail)."""
    best, best_e = 0.0, math.inf
    for k in range(2000, 6000):
        a = k / 1000.0
        q = 0.5 * math.erfc(a / math.sqrt(2.0))
        phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
        e = 2 * ((1 + a * a) * q - a * phi) + (2 * a / 255) ** 2 / 12 * (1 - 2 * q)
        if e < best_e:
            best, best_e = a, e
    return best


def test_mse_gaussian_matches_analytic_clip():
    """N(0, 1), 10**6 samples: the clip lands at the analytic MSE optimum (about 3.9 sigma;
    Banner et al. 2019 give 3.92 sigma for 8 bits) to within 4 %."""
    x = np.random.default_rng(5).normal(0.0, 1.0, 1_000_000)
    lo, hi = _feed(MSEObserver(), x).range()
    a = _gauss_mse_optimum()
    assert 3.7 < a < 4.1
    assert (hi - lo) / 2 == pytest.approx(a, rel=0.04)


def test_mse_keeps_rare_large_spikes(spikes):
    """MSE is not a percentile: 10 values at 50 clipped to 1 cost 10 * 49**2 = 24,010, far more
    than the rounding noise of the whole bulk at a 50-wide range (10**6 (50/255)^2/12 = 3,204),
    so the optimum keeps most of the range."""
    _, hi = _feed(MSEObserver(), spikes).range()
    assert hi > 25.0


def test_constant_tensor_every_method():
    """An all-zero tensor calibrates to (0, 0) with every method (no NaN, no division)."""
    for m in ("minmax", "percentile", "entropy", "mse"):
        obs = make_observer(m)
        obs.update(np.zeros(100))
        assert obs.range() == (0.0, 0.0), m


def test_collect_ranges_methods_on_graph(make_model):
    """Every method ranges every value; percentile's p travels through collect_ranges."""
    from onnx import helper

    from tcc_compiler.frontend import import_onnx

    g = import_onnx(make_model([helper.make_node("Relu", ["x"], ["y"])], [1, 2, 50, 50]))
    r = np.random.default_rng(6)
    xs = [r.uniform(-1, 1, (1, 2, 50, 50)).astype(np.float32) for _ in range(4)]
    for m in ("minmax", "percentile", "entropy", "mse"):
        ranges = collect_ranges(g, xs, method=m)
        assert set(ranges) == {"x", g.outputs[0].name}
        assert ranges[g.outputs[0].name][0] == 0.0
    # unguarded: clipping 20 % of a uniform is far worse than min-max, which the collapse
    # guard (tests/quant/test_range_guard.py) would reject
    lo, hi = collect_ranges(g, xs, method="percentile", percentile=90.0, guard=False)["x"]
    # the 10th and 90th percentiles of U(-1, 1)
    assert lo == pytest.approx(-0.8, abs=0.02) and hi == pytest.approx(0.8, abs=0.02)


# ---- calibration table --------------------------------------------------------------------

def test_calib_table_written_edited_and_reused(tmp_path, residual_net):
    """compile -> calib_table.json; edit one tensor's range; --calib-table reuses it: that
    tensor's scale becomes (hi - lo) / 255 of the edited range (widened to include 0)."""
    import json

    import onnx

    from tcc_compiler.cli.main import main
    from tcc_compiler.ir.text import load_ir

    model = tmp_path / "net.onnx"
    onnx.save(residual_net(seed=2, hw=16), model)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32))
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    assert main(["-q", "compile", str(model), "-o", str(out1), "--calib", str(calib),
                 "--calib-method", "percentile", "--percentile", "99.9"]) == 0
    table = json.loads((out1 / "calib_table.json").read_text())
    assert table["format"] == "tccc-calib-table" and table["percentile"] == 99.9
    g1 = load_ir(out1 / "quantized.tir")
    conv = next(n for n in g1.nodes if n.op.value == "conv")
    name = conv.output.name
    rec = table["tensors"][name]
    assert rec["method"] == "percentile" and rec["summary"]["max"] >= rec["hi"]
    rec["lo"], rec["hi"] = 0.0, 5.1          # a ReLU output: scale 5.1 / 255 = 0.02
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(table))
    assert main(["-q", "compile", str(model), "-o", str(out2), "--calib-table",
                 str(edited)]) == 0
    g2 = load_ir(out2 / "quantized.tir")
    v = next(n for n in g2.nodes if n.output.name == name).output
    assert float(v.quant.scale) == pytest.approx(0.02, rel=1e-12)
    manifest = json.loads((out2 / "manifest.json").read_text())
    assert manifest["calibration"]["source"].startswith("table ")
    # a table and calibration inputs together: the inputs were silently ignored (and GPTQ
    # then said --calib was missing); now refused up front, exit 2, nothing written
    out3 = tmp_path / "both"
    assert main(["-q", "compile", str(model), "-o", str(out3), "--calib-table", str(edited),
                 "--calib", str(tmp_path / "nonexistent")]) == 2
    assert not out3.exists()


def test_calib_table_errors(tmp_path):
    from tcc_compiler.quant.calib_table import read_table

    p = tmp_path / "t.json"
    p.write_text('{"format": "other"}')
    with pytest.raises(InputError, match="not a tccc calibration table"):
        read_table(p)
    p.write_text('{"format": "tccc-calib-table", "version": 1, "tensors": '
                 '{"a": {"lo": 2.0, "hi": 1.0}}}')
    with pytest.raises(InputError, match="tensor 'a'"):
        read_table(p)
    with pytest.raises(InputError, match="not found"):
        read_table(tmp_path / "missing.json")
    # a folder or an empty device was "not found" (a new-user attack): say what it is
    with pytest.raises(InputError, match="is a folder, not a calibration table"):
        read_table(tmp_path)
    with pytest.raises(InputError, match="not valid JSON"):
        read_table("/dev/null")
    # an integer beyond float's range was reported as "got inf, inf" whatever lo was
    p.write_text('{"format": "tccc-calib-table", "version": 1, "tensors": '
                 '{"a": {"lo": 0.5, "hi": 1' + "0" * 400 + '}}}')
    with pytest.raises(InputError, match=r"finite floats, got 0\.5, 10000000\.\.\.\(401 digits\)"):
        read_table(p)


@pytest.mark.parametrize("lo, hi", [('"3"', "4.0"), ("-1.0", '"3"'), ("true", "1.0"),
                                    ("null", "1.0"), ("0", "1" + "0" * 400)])
def test_calib_table_bound_not_a_number(tmp_path, lo, hi):
    """A bound given as a string ("3"), a bool or null was read through float() and
    accepted; a JSON number is required. The CLI says so in one line, exit 2."""
    from tcc_compiler.quant.calib_table import read_table

    p = tmp_path / "t.json"
    p.write_text('{"format": "tccc-calib-table", "version": 1, "tensors": '
                 f'{{"a": {{"lo": {lo}, "hi": {hi}}}}}}}')
    with pytest.raises(InputError, match="tensor 'a'"):
        read_table(p)


def test_calib_table_string_bound_cli(tmp_path, capsys):
    """tccc compile --calib-table with a string bound: one line on stderr, exit 2, no
    output folder."""
    import onnx
    from onnx import TensorProto, helper

    from tcc_compiler.cli.main import main

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], [0.1] * 12)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [w])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), model)
    table = tmp_path / "t.json"
    table.write_text('{"format": "tccc-calib-table", "version": 1, "tensors": {'
                     '"x": {"lo": "3", "hi": 4.0}, "y": {"lo": -1.0, "hi": 1.0}}}')
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["-q", "compile", str(model), "--input", "8x8x3", "-o", str(out),
                 "--calib-table", str(table)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tensor 'x'" in err and '"3"' in err, err
    assert not out.exists()


# ---- the real trained ResNet-8 (optional data) -------------------------------------------

RESNET8 = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data" \
    / "cifar10-resnet8"


@pytest.mark.slow
@pytest.mark.skipif(not (RESNET8 / "resnet8.onnx").is_file(), reason="ResNet-8 data absent")
@pytest.mark.parametrize("method", ["minmax", "percentile", "mse"])
def test_resnet8_int8_top1_close_to_fp32(method):
    """Calibrate on the first 50 CIFAR-10 images, score all 200 against the labels: INT8
    top-1 within 1 point of FP32 (ONNX Runtime) and at most 8 of 200 predictions flipped."""
    import csv

    import onnxruntime as ort

    from tcc_compiler.frontend import import_onnx
    from tcc_compiler.passes import PassManager, default_pipeline
    from tcc_compiler.quant import quantize_graph, run_golden

    rows = sorted((r for r in csv.reader(open(RESNET8 / "labels.csv")) if r),
                  key=lambda r: r[0])
    xs = [np.frombuffer((RESNET8 / "images" / r[0]).read_bytes(), np.uint8)
          .reshape(32, 32, 3).transpose(2, 0, 1)[None].astype(np.float32) for r in rows]
    labels = np.array([int(r[-1]) for r in rows])
    sess = ort.InferenceSession(str(RESNET8 / "resnet8.onnx"),
                                providers=["CPUExecutionProvider"])
    iname = sess.get_inputs()[0].name
    fp = np.array([int(np.argmax(sess.run(None, {iname: x})[0])) for x in xs])
    g = PassManager(default_pipeline()).run(import_onnx(str(RESNET8 / "resnet8.onnx")))
    quantize_graph(g, collect_ranges(g, xs[:50], method=method))
    q = np.array([int(np.argmax(run_golden(g, x)[g.outputs[0].name])) for x in xs])
    # 1 point of 200 images = 2 images (integer counts: no float round-off)
    assert abs(int(np.sum(q == labels)) - int(np.sum(fp == labels))) <= 2
    assert int(np.sum(q != fp)) <= 8


@pytest.mark.skipif(not jit.available(), reason="numba (the fast extra) not installed")
def test_mse_range_compiled_is_the_numpy_range(monkeypatch):
    """Once numba is loaded the MSE search's terms are computed by quant/observe_jit.py: the
    same range bit for bit as the numpy form, on ReLU-like (zeros), two-signed, all-negative,
    spiky and constant-bulk inputs."""
    jit.warm()
    r = np.random.default_rng(7)
    cases = [np.maximum(r.normal(0.3, 1.0, 200_000), 0.0), r.normal(0.0, 2.0, 100_000),
             -r.exponential(1.0, 50_000), np.concatenate([r.uniform(0, 1, 90_000),
                                                          np.full(7, 40.0)]),
             np.concatenate([np.full(1000, 6.0), r.uniform(0, 6, 500)]),
             r.normal(0, 1e-3, 10_000).astype(np.float32)]
    seen = []
    module = jit.kernel_module
    monkeypatch.setattr(jit, "kernel_module", lambda name: seen.append(name) or module(name))
    for x in cases:
        obs = _feed(MSEObserver(), x, parts=3)
        got = obs.range()
        old = jit.set_enabled(False)
        try:
            want = obs.range()
        finally:
            jit.set_enabled(old)
        assert got == want and type(got[0]) is type(want[0])
    assert "tcc_compiler.quant.observe_jit" in seen
