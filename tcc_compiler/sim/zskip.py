"""Which DMA_LOAD_Z copies the reference executor may leave out on a repeat in-order run: the
weight loads whose SRAM bytes no command reads (:func:`unread_weight_loads`).

Why: on a repeat in-order run every conv tile whose weight and parameter bytes came unchanged
from a weight load takes their prepared form from the executor's caches
(:mod:`tcc_compiler.sim.conv_operands`) and never reads those SRAM bytes; the executor still
copied every decoded block into the SRAM, about 5 MB an image on EfficientNet-Lite0 and 26 MB
on ResNet-50 (5 % of the run). A copy nothing reads changes no output.

Soundness: an in-order run executes the same commands, with the same layer registers, every
time (:mod:`tcc_compiler.sim.conv_operands`), so which command last wrote each SRAM byte
before each read is a function of the program alone. The analysis replays the command list
once, keeping for every DMA_LOAD_Z the parts of its destination no later command has written
since (a contiguous write cuts them exactly; a strided write is taken as writing nothing,
which keeps more bytes attributed to the load); a load is needed when any read's hull
(more bytes than the read, never fewer) overlaps a part it still holds, except the weight and
parameter ranges of the tiles named as fed from the caches (each range excuses one read of
its tile: another operand over the very same bytes, such as an input box equal to the weight
range, is still read). A load not needed is skipped: the bytes it would have written are
either rewritten before any read or never read, and the SRAM's end state is not an output
(specs/isa.md: every run starts from the fill value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tcc_compiler.isa.commands import Command, DmaLoadZ, End, Registers, Space


def _cut(parts: list[tuple[int, int, int]], a: int, b: int) -> list[tuple[int, int, int]]:
    """``parts`` ((start, end, load index) SRAM ranges) with bytes ``[a, b)`` removed."""
    out = []
    for s, e, k in parts:
        if e <= a or s >= b:
            out.append((s, e, k))
            continue
        if s < a:
            out.append((s, a, k))
        if e > b:
            out.append((b, e, k))
    return out


def unread_weight_loads(cmds: Sequence[Command], handled: frozenset,
                        fed: Mapping[int, frozenset]) -> frozenset[int]:
    """The indices of the DMA_LOAD_Z commands of a single-core in-order run whose SRAM bytes
    no command reads before they are overwritten (module docstring).

    Args:
        cmds: the program's commands in stream order (one core).
        handled: the command types the executor runs as operations (the others only update
            the layer registers, or END stops the run).
        fed: tile command index -> the SRAM ranges ``(start, end)`` (bytes) it takes from the
            executor's caches instead of reading (its weights' and parameter records'); each
            excuses one read of that tile.

    Raises:
        ExecutionError: a command's accesses cannot be described (the run would have
            failed first).
    """
    regs = Registers()
    live: list[tuple[int, int, int]] = []   # (start, end, load index): bytes a load holds
    needed: set[int] = set()
    loads: set[int] = set()
    for i, cmd in enumerate(cmds):
        if isinstance(cmd, End):
            break
        if type(cmd) not in handled:
            regs.update(cmd)
            continue
        # each fed range excuses one read only: another operand over the very same bytes
        # (an input box equal to the tile's weight range) is still read from the SRAM
        skip = set(fed.get(i, ()))
        accesses = [a for a in cmd.accesses(regs) if a.space is Space.SRAM]
        for a in accesses:   # reads see the bytes before the command's own writes
            if a.is_write:
                continue
            if a.run == 0 and (a.start, a.end) in skip:
                skip.discard((a.start, a.end))
                continue
            needed.update(k for s, e, k in live if s < a.end and a.start < e)
        for a in accesses:
            if a.is_write and a.run == 0 and a.end > a.start:
                live = _cut(live, a.start, a.end)
        if isinstance(cmd, DmaLoadZ):
            loads.add(i)
            live.append((cmd.sram, cmd.sram + cmd.dst_bytes, i))
    return frozenset(loads - needed)
