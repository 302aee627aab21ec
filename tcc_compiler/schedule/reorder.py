"""Exact waits for early loads: each LOAD command is moved up the command stream, past
COMPUTE and STORE commands it does not depend on, so that its wait names the command it
really waits for instead of one clamped to :data:`~tcc_compiler.isa.spec.WAIT_MAX`.

A wait field counts commands of another queue dispatched *before* the command in the stream
(specs/isa.md): a dependency on the COMPUTE command ``k`` is ``wait_compute = n_compute - 1 -
k``, clamped to 6. The lowering emits an op's first weight load after all the previous op's
commands; when that load waits for the compute of the op before (their SRAM overlaps, the
previous op's does not), and the previous op has 7 or more compute commands, the wait is
clamped and the load waits for one of the previous op's tiles instead (ResNet-50 224:
layer3's 1x1 convs, 7 tiles each, hold the next block's weight load back ~7 us per block).

:func:`exact_waits` rebuilds the stream from the dependencies the
:class:`~tcc_compiler.schedule.emitter.WaitTracker` recorded (:attr:`Program.deps`): every
queue keeps its own order (a LOAD never passes a LOAD), a LOAD is placed after every command
it depends on, and it passes a command only when that command's own LOAD wait stays exact
(at most 6) with one more LOAD before it, so no other command's wait changes meaning. The
waits are then derived from the dependencies at the new places. The queue-local indices of
every command, and hence every dependency, are unchanged, so the program is the same set of
ordered pairs plus fewer spurious ones: strict stream order stays legal and bit-identical.
"""

from __future__ import annotations

import dataclasses

from tcc_compiler.isa.spec import WAIT_MAX, WAIT_NONE, Queue
from tcc_compiler.schedule.program import LayerInfo, Program

_QUEUES = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)


def _queue_indices(cmds) -> list[tuple[Queue, int] | None]:
    """(queue, index within its queue) of every command; None for other queues (END)."""
    count = {q: 0 for q in _QUEUES}
    out: list[tuple[Queue, int] | None] = []
    for c in cmds:
        q = c.queue
        if q in count:
            out.append((q, count[q]))
            count[q] += 1
        else:
            out.append(None)
    return out


def _may_pass(load_idx: int, deps) -> bool:
    """Whether a LOAD of queue index ``load_idx`` may move before a command with
    dependencies ``deps``: every LOAD wait of that command stays exact with it before."""
    return all(q is not Queue.LOAD or load_idx - k <= WAIT_MAX for q, k in deps)


def _order(cmds, deps) -> list[int]:
    """The new stream order (old indices): each LOAD as early as :func:`exact_waits` allows."""
    qi = _queue_indices(cmds)
    new: list[int] = []
    for i, c in enumerate(cmds):
        if c.queue is not Queue.LOAD:
            new.append(i)
            continue
        mine = set(deps[i])
        pos = len(new)
        while pos > 0:
            j = new[pos - 1]
            if cmds[j].queue not in (Queue.COMPUTE, Queue.STORE) or qi[j] in mine \
                    or not _may_pass(qi[i][1], deps[j]):
                break
            pos -= 1
        new.insert(pos, i)
    return new


def _waits(cmds, deps, order: list[int]) -> list:
    """The commands in ``order`` with their wait fields derived from ``deps`` there."""
    count = {q: 0 for q in _QUEUES}
    qi = _queue_indices(cmds)
    out = []
    for i in order:
        w = {q: WAIT_NONE for q in _QUEUES}
        for q, k in deps[i]:
            w[q] = min(w[q], min(count[q] - 1 - k, WAIT_MAX))
        out.append(dataclasses.replace(cmds[i], wait_load=w[Queue.LOAD],
                                       wait_compute=w[Queue.COMPUTE],
                                       wait_store=w[Queue.STORE]))
        if qi[i] is not None:
            count[qi[i][0]] += 1
    return out


def moved_layer(li: LayerInfo, where: list[int]) -> LayerInfo:
    """``li`` with its command indices moved (``where``: old index -> new index, a
    permutation of the stream; also used by schedule/loadfill.py)."""
    old = li.cmds if li.cmds is not None else range(li.first_cmd, li.end_cmd)
    idx = sorted(where[i] for i in old)
    if not idx:
        return li
    contiguous = idx[-1] - idx[0] + 1 == len(idx)
    return dataclasses.replace(li, first_cmd=idx[0], end_cmd=idx[-1] + 1,
                               cmds=None if contiguous and li.cmds is None else idx)


def exact_waits(prog: Program) -> Program:
    """``prog`` with its LOAD commands moved up the stream as far as their dependencies
    (:attr:`Program.deps`) allow without changing any other command's wait (see the module
    docstring), its waits derived again, its comments, history slots and per-layer command
    indices (:class:`LayerInfo`) following the commands. ``prog`` itself when it records no
    dependencies (a program not built by :class:`~tcc_compiler.schedule.lowering.Lowering`)
    or nothing moves. One core only (the stream holds one END, at its end)."""
    if prog.deps is None or prog.cores != 1 or len(prog.deps) != len(prog.commands):
        return prog
    cmds, deps = prog.commands, prog.deps
    order = _order(cmds, deps)
    if order == list(range(len(cmds))):
        return prog
    where = [0] * len(order)
    for new_i, old_i in enumerate(order):
        where[old_i] = new_i
    return dataclasses.replace(
        prog, commands=_waits(cmds, deps, order),
        comments=[prog.comments[i] for i in order],
        slots=[prog.slots[i] for i in order] if prog.slots else prog.slots,
        layers=[moved_layer(li, where) for li in prog.layers],
        deps=[deps[i] for i in order])
