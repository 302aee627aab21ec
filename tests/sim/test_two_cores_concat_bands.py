"""Two NPU cores keeping their rows of a channel concat in their own SRAM, its inputs
written and its slices read in place (schedule/corebands.py, concat members).

On a net with YOLOv8's C2f (a conv's output split in two channel halves, one half through
two convs, all three concatenated and read by a 1x1 conv) and SPPF (a conv's output and two
max pools of it, concatenated) at 28x28, each concat's buffer is banded: the producers of
its channel slices write their rows of them into each core's band, the Split halves and the
concat are read as strided boxes of it, and only each slice's boundary rows cross DRAM. The
program moves fewer DRAM bytes and replays faster than the split without bands, runs
bit-exactly against the loaded program (itself checked against the golden model and ONNX
Runtime), hazard-free in any legal interleaving, and deleting any cross-core wait is a race.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers.two_cores import (assert_every_sem_wait_needed, c2f_net, executor_of,
                               executor_sizes)

from tcc_compiler import api
from tcc_compiler.ir.ops import Op
from tcc_compiler.isa import commands as C
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.schedule.corebands import plan_bands
from tcc_compiler.schedule.cores import lower_spatial
from tcc_compiler.schedule.coretime import replay_cores
from tcc_compiler.schedule.memory import plan_memory
from tcc_compiler.sim.hazards import check_stream
from tcc_compiler.target import load_target

TARGET = load_target().with_sram(256 * 1024)
SHAPE = (1, 16, 28, 28)   # c2f_net's input
BAND_BYTES = 128 * 1024


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """(model path, loaded compiled program, quantized graph, band programs with 1 and 3
    row tiles per share)."""
    d = tmp_path_factory.mktemp("two_cores_concat_bands")
    onnx.save(c2f_net(), d / "m.onnx")
    rng = np.random.default_rng(1)
    calib = [rng.uniform(-2, 2, SHAPE).astype(np.float32) for _ in range(2)]
    m = api.compile(d / "m.onnx", "28x28x16", calibration=calib, cores=2, target=TARGET)
    m.save(d / "out")
    graph = m.artifacts.graph
    progs = [lower_spatial(graph, TARGET, balance=True, band_bytes=BAND_BYTES, band_tiles=k)
             for k in (1, 3)]
    return d / "m.onnx", load_program(d / "out"), graph, progs


def _by_name(graph):
    return {v.name: v for n in graph.nodes for v in n.outputs}


def test_both_concats_banded_with_their_slices(net):
    """Each concat buffer is one band per core (the same rows for all its channels, the
    halo the 3x3 conv and 5x5 pools read); its members are the values ops write into it
    (the first conv's output holding both Split halves, the SiLU conv's output; the 1x1
    conv's and the two pools' outputs), each a channel slice of the band."""
    _, _, graph, _ = net
    mem = plan_memory(graph, TARGET, 0, False, reuse=False)
    b = plan_bands(graph, TARGET, mem, BAND_BYTES)
    v = _by_name(graph)
    assert [m.name for m in b.parts[id(v["cat1"])]] == ["a_silu", "c_silu"]
    assert [m.name for m in b.parts[id(v["s1"])]] == ["a_silu"]
    assert [m.name for m in b.parts[id(v["cat2"])]] == ["c4", "p1", "p2"]
    assert b.halo[id(v["a_silu"])] == ((14, 15), (13, 14))      # the 3x3 conv's halo row
    assert b.halo[id(v["p1"])] == ((14, 16), (12, 14))          # the 5x5 pools' two rows
    assert b.halo[id(v["c_silu"])] == (None, None)   # read by the 1x1 conv only
    assert (b.mems[0].resident(v["cat1"]).rows, b.mems[1].resident(v["cat1"]).rows) == \
        ((0, 15), (13, 28))                          # the band: every reader's rows
    r0, r1 = (m.resident(v["s1"]) for m in b.mems)
    cat = b.mems[0].resident(v["cat1"])
    assert (r0.c0, r0.hwc, r0.rows, r1.rows) == (16, (28, 28, 48), (0, 15), (13, 28))
    assert (r0.sram, cat.c0) == (cat.sram, 0) and r1.sram == r0.sram
    assert b.mems[0].resident(v["c_silu"]).c0 == 32
    for n in graph.nodes:   # every op writing or reading a concat is split by rows
        if n.op in (Op.CONV, Op.MAXPOOL):
            assert id(n) in b.ops, n.name
    with pytest.raises(Exception, match="channel slice"):
        r0.at(0)


def _dram_bytes(prog) -> int:
    return sum(c.run_bytes * c.n1 * c.n2 for c in prog.commands
               if isinstance(c, (C.DmaLoad, C.DmaStore)))


def test_concat_bands_move_fewer_dram_bytes_and_replay_faster(net):
    _, _, graph, progs = net
    plain = lower_spatial(graph, TARGET, balance=True)

    def cycles(p):
        return max(e for _, e in replay_cores(p.commands, TARGET))
    for prog in progs:
        assert _dram_bytes(prog) < 0.5 * _dram_bytes(plain)
        assert cycles(prog) < 0.8 * cycles(plain)   # 38.4k / 35.9k vs 66.5k cycles
        assert any("halo rows of a_silu" in c for c in prog.comments)
        assert any("halo rows of p1" in c for c in prog.comments)
        assert not any("halo rows of c_silu" in c for c in prog.comments)


def test_concat_band_programs_bit_exact_and_hazard_free(net):
    path, loaded, _, progs = net
    rng = np.random.default_rng(5)
    checker = Checker(loaded, path)
    for prog in progs:
        ex = executor_of(prog, TARGET)
        x = rng.uniform(-2, 2, SHAPE).astype(np.float32)
        q = loaded.quantize(x)
        assert ex.run(q, check=True) == loaded.executor.run(q)
        assert checker.check(x, loaded.run(x))["bit_exact"]
        cmds, ranges = list(ex.cmd.commands), ex.cmd.core_ranges()
        assert check_stream(cmds, executor_sizes(ex), ranges) == []


@pytest.mark.parametrize("seeds", [pytest.param(range(2), id="2"),
                                   pytest.param(range(20), id="20", marks=pytest.mark.slow)])
def test_concat_band_programs_random_interleavings(net, seeds):
    _, loaded, _, progs = net
    q = loaded.quantize(np.random.default_rng(2).uniform(-2, 2, SHAPE).astype(np.float32))
    ref = loaded.executor.run(q)
    for prog in progs:
        ex = executor_of(prog, TARGET)
        for seed in seeds:
            assert ex.run(q, schedule="random", seed=seed) == ref, seed


@pytest.mark.parametrize("which", [pytest.param(1, id="3-tiles"),
                                   pytest.param(0, id="1-tile", marks=pytest.mark.slow)])
def test_deleting_a_cross_core_wait_of_the_concat_bands_is_a_race(net, which):
    """Every SEM_WAIT (before a load of a slice's boundary rows the other core stored) is
    needed: without it the hazard checker reports one race between the cores."""
    ex = executor_of(net[3][which], TARGET)
    assert_every_sem_wait_needed(list(ex.cmd.commands), ex.cmd.core_ranges(),
                                 executor_sizes(ex))
