"""``tccc report``: one self-contained HTML page about a compiled output folder.

Contents: summary (sizes, MACs, estimated latency), the estimated command timeline per queue
with where compute waits for DMA (:mod:`tcc_compiler.report.timeline_view`), a per-layer
table, bar charts of the estimated latency per layer, the DRAM traffic per layer and the SRAM
use per layer against the target's SRAM, and, when the folder holds analysis data
(``analysis.json`` with per-layer ``sqnr_db``, or ``calib_table.json`` with per-tensor
histograms and chosen clipping ranges), those too. Charts are matplotlib PNGs embedded as base64 ``data:`` URIs: the page needs no
other file and no network.

DRAM traffic per layer is what the layer's own DMA commands move (report.json
``dram_read_bytes + dram_write_bytes``: weights as stored, compressed when they are, halo
re-reads included; a tensor kept in SRAM or passed through a cascade moves none). The
latency column is the op's span on the command timeline (see :data:`LATENCY_NOTE`).
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from pathlib import Path
from typing import Iterable

from tcc_compiler.emit.files import TIMELINE_FILE
from tcc_compiler.errors import FormatError, InputError
from tcc_compiler.report.png import png_data_uri
from tcc_compiler.report.timeline_view import timeline_section

log = logging.getLogger(__name__)

#: Up to this many histograms are drawn at full size; above it (ResNet-50 has ~57 quantized
#: tensors) every histogram is still drawn, smaller, so the page stays a few hundred kB.
FULL_SIZE_HISTOGRAMS = 24

#: What the per-layer latency / cycles column is (also printed under ``tccc inspect``'s table).
LATENCY_NOTE = ("Per-layer latency is the span from the op's first to its last command on the "
                "estimated timeline; spans of consecutive ops overlap (the next op's loads start "
                "before this op ends), so the column sums to more than the total. Cascaded ops "
                "(tiling 'cascade ...') show their own compute time instead.")
#: What the DRAM column is.
DRAM_NOTE = ("DRAM B = bytes the layer's own DMA commands read + write (weights as stored, "
             "halo re-reads included); a tensor kept in SRAM or passed through a cascade "
             "moves none.")


def _bar_chart(labels: list[str], values: list[float], title: str, ylabel: str,
               limit: float | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(values)), 3.2))
    ax.bar(range(len(values)), values, color="#3b6ea8")
    if limit is not None:
        ax.axhline(limit, color="#c0392b", linestyle="--", label=f"limit {limit:,.0f}")
        ax.legend(loc="upper right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("layer index (see table)")
    ax.set_xticks(range(0, len(values), max(1, (len(values) + 14) // 15)))
    ax.grid(axis="y", alpha=0.3)
    return png_data_uri(fig)


def _histograms(table: dict) -> list[tuple[str, str]]:
    """One embedded PNG per tensor of ``table`` that has a histogram (``hist`` counts over
    ``edges``, clipping range ``lo``/``hi`` dashed), in table (graph) order: all of them,
    smaller when there are more than :data:`FULL_SIZE_HISTOGRAMS`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawable = [(n, t) for n, t in table.items()
                if isinstance(t, dict) and t.get("hist") and t.get("edges")]
    size = (4.0, 2.2) if len(drawable) <= FULL_SIZE_HISTOGRAMS else (3.0, 1.65)
    out = []
    for name, t in drawable:
        hist, edges = t["hist"], t["edges"]
        fig, ax = plt.subplots(figsize=size)
        ax.stairs(hist, edges, fill=True, color="#7f9fbf")
        ax.set_yscale("log")
        for key in ("lo", "hi"):
            if key in t:
                ax.axvline(float(t[key]), color="#c0392b", linestyle="--")
        ax.set_title(short_title(name), fontsize=8)
        ax.tick_params(labelsize=7)
        out.append((name, png_data_uri(fig)))
    return out


def activation_histograms(folder: str | os.PathLike, inputs: Iterable) -> dict[str, dict]:
    """Histograms of every int8 activation of the golden integer model over ``inputs``.

    Args:
        folder: compiled output folder (its quantized.tir + .npz).
        inputs: float32 arrays shaped like the ONNX input (NCHW), preprocessed; any
            iterable, consumed one input at a time (a progress bar around it moves as the
            work is done).

    Returns:
        {value name: {"hist": 256 counts of the codes -128..127, "edges": 257 real-valued bin
        edges ``s * (code - 0.5 - zp)``, "lo"/"hi": the chosen clipping range
        ``s * (-128 - zp)`` .. ``s * (127 - zp)``}}: counts in the end bins are clipped values.
    """
    import numpy as np

    from tcc_compiler.ir.text import load_ir
    from tcc_compiler.quant.golden import run_golden

    g = load_ir(Path(folder) / "quantized.tir")
    vals = [g.inputs[0]] + [n.output for n in g.nodes if n.output.dtype == "int8"
                             and n.output.quant is not None]
    counts = {v.name: np.zeros(256, np.int64) for v in vals}
    for x in inputs:
        res = run_golden(g, x, keep=True)
        from tcc_compiler.quant.params import quantize_input

        res.setdefault("int:" + g.inputs[0].name, quantize_input(x, g.inputs[0]))
        for v in vals:
            q = res.get("int:" + v.name)
            if q is not None:
                counts[v.name] += np.bincount(q.astype(np.int64).reshape(-1) + 128,
                                              minlength=256)
    out = {}
    for v in vals:
        s, zp = float(v.quant.scale), int(v.quant.zero_point)
        codes = np.arange(-128, 129) - 0.5
        out[v.name] = {"hist": counts[v.name].tolist(), "edges": (s * (codes - zp)).tolist(),
                       "lo": s * (-128 - zp), "hi": s * (127 - zp)}
    return out


def _read_json(path: Path) -> dict | list | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not valid JSON ({exc})") from None


def render_html(folder: str | os.PathLike, histograms: dict[str, dict] | None = None) -> str:
    """Render the report page of a compiled output folder.

    Args:
        folder: a ``tccc compile`` output folder (reads report.json and manifest.json, and
            analysis.json / calib_table.json when present).
        histograms: per-tensor histograms (see :func:`activation_histograms`) to show instead
            of a calib_table.json.

    Returns:
        The HTML text (UTF-8, self-contained: images are data URIs).

    Raises:
        InputError: missing folder or report.json. FormatError: invalid JSON, or a
            report.json field of the wrong type or missing (the message names the field).
    """
    from tcc_compiler.runtime.loaded import read_report

    folder = Path(folder)
    rep = read_report(folder)
    man = _read_json(folder / "manifest.json") or {}
    if rep is None:
        raise InputError(f"{folder / 'report.json'}: missing (is {folder} a tccc output folder?)")
    clock_hz = float(man.get("target", {}).get("clock_hz") or 1.0)
    sram_limit = man.get("target", {}).get("sram_capacity_bytes")
    layers = rep.get("layers", [])
    lat_ms = [l["estimated_cycles"] / clock_hz * 1e3 for l in layers]
    # bytes the layer's own DMA commands move (tensors kept in SRAM or cascaded move none)
    dram = [int(l.get("dram_read_bytes", 0)) + int(l.get("dram_write_bytes", 0)) for l in layers]
    sram = [l["sram_peak_bytes"] for l in layers]
    labels = [l["name"] for l in layers]
    esc = html.escape
    charts = []
    if layers:
        charts = [
            ("Estimated latency per layer", _bar_chart(labels, lat_ms, "Estimated latency",
                                                       "ms")),
            ("DRAM traffic per layer", _bar_chart(labels, [d / 1e6 for d in dram],
                                                  "DRAM bytes read + written by its DMA", "MB")),
            ("SRAM use per layer", _bar_chart(labels, sram, "SRAM use", "bytes",
                                              limit=sram_limit)),
        ]
    rows = []
    for i, (l, ms, d) in enumerate(zip(layers, lat_ms, dram)):
        rows.append(
            f"<tr><td>{i}</td><td>{esc(l['name'])}</td><td>{esc(l['op'])}</td>"
            f"<td>{esc('x'.join(map(str, l['input_shape'])))}</td>"
            f"<td>{esc('x'.join(map(str, l['output_shape'])))}</td>"
            f"<td class=n>{l['macs']:,}</td><td class=n>{ms:.4f}</td>"
            f"<td class=n>{d:,}</td><td class=n>{l['weight_bytes']:,}</td>"
            f"<td class=n>{l['sram_peak_bytes']:,}</td><td class=n>{l['tiles']}</td>"
            f"<td class=w>{esc(l.get('tiling', ''))}</td>"
            f"<td>{esc(', '.join(l.get('source', [])))}</td></tr>")
    extra = _analysis_sections(folder, histograms)
    if rep.get("layout") == "segmented":
        extra.insert(0, _segments_html(rep))
    summary = [("target", rep.get("target")), ("npu_cmd.bin", f"{rep.get('command_bytes', 0):,} B"),
               ("quantized_network.bin", f"{rep.get('weight_bytes', 0):,} B"),
               ("MACs", f"{rep.get('macs', 0):,}"),
               ("estimated latency", f"{rep.get('estimated_latency_ms', 0):.3f} ms"),
               ("SRAM used", _sram_used(rep, layers, sram_limit)),
               ("DRAM activation arena", f"{rep.get('dram_activation_bytes', 0):,} B"),
               ("NPU ops", ", ".join(f"{v} {k}" for k, v in
                                     sorted(rep.get("npu_ops", {}).items())))]
    summ = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in summary)
    figs = "".join(f'<h2>{esc(t)}</h2><img alt="{esc(t)}" src="{src}">' for t, src in charts)
    figs = timeline_section(_read_json(folder / TIMELINE_FILE), rep.get("timeline"),
                            clock_hz) + figs
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>tccc report: {esc(str(man.get('model', {}).get('source', folder.name)))}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
img {{ max-width: 100%; }} .note {{ color: #666; }}
td.w {{ max-width: 28em; white-space: normal; overflow-wrap: anywhere; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 8px; }} figure {{ margin: 0; }}
</style></head><body>
<h1>tccc compile report</h1>
<p>{esc(str(man.get('model', {}).get('source', '')))} &rarr; {esc(str(folder))}</p>
<table>{summ}</table>
{figs}
<h2>Layers</h2>
<table><tr><th>#</th><th>name</th><th>op</th><th>input</th><th>output</th><th>MACs</th>
<th>latency ms</th><th>DRAM B</th><th>weights B</th><th>SRAM B</th><th>tiles</th>
<th>tiling</th><th>ONNX nodes</th></tr>
{''.join(rows)}</table>
<p class=note>{esc(LATENCY_NOTE)}</p>
{''.join(extra)}
<p class=note>Latency and cycles are estimates of the target's cost model (specs/target.md).
{esc(DRAM_NOTE)}</p>
</body></html>
"""


def _segments_html(rep: dict) -> str:
    """The NPU/host split of a segmented model (report.json ``segments`` and ``boundaries``):
    one row per segment and one per boundary with its bytes per image and estimated time."""
    esc = html.escape
    seg_rows = []
    for sg in rep.get("segments", []):
        if sg.get("device") == "npu":
            what = (f"{sg.get('command_bytes', 0):,} B commands, {sg.get('weight_bytes', 0):,} B "
                    "weights")
            ms = f"{sg.get('estimated_latency_ms', 0):.4f} (NPU)"
        else:
            what = ", ".join(f"{v} {k}" for k, v in sorted(sg.get("ops", {}).items()))
            ms = f"{sg.get('estimated_host_ms', 0):.4f} (host)"
        seg_rows.append(f"<tr><td>{sg.get('index')}</td><td>{esc(str(sg.get('device')))}</td>"
                        f"<td>{esc(str(sg.get('folder') or sg.get('file')))}</td>"
                        f"<td class=n>{sg.get('nodes')}</td><td>{esc(what)}</td>"
                        f"<td class=n>{ms}</td></tr>")
    b_rows = "".join(
        f"<tr><td>{esc(str(b.get('tensor')))}</td><td>{b.get('segment')}</td>"
        f"<td>{esc(str(b.get('kind')))}</td><td class=n>{b.get('bytes', 0):,}</td>"
        f"<td class=n>{b.get('estimated_host_ms', 0):.4f}</td></tr>"
        for b in rep.get("boundaries", []))
    return (f"<h2>Segments: NPU and host</h2><p>estimated {rep.get('estimated_latency_ms', 0):.3f}"
            f" ms NPU + {rep.get('estimated_host_ms', 0):.3f} ms host + "
            f"{rep.get('estimated_boundary_ms', 0):.3f} ms boundaries = "
            f"{rep.get('estimated_total_ms', 0):.3f} ms (host times: the target file's [host] "
            "assumptions)</p><table><tr><th>#</th><th>device</th><th>entry</th><th>nodes</th>"
            f"<th>what</th><th>est. ms</th></tr>{''.join(seg_rows)}</table>"
            "<h2>Boundaries (per image)</h2><table><tr><th>tensor</th><th>segment</th>"
            f"<th>conversion</th><th>bytes moved</th><th>est. host ms</th></tr>{b_rows}</table>")


def _analysis_sections(folder: Path, histograms: dict[str, dict] | None) -> list[str]:
    """HTML sections from the folder's analysis data: per-layer SQNR (analysis.json) and the
    activation histograms (``histograms``, else calib_table.json's), or notes on how to get
    them."""
    esc = html.escape
    analysis = _read_json(folder / "analysis.json")
    calib = _read_json(folder / "calib_table.json")
    extra = []
    if isinstance(analysis, dict) and analysis.get("layers"):
        items = "".join(f"<tr><td>{esc(str(a.get('node', a.get('name'))))}</td>"
                        f"<td class=n>{_sqnr_cell(a.get('isolated'))}</td>"
                        f"<td class=n>{_sqnr_cell(a.get('accumulated'))}</td></tr>"
                        for a in analysis["layers"])
        extra.append(f"<h2>Per-layer SQNR</h2><table><tr><th>layer</th><th>SQNR dB (isolated)"
                     f"</th><th>SQNR dB (accumulated)</th></tr>"
                     f"{items}</table>")
    if histograms is None and isinstance(calib, dict):
        histograms = calib.get("tensors", calib)
    hists = _histograms(histograms) if histograms else []
    if hists:
        imgs = "".join(f'<figure><img alt="histogram {esc(n)}" src="{src}"></figure>'
                       for n, src in hists)
        extra.append(f"<h2>Activation histograms: all {len(hists)} quantized tensors "
                     f"(dashed: chosen clipping range; end bins hold the clipped values)</h2>"
                     f"<div class=grid>{imgs}</div>")
    else:
        why = " (calib_table.json holds the clipping ranges, not histograms)" \
            if isinstance(calib, dict) else ""
        extra.append("<p class=note>No activation histograms: write the report with "
                     f"<code>tccc report DIR -o FILE --histograms</code>{esc(why)}.</p>")
    if not (isinstance(analysis, dict) and analysis.get("layers")):
        extra.append("<p class=note>No per-layer SQNR: run <code>tccc analyze DIR MODEL.onnx "
                     "IMAGE...</code> (writes analysis.json into the folder), then the report "
                     "again.</p>")
    return extra


def write_html(folder: str | os.PathLike, path: str | os.PathLike,
               histograms: dict[str, dict] | None = None) -> Path:
    """Write :func:`render_html` of ``folder`` (and ``histograms``) to ``path``.

    The folder is validated first as ``tccc run`` does (manifest fields, both binaries' sizes
    and CRC-32s, their headers), so a corrupted folder is refused rather than reported.

    Raises:
        InputError: unreadable folder or unwritable path. FormatError: invalid JSON, or a
            corrupted/mismatched manifest.json, npu_cmd.bin or quantized_network.bin (the
            message names the file).
    """
    from tcc_compiler.fsutil import check_output_file, write_output_file
    from tcc_compiler.runtime import load_program

    check_output_file(path, "-o", reads=folder, own=("report.html",))
    load_program(folder)
    return write_output_file(path, render_html(folder, histograms), "-o")


def _sqnr_cell(err) -> str:
    """One SQNR cell of analysis.json's per-layer errors (``{"sqnr_db", "max_abs", ...}``):
    dB with 2 decimals; ``null`` (no finite SQNR) shows as "exact" when the error is 0, else
    "n/a" (an all-zero float output)."""
    if not isinstance(err, dict):
        return "n/a"
    v = err.get("sqnr_db")
    if isinstance(v, (int, float)) and math.isfinite(v):
        return f"{v:.2f}"
    return "exact" if err.get("max_abs") == 0 else "n/a"


#: Longest histogram title (characters) that fits above a small chart.
TITLE_CHARS = 48


def short_title(name: str, limit: int = TITLE_CHARS) -> str:
    """``name`` if it fits in ``limit`` characters, else its end with a leading "…" (the end
    of a value name is the distinctive part; the ellipsis says it was cut, so a cut name no
    longer reads as another layer's)."""
    return name if len(name) <= limit else "\u2026" + name[-(limit - 1):]


def _sram_used(rep: dict, layers: list[dict], sram_limit) -> str:
    """The summary's SRAM line: the schedule's peak of the target's SRAM, and why it can exceed
    every layer's own figure (weights prefetched for a later layer sit at the top of SRAM, so
    the peak reaches the SRAM size whenever a prefetch is in flight)."""
    total = int(rep.get("sram_peak_bytes", 0))
    text = f"{total:,} B of {sram_limit or 0:,} B"
    largest = max((int(l.get("sram_peak_bytes", 0)) for l in layers), default=0)
    if total > largest:
        text += (f" (highest address in use, counting weights prefetched for a later layer at "
                 f"the top of SRAM; the largest layer's own buffers and resident tensors take "
                 f"{largest:,} B, the SRAM column)")
    return text
