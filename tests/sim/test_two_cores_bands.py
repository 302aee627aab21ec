"""Two NPU cores keeping their rows of a row-split tensor in their own SRAM
(schedule/corebands.py).

On the YOLO-like test net of tests/sim/test_two_cores_ops.py (convs, a max pool, an add, a
sigmoid and a multiply at 28x28, then a downsample, a resize and a concat copy), the band
lowering keeps each core's half of the 28x28 tensors (plus the halo rows its readers need)
in its SRAM: the producer core stores only the boundary rows the other core needs, the
reader core loads them. It moves fewer DRAM bytes and replays faster than the split without
bands, runs bit-exactly against the loaded program (itself checked against the golden
model), hazard-free in any legal interleaving, and deleting any cross-core wait is a race.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers.two_cores import (assert_every_sem_wait_needed, executor_of,
                               executor_sizes, ops_net)

from tcc_compiler import api
from tcc_compiler.isa import commands as C
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.schedule.corebands import plan_bands
from tcc_compiler.schedule.cores import lower_spatial
from tcc_compiler.schedule.coretime import core_ranges, replay_cores
from tcc_compiler.schedule.memory import plan_memory
from tcc_compiler.sim.hazards import check_stream
from tcc_compiler.target import load_target

TARGET = load_target().with_sram(256 * 1024)
SHAPE = (1, 16, 28, 28)   # ops_net's input
BAND_BYTES = 128 * 1024


@pytest.fixture(scope="module")
def bands(tmp_path_factory):
    """(model path, loaded compiled program, quantized graph, band program, its executor)."""
    d = tmp_path_factory.mktemp("two_cores_bands")
    onnx.save(ops_net(), d / "m.onnx")
    rng = np.random.default_rng(1)
    calib = [rng.uniform(-2, 2, SHAPE).astype(np.float32) for _ in range(2)]
    m = api.compile(d / "m.onnx", "28x28x16", calibration=calib, cores=2, target=TARGET)
    m.save(d / "out")
    graph = m.artifacts.graph
    prog = lower_spatial(graph, TARGET, balance=True, band_bytes=BAND_BYTES)
    return d / "m.onnx", load_program(d / "out"), graph, prog, executor_of(prog, TARGET)


def _dram_bytes(prog) -> int:
    return sum(c.run_bytes * c.n1 * c.n2 for c in prog.commands
               if isinstance(c, (C.DmaLoad, C.DmaStore)))


def test_bands_hold_each_cores_rows_and_the_halo(bands):
    """The first conv's 28-row output is banded: core 0 keeps rows 0..14 (row 14 its halo,
    computed by core 1, for the 3x3 max pool), core 1 rows 13..27 (row 13 its halo)."""
    _, _, graph, _, _ = bands
    mem = plan_memory(graph, TARGET, 0, False, reuse=False)
    b = plan_bands(graph, TARGET, mem, BAND_BYTES)
    conv = graph.nodes[0]
    v = mem.conv_output(conv)
    assert id(conv) in b.ops and b.halo[id(v)] == ((14, 15), (13, 14))
    r0, r1 = (m.resident(v) for m in b.mems)
    assert (r0.rows, r1.rows) == ((0, 15), (13, 28)) and r0.sram == r1.sram
    assert r0.nbytes == 15 * 28 * 64 and b.zone_used <= BAND_BYTES


def test_bands_move_fewer_dram_bytes_and_replay_faster(bands):
    _, _, graph, prog, _ = bands
    plain = lower_spatial(graph, TARGET, balance=True)
    assert _dram_bytes(prog) < 0.75 * _dram_bytes(plain)   # 612 KB vs 861 KB
    assert any("halo rows" in c for c in prog.comments)
    assert any("boundary rows" in c for c in prog.comments)
    assert any("each core's rows kept in its SRAM" in li.plan for li in prog.layers)

    def cycles(p):
        return max(e for _, e in replay_cores(p.commands, TARGET))
    assert cycles(prog) < cycles(plain)


def test_band_program_bit_exact_and_hazard_free(bands):
    path, loaded, _, _, ex = bands
    rng = np.random.default_rng(5)
    checker = Checker(loaded, path)
    for _ in range(2):
        x = rng.uniform(-2, 2, SHAPE).astype(np.float32)
        assert checker.check(x, loaded.run(x))["bit_exact"]
        q = loaded.quantize(x)
        assert ex.run(q, check=True) == loaded.executor.run(q)


@pytest.mark.parametrize("seeds", [pytest.param(range(2), id="2"),
                                   pytest.param(range(20), id="20", marks=pytest.mark.slow)])
def test_band_program_random_interleavings(bands, seeds):
    _, loaded, _, _, ex = bands
    q = loaded.quantize(np.random.default_rng(2).uniform(-2, 2, SHAPE).astype(np.float32))
    ref = loaded.executor.run(q)
    for seed in seeds:
        assert ex.run(q, schedule="random", seed=seed) == ref, seed


def test_band_program_with_short_tiles_bit_exact_and_hazard_free(bands):
    """``band_tiles=3``: a banded conv's share runs in at least three row tiles, the boundary
    rows stored after the tile completing them (before the share ends); still the loaded
    program's bytes, in random interleavings too, and hazard-free."""
    _, loaded, graph, prog, _ = bands
    short = lower_spatial(graph, TARGET, balance=True, band_bytes=BAND_BYTES, band_tiles=3)
    assert sum(li.tiles for li in short.layers) > sum(li.tiles for li in prog.layers)
    cmds, early = short.commands, 0
    for li in short.layers:   # a share's boundary store precedes some of its own tiles
        own = li.cmds or range(li.first_cmd, li.end_cmd)
        for a, e in core_ranges(cmds):
            mine = [j for j in own if a <= j < e]
            bound = [j for j in mine if "boundary rows" in short.comments[j]]
            early += bool(bound) and any(isinstance(cmds[j], C.ConvTile) and j > bound[0]
                                         for j in mine)
    assert early
    ex = executor_of(short, TARGET)
    q = loaded.quantize(np.random.default_rng(6).uniform(-2, 2, SHAPE).astype(np.float32))
    ref = loaded.executor.run(q)
    assert ex.run(q, check=True) == ref
    assert ex.run(q, schedule="random", seed=3) == ref
    assert check_stream(list(ex.cmd.commands), executor_sizes(ex), ex.cmd.core_ranges()) == []


def test_deleting_a_cross_core_wait_of_the_band_program_is_a_race(bands):
    """Every SEM_WAIT (each before a load of boundary rows the other core stored) is
    needed: without it the hazard checker reports one race between the cores."""
    _, _, _, _, ex = bands
    cmds, ranges = list(ex.cmd.commands), ex.cmd.core_ranges()
    sz = executor_sizes(ex)
    assert check_stream(cmds, sz, ranges) == []
    assert_every_sem_wait_needed(cmds, ranges, sz)
