"""The timeline section of ``tccc report``: the estimated command timeline drawn per queue, and
where the compute queue waits for DMA.

Reads the folder's ``timeline.json`` (Chrome trace events, :mod:`tcc_compiler.emit.trace`) and
``report.json``'s ``"timeline"`` summary (:func:`tcc_compiler.schedule.timeline.summary`).
Nothing here trusts the files: events without the expected fields are skipped, and a folder
without ``timeline.json`` (older tccc) gets a note instead of a chart.
"""

from __future__ import annotations

import html

#: Colour of each unit (trace event category) in the chart.
UNIT_COLOURS = {"dma": "#4e79a7", "decompress": "#76b7b2", "mac_array": "#e15759",
                "depthwise": "#f28e2b", "vector": "#59a14f", "config": "#bab0ac",
                "stall": "#eeeeee"}
#: Rows of the chart, top to bottom: (thread name in the trace, label).
ROWS = (("LOAD", "LOAD (DMA in)"), ("COMPUTE", "COMPUTE"), ("STORE", "STORE (DMA out)"))
#: Ops listed in the "compute waits for DMA" table.
TOP_WAITS = 12


def _bars(trace: dict) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """thread name -> category -> [(start us, duration us)] of the trace's complete events."""
    events = trace.get("traceEvents") if isinstance(trace, dict) else None
    if not isinstance(events, list):
        return {}
    names = {e.get("tid"): e.get("args", {}).get("name") for e in events
             if isinstance(e, dict) and e.get("ph") == "M" and e.get("name") == "thread_name"
             and isinstance(e.get("args"), dict)}
    out: dict[str, dict[str, list]] = {}
    for e in events:
        if not (isinstance(e, dict) and e.get("ph") == "X"):
            continue
        ts, dur, row = e.get("ts"), e.get("dur"), names.get(e.get("tid"))
        if not (isinstance(ts, (int, float)) and isinstance(dur, (int, float)) and row):
            continue
        out.setdefault(row, {}).setdefault(str(e.get("cat", "")), []).append((ts, dur))
    return out


def _rows(bars: dict) -> list[tuple[str, str]]:
    """The chart's rows: :data:`ROWS`, or for a multi-core trace (threads "core 1 LOAD" ...)
    one row per queue of each core, core by core."""
    if any(row in bars for row, _ in ROWS):
        return list(ROWS)
    order = [q for q, _ in ROWS]

    def key(name: str):
        parts = name.split()
        core = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0
        return (core, order.index(parts[-1]) if parts[-1] in order else len(order), name)
    return [(name, name) for name in sorted(bars, key=key)]


def chart_rows(trace: dict) -> list[str]:
    """The thread names the timeline chart draws as rows, top to bottom."""
    return [row for row, _ in _rows(_bars(trace))]


def timeline_chart(trace: dict) -> str | None:
    """The timeline as a PNG data URI: one row per queue (of each core), each command a bar
    coloured by unit, idle waits for another queue in light grey; x in microseconds. None when
    the trace has no command events."""
    bars = _bars(trace)
    if not bars:
        return None
    rows = _rows(bars)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from tcc_compiler.report.png import png_data_uri

    fig, ax = plt.subplots(figsize=(12, 0.6 + 0.67 * len(rows)))
    used = set()
    for y, (row, _) in enumerate(rows):
        for cat, spans in sorted(bars.get(row, {}).items()):
            colour = UNIT_COLOURS.get(cat, "#999999")
            ax.broken_barh(spans, (len(rows) - 1 - y - 0.4, 0.8), facecolors=colour,
                           linewidth=0)
            used.add(cat)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for _, label in reversed(rows)], fontsize=8)
    ax.set_xlabel("estimated time (us)")
    ax.legend(handles=[Patch(color=UNIT_COLOURS.get(c, "#999999"), label=c)
                       for c in sorted(used)],
              fontsize=7, ncol=len(used), loc="upper center", bbox_to_anchor=(0.5, 1.25),
              frameon=False)
    return png_data_uri(fig)


def _cycles(v) -> str:
    return f"{v:,}" if isinstance(v, int) else "n/a"


def timeline_section(trace: dict | None, summary: dict | None, clock_hz: float) -> str:
    """HTML of the timeline section: chart, per-queue busy/stall cycles, and the ops whose
    compute waits longest for DMA (report.json ``timeline``)."""
    esc = html.escape
    parts = ["<h2>Estimated timeline</h2>"]
    src = timeline_chart(trace) if isinstance(trace, dict) else None
    if src:
        parts.append(f'<img alt="estimated timeline" src="{src}">')
        parts.append("<p class=note>Each bar is one command on its queue (colour: the unit "
                     "that runs it); grey: the queue waits for a command on another queue. "
                     "Open timeline.json in Perfetto (ui.perfetto.dev) to zoom into "
                     "single commands.</p>")
    else:
        parts.append("<p class=note>No timeline in this folder (timeline.json is missing, as "
                     "from an older tccc, or is not a trace tccc wrote): compile again to get "
                     "the timeline.</p>")
    if not isinstance(summary, dict):
        return "".join(parts)
    queues = summary.get("queues", {})
    rows = []
    for q, label in ROWS:
        e = queues.get(q.lower(), {}) if isinstance(queues, dict) else {}
        stalls = e.get("stall_cycles", {}) if isinstance(e, dict) else {}
        waits = ", ".join(f"{k}: {_cycles(v)}" for k, v in sorted(stalls.items())) or "-"
        rows.append(f"<tr><td>{esc(label)}</td><td class=n>{_cycles(e.get('busy_cycles'))}"
                    f"</td><td>{esc(waits)}</td></tr>")
    parts.append("<table><tr><th>queue</th><th>busy cycles</th><th>idle cycles waiting for"
                 "</th></tr>" + "".join(rows) + "</table>")
    waits = summary.get("compute_waits_for_dma", [])
    if isinstance(waits, list) and waits:
        items = "".join(
            f"<tr><td>{esc(str(w.get('layer')))}</td><td class=n>"
            f"{_cycles(w.get('compute_cycles'))}</td><td class=n>"
            f"{_cycles(w.get('wait_load_cycles'))}</td><td class=n>"
            f"{w.get('wait_load_cycles', 0) / clock_hz * 1e3:.4f}</td></tr>"
            for w in waits[:TOP_WAITS] if isinstance(w, dict))
        parts.append(f"<h3>Where compute waits for DMA (top {min(TOP_WAITS, len(waits))} of "
                     f"{len(waits)} ops)</h3><table><tr><th>op</th><th>compute cycles</th>"
                     f"<th>waiting for LOAD, cycles</th><th>ms</th></tr>{items}</table>")
    return "".join(parts)
