"""Execution of DMA_LOAD, DMA_STORE and DMA_LOAD_Z on the reference executor's memories (kept
apart from the tile handlers of :mod:`tcc_compiler.sim.executor`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from tcc_compiler.errors import ExecutionError, FormatError
from tcc_compiler.isa import spec
from tcc_compiler.isa.commands import Command, DmaLoad, DmaLoadZ, DmaStore
from tcc_compiler.isa.wcodec import inflate_exact
from tcc_compiler.sim.memory import Memory

#: The executor's error constructor: (command index, command, message) -> error.
ErrFn = Callable[[int, Command, str], ExecutionError]


def run_dma(i: int, cmd: DmaLoad | DmaStore, mem: Memory, sram: Memory, err: ErrFn) -> None:
    """Copy ``run_bytes`` x ``n1`` x ``n2`` bytes between the DRAM region ``mem`` (the one
    ``cmd.dram`` names) and ``sram`` with the command's strides (bytes; specs/isa.md
    DMA_LOAD); overlapping destination runs are written in order, later runs winning.

    Raises:
        ExecutionError: an empty transfer, a range outside its region or the SRAM or crossing
            the region's end, or a store into a read-only region (index and mnemonic named).
    """
    region, off = spec.split_dram_address(cmd.dram)
    load = isinstance(cmd, DmaLoad)
    run, n1, n2 = cmd.run_bytes, cmd.n1, cmd.n2
    if run == 0 or n1 == 0 or n2 == 0:
        raise err(i, cmd, f"empty transfer (run_bytes={run}, n1={n1}, n2={n2})")
    d_end = off + (n2 - 1) * cmd.dram_stride2 + (n1 - 1) * cmd.dram_stride1 + run
    s_end = cmd.sram + (n2 - 1) * cmd.sram_stride2 + (n1 - 1) * cmd.sram_stride1 + run
    if d_end > spec.REGION_OFFSET_MASK + 1:
        raise err(i, cmd, f"dram range {cmd.dram:#010x}+{d_end - off:#x} crosses "
                          f"the end of region {region.name}")
    if d_end > mem.size:
        raise err(i, cmd, f"dram range {off:#x}-{d_end:#x} outside region "
                          f"{region.name} (size {mem.size})")
    if s_end > sram.size:
        raise err(i, cmd, f"sram range {cmd.sram:#x}-{s_end:#x} outside SRAM "
                          f"(size {sram.size})")
    if not load and not mem.writable:
        raise err(i, cmd, f"write to read-only region {region.name}")
    src_mem, dst_mem = (mem, sram) if load else (sram, mem)
    src_base, dst_base = (off, cmd.sram) if load else (cmd.sram, off)
    ds = (cmd.dram_stride2, cmd.dram_stride1)
    ss = (cmd.sram_stride2, cmd.sram_stride1)
    src_strides, dst_strides = (ds, ss) if load else (ss, ds)
    src = as_strided(src_mem.arr[src_base:], (n2, n1, run), (*src_strides, 1),
                     writeable=False)
    s2, s1 = dst_strides
    if (n1 == 1 or s1 >= run) and (n2 == 1 or s2 >= (n1 - 1) * s1 + run):
        dst = as_strided(dst_mem.arr[dst_base:], (n2, n1, run), (s2, s1, 1))
        dst[...] = src
    else:  # destination runs overlap: later runs win, as in the sequential definition
        src = src.copy()
        for a in range(n2):
            for b in range(n1):
                p = dst_base + a * s2 + b * s1
                dst_mem.arr[p:p + run] = src[a, b]


def run_dma_z(i: int, cmd: DmaLoadZ, mem: Memory, sram: Memory,
              inflated: dict[tuple[int, int, int], np.ndarray], err: ErrFn) -> None:
    """DMA_LOAD_Z: expand the raw DEFLATE stream WEIGHTS [off, off + src_bytes) (``mem``, the
    region ``cmd.dram`` names) into SRAM [sram, sram + dst_bytes); the stream must decode to
    exactly dst_bytes and end exactly at src_bytes (specs/weights.md). ``inflated``: the
    executor's decoded blocks by (offset, src_bytes, dst_bytes), filled here (WEIGHTS is
    read-only, so a block decoded once stays valid).

    Raises:
        ExecutionError: another source region, an empty transfer, a range outside WEIGHTS or
            the SRAM, or a stream that does not decode as specified.
    """
    region, off = spec.split_dram_address(cmd.dram)
    if region is not spec.Region.WEIGHTS:
        raise err(i, cmd, f"source region {region.name}: DMA_LOAD_Z reads only WEIGHTS")
    if cmd.src_bytes == 0 or cmd.dst_bytes == 0:
        raise err(i, cmd, f"empty transfer (src_bytes={cmd.src_bytes}, "
                          f"dst_bytes={cmd.dst_bytes})")
    if off + cmd.src_bytes > mem.size:
        raise err(i, cmd, f"dram range {off:#x}-{off + cmd.src_bytes:#x} outside "
                          f"region WEIGHTS (size {mem.size})")
    if cmd.sram + cmd.dst_bytes > sram.size:
        raise err(i, cmd, f"sram range {cmd.sram:#x}-{cmd.sram + cmd.dst_bytes:#x} "
                          f"(destination) outside SRAM (size {sram.size})")
    key = (off, cmd.src_bytes, cmd.dst_bytes)
    block = inflated.get(key)
    if block is None:
        try:
            raw = inflate_exact(bytes(mem.arr[off:off + cmd.src_bytes]), cmd.dst_bytes,
                                "compressed block")
        except FormatError as exc:
            raise err(i, cmd, str(exc)) from None
        block = inflated[key] = np.frombuffer(raw, dtype=np.uint8)
    sram.arr[cmd.sram:cmd.sram + cmd.dst_bytes] = block
