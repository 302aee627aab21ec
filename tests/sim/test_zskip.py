"""A repeat in-order run leaves out the DMA_LOAD_Z copies whose SRAM bytes nothing reads
(tcc_compiler/sim/zskip.py): the analysis, and executor runs with the same bytes as a fresh,
checked executor, also when a command does read a load's bytes."""

from __future__ import annotations

import dataclasses

import numpy as np

from tcc_compiler.binfmt import read_cmd_file, read_weight_file, write_cmd_file
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Region, dram_address
from tcc_compiler.runtime import load_program
from tcc_compiler.sim import Executor
from tcc_compiler.sim.zskip import unread_weight_loads

HANDLED = frozenset({C.DmaLoad, C.DmaStore, C.DmaLoadZ, C.ConvTile, C.PoolTile})


def _z(sram, n):
    return C.DmaLoadZ(dram=dram_address(Region.WEIGHTS, 0), sram=sram, src_bytes=8, dst_bytes=n)


def _dma(cls, region, sram, n, **kw):
    f = dict(dram=dram_address(region, 0), sram=sram, run_bytes=n, n1=1, n2=1,
             dram_stride1=0, dram_stride2=0, sram_stride1=0, sram_stride2=0)
    f.update(kw)
    return cls(**f)


def test_a_load_nothing_reads_is_unread():
    cmds = [_z(0, 100), _z(200, 100), C.End()]
    assert unread_weight_loads(cmds, HANDLED, {}) == {0, 1}


def test_a_read_of_its_bytes_keeps_a_load():
    # a store reads bytes 150..160 of the second load; the first is overwritten before its read
    cmds = [_z(0, 100), _dma(C.DmaLoad, Region.INPUT, 0, 100), _z(100, 100),
            _dma(C.DmaStore, Region.OUTPUT, 0, 160), C.End()]
    assert unread_weight_loads(cmds, HANDLED, {}) == {0}


def test_a_partial_overwrite_keeps_the_rest_of_a_load():
    # bytes 0..50 rewritten; a read of 60..70 still reads the load's bytes
    cmds = [_z(0, 100), _dma(C.DmaLoad, Region.INPUT, 0, 50),
            _dma(C.DmaStore, Region.OUTPUT, 60, 10), C.End()]
    assert unread_weight_loads(cmds, HANDLED, {}) == frozenset()
    cmds[2] = _dma(C.DmaStore, Region.OUTPUT, 10, 30)   # only rewritten bytes read
    assert unread_weight_loads(cmds, HANDLED, {}) == {0}


def test_a_strided_write_is_taken_as_writing_nothing():
    # runs of 10 bytes every 20 leave gaps: the read of the hull keeps the load
    cmds = [_z(0, 100), _dma(C.DmaLoad, Region.INPUT, 0, 10, n1=5, dram_stride1=10,
                             sram_stride1=20),
            _dma(C.DmaStore, Region.OUTPUT, 0, 10), C.End()]
    assert unread_weight_loads(cmds, HANDLED, {}) == frozenset()


def test_reads_after_end_do_not_count():
    cmds = [_z(0, 100), C.End(), _dma(C.DmaStore, Region.OUTPUT, 0, 10)]
    assert unread_weight_loads(cmds, HANDLED, {}) == {0}


def _runs(ex, inputs):
    return [ex.run(x) for x in inputs]


def _inputs(n_bytes: int, n: int = 3) -> list[bytes]:
    rng = np.random.default_rng(4)
    return [rng.integers(0, 256, n_bytes, dtype=np.uint8).tobytes() for _ in range(n)]


def test_repeat_runs_skip_the_unread_loads_with_the_same_bytes(small_folder):
    _, out = small_folder
    prog = load_program(out)
    ex = prog.executor
    inputs = _inputs(ex.cmd.input_bytes)
    got = _runs(ex, inputs) + _runs(ex, inputs)
    loads = [i for i, c in enumerate(ex.cmd.commands) if isinstance(c, C.DmaLoadZ)]
    assert loads and ex._z_unread and ex._z_unread <= set(loads)
    assert ex._z_skip == ex._z_unread   # the last run skipped them
    fresh = Executor(ex.cmd, prog.weights, ex.target)
    want = [fresh.run(x, check=True) for x in inputs]   # every load copied, hazards checked
    assert got == want + want
    ex.run(inputs[0], check=True)   # a checked run skips nothing
    assert ex._z_skip == frozenset()


def test_a_store_of_a_loads_bytes_keeps_that_load(small_folder):
    # a DMA_STORE of the last weight load's SRAM bytes into OUTPUT after the program's own
    # stores: the outputs then hold those weight bytes, so that load must still be copied on
    # every run
    _, out = small_folder
    prog = load_program(out)
    cf = prog.executor.cmd
    wf = read_weight_file((out / "quantized_network.bin").read_bytes())
    cmds = list(cf.commands)
    k = max(i for i, c in enumerate(cmds) if isinstance(c, C.DmaLoadZ))
    z = cmds[k]
    n = min(z.dst_bytes, cf.output_bytes)
    last_store = max(i for i, c in enumerate(cmds) if isinstance(c, C.DmaStore))
    cmds.insert(last_store + 1, _dma(C.DmaStore, Region.OUTPUT, z.sram, n))
    mod = read_cmd_file(write_cmd_file(cmds, sram_peak_bytes=cf.sram_peak_bytes,
                                       act_arena_bytes=cf.act_arena_bytes,
                                       input_bytes=cf.input_bytes,
                                       output_bytes=cf.output_bytes, tool_version="t"))
    inputs = _inputs(cf.input_bytes)
    ex = Executor(mod, wf, prog.executor.target)
    got = _runs(ex, inputs) + _runs(ex, inputs)
    want = [Executor(mod, wf, prog.executor.target).run(x) for x in inputs]
    assert got == want + want
    assert ex._z_unread is not None and k not in ex._z_unread


def test_a_fed_tile_reading_its_weight_bytes_as_its_input_keeps_the_load():
    # a 1x1 conv whose input box is exactly its own weight range (16 pixels x 16 channels =
    # 16 x 16 weights): the caches feed the weights, but the input is still read from the
    # SRAM, so the load that brought those bytes is needed
    cfg = C.ConvCfg(1, 1, 1, 1, 1, 1, 0, 0, 1, 16, 0, 0, 0, -128, 127)
    tile = C.ConvTile(0, 0, 0x400, 0x800, 0, 1, 16, 16, 16, 1, 16, 0, 0, 0, 0)
    (a_in, a_w, a_p, _) = tile.accesses(_regs(cfg))
    assert (a_in.start, a_in.end) == (a_w.start, a_w.end) == (0, 256)
    cmds = [_z(0, 256), _z(0x400, 256), cfg, tile, C.End()]
    fed = {3: frozenset({(0, 256), (0x400, 0x500)})}
    assert unread_weight_loads(cmds, HANDLED, fed) == {1}


def _regs(cfg):
    regs = C.Registers()
    regs.update(cfg)
    return regs


def test_a_tile_whose_input_is_its_own_weight_bytes_gives_the_same_bytes(small_folder):
    # a 3x3 tile (stride 1, pads 1) made to read its own weight range as its input box
    # (9 x oc pixels of cin_g channels = oc x 3 x 3 x cin_g bytes): its weights come from the
    # caches on a repeat run but its input does not, so the load must still be copied
    _, out = small_folder
    prog = load_program(out)
    cf = prog.executor.cmd
    wf = read_weight_file((out / "quantized_network.bin").read_bytes())
    cmds = list(cf.commands)
    regs = C.Registers()
    k = None
    for i, c in enumerate(cmds):
        regs.update(c)
        g = regs.conv
        if (isinstance(c, C.ConvTile) and k is None and (g.kh, g.kw, g.sh, g.sw) == (3, 3, 1, 1)
                and g.group == 1 and c.in_c == g.cin_g and not g.has_shortcut
                and c.pads == (1, 1, 1, 1)):
            k = i
    assert k is not None
    t = cmds[k]
    cmds[k] = dataclasses.replace(t, in_sram=t.w_sram, in_h=9, in_w=t.oc, out_h=9, out_w=t.oc)
    a_in, a_w = _two(cmds, k)
    assert (a_in.start, a_in.end) == (a_w.start, a_w.end)
    mod = read_cmd_file(write_cmd_file(cmds, sram_peak_bytes=cf.sram_peak_bytes,
                                       act_arena_bytes=cf.act_arena_bytes,
                                       input_bytes=cf.input_bytes,
                                       output_bytes=cf.output_bytes, tool_version="t"))
    inputs = _inputs(cf.input_bytes)
    ex = Executor(mod, wf, prog.executor.target)
    got = _runs(ex, inputs) + _runs(ex, inputs)
    want = [Executor(mod, wf, prog.executor.target).run(x) for x in inputs]
    assert got == want + want


def _two(cmds, k):
    """The input and weight accesses of tile ``k`` under the registers before it."""
    regs = C.Registers()
    for c in cmds[:k]:
        regs.update(c)
    return cmds[k].accesses(regs)[:2]
