"""What lowering one op needs, passed explicitly: the shared emitter, memory plan, weight
layout and target, and the op's own SRAM window."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tcc_compiler.ir.graph import Node
from tcc_compiler.schedule.emitter import Emitter, chunk_fields
from tcc_compiler.schedule.arena import SramAllocator
from tcc_compiler.schedule.memory import MemoryPlan
from tcc_compiler.schedule.program import LayerInfo
from tcc_compiler.isa.wlayout import WeightLayoutBuilder
from tcc_compiler.target import Target


@dataclass
class OpContext:
    """One op's lowering context.

    Attributes:
        em: the program's emitter. mem: its memory plan. weights: the WEIGHTS region being
            laid out. t: the target. source: the model file name (for error messages).
        base: SRAM bytes below the op's tile area. reserve: SRAM bytes at the top kept free
            for prefetched blocks while the op runs.
        op_res: SRAM intervals of the resident tensors (and prefetch area) the op reads or
            writes besides its tile buffers.
        memo: values derived from the graph's constants, shared by the lowerings of one
            search (:func:`tcc_compiler.schedule.ops.convsetup.conv_consts`).
        images: a conv run for several images at once (schedule/batch.py): per image, the
            view of ``mem`` giving its DRAM and resident tensors; empty: one image, ``mem``.
        rows: this core's share of an op split between cores by rows (schedule/cores.py,
            schedule/corebands.py): output rows ``[y0, y1)`` (NHWC rows of the op's output);
            None: the whole op.
        reverse: emit the share's tiles last rows first (the rows next to the other core's
            share first, so the other core's next op reads its halo early).
        on_tile: called as ``(spatial, block)`` after each conv tile's compute (output rows
            and columns ``(y0, y1, x0, x1)``, channels ``(o0, o1)``): a two-core lowering
            stores a band's boundary rows as soon as they are computed
            (schedule/corebands.py); None: nothing.
        lifted: ``base`` was raised above the tile buffers of the ops just before (a lift,
            schedule/lift.py): the buffers are taken upwards from it.
        wlift: a conv's weight (and parameter) slots start at this SRAM address, upwards,
            outside its tile area (a weight lift, schedule/lift.py); None: in its tile area.
        wslot_bytes: set by a conv's lowering: the bytes of its weight and parameter slots
            (aligned), the size a weight lift places.
        tight_slots: a conv whose blocks are all loaded in its own lowering sizes each
            weight slot by the widest block it receives, not the plan's block
            (schedule/ops/conv.py ``_slot_channels``); False: every slot a full block.
        deep_slots: a network without depthwise layers (set by the lowering): a conv not
            tight-slotted takes more than two weight slots when they fit
            (schedule/ops/convslots.py ``DEEP_SLOTS``), loads each block into the free slot
            whose earlier readers finish first, and releases each slot to the later ops'
            loads after its own last block (:meth:`Emitter.release_early`), not its last tile.
        handover_below: this conv hands its weight slots over to the next op, a prefetch
            consumer whose tile area starts at this SRAM address (schedule/handover.py): it
            takes one slot per own block load where they fit, fills them in
            :func:`~tcc_compiler.schedule.ops.convslots.handover_order` and records them in
            ``handed``; None: no handover.
        handed: set by a conv with ``handover_below``: its weight slots' SRAM intervals.
        handover_lift: a prefetch consumer taking over the slots ``handed`` by the conv
            before it: its own weight slots start at this SRAM address, upwards, when its
            input, output and shortcut are resident (no other tile buffer) and they end
            below its reserve; None: in its tile area.
        coarse: a load-bound conv takes coarser output-channel blocks
            (:func:`~tcc_compiler.schedule.ops.convslots.coarse_blocks`; set by a lowering
            with ``coarse`` for the ops after the first prefetch consumer, schedule/handover.py).
        coarse_wide: a load-bound conv in at least
            :data:`~tcc_compiler.schedule.ops.convslots.COARSE_WIDE_MIN_BLOCKS` blocks takes
            coarser ones where it is still left at least two (a network with depthwise
            layers, every op: set by a lowering with ``coarse_wide``, schedule/coarsewide.py).
        coarsened: set by a conv whose blocks ``coarse_wide`` made coarser.
        whole_out: a conv with a 1x1 output (a classifier) not resident, in more than two
            channel blocks, writes them into one SRAM buffer stored in two DMAs (the blocks
            before the last, then the last); False: a double-buffered output slot per block,
            each stored on its own.
    """

    em: Emitter
    mem: MemoryPlan
    weights: WeightLayoutBuilder
    t: Target
    source: str = ""
    base: int = 0
    reserve: int = 0
    op_res: list[tuple[int, int]] = field(default_factory=list)
    memo: dict = field(default_factory=dict)
    images: tuple = ()
    rows: tuple[int, int] | None = None
    reverse: bool = False
    on_tile: Callable | None = None
    lifted: bool = False
    wlift: int | None = None
    wslot_bytes: int = 0
    tight_slots: bool = False
    deep_slots: int = 0
    whole_out: bool = False
    handover_below: int | None = None
    handed: list[tuple[int, int]] = field(default_factory=list)
    handover_lift: int | None = None
    coarse: bool = False
    coarse_wide: bool = False
    coarsened: bool = False

    def budget(self) -> int:
        """SRAM bytes the op's tile buffers may use: above its base, below the reserve."""
        return self.t.sram_capacity_bytes - self.base - self.reserve

    def begin(self) -> SramAllocator:
        """Start the op: its SRAM allocator (:meth:`Emitter.begin_op`)."""
        return self.em.begin_op(self.reserve, self.base, self.lifted)

    def end(self, sa: SramAllocator) -> None:
        """End the op (:meth:`Emitter.end_op`)."""
        self.em.end_op(sa, self.base, self.op_res)


def row_share(ctx: OpContext, h: int) -> tuple[int, int]:
    """The output rows ``[y0, y1)`` the op emits: ``ctx.rows`` or all ``h``."""
    return ctx.rows if ctx.rows is not None else (0, h)


def flat_chunks(ctx: OpContext, total: int, blk: int, row_elems: int) -> list[tuple[int, int]]:
    """The flat chunks ``[e0, e1)`` (elements, NHWC order) of an element-wise op over
    ``total`` elements in chunks of ``blk``: all of them, or with ``ctx.rows`` the chunks of
    those rows (``row_elems`` = W x C elements per row), last first with ``ctx.reverse``.
    Share boundaries are whole rows, so ``blk``'s pixel alignment holds within a share."""
    if ctx.rows is None:
        return [(e0, min(total, e0 + blk)) for e0 in range(0, total, blk)]
    lo, hi = ctx.rows[0] * row_elems, ctx.rows[1] * row_elems
    out = [(e0, min(hi, e0 + blk)) for e0 in range(lo, hi, blk)]
    return out[::-1] if ctx.reverse else out


def chunk_cap(ctx: OpContext, total: int, row_elems: int) -> int:
    """The most elements a flat chunk may hold before the SRAM budget is asked: ``total``, or
    for a core's share (``ctx.rows``) a third of it (at least three chunks, so the core's
    loads, compute and stores overlap)."""
    if ctx.rows is None:
        return total
    return max(1, -(-(ctx.rows[1] - ctx.rows[0]) * row_elems // 3))


def label(n: Node) -> str:
    """The provenance comment of an op's commands: IR name and ONNX source nodes."""
    return f"{n.name} [{','.join(n.source)}]"


def new_info(n: Node) -> LayerInfo:
    """A fresh :class:`LayerInfo` of ``n``."""
    return LayerInfo(n.name, n.op.value, n.source, n.inputs[0].shape, n.output.shape)


def chunk_input(em, res, tensor, e0: int, sram: int, blk: int, after, lab: str,
                e1: int, slot: int = 0):
    """One flat chunk's input operand of an element-wise tile: read in place from the
    resident tensor ``res`` (flat chunks are contiguous), else elements [e0, e1) loaded from
    DRAM ``tensor`` (:func:`~tcc_compiler.schedule.emitter.chunk_fields`) into the tile
    buffer ``sram`` (``blk`` elements of the operand's width, freed first) after ``after``.

    Returns:
        (SRAM address of the chunk, the load's dependency or None when resident).
    """
    if res is not None:
        return res.at(e0), None
    dep = em.load([after] + em.free(sram, blk * tensor.elem_bytes), lab, slot=slot,
                  **chunk_fields(tensor, e0, e1, sram))
    return sram, dep


def chunk_output(em, res, e0: int, sram: int, blk: int, last_store,
                 elem_bytes: int = 1) -> tuple[int, list]:
    """A flat chunk's output place: the resident tensor ``res`` at element ``e0``, else the
    tile buffer ``sram`` (``blk`` elements of ``elem_bytes``) once its previous store
    ``last_store`` has drained.

    Returns:
        (SRAM address, dependencies the compute command waits for).
    """
    if res is None:
        return sram, [last_store] + em.free(sram, blk * elem_bytes)
    return res.at(e0), em.free(res.sram, res.nbytes)
