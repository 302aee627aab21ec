"""Round trip: ``tccc export-onnx`` of a compiled folder, compiled again by ``tccc compile``,
gives the same two binaries (the export's float64 scales and its rounding forms are read back,
tcc_compiler/frontend/qdq_import.py), with no calibration."""

from __future__ import annotations

import json

import onnx
import pytest
from helpers.models import gap_net

from tcc_compiler.cli.main import main


@pytest.mark.parametrize("which", ["residual-net", "gap-softmax", "leaky"])
def test_export_then_compile_gives_the_same_binaries(which, tmp_path):
    if which == "residual-net":  # BatchNorm folded, residual adds fused, GAP, FC
        from conftest import residual_net_impl

        model, whc = residual_net_impl(hw=32, c=16), "32x32x3"
    elif which == "leaky":   # Conv -> LeakyRelu: the two-slope epilogue, exported as such
        from tests.e2e.test_lut_eltwise import HW, conv_act_conv

        model, whc = conv_act_conv("LeakyRelu", alpha=0.1), f"{HW}x{HW}x3"
    else:  # a 32x32 GAP exported as exact integer ops, a host softmax
        model, whc = gap_net(3, softmax=True), "32x32x3"
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    assert main(["-q", "compile", str(src), "--input", whc, "-o", str(tmp_path / "a")]) == 0
    assert main(["-q", "export-onnx", str(tmp_path / "a"), "-o", str(tmp_path / "x.onnx")]) == 0
    assert main(["-q", "compile", str(tmp_path / "x.onnx"), "-o", str(tmp_path / "b")]) == 0
    for f in ("npu_cmd.bin", "quantized_network.bin"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["calibration"]["method"] == "fixed"
    assert man["graph_outputs"] == json.loads(
        (tmp_path / "a" / "manifest.json").read_text())["graph_outputs"]
