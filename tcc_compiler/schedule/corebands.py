"""Per-core residency of tensors split by rows between two cores (``--cores 2``;
specs/target.md "Two cores", "Row bands resident per core").

A tensor whose producer and every reader run split by output rows (core 0 the first
``H // 2`` output rows of each op, core 1 the rest) can stay on chip in halves: each core
keeps its **band** of it in its own SRAM -- the rows its share of the producer computes,
plus the *halo* rows its share of the readers also reads (a 3x3 conv's row beyond the
boundary), which the other core computes. The producer core also stores those boundary
rows to the tensor's DRAM place (:meth:`BandIo.boundary`), and the reading core loads them
from there into its band just before its first tile that reads the tensor
(:meth:`BandIo.halo`, behind the semaphore wait that
:class:`~tcc_compiler.schedule.coresync.CrossCore` puts before a load of bytes the other
core stored). So only the boundary rows cross the
DRAM link, where a split op otherwise stores its whole output and its readers load it again
with their halos.

:func:`plan_bands` chooses the tensors greedily by DRAM bytes saved (as the one-core
resident zone, schedule/memory.py), within ``zone_bytes`` of each core's SRAM, and places
each band at the same SRAM offset on both cores (liveness in graph order: each core emits
its ops in graph order); every op reading or writing a chosen tensor is split by rows
(:attr:`Bands.ops`). Whether a band plan pays is decided by the two-core replay
(:func:`~tcc_compiler.schedule.lower.lower_multi` keeps the fastest program).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import HOST_OPS, VIEW_OPS, Op
from tcc_compiler.isa.spec import Queue, Region
from tcc_compiler.quant.params import uses_ew
from tcc_compiler.schedule.emitter import Dep, Emitter, dma_fields
from tcc_compiler.schedule.geom import conv_geom, elem_bytes, hwc, pool_geom
from tcc_compiler.schedule.memory import Buffer, MemoryPlan, plan_arena, readers
from tcc_compiler.schedule.ops.context import label
from tcc_compiler.schedule.program import Resident
from tcc_compiler.schedule.tiling import align_up
from tcc_compiler.target import Target

#: Ops that may write or read a tensor kept in per-core bands: their lowerings honour
#: ``OpContext.rows`` and read/write resident operands in place.
BAND_OPS = (Op.CONV, Op.ADD, Op.LUT, Op.GROUP_SOFTMAX, Op.MAXPOOL, Op.AVGPOOL)

Rows = tuple[int, int]


def out_height(n: Node) -> int | None:
    """The output rows op ``n`` splits between the cores when it touches a banded tensor
    (core 0 ``[0, H // 2)``, core 1 the rest), or None: ``n`` cannot be split so (an FC,
    a broadcast or int16 element-wise op, another kind, fewer than two rows)."""
    if n.op not in BAND_OPS or (n.op is Op.ADD and uses_ew(n)) or len(n.output.shape) != 4:
        return None
    h = n.output.shape[2]
    return h if h >= 2 else None


def shares(h: int) -> tuple[Rows, Rows]:
    """Each core's output rows of an op of ``h`` output rows."""
    return (0, h // 2), (h // 2, h)


def needed(n: Node, v: Value, rows: Rows, t: Target, source: str = "") -> Rows:
    """The rows of ``v`` that op ``n``'s output rows ``rows`` read (a conv's or pool's input
    rows with its window; the same rows for a shortcut and an element-wise operand)."""
    if n.op is Op.CONV and n.inputs[0] is v:
        return conv_geom(n, t).in_rows(*rows)[:2]
    if n.op in (Op.MAXPOOL, Op.AVGPOOL):
        return pool_geom(n, source)[0].in_rows(*rows)[:2]
    return rows


@dataclass(frozen=True)
class Bands:
    """The banded tensors of a two-core lowering.

    Attributes:
        mems: per core, the memory plan with its bands as residents (rows kept, same offsets
            on both cores) and the op bases above them.
        halo: id(value) -> per core the rows ``(lo, hi)`` it loads from DRAM into its band
            (computed by the other core), or None.
        ops: ids of the ops split by rows because they read or write a banded tensor.
        zone_used: SRAM bytes per core the bands occupy (peak over time).
    """

    mems: tuple[MemoryPlan, MemoryPlan]
    halo: Mapping[int, tuple[Rows | None, Rows | None]]
    ops: frozenset[int]
    zone_used: int


def _candidate(v: Value, w: Node, mem: MemoryPlan, t: Target, source: str):
    """(bands per core, halo per core, readers) of ``v`` written by ``w``, or None when it
    cannot be banded (a view, an I/O tensor, a reader that cannot split so)."""
    tens = mem.tensor(v)
    if (tens is None or tens.region is not Region.ACT or not tens.packed
            or id(v) in mem.views.tied or out_height(w) is None):
        return None
    rs = readers(v)
    if not rs or any(r.op in VIEW_OPS or out_height(r) is None for r in rs):
        return None
    h = hwc(v)[0]
    bands, halos = [], []
    for k, own in enumerate(shares(h)):
        lo, hi = own
        for r in rs:
            a, b = needed(r, v, shares(out_height(r))[k], t, source)
            lo, hi = min(lo, a), max(hi, b)
        bands.append((lo, hi))
        halos.append((own[1], hi) if hi > own[1] else (lo, own[0]) if lo < own[0] else None)
    return bands, halos, rs


def _candidates(graph: Graph, t: Target, mem: MemoryPlan, nodes: list[Node]) -> list:
    """Every tensor that may be banded: (value, writer, bands per core, halos per core,
    readers, its :class:`Buffer` (band bytes, live steps), DRAM bytes saved)."""
    source = graph.meta.get("source", "")
    step = {id(n): i for i, n in enumerate(nodes)}
    cands = []
    for n in nodes:
        if n.op in VIEW_OPS or id(n) in mem.fused_luts or n.op not in BAND_OPS:
            continue
        v = mem.conv_output(n) if n.op is Op.CONV else n.output
        got = _candidate(v, n, mem, t, source)
        if got is None:
            continue
        bands, halos, rs = got
        h, w, c = hwc(v)
        row_bytes = w * c * elem_bytes(v)
        size = max(hi - lo for lo, hi in bands) * row_bytes
        buf = Buffer(v.name, size, step[id(n)], max(step.get(id(r), len(nodes)) for r in rs))
        cands.append((v, n, bands, halos, rs, buf, h * row_bytes * (1 + len(rs))))
    return cands


def _choose(cands: list, zone_bytes: int, al: int) -> tuple[list, list[Buffer], int]:
    """Greedy by DRAM bytes saved: a candidate joins while the liveness-planned bands
    (:func:`plan_arena`) fit ``zone_bytes``. Returns (chosen, their placed buffers, bytes
    used)."""
    chosen: list = []
    for cand in sorted(cands, key=lambda x: (-x[6], x[5].first)):
        if cand[5].size_bytes > zone_bytes:
            continue
        trial = [dataclasses.replace(x[5]) for x in chosen + [cand]]
        if plan_arena(trial, al) <= zone_bytes:
            chosen.append(cand)
    placed = [dataclasses.replace(x[5]) for x in chosen]
    return chosen, placed, plan_arena(placed, al)


def plan_bands(graph: Graph, t: Target, mem: MemoryPlan, zone_bytes: int) -> Bands:
    """Choose the banded tensors within ``zone_bytes`` of each core's SRAM and place them
    (see the module docstring); every op's tile area starts above the bands live during it
    and the op before it (as schedule/memory.py's resident zone). ``mem``: the two-core
    lowering's memory plan (no resident zone, no cascades, every activation in DRAM for the
    whole program)."""
    nodes = [n for n in graph.nodes if n.op not in HOST_OPS]
    al = t.sram_align_bytes
    chosen, placed, used = _choose(_candidates(graph, t, mem, nodes), zone_bytes, al)
    res: list[dict] = [{}, {}]
    for (v, _, bands, _, _, _, _), b in zip(chosen, placed):
        for k in (0, 1):
            res[k][id(v)] = Resident(b.offset, hwc(v), elem_bytes(v), rows=bands[k])
    base, prev = dict(mem.op_base), 0
    for i, n in enumerate(nodes):
        top = max((b.offset + b.size_bytes for b in placed if b.first <= i <= b.last),
                  default=0)
        base[id(n)] = align_up(max(base.get(id(n), 0), top, prev), al)
        prev = top
    mems = tuple(dataclasses.replace(mem, res=MappingProxyType(r),
                                     op_base=MappingProxyType(base), zone_used=used)
                 for r in res)
    ops = {id(x[1]) for x in chosen} | {id(r) for x in chosen for r in x[4]}
    return Bands(mems, MappingProxyType({id(x[0]): tuple(x[3]) for x in chosen}),
                 frozenset(ops), used)


class BandIo:
    """The DMA of the bands' boundary rows while a two-core program is emitted: which halos
    each core has loaded so far."""

    def __init__(self, bands: Bands):
        self.bands = bands
        self.loaded: set[tuple[int, int]] = set()
        self.stored: set[tuple[int, int]] = set()
        self.before: dict[tuple[int, int], list[Dep]] = {}

    def writing(self, em: Emitter, core: int, v: Value) -> None:
        """Before ``core``'s share of the op writing banded ``v``: note what its halo rows'
        SRAM waits for (the earlier ops that used those bytes; the writer's own share writes
        only its rows, so the halo load need not wait for it)."""
        rows = self.bands.halo.get(id(v), (None, None))[core]
        if rows is None:
            return
        addr, nbytes = self._rows_sram(core, v, rows)
        self.before[(core, id(v))] = em.free_any(addr, nbytes)

    def _rows_sram(self, core: int, v: Value, rows: Rows) -> tuple[int, int]:
        """(SRAM address, bytes) of rows ``rows`` of banded ``v`` in ``core``'s band."""
        res = self.bands.mems[core].resident(v)
        _, w, c = res.hwc
        return (res.box(rows[0], 0, 0, w, c)["addr"],
                (rows[1] - rows[0]) * w * c * res.elem_bytes)

    def watcher(self, em: Emitter, core: int, n: Node, v: Value) -> Callable | None:
        """A conv's ``OpContext.on_tile`` for ``core``'s share of op ``n`` writing banded
        ``v``: stores the other core's halo rows (:meth:`boundary`) after the tile that
        completes them (the tiles of a share do not overlap, so their areas in those rows
        add up), so that the other core's next op need not wait for this whole share."""
        rows = self.bands.halo.get(id(v), (None, None))[1 - core]
        if rows is None:
            return None
        _, w, c = hwc(v)
        left = [(rows[1] - rows[0]) * w * c]

        def on_tile(s, b) -> None:
            y0, y1, x0, x1 = s
            left[0] -= max(0, min(y1, rows[1]) - max(y0, rows[0])) * (x1 - x0) * (b[1] - b[0])
            if left[0] <= 0:
                self.boundary(em, core, n, v)
        return on_tile

    def halo(self, em: Emitter, core: int, n: Node) -> list[Dep]:
        """Before op ``n``'s first tile on ``core``: load the halo rows of each banded input
        not loaded yet from DRAM into the band (after the SRAM's users before the band's
        writer, :meth:`writing`); returns the
        loads, which that tile waits for (the in-order COMPUTE queue orders the later ones)."""
        deps: list[Dep] = []
        mem = self.bands.mems[core]
        for v in dict.fromkeys(u for u in n.inputs if u is not None and u.const is None):
            rows = self.bands.halo.get(id(v), (None, None))[core]
            if rows is None or (core, id(v)) in self.loaded:
                continue
            self.loaded.add((core, id(v)))
            _, w, c = hwc(v)
            addr, _ = self._rows_sram(core, v, rows)
            deps.append(em.load(self.before[(core, id(v))], f"{label(n)} halo rows of "
                                f"{v.name} {rows[0]}..{rows[1] - 1}",
                                **dma_fields(mem.tensor(v), rows[0], rows[1], 0, w, 0, c,
                                             addr)))
        return deps

    def boundary(self, em: Emitter, core: int, n: Node, v: Value) -> None:
        """After ``core``'s share of op ``n`` writing banded ``v``: store the rows of it the
        other core's band needs (its halo) from this core's band to DRAM (once)."""
        rows = self.bands.halo.get(id(v), (None, None))[1 - core]
        if rows is None or (core, id(v)) in self.stored:
            return
        self.stored.add((core, id(v)))
        _, w, c = hwc(v)
        addr, _ = self._rows_sram(core, v, rows)
        tens = self.bands.mems[core].tensor(v)
        em.store([em.w.last(Queue.COMPUTE)], f"{label(n)} boundary rows "
                 f"{rows[0]}..{rows[1] - 1}", **dma_fields(tens, rows[0], rows[1], 0, w, 0, c,
                                                          addr))
