"""Tests of image/.npy input loading and the bundled photos (tcc_compiler.datasets.images)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tcc_compiler.datasets import Preprocess, bundled_photos, load_image, load_inputs
from tcc_compiler.errors import FormatError, InputError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# 3 x 2 (W x H) RGB test image, rows top to bottom
PIXELS = np.array([[[255, 0, 128], [0, 255, 0], [10, 20, 30]],
                   [[0, 0, 0], [255, 255, 255], [200, 100, 50]]], np.uint8)


def _expected(pixels: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """Hand formula in float64: (p / 255 - mean) / std, HWC -> NCHW."""
    values = (pixels.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    return values.transpose(2, 0, 1)[None]


@pytest.fixture()
def png(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.png"
    Image.fromarray(PIXELS, "RGB").save(path)
    return path


def test_load_image_values_by_hand(png):
    x = load_image(png, Preprocess(width=3, height=2))
    assert x.shape == (1, 3, 2, 3) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x, _expected(PIXELS), rtol=0, atol=2e-6)
    # spot values computed by hand: red 255 -> (1 - 0.485) / 0.229, blue 128 at (0, 0)
    assert x[0, 0, 0, 0] == pytest.approx(2.2489083, abs=1e-6)
    assert x[0, 2, 0, 0] == pytest.approx((128 / 255 - 0.406) / 0.225, abs=1e-6)
    assert x[0, 1, 1, 0] == pytest.approx(-0.456 / 0.224, abs=1e-6)


def test_bgr_and_custom_normalisation(png):
    pre = Preprocess(width=3, height=2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                     channel_order="BGR")
    x = load_image(png, pre)
    np.testing.assert_allclose(x, _expected(PIXELS[:, :, ::-1], (0.5,) * 3, (0.5,) * 3),
                               atol=2e-6)
    raw = load_image(png, Preprocess(width=3, height=2, mean=(0, 0, 0), std=(1, 1, 1), scale=1))
    np.testing.assert_array_equal(raw[0].transpose(1, 2, 0), PIXELS.astype(np.float32))


def test_resize_to_exact_width_and_height(tmp_path):
    path = tmp_path / "flat.jpg"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(path, quality=95)
    x = load_image(path, Preprocess(width=7, height=5))
    assert x.shape == (1, 3, 5, 7)
    np.testing.assert_allclose(x[0, 0], (1 - 0.485) / 0.229, atol=0.03)  # JPEG is lossy


def test_greyscale_and_rgba_become_rgb(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((2, 2), 51, np.uint8), "L").save(grey)
    pre = Preprocess(width=2, height=2, mean=(0, 0, 0), std=(1, 1, 1), scale=1)
    np.testing.assert_array_equal(load_image(grey, pre), np.full((1, 3, 2, 2), 51, np.float32))
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (2, 2), (1, 2, 3, 0)).save(rgba)
    assert load_image(rgba, pre)[0, :, 0, 0].tolist() == [1, 2, 3]


def test_preprocess_dict_round_trip():
    pre = Preprocess(width=224, height=160, channel_order="BGR", resize="nearest")
    data = json.loads(json.dumps(pre.to_dict()))
    assert data == {"width": 224, "height": 160, "mean": list(MEAN), "std": list(STD),
                    "scale": 1 / 255, "channel_order": "BGR", "resize": "nearest"}
    assert Preprocess.from_dict(data) == pre
    assert pre.shape == (1, 3, 160, 224)


@pytest.mark.parametrize("data, match", [
    ({"width": 1, "height": 1, "gamma": 2}, "unknown field"),
    ({"width": 1}, "missing field"),
    ({"width": 1, "height": 1, "std": [1, 0, 1]}, "std must be > 0"),
    ([1, 2], "expected an object"),
])
def test_preprocess_from_dict_errors(data, match):
    with pytest.raises(FormatError, match=match):
        Preprocess.from_dict(data)


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"height": 2.5}, {"mean": (0, 0)},
                                    {"channel_order": "RGBA"}, {"resize": "lanczos9"},
                                    {"scale": 0}, {"std": (1, float("nan"), 1)}])
def test_preprocess_rejects_bad_fields(kwargs):
    args = {"width": 4, "height": 4, **kwargs}
    with pytest.raises(InputError, match="preprocess"):
        Preprocess(**args)


def test_load_inputs_files_folders_and_npy(tmp_path, png):
    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(PIXELS, "RGB").save(folder / "b.png")
    Image.fromarray(PIXELS[:, ::-1], "RGB").save(folder / "a.png")
    batch = np.arange(2 * 3 * 2 * 3, dtype=np.float32).reshape(2, 3, 2, 3)
    np.save(folder / "c.npy", batch)
    (folder / "README.txt").write_text("not an input")
    (folder / ".hidden.png").write_bytes(b"junk")
    (folder / "sub").mkdir()
    pre = Preprocess(width=3, height=2)
    out = load_inputs([png, folder], pre, (1, 3, 2, 3))
    assert len(out) == 5 and all(x.shape == (1, 3, 2, 3) and x.dtype == np.float32 for x in out)
    np.testing.assert_array_equal(out[0], load_image(png, pre))
    np.testing.assert_array_equal(out[1], load_image(folder / "a.png", pre))  # sorted by name
    np.testing.assert_array_equal(out[2], load_image(folder / "b.png", pre))
    np.testing.assert_array_equal(out[3], batch[:1])
    np.testing.assert_array_equal(out[4], batch[1:])
    again = load_inputs([png, folder], pre, (1, 3, 2, 3))
    assert all(np.array_equal(a, b) for a, b in zip(out, again, strict=True))


def _npy(tmp_path: Path, array: np.ndarray) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, array)
    return path


@pytest.mark.parametrize("array, match", [
    (np.zeros((1, 3, 2, 3), np.float64), "dtype is float64"),
    (np.zeros((3, 2, 3), np.float32), r"shape \(3, 2, 3\)"),
    (np.zeros((1, 3, 3, 2), np.float32), "does not match"),
    (np.zeros((0, 3, 2, 3), np.float32), "does not match"),
    (np.array([[[[np.nan, 0, 0], [0, 0, np.inf]]] * 3], np.float32), "6 NaN/Inf"),
])
def test_npy_errors(tmp_path, array, match):
    path = _npy(tmp_path, array)
    with pytest.raises(InputError, match=match) as info:
        load_inputs([path], Preprocess(width=3, height=2), (1, 3, 2, 3))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_input_errors_name_the_file(tmp_path, png):
    pre = Preprocess(width=3, height=2)
    shape = (1, 3, 2, 3)
    cases = []
    missing = tmp_path / "nope.jpg"
    cases.append(([missing], "no such file"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    cases.append(([empty], "holds no image"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    cases.append(([broken], "cannot decode image"))
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases.append(([pickled], "cannot read .npy"))
    cases.append(([png], "preprocessing gives"))  # image size vs model input mismatch
    for paths, match in cases:
        expect = shape if match != "preprocessing gives" else (1, 3, 4, 4)
        with pytest.raises(InputError, match=match) as info:
            load_inputs(paths, pre, expect)
        assert str(paths[0]) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InputError, match="no input files"):
        load_inputs([], pre, shape)
    with pytest.raises(InputError, match="image file not found"):
        load_image(missing, pre)


def test_truncated_jpeg_is_an_input_error(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), (9, 99, 199)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="cut.jpg: cannot decode image"):
        load_image(path, Preprocess(width=8, height=8))


def test_bundled_photos():
    calib, evals = bundled_photos("calib"), bundled_photos("eval")
    assert len(calib) == 8 and len(evals) >= 12
    assert calib == sorted(calib) and evals == sorted(evals)
    total = 0
    for path in calib + evals:
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and min(img.size) == 256
        total += path.stat().st_size
    assert total < 600 * 1024
    with pytest.raises(InputError, match="unknown kind"):
        bundled_photos("train")
    x = load_image(evals[0], Preprocess(width=224, height=224))
    assert x.shape == (1, 3, 224, 224) and np.isfinite(x).all() and -2.2 < x.min() < x.max() < 2.7


def test_photo_licences_cover_every_file_and_eval_is_disjoint_from_calib():
    licences = (bundled_photos("calib")[0].parents[1] / "LICENSES.md").read_text()
    rows = {}
    for line in licences.splitlines():
        m = re.match(r"\| (calib|eval)/(\S+\.jpg) \| skimage\.data\.(\w+)\(\)", line)
        if m:
            rows[f"{m[1]}/{m[2]}"] = m[3]
            assert "Public domain" in line or "CC0" in line
    shipped = {f"{p.parent.name}/{p.name}" for k in ("calib", "eval") for p in bundled_photos(k)}
    assert set(rows) == shipped
    calib_sources = {src for f, src in rows.items() if f.startswith("calib/")}
    eval_sources = {src for f, src in rows.items() if f.startswith("eval/")}
    assert not calib_sources & eval_sources


def test_empty_folder_names_unsearched_subfolders(tmp_path):
    from tcc_compiler.datasets.images import Preprocess, load_inputs

    (tmp_path / "cats").mkdir()
    pre = Preprocess(width=8, height=8)
    with pytest.raises(InputError, match="sub-folders \\(cats\\) are not searched"):
        load_inputs([tmp_path], pre, (1, 3, 8, 8))

