"""Preprocessing the user configures: short side + center crop, presets, compile flags, the
manifest record, and run/eval reading it back. Expected pixels come from Pillow operations
written out here (torchvision's Resize/CenterCrop rules), never from tccc's loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import one_line_error, run_cli
from PIL import Image

from tcc_compiler.datasets.images import Preprocess, load_image
from tcc_compiler.datasets.presets import PRESETS, PreprocessSettings, preset
from tcc_compiler.errors import FormatError, InputError


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    """A 300 x 200 (W x H) RGB gradient with a marker, so a wrong crop offset shows."""
    yy, xx = np.mgrid[0:200, 0:300]
    px = np.stack([xx * 255 // 299, yy * 255 // 199, (xx + yy) % 256], -1).astype(np.uint8)
    px[90:110, 140:160] = (255, 0, 0)
    p = tmp_path / "photo.png"
    Image.fromarray(px, "RGB").save(p)
    return p


def _reference(path: Path, short: int, crop: int, flt) -> np.ndarray:
    """torchvision's Resize(short) + CenterCrop(crop) on a PIL image, by hand: long side
    int(short * long / short_side), crop offset round((size - crop) / 2); uint8 HWC."""
    with Image.open(path) as im:
        w, h = im.size
        nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        im = im.convert("RGB").resize((nw, nh), flt)
        left, top = int(round((nw - crop) / 2.0)), int(round((nh - crop) / 2.0))
        return np.asarray(im.crop((left, top, left + crop, top + crop)))


@pytest.mark.parametrize("name,flt", [("torchvision", Image.Resampling.BILINEAR),
                                      ("tf-efficientnet", Image.Resampling.BICUBIC)])
def test_presets_crop_like_the_reference_pipelines(photo, name, flt):
    pre = preset(name, 64, 64)
    short = 73 if name == "torchvision" else 96      # round(64 / 0.875); 64 + 32
    assert pre.resize_short == short
    px = _reference(photo, short, 64, flt).astype(np.float64)
    if name == "torchvision":
        want = (px / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    else:
        want = (px - 127.0) / 128.0
    got = load_image(photo, pre)
    assert got.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(got[0].transpose(1, 2, 0), want, rtol=0, atol=1e-5)


def test_presets_at_224_match_the_published_numbers():
    tv, tf = preset("torchvision", 224, 224), preset("tf-efficientnet", 224, 224)
    assert (tv.resize_short, tv.resize, tv.scale) == (256, "bilinear", 1 / 255)
    assert tv.mean == (0.485, 0.456, 0.406) and tv.std == (0.229, 0.224, 0.225)
    assert (tf.resize_short, tf.resize, tf.scale) == (256, "bicubic", 1.0)
    assert tf.mean == (127.0,) * 3 and tf.std == (128.0,) * 3
    assert set(PRESETS) >= {"torchvision", "tf-efficientnet", "raw", "imagenet"}


def test_settings_override_the_preset_and_bgr_reorders(photo):
    s = PreprocessSettings(preset="torchvision", mean=[100.0], std=[50, 60, 70], scale=1.0,
                           channel_order="bgr", resize_short=0, interpolation="nearest")
    pre = s.resolve(30, 20)
    assert pre.resize_short is None and pre.channel_order == "BGR"
    with Image.open(photo) as im:
        px = np.asarray(im.convert("RGB").resize((30, 20), Image.Resampling.NEAREST))
    want = (px[:, :, ::-1].astype(np.float64) - 100.0) / np.array([50.0, 60.0, 70.0])
    np.testing.assert_allclose(load_image(photo, pre)[0].transpose(1, 2, 0), want, atol=1e-5)
    with pytest.raises(InputError, match="preset 'nope'"):
        PreprocessSettings(preset="nope")
    with pytest.raises(InputError, match="--mean: give 1 or 3 values, got 2"):
        PreprocessSettings(mean=(1.0, 2.0)).resolve(8, 8)


def test_crop_never_smaller_than_the_input():
    """A short side below the crop grows the image (keeping its aspect) so the crop fits."""
    pre = Preprocess(width=40, height=40, resize_short=10)
    from tcc_compiler.datasets.images import resize_image

    out = resize_image(Image.new("RGB", (100, 50)), pre)
    assert out.size == (40, 40)


def test_manifest_record_round_trips_and_old_records_stay_squash():
    pre = preset("tf-efficientnet", 224, 224)
    d = pre.to_dict()
    assert d["resize_short"] == 256 and Preprocess.from_dict(d) == pre
    assert "resize_short" not in Preprocess(width=8, height=8).to_dict()
    with pytest.raises(FormatError, match="resize_short"):
        Preprocess.from_dict({"width": 8, "height": 8, "resize_short": -3})


def test_compile_flags_reach_the_manifest_and_run(tmp_path, residual_net, photo, capsys):
    import onnx
    import onnxruntime as ort

    model = tmp_path / "m.onnx"
    onnx.save(residual_net(seed=2, hw=16), model)
    out = tmp_path / "out"
    code, _, err = run_cli(["-q", "compile", model, "--input", "16x16x3", "-o", out, "--calib",
                            photo, "--preset", "tf-efficientnet", "--mean", "120",
                            "--channel-order", "bgr"], capsys)
    assert code == 0, err
    rec = json.loads((out / "manifest.json").read_text())["preprocess"]
    assert rec["resize_short"] == 48 and rec["mean"] == [120.0] * 3
    assert rec["channel_order"] == "BGR" and rec["resize"] == "bicubic"
    # run takes the same preprocessing: its float check feeds ORT exactly this input
    x = load_image(photo, Preprocess.from_dict(rec))
    code, text, _ = run_cli(["run", out, photo, "--json", "--logits"], capsys)
    assert code == 0
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0].reshape(-1)
    assert json.loads(text)["top1"] == int(np.argmax(ref))


@pytest.mark.parametrize("flags,msg", [(["--resize", "wide"], "--resize wide"),
                                       (["--resize", "0"], "--resize 0"),
                                       (["--mean", "1", "2"], "--mean: give 1 or 3")])
def test_bad_preprocessing_flags_exit_2(tmp_path, residual_net, flags, msg, capsys):
    import onnx

    model = tmp_path / "m.onnx"
    onnx.save(residual_net(seed=2, hw=16), model)
    code, _, err = run_cli(["compile", model, "--input", "16x16x3", "-o", tmp_path / "o"]
                           + flags, capsys)
    assert code == 2 and msg in one_line_error(err)
    assert not (tmp_path / "o").exists()


def test_a_resize_beyond_the_largest_image_is_refused_before_allocating_it(tmp_path):
    """``--resize 100000`` resized a 4:3 photo to 133,333 x 100,000 RGB pixels (40 GB) before
    the crop: the compile was killed for memory (exit 137) instead of refusing, naming the
    image. A short side the photo can take still loads, at exactly the crop size."""
    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(path)
    huge = Preprocess(width=16, height=16, resize_short=100_000)
    with pytest.raises(InputError, match=r"photo.png: resizing its 40x30 pixels to short side "
                                         r"100000 makes 133333x100000 pixels .*smaller --resize"):
        load_image(path, huge)
    ok = load_image(path, Preprocess(width=16, height=16, resize_short=5000))
    assert ok.shape == (1, 3, 16, 16)
