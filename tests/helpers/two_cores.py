"""Helpers of the two-core tests (tests/sim/test_two_cores*.py)."""

from __future__ import annotations

import dataclasses

from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Queue


def sizes(prog) -> dict:
    """Bytes of each memory space of loaded program ``prog`` (the hazard checker's sizes)."""
    c = prog.cmd
    return {C.Space.SRAM: prog.executor.target.sram_capacity_bytes, C.Space.ACT: c.act_arena_bytes,
            C.Space.INPUT: c.input_bytes, C.Space.OUTPUT: c.output_bytes,
            C.Space.WEIGHTS: len(prog.weights.data)}


def drop_wait(cmds, ranges, j):
    """``cmds`` without command ``j`` (a SEM_WAIT on the LOAD queue), every later wait_load
    of its core adjusted so that it names the same earlier LOAD commands as before."""
    core_end = next(b for a, b in ranges if a <= j < b)
    out, after = list(cmds), 0
    for i in range(j + 1, core_end):
        c = out[i]
        if c.wait_load != 7 and after < c.wait_load:
            out[i] = dataclasses.replace(c, wait_load=c.wait_load - 1)
        if c.queue is Queue.LOAD:
            after += 1
    del out[j]
    new_ranges = [(a - (a > j), b - (b > j)) for a, b in ranges]
    return out, new_ranges
