"""The hardware-boundary data model: one frozen dataclass per NPU command.

The scheduler builds these, the codec turns them into bytes (:mod:`tcc_compiler.isa.codec`) and
back, and the reference executor runs them. Field names, order and widths come from the table in
:mod:`tcc_compiler.isa.spec`; this module is checked against it at import time.

Every command also carries the three header wait fields (``wait_load``, ``wait_compute``,
``wait_store``; keyword-only, default 7 = no wait) and can list the memory it touches with
``accesses(regs)`` (:mod:`tcc_compiler.isa.access`: exact byte ranges and strided patterns),
so a hazard checker can reason about concurrent queues.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from tcc_compiler.errors import InternalError
from tcc_compiler.isa import spec
from tcc_compiler.isa.access import Access, Space, box_accesses, strided  # noqa: F401
from tcc_compiler.isa.access import box_strides  # noqa: F401 (the executor imports it here)
from tcc_compiler.isa.cmd_base import Command, elem_size  # noqa: F401
from tcc_compiler.isa.cmd_compute import (AddCfg, AddTile, ConvCfg, ConvTile, EwTile, LutTile,
                                          PoolCfg, PoolTile, ResizeTile)
from tcc_compiler.isa.cmd_move import DmaLoad, DmaLoadZ, DmaStore, End, SemSignal, SemWait
from tcc_compiler.isa.spec import CommandSpec, Queue  # noqa: F401 (callers use C.Queue)


@dataclass
class Registers:
    """Layer registers of the COMPUTE queue: the last CONV_CFG, POOL_CFG and ADD_CFG seen."""

    conv: "ConvCfg | None" = None
    pool: "PoolCfg | None" = None
    add: "AddCfg | None" = None

    def update(self, cmd: Command) -> None:
        """Apply ``cmd`` if it is a configuration command (else do nothing)."""
        if isinstance(cmd, ConvCfg):
            self.conv = cmd
        elif isinstance(cmd, PoolCfg):
            self.pool = cmd
        elif isinstance(cmd, AddCfg):
            self.add = cmd


#: opcode -> command class.
COMMAND_CLASSES: dict[int, type[Command]] = {
    c.SPEC.opcode: c for c in (DmaLoad, DmaStore, ConvCfg, ConvTile, PoolCfg, PoolTile, AddCfg,
                               AddTile, DmaLoadZ, SemSignal, SemWait, LutTile, EwTile,
                               ResizeTile, End)
}
_WAIT_NAMES = ("wait_load", "wait_compute", "wait_store")
_WAIT_NAMES = ("wait_load", "wait_compute", "wait_store")


def _check_against_spec() -> None:
    """Fail at import if a dataclass and the spec table disagree (spec/code drift)."""
    if set(COMMAND_CLASSES) != set(spec.BY_OPCODE):
        raise InternalError("isa: command classes and spec table list different opcodes")
    for op, cls in COMMAND_CLASSES.items():
        names = tuple(f.name for f in fields(cls) if f.name not in _WAIT_NAMES)
        if names != spec.BY_OPCODE[op].field_names:
            raise InternalError(f"isa: {cls.__name__} fields {names} differ from spec table "
                                f"{spec.BY_OPCODE[op].field_names}")


_check_against_spec()
