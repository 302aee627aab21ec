"""Leading prefetch (schedule/hoist.py ``Hoist.lead``, schedule/prefetch.py): the LOAD-queue
idle time measured after a window op's k-th load pays for prefetch loads emitted before that
load. The leading program loads the same weight bytes, its first prefetch load is emitted
earlier than without leading, and it is bit-exact against the golden integer model and
hazard-free in stream order and in random legal interleavings."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import assert_bit_exact_schedules
from helpers.prefetch_net import PREFETCH_BUDGET as BUDGET

from tcc_compiler.isa import commands as C
from tcc_compiler.schedule.lowering import Lowering


@pytest.fixture(scope="module")
def leading(prefetch_plain):
    """The prefetch net's conv3 hoist (conv0..conv2 compute-bound, conv3 load-bound), lowered
    without and with ``lead``. Returns (graph, input, plain program, hoist, program without
    leading, program with leading)."""
    base = prefetch_plain(512)
    g, x, t, plain = base.g, base.x, base.t, base.plain
    h = base.hoist("conv3")
    assert h is not None and not h.lead
    lag = Lowering(g, t, 0, hoist=(h,)).run()
    lead = Lowering(g, t, 0, hoist=(dataclasses.replace(h, lead=True),)).run()
    return g, x, plain, h, lag, lead


def _prefetches(prog) -> list[int]:
    return [i for i, m in enumerate(prog.comments) if " prefetch" in m]


def _weights_read(prog) -> int:
    return sum(c.total_bytes for c, m in zip(prog.commands, prog.comments)
               if c.queue is C.Queue.LOAD and "weights" in m)


def test_lead_emits_prefetch_no_later_same_bytes(leading):
    """The same prefetch loads (count and weight bytes read), the first emitted no later in
    the stream; earlier when the window's first op had idle time after its first load."""
    _, _, _, h, lag, lead = leading
    assert len(_prefetches(lead)) == len(_prefetches(lag)) > 0
    assert _weights_read(lead) == _weights_read(lag)
    assert min(_prefetches(lead)) <= min(_prefetches(lag))
    # here conv1's second load is followed by idle time (gaps (0, 408, ...)): leading spends
    # it after conv1's first load, so the first prefetch moves up the stream
    assert h.window[0] == "conv1" and h.gaps[0][0] == 0 and h.gaps[0][1] > 0
    assert min(_prefetches(lead)) < min(_prefetches(lag))


def test_leading_program_bit_exact_in_order_and_random(leading):
    """Hazard-free and bit-exact in stream order and random legal interleavings."""
    g, x, _, _, _, lead = leading
    assert_bit_exact_schedules(lead, BUDGET, g, x, seeds=(1, 2, 3))
