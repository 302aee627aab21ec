"""Cross-op weight prefetch (:class:`Hoist`, :func:`plan_hoist`, :class:`Prefetcher`).

The first weight blocks of the first load-bound conv are loaded during the ops before it, into
the top of the SRAM, which those ops and the conv leave free; each prefetch load is emitted right
after a load of a window op that was followed by LOAD-queue idle time in the program without
prefetch. Once a prefetched block is done, its place serves the consumer's later blocks
(specs/target.md).
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


@dataclass(frozen=True)
class Hoist:
    """A cross-op weight prefetch: the first weight and parameter blocks of conv ``consumer``
    are loaded while the ops ``window`` (the ops just before it, in execution order) run, into
    the top ``area_bytes`` of the SRAM, which those ops and the consumer leave free.

    Attributes:
        consumer: IR name of the conv whose blocks are prefetched.
        window: IR names of the ops the prefetch loads are interleaved into, in order.
        area_bytes: SRAM bytes reserved at the top of the SRAM (aligned).
        gaps: per window op, per LOAD command of the op (in emission order), the LOAD-queue
            idle cycles measured after that command in the program without the prefetch
            (:func:`plan_hoist`): the time a prefetch emitted right after it may take.
        eager: emit a pending block once the idle time gathered covers half its load time
            (True) or all of it (False).
    """

    consumer: str
    window: tuple[str, ...]
    area_bytes: int
    gaps: tuple[tuple[int, ...], ...]
    eager: bool = False


def stalled_convs(prog: Program, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(stall cycles, layer index) of every plain conv/FC layer whose compute is stalled on its
    own loads (compute span minus compute cycles >= 25% of the span and >= 1% of the
    program), in execution order."""
    total = max((e for _, e in spans), default=0)
    out = []
    for i, li in enumerate(prog.layers):
        if li.cmds is not None or li.kind not in ("conv", "fc"):
            continue
        comp = [spans[k] for k in range(li.first_cmd, li.end_cmd)
                if prog.commands[k].queue is Queue.COMPUTE]
        span = max(e for _, e in comp) - min(s for s, _ in comp)
        stall = span - sum(e - s for s, e in comp)
        if stall >= 0.25 * span and stall >= 0.01 * total:
            out.append((stall, i))
    return out


def _best_window(prog: Program, ci: int, nodes: dict[str, Node], mem: MemoryPlan,
                 raw: int, gap_after: dict[int, int], t: Target, idle_share: float):
    """(prefetchable bytes, first window layer, area) of the best window before layer ``ci``,
    or None (see :func:`plan_hoist`)."""
    al = t.sram_align_bytes

    def top(j: int) -> int:   # op j's tile buffers
        return prog.layers[j].sram_peak_bytes - mem.base(nodes[prog.layers[j].name])

    best = None
    need, idle = 0, 0
    for j in range(ci - 1, -1, -1):
        li = prog.layers[j]
        if li.cmds is not None or li.name not in nodes:
            break
        if j < ci - 1:
            need = max(need, mem.base(nodes[li.name]) + top(j) + top(j + 1))
        else:
            need = li.sram_peak_bytes
        area = min((t.sram_capacity_bytes - need) // al * al, align_up(raw, al))
        if area <= 0:
            break
        idle += sum(gap_after.get(k, 0) for k in range(li.first_cmd, li.end_cmd))
        value = min(area, cost.transfer_bytes(idle, t) * idle_share)
        if best is None or value > best[0]:
            best = (value, j, area)
    return best


def plan_hoist(graph: Graph, mem: MemoryPlan, prog: Program, spans: list[tuple[int, int]],
               t: Target, eager: bool = False, idle_share: float = 1.0,
               consumer: int | None = None) -> Hoist | None:
    """Choose a cross-op weight prefetch (:class:`Hoist`) from a replayed program (``spans``:
    :func:`cost.replay` of ``prog.commands``; ``mem``: the memory plan it was lowered with).

    The consumer is layer ``consumer`` if given, else the first conv whose compute is stalled
    on its own loads (:func:`stalled_convs`). The window is the run
    of plain ops (not cascaded) just before it with the most prefetchable bytes
    ``min(area, idle)``: ``area`` is the SRAM above the tile areas of every two consecutive
    ops of the window and the consumer (base + both footprints, so they still take opposite
    ends of what is left and need not wait for each other), ``idle`` the LOAD-queue idle cycles
    after the window's LOAD commands times the DRAM bytes per cycle. The consumer's tiles must
    fit below the area (it is halved until they do). None when under 16 KiB would be
    prefetched.
    """
    loads = [i for i, c in enumerate(prog.commands) if c.queue is Queue.LOAD]
    gap_after = {a: max(0, spans[b][0] - spans[a][1]) for a, b in itertools.pairwise(loads)}
    if consumer is None:
        stalled = stalled_convs(prog, spans)
        if not stalled:
            return None
        consumer = stalled[0][1]
    ci = consumer
    nodes = {m.name: m for m in graph.nodes}
    node = nodes[prog.layers[ci].name]
    g = conv_geom(node)
    raw = g.o * g.kh * g.kw * g.cin_g + g.o * PARAM_RECORD_BYTES
    best = _best_window(prog, ci, nodes, mem, raw, gap_after, t, idle_share)
    if best is None or best[0] < MIN_PREFETCH_BYTES:
        return None
    _, j0, area = best
    res, c_base, al = mem.conv_residency(node, g), mem.base(node), t.sram_align_bytes
    while area >= MIN_PREFETCH_BYTES:   # the consumer's tiles must fit below the area
        try:
            plan_conv(g, t, t.sram_capacity_bytes - c_base - area, res)
            break
        except ScheduleError:
            area = area // 2 // al * al
    else:
        return None
    win = prog.layers[j0:ci]
    gaps = tuple(tuple(gap_after.get(k, 0) for k in range(li.first_cmd, li.end_cmd)
                       if prog.commands[k].queue is Queue.LOAD) for li in win)
    return Hoist(prog.layers[ci].name, tuple(li.name for li in win), area, gaps, eager)


def block_cycles(block: Block, t: Target) -> int:
    """LOAD-queue cycles of one block's load (DMA_LOAD_Z if compressed, else DMA_LOAD)."""
    if block.compressed:
        return cost.dma_z_cycles(block.stored_bytes, block.raw_bytes, t)
    return cost.dma_cycles(block.stored_bytes, t)


class Prefetcher:
    """Emits a :class:`Hoist`'s prefetch loads while the window ops are lowered.

    The lowering calls :meth:`begin` before the first window op, :meth:`enter` before every
    op, :meth:`drain` before the consumer and :meth:`take` to lower it; the emitter's
    ``on_load`` hook calls :meth:`after_load`, which spends the LOAD-queue idle time measured
    after the op's loads (``Hoist.gaps``) on pending blocks.

    Attributes:
        cmds: indices of the prefetch commands emitted so far.
    """

    def __init__(self, hoist: Hoist, graph: Graph) -> None:
        self.hoist = hoist
        self.graph = graph
        self.cmds: list[int] = []
        self._win = {name: i for i, name in enumerate(hoist.window)}
        self._pending: list[tuple[int, int, int, Block, Block]] = []   # blocks to prefetch
        self._done: dict[int, tuple] = {}    # block -> (w SRAM, p SRAM, params load)
        self._pre: dict[int, tuple] = {}     # id(consumer) -> (plan, blobs, cfg, info)
        self._credit = 0.0                   # LOAD idle cycles gathered for prefetches
        self._gaps: tuple[int, ...] = ()     # the current op's Hoist.gaps entry
        self._load_ord = 0                   # LOAD commands the current op emitted so far
        self._busy = False                   # emitting a prefetch load
        self._ctx: OpContext | None = None

    def enter_chain(self, ctx: OpContext, name: str) -> None:
        """Before lowering a cascaded chain whose last op is ``name`` (no prefetch there).

        Raises:
            InternalError: the chain is in the window or is the consumer.
        """
        self._gaps, self._load_ord, self._ctx = (), 0, ctx
        if name in self._win or name == self.hoist.consumer:
            raise InternalError(f"prefetch window includes cascaded op '{name}'")

    def begin(self, ctx: OpContext) -> None:
        """Plan the consumer ahead of the window: its tile plan under the SRAM it will have
        (the prefetch area stays reserved while it runs), its weight blocks (added to the
        WEIGHTS region now) and the list of its first blocks, in the order its tiles use them,
        that fit the area, each given a fixed SRAM place there.

        Raises:
            InternalError: the consumer is not a conv/FC of the graph.
        """
        h, t = self.hoist, ctx.t
        n = next((m for m in self.graph.nodes if m.name == h.consumer), None)
        if n is None or n.op not in (Op.CONV, Op.FC):
            raise InternalError(f"prefetch consumer '{h.consumer}' is not a conv of the graph")
        g = conv_geom(n)
        plan = plan_conv(g, t, t.sram_capacity_bytes - ctx.mem.base(n) - h.area_bytes,
                         ctx.mem.conv_residency(n, g))
        info = new_info(n)
        blobs, cfg = conv_setup(ctx.weights, t, n, g, min(plan.ocb, g.o), info,
                                  ctx.memo)
        self._pre[id(n)] = (plan, blobs, cfg, info)
        al = t.sram_align_bytes
        off = t.sram_capacity_bytes - h.area_bytes
        for k, (wb, pb) in enumerate(zip(blobs.weight_blocks, blobs.param_blocks)):
            need = align_up(wb.raw_bytes, al) + align_up(pb.raw_bytes, al)
            if off + need > t.sram_capacity_bytes:
                break
            self._pending.append((k, off, off + align_up(wb.raw_bytes, al), wb, pb))
            off += need

    def enter(self, ctx: OpContext, n: Node) -> None:
        """Before lowering op ``n`` (after ``ctx.op_res`` is set): start the prefetch at the
        window's first op; reserve the area during window ops and the consumer; drain what is
        left before the consumer, which also reads the area."""
        h = self.hoist
        self._gaps, self._load_ord, self._ctx = (), 0, ctx
        if n.name == h.window[0]:
            self.begin(ctx)
        if n.name in self._win:
            ctx.reserve, self._gaps = h.area_bytes, h.gaps[self._win[n.name]]
        if n.name == h.consumer:
            while self._pending:   # whatever the window ops had no idle time for
                self._prefetch_one()
            ctx.reserve = h.area_bytes
            ctx.op_res.append((ctx.t.sram_capacity_bytes - h.area_bytes, ctx.t.sram_capacity_bytes))

    def take(self, n: Node) -> Prefetched | None:
        """The consumer's pre-planned lowering (None for any other op)."""
        if id(n) not in self._pre:
            return None
        plan, blobs, cfg, info = self._pre.pop(id(n))
        done, self._done = self._done, {}
        return Prefetched(plan, blobs, cfg, info.weight_bytes, info.weight_raw_bytes,
                          info.weight_file_bytes, done)

    def finish(self) -> None:
        """After the last op. Raises InternalError when blocks were never emitted."""
        if self._pending:
            raise InternalError(f"prefetch consumer '{self.hoist.consumer}' never lowered")

    def _prefetch_one(self) -> None:
        """Emit the loads of the next pending prefetch block (weights, then parameters) into
        its place in the prefetch area; each waits only for the latest earlier op whose SRAM
        overlaps it (the ops in the window leave the area alone)."""
        k, w_off, p_off, wb, pb = self._pending.pop(0)
        em = self._ctx.em
        lab = f"{self.hoist.consumer} prefetch"
        self._busy = True
        self.cmds.append(em.n_cmds)
        em.load_block(em.free_any(w_off, wb.raw_bytes), lab + " weights", SLOT_WEIGHTS, wb,
                      w_off)
        self.cmds.append(em.n_cmds)
        dep = em.load_block(em.free_any(p_off, pb.raw_bytes), lab + " params", SLOT_PARAMS,
                            pb, p_off)
        self._busy = False
        self._done[k] = (w_off, p_off, dep)

    def after_load(self) -> None:
        """After a LOAD command of the current op: add the idle time measured after it
        (:attr:`Hoist.gaps`) to the credit and emit the pending blocks the credit pays for."""
        if self._busy or not self._gaps:
            return
        i, self._load_ord = self._load_ord, self._load_ord + 1
        self._credit += self._gaps[i] if i < len(self._gaps) else 0
        t = self._ctx.t
        while self._pending:
            _, _, _, wb, pb = self._pending[0]
            c = block_cycles(wb, t) + block_cycles(pb, t)
            if c > (2 if self.hoist.eager else 1) * self._credit:
                break
            self._credit = max(0.0, self._credit - c)
            self._prefetch_one()
