"""Filling the LOAD queue's stalls: a later weight load moved ahead of a load that waits.

The LOAD queue runs in stream order, so a load that waits for a COMPUTE (its SRAM overlaps a
tile still being computed) holds every load behind it, even one that waits for nothing
(MobileNetV2 224: features.13's second expansion-weight block waits 3,430 cycles for
features.12's projection while a prefetch block for features.17, clear of it, queues behind).
:func:`fill_load_stalls` moves such a later ``DMA_LOAD_Z`` (weights: it reads only the constant
WEIGHTS region) just ahead of the stalled load when

* every command it depends on (:attr:`Program.deps`) is before that place in the stream, and
* the SRAM it writes overlaps no SRAM byte range (hull) touched by any command it passes
  (loads included: a queue's order was their only order),

and keeps the move when the replay (:func:`~tcc_compiler.schedule.cost.replay`) is faster.

Waits are then derived from the dependencies at the new places, as in schedule/reorder.py,
except that the LOAD queue's order changed: a dependency on the load that was ``k``-th in the
queue becomes one on the latest new place of the loads that were at most ``k``-th, so every
command waits for at least the loads it waited for before (a wait on load ``k`` implied loads
``0..k``). Compute and store commands keep their order and indices. Only the moved load waits
for less (its passed commands), which the two checks above make legal.
"""

from __future__ import annotations

import dataclasses

from tcc_compiler.isa import commands as C
from tcc_compiler.isa.access import Space
from tcc_compiler.isa.spec import WAIT_MAX, WAIT_NONE, Queue
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.reorder import moved_layer
from tcc_compiler.target import Target

_QUEUES = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)

#: Later loads (in LOAD-queue order) tried in front of each stalled load.
FILL_AHEAD = 10

#: Replays :func:`fill_load_stalls` may spend on tries, per program (bounds its CPU time on
#: a program with many stalled loads).
FILL_TRIES = 64

#: Tries in a row that are not faster after which :func:`fill_load_stalls` stops (a stall
#: where compute, not the LOAD queue, bounds the program cannot be filled usefully).
FILL_PATIENCE = 24

#: A stall shorter than this (cycles) is not filled: a DMA's setup alone is 200 cycles.
FILL_MIN_STALL = 400


def _sram_hulls(cmds) -> list[list[tuple[int, int]]]:
    """Per command, the hulls ``[lo, hi)`` (bytes) of the SRAM it reads or writes."""
    regs = C.Registers()
    out = []
    for c in cmds:
        out.append([(a.start, a.end) for a in c.accesses(regs) if a.space is Space.SRAM]
                   if c.queue in _QUEUES else [])
        regs.update(c)
    return out


def _queue_index(cmds) -> tuple[list[tuple[Queue, int] | None], dict]:
    """(per command its (queue, index in that queue) or None, commands per queue)."""
    qi: list[tuple[Queue, int] | None] = []
    count = {q: 0 for q in _QUEUES}
    for c in cmds:
        if c.queue in count:
            qi.append((c.queue, count[c.queue]))
            count[c.queue] += 1
        else:
            qi.append(None)
    return qi, count


def _latest_loads(qi, order: list[int], n_loads: int) -> list[int]:
    """Per original LOAD index k, the latest new LOAD index among original loads 0..k when
    the commands run in ``order`` (a wait on load k becomes a wait on that one)."""
    new_load = [0] * n_loads
    k = 0
    for i in order:
        if qi[i] is not None and qi[i][0] is Queue.LOAD:
            new_load[qi[i][1]] = k
            k += 1
    latest, run = [], -1
    for x in new_load:
        run = max(run, x)
        latest.append(run)
    return latest


def _rewaited(c, d, count: dict):
    """Command ``c`` with the waits for dependencies ``d`` ((queue, index) pairs) when
    ``count`` commands per queue come before it."""
    w = {q: WAIT_NONE for q in _QUEUES}
    for q, k in d:
        w[q] = min(w[q], min(count[q] - 1 - k, WAIT_MAX))
    waits = (w[Queue.LOAD], w[Queue.COMPUTE], w[Queue.STORE])
    return c if c.waits == waits else dataclasses.replace(
        c, wait_load=waits[0], wait_compute=waits[1], wait_store=waits[2])


def _program(prog: Program, order: list[int], queued=None, base=None) -> Program:
    """``prog``'s commands in ``order`` (old indices; loads only moved earlier), waits derived
    from the dependencies with the LOAD indices remapped (see the module docstring).
    ``queued``: :func:`_queue_index` of ``prog.commands`` when known (None: made here).
    ``base``: (order0, program0, lo, hi): a program this function made of ``prog`` in
    ``order0``, which holds the same commands as ``order`` at every stream place outside
    [lo, hi] and the same ones within it (None: none): outside, a place whose LOAD
    dependencies keep their remapped index takes program0's command and dependencies (the
    same inputs: the same command), the others are derived again."""
    cmds, deps = prog.commands, prog.deps
    qi, count = _queue_index(cmds) if queued is None else queued
    latest = _latest_loads(qi, order, count[Queue.LOAD])
    reuse = _reusable(prog, order, latest, qi, count, base)
    count = {q: 0 for q in _QUEUES}
    out, new_deps = [], []
    for p, i in enumerate(order):
        if reuse[p]:
            out.append(base[1].commands[p])
            new_deps.append(base[1].deps[p])
        else:
            d = tuple((q, latest[k] if q is Queue.LOAD else k) for q, k in deps[i])
            out.append(_rewaited(cmds[i], d, count))
            new_deps.append(d)
        if qi[i] is not None:
            count[qi[i][0]] += 1
    where = [0] * len(order)
    for new_i, old_i in enumerate(order):
        where[old_i] = new_i
    return dataclasses.replace(
        prog, commands=out, comments=[prog.comments[i] for i in order],
        slots=[prog.slots[i] for i in order] if prog.slots else prog.slots,
        layers=[moved_layer(li, where) for li in prog.layers], deps=new_deps)


def _reusable(prog: Program, order: list[int], latest: list[int], qi, count: dict,
              base) -> list[bool]:
    """Per stream place of ``order``, whether :func:`_program` takes ``base``'s command there
    (see its ``base``)."""
    if base is None:
        return [False] * len(order)
    order0, _, lo, hi = base
    latest0 = _latest_loads(qi, order0, count[Queue.LOAD])
    moved = {k for k, (a, b) in enumerate(zip(latest, latest0)) if a != b}
    load = Queue.LOAD
    return [not lo <= p <= hi and not any(q is load and k in moved for q, k in prog.deps[i])
            for p, i in enumerate(order)]


def _movable(cmds, deps, pos_of: dict, hulls, order: list[int], pa: int, b: int) -> bool:
    """Whether command ``b`` (old index) may move to stream place ``pa`` (see the module
    docstring); ``pos_of``: (queue, orig index) -> stream place in ``order``."""
    if not isinstance(cmds[b], C.DmaLoadZ):
        return False
    if any(pos_of[d] >= pa for d in deps[b]):
        return False
    mine = hulls[b]
    for x in order[pa:pos_of[("cmd", b)]]:
        if any(lo < h2 and lo2 < hi for lo, hi in mine for lo2, h2 in hulls[x]):
            return False
    return True


def fill_load_stalls(prog: Program, t: Target, cycles: int) -> tuple[Program, int]:
    """(program, replayed cycles): ``prog`` (``cycles`` its replay) with later weight loads
    moved ahead of its stalled loads, the largest stalls (at least :data:`FILL_MIN_STALL`
    cycles) first, each of the :data:`FILL_AHEAD` next loads tried in queue order and the first
    that makes the replay faster kept, until no move helps, :data:`FILL_TRIES` replays are
    spent or :data:`FILL_PATIENCE` in a row were not faster. ``prog`` itself when it records
    no dependencies, has several cores, or no move helps. Same commands, so the same bytes
    computed; only the stream order and waits differ. Raises nothing of its own."""
    if prog.deps is None or prog.cores != 1 or len(prog.deps) != len(prog.commands):
        return prog, cycles
    cmds = prog.commands
    hulls, queued = _sram_hulls(cmds), _queue_index(cmds)
    order = list(range(len(cmds)))
    best, best_cycles, tries = prog, cycles, 0
    tried: set[tuple[int, int]] = set()
    fails = 0
    spans = replay(best.commands, t)
    built = None   # _program's own program of ``order`` (base of the trials), made on demand
    while tries < FILL_TRIES:
        loads, stalls = _stalls(spans, cmds, order)
        pos_of = _positions(cmds, order)
        moved = False
        for j in stalls:
            pa = loads[j]
            for pb in loads[j + 1:j + 1 + FILL_AHEAD]:
                key = (order[pa], order[pb])
                if key in tried or tries >= FILL_TRIES:
                    continue
                tried.add(key)
                if built is None and _movable(cmds, prog.deps, pos_of, hulls, order, pa,
                                              order[pb]):
                    built = _program(prog, order, queued)
                got = _trial(prog, hulls, pos_of, order, pa, pb, queued, built)
                if got is None:
                    continue
                tries += 1
                spans2 = replay(got[1].commands, t,
                                (_same_prefix(best.commands, got[1].commands), spans))
                c2 = max((e for _, e in spans2), default=0)
                if c2 < best_cycles:
                    (order, best), best_cycles, moved, fails = got, c2, True, 0
                    spans, built = spans2, best
                    break
                fails += 1
                if fails >= FILL_PATIENCE:
                    return best, best_cycles
            if moved:
                break
        if not moved:
            break
    return best, best_cycles


def _stalls(spans, cmds, order: list[int]) -> tuple[list[int], list[int]]:
    """(stream places of the LOADs in ``order``, the indices j into them of the LOADs that
    start at least :data:`FILL_MIN_STALL` cycles after load j - 1 ends, largest gap first,
    ties by the later j) from the replay ``spans``."""
    loads = [p for p, i in enumerate(order) if cmds[i].queue is Queue.LOAD]
    stalls = []
    for j in range(1, len(loads)):
        gap = spans[loads[j]][0] - spans[loads[j - 1]][1]
        if gap >= FILL_MIN_STALL:
            stalls.append((gap, j))
    return loads, [j for _, j in sorted(stalls, reverse=True)]


def _same_prefix(a: list, b: list) -> int:
    """How many leading commands ``a`` and ``b`` share (equal, mostly the same objects: a
    trial keeps the command objects whose waits do not change): their replays agree there
    (:func:`~tcc_compiler.schedule.cost.replay`'s ``prefix``)."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] is not b[i] and a[i] != b[i]:
            return i
    return n


def _trial(prog: Program, hulls, pos_of: dict, order: list[int], pa: int,
           pb: int, queued=None, built: Program | None = None) -> tuple[list[int], Program] | None:
    """(order, program) with the load at stream place ``pb`` moved to place ``pa``, or None
    when the move is not allowed (:func:`_movable`, :func:`_unordered_clear`). ``queued``:
    :func:`_program`'s; ``built``: :func:`_program`'s program of ``order`` (None: unknown),
    whose commands outside places ``pa`` .. ``pb`` the trial's mostly shares."""
    b = order[pb]
    if not _movable(prog.commands, prog.deps, pos_of, hulls, order, pa, b):
        return None
    trial = order[:pa] + [b] + order[pa:pb] + order[pb + 1:]
    prog2 = _program(prog, trial, queued, None if built is None else (order, built, pa, pb))
    if not _unordered_clear(prog2.commands, pa, [hulls[i] for i in trial]):
        return None
    return trial, prog2


def _reach(cmds) -> list[dict]:
    """Per stream place, the highest index per queue that its waits order before it (-1)."""
    count = {q: 0 for q in _QUEUES}
    out = []
    for c in cmds:
        r = {q: -1 for q in _QUEUES}
        for q, n in zip(_QUEUES, c.waits if c.queue in count else ()):
            if n != WAIT_NONE:
                r[q] = count[q] - n - 1
        out.append(r)
        if c.queue in count:
            count[c.queue] += 1
    return out


def _unordered_clear(cmds, pos: int, hulls) -> bool:
    """Whether the SRAM (``hulls``, per stream place) the command at ``pos`` touches overlaps
    none of the earlier commands its waits do not order before it, transitively (a queue runs
    in order: waiting for its command ``k`` orders its commands ``0..k`` before): the moved
    load no longer follows what the loads it passed waited for."""
    reach = _reach(cmds[:pos + 1])
    places = {q: [p for p in range(pos) if cmds[p].queue is q] for q in _QUEUES}
    front = dict(reach[pos])
    front[cmds[pos].queue] = len(places[cmds[pos].queue]) - 1
    done = {q: -1 for q in _QUEUES}
    while any(front[q] > done[q] for q in _QUEUES):
        for q in _QUEUES:
            for k in range(done[q] + 1, front[q] + 1):
                for p2, j in reach[places[q][k]].items():
                    front[p2] = max(front[p2], j)
            done[q] = max(done[q], front[q])
    mine = hulls[pos]
    for q in _QUEUES:
        for p in places[q][front[q] + 1:]:
            if any(lo < h2 and lo2 < hi for lo, hi in mine for lo2, h2 in hulls[p]):
                return False
    return True


def _positions(cmds, order: list[int]) -> dict:
    """(queue, original queue index) and ("cmd", old index) -> stream place in ``order``."""
    count = {q: 0 for q in _QUEUES}
    qidx = {}
    for i, c in enumerate(cmds):
        if c.queue in count:
            qidx[i] = (c.queue, count[c.queue])
            count[c.queue] += 1
    out: dict = {}
    for p, i in enumerate(order):
        out[("cmd", i)] = p
        if i in qidx:
            out[qidx[i]] = p
    return out
