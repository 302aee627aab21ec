"""Per-layer accuracy analysis: metric formulas by hand, the worst layer found when one is
broken on purpose, the last layer's accumulated error equal to the error against ONNX Runtime,
and the ``tccc analyze`` command end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest

from tcc_compiler.cli.main import main
from tcc_compiler.frontend import import_onnx
from tcc_compiler.ir.graph import QuantParams
from tcc_compiler.ir.ops import Op
from tcc_compiler.quant import collect_ranges, quantize_graph
from tcc_compiler.quant.analyze import _Acc, analyze


def test_metrics_by_hand():
    """f = (1, 2), q = (1, 1): sum f^2 = 5, error energy 1 -> SQNR 10 log10 5 = 6.9897 dB;
    cosine 3 / sqrt(5 * 2) = 0.948683; max |f - q| = 1. Exact match: +inf dB, cosine 1."""
    a = _Acc()
    a.add(np.array([1.0, 2.0]), np.array([1.0, 1.0]))
    m = a.metrics()
    assert m.sqnr_db == pytest.approx(6.989700, abs=1e-6)
    assert m.cosine == pytest.approx(0.948683, abs=1e-6)
    assert m.max_abs == 1.0
    b = _Acc()
    b.add(np.array([0.5, -2.0]), np.array([0.5, -2.0]))
    assert math.isinf(b.metrics().sqnr_db) and b.metrics().cosine == 1.0


@pytest.fixture
def quantized_net(residual_net, run_pipeline):
    m = residual_net(seed=4, hw=16)
    fg = run_pipeline(import_onnx(m))
    r = np.random.default_rng(11)
    xs = [r.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    qg = fg.clone()
    quantize_graph(qg, collect_ranges(qg, xs, method="minmax"))
    return m, fg, qg, xs


def test_first_layer_accumulated_equals_isolated(quantized_net):
    """The first layer reads the graph input in both modes: same error."""
    _, fg, qg, xs = quantized_net
    rows = {r.node: r for r in analyze(fg, qg, xs[:2])}
    first = rows[qg.nodes[0].name]
    assert first.accumulated == first.isolated


def test_last_layer_accumulated_matches_ort(quantized_net, ort_run):
    """The final FC's accumulated SQNR equals the SQNR of the quantized logits against ONNX
    Runtime's float logits (computed here independently)."""
    from tcc_compiler.quant import run_golden

    m, fg, qg, xs = quantized_net
    fc = [n for n in qg.nodes if n.op is Op.FC][-1]
    rows = {r.node: r for r in analyze(fg, qg, xs)}
    ff = ee = 0.0
    for x in xs:
        f = ort_run(m, x)[0].astype(np.float64).reshape(-1)
        q = run_golden(qg, x)[qg.outputs[0].name].astype(np.float64).reshape(-1)
        ff += float(f @ f)
        ee += float((f - q) @ (f - q))
    assert rows[fc.name].accumulated.sqnr_db == pytest.approx(10 * math.log10(ff / ee), abs=0.05)
    assert fc.source and rows[fc.name].source == list(fc.source)


def test_broken_layer_is_ranked_worst(quantized_net):
    """Give one middle conv an output range 20x too narrow (heavy clipping): it becomes the
    worst layer by isolated SQNR. Its direct consumers read its (broken) parameters, so they
    suffer in isolation too; every other layer keeps a good isolated SQNR, while the layers
    downstream lose accuracy in the accumulated column only."""
    _, fg, qg, xs = quantized_net
    convs = [n for n in qg.nodes if n.op is Op.CONV]
    bad = convs[len(convs) // 2]
    q = bad.output.quant
    bad.output.quant = QuantParams(q.scale / 20.0, q.zero_point, q.axis)
    rows = analyze(fg, qg, xs[:2])
    assert rows[0].node == bad.name
    assert rows[0].isolated.sqnr_db < 15.0
    readers = {u.name for u, _ in bad.output.uses}
    others = [r for r in rows[1:] if r.node not in readers]
    assert all(r.isolated.sqnr_db > 20.0 for r in others)
    fc = [r for r in rows if r.op == "fc"][0]
    assert fc.accumulated.sqnr_db < 20.0 < fc.isolated.sqnr_db


def test_cli_analyze(tmp_path, residual_net, capsys):
    """``tccc compile`` then ``tccc analyze``: a table worst first, analysis.json written."""
    m = residual_net(seed=5, hw=16)
    model = tmp_path / "net.onnx"
    onnx.save(m, model)
    r = np.random.default_rng(3)
    calib = tmp_path / "calib.npy"
    np.save(calib, r.standard_normal((4, 3, 16, 16)).astype(np.float32))
    evals = tmp_path / "eval.npy"
    np.save(evals, r.standard_normal((2, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "out"
    assert main(["-q", "compile", str(model), "-o", str(out), "--calib", str(calib)]) == 0
    capsys.readouterr()
    assert main(["-q", "analyze", str(out), str(model), str(evals), "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "iso SQNR" in text and "2 inputs" in text
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["inputs"] == 2 and len(doc["layers"]) >= 5
    iso = [L["isolated"]["sqnr_db"] for L in doc["layers"]]
    assert iso == sorted(iso)
    assert all(L["source"] for L in doc["layers"])


def test_cli_analyze_wrong_folder(tmp_path, capsys):
    assert main(["analyze", str(tmp_path), str(tmp_path / "m.onnx"), "x.npy"]) == 2
    assert "compile output folder" in capsys.readouterr().err
