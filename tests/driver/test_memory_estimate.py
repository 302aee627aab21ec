"""The up-front compile memory estimate: every activation counted, a huge input refused in one
line before any work.
"""

from __future__ import annotations

from helpers.cli import one_line_error, run_cli


def test_huge_input_refused_up_front(gap_fc_model, tmp_path, capsys, monkeypatch):
    """8192x8192x3 float activations alone are 3 * 4 * 8192**2 = 805 MB for the input; the
    estimate must exceed a (faked) 2 GB of available memory and fail in one line, exit 2."""
    from tcc_compiler import driver

    monkeypatch.setattr(driver, "available_memory_bytes", lambda: 2 * 10**9)
    code, _, err = run_cli(["-q", "compile", str(gap_fc_model), "--input", "8192x8192x3", "-o",
                         str(tmp_path / "o")], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "8192x8192x3" in line and "2.0 GB available" in line
    assert not (tmp_path / "o").exists()


def test_memory_estimate_counts_every_activation(gap_fc_model):
    from tcc_compiler import driver
    from tcc_compiler.frontend import import_onnx
    from tcc_compiler.passes import PassManager, default_pipeline

    g = PassManager(default_pipeline()).run(import_onnx(str(gap_fc_model), "16x16x3"))
    need, act = driver.estimate_compile_memory(g)
    # hand count: conv+relu 4x16x16 (one fused NPU op), gap 4, fc 5 (+ host/views if any)
    assert act >= 4 * (4 * 16 * 16 + 4 + 5)
    assert need == act * driver.MEMORY_PER_ACTIVATION_BYTE

