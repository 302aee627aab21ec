"""The cycle model of the NPU (specs/target.md): every cycle formula, once.

Per command (:func:`command_cycles`, the reference; the planners' estimates call the same
terms):

* DMA command: ``dma_setup_cycles + ceil(bytes / (dram_bandwidth / clock))``
  (:func:`dma_cycles`).
* DMA_LOAD_Z: ``dma_setup_cycles + max(ceil(src_bytes / bw), ceil(dst_bytes /
  decompress_bytes_per_cycle))`` -- compressed bytes from DRAM, overlapped with the decoder
  (:func:`dma_z_cycles`).
* CONV_TILE: ``compute_setup_cycles + out_h * out_w * kh * kw * ceil(groups / p) * ceil(p *
  og / array_out) * ceil(p * cin_g / array_in)``, ``p`` groups per pass
  (:func:`groups_per_pass`; 1 for an ungrouped conv) -- channel counts that do not fill
  the array waste it (e.g. 3 input channels use 3/32 of the rows). In image mode (CONV_CFG
  flags bit1) the kw taps of a row share one input vector: ``out_h * out_w * kh *
  ceil(kw * cin_g / array_in) * ceil(oc / array_out)`` (:func:`conv_pixel_cycles`). In
  depthwise mode (flags bit2) the tile runs on the depthwise datapath: ``out_h * out_w *
  ceil(oc / depthwise_channels_per_cycle) * ceil(kh * kw / depthwise_taps_per_cycle)``
  (:func:`depthwise_pixel_cycles`), plus ``depthwise_accumulate_cycles`` per pixel and channel
  pass in accumulate mode (out_mode bit1: one part of a kernel larger than
  ``depthwise_max_kernel``, :func:`depthwise_parts`).
* CONV_TILE with a LUT epilogue (flags bit3; with bit5 the interpolation between two int16
  knots) or a two-slope epilogue (out_mode bit2): as without it; the lookup (the multiplier's
  choice) is assumed pipelined with the output stage's requantization (specs/target.md).
  Channel views, concat/slice copies
  and nearest resize are DMA commands only, costed as every DMA.
* POOL/ADD/LUT/EW tiles: ``compute_setup_cycles + ceil(elements * window / vector_lanes)``
  (LUT_TILE: window 1; the vector unit looks up ``vector_lanes`` elements per cycle; in
  softmax mode window 3, :data:`SOFTMAX_PASSES`) (:func:`vector_cycles`). RESIZE_TILE
  (bilinear): window 4 (four taps per output element).
* int16 activations (mixed precision; the ``wide`` bits of CONV_CFG, POOL_CFG, EW_TILE): a
  tile whose input (or any EW operand) is int16 takes ``int16_rate_divisor`` times the
  cycles after setup (an assumption, specs/target.md); its DMA moves 2 bytes per element.
  int16 weights (CONV_CFG flags bit7) divide a conv tile's rate once more: a 16x8 product
  (either operand int16) takes ``int16_rate_divisor`` times the int8 cycles, a 16x16 one
  its square (:func:`int16_rate`; four 8x8 partial products per 16x16 product).

Rates for estimates and bounds: :func:`transfer_cycles` (DRAM bytes -> cycles, no setup),
:func:`transfer_bytes` (the inverse), :func:`mac_cycles` (MACs at the peak rate); the
planners' overlap estimates: :func:`tile_pipeline_cycles` (one op's tiles, used by
schedule/tiling.py) and :func:`dma_stream_cycles` (a cascade's transfers, schedule/cascade.py).
The program's latency comes from replaying the stream with its real dependencies
(:func:`replay`): each command starts when its queue is free and every command it waits for
has finished.
"""

from __future__ import annotations

import functools
import math

from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import (CONV_FLAG_DEPTHWISE, CONV_FLAG_IMAGE, OUT_MODE_ACCUMULATE,
                                   WAIT_NONE, WIDE_IN, Queue)
from tcc_compiler.target import Target


#: Input taps per output element of a bilinear RESIZE_TILE (the window of its vector cost).
BILINEAR_TAPS = 4
#: Passes of a softmax LUT_TILE (``group`` > 0) over its elements (the window of its vector
#: cost): the group maximum, the exp lookup and sum, the normalisation.
SOFTMAX_PASSES = 3


def transfer_cycles(nbytes: float, t: Target) -> float:
    """Cycles the DRAM link takes for ``nbytes`` (no setup, not rounded)."""
    return nbytes / t.dram_bytes_per_cycle


def transfer_bytes(cycles: float, t: Target) -> float:
    """DRAM bytes the link moves in ``cycles``."""
    return cycles * t.dram_bytes_per_cycle


def mac_cycles(macs: float, t: Target) -> float:
    """Cycles of ``macs`` multiply-accumulates at the MAC array's peak rate (not rounded)."""
    return macs / t.macs_per_cycle


def compute_cycles(macs: float, depthwise_macs: float, t: Target) -> float:
    """Cycles of ``macs`` MACs at the compute units' peak rates (not rounded): the
    ``depthwise_macs`` among them at the depthwise datapath's ``depthwise_channels_per_cycle
    * depthwise_taps_per_cycle``, the rest at the MAC array's ``macs_per_cycle`` (one compute
    queue runs both, one command at a time, so the terms add)."""
    if not depthwise_macs:
        return mac_cycles(macs, t)
    return mac_cycles(macs - depthwise_macs, t) + depthwise_macs / t.depthwise_macs_per_cycle


def dma_cycles(nbytes: int, t: Target) -> int:
    """Cycles of a DMA_LOAD / DMA_STORE of ``nbytes``."""
    return t.dma_setup_cycles + math.ceil(nbytes / t.dram_bytes_per_cycle)


def dma_z_cycles(src_bytes: int, dst_bytes: int, t: Target) -> int:
    """Cycles of a DMA_LOAD_Z reading ``src_bytes`` compressed bytes that expand to
    ``dst_bytes``: the DRAM read and the decompressor's output overlap."""
    return t.dma_setup_cycles + max(math.ceil(src_bytes / t.dram_bytes_per_cycle),
                                    math.ceil(dst_bytes / t.decompress_bytes_per_cycle))


def int16_rate(in16: bool, w16: bool, t: Target) -> int:
    """How many times the int8 cycles a conv tile takes: ``int16_rate_divisor ** n`` with
    ``n`` the int16 operands among the input and the weights (an ASSUMPTION, specs/target.md
    "int16 weights": a 16x8 product from two 8x8 multipliers, 16x16 from four)."""
    return t.int16_rate_divisor ** (int(in16) + int(w16))


def groups_per_pass(groups: int, cin_g: int, og: int, t: Target) -> int:
    """Groups of a grouped conv tile the MAC array computes in one pass (specs/target.md,
    "Grouped convs"): ``min(groups, array_in // cin_g, array_out // og)``, at least 1. The
    array's weight fetch places each group's compact ``[og, kh, kw, cin_g]`` weights on its
    own block of input and output lanes (block-diagonal), so ``p`` groups share one input
    vector and ``p * og`` output lanes."""
    if groups <= 1:
        return 1
    return max(1, min(groups, t.array_in_channels // cin_g, t.array_out_channels // og))


def conv_pixel_cycles(kh: int, kw: int, oc: int, cin_g: int, groups: int, image: bool,
                      t: Target) -> int:
    """MAC-array cycles per output pixel of a conv tile with ``oc`` output channels in
    ``groups`` groups of ``cin_g`` input channels (``image``: image mode, one group): ``kh *
    kw * ceil(groups / p) * ceil(p * og / array_out) * ceil(p * cin_g / array_in)`` with ``p``
    = :func:`groups_per_pass` and ``og = oc / groups``."""
    ai, ao = t.array_in_channels, t.array_out_channels
    if image:   # one row's kw taps x cin_g channels per input vector
        return kh * math.ceil(kw * cin_g / ai) * math.ceil(oc / ao)
    og = oc // groups
    p = groups_per_pass(groups, cin_g, og, t)
    return kh * kw * math.ceil(groups / p) * math.ceil(p * og / ao) * math.ceil(p * cin_g / ai)


def depthwise_pixel_cycles(kh: int, kw: int, c: int, t: Target,
                           accumulate: bool = False) -> int:
    """Depthwise-datapath cycles per output pixel of a depthwise conv tile (CONV_CFG flags
    bit2) of ``c`` channels and a ``kh`` x ``kw`` kernel: ``ceil(c /
    depthwise_channels_per_cycle) * ceil(kh * kw / depthwise_taps_per_cycle)``, plus
    ``depthwise_accumulate_cycles`` per channel pass for a tile in accumulate mode
    (``accumulate``: CONV_CFG out_mode bit1, an ASSUMPTION, specs/target.md). A kernel larger
    than ``depthwise_max_kernel`` is the sum over its parts (:func:`depthwise_parts`): each
    part's tap passes, and the accumulate cycles of every part but the first."""
    passes = (_split_cost(kh, kw, t)[0] if max(kh, kw) > t.depthwise_max_kernel
              else math.ceil(kh * kw / t.depthwise_taps_per_cycle))
    if accumulate:
        passes += t.depthwise_accumulate_cycles
    return math.ceil(c / t.depthwise_channels_per_cycle) * passes


def depthwise_parts(kh: int, kw: int, t: Target) -> tuple[tuple[int, int, int, int], ...]:
    """The parts ``(r0, c0, h, w)`` (kernel rows ``r0 .. r0 + h - 1``, columns ``c0 .. c0 + w
    - 1``) a ``kh`` x ``kw`` depthwise kernel runs as on the depthwise datapath, each at most
    ``depthwise_max_kernel`` square (specs/target.md, "Large depthwise kernels"): the
    guillotine partition (cut whole rows or whole columns, recursively) with the fewest cycles
    per output pixel, ``sum(ceil(h * w / depthwise_taps_per_cycle)) + (parts - 1) *
    depthwise_accumulate_cycles``; ties go to fewer parts, then to the earlier cut. One part,
    the whole kernel, when it fits. Row-major order (by ``r0``, then ``c0``)."""
    return tuple(sorted(_place_parts(kh, kw, t, 0, 0)))


def _place_parts(h: int, w: int, t: Target, r0: int, c0: int) -> list:
    """:func:`_split_cost`'s partition of an ``h`` x ``w`` block placed at ``(r0, c0)``."""
    cut = _split_cost(h, w, t)[2]
    if cut is None:
        return [(r0, c0, h, w)]
    axis, a = cut
    if axis == 0:
        return _place_parts(a, w, t, r0, c0) + _place_parts(h - a, w, t, r0 + a, c0)
    return _place_parts(h, a, t, r0, c0) + _place_parts(h, w - a, t, r0, c0 + a)


@functools.lru_cache(maxsize=256)
def _split_cost(h: int, w: int, t: Target) -> tuple[int, int, tuple[int, int] | None]:
    """(cycles per pixel and channel pass, parts, cut) of the best guillotine partition of an
    ``h`` x ``w`` block (:func:`depthwise_parts`); ``cut`` = (0, rows) or (1, columns) of the
    first piece, None when the block is one part."""
    best = None
    if max(h, w) <= t.depthwise_max_kernel:
        best = (math.ceil(h * w / t.depthwise_taps_per_cycle), 1, None)
    for axis, n in ((0, h), (1, w)):
        for a in range(1, n):
            p1 = _split_cost(a, w, t) if axis == 0 else _split_cost(h, a, t)
            p2 = _split_cost(h - a, w, t) if axis == 0 else _split_cost(h, w - a, t)
            cand = (p1[0] + p2[0] + t.depthwise_accumulate_cycles, p1[1] + p2[1], (axis, a))
            if best is None or cand[:2] < best[:2]:
                best = cand
    return best


def vector_cycles(elements: int, t: Target, wide: bool = False) -> int:
    """Cycles of a POOL_TILE / ADD_TILE / LUT_TILE / EW_TILE processing ``elements`` (window
    taps included); ``wide``: int16 operands, ``int16_rate_divisor`` times slower."""
    rate = t.int16_rate_divisor if wide else 1
    return t.compute_setup_cycles + math.ceil(elements * rate / t.vector_lanes)


def dma_stream_cycles(nbytes: float, n_transfers: int, t: Target) -> float:
    """Estimated LOAD/STORE cycles of ``n_transfers`` DMAs moving ``nbytes`` in all (rate
    plus per-command setup, not rounded)."""
    return transfer_cycles(nbytes, t) + n_transfers * t.dma_setup_cycles


def tile_pipeline_cycles(compute: float, dma: float, ntiles: int, t: Target) -> int:
    """Estimated cycles of an op run as ``ntiles`` double-buffered tiles taking ``compute``
    MAC cycles and ``dma`` DRAM cycles in all: the longer of the two, plus the unoverlapped
    fill/drain (one tile's worth of the shorter one), plus per-tile setup (a compute and
    three DMA commands)."""
    return int(max(compute, dma) + min(compute, dma) / ntiles
               + ntiles * (t.compute_setup_cycles + 3 * t.dma_setup_cycles))


def _conv_tile_cycles(cmd: C.ConvTile, regs: C.Registers, t: Target) -> int:
    """Cycles of a CONV_TILE under the last CONV_CFG (``regs.conv``)."""
    cfg = regs.conv
    rate = int16_rate(bool(cfg.wide & WIDE_IN), cfg.wide_weights, t)
    if cfg.flags & CONV_FLAG_DEPTHWISE:
        return t.compute_setup_cycles + rate * cmd.out_h * cmd.out_w * \
            depthwise_pixel_cycles(cfg.kh, cfg.kw, cmd.oc, t,
                                   bool(cfg.out_mode & OUT_MODE_ACCUMULATE))
    groups = max(1, cmd.in_c // cfg.cin_g)
    image = bool(cfg.flags & CONV_FLAG_IMAGE)
    return t.compute_setup_cycles + rate * cmd.out_h * cmd.out_w * conv_pixel_cycles(
        cfg.kh, cfg.kw, cmd.oc, cfg.cin_g, 1 if image else groups, image, t)


def _pool_tile_cycles(cmd: C.PoolTile, regs: C.Registers, t: Target) -> int:
    """Cycles of a POOL_TILE under the last POOL_CFG (``regs.pool``)."""
    cfg = regs.pool
    return vector_cycles(cmd.out_h * cmd.out_w * cmd.c * cfg.kh * cfg.kw, t, bool(cfg.wide))


#: command class -> its cycles ``f(cmd, regs, t)`` (:func:`command_cycles`; a class not
#: listed, a configuration command, semaphore or END, takes 1 cycle). Keyed by exact class:
#: the command dataclasses of isa/commands.py have no subclasses.
_CYCLES = {
    C.DmaLoad: lambda cmd, regs, t: dma_cycles(cmd.total_bytes, t),
    C.DmaStore: lambda cmd, regs, t: dma_cycles(cmd.total_bytes, t),
    C.DmaLoadZ: lambda cmd, regs, t: dma_z_cycles(cmd.src_bytes, cmd.dst_bytes, t),
    C.ConvTile: _conv_tile_cycles,
    C.PoolTile: _pool_tile_cycles,
    C.LutTile: lambda cmd, regs, t: vector_cycles(
        cmd.n * (SOFTMAX_PASSES if cmd.group else 1), t),
    C.AddTile: lambda cmd, regs, t: vector_cycles(cmd.n, t),
    C.EwTile: lambda cmd, regs, t: vector_cycles(cmd.n, t, bool(cmd.wide)),
    C.ResizeTile: lambda cmd, regs, t: vector_cycles(BILINEAR_TAPS * cmd.out_bytes, t),
}


#: The configuration command classes (the only ones :meth:`C.Registers.update` applies).
_CFG_CLASSES = frozenset((C.ConvCfg, C.PoolCfg, C.AddCfg))


def command_cycles(cmd: C.Command, regs: C.Registers, t: Target) -> int:
    """Estimated cycles of one command given the current layer registers (the formulas of
    the module docstring, one per command class: ``_CYCLES``); 1 for a configuration
    command, a semaphore or END."""
    f = _CYCLES.get(type(cmd))
    return 1 if f is None else f(cmd, regs, t)


def conv_tile_macs(cmd: C.ConvTile, regs: C.Registers) -> int:
    """Useful MACs of a conv tile: out_h * out_w * oc * kh * kw * cin_g."""
    cfg = regs.conv
    return cmd.out_h * cmd.out_w * cmd.oc * cfg.kh * cfg.kw * cfg.cin_g


def replay(cmds: list[C.Command], t: Target,
           prefix: tuple[int, list[tuple[int, int]]] | None = None) -> list[tuple[int, int]]:
    """(start, end) cycle of every command under the queue/wait model.

    A command on queue q starts after the previous command of q ends and, for each queue p
    with wait n < 7, after all but the last n commands dispatched to p before it have ended.
    ``prefix``: (k, the replay of another program whose first k commands are those of
    ``cmds``): those k are not replayed again (a command's times depend only on the commands
    before it), the same result (the schedule search's resumed lowerings, schedule/resume.py).
    """
    if prefix is not None and prefix[0] > 0:
        k, done = prefix
        ends, regs = _prefix_state(cmds, done, k)
        out = done[:k]
        cmds = cmds[k:]
    else:
        ends = {Queue.LOAD: [], Queue.COMPUTE: [], Queue.STORE: []}
        regs, out = C.Registers(), []
    e_load, e_comp, e_store = ends[Queue.LOAD], ends[Queue.COMPUTE], ends[Queue.STORE]
    control, cycles_of, cfgs = Queue.CONTROL, _CYCLES.get, _CFG_CLASSES
    for cmd in cmds:   # the loop is the search's hot spot: queues unrolled, same arithmetic
        queue = cmd.SPEC.queue
        if queue is control:
            t_end = max((e[-1] for e in ends.values() if e), default=0)
            out.append((t_end, t_end))
            continue
        mine = ends[queue]
        start = mine[-1] if mine else 0
        n = cmd.wait_load   # (queues end in order: the (n + 1)-th last end is the latest)
        if n != WAIT_NONE and len(e_load) > n and e_load[-n - 1] > start:
            start = e_load[-n - 1]
        n = cmd.wait_compute
        if n != WAIT_NONE and len(e_comp) > n and e_comp[-n - 1] > start:
            start = e_comp[-n - 1]
        n = cmd.wait_store
        if n != WAIT_NONE and len(e_store) > n and e_store[-n - 1] > start:
            start = e_store[-n - 1]
        cls = type(cmd)   # (command_cycles, inlined)
        f = cycles_of(cls)
        cyc = 1 if f is None else f(cmd, regs, t)
        if cls in cfgs:
            regs.update(cmd)
        mine.append(start + cyc)
        out.append((start, start + cyc))
    return out


#: End cycles :func:`replay` keeps per queue from a prefix: a wait n < ``WAIT_NONE`` reads
#: the end of the (n + 1)-th last command of a queue, a queue's own order its last, so the
#: last ``WAIT_NONE`` decide every start (and ``len(e) > n`` is the same on them for n < 7).
_KEPT_ENDS = WAIT_NONE


def _prefix_state(cmds: list[C.Command], done: list[tuple[int, int]],
                  k: int) -> tuple[dict[Queue, list[int]], C.Registers]:
    """(end cycles per queue, registers) after the first ``k`` of ``cmds``, whose (start,
    end) cycles are ``done[:k]``: per queue the ends of its last :data:`_KEPT_ENDS` commands
    at most (oldest first), and the last CONV_CFG, POOL_CFG and ADD_CFG (None when there is
    none). Walked back from ``k``; once every queue has its ends, only the configurations
    not found yet are looked for (the prefix loop of :func:`replay`, which read every
    command of the prefix)."""
    control = Queue.CONTROL
    ends: dict[Queue, list[int]] = {Queue.LOAD: [], Queue.COMPUTE: [], Queue.STORE: []}
    found: dict[type, C.Command] = {}
    full, i = 0, k - 1
    while i >= 0 and full < 3:
        cmd = cmds[i]
        cls = type(cmd)
        if cls in _CFG_CLASSES and cls not in found:
            found[cls] = cmd
        queue = cmd.SPEC.queue
        if queue is not control:
            e = ends[queue]
            if len(e) < _KEPT_ENDS:
                e.append(done[i][1])
                full += len(e) == _KEPT_ENDS
        i -= 1
    missing = _CFG_CLASSES - found.keys()
    while i >= 0 and missing:
        cls = type(cmds[i])
        if cls in missing:
            found[cls] = cmds[i]
            missing = missing - {cls}
        i -= 1
    for e in ends.values():
        e.reverse()
    return ends, C.Registers(conv=found.get(C.ConvCfg), pool=found.get(C.PoolCfg),
                             add=found.get(C.AddCfg))
