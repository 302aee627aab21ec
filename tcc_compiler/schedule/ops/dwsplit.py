"""A depthwise conv whose kernel exceeds the depthwise datapath's, run as parts of its kernel.

The datapath takes kernels up to ``depthwise_max_kernel`` (the vendor's 1-5). A larger kernel
(ConvMixer's 7x7) is cut into parts of at most that size (``cost.depthwise_parts``); each tile
runs every part as a CONV_TILE on a shifted window of the same input tile, summing in an
int32 partial buffer in SRAM (CONV_CFG out_mode bit1, specs/isa.md): the first part writes
``acc + bias`` (out_mode 1), the middle ones add to the partial in place (out_mode 3), the
last adds the partial and requantizes to int8 (out_mode 2, the conv's own epilogue: LUT,
clamp). A part whose window lies wholly in the padding adds nothing and is not emitted. The
weights of a channel block are stored part after part (each part's OHWI ``[oc, h, w, 1]``,
:func:`part_weights`), so every part's weights are one contiguous array (specs/weights.md,
"Split depthwise layers").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import (CONV_FLAG_LUT, CONV_FLAG_WIDE_SHIFT, OUT_MODE_ACCUMULATE,
                                   OUT_MODE_INT32, WIDE_OUT)
from tcc_compiler.schedule.cost import depthwise_parts
from tcc_compiler.schedule.emitter import Dep
from tcc_compiler.target import Target

#: One part of a kernel: (first row, first column, rows, columns).
Part = tuple[int, int, int, int]


def part_weights(w_ohwi: np.ndarray, parts: tuple[Part, ...], block_channels: int) -> bytes:
    """The WEIGHTS-region bytes of a split depthwise conv's weights ``w_ohwi`` (int8 ``[O, KH,
    KW, 1]``): for each block of ``block_channels`` output channels in order, its parts'
    ``[c1 - c0, h, w, 1]`` arrays one after another (in ``parts`` order). Each block keeps its
    ``(c1 - c0) * KH * KW`` bytes, so the blob splits into blocks by channel as any other."""
    o = w_ohwi.shape[0]
    out = []
    for c0 in range(0, o, block_channels):
        c1 = min(o, c0 + block_channels)
        for r0, k0, h, w in parts:
            out.append(np.ascontiguousarray(w_ohwi[c0:c1, r0:r0 + h, k0:k0 + w]).tobytes())
    return b"".join(out)


def split_text(g, t: Target) -> str:
    """The report's tiling note of a conv run as parts of its kernel (``g`` its ConvGeom)."""
    parts = depthwise_parts(g.kh, g.kw, t)
    return (f", {g.kh}x{g.kw} kernel as {len(parts)} parts ("
            + " + ".join(f"{h}x{w}" for _, _, h, w in parts) + ") summed in int32 partials")


def _window(p0: int, k: int, n_out: int, s: int, pad_a: int, n_in: int
            ) -> tuple[int, int, int, int] | None:
    """(offset of the first real row in the tile, real rows, pad before, pad after) of a part
    of ``k`` kernel rows starting at kernel row ``p0``, for ``n_out`` output rows at stride
    ``s`` of a tile of ``n_in`` real rows after ``pad_a`` padding rows; None when the window
    holds no real row (the part adds nothing)."""
    lo, hi = p0, p0 + (n_out - 1) * s + k   # padded coordinates of the part's window
    a, b = max(lo, pad_a), min(hi, pad_a + n_in)
    if b <= a:
        return None
    return a - pad_a, b - a, a - lo, hi - b


def emit_parts(em, t: Target, label: str, cfg: dict, parts: tuple[Part, ...], tile: dict,
               psum: int, deps: list[Dep], before: Callable[[], None] | None = None) -> Dep:
    """Emit one depthwise tile as its kernel's parts; return the last part's CONV_TILE.

    Args:
        em: the :class:`~tcc_compiler.schedule.emitter.Emitter`.
        t: the target. label: the op's comment. cfg: the op's CONV_CFG fields (whole kernel;
            its out_mode, LUT and int16-output bits are the last part's).
        parts: ``cost.depthwise_parts`` of the kernel.
        tile: the CONV_TILE fields of the whole-kernel tile (``w_sram`` the block's weights,
            stored part after part, :func:`part_weights`; ``in_px_stride`` and
            ``in_row_stride`` 0 when packed).
        psum: SRAM address of the tile's int32 partial sums ``[out_h, out_w, oc]`` (packed).
        deps: what the first part waits for (the later parts follow it on the in-order
            compute queue).
        before: called before each command is emitted (a cascade's command bookkeeping).
    """
    eb = 2 if (cfg["flags"] >> CONV_FLAG_WIDE_SHIFT) & 1 else 1   # WIDE_IN: int16 input
    px = tile.get("in_px_stride") or tile["in_c"] * eb
    row = tile.get("in_row_stride") or tile["in_w"] * px
    live = []
    for part in parts:
        r0, k0, h, w = part
        rw = _window(r0, h, tile["out_h"], cfg["sh"], tile["pad_t"], tile["in_h"])
        cw = _window(k0, w, tile["out_w"], cfg["sw"], tile["pad_l"], tile["in_w"])
        if rw is not None and cw is not None:
            live.append((part, rw, cw))
    oc = tile["oc"]
    w_off = tile["w_sram"]
    offs = {}
    for part in parts:
        offs[part] = w_off
        w_off += oc * part[2] * part[3]
    last = None
    for k, (part, rw, cw) in enumerate(live):
        first, final = k == 0, k == len(live) - 1
        if final:
            mode = cfg["out_mode"] | (0 if first else OUT_MODE_ACCUMULATE)
            flags = cfg["flags"]
        else:   # an int32 partial: no table, no int16 output
            mode = OUT_MODE_INT32 | (0 if first else OUT_MODE_ACCUMULATE)
            flags = cfg["flags"] & ~CONV_FLAG_LUT & ~(WIDE_OUT << CONV_FLAG_WIDE_SHIFT)
        slot = min(k, 3)
        if before is not None:
            before()
        em.emit(C.ConvCfg, [], label, slot=slot,
                **dict(cfg, kh=part[2], kw=part[3], out_mode=mode, flags=flags))
        fields = dict(tile, w_sram=offs[part], in_sram=tile["in_sram"] + rw[0] * row + cw[0] * px,
                      in_h=rw[1], in_w=cw[1], pad_t=rw[2], pad_b=rw[3], pad_l=cw[2],
                      pad_r=cw[3], in_px_stride=px, in_row_stride=row,
                      sc_sram=0 if first else psum, sc_px_stride=0, sc_row_stride=0)
        if not final:
            fields.update(out_sram=psum, out_px_stride=0, out_row_stride=0)
        if before is not None:
            before()
        last = em.emit(C.ConvTile, deps if first else [], label, slot=slot, **fields)
    return last
