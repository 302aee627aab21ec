"""Session-scoped compiled models: each is compiled once per test run and read by every test
that needs it (registered by ``tests/conftest.py``); plus :func:`gap_fc_model`, a cheap model
file built per test.

The folders are shared: a test that changes files in one copies it first (``shutil.copytree``
into its own ``tmp_path``) and writes its own outputs under ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest


@pytest.fixture
def gap_fc_model(tmp_path) -> Path:
    """conftest's conv3x3 (3 -> 4) + Relu -> GAP -> Flatten -> Gemm (5 logits) at 16x16x3,
    saved as ``tmp_path/m.onnx`` (cheap: built per test)."""
    from conftest import conv_gap_fc_net_impl

    p = tmp_path / "m.onnx"
    onnx.save(conv_gap_fc_net_impl(3, 16, seed=3, name="ux3"), str(p))
    return p


@pytest.fixture(scope="session")
def small_folder(tmp_path_factory) -> tuple[Path, Path]:
    """(model path, output folder): conftest's residual net (NCHW [1, 3, 16, 16] -> 10 logits)
    compiled at 16x16x3 with the bundled calibration photos."""
    import tcc_compiler as tc
    from conftest import residual_net_impl

    d = tmp_path_factory.mktemp("small")
    model = d / "m.onnx"
    onnx.save(residual_net_impl(hw=16), model)
    out = d / "out"
    tc.compile(str(model), "16x16x3").save(out)
    return model, out


@pytest.fixture(scope="session")
def gap_folder(tmp_path_factory) -> Path:
    """The output folder of :func:`helpers.models.gap_net` (1 channel, 32x32, no softmax)
    compiled on two uniform [0, 1) calibration arrays."""
    from helpers.models import gap_net

    from tcc_compiler import api

    r = np.random.default_rng(2)
    calib = [r.uniform(0, 1, (1, 1, 32, 32)).astype(np.float32) for _ in range(2)]
    cm = api.compile(gap_net(1, False), "32x32x1", calibration=calib)
    return cm.save(tmp_path_factory.mktemp("gap") / "out")


#: Input side of the :func:`channel_folders` models.
CHANNEL_HW = 16


@pytest.fixture(scope="session")
def channel_folders(tmp_path_factory) -> dict:
    """A 4-channel and a 1-channel conftest conv->GAP->FC model (16x16, 5 logits), each
    compiled with ``tccc compile --calib`` on a .npy of 3 float32 NCHW arrays.

    Returns:
        ``{"root": Path, 4: {...}, 1: {...}}``, each entry with ``model``, ``calib`` (the .npy)
        and ``folder`` paths.
    """
    from conftest import conv_gap_fc_net_impl

    from tcc_compiler.cli.main import main

    root = tmp_path_factory.mktemp("channels")
    out = {"root": root}
    for c in (4, 1):
        model = root / f"c{c}.onnx"
        onnx.save(conv_gap_fc_net_impl(c, CHANNEL_HW, seed=4, name=f"ux4c{c}"), str(model))
        calib = root / f"calib{c}.npy"
        np.save(calib, np.random.default_rng(c).standard_normal((3, c, CHANNEL_HW, CHANNEL_HW))
                .astype(np.float32))
        folder = root / f"out{c}"
        assert main(["compile", str(model), "--calib", str(calib), "-o", str(folder), "-q"]) == 0
        out[c] = {"model": model, "calib": calib, "folder": folder}
    return out


@pytest.fixture(scope="session")
def resnet50_224(tmp_path_factory) -> tuple[Path, object, Path]:
    """(model path, CompiledModel, output folder): the zoo ResNet-50 (seed 0) compiled at
    224x224x3 with the default options (calibration on the bundled photos), as the README's
    first command does. About a minute on a busy 2-core machine: shared by every test that
    reads it."""
    from tcc_compiler import api, zoo

    d = tmp_path_factory.mktemp("resnet50_224")
    model = d / "resnet50.onnx"
    zoo.save("resnet50", model, width=224, height=224, channels=3)
    m = api.compile(model, "224x224x3")
    return model, m, m.save(d / "out")
