"""Cross-op weight prefetch, the emitting half (:class:`Prefetcher`): the loads of the
:class:`~tcc_compiler.schedule.hoist.Hoist` s that schedule/hoist.py plans, interleaved with
the lowering of their window ops.

The first weight blocks of a load-bound conv (the *consumer*) are loaded during the ops before
it (its *window*), into an area at the top of the SRAM, which those ops and the conv leave
free; each prefetch load is emitted right after a load of a window op that was followed by
LOAD-queue idle time in the program without prefetch. Once a prefetched block is done, its
place serves the consumer's later blocks. Several hoists may run at once: hoists live at the
same time (a window or consumer of one overlapping the other's, in execution order) have their
areas stacked below one another, while a hoist whose window begins after another's consumer
may reuse that consumer's SRAM (its loads wait for the consumer's last compute there); the
ops reserve the union of the areas of the hoists whose window or consumer they are, and the
hoists share the measured idle time, the earliest consumer first (specs/target.md, "Weight
prefetch").
"""

from __future__ import annotations

import itertools

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.ir.ops import Op
from tcc_compiler.isa.spec import PARAM_RECORD_BYTES
from tcc_compiler.isa.wcodec import Block
from tcc_compiler.schedule import cost
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.hoist import (MIN_PREFETCH_BYTES, Hoist, layer_commands,
                                         plan_hoist, plan_pieces, stalled_convs)
from tcc_compiler.schedule.memory import MemoryPlan
from tcc_compiler.schedule.ops.context import OpContext, new_info
from tcc_compiler.schedule.ops.convsetup import Prefetched, conv_setup
from tcc_compiler.schedule.ops.convslots import COARSE_FACTOR
from tcc_compiler.schedule.program import SLOT_PARAMS, SLOT_WEIGHTS
from tcc_compiler.schedule.tiling import align_up, plan_conv
from tcc_compiler.target import Target

__all__ = ["BLOCKS_PER_AREA", "COARSE_PER_AREA", "MIN_PREFETCH_BYTES", "Hoist", "Prefetcher",
           "block_cap", "block_cycles", "layer_commands", "plan_hoist", "plan_pieces",
           "stalled_convs"]

#: Weight blocks a prefetch consumer's smallest area holds at least (:func:`block_cap`).
BLOCKS_PER_AREA = 4

#: The same in a lowering with coarse blocks (``Lowering.coarse_wide``,
#: schedule/coarsewide.py): blocks :data:`COARSE_FACTOR` times as wide where the area holds
#: them (EfficientNet-Lite0 224's conv head, compute-bound after the saturated LOAD queue:
#: 10 tiles of 128 channels instead of 20 of 64, one tile's fixed cost each fewer,
#: 471,828 -> 471,188 cycles); an area too small for :data:`BLOCKS_PER_AREA` one-array-wide
#: blocks (its classifier's) keeps blocks of one array width.
COARSE_PER_AREA = BLOCKS_PER_AREA // COARSE_FACTOR


def block_cap(g, area_bytes: int, t: Target, per_area: int = BLOCKS_PER_AREA) -> int:
    """Most output channels per weight block of a prefetch consumer of geometry ``g`` whose
    smallest prefetch area has ``area_bytes``: ``per_area`` blocks (weights and parameters;
    :data:`BLOCKS_PER_AREA`, or :data:`COARSE_PER_AREA` with coarse blocks) fill that area,
    rounded down to whole MAC-array widths (at least one), so an area is not left mostly empty
    by blocks that do not fit it whole."""
    per_channel = g.kernel_bytes + PARAM_RECORD_BYTES
    ao = t.array_out_channels
    return max(ao, area_bytes // per_area // per_channel // ao * ao)


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

    def __init__(self, hoists: Hoist | tuple[Hoist, ...], graph: Graph,
                 coarse: bool = False) -> None:
        """``coarse``: a packed consumer's blocks are capped by :data:`COARSE_PER_AREA`
        blocks per area instead of :data:`BLOCKS_PER_AREA` (:meth:`consumer_plan`);
        :attr:`coarsened` tells whether that widened a consumer's cap.

        Raises InternalError: a consumer that is not an op of ``graph``."""
        pos = {n.name: i for i, n in enumerate(graph.nodes)}
        hs = (hoists,) if isinstance(hoists, Hoist) else tuple(hoists)
        for h in hs:
            if h.consumer not in pos:
                raise InternalError(f"prefetch consumer '{h.consumer}' is not in the graph")
        self.hoists = tuple(sorted(hs, key=lambda h: (pos[h.consumer], -len(h.window))))
        self._consumers = tuple(dict.fromkeys(h.consumer for h in self.hoists))   # in order
        self.graph = graph
        self.per_area = COARSE_PER_AREA if coarse else BLOCKS_PER_AREA
        self.coarsened = False
        self._pos = pos
        self.cmds: list[int] = []
        self._win = [frozenset(h.window) for h in self.hoists]
        # op name -> the hoists whose window or consumer it is (:meth:`_active`, asked before
        # every op of every lowering), and -> the indices of those whose window starts there
        self._act: dict[str, tuple[Hoist, ...]] = {}
        self._starts: dict[str, tuple[int, ...]] = {}
        for i, h in enumerate(self.hoists):
            for name in dict.fromkeys((*h.window, h.consumer)):
                self._act[name] = self._act.get(name, ()) + (h,)
            if h.window:
                self._starts[h.window[0]] = self._starts.get(h.window[0], ()) + (i,)
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
        self._lead = any(h.lead for h in self.hoists)   # see Hoist.lead
        self._gaps: tuple[int, ...] = ()     # the current op's Hoist.gaps entry
        self._load_ord = 0                   # LOAD commands the current op emitted so far
        self._busy = False                   # emitting a prefetch load
        self._ctx: OpContext | None = None
        #: the hoists whose :attr:`Hoist.eager` decided a block's emission at least once
        #: (:meth:`_spend`; see :attr:`eager_decided`)
        self._tipped: set[Hoist] = set()

    #: The attributes :meth:`checkpoint` carries (the others are fixed by the hoists and
    #: the graph); :meth:`checkpoint` refuses a Prefetcher with any attribute not named
    #: here or in :data:`_FIXED`, so a new one cannot be left out of a resumed lowering.
    _STATE = ("cmds", "_started", "_pending", "_done", "_pre", "_mine", "_credit", "_gaps",
              "_load_ord", "_busy", "_ctx", "_tipped")
    #: (``per_area`` and ``coarsened`` differ from their defaults only with ``coarse``, whose
    #: lowering is never recorded nor resumed: Lowering.coarse_wide)
    _FIXED = ("hoists", "_consumers", "graph", "_pos", "_win", "_act", "_starts", "_gaps_of",
              "_lead", "per_area",
              "coarsened")
    _KNOWN = frozenset(_STATE + _FIXED)

    def checkpoint(self) -> tuple:
        """The state between two ops, for :meth:`resume` (schedule/resume.py).

        Raises:
            InternalError: an attribute neither :data:`_STATE` nor :data:`_FIXED` names.
        """
        extra = vars(self).keys() - self._KNOWN
        if extra:
            raise InternalError(f"Prefetcher.checkpoint: attributes {sorted(extra)} unknown")
        return (self.hoists, self._lead, list(self.cmds), set(self._started),
                {c: list(p) for c, p in self._pending.items()},
                {c: dict(d) for c, d in self._done.items()}, dict(self._pre),
                {c: list(m) for c, m in self._mine.items()}, self._credit, self._gaps,
                self._load_ord, self._busy, frozenset(self._tipped))

    def resume(self, cp: tuple) -> None:
        """Take the state of checkpoint ``cp`` of a Prefetcher whose hoists are some of this
        one's, with the same :attr:`Hoist.lead`; the others' windows and consumers must not
        have begun (the state before the first op any of them acts on).

        Raises:
            InternalError: a hoist of ``cp`` that is not one of this one's, or another lead.
        """
        (hoists, lead, cmds, started, pending, done, pre, mine, credit, gaps, load_ord,
         busy, tipped) = cp
        remap, free = {}, list(range(len(self.hoists)))
        for i, h in enumerate(hoists):
            j = next((j for j in free if self.hoists[j] == h), None)
            if j is None:
                raise InternalError(f"Prefetcher.resume: hoist of '{h.consumer}' not here")
            remap[i] = j
            free.remove(j)
        if hoists and lead != self._lead:
            raise InternalError("Prefetcher.resume: another lead")
        self.cmds = list(cmds)
        self._started = {remap[i] for i in started}
        self._pending = {c: [(remap[p[0]], *p[1:]) for p in ps] for c, ps in pending.items()}
        self._done = {c: dict(d) for c, d in done.items()}
        self._pre = dict(pre)
        self._mine.update({c: list(m) for c, m in mine.items()})
        self._credit, self._gaps, self._load_ord, self._busy = credit, gaps, load_ord, busy
        self._tipped = set(tipped)
        self._ctx = None   # set by the next op's enter

    @property
    def eager_decided(self) -> frozenset[Hoist]:
        """The hoists whose :attr:`Hoist.eager` decided whether a pending block of theirs was
        emitted at some point so far: the credit was between one and two times the block's
        load time (:meth:`_spend`). For a hoist not in it, the lowering with its ``eager``
        flipped takes every decision this one took: the same program (the schedule search
        lowers such a twin only once, schedule/hoistsearch.py)."""
        return frozenset(self._tipped)

    def span(self, h: Hoist) -> tuple[int, int]:
        """Graph positions of the first op of ``h``'s window (its consumer if it has none) and
        of its consumer: the stretch of the program during which its area is taken."""
        return self._pos[h.window[0] if h.window else h.consumer], self._pos[h.consumer]

    def check_areas(self, t: Target) -> None:
        """Raises InternalError: two hoists whose spans (:meth:`span`) overlap have
        overlapping areas (hoists one after the other may share SRAM)."""
        for a, b in itertools.combinations(self.hoists, 2):
            (a0, a1), (b0, b1) = self.span(a), self.span(b)
            (alo, ahi), (blo, bhi) = a.area(t), b.area(t)
            if a0 <= b1 and b0 <= a1 and alo < bhi and blo < ahi:
                raise InternalError(f"prefetch areas overlap: '{a.consumer}' and "
                                    f"'{b.consumer}' hold them at the same time")

    def _active(self, name: str) -> list[Hoist]:
        """The hoists whose window or consumer is op ``name``."""
        return list(self._act.get(name, ()))

    def reserve(self, name: str, t: Target) -> int:
        """SRAM bytes at the top op ``name`` leaves to prefetch areas: down to the lowest
        area of the hoists whose window or consumer it is (0: none)."""
        act = self._active(name)
        return t.sram_capacity_bytes - min(h.area(t)[0] for h in act) if act else 0

    def consumer_plan(self, n: Node, mem: MemoryPlan, t: Target, pack: bool | None = None):
        """The tile plan (:func:`plan_conv`) of consumer ``n`` under ``mem``: in the SRAM
        above its base and below the areas it reserves, its blocks capped by
        :func:`block_cap` of its smallest area (:attr:`per_area` blocks fill it) when one of
        its hoists asks to ``pack`` (or, with ``pack`` given, when that is True).

        Raises:
            ScheduleError: no tile fits.
        """
        g = conv_geom(n, t)
        budget = t.sram_capacity_bytes - mem.base(n) - self.reserve(n.name, t)
        mine = [h for h in self.hoists if h.consumer == n.name]
        pack = any(h.pack for h in mine) if pack is None else pack
        cap = base = None
        if pack:
            area = min(h.area_bytes for h in mine)
            cap, base = block_cap(g, area, t, self.per_area), block_cap(g, area, t)
        plan = plan_conv(g, t, budget, mem.conv_residency(n, g), cap)
        self.coarsened = self.coarsened or (base is not None and plan.ocb > base)
        return plan

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
        for i in self._starts.get(name, ()):   # (in hoist order)
            h = self.hoists[i]
            if h.consumer not in self._pre:
                self.begin(ctx, h.consumer)
            self._started.add(i)
        if any(name in w for w in self._win):
            self._gaps = self._gaps_of.get(name, ())
        ctx.reserve = self.reserve(name, ctx.t)
        if self._lead and self._gaps:   # the idle time after its first load: before it
            self._credit += self._gaps[0]
            self._spend()

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
        started = self._started
        for c in self._consumers:   # (loops: it runs after every load of a window)
            if c not in self._pre:
                continue
            for j, p in enumerate(self._pending[c]):
                if p[0] in started:
                    return c, j
        return None

    def after_load(self) -> None:
        """After a LOAD command of the current op: add the idle time measured after it
        (:attr:`Hoist.gaps`; after the next one when leading, :attr:`Hoist.lead`) to the
        credit and emit the pending blocks the credit pays for,
        those of the earliest consumer whose window is running first. With no block to emit
        the credit is dropped, so a window starting later does not flood the LOAD queue with
        idle time gathered before it began."""
        if self._busy or not self._gaps:
            return
        i, self._load_ord = self._load_ord, self._load_ord + 1
        i += self._lead   # leading: the idle time after the next load (Hoist.lead)
        self._credit += self._gaps[i] if i < len(self._gaps) else 0
        self._spend()

    def _spend(self) -> None:
        """Emit the pending blocks the credit pays for, those of the earliest consumer whose
        window is running first; drop the credit when no block is pending."""
        t = self._ctx.t
        while True:
            nxt = self._next()
            if nxt is None:   # idle time no window can use now is gone, not saved up
                self._credit = 0.0
                return
            c, j = nxt
            hi, _, _, _, wb, pb = self._pending[c][j]
            cyc = block_cycles(wb, t) + (block_cycles(pb, t) if pb else 0)
            if self._credit < cyc <= 2 * self._credit:   # eager or not decides
                self._tipped.add(self.hoists[hi])
            if cyc > (2 if self.hoists[hi].eager else 1) * self._credit:
                return
            self._credit = max(0.0, self._credit - cyc)
            self._prefetch_one(c, j)
