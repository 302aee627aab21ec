"""Lower one network onto several NPU cores (``--cores 2``; specs/target.md "Two cores").

Each core has its own SRAM, queues and emitter (:class:`~tcc_compiler.schedule.emitter.Emitter`);
the DRAM is shared. Two ways of sharing the work, both chosen by the cost model:

* **spatial** (:func:`lower_spatial`, for one image's latency): every conv/FC whose
  estimate says so is split between the cores, by output **row bands** (each core loads its
  rows' input with halo and *all* weights) or by **output-channel groups** (each core loads
  the whole input and *its* weight blocks), whichever :func:`split_choice` prices lower for
  that layer at half the DRAM bandwidth per core (both cores stream at once); other ops run
  on core 0. Each core plans its own tiles in its own SRAM (the same tile plan; its share of
  the tiles).
* **data-parallel** (schedule/corestream.py, for streams of images): each core runs the
  whole network on its own images, with one weight load serving two images on networks
  bound by the DRAM link.

Cross-core order (:class:`~tcc_compiler.schedule.coresync.CrossCore`): after each op a
core that stored anything since its last signal emits SEM_SIGNAL on its semaphore (its core
index); a load reading DRAM bytes the other core stored is preceded by a SEM_WAIT for the
first signal after that store (once per count: a later load needing no newer signal waits
for nothing). So a barrier exists only where an op reads what the other core wrote. DRAM
activations are not reused between tensors (``plan_memory(reuse=False)``): the cores run
ops out of graph order, and a liveness plan in that order would let one core overwrite
bytes the other still reads. A resident zone and cascades stay core 0's (ops touching them
run there) and there is no cross-op prefetch; instead, with ``band_bytes``, each core keeps
its own rows of tensors split by rows in its SRAM (schedule/corebands.py: producer and
readers split at half height, only the halo rows cross DRAM). Lowering emits every command
in one global order and every wait names an earlier-emitted command, so the cores cannot
deadlock.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.schedule.epilogue import table_bytes
from tcc_compiler.schedule.balance import Balancer, rough_cycles
from tcc_compiler.schedule.batch import OnceWeights
from tcc_compiler.ir.ops import CHANNEL_OPS, HOST_OPS, Op, ResizeMode, VIEW_OPS
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import PARAM_RECORD_BYTES
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.isa.wlayout import WeightLayoutBuilder
from tcc_compiler.quant.params import uses_ew
from tcc_compiler.schedule import corebands, cost
from tcc_compiler.schedule.coresync import CrossCore
from tcc_compiler.schedule.emitter import Emitter
from tcc_compiler.schedule.geom import channel_blocks, conv_geom, in_box, spatial_tiles
from tcc_compiler.schedule.lowering import lower_one
from tcc_compiler.schedule.memory import MemoryPlan, plan_memory, readers, root
from tcc_compiler.schedule.ops.cascade import lower_chain
from tcc_compiler.schedule.ops.context import OpContext, new_info
from tcc_compiler.schedule.ops.conv import lower_conv
from tcc_compiler.schedule.ops.convsetup import Prefetched, conv_setup
from tcc_compiler.schedule.program import LayerInfo, Program
from tcc_compiler.schedule.tiling import (ConvGeom, ConvPlan, align_up, plan_conv,
                                          uses_depthwise_mode, uses_image_mode)
from tcc_compiler.target import Target

#: A conv's split: "rows", "channels", or "none" (core 0 runs it whole).
SPLITS = ("rows", "channels", "none")

#: Non-conv ops whose lowering honours ``OpContext.rows`` (besides element-wise ops, nearest
#: resizes and concat/slice copies): split between the cores by output rows. A
#: ``group_softmax``'s groups lie along the channels of one pixel, so whole rows split it
#: cleanly (its chunks are whole pixels, schedule/ops/lut.py).
ROW_OPS = (Op.ADD, Op.LUT, Op.GROUP_SOFTMAX, Op.MAXPOOL, Op.AVGPOOL)


@dataclasses.dataclass(frozen=True)
class Split:
    """A conv's split between two cores: ``how`` (:data:`SPLITS`), the tile plan both cores
    use, core 0's tiles (a predicate on (spatial, block)) and the estimates (cycles)."""

    how: str
    plan: ConvPlan
    core0: Callable | None
    est_cycles: float
    whole_cycles: float


def _tile_estimate(g: ConvGeom, t: Target, tiles: list, bw_share: float) -> float:
    """Estimated cycles of one core running ``tiles`` [(spatial, block)] of conv ``g``: its
    MAC/depthwise cycles and its DRAM bytes (input boxes as they change, each weight block
    at each change, output and shortcut tiles) at ``bw_share`` of the bandwidth, overlapped as
    :func:`~tcc_compiler.schedule.cost.tile_pipeline_cycles` does."""
    if not tiles:
        return 0.0
    image, dw = uses_image_mode(g, t), uses_depthwise_mode(g, t)
    rate = cost.int16_rate(g.in_elem_bytes == 2, g.w_elem_bytes == 2, t)
    compute = nbytes = 0.0
    last_box = last_blk = None
    for s, b in tiles:
        y0, y1, x0, x1 = s
        oc = b[1] - b[0]
        box = in_box(g, s, b)
        groups = max(1, (box[5] - box[4]) // g.cin_g)
        pix = (cost.depthwise_pixel_cycles(g.kh, g.kw, oc, t) if dw else
               cost.conv_pixel_cycles(g.kh, g.kw, oc, g.cin_g, 1 if image else groups,
                                      image, t))
        compute += t.compute_setup_cycles + rate * (y1 - y0) * (x1 - x0) * pix
        if box[:6] != last_box:
            nbytes += box[6] * g.in_elem_bytes
            last_box = box[:6]
        if b != last_blk:
            nbytes += oc * (g.kernel_bytes + PARAM_RECORD_BYTES)
            last_blk = b
        nbytes += (y1 - y0) * (x1 - x0) * oc * (g.out_elem_bytes
                                                + (g.sc_elem_bytes if g.has_shortcut else 0))
    dma = cost.transfer_cycles(nbytes, t) / bw_share
    return cost.tile_pipeline_cycles(compute, dma, len(tiles), t)


def _order(plan: ConvPlan, g: ConvGeom) -> list:
    spatial = spatial_tiles(g.oh, g.ow, plan.rows, plan.cols)
    blocks = channel_blocks(g.o, plan.ocb)
    return ([(s, b) for s in spatial for b in blocks] if plan.order == "spatial"
            else [(s, b) for b in blocks for s in spatial])


def _first_half(how: str, units: list) -> Callable:
    """Core 0's tiles: those in the first half of ``units`` (row starts or channel blocks)."""
    mine = set(units[:len(units) // 2])
    if how == "rows":
        return lambda s, b: s[0] in mine
    return lambda s, b: b in mine


def split_choice(g: ConvGeom, plan: ConvPlan, t: Target) -> Split:
    """The cheapest of running conv ``g`` whole on core 0 (full bandwidth) or split by row
    bands or by output-channel groups (each core half the bandwidth, plus a semaphore
    round trip), by :func:`_tile_estimate`. The split plans shrink ``plan``'s tiles to at most
    half the rows (rows) or half the channels rounded up to the array width (channels), so
    each core gets whole tiles; core 0 takes the first half of them."""
    whole = _tile_estimate(g, t, _order(plan, g), 1.0)
    best = Split("none", plan, None, whole, whole)
    sync = 2 * t.sem_latency_cycles
    cands = []
    if g.oh >= 2:
        cands.append(("rows", dataclasses.replace(plan, rows=min(plan.rows, -(-g.oh // 2)))))
    ao = t.array_out_channels
    if g.o > ao:
        ocb = min(plan.ocb, align_up(-(-g.o // 2), ao))
        cands.append(("channels", dataclasses.replace(plan, ocb=ocb)))
    for how, p in cands:
        units = (sorted({s[0] for s in spatial_tiles(g.oh, g.ow, p.rows, p.cols)})
                 if how == "rows" else channel_blocks(g.o, p.ocb))
        pred = _first_half(how, units)
        if len(units) < 2:
            continue
        order = _order(p, g)
        est = max(_tile_estimate(g, t, [x for x in order if pred(*x)], 0.5),
                  _tile_estimate(g, t, [x for x in order if not pred(*x)], 0.5)) + sync
        if est < best.est_cycles:
            best = Split(how, p, pred, est, whole)
    return best


def crossing(graph: Graph, assign) -> frozenset:
    """Ids of the values (and the buffers their views alias) that op assignment ``assign``
    (node -> core; None: every op on core 0 first) has written on one core and read on
    another: they must stay in DRAM. A view or fused op counts on the core of the next op
    at or after it in graph order that ``assign`` places (the op that runs it)."""
    if assign is None:
        return frozenset()
    core, nxt = {}, 0
    for n in reversed(graph.nodes):
        c = assign(n)
        nxt = c if c is not None else nxt
        core[id(n)] = nxt
    out = set()
    for n in graph.nodes:
        for v in n.outputs:
            if any(core.get(id(r)) != core[id(n)] for r in readers(v)):
                out |= {id(v), id(root(v))}
    return frozenset(out)


class _CoreLowering:
    """One multi-core lowering: the emitters, the shared memory plan, weight layout and the
    per-op core assignment ``assign(node) -> core`` (None: let :func:`split_choice` decide
    for the convs :meth:`splittable` allows, core 0 for the rest). Core 0 keeps the
    single-core plan's resident zone of ``zone_bytes`` and, with ``cascade``, its cascaded
    chains (both in core 0's SRAM); only an op none of whose operands is resident or
    cascaded may run on core 1."""

    def __init__(self, graph: Graph, t: Target, cores: int, compressor, assign,
                 zone_bytes: int = 0, cascade: bool = False, balance: bool = False,
                 band_bytes: int = 0, band_tiles: int = 1):
        self.graph, self.t, self.assign = graph, t, assign
        self.band_tiles = band_tiles
        self.bal = Balancer(t) if balance else None
        self.mem: MemoryPlan = plan_memory(graph, t, zone_bytes, cascade, reuse=False,
                                           pinned=crossing(graph, assign))
        self.mems = (self.mem,) * cores
        self.band_io = None
        if band_bytes and not zone_bytes and not cascade and cores == 2:
            bands = corebands.plan_bands(graph, t, self.mem, band_bytes)
            self.mems, self.band_io = bands.mems, corebands.BandIo(bands)
        self.ems = [Emitter(t.sram_capacity_bytes, t.sram_align_bytes) for _ in range(cores)]
        self.cross = CrossCore(self.ems)
        self.weights = OnceWeights(WeightLayoutBuilder(compressor))   # a split lut: once
        self.memo: dict = {}
        self.source = graph.meta.get("source", "")
        self.parts: list[tuple[LayerInfo, list[tuple[int, int, int]]]] = []
        self.splits: dict[str, str] = {}

    def ctx(self, core: int, n: Node) -> OpContext:
        """Op ``n``'s context on ``core``: its tile area starts above the resident tensors
        live around ``n`` (as with one core; each core's resident tensors are those of the
        ops it runs, in its own SRAM, at the one zone plan's offsets)."""
        mem = self.mems[core]
        c = OpContext(self.ems[core], mem, self.weights, self.t, self.source,
                      base=mem.base(n), memo=self.memo)
        out = mem.conv_output(n) if n.op is Op.CONV else n.output
        c.op_res = [r.span for r in
                    (mem.resident(v) for v in [*n.inputs, out] if v is not None)
                    if r is not None]
        return c

    def splittable(self, n: Node) -> bool:
        """A conv/FC none of whose operands is resident in core 0's SRAM or cascaded."""
        mem = self.mem
        if n.op not in (Op.CONV, Op.FC) or id(n) in mem.chains or id(n) in mem.chained:
            return False
        return all(mem.resident(v) is None
                   for v in [*n.inputs, mem.conv_output(n)] if v is not None)

    def run(self) -> Program:
        """Emit every op on its core(s); return the multi-core :class:`Program`."""
        mem = self.mem
        for n in self.graph.nodes:
            if self._skipped(n):
                continue
            if id(n) in mem.chains:   # a cascaded chain runs on core 0 at its last op
                self._chain(n)
                continue
            core = self.assign(n) if self.assign is not None else None
            if self.band_io is not None and id(n) in self.band_io.bands.ops:
                self._band(n)
            elif core is None and self.splittable(n):
                self._conv(n)
            elif core is None and self.row_split(n) is not None:
                self._rows(n, self.row_split(n))
            elif core is None and self.bal is not None and self.free_op(n):
                c, finish = self.bal.best_core(n, rough_cycles(n, self.t))
                self.bal.record(n, self.mem.conv_output(n) if n.op is Op.CONV else n.output,
                                c, finish)
                self._whole(n, c)
            else:
                self._whole(n, core or 0)
        return self._program()

    def _skipped(self, n: Node) -> bool:
        """Ops that emit nothing of their own: host ops, views, luts fused into a conv, ops
        run inside a cascaded chain, channel concats/slices that are views."""
        mem = self.mem
        return (n.op in HOST_OPS or n.op in VIEW_OPS or id(n) in mem.fused_luts
                or id(n) in mem.chained
                or (n.op in CHANNEL_OPS and id(n) not in mem.views.copies))

    def row_split(self, n: Node) -> int | None:
        """The first output row of core 1's share when non-conv op ``n`` may be split between
        the cores by output rows (an element-wise, table, channel-group softmax, max/average
        pool, nearest resize or channel concat/slice copy op, none of whose operands is
        resident, over at least two rows; a resize's share starts at an input row); None: it
        runs whole."""
        if not self.free_op(n) or len(n.output.shape) != 4:
            return None
        scale = 1
        if n.op is Op.RESIZE and n.attrs.mode is not ResizeMode.BILINEAR:
            scale = n.attrs.scale_h
        elif n.op in (Op.CONCAT, Op.SLICE):
            if id(n) not in self.mem.views.copies:
                return None
        elif n.op not in ROW_OPS and not uses_ew(n):
            return None
        h = n.output.shape[2] // scale
        return (h // 2) * scale if h >= 2 else None

    def _rows(self, n: Node, mid: int) -> None:
        """Non-conv op ``n`` split by output rows at ``mid``: core 0 runs ``[0, mid)`` last rows
        first, core 1 ``[mid, H)``; with the balancer, only when that finishes before running
        it whole on the core free first (:func:`rough_cycles`: its DRAM bytes take as long on
        two cores sharing the link, its vector work halves)."""
        if self.bal is not None:
            whole = rough_cycles(n, self.t)
            split = whole - cost.vector_cycles(math.prod(n.output.shape), self.t) / 2 \
                + 2 * self.t.sem_latency_cycles
            core, finish = self.bal.best_core(n, whole)
            split_end = self.bal.split_finish(n, split)
            if split_end >= finish:
                self.bal.record(n, n.output, core, finish)
                self._whole(n, core)
                return
            self.bal.record(n, n.output, None, split_end)
        self._emit_rows(n, mid, n.output.shape[2])

    def _emit_rows(self, n: Node, mid: int, h: int, pre: Prefetched | None = None) -> None:
        """Emit op ``n`` split by output rows: core 0 ``[0, mid)`` last rows first, core 1
        ``[mid, h)``, each signalling early (:meth:`CrossCore.begin_share`). A conv comes
        planned and laid out (``pre``). With bands (schedule/corebands.py), each core first
        loads the halo rows of its banded inputs (just before its first tile) and then
        stores the rows of a banded output the other core's band needs."""
        info = new_info(n)
        ranges = []
        out = self.mem.conv_output(n) if n.op is Op.CONV else n.output
        for core, rows in ((0, (0, mid)), (1, (mid, h))):
            em = self.ems[core]
            part = dataclasses.replace(info, tiles=0)
            ctx = dataclasses.replace(self.ctx(core, n), rows=rows, reverse=core == 0)
            first = em.n_cmds
            self.cross.begin_share(core)
            if self.band_io is not None:
                em.before_tile = (lambda em=em, core=core: self.band_io.halo(em, core, n))
                ctx.on_tile = self.band_io.watcher(em, core, n, out)
                self.band_io.writing(em, core, out)
            if pre is not None:
                lower_conv(ctx, n, part, pre, reverse=core == 0)
            else:
                lower_one(ctx, n, part, None)
            em.before_tile = None
            if self.band_io is not None:
                self.band_io.boundary(em, core, n, out)
                if n.op is Op.RESIZE and self.mems[core].resident(out) is not None:
                    self.band_io.loaded_into(em, core, out)
            self.cross.end_share(core)
            ranges.append((core, first, em.n_cmds))
            info.tiles += part.tiles
            info.sram_peak_bytes = max(info.sram_peak_bytes, part.sram_peak_bytes)
            info.weight_bytes, info.weight_raw_bytes = part.weight_bytes, part.weight_raw_bytes
            info.weight_file_bytes = part.weight_file_bytes
            info.plan, info.source, info.macs = part.plan, part.source, part.macs
        if pre is not None:
            info.weight_bytes, info.weight_raw_bytes = pre.weight_bytes, pre.weight_raw_bytes
            info.weight_file_bytes = pre.weight_file_bytes
        info.plan += f", split by rows over 2 cores at row {mid}"
        self.parts.append((info, ranges))
        self.splits[n.name] = "rows"
        for core in (0, 1):
            self.cross.signal(core)

    def _band(self, n: Node) -> None:
        """Op ``n`` reading or writing a banded tensor: split by output rows at half its
        height (schedule/corebands.py), its bands read and written in place."""
        t = self.t
        h = corebands.split_height(n)
        pre = None
        est = rough_cycles(n, t) if n.op is not Op.CONV else 0.0
        if n.op is Op.CONV:
            g = conv_geom(n, t)
            mem = self.mems[0]
            lut = align_up(table_bytes(mem.fused.get(id(n))), t.sram_align_bytes)
            plan = plan_conv(g, t, t.sram_capacity_bytes - mem.base(n) - lut,
                             mem.conv_residency(n, g))
            if self.band_tiles > 1:   # several tiles per share: the boundary rows are
                # stored early, and DMA overlaps compute within a share
                plan = dataclasses.replace(plan, rows=min(plan.rows,
                                                          -(-(h // 2) // self.band_tiles)))
            info = new_info(n)
            blobs, cfg = conv_setup(self.weights, t, n, g, min(plan.ocb, g.o), info, self.memo)
            pre = Prefetched(plan, blobs, cfg, info.weight_bytes, info.weight_raw_bytes,
                             info.weight_file_bytes, {})
            est = _tile_estimate(g, t, _order(plan, g), 1.0)
        if self.bal is not None:
            out = self.mem.conv_output(n) if n.op is Op.CONV else n.output
            self.bal.record(n, out, None, self.bal.split_finish(
                n, est / 2 + 2 * t.sem_latency_cycles))
        self._emit_rows(n, h // 2, h, pre)
        out = self.mem.conv_output(n) if n.op is Op.CONV else n.output
        if self.mems[0].resident(out) is not None:
            self.parts[-1][0].plan += ", each core's rows kept in its SRAM"

    def free_op(self, n: Node) -> bool:
        """An op none of whose operands is resident in core 0's SRAM (either core may run
        it)."""
        mem = self.mem
        out = mem.conv_output(n) if n.op is Op.CONV else n.output
        return all(mem.resident(v) is None for v in [*n.inputs, out] if v is not None)

    def _chain(self, n: Node) -> None:
        """A cascaded chain, on the core of its last op.

        Raises:
            ScheduleError: ``assign`` puts the chain's ops on different cores."""
        ch = self.mem.chains[id(n)]
        cores = {self.assign(m) if self.assign is not None else 0
                 for m in [*ch.nodes, ch.side] if m is not None}
        if len(cores) > 1:
            raise ScheduleError(f"cascaded chain ending at '{n.name}' crosses the cores")
        core = cores.pop() or 0
        infos = lower_chain(self.ctx(core, n), ch)
        for info in infos:
            self.parts.append((info, [(core, i, i + 1) for i in info.cmds]))
        self.cross.signal(core)

    def _whole(self, n: Node, core: int) -> None:
        em = self.ems[core]
        info = new_info(n)
        first = em.n_cmds
        lower_one(self.ctx(core, n), n, info, None)
        self.parts.append((info, [(core, first, em.n_cmds)]))
        self.splits[n.name] = f"core {core}"
        self.cross.signal(core)

    def _conv(self, n: Node) -> None:
        t = self.t
        g = conv_geom(n, t)
        lut = align_up(table_bytes(self.mem.fused.get(id(n))), t.sram_align_bytes)
        plan = plan_conv(g, t, t.sram_capacity_bytes - self.mems[0].base(n) - lut,
                         self.mem.conv_residency(n, g))
        sp = split_choice(g, plan, t)
        core = 0
        if self.bal is not None:   # whole on the core free first, or split, by estimate
            out = self.mem.conv_output(n)
            core, finish = self.bal.best_core(n, sp.whole_cycles)
            split_end = self.bal.split_finish(n, sp.est_cycles)
            if sp.how != "none" and split_end < finish:
                self.bal.record(n, out, None, split_end)
            else:
                self.bal.record(n, out, core, finish)
                sp = dataclasses.replace(sp, how="none")
        if sp.how == "none":
            self._whole(n, core)
            return
        info = new_info(n)
        blobs, cfg = conv_setup(self.weights, t, n, g, min(sp.plan.ocb, g.o), info, self.memo)
        pre = Prefetched(sp.plan, blobs, cfg, info.weight_bytes, info.weight_raw_bytes,
                         info.weight_file_bytes, {})
        ranges = []
        for core, keep in ((0, sp.core0), (1, lambda s, b: not sp.core0(s, b))):
            em = self.ems[core]
            part = dataclasses.replace(info, tiles=0)
            first = em.n_cmds
            self.cross.begin_share(core)
            lower_conv(self.ctx(core, n), n, part, pre, only=keep,
                       reverse=core == 0 and sp.how == "rows")
            self.cross.end_share(core)
            ranges.append((core, first, em.n_cmds))
            info.tiles += part.tiles
            info.sram_peak_bytes = max(info.sram_peak_bytes, part.sram_peak_bytes)
            info.source, info.plan, info.macs = part.source, part.plan, part.macs
        info.plan += f", split by {sp.how} over 2 cores"
        self.parts.append((info, ranges))
        self.splits[n.name] = sp.how
        for core in (0, 1):
            self.cross.signal(core)

    def _program(self) -> Program:
        offs, cmds, comments, slots = [], [], [], []
        for em in self.ems:
            em.emit(C.End, [], "end")
            offs.append(len(cmds))
            cmds += em.w.cmds
            comments += em.w.comments
            slots += em.w.slots
        layers = []
        for info, ranges in self.parts:
            if len(ranges) == 1 and info.cmds is None:
                c, a, b = ranges[0]
                info.first_cmd, info.end_cmd = offs[c] + a, offs[c] + b
            else:   # split over the cores, or a cascaded op's own commands
                idx = [offs[c] + i for c, a, b in ranges for i in range(a, b)]
                info.first_cmd, info.end_cmd = min(idx, default=0), max(idx, default=-1) + 1
                info.cmds = idx
            layers.append(info)
        mem = self.mem
        return Program(cmds, comments, self.weights.build(), max(e.sram_peak for e in self.ems),
                       mem.arena_bytes, mem.input_bytes, mem.output_bytes, list(mem.inputs),
                       list(mem.outputs), layers, slots, cores=len(self.ems))


def lower_spatial(graph: Graph, t: Target, compressor: BlockCompressor | None = None,
                  zone_bytes: int = 0, cascade: bool = False, balance: bool = False,
                  band_bytes: int = 0, band_tiles: int = 1) -> Program:
    """The two-core program with each conv/FC split as :func:`split_choice` prices lowest,
    core 0 keeping a resident zone of ``zone_bytes`` and, with ``cascade``, the cascaded
    chains of the single-core memory plan (ops touching them are not split). With
    ``balance``, an op not split runs on the core where it would finish first
    (:class:`~tcc_compiler.schedule.balance.Balancer`), and a conv is split only when that
    finishes before running it whole there. With ``band_bytes`` (and no zone or cascades),
    each core keeps its rows of the tensors :func:`~tcc_compiler.schedule.corebands.
    plan_bands` chooses in that many bytes of its SRAM, and every op touching them is split
    at half its output rows; ``band_tiles`` > 1 caps such a conv's tiles at that fraction of
    a core's share, so the rows the other core needs are computed and stored early.

    Raises:
        ScheduleError: an op cannot be tiled into one core's SRAM.
    """
    return _CoreLowering(graph, t, 2, compressor, None, zone_bytes, cascade, balance,
                         band_bytes, band_tiles).run()
