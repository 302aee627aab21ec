"""``tccc eval`` on real ImageNet data (optional: ``../shared/data/imagenet-lite0``, skipped when
absent): the ``tf-efficientnet`` preset reproduces the published FP32 accuracy of Google's
EfficientNet-Lite0 through ONNX Runtime, and the INT8 compile scores beside it. The labels
are ImageNet's, the float scores ONNX Runtime's: nothing here is tccc's own answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.cli import run_cli

LITE0 = Path(__file__).resolve().parents[3] / "shared" / "data" / "imagenet-lite0"


@pytest.mark.slow
def test_lite0_eval_with_the_tf_preset(tmp_path, capsys):
    if not (LITE0 / "efficientnet_lite0.onnx").is_file():
        pytest.skip(f"{LITE0} not present")
    images = sorted((LITE0 / "images").glob("*.jpg"))
    calib = images[::100]                                # 10 calibration images
    out = tmp_path / "out"
    code, _, err = run_cli(["-q", "compile", LITE0 / "efficientnet_lite0.onnx", "-o", out,
                            "--preset", "tf-efficientnet", "--calib", *calib], capsys)
    assert code == 0, err
    code, text, err = run_cli(["eval", out, "--images", LITE0 / "images", "--labels",
                               LITE0 / "labels.csv", "--check", LITE0 / "efficientnet_lite0.onnx",
                               "--limit", "60", "--json", "--no-progress"], capsys)
    assert code == 0, err
    r = json.loads(text)
    assert r["samples"] == 60
    # README: FP32 ~88 % on these images with this preprocessing (torchvision's mean/std
    # instead loses 6-11 points)
    assert r["float"]["top1"] >= 0.8
    assert r["npu"]["top1"] >= r["float"]["top1"] - 0.05 and r["flips"] <= 4
