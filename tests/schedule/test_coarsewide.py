"""Coarse weight blocks in a network with depthwise layers (schedule/coarsewide.py,
``Lowering.coarse_wide``): a depthwise conv in two blocks or more and a load-bound conv in
three or more (``convslots.coarse_wide_blocks``) take coarser blocks, so fewer weight DMAs;
the lowerings stay hazard-free and bit-exact, in stream order and in random legal
interleavings, and the search's variant (``lifted_coarse``) lowers and lifts them."""

from __future__ import annotations

import dataclasses

import onnx
import pytest
from conftest import assert_bit_exact_schedules, quantized_model
from helpers.models import conv_relu_chain

from tcc_compiler.isa.spec import Queue
from tcc_compiler.schedule.coarsewide import lifted_coarse
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.ops.convslots import coarse_wide_blocks
from tcc_compiler.target import load_target

#: SRAM of the tests' target: the depthwise conv plans three blocks, the projection eight
BUDGET = 128 * 1024


def dw_net() -> onnx.ModelProto:
    """x[1, 32, 8, 8] -> Conv1x1 32 -> 512 + Relu -> depthwise Conv3x3 512 + Relu -> Conv1x1
    512 -> 256 + Relu (128 KB of weights: load-bound at 8x8;
    :func:`helpers.models.conv_relu_chain`)."""
    return conv_relu_chain(32, 8, [(512, 1, 1), (512, 3, 512), (256, 1, 1)], "dw")


@pytest.fixture(scope="module")
def net():
    return quantized_model(dw_net())


def _node(g, name):
    return next(n for n in g.nodes if n.name == name)


def test_which_convs_take_coarser_blocks(net):
    g, _ = net
    t = load_target()
    dw = conv_geom(_node(g, "conv1"), t)
    assert coarse_wide_blocks(dw, t, 256, True)        # two blocks
    assert not coarse_wide_blocks(dw, t, 512, True)    # one already
    proj = conv_geom(_node(g, "conv2"), t)   # 128 KB over the link, 8.4 M MACs
    assert coarse_wide_blocks(proj, t, 64, False)      # four blocks
    assert coarse_wide_blocks(proj, t, 96, False)      # three
    assert not coarse_wide_blocks(proj, t, 128, False)   # two only
    big = dataclasses.replace(proj, h=64, w=64, oh=64, ow=64)   # compute-bound
    assert not coarse_wide_blocks(big, t, 64, False)


def _weight_loads(prog) -> dict[str, int]:
    """Op name -> its weight loads, counted."""
    n: dict[str, int] = {}
    for i, c in enumerate(prog.commands):
        if c.queue is Queue.LOAD and "weights" in prog.comments[i]:
            k = prog.comments[i].split()[0]
            n[k] = n.get(k, 0) + 1
    return n


@pytest.fixture(scope="module")
def progs(net):
    g, x = net
    t = load_target().with_sram(BUDGET)
    plain = Lowering(g, t, 0)
    coarse = Lowering(g, t, 0, coarse_wide=True)
    return g, x, t, (plain, plain.run()), (coarse, coarse.run())


def test_coarse_lowering_loads_fewer_blocks(progs):
    _, _, _, (plain, p0), (coarse, p1) = progs
    n0, n1 = _weight_loads(p0), _weight_loads(p1)
    assert not plain.coarsened and coarse.coarsened
    assert n1["conv1"] == 1 < n0["conv1"]   # the depthwise conv in one block
    assert n1["conv2"] < n0["conv2"]         # the projection in wider blocks
    assert n1["conv0"] == n0["conv0"]        # compute-bound: as planned


def test_coarse_lowering_is_bit_exact(progs):
    g, x, _, _, (_, prog) = progs
    assert_bit_exact_schedules(prog, BUDGET, g, x)


def test_lifted_coarse_lowers_the_plan_with_coarse_blocks(progs):
    g, _, t, (plain, _), (_, prog) = progs
    got = lifted_coarse(g, t, None, plain, (), {})
    assert got is not None and got[0] is plain
    assert _weight_loads(got[1]) == _weight_loads(prog)
    assert got[2] == max(e for _, e in replay(got[1].commands, t))
    assert got[2] <= max(e for _, e in replay(prog.commands, t))


def test_lifted_coarse_lowers_its_own_variant_once(progs, monkeypatch):
    """The coarse lowering ``lifted_coarse`` makes is the one its lifting starts from (its op
    spans place the lifts): the variant without lifts, tight slots or whole outputs is not
    lowered a second time inside ``lifted``."""
    g, _, t, (plain, _), _ = progs
    runs, real = [], Lowering.run

    def run(self):
        runs.append((self.coarse_wide, self.lifts, self.wlifts, self.tight_slots,
                     self.whole_out))
        return real(self)

    monkeypatch.setattr(Lowering, "run", run)
    assert lifted_coarse(g, t, None, plain, (), {}) is not None
    assert runs.count((True, {}, {}, False, False)) == 1
    assert all(r[0] for r in runs) and len(runs) > 1   # the lift tries, all coarse
