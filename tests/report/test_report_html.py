"""``tccc report``: a self-contained HTML page, checked structurally and in headless Chromium."""

from __future__ import annotations

import base64
import html.parser
import io
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from tcc_compiler import api
from tcc_compiler.cli.main import main
from tcc_compiler.errors import InputError
from tcc_compiler.report.html import activation_histograms, render_html
from tcc_compiler.report.timeline_view import TOP_WAITS, timeline_chart

pytest.importorskip("matplotlib")


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.rows, self.links = [], 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        if tag == "tr":
            self.rows += 1
        if tag in ("link", "script") or (tag == "a" and "href" in a):
            self.links.append(tag)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from conftest import residual_net_impl

    tmp = tmp_path_factory.mktemp("rep")
    m = api.compile(residual_net_impl(hw=32, c=8), "32x32x3")
    return m.save(tmp / "out")


def test_page_is_self_contained_with_one_row_per_layer(folder):
    rep = json.loads((folder / "report.json").read_text())
    page = render_html(folder)
    p = _Collect()
    p.feed(page)
    assert p.links == []  # no external stylesheet, script or link
    assert len(p.srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in p.srcs)
    for s in p.srcs:  # every chart is a decodable PNG of plausible size
        im = Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1])))
        assert im.format == "PNG" and im.size[0] > 300
    summary_rows = 8
    waits = rep["timeline"]["compute_waits_for_dma"]
    timeline_rows = 1 + 3 + (1 + min(TOP_WAITS, len(waits)) if waits else 0)
    # + header row of the layer table
    assert p.rows == summary_rows + timeline_rows + 1 + len(rep["layers"])
    for layer in rep["layers"]:
        assert html.escape(layer["name"]) in page
        # the DRAM column is what the layer's DMA moves (report.json), not a shape estimate
        moved = layer["dram_read_bytes"] + layer["dram_write_bytes"]
        table = page.split("<h2>Layers</h2>", 1)[1]
        row = table.split(f"<td>{html.escape(layer['name'])}</td>", 1)[1].split("</tr>", 1)[0]
        assert f"<td class=n>{moved:,}</td>" in row


def test_histograms_count_every_element_and_show_the_clipping_range(folder):
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    h = activation_histograms(folder, xs)
    first = next(iter(h.values()))  # the graph input: 2 images x 3x32x32 codes
    assert sum(first["hist"]) == 2 * 3 * 32 * 32
    assert len(first["edges"]) == 257
    assert first["lo"] == pytest.approx(first["edges"][0] + (first["edges"][1]
                                                              - first["edges"][0]) / 2)
    some = dict(list(h.items())[:3])
    assert render_html(folder, some).count("<img") == 4 + 3


def test_timeline_is_drawn_per_queue_and_a_missing_or_odd_file_gets_a_note(folder, tmp_path):
    trace = json.loads((folder / "timeline.json").read_text())
    png = timeline_chart(trace)
    im = Image.open(io.BytesIO(base64.b64decode(png.split(",", 1)[1])))
    assert im.format == "PNG" and im.size[0] > 600
    page = render_html(folder)
    assert "Estimated timeline" in page and "Where compute waits for DMA" in page
    copy = tmp_path / "old"
    shutil.copytree(folder, copy)
    (copy / "timeline.json").unlink()
    assert "No timeline in this folder" in render_html(copy)
    # valid JSON of the wrong shape (an edited or foreign file) is not trusted or crashed on
    for odd in ([1, 2], {"traceEvents": [{"ph": "X", "ts": "a"}, 7, {"ph": "M"}]},
                {"traceEvents": "x"}):
        (copy / "timeline.json").write_text(json.dumps(odd))
        assert timeline_chart(odd) is None
        assert "No timeline in this folder" in render_html(copy)


def test_cli_report(folder, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(folder), "-o", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes"] == out.stat().st_size
    assert main(["report", str(tmp_path), "-o", str(out)]) == 2
    with pytest.raises(InputError):
        render_html(tmp_path / "missing")


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium installed")
def test_renders_in_headless_chromium(folder, tmp_path):
    page = tmp_path / "r.html"
    page.write_text(render_html(folder))
    shot = tmp_path / "shot.png"
    subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    im = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert im.shape[:2] == (1400, 1000)
    # the bar charts are drawn in #3b6ea8: many such pixels means images decoded and laid out
    blue = (np.abs(im - np.array([0x3b, 0x6e, 0xa8])).sum(axis=2) < 30).sum()
    assert blue > 2000
    dom = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu",
                          "--dump-dom", page.as_uri()], check=True, capture_output=True,
                         timeout=120, text=True).stdout
    assert "tccc compile report" in dom and dom.count("<tr>") > 10
