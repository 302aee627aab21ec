"""Cross-op weight prefetch, the planning half (:class:`Hoist`, :func:`plan_hoist`,
:func:`plan_pieces`); schedule/prefetch.py emits the planned loads (:class:`Prefetcher`).

The first weight blocks of a load-bound conv (the *consumer*) are loaded during the ops before
it (its *window*), into an area at the top of the SRAM, which those ops and the conv leave
free; each prefetch load is emitted right after a load of a window op that was followed by
LOAD-queue idle time in the program without prefetch. Once a prefetched block is done, its
place serves the consumer's later blocks. Several hoists may run at once: the areas of hoists
taken at the same time (their spans, window start to consumer, overlap) are stacked below
one another (the consumer run last on top), while a hoist whose window starts after another's
consumer may take that consumer's SRAM (:func:`hoist_spans`, ``busy``); the ops reserve the
union of the areas of the hoists whose window or consumer they are, and the hoists share the
measured idle time, the earliest consumer first (specs/target.md, "Weight prefetch").
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.isa.spec import PARAM_RECORD_BYTES, Queue
from tcc_compiler.schedule import cost
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.memory import MemoryPlan
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.tiling import align_up, plan_conv
from tcc_compiler.target import Target

#: Fewest bytes worth prefetching.
MIN_PREFETCH_BYTES = 16 * 1024

@dataclass(frozen=True)
class Hoist:
    """A cross-op weight prefetch: the first weight and parameter blocks of conv ``consumer``
    are loaded while the ops ``window`` (the ops just before it, in execution order) run, into
    the top ``area_bytes`` of the SRAM, which those ops and the consumer leave free.

    Attributes:
        consumer: IR name of the conv whose blocks are prefetched.
        window: IR names of the ops the prefetch loads are interleaved into, in order.
        area_bytes: SRAM bytes reserved below ``area_end`` (aligned).
        gaps: per window op, per LOAD command of the op (in emission order), the LOAD-queue
            idle cycles measured after that command in the program without the prefetch
            (:func:`plan_hoist`): the time a prefetch emitted right after it may take.
        eager: emit a pending block once the idle time gathered covers half its load time
            (True) or all of it (False).
        area_end: SRAM address just above the area (aligned); None: the SRAM's end. A hoist
            stacked below others ends where their areas begin.
        pack: the consumer's weight blocks are capped (:func:`block_cap`) so they pack its
            smallest area (set by :func:`plan_pieces`); else its tile plan picks them.
        lead: the idle time measured after a window op's k-th LOAD pays for prefetch loads
            emitted *before* that load (after its (k-1)-th, or as the op begins for k = 0)
            rather than after it. In the program without prefetch a load may follow the
            previous op's compute at once and the idle time open after it; once the
            prefetch areas are reserved, that same load may wait for the previous op's
            compute (its tile area moved into SRAM the previous op still uses), and
            prefetch loads queued behind it (the LOAD queue runs in order) would wait too
            (MobileNetV2: 54 us of LOAD idle during the second 56x56 block). Chosen by the
            search (schedule/search.py), per program: the Prefetcher leads when any of its
            hoists does.
    """

    consumer: str
    window: tuple[str, ...]
    area_bytes: int
    gaps: tuple[tuple[int, ...], ...]
    eager: bool = False
    area_end: int | None = None
    pack: bool = False
    lead: bool = False

    def area(self, t: Target) -> tuple[int, int]:
        """The SRAM byte interval [lo, hi) of the prefetch area (``area_end`` None: the top
        of the SRAM)."""
        hi = t.sram_capacity_bytes if self.area_end is None else self.area_end
        return hi - self.area_bytes, hi


def layer_commands(prog: Program, i: int) -> list[int]:
    """Indices of layer ``i``'s own commands (its ``cmds`` when they interleave with other
    ops', else its range)."""
    li = prog.layers[i]
    return list(li.cmds) if li.cmds is not None else list(range(li.first_cmd, li.end_cmd))


def stalled_convs(prog: Program, spans: list[tuple[int, int]],
                  skip: frozenset[str] = frozenset(), span_share: float = 0.25,
                  program_share: float = 0.01) -> list[tuple[int, int]]:
    """(stall cycles, layer index) of every conv/FC layer, not cascaded and not named in
    ``skip``, whose compute is stalled on its own loads (compute span minus compute cycles
    >= ``span_share`` of the span and >= ``program_share`` of the program), in execution
    order."""
    total = max((e for _, e in spans), default=0)
    out = []
    for i, li in enumerate(prog.layers):
        if li.plan.startswith("cascade") or li.kind not in ("conv", "fc") or li.name in skip:
            continue
        comp = [spans[k] for k in layer_commands(prog, i)
                if prog.commands[k].queue is Queue.COMPUTE]
        if not comp:
            continue
        span = max(e for _, e in comp) - min(s for s, _ in comp)
        stall = span - sum(e - s for s, e in comp)
        if stall >= span_share * span and stall >= program_share * total:
            out.append((stall, i))
    return out


@dataclass(frozen=True)
class _Unit:
    """One step of a prefetch window: a plain op, or a whole cascaded chain (its ops'
    commands interleave band by band, so they are one step).

    Attributes:
        name: the op's IR name; for a chain, its last op's (the name the lowering enters it
            by). layers: the layer indices it covers [first, last]. base: SRAM bytes below its
            tile area. top: its tile area's bytes. cmds: its command range [lo, hi).
    """

    name: str
    layers: tuple[int, int]
    base: int
    top: int
    cmds: tuple[int, int]


def _units(prog: Program, nodes: dict[str, Node], mem: MemoryPlan, ci: int) -> list[_Unit]:
    """The window steps before layer ``ci``, nearest first; stops at an op it cannot place
    (not an op of the graph, or commands interleaved with other ops' outside a chain)."""
    chain_of = {m.name: c.nodes[-1].name for c in mem.chains.values()
                for m in c.nodes + ([c.side] if c.side is not None else [])}
    out, j = [], ci - 1
    while j >= 0:
        li = prog.layers[j]
        last = chain_of.get(li.name)
        if last is None and (li.cmds is not None or li.name not in nodes):
            break
        j0 = j
        while last is not None and j0 > 0 and chain_of.get(prog.layers[j0 - 1].name) == last:
            j0 -= 1
        grp = prog.layers[j0:j + 1]
        name = last or li.name
        base = mem.base(nodes[name])
        out.append(_Unit(name, (j0, j), base, li.sram_peak_bytes - base,
                         (min(x.first_cmd for x in grp), max(x.end_cmd for x in grp))))
        j = j0 - 1
    return out


def _windows(units: list[_Unit], raw: int, gap_after: dict[int, int], t: Target,
             idle_share: float, ends: list[int]) -> list[tuple[float, int, int]]:
    """(prefetchable bytes, index in ``units`` of the window's first step, area) of every
    window before the consumer (``units``: :func:`_units`), the window starting at step
    ``u`` having an area that ends at ``ends[u]`` (:func:`_ends`), the shortest first (see
    :func:`plan_hoist`)."""
    al = t.sram_align_bytes
    out = []
    need, idle = 0, 0
    for u_i, u in enumerate(units):
        if u_i:
            need = max(need, u.base + u.top + units[u_i - 1].top)
        else:
            need = u.base + u.top
        area = min((ends[u_i] - need) // al * al, align_up(raw, al))
        if area <= 0:
            break
        idle += sum(gap_after.get(k, 0) for k in range(*u.cmds))
        out.append((min(area, cost.transfer_bytes(idle, t) * idle_share), u_i, area))
    return out


def hoist_spans(prog: Program, hoists, t: Target) -> tuple[tuple[int, int, int], ...]:
    """(first, last, lo) per hoist of ``hoists`` (planned on ``prog``, the program without
    prefetch): the indices in ``prog.layers`` of its window's first step (a cascaded chain is
    placed at its last op) and of its consumer -- the stretch of the program during which its
    area is taken -- and the lowest SRAM address of its area. Input of :func:`plan_hoist`'s
    ``busy``.

    Raises:
        KeyError: a hoist naming an op that is not a layer of ``prog``.
    """
    idx = {li.name: i for i, li in enumerate(prog.layers)}
    return tuple((idx[h.window[0] if h.window else h.consumer], idx[h.consumer], h.area(t)[0])
                 for h in hoists)


def _ends(units: list[_Unit], ci: int, top: int,
          busy: tuple[tuple[int, int, int], ...]) -> list[int]:
    """Per window step ``u`` (:func:`_units`, nearest first), the highest SRAM address the
    area of a hoist of layer ``ci`` whose window starts at ``u`` may reach: ``top``, or below
    the areas of the hoists in ``busy`` (:func:`hoist_spans`) taken during any of the
    window's steps or the consumer. A hoist whose window starts after another's consumer
    may use that consumer's SRAM: what it overwrites has been read by then (its loads wait
    for the consumer's last compute, :meth:`Emitter.free_any`)."""
    out, end = [], top
    for u in units:
        pos = u.layers[1]
        end = min([end] + [lo for first, last, lo in busy if first <= ci and last >= pos])
        out.append(end)
    return out


def _gap_after(prog: Program, spans: list[tuple[int, int]]) -> dict[int, int]:
    """LOAD command index -> LOAD-queue idle cycles between it and the next LOAD command."""
    loads = [i for i, c in enumerate(prog.commands) if c.queue is Queue.LOAD]
    return {a: max(0, spans[b][0] - spans[a][1]) for a, b in itertools.pairwise(loads)}


def _hoist(prog: Program, ci: int, units: list[_Unit], u0: int, area: int,
           area_end: int | None, gap_after: dict[int, int], eager: bool,
           pack: bool = False) -> Hoist:
    """The :class:`Hoist` of layer ``ci`` whose window is ``units[u0]`` .. ``units[0]``
    (:func:`_units`, nearest first)."""
    win = units[u0::-1]
    gaps = tuple(tuple(gap_after.get(k, 0) for k in range(*u.cmds)
                       if prog.commands[k].queue is Queue.LOAD) for u in win)
    return Hoist(prog.layers[ci].name, tuple(u.name for u in win), area, gaps, eager,
                 area_end, pack)


def plan_pieces(graph: Graph, mem: MemoryPlan, prog: Program, spans: list[tuple[int, int]],
                t: Target, eager: bool = False, idle_share: float = 1.0,
                consumer: int | None = None, area_end: int | None = None,
                busy: tuple[tuple[int, int, int], ...] = ()) -> tuple[Hoist, ...]:
    """:func:`plan_hoist`'s prefetch, split into up to three hoists of one
    consumer whose windows start earlier the higher their area lies: the ops before the
    chosen window often leave less SRAM free (larger tensors early in a network), but what
    they leave at the top of the area can be filled already while they run. With ``A(j)``
    the area the window starting at layer ``j`` allows (non-increasing as ``j`` moves
    earlier) and ``A0`` the chosen area, the pieces start at the chosen window, at the
    earliest layer with ``A(j) >= A0 / 2`` and at the earliest with ``A(j) >= 16 KiB``; the
    piece starting at ``j`` covers the bytes ``(A(j_prev), A(j)]`` below the area's end
    (``j_prev`` the next earlier piece). The pieces ``pack`` the consumer's blocks; they all
    end where the chosen window's area does (a window starting earlier, where a hoist of
    ``busy`` takes SRAM below that end, starts no piece). Empty when :func:`plan_hoist`
    finds nothing."""
    got = _plan(graph, mem, prog, spans, t, idle_share, consumer, area_end, busy)
    if got is None:
        return ()
    ci, units, u0, area, end, wins, gap_after, ends = got
    hi = None if end == t.sram_capacity_bytes else end
    # window steps are indexed nearest first: a larger index starts earlier
    avail = {u: min(a, area) for _, u, a in wins if u >= u0 and ends[u] == end}
    starts = {u0, max(u for u, a in avail.items() if a >= area // 2),
              max(u for u, a in avail.items() if a >= MIN_PREFETCH_BYTES)}
    pieces, below = [], 0
    for u in sorted(starts, reverse=True):
        top = area if u == u0 else avail[u]
        if top - below >= MIN_PREFETCH_BYTES:
            pieces.append(_hoist(prog, ci, units, u, top - below,
                                 end - below if below else hi, gap_after, eager,
                                 pack=True))
            below = top
    return tuple(pieces)


def _plan(graph: Graph, mem: MemoryPlan, prog: Program, spans: list[tuple[int, int]],
          t: Target, idle_share: float, consumer: int | None, area_end: int | None,
          busy: tuple[tuple[int, int, int], ...] = ()):
    """(consumer layer, window steps (:func:`_units`), index of the chosen window's first
    step, area, area end, every window (:func:`_windows`), LOAD gaps, per step the end of
    an area starting there (:func:`_ends`)) of :func:`plan_hoist`'s choice, or None."""
    gap_after = _gap_after(prog, spans)
    if consumer is None:
        stalled = stalled_convs(prog, spans)
        if not stalled:
            return None
        consumer = stalled[0][1]
    ci = consumer
    nodes = {m.name: m for m in graph.nodes}
    node = nodes[prog.layers[ci].name]
    if id(node) in mem.fused:   # a conv + lut epilogue plans its table's SRAM too
        return None
    g = conv_geom(node, t)
    raw = g.o * g.kernel_bytes + g.o * PARAM_RECORD_BYTES
    units = _units(prog, nodes, mem, ci)
    ends = _ends(units, ci, t.sram_capacity_bytes if area_end is None else area_end, busy)
    wins = _windows(units, raw, gap_after, t, idle_share, ends)
    best = max(wins, key=lambda w: (w[0], -wins.index(w)), default=None)
    if best is None or best[0] < MIN_PREFETCH_BYTES:
        return None
    _, u0, area = best
    end = ends[u0]
    res, c_base, al = mem.conv_residency(node, g), mem.base(node), t.sram_align_bytes
    while area >= MIN_PREFETCH_BYTES:   # the consumer's tiles must fit below the area
        try:
            plan_conv(g, t, end - c_base - area, res)
            break
        except ScheduleError:
            area = area // 2 // al * al
    else:
        return None
    return ci, units, u0, area, end, wins, gap_after, ends


def plan_hoist(graph: Graph, mem: MemoryPlan, prog: Program, spans: list[tuple[int, int]],
               t: Target, eager: bool = False, idle_share: float = 1.0,
               consumer: int | None = None, area_end: int | None = None,
               busy: tuple[tuple[int, int, int], ...] = ()) -> Hoist | None:
    """Choose a cross-op weight prefetch (:class:`Hoist`) from a replayed program (``spans``:
    :func:`cost.replay` of ``prog.commands``; ``mem``: the memory plan it was lowered with).

    The consumer is layer ``consumer`` if given, else the first conv whose compute is stalled
    on its own loads (:func:`stalled_convs`). The window is the run
    of ops just before it (a cascaded chain counts as one step, its band buffers as its
    footprint) with the most prefetchable bytes
    ``min(area, idle)`` (the shortest of equals): ``area`` is the SRAM above the tile areas of
    every two consecutive ops of the window and the consumer (base + both footprints, so they
    still take opposite ends of what is left and need not wait for each other), ``idle`` the
    LOAD-queue idle cycles after the window's LOAD commands times the DRAM bytes per cycle.
    The consumer's tiles must fit below the area (it is halved until they do). ``area_end``:
    no area goes above it (aligned), None: the SRAM's end. ``busy``: the hoists planned
    before it (:func:`hoist_spans`); the area of a window ends below the areas of those
    whose window or consumer overlaps its window or consumer in execution order, and may
    take the SRAM of the others (their consumers ran before it starts: the SRAM is handed
    on from one consumer to a later one, specs/target.md "Weight prefetch"). None when
    under 16 KiB would be prefetched.
    """
    got = _plan(graph, mem, prog, spans, t, idle_share, consumer, area_end, busy)
    if got is None:
        return None
    ci, units, u0, area, end, _, gap_after, _ = got
    hi = None if end == t.sram_capacity_bytes else end
    return _hoist(prog, ci, units, u0, area, hi, gap_after, eager)
