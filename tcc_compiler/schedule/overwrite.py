"""Residual outputs written over their shortcut in the SRAM resident zone.

A conv with a fused residual add (input 3, the *shortcut*) reads each shortcut element only
for the output element at the same position (the epilogue's "same elements" rule,
specs/isa.md CONV_TILE: the shortcut box is the output box, each element read before it is
written). When that conv is the shortcut's last reader and both tensors are kept resident,
the output may take the shortcut's own SRAM bytes: no tile reads a shortcut element after an
earlier tile (or the same one) wrote the output element there. A ResNet bottleneck block
then needs one block tensor on chip, not two (ResNet-50 224, layer3: the resident zone's top
during the block drops from 451,584 to 250,880 bytes, SRAM left to weight prefetch).

:func:`overwrite_pairs` finds the (shortcut, output) pairs; :func:`merge` turns them into
one buffer per chain of pairs (a block's output is the next block's shortcut), which the
resident-zone planner (schedule/memory.py) keeps resident whole or not at all.
Used only where :func:`~tcc_compiler.schedule.memory.plan_memory` is asked to
(``overwrite``: the one-core search on networks without depthwise layers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tcc_compiler.ir.graph import Node, Value
from tcc_compiler.ir.ops import Op
from tcc_compiler.schedule.arena import Buffer


def overwrite_pairs(nodes: Iterable[Node], step: dict[int, int], bufs: dict[int, Buffer],
                    readers: Callable[[Value], list[Node]],
                    conv_output: Callable[[Node], Value],
                    excluded: frozenset[int] | set[int]) -> list[tuple[Value, Value]]:
    """(shortcut, output) of every conv among ``nodes`` that may write its output over its
    shortcut: both have a buffer of the same size (``bufs``, id(value) -> its liveness
    :class:`Buffer`; no view, network output or cascaded intermediate has one), the conv
    reads the shortcut only as input 3 and is, at its ``step`` (id(node) -> op step), its
    last reader (``readers``: every op reading a value or an alias of its buffer), and
    the conv is not in ``excluded`` (ids of nodes in cascaded chains, whose bands
    interleave with other ops'). ``conv_output``: the value a conv writes (its fused
    table's output when it has one)."""
    out = []
    for n in nodes:
        sc = n.input(3) if n.op is Op.CONV else None
        if sc is None or id(n) in excluded:
            continue
        o = conv_output(n)
        bs, bo = bufs.get(id(sc)), bufs.get(id(o))
        if bs is None or bo is None or bs.size_bytes != bo.size_bytes or sc is o:
            continue
        if any(v is sc for v in n.inputs[:3]) or any(v is sc for v in n.inputs[4:]):
            continue
        k = step[id(n)]
        if bs.last != k or any(r is not n and step.get(id(r), k + 1) >= k
                               for r in readers(sc)):
            continue
        out.append((sc, o))
    return out


def merge(bufs: list[tuple[Value, Buffer]],
          pairs: list[tuple[Value, Value]]) -> list[tuple[list[Value], Buffer]]:
    """``bufs`` grouped: the values joined by ``pairs`` (transitively) share one buffer of
    their largest size, live from the first member's first step to the last one's last.
    Groups keep the order of their first member in ``bufs``; an unpaired value is a group of
    one with its own buffer (the same object)."""
    parent: dict[int, int] = {id(v): id(v) for v, _ in bufs}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(id(a)), find(id(b))
        if ra != rb:
            parent[rb] = ra
    members: dict[int, list[tuple[Value, Buffer]]] = {}
    for v, b in bufs:
        members.setdefault(find(id(v)), []).append((v, b))
    out = []
    for grp in members.values():
        if len(grp) == 1:
            out.append(([grp[0][0]], grp[0][1]))
            continue
        bs = [b for _, b in grp]
        out.append(([v for v, _ in grp],
                    Buffer("+".join(b.key for b in bs), max(b.size_bytes for b in bs),
                           min(b.first for b in bs), max(b.last for b in bs))))
    return out


def keep_overwrites(bufs: list[tuple[Value, Buffer]], pairs: list[tuple[Value, Value]],
                    plan: Callable[[list[tuple[list[Value], Buffer]]], tuple[dict, int, set[int]]],
                    readers: Callable[[Value], list[Node]]) -> tuple[dict, int, set[int]]:
    """The resident zone ``plan`` makes of ``bufs`` (groups of :func:`merge`; it returns
    (id(value) -> Resident, zone bytes used, ids of the resident values)) with those chains
    of ``pairs`` (:func:`chains_of`, in order) merged that make it :func:`better`, each tried
    on top of the chains kept before it."""
    best, kept = plan(merge(bufs, [])), []
    for chain in chains_of(pairs):
        got = plan(merge(bufs, kept + chain))
        if better(bufs, got[::2], best[::2], readers):
            best, kept = got, kept + chain
    return best


def chains_of(pairs: list[tuple[Value, Value]]) -> list[list[tuple[Value, Value]]]:
    """``pairs`` split into chains (a block's output is the next block's shortcut: the pairs
    sharing a value, transitively), each in the given order, the chains by first pair."""
    out: list[list[tuple[Value, Value]]] = []
    where: dict[int, int] = {}   # id(value) -> its chain
    for a, b in pairs:
        ks = sorted({where[id(v)] for v in (a, b) if id(v) in where})
        if not ks:
            ks = [len(out)]
            out.append([])
        k = ks[0]
        for j in ks[1:]:   # the pair joins two chains: the later one moves into the first
            out[k] += out[j]
            for x, y in out[j]:
                where[id(x)] = where[id(y)] = k
            out[j] = []
        out[k].append((a, b))
        where[id(a)] = where[id(b)] = k
    return [c for c in out if c]


def better(bufs: list[tuple[Value, Buffer]], merged: tuple[dict, set[int]],
           alone: tuple[dict, set[int]], readers: Callable[[Value], list[Node]]) -> bool:
    """Whether the resident zone planned with the pairs merged (``merged``: id(value) -> its
    :class:`~tcc_compiler.schedule.program.Resident`, ids of the resident values) beats the
    one planned without (``alone``): it saves at least as many DRAM bytes (a resident
    tensor's size times one store plus one load per reader, ``readers``) and the top of the
    resident tensors live at each op step, summed over the steps (every op's tile area
    starts there), is lower. ``bufs``: every tensor's liveness :class:`Buffer`."""
    def saved(ids: set[int]) -> int:
        return sum(b.size_bytes * (1 + len(readers(v))) for v, b in bufs if id(v) in ids)

    def tops(res: dict) -> int:
        top: dict[int, int] = {}
        for v, b in bufs:
            r = res.get(id(v))
            if r is not None:
                for i in range(b.first, b.last + 1):
                    top[i] = max(top.get(i, 0), r.sram + r.nbytes)
        return sum(top.values())
    return saved(merged[1]) >= saved(alone[1]) and tops(merged[0]) < tops(alone[0])
