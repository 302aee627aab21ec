"""The ONNX backend's ``prepare``: a model path works, anything else is refused clearly.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import residual_net_impl

from tcc_compiler.errors import InputError


def test_backend_prepare_accepts_a_path_and_refuses_junk(tmp_path):
    from tcc_compiler import onnx_backend as backend

    model = residual_net_impl(hw=16)
    onnx.save(model, tmp_path / "m.onnx")
    rep = backend.prepare(str(tmp_path / "m.onnx"), "CPU")
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    (y,) = rep.run([x])
    assert y.shape == (1, 10)
    with pytest.raises(TypeError, match="ModelProto or a path"):
        backend.prepare(42, "CPU")
    with pytest.raises(InputError, match="no such model file"):
        backend.prepare(str(tmp_path / "nope.onnx"), "CPU")

