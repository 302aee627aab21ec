"""Scheduling: tiny SRAM budgets still give bit-exact results (executor == golden model), the
DRAM arena never overlaps live buffers, tiles fit their budget, waits cover every hazard between
concurrent queues, and an impossible budget raises ScheduleError."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcc_compiler.binfmt import read_cmd_file, read_weight_file, write_cmd_file
from tcc_compiler.binfmt.weightfile import write_weight_file
from tcc_compiler.errors import ScheduleError
from tcc_compiler.frontend import import_onnx
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import WAIT_NONE, Queue
from tcc_compiler.quant import collect_ranges, quantize_graph, run_golden
from tcc_compiler.quant.params import quantize_input
from tcc_compiler.schedule import lower, replay
from tcc_compiler.schedule.arena import Buffer, arena_bytes, plan_arena
from tcc_compiler.schedule.tiling import ConvGeom, working_set, plan_channels, plan_conv
from tcc_compiler.sim.executor import Executor
from tcc_compiler.target import load_target

HW = 32


@pytest.fixture(scope="module")
def qgraph(residual_net, run_pipeline):
    """The residual test net, imported, passed, calibrated and quantized; plus test inputs."""
    g = run_pipeline(import_onnx(residual_net(seed=5, hw=HW)))
    r = np.random.default_rng(11)
    xs = [r.standard_normal((1, 3, HW, HW)).astype(np.float32) for _ in range(4)]
    quantize_graph(g, collect_ranges(g, xs))
    return g, xs


def _execute(prog, target, x, g):
    cmd = write_cmd_file(prog.commands, sram_peak_bytes=prog.sram_peak_bytes,
                         act_arena_bytes=prog.act_arena_bytes, input_bytes=prog.input_bytes,
                         output_bytes=prog.output_bytes, tool_version="test")
    wf = read_weight_file(write_weight_file(prog.weights, "t"))
    ex = Executor(read_cmd_file(cmd), wf, target, fill=0xA5)
    q = quantize_input(x, g.inputs[0]).tobytes()
    return ex.run(q + bytes(prog.input_bytes - len(q)))


def _happens_before_violations(cmds: list[C.Command]) -> list[str]:
    """Pairs of commands on different queues that touch overlapping bytes (one writing) while
    the wait fields allow them to run at the same time.

    ``done[j][q]`` = number of leading commands of queue q guaranteed finished when j starts:
    the previous command of j's queue has finished (in-order queue) with everything it waited
    for, and each wait n on queue p finishes p's commands up to (dispatched - 1 - n).
    """
    queues = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)
    per_q: dict[Queue, list[int]] = {q: [] for q in queues}
    done: list[dict[Queue, int]] = []
    accs: list[list[C.Access]] = []
    regs = C.Registers()
    bad = []
    for j, cmd in enumerate(cmds):
        a = cmd.accesses(regs)
        regs.update(cmd)
        accs.append(a)
        d = {q: 0 for q in queues}
        if cmd.queue not in per_q:           # END: waits for everything by definition
            done.append(d)
            continue
        own = per_q[cmd.queue]
        if own:
            prev = own[-1]
            d = {q: max(d[q], done[prev][q]) for q in queues}
            d[cmd.queue] = len(own)
        for q, n in zip(queues, cmd.waits):
            if n == WAIT_NONE:
                continue
            k = len(per_q[q]) - 1 - n        # command index of q that must have finished
            if k >= 0:
                m = per_q[q][k]
                d = {p: max(d[p], done[m][p]) for p in queues}
                d[q] = max(d[q], k + 1)
        done.append(d)
        for q in queues:
            if q is cmd.queue:
                continue
            for i in per_q[q][d[q]:]:        # commands of q that may still be running
                for x in accs[i]:
                    for y in a:
                        if x.space is y.space and x.start < y.end and y.start < x.end \
                                and (x.is_write or y.is_write):
                            bad.append(f"#{i} {cmds[i].name} vs #{j} {cmd.name} on "
                                       f"{x.space.value}[{max(x.start, y.start)}:"
                                       f"{min(x.end, y.end)}]")
        own.append(j)
    return bad


@pytest.mark.parametrize("sram", [4096, 8192, 65536, None])
def test_tiny_sram_bit_exact(qgraph, sram):
    g, xs = qgraph
    t = load_target()
    if sram:
        t = t.with_sram(sram)
    prog = lower(g, t)
    assert prog.sram_peak_bytes <= t.sram_capacity_bytes
    assert all(info.sram_peak_bytes <= t.sram_capacity_bytes for info in prog.layers)
    if sram == 4096:   # a tiny SRAM forces tiling of the stem conv at least
        assert max(info.tiles for info in prog.layers) > 1
    assert _happens_before_violations(prog.commands) == []
    for x in xs[:2]:
        out = _execute(prog, t, x, g)
        gold = run_golden(g, x)
        for o in prog.outputs:
            dt = np.int8 if o.dtype == "int8" else np.int32
            got = np.frombuffer(out, dtype=dt, count=int(np.prod(o.hwc)), offset=o.offset)
            np.testing.assert_array_equal(got, gold["int:" + o.name].reshape(-1))


def test_smaller_sram_means_more_tiles(qgraph):
    g, _ = qgraph
    t = load_target()
    small, big = lower(g, t.with_sram(4096)), lower(g, t)
    assert sum(i.tiles for i in small.layers) > sum(i.tiles for i in big.layers)
    # more tiles cost more modelled cycles
    assert replay(small.commands, t)[-1][1] > replay(big.commands, t)[-1][1]


def test_lowering_is_deterministic(qgraph):
    g, _ = qgraph
    t = load_target().with_sram(8192)
    a, b = lower(g, t), lower(g, t)
    assert a.commands == b.commands and a.weights == b.weights


def test_nothing_fits_raises_schedule_error(qgraph):
    g, _ = qgraph
    with pytest.raises(ScheduleError, match="SRAM"):
        lower(g, load_target().with_sram(256))


def test_plan_conv_nothing_fits():
    geom = ConvGeom(8, 8, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1), 1)
    with pytest.raises(ScheduleError, match="no tile fits"):
        plan_conv(geom, load_target(), 512)
    with pytest.raises(ScheduleError):
        plan_channels(100, 8, 150)


geoms = st.builds(
    lambda h, w, c, k, s, d, p, g_, o_per, ob: (h, w, c * g_, k, s, d, p, g_, o_per * g_, ob),
    st.integers(1, 20), st.integers(1, 20), st.integers(1, 24), st.integers(1, 5),
    st.integers(1, 3), st.integers(1, 2), st.integers(0, 2), st.sampled_from([1, 1, 2, 4]),
    st.integers(1, 24), st.sampled_from([1, 4]))


@settings(max_examples=150, deadline=None)
@given(geoms, st.integers(1024, 1 << 17))
def test_conv_tile_working_set_within_budget(geom, budget):
    h, w, c, k, s, d, p, group, o, ob = geom
    eh = (k - 1) * d + 1
    oh, ow = (h + 2 * p - eh) // s + 1, (w + 2 * p - eh) // s + 1
    if oh < 1 or ow < 1:
        return
    g = ConvGeom(h, w, c, oh, ow, o, k, k, s, s, d, d, (p, p, p, p), group, out_elem_bytes=ob)
    t = load_target()
    try:
        plan = plan_conv(g, t, budget)
    except ScheduleError:
        # refusing is only allowed when the 1x1-pixel tile over all channels does not fit
        # (that tile is always a candidate, whatever the channel-block granularity)
        assert working_set(g, 1, 1, o, 1, t.sram_align_bytes) > budget
        with pytest.raises(ScheduleError):   # and a smaller budget fails too
            plan_conv(g, t, budget // 2)
        return
    nb = -(-o // plan.ocb)
    assert plan.sram_peak_bytes == working_set(g, plan.rows, plan.cols, plan.ocb, nb,
                                           t.sram_align_bytes, wbufs=plan.wbufs)
    assert plan.sram_peak_bytes <= budget
    assert 1 <= plan.rows <= oh and 1 <= plan.cols <= ow and 1 <= plan.ocb <= o
    if group > 1:
        assert plan.ocb % g.og == 0          # tiles hold whole groups


buffers = st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 30), st.integers(0, 10)),
                   min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(buffers, st.sampled_from([1, 16, 64]))
def test_plan_arena_never_overlaps_live_buffers(specs, align):
    bufs = [Buffer(f"b{i}", size, first, first + span)
            for i, (size, first, span) in enumerate(specs)]
    total = plan_arena(bufs, align)
    assert total % align == 0
    for b in bufs:
        assert b.offset >= 0 and b.offset % align == 0 and b.offset + b.size_bytes <= total
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            live_together = not (a.last < b.first or b.last < a.first)
            if live_together:
                assert a.offset + a.size_bytes <= b.offset or b.offset + b.size_bytes <= \
                    a.offset, (a, b)
    # never worse than giving every buffer its own space
    assert total <= sum(-(-b.size_bytes // align) * align for b in bufs)


@settings(max_examples=100, deadline=None)
@given(buffers, st.sampled_from([1, 16, 64]))
def test_memoised_arena_size_is_plan_arenas(specs, align):
    """arena_bytes (the resident-zone planner's memoised trial) is plan_arena's size, asked
    once or again."""
    bufs = tuple((f"b{i}", size, first, first + span)
                 for i, (size, first, span) in enumerate(specs))
    want = plan_arena([Buffer(*b) for b in bufs], align)
    assert arena_bytes(bufs, align) == want
    assert arena_bytes(bufs, align) == want


def test_plan_arena_reuses_dead_memory():
    bufs = [Buffer("a", 100, 0, 1), Buffer("b", 100, 2, 3), Buffer("c", 50, 1, 2)]
    total = plan_arena(bufs, 1)
    assert bufs[0].offset == bufs[1].offset       # a dies before b is born
    assert total == 150


def test_activation_arena_respects_liveness(qgraph):
    """In the lowered program, DRAM tensors whose lifetimes overlap never share bytes."""
    g, _ = qgraph
    prog = lower(g, load_target().with_sram(8192))
    assert prog.act_arena_bytes > 0
    # replay the stream: every command that reads ACT reads bytes some earlier command wrote
    written = np.zeros(prog.act_arena_bytes, bool)
    regs = C.Registers()
    for cmd in prog.commands:
        for acc in cmd.accesses(regs):
            for a, b in acc.runs() if acc.space is C.Space.ACT else ():
                if acc.is_write:
                    written[a:b] = True
                else:
                    assert written[a:b].all(), cmd
        regs.update(cmd)


def test_hazard_checker_catches_missing_waits(qgraph):
    """The wait checker above is not vacuous: dropping every wait exposes hazards."""
    import dataclasses
    g, _ = qgraph
    prog = lower(g, load_target().with_sram(8192))
    stripped = [dataclasses.replace(c, wait_load=WAIT_NONE, wait_compute=WAIT_NONE,
                                    wait_store=WAIT_NONE) for c in prog.commands]
    assert len(_happens_before_violations(stripped)) > 10


@pytest.mark.parametrize("sram", [8192, None])
def test_one_load_per_weight_block(qgraph, sram):
    """Every conv's weights and parameter records arrive in one load per block (merged
    blocks, specs/weights.md): as many weight loads as the weight file has blocks, and every
    CONV_TILE's records sit right after the block's weights it reads."""
    from tcc_compiler.isa.wcodec import LayerKind, channel_blocks
    from tcc_compiler.schedule.program import SLOT_PARAMS, SLOT_WEIGHTS

    g, _ = qgraph
    t = load_target() if sram is None else load_target().with_sram(sram)
    prog = lower(g, t)
    convs = [e for e in prog.weights.layers if e.kind in (LayerKind.CONV, LayerKind.FC)]
    assert convs and all(e.merged for e in convs)
    blocks = sum(len(channel_blocks(e.out_channels, e.block_channels)) for e in convs)
    slots = [s for c, s in zip(prog.commands, prog.slots) if c.queue is Queue.LOAD]
    assert slots.count(SLOT_PARAMS) == 0    # no separate parameter loads (no LUT here)
    assert slots.count(SLOT_WEIGHTS) >= blocks   # a block re-loaded per spatial tile counts
    regs = C.Registers()
    for c in prog.commands:
        if isinstance(c, C.ConvTile):
            cfg = regs.conv
            assert c.p_sram == c.w_sram + c.oc * cfg.kh * cfg.kw * cfg.cin_g
        regs.update(c)
