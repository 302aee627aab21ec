"""The input's int8 range on the pixel grid: with a preprocessing whose channels share mean and
std (TF/EfficientNet's (p - 127) / 128, raw pixels) every pixel quantizes exactly, whatever
range the calibration method proposed or the calibration images reached."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.cli import run_cli
from PIL import Image

from tcc_compiler.datasets.images import Preprocess, load_image
from tcc_compiler.datasets.presets import preset
from tcc_compiler.quant.quantize import activation_params
from tcc_compiler.quant.ranges import pixel_grid_range, snap_input_range


def _pixels_exact(pre: Preprocess, lo: float, hi: float) -> bool:
    """Every preprocessed pixel value quantizes (as the host does: float32 value / s + zp,
    rounded) and dequantizes back to itself, with no clipping."""
    qp = activation_params(lo, hi)
    p = np.arange(256, dtype=np.float32)
    x = ((p * np.float32(pre.scale) - np.float32(pre.mean[0])) / np.float32(pre.std[0]))
    q = np.round(x.astype(np.float64) / float(qp.scale)) + int(qp.zero_point)
    return bool(np.all((q >= -128) & (q <= 127))
                and np.array_equal((q - int(qp.zero_point)) * float(qp.scale), x))


@pytest.mark.parametrize("name", ["tf-efficientnet", "raw"])
def test_grid_range_quantizes_every_pixel_exactly(name):
    pre = preset(name, 224, 224)
    lo, hi = pixel_grid_range(pre, (-0.5, 0.5) if name != "raw" else (3.0, 200.0))
    assert _pixels_exact(pre, lo, hi)
    if name == "tf-efficientnet":
        qp = activation_params(lo, hi)
        assert float(qp.scale) == 1 / 128 and int(qp.zero_point) == -1
        # what mse or a dark calibration set could propose instead is not exact
        assert not _pixels_exact(pre, -0.9921875, 0.9)


@pytest.mark.parametrize("pre", [
    Preprocess(width=8, height=8),                                   # ImageNet: 3 grids
    Preprocess(width=8, height=8, mean=(0.449,) * 3, std=(0.226,) * 3),  # 114.5 px: half step
    Preprocess(width=8, height=8, mean=(300.0,) * 3, std=(1.0,) * 3, scale=1.0),  # no 0
])
def test_no_grid_range_when_no_int8_grid_exists(pre):
    assert pixel_grid_range(pre, (-0.1, 0.1)) is None


def test_inputs_off_the_grid_range_keep_the_calibrated_range():
    """Calibration arrays beyond the preprocessing's values (not made by it) are left alone."""
    pre = preset("tf-efficientnet", 16, 16)
    ranges = {"x": (-3.0, 3.0)}
    assert not snap_input_range(ranges, {"x": (-3.0, 3.0)}, "x", pre)
    assert ranges == {"x": (-3.0, 3.0)}
    assert snap_input_range(ranges, {"x": (-0.4, 0.6)}, "x", pre)
    assert ranges["x"] == (-127 / 128, 1.0)


def test_compile_puts_the_input_on_the_grid(tmp_path, residual_net, capsys):
    """A dark calibration photo (pixels 10..100) used to set the input's range to the photo's
    own [-0.91, -0.21] (every brighter pixel clipped); with the tf-efficientnet preset the
    manifest now gives s = 1/128, zp = -1 and run agrees with the golden model bit for bit."""
    import onnx

    rng = np.random.default_rng(0)
    photo = tmp_path / "dark.png"
    Image.fromarray(rng.integers(10, 101, (48, 48, 3), dtype=np.uint8), "RGB").save(photo)
    model = tmp_path / "m.onnx"
    onnx.save(residual_net(seed=3, hw=16), model)
    out = tmp_path / "out"
    code, _, err = run_cli(["-q", "compile", model, "--input", "16x16x3", "-o", out, "--calib",
                            photo, "--preset", "tf-efficientnet"], capsys)
    assert code == 0, err
    man = json.loads((out / "manifest.json").read_text())
    iq = man["input"]
    assert iq["scale"] == [1 / 128] and iq["zero_point"] == [-1], iq
    table = json.loads((out / "calib_table.json").read_text())["tensors"]
    name = [k for k, v in table.items() if v["hi"] == 1.0]
    assert name and table[name[0]]["lo"] == -127 / 128
    assert load_image(photo, Preprocess.from_dict(man["preprocess"])).max() < 0
    code, text, _ = run_cli(["run", out, photo, "--check", model, "--json"], capsys)
    assert code == 0 and json.loads(text)["check"]["bit_exact"] is True
