"""ConvTranspose (FlowNetS' decoder: stride 2, kernel 2-4) end to end: one conv per output
phase, each writing its pixels of the output in place (an interleave view, no copy); bit-exact
executor vs golden model in stream order and random interleavings with the hazard checker on;
SQNR vs ONNX Runtime; forms that need a crop are refused with exit 2 and one line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from tcc_compiler import api
from tcc_compiler.cli.main import main
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tests.conftest import make_model_impl
from tests.e2e.test_channel_ops import _inputs

N = helper.make_node


def _model(k: int, s: int, p: int, out_pad: int, cin: int = 8, cout: int = 6):
    r = np.random.default_rng(k * 10 + s)
    inits = {"w0": r.normal(0, .3, (cin, 3, 3, 3)), "b0": r.normal(0, .1, cin),
             "wt": r.normal(0, .3, (cin, cout, k, k)), "bt": r.normal(0, .1, cout)}
    nodes = [N("Conv", ["x", "w0", "b0"], ["c"], pads=[1] * 4, strides=[2, 2]),
             N("LeakyRelu", ["c"], ["a"], alpha=0.1),
             N("ConvTranspose", ["a", "wt", "bt"], ["t"], strides=[s, s], pads=[p] * 4,
               output_padding=[out_pad, out_pad], name="deconv"),
             N("LeakyRelu", ["t"], ["y"], alpha=0.1)]
    return make_model_impl(nodes, [1, 3, 16, 16], inits, opset=17)


@pytest.mark.parametrize("k,s,p,out_pad", [
    (4, 2, 1, 0), (3, 2, 1, 1), pytest.param(2, 2, 0, 0, marks=pytest.mark.slow),
    pytest.param(3, 1, 1, 0, marks=pytest.mark.slow)])
def test_conv_transpose_bit_exact_in_place_and_accurate(tmp_path, k, s, p, out_pad):
    model = _model(k, s, p, out_pad)
    onnx.save(model, tmp_path / "m.onnx")
    m = api.compile(model, "16x16x3", calibration=_inputs(range(8)))
    prog = load_program(m.save(tmp_path / "out"))
    checker = Checker(prog, tmp_path / "m.onnx")
    for x in _inputs(range(3)):
        c = checker.check(x, prog.run(x))
        assert c["bit_exact"] and c["sqnr_db"] >= 30.0, c
    q = prog.quantize(x)
    ref = prog.executor.run(q, check=True)[0]
    assert prog.executor.run(q, schedule="random", seed=1)[0] == ref
    assert not [lay for lay in m.report["layers"] if "copy" in lay["tiling"]]
    assert m.report["npu_ops"]["conv"] == 1 + s * s   # the stem + one conv per phase
    macs = sum(lay["macs"] for lay in m.report["layers"] if "deconv" in lay["source"])
    assert macs == 8 * 8 * s * s * 6 * 8 * k * k // (s * s)   # only the non-zero taps


def test_conv_transpose_needing_a_crop_is_refused_by_the_npu(tmp_path, capsys):
    """--strict: the NPU's refusal, one line; by default the node runs on the host."""
    path = tmp_path / "crop.onnx"
    onnx.save(_model(2, 2, 1, 0), path)   # kernel 2, pad 1: phase 0 would start at -1
    code = main(["compile", str(path), "--input", "16x16x3", "-o", str(tmp_path / "o"),
                 "--strict"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'deconv'" in err and "crop" in err, err
    assert main(["compile", str(path), "--input", "16x16x3", "-o", str(tmp_path / "h")]) == 0
    manifest = json.loads((tmp_path / "h" / "manifest.json").read_text())
    assert manifest["layout"] == "segmented"
    assert any(s["device"] == "host" and "deconv" in s["nodes"] for s in manifest["segments"])
