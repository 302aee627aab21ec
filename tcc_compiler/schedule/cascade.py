"""Cascading: run a chain of consecutive ops band by band, intermediates kept on chip.

A *chain* is a run of conv / max-pool / average-pool ops ``op_0 .. op_{k-1}`` (k >= 2) in which
every ``op_i`` (i < k-1) has one reader, ``op_{i+1}``, through its input 0, and only the last op
may carry a fused residual (shortcut). Its intermediates (the outputs of ``op_0 .. op_{k-2}``)
never exist whole: the chain is computed in *bands* of the last op's output rows, and for each
band every op computes, into a band buffer in SRAM, exactly the rows the next op's band reads
(its own output rows plus the halo). Consecutive bands of an intermediate overlap by the halo
rows (``kh - stride`` for a stride-1 3x3 conv: 2 rows), which are recomputed rather than kept in
a ring buffer: every band buffer is then a packed ``[rows, W, C]`` tile, so the existing tile
commands address it unchanged (design argued in specs/target.md, "Cascading").

When the last op's shortcut is the chain's input (a ResNet identity block), its band is read
from the input band already in SRAM (a box of it, via the tile's shortcut operand), so the
block input crosses the DRAM link once instead of twice. When the shortcut is made by a conv
reading the chain's input whose only reader is the last op (a ResNet downsample block), that
conv joins the chain as its *side* op: per band it computes the shortcut band from the input
band into a band buffer, so the shortcut never goes to DRAM either.

:func:`find_chains` finds the structural candidates; :func:`plan_chain` picks the band height
with the smallest estimated cycles under an SRAM budget and compares it with running the ops one
by one (:func:`tcc_compiler.schedule.tiling.plan_conv` estimates); :func:`split_chain` cuts a
candidate that does not fit or pay whole into the cheapest pieces; the lowering
(:meth:`tcc_compiler.schedule.lower.Lowering._cascade`) emits the commands.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from tcc_compiler.ir.graph import Node
from tcc_compiler.ir.ops import Op
from tcc_compiler.isa.spec import PARAM_RECORD_BYTES
from tcc_compiler.quant.params import pool_divisors
from tcc_compiler.schedule import cost
from tcc_compiler.schedule.tiling import (ConvGeom, Residency, align_up, candidate_extents,
                                          depthwise_split, pixel_cycles, plan_conv)
from tcc_compiler.target import Target

log = logging.getLogger(__name__)

#: Op kinds a chain may contain.
CHAIN_OPS = (Op.CONV, Op.MAXPOOL, Op.AVGPOOL)

#: Most ops of a piece :func:`split_chain` cuts from a candidate: every op of a piece adds its
#: kernel's halo to the rows recomputed by the ops before it, so long pieces lose to short
#: ones (MobileOne-S1's best pieces hold 2-4 ops), and the pieces tried grow with the square
#: of their length.
MAX_PIECE_OPS = 6

#: Row ranges of one op in one band: (out_y0, out_y1, in_y0, in_y1, pad_top, pad_bottom).
OpRows = tuple[int, int, int, int, int, int]


@dataclass
class Chain:
    """A cascade group and its band plan.

    Attributes:
        nodes: the ops in execution order; ``nodes[i + 1]`` reads ``nodes[i]``'s output.
        geoms: their geometries (NHWC; pools with ``has_weights=False``).
        sc_from_input: the last op's shortcut is ``nodes[0]``'s input value.
        side: the conv making the last op's shortcut from ``nodes[0]``'s input, or None;
            side_geom: its geometry.
        rows: band height in output rows of the last op (0 until planned).
        bands: per band, per op, its :data:`OpRows`.
        sc_shared: the shortcut band is read from the input band in SRAM (no load).
        est_cycles: estimated cycles of the cascaded schedule; sep_cycles: of the ops run
            one by one (sum of their tile plans' estimates).
        sram_peak_bytes: the cascade's tile-area bytes (buffers of all bands and weights).
        saved_bytes: DRAM bytes the cascade saves against running the ops one by one
            (intermediates and the side op's output stored and loaded once each, the input
            read again by a shared shortcut or the side op, minus the input halo rows loaded
            again by the next band).
        recompute_macs: extra MACs of the halo rows recomputed by the producers.
    """

    nodes: list[Node]
    geoms: list[ConvGeom]
    sc_from_input: bool
    side: Node | None = None
    side_geom: ConvGeom | None = None
    rows: int = 0
    bands: list[tuple[OpRows, ...]] = field(default_factory=list)
    sc_shared: bool = False
    est_cycles: int = 0
    sep_cycles: int = 0
    sram_peak_bytes: int = 0
    saved_bytes: int = 0
    recompute_macs: int = 0

    def inner(self) -> list[Node]:
        """The ops whose outputs stay on chip: all but the last, and the side op."""
        return self.nodes[:-1] + ([self.side] if self.side is not None else [])


def _chainable(n: Node) -> bool:
    """A conv or pool with int8 operands (int16 tensors of mixed precision are not cascaded:
    the band planner sizes its buffers in int8 elements), not an average pool whose divisor
    varies per pixel (its tiles are cut at the divisor changes, schedule/ops/pool.py)."""
    return (n.op in CHAIN_OPS and pool_divisors(n) is None
            and all(v is None or v.is_const or v.dtype == "int8"
                    for v in (*n.inputs, n.output)))


def _extend(n: Node, readers, excluded: set[int], used: set[int]) -> list[Node]:
    """``n`` and the ops after it that can join its chain: each the only reader, through its
    input 0, of the previous one's output; a shortcut conv ends the chain."""
    members = [n]
    cur = n
    while cur.op is not Op.CONV or cur.input(3) is None:   # a shortcut ends the chain
        v = cur.output
        rd = readers(v)
        if id(v) in excluded or len(rd) != 1 or len(v.uses) != 1:
            break
        nxt = rd[0]
        if not _chainable(nxt) or nxt.inputs[0] is not v or id(nxt) in used:
            break
        members.append(nxt)
        cur = nxt
    return members


def _is_side_op(side: Node | None, sc, first: Node, excluded: set[int], used: set[int]) -> bool:
    """True when ``side``, the producer of the last op's shortcut ``sc``, is a plain conv
    reading the chain's input whose output only that shortcut reads."""
    return (side is not None and side.op is Op.CONV and _chainable(side)
            and side.input(3) is None and side.inputs[0] is first.inputs[0]
            and id(side) not in used and id(sc) not in excluded and len(sc.uses) == 1)


def find_chains(nodes: list[Node], readers, geom_of, excluded: set[int]) -> list[Chain]:
    """Structural chain candidates among the NPU ``nodes`` (execution order).

    Args:
        readers: ``readers(value) -> list[Node]``, every op reading a value (views expanded).
        geom_of: ``geom_of(node) -> ConvGeom`` for chain-able nodes.
        excluded: ids of values that must stay whole tensors (NPU outputs); an op producing
            one ends a chain.

    Returns:
        Chains of >= 2 ops, disjoint, in execution order. Only int8 outputs (no FC, no int32).
    """
    used: set[int] = set()
    out: list[Chain] = []
    for n in nodes:
        if id(n) in used or not _chainable(n):
            continue
        members = _extend(n, readers, excluded, used)
        if len(members) < 2:
            continue
        used.update(id(m) for m in members)
        last = members[-1]
        sc = last.input(3) if last.op is Op.CONV else None
        ch = Chain(members, [geom_of(m) for m in members],
                   sc is not None and sc is members[0].inputs[0])
        side = sc.producer if sc is not None else None
        if _is_side_op(side, sc, members[0], excluded, used):
            ch.side, ch.side_geom = side, geom_of(side)
            used.add(id(side))
        out.append(ch)
    return out


def sub_chain(ch: Chain, i: int, j: int) -> Chain:
    """Ops ``i .. j - 1`` of structural candidate ``ch`` as a chain of their own (unplanned):
    the side op and a shortcut read from the input stay only with the whole chain."""
    whole = i == 0 and j == len(ch.nodes)
    return Chain(ch.nodes[i:j], ch.geoms[i:j], ch.sc_from_input and whole,
                 ch.side if whole else None, ch.side_geom if whole else None)


def split_chain(ch: Chain, t: Target, plan, alone) -> list[Chain]:
    """The planned pieces of structural candidate ``ch`` that run fastest together: a
    partition of its ops into consecutive runs, each either one op run alone or a piece of
    >= 2 ops cascaded, minimising the sum of the estimated cycles (dynamic programming over
    the piece boundaries). A chain whose weights do not all fit in the SRAM (MobileOne's
    whole network, schedule/cascade.py runs a chain's weights whole) or whose bands do not
    fit is still cascaded piecewise, e.g. a stride-2 stem with the depthwise conv after it.

    Args:
        plan: ``plan(piece) -> bool``: plans a :func:`sub_chain` in place (its
            ``est_cycles``), True when it may and fits and beats its ops one by one
            (:func:`plan_chain` under the caller's budget and residency).
        alone: ``alone(i) -> cycles`` of op ``i`` of ``ch`` run alone (its tile plan).

    Returns:
        The cascaded pieces (>= 2 ops each), in order; the ops in none run alone.
    """
    k, al = len(ch.nodes), t.sram_align_bytes
    best: list[tuple[float, list[Chain]]] = [(0.0, [])]
    for j in range(1, k + 1):
        cand = (best[j - 1][0] + alone(j - 1), best[j - 1][1])
        w = weight_bytes(ch.geoms[j - 1], al)
        for i in range(j - 2, max(-1, j - 1 - MAX_PIECE_OPS), -1):
            w += weight_bytes(ch.geoms[i], al)
            if w > t.sram_capacity_bytes:   # every longer piece holds these weights too
                break
            piece = sub_chain(ch, i, j)
            if plan(piece) and best[i][0] + piece.est_cycles < cand[0]:
                cand = (best[i][0] + piece.est_cycles, best[i][1] + [piece])
        best.append(cand)
    return best[k][1]


@functools.lru_cache(maxsize=1024)
def _bands(geoms: tuple[ConvGeom, ...], rows: int) -> tuple[tuple[OpRows, ...], ...]:
    """:func:`chain_bands`, memoised (the memory planner plans the same chains under every
    resident-zone size)."""
    return tuple(chain_bands(list(geoms), rows))


def chain_bands(geoms: list[ConvGeom], rows: int) -> list[tuple[OpRows, ...]]:
    """Per band of ``rows`` output rows of the last op: every op's output rows, the input rows
    they read (clipped to the map) and the padding rows, walking the chain backwards
    (``ConvGeom.in_rows``)."""
    out = []
    oh = geoms[-1].oh
    for y0 in range(0, oh, rows):
        a, b = y0, min(oh, y0 + rows)
        per: list[OpRows] = []
        for g in reversed(geoms):
            iy0, iy1, pt, pb = g.in_rows(a, b)
            per.append((a, b, iy0, iy1, pt, pb))
            a, b = iy0, iy1
        out.append(tuple(reversed(per)))
    return out


def tile_cycles(g: ConvGeom, out_rows: int, t: Target) -> int:
    """Cycles of one full-width, all-channel tile of ``out_rows`` rows (CONV_TILE with image
    mode, groups or depthwise mode, or POOL_TILE: :mod:`tcc_compiler.schedule.cost`)."""
    if not g.has_weights:
        return cost.vector_cycles(out_rows * g.ow * g.o * g.kh * g.kw, t)
    per = pixel_cycles(g, g.o, t)
    return t.compute_setup_cycles + out_rows * g.ow * per


def _op_band_cycles(g: ConvGeom, rows: list[int], t: Target) -> int:
    """The sum of :func:`tile_cycles` over tiles of ``rows`` output rows each (a conv's tile
    cycles are linear in its rows: summed at once)."""
    if not g.has_weights:
        return sum(tile_cycles(g, r, t) for r in rows)
    return len(rows) * t.compute_setup_cycles + sum(rows) * g.ow * pixel_cycles(g, g.o, t)


def weight_bytes(g: ConvGeom, al: int) -> int:
    """SRAM bytes of an op's whole weight and parameter blocks (0 for a pool)."""
    if not g.has_weights:
        return 0
    return align_up(g.o * g.kernel_bytes, al) + align_up(g.o * PARAM_RECORD_BYTES, al)


def _blob_bytes(g: ConvGeom) -> int:
    """DRAM bytes of an op's raw weights and parameter records."""
    return g.o * g.kernel_bytes + g.o * PARAM_RECORD_BYTES


def _chain_bytes(ch: Chain, al: int) -> tuple[int, int, int]:
    """(SRAM bytes of every op's whole weight blocks, their DRAM bytes, bytes of the
    intermediates and the side op's output) of a chain."""
    gs = ch.side_geom
    weighted = [g for g in ch.geoms + ([gs] if gs is not None else []) if g.has_weights]
    inner = ch.geoms[:-1] + ([gs] if gs is not None else [])
    return (sum(weight_bytes(g, al) for g in weighted), sum(_blob_bytes(g) for g in weighted),
            sum(g.oh * g.ow * g.o for g in inner))


def separate_cycles(ch: Chain, t: Target, budget: int, res: Residency) -> int:
    """Estimated cycles of the chain's ops (and side op) run one by one (their tile plans)."""
    k = len(ch.geoms)
    sep = 0
    for i, g in enumerate(ch.geoms):
        r = Residency(res.inp if i == 0 else False, res.out if i == k - 1 else False,
                      res.sc if i == k - 1 and ch.side is None else False)
        if g.has_weights:
            sep += plan_conv(g, t, budget, r).est_cycles
        else:   # a pool runs on the vector unit (plan_conv ranks its tiles as a depthwise conv)
            sep += int(max(tile_cycles(g, g.oh, t), cost.transfer_cycles(
                (not r.inp) * g.h * g.w * g.c + (not r.out) * g.oh * g.ow * g.o, t)))
    if ch.side_geom is not None:
        sep += plan_conv(ch.side_geom, t, budget, Residency(res.inp, False, False)).est_cycles
    return sep


def _shares_input(ch: Chain, bands) -> bool:
    """True when the last op's shortcut is the chain's input and every band's shortcut rows
    lie in its input band (read from there, no load)."""
    g0, gl = ch.geoms[0], ch.geoms[-1]
    return ch.sc_from_input and (g0.h, g0.w, g0.c) == (gl.oh, gl.ow, gl.o) and all(
        b[0][2] <= b[-1][0] and b[-1][1] <= b[0][3] for b in bands)


def _recompute_macs(ch: Chain, bands) -> int:
    """Extra MACs of the halo rows the chain's convs compute again."""
    return sum((sum(b[i][1] - b[i][0] for b in bands) - g.oh) * g.ow * g.o
               * g.kh * g.kw * g.cin_g for i, g in enumerate(ch.geoms) if g.has_weights)


def _side_in_band(ch: Chain, bands, res: Residency) -> bool:
    """True when every band's input rows hold every row the side op reads (or no side op,
    or a resident input)."""
    gs = ch.side_geom
    if gs is None or res.inp:
        return True
    return all(b[0][2] <= gs.in_rows(b[-1][0], b[-1][1])[0]
               and gs.in_rows(b[-1][0], b[-1][1])[1] <= b[0][3] for b in bands)


def cascade_psum_bytes(ch: Chain, t: Target, al: int, bands=None) -> int:
    """SRAM bytes of the int32 partial-sum buffer the chain's depthwise convs run as kernel
    parts need (one, shared: the compute queue runs their tiles in order; 0 for none): the
    largest such op's band of output rows x full width x channels x 4 bytes (``bands``: a
    candidate's, default the chain's plan)."""
    bands = ch.bands if bands is None else bands
    return max((align_up(max(b[i][1] - b[i][0] for b in bands) * g.ow * g.o * 4, al)
                for i, g in enumerate(ch.geoms) if g.has_weights and depthwise_split(g, t)),
               default=0)


def _band_sram(ch: Chain, bands, rows: int, res: Residency, sc_sep: bool, al: int) -> int:
    """SRAM bytes of a band plan's buffers, weights excluded."""
    g0, gl = ch.geoms[0], ch.geoms[-1]
    in_rows = max(b[0][3] - b[0][2] for b in bands)
    need = 0 if res.inp else 2 * align_up(in_rows * g0.w * g0.c, al)
    for i, g in enumerate(ch.geoms[:-1]):
        need += align_up(max(b[i][1] - b[i][0] for b in bands) * g.ow * g.o, al)
    out_b = align_up(rows * gl.ow * gl.o, al)
    need += 0 if res.out else 2 * out_b
    need += out_b if ch.side_geom is not None else 0   # the side op's band buffer
    return need + (2 * out_b if sc_sep else 0)


def _band_cycles(ch: Chain, t: Target, bands, rows: int, res: Residency, sc_sep: bool,
                 w_dram: int) -> tuple[int, int]:
    """(estimated cycles, input band bytes loaded) of a band plan."""
    g0, gl, gs = ch.geoms[0], ch.geoms[-1], ch.side_geom
    comp = sum(_op_band_cycles(g, [b[i][1] - b[i][0] for b in bands], t)
               for i, g in enumerate(ch.geoms))
    if gs is not None:
        comp += _op_band_cycles(gs, [b[-1][1] - b[-1][0] for b in bands], t)
    in_bytes = 0 if res.inp else sum(b[0][3] - b[0][2] for b in bands) * g0.w * g0.c
    out_bytes = 0 if res.out else gl.oh * gl.ow * gl.o
    sc_bytes = out_bytes if sc_sep else 0
    n_dma = len(bands) * ((not res.inp) + (not res.out) + sc_sep) \
        + 2 * sum(g.has_weights for g in ch.geoms) + 2 * (gs is not None)
    dma = cost.dma_stream_cycles(in_bytes + out_bytes + sc_bytes + w_dram, n_dma, t)
    first_in = (bands[0][0][3] - bands[0][0][2]) * g0.w * g0.c if not res.inp else 0
    est = int(max(comp, dma) + cost.transfer_cycles(
        first_in + (0 if res.out else rows * gl.ow * gl.o), t))
    return est, in_bytes


@functools.lru_cache(maxsize=1 << 14)
def band_options(geoms: tuple[ConvGeom, ...], sc_from_input: bool, side_geom: ConvGeom | None,
                 t: Target, res: Residency) -> tuple[tuple[int, int, bool, int, int, int], ...]:
    """Every band height a chain of ``geoms`` (with ``sc_from_input`` and the side op's
    geometry, as in :class:`Chain`) may run in under residency ``res``, in
    :func:`candidate_extents` order: ``(est_cycles, rows, sc_shared, sram_bytes, saved_bytes,
    recompute_macs)`` (:func:`plan_chain` keeps the fastest that fits its budget). Memoised:
    the memory planner asks for the same pieces under every resident-zone size."""
    ch = Chain([], list(geoms), sc_from_input, None, side_geom)
    al = t.sram_align_bytes
    g0, gl, gs = geoms[0], geoms[-1], side_geom
    w_sram, w_dram, inter_total = _chain_bytes(ch, al)
    out = []
    for rows in candidate_extents(gl.oh):
        bands = chain_bands(ch.geoms, rows)
        if not _side_in_band(ch, bands, res):
            continue   # the side op's rows must lie in the input band
        shared = _shares_input(ch, bands)
        sc_sep = gl.has_shortcut and not shared and not res.sc and gs is None
        need = (w_sram + _band_sram(ch, bands, rows, res, sc_sep, al)
                + cascade_psum_bytes(ch, t, al, bands))
        est, in_bytes = _band_cycles(ch, t, bands, rows, res, sc_sep, w_dram)
        # the input, when not resident, is read again by a shared shortcut or side op
        x_read = 0 if res.inp else g0.h * g0.w * g0.c
        saved = (2 * inter_total + (x_read if shared or gs is not None else 0)
                 - (in_bytes - x_read))
        out.append((est, rows, shared, need, saved, _recompute_macs(ch, bands)))
    return tuple(out)


def plan_chain(ch: Chain, t: Target, budget: int, res: Residency,
               versus_alone: bool = True, slack: float = 0.0) -> bool:
    """Choose the band height of ``ch`` with the smallest estimated cycles whose buffers fit
    ``budget`` bytes; fill ``ch``'s plan fields. Returns True when the cascade fits and (with
    ``versus_alone``) is estimated faster than running the ops one by one (without it, e.g.
    for :func:`split_chain`, which weighs each piece against its ops alone itself,
    ``sep_cycles`` stays 0). ``slack`` > 0: of the band heights estimated at most ``1 +
    slack`` times the fastest's cycles, the one whose buffers take the fewest bytes (ties:
    the faster), so the chain leaves more SRAM to the ops' weight prefetch.

    Buffers: the input band (double-buffered, absent when the input is resident), one band
    buffer per intermediate and one for the side op's output (single: only COMPUTE, an
    in-order queue, touches them), the output band and a separate shortcut band
    (double-buffered unless resident, shared or made by the side op), and every op's whole
    weight and parameter blocks (loaded once). With a side op, only band heights whose input
    band holds every row the side op reads qualify. Estimate, with ``bw`` DRAM bytes per
    cycle: ``max(compute, dma) + first input band / bw + last output band / bw``, where
    ``compute`` sums :func:`tile_cycles` of every op of every band and ``dma`` is the bytes
    moved over ``bw`` plus ``dma_setup_cycles`` per transfer.
    """
    best = None
    fits = [opt for opt in band_options(tuple(ch.geoms), ch.sc_from_input, ch.side_geom, t, res)
            if opt[3] <= budget]
    for opt in fits:
        if best is None or opt[0] < best[0]:
            best = opt
    if best is not None and slack:
        best = min((opt for opt in fits if opt[0] <= best[0] * (1 + slack)),
                   key=lambda opt: (opt[3], opt[0]))
    if best is None:
        log.debug("chain %s: no band fits %d bytes", ch.nodes[-1].name, budget)
        return False
    (ch.est_cycles, ch.rows, ch.sc_shared, ch.sram_peak_bytes, ch.saved_bytes,
     ch.recompute_macs) = best
    ch.bands = list(_bands(tuple(ch.geoms), ch.rows))
    if not versus_alone:
        return True
    ch.sep_cycles = sep = separate_cycles(ch, t, budget, res)
    if ch.est_cycles >= sep:
        log.debug("chain %s: cascade %d cycles >= %d one by one", ch.nodes[-1].name,
                  ch.est_cycles, sep)
        return False
    return True
