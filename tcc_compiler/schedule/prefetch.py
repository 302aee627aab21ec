"""Cross-op weight prefetch (:class:`Hoist`, :func:`plan_hoist`, :class:`Prefetcher`).

The first weight blocks of a load-bound conv (the *consumer*) are loaded during the ops before
it (its *window*), into an area at the top of the SRAM, which those ops and the conv leave
free; each prefetch load is emitted right after a load of a window op that was followed by
LOAD-queue idle time in the program without prefetch. Once a prefetched block is done, its
place serves the consumer's later blocks. Several hoists may run at once: their areas are
stacked below one another (the consumer run last on top), the ops reserve the union of the
areas of the hoists whose window or consumer they are, and the hoists share the measured idle
time, the earliest consumer first (specs/target.md, "Weight prefetch").
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from tcc_compiler.errors import InternalError, ScheduleError
from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.ir.ops import Op
from tcc_compiler.isa.spec import PARAM_RECORD_BYTES, Queue
from tcc_compiler.isa.wcodec import Block
from tcc_compiler.schedule import cost
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.memory import MemoryPlan
from tcc_compiler.schedule.ops.context import OpContext, new_info
from tcc_compiler.schedule.ops.conv import Prefetched, conv_setup
from tcc_compiler.schedule.program import SLOT_PARAMS, SLOT_WEIGHTS, Program
from tcc_compiler.schedule.tiling import align_up, plan_conv
from tcc_compiler.target import Target

#: Fewest bytes worth prefetching.
MIN_PREFETCH_BYTES = 16 * 1024

#: Weight blocks a prefetch consumer's smallest area holds at least (:func:`block_cap`).
BLOCKS_PER_AREA = 4


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
    """

    consumer: str
    window: tuple[str, ...]
    area_bytes: int
    gaps: tuple[tuple[int, ...], ...]
    eager: bool = False
    area_end: int | None = None
    pack: bool = False

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
                  skip: frozenset[str] = frozenset()) -> list[tuple[int, int]]:
    """(stall cycles, layer index) of every conv/FC layer, not cascaded and not named in
    ``skip``, whose compute is stalled on its own loads (compute span minus compute cycles
    >= 25% of the span and >= 1% of the program), in execution order."""
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
        if stall >= 0.25 * span and stall >= 0.01 * total:
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
             idle_share: float, area_end: int) -> list[tuple[float, int, int]]:
    """(prefetchable bytes, index in ``units`` of the window's first step, area) of every
    window before the consumer (``units``: :func:`_units`) for an area ending at
    ``area_end``, the shortest first (see :func:`plan_hoist`)."""
    al = t.sram_align_bytes
    out = []
    need, idle = 0, 0
    for u_i, u in enumerate(units):
        if u_i:
            need = max(need, u.base + u.top + units[u_i - 1].top)
        else:
            need = u.base + u.top
        area = min((area_end - need) // al * al, align_up(raw, al))
        if area <= 0:
            break
        idle += sum(gap_after.get(k, 0) for k in range(*u.cmds))
        out.append((min(area, cost.transfer_bytes(idle, t) * idle_share), u_i, area))
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
                consumer: int | None = None,
                area_end: int | None = None) -> tuple[Hoist, ...]:
    """:func:`plan_hoist`'s prefetch, split into up to three hoists of one
    consumer whose windows start earlier the higher their area lies: the ops before the
    chosen window often leave less SRAM free (larger tensors early in a network), but what
    they leave at the top of the area can be filled already while they run. With ``A(j)``
    the area the window starting at layer ``j`` allows (non-increasing as ``j`` moves
    earlier) and ``A0`` the chosen area, the pieces start at the chosen window, at the
    earliest layer with ``A(j) >= A0 / 2`` and at the earliest with ``A(j) >= 16 KiB``; the
    piece starting at ``j`` covers the bytes ``(A(j_prev), A(j)]`` below the area's end
    (``j_prev`` the next earlier piece). The pieces ``pack`` the consumer's blocks. Empty
    when :func:`plan_hoist` finds nothing."""
    got = _plan(graph, mem, prog, spans, t, idle_share, consumer, area_end)
    if got is None:
        return ()
    ci, units, u0, area, end, wins, gap_after = got
    # window steps are indexed nearest first: a larger index starts earlier
    avail = {u: min(a, area) for _, u, a in wins if u >= u0}
    starts = {u0, max(u for u, a in avail.items() if a >= area // 2),
              max(u for u, a in avail.items() if a >= MIN_PREFETCH_BYTES)}
    pieces, below = [], 0
    for u in sorted(starts, reverse=True):
        top = area if u == u0 else avail[u]
        if top - below >= MIN_PREFETCH_BYTES:
            pieces.append(_hoist(prog, ci, units, u, top - below,
                                 end - below if below else area_end, gap_after, eager,
                                 pack=True))
            below = top
    return tuple(pieces)


def _plan(graph: Graph, mem: MemoryPlan, prog: Program, spans: list[tuple[int, int]],
          t: Target, idle_share: float, consumer: int | None, area_end: int | None):
    """(consumer layer, window steps (:func:`_units`), index of the chosen window's first
    step, area, area end, every window (:func:`_windows`), LOAD gaps) of :func:`plan_hoist`'s
    choice, or None."""
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
    end = t.sram_capacity_bytes if area_end is None else area_end
    units = _units(prog, nodes, mem, ci)
    wins = _windows(units, raw, gap_after, t, idle_share, end)
    best = max(wins, key=lambda w: (w[0], -wins.index(w)), default=None)
    if best is None or best[0] < MIN_PREFETCH_BYTES:
        return None
    _, u0, area = best
    res, c_base, al = mem.conv_residency(node, g), mem.base(node), t.sram_align_bytes
    while area >= MIN_PREFETCH_BYTES:   # the consumer's tiles must fit below the area
        try:
            plan_conv(g, t, end - c_base - area, res)
            break
        except ScheduleError:
            area = area // 2 // al * al
    else:
        return None
    return ci, units, u0, area, end, wins, gap_after


def plan_hoist(graph: Graph, mem: MemoryPlan, prog: Program, spans: list[tuple[int, int]],
               t: Target, eager: bool = False, idle_share: float = 1.0,
               consumer: int | None = None, area_end: int | None = None) -> Hoist | None:
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
    the area ends there (aligned; below the areas of hoists planned before it), None: at the
    SRAM's end. None when under 16 KiB would be prefetched.
    """
    got = _plan(graph, mem, prog, spans, t, idle_share, consumer, area_end)
    if got is None:
        return None
    ci, units, u0, area, _, _, gap_after = got
    return _hoist(prog, ci, units, u0, area, area_end, gap_after, eager)


def block_cap(g, area_bytes: int, t: Target) -> int:
    """Most output channels per weight block of a prefetch consumer of geometry ``g`` whose
    smallest prefetch area has ``area_bytes``: :data:`BLOCKS_PER_AREA` blocks (weights and
    parameters) fill that area, rounded down to whole MAC-array widths (at least one), so an
    area is not left mostly empty by blocks that do not fit it whole."""
    per_channel = g.kernel_bytes + PARAM_RECORD_BYTES
    ao = t.array_out_channels
    return max(ao, area_bytes // BLOCKS_PER_AREA // per_channel // ao * ao)


def block_cycles(block: Block, t: Target) -> int:
    """LOAD-queue cycles of one block's load (DMA_LOAD_Z if compressed, else DMA_LOAD)."""
    if block.compressed:
        return cost.dma_z_cycles(block.stored_bytes, block.raw_bytes, t)
    return cost.dma_cycles(block.stored_bytes, t)


class Prefetcher:
    """Emits the prefetch loads of one or more :class:`Hoist` s while their window ops are
    lowered.

    The lowering calls :meth:`enter` before every op (it plans a consumer ahead at the first
    op of its longest window, sets the op's SRAM reserve and drains a consumer's pending
    blocks), :meth:`take` to lower a consumer and :meth:`finish` at the end; the emitter's
    ``on_load`` hook calls :meth:`after_load`, which spends the LOAD-queue idle time measured
    after the op's loads (``Hoist.gaps``) on pending blocks whose window is running, those of
    the earliest consumer first. A consumer may have several hoists (*pieces*: disjoint areas
    with windows of different lengths); its first blocks go to the piece with the longest
    window.

    Attributes:
        hoists: the hoists, in their consumers' execution order (longest window first).
        cmds: indices of the prefetch commands emitted so far (all hoists).
    """

    def __init__(self, hoists: Hoist | tuple[Hoist, ...], graph: Graph) -> None:
        """Raises InternalError: a consumer that is not an op of ``graph``, or two hoists whose
        areas overlap."""
        pos = {n.name: i for i, n in enumerate(graph.nodes)}
        hs = (hoists,) if isinstance(hoists, Hoist) else tuple(hoists)
        for h in hs:
            if h.consumer not in pos:
                raise InternalError(f"prefetch consumer '{h.consumer}' is not in the graph")
        self.hoists = tuple(sorted(hs, key=lambda h: (pos[h.consumer], -len(h.window))))
        self.graph = graph
        self.cmds: list[int] = []
        self._win = [frozenset(h.window) for h in self.hoists]
        self._gaps_of: dict[str, tuple[int, ...]] = {}   # window op -> Hoist.gaps entry
        for h in self.hoists:
            for name, gaps in zip(h.window, h.gaps):
                self._gaps_of.setdefault(name, gaps)
        self._started: set[int] = set()     # hoists (indices) whose window began
        # per consumer: blocks to prefetch (hoist index, block, w SRAM, p SRAM, blocks),
        # blocks done (block -> (w SRAM, p SRAM, params load)), its pre-planned lowering
        # (plan, blobs, cfg, info) and its prefetch commands
        self._pending: dict[str, list[tuple[int, int, int, int, Block, Block]]] = {}
        self._done: dict[str, dict[int, tuple]] = {}
        self._pre: dict[str, tuple] = {}
        self._mine: dict[str, list[int]] = {h.consumer: [] for h in self.hoists}
        self._credit = 0.0                   # LOAD idle cycles gathered for prefetches
        self._gaps: tuple[int, ...] = ()     # the current op's Hoist.gaps entry
        self._load_ord = 0                   # LOAD commands the current op emitted so far
        self._busy = False                   # emitting a prefetch load
        self._ctx: OpContext | None = None

    def check_areas(self, t: Target) -> None:
        """Raises InternalError: two hoists' areas overlap."""
        areas = sorted(h.area(t) for h in self.hoists)
        for (_, hi), (lo, _) in itertools.pairwise(areas):
            if lo < hi:
                raise InternalError("prefetch areas overlap")

    def _active(self, name: str) -> list[Hoist]:
        """The hoists whose window or consumer is op ``name``."""
        return [h for h, w in zip(self.hoists, self._win) if name == h.consumer or name in w]

    def reserve(self, name: str, t: Target) -> int:
        """SRAM bytes at the top op ``name`` leaves to prefetch areas: down to the lowest
        area of the hoists whose window or consumer it is (0: none)."""
        act = self._active(name)
        return t.sram_capacity_bytes - min(h.area(t)[0] for h in act) if act else 0

    def consumer_plan(self, n: Node, mem: MemoryPlan, t: Target, pack: bool | None = None):
        """The tile plan (:func:`plan_conv`) of consumer ``n`` under ``mem``: in the SRAM
        above its base and below the areas it reserves, its blocks capped by
        :func:`block_cap` of its smallest area when one of its hoists asks to ``pack`` (or,
        with ``pack`` given, when that is True).

        Raises:
            ScheduleError: no tile fits.
        """
        g = conv_geom(n, t)
        budget = t.sram_capacity_bytes - mem.base(n) - self.reserve(n.name, t)
        mine = [h for h in self.hoists if h.consumer == n.name]
        pack = any(h.pack for h in mine) if pack is None else pack
        cap = block_cap(g, min(h.area_bytes for h in mine), t) if pack else None
        return plan_conv(g, t, budget, mem.conv_residency(n, g), cap)

    def enter_chain(self, ctx: OpContext, name: str) -> None:
        """Before lowering a cascaded chain whose last op is ``name``: as :meth:`enter` for
        an op of a window (a chain is one window step; it is never a consumer).

        Raises:
            InternalError: the chain is a consumer.
        """
        if any(h.consumer == name for h in self.hoists):
            raise InternalError(f"prefetch consumer '{name}' is a cascaded op")
        self._enter_window(ctx, name)

    def begin(self, ctx: OpContext, consumer: str) -> None:
        """Plan ``consumer`` ahead of its windows: its tile plan under the SRAM it will have
        (below the prefetch areas reserved while it runs; blocks capped by
        :func:`block_cap` when a hoist asks to ``pack``), its weight blocks (added to the
        WEIGHTS region now) and the list of its first blocks, in the order its tiles use
        them, that fit its hoists' areas (the longest window's first), each given a fixed SRAM
        place there.

        Raises:
            InternalError: the consumer is not a conv/FC of the graph.
        """
        t = ctx.t
        n = next((m for m in self.graph.nodes if m.name == consumer), None)
        if n is None or n.op not in (Op.CONV, Op.FC):
            raise InternalError(f"prefetch consumer '{consumer}' is not a conv of the graph")
        g = conv_geom(n, t)
        plan = self.consumer_plan(n, ctx.mem, t)
        info = new_info(n)
        blobs, cfg = conv_setup(ctx.weights, t, n, g, min(plan.ocb, g.o), info, ctx.memo)
        self._pre[consumer] = (plan, blobs, cfg, info)
        al = t.sram_align_bytes
        pending = self._pending[consumer] = []
        self._done[consumer] = {}
        # merged blocks (schedule/ops/conv.py conv_setup) carry their records after the weights
        params = blobs.param_blocks or [None] * len(blobs.weight_blocks)
        blocks = list(enumerate(zip(blobs.weight_blocks, params)))
        for i, h in enumerate(self.hoists):
            if h.consumer != consumer:
                continue
            off, hi = h.area(t)
            while blocks:
                k, (wb, pb) = blocks[0]
                need = align_up(wb.raw_bytes, al) + (align_up(pb.raw_bytes, al) if pb else 0)
                if off + need > hi:
                    break
                p_off = (off + align_up(wb.raw_bytes, al) if pb else
                         off + wb.raw_bytes - (wb.c1 - wb.c0) * PARAM_RECORD_BYTES)
                pending.append((i, k, off, p_off, wb, pb))
                off += need
                blocks.pop(0)

    def enter(self, ctx: OpContext, n: Node) -> None:
        """Before lowering op ``n`` (after ``ctx.op_res`` is set): start the hoists whose
        window begins at ``n`` (planning their consumer at its first); reserve the areas of
        the hoists whose window or consumer ``n`` is; before a consumer, drain what is left of
        its blocks (it also reads its areas).

        Raises:
            InternalError: a consumer whose windows never began.
        """
        self._enter_window(ctx, n.name)
        mine = [h for h in self.hoists if h.consumer == n.name]
        if not mine:
            return
        if n.name not in self._pre:
            raise InternalError(f"prefetch window of '{n.name}' never began")
        while self._pending[n.name]:   # whatever the window ops had no idle time for
            self._prefetch_one(n.name)
        ctx.op_res.extend(h.area(ctx.t) for h in mine)

    def _enter_window(self, ctx: OpContext, name: str) -> None:
        """Start the hoists whose window begins at op ``name`` (planning their consumer at
        its first), take the op's measured LOAD gaps and reserve its prefetch areas."""
        self._gaps, self._load_ord, self._ctx = (), 0, ctx
        for i, h in enumerate(self.hoists):
            if h.window and name == h.window[0]:
                if h.consumer not in self._pre:
                    self.begin(ctx, h.consumer)
                self._started.add(i)
        if any(name in w for w in self._win):
            self._gaps = self._gaps_of.get(name, ())
        ctx.reserve = self.reserve(name, ctx.t)

    def take(self, n: Node) -> Prefetched | None:
        """The consumer's pre-planned lowering (None for any other op)."""
        if n.name not in self._pre:
            return None
        plan, blobs, cfg, info = self._pre.pop(n.name)
        return Prefetched(plan, blobs, cfg, info.weight_bytes, info.weight_raw_bytes,
                          info.weight_file_bytes, self._done.pop(n.name))

    def consumer_cmds(self, name: str) -> list[int] | None:
        """The prefetch commands emitted for consumer ``name`` (None: not a consumer)."""
        return list(self._mine[name]) if name in self._mine else None

    def finish(self) -> None:
        """After the last op. Raises InternalError when blocks were never emitted."""
        left = [c for c, p in self._pending.items() if p] + list(self._pre)
        if left:
            raise InternalError(f"prefetch consumer '{left[0]}' never lowered")

    def _prefetch_one(self, consumer: str, j: int = 0) -> None:
        """Emit the loads of ``consumer``'s ``j``-th pending block (weights, then parameters;
        one load for a merged block) into its place in a prefetch area; each waits only for
        the latest earlier op whose SRAM overlaps it (the ops in the window leave the area
        alone)."""
        _, k, w_off, p_off, wb, pb = self._pending[consumer].pop(j)
        em = self._ctx.em
        lab = f"{consumer} prefetch"
        self._busy = True
        mine = self._mine[consumer]
        mine.append(em.n_cmds)
        self.cmds.append(em.n_cmds)
        dep = em.load_block(em.free_any(w_off, wb.raw_bytes),
                            lab + (" weights" if pb else " weights+params"), SLOT_WEIGHTS, wb,
                            w_off)
        if pb is not None:
            mine.append(em.n_cmds)
            self.cmds.append(em.n_cmds)
            dep = em.load_block(em.free_any(p_off, pb.raw_bytes), lab + " params",
                                SLOT_PARAMS, pb, p_off)
        self._busy = False
        self._done[consumer][k] = (w_off, p_off, dep)

    def _next(self) -> tuple[str, int] | None:
        """(consumer, pending index) of the next block to prefetch: the first pending block,
        of the earliest consumer, whose hoist's window has begun; None: none."""
        for c in dict.fromkeys(h.consumer for h in self.hoists):
            if c not in self._pre:
                continue
            j = next((j for j, p in enumerate(self._pending[c]) if p[0] in self._started),
                     None)
            if j is not None:
                return c, j
        return None

    def after_load(self) -> None:
        """After a LOAD command of the current op: add the idle time measured after it
        (:attr:`Hoist.gaps`) to the credit and emit the pending blocks the credit pays for,
        those of the earliest consumer whose window is running first. With no block to emit
        the credit is dropped, so a window starting later does not flood the LOAD queue with
        idle time gathered before it began."""
        if self._busy or not self._gaps:
            return
        i, self._load_ord = self._load_ord, self._load_ord + 1
        self._credit += self._gaps[i] if i < len(self._gaps) else 0
        t = self._ctx.t
        while True:
            nxt = self._next()
            if nxt is None:   # idle time no window can use now is gone, not saved up
                self._credit = 0.0
                return
            c, j = nxt
            hi, _, _, _, wb, pb = self._pending[c][j]
            cyc = block_cycles(wb, t) + (block_cycles(pb, t) if pb else 0)
            if cyc > (2 if self.hoists[hi].eager else 1) * self._credit:
                return
            self._credit = max(0.0, self._credit - cyc)
            self._prefetch_one(c, j)
