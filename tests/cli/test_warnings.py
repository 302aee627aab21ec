"""Warnings that must (and must not) appear: options a quantized dump ignores, ``--check``
against the source of a dump, ``analyze`` with another model.
"""

from __future__ import annotations

import numpy as np
import onnx
from conftest import residual_net_impl
from helpers import PHOTO
from helpers.cli import one_line_error, run_cli


def test_compile_quantized_dump_warns_calibration_options_are_ignored(small_folder, tmp_path,
                                                                      capsys, caplog):
    _, out = small_folder
    code, _, err = run_cli(["compile", str(out / "quantized.tir"), "-o", str(tmp_path / "o"),
                         "--calib-method", "minmax"], capsys)
    assert code == 0, err
    assert "already quantized" in caplog.text and "--calib-method" in caplog.text


def test_check_against_source_of_a_dump_does_not_warn_differs(tmp_path, capsys, caplog):
    model = tmp_path / "m.onnx"
    onnx.save(residual_net_impl(hw=16), model)
    dump = tmp_path / "dump"
    code, _, err = run_cli(["compile", str(model), "--input", "16x16x3", "-o", str(tmp_path / "a"),
                         "--dump-ir", str(dump)], capsys)
    assert code == 0, err
    first = min(dump.glob("*.tir"))
    code, _, err = run_cli(["compile", str(first), "-o", str(tmp_path / "b")], capsys)
    assert code == 0, err
    x = np.zeros((1, 3, 16, 16), np.float32)
    np.save(tmp_path / "x.npy", x)
    caplog.clear()
    code, _, err = run_cli(["run", str(tmp_path / "b"), str(tmp_path / "x.npy"), "--check",
                         str(model)], capsys)
    assert code == 0, err
    assert "differs" not in caplog.text + err


def test_analyze_of_another_model_is_refused(small_folder, tmp_path, capsys):
    """As ``run --check`` refuses it: the errors measured would mix two networks (it used to
    warn and go on; a model of another shape then crashed with an internal error, exit 1)."""
    _, out = small_folder
    other = tmp_path / "other.onnx"
    onnx.save(residual_net_impl(seed=5, hw=16), other)
    code, stdout, err = run_cli(["analyze", str(out), str(other), PHOTO, "--out",
                                 str(tmp_path / "a.json")], capsys)
    assert code == 2 and stdout == ""
    line = one_line_error(err)
    assert "other.onnx: not the model" in line and "sha256" in line
    assert not (tmp_path / "a.json").exists()

