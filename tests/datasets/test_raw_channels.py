"""Raw uint8 files of a model input with other than 1 or 3 channels (a 4-channel RGBD-style
or a 2-channel input): read with the model's channel count, normalised by a preprocessing
record of that many channels (one mean and std for every channel, or one per channel). They
used to be refused as if the model took 3 channels ("raw size 8x8x4 differs from the model
input 8x8x3"), since the preprocessing record only knew 1 or 3."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.datasets.calibration import resolve_calibration
from tcc_compiler.datasets.images import Preprocess
from tcc_compiler.datasets.raw import RawSpec
from tcc_compiler.errors import InputError
from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.runtime.evaluate import load_sample, preprocess_for


def _graph(c: int, h: int = 8, w: int = 8) -> Graph:
    g = Graph(name="m")
    g.inputs = [Value("x", (1, c, h, w))]
    return g


def _raw_files(tmp_path, c: int, layout: str = "HWC", n: int = 2):
    """``n`` random 8x8xC uint8 files (``layout`` byte order) and their HWC pixels."""
    d = tmp_path / f"raw{c}{layout}"
    d.mkdir()
    pix = [np.random.default_rng(10 * c + i).integers(0, 256, (8, 8, c), dtype=np.uint8)
           for i in range(n)]
    for i, p in enumerate(pix):
        data = p if layout == "HWC" else p.transpose(2, 0, 1)
        (d / f"s{i}.bin").write_bytes(np.ascontiguousarray(data).tobytes())
    return d, pix


@pytest.mark.parametrize("c", [2, 4, 5])
@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_raw_files_load_with_the_model_channel_count(tmp_path, c, layout):
    d, pix = _raw_files(tmp_path, c, layout)
    pre = preprocess_for(Preprocess(width=8, height=8, channels=c).to_dict(), "raw")  # 0..255
    raw = RawSpec(8, 8, c, layout)
    xs, _ = resolve_calibration([str(d)], _graph(c), pre, raw)
    assert len(xs) == 2
    for i, p in enumerate(pix):
        want = p.transpose(2, 0, 1)[None].astype(np.float32)
        np.testing.assert_array_equal(xs[i], want)
        # eval's loader reads them alike
        np.testing.assert_array_equal(load_sample(d / f"s{i}.bin", pre, raw, c), want)


def test_one_mean_and_std_apply_to_every_channel(tmp_path):
    d, pix = _raw_files(tmp_path, 4)
    for mean, std in (((127.0,), (128.0,)), ((127.0,) * 3, (128.0,) * 3)):  # 3 average to 1
        pre = Preprocess(width=8, height=8, mean=mean, std=std, scale=1.0, channels=4)
        xs, _ = resolve_calibration([str(d)], _graph(4), pre, RawSpec(8, 8, 4))
        want = (pix[0].astype(np.float32) - np.float32(127)) / np.float32(128)
        np.testing.assert_array_equal(xs[0], want.transpose(2, 0, 1)[None])


def test_a_mean_per_channel_applies_channel_by_channel(tmp_path):
    d, pix = _raw_files(tmp_path, 4)
    mean, std = (10.0, 20.0, 30.0, 40.0), (1.0, 2.0, 4.0, 8.0)
    pre = Preprocess(width=8, height=8, mean=mean, std=std, scale=1.0, channels=4)
    xs, _ = resolve_calibration([str(d)], _graph(4), pre, RawSpec(8, 8, 4))
    want = (pix[0].astype(np.float32) - np.float32(mean)) / np.float32(std)
    np.testing.assert_array_equal(xs[0], want.transpose(2, 0, 1)[None])


def test_a_preprocessing_for_other_channels_is_refused(tmp_path):
    d, _ = _raw_files(tmp_path, 4)
    pre = Preprocess(width=8, height=8)     # a 3-channel record
    xs, _ = resolve_calibration([str(d)], _graph(4), pre, RawSpec(8, 8, 4))
    with pytest.raises(InputError, match=r"s0\.bin: 4-channel raw file, but the preprocessing "
                                         r"is for 3 channel"):
        xs[0]


def test_raw_channels_are_checked_against_the_model_not_the_preprocessing(tmp_path):
    d, _ = _raw_files(tmp_path, 3)
    pre = preprocess_for(Preprocess(width=8, height=8).to_dict(), "raw")
    with pytest.raises(InputError, match=r"raw size 8x8x3 differs from the model input 8x8x4"):
        resolve_calibration([str(d)], _graph(4), pre, RawSpec(8, 8, 3))
    d4, _ = _raw_files(tmp_path, 4)
    with pytest.raises(InputError, match=r"raw size 8x8x4 differs from the model input 8x8x3"):
        resolve_calibration([str(d4)], _graph(3), pre, RawSpec(8, 8, 4))
    with pytest.raises(InputError, match=r"raw size 8x8x4 differs from the model input 8x8x3"):
        load_sample(d4 / "s0.bin", pre, RawSpec(8, 8, 4), 3)
