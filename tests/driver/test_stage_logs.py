"""The driver logs each stage at INFO (``-v``) when the stage ends, not after the whole compile.
"""

from __future__ import annotations

from conftest import residual_net_impl


def test_verbose_logs_each_stage(tmp_path, caplog):
    import logging

    import tcc_compiler as tc

    with caplog.at_level(logging.INFO, logger="tcc_compiler"):
        tc.compile(residual_net_impl(hw=16), "16x16x3")
    text = caplog.text
    for stage in ("import: ", "passes: ", "quantize: method mse", "schedule: ", "emit: "):
        assert stage in text, stage


def test_stage_logs_are_live(gap_fc_model, tmp_path, monkeypatch, caplog):
    """When scheduling starts, the import, passes and quantize lines are already logged."""
    import logging

    from tcc_compiler import driver
    from tcc_compiler.driver import pipeline

    seen: list[str] = []
    real_lower = pipeline.lower

    def spy(*a, **k):
        seen.extend(r.getMessage().split(":")[0] for r in caplog.records)
        return real_lower(*a, **k)

    monkeypatch.setattr(pipeline, "lower", spy)
    with caplog.at_level(logging.INFO, logger="tcc_compiler.driver"):
        driver.compile_model(str(gap_fc_model), input_whc="16x16x3")
    assert [s for s in seen if s in ("import", "passes", "quantize", "schedule")] == [
        "import", "passes", "quantize"]
    final = [r.getMessage().split(":")[0] for r in caplog.records]
    assert "schedule" in final and "emit" in final

