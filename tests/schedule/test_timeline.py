"""schedule/timeline.py: the estimated timeline is the cost model's replay, with every
command's unit, op and stall, and its summary accounts for every cycle."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tcc_compiler import api, zoo
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Queue
from tcc_compiler.schedule import replay
from tcc_compiler.schedule.cost import dma_cycles
from tcc_compiler.schedule.program import LayerInfo
from tcc_compiler.schedule.timeline import summary, timeline
from tcc_compiler.target import load_target


@pytest.fixture(scope="module")
def mobilenet():
    """MobileNetV2 (zoo) at 32x32x3: MAC-array, depthwise, vector and DMA commands."""
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)
    cm = api.compile(zoo.build("mobilenet-v2", 32, 32), (32, 32, 3), calibration=[x])
    return cm.artifacts, cm.report


def test_timeline_is_the_replay_with_units_ops_and_stalls(mobilenet):
    art, report = mobilenet
    spans = timeline(art.program, art.target)
    assert [(s.start, s.end) for s in spans] == replay(art.program.commands, art.target)
    assert {"mac_array", "depthwise", "vector", "dma"} <= {s.unit for s in spans}
    assert all(s.layer for s in spans if s.queue is not Queue.CONTROL)
    last_end: dict[Queue, int] = {}
    for s in spans:
        if s.queue is Queue.CONTROL:
            continue
        free = last_end.get(s.queue, 0)
        assert s.start >= free and s.stall == s.start - free      # in order, stall = idle gap
        if s.stall:   # it waited for a command of another queue that ended exactly then
            assert any(o.queue is s.stalled_on and o.end == s.start for o in spans[:s.index])
        last_end[s.queue] = s.end
    assert report["timeline"] == summary(spans)
    assert report["timeline"]["total_cycles"] == report["estimated_cycles"]


def test_summary_accounts_busy_and_stall_cycles_per_queue(mobilenet):
    art, _ = mobilenet
    spans = timeline(art.program, art.target)
    s = summary(spans)
    for q in (Queue.LOAD, Queue.COMPUTE, Queue.STORE):
        mine = [x for x in spans if x.queue is q]
        entry = s["queues"][q.name.lower()]
        assert entry["busy_cycles"] == sum(x.end - x.start for x in mine)
        # busy + idle-before-each-command = the queue's last end
        assert entry["busy_cycles"] + sum(entry["stall_cycles"].values()) == mine[-1].end
    assert sum(s["units"].values()) == sum(x.end - x.start for x in spans)
    waits = [w["wait_load_cycles"] for w in s["compute_waits_for_dma"]]
    assert waits == sorted(waits, reverse=True) and all(w > 0 for w in waits)


def test_a_compute_command_waiting_for_its_load_is_a_load_stall():
    """Hand-built stream: LOAD 4 KiB, then a conv tile that waits for it (wait_load = 0)."""
    t = load_target()
    load = C.DmaLoad(dram=0, sram=0, run_bytes=4096, n1=1, n2=1, dram_stride1=0,
                     dram_stride2=0, sram_stride1=0, sram_stride2=0)
    cfg = C.ConvCfg(kh=1, kw=1, sh=1, sw=1, dh=1, dw=1, out_mode=0, flags=0, group=1,
                    cin_g=32, zp_in=0, zp_out=0, zp_sc=0, act_lo=-128, act_hi=127)
    tile = C.ConvTile(wait_load=0, in_sram=0, w_sram=0, p_sram=0, out_sram=8192, sc_sram=0,
                      in_h=8, in_w=8, in_c=32, oc=64, out_h=8, out_w=8,
                      pad_t=0, pad_l=0, pad_b=0, pad_r=0)
    prog = SimpleNamespace(commands=[load, cfg, tile], layers=[
        LayerInfo("c", "conv", (), (1, 32, 8, 8), (1, 64, 8, 8), first_cmd=0, end_cmd=3)])
    spans = timeline(prog, t)
    assert spans[0].end == dma_cycles(4096, t) and spans[0].dram_bytes == 4096
    assert spans[2].start == spans[0].end and spans[2].stalled_on is Queue.LOAD
    assert spans[2].stall == spans[0].end - spans[1].end and spans[2].unit == "mac_array"
    assert [s.layer for s in spans] == ["c", "c", "c"]
    assert summary(spans)["compute_waits_for_dma"] == [
        {"layer": "c", "compute_cycles": spans[1].end - spans[1].start + spans[2].end
         - spans[2].start, "wait_load_cycles": spans[2].stall}]
