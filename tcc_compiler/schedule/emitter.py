"""The command emitter: commands with explicit waits, provenance comments and history slots.

Every command's wait fields are derived from the exact buffer it touches, so DMA of tile i+1
overlaps compute of tile i. Ops are not separated by a barrier. Consecutive ops take their SRAM
buffers from opposite ends of the op's tile area (:meth:`Emitter.begin_op`), and the first
command writing a buffer, or a resident tensor, waits only for the compute and store of the
latest earlier op whose buffers or resident tensors overlap it (:meth:`Emitter.free`).
An activation load (input, shortcut, add operand) waits for the latest store whose DRAM byte
extent overlaps its own (:meth:`Emitter.load`), so a layer's first tiles start as soon as
the rows they read are stored, not when the whole previous layer has finished; weight and
parameter loads read the read-only WEIGHTS region and need no such wait, so the next layer's
weights stream in while the current layer computes. DRAM write-after-read is ordered by the
queues: a layer's first store follows its first compute, which waits for a load that the
in-order LOAD queue runs after every earlier layer's loads.
"""

from __future__ import annotations

from typing import Callable

from tcc_compiler.errors import InternalError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import WAIT_MAX, WAIT_NONE, Queue, Region, dram_address
from tcc_compiler.isa.wcodec import Block
from tcc_compiler.schedule.arena import SramAllocator
from tcc_compiler.schedule.program import Tensor
from tcc_compiler.schedule.written import LatestWriter

#: A command's position in its queue, (queue, index), as dependencies name it; None: none.
Dep = tuple[Queue, int] | None

#: The COMPUTE commands that read or write SRAM data (the ``*_CFG`` commands do not).
TILE_COMMANDS = (C.ConvTile, C.PoolTile, C.AddTile, C.LutTile, C.EwTile, C.ResizeTile)


class WaitTracker:
    """Builds commands with wait fields that order them after specific earlier commands.

    Each command also gets a history slot for the encoder (specs/isa.md): one per DMA stream
    (:data:`~tcc_compiler.schedule.program.SLOT_INPUT`, ...), so each stream's addresses
    advance by a constant stride in its own history and cost no bytes.

    A dependency on command k of queue q becomes ``wait_q = n_q - 1 - k`` ("at most that many
    of q's earlier commands may still run"), clamped to 6 (waiting longer is always safe).
    """

    QUEUES = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)

    def __init__(self) -> None:
        self.count = {q: 0 for q in self.QUEUES}
        self.cmds: list[C.Command] = []
        self.comments: list[str] = []
        self.slots: list[int] = []
        #: per command, the (queue, index) of the commands it waits for, before clamping
        self.deps: list[tuple[tuple[Queue, int], ...]] = []

    def emit(self, cls, deps: list[Dep], comment: str, slot: int = 0, **fields) -> Dep:
        """Append a command of class ``cls`` waiting for ``deps``; return (queue, index).

        Raises:
            InternalError: a dependency on a command not emitted yet.
        """
        w_load = w_comp = w_store = WAIT_NONE   # (locals: the search's hottest loop)
        count = self.count
        real = []
        for d in deps:
            if d is None:
                continue
            real.append(d)
            q, k = d
            n = count[q] - 1 - k
            if n < 0:
                raise InternalError(f"dependency on {q.name} command {k} not yet dispatched")
            n = n if n < WAIT_MAX else WAIT_MAX
            if q is Queue.LOAD:
                w_load = n if n < w_load else w_load
            elif q is Queue.COMPUTE:
                w_comp = n if n < w_comp else w_comp
            else:   # (count holds the three queues only)
                w_store = n if n < w_store else w_store
        cmd = cls(wait_load=w_load, wait_compute=w_comp, wait_store=w_store, **fields)
        self.cmds.append(cmd)
        self.comments.append(comment)
        self.slots.append(slot)
        self.deps.append(tuple(real))
        q = cls.SPEC.queue
        if q in count:
            idx = self.count[q]
            self.count[q] += 1
            return (q, idx)
        return None

    def last(self, q: Queue) -> Dep:
        """The most recent command of queue q, or None."""
        return (q, self.count[q] - 1) if self.count[q] else None

    def checkpoint(self) -> tuple:
        """The state so far, for :meth:`resumed` (the lists only grow, so their lengths
        suffice while this tracker is kept alive)."""
        return self, len(self.cmds), dict(self.count)

    @classmethod
    def resumed(cls, cp: tuple) -> WaitTracker:
        """A new tracker in the state of checkpoint ``cp`` (:meth:`checkpoint`)."""
        src, n, count = cp
        w = cls()
        w.count = dict(count)
        w.cmds, w.comments = src.cmds[:n], src.comments[:n]
        w.slots, w.deps = src.slots[:n], src.deps[:n]
        return w


def dma_fields(t: Tensor, y0, y1, x0, x1, c0, c1, sram: int) -> dict:
    """DMA fields moving the [y0:y1, x0:x1, c0:c1] box of NHWC tensor ``t`` to/from SRAM
    (packed contiguously there as [rows, cols, channels]); ``t`` may be a channel slice of a
    wider buffer (pixels ``t.pitch`` bytes apart)."""
    h, w, c = t.hwc
    eb = t.elem_bytes
    px, row = t.pitch, t.row
    rows, cols, nch = y1 - y0, x1 - x0, c1 - c0
    base = y0 * row + x0 * px + c0 * eb
    dense = px == c * eb   # whole pixels are contiguous
    if nch == c and cols == w and t.packed:
        return dict(dram=t.addr(base), sram=sram, run_bytes=rows * w * c * eb, n1=1, n2=1,
                    dram_stride1=0, dram_stride2=0, sram_stride1=0, sram_stride2=0)
    if nch == c and dense:
        run = cols * c * eb
        return dict(dram=t.addr(base), sram=sram, run_bytes=run, n1=rows, n2=1,
                    dram_stride1=row, dram_stride2=0, sram_stride1=run, sram_stride2=0)
    run = nch * eb
    return dict(dram=t.addr(base), sram=sram, run_bytes=run, n1=cols, n2=rows,
                dram_stride1=px, dram_stride2=row, sram_stride1=run,
                sram_stride2=cols * run)


def chunk_fields(t: Tensor, e0: int, e1: int, sram: int) -> dict:
    """DMA fields moving elements [e0, e1) of ``t`` in NHWC order to/from SRAM (packed there).
    A packed tensor is one run; a channel slice moves whole pixels (``e0``, ``e1`` multiples
    of C, at most 65535 pixels: n1 is u16), one run of C channels each.

    Raises:
        InternalError: a chunk of a channel slice that is not whole pixels or too long.
    """
    eb = t.elem_bytes
    if t.packed:
        return dict(dram=t.addr(e0 * eb), sram=sram, **flat_fields((e1 - e0) * eb))
    c = t.hwc[2]
    if t.row != t.hwc[1] * t.pitch:
        raise InternalError("flat chunks of an interleave phase (rows not evenly spaced)")
    if e0 % c or e1 % c or (e1 - e0) // c > 0xFFFF:
        raise InternalError(f"chunk [{e0}, {e1}) of a channel slice is not <= 65535 whole "
                            f"pixels of {c} channels")
    return dict(dram=t.addr(e0 // c * t.pitch), sram=sram, run_bytes=c * eb,
                n1=(e1 - e0) // c, n2=1, dram_stride1=t.pitch, dram_stride2=0,
                sram_stride1=c * eb, sram_stride2=0)


def pixel_chunk(blk: int, tensors, channels: int) -> int:
    """The chunk size (elements) of a flat element-wise op: ``blk``, rounded to whole pixels
    of ``channels`` (at most 65535) when one of ``tensors`` (None: resident) is a channel
    slice (:func:`chunk_fields`)."""
    if all(t is None or t.packed for t in tensors):
        return blk
    return min(max(channels, blk // channels * channels), 0xFFFF * channels)


def flat_fields(nbytes: int) -> dict:
    """DMA fields of one contiguous run of ``nbytes`` (no strides); add ``dram`` and ``sram``."""
    return dict(run_bytes=nbytes, n1=1, n2=1, dram_stride1=0, dram_stride2=0, sram_stride1=0,
                sram_stride2=0)


def _extent(f: dict) -> tuple[int, int, int]:
    """(region, first byte, end byte) of the DRAM bytes a DMA with fields ``f`` touches."""
    region, lo = int(f["dram"]) >> 30, int(f["dram"]) & ((1 << 30) - 1)
    hi = lo + (f["n2"] - 1) * f["dram_stride2"] + (f["n1"] - 1) * f["dram_stride1"] \
        + f["run_bytes"]
    return region, lo, hi


def _overlaps(rest: list[tuple[int, int]], spans: list[tuple[int, int]]) -> bool:
    """Whether any interval of ``rest`` overlaps any of ``spans`` (half-open byte ranges)."""
    for a, b in rest:   # (loops, not a generator: the lowering's hottest test)
        for lo, hi in spans:
            if a < hi and lo < b:
                return True
    return False


def _minus(rest: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The byte ranges ``rest`` without ``[lo, hi)``."""
    out = []
    for a, b in rest:
        if a < lo:
            out.append((a, min(b, lo)))
        if b > hi:
            out.append((max(a, hi), b))
    return out


class Emitter:
    """The command stream of one lowering and the hazard bookkeeping its waits come from.

    Attributes:
        w: the :class:`WaitTracker` (commands, comments, slots).
        sram_peak: the largest SRAM footprint of any op so far (bytes).
        on_load: called after every LOAD command emitted through :meth:`load` or
            :meth:`load_block` (the cross-op prefetch interleaves its loads there).
        on_dram_read: called as ``(region, lo, hi)`` before an activation load of DRAM bytes
            ``[lo, hi)`` is emitted (a multi-core lowering puts its SEM_WAIT there,
            schedule/cores.py); None: nothing.
        on_store: called after every DMA_STORE emitted through :meth:`store` (a multi-core
            lowering signals the other core early in a split op there); None: nothing.
        before_tile: called once, just before the next compute tile that reads or writes
            SRAM data (not a ``*_CFG``) is emitted, and then cleared; it may emit loads and
            returns the dependencies that tile adds (a multi-core lowering loads the halo
            rows of an op's SRAM-resident input there, schedule/corebands.py); None: nothing.
    """

    def __init__(self, sram_capacity_bytes: int, sram_align: int) -> None:
        self.w = WaitTracker()
        self.sram_capacity_bytes, self.sram_align = sram_capacity_bytes, sram_align
        self.sram_peak = 0
        self.on_load: Callable[[], None] | None = None
        self.on_dram_read: Callable[[int, int, int], None] | None = None
        self.on_store: Callable[[], None] | None = None
        self.before_tile: Callable[[], list[Dep]] | None = None
        # (SRAM intervals, last compute, last store, early spans) of every lowered op; an
        # early span (lo, hi, reader): bytes the op's own loads wrote, read last by ``reader``
        self._hist: list[tuple[list[tuple[int, int]], Dep, Dep, list]] = []
        self._cover: dict[int, int] = {}   # current op: buffer -> bytes its free() waited for
        self._early: list[tuple[int, int, Dep]] = []   # current op's early spans
        # per DRAM region: the latest store that wrote each byte (its extent) so far
        self._stored: dict[int, LatestWriter] = {}
        self._freed: set[int] = set()   # buffers of the current op already waited for
        self.tile_spans: list[tuple[int, int]] = []   # per lowered op: its tile buffers' [lo, hi)

    def checkpoint(self) -> tuple:
        """The state between two ops, for :meth:`resumed`: the schedule search lowers the
        same first ops again and again (schedule/lowering.py, ``resume``). The hooks
        (:attr:`on_load`, ...) are not part of it. The emitter must be kept alive and only
        appended to after (its lists are referenced by length)."""
        return (self.w.checkpoint(), self.sram_peak, len(self._hist),
                {r: lw.copy() for r, lw in self._stored.items()}, set(self._freed),
                len(self.tile_spans), self)

    @classmethod
    def resumed(cls, cp: tuple) -> Emitter:
        """A new emitter in the state of checkpoint ``cp`` (:meth:`checkpoint`), no hooks."""
        w, peak, n_hist, stored, freed, n_spans, src = cp
        em = cls(src.sram_capacity_bytes, src.sram_align)
        em.w = WaitTracker.resumed(w)
        em.sram_peak = peak
        em._hist = src._hist[:n_hist]
        em._stored = {r: lw.copy() for r, lw in stored.items()}
        em._freed = set(freed)
        em.tile_spans = src.tile_spans[:n_spans]
        return em

    @property
    def n_cmds(self) -> int:
        """Commands emitted so far (the index of the next one)."""
        return len(self.w.cmds)

    def emit(self, cls, deps: list[Dep], comment: str, slot: int = 0, **fields) -> Dep:
        """:meth:`WaitTracker.emit` (after :attr:`before_tile` for a compute tile)."""
        if self.before_tile is not None and cls in TILE_COMMANDS:
            hook, self.before_tile = self.before_tile, None
            deps = list(deps) + hook()
        return self.w.emit(cls, deps, comment, slot=slot, **fields)

    def begin_op(self, reserve: int, base: int, lifted: bool = False) -> SramAllocator:
        """Start an op: its SRAM allocator over ``[base, sram - reserve)``, taking buffers from
        the end opposite to the previous op's, or with ``lifted`` upwards from ``base`` (a
        base raised above the recent ops' buffers, schedule/lift.py)."""
        self._freed, self._cover, self._early = set(), {}, []
        return SramAllocator(self.sram_capacity_bytes - reserve, self.sram_align,
                             from_top=len(self._hist) % 2 == 1 and not lifted, base=base)

    def end_op(self, sa: SramAllocator, base: int, op_res: list[tuple[int, int]]) -> None:
        """Record the SRAM intervals the op used (tile buffers and the resident tensors
        ``op_res`` it read or wrote) and its last compute and store commands; the op's SRAM
        footprint counts the resident zone below its tile area (``base``)."""
        self.sram_peak = max(self.sram_peak, sa.top + base)
        self.tile_spans.append((sa.lo, sa.hi))
        self._hist.append(([(sa.lo, sa.hi)] + op_res, self.w.last(Queue.COMPUTE),
                           self.w.last(Queue.STORE), self._early))
        self._early = []

    def load(self, deps: list[Dep], comment: str, slot: int = 0, **f) -> Dep:
        """Emit an activation DMA_LOAD that also waits for the latest store overlapping the
        DRAM bytes it reads (read-after-write through DRAM)."""
        region, lo, hi = _extent(f)
        if self.on_dram_read is not None:
            self.on_dram_read(region, lo, hi)
        dep = self.latest_store(region, lo, hi)
        cmd = self.w.emit(C.DmaLoad, deps + [dep], comment, slot=slot, **f)
        self._loaded()
        return cmd

    def latest_store(self, region: int, lo: int, hi: int) -> Dep:
        """The latest DMA_STORE emitted here whose DRAM bytes overlap ``[lo, hi)`` of
        ``region`` (its (queue, index)), or None."""
        stored = self._stored.get(region)
        return stored.latest(lo, hi) if stored is not None else None

    def store(self, deps: list[Dep], comment: str, **f) -> Dep:
        """Emit a DMA_STORE and record the DRAM extent it writes (see :meth:`load`)."""
        st = self.w.emit(C.DmaStore, deps, comment, **f)
        region, lo, hi = _extent(f)
        self._stored.setdefault(region, LatestWriter()).add(lo, hi, st)
        if self.on_store is not None:
            self.on_store()
        return st

    def load_block(self, deps: list[Dep], comment: str, slot: int, block: Block,
                   sram: int) -> Dep:
        """Emit the load of one weight or parameter block (placed in the WEIGHTS region):
        DMA_LOAD_Z if it is compressed, else a plain DMA_LOAD. WEIGHTS is read-only, so only
        SRAM dependencies apply. Returns the command's (queue, index)."""
        addr = dram_address(Region.WEIGHTS, block.offset)
        if block.compressed:
            cmd = self.w.emit(C.DmaLoadZ, deps, comment + " (deflate)", slot=slot, dram=addr,
                              sram=sram, src_bytes=block.stored_bytes,
                              dst_bytes=block.raw_bytes)
        else:
            cmd = self.w.emit(C.DmaLoad, deps, comment, slot=slot, dram=addr, sram=sram,
                              **flat_fields(block.raw_bytes))
        self._loaded()
        return cmd

    def _loaded(self) -> None:
        if self.on_load is not None:
            self.on_load()

    def free(self, off: int, nbytes: int) -> list[Dep]:
        """Dependencies before the current op first writes SRAM [off, off + nbytes): the last
        compute and the last store of the latest earlier op whose buffers overlap it (queues
        run in order, so older overlapping ops are covered). Empty after the first call for
        the same buffer."""
        if off in self._freed:
            return []
        self._freed.add(off)
        self._cover[off] = max(nbytes, 1)
        return self.free_any(off, nbytes)

    def pending(self, off: int, nbytes: int) -> list[Dep]:
        """What :meth:`free` would return for the buffer, without marking it waited for."""
        return [] if off in self._freed else self.free_any(off, nbytes)

    def free_any(self, off: int, nbytes: int) -> list[Dep]:
        """:meth:`free` without its once-per-buffer memo (for prefetch loads).

        Walks the ops back from the latest: bytes in an op's early spans
        (:meth:`release_early`) need only that span's last reader (their older users were
        waited for by the load that wrote them, which that reader followed), and are dropped;
        the first op whose other buffers overlap the bytes left gives its last compute and
        store (covering every older op: the queues run in order)."""
        rest = [(off, off + max(nbytes, 1))]
        deps: list[Dep] = []
        for spans, comp, store, early in reversed(self._hist):
            if not _overlaps(rest, spans):
                continue
            for lo, hi, reader in early:
                if _overlaps(rest, [(lo, hi)]):
                    deps.append(reader)
                    rest = _minus(rest, lo, hi)
            if _overlaps(rest, spans):
                return deps + [comp, store]
            if not rest:
                break
        return deps

    def release_early(self, off: int, reader: Dep) -> None:
        """Mark the current op's buffer at SRAM ``off`` as written only by its own loads
        (the first waiting, through :meth:`free`, for the earlier users of the bytes it
        covered) and read last by compute ``reader``: a later op writing those bytes waits
        for ``reader`` only, not for this op's last compute and store. A conv's weight
        slot, released when its last block is done (schedule/ops/conv.py); a buffer
        :meth:`free` was not first called for here is left as is."""
        n = self._cover.get(off)
        if n is not None and reader is not None:
            self._early.append((off, off + n, reader))
