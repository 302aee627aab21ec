"""``tccc eval`` on a model whose output is not one score per class (a detector's
[1, 84, 8400], a feature map): top-1/top-5 over the flattened output mean nothing, so eval
says so in one warning line; a classifier gets none."""

from __future__ import annotations

import numpy as np
import onnx
from helpers.cli import run_cli
from onnx import helper
from PIL import Image

from tcc_compiler import api
from tcc_compiler.runtime.evaluate import not_a_classifier
from tests.conftest import make_model_impl


def _images(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        Image.new("RGB", (8, 8), (40, 90, 200)).save(tmp_path / "imgs" / c / "0.png")
    return tmp_path / "imgs"


def test_manifest_shapes():
    def m(shape):
        return {"graph_outputs": ["y"], "outputs": [{"name": "y", "shape": shape}]}

    assert not_a_classifier(m([1, 1000])) is None
    assert not_a_classifier(m([1, 1000, 1, 1])) is None
    why = not_a_classifier(m([1, 84, 8400]))
    assert "[1, 84, 8400]" in why and "705600" in why and "detector" in why
    assert not_a_classifier(m([1, 4, 8, 8])) is not None
    assert not_a_classifier({"graph_outputs": ["y"], "outputs": []}) is None


def test_eval_warns_once_on_a_feature_map_output(tmp_path, capsys, caplog):
    r = np.random.default_rng(0)
    model = make_model_impl([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)],
                            [1, 3, 8, 8], {"w": r.normal(0, 0.3, (4, 3, 3, 3))})
    onnx.save(model, tmp_path / "m.onnx")
    xs = [r.normal(0, 1, (1, 3, 8, 8)).astype(np.float32) for _ in range(2)]
    api.compile(model, "8x8x3", calibration=xs).save(tmp_path / "out")
    code, _, err = run_cli(["eval", tmp_path / "out", "--images", _images(tmp_path)], capsys)
    assert code == 0, err
    lines = [r.getMessage() for r in caplog.records if "not one score per class" in r.getMessage()]
    assert len(lines) == 1 and "[1, 4, 8, 8]" in lines[0]


def test_eval_of_a_classifier_does_not_warn(small_folder, tmp_path, capsys, caplog):
    _, out = small_folder
    code, _, err = run_cli(["eval", out, "--images", _images(tmp_path)], capsys)
    assert code == 0, err
    assert "not one score per class" not in caplog.text
