"""Raw uint8 sample files (``.bin``) as calibration inputs: ``tccc compile --calib DIR
--raw-size WxHxC --pixels raw`` reads them through the one loader ``tccc eval`` uses
(``datasets/raw.py``), so both decode a sample to the same array. Compile used to skip .bin
files in a folder ("folder holds no image or .npy files") and took no --raw-size."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import conv_gap_fc_net_impl

from tcc_compiler.cli.main import main
from tcc_compiler.datasets.calibration import resolve_calibration
from tcc_compiler.datasets.images import Preprocess
from tcc_compiler.datasets.raw import RawSpec
from tcc_compiler.errors import InputError
from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.runtime.evaluate import load_sample, preprocess_for


def _raw_folder(tmp_path, n: int = 3, h: int = 8, w: int = 8):
    """``n`` random 8x8x3 HWC uint8 files in tmp_path/raw, and the pixel arrays."""
    d = tmp_path / "raw"
    d.mkdir()
    pix = [np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
           for i in range(n)]
    for i, p in enumerate(pix):
        (d / f"s{i}.bin").write_bytes(p.tobytes())
    return d, pix


def _graph(h: int = 8, w: int = 8) -> Graph:
    g = Graph(name="m")
    g.inputs = [Value("x", (1, 3, h, w))]
    return g


def test_calibration_reads_raw_files_as_eval_does(tmp_path):
    d, pix = _raw_folder(tmp_path)
    pre = preprocess_for(Preprocess(width=8, height=8).to_dict(), "raw")
    raw = RawSpec(8, 8, 3)
    xs, desc = resolve_calibration([str(d)], _graph(), pre, raw)
    assert len(xs) == 3 and str(d) in desc
    for i, p in enumerate(pix):
        np.testing.assert_array_equal(xs[i], p.transpose(2, 0, 1)[None].astype(np.float32))
        np.testing.assert_array_equal(xs[i], load_sample(d / f"s{i}.bin", pre, raw))


def test_raw_files_without_a_size_are_refused_naming_the_option(tmp_path):
    d, _ = _raw_folder(tmp_path)
    pre = Preprocess(width=8, height=8)
    with pytest.raises(InputError, match=r"raw array file.*--raw-size"):
        resolve_calibration([str(d)], _graph(), pre)
    with pytest.raises(InputError, match=r"s0.bin: raw array file; give its size"):
        resolve_calibration([str(d / "s0.bin")], _graph(), pre)
    with pytest.raises(InputError, match=r"raw size 4x8x3 differs from the model input 8x8x3"):
        resolve_calibration([str(d)], _graph(), pre, RawSpec(4, 8, 3))


def test_compile_calibrates_on_raw_files(tmp_path, capsys):
    d, _ = _raw_folder(tmp_path)
    model = tmp_path / "m.onnx"
    onnx.save(conv_gap_fc_net_impl(hw=8), str(model))
    out = tmp_path / "out"
    assert main(["-q", "compile", str(model), "-o", str(out), "--calib", str(d),
                 "--raw-size", "8x8x3", "--pixels", "raw"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["preprocess"]["scale"] == 1.0 and man["preprocess"]["mean"] == [0.0] * 3
    assert man["calibration"]["inputs"] == 3
    capsys.readouterr()
    assert main(["compile", str(model), "-o", str(tmp_path / "o2"), "--calib", str(d),
                 "--raw-size", "8x8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--raw-size '8x8': expected WxHxC" in err


def test_raw_size_without_calib_is_refused(tmp_path, capsys):
    # without --calib the bundled photos calibrate: --raw-size read nothing and was silently
    # ignored (a user meaning to pass raw samples got a compile calibrated on other inputs)
    model = tmp_path / "m.onnx"
    onnx.save(conv_gap_fc_net_impl(hw=8), str(model))
    out = tmp_path / "out"
    assert main(["compile", str(model), "-o", str(out), "--raw-size", "8x8x3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--raw-size applies to --calib" in err
    assert not out.exists()


def test_raw_size_without_calibration_is_refused_through_the_api():
    # the Python API took CompileOptions(raw_size=...) without calibration inputs and
    # calibrated on the bundled photos, the raw size silently unused (the CLI refused it)
    from tcc_compiler.errors import InputError
    from tcc_compiler.options import CompileOptions

    with pytest.raises(InputError, match="--raw-size applies to --calib"):
        CompileOptions(raw_size="8x8x3")
    with pytest.raises(InputError, match="--raw-size applies to --calib"):
        CompileOptions(raw_size="8x8x3", calibration=())
    assert CompileOptions(raw_size="8x8x3", calibration=["x.bin"]).raw_spec() is not None
