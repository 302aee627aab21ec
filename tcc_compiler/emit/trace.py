"""``timeline.json``: the estimated command timeline as a Chrome trace-event file.

Format: the Trace Event Format's JSON object form (``{"traceEvents": [...]}``; Google's "Trace
Event Format" document, the format Perfetto (ui.perfetto.dev) and chrome://tracing open).
One process, "NPU (estimated)"; one thread per queue (LOAD, COMPUTE, STORE; a multi-core
program has one per queue of each core, "core 1 LOAD" ..., thread id ``3 * core + 1..3``)
holding a complete
event (``"ph": "X"``) per command, named by its mnemonic, with its unit as the category and
its op, cycles, DRAM bytes and stall in ``args``; a ``wait <QUEUE>`` event fills the time a
queue sat idle waiting for another; each op is one async span (``"ph": "b"/"e"``, category
"op") from its first command's start to its last command's end, on a track of its own since
consecutive ops overlap. Timestamps are microseconds (cycles / ``clock_hz``), estimated by
the cost model (:mod:`tcc_compiler.schedule.timeline`), not measured.
"""

from __future__ import annotations

from tcc_compiler.isa.spec import Queue
from tcc_compiler.schedule.timeline import QUEUES, Span
from tcc_compiler.target import Target

#: Process id of the NPU in the trace (one process).
NPU_PID = 1
#: Thread id of each queue's track.
QUEUE_TID = {Queue.LOAD: 1, Queue.COMPUTE: 2, Queue.STORE: 3}


def _meta(name: str, tid: int | None, value: str, sort: int | None = None) -> list[dict]:
    """Metadata events naming (and ordering) a process or thread."""
    ev = {"name": name, "ph": "M", "pid": NPU_PID, "args": {"name": value}}
    if tid is not None:
        ev["tid"] = tid
    out = [ev]
    if sort is not None:
        out.append({"name": name.replace("_name", "_sort_index"), "ph": "M", "pid": NPU_PID,
                    "tid": tid, "args": {"sort_index": sort}})
    return out


def _op_spans(spans: list[Span]) -> list[tuple[str, int, int]]:
    """(op, first start, last end) of every op, in order of first start."""
    bounds: dict[str, list[int]] = {}
    for s in spans:
        if s.layer and s.queue is not Queue.CONTROL:
            b = bounds.setdefault(s.layer, [s.start, s.end])
            b[0], b[1] = min(b[0], s.start), max(b[1], s.end)
    return sorted(((k, v[0], v[1]) for k, v in bounds.items()), key=lambda x: (x[1], x[0]))


def chrome_trace(spans: list[Span], t: Target, model: str = "") -> dict:
    """The Trace Event Format object for ``spans`` (:func:`schedule.timeline.timeline`).

    Args:
        spans: the program's timeline, stream order. t: the target (``clock_hz`` converts
            cycles to microseconds). model: a label for the trace's metadata.

    Returns:
        ``{"traceEvents": [...], "displayTimeUnit": "ns", "otherData": {...}}``, JSON-ready.
    """
    us = 1e6 / t.clock_hz

    def ts(cycles: int) -> float:
        return round(cycles * us, 4)

    events = _meta("process_name", None, f"NPU (estimated, {t.name})")
    cores = sorted({s.core for s in spans}) or [0]
    for c in cores:
        for q in QUEUES:
            tid = QUEUE_TID[q] + 3 * c
            events += _meta("thread_name", tid, q.name if len(cores) == 1
                            else f"core {c} {q.name}", tid)
    for s in spans:
        if s.queue is Queue.CONTROL:
            continue
        tid = QUEUE_TID[s.queue] + 3 * s.core
        if s.stall:
            events.append({"name": f"wait {s.stalled_on.name}", "cat": "stall", "ph": "X",
                           "pid": NPU_PID, "tid": tid, "ts": ts(s.start - s.stall),
                           "dur": ts(s.stall), "args": {"cycles": s.stall, "cmd": s.index}})
        events.append({"name": s.name, "cat": s.unit, "ph": "X", "pid": NPU_PID, "tid": tid,
                       "ts": ts(s.start), "dur": ts(s.end - s.start),
                       "args": {"cmd": s.index, "op": s.layer, "cycles": s.end - s.start,
                                "dram_bytes": s.dram_bytes}})
    for k, (name, start, end) in enumerate(_op_spans(spans)):
        common = {"name": name, "cat": "op", "pid": NPU_PID, "tid": 0, "id": k}
        events.append({**common, "ph": "b", "ts": ts(start)})
        events.append({**common, "ph": "e", "ts": ts(end)})
    total = max((s.end for s in spans), default=0)
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"model": model, "target": t.name, "clock_hz": t.clock_hz,
                          "estimated_cycles": total,
                          "note": "estimated by tccc's cost model (specs/target.md), not measured"}}
