"""Prefetch SRAM handed on over time (schedule/hoist.py ``busy``, schedule/prefetch.py): a
hoist whose window starts after another hoist's consumer may take that consumer's area, its
loads waiting for the consumer's last compute there; hoists live at the same time keep
disjoint areas. The handed-on program is bit-exact against the golden integer model in stream
order and random legal interleavings, and the hazard checker catches every deleted wait of a
load into the handed-on bytes that the specs/isa.md ordering says races."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import assert_bit_exact_schedules
from helpers.prefetch_net import PREFETCH_BUDGET as BUDGET

from tcc_compiler.errors import InternalError
from tcc_compiler.isa import commands as C
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.hoist import hoist_spans, plan_hoist
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.sim.hazards import check_stream


@pytest.fixture(scope="module")
def handoff(prefetch_plain):
    """conv0..conv2 (compute-bound), conv3 (load-bound), then 1x1 convs conv4 (256->512),
    conv5 (512->256), conv6 (256->512). conv3's hoist takes the top of the SRAM during
    conv1..conv3; conv6's, planned with conv3's as ``busy``, has a window after conv3 and
    takes the top again, its blocks packed (block_cap). Returns (graph, input, target, plain
    program, (h3, h6), program)."""
    base = prefetch_plain(512, (256, 512))
    g, x, t, plain = base.g, base.x, base.t, base.plain
    h3 = base.hoist("conv3")
    h6 = base.hoist("conv6", busy=hoist_spans(plain, (h3,), t))
    assert h3 is not None and h6 is not None
    h6 = dataclasses.replace(h6, pack=True)   # blocks small enough to fit its area
    pre = Lowering(g, t, 0, hoist=(h3, h6)).run()
    return g, x, t, plain, (h3, h6), pre


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_later_window_takes_an_earlier_consumers_area(handoff):
    """conv6's window starts after conv3 (its consumer) and its area overlaps conv3's; a
    hoist whose window runs while conv3's area is taken (conv4's, through conv3) is placed
    below that area instead."""
    g, _, t, plain, (h3, h6), _ = handoff
    order = [li.name for li in plain.layers]
    assert order.index(h6.window[0]) > order.index(h3.consumer)
    assert _overlap(h3.area(t), h6.area(t))
    lw = Lowering(g, t, 0)
    lw.run()
    h4 = plan_hoist(g, lw.mem, plain, replay(plain.commands, t), t, eager=True,
                    consumer=order.index("conv4"), busy=hoist_spans(plain, (h3,), t))
    assert h4 is not None and "conv3" in h4.window
    assert h4.area(t)[1] <= h3.area(t)[0]


def test_handed_on_loads_wait_for_the_earlier_consumer(handoff):
    """Every prefetch load of conv6 into bytes of conv3's area is emitted after conv3's last
    compute command and waits (directly or through its queue) for a compute at or after it."""
    _, _, t, plain, (h3, h6), pre = handoff
    conv3 = next(li for li in pre.layers if li.name == "conv3")
    last_c3 = max(i for i in conv3.cmds if pre.commands[i].queue is C.Queue.COMPUTE)
    lo, hi = h3.area(t)
    mine = [i for i, m in enumerate(pre.comments) if m.startswith("conv6 prefetch")]
    into = [i for i in mine if _overlap((pre.commands[i].sram, pre.commands[i].sram + 1),
                                        (lo, hi))]
    assert into, "no conv6 block lands in conv3's former area"
    assert min(into) > last_c3
    spans = replay(pre.commands, t)
    assert all(spans[i][0] >= spans[last_c3][1] for i in into)


def test_handoff_bit_exact_in_order_and_random(handoff):
    """Hazard-free and bit-exact in stream order and random legal interleavings, every
    weight byte read once, as without prefetch."""
    g, x, _, plain, _, pre = handoff
    assert_bit_exact_schedules(pre, BUDGET, g, x, seeds=(1, 2, 3))

    def weights_read(p):
        return sum(c.total_bytes for c, m in zip(p.commands, p.comments)
                   if c.queue is C.Queue.LOAD and "weights" in m)

    assert weights_read(pre) == weights_read(plain)


def test_handed_on_loads_ordered_after_every_reader(handoff):
    """The race-freedom obligation, checked on the ordering specs/isa.md defines
    (sim/hazards.Ordering): every conv6 load into conv3's former area is ordered after every
    earlier command that reads those SRAM bytes (conv3's computes on its prefetched blocks
    among them); and with the waits of the first such load removed, that ordering is lost
    and the static checker reports the write-after-read on them."""
    _, _, t, _, (h3, _), pre = handoff
    from tcc_compiler.binfmt import read_weight_file
    from tcc_compiler.binfmt.weightfile import write_weight_file
    from tcc_compiler.sim.hazards import Ordering

    lo, hi = h3.area(t)
    cmds = list(pre.commands)
    into = [i for i, m in enumerate(pre.comments) if m.startswith("conv6 prefetch")
            and lo <= cmds[i].sram < hi]
    regs, accs = C.Registers(), []
    for c in cmds:
        accs.append(c.accesses(regs))
        regs.update(c)
    order = Ordering(cmds)
    for j in into:
        w = next(a for a in accs[j] if a.is_write)
        readers = [i for i in range(j) if any(
            not a.is_write and a.overlaps(w) for a in accs[i])]
        assert readers and all(order.ordered_before(i, j) for i in readers), j
    sizes = {C.Space.SRAM: BUDGET, C.Space.ACT: pre.act_arena_bytes,
             C.Space.INPUT: pre.input_bytes, C.Space.OUTPUT: pre.output_bytes,
             C.Space.WEIGHTS: len(read_weight_file(write_weight_file(pre.weights, "t")).data)}
    assert check_stream(cmds, sizes) == []
    j = into[0]
    cmds[j] = dataclasses.replace(cmds[j], wait_load=7, wait_compute=7, wait_store=7)
    racy = not all(Ordering(cmds).ordered_before(i, j) for i in range(j)
                   if cmds[i].queue is C.Queue.COMPUTE)
    found = check_stream(cmds, sizes)
    assert racy and len(found) == 1
    h = found[0]
    assert (h.kind, h.second, h.space) == ("WAR", j, C.Space.SRAM)
    assert pre.comments[h.first].startswith("conv3 [")   # conv3's compute read those bytes


def test_prefetcher_rejects_areas_shared_while_both_are_taken(handoff):
    """conv6's area given a window that reaches back into conv3's (both taken during conv2)
    is an internal error, not a silent overwrite."""
    g, _, t, _, (h3, h6), _ = handoff
    bad = dataclasses.replace(h6, window=("conv2",) + h6.window,
                              gaps=((),) + h6.gaps)
    with pytest.raises(InternalError, match="areas overlap"):
        Lowering(g, t, 0, hoist=(h3, bad)).run()
