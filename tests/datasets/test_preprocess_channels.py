"""The preprocessing record of a model input with other than 1 or 3 channels holds that
channel count, not a 3-value (RGB) record: mean/std one value for every channel (the ImageNet
defaults and 3-value presets averaged) or one per channel. Readers refuse a record of another
channel count: the manifest checker (a decoder must not trust it), the raw and image loaders,
and the driver given a :class:`Preprocess` for another input."""

from __future__ import annotations

import pytest

from tcc_compiler.datasets.images import Preprocess, load_image
from tcc_compiler.datasets.presets import PreprocessSettings, preprocess_at
from tcc_compiler.errors import FormatError, InputError
from tcc_compiler.runtime.evaluate import preprocess_for
from tcc_compiler.runtime.manifest_check import FieldChecker, check_preprocess

IMAGENET_MEAN = (0.485 + 0.456 + 0.406) / 3


@pytest.mark.parametrize("c", [2, 4, 64, 512])
def test_record_holds_the_input_channel_count(c):
    pre = Preprocess(width=8, height=6, channels=c)
    assert pre.shape == (1, c, 6, 8)
    assert pre.mean == pytest.approx((IMAGENET_MEAN,))    # one value for every channel
    rec = pre.to_dict()
    assert rec["channels"] == c and len(rec["mean"]) == len(rec["std"]) == 1
    assert Preprocess.from_dict(rec) == pre
    per = Preprocess(width=8, height=6, channels=c, mean=range(c), std=[2.0] * c)
    assert Preprocess.from_dict(per.to_dict()) == per


def test_a_default_record_is_resolved_at_the_model_channel_count():
    assert preprocess_at(None, 8, 6, 4).channels == 4
    assert preprocess_at(PreprocessSettings(preset="tf-efficientnet"), 8, 6, 2).to_dict()[
        "mean"] == [127.0]
    pre = preprocess_at(PreprocessSettings(mean=(1.0, 2.0), std=(3.0,)), 8, 6, 2)
    assert (pre.channels, pre.mean, pre.std) == (2, (1.0, 2.0), (3.0,))
    with pytest.raises(InputError, match="--mean: give 1 or 4 values, got 3"):
        preprocess_at(PreprocessSettings(mean=(1.0, 2.0, 3.0)), 8, 6, 4)
    with pytest.raises(InputError, match="for a 8x6x3 .*model input is 8x6x4"):
        preprocess_at(Preprocess(width=8, height=6), 8, 6, 4)


def test_eval_overrides_and_pixels_raw_fit_the_channel_count():
    rec = Preprocess(width=8, height=8, channels=4).to_dict()
    raw = preprocess_for(rec, "raw")
    assert (raw.channels, raw.mean, raw.std, raw.scale) == (4, (0.0,), (1.0,), 1.0)
    assert preprocess_for(rec, mean=[1, 2, 3, 4]).mean == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(InputError, match="--std: give 1 or 4 values, got 2"):
        preprocess_for(rec, std=[1, 2])


def test_decoder_takes_exactly_the_record_channel_values():
    rec = Preprocess(width=8, height=8, channels=4).to_dict()
    for mean in ([0.5, 0.5, 0.5], [0.5, 0.5], "0.5"):
        with pytest.raises(FormatError, match="mean must be (a list of )?1 or 4"):
            Preprocess.from_dict({**rec, "mean": mean})
    grey = Preprocess(width=8, height=8, channels=1).to_dict()
    with pytest.raises(FormatError, match=r"std must be (a list of )?1 number\b"):
        Preprocess.from_dict({**grey, "std": [0.2, 0.2, 0.2]})


def test_manifest_check_refuses_a_record_for_another_input():
    ck = FieldChecker("out/manifest.json")
    check_preprocess(ck, Preprocess(width=8, height=6, channels=4).to_dict(), (4, 6, 8))
    # a 3-channel record on a 4-channel input (stating its count: one without is a record
    # written before records held any, read at the input's count, test_old_preprocess_records)
    old = {**Preprocess(width=8, height=6).to_dict(), "channels": 3}
    with pytest.raises(FormatError, match=r"out/manifest.json: preprocess.channels: 3, but the "
                                          r"input has 4"):
        check_preprocess(ck, old, (4, 6, 8))
    with pytest.raises(FormatError, match="preprocess.width: 8, but the input has 9"):
        check_preprocess(ck, old, (3, 6, 9))


def test_images_do_not_load_for_other_channel_counts(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(InputError, match=r"a\.png: the model input has 4 channels; images load "
                                         r"as 1 \(greyscale\) or 3"):
        load_image(tmp_path / "a.png", Preprocess(width=8, height=8, channels=4))
