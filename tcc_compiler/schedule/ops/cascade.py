"""Emission of a cascaded chain (planned by schedule/cascade.py), band by band.

Once per chain: every op's whole weight and parameter blocks. Per band: the input band (rows
the first op's band reads, full width, all channels) and, unless shared, made by the side op or
resident, the shortcut band; then per op its CFG (when its family's registers hold another
op's) and one full-width, all-channel tile reading the previous op's band buffer and writing
its own (the side op, just before the last op, reads a box of the input band and writes the
shortcut band buffer); then the store of the output band. Band buffers of intermediates are
single: only the in-order COMPUTE queue touches them. The input, output and shortcut bands are
double-buffered like any tile, so the next band's load overlaps this band's compute. Each op
gets a :class:`LayerInfo` listing its own commands (``cmds``).
"""

from __future__ import annotations

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.ops import Op
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import PARAM_RECORD_BYTES
from tcc_compiler.schedule.cascade import Chain, OpRows, cascade_psum_bytes
from tcc_compiler.schedule.cost import depthwise_parts
from tcc_compiler.schedule.emitter import Dep, dma_fields
from tcc_compiler.schedule.ops.context import OpContext, label, new_info
from tcc_compiler.schedule.ops.convsetup import conv_setup
from tcc_compiler.schedule.ops.dwsplit import emit_parts, split_text
from tcc_compiler.schedule.ops.pool import pool_cfg
from tcc_compiler.schedule.program import SLOT_PARAMS, SLOT_SHORTCUT, SLOT_WEIGHTS, LayerInfo
from tcc_compiler.schedule.tiling import depthwise_split


def lower_chain(ctx: OpContext, ch: Chain) -> list[LayerInfo]:
    """Emit cascaded chain ``ch``; return the :class:`LayerInfo` of its ops (chain order, the
    side op last).

    Raises:
        InternalError: a cascaded conv's weights are not one block (a bug).
    """
    return _ChainEmission(ctx, ch).run()


class _ChainEmission:
    """The state of one chain's emission."""

    def __init__(self, ctx: OpContext, ch: Chain):
        self.ctx, self.em, self.ch = ctx, ctx.em, ch
        mem = ctx.mem
        nodes = ch.nodes
        self.k = k = len(nodes)
        self.ops = nodes + ([ch.side] if ch.side is not None else [])
        self.geoms = ch.geoms + ([ch.side_geom] if ch.side is not None else [])
        self.g0, self.gl = self.geoms[0], self.geoms[k - 1]
        x, y = nodes[0].inputs[0], nodes[-1].output
        sc_v = nodes[-1].input(3) if self.gl.has_shortcut else None
        self.rin, self.rout = mem.resident(x), mem.resident(y)
        self.rsc = mem.resident(sc_v) if ch.side is None else None
        self.xin, self.xout, self.xsc = mem.tensor(x), mem.tensor(y), mem.tensor(sc_v)
        ctx.op_res = [(r.sram, r.sram + r.nbytes) for r in (self.rin, self.rout, self.rsc)
                      if r is not None]
        self.labels = [label(n) for n in self.ops]
        self.infos, self.cfgs, self.blobs = [], [], []
        for n, g in zip(self.ops, self.geoms):
            info = new_info(n)
            if n.op is Op.CONV:
                bl, cfg = conv_setup(ctx.weights, ctx.t, n, g, g.o, info, ctx.memo)   # loaded once
                self.cfgs.append((C.ConvCfg, cfg))
                self.blobs.append(bl)
                info.macs = g.macs
            else:
                self.cfgs.append((C.PoolCfg, pool_cfg(n, g.kh, g.kw, g.sh, g.sw)))
                self.blobs.append(None)
            self.infos.append(info)
        self.cmd_of: list[list[int]] = [[] for _ in self.ops]

    def mark(self, i: int) -> None:
        """The next command emitted belongs to op ``i``."""
        self.cmd_of[i].append(self.em.n_cmds)

    def _buffers(self) -> None:
        ch, k, g0, gl = self.ch, self.k, self.g0, self.gl
        bands = ch.bands
        sa = self.sa = self.ctx.begin()
        self.in_bytes = max(b[0][3] - b[0][2] for b in bands) * g0.w * g0.c
        self.in_slots = ([sa.alloc(self.in_bytes, "input band") for _ in range(2)]
                         if self.rin is None else [])
        # band buffers: op i's output rows for i < k - 1, then the side op's (the last op's)
        self.mid_bytes = [max(b[i][1] - b[i][0] for b in bands) * g.ow * g.o
                          for i, g in enumerate(self.geoms[:k - 1])]
        self.out_bytes = ch.rows * gl.ow * gl.o
        if ch.side is not None:
            self.mid_bytes.append(self.out_bytes)
        self.mid = [sa.alloc(nb, "band buffer") for nb in self.mid_bytes]
        self.wsl = [self._weight_slot(sa, bl) if bl is not None else None
                    for bl in self.blobs]
        self.out_slots = ([sa.alloc(self.out_bytes, "output band") for _ in range(2)]
                          if self.rout is None else [])
        self.sc_sep = (gl.has_shortcut and not ch.sc_shared and self.rsc is None
                       and ch.side is None)
        self.sc_slots = ([sa.alloc(self.out_bytes, "shortcut band") for _ in range(2)]
                         if self.sc_sep else [])
        # ops whose kernel runs as parts (ops/dwsplit.py) share one int32 partial-sum buffer
        self.psum_bytes = cascade_psum_bytes(ch, self.ctx.t, 1)
        self.psum = sa.alloc(self.psum_bytes, "partial sums") if self.psum_bytes else None

    @staticmethod
    def _weight_slot(sa, bl) -> tuple[int, int]:
        """(weights SRAM, params SRAM) of one op's single block; a merged block
        (schedule/ops/conv.py conv_setup) takes one buffer, its records after its weights."""
        wb = bl.weight_blocks[0]
        if bl.merged:
            ws = sa.alloc(wb.raw_bytes, "weights+params")
            return ws, ws + wb.raw_bytes - (wb.c1 - wb.c0) * PARAM_RECORD_BYTES
        return (sa.alloc(wb.raw_bytes, "weights"),
                sa.alloc(bl.param_blocks[0].raw_bytes, "params"))

    def _weights(self) -> None:
        """Every op's weight and parameter block, first: no DRAM wait, they prefetch early."""
        em = self.em
        self.wdeps: list[Dep] = []
        for i, bl in enumerate(self.blobs):
            if bl is None:
                self.wdeps.append(None)
                continue
            ws, ps = self.wsl[i]
            wb = bl.weight_blocks[0]
            if len(bl.weight_blocks) != 1 or len(bl.param_blocks) != (0 if bl.merged else 1):
                raise InternalError(f"cascaded conv '{self.ops[i].name}': weights not one "
                                    "block")
            self.mark(i)
            if bl.merged:
                self.wdeps.append(em.load_block(em.free(ws, wb.raw_bytes),
                                                self.labels[i] + " weights+params",
                                                SLOT_WEIGHTS, wb, ws))
                continue
            pb = bl.param_blocks[0]
            em.load_block(em.free(ws, wb.raw_bytes), self.labels[i] + " weights",
                          SLOT_WEIGHTS, wb, ws)
            self.mark(i)
            self.wdeps.append(em.load_block(em.free(ps, pb.raw_bytes),
                                            self.labels[i] + " params", SLOT_PARAMS, pb, ps))

    def _band_loads(self, band: tuple[OpRows, ...], slot: int) -> tuple[Dep, Dep]:
        """The input band's and the separate shortcut band's loads (None when absent)."""
        em, k, g0, gl = self.em, self.k, self.g0, self.gl
        iy0, iy1 = band[0][2], band[0][3]
        y0, y1 = band[-1][0], band[-1][1]
        in_dep = sc_dep = None
        if self.rin is None:
            self.mark(0)
            addr = self.in_slots[slot]
            in_dep = em.load([self.last_read.get(("in", slot))] + em.free(addr, self.in_bytes),
                             self.labels[0] + " input band",
                             **dma_fields(self.xin, iy0, iy1, 0, g0.w, 0, g0.c, addr))
        if self.sc_sep:
            self.mark(k - 1)
            addr = self.sc_slots[slot]
            sc_dep = em.load([self.last_read.get(("sc", slot))] + em.free(addr, self.out_bytes),
                             self.labels[k - 1] + " shortcut band", slot=SLOT_SHORTCUT,
                             **dma_fields(self.xsc, y0, y1, 0, gl.ow, 0, gl.o, addr))
        return in_dep, sc_dep

    def _tile_input(self, i: int, rows, iy0: int, slot: int, in_dep: Dep, deps: list,
                    strides: dict) -> int:
        """SRAM address of op ``i``'s input box: the previous op's band buffer, the input
        band, or the resident input."""
        g = self.geoms[i]
        ry0, _, ix0, ix1 = rows
        row = 0 if ix1 - ix0 == g.w else g.w * g.c   # band buffers are full width
        if 0 < i < self.k:
            strides.update(in_px_stride=0, in_row_stride=row)
            return self.mid[i - 1] + ix0 * g.c
        if self.rin is None:
            strides.update(in_px_stride=0, in_row_stride=row)
            deps.append(in_dep)
            return self.in_slots[slot] + ((ry0 - iy0) * g.w + ix0) * g.c
        rb = self.rin.box(ry0, ix0, 0, ix1 - ix0, g.c)
        strides.update(in_px_stride=rb["px"], in_row_stride=rb["row"])
        return rb["addr"]

    def _tile_output(self, i: int, oy0: int, slot: int, deps: list, strides: dict) -> int:
        """SRAM address of op ``i``'s output: its band buffer, the output band slot or the
        resident output (adds the write dependencies to ``deps``)."""
        em, k, g = self.em, self.k, self.geoms[i]
        if i != k - 1:   # an intermediate or the side op: its band buffer
            out_addr = self.mid[min(i, k - 1)]
            deps += em.free(out_addr, self.mid_bytes[min(i, k - 1)])
            return out_addr
        if self.rout is None:
            out_addr = self.out_slots[slot]
            deps += [self.last_store.get(slot)] + em.free(out_addr, self.out_bytes)
            return out_addr
        deps += em.free(self.rout.sram, self.rout.nbytes)
        rb = self.rout.box(oy0, 0, 0, g.ow, g.o)
        strides.update(out_px_stride=rb["px"], out_row_stride=rb["row"])
        return rb["addr"]

    def _tile_shortcut(self, oy0: int, iy0: int, slot: int, sc_dep: Dep, deps: list,
                       strides: dict) -> int:
        """SRAM address of the last op's shortcut band."""
        ch, g = self.ch, self.geoms[self.k - 1]
        if ch.side is not None:
            return self.mid[self.k - 1]
        if ch.sc_shared and self.rin is None:   # a box of the input band
            return self.in_slots[slot] + (oy0 - iy0) * self.g0.w * self.g0.c
        if ch.sc_shared or self.rsc is not None:
            rb = (self.rin if ch.sc_shared else self.rsc).box(oy0, 0, 0, g.ow, g.o)
            strides.update(sc_px_stride=rb["px"], sc_row_stride=rb["row"])
            return rb["addr"]
        deps.append(sc_dep)
        return self.sc_slots[slot]

    def _op_tile(self, i: int, bi: int, band: tuple[OpRows, ...], slot: int,
                 loads: tuple[Dep, Dep]) -> Dep:
        """Emit op ``i``'s tile of band ``bi`` (and its CFG when needed); return the tile."""
        n, g, k, lab = self.ops[i], self.geoms[i], self.k, self.labels[i]
        iy0 = band[0][2]
        y0, y1 = band[-1][0], band[-1][1]
        if i < k:
            oy0, oy1, ry0, ry1, pt, pb = band[i]
        else:   # the side op: the last op's output rows, read from the input band
            oy0, oy1 = y0, y1
            ry0, ry1, pt, pb = g.in_rows(y0, y1)
        ix0, ix1, pl, pr = g.in_cols(0, g.ow)
        cls, cfg = self.cfgs[i]
        split = n.op is Op.CONV and depthwise_split(g, self.ctx.t)
        if self.cur_cfg.get(cls) != i and not split:   # the registers hold another op's
            self.mark(i)
            self.em.emit(cls, [], lab, slot=min(i, 3), **cfg)
            self.cur_cfg[cls] = i
        deps = [self.wdeps[i]] if bi == 0 else []
        strides: dict[str, int] = {}
        in_addr = self._tile_input(i, (ry0, ry1, ix0, ix1), iy0, slot, loads[0], deps, strides)
        out_addr = self._tile_output(i, oy0, slot, deps, strides)
        self.mark(i)
        geo = dict(in_h=ry1 - ry0, in_w=ix1 - ix0, out_h=oy1 - oy0, out_w=g.ow, pad_t=pt,
                   pad_l=pl, pad_b=pb, pad_r=pr)
        if n.op is not Op.CONV:
            return self.em.emit(C.PoolTile, deps, lab, slot=min(i, 3), in_sram=in_addr,
                                out_sram=out_addr, c=g.c, **geo, **strides)
        sc_addr = 0
        if i == k - 1 and g.has_shortcut:
            sc_addr = self._tile_shortcut(oy0, iy0, slot, loads[1], deps, strides)
        fields = dict(in_sram=in_addr, w_sram=self.wsl[i][0], p_sram=self.wsl[i][1],
                      out_sram=out_addr, sc_sram=sc_addr, in_c=g.c, oc=g.o, **geo, **strides)
        if split:   # the kernel's parts; they leave the last part's registers
            self.cur_cfg[cls] = None
            return emit_parts(self.em, self.ctx.t, lab, cfg, depthwise_parts(g.kh, g.kw,
                                                                            self.ctx.t),
                              fields, self.psum,
                              deps + self.em.free(self.psum, self.psum_bytes),
                              lambda: self.mark(i))
        return self.em.emit(C.ConvTile, deps, lab, slot=min(i, 3), **fields)

    def _band(self, bi: int, band: tuple[OpRows, ...]) -> None:
        ch, k = self.ch, self.k
        slot = bi % 2
        loads = self._band_loads(band, slot)
        order = list(range(k - 1)) + ([k] if ch.side is not None else []) + [k - 1]
        comp = None
        for i in order:
            comp = self._op_tile(i, bi, band, slot, loads)
            self.infos[i].tiles += 1
            if i in (0, k) or (i == k - 1 and ch.sc_shared and self.rin is None):
                self.last_read[("in", slot)] = comp
            if i == k - 1 and self.sc_sep:
                self.last_read[("sc", slot)] = comp
        if self.rout is None:
            y0, y1 = band[-1][0], band[-1][1]
            gl = self.gl
            self.mark(k - 1)
            self.last_store[slot] = self.em.store(
                [comp], self.labels[k - 1] + " output band",
                **dma_fields(self.xout, y0, y1, 0, gl.ow, 0, gl.o, self.out_slots[slot]))

    def run(self) -> list[LayerInfo]:
        self._buffers()
        self._weights()
        self.last_read: dict[tuple[str, int], Dep] = {}
        self.last_store: dict[int, Dep] = {}
        self.cur_cfg: dict[type, int] = {}
        for bi, band in enumerate(self.ch.bands):
            self._band(bi, band)
        self.ctx.end(self.sa)
        self._finish()
        return self.infos

    def _finish(self) -> None:
        """Each op's command list, SRAM footprint and plan description."""
        ch, k, bands, nodes = self.ch, self.k, self.ch.bands, self.ch.nodes
        for i, (info, g) in enumerate(zip(self.infos, self.geoms)):
            info.cmds = self.cmd_of[i]
            info.first_cmd, info.end_cmd = min(self.cmd_of[i]), max(self.cmd_of[i]) + 1
            info.sram_peak_bytes = self.sa.top + self.ctx.base
            extra = sum(b[i][1] - b[i][0] for b in bands) - g.oh if i < k else 0
            role = f"{i + 1}/{k}" if i < k else "side (shortcut)"
            info.plan = (f"cascade {role} of {nodes[-1].name}: {len(bands)} bands of "
                         f"{ch.rows} output rows, full width, all channels"
                         + (f"; {extra} rows recomputed (halo)" if extra else "")
                         + ("; shortcut read from the input band" if i == k - 1
                            and ch.sc_shared else "")
                         + (f"; chain saves {ch.saved_bytes} DRAM bytes" if i == k - 1
                            else "")
                         + (split_text(g, self.ctx.t) if self.ops[i].op is Op.CONV
                            and depthwise_split(g, self.ctx.t) else ""))
