"""Cycle model of the NPU (specs/target.md): per-command cycles and queue-level overlap.

* DMA command: ``dma_setup_cycles + ceil(bytes / (dram_bandwidth / clock))``.
* DMA_LOAD_Z: ``dma_setup_cycles + max(ceil(src_bytes / bw), ceil(dst_bytes /
  decompress_bytes_per_cycle))`` -- compressed bytes from DRAM, overlapped with the decoder.
* CONV_TILE: ``compute_setup_cycles + out_h * out_w * kh * kw * ceil(oc_per_group_tile /
  array_out) * ceil(cin_g / array_in) * groups_in_tile`` -- channel counts that do not fill
  the array waste it (e.g. 3 input channels use 3/32 of the rows). In image mode (CONV_CFG
  flags bit1) the kw taps of a row share one input vector: ``out_h * out_w * kh *
  ceil(kw * cin_g / array_in) * ceil(oc / array_out)``.
* POOL/ADD tiles: ``compute_setup_cycles + ceil(elements * window / vector_lanes)``.
The program's latency comes from replaying the stream with its real dependencies: each
command starts when its queue is free and every command it waits for has finished.
"""

from __future__ import annotations

import math

from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import CONV_FLAG_IMAGE, Queue, WAIT_NONE
from tcc_compiler.target import Target


def command_cycles(cmd: C.Command, regs: C.Registers, t: Target) -> int:
    """Estimated cycles of one command given the current layer registers."""
    if isinstance(cmd, (C.DmaLoad, C.DmaStore)):
        return t.dma_setup_cycles + math.ceil(cmd.total_bytes / t.dram_bytes_per_cycle)
    if isinstance(cmd, C.DmaLoadZ):  # DRAM read and decompressor output overlap
        return t.dma_setup_cycles + max(math.ceil(cmd.src_bytes / t.dram_bytes_per_cycle),
                                        math.ceil(cmd.dst_bytes / t.decompress_bytes_per_cycle))
    if isinstance(cmd, C.ConvTile):
        cfg = regs.conv
        groups = max(1, cmd.in_c // cfg.cin_g)
        og = cmd.oc // groups
        if cfg.flags & CONV_FLAG_IMAGE:  # one row's kw taps x cin_g channels per vector
            return (t.compute_setup_cycles + cmd.out_h * cmd.out_w * cfg.kh
                    * math.ceil(cfg.kw * cfg.cin_g / t.array_in_channels)
                    * math.ceil(cmd.oc / t.array_out_channels))
        per_group = (math.ceil(og / t.array_out_channels)
                     * math.ceil(cfg.cin_g / t.array_in_channels))
        return (t.compute_setup_cycles
                + cmd.out_h * cmd.out_w * cfg.kh * cfg.kw * per_group * groups)
    if isinstance(cmd, C.PoolTile):
        cfg = regs.pool
        n = cmd.out_h * cmd.out_w * cmd.c * cfg.kh * cfg.kw
        return t.compute_setup_cycles + math.ceil(n / t.vector_lanes)
    if isinstance(cmd, C.AddTile):
        return t.compute_setup_cycles + math.ceil(cmd.n / t.vector_lanes)
    return 1


def conv_tile_macs(cmd: C.ConvTile, regs: C.Registers) -> int:
    """Useful MACs of a conv tile: out_h * out_w * oc * kh * kw * cin_g."""
    cfg = regs.conv
    return cmd.out_h * cmd.out_w * cmd.oc * cfg.kh * cfg.kw * cfg.cin_g


def replay(cmds: list[C.Command], t: Target) -> list[tuple[int, int]]:
    """(start, end) cycle of every command under the queue/wait model.

    A command on queue q starts after the previous command of q ends and, for each queue p
    with wait n < 7, after all but the last n commands dispatched to p before it have ended.
    """
    ends: dict[Queue, list[int]] = {Queue.LOAD: [], Queue.COMPUTE: [], Queue.STORE: []}
    regs = C.Registers()
    out: list[tuple[int, int]] = []
    for cmd in cmds:
        if cmd.queue is Queue.CONTROL:
            t_end = max((e[-1] for e in ends.values() if e), default=0)
            out.append((t_end, t_end))
            continue
        start = ends[cmd.queue][-1] if ends[cmd.queue] else 0
        for q, n in zip((Queue.LOAD, Queue.COMPUTE, Queue.STORE), cmd.waits):
            if n == WAIT_NONE:
                continue
            done_needed = len(ends[q]) - n
            if done_needed > 0:
                start = max(start, ends[q][done_needed - 1])  # queues end in order
        cyc = command_cycles(cmd, regs, t)
        regs.update(cmd)
        ends[cmd.queue].append(start + cyc)
        out.append((start, start + cyc))
    return out
