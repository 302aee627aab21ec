"""Conv and FC: tiles of output rows x columns x output-channel block on the MAC array.

Per op a CONV_CFG, then per tile the loads (input tile with halo, weight and parameter block
when they change, shortcut tile), the CONV_TILE and the store. Input, output and shortcut
buffers are double-buffered; weight blocks rotate through ``plan.wbufs`` slots (more in a
network without depthwise layers, ``OpContext.deep_slots``, each slot's SRAM handed to the next
ops' loads once its last block is done). Resident
operands are read or written in place (strided boxes, no DMA). A prefetch consumer
(schedule/prefetch.py) gets its tile plan, weight blocks and the blocks already loaded during
earlier ops as a :class:`~tcc_compiler.schedule.ops.convsetup.Prefetched` (its constants and
CONV_CFG fields: schedule/ops/convsetup.py).
"""

from __future__ import annotations

import collections
import math


from tcc_compiler.errors import InternalError
from tcc_compiler.ir.graph import Node
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import (CONV_FLAG_LUT,
                                   OUT_MODE_LUT16, OUT_MODE_TWO_SLOPE, PARAM_RECORD_BYTES)
from tcc_compiler.isa.wcodec import LayerKind
from tcc_compiler.quant.params import lut_quant
from tcc_compiler.schedule.epilogue import table_bytes
from tcc_compiler.schedule.emitter import Dep, dma_fields
from tcc_compiler.schedule.geom import channel_blocks, conv_geom, in_box, spatial_tiles
from tcc_compiler.schedule.ops.context import OpContext, label
from tcc_compiler.schedule.ops.convsetup import Prefetched, conv_setup
from tcc_compiler.schedule.ops.convslots import (COARSE_FACTOR, DEEP_SLOTS, coarse_blocks,
                                                 coarse_wide_blocks, deep_cap,
                                                 earliest_slot, fits_after, handover_order,
                                                 short_last_block, slot_channels, store_cut)
from tcc_compiler.schedule.program import SLOT_PARAMS, SLOT_SHORTCUT, SLOT_WEIGHTS, LayerInfo
from tcc_compiler.schedule.cost import depthwise_parts
from tcc_compiler.schedule.ops.dwsplit import emit_parts, split_text
from tcc_compiler.schedule.tiling import (ConvGeom, align_up, depthwise_split,
                                          pixel_cycles, plan_conv, psum_bytes,
                                          uses_depthwise_mode, working_set)


def lower_conv(ctx: OpContext, n: Node, info: LayerInfo, pre: Prefetched | None = None,
               only=None, reverse: bool = False) -> None:
    """Emit conv/FC ``n``; fill ``info``. ``pre``: the op is a prefetch consumer (or, with
    no prefetched blocks, a conv planned and laid out by the caller: schedule/cores.py).
    ``only``: a predicate ``(spatial, block) -> bool`` choosing the tiles to emit (one core's
    share of the op, schedule/cores.py); None: every tile. ``reverse``: the spatial tiles
    run last rows first (within each channel block in channel order), so a core's rows next to
    the other core's share are stored first.

    Raises:
        ScheduleError: no tile fits the op's SRAM budget.
        InternalError: weight blocks loaded out of order (a bug).
    """
    em = _ConvEmission(ctx, n, info, pre)
    em.only, em.reverse = only, reverse
    em.run()


def _with_images(g: ConvGeom, plan, spatial, blocks, order, n_img: int) -> list:
    """The (spatial, block, image) tiles of ``order`` for ``n_img`` images: every image under
    each (spatial, block) (a block's weights read once for all images), or, in spatial order
    with several blocks, every block under each (spatial, image) (the input read once) when
    that moves fewer DRAM bytes."""
    tiles = [(s, b, k) for s, b in order for k in range(n_img)]
    if n_img > 1 and plan.order == "spatial" and len(blocks) > 1:
        w = g.o * g.kernel_bytes
        inp = sum(in_box(g, sp, blocks[0])[6] for sp in spatial)
        if inp * (len(blocks) - 1) > w * len(spatial):
            mine = set(order)
            tiles = [(sp, b, k) for sp in spatial for k in range(n_img) for b in blocks
                     if (sp, b) in mine]
    return tiles


class _ConvEmission:
    """The state of one conv's emission: buffers, weight slots, and the last command that
    read or wrote each of them."""

    def __init__(self, ctx: OpContext, n: Node, info: LayerInfo, pre: Prefetched | None):
        self.ctx, self.em, self.n, self.info = ctx, ctx.em, n, info
        self.only, self.reverse = None, False
        mem = ctx.mem
        g = ctx.memo.get(("geom", id(n)))   # (the search's graph does not change)
        if g is None:
            g = ctx.memo[("geom", id(n))] = conv_geom(n, ctx.t)
        self.g = g
        info.depthwise = uses_depthwise_mode(g, ctx.t)   # also for a prefetch consumer
        self.lut = mem.fused.get(id(n))   # a lut op run in the epilogue (schedule/epilogue.py)
        out_v = mem.conv_output(n)
        self.table_bytes = table_bytes(self.lut)   # 256 int8 entries or 257 int16 knots
        self.lut_bytes = align_up(self.table_bytes, ctx.t.sram_align_bytes)
        # per image (several share each weight block: schedule/batch.py), its operands
        views = ctx.images or (mem,)
        self.rins = [m.resident(n.inputs[0]) for m in views]
        self.routs = [m.resident(out_v) for m in views]
        self.rscs = [m.resident(n.input(3)) if g.has_shortcut else None for m in views]
        self.rin, self.rout, self.rsc = self.rins[0], self.routs[0], self.rscs[0]
        self.prefetched: dict = {}
        if pre is not None:   # a prefetch consumer: planned before its window
            self.plan, self.blobs, cfg = pre.plan, pre.blobs, pre.cfg
            info.weight_bytes, info.weight_raw_bytes = pre.weight_bytes, pre.weight_raw_bytes
            info.weight_file_bytes = pre.weight_file_bytes
            self.prefetched = pre.blocks
        else:
            self.plan = plan_conv(g, ctx.t, ctx.budget() - self.lut_bytes,
                                  mem.conv_residency(n, g))
            if ctx.coarse and coarse_blocks(g, ctx.t, self.plan.ocb):
                self.plan = plan_conv(g, ctx.t, ctx.budget() - self.lut_bytes,
                                      mem.conv_residency(n, g),
                                      min_ocb=COARSE_FACTOR * self.plan.ocb)
            elif ctx.coarse_wide and coarse_wide_blocks(g, ctx.t, self.plan.ocb,
                                                        info.depthwise):
                self._coarse_wide(ctx, g)
            if ctx.tight_slots:
                self.plan = short_last_block(g, ctx.t, self.plan, ctx.budget() - self.lut_bytes,
                                             mem.conv_residency(n, g))
            self.blobs, cfg = conv_setup(ctx.weights, ctx.t, n, g, min(self.plan.ocb, g.o),
                                         info, ctx.memo)
        self.xins = [m.tensor(n.inputs[0]) for m in views]
        self.xouts = [m.tensor(out_v) for m in views]
        self.xscs = [m.tensor(n.input(3)) if g.has_shortcut else None for m in views]
        self.label = label(n)
        self.cfg = cfg
        self.split = depthwise_split(g, ctx.t)   # each part sets its own (ops/dwsplit.py)
        if self.lut is not None:
            self._add_table()
        elif not self.split:   # (a fused conv's CONV_CFG needs its table's address: in run)
            self.em.emit(C.ConvCfg, [], self.label, **cfg)

    def _coarse_wide(self, ctx: OpContext, g: ConvGeom) -> None:
        """``ctx.coarse_wide``: plan blocks at least :data:`COARSE_FACTOR` times the plan's
        (output channels), kept when they fit and, but for a depthwise conv, leave at least
        two blocks (a single block loses the overlap of its load with the op before:
        EfficientNet-Lite0 224's expand convs in one 1152-channel block, 473,482 -> 476,654
        cycles; its depthwise convs' small weights in one, 472,428 -> 471,828); sets
        ``ctx.coarsened``."""
        res = self.ctx.mem.conv_residency(self.n, g)
        wide = plan_conv(g, ctx.t, ctx.budget() - self.lut_bytes, res,
                         min_ocb=COARSE_FACTOR * self.plan.ocb)
        if wide.ocb > self.plan.ocb and (self.info.depthwise or math.ceil(g.o / wide.ocb) >= 2):
            self.plan, ctx.coarsened = wide, True

    def _add_table(self) -> None:
        """Put the fused lut's table into the WEIGHTS region (a LayerKind.LUT layer, as
        schedule/ops/lut.py lays it out; once per op when several cores run it: kept in the
        memo) and mark the op as conv + lut."""
        lut, info, w = self.lut, self.info, self.ctx.weights
        got = self.ctx.memo.get(("lut-block", id(lut)))
        if got is not None and got[0] is w:   # laid out by this lowering already
            self.lut_block = got[1]
            info.source = tuple(info.source) + tuple(lut.source)
            self.label = f"{self.n.name} [{','.join(info.source)}]"
            self._lut_cfg()
            return
        raw0, stored0 = w.raw_bytes, w.stored_bytes
        lq = lut_quant(lut)   # int16 knots little-endian for an int16 input
        data = (lq.tables.astype("<i2") if lq.wide else lq.tables).tobytes()
        blobs = w.add_layer(lut.name, LayerKind.LUT, data,
                            bytes(PARAM_RECORD_BYTES), block_channels=1)
        self.lut_block = blobs.weight_blocks[0]
        self.ctx.memo[("lut-block", id(lut))] = (w, self.lut_block)
        info.weight_bytes += self.lut_block.stored_bytes
        info.weight_raw_bytes += w.raw_bytes - raw0
        info.weight_file_bytes += w.stored_bytes - stored0
        info.source = tuple(info.source) + tuple(lut.source)
        self.label = f"{self.n.name} [{','.join(info.source)}]"
        self._lut_cfg()

    def _lut_cfg(self) -> None:
        """CONV_CFG flags bit3 (LUT epilogue), and out_mode bit3 when the fused table's output
        is int16 (its input then is too: the knots are int16 outputs, specs/isa.md)."""
        mode = self.cfg["out_mode"] | (OUT_MODE_LUT16 if self.lut.output.dtype == "int16"
                                       else 0)
        self.cfg = dict(self.cfg, flags=self.cfg["flags"] | CONV_FLAG_LUT, out_mode=mode)

    def _tile_order(self) -> None:
        """The op's spatial tiles, channel blocks and the (spatial, block) order they run in
        (only this core's share with ``only``, schedule/cores.py)."""
        g, plan = self.g, self.plan
        self.spatial = spatial_tiles(g.oh, g.ow, plan.rows, plan.cols)
        if self.ctx.rows is not None:   # this core's output rows only (schedule/corebands.py)
            y0, y1 = self.ctx.rows
            self.spatial = [(a + y0, b + y0, x0, x1) for a, b, x0, x1
                            in spatial_tiles(y1 - y0, g.ow, plan.rows, plan.cols)]
        self.blocks = channel_blocks(g.o, plan.ocb)
        self.order = ([(s, b) for s in self.spatial for b in self.blocks]
                      if plan.order == "spatial"
                      else [(s, b) for b in self.blocks for s in self.spatial])
        if self.only is not None:   # this core's share of the tiles
            self.order = [(s, b) for s, b in self.order if self.only(s, b)]
        if self.reverse:
            rank = {s: i for i, s in enumerate(sorted(self.spatial,
                                                      key=lambda s: (-s[0], s[2])))}
            blk = {b: i for i, b in enumerate(self.blocks)}
            self.order.sort(key=(lambda sb: (rank[sb[0]], blk[sb[1]])) if plan.order == "spatial"
                            else (lambda sb: (blk[sb[1]], rank[sb[0]])))
        self.tiles = _with_images(g, plan, self.spatial, self.blocks, self.order,
                                  len(self.xouts))

    def _lut_table(self) -> None:
        """The epilogue's table (when there is one): its SRAM, the CONV_CFG naming it, and its
        load, once before the first tile."""
        self.lut_dep = None
        if self.lut is None:
            return
        self.lut_addr = self.sa.alloc(self.table_bytes, "lut table")
        self.cfg = dict(self.cfg, lut_sram=self.lut_addr)   # (also each part's, dwsplit.py)
        if not self.split:
            self.em.emit(C.ConvCfg, [], self.label, **self.cfg)
        self.lut_dep = self.em.load_block(self.em.free(self.lut_addr, self.table_bytes),
                                          self.label + " lut table", SLOT_PARAMS,
                                          self.lut_block, self.lut_addr)

    def _buffers(self) -> None:
        """Allocate the op's SRAM buffers (max tile sizes)."""
        g, plan = self.g, self.plan
        kw_bytes = g.kernel_bytes
        self._tile_order()
        sa = self.sa = self.ctx.begin()
        self._lut_table()
        self.max_in = max(in_box(g, s, b)[6] for s in self.spatial
                          for b in self.blocks) * g.in_elem_bytes   # bytes
        self.in_slots = ([sa.alloc(self.max_in, "input") for _ in range(2)]
                         if self.rin is None else [])
        nwb = 1 if len(self.blocks) == 1 else plan.wbufs
        w_slots, p_slots = self._weight_slots(sa, kw_bytes, nwb)
        self.out_tile = plan.rows * plan.cols * plan.ocb
        self.sc_bytes = self.out_tile * g.sc_elem_bytes
        n_sc = 2 if g.has_shortcut and self.rsc is None else 0
        # a kernel run as parts (ops/dwsplit.py): one int32 partial-sum buffer
        self.psum_bytes = psum_bytes(g, plan.rows, plan.cols, plan.ocb, self.ctx.t, 1)
        # one buffer for a 1x1 output in channel blocks (a classifier), stored in two parts,
        # where it fits with the buffers after it (the tile plan priced two block slots)
        self.whole = (self.ctx.whole_out and self.rout is None and g.oh * g.ow == 1
                      and len(self.tiles) == len(self.blocks) > 2 and len(self.xouts) == 1
                      and fits_after(sa, [g.o * g.out_elem_bytes] + [self.sc_bytes] * n_sc
                                     + [self.psum_bytes]))
        self.out_slots = ([sa.alloc(g.o * g.out_elem_bytes, "output")] if self.whole else
                          [sa.alloc(self.out_tile * g.out_elem_bytes, "output")
                           for _ in range(2)] if self.rout is None else [])
        self.sc_slots = [sa.alloc(self.sc_bytes, "shortcut") for _ in range(n_sc)]
        self.psum = sa.alloc(self.psum_bytes, "partial sums") if self.psum_bytes else None
        self.info.sram_peak_bytes = sa.top + self.ctx.base
        self.kw_bytes = kw_bytes
        self.w_bytes = plan.ocb * (kw_bytes + (PARAM_RECORD_BYTES if self.merged else 0))
        self.p_bytes = plan.ocb * PARAM_RECORD_BYTES
        self.out_bytes = self.out_tile * g.out_elem_bytes
        # Weight slots free to load into, oldest first: (weights SRAM, params SRAM, key); a
        # slot re-enters when the block in it is done (its last compute in last_read). A
        # prefetch consumer whose blocks each run once also reuses the places of its
        # prefetched blocks once they are done, so its own loads run further ahead.
        self.pool = collections.deque((w_slots[j], p_slots[j], ("w", j))
                                      for j in range(len(w_slots)))
        self.own_slots = list(self.pool)

    def _weight_slots(self, sa, kw_bytes: int, nwb: int) -> tuple[list, list]:
        """(weights SRAM, params SRAM) of the ``nwb`` weight slots; a merged block
        (:func:`conv_setup`) takes one buffer, its records after its weights (params None)."""
        self.merged = self.blobs.merged
        ctx = self.ctx
        hand = ctx.handover_below is not None and ctx.deep_slots and not ctx.tight_slots
        chans = slot_channels(self.plan.ocb, [b for _, b, _ in self.tiles], self.prefetched,
                              nwb, self.ctx.tight_slots, self._fits,
                              0 if not ctx.deep_slots else DEEP_SLOTS if hand
                              else deep_cap(self.g, ctx.t))
        nwb = len(chans)
        sizes = ([c * (kw_bytes + PARAM_RECORD_BYTES) for c in chans] if self.merged
                 else [c * kw_bytes for c in chans] + [c * PARAM_RECORD_BYTES for c in chans])
        al = ctx.t.sram_align_bytes
        ctx.wslot_bytes = sum(align_up(max(n, 1), al) for n in sizes)
        lift = ctx.wlift if ctx.wlift is not None else self._handover_lift(ctx.wslot_bytes)
        if lift is not None:
            # a weight lift (schedule/lift.py): the slots sit clear of the recent ops' areas
            offs, off = [], lift
            for n in sizes:
                offs.append(off)
                off += align_up(max(n, 1), al)
            ctx.op_res.append((lift, off))
        else:
            offs = [sa.alloc(n, "weights+params" if self.merged else
                             "weights" if i < nwb else "params") for i, n in enumerate(sizes)]
        w_offs, p_offs = (offs, [None] * nwb) if self.merged else (offs[:nwb], offs[nwb:])
        return self._hand_over(w_offs, p_offs, sizes) if hand else (w_offs, p_offs)

    def _hand_over(self, w_offs: list, p_offs: list, sizes: list) -> tuple[list, list]:
        """The weight slots (``w_offs``, ``p_offs``: SRAM offsets; ``sizes``: bytes, weights
        first) of a conv handing them over to the next op (``OpContext.handover_below``),
        in the order it fills them (:func:`handover_order`); records them in
        ``OpContext.handed`` (schedule/handover.py)."""
        ctx, al = self.ctx, self.ctx.t.sram_align_bytes
        order = handover_order(w_offs, ctx.handover_below)
        ctx.handed = [(w_offs[i], w_offs[i] + align_up(max(sizes[i], 1), al)) for i in order]
        return [w_offs[i] for i in order], [p_offs[i] for i in order]

    def _handover_lift(self, nbytes: int) -> int | None:
        """Where this prefetch consumer's own weight slots (``nbytes``) start when it takes
        over the slots handed by the conv before it (``OpContext.handover_lift``): only when
        no other tile buffer shares its tile area (input, output and shortcut resident, no
        table, no partial sums); None: in its tile area."""
        ctx, g = self.ctx, self.g
        if (ctx.handover_lift is None or self.rin is None or self.rout is None
                or (g.has_shortcut and self.rsc is None) or self.lut is not None
                or psum_bytes(g, self.plan.rows, self.plan.cols, self.plan.ocb, ctx.t, 1)):
            return None
        end = ctx.t.sram_capacity_bytes - ctx.reserve
        return ctx.handover_lift if ctx.handover_lift + nbytes <= end else None

    def _fits(self, wbufs: int) -> bool:
        """Whether the plan's tiles with ``wbufs`` weight slots fit the op's SRAM budget."""
        g, p, ctx = self.g, self.plan, self.ctx
        need = working_set(g, p.rows, p.cols, p.ocb, len(self.blocks), ctx.t.sram_align_bytes,
                           wbufs, ctx.mem.conv_residency(self.n, g))
        return need + self.lut_bytes + psum_bytes(g, p.rows, p.cols, p.ocb, ctx.t,
                                                  ctx.t.sram_align_bytes) <= ctx.budget()

    def _weight_schedule(self) -> None:
        """The order the weight blocks are loaded in, and whether loads are issued eagerly."""
        g, plan = self.g, self.plan
        order = [(s, b) for s, b, _ in self.tiles]
        self.kblk = min(plan.ocb, g.o)   # block index k = o0 // kblk: blocks follow plan.ocb
        self.once = plan.order == "channel" or len(self.spatial) == 1
        self.loads = [o0 // self.kblk for j, (_, (o0, _)) in enumerate(order)
                      if (j == 0 or order[j - 1][1][0] != o0)
                      and o0 // self.kblk not in self.prefetched]
        self.issued: collections.deque = collections.deque()   # (block, w, p, key, load)
        # Eager: issue each load as soon as a slot is free (right after the compute freeing
        # it), not just before the block's first compute, where its wait for that compute
        # could be clamped (WAIT_MAX) to a later one. Only for a consumer with no input or
        # shortcut loads, which an early weight load waiting for a compute would hold up.
        self.eager = bool(self.prefetched) and self.rin is not None and (
            self.rsc is not None or not g.has_shortcut)

    def pump(self, n_max: int) -> None:
        """Issue up to ``n_max`` of the pending block loads into free slots."""
        em, blobs = self.em, self.blobs
        while self.pool and self.loads and n_max > 0:
            n_max -= 1
            k = self.loads.pop(0)
            wb = blobs.weight_blocks[k]   # (it writes only its block's bytes of the slot)
            w_off, p_off, key = self._take_slot(wb.raw_bytes)
            deps = [self.last_read.get(key)] + em.free(w_off, wb.raw_bytes)
            if self.merged:   # the block's records follow its weights
                self.last_write[key] = em.load_block(deps, self.label + " weights+params",
                                                     SLOT_WEIGHTS, wb, w_off)
                p_blk = w_off + (wb.c1 - wb.c0) * self.kw_bytes
            else:
                em.load_block(deps, self.label + " weights", SLOT_WEIGHTS, wb, w_off)
                self.last_write[key] = em.load_block(
                    em.free(p_off, blobs.param_blocks[k].raw_bytes), self.label + " params",
                    SLOT_PARAMS,
                    blobs.param_blocks[k], p_off)
                p_blk = p_off
            self.issued.append((k, w_off, p_blk, key, self.last_write[key]))

    def _take_slot(self, nbytes: int) -> tuple:
        """The free weight slot the next block (``nbytes`` bytes) loads into: the oldest, or
        with ``deep_slots`` (equal slots) the one whose load could start first
        (:func:`~tcc_compiler.schedule.ops.convslots.earliest_slot`)."""
        if (not self.ctx.deep_slots or self.ctx.tight_slots or len(self.pool) < 2
                or self.ctx.handover_below is not None):   # (handover_order's order)
            return self.pool.popleft()
        j = earliest_slot([[self.last_read.get(e[2])] + self.em.pending(e[0], nbytes)
                           for e in self.pool])
        entry = self.pool[j]
        del self.pool[j]
        return entry

    def _switch_weights(self, o0: int) -> None:
        """Make block ``o0 // kblk`` current: release the previous block's slot, then take
        the block from the prefetch area or from the next issued load."""
        k = o0 // self.kblk
        if self.w_key is not None:   # the block just done frees its slot
            self.pool.append((self.w_addr, None if self.merged else self.p_addr, self.w_key))
        if k in self.prefetched:   # loaded during earlier ops into the prefetch area
            self.w_addr, self.p_addr, self.w_dep = self.prefetched[k]
            self.w_key = ("pre", k) if self.once else None   # free again after its computes
        else:
            self.pump(len(self.loads) if self.eager else 1)
            k_got, self.w_addr, self.p_addr, self.w_key, self.w_dep = self.issued.popleft()
            if k_got != k:
                raise InternalError(f"'{self.n.name}': weight block {k_got} loaded for {k}")
        if self.eager:
            self.pump(len(self.loads))

    def _input(self, box, strides: dict, img: int = 0) -> int:
        """The input operand's SRAM address: a box of the resident input, or the input slot
        (loaded when the box or the image changed)."""
        iy0, iy1, ix0, ix1, cc0, cc1, _, _ = box
        if self.rin is not None:  # read the box straight from the resident tensor
            rb = self.rins[img].box(iy0, ix0, cc0, ix1 - ix0, cc1 - cc0)
            strides.update(in_px_stride=rb["px"], in_row_stride=rb["row"])
            return rb["addr"]
        in_key = (iy0, iy1, ix0, ix1, cc0, cc1, img)
        if in_key != self.cur_in:
            self.in_slot = self.n_in % 2
            self.n_in += 1
            key = ("in", self.in_slot)
            addr = self.in_slots[self.in_slot]
            deps = [self.last_read.get(key)] + self.em.free(addr, self.max_in)
            self.last_write[key] = self.em.load(
                deps, self.label + " input",
                **dma_fields(self.xins[img], iy0, iy1, ix0, ix1, cc0, cc1, addr))
            self.cur_in = in_key
        return self.in_slots[self.in_slot]

    def _shortcut(self, s, b, slot: int, strides: dict, img: int = 0) -> tuple[int, Dep]:
        """(SRAM address, load) of the tile's shortcut operand (0, None without one)."""
        y0, y1, x0, x1 = s
        o0, o1 = b
        if self.rsc is not None:
            rb = self.rscs[img].box(y0, x0, o0, x1 - x0, o1 - o0)
            strides.update(sc_px_stride=rb["px"], sc_row_stride=rb["row"])
            return rb["addr"], None
        if not self.g.has_shortcut:
            return 0, None
        addr = self.sc_slots[slot]
        key = ("sc", slot)
        dep = self.em.load([self.last_read.get(key)] + self.em.free(addr, self.sc_bytes),
                           self.label + " shortcut", slot=SLOT_SHORTCUT,
                           **dma_fields(self.xscs[img], y0, y1, x0, x1, o0, o1, addr))
        self.last_write[key] = dep
        return addr, dep

    def _output(self, s, b, slot: int, deps: list, strides: dict, img: int = 0) -> int:
        """The output operand's SRAM address (adds its write dependencies to ``deps``)."""
        if self.whole:   # its channels of the one output buffer, written once
            eb = self.g.out_elem_bytes
            addr = self.out_slots[0] + b[0] * eb
            deps += self.em.free(addr, (b[1] - b[0]) * eb)
            return addr
        if self.rout is None:
            addr = self.out_slots[slot]
            deps += [self.last_store.get(slot)] + self.em.free(addr, self.out_bytes)
            return addr
        # write the box straight into the resident tensor (once its SRAM is free)
        y0, _, x0, x1 = s
        rout = self.routs[img]
        deps += self.em.free(rout.sram, rout.nbytes)
        rb = rout.box(y0, x0, b[0], x1 - x0, b[1] - b[0])
        strides.update(out_px_stride=rb["px"], out_row_stride=rb["row"])
        return rb["addr"]

    def _tile(self, i: int, s, b, img: int = 0) -> None:
        """Emit tile ``i`` (output box ``s``, channels ``b``, of image ``img``): operands,
        compute, store."""
        y0, y1, x0, x1 = s
        o0, o1 = b
        box = in_box(self.g, s, b)
        iy0, iy1, ix0, ix1, cc0, cc1, _, pads = box
        if b != self.cur_w:  # weights first: they need no DRAM wait and prefetch early
            self._switch_weights(o0)
            self.cur_w = b
        strides: dict[str, int] = {}
        in_addr = self._input(box, strides, img)
        slot = i % 2
        sc_addr, sc_dep = self._shortcut(s, b, slot, strides, img)
        deps = [self.last_write.get(("in", self.in_slot)) if self.rin is None else None,
                self.w_dep, sc_dep, self.lut_dep]
        self.lut_dep = None   # the in-order COMPUTE queue orders the later tiles after it
        out_addr = self._output(s, b, slot, deps, strides, img)
        fields = dict(in_sram=in_addr, w_sram=self.w_addr, p_sram=self.p_addr,
                      out_sram=out_addr, sc_sram=sc_addr, in_h=iy1 - iy0, in_w=ix1 - ix0,
                      in_c=cc1 - cc0, oc=o1 - o0, out_h=y1 - y0, out_w=x1 - x0, pad_t=pads[0],
                      pad_l=pads[1], pad_b=pads[2], pad_r=pads[3], **strides)
        if self.psum is not None:   # the kernel's parts, summed in the partial buffer
            comp = emit_parts(self.em, self.ctx.t, self.label, self.cfg,
                              depthwise_parts(self.g.kh, self.g.kw, self.ctx.t), fields,
                              self.psum, deps + self.em.free(self.psum, self.psum_bytes))
        else:
            comp = self.em.emit(C.ConvTile, deps, self.label, **fields)
        self.last_read[("in", self.in_slot)] = comp
        if self.w_key is not None:
            self.last_read[self.w_key] = comp
        if self.g.has_shortcut:
            self.last_read[("sc", slot)] = comp
        if self.whole:
            self._store_whole(i, comp)
        elif self.rout is None:
            self.last_store[slot] = self.em.store(
                [comp], self.label + " output",
                **dma_fields(self.xouts[img], y0, y1, x0, x1, o0, o1, self.out_slots[slot]))
        self.info.tiles += 1
        if self.ctx.on_tile is not None:
            self.ctx.on_tile(s, b)

    def _store_whole(self, i: int, comp) -> None:
        """With one output buffer (``whole``): two stores, the first of the leading blocks
        (:func:`~tcc_compiler.schedule.ops.convslots.store_cut`) right after they are
        computed, the second of the rest after the last tile (two stores' setup instead of
        one per block, and no tile waits for a store to free its output slot)."""
        g, t, n = self.g, self.ctx.t, len(self.tiles)
        if i == 0:
            per = [b for _, b, _ in self.tiles]
            self.cut = store_cut([t.compute_setup_cycles + pixel_cycles(g, o1 - o0, t)
                                  for o0, o1 in per], [o1 * g.out_elem_bytes for _, o1 in per], t)
        if i == self.cut - 1 or i == n - 1:
            c0, c1 = (0, self.tiles[i][1][1]) if i < n - 1 else (self.tiles[self.cut][1][0], g.o)
            self.em.store([comp], self.label + " output",
                          **dma_fields(self.xouts[0], 0, 1, 0, 1, c0, c1,
                                       self.out_slots[0] + c0 * g.out_elem_bytes))

    def run(self) -> None:
        """Emit the whole op and finish its :class:`LayerInfo`."""
        self._buffers()
        self._weight_schedule()
        self.last_read: dict = {}    # slot key -> compute (queue, idx) that last read it
        self.last_write: dict = {}   # slot key -> load (queue, idx) that last wrote it
        self.last_store: dict = {}   # out slot -> store that last read it
        self.cur_in = self.cur_w = None
        self.n_in = self.in_slot = 0
        self.w_addr = self.p_addr = 0
        self.w_key: tuple | None = None   # weight slot of the current block (None: prefetched)
        self.w_dep = None
        if self.eager:
            self.pump(len(self.loads))
        for i, (s, b, img) in enumerate(self.tiles):
            self._tile(i, s, b, img)
        if self.ctx.deep_slots:   # the next ops' loads wait only for each slot's last block
            for w_off, p_off, key in self.own_slots:
                for off in (w_off, p_off):
                    if off is not None:
                        self.em.release_early(off, self.last_read.get(key))
        self.ctx.end(self.sa)
        g, plan = self.g, self.plan
        self.info.macs = g.macs
        self.info.plan = (f"{plan.rows}x{plan.cols}x{plan.ocb} tiles, {plan.order} order, "
                          f"{len(self.spatial)} spatial x {len(self.blocks)} channel blocks")
        if self.lut is not None:
            self.info.plan += f", {self.lut.attrs.func.value} table in the epilogue"
        if self.cfg.get("out_mode", 0) & OUT_MODE_TWO_SLOPE:
            self.info.plan += ", two-slope epilogue"
        if self.split:
            self.info.plan += split_text(g, self.ctx.t)
