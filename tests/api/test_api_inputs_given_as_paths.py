"""API inputs given as one path (issue #16 item 8): ``calibration="photo.png"`` is one image (it
was iterated character by character), ``m.run("photo.png")`` loads the image with the compiled
preprocessing (it raised numpy's bare ValueError), other types are refused with InputError."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import tcc_compiler as tc
from tcc_compiler.datasets.images import bundled_photos
from tcc_compiler.errors import InputError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from conftest import residual_net_impl

    path = tmp_path_factory.mktemp("apiin") / "net.onnx"
    onnx.save(residual_net_impl(hw=16, c=4), str(path))
    return path


def test_one_calibration_path_is_one_image(model):
    photo = str(bundled_photos("calib")[0])
    m = tc.compile(str(model), "16x16x3", calibration=photo)
    assert m.manifest["calibration"]["inputs"] == 1
    m2 = tc.compile(str(model), "16x16x3", calibration=[photo])
    assert m.artifacts.cmd_bin == m2.artifacts.cmd_bin
    assert m.artifacts.weight_bin == m2.artifacts.weight_bin


def test_run_takes_an_image_path(model):
    m = tc.compile(str(model), "16x16x3")
    photo = str(bundled_photos("eval")[0])
    from tcc_compiler.api.folders import inputs_for

    x = inputs_for([photo], m.program)[0]
    assert np.array_equal(m.run(photo), m.run(x))
    with pytest.raises(InputError, match="expected a float32 array"):
        m.run({"x": 1})
    with pytest.raises(InputError, match="no such file"):
        m.run(str(model.parent / "missing.png"))


@pytest.mark.parametrize("bad", [5, 2.5, None.__class__])
def test_calibration_that_is_no_path_array_or_list_is_an_input_error(model, bad):
    """A new-user try: ``calibration=5`` raised a bare ``TypeError: 'int' object is not
    iterable``."""
    with pytest.raises(InputError, match="calibration: .*give image"):
        tc.compile(model, "16x16x3", calibration=bad)
