"""Weight compression ahead of the lowering (isa/wcodec.BlockCompressor.prefetch,
isa/wlayout.prefetch_merged, schedule/precompress.py): a prefetched block gives its own stream
(never another block's), a block under way is waited for and not compressed again, one not
started yet is taken back and compressed by the caller, and a layout or a schedule search is
byte for byte the one made without compressing ahead, whether the prediction was right or
wrong."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from helpers.prefetch_net import quantized_prefetch_net

from tcc_compiler.binfmt import WeightFileBuilder
from tcc_compiler.emit.binaries import encode_binaries
from tcc_compiler.isa import spec, wcodec, wlayout
from tcc_compiler.isa.wcodec import BlockCompressor, channel_blocks, deflate
import tcc_compiler.schedule.search as schedule_search
from tcc_compiler.schedule import handover, lower, precompress, zones
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.target import load_target


def _raw(seed: int, n: int = 4096) -> bytes:
    r = np.random.default_rng(seed)
    return np.clip(np.round(r.standard_normal(n) * 20), -127, 127).astype(np.int8).tobytes()


def _layer(seed: int, o: int = 12, per: int = 300) -> tuple[bytes, bytes]:
    r = np.random.default_rng(seed)
    p = spec.pack_conv_params(r.integers(-1000, 1000, o), r.integers(1, 2**30, o),
                              np.full(o, 20))
    return _raw(seed, o * per), p


class _Gate:
    """wcodec.deflate as the background threads call it, each call held until released
    (``hold`` calls block), counting every call and the thread that made it."""

    def __init__(self, monkeypatch, hold: int):
        self.calls: list[tuple[bytes, int, str]] = []
        self.started = threading.Semaphore(0)
        self.finished = threading.Semaphore(0)
        self.release = threading.Event()
        self.hold = hold
        self.lock = threading.Lock()
        real = wcodec.deflate

        def gated(raw, split=0):
            with self.lock:
                self.calls.append((raw, split, threading.current_thread().name))
                held = self.hold > 0
                self.hold -= held
            if held:
                self.started.release()
                self.release.wait()
            try:
                return real(raw, split)
            finally:
                self.finished.release()

        monkeypatch.setattr(wcodec, "deflate", gated)


def test_prefetched_blocks_give_their_own_streams(monkeypatch):
    a, b = _raw(1), _raw(2)
    gate = _Gate(monkeypatch, hold=0)
    comp = BlockCompressor()
    assert comp.prefetch([a, b, a], [0, 0, 700]) == 3
    assert comp.prefetch([a], [0]) == 0   # under way or made: not started again
    for _ in range(3):   # all made on the background threads before any is asked for
        gate.finished.acquire()
    assert all(c[2].startswith("tccc-deflate") for c in gate.calls)
    got = comp.deflate_many([b, a, a], [0, 700, 0])
    want = [deflate(b), deflate(a, 700), deflate(a)]
    assert want[1] != want[2]   # the split is part of the key: a mix-up would show
    assert got == want
    assert comp.deflate(a) == want[2] and comp.deflate(a, 700) == want[1]
    comp.close()


def test_a_block_under_way_is_waited_for_not_compressed_again(monkeypatch):
    a = _raw(3)
    gate = _Gate(monkeypatch, hold=1)
    comp = BlockCompressor()
    comp.prefetch([a])
    gate.started.acquire()   # the background thread holds a's compression
    gate.release.set()
    assert comp.deflate(a) == deflate(a)
    assert [c[:2] for c in gate.calls] == [(a, 0)]
    assert gate.calls[0][2].startswith("tccc-deflate")
    comp.close()


def _busy(monkeypatch, seed: int, queued: list[bytes]):
    """(gate, compressor, busy blocks): one block per background thread prefetched and held
    there by the gate, then ``queued`` prefetched behind them (not started)."""
    workers = os.cpu_count() or 1
    busy = [_raw(seed + i, 512) for i in range(workers)]
    gate = _Gate(monkeypatch, hold=workers)
    comp = BlockCompressor()
    comp.prefetch(busy + queued)
    for _ in busy:   # every background thread holds one of ``busy``: ``queued`` waits
        gate.started.acquire()
    return gate, comp, busy


def test_a_block_not_started_is_taken_back_by_the_caller(monkeypatch):
    queued = _raw(99)
    gate, comp, busy = _busy(monkeypatch, 10, [queued])
    try:
        assert comp.deflate_many([queued]) == [deflate(queued)]   # would hang if waited for
    finally:
        gate.release.set()
    mine = [c for c in gate.calls if c[0] == queued]
    assert len(mine) == 1 and not mine[0][2].startswith("tccc-deflate")
    assert comp.deflate_many(busy) == [deflate(r) for r in busy]
    assert len(gate.calls) == len(busy) + 1
    comp.close()


def test_close_drops_queued_blocks_and_the_compressor_stays_usable(monkeypatch):
    queued = _raw(98)
    gate, comp, _ = _busy(monkeypatch, 20, [queued])
    comp.close()   # ``queued`` dropped before it started
    gate.release.set()
    for t in threading.enumerate():   # the threads end once the held blocks are done: a
        if t.name.startswith("tccc-deflate"):   # ``queued`` not dropped would run by then
            t.join(timeout=30)
    assert all(c[0] != queued for c in gate.calls)
    assert comp.deflate(queued) == deflate(queued)
    assert comp.prefetch([_raw(97)]) == 1   # new background threads
    assert comp.deflate(_raw(97)) == deflate(_raw(97))
    comp.close()


def test_drop_queued_drops_only_the_blocks_not_started(monkeypatch):
    queued = [_raw(96), _raw(95)]
    gate, comp, busy = _busy(monkeypatch, 30, queued)
    assert comp.drop_queued() == 2
    assert comp.prefetch(queued[1:]) == 1   # a newer prediction: queued again
    gate.release.set()
    assert comp.deflate_many(busy + queued) == [deflate(r) for r in busy + queued]
    assert sorted(len(c[0]) for c in gate.calls) == sorted(len(r) for r in busy + queued)
    assert len({c[0] for c in gate.calls}) == len(gate.calls)   # none compressed twice
    comp.close()


@pytest.mark.parametrize("ahead", [5, 3])   # predicted right, predicted wrong
def test_layout_is_the_same_whatever_was_compressed_ahead(monkeypatch, ahead):
    w, p = _layer(4)
    fresh = WeightFileBuilder(BlockCompressor())
    fresh.add_layer("conv", 0, w, p, block_channels=5, merged=True)
    calls = []   # every compression, on any thread (a block taken back runs on the caller's)
    real = wcodec.deflate
    monkeypatch.setattr(wcodec, "deflate", lambda *a: calls.append(a) or real(*a))
    comp = BlockCompressor()
    assert wlayout.prefetch_merged(comp, w, p, ahead) == len(channel_blocks(12, ahead))
    b = WeightFileBuilder(comp)
    b.add_layer("conv", 0, w, p, block_channels=5, merged=True)
    comp.close()
    assert b.build("t") == fresh.build("t")
    # no block compressed twice, every block the builder lays out compressed; predicted
    # right, those are all the prefetched ones (a wrong prediction's blocks not started by
    # close() are dropped)
    own = wcodec.blob_chunks(wlayout.merge_blocks(w, p, 12, 5), 12, 5, len(w) // 12)
    assert len(calls) == len(set(calls)) and set(zip(*own)) <= set(calls)
    if ahead == 5:
        assert len(calls) == len(channel_blocks(12, 5))
    assert wlayout.prefetch_merged(comp, w, p, 5) == 0   # the layer's blob is made


def test_a_prefetched_blobs_blocks_are_sliced_once_and_handed_to_its_encode(monkeypatch):
    """The blocks of a prefetched merged blob are kept (BlockCompressor.parts): a second
    prefetch and the layer's encode take the same bytes objects (no slicing, no hashing of
    their bytes again), the encode consumes the entry, and the layout is unchanged."""
    w, p = _layer(7)
    fresh = WeightFileBuilder(BlockCompressor())
    fresh.add_layer("conv", 0, w, p, block_channels=5, merged=True)
    comp = BlockCompressor()
    assert wlayout.prefetch_merged(comp, w, p, 5) == len(channel_blocks(12, 5))
    (kept,) = comp.parts.values()
    sliced = []
    real = wcodec._blob_parts
    monkeypatch.setattr(wcodec, "_blob_parts", lambda *a: sliced.append(a) or real(*a))
    assert wlayout.prefetch_merged(comp, w, p, 5) == 0   # all started: nothing queued again
    chunks = wcodec.blob_chunks(comp.merged_raw[(w, p, 12, 5)], 12, 5, len(w) // 12, comp)
    assert all(a is b for a, b in zip(chunks[0], kept[1]))
    b = WeightFileBuilder(comp)
    b.add_layer("conv", 0, w, p, block_channels=5, merged=True)
    comp.close()
    assert not sliced and not comp.parts
    assert b.build("t") == fresh.build("t")


@pytest.fixture(scope="module")
def net():
    g, _ = quantized_prefetch_net(512, (256, 512))
    return g, load_target().with_sram(512 * 1024)


def test_predicted_blocks_are_the_lowerings(net):
    g, t = net
    comp = BlockCompressor()
    lw = Lowering(g, t, 0, comp, memo={})
    prog = lw.run()
    pred = {n.name: bc for n, _, bc in precompress.predicted_blocks(g, t, lw.mem)}
    laid = {li.name: li.block_channels for li in prog.weights.layers}
    assert pred and len(pred) == sum(1 for n in g.nodes if n.op.name in ("CONV", "FC"))
    assert pred == {k: laid[k] for k in pred}
    comp.close()


@pytest.mark.parametrize("cascade", [False, True])   # the 7x7 depthwise conv alone / chained
def test_predicted_blocks_cover_chains_and_split_depthwise_convs(cascade):
    """A cascaded chain's convs (one block each) and a depthwise conv cut into kernel parts
    are predicted with the very bytes the lowering lays out: after compressing ahead, the
    lowering takes every layer's merged blob from the prediction (none merged again)."""
    from schedule.test_cascade_resident import SRAM
    from e2e.test_depthwise import inverted_residual
    from tcc_compiler.frontend import import_onnx
    from tcc_compiler.passes import PassManager, default_pipeline
    from tcc_compiler.quant import collect_ranges, quantize_graph
    from tcc_compiler.schedule.geom import conv_geom
    from tcc_compiler.schedule.memory import plan_memory
    from tcc_compiler.schedule.tiling import depthwise_split

    g = PassManager(default_pipeline()).run(
        import_onnx(inverted_residual(16, (32, 32), 6, 7, 1, (3, 3, 3, 3), 3)))
    r = np.random.default_rng(1)
    quantize_graph(g, collect_ranges(g, [r.uniform(-2, 2, (1, 16, 32, 32)).astype(np.float32)
                                         for _ in range(2)]))
    t = load_target().with_sram(SRAM)
    mem = plan_memory(g, t, 0, cascade)
    assert [len(ch.nodes) for ch in mem.chains.values()] == ([3] if cascade else [])
    assert any(depthwise_split(conv_geom(n, t), t) for n in g.nodes if n.op.name == "CONV")
    comp = BlockCompressor()
    memo: dict = {}
    assert precompress.precompress(g, t, [mem], comp, memo) > 0
    pred = {n.name: bc for n, _, bc in precompress.predicted_blocks(g, t, mem)}
    prog = Lowering(g, t, 0, comp, cascade=cascade, mem=mem, memo=memo).run()
    comp.close()
    laid = {li.name: li.block_channels for li in prog.weights.layers
            if li.kind is not wcodec.LayerKind.LUT}
    assert pred == laid and len(laid) == 3
    assert comp.merged_raw == {}   # every predicted blob taken by the layout, none left


def test_search_gives_the_same_program_with_and_without_compressing_ahead(net, monkeypatch):
    from tcc_compiler.schedule import hoistsearch

    g, t = net
    started, ahead = [], []
    real, real_cons = precompress.precompress, precompress.precompress_consumers
    users = (zones, schedule_search, handover)
    for m in users:
        monkeypatch.setattr(m, "precompress", lambda *a, **k: started.append(real(*a, **k)))
    monkeypatch.setattr(hoistsearch, "precompress_consumers",
                        lambda *a, **k: ahead.append(real_cons(*a, **k)))
    with_ahead = encode_binaries(lower(g, t, compress_weights=True), "t")
    assert len(started) >= 2 and started[0] > 0   # the first plan's, the finalists'
    assert ahead   # each prefetch round's consumers (here already made by the first plan's)
    for m in users:
        monkeypatch.setattr(m, "precompress", lambda *a, **k: 0)
    monkeypatch.setattr(hoistsearch, "precompress_consumers", lambda *a, **k: 0)
    without = encode_binaries(lower(g, t, compress_weights=True), "t")
    assert with_ahead == without


def test_a_prefetch_rounds_consumer_blocks_are_predicted(net, monkeypatch):
    """:func:`precompress.precompress_consumers` queues, for each try of a prefetch round,
    the consumer's merged blocks in the blocking the try's lowering lays it out with (its
    tile plan below the prefetch areas, packed or not)."""
    from tcc_compiler.schedule import hoistsearch
    from tcc_compiler.schedule.cost import replay

    g, t = net
    queued, tries = [], []
    real = precompress.prefetch_merged
    monkeypatch.setattr(precompress, "prefetch_merged",
                        lambda c, w, p, bc: queued.append((w, p, bc)) or real(c, w, p, bc))
    real_run = Lowering.run

    def run(self):
        prog = real_run(self)
        if self.hoists:
            tries.append((self.hoists, prog))
        return prog

    monkeypatch.setattr(Lowering, "run", run)
    comp, memo = BlockCompressor(), {}
    lw = Lowering(g, t, 0, comp, memo=memo, record=True)
    plain = lw.run()
    hoistsearch.add_hoists(g, t, comp, lw, plain, max(e for _, e in replay(plain.commands, t)),
                           memo)
    comp.close()
    assert tries
    for hoists, prog in tries:   # each try's consumers: laid out as predicted
        for h in hoists:
            li = next(x for x in prog.weights.layers if x.name == h.consumer)
            assert (li.block_channels, li.out_channels) in {
                (bc, len(p) // spec.PARAM_RECORD_BYTES) for w, p, bc in queued}


def test_a_prefetched_layer_is_merged_once(monkeypatch):
    w, p = _layer(5)
    merges = []
    real = wlayout.merge_blocks
    monkeypatch.setattr(wlayout, "merge_blocks", lambda *a: merges.append(a[3]) or real(*a))
    comp = BlockCompressor()
    wlayout.prefetch_merged(comp, w, p, 5)
    wlayout.prefetch_merged(comp, w, p, 3)   # a wrong prediction besides
    b = WeightFileBuilder(comp)
    b.add_layer("conv", 0, w, p, block_channels=5, merged=True)
    comp.close()
    assert merges == [5, 3]   # the builder took the prefetch's merged blob
    fresh = WeightFileBuilder(BlockCompressor())
    fresh.add_layer("conv", 0, w, p, block_channels=5, merged=True)
    assert b.build("t") == fresh.build("t")


def test_weight_layout_joins_its_region_when_read():
    w, p = _layer(6)
    b = wlayout.WeightLayoutBuilder(BlockCompressor())
    b.add_layer("a", 0, w, p, block_channels=5, merged=True)
    b.add_layer("b", 0, w[:1200], p[:64], block_channels=2)
    lay = b.build()
    assert "data" not in vars(lay)   # not joined yet
    assert lay.data == b"".join(lay.pieces) and len(lay.data) % 64 == 0
    assert lay.data is lay.data   # joined once
    again = b.build()
    assert again == lay and hash(again) == hash(lay)
    other = wlayout.WeightLayoutBuilder(None)
    other.add_layer("a", 0, w, p, block_channels=5, merged=True)
    assert other.build() != lay and other.build() != "not a layout"


@pytest.mark.parametrize("zone_kb, gain", [(0, True), (256, False)])
def test_the_handovers_coarse_blocks_start_at_the_prefetch_rounds_first_gain(monkeypatch,
                                                                             zone_kb, gain):
    from tcc_compiler.schedule import hoistsearch
    from tcc_compiler.schedule.cost import replay

    g, _ = quantized_prefetch_net(512, (512, 1024))   # (tests/schedule/test_handover.py's)
    t = load_target().with_sram(768 * 1024)
    events = []
    monkeypatch.setattr(hoistsearch, "compress_ahead", lambda *a: events.append(("ahead", a)))
    real_handed = hoistsearch.handed
    monkeypatch.setattr(hoistsearch, "handed", lambda *a: events.append(
        ("handed", a)) or real_handed(*a))
    memo: dict = {}
    lw = Lowering(g, t, zone_kb * 1024, None, memo=memo, record=True)
    plain = lw.run()
    cycles = max(e for _, e in replay(plain.commands, t))
    got = hoistsearch.add_hoists(g, t, None, lw, plain, cycles, memo)
    assert (got[0] < cycles) is gain
    if not gain:   # no try faster: nothing compressed ahead, no handover
        assert events == []
        return
    # once, at the first faster try, for the consumer the handover then takes, before it
    assert [e[0] for e in events] == ["ahead", "handed"]
    assert events[0][1][-1] == events[1][1][5][2][0].consumer == got[2][0].consumer
    assert events[0][1][3] is lw and events[0][1][4] is memo
