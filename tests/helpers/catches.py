"""Set-ups shared by the ``run --check`` fault tests (tests/runtime/test_check_catches*.py):
a small model compiled and saved beside its ONNX file, and a kernel replaced wherever it was
imported by name."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

from tcc_compiler import api


def compile_saved(tmp: Path, model: onnx.ModelProto, hw: int, r: np.random.Generator, n: int,
                  calib: int = 4, **options) -> tuple[Path, Path, list, list]:
    """``model`` (input [1, 3, hw, hw]) saved as ``tmp/m.onnx`` and compiled at hw x hw x 3
    into ``tmp/o``, calibrated on the first ``calib`` of ``n`` float32 NCHW inputs drawn from
    ``r`` (standard normal); ``options`` go to ``api.compile``.

    Returns:
        (output folder, model path, the calibration inputs, the other inputs).
    """
    onnx.save(model, tmp / "m.onnx")
    xs = [r.normal(0, 1, (1, 3, hw, hw)).astype(np.float32) for _ in range(n)]
    m = api.compile(model, f"{hw}x{hw}x3", calibration=xs[:calib], **options)
    return m.save(tmp / "o"), tmp / "m.onnx", xs[:calib], xs[calib:]


def patch_users(monkeypatch, name: str, real, wrong) -> list:
    """Replace the function ``real`` by ``wrong`` in every loaded module that holds it as
    ``name`` (imported by name, so patching its home module alone would miss them); returns
    those modules."""
    users = [m for m in list(sys.modules.values())
             if m is not None and getattr(m, name, None) is real]
    for m in users:
        monkeypatch.setattr(m, name, wrong)
    return users
