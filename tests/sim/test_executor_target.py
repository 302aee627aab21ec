"""``Executor.target`` is read-only: the constructor checks every command against it
(:func:`tcc_compiler.sim.limits.check_program`) and sizes the SRAM from it, and a plain
attribute let a caller swap in another target afterwards with neither (an SRAM too small for
the program's tiles then failed mid-run instead of being refused up front)."""

from __future__ import annotations

import pytest

from tcc_compiler.binfmt import WeightFileBuilder, read_cmd_file, read_weight_file
from tcc_compiler.binfmt import write_cmd_file
from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Region, dram_address
from tcc_compiler.sim import Executor
from tcc_compiler.target import load_target


def _executor(sram_bytes: int = 4096) -> Executor:
    """An executor of a program loading 64 input bytes to SRAM 1024 and storing them out."""
    cmds = [C.DmaLoad(dram_address(Region.INPUT, 0), 1024, 64, 1, 1, 0, 0, 0, 0),
            C.DmaStore(dram_address(Region.OUTPUT, 0), 1024, 64, 1, 1, 0, 0, 0, 0, wait_load=1),
            C.End()]
    cmd = read_cmd_file(write_cmd_file(cmds, sram_peak_bytes=1088, act_arena_bytes=0,
                                       input_bytes=64, output_bytes=64, tool_version="test"))
    wf = read_weight_file(WeightFileBuilder().build("t"))
    return Executor(cmd, wf, load_target().with_sram(sram_bytes))


def test_target_cannot_be_reassigned():
    ex = _executor()
    before = ex.target
    with pytest.raises(AttributeError):
        ex.target = before.with_sram(512)   # below the program's SRAM peak: never checked
    assert ex.target is before
    assert ex.run(bytes(range(64))) == bytes(range(64))
    with pytest.raises(ExecutionError):   # the way to another target: a new executor, checked
        _executor(512)
