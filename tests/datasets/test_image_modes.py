"""Image modes and channel counts in input loading: 16-bit images are scaled to 8 bits
(``round(x / 257)``), greyscale models get ITU-R 601 luma, other channel counts are refused.

Expected pixel values are hand-computed; nothing is compared with tccc's own earlier output.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import PHOTO
from PIL import Image

from tcc_compiler.datasets.images import Preprocess, load_image, load_inputs
from tcc_compiler.errors import InputError


def _identity_pre(w: int, h: int, channels: int = 3) -> Preprocess:
    """Preprocessing that passes 8-bit pixel values through unchanged (scale 1, mean 0)."""
    return Preprocess(width=w, height=h, mean=(0.0,) * channels, std=(1.0,) * channels,
                      scale=1.0, channels=channels)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 128, 257, 1000], [30000, 40000, 65000, 65535]], np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode in ("I;16", "I")  # what Pillow makes of a 16-bit greyscale PNG
    x = load_image(tmp_path / "g16.png", _identity_pre(4, 2))
    want = np.floor(a.astype(np.float64) / 257.0 + 0.5)  # round half up: 128/257 -> 0
    assert x.shape == (1, 3, 2, 4)
    for c in range(3):
        np.testing.assert_array_equal(x[0, c], want)


@pytest.mark.parametrize("mode", ["I;16B", "I;16", "I"])
def test_16bit_modes_scaled_in_tiff(tmp_path, mode):
    a = np.array([[0, 514, 1285, 65535]], np.uint16)
    if mode == "I":
        img = Image.fromarray(a.astype(np.int32), "I")
    elif mode == "I;16B":
        img = Image.frombytes("I;16B", (4, 1), a.astype(">u2").tobytes())
    else:
        img = Image.fromarray(a)
    assert img.mode == mode
    img.save(tmp_path / "x.tif")
    x = load_image(tmp_path / "x.tif", _identity_pre(4, 1, channels=1))
    np.testing.assert_array_equal(x[0, 0], [[0, 2, 5, 255]])


def test_float_tiff_still_loads(tmp_path):
    a = np.array([[0.0, 10.0, 200.0, 255.0]], np.float32)
    Image.fromarray(a, "F").save(tmp_path / "f.tif")
    x = load_image(tmp_path / "f.tif", _identity_pre(4, 1))
    np.testing.assert_allclose(x[0, 0], a, atol=1.0)


def test_32bit_integer_image_out_of_16bit_range_is_refused(tmp_path):
    Image.fromarray(np.array([[0, 70000]], np.int32), "I").save(tmp_path / "big.tif")
    with pytest.raises(InputError, match="32-bit integer image"):
        load_image(tmp_path / "big.tif", _identity_pre(2, 1))


def test_greyscale_preprocess_uses_luma(tmp_path):
    Image.new("RGB", (3, 2), (200, 100, 50)).save(tmp_path / "c.png")
    x = load_image(tmp_path / "c.png", _identity_pre(3, 2, channels=1))
    luma = round((200 * 299 + 100 * 587 + 50 * 114) / 1000)  # ITU-R 601-2, Pillow's "L"
    assert x.shape == (1, 1, 2, 3)
    assert np.all(np.abs(x - luma) <= 1)
    pre = Preprocess(width=3, height=2, channels=1)   # ImageNet mean/std averaged
    assert pre.mean == pytest.approx(((0.485 + 0.456 + 0.406) / 3,))
    assert Preprocess.from_dict(pre.to_dict()) == pre
    assert "channels" not in Preprocess(width=3, height=2).to_dict()  # old manifests unchanged


def test_preprocess_refuses_a_channel_count_below_one():
    for bad in (0, -1, True, 2.0):
        with pytest.raises(InputError, match="channels must be a positive integer"):
            Preprocess(width=4, height=4, channels=bad)


def test_four_channel_model_refuses_images_with_the_real_reason(tmp_path):
    with pytest.raises(InputError, match="model input has 4 channels.*npy"):
        load_inputs([PHOTO], Preprocess(width=8, height=8), (1, 4, 8, 8))

