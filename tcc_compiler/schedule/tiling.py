"""Tile selection under the SRAM budget.

A tile of a conv-like op is (output rows, output columns, output-channel block). Its working
set is the input tile with its halo, the weight block, the per-channel parameter block, the
output tile and (for fused residuals) the shortcut tile; activation and output buffers are
double-buffered so DMA overlaps compute, weight buffers too when there is more than one block.
Among the tile shapes that fit, the one with the smallest estimated time
(:func:`tcc_compiler.schedule.cost.tile_pipeline_cycles`) wins, ties going to fewer tiles.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from tcc_compiler.errors import ScheduleError
from tcc_compiler.isa.spec import PARAM_RECORD_BYTES
from tcc_compiler.schedule import cost
from tcc_compiler.target import Target


#: Most tiles one conv-like op (conv, FC, pooling) may be cut into. Not a hardware number: a
#: bound on the compiler's work. Each tile costs a few commands (its loads, compute, store),
#: and the schedule search lowers and replays several variants of the whole program, so an
#: op cut into tens of thousands of tiles (MobileOne-S1 200x136 on a 4 KiB SRAM: 14,976 for
#: each of its 3x3 convs, 498,348 commands and five minutes per search) is refused, and the
#: search stays linear in the ops. Real programs are far below it: ResNet-50 at 1920x1080
#: takes at most 72 tiles per op on the 2 MiB SRAM, 384 on 512 KiB; MobileOne-S1 200x136
#: 2,496 on 8 KiB.
MAX_OP_TILES = 4096


def align_up(n: int, a: int) -> int:
    """Round ``n`` up to a multiple of ``a``."""
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class ConvGeom:
    """Geometry of a conv-like op on the NPU (NHWC, one image).

    Attributes:
        h, w, c: input map. oh, ow, o: output map. kh, kw, sh, sw, dh, dw: kernel, strides,
        dilations. pads: (t, l, b, r). group: groups as the NPU runs them. out_elem_bytes: 1
        (int8), 2 (int16) or 4 (int32). has_shortcut: fused residual input of the output's
        shape. in_elem_bytes, sc_elem_bytes: 1 (int8) or 2 (int16) of the input and shortcut.
        w_elem_bytes: 1 (int8 weights) or 2 (int16 weights, CONV_CFG flags bit7).
    """

    h: int
    w: int
    c: int
    oh: int
    ow: int
    o: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pads: tuple[int, int, int, int]
    group: int
    out_elem_bytes: int = 1
    has_shortcut: bool = False
    has_weights: bool = True
    in_elem_bytes: int = 1
    sc_elem_bytes: int = 1
    w_elem_bytes: int = 1

    def __hash__(self) -> int:
        """The fields' hash, computed once: a geometry keys the planners' memos
        (:func:`plan_conv`, :func:`~tcc_compiler.schedule.geom.in_box`, ...), asked for on
        every tile of every lowering of the schedule search."""
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.h, self.w, self.c, self.oh, self.ow, self.o, self.kh, self.kw,
                      self.sh, self.sw, self.dh, self.dw, self.pads, self.group,
                      self.out_elem_bytes, self.has_shortcut, self.has_weights,
                      self.in_elem_bytes, self.sc_elem_bytes, self.w_elem_bytes))
            object.__setattr__(self, "_hash", h)   # (frozen: not a field, not compared)
        return h

    @property
    def kernel_bytes(self) -> int:
        """Weight bytes of one output channel: ``kh * kw * cin_g * w_elem_bytes`` (OHWI)."""
        return self.kh * self.kw * self.cin_g * self.w_elem_bytes

    @property
    def cin_g(self) -> int:
        """Input channels per group."""
        return self.c // self.group

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the op."""
        return self.oh * self.ow * self.o * self.kh * self.kw * self.cin_g

    @property
    def og(self) -> int:
        """Output channels per group."""
        return self.o // self.group

    def in_rows(self, oy0: int, oy1: int) -> tuple[int, int, int, int]:
        """Input rows [iy0, iy1) for output rows [oy0, oy1) and the (pad_top, pad_bottom)."""
        return _span(oy0, oy1, self.sh, self.dh, self.kh, self.pads[0], self.h)

    def in_cols(self, ox0: int, ox1: int) -> tuple[int, int, int, int]:
        """Input columns [ix0, ix1) for output columns [ox0, ox1) and (pad_left, pad_right)."""
        return _span(ox0, ox1, self.sw, self.dw, self.kw, self.pads[1], self.w)

    def max_in_span(self, n: int, axis: str) -> int:
        """Largest input extent (rows for axis "h", columns for "w") any tile of ``n`` output
        rows/columns reads: ``min(size, (n - 1) * stride + (k - 1) * dilation + 1)``."""
        if axis == "h":
            return min(self.h, (n - 1) * self.sh + (self.kh - 1) * self.dh + 1)
        return min(self.w, (n - 1) * self.sw + (self.kw - 1) * self.dw + 1)

    def in_channels(self, o0: int, o1: int) -> tuple[int, int]:
        """Input channels [c0, c1) that output channels [o0, o1) read (whole groups)."""
        if self.group == 1:
            return 0, self.c
        g0, g1 = o0 // self.og, (o1 - 1) // self.og + 1
        return g0 * self.cin_g, g1 * self.cin_g


def _span(o0, o1, s, d, k, pad_before, size):
    lo = o0 * s - pad_before
    hi = (o1 - 1) * s - pad_before + (k - 1) * d + 1
    return max(lo, 0), min(hi, size), max(0, -lo), max(0, hi - size)


@dataclass(frozen=True)
class ConvPlan:
    """Chosen tiling: ``rows`` x ``cols`` output pixels x ``ocb`` output channels per tile,
    ``order`` "spatial" (spatial tiles outer, channel blocks inner) or "channel"."""

    rows: int
    cols: int
    ocb: int
    order: str
    sram_peak_bytes: int
    est_cycles: int
    wbufs: int = 2


@dataclass(frozen=True)
class Residency:
    """Which operands of an op live whole in SRAM (no tile buffer, no DMA): input, output,
    shortcut."""

    inp: bool = False
    out: bool = False
    sc: bool = False


NO_RESIDENCY = Residency()


def uses_image_mode(g: ConvGeom, t: Target) -> bool:
    """True when the conv runs in image mode (CONV_CFG flags bit1): the target offers it, the
    op has one group and ``kw * cin_g`` fits one array input vector, and it saves cycles
    (``ceil(kw * cin_g / array_in) < kw * ceil(cin_g / array_in)``)."""
    ai = t.array_in_channels
    return (t.image_mode and g.has_weights and g.group == 1 and g.kw * g.cin_g <= ai
            and math.ceil(g.kw * g.cin_g / ai) < g.kw * math.ceil(g.cin_g / ai))


def uses_depthwise_mode(g: ConvGeom, t: Target) -> bool:
    """True when the conv runs on the depthwise datapath (CONV_CFG flags bit2): the target has
    it, the op has weights, one input and one output channel per group (``group = c = o``),
    dilation 1, stride <= ``depthwise_max_stride`` and kernel <= ``depthwise_max_kernel``, or
    a larger kernel run as parts (:func:`depthwise_split`)."""
    return (t.depthwise_mode and g.has_weights and g.group > 1 and g.group == g.c == g.o
            and g.dh == g.dw == 1 and max(g.sh, g.sw) <= t.depthwise_max_stride
            and (max(g.kh, g.kw) <= t.depthwise_max_kernel or _splittable(g)))


def _splittable(g: ConvGeom) -> bool:
    """A depthwise conv whose parts can be summed in int32 partials (CONV_CFG out_mode bit1):
    int8 weights (int16 ones accumulate in 64 bits) and no fused shortcut (the partial takes
    the shortcut operand's place)."""
    return g.w_elem_bytes == 1 and not g.has_shortcut


def depthwise_split(g: ConvGeom, t: Target) -> bool:
    """True when the conv runs on the depthwise datapath as parts of its kernel
    (:func:`~tcc_compiler.schedule.cost.depthwise_parts`): its kernel exceeds
    ``depthwise_max_kernel``; each tile then needs an int32 partial-sum buffer of its output
    size (specs/target.md, "Large depthwise kernels")."""
    return max(g.kh, g.kw) > t.depthwise_max_kernel and uses_depthwise_mode(g, t)


def psum_bytes(g: ConvGeom, rows: int, cols: int, ocb: int, t: Target, al: int) -> int:
    """SRAM bytes of a tile's int32 partial sums (``rows`` x ``cols`` x ``ocb``, ``al``-aligned)
    when the conv runs as parts (:func:`depthwise_split`), else 0. One buffer: the parts of a
    tile run back to back on the in-order compute queue."""
    return align_up(rows * cols * ocb * 4, al) if depthwise_split(g, t) else 0


def pixel_cycles(g: ConvGeom, oc: int, t: Target) -> int:
    """Compute cycles per output pixel of a conv tile of ``oc`` output channels (whole groups):
    the depthwise datapath's, image mode's or the MAC array's
    (:mod:`tcc_compiler.schedule.cost`)."""
    rate = cost.int16_rate(g.in_elem_bytes == 2, g.w_elem_bytes == 2, t)   # (cost.py)
    if uses_depthwise_mode(g, t):
        return rate * cost.depthwise_pixel_cycles(g.kh, g.kw, oc, t)
    if g.group == 1:
        return rate * cost.conv_pixel_cycles(g.kh, g.kw, oc, g.cin_g, 1,
                                             uses_image_mode(g, t), t)
    return rate * cost.conv_pixel_cycles(g.kh, g.kw, oc, g.cin_g, oc // g.og, False, t)


@functools.lru_cache(maxsize=1 << 16)
def working_set(g: ConvGeom, rows: int, cols: int, ocb: int, nblocks: int, al: int,
                wbufs: int = 2, res: Residency = NO_RESIDENCY) -> int:
    """SRAM bytes of a conv tile's buffers: ``rows`` x ``cols`` output pixels x ``ocb``
    channels, ``nblocks`` channel blocks in all, ``al``-aligned; input, output and shortcut
    double-buffered unless resident (``res``), weights + params ``wbufs`` times (once for one
    block). Memoised, as :func:`_estimate` (the tile planner asks again for every SRAM budget
    the schedule search's candidates give an op)."""
    c0, c1 = g.in_channels(0, ocb)
    # the largest input tile is an interior one: its halo is not clipped by the padding
    in_b = align_up(g.max_in_span(rows, "h") * g.max_in_span(cols, "w") * (c1 - c0)
                    * g.in_elem_bytes, al)
    w_b = 0
    if g.has_weights:
        w_b = align_up(ocb * g.kernel_bytes, al) + align_up(ocb * PARAM_RECORD_BYTES, al)
    out_b = align_up(rows * cols * ocb * g.out_elem_bytes, al)
    sc_b = align_up(rows * cols * ocb * g.sc_elem_bytes, al) if g.has_shortcut else 0
    wbufs = 1 if nblocks == 1 else wbufs
    return (0 if res.inp else 2 * in_b) + wbufs * w_b + (0 if res.out else 2 * out_b) \
        + (0 if res.sc else 2 * sc_b)


@functools.lru_cache(maxsize=4096)
def candidate_extents(n: int) -> tuple[int, ...]:
    """Tile extents to try: n, ceil(n/2), ceil(n/3), ... down to 1 (distinct); memoised (the
    tile planners ask for the same few extents thousands of times)."""
    out: list[int] = []
    for k in range(1, n + 1):
        v = math.ceil(n / k)
        if not out or v != out[-1]:
            out.append(v)
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _block_candidates(g: ConvGeom, t: Target) -> tuple[int, ...]:
    """Output-channel blocks to try: ceil(O / k) rounded up to the array width (whole groups
    for a grouped conv), then, for one group, fallbacks below the array width (memoised)."""
    blocks: list[int] = []
    dw = uses_depthwise_mode(g, t)
    if dw:   # whole passes of the depthwise datapath
        step = min(g.o, t.depthwise_channels_per_cycle)
    elif g.group > 1:
        step = g.og
    else:
        step = t.array_out_channels if g.o > t.array_out_channels else g.o
    for k in range(1, g.o + 1):
        v = math.ceil(g.o / k)
        v = min(g.o, max(step, (v + step - 1) // step * step))
        if v not in blocks:
            blocks.append(v)
    if g.group == 1 or dw:  # fallbacks below the array width, for very small SRAMs
        blocks += [v for v in (32, 16, 8, 4, 2, 1) if v < min(blocks)]
    return tuple(blocks)


def _fit(g: ConvGeom, rows: int, cols: int, ocb: int, nb: int, al: int, budget: int,
         res: Residency, psum: int = 0) -> tuple[int, int] | None:
    """(working set bytes, weight buffers) of a tile shape within ``budget``, weights
    single-buffered if double-buffering does not fit; None when it does not fit (``psum``:
    the tile's partial-sum bytes, :func:`psum_bytes`)."""
    need = working_set(g, rows, cols, ocb, nb, al, res=res) + psum
    if need > budget and nb > 1:  # single-buffer the weights (no prefetch)
        need = working_set(g, rows, cols, ocb, nb, al, wbufs=1, res=res) + psum
        return (need, 1) if need <= budget else None
    return (need, 2) if need <= budget else None


@functools.lru_cache(maxsize=1 << 16)
def _estimate(g: ConvGeom, t: Target, rows: int, cols: int, ocb: int, nb: int,
              res: Residency) -> tuple[int, str, int, int]:
    """(estimated cycles before the buffer penalties, order, tiles, input tile bytes) of a tile
    shape: :func:`cost.tile_pipeline_cycles` of its MAC cycles and DRAM traffic in the cheaper
    loop order. A pure function of hashable arguments, memoised."""
    ns = math.ceil(g.oh / rows) * math.ceil(g.ow / cols)
    iy0, iy1, _, _ = g.in_rows(0, rows)
    ix0, ix1, _, _ = g.in_cols(0, cols)
    c0, c1 = g.in_channels(0, ocb)
    w_total = g.o * g.kernel_bytes if g.has_weights else 0
    in_tile = 0 if res.inp else (iy1 - iy0) * (ix1 - ix0) * (c1 - c0) * g.in_elem_bytes
    in_all = in_tile * ns * (nb if g.group == 1 else 1)
    out_all = g.oh * g.ow * g.o * ((0 if res.out else g.out_elem_bytes)
                                   + (g.sc_elem_bytes if g.has_shortcut and not res.sc else 0))
    # spatial order reloads weights per spatial tile when nb > 1; channel order
    # reloads the input per block.
    sp_traffic = (in_tile * ns * (1 if g.group == 1 else nb)
                  + w_total * (ns if nb > 1 else 1) + out_all)
    ch_traffic = in_all + w_total + out_all
    order = "spatial" if sp_traffic <= ch_traffic else "channel"
    traffic = min(sp_traffic, ch_traffic)
    if g.group == 1 or uses_depthwise_mode(g, t):   # tiles of rows x cols x ocb
        macs_cycles = ns * nb * rows * cols * pixel_cycles(g, ocb, t)
    else:   # grouped: each block's groups run ceil(groups / per pass) passes
        full, rest = divmod(g.o, ocb)
        macs_cycles = g.oh * g.ow * (full * pixel_cycles(g, ocb, t)
                                     + (pixel_cycles(g, rest, t) if rest else 0))
    ntiles = ns * nb
    est = cost.tile_pipeline_cycles(macs_cycles, cost.transfer_cycles(traffic, t), ntiles, t)
    return est, order, ntiles, in_tile


def plan_conv(g: ConvGeom, t: Target, sram_budget: int,
              res: Residency = NO_RESIDENCY, max_ocb: int | None = None,
              min_ocb: int | None = None) -> ConvPlan:
    """Pick the fastest tile shape that fits ``sram_budget`` bytes in at most
    :data:`MAX_OP_TILES` tiles. Operands resident in SRAM (``res``) need no tile buffers and
    no DMA. ``max_ocb``: output-channel blocks larger than
    this are not tried (the smallest candidate always is), e.g. so a prefetch consumer's
    weight blocks pack its prefetch area (schedule/prefetch.py). ``min_ocb``: nor blocks
    smaller than this, when a larger one fits (coarse weight blocks, schedule/ops/conv.py).

    A pure function of its (frozen, hashable) arguments, memoised: the schedule search lowers a
    network several times and asks for the same plans again (ResNet-50 224: 726 calls, about
    a third of them distinct).

    Raises:
        ScheduleError: no tile shape fits in at most :data:`MAX_OP_TILES` tiles (not even a
            1x1-pixel, one-group tile fits, or the shapes that fit are that small).
    """
    if min_ocb is not None:
        try:
            return _plan_conv(g, t, int(sram_budget), res, max_ocb, min_ocb)
        except ScheduleError:
            pass
    return _plan_conv(g, t, int(sram_budget), res, max_ocb)


@functools.lru_cache(maxsize=1 << 14)
def _plan_conv(g: ConvGeom, t: Target, sram_budget: int, res: Residency,
               max_ocb: int | None, min_ocb: int | None = None) -> ConvPlan:
    """:func:`plan_conv`, memoised (a ScheduleError is not cached: it is raised again)."""
    al = t.sram_align_bytes
    best = None
    w_total = g.o * g.kernel_bytes if g.has_weights else 0
    cands = _block_candidates(g, t)
    if max_ocb is not None:
        cands = [o for o in cands if o <= max_ocb] or [min(cands)]
    if min_ocb is not None:
        cands = [o for o in cands if o >= min_ocb]
    for ocb in cands:
        nb = math.ceil(g.o / ocb)
        for rows in candidate_extents(g.oh):
            for cols in candidate_extents(g.ow):
                fit = _fit(g, rows, cols, ocb, nb, al, sram_budget, res,
                           psum_bytes(g, rows, cols, ocb, t, al))
                if fit is None:
                    continue
                if math.ceil(g.oh / rows) * math.ceil(g.ow / cols) * nb > MAX_OP_TILES:
                    break   # narrower columns only cut it into more tiles
                need, wbufs = fit
                est, order, ntiles, in_tile = _estimate(g, t, rows, cols, ocb, nb, res)
                if wbufs == 1:  # weight loads no longer overlap compute
                    ns = ntiles // nb
                    est += int(cost.transfer_cycles(
                        w_total * (ns if order == "spatial" else 1), t))
                if 2 * need > sram_budget:
                    # the buffers overlap the neighbouring ops' (taken from the other end of
                    # the SRAM): the first tile's loads wait for the previous op's last
                    # compute instead of overlapping it
                    est += int(cost.transfer_cycles(in_tile + w_total / nb, t))
                key = (est, ntiles)
                if best is None or key < best[0]:
                    best = (key, ConvPlan(rows, cols, ocb, order, need, est, wbufs))
                break  # wider columns first; the first fitting width is the widest
    if best is None:
        raise ScheduleError(f"no tile fits {sram_budget} bytes of SRAM (input {g.h}x{g.w}x{g.c},"
                            f" kernel {g.kh}x{g.kw}, {g.o} output channels) in at most "
                            f"{MAX_OP_TILES} tiles; use a target with more SRAM")
    return best[1]


@functools.lru_cache(maxsize=1 << 12)
def fewest_tiles(g: ConvGeom, t: Target, sram_budget: int) -> tuple[int, int, int, int] | None:
    """``(tiles, rows, cols, ocb)`` of the tile shape among :func:`plan_conv`'s candidates
    (no operand resident) that fits ``sram_budget`` bytes with the fewest tiles
    (``ceil(oh / rows) * ceil(ow / cols) * ceil(o / ocb)``); None when none fits. The tile
    plan of any smaller budget has at least this many tiles (fewer shapes fit). Memoised.

    Cost: at most ``len(blocks) * len(rows) * len(cols)`` fit tests, each extent list of
    ``O(2 * sqrt(n))`` values (:func:`candidate_extents`)."""
    al, best = t.sram_align_bytes, None
    for ocb in _block_candidates(g, t):
        nb = math.ceil(g.o / ocb)
        for rows in candidate_extents(g.oh):
            for cols in candidate_extents(g.ow):
                if _fit(g, rows, cols, ocb, nb, al, sram_budget, NO_RESIDENCY,
                        psum_bytes(g, rows, cols, ocb, t, al)) is None:
                    continue
                n = math.ceil(g.oh / rows) * math.ceil(g.ow / cols) * nb
                if best is None or n < best[0]:
                    best = (n, rows, cols, ocb)
                break   # wider columns first: the first that fits has the fewest tiles
    return best


def plan_channels(per_channel_bytes: int, c: int, sram_budget: int, fixed: int = 0,
                  align: int = 1) -> int:
    """Largest channel block (<= c) whose double-buffered working set fits the budget.

    Args:
        per_channel_bytes: bytes one channel needs across the op's buffers (single-buffered);
            for the flat element-wise ops (add, LUT, EW) the number of chunk buffers, each
            allocated separately and rounded up to ``align`` bytes.
        fixed: bytes needed regardless of the block.
        align: allocation granule of each buffer (the target's ``sram_align_bytes``): the
            block is cut so that ``2 * per_channel_bytes`` buffers of
            ``align_up(block, align)`` bytes fit, not just their unrounded sum.

    Raises:
        ScheduleError: not even one channel fits.
    """
    avail = sram_budget - fixed
    blk = avail // (2 * per_channel_bytes) if per_channel_bytes else c
    if blk < 1:
        raise ScheduleError(f"one channel needs {2 * per_channel_bytes} bytes of SRAM, more "
                            f"than the {sram_budget} available")
    blk = min(c, blk)
    if blk < c and blk > 16:
        blk = blk // 16 * 16
    if align > 1 and per_channel_bytes and \
            2 * per_channel_bytes * align_up(blk, align) > avail:
        blk = min(blk, avail // (2 * per_channel_bytes) // align * align)
        if blk < 1:
            raise ScheduleError(f"{2 * per_channel_bytes} buffers of {align} bytes need more "
                                f"than the {sram_budget} bytes of SRAM available")
    return blk
