"""HTML report defects (issue #16 items 6 and 10): the ``--histograms`` progress bar follows the
work (it wrapped a ``list()`` and completed before anything ran), long histogram titles are cut
with an ellipsis, and the summary explains an SRAM peak above every layer's own figure."""

from __future__ import annotations

import onnx
import pytest

from tcc_compiler.api import folders
from tcc_compiler.cli.main import main
from tcc_compiler.report import html


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    from conftest import residual_net_impl

    d = tmp_path_factory.mktemp("rep")
    model = d / "net.onnx"
    onnx.save(residual_net_impl(hw=16, c=4), str(model))
    assert main(["-q", "compile", str(model), "--input", "16x16x3", "-o", str(d / "o")]) == 0
    return d / "o"


def test_progress_advances_as_each_input_is_run(out, tmp_path, monkeypatch):
    events = []
    import tcc_compiler.quant.golden as golden

    real = golden.run_golden

    def traced(*a, **k):
        events.append("run")
        return real(*a, **k)

    monkeypatch.setattr(golden, "run_golden", traced)

    def progress(it):
        for x in it:
            events.append("next")
            yield x

    folders.write_html_report(out, tmp_path / "r.html", histogram_inputs=[], progress=progress)
    assert events[:4] == ["next", "run", "next", "run"], events


def test_long_titles_are_cut_with_an_ellipsis():
    name = "model/backbone/stage4/block3/conv2/BatchNormalization_output_0_quantized"
    t = html.short_title(name)
    assert len(t) == html.TITLE_CHARS and t.startswith("\u2026") and name.endswith(t[1:])
    assert html.short_title("conv1") == "conv1"


def test_sram_summary_explains_a_peak_above_every_layer():
    rep = {"sram_peak_bytes": 2_097_152}
    layers = [{"sram_peak_bytes": 1_844_224}, {"sram_peak_bytes": 10}]
    line = html._sram_used(rep, layers, 2_097_152)
    assert line.startswith("2,097,152 B of 2,097,152 B") and "1,844,224 B" in line
    assert "prefetched" in line
    assert html._sram_used({"sram_peak_bytes": 10}, [{"sram_peak_bytes": 10}],
                           100) == "10 B of 100 B"
