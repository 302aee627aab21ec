"""What the HTML report and ``tccc inspect`` say about a compiled folder: every histogram drawn,
notes that match the files present (histograms, per-layer SQNR), the tiling column and the
note that latency spans overlap."""

from __future__ import annotations

import numpy as np
from helpers.cli import run_cli


def test_html_report_draws_every_histogram(small_folder):
    from tcc_compiler.report.html import FULL_SIZE_HISTOGRAMS, render_html

    _, out = small_folder
    n = FULL_SIZE_HISTOGRAMS + 2
    edges = [float(v) for v in np.linspace(-1.0, 1.0, 9)]
    table = {f"t{i}": {"hist": [1, 2, 3, 4, 4, 3, 2, 1], "edges": edges, "lo": -0.9, "hi": 0.9}
             for i in range(n)}
    page = render_html(out, table)
    assert page.count("<figure><img alt=\"histogram t") == n
    assert f"all {n} quantized tensors" in page


def test_html_notes_match_the_folder(gap_folder, tmp_path):
    import json
    import shutil

    from tcc_compiler.report.html import render_html

    page = render_html(gap_folder)
    assert "halo re-reads not included" not in page  # the column is what the DMA moves
    assert "bytes the layer&#x27;s own DMA commands read + write" in page
    # calib_table.json is present but has no histograms: the note says how to get them
    assert (gap_folder / "calib_table.json").is_file() and "--histograms" in page
    assert "No per-layer SQNR" in page
    out = tmp_path / "o"
    shutil.copytree(gap_folder, out)
    names = [l["name"] for l in json.loads((out / "report.json").read_text())["layers"]]
    (out / "analysis.json").write_text(json.dumps(
        {"layers": [{"name": n, "sqnr_db": 30.0} for n in names]}))
    page = render_html(out)
    assert "<h2>Per-layer SQNR</h2>" in page and "No per-layer SQNR" not in page
    assert "No calibration histograms or per-layer SQNR" not in page


def test_layers_tables_show_tiling_and_latency_note(gap_folder, capsys):
    import json

    from tcc_compiler.report.html import render_html

    layers = json.loads((gap_folder / "report.json").read_text())["layers"]
    page = render_html(gap_folder)
    assert "<th>tiling</th>" in page and "overlap" in page
    for l in layers:
        assert f"<td class=w>{l['tiling']}</td>" in page
    code, out, err = run_cli(["inspect", str(gap_folder)], capsys)
    assert code == 0, err
    for l in layers:
        assert f"tiling: {l['tiling']}" in out
    assert "spans of consecutive ops overlap" in out

