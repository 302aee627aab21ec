"""Prefetch retargeting (:func:`retargeted`): the SRAM area of the prefetch whose window
starts last handed first to a conv of that window, then back to its own consumer.

The greedy prefetch rounds (schedule/hoistsearch.py) give each area to the consumer whose
stall they estimate largest; in a network with depthwise layers that is the conv head, whose
first blocks then sit in the area from its window's start to the network's end. A conv of
the window whose weights fill the area (a tail expand conv) may take it first: its first
blocks load in the window's LOAD-queue gaps, and the conv head's blocks follow in the same
area once that conv is done (:class:`~tcc_compiler.schedule.hoist.Hoist` s one after the
other may share SRAM), so that more of the head's loads run while the head computes, at the
end, rather than before it (EfficientNet-Lite0 224: the area of the conv head's hoist from
block 4.0's depthwise conv, 147,712 bytes, given first to block 5.1's expand conv: 471,188
-> 469,796 cycles). The search (schedule/search.py) lowers the winner so, with its own lifts
and slot flags, and keeps it only when faster after its last steps.
"""

from __future__ import annotations

import dataclasses
import logging

from tcc_compiler.errors import ScheduleError
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.hoist import Hoist
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.program import Program
from tcc_compiler.target import Target

log = logging.getLogger(__name__)

#: Convs of the window :func:`retargeted` tries as the area's first consumer, the earliest
#: first (EfficientNet-Lite0 224, each of its tail convs as the first consumer: expand convs
#: 469,796 (5.1) to 470,004 (5.2) cycles, projections 470,775 to 476,938, depthwise convs
#: 478,610 to 480,837; one try, the earliest, costs one lowering and one replay).
RETARGET_TRIES = 1


def retarget_hoists(hoists: tuple[Hoist, ...], prog: Program,
                    tries: int = RETARGET_TRIES) -> list[tuple[Hoist, ...]]:
    """Retargeted forms of ``hoists`` (one program's, ``prog`` the program lowered with them):
    the hoist whose window starts last (in ``prog``'s layer order) split at each of the first
    ``tries`` convs of its window that are MAC-array convs (not depthwise, not cascaded), no
    prefetch consumer yet, whose weights and parameter records (``weight_raw_bytes``, as
    loaded into SRAM) fill its area (``area_bytes``) and that have at least one op before
    them in the window: into a hoist for that conv (the window's ops before it, their LOAD
    gaps) and, when ops follow it in the window, the hoist for its own consumer over those
    ops, both in the same area (their spans do not overlap). Empty when there is none."""
    pos = {li.name: i for i, li in enumerate(prog.layers)}
    wins = [h for h in hoists if h.window and h.window[0] in pos]
    if not wins:
        return []
    h = max(wins, key=lambda x: pos[x.window[0]])
    consumers = {x.consumer for x in hoists}
    out = []
    for k, name in enumerate(h.window):
        if len(out) >= tries:
            break
        li = prog.layers[pos[name]] if name in pos else None
        if (k == 0 or li is None or li.kind != "conv" or li.depthwise or name in consumers
                or li.plan.startswith("cascade") or li.weight_raw_bytes < h.area_bytes):
            continue
        first = dataclasses.replace(h, consumer=name, window=h.window[:k], gaps=h.gaps[:k])
        rest = (dataclasses.replace(h, window=h.window[k + 1:], gaps=h.gaps[k + 1:]),) \
            if k + 1 < len(h.window) else ()
        i = hoists.index(h)
        out.append(hoists[:i] + (first,) + rest + hoists[i + 1:])
    return out


def again(low: Lowering, hoists: tuple[Hoist, ...]) -> Lowering:
    """A lowering of ``low``'s plan with its lifts, weight lifts and slot, block and
    handover flags, but the prefetches ``hoists`` (not recorded)."""
    return Lowering(low.graph, low.t, low.zone_bytes, low.compressor, cascade=low.cascade,
                    hoist=hoists or None, memo=low.memo, mem=low.mem, lifts=dict(low.lifts),
                    wlifts=dict(low.wlifts), tight_slots=low.tight_slots,
                    whole_out=low.whole_out, deep_slots=low.deep_slots,
                    handover=low.handover, coarse=low.coarse, coarse_wide=low.coarse_wide)


def retargeted(made_by: Lowering, prog: Program, cycles: int,
               t: Target) -> tuple[Program, int] | None:
    """(program, replayed cycles) of the fastest of ``prog`` (made by the lowering
    ``made_by``, ``cycles`` its replay) lowered again (:func:`again`) with each of
    :func:`retarget_hoists` of its hoists, when one is faster than ``cycles``; None when none
    is (or there is none, or none fits)."""
    best = None
    for hoists in retarget_hoists(made_by.hoists, prog):
        try:
            got = again(made_by, hoists).run()
        except ScheduleError:
            continue
        c = max((e for _, e in replay(got.commands, t)), default=0)
        log.debug("prefetch area first to '%s': %d -> %d cycles",
                  next(h.consumer for h in hoists if h not in made_by.hoists), cycles, c)
        if c < (cycles if best is None else best[1]):
            best = (got, c)
    return best
