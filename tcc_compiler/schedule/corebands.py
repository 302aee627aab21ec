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

A channel **concat** whose inputs are views of its buffer (schedule/views.py: YOLO's C2f
and SPPF, the conv outputs and their Split halves) is banded as one tensor: each core keeps
its rows of the whole concat buffer, every op writing one of its channel slices (a
*member*: a conv or pool output placed in it) writes that slice of the band in place, and
every op reading it or a slice of it reads a strided box of the band
(:attr:`~tcc_compiler.schedule.program.Resident.c0`). Those ops must address their
operands as boxes (:data:`SLICE_OPS`: convs and pools, not the flat-chunk element-wise
ops), or be a nearest resize writing a member (:func:`dma_writer`: it loads its core's
band rows from its DRAM input straight into the band, and the ops reading it wait for its
last load, :meth:`BandIo.loaded_into`). The boundary rows cross DRAM per member (each
written by its own op; the rows its own readers need), stored into the member's channels
of the concat's DRAM buffer and loaded into the same channels of the other core's band.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import HOST_OPS, VIEW_OPS, Op, ResizeMode
from tcc_compiler.isa.spec import Queue, Region
from tcc_compiler.quant.params import uses_ew
from tcc_compiler.schedule.emitter import Dep, Emitter, dma_fields
from tcc_compiler.schedule.geom import conv_geom, elem_bytes, hwc, pool_geom
from tcc_compiler.schedule.arena import Buffer, plan_arena
from tcc_compiler.schedule.memory import MemoryPlan, readers
from tcc_compiler.schedule.ops.context import label
from tcc_compiler.schedule.program import Resident
from tcc_compiler.schedule.tiling import align_up
from tcc_compiler.target import Target

#: Ops that may write or read a tensor kept in per-core bands: their lowerings honour
#: ``OpContext.rows`` and read/write resident operands in place.
BAND_OPS = (Op.CONV, Op.ADD, Op.LUT, Op.GROUP_SOFTMAX, Op.MAXPOOL, Op.AVGPOOL)

#: Ops that may write or read a channel slice of a banded concat: their lowerings read and
#: write resident operands as strided boxes (``Resident.box``), not flat chunks.
SLICE_OPS = (Op.CONV, Op.MAXPOOL, Op.AVGPOOL)

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
        parts: id(value) -> the members (values with a ``halo`` entry) whose channels a
            banded concat or a slice of it holds; a value not listed is its own member.
    """

    mems: tuple[MemoryPlan, MemoryPlan]
    halo: Mapping[int, tuple[Rows | None, Rows | None]]
    ops: frozenset[int]
    zone_used: int
    parts: Mapping[int, tuple[Value, ...]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class _Cand:
    """A tensor that may be banded: its buffer's value, the ops split by rows for it, each
    core's band rows, per member its halo rows per core, the members (value written by one
    op, first channel) and every value held in its buffer (value, first channel), its
    :class:`Buffer` (band bytes, live steps) and the DRAM bytes banding saves."""

    value: Value
    ops: frozenset[int]
    bands: tuple[Rows, Rows]
    halos: tuple[tuple[Rows | None, Rows | None], ...]
    members: tuple[tuple[Value, int], ...]
    held: tuple[tuple[Value, int], ...]
    buf: Buffer
    saved_bytes: int


def dma_writer(n: Node) -> bool:
    """True for a nearest resize whose output rows split at half height on an input row:
    as a concat member it is loaded from its DRAM input straight into each core's band
    (schedule/ops/resize.py ``lower_resize_resident``), no compute, no halo exchange."""
    if n.op is not Op.RESIZE or n.attrs.mode is ResizeMode.BILINEAR:
        return False
    h = n.output.shape[2]
    return h >= 2 and (h // 2) % n.attrs.scale_h == 0


def split_height(n: Node) -> int | None:
    """The output rows op ``n`` splits between the cores when it touches a banded tensor:
    :func:`out_height`, or a nearest resize's (:func:`dma_writer`)."""
    return n.output.shape[2] if dma_writer(n) else out_height(n)


def _band_rows(h: int, reads: list[tuple[Node, Value]], t: Target, source: str):
    """(band rows per core, halo rows per core) of an ``h``-row tensor whose ``reads``
    (reader op, value it reads) are split at half their output height."""
    bands, halos = [], []
    for k, own in enumerate(shares(h)):
        lo, hi = own
        for r, v in reads:
            a, b = needed(r, v, shares(out_height(r))[k], t, source)
            lo, hi = min(lo, a), max(hi, b)
        bands.append((lo, hi))
        halos.append((own[1], hi) if hi > own[1] else (lo, own[0]) if lo < own[0] else None)
    return tuple(bands), tuple(halos)


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
    bands, halos = _band_rows(hwc(v)[0], [(r, v) for r in rs], t, source)
    return bands, halos, rs


def _concat_groups(graph: Graph, mem: MemoryPlan) -> dict[int, list[tuple[Value, tuple]]]:
    """id(concat output) -> every value held in its buffer (itself first) with its view spec,
    for each channel concat whose buffer holds views (schedule/views.py)."""
    groups: dict[int, list] = {}
    for n in graph.nodes:
        for v in n.outputs:
            if id(v) in mem.views.place:
                r, spec = mem.views.resolve(v)
                if r.producer is not None and r.producer.op is Op.CONCAT:
                    groups.setdefault(id(r), [(r, (0, 0, 0, 1, 1))]).append((v, spec))
    return groups


def _slice_use(u: Node, r: Value, mem: MemoryPlan) -> bool | None:
    """How op ``u`` uses a value held in concat ``r``'s buffer: True, a view (a slice or the
    concat itself, no copy); False, a reader that may read a band of it; None, neither."""
    copies = mem.views.copies
    if u.op is Op.SLICE or u.op is Op.CONCAT:
        ok = id(u) not in copies and (u.op is Op.SLICE or u.output is r)
        return True if ok else None
    if u.op in SLICE_OPS and out_height(u) is not None and id(u) not in mem.fused_luts:
        return False
    return None


def _concat_uses(r: Value, held: list, mem: MemoryPlan, writer_of: dict):
    """(members (value, first channel), their writer ops, reads (reader op, value read)) of
    the values ``held`` in concat ``r``'s buffer, or None when one is not a plain channel
    range or an op writing or reading one cannot work on a strided band."""
    h = hwc(r)[0]
    members, writers, reads = [], [], []
    for v, spec in held:
        if spec[1:] != (0, 0, 1, 1):
            return None
        p = v.producer
        if p.op is Op.CONCAT and id(p) in mem.views.copies:
            return None   # (a nested concat copying inputs into its place: a DMA write)
        if p.op not in (Op.SLICE, Op.CONCAT):
            w = writer_of.get(id(p), p)
            if not (dma_writer(w) or (w.op in SLICE_OPS and out_height(w) == h)) \
                    or (w.op is Op.CONV and mem.conv_output(w) is not v):
                return None
            members.append((v, spec[0]))
            writers.append(w)
        for u, _ in v.uses:
            kind = _slice_use(u, r, mem)
            if kind is None:
                return None
            if kind is False:
                reads.append((u, v))
    return members, writers, reads


def _member_halos(h: int, held: list, members: list, writers: list, reads: list,
                  t: Target, source: str) -> list:
    """Per member of a banded concat, its halo rows per core: those its own readers (the
    ``reads`` of a value overlapping its channels) need beyond each core's share; none for
    a resize member (each core loads all its band rows from the resize's input)."""
    chan = {id(v): spec[0] for v, spec in held}
    halos = []
    for (m, m0), wr in zip(members, writers):
        mine = [(u, v) for u, v in reads
                if chan[id(v)] < m0 + hwc(m)[2] and m0 < chan[id(v)] + hwc(v)[2]]
        halos.append((None, None) if dma_writer(wr) else _band_rows(h, mine, t, source)[1])
    return halos


def _concat_candidate(r: Value, held: list, mem: MemoryPlan, t: Target, source: str,
                      writer_of: dict, step: dict) -> _Cand | None:
    """The candidate of concat output ``r`` (``held``: the values in its buffer with their view
    specs), or None: it is no ACT tensor of its own, a view is not a plain channel range, or
    an op writing or reading one of its values cannot work on a strided band (a copy, an
    element-wise op, a reshape; see :data:`SLICE_OPS`)."""
    tens = mem.tensor(r)
    if tens is None or tens.region is not Region.ACT or not tens.packed:
        return None
    got = _concat_uses(r, held, mem, writer_of)
    if got is None or not got[0] or not got[2]:
        return None
    members, writers, reads = got
    h, w, c = hwc(r)
    bands, _ = _band_rows(h, reads, t, source)
    halos = _member_halos(h, held, members, writers, reads, t, source)
    row_bytes = w * c * elem_bytes(r)
    steps = [step[id(x)] for x in writers] + [step[id(u)] for u, _ in reads]
    buf = Buffer(r.name, max(hi - lo for lo, hi in bands) * row_bytes, min(steps), max(steps))
    saved = h * row_bytes + sum(math.prod(hwc(v)) * elem_bytes(v) for _, v in reads)
    ops = frozenset(id(x) for x in writers) | frozenset(id(u) for u, _ in reads)
    return _Cand(r, ops, bands, tuple(halos), tuple(members),
                 tuple((v, spec[0]) for v, spec in held), buf, saved)


def _candidates(graph: Graph, t: Target, mem: MemoryPlan, nodes: list[Node]) -> list[_Cand]:
    """Every tensor that may be banded: the outputs of :data:`BAND_OPS` that are tensors of
    their own, and the channel concats of views (:func:`_concat_candidate`)."""
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
        cands.append(_Cand(v, frozenset({id(n)} | {id(r) for r in rs}), bands, (halos,),
                           ((v, 0),), ((v, 0),), buf, h * row_bytes * (1 + len(rs))))
    writer_of = {id(lut): conv for conv, lut in
                 ((n, mem.fused.get(id(n))) for n in nodes) if lut is not None}
    for held in _concat_groups(graph, mem).values():
        got = _concat_candidate(held[0][0], held, mem, t, source, writer_of, step)
        if got is not None:
            cands.append(got)
    return cands


def _choose(cands: list[_Cand], zone_bytes: int, al: int
            ) -> tuple[list[_Cand], list[Buffer], int]:
    """Greedy by DRAM bytes saved: a candidate joins while the liveness-planned bands
    (:func:`plan_arena`) fit ``zone_bytes``. Returns (chosen, their placed buffers, bytes
    used)."""
    chosen: list[_Cand] = []
    for cand in sorted(cands, key=lambda x: (-x.saved_bytes, x.buf.first)):
        if cand.buf.size_bytes > zone_bytes:
            continue
        trial = [dataclasses.replace(x.buf) for x in chosen + [cand]]
        if plan_arena(trial, al) <= zone_bytes:
            chosen.append(cand)
    placed = [dataclasses.replace(x.buf) for x in chosen]
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
    halo, parts = {}, {}
    for x, b in zip(chosen, placed):
        shape, eb = hwc(x.value), elem_bytes(x.value)
        for v, c0 in x.held:
            for k in (0, 1):
                res[k][id(v)] = Resident(b.offset, shape, eb, rows=x.bands[k], c0=c0)
            end = c0 + hwc(v)[2]
            parts[id(v)] = tuple(m for m, m0 in x.members
                                 if m0 < end and c0 < m0 + hwc(m)[2])
        for i, (m, _) in enumerate(x.members):
            halo[id(m)] = x.halos[i]
    base, prev = dict(mem.op_base), 0
    for i, n in enumerate(nodes):
        top = max((b.offset + b.size_bytes for b in placed if b.first <= i <= b.last),
                  default=0)
        base[id(n)] = align_up(max(base.get(id(n), 0), top, prev), al)
        prev = top
    mems = tuple(dataclasses.replace(mem, res=MappingProxyType(r),
                                     op_base=MappingProxyType(base), zone_used=used)
                 for r in res)
    ops = frozenset().union(*(x.ops for x in chosen))
    return Bands(mems, MappingProxyType(halo), ops, used, MappingProxyType(parts))


class BandIo:
    """The DMA of the bands' boundary rows while a two-core program is emitted: which halos
    each core has loaded so far."""

    def __init__(self, bands: Bands):
        self.bands = bands
        self.loaded: set[tuple[int, int]] = set()
        self.stored: set[tuple[int, int]] = set()
        self.before: dict[tuple[int, int], list[Dep]] = {}
        self.dma: dict[tuple[int, int], Dep] = {}

    def loaded_into(self, em: Emitter, core: int, v: Value) -> None:
        """After ``core``'s share of a resize loading member ``v`` into its band: the ops
        reading it wait for its last load (:meth:`halo`)."""
        self.dma[(core, id(v))] = em.w.last(Queue.LOAD)

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
        """(SRAM address, bytes spanned) of rows ``rows`` of banded ``v`` in ``core``'s band
        (a member's channels of a banded concat: the span of those rows of all channels)."""
        res = self.bands.mems[core].resident(v)
        _, w, c = res.hwc
        return (res.box(rows[0], 0, 0, w, hwc(v)[2])["addr"],
                (rows[1] - rows[0]) * w * c * res.elem_bytes)

    def _fields(self, core: int, v: Value, rows: Rows) -> dict:
        """DMA fields moving rows ``rows`` of banded ``v`` between its DRAM tensor and
        ``core``'s band: packed there, or, for a member of a banded concat, its channels at
        the band's pixel pitch."""
        mem = self.bands.mems[core]
        res, tens = mem.resident(v), mem.tensor(v)
        _, w, c = hwc(v)
        addr, _ = self._rows_sram(core, v, rows)
        f = dma_fields(tens, rows[0], rows[1], 0, w, 0, c, addr)
        if res.hwc[2] != c:   # a channel slice: one run of c channels per pixel (n1 = w)
            pitch = res.hwc[2] * res.elem_bytes
            f.update(sram_stride1=pitch, sram_stride2=w * pitch)
        return f

    def watcher(self, em: Emitter, core: int, n: Node, v: Value) -> Callable | None:
        """A conv's ``OpContext.on_tile`` for ``core``'s share of op ``n`` writing banded
        ``v``: stores the other core's halo rows (:meth:`boundary`) after the tile that
        completes them (the tiles of a share do not overlap, so their areas in those rows
        add up), so that the other core's next op need not wait for this whole share."""
        rows = self.bands.halo.get(id(v), (None, None))[1 - core]
        if rows is None:
            return None
        _, w, c = hwc(v)   # (a member of a banded concat: its own channels)
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
        parts = self.bands.parts
        for u in dict.fromkeys(u for u in n.inputs if u is not None and u.const is None):
            for v in parts.get(id(u), (u,)):
                if (core, id(v)) in self.dma:
                    deps.append(self.dma[(core, id(v))])
                rows = self.bands.halo.get(id(v), (None, None))[core]
                if rows is None or (core, id(v)) in self.loaded:
                    continue
                self.loaded.add((core, id(v)))
                deps.append(em.load(self.before[(core, id(v))], f"{label(n)} halo rows of "
                                    f"{v.name} {rows[0]}..{rows[1] - 1}",
                                    **self._fields(core, v, rows)))
        return deps

    def boundary(self, em: Emitter, core: int, n: Node, v: Value) -> None:
        """After ``core``'s share of op ``n`` writing banded ``v``: store the rows of it the
        other core's band needs (its halo) from this core's band to DRAM (once)."""
        rows = self.bands.halo.get(id(v), (None, None))[1 - core]
        if rows is None or (core, id(v)) in self.stored:
            return
        self.stored.add((core, id(v)))
        em.store([em.w.last(Queue.COMPUTE)], f"{label(n)} boundary rows "
                 f"{rows[0]}..{rows[1] - 1}", **self._fields(core, v, rows))
