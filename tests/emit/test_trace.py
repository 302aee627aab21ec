"""timeline.json: a Trace Event Format file (the JSON object form Perfetto and chrome://tracing
open) holding every command of the program once, per queue, in time order."""

from __future__ import annotations

import json

from tcc_compiler.emit.trace import QUEUE_TID
from tcc_compiler.isa.spec import Queue
from tcc_compiler.runtime import load_program


def _strict(text: str):
    def bad(tok):
        raise ValueError(f"non-standard JSON token {tok}")
    return json.loads(text, parse_constant=bad)


def test_trace_has_every_command_once_per_queue_in_time_order(small_folder):
    _, folder = small_folder
    trace = _strict((folder / "timeline.json").read_text())
    report = json.loads((folder / "report.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    events = trace["traceEvents"]
    threads = {e["tid"]: e["args"]["name"] for e in events
               if e["ph"] == "M" and e["name"] == "thread_name"}
    assert threads == {QUEUE_TID[q]: q.name for q in (Queue.LOAD, Queue.COMPUTE, Queue.STORE)}
    cmds = [e for e in events if e["ph"] == "X" and e["cat"] != "stall"]
    n = len(load_program(folder).cmd.commands)
    assert sorted(e["args"]["cmd"] for e in cmds) == list(range(n - 1))   # all but END
    for tid in threads:   # complete events on one thread must not overlap (they nest in a UI)
        mine = sorted((e for e in events if e["ph"] == "X" and e["tid"] == tid),
                      key=lambda e: e["ts"])
        for a, b in zip(mine, mine[1:]):
            assert a["ts"] + a["dur"] <= b["ts"] + 1e-3, (a, b)
    us = 1e6 / manifest["target"]["clock_hz"]
    last = max(e["ts"] + e["dur"] for e in cmds)
    assert abs(last - report["estimated_cycles"] * us) < 1e-2
    assert sum(e["args"]["cycles"] for e in cmds) == sum(
        q["busy_cycles"] for q in report["timeline"]["queues"].values())


def test_every_op_is_one_async_span(small_folder):
    _, folder = small_folder
    events = json.loads((folder / "timeline.json").read_text())["traceEvents"]
    report = json.loads((folder / "report.json").read_text())
    begins = {e["id"]: e for e in events if e["ph"] == "b"}
    ends = {e["id"]: e for e in events if e["ph"] == "e"}
    assert begins.keys() == ends.keys()
    assert {e["name"] for e in begins.values()} == {li["name"] for li in report["layers"]}
    assert all(ends[k]["ts"] >= b["ts"] for k, b in begins.items())
