"""The executor finds a conv tile's prepared weights by where their SRAM bytes came from
(tcc_compiler/sim/provenance.py) only while no command has written them since the weight load:
the ranges, the sources, and an executor run whose weight buffer is overwritten between the
load and the tile."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.binfmt import read_cmd_file, read_weight_file, write_cmd_file
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.commands import Access, Space
from tcc_compiler.isa.spec import Region, dram_address
from tcc_compiler.numerics import jit
from tcc_compiler.runtime import load_program
from tcc_compiler.sim import Executor
from tcc_compiler.sim.provenance import Provenance, sram_write_hull, weight_source


def _load(region, off, sram, n, **kw):
    f = dict(dram=dram_address(region, off), sram=sram, run_bytes=n, n1=1, n2=1,
             dram_stride1=0, dram_stride2=0, sram_stride1=0, sram_stride2=0)
    f.update(kw)
    return C.DmaLoad(**f)


def test_ranges_forget_any_overlapping_write():
    p = Provenance()
    p.loaded(100, 200, "a")
    p.loaded(300, 400, "b")
    assert p.source_of(120, 30) == ("a", 20)
    assert p.source_of(190, 20) is None            # runs past the range
    p.written(199, 201)                            # one byte of "a"
    assert p.source_of(120, 30) is None
    assert p.source_of(300, 100) == ("b", 0)
    p.loaded(350, 360, "c")                        # a new load replaces what it overlaps
    assert p.source_of(300, 10) is None and p.source_of(352, 4) == ("c", 2)
    p.written(0, 0)                                # empty write: nothing forgotten
    assert p.source_of(350, 10) == ("c", 0)


def test_weight_sources():
    z = C.DmaLoadZ(dram=dram_address(Region.WEIGHTS, 64), sram=0, src_bytes=10, dst_bytes=40)
    assert weight_source(z) == ("Z", z.dram, 10, 40)
    plain = _load(Region.WEIGHTS, 0, 0, 16, n1=4, sram_stride1=16, dram_stride1=32)
    assert weight_source(plain) is not None
    assert weight_source(_load(Region.ACT, 0, 0, 16)) is None           # not read-only data
    assert weight_source(_load(Region.WEIGHTS, 0, 0, 16, n1=4, sram_stride1=20)) is None
    assert weight_source(_load(Region.WEIGHTS, 0, 0, 16, n1=2, n2=2, sram_stride1=16,
                               sram_stride2=40)) is None                 # a gap between rows
    assert weight_source(C.End()) is None
    acc = [Access(Space.SRAM, 5, 9, False), Access(Space.SRAM, 20, 30, True),
           Access(Space.ACT, 0, 99, True), Access(Space.SRAM, 10, 12, True)]
    assert sram_write_hull(acc) == (10, 30)
    assert sram_write_hull(acc[:1]) is None


def _no_provenance(monkeypatch):
    monkeypatch.setattr(Provenance, "source_of", lambda self, addr, n: None)


def _runs(ex, inputs):
    return [ex.run(x) for x in inputs]


def test_overwritten_weights_are_not_taken_from_their_load(small_folder, monkeypatch):
    # a DMA_LOAD from INPUT overwrites the first conv tile's weights right before the tile:
    # the tile must use those bytes (different for each input), never the prepared form of
    # the DMA_LOAD_Z block that filled the buffer before
    _, out = small_folder
    prog = load_program(out)
    cf = prog.executor.cmd
    wf = read_weight_file((out / "quantized_network.bin").read_bytes())
    cmds = list(cf.commands)
    k = next(i for i, c in enumerate(cmds) if isinstance(c, C.ConvTile))
    cfg = next(c for c in reversed(cmds[:k]) if isinstance(c, C.ConvCfg))
    tile = cmds[k]
    n = tile.oc * cfg.kh * cfg.kw * cfg.cin_g
    assert n <= cf.input_bytes
    assert any(isinstance(c, C.DmaLoadZ) and c.sram <= tile.w_sram < c.sram + c.dst_bytes
               for c in cmds[:k])
    cmds.insert(k, _load(Region.INPUT, 0, tile.w_sram, n))
    mod = read_cmd_file(write_cmd_file(cmds, sram_peak_bytes=cf.sram_peak_bytes,
                                       act_arena_bytes=cf.act_arena_bytes,
                                       input_bytes=cf.input_bytes,
                                       output_bytes=cf.output_bytes, tool_version="t"))
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 256, cf.input_bytes, dtype=np.uint8).tobytes() for _ in range(3)]
    target = prog.executor.target
    ex = Executor(mod, wf, target)
    got = _runs(ex, inputs) + _runs(ex, inputs)
    assert ex._weights._by_source         # the other tiles' weights were found by source
    _no_provenance(monkeypatch)
    want = _runs(Executor(mod, wf, target), inputs)
    assert got == want + want             # stale weights would repeat input 0's bytes


def test_same_outputs_with_and_without_provenance(small_folder, monkeypatch):
    _, out = small_folder
    prog = load_program(out)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(prog.input_shape).astype(np.float32) for _ in range(2)]
    ex = prog.executor
    got = [prog.execute(prog.quantize(x)) for x in xs + xs]
    assert ex._weights._by_source and ex._params._by_source
    _no_provenance(monkeypatch)
    fresh = load_program(out)
    assert got == [fresh.execute(fresh.quantize(x)) for x in xs] * 2


def test_repeat_inorder_runs_reuse_the_sources_of_the_first(small_folder, monkeypatch):
    # provenance is a function of the commands alone: after one complete in-order run, later
    # in-order runs take each tile's sources from it and track nothing, with the same bytes;
    # a random schedule (another order) tracks again
    from tcc_compiler.numerics import int8_gemm

    monkeypatch.setattr(int8_gemm, "MIN_MACS", 0)   # this small net's GEMMs take that route
    _, out = small_folder
    prog = load_program(out)
    ex = prog.executor
    rng = np.random.default_rng(2)
    inputs = [rng.integers(0, 256, ex.cmd.input_bytes, dtype=np.uint8).tobytes()
              for _ in range(3)]
    first = ex.run(inputs[0])
    assert ex._ops._srcs and any(s != (None, None) for s in ex._ops._srcs.values())
    wf = read_weight_file((out / "quantized_network.bin").read_bytes())
    fresh = _runs(Executor(ex.cmd, wf, ex.target), inputs)

    def no_tracking(*args):
        raise AssertionError("provenance tracked on a repeat in-order run")

    monkeypatch.setattr(Provenance, "source_of", no_tracking)
    monkeypatch.setattr(Executor, "_track", no_tracking)
    assert [first] + _runs(ex, inputs) == fresh[:1] + fresh
    # the tiles' operands and accumulator routines are remembered with their sources
    if jit.available() and int8_gemm.int8_session() is not None:
        assert ex._ops.ready and any(r[3] is not None for r in ex._ops.ready.values())
    with pytest.raises(AssertionError, match="provenance tracked"):
        ex.run(inputs[0], schedule="random", seed=3)


def test_a_random_run_does_not_fix_the_sources(small_folder):
    # the sources are remembered from an in-order run only (the order they are a function of)
    _, out = small_folder
    ex = load_program(out).executor
    x = bytes(ex.cmd.input_bytes)
    ex.run(x, schedule="random", seed=1)
    assert not ex._ops._complete and not ex._ops._srcs
    ex.run(x)
    assert ex._ops._complete
