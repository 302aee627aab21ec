"""Concurrent-queue model: legal interleavings stay bit-exact, every missing wait is a hazard.

The expected answers come from an independent oracle written here: the happens-before relation
as graph reachability (networkx) over explicit edges built from the wait semantics of
specs/isa.md, and a brute-force pairwise overlap test of every unordered command pair. The
implementation under test (vector clocks + per-byte shadow memory) shares neither.
"""

from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np
import pytest

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Queue
from tcc_compiler.sim.hazards import HazardError, Ordering, check_stream

WAITS = ("wait_load", "wait_compute", "wait_store")
QUEUES = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    """A compiled ResNet-18 (zoo, 32x32x3 input) loaded from its output folder."""
    from tcc_compiler import api, zoo
    from tcc_compiler.runtime import load_program

    d = tmp_path_factory.mktemp("r18")
    zoo.save("resnet18", d / "r18.onnx", width=32, height=32, channels=3)
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-2, 2, (1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    api.compile(d / "r18.onnx", "32x32x3", calibration=calib).save(d / "out")
    return load_program(d / "out")


def _sizes(prog):
    c = prog.cmd
    return {C.Space.SRAM: prog.executor.target.sram_capacity_bytes, C.Space.ACT: c.act_arena_bytes,
            C.Space.INPUT: c.input_bytes, C.Space.OUTPUT: c.output_bytes,
            C.Space.WEIGHTS: len(prog.weights.data)}


def _oracle_graph(cmds) -> nx.DiGraph:
    """Edges a -> b meaning 'a finishes before b starts', straight from specs/isa.md."""
    g = nx.DiGraph()
    g.add_nodes_from(range(len(cmds)))
    seen = {q: [] for q in QUEUES}
    for j, cmd in enumerate(cmds):
        if cmd.queue not in seen:                      # END waits for everything
            g.add_edges_from((i, j) for q in QUEUES for i in seen[q])
            continue
        if seen[cmd.queue]:
            g.add_edge(seen[cmd.queue][-1], j)         # each queue runs in order
        for q, n in zip(QUEUES, cmd.waits):
            if n != 7 and len(seen[q]) > n:            # <= n of q's earlier commands outstanding
                g.add_edge(seen[q][len(seen[q]) - n - 1], j)
        seen[cmd.queue].append(j)
    return g


def _oracle_conflicts(cmds) -> set[tuple[int, int]]:
    """All pairs (a, b), a < b, not ordered either way, touching a common byte, one writing."""
    regs, accs = C.Registers(), []
    for cmd in cmds:
        accs.append(cmd.accesses(regs))
        regs.update(cmd)
    closure = nx.transitive_closure_dag(_oracle_graph(cmds))
    out = set()
    for b in range(len(cmds)):
        for a in range(b):
            if closure.has_edge(a, b) or not accs[a] or not accs[b]:
                continue
            if any((x.is_write or y.is_write) and x.overlaps(y)
                   for x in accs[a] for y in accs[b]):
                out.add((a, b))
    return out


def _deletions(cmds):
    """Every (command index, wait field) with a wait, i.e. every explicit dependency."""
    return [(j, f) for j, c in enumerate(cmds) for f in WAITS if getattr(c, f) != 7]


def _delete(cmds, j, f):
    out = list(cmds)
    out[j] = dataclasses.replace(cmds[j], **{f: 7})
    return out


def test_ordering_matches_oracle(r18):
    cmds = list(r18.cmd.commands)
    closure = nx.transitive_closure_dag(_oracle_graph(cmds))
    o = Ordering(cmds)
    for b in range(len(cmds)):
        for a in range(b):
            assert o.ordered_before(a, b) == closure.has_edge(a, b), (a, b)


def test_valid_stream_has_no_hazard(r18):
    cmds = list(r18.cmd.commands)
    assert _oracle_conflicts(cmds) == set()
    assert check_stream(cmds, _sizes(r18)) == []


def test_random_interleavings_bit_exact(r18):
    rng = np.random.default_rng(7)
    x = rng.uniform(-2, 2, r18.input_shape).astype(np.float32)
    q = r18.quantize(x)
    ref = r18.executor.run(q)
    from tcc_compiler.quant.golden import run_golden
    from tcc_compiler.ir.text import load_ir

    gold = run_golden(load_ir(r18.folder / "quantized.tir"), x)
    res = r18.decode_outputs(ref)
    for o in r18.manifest["outputs"]:
        assert gold["int:" + o["name"]].tobytes() == res["int:" + o["name"]].tobytes()
    orders = set()
    ordering = r18.executor._ordering()
    for seed in range(12):
        orders.add(tuple(ordering.random_order(seed)))
        assert r18.executor.run(q, schedule="random", seed=seed) == ref, seed
    assert len(orders) == 12          # the seeds really explored different interleavings
    assert all(list(o) != list(range(len(o))) for o in orders)


def _check_deletion(cmds, sizes, j, f):
    """Delete one wait; the checker must report a hazard iff the oracle finds a conflict."""
    mod = _delete(cmds, j, f)
    expected = _oracle_conflicts(mod)
    found = check_stream(mod, sizes)
    if not expected:
        assert found == [], (j, f, found)
        return False
    assert len(found) == 1, (j, f)
    h = found[0]
    assert (h.first, h.second) in expected, (j, f, h)
    msg = h.message()
    assert f"command {h.first} ({cmds[h.first].name})" in msg
    assert f"command {h.second} ({cmds[h.second].name})" in msg
    assert h.space.value in msg
    return True


def test_deleted_dependencies_sample(r18):
    cmds, sizes = list(r18.cmd.commands), _sizes(r18)
    dels = _deletions(cmds)
    rng = np.random.default_rng(3)
    sample = [dels[int(i)] for i in rng.choice(len(dels), size=12, replace=False)]
    for j, f in sample:                       # each: reported iff the oracle finds a conflict
        _check_deletion(cmds, sizes, j, f)


@pytest.mark.slow
def test_deleted_dependencies_all(r18):
    cmds, sizes = list(r18.cmd.commands), _sizes(r18)
    caught = [_check_deletion(cmds, sizes, j, f) for j, f in _deletions(cmds)]
    assert any(caught)       # the rest are waits the oracle shows guard no shared bytes


def test_executor_reports_hazard_in_any_schedule(r18):
    cmds, sizes = list(r18.cmd.commands), _sizes(r18)
    broken = [m for m in (_delete(cmds, j, f) for j, f in _deletions(cmds)[::5])
              if check_stream(m, sizes)][:4]
    assert len(broken) == 4
    ex = r18.executor
    saved = ex.cmd
    q = r18.quantize(np.zeros(r18.input_shape, np.float32))
    try:
        for mod in broken:
            ex.cmd = dataclasses.replace(saved, commands=tuple(mod))
            ex._order_cache = None
            for kw in ({"check": True}, {"schedule": "random", "seed": 1},
                       {"schedule": "random", "seed": 2}):
                with pytest.raises(HazardError,
                                   match=r"hazard: command \d+ \(\w+\) .* command \d+ \(\w+\)"):
                    ex.run(q, **kw)
    finally:
        ex.cmd, ex._order_cache = saved, None


# -- hand-built streams: read of never-written memory, out of bounds, tile without config -------

def _sizes_small():
    return {C.Space.SRAM: 256, C.Space.ACT: 64, C.Space.INPUT: 32, C.Space.OUTPUT: 32,
            C.Space.WEIGHTS: 16}


def _ld(region, off, sram, n, **w):
    from tcc_compiler.isa.spec import dram_address
    return C.DmaLoad(dram_address(region, off), sram, n, 1, 1, 0, 0, 0, 0, **w)


def _st(region, off, sram, n, **w):
    from tcc_compiler.isa.spec import dram_address
    return C.DmaStore(dram_address(region, off), sram, n, 1, 1, 0, 0, 0, 0, **w)


def test_unwritten_read_named():
    from tcc_compiler.isa.spec import Region
    cmds = [_ld(Region.ACT, 0, 0, 16), C.End()]
    with pytest.raises(ExecutionError, match=r"command 0 \(DMA_LOAD\): field dram: reads ACT "
                                             r"byte 0x0 that nothing wrote"):
        check_stream(cmds, _sizes_small())


def test_out_of_bounds_named():
    from tcc_compiler.isa.spec import Region
    cmds = [_ld(Region.INPUT, 0, 250, 16), C.End()]
    with pytest.raises(ExecutionError, match=r"command 0 \(DMA_LOAD\): field sram: SRAM range"):
        check_stream(cmds, _sizes_small())


def test_store_then_load_needs_wait():
    from tcc_compiler.isa.spec import Region
    ok = [_ld(Region.INPUT, 0, 0, 16), _st(Region.ACT, 0, 0, 16, wait_load=0),
          _ld(Region.ACT, 0, 32, 16, wait_store=0), C.End()]
    assert check_stream(ok, _sizes_small()) == []
    bad = ok[:2] + [_ld(Region.ACT, 0, 32, 16), C.End()]
    [h] = check_stream(bad, _sizes_small())
    assert (h.kind, h.first, h.second, h.space) == ("RAW", 1, 2, C.Space.ACT)
    assert (h.start, h.end) == (0, 16)
    war = ok[:2] + [_ld(Region.INPUT, 16, 0, 16), C.End()]   # overwrites what STORE reads
    [h] = check_stream(war, _sizes_small())
    assert (h.kind, h.first, h.second, h.space) == ("WAR", 1, 2, C.Space.SRAM)


def test_tile_without_config_named():
    t = C.PoolTile(0, 64, 4, 4, 1, 2, 2, 0, 0, 0, 0)
    with pytest.raises(ExecutionError, match=r"command 0 \(POOL_TILE\)"):
        check_stream([t, C.End()], _sizes_small())


def test_any_interleaving_reports_the_pair_in_stream_order():
    from tcc_compiler.binfmt import read_cmd_file, write_cmd_file
    from tcc_compiler.isa.spec import Region
    from tcc_compiler.sim import Executor
    from tcc_compiler.target import load_target

    # STORE 1 reads SRAM[0:16]; LOAD 2 overwrites it without waiting for the store (WAR)
    cmds = [_ld(Region.INPUT, 0, 0, 16), _st(Region.OUTPUT, 0, 0, 16, wait_load=0),
            _ld(Region.INPUT, 16, 0, 16), C.End()]
    cf = read_cmd_file(write_cmd_file(cmds, sram_peak_bytes=256, act_arena_bytes=0, input_bytes=32,
                                      output_bytes=16, tool_version="t"))
    ex = Executor(cf, None, load_target().with_sram(256))
    seen = set()
    for seed in range(16):
        seen.add(tuple(ex._ordering().random_order(seed)))
        with pytest.raises(HazardError) as info:
            ex.run(bytes(range(32)), schedule="random", seed=seed)
        h = info.value.hazard
        assert (h.kind, h.first, h.second, h.space, h.start, h.end) == (
            "WAR", 1, 2, C.Space.SRAM, 0, 16), seed
    assert {(0, 1, 2, 3), (0, 2, 1, 3)} <= seen     # both orders of the racing pair ran


@pytest.fixture(scope="module")
def stacked_prefetch():
    """(commands, sizes, comments) of a program with two stacked cross-op weight prefetches
    (schedule/prefetch.py; tests/schedule/test_prefetch.py builds the same)."""
    from helpers.prefetch_net import quantized_prefetch_net

    from tcc_compiler.binfmt import read_weight_file
    from tcc_compiler.binfmt.weightfile import write_weight_file
    from tcc_compiler.schedule.cost import replay
    from tcc_compiler.schedule.lowering import Lowering
    from tcc_compiler.schedule.prefetch import plan_hoist
    from tcc_compiler.target import load_target

    g, _ = quantized_prefetch_net()
    t = load_target().with_sram(512 * 1024)
    lw = Lowering(g, t, 0)
    plain = lw.run()
    spans, last = replay(plain.commands, t), len(plain.layers) - 1
    h4 = plan_hoist(g, lw.mem, plain, spans, t, eager=True, consumer=last)
    h3 = plan_hoist(g, lw.mem, plain, spans, t, eager=True, consumer=last - 1,
                    area_end=h4.area(t)[0])
    prog = Lowering(g, t, 0, hoist=(h4, h3)).run()
    sizes = {C.Space.SRAM: t.sram_capacity_bytes, C.Space.ACT: prog.act_arena_bytes,
             C.Space.INPUT: prog.input_bytes, C.Space.OUTPUT: prog.output_bytes,
             C.Space.WEIGHTS: len(read_weight_file(write_weight_file(prog.weights, "t")).data)}
    return list(prog.commands), sizes, list(prog.comments)


def test_stacked_prefetch_deleted_dependencies(stacked_prefetch):
    """Waits of the consumers' (conv3, conv4) commands, their prefetch loads included (those
    into a never-used area have none), deleted one at a time: the checker reports a hazard
    iff the oracle finds a conflict, and some of those deletions do conflict (a consumer's
    compute reading a prefetched block waits for its load)."""
    cmds, sizes, comments = stacked_prefetch
    assert check_stream(cmds, sizes) == []
    assert any("prefetch" in m for m in comments)
    mine = {j for j, m in enumerate(comments) if m.startswith(("conv3", "conv4"))}
    dels = [(j, f) for j, f in _deletions(cmds) if j in mine]
    reads = [(j, f) for j, f in dels if f == "wait_load" and cmds[j].queue is Queue.COMPUTE]
    rng = np.random.default_rng(5)
    sample = reads + [dels[int(i)] for i in rng.choice(len(dels), size=min(16, len(dels)),
                                                       replace=False)]
    caught = [_check_deletion(cmds, sizes, j, f) for j, f in sample]
    assert any(caught)
