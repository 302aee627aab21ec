"""``tccc run --check`` on a model whose opset ONNX Runtime no longer implements (the onnx
wheel's pytorch-converted AveragePool-1 and BatchNormalization-6 models): tccc compiles them,
and the check used to refuse them ("ONNX Runtime cannot load it"), so bit-exactness could not
be checked. The float reference now runs them converted to a newer opset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tcc_compiler.cli.main import main

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data" / "pytorch-converted"


@pytest.mark.parametrize("name", ["test_AvgPool2d", "test_BatchNorm2d_eval"])
def test_old_opset_model_checks_bit_exact(tmp_path, capsys, name):
    model = DATA / name / "model.onnx"
    if not model.is_file():
        pytest.skip("onnx wheel without pytorch-converted models")
    assert main(["-q", "compile", str(model), "-o", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    shape = json.loads((tmp_path / "o" / "manifest.json").read_text())["input"]["shape"]
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    code = main(["-q", "run", str(tmp_path / "o"), str(x), "--check", str(model), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    check = json.loads(out.out)["check"]
    assert check["bit_exact"] is True and check["top1_agree"] is True
    assert check["sqnr_db"] > 15
