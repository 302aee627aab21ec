"""numba's import and first dispatch (about 0.5 s of CPU) start on a thread of their own when
a compile begins that will calibrate, so they overlap the import and ONNX Runtime's work
instead of stalling calibration's first observer (numerics/jit.py ``warm_in_background``)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_compile_warms_the_kernels_before_importing_only_when_it_calibrates(
        gap_fc_model, tmp_path, monkeypatch):
    from tcc_compiler import api
    from tcc_compiler.driver import pipeline

    events: list[str] = []
    real_import = pipeline.import_model
    monkeypatch.setattr(pipeline.jit, "warm_in_background", lambda: events.append("warm"))
    monkeypatch.setattr(pipeline, "import_model",
                        lambda *a, **k: events.append("import") or real_import(*a, **k))
    first = api.compile(gap_fc_model, "16x16x3")
    assert events == ["warm", "import"]
    table = first.save(tmp_path / "a") / "calib_table.json"
    events.clear()
    api.compile(gap_fc_model, "16x16x3", calib_table=table)   # no calibration: no warm-up
    assert events == ["import"]


def test_warm_in_background_loads_and_dispatches_in_a_fresh_process():
    pytest.importorskip("numba")
    code = ("from tcc_compiler.numerics import jit\n"
            "t = jit.warm_in_background()\n"
            "assert t is not None and t.daemon\n"
            "assert jit.warm_in_background() is None   # one warm-up at a time\n"
            "t.join()\n"
            "from tcc_compiler.numerics import jit_kernels as k\n"
            "print(jit.loaded(), len(k.count_zeros.signatures) > 0,\n"
            "      jit.warm_in_background() is None)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "True", "True"]


def test_warm_does_nothing_when_the_kernels_are_off():
    from tcc_compiler.numerics import jit

    old = jit.set_enabled(False)
    try:
        assert jit.warm_in_background() is None
        assert jit.warm() is False
    finally:
        jit.set_enabled(old)
