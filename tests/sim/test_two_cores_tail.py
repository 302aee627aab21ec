"""The stream program's tail batching (schedule/batchtail.py): the head image by image, the
weight-heavy tail of all images op by op under one weight load.

On the two-core test network (tests/helpers/two_cores.py conv_net), cut at each place it can
be cut: every image of a two-cores x two-images run comes out as the one-image program gives
it, in order with the hazard checker on and in random interleavings of both cores' six queues;
the tail's weights are read once per core and the head's once per image; without the
barriers between the parts, the hazard checker reports the race.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from helpers.two_cores import conv_net

from tcc_compiler import api
from tcc_compiler.emit.binaries import encode_binaries
from tcc_compiler.binfmt import read_cmd_file
from tcc_compiler.binfmt.weightfile import read_weight_file
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Region
from tcc_compiler.schedule import batchtail
from tcc_compiler.schedule.batch import lower_batch
from tcc_compiler.schedule.batchtail import cuts, lower_tail_batch, split_graph
from tcc_compiler.schedule.corestream import stream_program, tail_candidates
from tcc_compiler.runtime import load_program
from tcc_compiler.sim.cores import run_stream
from tcc_compiler.sim.executor import Executor
from tcc_compiler.sim.hazards import check_stream
from tcc_compiler.target import load_target

TARGET = load_target().with_sram(256 * 1024)
ZONE = 64 * 1024


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """(compiled one-core model, its quantized graph)."""
    d = tmp_path_factory.mktemp("tail")
    onnx.save(conv_net(), d / "m.onnx")
    rng = np.random.default_rng(1)
    calib = [rng.uniform(-2, 2, (1, 16, 28, 28)).astype(np.float32) for _ in range(2)]
    m = api.compile(d / "m.onnx", "28x28x16", calibration=calib, target=TARGET)
    return m, m.artifacts.graph


def test_cuts_hand_over_one_tensor(net):
    """Each cut splits the graph into a head with one output and a tail with one input, the
    boundary; none falls between the first conv and the residual add reading its output
    (two tensors would cross)."""
    _, g = net
    cs = cuts(g)
    assert [c.index for c in cs] == sorted(c.index for c in cs) and len(cs) >= 2
    add = next(i for i, n in enumerate(g.nodes) if n.inputs[-1].name == g.nodes[0].output.name
               and i > 1)
    assert [c.index for c in cs if 1 < c.index <= add] == []
    for c in cs:
        head, tail = split_graph(g, c)
        assert [n.name for n in head.nodes + tail.nodes] == [n.name for n in g.nodes]
        assert [v.name for v in head.outputs] == [v.name for v in tail.inputs] == [c.boundary]
        head_values = {v.name for n in head.nodes for v in n.outputs}
        assert {v.name for n in tail.nodes for v in n.inputs
                if v is not None and v.const is None} & head_values == {c.boundary}
        assert c.tail_weight_elems == sum(batchtail.const_elems(n) for n in tail.nodes)
    assert len(g.nodes) == len({n.name for n in g.nodes})   # the graph is untouched
    early = g.clone()   # a graph output computed in the head: no cut may drop it
    early.outputs.append(next(v for v in early.values() if v.name == cs[-1].boundary))
    assert [c.index for c in cuts(early)] == [c.index for c in cs if c.index < cs[-1].index]


def _weight_loads(cmds) -> int:
    return sum(c.src_bytes if isinstance(c, C.DmaLoadZ) else c.total_bytes for c in cmds
               if isinstance(c, C.DmaLoadZ) or (isinstance(c, C.DmaLoad)
                                                and c.dram >> 30 == Region.WEIGHTS))


def _stream(g, cut, images=2):
    prog, st = lower_tail_batch(g, TARGET, images, cut, None, ZONE, ZONE // 2)
    return stream_program(prog, TARGET, images, st)


@pytest.fixture(scope="module")
def loaded(net, tmp_path_factory):
    """The one-core model saved and loaded (its executor is the reference per image)."""
    m, _ = net
    d = tmp_path_factory.mktemp("tail_out")
    m.save(d / "out")
    return load_program(d / "out")


def _outputs(loaded, sp, seeds):
    cmd_bin, w_bin = encode_binaries(sp.program, "test")
    ex = Executor(read_cmd_file(cmd_bin), read_weight_file(w_bin), TARGET)
    rng = np.random.default_rng(11)
    qs = [loaded.quantize(rng.uniform(-2, 2, (1, 16, 28, 28)).astype(np.float32))
          for _ in range(sp.images)]
    refs = [loaded.executor.run(q) for q in qs]
    for seed in seeds:
        kw = dict(check=True) if seed is None else dict(schedule="random", seed=seed)
        got = run_stream(ex, qs, sp.input_stride_bytes, sp.output_stride_bytes,
                         len(refs[0]), **kw)
        assert got == refs, seed


@pytest.mark.parametrize("every", [pytest.param(False, id="first"),
                                   pytest.param(True, id="every", marks=pytest.mark.slow)])
def test_tail_batch_bit_exact(net, loaded, every):
    """Two cores x two images, cut at the first place (``every``: at each): bit-exact per
    image, hazard-free in order and in a random interleaving; the tail's weights are read
    once per core for both images, the head's once per image."""
    _, g = net
    shares = []
    for cut in cuts(g) if every else cuts(g)[:1]:
        sp = _stream(g, cut)
        assert sp.images == 4 and sp.batch == 2
        _outputs(loaded, sp, [None, 0])
        head, tail = split_graph(g, cut)
        w_head, w_tail = (_weight_loads(lower_batch(x, TARGET, 1)[0].commands)
                          for x in (head, tail))
        f = read_cmd_file(encode_binaries(sp.program, "test")[0])
        per_core = [_weight_loads(sp.program.commands[x:y]) for x, y in f.core_ranges()]
        assert per_core == [2 * w_head + w_tail] * 2
        shares.append((w_head > 0, w_tail > 0))
    assert (True, True) in shares


@pytest.mark.slow
def test_tail_batch_survives_20_random_interleavings(net, loaded):
    _, g = net
    _outputs(loaded, _stream(g, cuts(g)[0]), range(20))


def test_without_the_barriers_the_checker_reports_a_race(net, monkeypatch):
    """The parts reuse SRAM and the ACT work area; the barriers are what orders them: with
    them the two-core program is hazard-free, without them the checker finds a race."""
    _, g = net
    cut = cuts(g)[0]

    def hazards(sp):
        cmd_bin, w_bin = encode_binaries(sp.program, "test")
        f = read_cmd_file(cmd_bin)
        sizes = {C.Space.SRAM: TARGET.sram_capacity_bytes, C.Space.ACT: f.act_arena_bytes,
                 C.Space.INPUT: f.input_bytes, C.Space.OUTPUT: f.output_bytes,
                 C.Space.WEIGHTS: len(read_weight_file(w_bin).data)}
        return check_stream(list(f.commands), sizes, f.core_ranges())

    assert hazards(_stream(g, cut)) == []
    monkeypatch.setattr(batchtail, "barrier", lambda cmds: list(cmds))
    assert hazards(_stream(g, cut))


def test_tail_candidates_name_their_cut(net):
    """Every tail-batched stream candidate records the tensor its tail starts from and the
    tail's weight share, the manifest's ``tail_from`` and the report's schedule text."""
    _, g = net
    bounds = {c.boundary: c.tail_weight_elems for c in cuts(g)}
    total = sum(batchtail.const_elems(n) for n in g.nodes)
    cands = tail_candidates(g, TARGET, None)
    assert cands
    for sp in cands:
        assert sp.tail_from in bounds and sp.batch in (3, 4)
        assert sp.tail_weight_share == bounds[sp.tail_from] / total
