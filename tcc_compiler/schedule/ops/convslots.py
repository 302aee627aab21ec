"""A conv's weight slots and its classifier-output stores in the search's tight variants
(schedule/liftsearch.py ``TIGHT_VARIANTS``; :class:`~tcc_compiler.schedule.ops.context.OpContext`
``tight_slots`` and ``whole_out``), as pure functions of its tiles for schedule/ops/conv.py."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Sequence

from tcc_compiler.isa.encoding import Queue
from tcc_compiler.schedule.cost import dma_cycles, mac_cycles, transfer_cycles
from tcc_compiler.schedule.tiling import (ConvGeom, ConvPlan, Residency, align_up, psum_bytes,
                                          uses_depthwise_mode, working_set)
from tcc_compiler.target import Target

#: Weight slots a tight conv may take when its plan has two and it loads three blocks or more.
MAX_TIGHT_SLOTS = 3

#: With ``deep_slots`` (a network without depthwise layers,
#: :class:`~tcc_compiler.schedule.ops.context.OpContext`), the most weight slots a conv whose
#: weight loads outlast its MACs may take (as many as fit, up to one per own load), so the
#: DRAM link, the bound there, never waits for a compute to free a slot; and the most a
#: compute-bound conv may take. ResNet-50 224 (cycles, load-bound cap x compute-bound cap):
#: 2 x 2 2,833,813; 8 x 2 2,823,178; 3 x 3 2,808,870; 8 x 3 2,806,335; 8 x 4 2,820,850 (the
#: compute-bound convs' slots leave the downsample's prefetch area 923,648 bytes, not
#: 1,072,128).
DEEP_SLOTS = 8
DEEP_COMPUTE_SLOTS = 3


def slot_channels(ocb: int, blocks: Sequence[tuple[int, int]], prefetched: Collection[int],
                  nwb: int, tight: bool, fits: Callable[[int], bool],
                  deep: int = 0) -> list[int]:
    """Output channels each weight slot of a conv must hold, one entry per slot.

    Args:
        ocb: the plan's output-channel block (channels); blocks are ``[k * ocb, ...)``.
        blocks: the channel range ``(o0, o1)`` of each tile, in emission order (a block run
            over several tiles in a row is one load).
        prefetched: indices ``o0 // ocb`` of the blocks a cross-op prefetch loads instead.
        nwb: the plan's weight slots (1 or 2).
        tight: size the slots by their loads; False: ``nwb`` slots of ``ocb``.
        fits: ``fits(k)``: whether the plan's tiles fit the op's SRAM budget with ``k`` slots.
        deep: without ``tight``, a plan with two slots takes the most slots up to ``deep``
            (and its own loads) that ``fits``, all full blocks (:data:`DEEP_SLOTS`); 0 or
            2: the plan's.

    Returns:
        Without ``tight`` (or with one slot): ``[ocb] * nwb`` (``nwb`` raised by ``deep``).
        With it: the slots take the loads in turn (the emitter pops the oldest free slot
        and frees them in load order; a
        prefetch consumer's own slots come before its prefetched blocks' places, so this
        holds for its first ``nwb`` loads; with more loads than that it keeps full slots),
        each sized by the widest block it receives, no more slots than loads (at least one),
        and :data:`MAX_TIGHT_SLOTS` instead of 2 when a conv with no prefetched block loads
        that many blocks and ``fits``: a last, narrower block (MobileNetV2's 96-channel
        projections in a 64 and a 32; its classifier's 40-channel block after 15 prefetched
        ones) leaves the SRAM above it to the next op's first weight load, and a third block
        loads while the first is computed.
    """
    if deep > 2 and not tight and nwb == 2:
        own = _own_loads(ocb, blocks, prefetched)
        nwb = max([k for k in range(3, min(deep, len(own)) + 1) if fits(k)], default=2)
    if not tight or nwb == 1:
        return [ocb] * nwb
    loads = _own_loads(ocb, blocks, prefetched)
    if prefetched and len(loads) > nwb:   # later loads may take prefetched places
        return [ocb] * nwb
    if not prefetched and nwb == 2:
        nwb = max([k for k in range(3, min(MAX_TIGHT_SLOTS, len(loads)) + 1) if fits(k)],
                  default=2)
    chans = [0] * min(nwb, max(len(loads), 1))
    for j, (o0, o1) in enumerate(loads):
        chans[j % len(chans)] = max(chans[j % len(chans)], o1 - o0)
    return [c or ocb for c in chans]


#: With ``OpContext.coarse``: a load-bound conv planned in at least
#: :data:`COARSE_MIN_BLOCKS` output-channel blocks takes blocks at least
#: :data:`COARSE_FACTOR` times its plan's, where they fit (:func:`coarse_blocks`).
COARSE_FACTOR = 2
COARSE_MIN_BLOCKS = 4
#: With ``OpContext.coarse_wide`` (schedule/coarsewide.py): the fewest blocks of its plan a
#: load-bound conv takes coarser blocks from (EfficientNet-Lite0 224's 1152 -> 192/320
#: projections in three and five blocks of 64 outputs).
COARSE_WIDE_MIN_BLOCKS = 3


def coarse_blocks(g: ConvGeom, t: Target, ocb: int,
                  min_blocks: int = COARSE_MIN_BLOCKS) -> bool:
    """Whether conv ``g``, planned in blocks of ``ocb`` output channels, takes coarser blocks
    with ``OpContext.coarse``: its weights take the DRAM link longer than its MACs the array
    (:func:`deep_cap` gives it :data:`DEEP_SLOTS`) and it has at least ``min_blocks``
    blocks (default :data:`COARSE_MIN_BLOCKS`). Where the DRAM link is the bound, each block
    load's DMA setup (``dma_setup_cycles``) adds to the total, and the deep slots already overlap a
    block's load with the op before (the tile plan's estimate prices a pipeline fill that
    smaller blocks shorten: schedule/tiling.py)."""
    return deep_cap(g, t) == DEEP_SLOTS and math.ceil(g.o / ocb) >= min_blocks


def coarse_wide_blocks(g: ConvGeom, t: Target, ocb: int, depthwise: bool) -> bool:
    """Whether conv ``g``, planned in blocks of ``ocb`` output channels, takes coarser blocks
    with ``OpContext.coarse_wide`` (schedule/coarsewide.py): a depthwise conv (``depthwise``:
    it runs on the depthwise datapath) in two blocks or more -- its weights are small
    (EfficientNet-Lite0 224's 5x5 1152-channel ones 37.5 KB, loaded in two DMAs) -- or a
    load-bound one (:func:`coarse_blocks`) in at least :data:`COARSE_WIDE_MIN_BLOCKS`."""
    if depthwise:
        return math.ceil(g.o / ocb) >= 2
    return coarse_blocks(g, t, ocb, COARSE_WIDE_MIN_BLOCKS)


def handover_order(starts: Sequence[int], below: int) -> list[int]:
    """The order (indices into ``starts``) a conv handing its weight slots over to the next
    op (``OpContext.handover_below``) fills them in: the slots starting at or above
    ``below`` (SRAM address, the next op's base) in their given order, then those starting
    below it. The next op can take over only the first kind for its own weight loads (the
    SRAM below its base holds its resident tensors), so the conv's last blocks, which it
    reads last, go there (schedule/handover.py)."""
    up = [i for i, s in enumerate(starts) if s >= below]
    return up + [i for i, s in enumerate(starts) if s < below]


def handover_start(handed: Sequence[tuple[int, int]], base: int) -> int | None:
    """Where a prefetch consumer's own weight slots start when it takes over the weight
    slots ``handed`` (SRAM intervals ``[lo, hi)``, bytes) of the conv just before it: the
    lowest start of a handed slot at or above ``base`` (the consumer's tile area's lowest
    address), so that its slots, of the same block size, lie over the handed ones in step and
    each is free once the block in the handed slot under it is done; None when no handed
    slot starts there."""
    return min((lo for lo, _ in handed if lo >= base), default=None)


def deep_cap(g: ConvGeom, t: Target) -> int:
    """The most weight slots conv ``g`` may take with ``deep_slots``: :data:`DEEP_SLOTS`
    when its weights (``g.o * g.kernel_bytes`` bytes) take the DRAM link longer than its MACs
    take the array (:func:`~tcc_compiler.schedule.cost.transfer_cycles` >
    :func:`~tcc_compiler.schedule.cost.mac_cycles`), else :data:`DEEP_COMPUTE_SLOTS`."""
    load_bound = transfer_cycles(g.o * g.kernel_bytes, t) > mac_cycles(g.macs, t)
    return DEEP_SLOTS if load_bound else DEEP_COMPUTE_SLOTS


def earliest_slot(waits: Sequence[Sequence[tuple | None]]) -> int:
    """Index of the free slot whose load could start first: ``waits[i]`` lists the
    dependencies ``(queue, index)`` (None: none) a load into slot ``i`` would wait for; the
    slot with the smallest latest COMPUTE index, then the smallest latest STORE index (-1:
    none), the first of equals (the oldest free)."""
    def key(i: int) -> tuple[int, int]:
        return tuple(max((d[1] for d in waits[i] if d is not None and d[0] is q), default=-1)
                     for q in (Queue.COMPUTE, Queue.STORE))
    return min(range(len(waits)), key=key)


def _own_loads(ocb: int, blocks: Sequence[tuple[int, int]],
               prefetched: Collection[int]) -> list[tuple[int, int]]:
    """The channel ranges of a conv's own block loads, in order (:func:`slot_channels`)."""
    return [b for j, b in enumerate(blocks) if (j == 0 or blocks[j - 1][0] != b[0])
            and b[0] // ocb not in prefetched]


def fits_after(sa, sizes: Sequence[int]) -> bool:
    """Whether buffers of ``sizes`` bytes (0: none) still fit the op's SRAM arena ``sa``
    (:class:`~tcc_compiler.schedule.arena.SramAllocator`: its ``top``, ``size``, ``align``),
    each aligned as its ``alloc`` aligns it: a whole classifier output is larger than the two
    block slots the tile plan priced, so it is taken only where it fits."""
    need = sum(align_up(max(n, 1), sa.align) for n in sizes if n)
    return sa.top + need <= sa.size


def store_cut(tile_cycles: Sequence[int], ends: Sequence[int], t: Target) -> int:
    """How many leading tiles of a whole-output conv (``whole_out``: one output buffer, its
    blocks in channel order) the first of its two stores covers: the most whose store
    (:func:`~tcc_compiler.schedule.cost.dma_cycles` of ``ends[m - 1]`` bytes, the output
    bytes up to the end of tile ``m - 1``) the compute of the tiles after them
    (``tile_cycles``, cycles each) covers, so the second store, of the rest, is short after the
    last compute; ``len(ends) - 1`` when none is covered. At least 1, at most ``n - 1``."""
    n = len(tile_cycles)
    return max([m for m in range(1, n) if dma_cycles(ends[m - 1], t) <= sum(tile_cycles[m:])],
               default=n - 1)


def short_last_block(g: ConvGeom, t: Target, plan: ConvPlan, budget: int,
                     res: Residency) -> ConvPlan:
    """``plan`` with the widest output-channel block (a multiple of the array's output lanes)
    that keeps its number of blocks and fits ``budget`` bytes, so its last block is the
    narrowest: a load-bound conv's last block is loaded and computed last, and the ops after
    it wait for that compute (MobileNetV2's 320 -> 1280 1x1 conv before its classifier: 384,
    384, 384, 128 instead of 4 x 320). Only for an ungrouped conv off the depthwise datapath
    run as one spatial tile in two or more blocks; else ``plan``."""
    nb = math.ceil(g.o / plan.ocb)
    step = t.array_out_channels
    if (g.group != 1 or uses_depthwise_mode(g, t) or nb < 2 or plan.rows < g.oh
            or plan.cols < g.ow or plan.ocb % step):
        return plan
    al = t.sram_align_bytes
    for ocb in range(plan.ocb + step, g.o, step):
        if math.ceil(g.o / ocb) != nb:
            break
        need = working_set(g, plan.rows, plan.cols, ocb, nb, al, plan.wbufs, res) \
            + psum_bytes(g, plan.rows, plan.cols, ocb, t, al)
        if need > budget:
            break
        plan = dataclasses.replace(plan, ocb=ocb, sram_peak_bytes=need)
    return plan
